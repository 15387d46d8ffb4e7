// Exact money: parsing, formatting and checked arithmetic on scale-4 integer units. See money.h.
#include "domain/money.h"

#include "common/text.h"

#include <cstdint>
#include <string>
#include <string_view>

namespace lastcall {
namespace {

bool IsAsciiSpace(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

bool IsDigit(char c) { return c >= '0' && c <= '9'; }


Status InvalidAmount(std::string_view text) {
  return Status::Unprocessable("invalid_amount", "invalid amount " + QuoteForMessage(text));
}

Status OutOfRange(std::string_view text) {
  return Status::Unprocessable(
      "amount_out_of_range",
      "amount out of range " + QuoteForMessage(text) +
          " (at most 4 decimals and an absolute value of at most 100000000000000)");
}

}  // namespace

Result<Money> Money::Parse(std::string_view text) {
  std::string_view s = text;
  while (!s.empty() && IsAsciiSpace(s.front())) s.remove_prefix(1);
  while (!s.empty() && IsAsciiSpace(s.back())) s.remove_suffix(1);

  bool negative = false;
  if (!s.empty() && (s.front() == '+' || s.front() == '-')) {
    negative = s.front() == '-';
    s.remove_prefix(1);
  }

  // Syntax first (digits, optionally '.' and at least one digit), so that garbage is always
  // "invalid_amount" whatever its length; range second.
  size_t i = 0;
  while (i < s.size() && IsDigit(s[i])) ++i;
  const std::string_view whole_digits = s.substr(0, i);
  std::string_view frac_digits;
  if (whole_digits.empty()) return InvalidAmount(text);  // "", "-", ".5"
  if (i < s.size()) {
    if (s[i] != '.') return InvalidAmount(text);
    size_t j = i + 1;
    while (j < s.size() && IsDigit(s[j])) ++j;
    if (j != s.size()) return InvalidAmount(text);
    frac_digits = s.substr(i + 1);
    if (frac_digits.empty()) return InvalidAmount(text);  // "1."
  }
  if (frac_digits.size() > static_cast<size_t>(kScale)) return OutOfRange(text);

  // Accumulate the whole part, stopping as soon as it exceeds kMaxWhole: no overflow however
  // many digits there are (leading zeros are harmless).
  int64_t whole = 0;
  for (char c : whole_digits) {
    whole = whole * 10 + (c - '0');
    if (whole > kMaxWhole) return OutOfRange(text);
  }
  int64_t frac = 0;
  for (int k = 0; k < kScale; ++k) {
    frac = frac * 10 + (k < static_cast<int>(frac_digits.size()) ? frac_digits[k] - '0' : 0);
  }
  if (whole == kMaxWhole && frac != 0) return OutOfRange(text);

  // |units| <= 10^18 < INT64_MAX, so this cannot overflow. "-0.00" yields 0.
  const int64_t units = whole * kUnitsPerWhole + frac;
  return Money(negative ? -units : units);
}

std::string Money::ToString() const {
  // Work on the magnitude as uint64 so INT64_MIN needs no special case.
  const bool negative = units_ < 0;
  const uint64_t magnitude =
      negative ? uint64_t{0} - static_cast<uint64_t>(units_) : static_cast<uint64_t>(units_);
  const uint64_t whole = magnitude / static_cast<uint64_t>(kUnitsPerWhole);
  uint64_t frac = magnitude % static_cast<uint64_t>(kUnitsPerWhole);

  char digits[kScale];
  for (int k = kScale - 1; k >= 0; --k) {
    digits[k] = static_cast<char>('0' + frac % 10);
    frac /= 10;
  }
  int shown = kScale;
  while (shown > 2 && digits[shown - 1] == '0') --shown;

  std::string out;
  if (negative) out += '-';
  out += std::to_string(whole);
  out += '.';
  out.append(digits, static_cast<size_t>(shown));
  return out;
}

bool Money::CheckedAdd(Money a, Money b, Money* out) {
  int64_t sum = 0;
  if (__builtin_add_overflow(a.units_, b.units_, &sum)) return false;
  *out = Money(sum);
  return true;
}

bool IsValidIsoDate(std::string_view s) {
  if (s.size() != 10 || s[4] != '-' || s[7] != '-') return false;
  for (size_t k : {0u, 1u, 2u, 3u, 5u, 6u, 8u, 9u}) {
    if (!IsDigit(s[k])) return false;
  }
  auto num = [&](size_t pos, size_t len) {
    int v = 0;
    for (size_t k = pos; k < pos + len; ++k) v = v * 10 + (s[k] - '0');
    return v;
  };
  const int year = num(0, 4);
  const int month = num(5, 2);
  const int day = num(8, 2);
  if (year < 1900 || year > 2999 || month < 1 || month > 12 || day < 1) return false;
  static constexpr int kDays[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  const bool leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
  const int max_day = (month == 2 && leap) ? 29 : kDays[month - 1];
  return day <= max_day;
}

}  // namespace lastcall
