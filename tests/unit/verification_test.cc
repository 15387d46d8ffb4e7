// FindResidue over a real SQLite store and blob folder: each place a deleted file's data could
// remain is found when planted there, and what may remain (tombstone, archive) is not residue.
#include "coordination/verification.h"

#include <gtest/gtest.h>

#include <filesystem>

#include "common/ids.h"
#include "store/schema.h"
#include "store/sqlite/sqlite_database.h"

namespace lastcall {
namespace {

namespace fs = std::filesystem;

class VerificationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("lastcall-verify-" + RandomHex(6));
    fs::create_directories(dir_);
    auto db = SqliteDatabase::Open({(dir_ / "db").string(), "NORMAL"});
    ASSERT_TRUE(db.ok());
    db_ = std::move(db).value();
    ASSERT_TRUE(Migrate(*db_).ok());
    auto blobs = FsBlobStore::Open((dir_ / "blobs").string());
    ASSERT_TRUE(blobs.ok());
    blobs_ = std::move(blobs).value();
  }
  void TearDown() override {
    db_->Close();
    fs::remove_all(dir_);
  }
  void Exec(const std::string& sql, const SqlParams& params) {
    ASSERT_TRUE(db_->WriteSync([&](SqlTx& tx) {
                      auto r = tx.Exec(sql, params);
                      return r.ok() ? Status::Ok() : r.status();
                    }).ok())
        << sql;
  }
  nlohmann::json Residue(const std::optional<std::string>& key) {
    nlohmann::json out;
    EXPECT_TRUE(db_->Read([&](SqlTx& tx) {
                      auto r = FindResidue(tx, *blobs_, file_, key);
                      if (!r.ok()) return r.status();
                      out = *r;
                      return Status::Ok();
                    }).ok());
    return out;
  }

  fs::path dir_;
  std::unique_ptr<SqliteDatabase> db_;
  std::unique_ptr<FsBlobStore> blobs_;
  std::string file_ = "0b6f0d3c-8f7e-4a53-9d0e-6a9f2d1c4b7a";
  std::string key_ = "1c7e1e4d-9f8e-4b64-ae1f-7baf3e2d5c8b";
};

TEST_F(VerificationTest, NothingLeftIsVerifiedAndWhatMayRemainIsNotResidue) {
  Exec("INSERT INTO tombstones (file_id, user_id, account_id, coordination_id, sha256, "
       "requested_at, deleted_at, outcome, transactions_deleted) VALUES (?, 'u', 'a', 'c', 'ff', 1, "
       "2, 'all_completed', 3)",
       {file_});
  Exec("INSERT INTO analytics_archive (user_id, file_id, coordination_id, month, category, "
       "total_units, count, archived_at) VALUES ('u', ?, 'c', '2024-01', 'x', 5, 1, 1)",
       {file_});
  EXPECT_EQ(Residue(key_), nlohmann::json::object());
}

TEST_F(VerificationTest, PlantedResidueIsFoundWherever) {
  Exec("INSERT INTO accounts (id, user_id, name, currency, created_at) VALUES ('a', 'u', 'n', "
       "'USD', 0)",
       {});
  Exec("INSERT INTO transactions (id, user_id, account_id, file_id, row_no, date, description, "
       "amount_units, currency) VALUES ('t1', 'u', 'a', ?, 1, '2024-01-01', 'd', 1, 'USD'), "
       "('t2', 'u', 'a', ?, 2, '2024-01-02', 'd', 1, 'USD')",
       {file_, file_});
  EXPECT_EQ(Residue(key_), (nlohmann::json{{"transactions", 2}}));
  Exec("INSERT INTO files (id, user_id, account_id, name, content_type, size_bytes, sha256, "
       "blob_key, transaction_count, status, uploaded_at, seq) VALUES (?, 'u', 'a', 'n', 't', 1, "
       "'ff', ?, 2, 'active', 0, 1)",
       {file_, key_});
  Exec("INSERT INTO analytics_file_totals (user_id, file_id, month, category, total_units, count) "
       "VALUES ('u', ?, '2024-01', 'x', 2, 2)",
       {file_});
  ASSERT_TRUE(blobs_->Put(key_, "date,amount\n").ok());
  EXPECT_EQ(Residue(key_), (nlohmann::json{{"transactions", 2},
                                           {"fileRow", 1},
                                           {"analyticsFileTotals", 1},
                                           {"content", true}}));
  // Without a known blob key the content cannot be looked for (and is not claimed).
  EXPECT_FALSE(Residue(std::nullopt).contains("content"));
}

}  // namespace
}  // namespace lastcall
