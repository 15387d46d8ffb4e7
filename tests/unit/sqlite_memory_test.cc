// The process-wide SQLite memory budget (store/sqlite/sqlite_memory.h): Debian's libsqlite3 keeps
// the memory statistics the soft heap limit needs, and with the limit every connection's page
// cache together stays within it after a workload that fills them far past it without the limit.
#include "store/sqlite/sqlite_memory.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "common/ids.h"
#include "store/sql.h"
#include "store/sqlite/sqlite_database.h"

namespace lastcall {
namespace {

namespace fs = std::filesystem;

constexpr int64_t kMiB = 1024 * 1024;
constexpr int64_t kBudget = 8 * kMiB;
constexpr int kRows = 12000;            // 2 KiB each: about 30 MiB of pages with the index
constexpr int kRowsPerUnit = 100;
constexpr size_t kPayload = 2048;

class SqliteMemoryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("lastcall-sqlite-memory-" + RandomHex(6));
    fs::create_directories(dir_);
  }
  void TearDown() override {
    EXPECT_TRUE(SetSqliteMemoryBudget(0).ok());  // the limit is process-wide: leave none behind
    fs::remove_all(dir_);
  }

  // Fills a database with the default 64 MiB writer cache (and 8 MiB per reader) far past
  // kBudget: kRows rows written in units of kRowsPerUnit, then read whole by four readers at
  // once. Returns SQLite's memory while the database is still open (closing frees the caches),
  // with the high-water mark of the workload; checks every row reads back.
  SqliteMemoryUsage Workload() {
    SqliteOptions options;
    options.path = (dir_ / "db").string();
    options.synchronous = "NORMAL";
    auto opened = SqliteDatabase::Open(options);
    EXPECT_TRUE(opened.ok());
    if (!opened.ok()) return {};
    auto db = std::move(opened).value();
    EXPECT_TRUE(db->WriteSync([](SqlTx& tx) {
                    auto r = tx.Exec("CREATE TABLE rows (n INTEGER PRIMARY KEY, k TEXT, payload TEXT)");
                    if (!r.ok()) return r.status();
                    r = tx.Exec("CREATE INDEX rows_k ON rows (k)");
                    return r.ok() ? Status::Ok() : r.status();
                  }).ok());
    SqliteMemory(/*reset_highwater=*/true);
    for (int first = 0; first < kRows; first += kRowsPerUnit) {
      Status written = db->WriteSync([first](SqlTx& tx) {
        for (int n = first; n < first + kRowsPerUnit; ++n) {
          auto r = tx.Exec("INSERT INTO rows (n, k, payload) VALUES (?, ?, ?)",
                           {int64_t{n}, RandomHex(16), std::string(kPayload, 'x')});
          if (!r.ok()) return r.status();
        }
        return Status::Ok();
      });
      EXPECT_TRUE(written.ok()) << written.message();
      if (!written.ok()) return {};
    }
    std::vector<std::thread> readers;
    std::vector<int64_t> counted(4, -1);
    for (size_t i = 0; i < counted.size(); ++i) {
      readers.emplace_back([&db, &counted, i] {
        int64_t rows = 0;
        Status s = db->Read([&rows](SqlTx& tx) {
          // By the index first (random order), then the table: touches every page of both.
          return tx.Query("SELECT k, length(payload) FROM rows INDEXED BY rows_k ORDER BY k", {},
                          [&rows](const SqlRow& row) {
                            if (row.Int(1) == static_cast<int64_t>(kPayload)) ++rows;
                            return true;
                          });
        });
        counted[i] = s.ok() ? rows : -1;
      });
    }
    for (auto& t : readers) t.join();
    for (int64_t c : counted) EXPECT_EQ(c, kRows);
    SqliteMemoryUsage usage = SqliteMemory();
    RecordProperty("sqliteMemoryUsedBytes", std::to_string(usage.used_bytes));
    RecordProperty("sqliteMemoryHighwaterBytes", std::to_string(usage.highwater_bytes));
    db->Close();
    return usage;
  }

  fs::path dir_;
};

TEST_F(SqliteMemoryTest, DebianSqliteKeepsTheStatisticsTheLimitNeeds) {
  ASSERT_TRUE(SetSqliteMemoryBudget(kBudget).ok());
  EXPECT_EQ(SqliteMemoryBudget(), kBudget);
  ASSERT_TRUE(SetSqliteMemoryBudget(0).ok());
  EXPECT_EQ(SqliteMemoryBudget(), 0);
}

