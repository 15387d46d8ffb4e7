#include <gtest/gtest.h>

#include <string>

#include "import/statement.h"

namespace lastcall {
namespace {

ParsedStatement ParseOk(std::string_view csv) {
  Result<ParsedStatement> r = ParseCsv(csv);
  EXPECT_TRUE(r.ok()) << r.status().ToString();
  return r.ok() ? std::move(r).value() : ParsedStatement();
}

// The message of a parse that must fail with invalid_csv.
std::string CsvErrorOf(std::string_view csv) {
  Result<ParsedStatement> r = ParseCsv(csv);
  EXPECT_FALSE(r.ok());
  if (r.ok()) return "";
  EXPECT_EQ(r.status().code(), Code::kUnprocessable);
  EXPECT_EQ(r.status().error(), "invalid_csv") << r.status().message();
  return r.status().message();
}

TEST(ParseCsv, BasicRows) {
  ParsedStatement s = ParseOk(
      "date,description,amount,currency,merchant,category\n"
      "2024-01-15,Coffee,-4.50,usd,Blue Bottle,Food\n"
      "2024-01-16,Salary,2500,,,\n");
  ASSERT_EQ(s.transactions.size(), 2u);
  const ParsedTransaction& a = s.transactions[0];
  EXPECT_EQ(a.line, 2);
  EXPECT_EQ(a.date, "2024-01-15");
  EXPECT_EQ(a.description, "Coffee");
  EXPECT_EQ(a.amount.ToString(), "-4.50");
  EXPECT_EQ(a.currency, "USD");
  EXPECT_EQ(a.merchant, "Blue Bottle");
  EXPECT_EQ(a.category, "Food");
  const ParsedTransaction& b = s.transactions[1];
  EXPECT_EQ(b.line, 3);
  EXPECT_EQ(b.amount.units(), 25000000);
  EXPECT_EQ(b.currency, "");
  EXPECT_EQ(b.merchant, "");
  EXPECT_EQ(b.category, "");
  EXPECT_EQ(s.currency, "");
}

TEST(ParseCsv, HeaderMatchingIsCaseInsensitiveTrimmedAndIgnoresUnknownColumns) {
  ParsedStatement s = ParseOk(
      "  Amount , Ref , DATE,Description  ,Balance\n"
      "12.00,R1,2024-03-01,Refund,100.00\n");
  ASSERT_EQ(s.transactions.size(), 1u);
  EXPECT_EQ(s.transactions[0].amount.ToString(), "12.00");
  EXPECT_EQ(s.transactions[0].date, "2024-03-01");
  EXPECT_EQ(s.transactions[0].description, "Refund");
}

TEST(ParseCsv, QuotedFieldsWithCommasNewlinesAndDoubledQuotes) {
  ParsedStatement s = ParseOk(
      "date,description,amount,merchant\n"
      "2024-01-15,\"Dinner, with \"\"friends\"\"\",-80.00,\"Joe's\nDiner\"\n"
      "2024-01-16,\"multi\nline\nmemo\",1.00,x\n"
      "2024-01-17,  \"  padded inside kept  \"  ,2.00,\"\"\n");
  ASSERT_EQ(s.transactions.size(), 3u);
  EXPECT_EQ(s.transactions[0].description, "Dinner, with \"friends\"");
  EXPECT_EQ(s.transactions[0].merchant, "Joe's\nDiner");
  EXPECT_EQ(s.transactions[0].line, 2);
  // The record starting on line 4 is reported as line 4 even though the previous record spans
  // lines 2-3.
  EXPECT_EQ(s.transactions[1].line, 4);
  EXPECT_EQ(s.transactions[1].description, "multi\nline\nmemo");
  EXPECT_EQ(s.transactions[2].line, 7);
  EXPECT_EQ(s.transactions[2].description, "  padded inside kept  ");
  EXPECT_EQ(s.transactions[2].merchant, "");
}

TEST(ParseCsv, TrimsSpacesAroundUnquotedFields) {
  ParsedStatement s = ParseOk("date,description,amount\n  2024-01-15 ,  Two words  ,\t-1.5 \n");
  ASSERT_EQ(s.transactions.size(), 1u);
  EXPECT_EQ(s.transactions[0].date, "2024-01-15");
  EXPECT_EQ(s.transactions[0].description, "Two words");
  EXPECT_EQ(s.transactions[0].amount.ToString(), "-1.50");
}

TEST(ParseCsv, CrlfBomAndBlankLines) {
  ParsedStatement s = ParseOk(
      "\xEF\xBB\xBF"
      "date,description,amount\r\n"
      "\r\n"
      "2024-01-15,\"a\r\nb\",1.00\r\n"
      "   \r\n"
      "2024-01-16,c,2.00\r\n"
      "\r\n");
  ASSERT_EQ(s.transactions.size(), 2u);
  EXPECT_EQ(s.transactions[0].line, 3);
  EXPECT_EQ(s.transactions[0].description, "a\r\nb");
  EXPECT_EQ(s.transactions[1].line, 6);
  EXPECT_EQ(s.transactions[1].amount.ToString(), "2.00");
}

TEST(ParseCsv, LastLineWithoutNewline) {
  ParsedStatement s = ParseOk("date,description,amount\n2024-01-15,x,1");
  ASSERT_EQ(s.transactions.size(), 1u);
  EXPECT_EQ(s.transactions[0].amount.ToString(), "1.00");
}

TEST(ParseCsv, Utf8TextIsKept) {
  ParsedStatement s = ParseOk("date,description,amount\n2024-01-15,Café Lumière ☕ 😀,1.00\n");
  ASSERT_EQ(s.transactions.size(), 1u);
  EXPECT_EQ(s.transactions[0].description, "Café Lumière ☕ 😀");
}

TEST(ParseCsv, EmptyInput) {
  Result<ParsedStatement> r = ParseCsv("");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kUnprocessable);
  EXPECT_EQ(r.status().error(), "empty_file");
  r = ParseCsv("\xEF\xBB\xBF");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().error(), "empty_file");
}

