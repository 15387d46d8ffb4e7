// The embedded engine's own contracts: group commit with per-unit savepoints, and WAL checkpoints
// that run beside the writer (on the checkpointer thread) yet keep the WAL bounded.
#include "store/sqlite/sqlite_database.h"

#include <gtest/gtest.h>
#include <sqlite3.h>

#include <condition_variable>
#include <filesystem>
#include <map>
#include <mutex>
#include <random>
#include <string>
#include <vector>

#include "common/ids.h"
#include "store/sqlite/page_cache.h"
#include "test_util.h"

namespace lastcall {
namespace {

using testing::Eventually;
namespace fs = std::filesystem;

class SqliteDatabaseTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("lastcall-sqlite-" + RandomHex(6));
    fs::create_directories(dir_);
  }
  void TearDown() override {
    if (db_) db_->Close();
    fs::remove_all(dir_);
  }
  void Open(SqliteOptions options) {
    options.path = path();
    db_ = std::move(SqliteDatabase::Open(options)).value();
    ASSERT_TRUE(db_->WriteSync([](SqlTx& tx) {
                     auto r = tx.Exec("CREATE TABLE rows (n INTEGER PRIMARY KEY, payload TEXT)");
                     return r.ok() ? Status::Ok() : r.status();
                   }).ok());
  }
  // One unit inserting row n with a payload of `bytes` bytes.
  Status InsertRow(int64_t n, size_t bytes) {
    return db_->WriteSync([&](SqlTx& tx) {
      auto r = tx.Exec("INSERT INTO rows (n, payload) VALUES (?, ?)", {n, std::string(bytes, 'x')});
      return r.ok() ? Status::Ok() : r.status();
    });
  }
  int64_t CountRows() {
    int64_t n = -1;
    EXPECT_TRUE(db_->Read([&](SqlTx& tx) {
                     auto r = tx.QueryOne("SELECT COUNT(*) FROM rows");
                     if (!r.ok()) return r.status();
                     n = (*r)->Int(0);
                     return Status::Ok();
                   }).ok());
    return n;
  }
  std::string path() const { return (dir_ / "db").string(); }
  uintmax_t FileSize(const std::string& p) const {
    std::error_code ec;
    auto s = fs::file_size(p, ec);
    return ec ? 0 : s;
  }

  fs::path dir_;
  std::unique_ptr<SqliteDatabase> db_;
};

// The adapter as a cache: the temporary page number (the pending-byte page, 262,145 at 4 KiB) names
// a page of its own, never one of the real pages, through the swap a balance makes with it.
TEST(SqlitePageCacheTest, TheTemporaryPageNumberNamesAPageOfItsOwnThroughASwap) {
  const sqlite3_pcache_methods2* m = SqlitePageCacheMethods();
  ASSERT_NE(m, nullptr);
  ASSERT_EQ(sqlite3_initialize(), SQLITE_OK);  // sets up the cache's mutexes and groups
  const unsigned temporary = 0x40000000 / 4096 + 1;
  sqlite3_pcache* cache = m->xCreate(4096, 64, 1);
  ASSERT_NE(cache, nullptr);
  m->xCachesize(cache, 100);
  sqlite3_pcache_page* pages[4] = {};
  for (unsigned k = 1; k <= 3; ++k) {
    pages[k] = m->xFetch(cache, k, 2);
    ASSERT_NE(pages[k], nullptr);
  }
  EXPECT_EQ(m->xFetch(cache, temporary, 0), nullptr);
  // balance_nonroot's swap of pages 2 and 3: 2 -> temporary, 3 -> 2, temporary -> 3.
  m->xRekey(cache, pages[2], 2, temporary);
  EXPECT_EQ(m->xFetch(cache, temporary, 0), pages[2]);
  EXPECT_EQ(m->xFetch(cache, 2, 0), nullptr);
  EXPECT_EQ(m->xFetch(cache, 1, 0), pages[1]);
  m->xRekey(cache, pages[3], 3, 2);
  m->xRekey(cache, pages[2], temporary, 3);
  EXPECT_EQ(m->xFetch(cache, 2, 0), pages[3]);
  EXPECT_EQ(m->xFetch(cache, 3, 0), pages[2]);
  EXPECT_EQ(m->xFetch(cache, temporary, 0), nullptr);
  EXPECT_EQ(m->xPagecount(cache), 3);
  // A truncation past the last page keeps them all; one below drops the pages from there.
  for (unsigned k = 1; k <= 3; ++k) m->xUnpin(cache, pages[k], 0);
  m->xTruncate(cache, 4);
  EXPECT_EQ(m->xPagecount(cache), 3);
  m->xTruncate(cache, 2);
  EXPECT_EQ(m->xPagecount(cache), 1);
  m->xDestroy(cache);
}

