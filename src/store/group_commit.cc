#include "store/group_commit.h"

#include <pthread.h>

#include <algorithm>
#include <chrono>
#include <exception>

#include "common/log.h"

namespace lastcall {

GroupCommitWriter::GroupCommitWriter(GroupCommitConnection& conn, GroupCommitOptions options)
    : conn_(conn), options_(std::move(options)) {
  finisher_thread_ = std::thread([this] { FinisherLoop(); });
  thread_ = std::thread([this] { Loop(); });
}

GroupCommitWriter::~GroupCommitWriter() { Stop(); }

void GroupCommitWriter::Stop() {
  {
    std::lock_guard<std::mutex> l(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  {
    std::lock_guard<std::mutex> l(finish_mu_);
    finisher_stopping_ = true;
  }
  finish_cv_.notify_all();
  if (finisher_thread_.joinable()) finisher_thread_.join();
}

void GroupCommitWriter::FinisherLoop() {
  if (!options_.finisher_name.empty()) {
    pthread_setname_np(pthread_self(), options_.finisher_name.c_str());  // for ps, perf, benchmark
  }
  for (;;) {
    std::function<void()> fn;
    {
      std::unique_lock<std::mutex> l(finish_mu_);
      finish_cv_.wait(l, [&] { return finisher_stopping_ || !finish_queue_.empty(); });
      if (finish_queue_.empty()) return;  // stopping, and everything handed over ran
      fn = std::move(finish_queue_.front());
      finish_queue_.pop_front();
    }
    fn();
    fn = nullptr;  // what it holds (a response, captured state) goes before the count moves
    {
      std::lock_guard<std::mutex> l(finish_mu_);
      ++finished_;
    }
    finished_cv_.notify_all();
  }
}

void GroupCommitWriter::WaitFinished() {
  std::unique_lock<std::mutex> l(finish_mu_);
  const uint64_t target = handed_;
  finished_cv_.wait(l, [&] { return finished_ >= target; });
}

void GroupCommitWriter::Finish(Job& job, Status status, std::vector<std::function<void()>> after) {
  std::function<void()> end;
  if (job.tail) {
    job.done(std::move(status));
    if (after.empty()) return;
    end = [after = std::move(after)] {
      for (const auto& fn : after) fn();
    };
  } else {
    end = [after = std::move(after), done = std::move(job.done), status = std::move(status)]() mutable {
      for (const auto& fn : after) fn();
      done(std::move(status));
    };
  }
  {
    std::lock_guard<std::mutex> l(finish_mu_);
    finish_queue_.push_back(std::move(end));
    ++handed_;
  }
  finish_cv_.notify_one();
}

void GroupCommitWriter::Write(WriteFn fn, WriteDone done) {
  {
    std::lock_guard<std::mutex> l(mu_);
    if (!stopping_) {
      queue_.push_back(Job{std::move(fn), std::move(done)});
      cv_.notify_one();
      return;
    }
  }
  done(Status::Unavailable("the database is closing"));
}

void GroupCommitWriter::SetTail(BatchTail* tail) {
  {
    std::unique_lock<std::mutex> l(mu_);
    tail_ = tail;
    idle_cv_.wait(l, [&] { return !in_batch_; });
  }
  WaitFinished();  // that batch's ends were handed over before in_batch_ turned false
}

Status GroupCommitWriter::RunBatch(BatchTail* tail, std::vector<Job>& batch,
                                   std::vector<Status>& results,
                                   std::vector<std::vector<std::function<void()>>>& after,
                                   std::vector<bool>& retry, bool optimistic,
                                   std::optional<size_t>* undone_by) {
  undone_by->reset();
  LASTCALL_RETURN_IF_ERROR(conn_.Begin(/*unit_savepoints=*/!optimistic));
  GroupCommitTx& tx = conn_.tx();
  int rounds = 0;
  for (size_t i = 0; i < batch.size(); ++i) {
    (void)conn_.TakeRetryable();
    const int64_t changed_before = optimistic ? conn_.ChangedRows().value_or(0) : 0;
    Status st;
    try {
      st = batch[i].fn(tx);
    } catch (const std::exception& e) {
      st = Status::Internal(std::string("unit of work threw: ") + e.what());
    }
    std::vector<std::function<void()>> work = tx.TakeAfterCommit();
    // After the last unit so far, a savepoint is opened for the tail to look in (and for its
    // first unit to run in).
    bool ask_tail = i + 1 == batch.size() && tail != nullptr && rounds < kMaxTailRounds;
    if (optimistic) {
      if (!conn_.TransactionOpen()) {
        conn_.Rollback();
        return Status::Unavailable("the engine ended the batch's transaction on its own" +
                                   (st.ok() ? std::string() : ": " + st.ToString()));
      }
      // No savepoint to undo a failed unit by: one that changed nothing left nothing to undo;
      // any other takes the whole transaction with it.
      if (!st.ok() && conn_.ChangedRows().value_or(0) != changed_before) {
        conn_.Rollback();
        results[i] = std::move(st);
        *undone_by = i;
        return Status::Ok();
      }
    } else if (Status ended = conn_.EndUnit(st.ok(), i + 1 < batch.size() || ask_tail);
               !ended.ok()) {
      conn_.Rollback();
      return ended;
    }
    // A statement the unit sent without waiting failed: the unit is undone and fails with it
    // (the root cause, even when the function's own error came from it).
    if (Status sent = conn_.TakeUnitFailure(); !sent.ok()) st = std::move(sent);
    // A unit that lost a conflict holds nothing once rolled back to its savepoint, but the locks
    // this transaction's earlier units took may be what the other side waits for: running it again
    // here could lose again. It runs in a later transaction instead.
    retry[i] = !st.ok() && conn_.TakeRetryable();
    if (st.ok()) after[i] = std::move(work);
    results[i] = std::move(st);
    if (!ask_tail) continue;
    ++rounds;
    Result<std::vector<TailUnit>> more = Status::Ok();
    try {
      more = tail->More(tx);
    } catch (const std::exception& e) {
      more = Status::Internal(std::string("batch tail threw: ") + e.what());
    }
    if (!more.ok()) log::Warn("batch tail failed", {{"error", more.status().ToString()}});
    if (!more.ok() || more->empty()) {
      // Nothing more: end the savepoint it looked in (its reads are all it holds).
      (void)tx.TakeAfterCommit();
      if (optimistic) break;
      if (Status ended = conn_.EndUnit(true, false); !ended.ok()) {
        conn_.Rollback();
        return ended;
      }
      if (Status sent = conn_.TakeUnitFailure(); !sent.ok()) {
        log::Warn("batch tail failed", {{"error", sent.ToString()}});
      }
      break;
    }
    for (TailUnit& u : *more) {
      batch.push_back(Job{std::move(u.fn), std::move(u.done), 0, true});
    }
    results.resize(batch.size());
    after.resize(batch.size());
    retry.resize(batch.size(), false);
  }
  Status commit = conn_.Commit();
  if (!commit.ok()) conn_.Rollback();
  return commit;
}

void GroupCommitWriter::Loop() {
  if (!options_.thread_name.empty()) {
    pthread_setname_np(pthread_self(), options_.thread_name.c_str());  // for ps, perf, benchmark
  }
  const size_t max_batch = static_cast<size_t>(std::max(1, options_.max_batch));
  std::vector<Job> batch;
  int64_t failures = 0;
  for (;;) {
    batch.clear();
    BatchTail* tail = nullptr;
    {
      std::unique_lock<std::mutex> l(mu_);
      in_batch_ = false;
      idle_cv_.notify_all();
      cv_.wait(l, [&] { return stopping_ || !queue_.empty(); });
      if (queue_.empty() && stopping_) return;
      while (!queue_.empty() && batch.size() < max_batch) {
        batch.push_back(std::move(queue_.front()));
        queue_.pop_front();
      }
      tail = tail_;
      in_batch_ = true;
    }
    std::vector<Status> results(batch.size());
    std::vector<std::vector<std::function<void()>>> after(batch.size());
    std::vector<bool> retry(batch.size(), false);
    std::optional<size_t> undone_by;
    Status st = RunBatch(tail, batch, results, after, retry,
                         /*optimistic=*/conn_.ChangedRows().has_value(), &undone_by);
    if (undone_by) {
      // A unit failed after changing rows and took the batch with it. It ends with its failure,
      // its changes undone as its own savepoint would have undone them. The other units, the
      // tail's included, run again in the same order (their first run undone too, as if it had
      // not happened), each in its own savepoint; those after it had not run yet.
      std::vector<Job> again;
      for (size_t i = 0; i < batch.size(); ++i) {
        if (i == *undone_by) {
          Finish(batch[i], std::move(results[i]), {});
        } else {
          again.push_back(std::move(batch[i]));
        }
      }
      batch = std::move(again);
      results.assign(batch.size(), Status::Ok());
      after.assign(batch.size(), {});
      retry.assign(batch.size(), false);
      st = RunBatch(tail, batch, results, after, retry, /*optimistic=*/false, &undone_by);
    }
    if (!st.ok()) {
      log::Error("group commit failed", {{"error", st.message()}, {"units", batch.size()}});
      for (auto& job : batch) Finish(job, st, {});
      if (options_.back_off_after_failure) {
        ++failures;
        std::this_thread::sleep_for(std::chrono::milliseconds(std::min<int64_t>(failures * 50, 1000)));
      }
      continue;
    }
    failures = 0;
    std::vector<Job> again;
    for (size_t i = 0; i < batch.size(); ++i) {
      if (retry[i] && !batch[i].tail && batch[i].runs + 1 < options_.retryable_attempts) {
        ++batch[i].runs;
        again.push_back(std::move(batch[i]));
        continue;
      }
      Finish(batch[i], std::move(results[i]), std::move(after[i]));
    }
    if (!again.empty()) {
      log::Warn("units of work lost a deadlock or serialization conflict with another node; "
                "running them again",
                {{"units", again.size()}});
      std::lock_guard<std::mutex> l(mu_);
      for (auto it = again.rbegin(); it != again.rend(); ++it) queue_.push_front(std::move(*it));
    }
  }
}

}  // namespace lastcall
