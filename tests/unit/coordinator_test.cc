// Decide() step by step with a simulated clock: every rule of a coordinated deletion.
#include "coordination/coordinator.h"

#include <gtest/gtest.h>

namespace lastcall {
namespace {

constexpr WallMillis kStart = 1'700'000'000'000;
constexpr int64_t kTimeout = 5 * 60 * 1000;

class CoordinatorTest : public ::testing::Test {
 protected:
  // Feeds an input to the current state at the current time and keeps the new state.
  Decision Feed(const Input& in, std::vector<Completion> early = {}) {
    Decision d = Decide(state_, early, in, now_);
    state_ = d.state;
    return d;
  }
  Decision Request(std::vector<std::string> expected = {"analytics_consumer",
                                                        "categorization_consumer"},
                   std::vector<Completion> early = {}) {
    DeleteRequested r{"c1", "alice", "f1", "a1", 10, std::move(expected), kTimeout};
    return Feed(r, std::move(early));
  }
  static Completion Done(const std::string& consumer,
                         ConsumerStatus status = ConsumerStatus::kCompleted) {
    Completion c;
    c.consumer = consumer;
    c.status = status;
    c.detail_json = status == ConsumerStatus::kFailed ? R"({"reason":"boom"})" : "{}";
    c.event_id = "e-" + consumer;
    return c;
  }
  Decision Complete(const std::string& consumer, ConsumerStatus status = ConsumerStatus::kCompleted) {
    Completion c = Done(consumer, status);
    c.at = now_;
    return Feed(CompletionReported{"c1", c});
  }

