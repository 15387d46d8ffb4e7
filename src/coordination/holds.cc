#include "coordination/holds.h"

#include "store/row_mapping.h"

namespace lastcall {
namespace {

const RowMapping<Hold>& Holds() {
  static const RowMapping<Hold> m({{"id", &Hold::id},
                                   {"scope", &Hold::scope},
                                   {"target_id", &Hold::target_id},
                                   {"reason", &Hold::reason},
                                   {"placed_by", &Hold::placed_by},
                                   {"placed_at", &Hold::placed_at},
                                   {"released_by", &Hold::released_by},
                                   {"released_at", &Hold::released_at}});
  return m;
}

// The coordinations column a hold's scope matches.
const char* ScopeColumn(const std::string& scope) {
  if (scope == kHoldScopeUser) return "user_id";
  if (scope == kHoldScopeAccount) return "account_id";
  return "file_id";
}

}  // namespace

Status InsertHold(SqlTx& tx, const Hold& h) {
  auto r = tx.Exec("INSERT INTO holds (" + Holds().columns() + ") VALUES (" +
                       Holds().placeholders() + ")",
                   Holds().Values(h));
  return r.ok() ? Status::Ok() : r.status();
}

Result<std::optional<Hold>> FindHold(SqlTx& tx, const std::string& id) {
  return Holds().One(tx, "SELECT " + Holds().columns() + " FROM holds WHERE id = ?", {id});
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
  return Holds().All(tx,
                     "SELECT " + Holds().columns() + " FROM holds" +
                         (active_only ? " WHERE released_at IS NULL" : "") +
                         " ORDER BY placed_at DESC, id DESC",
                     {});
}

Result<std::optional<Hold>> ActiveHoldCovering(SqlTx& tx, const std::string& user_id,
                                               const std::string& account_id,
                                               const std::string& file_id) {
  return Holds().One(tx,
                     "SELECT " + Holds().columns() +
                         " FROM holds WHERE released_at IS NULL AND ((scope = ? AND target_id = ?) "
                         "OR (scope = ? AND target_id = ?) OR (scope = ? AND target_id = ?)) "
                         "ORDER BY placed_at, id",
                     {std::string(kHoldScopeUser), user_id, std::string(kHoldScopeAccount),
                      account_id, std::string(kHoldScopeFile), file_id});
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
