#include "common/text.h"

#include <gtest/gtest.h>

#include <limits>

namespace lastcall {
namespace {

TEST(TextTest, IsValidUtf8) {
  EXPECT_TRUE(IsValidUtf8(""));
  EXPECT_TRUE(IsValidUtf8("statement.csv"));
  EXPECT_TRUE(IsValidUtf8("caf\xc3\xa9 \xf0\x9f\x92\xb0"));
  EXPECT_FALSE(IsValidUtf8("\xff"));
  EXPECT_FALSE(IsValidUtf8("\xc3\x28"));          // a lead byte without its continuation
  EXPECT_FALSE(IsValidUtf8("\xc0\xaf"));          // overlong '/'
  EXPECT_FALSE(IsValidUtf8("\xed\xa0\x80"));      // a surrogate
  EXPECT_FALSE(IsValidUtf8("\xf4\x90\x80\x80"));  // above U+10FFFF
  EXPECT_FALSE(IsValidUtf8("ok\xe2\x82"));        // cut at the end
}

TEST(TextTest, Utf8PrefixNeverCutsACharacter) {
  EXPECT_EQ(Utf8Prefix("abc", 5), "abc");
  EXPECT_EQ(Utf8Prefix("abcdef", 3), "abc");
  // "a" then a 4-byte character: 2, 3 or 4 bytes keep only "a".
  const std::string s = "a\xf0\x9f\x92\xb0z";
  EXPECT_EQ(Utf8Prefix(s, 2), "a");
  EXPECT_EQ(Utf8Prefix(s, 4), "a");
  EXPECT_EQ(Utf8Prefix(s, 5), "a\xf0\x9f\x92\xb0");
  EXPECT_TRUE(IsValidUtf8(Utf8Prefix(std::string(254, 'x') + "\xc3\xa9", 255)));
}

TEST(TextTest, ParseDecimalIsStrict) {
  EXPECT_EQ(ParseDecimal("0", 10), 0);
  EXPECT_EQ(ParseDecimal("500", 500), 500);
  EXPECT_EQ(ParseDecimal("1764316800000", std::numeric_limits<int64_t>::max()), 1764316800000);
  for (const char* bad : {"", " 5", "5 ", "+5", "-5", "1e3", "0x10", "501", "５",
                          "9999999999999999999999"}) {
    EXPECT_FALSE(ParseDecimal(bad, 500).has_value()) << bad;
  }
  EXPECT_FALSE(ParseDecimal(std::string_view("10\0", 3), 500).has_value());
}

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
