#include "webhooks/signature.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#include <cstdlib>

namespace lastcall {

namespace {

std::string RandomBytes(size_t n) {
  std::string out(n, '\0');
  if (RAND_bytes(reinterpret_cast<unsigned char*>(out.data()), static_cast<int>(n)) != 1) {
    std::abort();  // no safe fallback for missing entropy (see common/ids.h)
  }
  return out;
}

}  // namespace

std::string Base64Encode(std::string_view bytes) {
  std::string out(4 * ((bytes.size() + 2) / 3) + 1, '\0');
  int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                          reinterpret_cast<const unsigned char*>(bytes.data()),
                          static_cast<int>(bytes.size()));
  out.resize(static_cast<size_t>(n));
  return out;
}

Result<std::string> Base64Decode(std::string_view text) {
  if (text.empty() || text.size() % 4 != 0) {
    return Status::Invalid("invalid_base64", "not padded base64");
  }
  std::string out(3 * text.size() / 4, '\0');
  int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                          reinterpret_cast<const unsigned char*>(text.data()),
                          static_cast<int>(text.size()));
  if (n < 0) return Status::Invalid("invalid_base64", "not base64");
  size_t pad = 0;
  if (text.back() == '=') ++pad;
  if (text.size() >= 2 && text[text.size() - 2] == '=') ++pad;
  out.resize(static_cast<size_t>(n) - pad);
  return out;
}

std::string NewWebhookSecret() { return kWebhookSecretPrefix + Base64Encode(RandomBytes(32)); }

std::string NewConsumerToken() {
  std::string b64 = Base64Encode(RandomBytes(32));
  for (char& c : b64) {
    if (c == '+') c = '-';
    if (c == '/') c = '_';
  }
  while (!b64.empty() && b64.back() == '=') b64.pop_back();
  return kConsumerTokenPrefix + b64;
}

std::string Sha256Hex(std::string_view bytes) {
  unsigned char md[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size(), md);
  static const char kHex[] = "0123456789abcdef";
  std::string out;
  for (unsigned char c : md) {
    out.push_back(kHex[c >> 4]);
    out.push_back(kHex[c & 0xf]);
  }
  return out;
}

Result<std::string> SignWebhook(const std::string& secret, const std::string& id,
                                int64_t timestamp_seconds, std::string_view body) {
  const std::string prefix = kWebhookSecretPrefix;
  if (secret.compare(0, prefix.size(), prefix) != 0) {
    return Status::Invalid("invalid_secret", "a webhook secret starts with whsec_");
  }
  auto key = Base64Decode(std::string_view(secret).substr(prefix.size()));
  if (!key.ok()) return Status::Invalid("invalid_secret", "the webhook secret is not base64");
  std::string content = id + "." + std::to_string(timestamp_seconds) + ".";
  content.append(body.data(), body.size());
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (!HMAC(EVP_sha256(), key->data(), static_cast<int>(key->size()),
            reinterpret_cast<const unsigned char*>(content.data()), content.size(), mac, &len)) {
    return Status::Internal("HMAC-SHA256 failed");
  }
  return "v1," + Base64Encode(std::string_view(reinterpret_cast<const char*>(mac), len));
}

Result<std::string> SignatureHeader(const std::vector<std::string>& secrets, const std::string& id,
                                    int64_t timestamp_seconds, std::string_view body) {
  std::string out;
  for (const auto& s : secrets) {
    auto sig = SignWebhook(s, id, timestamp_seconds, body);
    if (!sig.ok()) return sig.status();
    if (!out.empty()) out += " ";
    out += *sig;
  }
  return out;
}

}  // namespace lastcall
