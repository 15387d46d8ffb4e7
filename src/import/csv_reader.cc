// CSV statement reader and statement format detection. See statement.h for the contracts.
//
// ParseCsv is a single pass over the bytes: a tokenizer yields one record at a time into reused
// field buffers, validating UTF-8 as it goes, so the cost is linear in the input size.
#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "import/statement.h"

#include "common/text.h"

namespace lastcall {
namespace {

constexpr size_t kMaxRows = 1000000;
constexpr size_t kMaxFieldBytes = 64 * 1024;

char AsciiLower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }
char AsciiUpper(char c) { return (c >= 'a' && c <= 'z') ? static_cast<char>(c - 'a' + 'A') : c; }
bool IsAsciiLetter(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
bool IsFieldSpace(char c) { return c == ' ' || c == '\t'; }

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (AsciiLower(a[i]) != AsciiLower(b[i])) return false;
  }
  return true;
}

bool ContainsIgnoreCase(std::string_view haystack, std::string_view needle) {
  if (needle.size() > haystack.size()) return false;
  for (size_t i = 0; i + needle.size() <= haystack.size(); ++i) {
    if (EqualsIgnoreCase(haystack.substr(i, needle.size()), needle)) return true;
  }
  return false;
}

std::string_view TrimSpaces(std::string_view s) {
  while (!s.empty() && IsFieldSpace(s.front())) s.remove_prefix(1);
  while (!s.empty() && IsFieldSpace(s.back())) s.remove_suffix(1);
  return s;
}


Status CsvError(std::string message) {
  return Status::Unprocessable("invalid_csv", std::move(message));
}

std::string At(int line) { return "line " + std::to_string(line); }
std::string At(int line, size_t column) {
  return "line " + std::to_string(line) + ", column " + std::to_string(column);
}


// One record as read by the tokenizer. `fields` is reused between records: only the first
// `count` entries belong to the current record.
struct Record {
  std::vector<std::string> fields;
  size_t count = 0;
  int line = 0;        // physical 1-based line where the record starts
  bool blank = false;  // a line with nothing but spaces (skipped by the reader)
};

// RFC 4180 tokenizer over a byte buffer (BOM already removed). Line ends are LF, CRLF or a lone
// CR. Unquoted fields are trimmed of spaces and tabs; quoted fields are kept verbatim (a doubled
// quote stands for one quote) and the spaces around the quotes are dropped.
class Tokenizer {
 public:
  explicit Tokenizer(std::string_view bytes) : data_(bytes) {}

  bool AtEnd() const { return pos_ >= data_.size(); }

  // Reads the next record. Must not be called AtEnd().
  Status Next(Record* rec) {
    rec->count = 0;
    rec->line = line_;
    bool any_quoted = false;
    while (true) {
      if (rec->count == rec->fields.size()) rec->fields.emplace_back();
      std::string& field = rec->fields[rec->count];
      field.clear();
      const size_t column = rec->count + 1;
      ++rec->count;

      while (pos_ < data_.size() && IsFieldSpace(data_[pos_])) ++pos_;
      if (pos_ < data_.size() && data_[pos_] == '"') {
        any_quoted = true;
        LASTCALL_RETURN_IF_ERROR(ReadQuoted(column, &field));
        while (pos_ < data_.size() && IsFieldSpace(data_[pos_])) ++pos_;
        if (pos_ < data_.size() && data_[pos_] != ',' && data_[pos_] != '\n' &&
            data_[pos_] != '\r') {
          return CsvError(At(line_, column) + ": unexpected character after closing quote");
        }
      } else {
        LASTCALL_RETURN_IF_ERROR(ReadUnquoted(column, &field));
      }

      if (pos_ >= data_.size()) break;
      const char c = data_[pos_++];
      if (c == ',') continue;
      if (c == '\r' && pos_ < data_.size() && data_[pos_] == '\n') ++pos_;
      ++line_;
      break;
    }
    rec->blank = rec->count == 1 && !any_quoted && rec->fields[0].empty();
    return Status::Ok();
  }

 private:
  // Validates the non-ASCII or NUL byte at pos_ and appends its sequence to *field.
  Status TakeSpecialByte(size_t column, std::string* field) {
    const unsigned char b = static_cast<unsigned char>(data_[pos_]);
    if (b == 0) return CsvError(At(line_, column) + ": NUL byte");
    const size_t len = Utf8SequenceLength(data_, pos_);
    if (len == 0) return CsvError(At(line_, column) + ": invalid UTF-8");
    field->append(data_.data() + pos_, len);
    pos_ += len;
    return Status::Ok();
  }

  Status CheckLength(size_t column, const std::string& field) const {
    if (field.size() > kMaxFieldBytes) {
      return CsvError(At(line_, column) + ": field longer than " + std::to_string(kMaxFieldBytes) +
                      " bytes");
    }
    return Status::Ok();
  }

