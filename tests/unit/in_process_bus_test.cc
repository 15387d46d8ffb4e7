// The embedded bus over a real SQLite outbox: order per target, exactly-once effect, retries with
// backoff, dead letters.
#include "bus/in_process_bus.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <mutex>
#include <thread>

#include "bus/nats/nats_bus.h"
#include "bus/retention.h"
#include "dlq/dead_letters.h"
#include "store/schema.h"
#include "test_util.h"
#include "store/sqlite/sqlite_database.h"

namespace lastcall {
namespace {

using testing::Eventually;
namespace fs = std::filesystem;

// Records what it handled in the effects table (seen(): what committed, in order) and fails on
// demand. A run that did not commit leaves nothing: a unit may run again (WriteFn, store/sql.h).
class RecordingHandler : public EventHandler {
 public:
  RecordingHandler(std::string name, Database* db = nullptr) : name_(std::move(name)), db_(db) {
    static std::atomic<int64_t> next{0};
    instance_ = ++next;
  }
  void SetDatabase(Database* db) { db_ = db; }
  Status Handle(const CloudEvent& e, SqlTx& tx) override {
    std::lock_guard<std::mutex> l(mu_);
    ++calls_;
    int n = e.data.value("n", -1);
    bool fail_this = fail_remaining_ > 0 || (n == fail_n_ && fail_n_times_ > 0);
    if (fail_this) {
      if (fail_remaining_ > 0) {
        --fail_remaining_;
      } else {
        --fail_n_times_;
      }
      // An effect written before the failure must be rolled back with it.
      (void)tx.Exec("INSERT INTO effects (target, event_id, n, instance) VALUES (?, ?, ?, ?)",
                    {name_, e.id + "-partial", int64_t{n}, instance_});
      return Status::Unavailable("simulated failure");
    }
    auto r = tx.Exec("INSERT INTO effects (target, event_id, n, instance) VALUES (?, ?, ?, ?)",
                     {name_, e.id, int64_t{n}, instance_});
    return r.ok() ? Status::Ok() : r.status();
  }
  // The n of each event this handler's committed runs handled, in commit order.
  std::vector<int> seen() {
    std::vector<int> out;
    Status st = db_->Read([&](SqlTx& tx) {
      return tx.Query("SELECT n FROM effects WHERE instance = ? AND event_id NOT LIKE '%-partial' "
                      "ORDER BY rowid",
                      {instance_}, [&](const SqlRow& row) {
                        out.push_back(static_cast<int>(row.Int(0)));
                        return true;
                      });
    });
    EXPECT_TRUE(st.ok()) << st.ToString();
    return out;
  }
  int calls() {
    std::lock_guard<std::mutex> l(mu_);
    return calls_;
  }
  void FailNext(int n) {
    std::lock_guard<std::mutex> l(mu_);
    fail_remaining_ = n;
  }
  // The next `times` calls for the event whose data has n fail.
  void FailOn(int n, int times) {
    std::lock_guard<std::mutex> l(mu_);
    fail_n_ = n;
    fail_n_times_ = times;
  }

