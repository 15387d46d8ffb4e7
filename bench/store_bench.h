// The SQLite side of the benchmark: read-only looks into a running server's database, the raw
// limit (the same rows written straight to SQLite in batches), and seeding of waiting
// coordinations for the deadline sweep.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <memory>

#include "bench_util.h"

struct sqlite3;

namespace lastcall {
class Database;
}

namespace bench {

// A read-only connection to a live lastcall.db (WAL lets it read while the server writes).
class ReadOnlyDb {
 public:
  explicit ReadOnlyDb(const std::string& path);
  // The same looks into a server's PostgreSQL database (--database-url).
  static std::unique_ptr<ReadOnlyDb> Postgres(const std::string& url);
  ~ReadOnlyDb();
  bool ok() const { return db_ != nullptr || pg_ != nullptr; }
  bool postgres() const { return pg_ != nullptr; }
  // The first column of the first row as an integer (0 when NULL or no row).
  int64_t Scalar(const std::string& sql);
  // Every row of a two-column query: text key -> integer value.
  std::map<std::string, int64_t> TextToInt(const std::string& sql);
  // Rows of integers.
  std::vector<std::vector<int64_t>> Ints(const std::string& sql);

 private:
  ReadOnlyDb() = default;
  sqlite3* db_ = nullptr;
  std::unique_ptr<lastcall::Database> pg_;
};

// Creates a fresh database with lastcall's schema (lastcall_core's Migrate).
bool CreateSchema(const std::string& path, const std::string& synchronous, std::string* error);

struct RawOptions {
  std::string path;          // a fresh file
  std::string synchronous;   // FULL or NORMAL, as the run's server
  int users = 100;
  int files_seeded = 0;      // files present before the units run (as the server had)
  int units = 0;             // units of work: the first `units` files go
  int transactions = 10;     // child rows per file
  DateShape dates = DateShape::kStatement;  // their dates, as the server run's seed
  int batch = 100;           // units per transaction
  int cache_mib = 0;         // PRAGMA cache_size in MiB; 0: SQLite's default (2 MiB)
};

struct RawResult {
  bool ok = false;
  std::string error;
  double seed_s = 0;
  double elapsed_s = 0;
  int64_t units = 0;
  int64_t commits = 0;
  double units_per_s = 0;
};

// Seeds users, files and transactions, then runs `units` coordination-shaped units of work
// (insert a coordination and an outbox row, two updates, delete the file's rows and the file),
// `batch` per transaction, with no HTTP, events or consumers.
RawResult RunRawLimit(const RawOptions& o);

struct SweepSeed {
  bool ok = false;
  std::string error;
  double seconds = 0;
};
// Inserts `count` waiting coordinations (deadlines far in the future, no files) into a database
// that has the schema. ids are UUID-shaped, derived from index and tag.
SweepSeed SeedWaiting(const std::string& path, int64_t count, int64_t deadline_ms, int tag);

}  // namespace bench