  WallMillis now_ = kStart;
  std::optional<Coordination> state_;
};

TEST_F(CoordinatorTest, RequestCreatesWaitingCoordinationWithDeadline) {
  Decision d = Request();
  ASSERT_TRUE(d.Has(ActionKind::kCreate));
  ASSERT_TRUE(state_);
  EXPECT_EQ(state_->status, CoordinationStatus::kWaiting);
  EXPECT_EQ(state_->started_at, kStart);
  EXPECT_EQ(state_->deadline_at, kStart + kTimeout);
  EXPECT_EQ(state_->Pending(), (std::vector<std::string>{"analytics_consumer", "categorization_consumer"}));
}

TEST_F(CoordinatorTest, ProceedsWhenAllExpectedConsumersComplete) {
  Request();
  now_ += 10;
  Decision first = Complete("analytics_consumer");
  EXPECT_TRUE(first.Has(ActionKind::kRecordCompletion));
  EXPECT_FALSE(first.Has(ActionKind::kBeginDeletion));
  EXPECT_EQ(state_->status, CoordinationStatus::kWaiting);
  Decision second = Complete("categorization_consumer");
  EXPECT_TRUE(second.Has(ActionKind::kBeginDeletion));
  EXPECT_FALSE(second.Has(ActionKind::kWarnTimeout));
  EXPECT_EQ(state_->status, CoordinationStatus::kDeleting);
  EXPECT_EQ(state_->outcome, Outcome::kAllCompleted);
  EXPECT_TRUE(state_->missing.empty());
}

TEST_F(CoordinatorTest, ProceedsAfterDeadlineWithMissingConsumer) {
  Request();
  Complete("analytics_consumer");
  now_ = kStart + kTimeout - 1;
  EXPECT_FALSE(Feed(Tick{}).Has(ActionKind::kBeginDeletion));
  now_ = kStart + kTimeout;
  Decision d = Feed(Tick{});
  EXPECT_TRUE(d.Has(ActionKind::kWarnTimeout));
  EXPECT_TRUE(d.Has(ActionKind::kBeginDeletion));
  EXPECT_EQ(state_->outcome, Outcome::kTimedOut);
  EXPECT_EQ(state_->missing, std::vector<std::string>{"categorization_consumer"});
}

TEST_F(CoordinatorTest, DuplicateCompletionChangesNothing) {
  Request();
  Complete("analytics_consumer");
  Coordination before = *state_;
  Completion again = Done("analytics_consumer", ConsumerStatus::kFailed);
  Decision d = Feed(CompletionReported{"c1", again});
  EXPECT_TRUE(d.Has(ActionKind::kIgnore));
  EXPECT_FALSE(d.changed);
  ASSERT_NE(state_->CompletionOf("analytics_consumer"), nullptr);
  EXPECT_EQ(state_->CompletionOf("analytics_consumer")->status, ConsumerStatus::kCompleted);
  EXPECT_EQ(state_->completions.size(), before.completions.size());
}

TEST_F(CoordinatorTest, DuplicateRequestChangesNothing) {
  Request();
  Complete("analytics_consumer");
  now_ += 1000;
  Decision d = Request();
  EXPECT_TRUE(d.Has(ActionKind::kIgnore));
  EXPECT_FALSE(d.changed);
  EXPECT_EQ(state_->deadline_at, kStart + kTimeout);  // the first request's deadline stands
  EXPECT_NE(state_->CompletionOf("analytics_consumer"), nullptr);
}

TEST_F(CoordinatorTest, EarlyCompletionIsKeptAndAppliedWhenTheRequestArrives) {
  Completion early = Done("analytics_consumer");
  Decision kept = Feed(CompletionReported{"c1", early});
  EXPECT_TRUE(kept.Has(ActionKind::kKeepEarly));
  EXPECT_FALSE(state_.has_value());
  ASSERT_TRUE(kept.completion.has_value());

  Decision created = Request({"analytics_consumer", "categorization_consumer"}, {*kept.completion});
  EXPECT_TRUE(created.Has(ActionKind::kCreate));
  EXPECT_NE(state_->CompletionOf("analytics_consumer"), nullptr);
  EXPECT_EQ(state_->Pending(), std::vector<std::string>{"categorization_consumer"});
  EXPECT_TRUE(Complete("categorization_consumer").Has(ActionKind::kBeginDeletion));
}

TEST_F(CoordinatorTest, EarlyCompletionsOfEveryoneProceedAtCreation) {
  Decision d = Request({"analytics_consumer"}, {Done("analytics_consumer")});
  EXPECT_TRUE(d.Has(ActionKind::kCreate));
  EXPECT_TRUE(d.Has(ActionKind::kBeginDeletion));
  EXPECT_EQ(state_->outcome, Outcome::kAllCompleted);
}

TEST_F(CoordinatorTest, UnexpectedConsumerIsRecordedButNeverCounted) {
  Request({"analytics_consumer"});
  Decision d = Complete("intruder_consumer");
  EXPECT_TRUE(d.Has(ActionKind::kRecordUnexpected));
  EXPECT_FALSE(d.Has(ActionKind::kBeginDeletion));
  ASSERT_TRUE(d.completion);
  EXPECT_FALSE(d.completion->expected);
  EXPECT_EQ(state_->Pending(), std::vector<std::string>{"analytics_consumer"});
  EXPECT_TRUE(Complete("analytics_consumer").Has(ActionKind::kBeginDeletion));
}

TEST_F(CoordinatorTest, FailedConsumerDoesNotBlockDeletion) {
  Request();
  Complete("analytics_consumer", ConsumerStatus::kFailed);
  Decision d = Complete("categorization_consumer");
  EXPECT_TRUE(d.Has(ActionKind::kBeginDeletion));
  EXPECT_EQ(state_->outcome, Outcome::kAllCompleted);
  EXPECT_EQ(state_->CompletionOf("analytics_consumer")->status, ConsumerStatus::kFailed);
}

TEST_F(CoordinatorTest, LastCompletionAtTheDeadlineInstantCountsAsAllCompleted) {
  Request();
  Complete("analytics_consumer");
  now_ = kStart + kTimeout;  // both the deadline and the last completion happen now
  Decision d = Complete("categorization_consumer");
  EXPECT_TRUE(d.Has(ActionKind::kBeginDeletion));
  EXPECT_FALSE(d.Has(ActionKind::kWarnTimeout));
  EXPECT_EQ(state_->outcome, Outcome::kAllCompleted);
  // The tick at the same instant that follows changes nothing.
  EXPECT_FALSE(Feed(Tick{}).changed);
}

TEST_F(CoordinatorTest, CompletionAfterDeadlineButBeforeTickProceedsOnce) {
  Request();
  now_ = kStart + kTimeout + 5000;  // the timer is late
  Decision d = Complete("analytics_consumer");
  EXPECT_TRUE(d.Has(ActionKind::kRecordCompletion));
  EXPECT_TRUE(d.Has(ActionKind::kBeginDeletion));
  EXPECT_EQ(state_->outcome, Outcome::kTimedOut);
  EXPECT_EQ(state_->missing, std::vector<std::string>{"categorization_consumer"});
  EXPECT_FALSE(Feed(Tick{}).Has(ActionKind::kBeginDeletion));
}

TEST_F(CoordinatorTest, CompletionAfterTheDeletionBeganIsRecordedNotCounted) {
  Request();
  now_ = kStart + kTimeout;
  Feed(Tick{});
  ASSERT_EQ(state_->status, CoordinationStatus::kDeleting);
  Decision d = Complete("analytics_consumer");
  EXPECT_TRUE(d.Has(ActionKind::kRecordUnexpected));
  EXPECT_FALSE(d.Has(ActionKind::kBeginDeletion));
  EXPECT_EQ(state_->outcome, Outcome::kTimedOut);
  EXPECT_EQ(state_->status, CoordinationStatus::kDeleting);
}

TEST_F(CoordinatorTest, CompletionAfterTheDeletionFinishedIsRecordedNotCounted) {
  Request({"analytics_consumer"});
  Complete("analytics_consumer");
  Feed(DeletionDone{10});
  ASSERT_EQ(state_->status, CoordinationStatus::kCompleted);
  Decision d = Complete("late_consumer");
  EXPECT_FALSE(d.Has(ActionKind::kBeginDeletion));
  EXPECT_EQ(state_->status, CoordinationStatus::kCompleted);
}

TEST_F(CoordinatorTest, DeletionDoneFinishesExactlyOnce) {
  Request({"analytics_consumer"});
  Complete("analytics_consumer");
  now_ += 7;
  Decision d = Feed(DeletionDone{10});
  EXPECT_TRUE(d.Has(ActionKind::kFinish));
  EXPECT_EQ(state_->status, CoordinationStatus::kCompleted);
  EXPECT_EQ(state_->completed_at, now_);
  EXPECT_EQ(state_->transactions_deleted, 10);
  Decision again = Feed(DeletionDone{10});
  EXPECT_TRUE(again.Has(ActionKind::kIgnore));
  EXPECT_FALSE(again.changed);
}

TEST_F(CoordinatorTest, DeletionDoneWhileWaitingIsIgnored) {
  Request();
  Decision d = Feed(DeletionDone{10});
  EXPECT_TRUE(d.Has(ActionKind::kIgnore));
  EXPECT_EQ(state_->status, CoordinationStatus::kWaiting);
}

TEST_F(CoordinatorTest, NoExpectedConsumersProceedsAtOnce) {
  Decision d = Request({});
  EXPECT_TRUE(d.Has(ActionKind::kBeginDeletion));
  EXPECT_EQ(state_->outcome, Outcome::kAllCompleted);
}

TEST_F(CoordinatorTest, TickWithoutCoordinationDoesNothing) {
  Decision d = Feed(Tick{});
  EXPECT_FALSE(d.state.has_value());
  EXPECT_TRUE(d.actions.empty());
}

// A restart is a fresh Decide over the stored state: each state resumes the same way.
TEST_F(CoordinatorTest, RestartWhileWaitingResumesTheDeadline) {
  Request();
  Complete("analytics_consumer");
  std::optional<Coordination> stored = state_;  // what the store holds across the restart
  state_.reset();
  state_ = stored;
  now_ = kStart + kTimeout + 60'000;  // down for a minute past the deadline
  Decision d = Feed(Tick{});
  EXPECT_TRUE(d.Has(ActionKind::kBeginDeletion));
  EXPECT_EQ(state_->missing, std::vector<std::string>{"categorization_consumer"});
}

TEST_F(CoordinatorTest, RestartWhileDeletingFinishesOnce) {
  Request({"analytics_consumer"});
  Complete("analytics_consumer");
  std::optional<Coordination> stored = state_;
  ASSERT_EQ(stored->status, CoordinationStatus::kDeleting);
  state_ = stored;
  EXPECT_FALSE(Feed(Tick{}).Has(ActionKind::kBeginDeletion));  // no second decision
  EXPECT_TRUE(Feed(DeletionDone{3}).Has(ActionKind::kFinish));
}

TEST_F(CoordinatorTest, RestartAfterCompletedIgnoresEverything) {
  Request({"analytics_consumer"});
  Complete("analytics_consumer");
  Feed(DeletionDone{3});
  std::optional<Coordination> stored = state_;
  state_ = stored;
  EXPECT_FALSE(Feed(Tick{}).changed);
  EXPECT_FALSE(Request().changed);
  EXPECT_FALSE(Feed(DeletionDone{3}).changed);
}

TEST(CoordinatorStrings, StoredNamesRoundTrip) {
  for (auto s : {CoordinationStatus::kWaiting, CoordinationStatus::kDeleting, CoordinationStatus::kCompleted,
                 CoordinationStatus::kHeld, CoordinationStatus::kCancelled,
                 CoordinationStatus::kVetoed}) {
    EXPECT_EQ(ParseCoordinationStatus(ToString(s)), s);
  }
  for (auto c : {ConsumerStatus::kPending, ConsumerStatus::kCompleted, ConsumerStatus::kFailed,
                 ConsumerStatus::kVetoed}) {
    EXPECT_EQ(ParseConsumerStatus(ToString(c)), c);
  }
  for (auto o : {Outcome::kNone, Outcome::kAllCompleted, Outcome::kTimedOut}) {
    EXPECT_EQ(ParseOutcome(ToString(o)), o);
  }
  EXPECT_STREQ(ToString(CoordinationStatus::kWaiting), "waiting");
  EXPECT_STREQ(ToString(Outcome::kTimedOut), "timed_out");
  EXPECT_STREQ(ToString(ConsumerStatus::kFailed), "failed");
  EXPECT_STREQ(ToString(CoordinationStatus::kHeld), "held");
  EXPECT_STREQ(ToString(CoordinationStatus::kCancelled), "cancelled");
  EXPECT_STREQ(ToString(CoordinationStatus::kVetoed), "vetoed");
  EXPECT_STREQ(ToString(ConsumerStatus::kVetoed), "vetoed");
  // "veto" is the wire status of a consumer's answer, never a stored one.
  EXPECT_FALSE(ParseConsumerStatus(kVetoStatus).has_value());
  EXPECT_FALSE(ParseCoordinationStatus("veto").has_value());
}

}  // namespace
}  // namespace lastcall
