// OFX/QFX statement reader on top of libofx. See statement.h for the contract.
//
// How the work is split:
//  - libofx (0.10.x) parses and validates the document (SGML 1.x or XML 2.x, any declared
//    charset, converted to UTF-8) and supplies the text fields NAME and MEMO.
//  - libofx reports TRNAMT only as a double and DTPOSTED only as a time_t that it has shifted by
//    the timezone written in the file ("20240131235959[-8:PST]" comes back as 2024-02-01 UTC). Both
//    lose what the file says, so a small linear scan of the raw bytes (ScanOfx) reads the TRNAMT
//    and DTPOSTED text of every STMTTRN exactly, plus the currencies (CURDEF, CURRENCY/CURSYM) and
//    the NAME of a PAYEE aggregate, which libofx does not expose. Scan and libofx are matched by
//    ordinal; the libofx double must agree with the exact amount, which proves the alignment.
//
// libofx has process-global state (message flags, the OpenSP parser setup), so every call into it
// is serialized by one mutex. It only reads files, so the bytes go through a private temporary
// file (mkstemp in $TMPDIR or /tmp), removed on every path.
#include <libofx/libofx.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "import/statement.h"

#include "common/text.h"

namespace lastcall {
namespace {

Status OfxError(std::string message) {
  return Status::Unprocessable("invalid_ofx", std::move(message));
}

char AsciiLower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }
char AsciiUpper(char c) { return (c >= 'a' && c <= 'z') ? static_cast<char>(c - 'a' + 'A') : c; }
bool IsAsciiLetter(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
bool IsDigit(char c) { return c >= '0' && c <= '9'; }
bool IsOfxSpace(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (AsciiLower(a[i]) != AsciiLower(b[i])) return false;
  }
  return true;
}

// Position of needle in haystack ignoring ASCII case, or npos.
size_t FindIgnoreCase(std::string_view haystack, std::string_view needle) {
  if (needle.size() > haystack.size()) return std::string_view::npos;
  for (size_t i = 0; i + needle.size() <= haystack.size(); ++i) {
    if (EqualsIgnoreCase(haystack.substr(i, needle.size()), needle)) return i;
  }
  return std::string_view::npos;
}

std::string_view Trim(std::string_view s) {
  while (!s.empty() && IsOfxSpace(s.front())) s.remove_prefix(1);
  while (!s.empty() && IsOfxSpace(s.back())) s.remove_suffix(1);
  return s;
}


bool IsCurrencyCode(std::string_view s) {
  return s.size() == 3 && IsAsciiLetter(s[0]) && IsAsciiLetter(s[1]) && IsAsciiLetter(s[2]);
}

std::string UpperAscii(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = AsciiUpper(c);
  return out;
}

// ---- UTF-8 hygiene for text that comes back from libofx or the raw scan ----

void AppendUtf8(uint32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

// Returns trimmed, valid UTF-8: a multi-byte sequence cut off at the end (libofx truncates NAME
// and MEMO to fixed buffers) is dropped, and text that still is not UTF-8 is taken as Latin-1.
// Control characters other than tab become spaces.
std::string CleanText(std::string_view raw) {
  std::string_view s = Trim(raw);
  // Drop an incomplete trailing sequence (at most 3 bytes of it).
  for (size_t back = 1; back <= 3 && back <= s.size(); ++back) {
    const unsigned char b = static_cast<unsigned char>(s[s.size() - back]);
    if ((b & 0xC0) == 0x80) continue;  // continuation byte: keep looking for the lead byte
    if (b >= 0xC0 && Utf8SequenceLength(s, s.size() - back) == 0) s.remove_suffix(back);
    break;
  }
  std::string out;
  if (IsValidUtf8(s)) {
    out.assign(s);
  } else {
    for (char c : s) AppendUtf8(static_cast<unsigned char>(c), &out);
  }
  for (char& c : out) {
    const unsigned char u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7F) c = ' ';
  }
  return std::string(Trim(out));
}

// Decodes the five XML/SGML named entities and numeric character references; anything else is
// kept as written.
std::string DecodeEntities(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '&') {
      out.push_back(s[i]);
      continue;
    }
    const size_t semi = s.find(';', i);
    if (semi == std::string_view::npos || semi - i > 10) {
      out.push_back(s[i]);
      continue;
    }
    const std::string_view ent = s.substr(i + 1, semi - i - 1);
    uint32_t cp = 0;
    bool ok = true;
    if (ent == "amp") {
      cp = '&';
    } else if (ent == "lt") {
      cp = '<';
    } else if (ent == "gt") {
      cp = '>';
    } else if (ent == "quot") {
      cp = '"';
    } else if (ent == "apos") {
      cp = '\'';
    } else if (ent.size() >= 2 && ent[0] == '#') {
      const bool hex = ent[1] == 'x' || ent[1] == 'X';
      const std::string_view digits = ent.substr(hex ? 2 : 1);
      ok = !digits.empty();
      for (char c : digits) {
        int d = -1;
        if (IsDigit(c)) d = c - '0';
        if (hex && c >= 'a' && c <= 'f') d = c - 'a' + 10;
        if (hex && c >= 'A' && c <= 'F') d = c - 'A' + 10;
        if (d < 0) ok = false;
        if (ok) cp = cp * (hex ? 16 : 10) + static_cast<uint32_t>(d);
      }
      if (cp == 0 || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) ok = false;
    } else {
      ok = false;
    }
    if (!ok) {
      out.push_back(s[i]);
      continue;
    }
    AppendUtf8(cp, &out);
    i = semi;
  }
  return out;
}

