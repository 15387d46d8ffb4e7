// The group-commit writer's contracts, on a fake connection that records the transaction control
// it was asked for: a failing unit is undone alone, AfterCommit work runs only for units that
// committed and before their done callback, a broken savepoint or commit fails the whole batch,
// retryable failures run again in a later transaction up to the limit, Stop drains the queue, and
// the units' ends (AfterCommit work, done) run in order on the finisher thread without holding
// the writer back.
// (The engines run the same writer on real connections: sqlite_database_test, postgres_database_test.)
#include "store/group_commit.h"

#include <gtest/gtest.h>
#include <pthread.h>

#include <algorithm>
#include <condition_variable>
#include <future>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "test_util.h"

namespace lastcall {
namespace {

class FakeTx : public GroupCommitTx {
 public:
  Result<int64_t> Exec(std::string_view, const SqlParams&) override { return int64_t{0}; }
  Status Query(std::string_view, const SqlParams&, const std::function<bool(const SqlRow&)>&) override {
    return Status::Ok();
  }
  bool writable() const override { return true; }
  SqlDialect dialect() const override { return SqlDialect::kSqlite; }
};

// Records every call as a word ("begin", "begin bare" (without unit savepoints), "keep", "undo",
// "next", "commit", "rollback") in order; fails the Nth EndUnit or the commit when told to. Counts
// changed rows (ChangeRows) only after CountChanges, as SQLite does.
class FakeGroupCommitConnection : public GroupCommitConnection {
 public:
  Status Begin(bool unit_savepoints) override {
    Note(unit_savepoints ? "begin" : "begin bare");
    return Status::Ok();
  }
  std::optional<int64_t> ChangedRows() override {
    std::lock_guard<std::mutex> l(mu_);
    return counting_ ? std::optional<int64_t>(changed_) : std::nullopt;
  }
  bool TransactionOpen() override {
    std::lock_guard<std::mutex> l(mu_);
    return !ended_by_engine_;
  }
  // As SQLite does on a full disk: the engine rolls the open transaction back on its own.
  void EndTransaction() {
    std::lock_guard<std::mutex> l(mu_);
    ended_by_engine_ = true;
  }
  void CountChanges() {
    std::lock_guard<std::mutex> l(mu_);
    counting_ = true;
  }
  void ChangeRows(int n) {
    std::lock_guard<std::mutex> l(mu_);
    changed_ += n;
  }
  GroupCommitTx& tx() override { return tx_; }
  Status EndUnit(bool keep, bool next) override {
    Note(keep ? "keep" : "undo");
    std::lock_guard<std::mutex> l(mu_);
    if (++end_units_ == fail_end_unit_) return Status::Unavailable("injected: savepoint failed");
    if (next) calls_.push_back("next");
    return Status::Ok();
  }
  Status Commit() override {
    Note("commit");
    std::lock_guard<std::mutex> l(mu_);
    return fail_commit_ ? Status::Unavailable("injected: commit failed") : Status::Ok();
  }
  void Rollback() override { Note("rollback"); }
  bool TakeRetryable() override {
    std::lock_guard<std::mutex> l(mu_);
    return std::exchange(retryable_, false);
  }

  // Called by a unit: its failure is one that running it again resolves.
  void MarkRetryable() {
    std::lock_guard<std::mutex> l(mu_);
    retryable_ = true;
  }
  void FailEndUnit(int n) {
    std::lock_guard<std::mutex> l(mu_);
    fail_end_unit_ = n;
  }
  void FailCommit() {
    std::lock_guard<std::mutex> l(mu_);
    fail_commit_ = true;
  }
  void Log(const std::string& what) { Note(what); }
  std::vector<std::string> calls() {
    std::lock_guard<std::mutex> l(mu_);
    return calls_;
  }
  // A unit's end (its AfterCommit work or done callback), which runs on the finisher thread: kept
  // apart from the writer's calls, with the number of commits made when it ran.
  void End(const std::string& what) {
    std::lock_guard<std::mutex> l(mu_);
    ends_.push_back(what);
    commits_at_end_.push_back(std::count(calls_.begin(), calls_.end(), "commit"));
  }
  std::vector<std::string> ends() {
    std::lock_guard<std::mutex> l(mu_);
    return ends_;
  }
  // The commits made when the end `what` ran (-1: it did not run).
  int64_t CommitsAtEnd(const std::string& what) {
    std::lock_guard<std::mutex> l(mu_);
    auto it = std::find(ends_.begin(), ends_.end(), what);
    return it == ends_.end() ? -1 : commits_at_end_[it - ends_.begin()];
  }

