#include "receipts/receipts.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/sha.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "http/jwt.h"

namespace lastcall {

struct ReceiptKey::Pkey {
  EVP_PKEY* p = nullptr;
  ~Pkey() { EVP_PKEY_free(p); }
};

namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;

Status Bad(const std::string& why) { return Status::Invalid("invalid_receipt", why); }

std::string BioString(BIO* bio) {
  char* data = nullptr;
  long n = BIO_get_mem_data(bio, &data);
  return n > 0 ? std::string(data, static_cast<size_t>(n)) : std::string();
}

Result<std::string> ReadText(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Status::Unavailable("cannot read " + path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Writes text to path atomically (temporary file, fsync, rename) with the given mode.
Status WriteFileAtomic(const std::string& path, const std::string& text, mode_t mode) {
  std::string tmp = path + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  if (fd < 0) return Status::Unavailable("cannot create " + tmp + ": " + std::strerror(errno));
  bool ok = ::fchmod(fd, mode) == 0 &&
            ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size()) &&
            ::fsync(fd) == 0;
  ::close(fd);
  if (!ok || ::rename(tmp.c_str(), path.c_str()) != 0) {
    ::unlink(tmp.c_str());
    return Status::Unavailable("cannot write " + path);
  }
  return Status::Ok();
}

}  // namespace

ReceiptKey::ReceiptKey(std::unique_ptr<Pkey> key, bool has_private)
    : key_(std::move(key)), has_private_(has_private) {
  unsigned char raw[32];
  size_t len = sizeof(raw);
  std::string x;
  if (EVP_PKEY_get_raw_public_key(key_->p, raw, &len) == 1) {
    x = Base64UrlEncode(std::string_view(reinterpret_cast<const char*>(raw), len));
  }
  // RFC 7638: SHA-256 of the required members in lexicographic order, no whitespace.
  std::string canonical = R"({"crv":"Ed25519","kty":"OKP","x":")" + x + "\"}";
  unsigned char md[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(canonical.data()), canonical.size(), md);
  kid_ = Base64UrlEncode(std::string_view(reinterpret_cast<const char*>(md), sizeof(md)));
}

ReceiptKey::~ReceiptKey() = default;
ReceiptKey::ReceiptKey(ReceiptKey&&) noexcept = default;
ReceiptKey& ReceiptKey::operator=(ReceiptKey&&) noexcept = default;

Result<ReceiptKey> ReceiptKey::Generate() {
  auto k = std::make_unique<Pkey>();
  EVP_PKEY_CTX* ctx = EVP_PKEY_CTX_new_id(EVP_PKEY_ED25519, nullptr);
  bool ok = ctx && EVP_PKEY_keygen_init(ctx) == 1 && EVP_PKEY_keygen(ctx, &k->p) == 1;
  EVP_PKEY_CTX_free(ctx);
  if (!ok) return Status::Internal("cannot generate an Ed25519 key");
  return ReceiptKey(std::move(k), true);
}

Result<ReceiptKey> ReceiptKey::FromPem(const std::string& pem) {
  auto k = std::make_unique<Pkey>();
  bool has_private = true;
  BIO* bio = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
  k->p = PEM_read_bio_PrivateKey(bio, nullptr, nullptr, nullptr);
  if (!k->p) {
    BIO_free(bio);
    bio = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
    k->p = PEM_read_bio_PUBKEY(bio, nullptr, nullptr, nullptr);
    has_private = false;
  }
  BIO_free(bio);
  if (!k->p) return Status::Invalid("invalid_key", "not a PEM private or public key");
  if (EVP_PKEY_get_id(k->p) != EVP_PKEY_ED25519) {
    return Status::Invalid("invalid_key", "the key is not an Ed25519 key");
  }
  return ReceiptKey(std::move(k), has_private);
}