// ---- Raw scan ----

struct RawTransaction {
  bool has_dtposted = false;
  bool has_trnamt = false;
  std::string dtposted;    // as written
  std::string trnamt;      // as written
  std::string currency;    // CURSYM of a CURRENCY aggregate, else the statement's CURDEF
  std::string payee_name;  // NAME inside a PAYEE aggregate, as written (entities undecoded)
};

struct RawStatement {
  std::vector<RawTransaction> transactions;
  std::string first_curdef;
};

// Walks the tags after <OFX> in file order. Works for SGML (element values end at the next tag,
// end tags optional for elements) and XML alike. Linear in the input size.
Result<RawStatement> ScanOfx(std::string_view bytes, size_t ofx_start) {
  RawStatement out;
  std::string curdef;
  RawTransaction txn;
  bool in_txn = false, in_currency = false, in_origcurrency = false, in_payee = false;
  auto finish = [&] {
    if (in_txn) out.transactions.push_back(std::move(txn));
    txn = RawTransaction();
    in_txn = in_currency = in_origcurrency = in_payee = false;
  };

  size_t pos = ofx_start;
  while (true) {
    const size_t lt = bytes.find('<', pos);
    if (lt == std::string_view::npos) break;
    const std::string_view rest = bytes.substr(lt);
    if (rest.substr(0, 4) == "<!--") {
      const size_t end = bytes.find("-->", lt + 4);
      if (end == std::string_view::npos) break;
      pos = end + 3;
      continue;
    }
    const size_t gt = bytes.find('>', lt + 1);
    if (gt == std::string_view::npos) break;
    pos = gt + 1;
    if (rest.size() > 1 && (rest[1] == '?' || rest[1] == '!')) continue;  // PI, declaration

    std::string_view tag = Trim(bytes.substr(lt + 1, gt - lt - 1));
    const bool closing = !tag.empty() && tag.front() == '/';
    if (closing) tag.remove_prefix(1);
    if (!tag.empty() && tag.back() == '/') tag.remove_suffix(1);  // <EMPTY/>
    const size_t next_lt = bytes.find('<', pos);
    const std::string_view value =
        closing ? std::string_view()
                : Trim(bytes.substr(
                      pos, (next_lt == std::string_view::npos ? bytes.size() : next_lt) - pos));
    auto is = [&](std::string_view name) { return EqualsIgnoreCase(tag, name); };

    if (closing) {
      if (is("STMTTRN") || is("BANKTRANLIST") || is("STMTRS") || is("CCSTMTRS")) finish();
      if (is("CURRENCY")) in_currency = false;
      if (is("ORIGCURRENCY")) in_origcurrency = false;
      if (is("PAYEE")) in_payee = false;
      continue;
    }
    if (is("CURDEF")) {
      if (!IsCurrencyCode(value)) {
        return OfxError("field CURDEF: invalid currency " + QuoteForMessage(value));
      }
      curdef = UpperAscii(value);
      if (out.first_curdef.empty()) out.first_curdef = curdef;
    } else if (is("STMTTRN")) {
      finish();
      in_txn = true;
      txn.currency = curdef;
    } else if (in_txn) {
      if (is("TRNAMT")) {
        txn.has_trnamt = true;
        txn.trnamt.assign(value);
      } else if (is("DTPOSTED")) {
        txn.has_dtposted = true;
        txn.dtposted.assign(value);
      } else if (is("CURRENCY")) {
        in_currency = true;  // the amounts of this transaction are in CURSYM
      } else if (is("ORIGCURRENCY")) {
        in_origcurrency = true;  // amounts already converted to CURDEF; CURSYM is informative
      } else if (is("CURSYM") && in_currency && !in_origcurrency) {
        if (!IsCurrencyCode(value)) {
          return OfxError("transaction " + std::to_string(out.transactions.size() + 1) +
                          ", field CURSYM: invalid currency " + QuoteForMessage(value));
        }
        txn.currency = UpperAscii(value);
      } else if (is("PAYEE")) {
        in_payee = true;
      } else if (is("NAME") && in_payee) {
        txn.payee_name.assign(value);
      }
    }
  }
  finish();
  return out;
}

