// HS256 JSON Web Tokens (RFC 7519 / RFC 7515, compact serialization only).
//
// Contract details the header leaves open, decided here:
//  - Verification order: size and shape, header (alg before anything else), signature, then the
//    payload. The payload is not parsed until the signature has been checked.
//  - Segments must be base64url *without* padding ('=' in a token is malformed), and encodings
//    with non-zero unused trailing bits are rejected, so every byte string has one spelling.
//  - Header: "alg" must be present and a string; the only accepted value is exactly "HS256"
//    ("unsupported alg" otherwise, including "none" and "hs256"). "typ", when present, must be
//    exactly "JWT". A "crit" member is refused: we implement no extensions (RFC 7515 4.1.11).
//  - Claims: "sub" missing or "" -> "missing sub"; not a string or longer than 128 bytes ->
//    "malformed token". "exp" missing -> "missing exp"; "exp", "nbf", "iat" must be JSON integers
//    that fit int64 (1.0, 1e9, "123", null are malformed). "role" absent -> "", otherwise it must
//    be a string. "iat" is read but not checked against the clock. Other claims are ignored.
//  - Time: now is floored to whole seconds; the token is expired when exp + 30 <= now and not yet
//    valid ("token not yet valid") when nbf - 30 > now.
//  - Every failure is kUnauthenticated / "unauthorized" with a fixed message; neither the token,
//    the secret nor any claim value is ever put into a message.
#include "http/jwt.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/params.h>

#include <array>
#include <climits>
#include <exception>
#include <limits>
#include <nlohmann/json.hpp>
#include <utility>

namespace lastcall {
namespace {

using Json = nlohmann::json;

constexpr size_t kMaxTokenBytes = 8 * 1024;
constexpr size_t kMaxSubBytes = 128;
constexpr int64_t kLeewaySeconds = 30;
constexpr size_t kSha256Bytes = 32;

constexpr char kMalformed[] = "malformed token";
constexpr char kBadSignature[] = "bad signature";
constexpr char kUnsupportedAlg[] = "unsupported alg";
constexpr char kMissingSub[] = "missing sub";
constexpr char kMissingExp[] = "missing exp";
constexpr char kExpired[] = "token expired";
constexpr char kNotYetValid[] = "token not yet valid";

constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

using Digest = std::array<unsigned char, kSha256Bytes>;

// The 6-bit value of a base64url character, or -1 for any other character.
int DecodeChar(char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '-') return 62;
  if (c == '_') return 63;
  return -1;
}

// One thread's HMAC-SHA256 context, keyed once. OpenSSL 3's one-shot HMAC() fetches the
// algorithm and derives the key's pads on every call; here that happens once per thread and
// secret, and each MAC re-initializes from the stored pads. The copy of the key is wiped on exit.
struct KeyedHmac {
  EVP_MAC* mac = nullptr;
  EVP_MAC_CTX* ctx = nullptr;
  std::string key;  // the secret ctx is keyed with
  ~KeyedHmac() {
    EVP_MAC_CTX_free(ctx);
    EVP_MAC_free(mac);
    OPENSSL_cleanse(key.data(), key.size());
  }
};

// HMAC-SHA256 of data under key into *out, one-shot (also for an empty key). False only when
// OpenSSL fails.
bool OneShotHmacSha256(std::string_view key, std::string_view data, Digest* out) {
  if (key.size() > static_cast<size_t>(INT_MAX)) return false;
  // OpenSSL wants a non-null key pointer even for an empty key.
  static const unsigned char kEmpty = 0;
  const unsigned char* key_bytes =
      key.empty() ? &kEmpty : reinterpret_cast<const unsigned char*>(key.data());
  static const unsigned char kNoData = 0;
  const unsigned char* data_bytes =
      data.empty() ? &kNoData : reinterpret_cast<const unsigned char*>(data.data());
  unsigned int len = 0;
  const unsigned char* mac = HMAC(EVP_sha256(), key_bytes, static_cast<int>(key.size()), data_bytes,
                                  data.size(), out->data(), &len);
  return mac != nullptr && len == kSha256Bytes;
}

// HMAC-SHA256 of data under key into *out, with the calling thread's keyed context (rekeyed when
// the secret changes). False only when OpenSSL fails.
bool HmacSha256(std::string_view key, std::string_view data, Digest* out) {
  if (key.empty()) return OneShotHmacSha256(key, data, out);
  thread_local KeyedHmac k;
  if (k.ctx == nullptr || k.key != key) {
    if (k.mac == nullptr) k.mac = EVP_MAC_fetch(nullptr, "HMAC", nullptr);
    if (k.mac == nullptr) return false;
    EVP_MAC_CTX_free(k.ctx);
    OPENSSL_cleanse(k.key.data(), k.key.size());
    k.key.clear();
    k.ctx = EVP_MAC_CTX_new(k.mac);
    if (k.ctx == nullptr) return false;
    char digest[] = "SHA256";
    OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string("digest", digest, 0),
                           OSSL_PARAM_construct_end()};
    if (EVP_MAC_init(k.ctx, reinterpret_cast<const unsigned char*>(key.data()), key.size(),
                     params) != 1) {
      EVP_MAC_CTX_free(k.ctx);
      k.ctx = nullptr;
      return false;
    }
    k.key = std::string(key);
  } else if (EVP_MAC_init(k.ctx, nullptr, 0, nullptr) != 1) {  // same key: restart from its pads
    return false;
  }
  size_t len = 0;
  if (EVP_MAC_update(k.ctx, reinterpret_cast<const unsigned char*>(data.data()), data.size()) != 1 ||
      EVP_MAC_final(k.ctx, out->data(), &len, out->size()) != 1) {
    return false;
  }
  return len == kSha256Bytes;
}

