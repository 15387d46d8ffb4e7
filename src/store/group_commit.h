// Group commit, shared by the SQL engines (SQLite, PostgreSQL). One writer thread takes queued
// units of work in batches and runs each batch in one transaction on the engine's write
// connection, each unit in its own savepoint: a unit that fails is rolled back alone and the others
// of its batch still commit. On an engine that counts the rows it changed (SQLite) a batch runs
// first without the savepoints, which cost SQLite a copy of every page a unit touches: a unit that
// fails having changed no row needs no undo, and only when one fails after changing rows is the
// transaction rolled back and the batch run again with a savepoint per unit. Before the COMMIT,
// the batch's tail (BatchTail, store/sql.h; at most one, SetTail) may add units to the same
// transaction, in rounds. Once COMMIT returned, each unit's AfterCommit work runs and then its done
// callback, in queue order (the tail's units last), on a second thread, the writer's finisher, so
// that the writer starts its next batch at once: the responses, log lines and metrics a batch
// leaves behind cost the writer nothing. Only a tail unit's done callback runs on the writer
// thread itself, right after the commit and so before its AfterCommit work (the tail decides the
// next batch's work from what it learns there). An engine plugs in through GroupCommitConnection
// (transaction control on its connection, plus its own rule for which failed units run again).
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "store/sql.h"

namespace lastcall {

// A writable SqlTx whose AfterCommit work the group-commit writer collects unit by unit. The engines'
// transaction classes derive from it.
class GroupCommitTx : public SqlTx {
 public:
  void AfterCommit(std::function<void()> fn) final { after_commit_.push_back(std::move(fn)); }
  // Returns the work registered since the last call, and forgets it.
  std::vector<std::function<void()>> TakeAfterCommit() { return std::exchange(after_commit_, {}); }

 private:
  std::vector<std::function<void()>> after_commit_;
};

// An engine's write connection as the group-commit writer drives it. Every method is called on the
// writer thread only. A batch is Begin, then for each unit EndUnit (after the unit ran on tx()),
// then Commit; Rollback after an EndUnit or Commit that failed. A batch begun without unit
// savepoints calls no EndUnit, and may end with Rollback instead of Commit.
class GroupCommitConnection {
 public:
  virtual ~GroupCommitConnection() = default;
  // Starts a batch: opens the transaction and, when unit_savepoints, the first unit's savepoint
  // (with whatever the engine does between batches first). On error nothing is left open and the
  // batch fails as a whole. unit_savepoints is false only on an engine whose ChangedRows counts.
  virtual Status Begin(bool unit_savepoints) = 0;
  // The transaction the units run on; valid from Begin until the batch ends.
  virtual GroupCommitTx& tx() = 0;
  // Ends the current unit's savepoint, keeping its work (keep) or undoing it; then, when next,
  // opens the next unit's savepoint. An error leaves the transaction unusable: the writer calls
  // Rollback and the batch fails as a whole.
  virtual Status EndUnit(bool keep, bool next) = 0;
  // After an EndUnit that succeeded: the failure of a statement the unit just ended sent without
  // waiting for its result (SqlTx::Send), or Ok. When set, EndUnit undid the unit (whatever keep
  // said) and the unit ends with this failure. Clears what it reports. Default: such an engine
  // waits for every statement, so there is none.
  virtual Status TakeUnitFailure() { return Status::Ok(); }
  // Commits the batch. An error means nothing of it is durable; the writer then calls Rollback.
  virtual Status Commit() = 0;
  // Abandons the open transaction, if any. Errors are ignored (the connection may be gone).
  virtual void Rollback() = 0;
  // The engine's retry rule: whether the statements run since the last call failed in a way that
  // running the unit again in a later transaction resolves (PostgreSQL: it lost a deadlock or a
  // serialization conflict with another node). Clears what it reports.
  virtual bool TakeRetryable() = 0;
  // The rows INSERT, UPDATE and DELETE statements changed on this connection so far (a count that
  // only grows), or nullopt when the engine cannot tell: then every unit runs in a savepoint. An
  // engine that counts must wait for every statement's result (no TakeUnitFailure), so that a
  // unit's failure is known when its function returns.
  virtual std::optional<int64_t> ChangedRows() { return std::nullopt; }
  // In a batch without unit savepoints, after each unit: whether the batch's transaction is still
  // open. An engine may end it on its own after some errors (SQLite rolls it back on a full disk or
  // an I/O error), which a savepoint's end would have reported; then the batch fails as a whole
  // before any later unit's statements could run outside it.
  virtual bool TransactionOpen() { return true; }
};

struct GroupCommitOptions {
  int max_batch = 512;        // units per transaction at most (at least 1)
  // Runs of a unit whose failure TakeRetryable reported, at most; after the last it is reported
  // with its error. 1: never run again.
  int retryable_attempts = 1;
  // After a batch failed as a whole, wait 50 ms times the consecutive failures (at most 1 s)
  // before the next one, so that a server that is down is not hammered.
  bool back_off_after_failure = false;
  std::string thread_name;    // the writer thread's name (15 characters at most), for ps and perf
  std::string finisher_name;  // the finisher thread's name, likewise
};

class GroupCommitWriter {
 public:
  // Starts the writer thread on conn, which must outlive this object (or its Stop).
  GroupCommitWriter(GroupCommitConnection& conn, GroupCommitOptions options);
  ~GroupCommitWriter();
  GroupCommitWriter(const GroupCommitWriter&) = delete;
  GroupCommitWriter& operator=(const GroupCommitWriter&) = delete;

