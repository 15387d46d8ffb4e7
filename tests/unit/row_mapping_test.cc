// RowMapping: one declaration gives the column list, the placeholders, the values and the reader,
// and they agree with each other through a real engine.
#include "store/row_mapping.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <string>

#include "common/ids.h"
#include "store/sqlite/sqlite_database.h"

namespace lastcall {
namespace {

namespace fs = std::filesystem;

enum class Color { kRed, kBlue };

struct Thing {
  std::string id;
  std::optional<std::string> note;
  int64_t count = 0;
  std::optional<int64_t> seen_at;
  bool flag = false;
  Money amount;
  Color color = Color::kRed;
};

const RowMapping<Thing>& Things() {
  static const RowMapping<Thing> m(
      {{"id", &Thing::id},
       {"note", &Thing::note},
       {"count", &Thing::count},
       {"seen_at", &Thing::seen_at},
       {"flag", &Thing::flag},
       {"amount_units", &Thing::amount},
       {"color", RowMapping<Thing>::Custom{
                     [](Thing& t, const SqlRow& r, size_t i) {
                       t.color = r.Text(i) == "blue" ? Color::kBlue : Color::kRed;
                     },
                     [](const Thing& t) {
                       return SqlValue(std::string(t.color == Color::kBlue ? "blue" : "red"));
                     }}}});
  return m;
}

TEST(RowMappingTest, ListsColumnsAndPlaceholdersInDeclarationOrder) {
  EXPECT_EQ(Things().columns(), "id, note, count, seen_at, flag, amount_units, color");
  EXPECT_EQ(Things().placeholders(), "?, ?, ?, ?, ?, ?, ?");
  EXPECT_EQ(Things().size(), 7u);
}

TEST(RowMappingTest, ValuesFollowTheColumnsWithNullForAbsentOptionals) {
  Thing t{"t1", std::nullopt, 3, 17, true, Money::FromUnits(-12345), Color::kBlue};
  SqlParams p = Things().Values(t);
  ASSERT_EQ(p.size(), 7u);
  EXPECT_EQ(std::get<std::string>(p[0]), "t1");
  EXPECT_TRUE(std::holds_alternative<SqlNull>(p[1]));
  EXPECT_EQ(std::get<int64_t>(p[2]), 3);
  EXPECT_EQ(std::get<int64_t>(p[3]), 17);
  EXPECT_EQ(std::get<int64_t>(p[4]), 1);
  EXPECT_EQ(std::get<int64_t>(p[5]), -12345);
  EXPECT_EQ(std::get<std::string>(p[6]), "blue");
}

TEST(RowMappingTest, ReadsFromAnOffsetSoAMappingCanFollowOtherColumns) {
  SqlRow row({SqlValue(int64_t{99}), SqlValue(std::string("t2")), SqlValue(std::string("hi")),
              SqlValue(int64_t{4}), SqlValue(SqlNull{}), SqlValue(int64_t{0}),
              SqlValue(int64_t{250}), SqlValue(std::string("red"))});
  Thing t = Things().Read(row, 1);
  EXPECT_EQ(t.id, "t2");
  EXPECT_EQ(t.note, "hi");
  EXPECT_EQ(t.count, 4);
  EXPECT_EQ(t.seen_at, std::nullopt);
  EXPECT_FALSE(t.flag);
  EXPECT_EQ(t.amount.units(), 250);
  EXPECT_EQ(t.color, Color::kRed);
}

class RowMappingEngineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("lastcall-rowmap-" + RandomHex(6));
    fs::create_directories(dir_);
    SqliteOptions options;
    options.path = (dir_ / "db").string();
    db_ = std::move(SqliteDatabase::Open(options)).value();
    ASSERT_TRUE(db_->WriteSync([](SqlTx& tx) {
                     auto r = tx.Exec(
                         "CREATE TABLE things (id TEXT PRIMARY KEY, note TEXT, count INTEGER, "
                         "seen_at INTEGER, flag INTEGER, amount_units INTEGER, color TEXT)");
                     return r.ok() ? Status::Ok() : r.status();
                   }).ok());
  }
  void TearDown() override {
    if (db_) db_->Close();
    fs::remove_all(dir_);
  }
  fs::path dir_;
  std::unique_ptr<SqliteDatabase> db_;
};

TEST_F(RowMappingEngineTest, WhatIsInsertedReadsBackEqualThroughOneAndAll) {
  Thing a{"a", "note a", 1, std::nullopt, true, Money::FromUnits(1), Color::kBlue};
  Thing b{"b", std::nullopt, 2, 1700000000000, false, Money::FromUnits(-99), Color::kRed};
  ASSERT_TRUE(db_->WriteSync([&](SqlTx& tx) {
                   for (const Thing* t : {&a, &b}) {
                     auto r = tx.Exec("INSERT INTO things (" + Things().columns() + ") VALUES (" +
                                          Things().placeholders() + ")",
                                      Things().Values(*t));
                     if (!r.ok()) return r.status();
                   }
                   return Status::Ok();
                 }).ok());
  ASSERT_TRUE(db_->Read([&](SqlTx& tx) {
                   auto one = Things().One(
                       tx, "SELECT " + Things().columns() + " FROM things WHERE id = ?", {"b"});
                   EXPECT_TRUE(one.ok());
                   EXPECT_TRUE(one->has_value());
                   const Thing& got = **one;
                   EXPECT_EQ(got.note, std::nullopt);
                   EXPECT_EQ(got.seen_at, 1700000000000);
                   EXPECT_FALSE(got.flag);
                   EXPECT_EQ(got.amount.units(), -99);
                   EXPECT_EQ(got.color, Color::kRed);

                   auto none = Things().One(
                       tx, "SELECT " + Things().columns() + " FROM things WHERE id = ?", {"zz"});
                   EXPECT_TRUE(none.ok());
                   EXPECT_FALSE(none->has_value());

                   auto all = Things().All(
                       tx, "SELECT " + Things().columns() + " FROM things ORDER BY id", {});
                   EXPECT_TRUE(all.ok());
                   EXPECT_EQ(all->size(), 2u);
                   EXPECT_EQ((*all)[0].id, "a");
                   EXPECT_EQ((*all)[0].note, "note a");
                   EXPECT_TRUE((*all)[0].flag);
                   EXPECT_EQ((*all)[0].color, Color::kBlue);
                   EXPECT_EQ((*all)[1].id, "b");
                   return Status::Ok();
                 }).ok());
}

TEST_F(RowMappingEngineTest, AQueryErrorIsReturnedNotThrown) {
  ASSERT_TRUE(db_->Read([&](SqlTx& tx) {
                   auto r = Things().All(tx, "SELECT " + Things().columns() + " FROM nowhere", {});
                   EXPECT_FALSE(r.ok());
                   return Status::Ok();
                 }).ok());
}

}  // namespace
}  // namespace lastcall