// "20240131235959.000[-8:PST]" -> "2024-01-31": the calendar date as written, never shifted.
bool OfxDateToIso(std::string_view raw, std::string* iso) {
  if (raw.size() < 8) return false;
  for (size_t i = 0; i < 8; ++i) {
    if (!IsDigit(raw[i])) return false;
  }
  *iso = std::string(raw.substr(0, 4)) + "-" + std::string(raw.substr(4, 2)) + "-" +
         std::string(raw.substr(6, 2));
  return IsValidIsoDate(*iso);
}

// ---- libofx ----

struct LibofxTransaction {
  bool amount_valid = false;
  double amount = 0;
  std::string name;
  std::string memo;
};

struct CallbackState {
  std::vector<LibofxTransaction> transactions;
  bool saw_statement = false;
  bool failed = false;  // an exception was caught inside a callback
};

// Callbacks run inside libofx (C linkage in spirit): nothing may propagate out of them.
int OnTransaction(const struct OfxTransactionData data, void* user) noexcept {
  auto* state = static_cast<CallbackState*>(user);
  try {
    LibofxTransaction t;
    t.amount_valid = data.amount_valid != 0;
    t.amount = data.amount;
    if (data.name_valid) t.name.assign(data.name, strnlen(data.name, sizeof(data.name)));
    if (data.memo_valid) t.memo.assign(data.memo, strnlen(data.memo, sizeof(data.memo)));
    state->transactions.push_back(std::move(t));
  } catch (...) {
    state->failed = true;
  }
  return 0;
}

int OnStatement(const struct OfxStatementData /*data*/, void* user) noexcept {
  static_cast<CallbackState*>(user)->saw_statement = true;
  return 0;
}

// A private temporary file holding the bytes; removed by the destructor.
class TempFile {
 public:
  TempFile() = default;
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;
  ~TempFile() {
    if (!path_.empty()) unlink(path_.c_str());
  }

