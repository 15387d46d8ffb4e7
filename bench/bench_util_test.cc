// The seeded dates' contract (bench_util.h SeedDate): what the benchmark's data shape promises.
#include <gtest/gtest.h>

#include <string>

#include "bench_util.h"

namespace bench {
namespace {

TEST(SeedDateTest, AStatementsRowsAreSuccessiveDaysFromTheFirstOf2019) {
  EXPECT_EQ(SeedDate(DateShape::kStatement, 0, 100, 10, 0), "2019-01-01");
  EXPECT_EQ(SeedDate(DateShape::kStatement, 0, 100, 10, 9), "2019-01-10");
  // Another user's first file covers the same days: accounts do not share an index range.
  EXPECT_EQ(SeedDate(DateShape::kStatement, 7, 100, 10, 0), "2019-01-01");
}

TEST(SeedDateTest, AUsersNextFileStartsTheDayAfterItsLastOneEnds) {
  // File 3 and file 103 belong to user 3 (of 100): its first and second statements.
  EXPECT_EQ(SeedDate(DateShape::kStatement, 3, 100, 10, 9), "2019-01-10");
  EXPECT_EQ(SeedDate(DateShape::kStatement, 103, 100, 10, 0), "2019-01-11");
  // Across a month's end and a leap day: the user's sixth statement is days 50 to 59.
  EXPECT_EQ(SeedDate(DateShape::kStatement, 503, 100, 10, 9), "2019-03-01");
  EXPECT_EQ(SeedDate(DateShape::kStatement, 0, 1, 1, 365 + 31 + 28), "2020-02-29");
}

TEST(SeedDateTest, ScatteredSpreadsEveryFileOverTheSameThreeMonths) {
  EXPECT_EQ(SeedDate(DateShape::kScattered, 0, 100, 10, 0), "2024-01-01");
  EXPECT_EQ(SeedDate(DateShape::kScattered, 0, 100, 10, 1), "2024-02-04");
  EXPECT_EQ(SeedDate(DateShape::kScattered, 100, 100, 10, 0), "2024-02-17");
  for (int f = 0; f < 300; ++f) {
    std::string d = SeedDate(DateShape::kScattered, f, 100, 10, f % 10);
    EXPECT_GE(d, "2024-01-01") << f;
    EXPECT_LE(d, "2024-03-28") << f;
  }
}

TEST(DateShapeTest, NamesAreTheCommandLineValues) {
  EXPECT_STREQ(DateShapeName(DateShape::kStatement), "statement");
  EXPECT_STREQ(DateShapeName(DateShape::kScattered), "scattered");
}

}  // namespace
}  // namespace bench
