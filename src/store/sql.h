// The narrow seam between lastcall's repositories and a SQL engine. Repositories (accounts, files,
// coordinations, outbox, ...) are written once against SqlTx with portable SQL ("?" placeholders,
// ON CONFLICT, RETURNING); an engine (SQLite today, PostgreSQL later) implements SqlTx and Database.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "common/status.h"

namespace lastcall {

struct SqlNull {};
using SqlValue = std::variant<SqlNull, int64_t, std::string>;

// One result row. Column access by index; a NULL reads as 0 / "" / nullopt.
class SqlRow {
 public:
  explicit SqlRow(std::vector<SqlValue> values) : values_(std::move(values)) {}
  bool IsNull(size_t i) const { return std::holds_alternative<SqlNull>(values_.at(i)); }
  int64_t Int(size_t i) const;
  std::string Text(size_t i) const;
  std::optional<int64_t> OptInt(size_t i) const;
  std::optional<std::string> OptText(size_t i) const;
  size_t size() const { return values_.size(); }

 private:
  std::vector<SqlValue> values_;
};

using SqlParams = std::vector<SqlValue>;

// The engine behind a transaction. Repositories stay portable; the few statements that cannot be
// written once (row claims across nodes: FOR UPDATE SKIP LOCKED on PostgreSQL, nothing on SQLite,
// whose single writer serializes every write) branch on it instead of naming an engine elsewhere.
enum class SqlDialect { kSqlite, kPostgres };

// A transaction (or a savepoint inside one) on one connection. Not thread-safe: it belongs to the
// thread that was handed it, for the duration of the callback that received it.
class SqlTx {
 public:
  virtual ~SqlTx() = default;
  // Runs a statement; returns the number of rows changed.
  virtual Result<int64_t> Exec(std::string_view sql, const SqlParams& params = {}) = 0;
  // Runs a statement whose result the caller does not read (a write whose row count does not
  // matter, a lock taken with SELECT), and whose failure fails the whole unit of work: an engine
  // may send it without waiting for its result (PostgreSQL's writer pipelines it). Its failure is
  // then reported by a later statement of the unit that waits (every one after it fails with that
  // failure, a ROLLBACK TO a savepoint included), and the writer rolls the unit back and ends it
  // with that failure whatever the unit's function returned. An engine that waits (SQLite, reads)
  // returns the failure here, and the caller must pass it on. Do not use it for a statement whose
  // failure the caller handles (a constraint it expects to hit, say).
  virtual Status Send(std::string_view sql, const SqlParams& params = {});
  // Runs a query; calls on_row for each row in order. on_row returning false stops early.
  virtual Status Query(std::string_view sql, const SqlParams& params,
                       const std::function<bool(const SqlRow&)>& on_row) = 0;
  // Convenience: all rows.
  Result<std::vector<SqlRow>> QueryAll(std::string_view sql, const SqlParams& params = {});
  // Convenience: the first row, or nullopt when there is none.
  Result<std::optional<SqlRow>> QueryOne(std::string_view sql, const SqlParams& params = {});
  // True when the transaction may write (a read transaction refuses Exec of writes).
  virtual bool writable() const = 0;
  virtual SqlDialect dialect() const = 0;

