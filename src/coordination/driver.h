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

#include <nlohmann/json.hpp>

#include "blobs/blob_store.h"
#include "bus/event_bus.h"
#include "common/clock.h"
#include "common/ids.h"
#include "coordination/coordination_repo.h"
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
  // Whether a consumer was registered with the right to veto (canVeto), read in the veto's
  // transaction. Unset: no consumer may veto.
  std::function<Result<bool>(SqlTx&, const std::string&)> may_veto;
  // Where the deletion step runs once it is decided. true: in the same unit as the decision (one
  // commit, and file.deleted leaves with it; right for one writer). false: the driver thread runs
  // it, one unit per coordination, all submitted at once, so that several writers
  // (PostgresOptions::writers) run steps in parallel instead of one after another inside the
  // deciding unit (for the NATS bus, one target's serial batch).
  bool inline_deletion = true;
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
  // Inside a unit of work: consumer's veto of a coordination, with its reason (1 to 500
  // characters, the consumer's text) and detail (an object; its "reason" is set to reason).
  // Returns the coordination after the veto (vetoed, the file active again, file.delete_vetoed
  // appended); a second veto by the same consumer returns it unchanged with *duplicate set.
  // Errors: kNotFound when it does not exist or the consumer is not expected in it;
  // kUnprocessable "veto_not_allowed" without the right to veto; kConflict "deletion_started",
  // "coordination_cancelled" or "already_reported" (it answered completed or failed before).
  // Refusals are not counted here (the caller counts them in vetoes_refused). Decided in the
  // writer's serial order (and under the coordination's claim on PostgreSQL), so a
  // veto racing the deletion has one winner.
  Result<Coordination> Veto(SqlTx& tx, const std::string& consumer, const std::string& coordination_id,
                            const std::string& reason, nlohmann::json detail, bool* duplicate);
  // Inside a unit of work: an operator's override of a vetoed coordination (audited: timeline,
  // log, metric). Returns the new state: waiting, deleting or completed (it proceeds at once when
  // its consumers are done or its deadline passed), or held when an active hold covers the file.
  // Errors: kNotFound when it does not exist; kConflict "not_vetoed" when it is not vetoed, and
  // "file_changed" when the file is no longer the active file it was (deleted since, or under
  // another coordination after a new DELETE). Two overrides racing: exactly one wins, the other
  // gets "not_vetoed".
  Result<Coordination> Override(SqlTx& tx, const std::string& operator_subject,
                                const std::string& coordination_id, const std::string& reason);
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
  // Carries out d's actions (ApplyActions) and stores its new state when it changed (and before
  // existed; a new coordination is stored by its kCreate action).
  Status Apply(SqlTx& tx, const Decision& d, const std::optional<Coordination>& before);
  // d's actions only: rows, outbox events, timeline entries (appended in their order with one
  // statement, or added to *pending for the caller to append when pending is given), metrics and
  // logs after the commit. Does not store d.state unless kCreate.
  Status ApplyActions(SqlTx& tx, const Decision& d,
                      std::vector<TimelineEntry>* pending = nullptr);
  // The actions of cancels, holds, vetoes and overrides (kCancel, kHold, kRelease, kVeto,
  // kOverride), for ApplyActions, which appends the entries they add to *timeline.
  Status ApplyStopOrResume(SqlTx& tx, const Decision& d, const Action& a,
                           std::vector<TimelineEntry>* timeline);
  // Each expected consumer's policy (the configured ones: critical until the deadline) plus the
  // further consumers of config_.more_consumers, and the optional grace.
  Status AddConsumerPolicies(SqlTx& tx, WallMillis now, DeleteRequested* req);
  Status HandleCompletion(const CloudEvent& e, SqlTx& tx);
  // A consumer.completion with status "veto" (a webhook's answer): decided like Veto; a refused
  // veto is logged and counted, not retried.
  Status HandleVetoEvent(const CloudEvent& e, SqlTx& tx);
  Status HandleDeleteRequested(const CloudEvent& e, SqlTx& tx);
  // The deletion step of a coordination in status deleting (no-op otherwise), in tx. Claims the
  // coordination first; when another node holds it, does nothing and sets *skipped (if given).
  Status ExecuteDeletion(SqlTx& tx, const std::string& coordination_id, bool* skipped);
  // The deletion step of c, which is the coordination's current state in tx (status deleting,
  // claimed by tx; kInternal otherwise): deletes the file's data, stores c as completed (every
  // decision column, and blob_key), appends file.deleted and the timeline: `timeline` (entries
  // not yet stored, written first) and the step's own.
  Status DeleteNow(SqlTx& tx, const Coordination& c, std::vector<TimelineEntry> timeline);
  // Apply, and when d began the deletion, the deletion step right away in the same transaction
  // (one commit instead of two) from d.state (no second read), inside a savepoint: if the step
  // fails, the decision still commits (stored as deleting) and the driver thread retries the
  // step. Not when a test deletion delay is configured (the pause happens on the driver thread).
  Status ApplyAndProceed(SqlTx& tx, const Decision& d, const std::optional<Coordination>& before);
  void Loop();
  bool FireDeadlines();
  bool RunDeletions();
  // Removes the blobs queued for removal, then, in one unit, forgets them (blob_gc) and verifies
  // the deletions this made ready (VerifyIn, in a savepoint of its own: its failure leaves the
  // removals to commit, and VerifyDeletions retries it).
  bool CollectBlobs();
  // Verified deletion: checks completed coordinations not yet verified whose blob removal is done,
  // records verified or the residue found (coordination, timeline, metrics). Finds what
  // CollectBlobs's unit left (its batch limit, a failure, deletions with nothing to collect).
  bool VerifyDeletions();
  // VerifyDeletions's work in tx: verifies up to a batch of the ready coordinations; *found (when
  // set) is how many were ready. Its after-commit work (metrics, log lines) is registered only
  // when it returns Ok, so a caller that rolls a failure back to a savepoint keeps none of it.
  Status VerifyIn(SqlTx& tx, size_t* found);

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
