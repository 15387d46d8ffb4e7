#include "coordination/verification.h"

#include <iterator>

namespace lastcall {
namespace {

// Each table that may hold the file's own rows, with the column naming the file. A consumer that
// keeps transaction-level data adds its table here.
struct Place {
  const char* name;  // the member of the residue object
  const char* sql;   // counts rows of the file (one "?" = file id)
};
constexpr Place kPlaces[] = {
    {"transactions", "SELECT COUNT(*) FROM transactions WHERE file_id = ?"},
    {"fileRow", "SELECT COUNT(*) FROM files WHERE id = ?"},
    {"analyticsFileTotals", "SELECT COUNT(*) FROM analytics_file_totals WHERE file_id = ?"},
};

// Every place's count as one column of one statement: "SELECT (<count>), (<count>), ...".
const std::string& CountsSql() {
  static const std::string sql = [] {
    std::string s = "SELECT ";
    for (const Place& p : kPlaces) {
      if (&p != &kPlaces[0]) s += ", ";
      s += std::string("(") + p.sql + ")";
    }
    return s;
  }();
  return sql;
}

}  // namespace

Result<nlohmann::json> FindResidue(SqlTx& tx, BlobStore& blobs, const std::string& file_id,
                                   const std::optional<std::string>& blob_key) {
  nlohmann::json found = nlohmann::json::object();
  SqlParams params(std::size(kPlaces), file_id);
  auto r = tx.QueryOne(CountsSql(), params);
  if (!r.ok()) return r.status();
  if (!*r) return Status::Internal("the residue counts returned no row");
  for (size_t i = 0; i < std::size(kPlaces); ++i) {
    int64_t n = (*r)->Int(i);
    if (n > 0) found[kPlaces[i].name] = n;
  }
  if (blob_key) {
    auto bytes = blobs.Get(*blob_key);
    if (bytes.ok()) {
      found["content"] = true;
    } else if (bytes.status().code() != Code::kNotFound) {
      return bytes.status();
    }
  }
  return found;
}

}  // namespace lastcall