// floor(a / b) for b > 0.
int64_t FloorDiv(int64_t a, int64_t b) {
  int64_t q = a / b;
  if (a % b != 0 && a < 0) --q;
  return q;
}

// Decodes one token segment: base64url, no padding allowed. nullopt when invalid.
std::optional<std::string> DecodeSegment(std::string_view segment) {
  if (segment.find('=') != std::string_view::npos) return std::nullopt;
  return Base64UrlDecode(segment);
}

// Parses text as a JSON object; nullopt for invalid JSON (including invalid UTF-8) or any other
// JSON value. Does not throw.
std::optional<Json> ParseObject(const std::string& text) {
  Json value = Json::parse(text, /*cb=*/nullptr, /*allow_exceptions=*/false);
  if (value.is_discarded() || !value.is_object()) return std::nullopt;
  return value;
}

// Reads an optional integer claim. Returns false when the member is present but is not a JSON
// integer representable as int64; *out is nullopt when the member is absent.
bool ReadIntClaim(const Json& object, const char* key, std::optional<int64_t>* out) {
  out->reset();
  auto it = object.find(key);
  if (it == object.end()) return true;
  if (it->is_number_unsigned()) {
    uint64_t u = it->get<uint64_t>();
    if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return false;
    *out = static_cast<int64_t>(u);
    return true;
  }
  if (it->is_number_integer()) {
    *out = it->get<int64_t>();
    return true;
  }
  return false;
}

// Reads an optional string claim. Returns false when present but not a string.
bool ReadStringClaim(const Json& object, const char* key, std::optional<std::string>* out) {
  out->reset();
  auto it = object.find(key);
  if (it == object.end()) return true;
  if (!it->is_string()) return false;
  *out = it->get<std::string>();
  return true;
}

// Checks the JOSE header: "malformed token" or "unsupported alg" as described at the top.
Status CheckHeader(const Json& header) {
  auto alg = header.find("alg");
  if (alg == header.end() || !alg->is_string()) return Status::Unauthenticated(kMalformed);
  if (alg->get_ref<const std::string&>() != "HS256") {
    return Status::Unauthenticated(kUnsupportedAlg);
  }
  auto typ = header.find("typ");
  if (typ != header.end() && (!typ->is_string() || typ->get_ref<const std::string&>() != "JWT")) {
    return Status::Unauthenticated(kMalformed);
  }
  if (header.contains("crit")) return Status::Unauthenticated(kMalformed);
  return Status::Ok();
}

