// Standard Webhooks signing (https://www.standardwebhooks.com): what a webhook consumer checks.
// A secret is "whsec_" + base64 of 32 CSPRNG bytes; the HMAC key is the decoded bytes. The
// signature of a message is "v1," + base64(HMAC-SHA256(key, "<webhook-id>.<webhook-timestamp>.<body>")),
// and the webhook-signature header lists one such signature per valid secret, space-separated
// (two during a secret rotation).
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace lastcall {

inline constexpr char kWebhookSecretPrefix[] = "whsec_";
inline constexpr char kConsumerTokenPrefix[] = "lcc_";  // consumer tokens (not JWTs)

// A fresh secret, "whsec_" + base64(32 CSPRNG bytes).
std::string NewWebhookSecret();
// A fresh consumer token, "lcc_" + base64url(32 CSPRNG bytes).
std::string NewConsumerToken();
// Lower-case hex SHA-256 of bytes.
std::string Sha256Hex(std::string_view bytes);
// SHA-256 hex of a token: the only form in which tokens are stored.
inline std::string TokenHash(std::string_view token) { return Sha256Hex(token); }

std::string Base64Encode(std::string_view bytes);
// Errors: kInvalidArgument "invalid_base64".
Result<std::string> Base64Decode(std::string_view text);

// "v1,<base64 signature>" of id.timestamp.body with one secret. Errors: the secret is not
// "whsec_<base64>".
Result<std::string> SignWebhook(const std::string& secret, const std::string& id,
                                int64_t timestamp_seconds, std::string_view body);
// The webhook-signature header value: one signature per secret, space-separated.
Result<std::string> SignatureHeader(const std::vector<std::string>& secrets, const std::string& id,
                                    int64_t timestamp_seconds, std::string_view body);

}  // namespace lastcall