  // Queues a unit (Database::Write's contract): done is called exactly once, after the batch
  // holding the unit committed (with the unit's own status) or failed as a whole, on the finisher
  // thread after the unit's AfterCommit work; at once with kUnavailable on the calling thread
  // after Stop. The units' ends run in the order the units ran. (A tail unit's done: on the writer
  // thread, before its AfterCommit work.) Thread-safe.
  void Write(WriteFn fn, WriteDone done);
  // Stops accepting units, runs the queued ones, finishes them (done and AfterCommit work), and
  // joins both threads. Idempotent; thread-safe, but not from the writer or finisher thread.
  void Stop();
  // Database::SetBatchTail's contract: batches that start after it returns use tail (nullptr:
  // none), and it waits for a batch still running with the old one, and for that batch's
  // AfterCommit work and done callbacks. Thread-safe, but not from the writer or finisher thread.
  void SetTail(BatchTail* tail);

  // Rounds of BatchTail::More per batch at most.
  static constexpr int kMaxTailRounds = 4;

 private:
  struct Job {
    WriteFn fn;
    WriteDone done;
    int runs = 0;  // earlier runs that failed retryably
    bool tail = false;  // added by the BatchTail: never run again
  };
  void Loop();
  // Hands job's end to the finisher (after, then done with status), or, for a tail unit, calls
  // done here and hands over only after. Writer thread.
  void Finish(Job& job, Status status, std::vector<std::function<void()>> after);
  void FinisherLoop();
  // Waits until the finisher ran everything handed to it before the call.
  void WaitFinished();
  // Runs one batch; fills each unit's status, its AfterCommit work and whether it failed
  // retryably. The tail's units are appended to batch as they are added. Returns the status of
  // the transaction as a whole (Begin, EndUnit, Commit). Without savepoints (optimistic, which
  // needs ChangedRows), a unit that fails after changing rows rolls the transaction back and sets
  // *undone_by to its index (its status in results): nothing of the batch is done, and the
  // caller runs the others again with savepoints.
  Status RunBatch(BatchTail* tail, std::vector<Job>& batch, std::vector<Status>& results,
                  std::vector<std::vector<std::function<void()>>>& after,
                  std::vector<bool>& retry, bool optimistic, std::optional<size_t>* undone_by);

  GroupCommitConnection& conn_;
  const GroupCommitOptions options_;

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Job> queue_;  // guarded by mu_
  bool stopping_ = false;  // guarded by mu_
  BatchTail* tail_ = nullptr;  // guarded by mu_; read once per batch
  bool in_batch_ = false;      // guarded by mu_: a batch taken from the queue is not finished
  std::condition_variable idle_cv_;  // signalled when in_batch_ turns false
  std::thread thread_;

  // The finisher: the batches' ends, run in order on finisher_thread_.
  std::mutex finish_mu_;
  std::condition_variable finish_cv_;       // work queued, or stopping
  std::condition_variable finished_cv_;     // finished_ moved
  std::deque<std::function<void()>> finish_queue_;  // guarded by finish_mu_
  uint64_t handed_ = 0;    // guarded by finish_mu_: entries ever queued
  uint64_t finished_ = 0;  // guarded by finish_mu_: entries run to their end
  bool finisher_stopping_ = false;  // guarded by finish_mu_
  std::thread finisher_thread_;
};

}  // namespace lastcall