 private:
  std::string name_;
  Database* db_;
  int64_t instance_;
  std::mutex mu_;
  int calls_ = 0;
  int fail_remaining_ = 0;
  int fail_n_ = -1;
  int fail_n_times_ = 0;
};

class InProcessBusTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("lastcall-bus-" + RandomHex(6));
    fs::create_directories(dir_);
    db_ = std::move(SqliteDatabase::Open({(dir_ / "db").string(), "NORMAL"})).value();
    ASSERT_TRUE(Migrate(*db_).ok());
    a_.SetDatabase(db_.get());
    b_.SetDatabase(db_.get());
    ASSERT_TRUE(db_->WriteSync([](SqlTx& tx) {
                     auto r = tx.Exec("CREATE TABLE effects (target TEXT, event_id TEXT, n INTEGER, "
                                      "instance INTEGER)");
                     return r.ok() ? Status::Ok() : r.status();
                   }).ok());
  }
  void TearDown() override {
    if (bus_) bus_->Stop();
    db_->Close();
    fs::remove_all(dir_);
  }
  void StartBus(InProcessBusOptions options = {}) {
    bus_ = std::make_unique<InProcessBus>(*db_, clock_, ids_, metrics_, options);
    outbox_ = std::make_unique<Outbox>(metrics_, [this] { bus_->Notify(); });
    bus_->AddTarget("a", &a_);
    bus_->AddTarget("b", &b_);
    bus_->AddRule({"all-to-a", {{"t.one", "t.two"}, {}}, {"a"}});
    bus_->AddRule({"two-to-b", {{"t.two"}, {"/src"}}, {"b"}});
    ASSERT_TRUE(bus_->Start().ok());
  }
  void Publish(const std::string& type, int n, const std::string& source = "/src") {
    CloudEvent e{ids_.NewUuid(), source, type, "s", "t", {{"n", n}}};
    ASSERT_TRUE(db_->WriteSync([&](SqlTx& tx) { return outbox_->Append(tx, e, 0); }).ok());
  }
  // Appends one t.one event per stamp (n = its index), with that created_at, in order; returns
  // once a has handled them all.
  void PublishCreatedAt(const std::vector<WallMillis>& created) {
    for (size_t i = 0; i < created.size(); ++i) {
      CloudEvent e{ids_.NewUuid(), "/src", "t.one", "s", "t", {{"n", i}}};
      ASSERT_TRUE(db_->WriteSync([&](SqlTx& tx) { return outbox_->Append(tx, e, created[i]); }).ok());
    }
    ASSERT_TRUE(Eventually([&] { return a_.seen().size() == created.size(); }));
  }
  // With the bus stopped: forgets every cursor (as a broker redelivers everything) and starts a
  // bus with a fresh handler for "a" only; expects the one event a handled before to be skipped
  // by its processed record, not handled again.
  void RedeliverTheOutboxToAFreshA() {
    ASSERT_TRUE(db_->WriteSync([](SqlTx& tx) {
                     auto r = tx.Exec("DELETE FROM delivery_cursors");
                     return r.ok() ? Status::Ok() : r.status();
                   }).ok());
    RecordingHandler fresh_a{"a", db_.get()};
    bus_ = std::make_unique<InProcessBus>(*db_, clock_, ids_, metrics_);
    bus_->AddTarget("a", &fresh_a);
    bus_->AddRule({"all-to-a", {{"t.one"}, {}}, {"a"}});
    ASSERT_TRUE(bus_->Start().ok());
    ASSERT_TRUE(Eventually([&] { return Count("SELECT COUNT(*) FROM delivery_cursors") == 1; }));
    bus_->Stop();  // before fresh_a goes
    EXPECT_TRUE(fresh_a.seen().empty());
    EXPECT_EQ(Count("SELECT COUNT(*) FROM effects WHERE target = 'a'"), 1);
  }
  int64_t Count(const std::string& sql, const SqlParams& params = {}) {
    return testing::CountRows(*db_, sql, params);
  }

  fs::path dir_;
  SystemClock clock_;
  RandomIdGenerator ids_;
  Metrics metrics_;
  std::unique_ptr<SqliteDatabase> db_;
  std::unique_ptr<InProcessBus> bus_;
  std::unique_ptr<Outbox> outbox_;
  RecordingHandler a_{"a"}, b_{"b"};
};

TEST_F(InProcessBusTest, DeliversByRuleInOrderPerTarget) {
  StartBus();
  for (int i = 0; i < 50; ++i) Publish(i % 2 ? "t.two" : "t.one", i);
  Publish("t.two", 99, "/elsewhere");  // b's rule wants source /src only
  Publish("t.other", 100);             // no rule
  ASSERT_TRUE(Eventually([&] { return a_.seen().size() == 51 && b_.seen().size() == 25; }));
  std::vector<int> expect_a, expect_b;
  for (int i = 0; i < 50; ++i) {
    expect_a.push_back(i);
    if (i % 2) expect_b.push_back(i);
  }
  expect_a.push_back(99);
  EXPECT_EQ(a_.seen(), expect_a);
  EXPECT_EQ(b_.seen(), expect_b);
}

