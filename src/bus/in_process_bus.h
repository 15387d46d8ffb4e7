// The embedded default bus: delivers events straight from the outbox table. One dispatcher thread
// keeps a cursor per target (delivery_cursors) and hands each target its next batch of matching
// events inside one write unit, so delivery shares the store's group commit. Delivery is in outbox
// order per target; a failed delivery stops that target (keeping order) and is retried with
// exponential backoff and full jitter; after max_attempts the event is dead-lettered for that target
// and the target moves on. Attempts are counted in the store (delivery_attempts, in the unit of the
// failed delivery), so the budget holds across restarts.
//
// Each round queues one unit per due target that has events past its cursor (looked up on a
// read connection first, so a round with nothing to do writes nothing), in the order the targets
// were added; the units usually share one commit, and a later target's unit already sees the
// events an earlier one appended in that transaction (so a coordinator added last takes in the
// consumers' completions in the same commit).
//
// Delivery in the publishing batch: where the store has group-commit batches
// (Database::SetBatchTail), the bus is their tail. Once a batch's queued units ran, each target in
// good standing with events past its cursor gets a unit in the same transaction, in rounds until
// every such target is caught up. So a DELETE, the consumers' handling of its event, their
// completions, the coordinator's decision and the deletion commit together: one commit and no wait
// for this thread, where the dispatcher alone took two or three commits in a row. A target is in
// good standing unless its last delivery failed (in a batch's tail or here) and the dispatcher has
// not yet delivered it since. A failed delivery in a tail is rolled back alone, and the dispatcher
// settles it as its own: an attempt counted (or a careful rerun), then retries with backoff and
// dead letters as above.
#pragma once

#include <atomic>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <random>
#include <thread>

#include "bus/event_bus.h"
#include "bus/replayer.h"
#include "common/clock.h"
#include "common/ids.h"

namespace lastcall {

struct InProcessBusOptions {
  int batch = 256;                // events per target per unit of work
  int max_attempts = 8;           // then dead-letter
  int64_t backoff_base_ms = 100;
  int64_t backoff_cap_ms = 30000;
  int64_t idle_poll_ms = 1000;    // safety net when no Notify arrives
  bool deliver_in_batch = true;   // be the store's batch tail (see above) where it has one
};

class InProcessBus : public EventBus, public EventReplayer, private BatchTail {
 public:
  InProcessBus(Database& db, Clock& clock, IdGenerator& ids, Metrics& metrics,
               InProcessBusOptions options = {});
  ~InProcessBus() override;

  void AddTarget(const std::string& target, EventHandler* handler) override;
  void AddRule(const Rule& rule) override;
  Status Start() override;
  void Notify() override;
  void Stop() override;
  // Every outbox event after the target's cursor (matching or not: the cursor moves past both).
  Result<int64_t> Backlog(SqlTx& tx, const std::string& target) override;
  // The events every registered target's cursor has passed (handled, skipped as unmatched or
  // dead-lettered): this bus reads only past its cursors, so none is read again. Nothing while
  // some registered target has no cursor yet (it will read the outbox from its start).
  Result<std::vector<OutboxEventRef>> Finished(SqlTx& tx, WallMillis finished_before,
                                               WallMillis implausible_after, int limit) override;

  // A dead letter's replay (EventReplayer). Handlers are fixed after Start, so this may run on
  // the writer thread while the dispatcher delivers.
  Status ReplayEvent(const std::string& target, const CloudEvent& e, SqlTx& tx) override;

  // Delivery failures so far. Thread-safe.
  uint64_t failures() const;

