#include "coordination/holds.h"

namespace lastcall {
namespace {

constexpr char kColumns[] =
    "id, scope, target_id, reason, placed_by, placed_at, released_by, released_at";

Hold ReadHold(const SqlRow& r) {
  return Hold{r.Text(0), r.Text(1), r.Text(2), r.Text(3), r.Text(4), r.Int(5), r.OptText(6),
              r.OptInt(7)};
}

Result<std::vector<Hold>> Collect(SqlTx& tx, const std::string& sql, const SqlParams& params) {
  std::vector<Hold> out;
  Status st = tx.Query(sql, params, [&](const SqlRow& r) {
    out.push_back(ReadHold(r));
    return true;
  });
  if (!st.ok()) return st;
  return out;
}

// The coordinations column a hold's scope matches.
const char* ScopeColumn(const std::string& scope) {
  if (scope == kHoldScopeUser) return "user_id";
  if (scope == kHoldScopeAccount) return "account_id";
  return "file_id";
}

}  // namespace

Status InsertHold(SqlTx& tx, const Hold& h) {
  auto r = tx.Exec(std::string("INSERT INTO holds (") + kColumns +
                       ") VALUES (?, ?, ?, ?, ?, ?, NULL, NULL)",
                   {h.id, h.scope, h.target_id, h.reason, h.placed_by, h.placed_at});
  return r.ok() ? Status::Ok() : r.status();
}

Result<std::optional<Hold>> FindHold(SqlTx& tx, const std::string& id) {
  auto r = Collect(tx, std::string("SELECT ") + kColumns + " FROM holds WHERE id = ?", {id});
  if (!r.ok()) return r.status();
  if (r->empty()) return std::optional<Hold>();
  return std::optional<Hold>(r->front());
}

Result<bool> MarkHoldReleased(SqlTx& tx, const std::string& id, const std::string& by,
                              WallMillis at) {
  auto r = tx.Exec(
      "UPDATE holds SET released_by = ?, released_at = ? WHERE id = ? AND released_at IS NULL",
      {by, at, id});
  if (!r.ok()) return r.status();
  return *r == 1;
}

Result<std::vector<Hold>> ListHolds(SqlTx& tx, bool active_only) {
  return Collect(tx,
                 std::string("SELECT ") + kColumns + " FROM holds" +
                     (active_only ? " WHERE released_at IS NULL" : "") +
                     " ORDER BY placed_at DESC, id DESC",
                 {});
}

Result<std::optional<Hold>> ActiveHoldCovering(SqlTx& tx, const std::string& user_id,
                                               const std::string& account_id,
                                               const std::string& file_id) {
  auto r = Collect(tx,
                   std::string("SELECT ") + kColumns +
                       " FROM holds WHERE released_at IS NULL AND ((scope = ? AND target_id = ?) "
                       "OR (scope = ? AND target_id = ?) OR (scope = ? AND target_id = ?)) "
                       "ORDER BY placed_at, id",
                   {std::string(kHoldScopeUser), user_id, std::string(kHoldScopeAccount),
                    account_id, std::string(kHoldScopeFile), file_id});
  if (!r.ok()) return r.status();
  if (r->empty()) return std::optional<Hold>();
  return std::optional<Hold>(r->front());
}

Result<std::vector<std::string>> CoordinationsUnderHold(SqlTx& tx, const Hold& h,
                                                        const std::string& status) {
  std::vector<std::string> ids;
  Status st = tx.Query(std::string("SELECT id FROM coordinations WHERE status = ? AND ") +
                           ScopeColumn(h.scope) + " = ? ORDER BY started_at, id",
                       {status, h.target_id}, [&](const SqlRow& r) {
                         ids.push_back(r.Text(0));
                         return true;
                       });
  if (!st.ok()) return st;
  return ids;
}

}  // namespace lastcall
