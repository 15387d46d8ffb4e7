// One budget for all of SQLite's memory in the process. Every connection (the writer, the
// checkpointer, up to 16 readers) has a page cache of its own that keeps every page it touched
// until it reaches its cache_size, so their sizes add up to far more than one wants the process to
// hold once the database outgrows them. SQLite's soft heap limit (sqlite3_soft_heap_limit64) bounds
// them together: once SQLite's allocations reach the budget, each cache reuses its own least
// recently used clean pages instead of growing, so memory stays at the budget while the database
// grows. It is soft: SQLite may still allocate past it when a cache has no clean page to give back
// (a transaction's dirty pages), and it never fails an allocation because of it.
#pragma once

#include <cstdint>

#include "common/status.h"

namespace lastcall {

// SQLite's own account of its heap: bytes allocated now and the most since the process started
// (sqlite3_status64 SQLITE_STATUS_MEMORY_USED). Both are 0 when SQLite keeps no memory statistics
// (SQLITE_CONFIG_MEMSTATUS off), in which case no heap limit can work. reset_highwater starts
// the high-water mark over from the current use (after reading it).
struct SqliteMemoryUsage {
  int64_t used_bytes = 0;
  int64_t highwater_bytes = 0;
};
SqliteMemoryUsage SqliteMemory(bool reset_highwater = false);

// Sets the process-wide soft heap limit to `bytes` (0 removes it) and checks that this SQLite
// library enforces it: that it keeps memory statistics (the limit is enforced only then) and reads
// the limit back. Call before opening connections; any thread. Errors: kUnavailable naming what is
// missing (the library's statistics are off, or it did not take the limit).
Status SetSqliteMemoryBudget(int64_t bytes);

// The soft heap limit in force now, in bytes (0: none).
int64_t SqliteMemoryBudget();

}  // namespace lastcall