// A batch of 101 events (one unit publishes them) records each as processed once, in chunks of
// 64, 32, 4 and 1 rows.
TEST_F(InProcessBusTest, EveryEventOfALargeBatchIsRecordedAsProcessedOnce) {
  StartBus();
  ASSERT_TRUE(db_->WriteSync([&](SqlTx& tx) -> Status {
                   for (int i = 0; i < 101; ++i) {
                     CloudEvent e{ids_.NewUuid(), "/src", "t.one", "s", "t", {{"n", i}}};
                     LASTCALL_RETURN_IF_ERROR(outbox_->Append(tx, e, 0));
                   }
                   return Status::Ok();
                 }).ok());
  ASSERT_TRUE(Eventually([&] { return a_.seen().size() == 101; }));
  EXPECT_EQ(Count("SELECT COUNT(*) FROM processed p JOIN outbox o ON o.id = p.event_id "
                  "WHERE p.target = 'a'"),
            101);
  EXPECT_EQ(Count("SELECT COUNT(*) FROM processed"), 101);
}

// The bus is the store's batch tail: a unit that publishes returns once its events are handled,
// in the same commit, with no wait for the dispatcher thread.
TEST_F(InProcessBusTest, EventsAreHandledInTheCommitThatPublishesThem) {
  StartBus();
  Publish("t.one", 1);
  Publish("t.two", 2);
  EXPECT_EQ(a_.seen(), (std::vector<int>{1, 2}));
  EXPECT_EQ(b_.seen(), (std::vector<int>{2}));
  EXPECT_EQ(Count("SELECT COUNT(*) FROM effects"), 3);
  EXPECT_EQ(Count("SELECT COUNT(*) FROM processed"), 3);
  // Every target's cursor is past both events, the unwanted one included.
  EXPECT_EQ(Count("SELECT COUNT(*) FROM delivery_cursors WHERE last_seq = (SELECT MAX(seq) FROM "
                  "outbox)"),
            2);
}

// A handler failing in a batch's tail is undone alone (the publishing unit commits) and counts as
// an attempt, as it would on the dispatcher thread; the dispatcher then retries it.
TEST_F(InProcessBusTest, AHandlerFailingInTheBatchTailIsUndoneAloneAndCountsAsAnAttempt) {
  a_.FailNext(1);
  StartBus({.batch = 256, .max_attempts = 5, .backoff_base_ms = 5, .backoff_cap_ms = 20});
  Publish("t.two", 1);
  EXPECT_EQ(Count("SELECT COUNT(*) FROM outbox"), 1);
  EXPECT_EQ(b_.seen(), std::vector<int>{1});  // the other target's unit in that tail committed
  EXPECT_EQ(Count("SELECT COUNT(*) FROM effects WHERE event_id LIKE '%-partial'"), 0);
  ASSERT_TRUE(Eventually([&] { return a_.seen().size() == 1; }));
  EXPECT_EQ(a_.calls(), 2);
  ASSERT_TRUE(Eventually([&] { return Count("SELECT COUNT(*) FROM delivery_attempts") == 0; }));
  Publish("t.one", 2);
  ASSERT_TRUE(Eventually([&] { return a_.seen().size() == 2; }));
  EXPECT_EQ(a_.seen(), (std::vector<int>{1, 2}));
  EXPECT_EQ(bus_->failures(), 1u);
}

TEST_F(InProcessBusTest, AFailedDeliveryIsRetriedAndItsEffectsRolledBack) {
  a_.FailNext(2);
  StartBus({.batch = 256, .max_attempts = 5, .backoff_base_ms = 5, .backoff_cap_ms = 20});
  Publish("t.one", 1);
  Publish("t.one", 2);
  // seen() is written once the unit committed; the effects are counted too.
  ASSERT_TRUE(Eventually([&] {
    return a_.seen().size() == 2 && Count("SELECT COUNT(*) FROM effects WHERE target = 'a'") == 2;
  }));
  EXPECT_EQ(a_.seen(), (std::vector<int>{1, 2}));  // order kept across the retries
  EXPECT_EQ(a_.calls(), 4);
  EXPECT_EQ(Count("SELECT COUNT(*) FROM effects WHERE event_id LIKE '%-partial'"), 0);
  EXPECT_EQ(Count("SELECT COUNT(*) FROM effects WHERE target = 'a'"), 2);
  EXPECT_EQ(bus_->failures(), 2u);
}