TEST_F(SqliteMemoryTest, WithoutABudgetTheWorkloadOutgrowsIt) {
  ASSERT_TRUE(SetSqliteMemoryBudget(0).ok());
  SqliteMemoryUsage usage = Workload();
  // The caches keep what they touched: about the whole database in the writer's cache.
  EXPECT_GT(usage.used_bytes, 3 * kBudget) << usage.used_bytes;
}

TEST_F(SqliteMemoryTest, BudgetHoldsAfterAWorkloadThatWouldExceedIt) {
  ASSERT_TRUE(SetSqliteMemoryBudget(kBudget).ok());
  SqliteMemoryUsage usage = Workload();
  // Soft: a unit's dirty pages (about 60 here), the six connections' statements and schemas
  // and the caches' hash tables go past it (0.8 MiB when written).
  EXPECT_LE(usage.used_bytes, kBudget + kBudget / 4) << usage.used_bytes;
  EXPECT_LE(usage.highwater_bytes, kBudget + kBudget / 4) << usage.highwater_bytes;
  EXPECT_GT(usage.used_bytes, kBudget / 2) << "the caches were used at all";
}

TEST(ValuesRowsTest, GroupsPlaceholdersIntoRows) {
  EXPECT_EQ(ValuesRows(1, 1), "(?)");
  EXPECT_EQ(ValuesRows(3, 1), "(?, ?, ?)");
  EXPECT_EQ(ValuesRows(2, 3), "(?, ?), (?, ?), (?, ?)");
}

TEST(PaddedInListTest, PadsToThePowerOfTwoWithTheLastValue) {
  std::set<std::string> texts;
  for (int64_t n = 1; n <= 1000; ++n) {
    SqlParams values;
    for (int64_t i = 0; i < n; ++i) values.emplace_back(i);
    std::string in = PaddedInList(values);
    const auto size = static_cast<int64_t>(values.size());
    EXPECT_GE(size, n);
    EXPECT_LT(size, 2 * n + 1);
    EXPECT_EQ(size & (size - 1), 0) << size;
    EXPECT_EQ(std::count(in.begin(), in.end(), '?'), size);
    for (int64_t i = 0; i < size; ++i) EXPECT_EQ(std::get<int64_t>(values[i]), std::min(i, n - 1));
    texts.insert(in);
  }
  EXPECT_EQ(texts.size(), 11u);  // 1, 2, 4, ..., 1024
}

// Regression (soak): retention deleted each batch of finished events with an IN list of the
// batch's own length, and the writer connection kept a prepared statement for every length it
// had seen, so SQLite's memory outside its page caches grew for as long as the service ran.
TEST_F(SqliteMemoryTest, InListsOfEveryLengthKeepFewStatements) {
  SqliteOptions options;
  options.path = (dir_ / "db").string();
  options.synchronous = "NORMAL";
  auto db = std::move(SqliteDatabase::Open(options)).value();
  ASSERT_TRUE(db->WriteSync([](SqlTx& tx) {
                  auto r = tx.Exec("CREATE TABLE rows (id TEXT PRIMARY KEY)");
                  return r.ok() ? Status::Ok() : r.status();
                }).ok());
  // SQLite's memory after deleting with lists of every length from 1 to 300, padded or not.
  auto grown = [&db](bool padded, const std::string& prefix) {
    const int64_t before = SqliteMemory().used_bytes;
    for (int n = 1; n <= 300; ++n) {
      Status s = db->WriteSync([&](SqlTx& tx) {
        SqlParams ids;
        std::string in = "(";
        for (int i = 0; i < n; ++i) {
          ids.emplace_back(prefix + std::to_string(i));
          in += i == 0 ? "?" : ", ?";
        }
        in += ")";
        if (padded) in = PaddedInList(ids);
        auto r = tx.Exec("DELETE FROM rows WHERE id IN " + in, ids);
        return r.ok() ? Status::Ok() : r.status();
      });
      EXPECT_TRUE(s.ok()) << s.message();
    }
    return SqliteMemory().used_bytes - before;
  };
  const int64_t unpadded = grown(false, "u");
  const int64_t padded = grown(true, "p");
  RecordProperty("unpaddedBytes", std::to_string(unpadded));
  RecordProperty("paddedBytes", std::to_string(padded));
  EXPECT_GT(unpadded, 2 * kMiB) << "the defect this guards against: a statement per length";
  EXPECT_LT(padded, unpadded / 8) << padded << " vs " << unpadded;
  db->Close();
}

}  // namespace
}  // namespace lastcall
