// Money::Parse, Money::ToString, Money::CheckedAdd and IsValidIsoDate (src/domain/money.cc):
// the amount and date syntax every import and request goes through.
// Properties: a parsed amount re-formats to text that parses back to the same value, within the
// documented range; a rejected amount gets one of the two documented errors with a readable
// message; Parse agrees with an independent reading of the grammar; CheckedAdd agrees with
// 128-bit arithmetic; IsValidIsoDate agrees with std::chrono's calendar.
#include <chrono>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include "domain/money.h"
#include "fuzz_check.h"

namespace {

using lastcall::Money;

bool IsSpace(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }
bool IsDigit(char c) { return c >= '0' && c <= '9'; }

// The grammar of money.h written independently: [+-]? digit+ ('.' digit+)? inside ASCII space.
bool MatchesGrammar(std::string_view s) {
  while (!s.empty() && IsSpace(s.front())) s.remove_prefix(1);
  while (!s.empty() && IsSpace(s.back())) s.remove_suffix(1);
  if (!s.empty() && (s[0] == '+' || s[0] == '-')) s.remove_prefix(1);
  size_t dot = s.find('.');
  std::string_view whole = s.substr(0, dot);
  if (whole.empty()) return false;
  for (char c : whole) if (!IsDigit(c)) return false;
  if (dot == std::string_view::npos) return true;
  std::string_view frac = s.substr(dot + 1);
  if (frac.empty()) return false;
  for (char c : frac) if (!IsDigit(c)) return false;
  return true;
}

void CheckAmount(std::string_view text) {
  auto parsed = Money::Parse(text);
  const bool grammatical = MatchesGrammar(text);
  if (!parsed.ok()) {
    const auto& st = parsed.status();
    FUZZ_CHECK(st.code() == lastcall::Code::kUnprocessable, st.message());
    FUZZ_CHECK(st.error() == "invalid_amount" || st.error() == "amount_out_of_range", st.error());
    // Syntax is judged before range: garbage is never called out of range, and vice versa.
    FUZZ_CHECK((st.error() == "invalid_amount") == !grammatical, st.error());
    FUZZ_CHECK(lastcall::fuzz::IsUtf8(st.message()), "message is not UTF-8");
    return;
  }
  FUZZ_CHECK(grammatical, "accepted text outside the grammar");
  const Money m = *parsed;
  const int64_t limit = Money::kMaxWhole * Money::kUnitsPerWhole;
  FUZZ_CHECK(m.units() >= -limit && m.units() <= limit, m.ToString());
  const std::string shown = m.ToString();
  auto again = Money::Parse(shown);
  FUZZ_CHECK(again.ok(), shown);
  FUZZ_CHECK(*again == m, shown);
  FUZZ_CHECK(again->ToString() == shown, shown);
  // At least two decimals, and no trailing zero past the second.
  const size_t dot = shown.find('.');
  FUZZ_CHECK(dot != std::string::npos && shown.size() - dot - 1 >= 2, shown);
  FUZZ_CHECK(shown.size() - dot - 1 == 2 || shown.back() != '0', shown);
}

void CheckAdd(int64_t a, int64_t b) {
  Money sum = Money::FromUnits(7);
  const bool fits = Money::CheckedAdd(Money::FromUnits(a), Money::FromUnits(b), &sum);
  const __int128 exact = static_cast<__int128>(a) + b;
  const bool representable = exact >= INT64_MIN && exact <= INT64_MAX;
  FUZZ_CHECK(fits == representable, "CheckedAdd overflow decision");
  if (fits) FUZZ_CHECK(sum.units() == static_cast<int64_t>(exact), "CheckedAdd sum");
  if (!fits) FUZZ_CHECK(sum.units() == 7, "CheckedAdd wrote its output on overflow");
  // ToString handles every int64, INT64_MIN included, and round-trips inside the parse range.
  const std::string shown = Money::FromUnits(a).ToString();
  const int64_t limit = Money::kMaxWhole * Money::kUnitsPerWhole;
  if (a >= -limit && a <= limit) {
    auto back = Money::Parse(shown);
    FUZZ_CHECK(back.ok() && back->units() == a, shown);
  }
}

void CheckDate(std::string_view s) {
  bool expected = false;
  if (s.size() == 10 && s[4] == '-' && s[7] == '-') {
    bool digits = true;
    for (size_t k : {0, 1, 2, 3, 5, 6, 8, 9}) digits = digits && IsDigit(s[k]);
    if (digits) {
      const int y = std::stoi(std::string(s.substr(0, 4)));
      const unsigned m = static_cast<unsigned>(std::stoi(std::string(s.substr(5, 2))));
      const unsigned d = static_cast<unsigned>(std::stoi(std::string(s.substr(8, 2))));
      const std::chrono::year_month_day ymd{std::chrono::year{y}, std::chrono::month{m},
                                            std::chrono::day{d}};
      expected = y >= 1900 && y <= 2999 && ymd.ok();
    }
  }
  FUZZ_CHECK(lastcall::IsValidIsoDate(s) == expected, std::string(s));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  CheckAmount(text);
  CheckDate(text);
  if (size >= 16) {
    int64_t a = 0, b = 0;
    std::memcpy(&a, data, 8);
    std::memcpy(&b, data + 8, 8);
    CheckAdd(a, b);
  }
  return 0;
}
