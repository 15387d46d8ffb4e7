// AWS Signature Version 4 for S3 requests (header-based authentication), with OpenSSL's SHA-256
// and HMAC-SHA256. Pure functions: the caller supplies the time, so tests check them against
// AWS's published examples.
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace lastcall::sigv4 {

struct Credentials {
  std::string access_key_id;
  std::string secret_access_key;  // never logged
  std::string session_token;      // optional (temporary credentials): sent as x-amz-security-token
};

struct Request {
  std::string method;                                        // "GET", "PUT", ...
  std::string path;                                          // already URI-encoded, e.g. "/bucket/key"
  std::vector<std::pair<std::string, std::string>> query;    // raw (not yet encoded) names and values
  std::vector<std::pair<std::string, std::string>> headers;  // every header to sign (host included)
  std::string payload_sha256;                                // hex SHA-256 of the body
};

// Lower-case hex SHA-256 of data.
std::string Sha256Hex(std::string_view data);
// Raw HMAC-SHA256 of data under key.
std::string HmacSha256(std::string_view key, std::string_view data);
// RFC 3986 encoding as SigV4 wants it: unreserved characters stay, everything else is %XX
// (upper case); '/' stays when keep_slash.
std::string UriEncode(std::string_view s, bool keep_slash);

// The canonical request: method, path, sorted encoded query, sorted lower-case trimmed headers,
// the signed header names, the payload hash; each on its own line.
std::string CanonicalRequest(const Request& r);
// "AWS4-HMAC-SHA256\n<amz_date>\n<scope>\n<hex sha256 of canonical request>".
std::string StringToSign(const std::string& amz_date, const std::string& scope,
                         const std::string& canonical_request);
// The derived key: HMAC chain over date (YYYYMMDD), region, service, "aws4_request".
std::string SigningKey(const std::string& secret, const std::string& date,
                       const std::string& region, const std::string& service);
// The value of the Authorization header for r signed at amz_date (YYYYMMDD'T'HHMMSS'Z').
std::string Authorization(const Request& r, const Credentials& c, const std::string& amz_date,
                          const std::string& region, const std::string& service);

}  // namespace lastcall::sigv4
