// Coordinations and their completions in the store. Writes never overwrite a whole record: a
// completion is its own row (inserted once), and an update touches only the decision columns.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "coordination/coordinator.h"
#include "store/sql.h"

namespace lastcall {

// Claiming a coordination before acting on it (deciding, firing its deadline, deleting), so that
// when several nodes share one database (PostgreSQL) exactly one of them acts at a time and the
// others see its committed result. The claim lasts until the transaction ends.
enum class ClaimMode {
  kWait,           // an event about it: wait for the current holder (also covers an id whose row
                   // does not exist yet, so a completion and its request never race)
  kSkipIfTaken,    // a sweep (deadlines, deletions): leave it to the node that holds it
};
// True when the coordination exists and this transaction holds it now; false when it does not
// exist or (kSkipIfTaken) another transaction holds it. With kWait a missing one is still claimed:
// nobody else acts on that id until this transaction ends. On SQLite a lookup only (its single
// writer runs every write unit alone).
Result<bool> ClaimCoordination(SqlTx& tx, const std::string& id, ClaimMode mode);

// The coordination with all its recorded completions, or nullopt.
Result<std::optional<Coordination>> LoadCoordination(SqlTx& tx, const std::string& id);
// ClaimCoordination, then LoadCoordination, in one statement where the engine allows (PostgreSQL:
// the read takes the row lock; kWait's advisory lock is sent ahead of it without waiting).
// nullopt: no such coordination, or (kSkipIfTaken only) another transaction holds it, which
// *taken (when given) tells apart: true only in that case.
Result<std::optional<Coordination>> ClaimAndLoadCoordination(SqlTx& tx, const std::string& id,
                                                             ClaimMode mode,
                                                             bool* taken = nullptr);
// Whether a coordination with this id exists (one primary-key lookup; no completions read).
Result<bool> CoordinationExists(SqlTx& tx, const std::string& id);
// Completions stored under an id (for a coordination that does not exist yet: the early ones).
Result<std::vector<Completion>> LoadCompletions(SqlTx& tx, const std::string& coordination_id);
Status InsertCoordination(SqlTx& tx, const Coordination& c);
// Updates the decision columns: status, outcome, missing consumers, completed_at,
// transactions_deleted, due_at, hold_reason, cancelled_at, proceeded_by, the veto and the override;
// and blob_key (where the file's content was, for the verification) when given.
// stored: the coordination as loaded in this transaction, when the caller has it; then nothing is
// written when none of those columns differs from it (and no blob_key is given): a completion
// that does not move the decision changes only its own row.
// Errors: kInternal when the row does not exist (when written).
Status UpdateCoordinationDecision(SqlTx& tx, const Coordination& c,
                                  const std::optional<std::string>& blob_key = std::nullopt,
                                  const Coordination* stored = nullptr);
// Inserts a completion; an existing one for the same (coordination, consumer) stays as it is,
// except that its expected flag is set to c.expected.
Status UpsertCompletion(SqlTx& tx, const std::string& coordination_id, const Completion& c);

// ---- the audit timeline: append-only, no user content, outlives the file ----
struct TimelineEntry {
  WallMillis at = 0;
  std::string kind;         // stored: requested, completion, timeout, deletion_decided, ...
  std::string detail_json;  // an object
};
Status AppendTimeline(SqlTx& tx, const std::string& coordination_id, WallMillis at,
                      const std::string& kind, const std::string& detail_json);
// Appends entries in their order with one statement (none when entries is empty).
Status AppendTimeline(SqlTx& tx, const std::string& coordination_id,
                      const std::vector<TimelineEntry>& entries);
Result<std::vector<TimelineEntry>> LoadTimeline(SqlTx& tx, const std::string& coordination_id);

// ---- listing (newest first, keyset pagination) ----
struct CoordinationFilter {
  std::optional<std::string> user_id;   // only this user's (nullopt: all, for operators)
  std::optional<CoordinationStatus> status;
  std::optional<Outcome> outcome;
  std::optional<std::string> pending_consumer;  // expected and not completed
  int limit = 50;
  std::optional<std::pair<WallMillis, std::string>> after;  // (started_at, id) of the last seen
};
// The coordinations matching filter, newest first, at most filter.limit; *more tells whether
// another page exists.
Result<std::vector<Coordination>> ListCoordinations(SqlTx& tx, const CoordinationFilter& filter,
                                                    bool* more);
struct DueCoordination {
  std::string id;
  std::string account_id;
};
// Coordinations with status s whose timer (due_at: deadline or grace end) is at or before `due`
// (s = waiting), or all of them (s = deleting), oldest first, at most limit.
Result<std::vector<DueCoordination>> DueCoordinations(SqlTx& tx, CoordinationStatus s,
                                                      WallMillis due, int limit);
// The earliest timer (due_at) among waiting coordinations, or nullopt when none waits.
Result<std::optional<WallMillis>> NextDeadline(SqlTx& tx);

}  // namespace lastcall