// Random inserts and deletes make B-tree balances that swap pages through the temporary page
// number, which the page-cache adapter (store/sqlite/page_cache.h) hands to SQLite's cache as
// another key. The data must come through exactly, the file must pass SQLite's own check, and the
// swaps must have happened (or the test proves nothing).
TEST_F(SqliteDatabaseTest, PagesABalanceSwapsKeepTheirContentsThroughThePageCacheAdapter) {
  Open({});
  ASSERT_TRUE(InstallSqlitePageCache());  // the first SQLite use in the process installed it
  const int64_t swaps_before = SqlitePageCacheTemporaryRekeys();
  ASSERT_TRUE(db_->WriteSync([](SqlTx& tx) {
                   auto r = tx.Exec("CREATE TABLE kv (k TEXT PRIMARY KEY, v TEXT NOT NULL)");
                   return r.ok() ? Status::Ok() : r.status();
                 }).ok());
  std::map<std::string, std::string> model;
  std::mt19937_64 rng(7);
  for (int round = 0; round < 60; ++round) {
    Status st = db_->WriteSync([&](SqlTx& tx) -> Status {
      for (int i = 0; i < 200; ++i) {
        std::string k = std::to_string(rng());
        std::string v(100 + rng() % 300, static_cast<char>('a' + i % 26));
        auto r = tx.Exec("INSERT OR REPLACE INTO kv (k, v) VALUES (?, ?)", {k, v});
        if (!r.ok()) return r.status();
        model[k] = v;
      }
      for (int i = 0; i < 120 && !model.empty(); ++i) {
        auto it = model.lower_bound(std::to_string(rng()));
        if (it == model.end()) it = model.begin();
        auto r = tx.Exec("DELETE FROM kv WHERE k = ?", {it->first});
        if (!r.ok()) return r.status();
        model.erase(it);
      }
      return Status::Ok();
    });
    ASSERT_TRUE(st.ok()) << st.ToString();
  }
  EXPECT_GT(SqlitePageCacheTemporaryRekeys(), swaps_before);
  std::map<std::string, std::string> stored;
  std::string check;
  ASSERT_TRUE(db_->Read([&](SqlTx& tx) {
                   auto ok = tx.QueryOne("PRAGMA integrity_check");
                   if (!ok.ok()) return ok.status();
                   check = (*ok)->Text(0);
                   return tx.Query("SELECT k, v FROM kv", {}, [&](const SqlRow& r) {
                     stored[r.Text(0)] = r.Text(1);
                     return true;
                   });
                 }).ok());
  EXPECT_EQ(check, "ok");
  EXPECT_EQ(stored.size(), model.size());
  EXPECT_TRUE(stored == model);
}

