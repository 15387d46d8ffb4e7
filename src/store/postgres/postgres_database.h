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

#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

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

class PostgresDatabase : public Database {
 public:
  // Connects the writer (and checks the server answers). Errors: kUnavailable when the server
  // cannot be reached or refuses the credentials (the message never holds the password).
  static Result<std::unique_ptr<PostgresDatabase>> Open(const PostgresOptions& options);
  ~PostgresDatabase() override;

  void Write(WriteFn fn, WriteDone done) override;
  Status Read(const ReadFn& fn) override;
  void Close() override;

 private:
  struct Job {
    WriteFn fn;
    WriteDone done;
    int attempts = 0;  // runs that lost a deadlock or serialization conflict
  };
  // A unit that keeps losing conflicts is reported (kUnavailable) after this many runs.
  static constexpr int kConflictAttempts = 5;
  explicit PostgresDatabase(PostgresOptions options);
  void WriterLoop();
  // Runs one batch on the writer connection; fills results, after-commit work and which units
  // lost a deadlock or serialization conflict (they run again in the next batch instead of being
  // reported). Returns the status of the transaction as a whole (BEGIN/COMMIT).
  Status RunBatch(std::vector<Job>& batch, std::vector<Status>& results,
                  std::vector<std::vector<std::function<void()>>>& after,
                  std::vector<bool>& conflicts);
  Result<std::unique_ptr<PgConnection>> TakeReader();
  void ReturnReader(std::unique_ptr<PgConnection> c);

  PostgresOptions options_;
  std::unique_ptr<PgConnection> writer_;  // writer thread only (after Open)

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Job> queue_;  // guarded by mu_
  bool closing_ = false;   // guarded by mu_
  std::thread writer_thread_;

  std::mutex readers_mu_;
  std::vector<std::unique_ptr<PgConnection>> readers_;  // guarded by readers_mu_
};

// "SELECT a FROM t WHERE b = ? AND c = '?'" -> "SELECT a FROM t WHERE b = $1 AND c = '?'": question
// marks outside string literals, quoted identifiers and comments become numbered parameters.
std::string ToPostgresPlaceholders(std::string_view sql);

// The URL with its password (user:password@ or password=...) replaced by "***", for logs.
std::string RedactDatabaseUrl(const std::string& url);

}  // namespace lastcall