// Events run without a savepoint each until one fails; the unit then fails whole and runs again
// with a savepoint per event, so the events before the failing one commit without its partial
// effects, and only the failures in that careful run count as attempts.
TEST_F(InProcessBusTest, AFailureInsideABatchKeepsTheEventsBeforeItAndOnlyTheAttemptCounts) {
  outbox_ = std::make_unique<Outbox>(metrics_, [] {});  // published before the bus starts: one batch
  Publish("t.one", 1);
  Publish("t.one", 2);
  Publish("t.one", 3);
  a_.FailOn(2, 2);  // fails in the optimistic run and in the careful one
  StartBus({.batch = 256, .max_attempts = 5, .backoff_base_ms = 5, .backoff_cap_ms = 20});
  ASSERT_TRUE(Eventually([&] { return Count("SELECT COUNT(*) FROM effects WHERE target = 'a'") == 3; }));
  ASSERT_TRUE(Eventually([&] { return Count("SELECT COUNT(*) FROM processed WHERE target = 'a'") == 3; }));
  EXPECT_EQ(Count("SELECT COUNT(*) FROM effects WHERE event_id LIKE '%-partial'"), 0);
  EXPECT_EQ(bus_->failures(), 1u);  // the careful run's failure; the optimistic one is not counted
  EXPECT_EQ(Count("SELECT COUNT(*) FROM delivery_attempts"), 0);
  EXPECT_EQ(Count("SELECT COUNT(*) FROM dead_letters"), 0);
  // 1 and 2 (failing) optimistically, 1 and 2 (failing) carefully, then 2 and 3.
  EXPECT_EQ(a_.calls(), 6);
}

TEST_F(InProcessBusTest, AfterTheLastAttemptTheEventIsDeadLetteredAndTheTargetMovesOn) {
  a_.FailNext(3);
  StartBus({.batch = 256, .max_attempts = 3, .backoff_base_ms = 5, .backoff_cap_ms = 20});
  Publish("t.one", 1);
  Publish("t.one", 2);
  ASSERT_TRUE(Eventually([&] { return a_.seen().size() == 1; }));
  EXPECT_EQ(a_.seen(), std::vector<int>{2});
  EXPECT_EQ(Count("SELECT COUNT(*) FROM dead_letters WHERE target = 'a' AND attempts = 3"), 1);
}

TEST_F(InProcessBusTest, ResumesAfterRestartWithoutRedoingHandledEvents) {
  StartBus();
  Publish("t.one", 1);
  ASSERT_TRUE(Eventually([&] { return a_.seen().size() == 1; }));
  bus_->Stop();
  Publish("t.one", 2);
  RecordingHandler fresh_a{"a", db_.get()};
  bus_ = std::make_unique<InProcessBus>(*db_, clock_, ids_, metrics_);
  bus_->AddTarget("a", &fresh_a);
  bus_->AddRule({"all-to-a", {{"t.one"}, {}}, {"a"}});
  ASSERT_TRUE(bus_->Start().ok());
  ASSERT_TRUE(Eventually([&] { return fresh_a.seen().size() == 1; }));
  EXPECT_EQ(fresh_a.seen(), std::vector<int>{2});
  EXPECT_EQ(Count("SELECT COUNT(*) FROM effects WHERE target = 'a'"), 2);
}

