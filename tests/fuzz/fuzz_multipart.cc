// ParseMultipart (src/http/multipart.cc), two ways over each input:
//  1. raw: the bytes up to the first '\n' are the Content-Type header, the rest is the body.
//     Properties: only the documented errors, with UTF-8 messages; at most 100 parts, each with a
//     non-empty name; part data is a slice of the body; file names carry no directory part.
//  2. round trip: the input describes a form (FuzzedDataProvider); the target writes it as a
//     browser does (CRLF, quoted parameters) and parses it back: the same parts must come out.
#include <fuzzer/FuzzedDataProvider.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz_check.h"
#include "http/multipart.h"

namespace {

using lastcall::MultipartPart;

void CheckRaw(std::string_view input) {
  const size_t nl = input.find('\n');
  const std::string_view content_type = input.substr(0, nl);
  const std::string_view body = nl == std::string_view::npos ? "" : input.substr(nl + 1);
  auto r = lastcall::ParseMultipart(content_type, body);
  if (!r.ok()) {
    const auto& st = r.status();
    FUZZ_CHECK((st.code() == lastcall::Code::kUnsupported && st.error() == "unsupported_media_type") ||
                   (st.code() == lastcall::Code::kInvalidArgument && st.error() == "invalid_form"),
               st.error() + ": " + st.message());
    FUZZ_CHECK(lastcall::fuzz::IsUtf8(st.message()), "error message is not UTF-8");
    return;
  }
  FUZZ_CHECK(r->size() <= 100, "more than 100 parts");
  for (const MultipartPart& p : *r) {
    FUZZ_CHECK(!p.name.empty(), "part without a name");
    FUZZ_CHECK(p.data.empty() || body.find(p.data) != std::string_view::npos,
               "part data is not a slice of the body");
    if (p.filename) {
      FUZZ_CHECK(p.filename->find('/') == std::string::npos &&
                     p.filename->find('\\') == std::string::npos && *p.filename != "." &&
                     *p.filename != "..",
                 "file name keeps a directory part: " + *p.filename);
    }
  }
}

// Bytes allowed inside a quoted parameter without escaping, as a browser writes them.
std::string QuotedText(FuzzedDataProvider& in, size_t max, bool file_name) {
  std::string s = in.ConsumeRandomLengthString(max);
  std::string out;
  for (char c : s) {
    if (c == '"' || c == '\\' || c == '\r' || c == '\n' || c == '\0') continue;
    if (file_name && c == '/') continue;
    out.push_back(c);
  }
  return out;
}

void CheckRoundTrip(const uint8_t* data, size_t size) {
  FuzzedDataProvider in(data, size);
  const std::string boundary = "----lastcallFuzzBoundary" + std::to_string(in.ConsumeIntegral<uint16_t>());
  const size_t n = in.ConsumeIntegralInRange<size_t>(0, 5);
  std::vector<MultipartPart> sent;
  std::string body;
  for (size_t i = 0; i < n && in.remaining_bytes() > 0; ++i) {
    MultipartPart p;
    p.name = QuotedText(in, 20, false);
    if (p.name.empty()) p.name = "f" + std::to_string(i);
    if (in.ConsumeBool()) {
      p.filename = QuotedText(in, 20, true);
      if (*p.filename == "." || *p.filename == "..") p.filename = "";
    }
    if (in.ConsumeBool()) p.content_type = in.PickValueInArray({"text/csv", "application/x-ofx", "application/octet-stream"});
    p.data = in.ConsumeRandomLengthString(200);
    if (p.data.find(boundary) != std::string::npos) return;  // not a form a browser could send
    body += "--" + boundary + "\r\n";
    body += "Content-Disposition: form-data; name=\"" + p.name + "\"";
    if (p.filename) body += "; filename=\"" + *p.filename + "\"";
    body += "\r\n";
    if (!p.content_type.empty()) body += "Content-Type: " + p.content_type + "\r\n";
    body += "\r\n" + p.data + "\r\n";
    sent.push_back(std::move(p));
  }
  body += "--" + boundary + "--\r\n";
  auto r = lastcall::ParseMultipart("multipart/form-data; boundary=" + boundary, body);
  FUZZ_CHECK(r.ok(), r.ok() ? "" : r.status().message());
  FUZZ_CHECK(r->size() == sent.size(), "part count differs");
  for (size_t i = 0; i < sent.size(); ++i) {
    const MultipartPart& a = sent[i];
    const MultipartPart& b = (*r)[i];
    FUZZ_CHECK(a.name == b.name, "name differs: " + b.name);
    FUZZ_CHECK(a.filename == b.filename, "filename differs");
    FUZZ_CHECK(a.content_type == b.content_type, "content type differs");
    FUZZ_CHECK(a.data == b.data, "data differs");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  CheckRaw(std::string_view(reinterpret_cast<const char*>(data), size));
  CheckRoundTrip(data, size);
  return 0;
}
