// One dead letter queue for every target: in-process consumers (the bus's dead_letters rows) and
// webhook consumers (rows that name their delivery). Each dead letter carries a copy of its event
// (since schema version 12; older rows read it from the outbox while the outbox holds it), so it
// can be shown and replayed after retention pruned the event's outbox row. A replay runs inside
// one write unit.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "bus/replayer.h"
#include "common/clock.h"
#include "domain/events.h"
#include "store/sql.h"

namespace lastcall {

struct DeadLetter {
  std::string id;
  std::string target;  // the consumer (in-process target or webhook consumer name)
  std::string event_id;
  int64_t event_seq = 0;
  int64_t attempts = 0;
  std::string error;
  WallMillis created_at = 0;
  std::optional<std::string> delivery_id;  // set for webhook consumers
  std::optional<WallMillis> replayed_at;
  std::optional<CloudEvent> event;  // nullopt only for a dead letter older than schema version
                                    // 12 whose outbox row is gone

  const char* kind() const { return delivery_id ? "webhook" : "in_process"; }
};

struct DeadLetterFilter {
  std::optional<std::string> target;
  bool include_replayed = true;
  int limit = 50;
  std::optional<std::pair<WallMillis, std::string>> after;  // (created_at, id) of the last seen
};

// Newest first; *more tells whether another page exists.
Result<std::vector<DeadLetter>> ListDeadLetters(SqlTx& tx, const DeadLetterFilter& f, bool* more);
Result<std::optional<DeadLetter>> FindDeadLetter(SqlTx& tx, const std::string& id);

// Replays dead letter id in tx and marks it replayed at now. A webhook's delivery becomes
// pending again with its attempts reset (due now; the worker must be woken after the commit);
// an in-process target's handler runs the event now through replayer. Errors: kNotFound;
// kConflict "already_replayed"; kConflict "event_gone" when the outbox no longer has the event;
// kConflict "replay_failed" with the handler's error (nothing changed; it may be replayed again).
Status ReplayDeadLetter(SqlTx& tx, const std::string& id, WallMillis now, EventReplayer& replayer);

}  // namespace lastcall
