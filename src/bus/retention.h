// Retention of the bus's bookkeeping: outbox rows, processed(target, event id) records and
// delivery_attempts, which would otherwise grow without bound.
//
// Contract (exactly-once stays in effect):
// - An outbox row goes only when the bus says no target will ever be handed the event again
//   (EventBus::Finished: in-process, every registered target's cursor has passed it; NATS, it is
//   settled, every target recorded it as processed or dead-lettered), and no sooner than
//   retention_ms after that (created_at in-process, settled_at on NATS).
// - An event's processed records go in the same unit as its outbox row, and never sooner than
//   the bus's redelivery horizon (EventBus::RedeliveryHorizonMs) after it finished: the effective
//   retention is max(retention_ms, horizon). A copy the bus could still deliver later finds
//   either its processed record or no outbox row, and is skipped either way (the in-process bus
//   reads only past its cursors; NatsBus acks a copy whose outbox row is gone).
// - delivery_attempts of a pruned event go with it, and those of a delivery that finished
//   (processed or dead-lettered for that target) go at every round.
// - Dead letters keep a copy of their event (RecordDeadLetter), so a replay after pruning runs
//   the same event; they are never pruned here.
// Each round is one write unit deleting at most `batch` events (a few statements), run on the
// writer between the other units; a full round runs the next one at once. The Pruner sizes its
// rounds by how busy the writer is (PruneRoundSize): a round holds the writer, and every unit
// queued behind it, for about 80 us per event, so a writer with short queues gets small rounds,
// and a saturated one, which commits only a few times a second, rounds of up to `batch`, so
// that pruning keeps up with the events a full load makes. Deleting by event id
// is idempotent, so every node of a scale-out deployment may prune (claims use SKIP LOCKED on
// PostgreSQL, so two nodes rarely wait for each other).
#pragma once

#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>

#include "bus/event_bus.h"
#include "common/clock.h"
#include "metrics/metrics.h"
#include "store/sql.h"

namespace lastcall {

struct RetentionOptions {
  int64_t retention_ms = 60000;  // LASTCALL_OUTBOX_RETENTION_SECONDS: keep finished events this long
  int64_t interval_ms = 5000;    // LASTCALL_PRUNE_INTERVAL_SECONDS: between rounds when idle
  int batch = 500;               // LASTCALL_PRUNE_BATCH: events per unit of work at most
};

struct PruneCounts {
  int64_t outbox = 0;
  int64_t processed = 0;
  int64_t delivery_attempts = 0;
  int64_t events = 0;  // events the bus reported finished this round (outbox rows may be fewer
                       // when another node pruned them first)
};

// One round inside tx (a write unit): prunes up to options.batch finished events older than the
// effective retention at now, their processed records and delivery attempts, and the attempts of
// finished deliveries. Errors: the store's.
Result<PruneCounts> PruneOnce(SqlTx& tx, EventBus& bus, WallMillis now,
                              const RetentionOptions& options);

// The events the next round deletes at most: kSmallPruneRound (or max_batch if smaller) when the
// last round waited little for the rest of its batch (others_wait_ms: from submitting the unit to
// its commit, less the round's own work), growing with that wait up to max_batch. The writer's
// queue already delays every unit by about others_wait_ms then, and it commits seldom, so larger
// rounds add little to that delay and are what lets pruning keep up.
constexpr int kSmallPruneRound = 100;
int PruneRoundSize(int max_batch, double others_wait_ms);

// Runs PruneOnce as its own periodic unit of work on the writer, on a thread of its own, with
// rounds sized by PruneRoundSize, and counts what it removed (lastcall_rows_pruned_total{table}).
class Pruner {
 public:
  Pruner(Database& db, EventBus& bus, Clock& clock, Metrics& metrics, RetentionOptions options);
  ~Pruner();
  // The effective retention: max(options.retention_ms, bus.RedeliveryHorizonMs()).
  int64_t effective_retention_ms() const;
  void Start();
  // Returns after the round in flight finished. Idempotent.
  void Stop();
  // One round of up to options.batch events, waiting for its commit (for tests and tools). Must
  // not run on the writer thread.
  Result<PruneCounts> RunOnce();

 private:
  // One round of up to `size` events; sets *others_wait_ms (see PruneRoundSize) when not null.
  Result<PruneCounts> RunRound(int size, double* others_wait_ms);
  void Loop();

  Database& db_;
  EventBus& bus_;
  Clock& clock_;
  Metrics& metrics_;
  RetentionOptions options_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;  // guarded by mu_
  std::thread thread_;
};

}  // namespace lastcall