TEST_F(SqliteDatabaseTest, FailingUnitRollsBackAloneInItsBatch) {
  Open({});
  // Queue several units at once so that they share a commit; the middle one fails after writing.
  std::vector<Status> results(3);
  std::mutex mu;
  std::condition_variable cv;
  int done = 0;
  for (int i = 0; i < 3; ++i) {
    db_->Write(
        [i](SqlTx& tx) -> Status {
          auto r = tx.Exec("INSERT INTO rows (n, payload) VALUES (?, 'p')", {int64_t{i}});
          if (!r.ok()) return r.status();
          return i == 1 ? Status::Internal("unit 1 fails after its insert") : Status::Ok();
        },
        [&, i](Status st) {
          std::lock_guard<std::mutex> l(mu);
          results[i] = st;
          ++done;
          cv.notify_all();
        });
  }
  {
    std::unique_lock<std::mutex> l(mu);
    cv.wait(l, [&] { return done == 3; });
  }
  EXPECT_TRUE(results[0].ok());
  EXPECT_FALSE(results[1].ok());
  EXPECT_TRUE(results[2].ok());
  EXPECT_EQ(CountRows(), 2);
  // The same (prepared, reused) savepoint statements keep working after a rollback.
  ASSERT_TRUE(InsertRow(10, 1).ok());
  EXPECT_EQ(CountRows(), 3);
}

TEST_F(SqliteDatabaseTest, CheckpointsCopyTheWalIntoTheDatabaseWhileItRuns) {
  SqliteOptions options;
  options.checkpoint_pages = 16;  // 64 KiB
  Open(options);
  const uintmax_t before = FileSize(path());
  for (int i = 0; i < 200; ++i) ASSERT_TRUE(InsertRow(i, 2000).ok());
  // 400 KB of rows: the checkpointer (not a close) must have copied pages into the file.
  EXPECT_TRUE(Eventually([&] { return FileSize(path()) >= before + 200 * 2000; }))
      << "database file " << FileSize(path()) << " bytes, WAL " << FileSize(path() + "-wal");
  EXPECT_EQ(CountRows(), 200);
}

TEST_F(SqliteDatabaseTest, WalStaysBoundedUnderContinuousWrites) {
  SqliteOptions options;
  options.checkpoint_pages = 16;
  options.restart_pages = 32;
  options.wal_cap_pages = 64;  // 256 KiB
  Open(options);
  // 2,000 units of 4 KB each: 8 MB through the WAL, which must start over rather than grow.
  for (int i = 0; i < 2000; ++i) ASSERT_TRUE(InsertRow(i, 4000).ok());
  EXPECT_LT(FileSize(path() + "-wal"), uintmax_t{2} * 1024 * 1024);
  EXPECT_EQ(CountRows(), 2000);
  // Everything is in the database file once it is closed and reopened.
  db_->Close();
  db_ = std::move(SqliteDatabase::Open({path(), "NORMAL"})).value();
  EXPECT_EQ(CountRows(), 2000);
}

TEST_F(SqliteDatabaseTest, TheWalStartsOverWithoutTheWriterCheckpointingWhenItLeavesTime) {
  SqliteOptions options;
  options.checkpoint_pages = 16;
  options.restart_pages = 32;
  options.wal_cap_pages = 1 << 20;  // never forced
  Open(options);
  // One unit of about 50 pages: its commit leaves a WAL past restart_pages and wakes the
  // checkpointer, which copies all of it (nothing is written meanwhile).
  ASSERT_TRUE(db_->WriteSync([](SqlTx& tx) {
                   for (int i = 0; i < 50; ++i) {
                     auto r = tx.Exec("INSERT INTO rows (n, payload) VALUES (?, ?)",
                                      {int64_t{i}, std::string(4000, 'x')});
                     if (!r.ok()) return r.status();
                   }
                   return Status::Ok();
                 }).ok());
  ASSERT_TRUE(Eventually([&] { return db_->checkpoint_counts().checkpointer_passes >= 1; }));
  const uintmax_t wal = FileSize(path() + "-wal");
  // Later writes start the WAL over from its beginning (it does not grow) without the writer
  // running a checkpoint of its own before them.
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(InsertRow(100 + i, 100).ok());
  EXPECT_EQ(db_->checkpoint_counts().writer_checkpoints, 0);
  EXPECT_EQ(FileSize(path() + "-wal"), wal);
  EXPECT_EQ(CountRows(), 55);
}

}  // namespace
}  // namespace lastcall
