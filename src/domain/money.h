// Exact money. An amount is a signed 64-bit count of 1/10,000ths of a currency unit (scale 4), so
// every amount a bank statement carries (2 or 3 decimals) is exact and no floating point is ever
// involved. Amounts are limited to |amount| <= 10^14 units of currency at parse time; sums use
// checked arithmetic and report overflow instead of wrapping.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "common/status.h"

namespace lastcall {

class Money {
 public:
  static constexpr int kScale = 4;
  static constexpr int64_t kUnitsPerWhole = 10000;
  static constexpr int64_t kMaxWhole = 100000000000000LL;  // 10^14

  Money() = default;
  static Money FromUnits(int64_t units) { return Money(units); }

  // Parses a signed decimal: optional leading '+' or '-', digits, optional '.' and 1..4 digits.
  // Surrounding ASCII whitespace is allowed; nothing else is (no thousands separators, no
  // exponent, no currency symbol). Errors: kUnprocessable "invalid_amount" with a message that
  // quotes the input (truncated to 40 chars); more than 4 decimals or |value| > kMaxWhole is
  // kUnprocessable "amount_out_of_range".
  static Result<Money> Parse(std::string_view text);

  // "-12.34", "0.00", "1.235": at least two decimals, more only when they are not zero.
  std::string ToString() const;

  int64_t units() const { return units_; }

  // a + b, or false (out untouched) when the sum does not fit in int64.
  [[nodiscard]] static bool CheckedAdd(Money a, Money b, Money* out);

  friend bool operator==(Money a, Money b) { return a.units_ == b.units_; }
  friend bool operator<(Money a, Money b) { return a.units_ < b.units_; }

 private:
  explicit Money(int64_t units) : units_(units) {}
  int64_t units_ = 0;
};

// True when s is a real calendar date written YYYY-MM-DD with a year in 1900..2999.
bool IsValidIsoDate(std::string_view s);

}  // namespace lastcall
