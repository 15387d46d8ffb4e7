// The embedded default engine: SQLite in WAL mode. One writer thread owns the only write
// connection and commits many queued units of work in one transaction (group commit), each unit in
// its own savepoint so that one unit's failure does not undo the others. Reads run on the calling
// thread on pooled read-only connections, which WAL lets proceed while the writer commits.
#pragma once

#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "store/sql.h"

struct sqlite3;

namespace lastcall {

class SqliteConnection;

struct SqliteOptions {
  std::string path;                  // database file
  std::string synchronous = "FULL";  // FULL (durable on power loss) or NORMAL
  int max_batch = 512;               // units of work per commit at most
  // The writer connection's page cache; each read connection (up to 16) gets an eighth of it,
  // at least 1 MiB. Bounds the store's memory: a cache fills up to its size with the pages its
  // connection touched, and the database (tombstones, coordinations, timelines) keeps growing.
  int cache_mib = 64;
};

class SqliteDatabase : public Database {
 public:
  // Opens (creating if needed) the database and starts the writer thread. Errors: kUnavailable
  // when the file cannot be opened or WAL mode cannot be set.
  static Result<std::unique_ptr<SqliteDatabase>> Open(const SqliteOptions& options);
  ~SqliteDatabase() override;

  void Write(WriteFn fn, WriteDone done) override;
  Status Read(const ReadFn& fn) override;
  void Close() override;

 private:
  struct Job {
    WriteFn fn;
    WriteDone done;
  };
  explicit SqliteDatabase(SqliteOptions options);
  void WriterLoop();
  std::unique_ptr<SqliteConnection> TakeReader();
  void ReturnReader(std::unique_ptr<SqliteConnection> c);

  SqliteOptions options_;
  std::unique_ptr<SqliteConnection> writer_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Job> queue_;        // guarded by mu_
  bool closing_ = false;         // guarded by mu_
  std::thread writer_thread_;

  std::mutex readers_mu_;
  std::vector<std::unique_ptr<SqliteConnection>> readers_;  // guarded by readers_mu_
};

}  // namespace lastcall
