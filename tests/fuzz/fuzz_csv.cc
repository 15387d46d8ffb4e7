// ParseCsv (src/import/csv_reader.cc) on arbitrary bytes, and DetectFormat on the same bytes.
// Properties: see CheckStatement; parsing is deterministic; a statement that parses still parses
// to the same rows when its line ends are CRLF instead of LF (outside quoted fields nothing else
// changes).
#include <cstdint>
#include <string>
#include <string_view>

#include "import/statement.h"
#include "statement_checks.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  auto r = lastcall::ParseCsv(bytes);
  lastcall::fuzz::CheckStatement(r, "invalid_csv");
  auto again = lastcall::ParseCsv(bytes);
  FUZZ_CHECK(again.ok() == r.ok(), "parse is not deterministic");
  if (r.ok()) {
    FUZZ_CHECK(again->transactions.size() == r->transactions.size(), "row count differs");
    for (size_t i = 0; i < r->transactions.size(); ++i) {
      const auto& a = r->transactions[i];
      const auto& b = again->transactions[i];
      FUZZ_CHECK(a.line == b.line && a.date == b.date && a.amount == b.amount &&
                     a.description == b.description && a.currency == b.currency &&
                     a.merchant == b.merchant && a.category == b.category,
                 "row differs between two parses");
    }
  } else {
    FUZZ_CHECK(again.status().message() == r.status().message(), "error differs");
  }
  (void)lastcall::DetectFormat("statement.csv", "text/csv", bytes);
  return 0;
}