  Status ReadUnquoted(size_t column, std::string* field) {
    while (pos_ < data_.size()) {
      // Fast path: a run of plain ASCII bytes is appended in one go.
      size_t end = pos_;
      while (end < data_.size()) {
        const unsigned char b = static_cast<unsigned char>(data_[end]);
        if (b == ',' || b == '\n' || b == '\r' || b == 0 || b >= 0x80) break;
        ++end;
      }
      field->append(data_.data() + pos_, end - pos_);
      pos_ = end;
      LASTCALL_RETURN_IF_ERROR(CheckLength(column, *field));
      if (pos_ >= data_.size()) break;
      const char c = data_[pos_];
      if (c == ',' || c == '\n' || c == '\r') break;
      LASTCALL_RETURN_IF_ERROR(TakeSpecialByte(column, field));
    }
    while (!field->empty() && IsFieldSpace(field->back())) field->pop_back();
    return Status::Ok();
  }

  // pos_ is at the opening quote; on success it is just past the closing quote.
  Status ReadQuoted(size_t column, std::string* field) {
    const int start_line = line_;
    ++pos_;
    while (true) {
      size_t end = pos_;
      while (end < data_.size()) {
        const unsigned char b = static_cast<unsigned char>(data_[end]);
        if (b == '"' || b == '\n' || b == '\r' || b == 0 || b >= 0x80) break;
        ++end;
      }
      field->append(data_.data() + pos_, end - pos_);
      pos_ = end;
      LASTCALL_RETURN_IF_ERROR(CheckLength(column, *field));
      if (pos_ >= data_.size()) {
        return CsvError(At(start_line, column) + ": unterminated quoted field");
      }
      const char c = data_[pos_];
      if (c == '"') {
        if (pos_ + 1 < data_.size() && data_[pos_ + 1] == '"') {
          field->push_back('"');
          pos_ += 2;
          continue;
        }
        ++pos_;
        return Status::Ok();
      }
      if (c == '\n' || c == '\r') {
        // Kept verbatim; CRLF counts as one line end.
        field->push_back(c);
        ++pos_;
        if (c == '\r' && pos_ < data_.size() && data_[pos_] == '\n') {
          field->push_back('\n');
          ++pos_;
        }
        ++line_;
        continue;
      }
      LASTCALL_RETURN_IF_ERROR(TakeSpecialByte(column, field));
    }
  }

  std::string_view data_;
  size_t pos_ = 0;
  int line_ = 1;
};

enum Column { kDate, kDescription, kAmount, kCurrency, kMerchant, kCategory, kColumnCount };
constexpr std::array<std::string_view, kColumnCount> kColumnNames = {
    "date", "description", "amount", "currency", "merchant", "category"};
constexpr int kRequiredColumns[] = {kDate, kDescription, kAmount};

// Maps header fields to the known columns (index into the record, or -1 when absent).
Result<std::array<int, kColumnCount>> ReadHeader(const Record& header) {
  std::array<int, kColumnCount> index;
  index.fill(-1);
  for (size_t i = 0; i < header.count; ++i) {
    const std::string_view name = TrimSpaces(header.fields[i]);
    for (int c = 0; c < kColumnCount; ++c) {
      if (!EqualsIgnoreCase(name, kColumnNames[c])) continue;
      if (index[c] != -1) {
        return CsvError(At(header.line) + ": duplicate column \"" + std::string(kColumnNames[c]) +
                        "\"");
      }
      index[c] = static_cast<int>(i);
    }
  }
  for (int c : kRequiredColumns) {
    if (index[c] == -1) {
      return CsvError(At(header.line) + ": missing required column \"" +
                      std::string(kColumnNames[c]) + "\"");
    }
  }
  return index;
}

// Turns one data record into a transaction, validating date, amount and currency.
Status ReadRow(Record& rec, const std::array<int, kColumnCount>& index, ParsedTransaction* t) {
  auto where = [&](int c) {
    return At(rec.line, static_cast<size_t>(index[c]) + 1) + " (" + std::string(kColumnNames[c]) +
           "): ";
  };
  auto take = [&](int c) -> std::string {
    return index[c] == -1 ? std::string() : std::move(rec.fields[static_cast<size_t>(index[c])]);
  };

  t->line = rec.line;
  t->date = take(kDate);
  if (!IsValidIsoDate(t->date)) {
    return CsvError(where(kDate) + "invalid date " + QuoteForMessage(t->date) + " (expected YYYY-MM-DD)");
  }
  const std::string amount = take(kAmount);
  Result<Money> money = Money::Parse(amount);
  if (!money.ok()) return CsvError(where(kAmount) + money.status().message());
  t->amount = *money;
  t->currency = take(kCurrency);
  if (!t->currency.empty()) {
    if (t->currency.size() != 3 || !IsAsciiLetter(t->currency[0]) ||
        !IsAsciiLetter(t->currency[1]) || !IsAsciiLetter(t->currency[2])) {
      return CsvError(where(kCurrency) + "invalid currency " + QuoteForMessage(t->currency) +
                      " (expected a 3-letter ISO 4217 code)");
    }
    for (char& ch : t->currency) ch = AsciiUpper(ch);
  }
  t->description = take(kDescription);
  t->merchant = take(kMerchant);
  t->category = take(kCategory);
  return Status::Ok();
}

}  // namespace

