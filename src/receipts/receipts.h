// Signed deletion receipts: a compact JWS (RFC 7515, alg EdDSA over Ed25519, RFC 8037) that the
// owner of a deleted file can keep and anyone can check against lastcall's public keys, served as a
// JWKS (RFC 7517) at /.well-known/jwks.json. Signing and verification use OpenSSL's EVP API.
//
// Keys live in the data folder (`receipt_keys/`): `signing.pem` is the current private key
// (PKCS#8 PEM, mode 0600, created on first start), `retired/<kid>.pub.pem` the public keys of
// earlier signing keys, kept so that old receipts still verify. A key's kid is its RFC 7638 JWK
// thumbprint. RotateReceiptKey retires the current key (its private part is deleted) and makes a
// new one; a running service picks the new key up at its next start.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/status.h"

namespace lastcall {

// One Ed25519 key: the private part only when it can sign.
class ReceiptKey {
 public:
  ~ReceiptKey();
  ReceiptKey(ReceiptKey&&) noexcept;
  ReceiptKey& operator=(ReceiptKey&&) noexcept;
  ReceiptKey(const ReceiptKey&) = delete;
  ReceiptKey& operator=(const ReceiptKey&) = delete;

  // A fresh key from the CSPRNG.
  static Result<ReceiptKey> Generate();
  // From PEM text: a PKCS#8 private key or a SubjectPublicKeyInfo public key, Ed25519 only.
  static Result<ReceiptKey> FromPem(const std::string& pem);
  // From a JWK object {"kty":"OKP","crv":"Ed25519","x":...}. Errors: kInvalidArgument.
  static Result<ReceiptKey> FromJwk(const nlohmann::json& jwk);

  bool can_sign() const { return has_private_; }
  const std::string& kid() const { return kid_; }
  // The public JWK: kty, crv, x, kid, use "sig", alg "EdDSA".
  nlohmann::json PublicJwk() const;
  std::string PrivatePem() const;  // "" when it cannot sign
  std::string PublicPem() const;
  // The Ed25519 signature of data. Errors: kInternal when it cannot sign.
  Result<std::string> Sign(std::string_view data) const;
  bool Verify(std::string_view data, std::string_view signature) const;

 private:
  struct Pkey;
  ReceiptKey(std::unique_ptr<Pkey> key, bool has_private);
  std::unique_ptr<Pkey> key_;
  bool has_private_ = false;
  std::string kid_;
};

// The signing key and every key receipts may have been signed with.
struct ReceiptKeyring {
  std::unique_ptr<ReceiptKey> signing;
  std::vector<ReceiptKey> retired;  // public only
  // {"keys": [...]}: the signing key's public part first, then the retired ones.
  nlohmann::json Jwks() const;
};

// Loads the keys of key_dir (creating the folder and a first signing key, mode 0600, when there is
// none), or, when key_file is set, signs with the private key in that PEM file (which is never
// written) and still publishes key_dir's retired keys. *created says whether a key was made.
Result<ReceiptKeyring> LoadReceiptKeys(const std::string& key_dir, const std::string& key_file,
                                       bool* created);
// Retires key_dir's signing key (its public part kept in retired/, its private part deleted) and
// creates a new one. Returns the new kid.
Result<std::string> RotateReceiptKey(const std::string& key_dir);

// A compact JWS over payload with header {"alg":"EdDSA","typ":"JWT","kid":...}.
Result<std::string> SignReceipt(const ReceiptKey& key, const nlohmann::json& payload);

// Verifies a compact JWS against a JWKS object ({"keys": [...]}): the header's alg must be EdDSA
// and its kid one of the keys; the signature must match the exact bytes received. Returns the
// payload. Errors: kInvalidArgument "invalid_receipt" naming why (malformed, unknown kid, bad
// signature).
Result<nlohmann::json> VerifyReceipt(std::string_view jws, const nlohmann::json& jwks);

}  // namespace lastcall