// Regression: the attempt count lived only in the dispatcher's memory, so a process that kept
// crashing restarted the count each time and never dead-lettered a poison event.
TEST_F(InProcessBusTest, RetryAttemptsAreCountedAcrossRestarts) {
  a_.FailNext(100);
  // Slow retries here, so the test stops the bus well before the sixth attempt.
  StartBus({.batch = 256, .max_attempts = 6, .backoff_base_ms = 40, .backoff_cap_ms = 80});
  Publish("t.one", 1);
  ASSERT_TRUE(Eventually([&] { return a_.calls() >= 2; }));
  bus_->Stop();
  int before = a_.calls();
  ASSERT_LT(before, 6);
  EXPECT_EQ(Count("SELECT attempts FROM delivery_attempts WHERE target = 'a'"), before);
  RecordingHandler fresh_a{"a", db_.get()};
  fresh_a.FailNext(100);
  bus_ = std::make_unique<InProcessBus>(
      *db_, clock_, ids_, metrics_,
      InProcessBusOptions{.batch = 256, .max_attempts = 6, .backoff_base_ms = 5, .backoff_cap_ms = 20});
  bus_->AddTarget("a", &fresh_a);
  bus_->AddRule({"all-to-a", {{"t.one"}, {}}, {"a"}});
  ASSERT_TRUE(bus_->Start().ok());
  ASSERT_TRUE(Eventually([&] { return Count("SELECT COUNT(*) FROM dead_letters") == 1; }));
  EXPECT_EQ(before + fresh_a.calls(), 6);  // six attempts in all, not six after the restart
  EXPECT_EQ(Count("SELECT attempts FROM dead_letters WHERE target = 'a'"), 6);
  EXPECT_EQ(Count("SELECT COUNT(*) FROM delivery_attempts"), 0);
}

TEST_F(InProcessBusTest, ADeliveredEventForgetsItsFailedAttempts) {
  a_.FailNext(2);
  StartBus({.batch = 256, .max_attempts = 5, .backoff_base_ms = 5, .backoff_cap_ms = 20});
  Publish("t.one", 1);
  ASSERT_TRUE(Eventually([&] { return a_.seen().size() == 1; }));
  // The handler saw the event inside its unit, before the commit that also moves the cursor and
  // forgets the attempts: wait for that commit before counting.
  ASSERT_TRUE(Eventually([&] {
    return Count("SELECT COUNT(*) FROM delivery_cursors WHERE target = 'a' AND "
                 "last_seq >= (SELECT MAX(seq) FROM outbox)") == 1;
  }));
  EXPECT_EQ(Count("SELECT COUNT(*) FROM delivery_attempts"), 0);
}

TEST_F(InProcessBusTest, AnEventAlreadyRecordedAsProcessedIsNotHandledAgain) {
  // A broker redelivers an event the target already handled (its cursor was lost): skipped.
  StartBus();
  Publish("t.one", 1);
  ASSERT_TRUE(Eventually([&] { return a_.seen().size() == 1; }));
  bus_->Stop();
  RedeliverTheOutboxToAFreshA();
}

// Retention (bus/retention.h) over the in-process bus.

Result<PruneCounts> Prune(Database& db, EventBus& bus, Metrics& metrics, int64_t retention_ms) {
  SystemClock clock;
  Pruner pruner(db, bus, clock, metrics, {.retention_ms = retention_ms, .interval_ms = 1000, .batch = 500});
  return pruner.RunOnce();
}

