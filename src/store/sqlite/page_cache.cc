#include "store/sqlite/page_cache.h"

#include <sqlite3.h>

#include <atomic>
#include <mutex>
#include <new>

namespace lastcall {
namespace {

// SQLite's PENDING_BYTE (fixed by the file format; only its test builds move it).
constexpr unsigned kPendingByte = 0x40000000;

// SQLite's default cache's methods; set once, before SQLite initializes.
sqlite3_pcache_methods2 pcache1;
std::atomic<int64_t> temporary_rekeys{0};

struct Cache {
  sqlite3_pcache* inner;
  unsigned temporary_key;  // the number balance_nonroot swaps through, for this page size
};

Cache* Of(sqlite3_pcache* p) { return reinterpret_cast<Cache*>(p); }

// The key pcache1 sees for the pager's page number.
unsigned Key(const Cache* c, unsigned pgno) { return pgno == c->temporary_key ? 0 : pgno; }

int Init(void*) { return pcache1.xInit(pcache1.pArg); }
void Shutdown(void*) { pcache1.xShutdown(pcache1.pArg); }

sqlite3_pcache* Create(int page_size, int extra_size, int purgeable) {
  sqlite3_pcache* p = pcache1.xCreate(page_size, extra_size, purgeable);
  if (p == nullptr) return nullptr;
  auto* c = new (std::nothrow) Cache{p, kPendingByte / static_cast<unsigned>(page_size) + 1};
  if (c == nullptr) {
    pcache1.xDestroy(p);
    return nullptr;
  }
  return reinterpret_cast<sqlite3_pcache*>(c);
}

void Cachesize(sqlite3_pcache* p, int n) { pcache1.xCachesize(Of(p)->inner, n); }
int Pagecount(sqlite3_pcache* p) { return pcache1.xPagecount(Of(p)->inner); }

sqlite3_pcache_page* Fetch(sqlite3_pcache* p, unsigned key, int create) {
  return pcache1.xFetch(Of(p)->inner, Key(Of(p), key), create);
}

void Unpin(sqlite3_pcache* p, sqlite3_pcache_page* page, int discard) {
  pcache1.xUnpin(Of(p)->inner, page, discard);
}

void Rekey(sqlite3_pcache* p, sqlite3_pcache_page* page, unsigned old_key, unsigned new_key) {
  Cache* c = Of(p);
  if (new_key == c->temporary_key) temporary_rekeys.fetch_add(1, std::memory_order_relaxed);
  pcache1.xRekey(c->inner, page, Key(c, old_key), Key(c, new_key));
}

// Key 0 is below any limit, and a page holds it only within one balance: nothing to translate.
void Truncate(sqlite3_pcache* p, unsigned limit) { pcache1.xTruncate(Of(p)->inner, limit); }

void Destroy(sqlite3_pcache* p) {
  Cache* c = Of(p);
  pcache1.xDestroy(c->inner);
  delete c;
}

void Shrink(sqlite3_pcache* p) { pcache1.xShrink(Of(p)->inner); }

sqlite3_pcache_methods2 adapter;

bool Install() {
  if (sqlite3_config(SQLITE_CONFIG_GETPCACHE2, &pcache1) != SQLITE_OK ||
      pcache1.xCreate == nullptr) {
    return false;  // SQLite is initialized already
  }
  adapter = pcache1;  // iVersion; pArg stays pcache1's (Init and Shutdown pass it on)
  adapter.xInit = Init;
  adapter.xShutdown = Shutdown;
  adapter.xCreate = Create;
  adapter.xCachesize = Cachesize;
  adapter.xPagecount = Pagecount;
  adapter.xFetch = Fetch;
  adapter.xUnpin = Unpin;
  adapter.xRekey = Rekey;
  adapter.xTruncate = Truncate;
  adapter.xDestroy = Destroy;
  adapter.xShrink = Shrink;
  return sqlite3_config(SQLITE_CONFIG_PCACHE2, &adapter) == SQLITE_OK;
}

}  // namespace

bool InstallSqlitePageCache() {
  static std::once_flag once;
  static bool installed = false;
  std::call_once(once, [] { installed = Install(); });
  return installed;
}

const sqlite3_pcache_methods2* SqlitePageCacheMethods() {
  return InstallSqlitePageCache() ? &adapter : nullptr;
}

int64_t SqlitePageCacheTemporaryRekeys() {
  return temporary_rekeys.load(std::memory_order_relaxed);
}

}  // namespace lastcall