TEST(ParseCsv, BlankOnlyInputHasNoHeader) {
  EXPECT_EQ(CsvErrorOf("\n\r\n   \n"), "line 1: missing header row");
}

TEST(ParseCsv, HeaderOnlyYieldsZeroTransactions) {
  EXPECT_TRUE(ParseOk("date,description,amount").transactions.empty());
  EXPECT_TRUE(ParseOk("date,description,amount\r\n\r\n").transactions.empty());
}

TEST(ParseCsv, MissingRequiredColumn) {
  EXPECT_EQ(CsvErrorOf("date,description,total\n2024-01-01,x,1\n"),
            "line 1: missing required column \"amount\"");
  EXPECT_EQ(CsvErrorOf("description,amount\n"), "line 1: missing required column \"date\"");
  EXPECT_EQ(CsvErrorOf("date,amount"), "line 1: missing required column \"description\"");
  // A header-only file with an invalid header is an error too.
  EXPECT_EQ(CsvErrorOf("foo"), "line 1: missing required column \"date\"");
  // The header is on line 3 here.
  EXPECT_EQ(CsvErrorOf("\n\ndate,description\n"), "line 3: missing required column \"amount\"");
}

TEST(ParseCsv, DuplicateColumn) {
  EXPECT_EQ(CsvErrorOf("date,description,amount,Amount\n"), "line 1: duplicate column \"amount\"");
}

TEST(ParseCsv, TooFewFields) {
  EXPECT_EQ(CsvErrorOf("date,description,amount\n2024-01-01,x,1\n2024-01-02,y\n"),
            "line 3: expected 3 fields, found 2");
}

TEST(ParseCsv, ExtraFieldsOnlyWhenEmpty) {
  EXPECT_EQ(ParseOk("date,description,amount\n2024-01-01,x,1,,\n").transactions.size(), 1u);
  EXPECT_EQ(CsvErrorOf("date,description,amount\n2024-01-01,x,1,oops\n"),
            "line 2: expected 3 fields, found 4");
}