TEST_F(InProcessBusTest, RetentionPrunesOnlyEventsEveryTargetHasPassed) {
  // b (wanting t.two only) keeps failing its first event, so its cursor stays before it.
  b_.FailNext(1000);
  StartBus({.batch = 256, .max_attempts = 1000, .backoff_base_ms = 5, .backoff_cap_ms = 10});
  Publish("t.one", 1);
  Publish("t.one", 2);
  Publish("t.two", 3);
  Publish("t.one", 4);
  // The attempt row is written when the failure is settled, which may follow b's second call
  // when its first was in a batch tail.
  ASSERT_TRUE(Eventually([&] {
    return a_.seen().size() == 4 && b_.calls() >= 2 &&
           Count("SELECT COUNT(*) FROM delivery_attempts WHERE target = 'b'") == 1;
  }));
  // b has moved past 1 and 2 (not its events) but not 3: only 1 and 2 are finished for everyone.
  auto first = Prune(*db_, *bus_, metrics_, 0);
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  EXPECT_EQ(first->outbox, 2);
  EXPECT_EQ(first->processed, 2);  // a's records of 1 and 2
  EXPECT_EQ(Count("SELECT COUNT(*) FROM outbox"), 2);
  EXPECT_EQ(Count("SELECT COUNT(*) FROM processed WHERE target = 'a'"), 2);
  EXPECT_EQ(Count("SELECT COUNT(*) FROM delivery_attempts WHERE target = 'b'"), 1);
  // b recovers and handles 3: now everything is finished, and its attempts go with the event.
  b_.FailNext(0);
  ASSERT_TRUE(Eventually([&] { return b_.seen().size() == 1; }));
  auto second = Prune(*db_, *bus_, metrics_, 0);
  ASSERT_TRUE(second.ok()) << second.status().ToString();
  EXPECT_EQ(second->outbox, 2);
  EXPECT_EQ(second->processed, 3);  // a: 3 and 4; b: 3
  EXPECT_EQ(Count("SELECT COUNT(*) FROM outbox"), 0);
  EXPECT_EQ(Count("SELECT COUNT(*) FROM processed"), 0);
  EXPECT_EQ(Count("SELECT COUNT(*) FROM delivery_attempts"), 0);
  // Nothing was handled twice, and pruning changed no effect.
  EXPECT_EQ(Count("SELECT COUNT(*) FROM effects WHERE target = 'a'"), 4);
  EXPECT_EQ(Count("SELECT COUNT(*) FROM effects WHERE target = 'b' AND event_id NOT LIKE '%-partial'"), 1);
  // New events after pruning are delivered as before (outbox positions are never reused).
  Publish("t.two", 5);
  ASSERT_TRUE(Eventually([&] { return a_.seen().size() == 5 && b_.seen().size() == 2; }));
  EXPECT_EQ(a_.seen().back(), 5);
  std::string text = metrics_.Render(*db_, clock_.Now());
  EXPECT_NE(text.find("lastcall_rows_pruned_total{table=\"outbox\"} 4"), std::string::npos) << text;
  EXPECT_NE(text.find("lastcall_rows_pruned_total{table=\"processed\"} 5"), std::string::npos);
}

TEST_F(InProcessBusTest, RetentionWaitsForTheRetentionTimeAndForEveryRegisteredTarget) {
  StartBus();
  CloudEvent e{ids_.NewUuid(), "/src", "t.two", "s", "t", {{"n", 1}}};
  ASSERT_TRUE(db_->WriteSync([&](SqlTx& tx) { return outbox_->Append(tx, e, clock_.Now()); }).ok());
  ASSERT_TRUE(Eventually([&] { return a_.seen().size() == 1 && b_.seen().size() == 1; }));
  // Finished, but younger than the retention time: kept.
  auto young = Prune(*db_, *bus_, metrics_, 3600 * 1000);
  ASSERT_TRUE(young.ok());
  EXPECT_EQ(young->outbox, 0);
  EXPECT_EQ(Count("SELECT COUNT(*) FROM processed"), 2);
  // A target registered later (no cursor yet: it reads the outbox from its start) holds it too.
  bus_->Stop();
  RecordingHandler c{"c", db_.get()};
  InProcessBus later(*db_, clock_, ids_, metrics_);
  later.AddTarget("a", &a_);
  later.AddTarget("b", &b_);
  later.AddTarget("c", &c);
  auto held = Prune(*db_, later, metrics_, 0);
  ASSERT_TRUE(held.ok());
  EXPECT_EQ(held->outbox, 0);
  EXPECT_EQ(Count("SELECT COUNT(*) FROM outbox"), 1);
}

