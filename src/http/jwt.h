// JSON Web Tokens, HS256 only (RFC 7519, RFC 7515), signed and verified with OpenSSL HMAC.
// Any other "alg" (including "none") is refused before the signature is looked at.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "common/clock.h"
#include "common/status.h"

namespace lastcall {

struct JwtClaims {
  std::string sub;   // the user id; required, non-empty, at most 128 bytes
  std::string role;  // "" or e.g. "operator"
  int64_t exp = 0;   // seconds since epoch; required
  std::optional<int64_t> nbf;
  std::optional<int64_t> iat;
};

// Verifies a compact JWS "header.payload.signature": base64url without padding, header
// {"alg":"HS256"} ("typ" optional, must be "JWT" if present), HMAC-SHA256 over
// "header.payload" compared in constant time, exp required and > now (seconds), nbf (if
// present) <= now; a leeway of 30 s applies to both. Errors are kUnauthenticated with error
// "unauthorized" and a message naming the reason ("token expired", "bad signature",
// "unsupported alg", "missing sub", "malformed token"), never echoing the token or secret.
Result<JwtClaims> VerifyJwt(std::string_view token, std::string_view secret, WallMillis now);

// Signs claims into a compact HS256 JWT. iat is set to now; exp = now + ttl_seconds.
std::string SignJwt(const std::string& sub, const std::string& role, int64_t ttl_seconds,
                    std::string_view secret, WallMillis now);

// Base64url without padding (RFC 4648 section 5).
std::string Base64UrlEncode(std::string_view bytes);
// Decodes base64url; padding is tolerated; any other character is an error (nullopt).
std::optional<std::string> Base64UrlDecode(std::string_view text);

}  // namespace lastcall
