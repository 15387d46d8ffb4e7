// Decide() for cancels, the grace window and legal holds, table-driven with an injected clock: each
// case is a script of (time, input) steps and the status, outcome and actions expected after each.
#include <gtest/gtest.h>

#include "coordination/coordinator.h"

namespace lastcall {
namespace {

constexpr WallMillis kT0 = 1'700'000'000'000;
constexpr int64_t kTimeout = 60'000;

enum class In { kRequest, kRequestHeld, kA, kB, kTick, kCancel, kHold, kRelease, kReleaseStillHeld, kDone };

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

}  // namespace
}  // namespace lastcall