Result<ParsedStatement> ParseCsv(std::string_view bytes) {
  if (bytes.empty()) return Status::Unprocessable("empty_file", "the file is empty");
  if (bytes.substr(0, 3) == "\xEF\xBB\xBF") bytes.remove_prefix(3);
  if (bytes.empty()) return Status::Unprocessable("empty_file", "the file is empty");

  Tokenizer tokenizer(bytes);
  Record rec;
  bool have_header = false;
  std::array<int, kColumnCount> index{};
  size_t header_fields = 0;
  ParsedStatement out;
  // At most one record per LF plus one (an estimate only for CR-only files); reserving up front
  // avoids re-moving every row each time the vector grows.
  const size_t max_records = static_cast<size_t>(std::count(bytes.begin(), bytes.end(), '\n')) + 1;
  out.transactions.reserve(std::min(max_records, kMaxRows));

  while (!tokenizer.AtEnd()) {
    LASTCALL_RETURN_IF_ERROR(tokenizer.Next(&rec));
    if (rec.blank) continue;
    if (!have_header) {
      Result<std::array<int, kColumnCount>> header = ReadHeader(rec);
      if (!header.ok()) return header.status();
      index = *header;
      header_fields = rec.count;
      have_header = true;
      continue;
    }
    if (rec.count < header_fields) {
      return CsvError(At(rec.line) + ": expected " + std::to_string(header_fields) +
                      " fields, found " + std::to_string(rec.count));
    }
    // Extra fields are tolerated only when empty (trailing commas).
    for (size_t i = header_fields; i < rec.count; ++i) {
      if (!rec.fields[i].empty()) {
        return CsvError(At(rec.line) + ": expected " + std::to_string(header_fields) +
                        " fields, found " + std::to_string(rec.count));
      }
    }
    if (out.transactions.size() == kMaxRows) {
      return CsvError(At(rec.line) + ": more than " + std::to_string(kMaxRows) + " rows");
    }
    ParsedTransaction t;
    LASTCALL_RETURN_IF_ERROR(ReadRow(rec, index, &t));
    out.transactions.push_back(std::move(t));
  }
  if (!have_header) return CsvError(At(1) + ": missing header row");
  return out;
}

StatementFormat DetectFormat(std::string_view filename, std::string_view content_type,
                             std::string_view bytes) {
  constexpr size_t kSniff = 8 * 1024;
  const std::string_view head = bytes.substr(0, kSniff);
  if (head.find('\0') != std::string_view::npos) return StatementFormat::kUnknown;

  // 1. The bytes: an OFX 1.x header ("OFXHEADER:100"), an OFX 2.x processing instruction
  //    ("<?OFX OFXHEADER=...") or an <OFX> tag near the start.
  if (ContainsIgnoreCase(head, "OFXHEADER") || ContainsIgnoreCase(head, "<OFX>")) {
    return StatementFormat::kOfx;
  }

  // 2. The file name extension (of the last path component; '/' or '\\' separated).
  std::string_view name = filename;
  if (size_t slash = name.find_last_of("/\\"); slash != std::string_view::npos) {
    name.remove_prefix(slash + 1);
  }
  if (size_t dot = name.rfind('.'); dot != std::string_view::npos) {
    const std::string_view ext = name.substr(dot + 1);
    if (EqualsIgnoreCase(ext, "csv")) return StatementFormat::kCsv;
    if (EqualsIgnoreCase(ext, "ofx") || EqualsIgnoreCase(ext, "qfx")) {
      return StatementFormat::kOfx;
    }
  }

  // 3. The declared content type, parameters (";charset=...") ignored.
  std::string_view type = content_type;
  if (size_t semi = type.find(';'); semi != std::string_view::npos) type = type.substr(0, semi);
  type = TrimSpaces(type);
  for (std::string_view csv :
       {"text/csv", "application/csv", "text/comma-separated-values", "application/vnd.ms-excel"}) {
    if (EqualsIgnoreCase(type, csv)) return StatementFormat::kCsv;
  }
  for (std::string_view ofx :
       {"application/x-ofx", "application/ofx", "application/vnd.intu.qfx", "application/x-qfx"}) {
    if (EqualsIgnoreCase(type, ofx)) return StatementFormat::kOfx;
  }
  return StatementFormat::kUnknown;
}

}  // namespace lastcall
