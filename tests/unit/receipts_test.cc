// Receipt keys and JWS: sign, verify, tamper, rotate, and the key file's mode.
#include "receipts/receipts.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>

#include "common/ids.h"
#include "http/jwt.h"

namespace lastcall {
namespace {

namespace fs = std::filesystem;

class ReceiptsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("lastcall-keys-" + RandomHex(6));
  }
  void TearDown() override { fs::remove_all(dir_); }
  ReceiptKeyring Load() {
    bool created = false;
    auto r = LoadReceiptKeys(dir_.string(), "", &created);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return std::move(r).value();
  }
  fs::path dir_;
};

TEST_F(ReceiptsTest, FirstStartCreatesAPrivateKeyFileAndLaterStartsReuseIt) {
  bool created = false;
  auto first = LoadReceiptKeys(dir_.string(), "", &created);
  ASSERT_TRUE(first.ok());
  EXPECT_TRUE(created);
  struct stat st {};
  ASSERT_EQ(::stat((dir_ / "signing.pem").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  auto second = LoadReceiptKeys(dir_.string(), "", &created);
  ASSERT_TRUE(second.ok());
  EXPECT_FALSE(created);
  EXPECT_EQ(first->signing->kid(), second->signing->kid());
}

TEST_F(ReceiptsTest, SignedReceiptVerifiesAndAnyChangedByteIsRefused) {
  ReceiptKeyring ring = Load();
  nlohmann::json payload = {{"fileId", "f"}, {"contentSha256", std::string(64, 'a')}};
  auto jws = SignReceipt(*ring.signing, payload);
  ASSERT_TRUE(jws.ok());
  auto ok = VerifyReceipt(*jws, ring.Jwks());
  ASSERT_TRUE(ok.ok()) << ok.status().ToString();
  EXPECT_EQ(*ok, payload);
  // Every single-character change anywhere in the JWS is refused.
  for (size_t i = 0; i < jws->size(); ++i) {
    std::string bad = *jws;
    if (bad[i] == '.') continue;
    bad[i] = bad[i] == 'A' ? 'B' : 'A';
    if (bad == *jws) continue;
    EXPECT_FALSE(VerifyReceipt(bad, ring.Jwks()).ok()) << "accepted a change at " << i;
  }
}

TEST_F(ReceiptsTest, RefusesOtherAlgorithmsUnknownKidsAndMalformedInput) {
  ReceiptKeyring ring = Load();
  auto jws = SignReceipt(*ring.signing, {{"a", 1}});
  ASSERT_TRUE(jws.ok());
  std::string rest = jws->substr(jws->find('.'));
  std::string none = Base64UrlEncode(R"({"alg":"none","kid":")" + ring.signing->kid() + "\"}") + rest;
  EXPECT_FALSE(VerifyReceipt(none, ring.Jwks()).ok());
  std::string other_kid = Base64UrlEncode(R"({"alg":"EdDSA","kid":"nope"})") + rest;
  EXPECT_FALSE(VerifyReceipt(other_kid, ring.Jwks()).ok());
  EXPECT_FALSE(VerifyReceipt("a.b", ring.Jwks()).ok());
  EXPECT_FALSE(VerifyReceipt("", ring.Jwks()).ok());
  EXPECT_FALSE(VerifyReceipt(*jws, nlohmann::json::array()).ok());
  auto stranger = ReceiptKey::Generate();
  ASSERT_TRUE(stranger.ok());
  nlohmann::json wrong = {{"keys", {stranger->PublicJwk()}}};
  wrong["keys"][0]["kid"] = ring.signing->kid();  // right kid, wrong key
  EXPECT_FALSE(VerifyReceipt(*jws, wrong).ok());
}

TEST_F(ReceiptsTest, RotationKeepsOldReceiptsVerifyingAndDropsTheOldPrivateKey) {
  ReceiptKeyring before = Load();
  auto old_receipt = SignReceipt(*before.signing, {{"n", 1}});
  ASSERT_TRUE(old_receipt.ok());
  auto kid = RotateReceiptKey(dir_.string());
  ASSERT_TRUE(kid.ok()) << kid.status().ToString();
  EXPECT_NE(*kid, before.signing->kid());
  ReceiptKeyring after = Load();
  EXPECT_EQ(after.signing->kid(), *kid);
  ASSERT_EQ(after.retired.size(), 1u);
  EXPECT_FALSE(after.retired[0].can_sign());
  nlohmann::json jwks = after.Jwks();
  ASSERT_EQ(jwks["keys"].size(), 2u);
  EXPECT_EQ(jwks["keys"][0]["kid"], *kid);
  EXPECT_TRUE(VerifyReceipt(*old_receipt, jwks).ok());
  auto new_receipt = SignReceipt(*after.signing, {{"n", 2}});
  ASSERT_TRUE(new_receipt.ok());
  EXPECT_TRUE(VerifyReceipt(*new_receipt, jwks).ok());
  // Nothing private is left of the old key.
  for (const auto& e : fs::recursive_directory_iterator(dir_)) {
    if (!e.is_regular_file()) continue;
    std::ifstream in(e.path());
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (e.path().filename() == "signing.pem") continue;
    EXPECT_EQ(text.find("PRIVATE KEY"), std::string::npos) << e.path();
  }
}

TEST_F(ReceiptsTest, AConfiguredKeyFileSignsAndIsPublished) {
  auto k = ReceiptKey::Generate();
  ASSERT_TRUE(k.ok());
  fs::create_directories(dir_);
  std::string path = (dir_ / "given.pem").string();
  std::ofstream(path) << k->PrivatePem();
  bool created = false;
  auto ring = LoadReceiptKeys((dir_ / "keys").string(), path, &created);
  ASSERT_TRUE(ring.ok()) << ring.status().ToString();
  EXPECT_FALSE(created);
  EXPECT_EQ(ring->signing->kid(), k->kid());
  EXPECT_FALSE(fs::exists(dir_ / "keys" / "signing.pem"));
  std::ofstream(path) << k->PublicPem();
  EXPECT_FALSE(LoadReceiptKeys((dir_ / "keys").string(), path, &created).ok());  // no private part
}

TEST(ReceiptKeyTest, KidIsTheRfc7638Thumbprint) {
  // RFC 8037 appendix A.3: the thumbprint of its Ed25519 example key.
  nlohmann::json jwk = {{"kty", "OKP"}, {"crv", "Ed25519"},
                        {"x", "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}};
  auto k = ReceiptKey::FromJwk(jwk);
  ASSERT_TRUE(k.ok());
  EXPECT_EQ(k->kid(), "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k");
}

}  // namespace
}  // namespace lastcall

namespace lastcall {
namespace {

TEST(ReceiptKeyTest, VerifiesTheRfc8037Example) {
  // RFC 8037 appendix A.4: a JWS signed with the A.1 key over "Example of Ed25519 signing".
  nlohmann::json jwks = {{"keys", {{{"kty", "OKP"}, {"crv", "Ed25519"},
                                    {"x", "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}}}}};
  const std::string jws =
      "eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc."
      "hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg";
  // The payload is not JSON, so VerifyReceipt refuses it after the signature check; the
  // signature itself must verify.
  auto key = ReceiptKey::FromJwk(jwks["keys"][0]);
  ASSERT_TRUE(key.ok());
  auto sig = Base64UrlDecode(jws.substr(jws.rfind('.') + 1));
  ASSERT_TRUE(sig.has_value());
  EXPECT_TRUE(key->Verify(jws.substr(0, jws.rfind('.')), *sig));
  auto r = VerifyReceipt(jws, jwks);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("payload"), std::string::npos) << r.status().message();
}

}  // namespace
}  // namespace lastcall
