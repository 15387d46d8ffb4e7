// The scale-out engine: PostgreSQL through libpq, chosen by LASTCALL_DATABASE_URL. It implements the
// same Database/SqlTx seam as SQLite, so repositories, the coordinator and the handlers run on it
// unchanged: "?" placeholders become $1..$n, int64 values travel as int8, text as untyped literals
// (the server gives them the column's type), NULL as NULL.
//
// Writes: one writer thread owns one connection and commits many queued units of work in one
// transaction (group commit, READ COMMITTED), each unit in its own savepoint, done callbacks after
// COMMIT returned. Reads: a small pool of connections, each Read one REPEATABLE READ READ ONLY
// transaction (one snapshot for the whole callback). Several lastcall nodes may share a database;
// work that must happen once is claimed with row locks by the repositories (SqlDialect::kPostgres).
#pragma once

#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "store/group_commit.h"
#include "store/sql.h"

namespace lastcall {

class PgConnection;

struct PostgresOptions {
  std::string url;        // postgresql://user:password@host:port/db?... (libpq connection URI)
  int max_batch = 64;     // units per commit at most: each unit is a subtransaction, and more
                          // than 64 in one transaction overflow PostgreSQL's per-backend subxid
                          // cache, which slows every other session's snapshots
  int max_idle_readers = 8;
};

// The writer is a GroupCommitWriter driving this object's write connection (GroupCommitConnection,
// private: only the writer calls it).
class PostgresDatabase : public Database, private GroupCommitConnection {
 public:
  // Connects the writer (and checks the server answers). Errors: kUnavailable when the server
  // cannot be reached or refuses the credentials (the message never holds the password).
  static Result<std::unique_ptr<PostgresDatabase>> Open(const PostgresOptions& options);
  ~PostgresDatabase() override;

  void Write(WriteFn fn, WriteDone done) override;
  Status Read(const ReadFn& fn) override;
  void Close() override;
  bool SetBatchTail(BatchTail* tail) override;

 private:
  // A unit that keeps losing conflicts is reported (kUnavailable) after this many runs.
  static constexpr int kConflictAttempts = 5;
  explicit PostgresDatabase(PostgresOptions options);
  // GroupCommitConnection, on the writer thread. The writer's connection is in libpq pipeline
  // mode: BEGIN and each unit's savepoints are queued without a round trip of their own, a
  // unit's statements sent with SqlTx::Send are read with its savepoint's release (EndUnit's one
  // round trip), and a unit whose sent statement failed is rolled back to its savepoint alone
  // (TakeUnitFailure reports it). Begin reconnects a lost connection first. Retryable: a unit
  // that lost a deadlock or serialization conflict (SQLSTATE 40P01, 40001) with another node.
  Status Begin(bool unit_savepoints) override;
  GroupCommitTx& tx() override { return *writer_tx_; }
  Status EndUnit(bool keep, bool next) override;
  Status TakeUnitFailure() override;
  Status Commit() override;
  void Rollback() override;
  bool TakeRetryable() override;
  Result<std::unique_ptr<PgConnection>> TakeReader();
  void ReturnReader(std::unique_ptr<PgConnection> c);

  PostgresOptions options_;
  std::unique_ptr<PgConnection> writer_;       // writer thread only (after Open)
  std::unique_ptr<GroupCommitTx> writer_tx_;   // on writer_; writer thread only
  std::unique_ptr<GroupCommitWriter> group_;   // the writer thread; started last by Open
  Status unit_failure_;                        // writer thread only; see TakeUnitFailure

  std::mutex readers_mu_;
  std::vector<std::unique_ptr<PgConnection>> readers_;  // guarded by readers_mu_
};

// "SELECT a FROM t WHERE b = ? AND c = '?'" -> "SELECT a FROM t WHERE b = $1 AND c = '?'": question
// marks outside string literals, quoted identifiers and comments become numbered parameters.
std::string ToPostgresPlaceholders(std::string_view sql);

// The URL with its password (user:password@ or password=...) replaced by "***", for logs.
std::string RedactDatabaseUrl(const std::string& url);

}  // namespace lastcall