TEST(ParseCsv, BadAmountNamesLineAndColumn) {
  EXPECT_EQ(CsvErrorOf("date,amount,description\n"
                       "2024-01-01,1.00,a\n"
                       "2024-01-02,\"12,5\",b\n"),
            "line 3, column 2 (amount): invalid amount \"12,5\"");
}

TEST(ParseCsv, HugeAmountIsOutOfRangeNotOverflow) {
  const std::string msg = CsvErrorOf(
      "description,date,amount\n"
      "x,2024-01-01,99999999999999999999999\n");
  EXPECT_EQ(
      msg.rfind("line 2, column 3 (amount): amount out of range \"99999999999999999999999\"", 0),
      0u)
      << msg;
}

TEST(ParseCsv, BadDateNamesLineAndColumn) {
  EXPECT_EQ(CsvErrorOf("description,amount,date\nx,1,2023-02-29\n"),
            "line 2, column 3 (date): invalid date \"2023-02-29\" (expected YYYY-MM-DD)");
  EXPECT_EQ(CsvErrorOf("date,description,amount\n01/02/2024,x,1\n"),
            "line 2, column 1 (date): invalid date \"01/02/2024\" (expected YYYY-MM-DD)");
}

TEST(ParseCsv, Currency) {
  EXPECT_EQ(
      ParseOk("date,description,amount,currency\n2024-01-01,x,1,eUr\n").transactions[0].currency,
      "EUR");
  EXPECT_EQ(CsvErrorOf("date,description,amount,currency\n2024-01-01,x,1,US\n"),
            "line 2, column 4 (currency): invalid currency \"US\" (expected a 3-letter ISO 4217 "
            "code)");
  EXPECT_EQ(CsvErrorOf("date,description,amount,currency\n2024-01-01,x,1,€\n"),
            "line 2, column 4 (currency): invalid currency \"€\" (expected a 3-letter ISO 4217 "
            "code)");
}

TEST(ParseCsv, UnterminatedQuoteNamesStartLine) {
  EXPECT_EQ(CsvErrorOf("date,description,amount\n"
                       "2024-01-01,ok,1\n"
                       "2024-01-02,\"never closed,2\n"
                       "2024-01-03,more,3\n"),
            "line 3, column 2: unterminated quoted field");
}

TEST(ParseCsv, GarbageAfterClosingQuote) {
  EXPECT_EQ(CsvErrorOf("date,description,amount\n2024-01-01,\"a\"b,1\n"),
            "line 2, column 2: unexpected character after closing quote");
}

TEST(ParseCsv, InvalidUtf8NamesLine) {
  EXPECT_EQ(CsvErrorOf("date,description,amount\n2024-01-01,ok,1\n2024-01-02,caf\xE9,1\n"),
            "line 3, column 2: invalid UTF-8");
  // Inside a quoted field that started on an earlier line: the physical line of the bad byte.
  EXPECT_EQ(CsvErrorOf("date,description,amount\n2024-01-01,\"a\nb\xC3\x28\",1\n"),
            "line 3, column 2: invalid UTF-8");
  // Overlong encodings, surrogates and truncated sequences.
  EXPECT_EQ(CsvErrorOf("date,description,amount\n2024-01-01,\xC0\xAF,1\n"),
            "line 2, column 2: invalid UTF-8");
  EXPECT_EQ(CsvErrorOf("date,description,amount\n2024-01-01,\xED\xA0\x80,1\n"),
            "line 2, column 2: invalid UTF-8");
  EXPECT_EQ(CsvErrorOf("date,description,amount\n2024-01-01,x,1\xE2\x82"),
            "line 2, column 3: invalid UTF-8");
  EXPECT_EQ(CsvErrorOf("date,descr\xFFiption,amount\n"), "line 1, column 2: invalid UTF-8");
}

TEST(ParseCsv, NulByteRejected) {
  static constexpr char kCsv[] = "date,description,amount\n2024-01-01,a\0b,1\n";
  EXPECT_EQ(CsvErrorOf(std::string_view(kCsv, sizeof(kCsv) - 1)), "line 2, column 2: NUL byte");
}

