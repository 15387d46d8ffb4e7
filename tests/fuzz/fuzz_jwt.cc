// VerifyJwt, SignJwt and base64url (src/http/jwt.cc). Each input is used three ways:
//  1. as a raw token: it can never be accepted (nobody can forge the HMAC), and the refusal is
//     kUnauthenticated "unauthorized";
//  2. as a header and a payload that the target signs with the right secret: the verdict must
//     match an independent reading of the claims (alg HS256, typ JWT if present, no crit, sub a
//     non-empty string of at most 128 bytes, exp an int64 after now - 30 s, nbf before now + 30 s);
//  3. as claims for SignJwt: the signed token verifies to the same sub and role, and changing
//     any one character of it makes it fail.
// Base64UrlDecode(Base64UrlEncode(x)) == x for every x.
#include <fuzzer/FuzzedDataProvider.h>
#include <nlohmann/json.hpp>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <cstdint>
#include <limits>
#include <string>
#include <string_view>

#include "fuzz_check.h"
#include "http/jwt.h"

namespace {

using lastcall::Base64UrlDecode;
using lastcall::Base64UrlEncode;
using Json = nlohmann::json;

constexpr std::string_view kSecret = "fuzz-secret-0123456789abcdef0123456789";
constexpr lastcall::WallMillis kNow = 1767225600000;  // 2026-01-01T00:00:00Z
constexpr int64_t kNowSeconds = kNow / 1000;

std::string Sign(std::string_view signing_input) {
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), kSecret.data(), static_cast<int>(kSecret.size()),
       reinterpret_cast<const unsigned char*>(signing_input.data()), signing_input.size(), mac, &len);
  return Base64UrlEncode(std::string_view(reinterpret_cast<const char*>(mac), len));
}

void CheckRefusal(const lastcall::Result<lastcall::JwtClaims>& r) {
  FUZZ_CHECK(r.status().code() == lastcall::Code::kUnauthenticated, r.status().message());
  FUZZ_CHECK(r.status().error() == "unauthorized", r.status().error());
}

std::optional<int64_t> IntClaim(const Json& j, const char* key, bool* bad) {
  auto it = j.find(key);
  if (it == j.end()) return std::nullopt;
  if (it->is_number_unsigned()) {
    if (it->get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) *bad = true;
    return static_cast<int64_t>(it->get<uint64_t>());
  }
  if (it->is_number_integer()) return it->get<int64_t>();
  *bad = true;
  return std::nullopt;
}

// What the contract in jwt.h says about a correctly signed header and payload.
bool ShouldAccept(const std::string& header_text, const std::string& payload_text) {
  Json h = Json::parse(header_text, nullptr, false);
  Json p = Json::parse(payload_text, nullptr, false);
  if (h.is_discarded() || !h.is_object() || p.is_discarded() || !p.is_object()) return false;
  if (!h.contains("alg") || h["alg"] != "HS256") return false;
  if (h.contains("typ") && h["typ"] != "JWT") return false;
  if (h.contains("crit")) return false;
  if (!p.contains("sub") || !p["sub"].is_string()) return false;
  const std::string sub = p["sub"].get<std::string>();
  if (sub.empty() || sub.size() > 128) return false;
  if (p.contains("role") && !p["role"].is_string()) return false;
  bool bad = false;
  auto exp = IntClaim(p, "exp", &bad);
  auto nbf = IntClaim(p, "nbf", &bad);
  (void)IntClaim(p, "iat", &bad);
  if (bad || !exp) return false;
  if (*exp <= kNowSeconds - 30) return false;
  if (nbf && *nbf > kNowSeconds + 30) return false;
  return true;
}

void CheckSignedParts(FuzzedDataProvider& in) {
  const std::string header = in.ConsumeRandomLengthString(200);
  const std::string payload = in.ConsumeRandomLengthString(400);
  const std::string signing_input = Base64UrlEncode(header) + "." + Base64UrlEncode(payload);
  const std::string token = signing_input + "." + Sign(signing_input);
  auto r = lastcall::VerifyJwt(token, kSecret, kNow);
  const bool expected = ShouldAccept(header, payload);
  FUZZ_CHECK(r.ok() == expected, r.ok() ? "accepted " + payload : "refused: " + r.status().message());
  if (!r.ok()) return CheckRefusal(r);
  Json p = Json::parse(payload);
  FUZZ_CHECK(r->sub == p["sub"].get<std::string>(), "sub differs");
  FUZZ_CHECK(r->role == (p.contains("role") ? p["role"].get<std::string>() : ""), "role differs");
}

void CheckSignJwt(FuzzedDataProvider& in) {
  const std::string sub = in.ConsumeRandomLengthString(140);
  const std::string role = in.ConsumeRandomLengthString(20);
  const int64_t ttl = in.ConsumeIntegralInRange<int64_t>(-100000, 100000000);
  const std::string token = lastcall::SignJwt(sub, role, ttl, kSecret, kNow);
  auto r = lastcall::VerifyJwt(token, kSecret, kNow);
  const bool utf8 = lastcall::fuzz::IsUtf8(sub) && lastcall::fuzz::IsUtf8(role);
  const bool expected = !sub.empty() && sub.size() <= 128 && ttl > -30 && utf8;
  if (utf8) FUZZ_CHECK(r.ok() == expected, r.ok() ? "accepted" : r.status().message());
  if (!r.ok()) return CheckRefusal(r);
  if (utf8) FUZZ_CHECK(r->sub == sub && r->role == role, "claims differ after signing");
  // Any single-character change is refused.
  const size_t pos = in.ConsumeIntegralInRange<size_t>(0, token.size() - 1);
  const char c = in.ConsumeIntegral<char>();
  if (c != token[pos]) {
    std::string tampered = token;
    tampered[pos] = c;
    auto t = lastcall::VerifyJwt(tampered, kSecret, kNow);
    FUZZ_CHECK(!t.ok(), "a tampered token was accepted: " + tampered);
    CheckRefusal(t);
  }
  // The right token under another secret is refused.
  auto other = lastcall::VerifyJwt(token, "another-secret-of-enough-length-xxxxxxxx", kNow);
  FUZZ_CHECK(!other.ok(), "accepted under the wrong secret");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view raw(reinterpret_cast<const char*>(data), size);
  auto r = lastcall::VerifyJwt(raw, kSecret, kNow);
  FUZZ_CHECK(!r.ok(), "an unsigned input was accepted");
  CheckRefusal(r);

  auto decoded = Base64UrlDecode(Base64UrlEncode(raw));
  FUZZ_CHECK(decoded && *decoded == raw, "base64url round trip");
  if (auto d = Base64UrlDecode(raw)) {
    // What decodes re-encodes to the same text, less any padding: no two spellings of one value.
    std::string_view unpadded = raw;
    while (!unpadded.empty() && unpadded.back() == '=') unpadded.remove_suffix(1);
    FUZZ_CHECK(Base64UrlEncode(*d) == unpadded, "non-canonical base64url accepted");
  }

  FuzzedDataProvider in(data, size);
  CheckSignedParts(in);
  CheckSignJwt(in);
  return 0;
}
