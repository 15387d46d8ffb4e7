// What a bank statement reader produces: the rows of one uploaded file, in file order. Readers
// never touch storage; they parse bytes into values or return a Status that names the line and
// column of the first problem.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "domain/money.h"

namespace lastcall {

struct ParsedTransaction {
  int line = 0;              // 1-based line (CSV) or 1-based transaction ordinal (OFX)
  std::string date;          // YYYY-MM-DD, validated with IsValidIsoDate
  std::string description;   // may be empty
  Money amount;
  std::string currency;      // ISO 4217 upper-case, or empty when the file does not say
  std::string merchant;      // may be empty
  std::string category;      // may be empty (the categorization consumer fills it)
};

struct ParsedStatement {
  std::vector<ParsedTransaction> transactions;
  std::string currency;  // statement-level currency (OFX CURDEF), or empty
};

enum class StatementFormat { kCsv, kOfx, kUnknown };

// Decides the format from the bytes first (an OFX/QFX header or <OFX> tag means OFX), then from
// the file name extension (.csv, .ofx, .qfx) and the declared content type (text/csv,
// application/x-ofx, ...). Binary content (a NUL byte in the first 8 KiB) is kUnknown.
StatementFormat DetectFormat(std::string_view filename, std::string_view content_type,
                             std::string_view bytes);

// RFC 4180 CSV with a header row. Columns are matched case-insensitively after trimming:
// date, description, amount (required), currency, merchant, category (optional); other columns
// are ignored. Quoted fields may hold commas, doubled quotes and newlines. CRLF or LF line
// ends; a UTF-8 BOM is skipped; blank lines are skipped. Invalid UTF-8 is an error.
// An empty file or a header with no rows yields zero transactions only when the header is valid;
// an empty input (0 bytes) is kUnprocessable "empty_file".
// Errors are kUnprocessable with error "invalid_csv" and a message such as
// "line 3, column 2 (amount): invalid amount \"12,5\"". Limits: at most 1,000,000 rows; a field at
// most 64 KiB.
Result<ParsedStatement> ParseCsv(std::string_view bytes);

// OFX 1.x (SGML) and 2.x (XML) bank and credit-card statements, including QFX, read with libofx.
// Each STMTTRN becomes a transaction: DTPOSTED -> date, TRNAMT -> amount, NAME/PAYEE -> merchant,
// MEMO (else NAME) -> description; CURDEF -> currency. Errors: kUnprocessable "invalid_ofx" naming
// the transaction ordinal and field. Thread-safe (libofx state is per call).
Result<ParsedStatement> ParseOfx(std::string_view bytes);

}  // namespace lastcall