 private:
  void Note(const std::string& what) {
    std::lock_guard<std::mutex> l(mu_);
    calls_.push_back(what);
  }
  FakeTx tx_;
  std::mutex mu_;
  std::vector<std::string> calls_;
  std::vector<std::string> ends_;
  std::vector<int64_t> commits_at_end_;
  int end_units_ = 0;
  int fail_end_unit_ = -1;
  bool fail_commit_ = false;
  bool retryable_ = false;
  bool counting_ = false;
  int64_t changed_ = 0;
  bool ended_by_engine_ = false;
};

class GroupCommitWriterTest : public ::testing::Test {
 protected:
  void Start(GroupCommitOptions options = {}) {
    writer_ = std::make_unique<GroupCommitWriter>(conn_, std::move(options));
  }
  // Queues a unit that blocks the writer until Release(), so that the units queued meanwhile
  // share the next batch. Returns once the writer is inside it.
  void HoldWriter() {
    std::promise<void> inside;
    auto entered = inside.get_future();
    writer_->Write(
        [this, inside = std::make_shared<std::promise<void>>(std::move(inside))](SqlTx&) {
          inside->set_value();
          std::unique_lock<std::mutex> l(hold_mu_);
          hold_cv_.wait(l, [&] { return released_; });
          return Status::Ok();
        },
        [](Status) {});
    entered.wait();
  }
  void Release() {
    {
      std::lock_guard<std::mutex> l(hold_mu_);
      released_ = true;
    }
    hold_cv_.notify_all();
  }
  // Queues a unit that logs "run <name>", changes `changes` rows, registers "after <name>" as
  // AfterCommit work (an end) and returns result; its done records the end "done <name> ok|error"
  // and fulfils the returned future.
  std::future<Status> Unit(const std::string& name, Status result = Status::Ok(),
                           bool retryable = false, int changes = 0) {
    auto done = std::make_shared<std::promise<Status>>();
    auto future = done->get_future();
    writer_->Write(
        [this, name, result, retryable, changes](SqlTx& tx) {
          conn_.Log("run " + name);
          conn_.ChangeRows(changes);
          tx.AfterCommit([this, name] { conn_.End("after " + name); });
          if (retryable) conn_.MarkRetryable();
          return result;
        },
        [this, name, done](Status st) {
          conn_.End("done " + name + (st.ok() ? " ok" : " error"));
          done->set_value(std::move(st));
        });
    return future;
  }
  // The calls after the held batch (which ends with its "commit").
  std::vector<std::string> CallsAfterHold() {
    auto all = conn_.calls();
    auto it = std::find(all.begin(), all.end(), "commit");
    return it == all.end() ? all : std::vector<std::string>(it + 1, all.end());
  }