 private:
  struct Target {
    std::string name;
    EventHandler* handler = nullptr;
    std::vector<EventPattern> patterns;
    WallMillis retry_at = 0;
    // true: each event runs in its own savepoint (after a handler failed in the optimistic
    // mode), until a unit commits with no failure. false: no savepoint per event.
    bool careful = false;
  };
  struct Progress {
    int consumed = 0;
    std::vector<std::string> types;  // of the events handled, for metrics
    int64_t failed_seq = 0;
    std::string failed_event;
    int64_t attempts = 0;  // failed attempts of failed_event so far, this one included (stored)
    Status failure;
    // In the optimistic mode a handler failed without its savepoint, so the unit failed and
    // nothing of it committed. head_failed: it was the unit's first event to run; its failure is
    // an attempt, recorded in a unit of its own. redo_carefully: events ran before it; the batch
    // runs again at once in careful mode, and the failure is not an attempt.
    bool head_failed = false;
    int64_t passed = 0;  // head_failed: the cursor moves here (rows it skipped before it); 0: stays
    bool redo_carefully = false;
  };
  void Loop();
  // Delivers t's next events after its cursor (at most options_.batch) in tx. careful: each event
  // in its own savepoint (see Target::careful), else a failing handler fails the unit.
  Status DeliverBatch(const Target& t, bool careful, SqlTx& tx, Progress* p);
  // BatchTail, on the writer thread: a unit per target in good standing that is behind the
  // outbox's last event.
  Result<std::vector<TailUnit>> More(SqlTx& tx) override;
  // Of the targets given (indexes into targets_), those whose cursor is before the outbox's last
  // event, in the order given.
  Result<std::vector<size_t>> BehindIn(SqlTx& tx, const std::vector<size_t>& of);
  // BehindIn on a read connection; all of due when the read fails.
  std::vector<size_t> Behind(const std::vector<size_t>& due);
  // A unit of t's that failed with st (here or in a batch tail): a careful rerun, a counted
  // attempt (OnFailure), or a short wait. Returns true when t is to run again at once.
  bool SettleFailedUnit(Target& t, Progress& p, Status st);
  void OnFailure(Target& t, const Progress& p);
  // Counts one failed attempt of p's failed event for t; sets p->attempts (this one included).
  Status RecordAttempt(const Target& t, SqlTx& tx, Progress* p);

  Database& db_;
  Clock& clock_;
  IdGenerator& ids_;
  Metrics& metrics_;
  InProcessBusOptions options_;
  // Fixed after Start. Used by the dispatcher thread only, except name, handler and patterns,
  // which the writer thread reads for the batch tail.
  std::vector<Target> targets_;
  // Per target (same index), who may deliver it now. kGood: the batch tail and the dispatcher.
  // kDispatcher: only the dispatcher (its last delivery failed, or it is backing off or careful);
  // set by a failing dispatcher unit (writer thread), handed back by the dispatcher (HandBack).
  // kTailFailed: a batch tail's unit failed (set on the writer thread, from kGood only) and the
  // dispatcher has not counted it yet; nobody delivers the target meanwhile, so every failed try
  // is counted before the next one runs.
  enum Standing { kGood = 0, kDispatcher = 1, kTailFailed = 2 };
  std::unique_ptr<std::atomic<int>[]> standing_;
  // Dispatcher thread: kDispatcher back to kGood once the target needs no care (not careful, not
  // backing off).
  void HandBack(size_t i);
  bool tail_installed_ = false;  // Start/Stop only
  std::mt19937_64 rng_;

  // Events parsed by a target's unit, by outbox seq, for the other targets' units (a
  // file.delete_requested goes to three targets, read in the same round). An entry is used only
  // when its event id is the row's: the seq of an insert that was rolled back may be taken again.
  // Cleared whole when it reaches kParsedCacheSize entries.
  static constexpr size_t kParsedCacheSize = 4096;
  std::shared_ptr<const CloudEvent> Parsed(const SqlRow& r);
  std::mutex parsed_mu_;
  std::unordered_map<int64_t, std::shared_ptr<const CloudEvent>> parsed_;  // guarded by parsed_mu_

  mutable std::mutex mu_;
  std::condition_variable cv_;
  // A batch tail's unit that failed, for the dispatcher to settle.
  struct TailFailure {
    size_t target;
    Progress progress;
    Status status;
  };
  std::vector<TailFailure> tail_failures_;  // guarded by mu_
  bool dirty_ = false;    // guarded by mu_
  bool stopping_ = false; // guarded by mu_
  uint64_t failures_ = 0;
  std::thread thread_;
};

}  // namespace lastcall
