// Decide() for cancels, the grace window, legal holds, vetoes and overrides, table-driven with an injected clock: each
// case is a script of (time, input) steps and the status, outcome and actions expected after each.
#include <gtest/gtest.h>

#include "coordination/coordinator.h"

namespace lastcall {
namespace {

constexpr WallMillis kT0 = 1'700'000'000'000;
constexpr int64_t kTimeout = 60'000;

enum class In {
  kRequest, kRequestHeld, kA, kB, kTick, kCancel, kHold, kRelease, kReleaseStillHeld, kDone,
  kVetoA, kVetoB, kVetoANoRight, kOverride, kOverrideHeld,
};

struct Step {
  int64_t at;  // ms after kT0
  In input;
  CoordinationStatus status;
  std::vector<ActionKind> must_have = {};
  std::vector<ActionKind> must_not = {};
  Outcome outcome = Outcome::kNone;
};

struct Case {
  const char* name;
  int64_t grace_ms;
  std::vector<Step> steps;
};

Input Make(In in, int64_t grace_ms) {
  auto completion = [](const char* who) {
    Completion c;
    c.consumer = who;
    c.event_id = std::string("e-") + who;
    return CompletionReported{"c1", c};
  };
  auto veto = [](const char* who, bool may) {
    VetoReported v;
    v.completion.consumer = who;
    v.completion.status = ConsumerStatus::kVetoed;
    v.completion.event_id = std::string("v-") + who;
    v.reason = std::string("reason of ") + who;
    v.may_veto = may;
    return v;
  };
  DeleteRequested req{"c1", "u", "f", "a", 3, {"a", "b"}, kTimeout, {}, 0, grace_ms, std::nullopt};
  switch (in) {
    case In::kRequest: return req;
    case In::kRequestHeld: req.hold_reason = "litigation 42"; return req;
    case In::kA: return completion("a");
    case In::kB: return completion("b");
    case In::kTick: return Tick{};
    case In::kCancel: return CancelRequested{};
    case In::kHold: return HoldPlaced{"audit"};
    case In::kRelease: return HoldReleased{};
    case In::kReleaseStillHeld: return HoldReleased{std::string("second hold")};
    case In::kDone: return DeletionDone{3};
    case In::kVetoA: return veto("a", true);
    case In::kVetoB: return veto("b", true);
    case In::kVetoANoRight: return veto("a", false);
    case In::kOverride: return OverrideRequested{"ops", "checked with legal", std::nullopt};
    case In::kOverrideHeld: return OverrideRequested{"ops", "", std::string("litigation 42")};
  }
  return Tick{};
}

using S = CoordinationStatus;
using A = ActionKind;

const std::vector<Case>& Cases() {
  static const std::vector<Case> cases = {
      {"CancelWhileWaiting", 0,
       {{0, In::kRequest, S::kWaiting},
        {10, In::kA, S::kWaiting},
        {20, In::kCancel, S::kCancelled, {A::kCancel}},
        // Nothing moves a cancelled coordination: not the last completion, not the deadline.
        {30, In::kB, S::kCancelled, {A::kRecordUnexpected}, {A::kBeginDeletion}},
        {kTimeout + 1, In::kTick, S::kCancelled, {}, {A::kBeginDeletion}},
        {kTimeout + 2, In::kCancel, S::kCancelled, {A::kIgnore}, {A::kCancel}}}},
      {"CancelAfterDeletionBeganLoses", 0,
       {{0, In::kRequest, S::kWaiting},
        {10, In::kA, S::kWaiting},
        {20, In::kB, S::kDeleting, {A::kBeginDeletion}, {}, Outcome::kAllCompleted},
        {21, In::kCancel, S::kDeleting, {A::kRefuseCancel}, {A::kCancel}, Outcome::kAllCompleted},
        {22, In::kDone, S::kCompleted, {A::kFinish}, {}, Outcome::kAllCompleted},
        {23, In::kCancel, S::kCompleted, {A::kRefuseCancel}, {}, Outcome::kAllCompleted}}},
      {"GraceKeepsACompletedCoordinationWaiting", 5'000,
       {{0, In::kRequest, S::kWaiting},
        {10, In::kA, S::kWaiting},
        {20, In::kB, S::kWaiting, {A::kRecordCompletion}, {A::kBeginDeletion}},
        {4'999, In::kTick, S::kWaiting, {}, {A::kBeginDeletion}},
        {5'000, In::kTick, S::kDeleting, {A::kBeginDeletion}, {A::kWarnTimeout}, Outcome::kAllCompleted}}},
      {"CancelInsideTheGraceWindow", 5'000,
       {{0, In::kRequest, S::kWaiting},
        {10, In::kA, S::kWaiting},
        {20, In::kB, S::kWaiting},
        {3'000, In::kCancel, S::kCancelled, {A::kCancel}},
        {6'000, In::kTick, S::kCancelled, {}, {A::kBeginDeletion}}}},
      {"GraceLongerThanTheDeadlineDelaysTheTimeout", 2 * kTimeout,
       {{0, In::kRequest, S::kWaiting},
        {kTimeout, In::kTick, S::kWaiting, {}, {A::kBeginDeletion}},
        {2 * kTimeout, In::kTick, S::kDeleting, {A::kWarnTimeout, A::kBeginDeletion}, {},
         Outcome::kTimedOut}}},
      {"HoldBlocksCompletionsAndTheDeadline", 0,
       {{0, In::kRequest, S::kWaiting},
        {10, In::kHold, S::kHeld, {A::kHold}},
        {20, In::kA, S::kHeld, {A::kRecordCompletion}},
        {30, In::kB, S::kHeld, {A::kRecordCompletion}, {A::kBeginDeletion}},
        {kTimeout * 10, In::kTick, S::kHeld, {}, {A::kBeginDeletion, A::kWarnTimeout}},
        // Consumers done: the release proceeds at once.
        {kTimeout * 10 + 1, In::kRelease, S::kDeleting, {A::kRelease, A::kBeginDeletion}, {},
         Outcome::kAllCompleted}}},
      {"ReleaseBeforeTheDeadlineWaitsForConsumers", 0,
       {{0, In::kRequestHeld, S::kHeld, {A::kCreate, A::kHold}},
        {10, In::kA, S::kHeld},
        {20, In::kRelease, S::kWaiting, {A::kRelease}, {A::kBeginDeletion}},
        {30, In::kB, S::kDeleting, {A::kBeginDeletion}, {}, Outcome::kAllCompleted}}},
      {"ReleaseAfterTheOriginalDeadlineProceedsTimedOut", 0,
       {{0, In::kRequestHeld, S::kHeld},
        {10, In::kA, S::kHeld},
        {kTimeout + 5, In::kTick, S::kHeld, {}, {A::kBeginDeletion}},
        {kTimeout + 10, In::kRelease, S::kDeleting, {A::kRelease, A::kWarnTimeout, A::kBeginDeletion},
         {}, Outcome::kTimedOut}}},
      {"ReleaseOfOneOfTwoHoldsStaysHeld", 0,
       {{0, In::kRequestHeld, S::kHeld},
        {10, In::kA, S::kHeld},
        {20, In::kB, S::kHeld},
        {30, In::kReleaseStillHeld, S::kHeld, {}, {A::kRelease, A::kBeginDeletion}},
        {40, In::kRelease, S::kDeleting, {A::kRelease, A::kBeginDeletion}, {}, Outcome::kAllCompleted}}},
      {"CancelWhileHeld", 0,
       {{0, In::kRequestHeld, S::kHeld},
        {10, In::kCancel, S::kCancelled, {A::kCancel}},
        {20, In::kRelease, S::kCancelled, {A::kIgnore}, {A::kRelease}}}},
      {"HoldAfterTheDeletionBeganChangesNothing", 0,
       {{0, In::kRequest, S::kWaiting},
        {10, In::kA, S::kWaiting},
        {20, In::kB, S::kDeleting, {A::kBeginDeletion}, {}, Outcome::kAllCompleted},
        {30, In::kHold, S::kDeleting, {A::kIgnore}, {A::kHold}, Outcome::kAllCompleted}}},
      {"VetoWhileWaitingStopsItUntilTheOverride", 0,
       {{0, In::kRequest, S::kWaiting},
        {10, In::kB, S::kWaiting},
        {20, In::kVetoA, S::kVetoed, {A::kRecordCompletion, A::kVeto}, {A::kBeginDeletion}},
        // Nothing moves a vetoed coordination: not the deadline, not a second veto.
        {kTimeout + 1, In::kTick, S::kVetoed, {}, {A::kBeginDeletion, A::kWarnTimeout}},
        {kTimeout + 2, In::kVetoA, S::kVetoed, {A::kIgnore}, {A::kVeto, A::kRecordCompletion}},
        // The veto is a's answer: overridden, every consumer has answered.
        {kTimeout + 3, In::kOverride, S::kDeleting, {A::kOverride, A::kBeginDeletion},
         {A::kWarnTimeout}, Outcome::kAllCompleted},
        {kTimeout + 4, In::kDone, S::kCompleted, {A::kFinish}, {}, Outcome::kAllCompleted}}},
      {"OverrideResumesTheWaitForPendingConsumers", 0,
       {{0, In::kRequest, S::kWaiting},
        {10, In::kVetoA, S::kVetoed, {A::kVeto}},
        {20, In::kOverride, S::kWaiting, {A::kOverride}, {A::kBeginDeletion}},
        {30, In::kB, S::kDeleting, {A::kBeginDeletion}, {}, Outcome::kAllCompleted}}},
      {"OverrideAfterTheDeadlineProceedsTimedOut", 0,
       {{0, In::kRequest, S::kWaiting},
        {10, In::kVetoA, S::kVetoed, {A::kVeto}},
        {kTimeout + 1, In::kTick, S::kVetoed, {}, {A::kBeginDeletion}},
        {kTimeout + 2, In::kOverride, S::kDeleting,
         {A::kOverride, A::kWarnTimeout, A::kBeginDeletion}, {}, Outcome::kTimedOut}}},
      {"CompletionsWhileVetoedCountAfterTheOverride", 0,
       {{0, In::kRequest, S::kWaiting},
        {10, In::kVetoA, S::kVetoed, {A::kVeto}},
        {20, In::kB, S::kVetoed, {A::kRecordCompletion}, {A::kRecordUnexpected, A::kBeginDeletion}},
        {30, In::kOverride, S::kDeleting, {A::kOverride, A::kBeginDeletion}, {},
         Outcome::kAllCompleted}}},
      {"VetoWhileHeldRecordsItAndTheHoldStillWinsTheOverride", 0,
       {{0, In::kRequestHeld, S::kHeld},
        {10, In::kVetoA, S::kVetoed, {A::kRecordCompletion, A::kVeto}},
        {20, In::kRelease, S::kVetoed, {A::kIgnore}, {A::kRelease}},
        {30, In::kOverrideHeld, S::kHeld, {A::kOverride, A::kHold}, {A::kBeginDeletion}},
        {40, In::kB, S::kHeld, {A::kRecordCompletion}, {A::kBeginDeletion}},
        {50, In::kRelease, S::kDeleting, {A::kRelease, A::kBeginDeletion}, {},
         Outcome::kAllCompleted}}},
      {"SecondConsumersVetoWhileVetoedIsRecordedOnly", 0,
       {{0, In::kRequest, S::kWaiting},
        {10, In::kVetoA, S::kVetoed, {A::kVeto}},
        {20, In::kVetoB, S::kVetoed, {A::kRecordCompletion}, {A::kVeto}},
        {30, In::kOverride, S::kDeleting, {A::kOverride, A::kBeginDeletion}, {},
         Outcome::kAllCompleted}}},
      {"VetoAfterTheOverrideStopsItAgain", 0,
       {{0, In::kRequest, S::kWaiting},
        {10, In::kVetoA, S::kVetoed, {A::kVeto}},
        {20, In::kOverride, S::kWaiting, {A::kOverride}},
        {30, In::kVetoB, S::kVetoed, {A::kVeto}, {A::kBeginDeletion}},
        {40, In::kOverride, S::kDeleting, {A::kOverride, A::kBeginDeletion}, {},
         Outcome::kAllCompleted}}},
      {"VetoWithoutTheRightIsRefusedAndChangesNothing", 0,
       {{0, In::kRequest, S::kWaiting},
        {10, In::kVetoANoRight, S::kWaiting, {A::kRefuseVeto}, {A::kVeto, A::kRecordCompletion}},
        {20, In::kA, S::kWaiting, {A::kRecordCompletion}},
        {30, In::kB, S::kDeleting, {A::kBeginDeletion}, {}, Outcome::kAllCompleted}}},
      {"VetoAfterTheDeletionBeganIsRefused", 0,
       {{0, In::kRequest, S::kWaiting},
        {kTimeout, In::kTick, S::kDeleting, {A::kBeginDeletion}, {}, Outcome::kTimedOut},
        {kTimeout + 1, In::kVetoA, S::kDeleting, {A::kRefuseVeto}, {A::kVeto}, Outcome::kTimedOut},
        {kTimeout + 2, In::kDone, S::kCompleted, {A::kFinish}, {}, Outcome::kTimedOut},
        {kTimeout + 3, In::kVetoB, S::kCompleted, {A::kRefuseVeto}, {A::kVeto}, Outcome::kTimedOut}}},
      {"TheOwnerMayCancelAVetoedDeletion", 0,
       {{0, In::kRequest, S::kWaiting},
        {10, In::kVetoA, S::kVetoed, {A::kVeto}},
        {20, In::kCancel, S::kCancelled, {A::kCancel}},
        {30, In::kOverride, S::kCancelled, {A::kRefuseOverride}, {A::kOverride}},
        {40, In::kVetoB, S::kCancelled, {A::kRefuseVeto}}}},
      {"OverrideOfACoordinationNotVetoedIsRefused", 0,
       {{0, In::kRequest, S::kWaiting},
        {10, In::kOverride, S::kWaiting, {A::kRefuseOverride}, {A::kOverride}},
        {20, In::kA, S::kWaiting},
        {30, In::kB, S::kDeleting, {A::kBeginDeletion}, {}, Outcome::kAllCompleted},
        {40, In::kOverride, S::kDeleting, {A::kRefuseOverride}, {}, Outcome::kAllCompleted}}},
  };
  return cases;
}

class CoordinatorLifecycleTest : public ::testing::TestWithParam<Case> {};

TEST_P(CoordinatorLifecycleTest, FollowsTheScript) {
  const Case& c = GetParam();
  std::optional<Coordination> state;
  for (size_t i = 0; i < c.steps.size(); ++i) {
    const Step& s = c.steps[i];
    SCOPED_TRACE("step " + std::to_string(i) + " at +" + std::to_string(s.at) + " ms");
    WallMillis now = kT0 + s.at;
    Decision d = Decide(state, {}, Make(s.input, c.grace_ms), now);
    ASSERT_TRUE(d.state.has_value());
    state = d.state;
    EXPECT_EQ(ToString(state->status), std::string(ToString(s.status)));
    EXPECT_EQ(ToString(state->outcome), std::string(ToString(s.outcome)));
    for (ActionKind k : s.must_have) EXPECT_TRUE(d.Has(k)) << "missing action " << static_cast<int>(k);
    for (ActionKind k : s.must_not) EXPECT_FALSE(d.Has(k)) << "unexpected action " << static_cast<int>(k);
    // The timer invariant: a waiting coordination is always due in the future (else the driver
    // would spin), anything else has no timer.
    if (state->status == CoordinationStatus::kWaiting) {
      ASSERT_TRUE(state->due_at.has_value());
      EXPECT_GT(*state->due_at, now);
    } else if (d.changed) {
      EXPECT_FALSE(state->due_at.has_value());
    }
    if (state->status == CoordinationStatus::kHeld) {
      EXPECT_TRUE(state->hold_reason.has_value());
    }
    if (state->status == CoordinationStatus::kVetoed) {
      EXPECT_TRUE(state->veto.has_value());
      EXPECT_FALSE(state->overridden.has_value());
      EXPECT_FALSE(state->hold_reason.has_value());
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Scripts, CoordinatorLifecycleTest, ::testing::ValuesIn(Cases()),
                         [](const ::testing::TestParamInfo<Case>& info) { return info.param.name; });

TEST(CoordinatorLifecycle, DueAtIsTheGraceEndOnceEveryoneAnswered) {
  DeleteRequested req{"c1", "u", "f", "a", 0, {"a"}, kTimeout, {}, 0, 5'000, std::nullopt};
  Decision d = Decide(std::nullopt, {}, req, kT0);
  EXPECT_EQ(d.state->due_at, kT0 + kTimeout);
  EXPECT_EQ(d.state->not_before, kT0 + 5'000);
  Completion c;
  c.consumer = "a";
  Decision d2 = Decide(d.state, {}, CompletionReported{"c1", c}, kT0 + 10);
  EXPECT_EQ(d2.state->status, CoordinationStatus::kWaiting);
  EXPECT_EQ(d2.state->due_at, kT0 + 5'000);
}

TEST(CoordinatorLifecycle, ReleaseKeepsTheRemainingHoldsReason) {
  DeleteRequested req{"c1", "u", "f", "a", 0, {"a"}, kTimeout, {}, 0, 0, std::string("first")};
  Decision d = Decide(std::nullopt, {}, req, kT0);
  EXPECT_EQ(d.state->hold_reason, std::string("first"));
  Decision d2 = Decide(d.state, {}, HoldReleased{std::string("second")}, kT0 + 1);
  EXPECT_EQ(d2.state->status, CoordinationStatus::kHeld);
  EXPECT_EQ(d2.state->hold_reason, std::string("second"));
}

// The reason of the refusal a veto gets (the driver's error code), or "" when it was not refused.
std::string Refusal(const Decision& d) {
  for (const auto& a : d.actions) {
    if (a.kind == ActionKind::kRefuseVeto) return a.reason;
  }
  return "";
}

VetoReported VetoBy(const std::string& who, bool may = true) {
  VetoReported v;
  v.completion.consumer = who;
  v.completion.status = ConsumerStatus::kVetoed;
  v.completion.detail_json = R"({"reason":"r"})";
  v.reason = "keep: audit pending";
  v.may_veto = may;
  return v;
}

TEST(CoordinatorVeto, RefusalsNameTheirReason) {
  DeleteRequested req{"c1", "u", "f", "a", 0, {"a", "b"}, kTimeout, {}, 0, 0, std::nullopt};
  Decision d = Decide(std::nullopt, {}, req, kT0);
  EXPECT_EQ(Refusal(Decide(std::nullopt, {}, VetoBy("a"), kT0)), "not_expected");
  EXPECT_EQ(Refusal(Decide(d.state, {}, VetoBy("stranger"), kT0)), "not_expected");
  EXPECT_EQ(Refusal(Decide(d.state, {}, VetoBy("a", false), kT0)), "veto_not_allowed");
  Completion done;
  done.consumer = "a";
  Decision after = Decide(d.state, {}, CompletionReported{"c1", done}, kT0 + 1);
  EXPECT_EQ(Refusal(Decide(after.state, {}, VetoBy("a"), kT0 + 2)), "already_reported");
  // No right and already reported: the missing right is what the consumer must hear.
  EXPECT_EQ(Refusal(Decide(after.state, {}, VetoBy("a", false), kT0 + 2)), "veto_not_allowed");
  Decision cancelled = Decide(d.state, {}, CancelRequested{}, kT0 + 3);
  EXPECT_EQ(Refusal(Decide(cancelled.state, {}, VetoBy("b"), kT0 + 4)), "coordination_cancelled");
  Decision late = Decide(d.state, {}, Tick{}, kT0 + kTimeout);
  ASSERT_EQ(late.state->status, CoordinationStatus::kDeleting);
  EXPECT_EQ(Refusal(Decide(late.state, {}, VetoBy("b"), kT0 + kTimeout)), "deletion_started");
  EXPECT_EQ(Refusal(Decide(d.state, {}, VetoBy("b"), kT0 + 5)), "");
}

TEST(CoordinatorVeto, RecordsWhoVetoedWhyAndWhoOverrode) {
  DeleteRequested req{"c1", "u", "f", "a", 0, {"a", "b"}, kTimeout, {}, 0, 0, std::nullopt};
  Decision d = Decide(std::nullopt, {}, req, kT0);
  Decision v = Decide(d.state, {}, VetoBy("b"), kT0 + 7);
  ASSERT_TRUE(v.state->veto.has_value());
  EXPECT_EQ(v.state->veto->consumer, "b");
  EXPECT_EQ(v.state->veto->reason, "keep: audit pending");
  EXPECT_EQ(v.state->veto->at, kT0 + 7);
  ASSERT_TRUE(v.completion.has_value());
  EXPECT_EQ(v.completion->status, ConsumerStatus::kVetoed);
  EXPECT_TRUE(v.completion->expected);
  EXPECT_EQ(v.state->CompletionOf("b")->status, ConsumerStatus::kVetoed);
  EXPECT_FALSE(v.state->due_at.has_value());  // no timer: only an input moves it
  // A second consumer's veto is recorded; the first one stands.
  Decision v2 = Decide(v.state, {}, VetoBy("a"), kT0 + 8);
  EXPECT_EQ(v2.state->veto->consumer, "b");
  EXPECT_EQ(v2.state->CompletionOf("a")->status, ConsumerStatus::kVetoed);
  Decision o = Decide(v2.state, {}, OverrideRequested{"ops-1", "legal cleared it", std::nullopt},
                      kT0 + 9);
  ASSERT_TRUE(o.state->overridden.has_value());
  EXPECT_EQ(o.state->overridden->by, "ops-1");
  EXPECT_EQ(o.state->overridden->reason, "legal cleared it");
  EXPECT_EQ(o.state->overridden->at, kT0 + 9);
  EXPECT_EQ(o.state->veto->consumer, "b");  // still shown: why it waited
  EXPECT_EQ(o.state->status, CoordinationStatus::kDeleting);
  std::vector<std::pair<std::string, ProceedRule>> rules = {{"a", ProceedRule::kReported},
                                                             {"b", ProceedRule::kReported}};
  EXPECT_EQ(o.state->proceeded_by, rules);
}

TEST(CoordinatorVeto, TwoOverridesHaveOneWinner) {
  DeleteRequested req{"c1", "u", "f", "a", 0, {"a", "b"}, kTimeout, {}, 0, 0, std::nullopt};
  Decision d = Decide(std::nullopt, {}, req, kT0);
  Decision v = Decide(d.state, {}, VetoBy("a"), kT0 + 1);
  OverrideRequested o{"ops", "", std::nullopt};
  Decision first = Decide(v.state, {}, o, kT0 + 2);
  Decision second = Decide(first.state, {}, o, kT0 + 2);
  EXPECT_TRUE(first.Has(ActionKind::kOverride));
  EXPECT_TRUE(second.Has(ActionKind::kRefuseOverride));
  EXPECT_FALSE(second.changed);
}

}  // namespace
}  // namespace lastcall