  // Registers work to run after this transaction commits (never if it rolls back): in
  // registration order, on the group-commit writer's finisher thread (store/group_commit.h), so
  // after the commit is visible to readers, not with it; before the unit's done callback, except
  // for a BatchTail unit, whose done runs first, on the writer. Must not block for long, nor wait
  // for a write.
  virtual void AfterCommit(std::function<void()> fn) = 0;
};

// Row-lock clauses for a SELECT that claims the rows it returns until the transaction ends, so that
// nodes sharing one database act on a row one at a time. On PostgreSQL: " FOR UPDATE" (wait for
// another holder) and " FOR UPDATE SKIP LOCKED" (leave out rows another transaction holds). On
// SQLite both are "": its single writer already runs every write unit alone.
std::string_view LockRowsClause(const SqlTx& tx);
std::string_view SkipLockedRowsClause(const SqlTx& tx);

// The placeholders "(?, ?, ...)" of an `IN` list over `values` (not empty), padded to the next power
// of two by repeating the last value, which an IN list ignores. Both engines keep a prepared
// statement per distinct SQL text (SQLite's per-connection cache holds them for the connection's
// life), so lists of every length from 1 to n would keep n statements; padded, at most
// log2(n) + 1.
std::string PaddedInList(SqlParams& values);
// The placeholders of a multi-row VALUES list: rows groups of `columns` placeholders,
// "(?, ?), (?, ?)" for 2 and 2. Both engines insert VALUES rows in their order.
std::string ValuesRows(size_t columns, size_t rows);

// A unit of work for the writer: runs in a batch transaction. Returning an error rolls back this
// unit only; the other units of the batch still commit. A unit may run more than once before its
// done: a run that did not commit (PostgreSQL: it lost a conflict; SQLite: another unit of its
// batch failed after changing rows, see group_commit.h) is undone with its AfterCommit work, and
// the unit runs again. So it keeps nothing of a run outside the transaction but through
// AfterCommit, and resets whatever it reports to its caller at the start of each run.
using WriteFn = std::function<Status(SqlTx&)>;
// Called once the unit's fate is known: ok() only when the unit's effects are durable (committed).
using WriteDone = std::function<void(Status)>;
using ReadFn = std::function<Status(SqlTx&)>;

// A unit a batch adds to itself (BatchTail::More).
struct TailUnit {
  WriteFn fn;
  WriteDone done;
};

// Work a group-commit batch adds to itself before it commits: the in-process bus delivering, in the
// same transaction, the events the batch's units just published, so that a request and the
// deliveries it causes cost one commit and one wait instead of one each.
class BatchTail {
 public:
  virtual ~BatchTail() = default;
  // Called on the writer thread once the batch's queued units ran, inside a fresh savepoint of the
  // batch's transaction (none when the batch runs without them), and again each time the units it
  // returned have run, until it returns none (or after a few rounds: a batch never grows without
  // end). The units it returns run as queued ones do, each in its own savepoint (the first in the
  // one More ran in), and each done is called once the batch committed or failed; a unit that
  // fails is reported, never run again by the writer (one that succeeded may run again, as any
  // WriteFn). An error ends the rounds; the batch still commits. More may be called again for
  // the same batch when it runs again.
  virtual Result<std::vector<TailUnit>> More(SqlTx& tx) = 0;
};

class Database {
 public:
  virtual ~Database() = default;
  // Queues a unit of work for group commit. done is called exactly once, after the batch holding
  // the unit committed (with the unit's own status) or failed as a whole, on the writer's
  // finisher thread (a BatchTail unit's: on the writer thread), in the order the units ran.
  // Thread-safe.
  virtual void Write(WriteFn fn, WriteDone done) = 0;
  // Write and wait. Must not be called from the writer thread, nor from a done callback or
  // AfterCommit work (the finisher thread).
  Status WriteSync(WriteFn fn);
  // As Write, but every unit written this way runs on one and the same connection (on PostgreSQL
  // its first writer's), in the order written: for work that leaves session state behind (a
  // session advisory lock) which must last as long as that connection or which a later such unit
  // relies on. Default: Write (an engine with one write connection). Thread-safe.
  virtual void WriteInSession(WriteFn fn, WriteDone done) { Write(std::move(fn), std::move(done)); }
  // WriteInSession and wait. Not from the writer or finisher thread (WriteSync).
  Status WriteSyncInSession(WriteFn fn);
  // As Write, but units written with the same key run on the same write connection, in the order
  // written (Write may spread units over several: PostgresOptions::writers). For units that lock
  // the same rows (one account's): on two connections each would wait for the other's whole
  // batch, which group commit keeps open, and two batches locking in opposite orders deadlock,
  // which the server resolves only after its deadlock_timeout. Default: Write. Thread-safe.
  virtual void WriteKeyed(std::string_view key, WriteFn fn, WriteDone done) {
    (void)key;
    Write(std::move(fn), std::move(done));
  }
  // Runs fn in a read-only snapshot on the calling thread. Thread-safe.
  virtual Status Read(const ReadFn& fn) = 0;
  // Stops accepting writes, finishes queued ones, closes connections. Idempotent.
  virtual void Close() = 0;
  // Installs tail as the work every batch adds to itself (nullptr: none). Returns false when this
  // engine has no such batches; then nothing is installed. When it returns, no batch uses the
  // tail installed before any more, and those batches' done callbacks and AfterCommit work have
  // run. Not from the writer or finisher thread.
  virtual bool SetBatchTail(BatchTail* tail) {
    (void)tail;
    return false;
  }
};

}  // namespace lastcall
