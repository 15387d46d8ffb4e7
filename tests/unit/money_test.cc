#include "domain/money.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <limits>
#include <string>

namespace lastcall {
namespace {

int64_t UnitsOf(std::string_view text) {
  Result<Money> m = Money::Parse(text);
  EXPECT_TRUE(m.ok()) << text << ": " << m.status().ToString();
  return m.ok() ? m->units() : -1;
}

std::string ErrorOf(std::string_view text) {
  Result<Money> m = Money::Parse(text);
  EXPECT_FALSE(m.ok()) << text << " parsed as " << (m.ok() ? m->ToString() : "");
  if (!m.ok()) {
    EXPECT_EQ(m.status().code(), Code::kUnprocessable);
  }
  return m.ok() ? "" : m.status().error();
}

TEST(MoneyParse, AcceptsPlainDecimals) {
  EXPECT_EQ(UnitsOf("0"), 0);
  EXPECT_EQ(UnitsOf("5"), 50000);
  EXPECT_EQ(UnitsOf("12.34"), 123400);
  EXPECT_EQ(UnitsOf("-12.34"), -123400);
  EXPECT_EQ(UnitsOf("+12.3"), 123000);
  EXPECT_EQ(UnitsOf("1.2345"), 12345);
  EXPECT_EQ(UnitsOf("0.0001"), 1);
  EXPECT_EQ(UnitsOf("-0.0001"), -1);
  EXPECT_EQ(UnitsOf("007.50"), 75000);
  EXPECT_EQ(UnitsOf("1.235"), 12350);
}

TEST(MoneyParse, SurroundingWhitespaceAllowed) {
  EXPECT_EQ(UnitsOf("  42.10 "), 421000);
  EXPECT_EQ(UnitsOf("\t-1\r\n"), -10000);
}

TEST(MoneyParse, NegativeZeroIsZero) {
  EXPECT_EQ(UnitsOf("-0.00"), 0);
  EXPECT_EQ(UnitsOf("-0"), 0);
  Result<Money> m = Money::Parse("-0.00");
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(*m, Money());
  EXPECT_EQ(m->ToString(), "0.00");
}

TEST(MoneyParse, RejectsMalformed) {
  for (const char* bad :
       {"",    " ",  "-",     "+",   ".5",  "-.5", "1.",   "-1.",   "1.2.3", "1,5",   "1,000.00",
        "1e5", "$5", "5 USD", "- 5", "+-5", "--5", "0x10", "1 000", "abc",   "12.3a", "١٢"}) {
    EXPECT_EQ(ErrorOf(bad), "invalid_amount") << "input: \"" << bad << "\"";
  }
}

TEST(MoneyParse, RejectsTooManyDecimals) {
  EXPECT_EQ(ErrorOf("1.23456"), "amount_out_of_range");
  EXPECT_EQ(ErrorOf("0.00000"), "amount_out_of_range");
}

TEST(MoneyParse, HugeValuesAreOutOfRangeNotUndefinedBehaviour) {
  EXPECT_EQ(ErrorOf("99999999999999999999999"), "amount_out_of_range");
  EXPECT_EQ(ErrorOf("-99999999999999999999999"), "amount_out_of_range");
  EXPECT_EQ(ErrorOf("9223372036854775808"), "amount_out_of_range");
  EXPECT_EQ(ErrorOf(std::string(5000, '9')), "amount_out_of_range");
  EXPECT_EQ(ErrorOf("100000000000000.0001"), "amount_out_of_range");
  EXPECT_EQ(ErrorOf("100000000000001"), "amount_out_of_range");
  // The limit itself is fine, as are many leading zeros.
  EXPECT_EQ(UnitsOf("100000000000000"), 1000000000000000000LL);
  EXPECT_EQ(UnitsOf("-100000000000000.0000"), -1000000000000000000LL);
  EXPECT_EQ(UnitsOf(std::string(100, '0') + "1.5"), 15000);
}

TEST(MoneyParse, GarbageWinsOverRange) {
  // Syntax is checked before range: a long non-number is invalid, not out of range.
  EXPECT_EQ(ErrorOf("99999999999999999999999x"), "invalid_amount");
}

TEST(MoneyParse, MessageQuotesTruncatedInput) {
  Result<Money> m = Money::Parse("12,5");
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().message(), "invalid amount \"12,5\"");

  const std::string long_input(100, 'x');
  m = Money::Parse(long_input);
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().message(), "invalid amount \"" + std::string(40, 'x') + "...\"");

  m = Money::Parse("99999999999999999999999");
  ASSERT_FALSE(m.ok());
  EXPECT_NE(m.status().message().find("\"99999999999999999999999\""), std::string::npos)
      << m.status().message();
}

TEST(MoneyToString, AtLeastTwoDecimals) {
  EXPECT_EQ(Money::Parse("5")->ToString(), "5.00");
  EXPECT_EQ(Money::Parse("-12.3")->ToString(), "-12.30");
  EXPECT_EQ(Money::Parse("1.2345")->ToString(), "1.2345");
  EXPECT_EQ(Money::Parse("1.2300")->ToString(), "1.23");
  EXPECT_EQ(Money::Parse("1.235")->ToString(), "1.235");
  EXPECT_EQ(Money::Parse("0")->ToString(), "0.00");
  EXPECT_EQ(Money::FromUnits(-1).ToString(), "-0.0001");
  EXPECT_EQ(Money::FromUnits(-100).ToString(), "-0.01");
  EXPECT_EQ(Money().ToString(), "0.00");
}