  FakeGroupCommitConnection conn_;
  std::unique_ptr<GroupCommitWriter> writer_;
  std::mutex hold_mu_;
  std::condition_variable hold_cv_;
  bool released_ = false;
};

TEST_F(GroupCommitWriterTest, AFailingUnitIsUndoneAloneAndTheOthersOfItsBatchCommit) {
  Start();
  HoldWriter();
  auto a = Unit("a");
  auto b = Unit("b", Status::Internal("b broke"));
  auto c = Unit("c");
  Release();
  EXPECT_TRUE(a.get().ok());
  EXPECT_EQ(b.get().code(), Code::kInternal);
  EXPECT_TRUE(c.get().ok());
  // One transaction: b's savepoint is undone, a's and c's kept; b's AfterCommit work never runs;
  // each committed unit's AfterCommit work runs before its done, in queue order, after the commit.
  EXPECT_EQ(CallsAfterHold(),
            (std::vector<std::string>{"begin", "run a", "keep", "next", "run b", "undo", "next",
                                      "run c", "keep", "commit"}));
  EXPECT_EQ(conn_.ends(), (std::vector<std::string>{"after a", "done a ok", "done b error",
                                                    "after c", "done c ok"}));
  EXPECT_EQ(conn_.CommitsAtEnd("after a"), 2);  // the held batch's commit, then this one
}

// On an engine that counts changed rows, a batch runs without unit savepoints: a unit that fails
// having changed nothing has nothing to undo, and the others commit with it.
TEST_F(GroupCommitWriterTest, WithoutSavepointsAUnitThatFailsChangingNothingLeavesTheBatchBe) {
  conn_.CountChanges();
  Start();
  HoldWriter();
  auto a = Unit("a", Status::Ok(), false, 3);
  auto b = Unit("b", Status::NotFound("no such file"));
  auto c = Unit("c", Status::Ok(), false, 1);
  Release();
  EXPECT_TRUE(a.get().ok());
  EXPECT_EQ(b.get().code(), Code::kNotFound);
  EXPECT_TRUE(c.get().ok());
  EXPECT_EQ(CallsAfterHold(),
            (std::vector<std::string>{"begin bare", "run a", "run b", "run c", "commit"}));
  EXPECT_EQ(conn_.ends(), (std::vector<std::string>{"after a", "done a ok", "done b error",
                                                    "after c", "done c ok"}));
}

// A unit that fails after changing rows cannot be undone alone without a savepoint: the
// transaction is rolled back, the unit ends with its failure, and the others run again with a
// savepoint each. Each unit's AfterCommit work and done run once, after the commit that made it
// durable.
TEST_F(GroupCommitWriterTest, WithoutSavepointsAUnitThatFailsAfterChangingRowsRerunsTheBatch) {
  conn_.CountChanges();
  Start();
  HoldWriter();
  auto a = Unit("a", Status::Ok(), false, 3);
  auto b = Unit("b", Status::Internal("b broke"), false, 2);
  auto c = Unit("c", Status::Ok(), false, 1);
  Release();
  EXPECT_TRUE(a.get().ok());
  EXPECT_EQ(b.get().code(), Code::kInternal);
  EXPECT_TRUE(c.get().ok());
  EXPECT_EQ(CallsAfterHold(),
            (std::vector<std::string>{"begin bare", "run a", "run b", "rollback", "begin", "run a",
                                      "keep", "next", "run c", "keep", "commit"}));
  EXPECT_EQ(conn_.ends(), (std::vector<std::string>{"done b error", "after a", "done a ok",
                                                    "after c", "done c ok"}));
  EXPECT_EQ(conn_.CommitsAtEnd("after a"), 2);  // a's work: after the commit of its second run
  // The batch after it runs without savepoints again.
  auto d = Unit("d", Status::Ok(), false, 1);
  EXPECT_TRUE(d.get().ok());
  auto calls = conn_.calls();
  EXPECT_EQ(*(std::find(calls.rbegin(), calls.rend(), "run d") + 1), "begin bare");
}

TEST_F(GroupCommitWriterTest, ABrokenSavepointFailsTheWholeBatchAndRunsNoAfterCommitWork) {
  Start();
  HoldWriter();  // its batch ends the first unit: EndUnit call 1
  conn_.FailEndUnit(3);  // the second unit of the next batch
  auto a = Unit("a");
  auto b = Unit("b");
  auto c = Unit("c");
  Release();
  EXPECT_EQ(a.get().code(), Code::kUnavailable);
  EXPECT_EQ(b.get().code(), Code::kUnavailable);
  EXPECT_EQ(c.get().code(), Code::kUnavailable);
  // Nothing after the broken savepoint runs, and a, although its own savepoint was kept, is not
  // reported durable: the transaction is rolled back.
  EXPECT_EQ(CallsAfterHold(),
            (std::vector<std::string>{"begin", "run a", "keep", "next", "run b", "keep",
                                      "rollback"}));
  EXPECT_EQ(conn_.ends(),
            (std::vector<std::string>{"done a error", "done b error", "done c error"}));
}

TEST_F(GroupCommitWriterTest, AFailedCommitFailsEveryUnitOfTheBatch) {
  Start();
  HoldWriter();
  conn_.FailCommit();
  auto a = Unit("a");
  auto b = Unit("b");
  Release();
  EXPECT_EQ(a.get().code(), Code::kUnavailable);
  EXPECT_EQ(b.get().code(), Code::kUnavailable);
  EXPECT_EQ(conn_.ends(), (std::vector<std::string>{"done a error", "done b error"}));
}

TEST_F(GroupCommitWriterTest, ARetryableFailureRunsAgainInALaterTransactionUpToTheLimit) {
  GroupCommitOptions options;
  options.retryable_attempts = 3;
  Start(options);
  auto lost = Unit("lost", Status::Unavailable("deadlock detected"), /*retryable=*/true);
  EXPECT_EQ(lost.get().code(), Code::kUnavailable);
  auto calls = conn_.calls();
  // Three runs, each in a transaction of its own, then reported once with its error.
  EXPECT_EQ(std::count(calls.begin(), calls.end(), "run lost"), 3);
  EXPECT_EQ(std::count(calls.begin(), calls.end(), "begin"), 3);
  auto ends = conn_.ends();
  EXPECT_EQ(std::count(ends.begin(), ends.end(), "done lost error"), 1);

  // A plain failure is reported at once.
  auto plain = Unit("plain", Status::Internal("bug"));
  EXPECT_EQ(plain.get().code(), Code::kInternal);
  calls = conn_.calls();
  EXPECT_EQ(std::count(calls.begin(), calls.end(), "run plain"), 1);
}

TEST_F(GroupCommitWriterTest, ARetryableUnitThatSucceedsOnItsSecondRunIsReportedDurable) {
  GroupCommitOptions options;
  options.retryable_attempts = 5;
  Start(options);
  auto runs = std::make_shared<int>(0);
  std::promise<Status> done;
  auto result = done.get_future();
  writer_->Write(
      [this, runs](SqlTx& tx) {
        tx.AfterCommit([this] { conn_.End("after"); });
        if (++*runs == 1) {
          conn_.MarkRetryable();
          return Status::Unavailable("could not serialize access");
        }
        return Status::Ok();
      },
      [&done](Status st) { done.set_value(std::move(st)); });
  EXPECT_TRUE(result.get().ok());
  EXPECT_EQ(*runs, 2);
  auto ends = conn_.ends();
  EXPECT_EQ(std::count(ends.begin(), ends.end(), "after"), 1);  // the failed run's work dropped
}

TEST_F(GroupCommitWriterTest, BatchesHoldAtMostMaxBatchUnits) {
  GroupCommitOptions options;
  options.max_batch = 2;
  Start(options);
  HoldWriter();
  std::vector<std::future<Status>> units;
  for (int i = 0; i < 5; ++i) units.push_back(Unit("u" + std::to_string(i)));
  Release();
  for (auto& u : units) EXPECT_TRUE(u.get().ok());
  auto calls = CallsAfterHold();
  EXPECT_EQ(std::count(calls.begin(), calls.end(), "commit"), 3);  // 2 + 2 + 1
}

TEST_F(GroupCommitWriterTest, StopRunsTheQueuedUnitsAndThenRefusesNewOnes) {
  Start();
  HoldWriter();
  auto a = Unit("a");
  auto b = Unit("b");
  std::thread stopper([this] { writer_->Stop(); });
  // Stop waits for the queue: release the writer once Stop is under way.
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  Release();
  stopper.join();
  EXPECT_EQ(a.wait_for(std::chrono::seconds(0)), std::future_status::ready);
  EXPECT_TRUE(a.get().ok());
  EXPECT_TRUE(b.get().ok());
  auto late = Unit("late");
  EXPECT_EQ(late.get().code(), Code::kUnavailable);  // answered at once, never run
  auto calls = conn_.calls();
  EXPECT_EQ(std::count(calls.begin(), calls.end(), "run late"), 0);
}

// A unit's end that takes long (a slow log sink, say) does not hold the writer back: the next
// batch runs and commits meanwhile, and its end waits its turn behind the slow one.
TEST_F(GroupCommitWriterTest, TheWriterGoesOnWhileAUnitsEndRunsOnTheFinisher) {
  Start({.finisher_name = "test-finish"});
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  std::promise<std::string> ran_on;
  auto slow_ran_on = ran_on.get_future();
  std::promise<Status> slow_done;
  auto slow = slow_done.get_future();
  writer_->Write([](SqlTx&) { return Status::Ok(); },
                 [&, released](Status st) {
                   char name[16] = {};
                   pthread_getname_np(pthread_self(), name, sizeof(name));
                   ran_on.set_value(name);
                   released.wait();
                   slow_done.set_value(std::move(st));
                 });
  EXPECT_EQ(slow_ran_on.get(), "test-finish");
  auto next = Unit("next");
  // The writer ran and committed the next unit while the first one's end is still running.
  EXPECT_TRUE(testing::Eventually([&] {
    auto calls = conn_.calls();
    return std::count(calls.begin(), calls.end(), "commit") == 2;
  }));
  EXPECT_EQ(next.wait_for(std::chrono::milliseconds(50)), std::future_status::timeout);
  release.set_value();
  EXPECT_TRUE(slow.get().ok());
  EXPECT_TRUE(next.get().ok());
  EXPECT_EQ(conn_.ends(), (std::vector<std::string>{"after next", "done next ok"}));
}

// A tail that adds the units it is given, one list per round, logging "more" each time it is
// asked; a unit logs "run <name>" and fails when its name starts with "x", or changes a row and
// then fails when it starts with "y".
class ScriptedTail : public BatchTail {
 public:
  ScriptedTail(FakeGroupCommitConnection& conn, std::vector<std::vector<std::string>> rounds)
      : conn_(conn), rounds_(std::move(rounds)) {}
  Result<std::vector<TailUnit>> More(SqlTx&) override {
    conn_.Log("more");
    std::vector<TailUnit> units;
    if (next_ >= rounds_.size()) return units;
    for (const auto& name : rounds_[next_]) {
      units.push_back(TailUnit{[this, name](SqlTx&) {
                                 conn_.Log("run " + name);
                                 if (name[0] == 'y') conn_.ChangeRows(1);
                                 return name[0] == 'x' || name[0] == 'y'
                                            ? Status::Internal(name + " broke")
                                            : Status::Ok();
                               },
                               [this, name](Status st) {
                                 conn_.Log("done " + name + (st.ok() ? " ok" : " error"));
                               }});
    }
    ++next_;
    return units;
  }

