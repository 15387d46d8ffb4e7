// multipart/form-data parsing (RFC 7578 on top of the RFC 2046 multipart grammar).
//
// Scanning: the body is walked once, left to right, with std::string_view::find; a part's bytes
// are copied exactly once, into MultipartPart::data. A delimiter is "--boundary" at the start of
// the body or right after a line break, followed by optional spaces/tabs and a line break (another
// part follows) or by "--" (the close delimiter; the epilogue after it is ignored, as is the
// preamble before the first delimiter). A "--boundary" followed by anything else is part data.
//
// Line breaks: the first delimiter line decides the mode. If it ends in CRLF, only CRLF + "--" +
// boundary ends a part (a bare LF in binary data is data); if it ends in a bare LF, LF + "--" +
// boundary does, so bodies written with bare LF are tolerated. Part header lines may end in
// either.
//
// Contract details the header leaves open, decided here:
//  - Content-Type: "multipart/form-data" and parameter names compare case-insensitively; the
//    boundary may be quoted; it must be 1 to 70 bytes (RFC 2046) and given once. A Content-Type
//    that is empty or any other media type is kUnsupported "unsupported_media_type"; a
//    multipart/form-data whose parameter list cannot be parsed is "invalid_form".
//  - Quoted strings: a backslash escapes only '"' and '\'; before any other character it is kept
//    literally (as Go's mime package does), so a raw Windows path such as "C:\x\y.csv" survives.
//    No percent-decoding is done ("%22" stays as sent).
//  - Part headers end at the first empty line; a part whose headers run to its end has empty data.
//    Header names compare case-insensitively; folded (continued) header lines, lines without a
//    colon and a repeated Content-Disposition or Content-Type are "invalid_form". Headers other
//    than Content-Disposition and Content-Type are ignored. content_type is the trimmed value as
//    sent.
//  - Content-Disposition must be "form-data" (case-insensitive) with a non-empty name; repeated
//    name or filename parameters are "invalid_form"; filename*= is ignored.
//  - File names: returned as sent except that any directory part is stripped: everything up to
//    and including the last '/' or '\' is removed ("../../etc/passwd" -> "passwd",
//    "C:\x\y.csv" -> "y.csv"), and a result of "." or ".." becomes "". The caller never uses a
//    file name as a path; stripping only keeps directory names out of what gets stored and shown.
//    filename="" yields a present, empty filename (a browser's empty file input).
//  - A body holding only the close delimiter is a valid form with no parts.
//  - Error messages name the problem and the 1-based part number, never data from the body.
#include "http/multipart.h"

#include <cstddef>
#include <utility>

namespace lastcall {
namespace {

constexpr size_t kMaxParts = 100;
constexpr size_t kMaxBoundaryBytes = 70;

using Params = std::vector<std::pair<std::string, std::string>>;

Status InvalidForm(std::string message) {
  return Status::Invalid("invalid_form", std::move(message));
}

std::string PartLabel(size_t index) { return "part " + std::to_string(index + 1); }

bool IsSpace(char c) { return c == ' ' || c == '\t'; }

char AsciiLower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (AsciiLower(a[i]) != AsciiLower(b[i])) return false;
  }
  return true;
}

std::string_view Trim(std::string_view s) {
  while (!s.empty() && IsSpace(s.front())) s.remove_prefix(1);
  while (!s.empty() && IsSpace(s.back())) s.remove_suffix(1);
  return s;
}

// The value before the first ';' of a header value, trimmed ("form-data", a media type).
std::string_view MainValue(std::string_view value) {
  return Trim(value.substr(0, value.find(';')));
}

