// The critical/optional rule (EvaluateConsumerPolicy through Decide), table-driven with a
// simulated clock: each case requests a deletion at t = 0, reports completions at their times,
// and ticks only at the wake_at the coordinator asked for. It checks the moment the deletion
// was decided (so a wake_at that comes too late fails too) and every consumer's rule.
#include <gtest/gtest.h>

#include <map>

#include "coordination/coordinator.h"

namespace lastcall {
namespace {

constexpr WallMillis kT0 = 1'800'000'000'000;
constexpr int64_t kSec = 1000;

struct Report {
  std::string consumer;
  int64_t at_s;
};

struct PolicyCase {
  const char* name;
  std::vector<ConsumerPolicy> consumers;  // timeouts in ms
  int64_t deadline_s;
  int64_t grace_s;
  std::vector<Report> reports;
  int64_t decided_at_s;                   // expected moment of the decision
  std::map<std::string, ProceedRule> rules;
  Outcome outcome;
};

ConsumerPolicy Critical(const std::string& n, int64_t timeout_s = 0) {
  return {n, ConsumerPriority::kCritical, timeout_s * kSec};
}
ConsumerPolicy Optional(const std::string& n, int64_t timeout_s = 0) {
  return {n, ConsumerPriority::kOptional, timeout_s * kSec};
}

class ConsumerPolicyTest : public ::testing::TestWithParam<PolicyCase> {};

TEST_P(ConsumerPolicyTest, DecidesAtTheRightMomentWithTheRightRules) {
  const PolicyCase& pc = GetParam();
  DeleteRequested req;
  req.coordination_id = "c1";
  req.user_id = "u";
  req.file_id = "f";
  req.account_id = "a";
  for (const auto& p : pc.consumers) req.expected.push_back(p.name);
  req.policies = pc.consumers;
  req.timeout_ms = pc.deadline_s * kSec;
  req.optional_grace_ms = pc.grace_s * kSec;
  WallMillis now = kT0;
  std::optional<Coordination> state = Decide(std::nullopt, {}, req, now).state;
  ASSERT_TRUE(state);
  std::vector<Report> reports = pc.reports;
  std::sort(reports.begin(), reports.end(),
            [](const Report& a, const Report& b) { return a.at_s < b.at_s; });
  size_t next = 0;
  int steps = 0;
  while (state->status == CoordinationStatus::kWaiting) {
    ASSERT_LT(++steps, 100) << "no decision";
    ASSERT_LE(state->due_at.value_or(0), state->deadline_at) << "wake_at past the deadline";
    ASSERT_GE(state->due_at.value_or(0), now) << "wake_at in the past while still waiting";
    WallMillis report_at = next < reports.size() ? kT0 + reports[next].at_s * kSec : INT64_MAX;
    if (report_at <= state->due_at.value_or(0)) {
      now = report_at;
      Completion c;
      c.consumer = reports[next].consumer;
      c.at = now;
      c.event_id = "e" + std::to_string(next);
      ++next;
      state = Decide(state, {}, CompletionReported{"c1", c}, now).state;
    } else {
      now = state->due_at.value_or(0);
      // Just before the wake-up nothing may be decided yet (the tick would have been late).
      if (now - 1 > kT0) {
        Decision early = Decide(state, {}, Tick{}, now - 1);
        ASSERT_FALSE(early.Has(ActionKind::kBeginDeletion)) << "could have proceeded earlier";
      }
      state = Decide(state, {}, Tick{}, now).state;
    }
  }
  EXPECT_EQ(now - kT0, pc.decided_at_s * kSec);
  EXPECT_EQ(state->outcome, pc.outcome);
  std::map<std::string, ProceedRule> rules(state->proceeded_by.begin(), state->proceeded_by.end());
  EXPECT_EQ(rules.size(), pc.consumers.size());
  for (const auto& [name, rule] : pc.rules) {
    ASSERT_TRUE(rules.count(name)) << name;
    EXPECT_STREQ(ToString(rules[name]), ToString(rule)) << name;
  }
}

const PolicyCase kCases[] = {
    {"AllCriticalWithoutOwnTimeoutsWaitForTheDeadline",
     {Critical("a"), Critical("b")}, 300, 30, {{"a", 10}}, 300,
     {{"a", ProceedRule::kReported}, {"b", ProceedRule::kDeadline}}, Outcome::kTimedOut},
    {"EveryoneReportsBeforeAnyLimit",
     {Critical("a", 60), Optional("b", 60)}, 300, 30, {{"b", 5}, {"a", 20}}, 20,
     {{"a", ProceedRule::kReported}, {"b", ProceedRule::kReported}}, Outcome::kAllCompleted},
    {"CriticalIsWaitedForUntilItsOwnTimeout",
     {Critical("a", 60), Critical("b", 120)}, 300, 30, {{"b", 10}}, 60,
     {{"a", ProceedRule::kCriticalTimeout}, {"b", ProceedRule::kReported}}, Outcome::kTimedOut},
    {"OptionalGetsTheGraceAfterTheLastCriticalReport",
     {Critical("a", 120), Optional("b", 240)}, 300, 30, {{"a", 40}}, 70,
     {{"a", ProceedRule::kReported}, {"b", ProceedRule::kOptionalGrace}}, Outcome::kTimedOut},
    {"OptionalGetsTheGraceAfterACriticalTimeout",
     {Critical("a", 60), Optional("b", 240)}, 300, 30, {}, 90,
     {{"a", ProceedRule::kCriticalTimeout}, {"b", ProceedRule::kOptionalGrace}}, Outcome::kTimedOut},
    {"OptionalReportingInsideTheGraceCounts",
     {Critical("a", 120), Optional("b", 240)}, 300, 30, {{"a", 40}, {"b", 69}}, 69,
     {{"a", ProceedRule::kReported}, {"b", ProceedRule::kReported}}, Outcome::kAllCompleted},
    {"OptionalOwnTimeoutEndsItsWaitBeforeTheGrace",
     {Critical("a", 120), Optional("b", 50)}, 300, 30, {{"a", 40}}, 50,
     {{"a", ProceedRule::kReported}, {"b", ProceedRule::kOptionalTimeout}}, Outcome::kTimedOut},
    {"OptionalOwnTimeoutPassesWhileCriticalsStillRun",
     {Critical("a", 120), Optional("b", 10)}, 300, 30, {{"a", 100}}, 100,
     {{"a", ProceedRule::kReported}, {"b", ProceedRule::kOptionalTimeout}}, Outcome::kTimedOut},
    {"GraceNeverReachesPastTheDeadline",
     {Critical("a"), Optional("b")}, 100, 30, {{"a", 90}}, 100,
     {{"a", ProceedRule::kReported}, {"b", ProceedRule::kDeadline}}, Outcome::kTimedOut},
    {"OwnTimeoutsPastTheDeadlineAreCapped",
     {Critical("a", 900), Optional("b", 900)}, 100, 30, {}, 100,
     {{"a", ProceedRule::kDeadline}, {"b", ProceedRule::kDeadline}}, Outcome::kTimedOut},
    {"OnlyOptionalConsumersWaitForTheGraceFromTheRequest",
     {Optional("b", 240), Optional("c", 240)}, 300, 30, {{"c", 3}}, 30,
     {{"b", ProceedRule::kOptionalGrace}, {"c", ProceedRule::kReported}}, Outcome::kTimedOut},
    {"ZeroGraceProceedsWhenTheCriticalsAreDone",
     {Critical("a", 120), Optional("b", 240)}, 300, 0, {{"a", 7}}, 7,
     {{"a", ProceedRule::kReported}, {"b", ProceedRule::kOptionalGrace}}, Outcome::kTimedOut},
    {"ManyCriticalsTheLastOneSetsTheGrace",
     {Critical("a", 30), Critical("b", 200), Optional("c", 280)}, 300, 20, {{"b", 150}}, 170,
     {{"a", ProceedRule::kCriticalTimeout}, {"b", ProceedRule::kReported},
      {"c", ProceedRule::kOptionalGrace}},
     Outcome::kTimedOut},
};

INSTANTIATE_TEST_SUITE_P(Table, ConsumerPolicyTest, ::testing::ValuesIn(kCases),
                         [](const ::testing::TestParamInfo<PolicyCase>& i) { return i.param.name; });

TEST(ConsumerPolicy, DuplicateAndLateReportsDoNotMoveTheDecision) {
  DeleteRequested req;
  req.coordination_id = "c1";
  req.expected = {"a", "b"};
  req.policies = {Critical("a", 60), Optional("b", 60)};
  req.timeout_ms = 300 * kSec;
  req.optional_grace_ms = 10 * kSec;
  auto state = Decide(std::nullopt, {}, req, kT0).state;
  Completion a{"a", ConsumerStatus::kFailed, "{}", kT0 + 5 * kSec, "e1"};
  state = Decide(state, {}, CompletionReported{"c1", a}, kT0 + 5 * kSec).state;
  // A failure counts as a report: the grace runs from 5 s.
  EXPECT_EQ(state->due_at.value_or(0), kT0 + 15 * kSec);
  a.at = kT0 + 6 * kSec;
  Decision dup = Decide(state, {}, CompletionReported{"c1", a}, kT0 + 6 * kSec);
  EXPECT_TRUE(dup.Has(ActionKind::kIgnore));
  EXPECT_EQ(dup.state->due_at.value_or(0), kT0 + 15 * kSec);
  Decision done = Decide(state, {}, Tick{}, kT0 + 15 * kSec);
  EXPECT_TRUE(done.Has(ActionKind::kBeginDeletion));
  EXPECT_EQ(done.state->missing, std::vector<std::string>{"b"});
}

TEST(ConsumerPolicy, RuleNamesRoundTrip) {
  for (ProceedRule r : {ProceedRule::kReported, ProceedRule::kCriticalTimeout,
                        ProceedRule::kOptionalGrace, ProceedRule::kOptionalTimeout,
                        ProceedRule::kDeadline}) {
    EXPECT_EQ(ParseProceedRule(ToString(r)), r);
  }
  EXPECT_EQ(ParseConsumerPriority("optional"), ConsumerPriority::kOptional);
  EXPECT_EQ(ParseConsumerPriority("critical"), ConsumerPriority::kCritical);
  EXPECT_FALSE(ParseConsumerPriority("urgent"));
}

}  // namespace
}  // namespace lastcall
