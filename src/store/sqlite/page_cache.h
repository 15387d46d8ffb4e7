// SQLite's own page cache (pcache1) with one key moved, so that a commit does not walk the whole
// cache.
//
// When a B-tree balance leaves its new pages out of order, SQLite (3.40, btree.c balance_nonroot)
// swaps two of them through a temporary page number: the pending-byte page, 1 GiB into the file
// (page 262,145 at 4 KiB), which never holds data. pcache1 remembers the largest key it was ever
// given (iMaxKey) and, at the end of every write transaction, drops the pages past the database's
// end; when that largest key is further past the end than the cache has hash slots, it walks
// every slot and every page instead of the few slots past the end. So each commit after such a
// balance walked the writer's whole cache (16,384 slots and pages at 64 MiB): about 10% of the
// writer's time at half load (bench/profile.md).
//
// This adapter hands every call to pcache1 unchanged, except that the temporary page number is
// given to it as key 0, a page number the pager never uses, so it never raises iMaxKey. The page
// keeps that key only between the swap's three rekeys; its number in the pager (PgHdr) is
// unchanged. Every other key, and every result, passes through as is.
#pragma once

#include <cstdint>

struct sqlite3_pcache_methods2;

namespace lastcall {

// Installs the adapter around SQLite's default page cache for the whole process, once. It must
// run before SQLite initializes (sqlite3_config's rule): SqliteDatabase::Open and
// SetSqliteMemoryBudget call it first. Returns whether it is in force; false when other code
// initialized SQLite before (the default cache then stays, which is only slower). Thread-safe.
bool InstallSqlitePageCache();

// Swaps seen through the temporary page number since the process started (for tests).
int64_t SqlitePageCacheTemporaryRekeys();

// The adapter's methods, to test it as a cache of its own: every page number, the temporary one
// included, names a page of its own. nullptr when it is not installed.
const sqlite3_pcache_methods2* SqlitePageCacheMethods();

}  // namespace lastcall