// Parses the `*( ";" name "=" value )` list that follows the main value of a Content-Type or
// Content-Disposition header. Names are lower-cased; values are tokens (trimmed) or quoted
// strings (unquoted, see the escape rule at the top). Empty parameters (";;", a trailing ';') are
// skipped. nullopt when a parameter has no '=' or no name, a quoted string is not closed, or
// anything but ';' follows a quoted string.
std::optional<Params> ParseParams(std::string_view value) {
  Params params;
  size_t i = value.find(';');
  const size_t n = value.size();
  while (i < n) {
    ++i;  // past ';'
    while (i < n && IsSpace(value[i])) ++i;
    if (i == n) break;
    if (value[i] == ';') continue;
    const size_t name_start = i;
    while (i < n && value[i] != '=' && value[i] != ';') ++i;
    if (i == n || value[i] != '=') return std::nullopt;
    std::string_view raw_name = Trim(value.substr(name_start, i - name_start));
    if (raw_name.empty()) return std::nullopt;
    std::string name;
    name.reserve(raw_name.size());
    for (char c : raw_name) name += AsciiLower(c);
    ++i;  // past '='
    while (i < n && IsSpace(value[i])) ++i;
    std::string param_value;
    if (i < n && value[i] == '"') {
      ++i;
      bool closed = false;
      while (i < n) {
        const char c = value[i];
        if (c == '\\' && i + 1 < n && (value[i + 1] == '"' || value[i + 1] == '\\')) {
          param_value += value[i + 1];
          i += 2;
        } else if (c == '"') {
          ++i;
          closed = true;
          break;
        } else {
          param_value += c;
          ++i;
        }
      }
      if (!closed) return std::nullopt;
      while (i < n && IsSpace(value[i])) ++i;
      if (i < n && value[i] != ';') return std::nullopt;
    } else {
      const size_t value_start = i;
      while (i < n && value[i] != ';') ++i;
      param_value = std::string(Trim(value.substr(value_start, i - value_start)));
    }
    params.emplace_back(std::move(name), std::move(param_value));
  }
  return params;
}

// The boundary of a multipart/form-data Content-Type, or the error described in the header.
Result<std::string> BoundaryOf(std::string_view content_type) {
  if (!EqualsIgnoreCase(MainValue(content_type), "multipart/form-data")) {
    return Status::Unsupported("unsupported_media_type",
                               "expected Content-Type multipart/form-data");
  }
  std::optional<Params> params = ParseParams(content_type);
  if (!params.has_value()) return InvalidForm("malformed Content-Type parameters");
  std::optional<std::string> boundary;
  for (auto& [name, value] : *params) {
    if (name != "boundary") continue;
    if (boundary.has_value()) return InvalidForm("more than one boundary parameter");
    boundary = std::move(value);
  }
  if (!boundary.has_value()) return InvalidForm("Content-Type has no boundary parameter");
  if (boundary->empty() || boundary->size() > kMaxBoundaryBytes) {
    return InvalidForm("boundary must be 1 to 70 characters");
  }
  return std::move(*boundary);
}

// Strips any directory part from a client-supplied file name (see the top of the file).
std::string StripDirectories(std::string_view filename) {
  const size_t slash = filename.find_last_of("/\\");
  if (slash != std::string_view::npos) filename.remove_prefix(slash + 1);
  if (filename == "." || filename == "..") return std::string();
  return std::string(filename);
}

// Fills name and filename of *part from a Content-Disposition value.
Status ReadContentDisposition(std::string_view value, size_t index, MultipartPart* part) {
  if (!EqualsIgnoreCase(MainValue(value), "form-data")) {
    return InvalidForm(PartLabel(index) + ": Content-Disposition is not form-data");
  }
  std::optional<Params> params = ParseParams(value);
  if (!params.has_value()) {
    return InvalidForm(PartLabel(index) + ": malformed Content-Disposition parameters");
  }
  std::optional<std::string> name;
  for (auto& [key, param_value] : *params) {
    if (key == "name") {
      if (name.has_value()) return InvalidForm(PartLabel(index) + ": name given twice");
      name = std::move(param_value);
    } else if (key == "filename") {
      if (part->filename.has_value()) {
        return InvalidForm(PartLabel(index) + ": filename given twice");
      }
      part->filename = StripDirectories(param_value);
    }
  }
  if (!name.has_value() || name->empty()) {
    return InvalidForm(PartLabel(index) + ": Content-Disposition has no name");
  }
  part->name = std::move(*name);
  return Status::Ok();
}

