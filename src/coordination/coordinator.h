// The coordinator's decisions, as a pure state machine: Decide(state, input, now) -> new state and
// actions. No I/O, no clock of its own: the driver (coordination/driver.h) loads the state, calls
// Decide, and applies the actions in one transaction. Every rule of a coordinated deletion lives
// here, so "where does a deletion decide to proceed?" has one answer: Decide().
#pragma once

#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "common/clock.h"

namespace lastcall {

// stored: do not rename.
//   waiting   consumers and the deadline are awaited (and the grace window, when configured)
//   held      a legal hold covers the file: nothing makes it proceed until every hold is released
//   deleting  the deletion was decided and is being carried out (cancel answers 409 from here on)
//   completed the file's data is gone
//   cancelled the owner cancelled it before the deletion began; the file is active again
//   vetoed    a consumer with the right to veto refused the deletion before it began; the file is
//             active again. Only an operator's override (or the owner's cancel) moves it on.
enum class CoordinationStatus { kWaiting, kDeleting, kCompleted, kHeld, kCancelled, kVetoed };
// stored: do not rename.
enum class Outcome { kNone, kAllCompleted, kTimedOut };
// stored: do not rename. kVetoed: the consumer answered with a veto (its reason in the detail).
// A veto is that consumer's answer: it counts as reported once an operator overrides it.
enum class ConsumerStatus { kPending, kCompleted, kFailed, kVetoed };
// A veto on the wire: the "status" of a consumer's answer (POST /coordinations/{id}/completions,
// the webhook's answer, consumer.completion events). stored: do not rename.
inline constexpr char kVetoStatus[] = "veto";
// The longest veto reason accepted, in bytes.
inline constexpr size_t kMaxVetoReason = 500;

const char* ToString(CoordinationStatus s);
const char* ToString(Outcome o);
const char* ToString(ConsumerStatus s);
std::optional<CoordinationStatus> ParseCoordinationStatus(const std::string& s);
std::optional<Outcome> ParseOutcome(const std::string& s);
std::optional<ConsumerStatus> ParseConsumerStatus(const std::string& s);

// How long a deletion waits for a consumer (docs/consumers.md, "When a deletion proceeds").
// stored: do not rename.
enum class ConsumerPriority { kCritical, kOptional };
// Which rule let the deletion proceed as far as one consumer is concerned. stored: do not rename.
enum class ProceedRule {
  kReported,         // it reported (completed or failed) before the decision
  kCriticalTimeout,  // critical, and its own timeout passed
  kOptionalGrace,    // optional, and the grace after the critical consumers ended passed
  kOptionalTimeout,  // optional, and its own timeout passed
  kDeadline,         // the coordination's deadline passed
};
const char* ToString(ConsumerPriority p);
const char* ToString(ProceedRule r);
std::optional<ConsumerPriority> ParseConsumerPriority(const std::string& s);
std::optional<ProceedRule> ParseProceedRule(const std::string& s);

// One expected consumer's place in the wait, fixed when the coordination is created.
struct ConsumerPolicy {
  std::string name;
  ConsumerPriority priority = ConsumerPriority::kCritical;
  int64_t timeout_ms = 0;  // its own wait from started_at; 0 (or past the deadline): the deadline
};

// A completion reported by a consumer (kept even when it arrives before its coordination).
struct Completion {
  std::string consumer;
  ConsumerStatus status = ConsumerStatus::kCompleted;  // kCompleted or kFailed
  std::string detail_json = "{}";                      // an object
  WallMillis at = 0;
  std::string event_id;
  bool expected = false;  // set by Decide: counted toward the coordination only when true
};

struct Coordination {
  std::string id;
  std::string user_id;
  std::string file_id;
  std::string account_id;
  int64_t transaction_count = 0;
  std::vector<std::string> expected;  // fixed when the coordination is created
  CoordinationStatus status = CoordinationStatus::kWaiting;
  Outcome outcome = Outcome::kNone;
  std::vector<std::string> missing;   // expected consumers that had not completed at the decision
  WallMillis started_at = 0;
  WallMillis deadline_at = 0;
  std::optional<WallMillis> completed_at;
  std::optional<int64_t> transactions_deleted;
  std::vector<Completion> completions;  // every recorded completion, expected or not
  // Per expected consumer; a consumer with no entry is critical until the deadline.
  std::vector<ConsumerPolicy> policies;
  int64_t optional_grace_ms = 0;  // OPTIONAL_GRACE_SECONDS when the coordination was created
  // Set when the deletion began: for every expected consumer, the rule that let it proceed.
  std::vector<std::pair<std::string, ProceedRule>> proceeded_by;