TEST(ParseCsv, FieldSizeLimit) {
  const std::string ok_field(64 * 1024, 'a');
  EXPECT_EQ(ParseOk("date,description,amount\n2024-01-01," + ok_field + ",1\n")
                .transactions[0]
                .description.size(),
            ok_field.size());
  EXPECT_EQ(CsvErrorOf("date,description,amount\n2024-01-01,\"" + ok_field + "b\",1\n"),
            "line 2, column 2: field longer than 65536 bytes");
}

TEST(ParseCsv, ParsesManyRows) {
  constexpr int kRows = 200000;
  std::string csv = "date,description,amount,currency,merchant,category\n";
  csv.reserve(static_cast<size_t>(kRows) * 64);
  for (int i = 0; i < kRows; ++i) {
    csv += "2024-01-";
    csv += std::to_string(10 + i % 19);
    csv += ",\"Purchase, #";
    csv += std::to_string(i);
    csv += "\",-";
    csv += std::to_string(i % 1000);
    csv += ".";
    csv += std::to_string(10 + i % 90);
    csv += ",usd,Shop,\r\n";
  }
  ParsedStatement s = ParseOk(csv);
  ASSERT_EQ(s.transactions.size(), static_cast<size_t>(kRows));
  EXPECT_EQ(s.transactions.back().line, kRows + 1);
  EXPECT_EQ(s.transactions.back().description, "Purchase, #" + std::to_string(kRows - 1));
  EXPECT_EQ(s.transactions[1234].amount.ToString(), "-234.74");
  EXPECT_EQ(s.transactions[1234].currency, "USD");
}

TEST(DetectFormat, BytesFirst) {
  EXPECT_EQ(DetectFormat("x.csv", "text/csv", "OFXHEADER:100\nDATA:OFXSGML\n\n<OFX>"),
            StatementFormat::kOfx);
  EXPECT_EQ(DetectFormat("", "", "<?xml version=\"1.0\"?>\n<?OFX OFXHEADER=\"200\"?><OFX>"),
            StatementFormat::kOfx);
  EXPECT_EQ(DetectFormat("statement.txt", "text/plain", "\n  <ofx><SIGNONMSGSRSV1>"),
            StatementFormat::kOfx);
}

TEST(DetectFormat, ExtensionThenContentType) {
  EXPECT_EQ(DetectFormat("Statement.CSV", "", "date,amount"), StatementFormat::kCsv);
  EXPECT_EQ(DetectFormat("dir.ofx/statement.csv", "application/x-ofx", "date,amount"),
            StatementFormat::kCsv);
  EXPECT_EQ(DetectFormat("C:\\Users\\me\\dl.QFX", "", "junk"), StatementFormat::kOfx);
  EXPECT_EQ(DetectFormat("bank.ofx", "", ""), StatementFormat::kOfx);
  EXPECT_EQ(DetectFormat("export", "text/csv; charset=utf-8", "a,b"), StatementFormat::kCsv);
  EXPECT_EQ(DetectFormat("export", " Application/X-OFX ", "a,b"), StatementFormat::kOfx);
  EXPECT_EQ(DetectFormat("export.txt", "text/plain", "a,b"), StatementFormat::kUnknown);
  EXPECT_EQ(DetectFormat("", "", ""), StatementFormat::kUnknown);
  EXPECT_EQ(DetectFormat("csv", "", "a,b"), StatementFormat::kUnknown);
}

TEST(DetectFormat, BinaryIsUnknown) {
  const std::string binary("PK\x03\x04\0\0date,amount", 17);
  EXPECT_EQ(DetectFormat("statement.csv", "text/csv", binary), StatementFormat::kUnknown);
  std::string late_nul(9000, 'a');
  late_nul[8500] = '\0';
  EXPECT_EQ(DetectFormat("statement.csv", "", late_nul), StatementFormat::kCsv);
}

}  // namespace
}  // namespace lastcall