// Reads and checks the claims of an already authenticated payload.
Result<JwtClaims> ReadClaims(const Json& payload, int64_t now_seconds) {
  std::optional<std::string> sub;
  std::optional<std::string> role;
  std::optional<int64_t> exp;
  std::optional<int64_t> nbf;
  std::optional<int64_t> iat;
  if (!ReadStringClaim(payload, "sub", &sub) || !ReadStringClaim(payload, "role", &role) ||
      !ReadIntClaim(payload, "exp", &exp) || !ReadIntClaim(payload, "nbf", &nbf) ||
      !ReadIntClaim(payload, "iat", &iat)) {
    return Status::Unauthenticated(kMalformed);
  }
  if (!sub.has_value() || sub->empty()) return Status::Unauthenticated(kMissingSub);
  if (sub->size() > kMaxSubBytes) return Status::Unauthenticated(kMalformed);
  if (!exp.has_value()) return Status::Unauthenticated(kMissingExp);
  // now_seconds is a wall time in seconds, far from the int64 limits, so +-30 cannot overflow;
  // the claim values themselves are never offset.
  if (*exp <= now_seconds - kLeewaySeconds) return Status::Unauthenticated(kExpired);
  if (nbf.has_value() && *nbf > now_seconds + kLeewaySeconds) {
    return Status::Unauthenticated(kNotYetValid);
  }
  JwtClaims claims;
  claims.sub = std::move(*sub);
  claims.role = role.has_value() ? std::move(*role) : std::string();
  claims.exp = *exp;
  claims.nbf = nbf;
  claims.iat = iat;
  return claims;
}

Result<JwtClaims> VerifyJwtOrThrow(std::string_view token, std::string_view secret,
                                   WallMillis now) {
  if (token.size() > kMaxTokenBytes) return Status::Unauthenticated(kMalformed);
  const size_t dot1 = token.find('.');
  if (dot1 == std::string_view::npos) return Status::Unauthenticated(kMalformed);
  const size_t dot2 = token.find('.', dot1 + 1);
  if (dot2 == std::string_view::npos || token.find('.', dot2 + 1) != std::string_view::npos) {
    return Status::Unauthenticated(kMalformed);
  }
  const std::string_view header_b64 = token.substr(0, dot1);
  const std::string_view payload_b64 = token.substr(dot1 + 1, dot2 - dot1 - 1);
  const std::string_view signature_b64 = token.substr(dot2 + 1);
  if (header_b64.empty() || payload_b64.empty()) return Status::Unauthenticated(kMalformed);

  // The header first: an algorithm we do not implement is refused before the signature is
  // looked at.
  std::optional<std::string> header_text = DecodeSegment(header_b64);
  if (!header_text.has_value()) return Status::Unauthenticated(kMalformed);
  std::optional<Json> header = ParseObject(*header_text);
  if (!header.has_value()) return Status::Unauthenticated(kMalformed);
  LASTCALL_RETURN_IF_ERROR(CheckHeader(*header));

  std::optional<std::string> signature = DecodeSegment(signature_b64);
  if (!signature.has_value()) return Status::Unauthenticated(kMalformed);
  Digest expected{};
  if (!HmacSha256(secret, token.substr(0, dot2), &expected)) {
    return Status::Internal("HMAC-SHA256 failed");
  }
  // The length of a signature is not secret; its bytes are compared in constant time.
  if (signature->size() != expected.size() ||
      CRYPTO_memcmp(signature->data(), expected.data(), expected.size()) != 0) {
    return Status::Unauthenticated(kBadSignature);
  }

  std::optional<std::string> payload_text = DecodeSegment(payload_b64);
  if (!payload_text.has_value()) return Status::Unauthenticated(kMalformed);
  std::optional<Json> payload = ParseObject(*payload_text);
  if (!payload.has_value()) return Status::Unauthenticated(kMalformed);
  return ReadClaims(*payload, FloorDiv(now, 1000));
}

}  // namespace

Result<JwtClaims> VerifyJwt(std::string_view token, std::string_view secret, WallMillis now) {
  // The edge: no exception leaves this function.
  try {
    return VerifyJwtOrThrow(token, secret, now);
  } catch (const nlohmann::json::exception&) {
    return Status::Unauthenticated(kMalformed);
  } catch (const std::exception&) {
    return Status::Internal("token verification failed");
  }
}