Result<ReceiptKey> ReceiptKey::FromJwk(const json& jwk) {
  if (!jwk.is_object() || jwk.value("kty", "") != "OKP" || jwk.value("crv", "") != "Ed25519" ||
      !jwk.contains("x") || !jwk["x"].is_string()) {
    return Status::Invalid("invalid_key", "a JWK must be {\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"x\":...}");
  }
  auto x = Base64UrlDecode(jwk["x"].get<std::string>());
  if (!x || x->size() != 32) return Status::Invalid("invalid_key", "the JWK's x is not 32 bytes");
  auto k = std::make_unique<Pkey>();
  k->p = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, nullptr,
                                     reinterpret_cast<const unsigned char*>(x->data()), x->size());
  if (!k->p) return Status::Invalid("invalid_key", "the JWK is not a valid Ed25519 public key");
  return ReceiptKey(std::move(k), false);
}

json ReceiptKey::PublicJwk() const {
  unsigned char raw[32];
  size_t len = sizeof(raw);
  EVP_PKEY_get_raw_public_key(key_->p, raw, &len);
  return {{"kty", "OKP"},
          {"crv", "Ed25519"},
          {"x", Base64UrlEncode(std::string_view(reinterpret_cast<const char*>(raw), len))},
          {"kid", kid_},
          {"use", "sig"},
          {"alg", "EdDSA"}};
}

std::string ReceiptKey::PrivatePem() const {
  if (!has_private_) return "";
  BIO* bio = BIO_new(BIO_s_mem());
  PEM_write_bio_PrivateKey(bio, key_->p, nullptr, nullptr, 0, nullptr, nullptr);
  std::string out = BioString(bio);
  BIO_free(bio);
  return out;
}

std::string ReceiptKey::PublicPem() const {
  BIO* bio = BIO_new(BIO_s_mem());
  PEM_write_bio_PUBKEY(bio, key_->p);
  std::string out = BioString(bio);
  BIO_free(bio);
  return out;
}

Result<std::string> ReceiptKey::Sign(std::string_view data) const {
  if (!has_private_) return Status::Internal("the receipt key has no private part");
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  std::string sig(64, '\0');
  size_t len = sig.size();
  bool ok = ctx && EVP_DigestSignInit(ctx, nullptr, nullptr, nullptr, key_->p) == 1 &&
            EVP_DigestSign(ctx, reinterpret_cast<unsigned char*>(sig.data()), &len,
                           reinterpret_cast<const unsigned char*>(data.data()), data.size()) == 1;
  EVP_MD_CTX_free(ctx);
  if (!ok) return Status::Internal("Ed25519 signing failed");
  sig.resize(len);
  return sig;
}

bool ReceiptKey::Verify(std::string_view data, std::string_view signature) const {
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  bool ok = ctx && EVP_DigestVerifyInit(ctx, nullptr, nullptr, nullptr, key_->p) == 1 &&
            EVP_DigestVerify(ctx, reinterpret_cast<const unsigned char*>(signature.data()),
                             signature.size(), reinterpret_cast<const unsigned char*>(data.data()),
                             data.size()) == 1;
  EVP_MD_CTX_free(ctx);
  return ok;
}

json ReceiptKeyring::Jwks() const {
  json keys = json::array();
  if (signing) keys.push_back(signing->PublicJwk());
  for (const auto& k : retired) {
    if (!signing || k.kid() != signing->kid()) keys.push_back(k.PublicJwk());
  }
  return {{"keys", keys}};
}

