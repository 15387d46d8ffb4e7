// Coordinations and their completions in the store. Writes never overwrite a whole record: a
// completion is its own row (inserted once), and an update touches only the decision columns.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "coordination/coordinator.h"
#include "store/sql.h"

namespace lastcall {

// The coordination with all its recorded completions, or nullopt.
Result<std::optional<Coordination>> LoadCoordination(SqlTx& tx, const std::string& id);
// Completions stored under an id (for a coordination that does not exist yet: the early ones).
Result<std::vector<Completion>> LoadCompletions(SqlTx& tx, const std::string& coordination_id);
Status InsertCoordination(SqlTx& tx, const Coordination& c);
// Updates status, outcome, missing consumers, completed_at and transactions_deleted.
Status UpdateCoordinationDecision(SqlTx& tx, const Coordination& c);
// Inserts a completion; an existing one for the same (coordination, consumer) stays as it is,
// except that its expected flag is set to c.expected.
Status UpsertCompletion(SqlTx& tx, const std::string& coordination_id, const Completion& c);

struct CoordinationFilter {
  std::optional<std::string> user_id;  // only this user's (nullopt: all, for operators)
};
// Coordination ids with status s whose deadline is at or before `due` (s = waiting) or any
// deadline (s = deleting), oldest deadline first, at most limit.
Result<std::vector<std::string>> DueCoordinations(SqlTx& tx, CoordinationStatus s, WallMillis due,
                                                  int limit);
// The earliest deadline among waiting coordinations, or nullopt when none waits.
Result<std::optional<WallMillis>> NextDeadline(SqlTx& tx);

}  // namespace lastcall