TEST_F(InProcessBusTest, RetentionTakesEventsOldestFirstAndStopsAtTheFirstYoungOne) {
  StartBus();
  // Created an hour ago, a minute ago, and an hour ago again (the clock stepped back between).
  WallMillis now = clock_.Now();
  const int64_t kHour = 3600 * 1000;
  std::vector<WallMillis> created = {now - kHour, now - kHour / 60, now - kHour};
  PublishCreatedAt(created);
  // Ten minutes of retention: the first event goes; the third, though as old, waits behind the
  // second, which is younger than that.
  auto first = Prune(*db_, *bus_, metrics_, kHour / 6);
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  EXPECT_EQ(first->outbox, 1);
  EXPECT_EQ(first->processed, 1);
  EXPECT_EQ(Count("SELECT COUNT(*) FROM outbox WHERE json_extract(data, '$.n') = 0"), 0);
  EXPECT_EQ(Count("SELECT COUNT(*) FROM outbox"), 2);
  // Once the second is old enough too, both go, in one round.
  auto later = Prune(*db_, *bus_, metrics_, 0);
  ASSERT_TRUE(later.ok()) << later.status().ToString();
  EXPECT_EQ(later->outbox, 2);
  EXPECT_EQ(Count("SELECT COUNT(*) FROM outbox"), 0);
  EXPECT_EQ(Count("SELECT COUNT(*) FROM processed"), 0);
}

TEST_F(InProcessBusTest, AStampFurtherAheadThanTheRetentionDoesNotHoldPruningBack) {
  StartBus();
  // Written while the clock was two hours ahead, then five minutes ahead, then after it was put
  // right (an hour ago by then).
  WallMillis now = clock_.Now();
  const int64_t kHour = 3600 * 1000;
  std::vector<WallMillis> created = {now + 2 * kHour, now + kHour / 12, now - kHour};
  PublishCreatedAt(created);
  // Ten minutes of retention: two hours ahead is no age, and goes; five minutes ahead is within
  // the retention, and holds the round there (as a young event would).
  auto first = Prune(*db_, *bus_, metrics_, kHour / 6);
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  EXPECT_EQ(first->outbox, 1);
  EXPECT_EQ(Count("SELECT COUNT(*) FROM outbox WHERE json_extract(data, '$.n') = 0"), 0);
  // With a retention under five minutes, five minutes ahead is no age either: all go.
  auto second = Prune(*db_, *bus_, metrics_, kHour / 30);
  ASSERT_TRUE(second.ok()) << second.status().ToString();
  EXPECT_EQ(second->outbox, 2);
  EXPECT_EQ(Count("SELECT COUNT(*) FROM outbox"), 0);
  EXPECT_EQ(Count("SELECT COUNT(*) FROM processed"), 0);
}

TEST(PruneRoundSizeTest, SmallWhenTheWriterIsIdleGrowingWithItsQueueUpToTheLimit) {
  EXPECT_EQ(PruneRoundSize(500, 0), kSmallPruneRound);
  EXPECT_EQ(PruneRoundSize(500, -3), kSmallPruneRound);  // a clock step back is no wait
  EXPECT_EQ(PruneRoundSize(500, 10), 2 * kSmallPruneRound);
  EXPECT_EQ(PruneRoundSize(500, 25), 350);
  EXPECT_EQ(PruneRoundSize(500, 80), 500);  // a saturated writer: the configured batch
  EXPECT_EQ(PruneRoundSize(500, 1e9), 500);
  // A configured batch below the small round bounds every round.
  EXPECT_EQ(PruneRoundSize(40, 0), 40);
  EXPECT_EQ(PruneRoundSize(40, 100), 40);
}

TEST_F(InProcessBusTest, ThePrunersLoopRunsFullRoundsBackToBackUntilTheBacklogIsGone) {
  StartBus();
  constexpr int kEvents = 2 * kSmallPruneRound + 50;  // more than one small round
  ASSERT_TRUE(db_->WriteSync([&](SqlTx& tx) {
                   for (int i = 0; i < kEvents; ++i) {
                     CloudEvent e{ids_.NewUuid(), "/src", "t.one", "s", "t", {{"n", i}}};
                     LASTCALL_RETURN_IF_ERROR(outbox_->Append(tx, e, clock_.Now()));
                   }
                   return Status::Ok();
                 }).ok());
  ASSERT_TRUE(Eventually([&] { return a_.seen().size() == static_cast<size_t>(kEvents); }));
  SystemClock clock;
  // An hour between rounds that are not full: only rounds run back to back can empty the outbox
  // within the wait below.
  Pruner pruner(*db_, *bus_, clock, metrics_, {.retention_ms = 0, .interval_ms = 3600 * 1000, .batch = 500});
  pruner.Start();
  EXPECT_TRUE(Eventually([&] { return Count("SELECT COUNT(*) FROM outbox") == 0; }));
  EXPECT_EQ(Count("SELECT COUNT(*) FROM processed"), 0);
  pruner.Stop();
}

