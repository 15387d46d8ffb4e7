#include "common/text.h"

#include <gtest/gtest.h>

namespace lastcall {
namespace {

TEST(QuoteForMessage, QuotesAndReplacesControlCharactersAndQuotes) {
  EXPECT_EQ(QuoteForMessage("12,5"), "\"12,5\"");
  EXPECT_EQ(QuoteForMessage("a\"b\nc"), "\"a?b?c\"");
}

TEST(QuoteForMessage, KeepsWellFormedUtf8) {
  EXPECT_EQ(QuoteForMessage("caf\xC3\xA9 \xE2\x82\xAC"), "\"caf\xC3\xA9 \xE2\x82\xAC\"");
}

// Found by fuzz_money: an amount holding a stray byte such as 0xC7 was quoted as is, so the
// error message (sent in the JSON error body, written to the log) was not valid UTF-8.
TEST(QuoteForMessage, ReplacesBytesThatAreNotUtf8RegressionFuzzMoney) {
  EXPECT_EQ(QuoteForMessage("10000\xC7" "000.0001"), "\"10000?000.0001\"");
  EXPECT_EQ(QuoteForMessage("\xFF\xC3"), "\"??\"");  // a lone lead byte at the end too
  EXPECT_EQ(QuoteForMessage("\xED\xA0\x80"), "\"???\"");  // an encoded surrogate
}

TEST(QuoteForMessage, CutsLongInputOutsideACharacter) {
  std::string text(39, 'a');
  text += "\xC3\xA9zzzz";
  EXPECT_EQ(QuoteForMessage(text), "\"" + std::string(39, 'a') + "...\"");
}

}  // namespace
}  // namespace lastcall