// Parses one part: `span` runs from just after its delimiter line to just before the line break
// that starts the next delimiter.
Result<MultipartPart> ParsePart(std::string_view span, size_t index) {
  MultipartPart part;
  bool seen_disposition = false;
  bool seen_content_type = false;
  size_t pos = 0;
  size_t data_start = span.size();  // headers that run to the end leave no data
  while (pos < span.size()) {
    const size_t eol = span.find('\n', pos);
    const size_t line_end = eol == std::string_view::npos ? span.size() : eol;
    const size_t next = eol == std::string_view::npos ? span.size() : eol + 1;
    std::string_view line = span.substr(pos, line_end - pos);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    pos = next;
    if (line.empty()) {
      data_start = next;
      break;
    }
    if (IsSpace(line.front())) {
      return InvalidForm(PartLabel(index) + ": folded header lines are not supported");
    }
    const size_t colon = line.find(':');
    if (colon == std::string_view::npos || colon == 0) {
      return InvalidForm(PartLabel(index) + ": malformed header line");
    }
    const std::string_view name = Trim(line.substr(0, colon));
    const std::string_view value = Trim(line.substr(colon + 1));
    if (EqualsIgnoreCase(name, "Content-Disposition")) {
      if (seen_disposition) {
        return InvalidForm(PartLabel(index) + ": more than one Content-Disposition header");
      }
      seen_disposition = true;
      LASTCALL_RETURN_IF_ERROR(ReadContentDisposition(value, index, &part));
    } else if (EqualsIgnoreCase(name, "Content-Type")) {
      if (seen_content_type) {
        return InvalidForm(PartLabel(index) + ": more than one Content-Type header");
      }
      seen_content_type = true;
      part.content_type = std::string(value);
    }
  }
  if (!seen_disposition) {
    return InvalidForm(PartLabel(index) + ": no Content-Disposition header");
  }
  part.data.assign(span.data() + data_start, span.size() - data_start);
  return part;
}

// What follows a "--boundary" found at some position.
enum class DelimiterKind {
  kNone,   // not a delimiter: the boundary string is followed by other bytes
  kPart,   // a delimiter line; another part starts at `next`
  kClose,  // the close delimiter "--boundary--"
};

struct Delimiter {
  DelimiterKind kind = DelimiterKind::kNone;
  size_t next = 0;    // kPart: first byte of the next part
  bool crlf = false;  // kPart: the delimiter line ended in CRLF (not a bare LF)
};

// Classifies the bytes at `after` (just past "--boundary").
Delimiter ClassifyDelimiter(std::string_view body, size_t after) {
  Delimiter d;
  if (body.compare(after, 2, "--") == 0) {
    d.kind = DelimiterKind::kClose;
    return d;
  }
  size_t i = after;
  while (i < body.size() && IsSpace(body[i])) ++i;  // transport padding
  if (i < body.size() && body[i] == '\n') {
    d.kind = DelimiterKind::kPart;
    d.next = i + 1;
    return d;
  }
  if (i + 1 < body.size() && body[i] == '\r' && body[i + 1] == '\n') {
    d.kind = DelimiterKind::kPart;
    d.next = i + 2;
    d.crlf = true;
  }
  return d;
}

}  // namespace

Result<std::vector<MultipartPart>> ParseMultipart(std::string_view content_type,
                                                  std::string_view body) {
  Result<std::string> boundary = BoundaryOf(content_type);
  if (!boundary.ok()) return boundary.status();
  const std::string dash_boundary = "--" + *boundary;

  // The first delimiter: at the very start of the body or right after a '\n' in the preamble.
  Delimiter first;
  if (body.substr(0, dash_boundary.size()) == dash_boundary) {
    first = ClassifyDelimiter(body, dash_boundary.size());
  }
  if (first.kind == DelimiterKind::kNone) {
    const std::string lf_dash_boundary = "\n" + dash_boundary;
    size_t from = 0;
    while (first.kind == DelimiterKind::kNone) {
      const size_t hit = body.find(lf_dash_boundary, from);
      if (hit == std::string_view::npos) return InvalidForm("body does not contain the boundary");
      first = ClassifyDelimiter(body, hit + lf_dash_boundary.size());
      from = hit + 1;
    }
  }
  std::vector<MultipartPart> parts;
  if (first.kind == DelimiterKind::kClose) return parts;

  const std::string delimiter = (first.crlf ? "\r\n" : "\n") + dash_boundary;
  size_t part_start = first.next;
  for (;;) {
    // Find where this part ends: the next delimiter that is followed by a line break or "--".
    size_t from = part_start;
    size_t part_end = 0;
    Delimiter d;
    while (d.kind == DelimiterKind::kNone) {
      const size_t hit = body.find(delimiter, from);
      if (hit == std::string_view::npos) return InvalidForm("missing closing delimiter");
      d = ClassifyDelimiter(body, hit + delimiter.size());
      part_end = hit;
      from = hit + 1;
    }
    if (parts.size() == kMaxParts) return InvalidForm("more than 100 parts");
    Result<MultipartPart> part =
        ParsePart(body.substr(part_start, part_end - part_start), parts.size());
    if (!part.ok()) return part.status();
    parts.push_back(std::move(part).value());
    if (d.kind == DelimiterKind::kClose) return parts;
    part_start = d.next;
  }
}

}  // namespace lastcall
