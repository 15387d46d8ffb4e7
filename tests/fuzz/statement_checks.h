// What every statement reader (CSV, OFX) promises about a parse result, checked by the CSV and
// OFX fuzz targets alike.
#pragma once

#include <string>

#include "fuzz_check.h"
#include "import/statement.h"

namespace lastcall::fuzz {

inline bool IsCurrency(const std::string& s) {
  return s.size() == 3 && s[0] >= 'A' && s[0] <= 'Z' && s[1] >= 'A' && s[1] <= 'Z' &&
         s[2] >= 'A' && s[2] <= 'Z';
}

// ok: every row has a real date, an amount in range that re-formats to itself, an upper-case
// currency or none, UTF-8 text, and rows come in file order. Error: kUnprocessable with one of
// the documented codes and a UTF-8 message (it goes into a JSON error body).
inline void CheckStatement(const Result<ParsedStatement>& r, const char* error_code) {
  if (!r.ok()) {
    const Status& st = r.status();
    FUZZ_CHECK(st.code() == Code::kUnprocessable, st.error() + ": " + st.message());
    FUZZ_CHECK(st.error() == error_code || st.error() == "empty_file", st.error());
    FUZZ_CHECK(IsUtf8(st.message()), "error message is not UTF-8");
    return;
  }
  FUZZ_CHECK(r->currency.empty() || IsCurrency(r->currency), r->currency);
  FUZZ_CHECK(r->transactions.size() <= 1000000, "more rows than the limit");
  int previous_line = 0;
  const int64_t limit = Money::kMaxWhole * Money::kUnitsPerWhole;
  for (const ParsedTransaction& t : r->transactions) {
    FUZZ_CHECK(t.line > previous_line, "rows out of file order");
    previous_line = t.line;
    FUZZ_CHECK(IsValidIsoDate(t.date), t.date);
    FUZZ_CHECK(t.amount.units() >= -limit && t.amount.units() <= limit, t.amount.ToString());
    auto again = Money::Parse(t.amount.ToString());
    FUZZ_CHECK(again.ok() && *again == t.amount, t.amount.ToString());
    FUZZ_CHECK(t.currency.empty() || IsCurrency(t.currency), t.currency);
    FUZZ_CHECK(IsUtf8(t.description) && IsUtf8(t.merchant) && IsUtf8(t.category),
               "text field is not UTF-8");
  }
}

}  // namespace lastcall::fuzz