 private:
  FakeGroupCommitConnection& conn_;
  std::vector<std::vector<std::string>> rounds_;
  size_t next_ = 0;
};

TEST_F(GroupCommitWriterTest, TheTailsUnitsRunInTheBatchsTransactionInRoundsUntilItHasNoMore) {
  Start();
  ScriptedTail tail(conn_, {{"t1", "xt2"}, {"t3"}});
  writer_->SetTail(&tail);
  auto a = Unit("a");  // alone in its batch: the writer is idle
  EXPECT_TRUE(a.get().ok());
  writer_->SetTail(nullptr);  // returns once the batch using the tail has ended
  // One transaction: the tail looks in a fresh savepoint after the queued units, its first unit
  // runs in that savepoint, a failing one is undone alone, and it is asked again after each
  // round; the savepoint it found nothing in is released empty. Its units' done callbacks run on
  // the writer thread right after the commit, in order (the tail learns there what the next batch
  // needs); the queued unit's end goes to the finisher.
  EXPECT_EQ(conn_.calls(),
            (std::vector<std::string>{"begin", "run a", "keep", "next", "more", "run t1", "keep",
                                      "next", "run xt2", "undo", "next", "more", "run t3", "keep",
                                      "next", "more", "keep", "commit", "done t1 ok",
                                      "done xt2 error", "done t3 ok"}));
  EXPECT_EQ(conn_.ends(), (std::vector<std::string>{"after a", "done a ok"}));
}

TEST_F(GroupCommitWriterTest, ATailIsAskedAtMostMaxRoundsPerBatch) {
  Start();
  std::vector<std::vector<std::string>> rounds;
  for (int i = 0; i < 10; ++i) rounds.push_back({"r" + std::to_string(i)});
  ScriptedTail tail(conn_, rounds);
  writer_->SetTail(&tail);
  auto a = Unit("a");  // alone in its batch: the writer is idle
  EXPECT_TRUE(a.get().ok());
  writer_->SetTail(nullptr);
  auto calls = conn_.calls();
  EXPECT_EQ(std::count(calls.begin(), calls.end(), "more"), GroupCommitWriter::kMaxTailRounds);
  EXPECT_EQ(std::count(calls.begin(), calls.end(), "commit"), 1);
  EXPECT_EQ(calls.back(), "done r" + std::to_string(GroupCommitWriter::kMaxTailRounds - 1) + " ok");
}

TEST_F(GroupCommitWriterTest, ATailsUnitsFailWithTheirBatchAndNeverRunAgain) {
  Start({.retryable_attempts = 3});
  ScriptedTail tail(conn_, {{"t1"}});
  writer_->SetTail(&tail);
  conn_.FailCommit();
  auto a = Unit("a");
  EXPECT_EQ(a.get().code(), Code::kUnavailable);
  writer_->SetTail(nullptr);
  auto calls = conn_.calls();
  EXPECT_EQ(std::count(calls.begin(), calls.end(), "done t1 error"), 1);
  EXPECT_EQ(std::count(calls.begin(), calls.end(), "run t1"), 1);
}

// Without savepoints nothing would report a transaction the engine rolled back on its own (SQLite,
// on a full disk): the batch fails as a whole right after that unit, before a later unit's
// statements could run outside any transaction.
TEST_F(GroupCommitWriterTest, WithoutSavepointsATransactionTheEngineEndedFailsTheWholeBatch) {
  conn_.CountChanges();
  Start();
  HoldWriter();
  auto a = Unit("a", Status::Ok(), false, 1);
  writer_->Write(
      [this](SqlTx&) {
        conn_.Log("run b");
        conn_.EndTransaction();
        return Status::Unavailable("disk full");  // having changed nothing
      },
      [this](Status st) { conn_.End(st.ok() ? "done b ok" : "done b error"); });
  auto c = Unit("c", Status::Ok(), false, 1);
  Release();
  EXPECT_EQ(a.get().code(), Code::kUnavailable);
  EXPECT_EQ(c.get().code(), Code::kUnavailable);
  EXPECT_EQ(CallsAfterHold(),
            (std::vector<std::string>{"begin bare", "run a", "run b", "rollback"}));
  EXPECT_EQ(conn_.ends(),
            (std::vector<std::string>{"done a error", "done b error", "done c error"}));
}

// A tail unit that fails after changing rows takes the batch with it too: it ends with its
// failure and is never run again; the queued units and the tail's other units run again, and the
// tail is asked anew after them.
TEST_F(GroupCommitWriterTest, WithoutSavepointsATailUnitThatFailsAfterChangingRowsRerunsTheRest) {
  conn_.CountChanges();
  Start();
  ScriptedTail tail(conn_, {{"t1"}, {"yt2"}});
  writer_->SetTail(&tail);
  auto a = Unit("a", Status::Ok(), false, 1);  // alone in its batch: the writer is idle
  EXPECT_TRUE(a.get().ok());
  writer_->SetTail(nullptr);
  EXPECT_EQ(conn_.calls(),
            (std::vector<std::string>{"begin bare", "run a", "more", "run t1", "more", "run yt2",
                                      "rollback", "done yt2 error", "begin", "run a", "keep",
                                      "next", "run t1", "keep", "next", "more", "keep", "commit",
                                      "done t1 ok"}));
  EXPECT_EQ(conn_.ends(), (std::vector<std::string>{"after a", "done a ok"}));
}

}  // namespace
}  // namespace lastcall
