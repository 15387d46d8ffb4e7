// The file deletion consumer: the I/O around Decide(). It is the bus target
// "file_deletion_consumer" (file.delete_requested and consumer.completion), creates coordinations
// for DELETE requests, and owns one thread that fires due deadlines, runs the deletion step of
// coordinations in "deleting", and removes the blobs of deleted files.
//
// Each input is loaded, decided and applied inside one write unit, so a decision and its effects
// (rows, outbox events) commit together or not at all; a decision to delete usually carries out
// the deletion step in the same unit; after a crash everything resumes from the
// store: waiting coordinations get their deadline timer back, "deleting" ones are deleted, queued
// blobs are removed.
#pragma once

#include <atomic>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "blobs/blob_store.h"
#include "bus/event_bus.h"
#include "common/clock.h"
#include "common/ids.h"
#include "coordination/coordinator.h"
#include "coordination/holds.h"
#include "domain/model.h"
#include "metrics/metrics.h"
#include "store/sql.h"

namespace lastcall {

inline constexpr char kFileDeletionConsumer[] = "file_deletion_consumer";  // stored: do not rename

struct CoordinatorConfig {
  std::vector<std::string> expected_consumers;  // critical, waited for until the deadline
  int64_t timeout_ms = 5 * 60 * 1000;
  int64_t grace_ms = 0;                // DELETION_GRACE_MINUTES: no deletion before request + grace
  int64_t optional_grace_ms = 30 * 1000;        // OPTIONAL_GRACE_SECONDS
  // The further consumers a new coordination expects (the webhook consumers healthy at now),
  // read in the request's transaction. Unset: none.
  std::function<Result<std::vector<ConsumerPolicy>>(SqlTx&, WallMillis)> more_consumers;
  int64_t test_deletion_delay_ms = 0;  // fault injection: pause before each deletion step
  int batch = 256;                     // coordinations per unit of work
};

class CoordinationDriver : public EventHandler {
 public:
  CoordinationDriver(Database& db, BlobStore& blobs, Outbox& outbox, Clock& clock, IdGenerator& ids,
                     Metrics& metrics, CoordinatorConfig config);
  ~CoordinationDriver() override;

  // Bus target: file.delete_requested and consumer.completion.
  Status Handle(const CloudEvent& event, SqlTx& tx) override;

  // Inside the DELETE request's unit of work: marks the file deletion_requested, creates its
  // coordination and appends file.delete_requested. Returns the coordination id; for a file whose
  // deletion is already pending, returns the pending coordination's id and changes nothing.
  Result<std::string> RequestDeletion(SqlTx& tx, const FileRecord& file);

  // Inside a unit of work: the owner's cancel of a coordination. Returns the new state
  // (cancelled; the file active again; file.delete_cancelled appended). Errors: kNotFound when it
  // does not exist or is another user's; kConflict "deletion_started" once the deletion has begun
  // (decided here, in the writer's serial order, so a cancel racing the deletion has one winner).
  // Cancelling a cancelled coordination answers it as it is.
  Result<Coordination> Cancel(SqlTx& tx, const std::string& user_id,
                              const std::string& coordination_id);
  // Inside the unit that stored hold h: every waiting coordination it covers becomes held.
  // Returns how many.
  Result<int> PlaceHold(SqlTx& tx, const Hold& h);
  // Inside the unit that released hold h: every held coordination it covered is released (unless
  // another active hold still covers it) and proceeds at once when it may. Returns how many were
  // released.
  Result<int> ReleaseHold(SqlTx& tx, const Hold& h);

  // Starts the deadline/deletion thread (resuming whatever the store holds). Stop joins it.
  void Start();
  void Stop();
  // Something changed (a new deadline, a coordination entered deleting). Thread-safe, cheap.
  void Wake();

 private:
  Status Apply(SqlTx& tx, const Decision& d, const std::optional<Coordination>& before);
  // The actions of cancels and holds (kCancel, kHold, kRelease), for Apply.
  Status ApplyCancelOrHold(SqlTx& tx, const Decision& d, const Action& a);
  // Each expected consumer's policy (the configured ones: critical until the deadline) plus the
  // further consumers of config_.more_consumers, and the optional grace.
  Status AddConsumerPolicies(SqlTx& tx, WallMillis now, DeleteRequested* req);
  Status HandleCompletion(const CloudEvent& e, SqlTx& tx);
  Status HandleDeleteRequested(const CloudEvent& e, SqlTx& tx);
  // The deletion step of a coordination in status deleting (no-op otherwise), in tx. Claims the
  // coordination first; when another node holds it, does nothing and sets *skipped (if given).
  Status ExecuteDeletion(SqlTx& tx, const std::string& coordination_id, bool* skipped);
  // When d began the deletion, runs the deletion step right away in the same transaction (one
  // commit instead of two), inside a savepoint: if the step fails, the decision still commits
  // and the driver thread retries the step. Not when a test deletion delay is configured (the
  // pause happens on the driver thread).
  Status ProceedInline(SqlTx& tx, const Decision& d);
  void Loop();
  bool FireDeadlines();
  bool RunDeletions();
  bool CollectBlobs();
  // Verified deletion: checks completed coordinations not yet verified whose blob removal is done,
  // records verified or the residue found (coordination, timeline, metrics).
  bool VerifyDeletions();

  Database& db_;
  BlobStore& blobs_;
  Outbox& outbox_;
  Clock& clock_;
  IdGenerator& ids_;
  Metrics& metrics_;
  CoordinatorConfig config_;
  bool step_failed_ = false;  // driver thread only
  bool claims_skipped_ = false;  // driver thread only: this round left work another node held
  static constexpr int64_t kClaimRetryMs = 50;

  std::mutex mu_;
  std::condition_variable cv_;
  bool dirty_ = false;     // guarded by mu_
  bool stopping_ = false;  // guarded by mu_
  std::thread thread_;
};

}  // namespace lastcall