  // The policy of an expected consumer (critical until the deadline when none was recorded).
  ConsumerPolicy PolicyOf(const std::string& consumer) const;
  // The grace window (DELETION_GRACE_MINUTES): the deletion never begins before this instant,
  // even when every consumer has completed. started_at when there is no grace.
  WallMillis not_before = 0;
  // When a Tick may change this coordination next (the driver's timer), or nullopt when only an
  // input can (held, and every final status). Maintained by Decide.
  std::optional<WallMillis> due_at;
  // The operator's reason of the hold that blocks it (status held); nullopt otherwise.
  std::optional<std::string> hold_reason;
  std::optional<WallMillis> cancelled_at;
  // The veto that last stopped it (status vetoed, and kept after an override so the owner still
  // sees why it waited), or nullopt when no consumer vetoed.
  struct Veto {
    std::string consumer;
    std::string reason;  // the consumer's text, shown to the owner and the operator
    WallMillis at = 0;
  };
  std::optional<Veto> veto;
  // The operator's override of that veto, or nullopt. Cleared when a later veto stops it again.
  struct Override {
    std::string by;      // the operator's subject (JWT sub)
    std::string reason;  // the operator's text ("" when none was given)
    WallMillis at = 0;
  };
  std::optional<Override> overridden;
  // Verified deletion (recorded by the driver after the deletion, never by Decide): nullopt until
  // checked, then "verified" or "residue" (stored: do not rename) with residue_json naming what
  // was found where ({} when verified).
  std::optional<std::string> verification;
  std::string residue_json = "{}";
  std::optional<WallMillis> verified_at;