TEST_F(InProcessBusTest, AnEventRedeliveredInsideTheRetentionWindowIsNotAppliedTwice) {
  StartBus();
  Publish("t.one", 1);
  ASSERT_TRUE(Eventually([&] { return a_.seen().size() == 1; }));
  bus_->Stop();
  // The retention a NATS bus imposes covers its redeliveries: duplicate window, AckWait and every
  // BackOff step (34 minutes with the defaults), whatever is configured lower.
  NatsBusOptions no;
  NatsBus nats(*db_, clock_, ids_, metrics_, no);
  EXPECT_EQ(nats.RedeliveryHorizonMs(),
            no.duplicate_window_ms + no.ack_wait_ms + no.ack_wait_ms * (1 + 2 + 4 + 8 + 16 + 16 + 16));
  SystemClock clock;
  Pruner pruner(*db_, *bus_, clock, metrics_, {.retention_ms = 0});
  EXPECT_EQ(pruner.effective_retention_ms(), 0);
  Pruner nats_pruner(*db_, nats, clock, metrics_, {.retention_ms = 1000});
  EXPECT_EQ(nats_pruner.effective_retention_ms(), nats.RedeliveryHorizonMs());
  // A round inside the window keeps the event and its record.
  ASSERT_TRUE(db_->WriteSync([](SqlTx& tx) {
                   auto r = tx.Exec("UPDATE outbox SET created_at = ?", {SystemClock().Now()});
                   return r.ok() ? Status::Ok() : r.status();
                 }).ok());
  auto inside = Prune(*db_, *bus_, metrics_, 3600 * 1000);
  ASSERT_TRUE(inside.ok());
  EXPECT_EQ(inside->outbox, 0);
  // The redelivery (the cursor lost, as a broker would redeliver): skipped by its record.
  RedeliverTheOutboxToAFreshA();
}

TEST_F(InProcessBusTest, ADeadLetterIsReplayedOnceAfterItsEventWasPruned) {
  a_.FailNext(3);
  StartBus({.batch = 256, .max_attempts = 3, .backoff_base_ms = 5, .backoff_cap_ms = 10});
  Publish("t.one", 7);
  ASSERT_TRUE(Eventually([&] { return Count("SELECT COUNT(*) FROM dead_letters") == 1; }));
  ASSERT_TRUE(Eventually([&] { return Count("SELECT COUNT(*) FROM delivery_cursors WHERE target = 'a' AND last_seq = 1") == 1; }));
  auto pruned = Prune(*db_, *bus_, metrics_, 0);
  ASSERT_TRUE(pruned.ok());
  ASSERT_EQ(pruned->outbox, 1);
  std::string id;
  ASSERT_TRUE(db_->Read([&](SqlTx& tx) {
                   bool more = false;
                   auto list = ListDeadLetters(tx, {}, &more);
                   if (!list.ok()) return list.status();
                   EXPECT_EQ(list->size(), 1u);
                   EXPECT_TRUE(list->at(0).event.has_value());  // the dead letter's own copy
                   if (list->at(0).event) {
                     EXPECT_EQ(list->at(0).event->type, "t.one");
                     EXPECT_EQ(list->at(0).event->data.value("n", -1), 7);
                   }
                   id = list->at(0).id;
                   return Status::Ok();
                 }).ok());
  auto replay = [&] {
    return db_->WriteSync([&](SqlTx& tx) { return ReplayDeadLetter(tx, id, clock_.Now(), *bus_); });
  };
  ASSERT_TRUE(replay().ok());
  EXPECT_EQ(a_.seen(), std::vector<int>{7});
  Status again = replay();
  EXPECT_EQ(again.code(), Code::kConflict);
  EXPECT_EQ(Count("SELECT COUNT(*) FROM effects WHERE target = 'a' AND event_id NOT LIKE '%-partial'"), 1);
}

}  // namespace
}  // namespace lastcall