Result<ReceiptKeyring> LoadReceiptKeys(const std::string& key_dir, const std::string& key_file,
                                       bool* created) {
  *created = false;
  std::error_code ec;
  fs::create_directories(fs::path(key_dir) / "retired", ec);
  if (ec) return Status::Unavailable("cannot create " + key_dir + ": " + ec.message());
  ReceiptKeyring ring;
  std::string path = key_file.empty() ? (fs::path(key_dir) / "signing.pem").string() : key_file;
  if (!key_file.empty() || fs::exists(path)) {
    auto pem = ReadText(path);
    if (!pem.ok()) return pem.status();
    auto k = ReceiptKey::FromPem(*pem);
    if (!k.ok()) return Status::Invalid("invalid_config", path + ": " + k.status().message());
    if (!k->can_sign()) return Status::Invalid("invalid_config", path + " holds no private key");
    ring.signing = std::make_unique<ReceiptKey>(std::move(k).value());
  } else {
    auto k = ReceiptKey::Generate();
    if (!k.ok()) return k.status();
    LASTCALL_RETURN_IF_ERROR(WriteFileAtomic(path, k->PrivatePem(), 0600));
    ring.signing = std::make_unique<ReceiptKey>(std::move(k).value());
    *created = true;
  }
  for (const auto& entry : fs::directory_iterator(fs::path(key_dir) / "retired", ec)) {
    if (entry.path().extension() != ".pem") continue;
    auto pem = ReadText(entry.path().string());
    if (!pem.ok()) return pem.status();
    auto k = ReceiptKey::FromPem(*pem);
    if (!k.ok()) return Status::Invalid("invalid_config", entry.path().string() + ": " + k.status().message());
    ring.retired.push_back(std::move(k).value());
  }
  if (ec) return Status::Unavailable("cannot list " + key_dir + "/retired: " + ec.message());
  std::sort(ring.retired.begin(), ring.retired.end(),
            [](const ReceiptKey& a, const ReceiptKey& b) { return a.kid() < b.kid(); });
  return ring;
}

Result<std::string> RotateReceiptKey(const std::string& key_dir) {
  bool created = false;
  auto ring = LoadReceiptKeys(key_dir, "", &created);
  if (!ring.ok()) return ring.status();
  const ReceiptKey& old = *ring->signing;
  // The old public key first: a crash after this leaves the old key signing and also listed.
  LASTCALL_RETURN_IF_ERROR(WriteFileAtomic(
      (fs::path(key_dir) / "retired" / (old.kid() + ".pub.pem")).string(), old.PublicPem(), 0644));
  auto fresh = ReceiptKey::Generate();
  if (!fresh.ok()) return fresh.status();
  LASTCALL_RETURN_IF_ERROR(
      WriteFileAtomic((fs::path(key_dir) / "signing.pem").string(), fresh->PrivatePem(), 0600));
  return fresh->kid();
}

Result<std::string> SignReceipt(const ReceiptKey& key, const json& payload) {
  json header = {{"alg", "EdDSA"}, {"typ", "JWT"}, {"kid", key.kid()}};
  std::string input = Base64UrlEncode(header.dump()) + "." + Base64UrlEncode(payload.dump());
  auto sig = key.Sign(input);
  if (!sig.ok()) return sig.status();
  return input + "." + Base64UrlEncode(*sig);
}

Result<json> VerifyReceipt(std::string_view jws, const json& jwks) {
  size_t a = jws.find('.');
  size_t b = a == std::string_view::npos ? a : jws.find('.', a + 1);
  if (b == std::string_view::npos || jws.find('.', b + 1) != std::string_view::npos) {
    return Bad("not a compact JWS (three dot-separated parts)");
  }
  auto header_text = Base64UrlDecode(jws.substr(0, a));
  auto payload_text = Base64UrlDecode(jws.substr(a + 1, b - a - 1));
  auto sig = Base64UrlDecode(jws.substr(b + 1));
  if (!header_text || !payload_text || !sig) return Bad("a part is not base64url");
  json header = json::parse(*header_text, nullptr, false);
  if (!header.is_object()) return Bad("the header is not a JSON object");
  if (header.value("alg", "") != "EdDSA") return Bad("alg must be EdDSA");
  std::string kid = header.value("kid", "");
  if (!jwks.is_object() || !jwks.contains("keys") || !jwks["keys"].is_array()) {
    return Bad("the key set is not a JWKS ({\"keys\": [...]})");
  }
  for (const auto& jwk : jwks["keys"]) {
    if (!jwk.is_object() || jwk.value("kid", "") != kid) continue;
    auto key = ReceiptKey::FromJwk(jwk);
    if (!key.ok()) return key.status();
    if (!key->Verify(jws.substr(0, b), *sig)) return Bad("bad signature");
    json payload = json::parse(*payload_text, nullptr, false);
    if (!payload.is_object()) return Bad("the payload is not a JSON object");
    return payload;
  }
  return Bad("no key with kid \"" + kid + "\" in the key set");
}

}  // namespace lastcall
