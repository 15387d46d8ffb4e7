// ParseRequestTarget (src/http/server.cc): the request line's target, split into the decoded path
// and query parameters before any handler sees them. Properties: a refusal is kInvalidArgument
// "bad_request"; an accepted path starts with '/'; and writing the result back out with every
// byte percent-encoded parses to the same path and parameters (decoding loses nothing and
// invents nothing).
#include <cstdint>
#include <map>
#include <string>
#include <string_view>

#include "fuzz_check.h"
#include "http/server.h"

namespace {

std::string Encode(std::string_view s) {
  static const char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (char c : s) {
    const auto b = static_cast<unsigned char>(c);
    if ((b >= 'a' && b <= 'z') || (b >= 'A' && b <= 'Z') || (b >= '0' && b <= '9') || b == '-' ||
        b == '_' || b == '.' || b == '~') {
      out.push_back(c);
    } else {
      out.push_back('%');
      out.push_back(kHex[b >> 4]);
      out.push_back(kHex[b & 15]);
    }
  }
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view target(reinterpret_cast<const char*>(data), size);
  std::string path;
  std::map<std::string, std::string> query;
  lastcall::Status st = lastcall::ParseRequestTarget(target, &path, &query);
  if (!st.ok()) {
    FUZZ_CHECK(st.code() == lastcall::Code::kInvalidArgument && st.error() == "bad_request",
               st.error());
    return 0;
  }
  FUZZ_CHECK(!path.empty() && path[0] == '/', path);
  for (const auto& [k, v] : query) FUZZ_CHECK(!k.empty(), "empty query key kept");

  std::string again = "/" + Encode(std::string_view(path).substr(1));
  if (!query.empty()) {
    again += '?';
    bool first = true;
    for (const auto& [k, v] : query) {
      if (!first) again += '&';
      first = false;
      again += Encode(k) + "=" + Encode(v);
    }
  }
  std::string path2;
  std::map<std::string, std::string> query2;
  lastcall::Status st2 = lastcall::ParseRequestTarget(again, &path2, &query2);
  FUZZ_CHECK(st2.ok(), again);
  FUZZ_CHECK(path2 == path, again);
  FUZZ_CHECK(query2 == query, again);
  return 0;
}