TEST(MoneyToString, ExtremeUnitsAreSafe) {
  EXPECT_EQ(Money::FromUnits(std::numeric_limits<int64_t>::min()).ToString(),
            "-922337203685477.5808");
  EXPECT_EQ(Money::FromUnits(std::numeric_limits<int64_t>::max()).ToString(),
            "922337203685477.5807");
  EXPECT_EQ(Money::FromUnits(std::numeric_limits<int64_t>::min() + 1).ToString(),
            "-922337203685477.5807");
}

TEST(MoneyToString, RoundTrips) {
  for (const char* s :
       {"0.00", "1.00", "-1.00", "0.01", "-0.01", "12.34", "-12.345", "1.2345",
        "100000000000000.00", "-100000000000000.00", "99999999999999.9999", "123456.78"}) {
    Result<Money> m = Money::Parse(s);
    ASSERT_TRUE(m.ok()) << s;
    EXPECT_EQ(m->ToString(), s);
    Result<Money> again = Money::Parse(m->ToString());
    ASSERT_TRUE(again.ok());
    EXPECT_EQ(*again, *m);
  }
  // Every units value in a band round-trips through its string.
  for (int64_t u = -30000; u <= 30000; u += 7) {
    const Money m = Money::FromUnits(u);
    Result<Money> back = Money::Parse(m.ToString());
    ASSERT_TRUE(back.ok()) << m.ToString();
    EXPECT_EQ(back->units(), u);
  }
}

TEST(MoneyCheckedAdd, AddsAndDetectsOverflow) {
  Money out = Money::FromUnits(777);
  ASSERT_TRUE(Money::CheckedAdd(*Money::Parse("1.10"), *Money::Parse("-2.25"), &out));
  EXPECT_EQ(out.ToString(), "-1.15");

  const Money max = Money::FromUnits(std::numeric_limits<int64_t>::max());
  const Money min = Money::FromUnits(std::numeric_limits<int64_t>::min());
  out = Money::FromUnits(777);
  EXPECT_FALSE(Money::CheckedAdd(max, Money::FromUnits(1), &out));
  EXPECT_EQ(out.units(), 777) << "out must be untouched on overflow";
  EXPECT_FALSE(Money::CheckedAdd(min, Money::FromUnits(-1), &out));
  EXPECT_FALSE(Money::CheckedAdd(min, min, &out));
  EXPECT_EQ(out.units(), 777);

  ASSERT_TRUE(Money::CheckedAdd(max, min, &out));
  EXPECT_EQ(out.units(), -1);
  ASSERT_TRUE(Money::CheckedAdd(max, Money(), &out));
  EXPECT_EQ(out, max);

  // Summing many maximal parsed amounts eventually overflows and is reported.
  const Money big = *Money::Parse("100000000000000");
  Money total;
  int added = 0;
  while (Money::CheckedAdd(total, big, &total)) ++added;
  EXPECT_EQ(added, 9);  // 9 * 10^18 fits in int64, 10 * 10^18 does not
}

TEST(MoneyCompare, Ordering) {
  EXPECT_TRUE(*Money::Parse("-1") < *Money::Parse("0.0001"));
  EXPECT_FALSE(*Money::Parse("2") < *Money::Parse("2.00"));
  EXPECT_TRUE(*Money::Parse("2") == *Money::Parse("2.0000"));
}

TEST(IsValidIsoDate, CalendarRules) {
  EXPECT_TRUE(IsValidIsoDate("2024-01-15"));
  EXPECT_TRUE(IsValidIsoDate("2024-02-29"));  // leap year
  EXPECT_FALSE(IsValidIsoDate("2023-02-29"));
  EXPECT_TRUE(IsValidIsoDate("2000-02-29"));   // divisible by 400
  EXPECT_FALSE(IsValidIsoDate("2100-02-29"));  // divisible by 100 only
  EXPECT_TRUE(IsValidIsoDate("2023-02-28"));
  EXPECT_TRUE(IsValidIsoDate("2024-12-31"));
  EXPECT_FALSE(IsValidIsoDate("2024-04-31"));
  EXPECT_TRUE(IsValidIsoDate("2024-04-30"));
  EXPECT_FALSE(IsValidIsoDate("2024-13-01"));
  EXPECT_FALSE(IsValidIsoDate("2024-00-10"));
  EXPECT_FALSE(IsValidIsoDate("2024-01-00"));
  EXPECT_FALSE(IsValidIsoDate("2024-01-32"));
}

TEST(IsValidIsoDate, YearRange) {
  EXPECT_TRUE(IsValidIsoDate("1900-01-01"));
  EXPECT_FALSE(IsValidIsoDate("1899-12-31"));
  EXPECT_TRUE(IsValidIsoDate("2999-12-31"));
  EXPECT_FALSE(IsValidIsoDate("3000-01-01"));
  EXPECT_FALSE(IsValidIsoDate("0000-01-01"));
}

TEST(IsValidIsoDate, Shape) {
  for (const char* bad :
       {"", "2024-1-01", "2024-01-1", "24-01-01", "2024/01/01", "20240101", "2024-01-01T00:00:00",
        " 2024-01-01", "2024-01-01 ", "2024-0a-01", "+024-01-01", "2024--1-01", "2024-01-01\n"}) {
    EXPECT_FALSE(IsValidIsoDate(bad)) << bad;
  }
}

}  // namespace
}  // namespace lastcall
