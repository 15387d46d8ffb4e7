#include "store/sqlite/sqlite_memory.h"

#include <sqlite3.h>

#include <string>

#include "store/sqlite/page_cache.h"

namespace lastcall {

SqliteMemoryUsage SqliteMemory(bool reset_highwater) {
  sqlite3_int64 used = 0, highwater = 0;
  if (sqlite3_status64(SQLITE_STATUS_MEMORY_USED, &used, &highwater, reset_highwater ? 1 : 0) !=
      SQLITE_OK) {
    return {};
  }
  return {used, highwater};
}

int64_t SqliteMemoryBudget() { return sqlite3_soft_heap_limit64(-1); }

Status SetSqliteMemoryBudget(int64_t bytes) {
  (void)InstallSqlitePageCache();  // before SQLite initializes, or never
  if (sqlite3_initialize() != SQLITE_OK) return Status::Unavailable("SQLite did not initialize");
  // SQLite counts its heap only with memory statistics on (the default, but a build or another
  // library may turn them off); the soft limit compares against that count. A connection open
  // shows whether the count moves.
  sqlite3* probe = nullptr;
  const int64_t before = SqliteMemory().used_bytes;
  int rc = sqlite3_open_v2(":memory:", &probe, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nullptr);
  const int64_t during = SqliteMemory().used_bytes;
  sqlite3_close(probe);
  if (rc != SQLITE_OK) return Status::Unavailable("SQLite cannot open an in-memory database");
  if (during <= before) {
    return Status::Unavailable(
        "this SQLite library keeps no memory statistics (SQLITE_CONFIG_MEMSTATUS off), so it "
        "cannot bound its memory (LASTCALL_SQLITE_MEMORY_MIB)");
  }
  sqlite3_soft_heap_limit64(bytes);
  if (SqliteMemoryBudget() != bytes) {
    return Status::Unavailable("SQLite did not take the soft heap limit of " + std::to_string(bytes) +
                               " bytes (LASTCALL_SQLITE_MEMORY_MIB)");
  }
  return Status::Ok();
}

}  // namespace lastcall