// Does not validate its inputs (an empty or over-long sub yields a token VerifyJwt refuses).
// An empty role is left out of the payload. Strings that are not valid UTF-8 are signed with
// U+FFFD in place of the bad bytes. exp saturates at the int64 limits. Returns "" only if
// OpenSSL's HMAC fails or JSON serialization throws, which do not happen in practice.
std::string SignJwt(const std::string& sub, const std::string& role, int64_t ttl_seconds,
                    std::string_view secret, WallMillis now) {
  try {
    const int64_t now_seconds = FloorDiv(now, 1000);
    constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
    constexpr int64_t kMin = std::numeric_limits<int64_t>::min();
    int64_t exp = 0;
    if (ttl_seconds > 0 && now_seconds > kMax - ttl_seconds) {
      exp = kMax;
    } else if (ttl_seconds < 0 && now_seconds < kMin - ttl_seconds) {
      exp = kMin;
    } else {
      exp = now_seconds + ttl_seconds;
    }
    Json payload = Json::object();
    payload["sub"] = sub;
    if (!role.empty()) payload["role"] = role;
    payload["iat"] = now_seconds;
    payload["exp"] = exp;
    const std::string payload_json =
        payload.dump(/*indent=*/-1, /*indent_char=*/' ', /*ensure_ascii=*/false,
                     nlohmann::json::error_handler_t::replace);
    std::string token = Base64UrlEncode(R"({"alg":"HS256","typ":"JWT"})");
    token += '.';
    token += Base64UrlEncode(payload_json);
    Digest mac{};
    if (!HmacSha256(secret, token, &mac)) return std::string();
    token += '.';
    token +=
        Base64UrlEncode(std::string_view(reinterpret_cast<const char*>(mac.data()), mac.size()));
    return token;
  } catch (const nlohmann::json::exception&) {
    return std::string();
  }
}

std::string Base64UrlEncode(std::string_view bytes) {
  std::string out;
  out.reserve((bytes.size() * 4 + 2) / 3);
  size_t i = 0;
  for (; i + 3 <= bytes.size(); i += 3) {
    const uint32_t n = (static_cast<uint32_t>(static_cast<unsigned char>(bytes[i])) << 16) |
                       (static_cast<uint32_t>(static_cast<unsigned char>(bytes[i + 1])) << 8) |
                       static_cast<uint32_t>(static_cast<unsigned char>(bytes[i + 2]));
    out += kAlphabet[(n >> 18) & 63];
    out += kAlphabet[(n >> 12) & 63];
    out += kAlphabet[(n >> 6) & 63];
    out += kAlphabet[n & 63];
  }
  const size_t rest = bytes.size() - i;
  if (rest == 1) {
    const uint32_t n = static_cast<uint32_t>(static_cast<unsigned char>(bytes[i])) << 16;
    out += kAlphabet[(n >> 18) & 63];
    out += kAlphabet[(n >> 12) & 63];
  } else if (rest == 2) {
    const uint32_t n = (static_cast<uint32_t>(static_cast<unsigned char>(bytes[i])) << 16) |
                       (static_cast<uint32_t>(static_cast<unsigned char>(bytes[i + 1])) << 8);
    out += kAlphabet[(n >> 18) & 63];
    out += kAlphabet[(n >> 12) & 63];
    out += kAlphabet[(n >> 6) & 63];
  }
  return out;
}

// Padding, when present, must complete the last 4-character group ("Zg==", "Zm8="); at most two
// '=' are allowed and only at the end. Unused trailing bits must be zero ("Zh" is refused: it
// would decode to the same byte as "Zg").
std::optional<std::string> Base64UrlDecode(std::string_view text) {
  size_t padding = 0;
  while (padding < 2 && !text.empty() && text.back() == '=') {
    text.remove_suffix(1);
    ++padding;
  }
  if (text.size() % 4 == 1) return std::nullopt;
  if (padding > 0 && (text.size() + padding) % 4 != 0) return std::nullopt;
  std::string out;
  out.reserve(text.size() / 4 * 3 + 2);
  uint32_t acc = 0;
  int bits = 0;
  for (char c : text) {
    const int v = DecodeChar(c);
    if (v < 0) return std::nullopt;
    acc = (acc << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += static_cast<char>((acc >> bits) & 0xFF);
      acc &= (1u << bits) - 1;
    }
  }
  if (acc != 0) return std::nullopt;  // the leftover (< 8) bits must be zero
  return out;
}

}  // namespace lastcall
