// The scale-out engine: PostgreSQL through libpq, chosen by LASTCALL_DATABASE_URL. It implements the
// same Database/SqlTx seam as SQLite, so repositories, the coordinator and the handlers run on it
// unchanged: "?" placeholders become $1..$n, int64 values travel as int8, text as untyped literals
// (the server gives them the column's type), NULL as NULL.
//
// Writes: a writer thread owns one connection and commits many queued units of work in one
// transaction (group commit, READ COMMITTED), each unit in its own savepoint, done callbacks after
// COMMIT returned. There may be several writers (PostgresOptions::writers), each with its own
// connection, thread and queue: their transactions run at once, as several nodes' do. Reads: a
// small pool of connections, each Read one REPEATABLE READ READ ONLY transaction (one snapshot for
// the whole callback). Several lastcall nodes may share a database;
// work that must happen once is claimed with row locks by the repositories (SqlDialect::kPostgres).
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "store/group_commit.h"
#include "store/sql.h"

namespace lastcall {

class PgConnection;
class PgWriter;

struct PostgresOptions {
  std::string url;        // postgresql://user:password@host:port/db?... (libpq connection URI)
  int max_batch = 64;     // units per commit at most: each unit is a subtransaction, and more
                          // than 64 in one transaction overflow PostgreSQL's per-backend subxid
                          // cache, which slows every other session's snapshots
  int max_idle_readers = 8;
  // Writer connections, each with its own thread and group commit (1 to kMaxWriters). Write hands
  // each unit to the next writer in turn, so units written one after another may commit in any
  // order, or at once: more than one only where nothing relies on the order of units (the NATS
  // bus, whose relay claims rows; not the in-process bus, whose delivery needs one writer).
  int writers = 1;
  static constexpr int kMaxWriters = 32;
};

// Each writer is a GroupCommitWriter driving a PgWriter (its connection, GroupCommitConnection).
class PostgresDatabase : public Database {
 public:
  // Connects the writers (and checks the server answers). Errors: kUnavailable when the server
  // cannot be reached or refuses the credentials (the message never holds the password);
  // kInvalid for options out of range.
  static Result<std::unique_ptr<PostgresDatabase>> Open(const PostgresOptions& options);
  ~PostgresDatabase() override;

  // With several writers, the unit goes to the next one in turn.
  void Write(WriteFn fn, WriteDone done) override;
  // On the first writer.
  void WriteInSession(WriteFn fn, WriteDone done) override;
  // On the writer the key's hash picks.
  void WriteKeyed(std::string_view key, WriteFn fn, WriteDone done) override;
  Status Read(const ReadFn& fn) override;
  void Close() override;
  // Only with one writer (a tail extends its one batch at a time); with several, installs nothing
  // and returns false.
  bool SetBatchTail(BatchTail* tail) override;

 private:
  explicit PostgresDatabase(PostgresOptions options);
  Result<std::unique_ptr<PgConnection>> TakeReader();
  void ReturnReader(std::unique_ptr<PgConnection> c);

  PostgresOptions options_;
  std::vector<std::unique_ptr<PgWriter>> writers_;           // one per writer thread
  std::vector<std::unique_ptr<GroupCommitWriter>> groups_;   // started last by Open
  std::atomic<uint64_t> next_writer_{0};                     // Write's turn

  std::mutex readers_mu_;
  std::vector<std::unique_ptr<PgConnection>> readers_;  // guarded by readers_mu_
};

// "SELECT a FROM t WHERE b = ? AND c = '?'" -> "SELECT a FROM t WHERE b = $1 AND c = '?'": question
// marks outside string literals, quoted identifiers and comments become numbered parameters.
std::string ToPostgresPlaceholders(std::string_view sql);

// The URL with its password (user:password@ or password=...) replaced by "***", for logs.
std::string RedactDatabaseUrl(const std::string& url);

}  // namespace lastcall
