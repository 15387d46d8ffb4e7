// What every bus does with one event for one target, whatever carried the event there: the
// handler's effects and the record processed(target, event id) commit together in the caller's
// write unit (a redelivery is recognised and skipped), a failed handler leaves no effect, and an
// event that ran out of attempts is recorded in dead_letters. Shared by InProcessBus and NatsBus
// so the two cannot drift apart.
#pragma once

#include <cstdint>
#include <optional>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "bus/event_bus.h"
#include "common/clock.h"
#include "common/ids.h"
#include "store/sql.h"

namespace lastcall {

// The outbox columns a bus reads, in the order EventFromOutboxRow expects them.
inline constexpr char kOutboxEventColumns[] = "seq, id, type, source, subject, time, data";
// The event of an outbox row selected with kOutboxEventColumns. Data that is not JSON is left
// discarded (DeliverInTx then fails the delivery instead of handing it to a handler).
CloudEvent EventFromOutboxRow(const SqlRow& r);

struct DeliveryOutcome {
  bool duplicate = false;  // processed(target, event id) existed: the handler did not run
  Status failure;          // the handler's error (its effects were rolled back); ok otherwise
};

// processed(target, event id) records that a caller handling many events in one unit writes
// together, with RecordProcessed, instead of one statement per event.
struct ProcessedRecords {
  std::vector<std::pair<std::string, WallMillis>> rows;  // event id, processed_at
};

// What a caller that handles many events in one unit already did itself.
struct DeliverySteps {
  // false: the caller checked in this tx that processed(target, e.id) does not exist (nor an
  // earlier copy in the same unit), so the lookup is skipped.
  bool check_processed = true;
  // false: no savepoint around the handler. A handler's failure then leaves its partial effects
  // in tx: the caller must fail the whole unit (and may retry the events one by one).
  bool savepoint = true;
  // Set: a handled event's record is appended here instead of inserted, and the caller must write
  // them with RecordProcessed in the same transaction before the unit ends.
  ProcessedRecords* defer_processed = nullptr;
};

// Inserts the records (none when empty) in a few multi-row statements, sent without waiting where
// the engine can (a failure fails the unit).
Status RecordProcessed(SqlTx& tx, const std::string& target, const ProcessedRecords& records);

// Runs handler for e inside tx (a savepoint around the handler) and, when it succeeds, records
// processed(target, e.id) at now. The returned Status is the transaction's own failure (the unit
// must fail); a handler's failure is DeliveryOutcome::failure and leaves tx usable (with the
// default steps).
Result<DeliveryOutcome> DeliverInTx(SqlTx& tx, const std::string& target, EventHandler& handler,
                                    const CloudEvent& e, WallMillis now, DeliverySteps steps = {});

// An operator's replay of e for target (EventReplayer::ReplayEvent, shared by both buses): the
// same as a delivery, except that a handler's failure is the result (the unit then fails).
// Errors: kNotFound "no such target" when handler is null.
Status ReplayInTx(SqlTx& tx, const std::string& target, EventHandler* handler, const CloudEvent& e,
                  WallMillis now);

// Records that target gave up on event (event_seq its outbox position) after attempts tries,
// with a copy of the event from the outbox (a replay needs it after the outbox row is pruned).
// delivery_id: the webhook delivery that gave up, for a webhook consumer.
Status RecordDeadLetter(SqlTx& tx, IdGenerator& ids, const std::string& target,
                        const std::string& event_id, int64_t event_seq, int attempts,
                        const std::string& error, WallMillis now,
                        const std::optional<std::string>& delivery_id = std::nullopt);

// Exponential backoff with full jitter: a delay in [0, min(cap, base * 2^(attempt-1))] ms.
int64_t RetryDelayMs(int attempt, int64_t base_ms, int64_t cap_ms, std::mt19937_64& rng);

}  // namespace lastcall
