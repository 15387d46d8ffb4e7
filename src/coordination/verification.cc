#include "coordination/verification.h"

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

}  // namespace

Result<nlohmann::json> FindResidue(SqlTx& tx, BlobStore& blobs, const std::string& file_id,
                                   const std::optional<std::string>& blob_key) {
  nlohmann::json found = nlohmann::json::object();
  for (const Place& p : kPlaces) {
    auto r = tx.QueryOne(p.sql, {file_id});
    if (!r.ok()) return r.status();
    int64_t n = *r ? (*r)->Int(0) : 0;
    if (n > 0) found[p.name] = n;
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