  Status Create(std::string_view bytes) {
    const char* dir = std::getenv("TMPDIR");
    std::string tmpl = (dir != nullptr && dir[0] != '\0') ? dir : "/tmp";
    tmpl += "/lastcall-ofx-XXXXXX";
    std::vector<char> name(tmpl.begin(), tmpl.end());
    name.push_back('\0');
    const int fd = mkstemp(name.data());
    if (fd < 0) {
      return Status::Internal("cannot create a temporary file in " + tmpl + ": " +
                              std::strerror(errno));
    }
    path_ = name.data();
    size_t done = 0;
    while (done < bytes.size()) {
      const ssize_t n = write(fd, bytes.data() + done, bytes.size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        const int err = errno;
        close(fd);
        return Status::Internal("cannot write temporary file " + path_ + ": " + std::strerror(err));
      }
      done += static_cast<size_t>(n);
    }
    if (close(fd) != 0) {
      return Status::Internal("cannot close temporary file " + path_ + ": " + std::strerror(errno));
    }
    return Status::Ok();
  }

  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

std::mutex& LibofxMutex() {
  static std::mutex mu;
  return mu;
}

// Runs libofx over the bytes; returns libofx_proc_file's result code in *rc.
Status RunLibofx(std::string_view bytes, CallbackState* state, int* rc) {
  TempFile file;
  LASTCALL_RETURN_IF_ERROR(file.Create(bytes));

  std::lock_guard<std::mutex> lock(LibofxMutex());
  // Silence libofx: by default it prints parser errors and status lines to stderr/stdout.
  ofx_PARSER_msg = 0;
  ofx_DEBUG_msg = 0;
  ofx_DEBUG1_msg = 0;
  ofx_DEBUG2_msg = 0;
  ofx_DEBUG3_msg = 0;
  ofx_DEBUG4_msg = 0;
  ofx_DEBUG5_msg = 0;
  ofx_STATUS_msg = 0;
  ofx_INFO_msg = 0;
  ofx_WARNING_msg = 0;
  ofx_ERROR_msg = 0;
  ofx_show_position = 0;

  LibofxContextPtr ctx = libofx_get_new_context();
  if (ctx == nullptr) return Status::Internal("libofx_get_new_context failed");
  struct ContextGuard {
    LibofxContextPtr ctx;
    ~ContextGuard() { libofx_free_context(ctx); }
  } guard{ctx};
  ofx_set_transaction_cb(ctx, OnTransaction, state);
  ofx_set_statement_cb(ctx, OnStatement, state);
  *rc = libofx_proc_file(ctx, file.path().c_str(), OFX);
  return Status::Ok();
}

// The exact amount of TRNAMT. OFX allows ',' as the decimal separator.
Result<Money> ParseTrnamt(std::string_view raw) {
  std::string text(raw);
  if (text.find('.') == std::string::npos) {
    const size_t comma = text.find(',');
    if (comma != std::string::npos && text.find(',', comma + 1) == std::string::npos) {
      text[comma] = '.';
    }
  }
  return Money::Parse(text);
}

Result<ParsedStatement> ParseOfxUnguarded(std::string_view bytes) {
  if (bytes.empty()) return Status::Unprocessable("empty_file", "the file is empty");
  const size_t ofx_start = FindIgnoreCase(bytes, "<OFX>");
  if (ofx_start == std::string_view::npos) {
    return OfxError("not an OFX file: no <OFX> element");
  }
  if (bytes.find('\0') != std::string_view::npos) return OfxError("not an OFX file: NUL byte");
  // OFX (1.x SGML and 2.x XML alike) closes its root aggregate; a file cut short, whose
  // transactions would silently go missing, does not.
  if (FindIgnoreCase(bytes.substr(ofx_start), "</OFX>") == std::string_view::npos) {
    return OfxError("truncated OFX file: no closing </OFX>");
  }

  Result<RawStatement> raw = ScanOfx(bytes, ofx_start);
  if (!raw.ok()) return raw.status();

  CallbackState state;
  int rc = 0;
  LASTCALL_RETURN_IF_ERROR(RunLibofx(bytes, &state, &rc));
  if (state.failed) return Status::Internal("out of memory while reading OFX");
  // libofx returns non-zero for any parser complaint, including harmless ones real bank files
  // trigger (e.g. proprietary elements); a document in which it found no statement at all is
  // rejected.
  if (rc != 0 && !state.saw_statement) {
    return OfxError("not a readable OFX statement");
  }
  if (state.transactions.size() != raw->transactions.size()) {
    return OfxError("libofx read " + std::to_string(state.transactions.size()) +
                    " transactions but the file has " + std::to_string(raw->transactions.size()) +
                    " STMTTRN aggregates (only bank and credit-card statements are supported)");
  }

  ParsedStatement out;
  out.currency = raw->first_curdef;
  out.transactions.reserve(raw->transactions.size());
  for (size_t i = 0; i < raw->transactions.size(); ++i) {
    const RawTransaction& r = raw->transactions[i];
    const LibofxTransaction& lib = state.transactions[i];
    const std::string where = "transaction " + std::to_string(i + 1);

    ParsedTransaction t;
    t.line = static_cast<int>(i + 1);
    if (!r.has_dtposted) return OfxError(where + ": missing DTPOSTED");
    if (!OfxDateToIso(r.dtposted, &t.date)) {
      return OfxError(where + ", field DTPOSTED: invalid date " + QuoteForMessage(r.dtposted));
    }
    if (!r.has_trnamt) return OfxError(where + ": missing TRNAMT");
    Result<Money> amount = ParseTrnamt(r.trnamt);
    if (!amount.ok()) return OfxError(where + ", field TRNAMT: " + amount.status().message());
    t.amount = *amount;
    if (lib.amount_valid) {
      const double exact = static_cast<double>(t.amount.units()) / Money::kUnitsPerWhole;
      if (std::fabs(lib.amount - exact) > 0.00005 + std::fabs(exact) * 1e-12) {
        return OfxError(where + ", field TRNAMT: the file and libofx disagree on the amount " +
                        QuoteForMessage(r.trnamt));
      }
    }
    t.currency = r.currency;
    t.merchant = CleanText(lib.name);
    if (t.merchant.empty()) t.merchant = CleanText(DecodeEntities(CleanText(r.payee_name)));
    t.description = CleanText(lib.memo);
    if (t.description.empty()) t.description = t.merchant;
    out.transactions.push_back(std::move(t));
  }
  return out;
}

}  // namespace

Result<ParsedStatement> ParseOfx(std::string_view bytes) {
  try {
    return ParseOfxUnguarded(bytes);
  } catch (const std::exception& e) {
    return Status::Internal(std::string("reading OFX failed: ") + e.what());
  } catch (...) {
    return Status::Internal("reading OFX failed: unknown exception");
  }
}

}  // namespace lastcall