  // The recorded completion of an expected consumer, or nullptr while it is pending.
  const Completion* CompletionOf(const std::string& consumer) const;
  // Expected consumers with no recorded completion, in expected order.
  std::vector<std::string> Pending() const;
};

// ---- inputs ----
struct DeleteRequested {
  std::string coordination_id, user_id, file_id, account_id;
  int64_t transaction_count = 0;
  std::vector<std::string> expected;
  int64_t timeout_ms = 0;
  std::vector<ConsumerPolicy> policies;  // see Coordination::policies
  int64_t optional_grace_ms = 0;
  int64_t grace_ms = 0;                    // DELETION_GRACE_MINUTES
  std::optional<std::string> hold_reason;  // a hold already covers the file: created held
};
struct CompletionReported {
  std::string coordination_id;
  Completion completion;
};
struct Tick {};  // time passed: the deadline may be due
struct DeletionDone {
  int64_t transactions_deleted = 0;
};
// The owner asks to cancel. Decided in the unit that would otherwise carry out the deletion, so a
// cancel racing the deletion has exactly one winner.
struct CancelRequested {};
// A hold now covers the file (reason: the operator's text, not user content).
struct HoldPlaced {
  std::string reason;
};
// A hold covering the file was released. still_held: the reason of another hold that still
// covers it, or nullopt when none does.
struct HoldReleased {
  std::optional<std::string> still_held;
};
// A consumer answered with a veto. completion.status is kVetoed and its detail carries the
// reason; may_veto: the consumer was registered with the right to veto (canVeto), as the driver
// looked it up when the veto arrived.
struct VetoReported {
  Completion completion;
  std::string reason;
  bool may_veto = false;
};
// An operator lets a vetoed coordination proceed. hold_reason: an active hold covering the file
// (the hold still wins: the coordination becomes held, not waiting), or nullopt.
struct OverrideRequested {
  std::string by;
  std::string reason;
  std::optional<std::string> hold_reason;
};
using Input = std::variant<DeleteRequested, CompletionReported, Tick, DeletionDone, CancelRequested,
                           HoldPlaced, HoldReleased, VetoReported, OverrideRequested>;

// ---- decisions ----
enum class ActionKind {
  kCreate,              // store the new coordination (and any completions it already had)
  kRecordCompletion,    // store decision.completion (expected: counted)
  kRecordUnexpected,    // store decision.completion (not expected: never counted)
  kKeepEarly,           // store decision.completion for a coordination that does not exist yet
  kIgnore,              // nothing to store; reason says why (duplicate, after deletion, ...)
  kWarnTimeout,         // log a warning naming decision.state->missing
  kBeginDeletion,       // status became deleting: run the deletion step
  kFinish,              // status became completed
  kCancel,              // status became cancelled: make the file active again, publish the cancel
  kRefuseCancel,        // the deletion has begun (or finished): the cancel loses (409)
  kHold,                // status became held (a blocked deletion); reason = the hold's reason
  kRelease,             // the last hold was released: status waiting again
  kVeto,                // status became vetoed: make the file active again, publish the veto
  kRefuseVeto,          // the veto is refused; reason is the error code (see Decide)
  kOverride,            // an operator overrode the veto: the file is deletion_requested again
  kRefuseOverride,      // not vetoed: the override is refused (409); reason "not_vetoed"
};

struct Action {
  ActionKind kind;
  std::string reason;  // for kIgnore and logs; the error code for kRefuseVeto / kRefuseOverride
};

struct Decision {
  std::optional<Coordination> state;  // the new state (nullopt: still no coordination)
  std::vector<Action> actions;
  std::optional<Completion> completion;  // the completion to store, for record/keep actions
  bool changed = false;                  // state differs from the input state
  bool Has(ActionKind k) const;
};

// Decides what an input means for a coordination.
//   existing: the stored coordination, or nullopt when none exists yet.
//   early:    completions stored for this coordination id before it existed (used on creation).
// Rules:
//  - DeleteRequested creates the coordination (waiting, deadline = now + timeout), then applies
//    early completions; a duplicate request changes nothing.
//  - A completion for an unknown coordination is kept (kKeepEarly), applied when the request comes.
//  - A completion from a consumer not in expected is recorded as unexpected and never counted.
//  - A second completion from the same consumer changes nothing (the first one stands).
//  - A completion after the deletion began changes nothing (logged).
//  - The coordination proceeds (kBeginDeletion) when EvaluateConsumerPolicy says so: outcome
//    all_completed when every expected consumer has reported (completed or failed: a failure
//    never blocks deletion), else timed_out with kWarnTimeout and the missing ones. Completions
//    recorded at or before the moment of the decision count: a last completion arriving at the
//    deadline instant gives all_completed. proceeded_by records each consumer's rule.
//  - DeletionDone moves deleting -> completed (kFinish); otherwise ignored.
//  - Grace: with grace_ms > 0 the deletion never begins before started_at + grace_ms
//    (not_before), neither on completions nor on the deadline; it begins at not_before.
//  - CancelRequested: waiting or held -> cancelled (kCancel). deleting or completed: kRefuseCancel
//    (state unchanged). Already cancelled: kIgnore (idempotent).
//  - HoldPlaced: waiting -> held (kHold). A held coordination never proceeds: no Tick, deadline or
//    completion moves it (completions are still recorded). Created held when the request carries
//    hold_reason.
//  - HoldReleased: held -> waiting (kRelease) when no other hold covers it, then proceeds at once if
//    its consumers are done or its original deadline has passed (the deadline is not extended by
//    the time held: consumers keep working during a hold); with still_held, stays held under the
//    remaining hold's reason.
//  - VetoReported (a consumer's veto), refused (kRefuseVeto, state unchanged) with the reason:
//      "not_expected"           no such coordination, or the consumer is not expected in it
//      "veto_not_allowed"       the consumer has no right to veto (may_veto false)
//      "already_reported"       it already answered completed or failed (that answer stands)
//      "deletion_started"       the deletion has begun or finished
//      "coordination_cancelled" the owner cancelled it
//    A second veto by the same consumer: kIgnore (idempotent). Otherwise, while waiting, held
//    or vetoed, the veto is recorded as the consumer's answer (kRecordCompletion, status vetoed);
//    waiting or held -> vetoed (kVeto; a hold is no longer what stops it). A veto while already
//    vetoed (another consumer) is recorded and the first veto stands.
//  - Completions are still recorded and counted while vetoed (an override may resume the wait).
//  - OverrideRequested: vetoed -> waiting (kOverride), then proceeds at once when its consumers
//    are done or its deadline has passed (the vetoing consumer counts as reported); with
//    hold_reason, vetoed -> held instead (kOverride, kHold). Not vetoed: kRefuseOverride.
//  - CancelRequested also cancels a vetoed coordination (the owner's final word: no override
//    can follow).
//  - due_at is recomputed on every change: waiting -> not_before when every expected consumer has
//    answered, else max(deadline_at, not_before); any other status -> nullopt.
// The critical/optional rule, on its own so that it reads (and is tested) in one place. For each
// expected consumer, own = min(started_at + timeout, deadline_at) (timeout 0: deadline_at).
//  - A critical consumer is waited for until it reports or now >= own.
//  - The critical phase ends once every critical consumer is resolved; crit_end is the latest
//    of their report times / own deadlines (started_at when there is no critical consumer).
//  - An optional consumer is waited for until it reports or now >= min(own, crit_end + grace);
//    while the critical phase lasts, only its own deadline bounds it.
//  - So nobody is ever waited for past deadline_at.
// proceed: every expected consumer is resolved. wake_at: while not, the earliest moment one of
// the pending consumers' limits passes (Decide makes it due_at, not before not_before). missing: the expected ones that never reported.
struct PolicyVerdict {
  bool proceed = false;
  WallMillis wake_at = 0;
  std::vector<std::pair<std::string, ProceedRule>> rules;  // filled when proceed
  std::vector<std::string> missing;                        // filled when proceed
};
PolicyVerdict EvaluateConsumerPolicy(const Coordination& c, WallMillis now);

Decision Decide(const std::optional<Coordination>& existing, const std::vector<Completion>& early,
                const Input& input, WallMillis now);

}  // namespace lastcall
