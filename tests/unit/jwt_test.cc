#include "http/jwt.h"

#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <limits>
#include <string>
#include <utility>
#include <vector>

namespace lastcall {
namespace {

constexpr char kSecret[] = "s3cret-Key-That-Must-Never-Leak";
constexpr WallMillis kNow = 1767225600123;  // 2026-01-01T00:00:00.123Z
constexpr int64_t kNowSeconds = 1767225600;

// HMAC-SHA256 computed here, independently of jwt.cc, to craft tokens by hand.
std::string Hmac(std::string_view key, std::string_view data) {
  unsigned char out[32];
  unsigned int len = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
       reinterpret_cast<const unsigned char*>(data.data()), data.size(), out, &len);
  return std::string(reinterpret_cast<const char*>(out), len);
}

// A compact token with the given header and payload JSON texts, HS256-signed with `secret`.
std::string Craft(std::string_view header, std::string_view payload,
                  std::string_view secret = kSecret) {
  std::string signing_input = Base64UrlEncode(header) + "." + Base64UrlEncode(payload);
  return signing_input + "." + Base64UrlEncode(Hmac(secret, signing_input));
}

std::string Payload(const std::string& members) { return "{" + members + "}"; }

constexpr char kHs256[] = R"({"alg":"HS256","typ":"JWT"})";

// A payload that passes every claim check at kNow.
std::string ValidPayload() {
  return Payload(R"("sub":"user-1","exp":)" + std::to_string(kNowSeconds + 600));
}

void ExpectUnauthorized(const Result<JwtClaims>& r, const std::string& message) {
  ASSERT_FALSE(r.ok()) << "expected failure: " << message;
  EXPECT_EQ(r.status().code(), Code::kUnauthenticated);
  EXPECT_EQ(r.status().error(), "unauthorized");
  EXPECT_EQ(r.status().message(), message);
}

TEST(Base64UrlTest, Rfc4648Vectors) {
  const std::vector<std::pair<std::string, std::string>> vectors = {
      {"", ""},           {"f", "Zg"},          {"fo", "Zm8"},          {"foo", "Zm9v"},
      {"foob", "Zm9vYg"}, {"fooba", "Zm9vYmE"}, {"foobar", "Zm9vYmFy"},
  };
  for (const auto& [plain, encoded] : vectors) {
    EXPECT_EQ(Base64UrlEncode(plain), encoded);
    EXPECT_EQ(Base64UrlDecode(encoded), plain);
  }
}

TEST(Base64UrlTest, UsesUrlAlphabetWithoutPadding) {
  EXPECT_EQ(Base64UrlEncode("\xfb\xff"), "-_8");
  EXPECT_EQ(Base64UrlDecode("-_8"), std::string("\xfb\xff"));
}

TEST(Base64UrlTest, RoundTripsAllByteValues) {
  std::string all;
  for (int i = 0; i < 256; ++i) all += static_cast<char>(i);
  for (size_t len = 0; len <= all.size(); len += 37) {
    std::string bytes = all.substr(0, len);
    EXPECT_EQ(Base64UrlDecode(Base64UrlEncode(bytes)), bytes);
  }
}

TEST(Base64UrlTest, ToleratesPadding) {
  EXPECT_EQ(Base64UrlDecode("Zg=="), "f");
  EXPECT_EQ(Base64UrlDecode("Zm8="), "fo");
}

TEST(Base64UrlTest, RejectsOtherCharactersAndBadLengths) {
  EXPECT_FALSE(Base64UrlDecode("Zm9v+A").has_value());  // standard alphabet '+'
  EXPECT_FALSE(Base64UrlDecode("Zm9v/A").has_value());  // standard alphabet '/'
  EXPECT_FALSE(Base64UrlDecode("Zm 9v").has_value());
  EXPECT_FALSE(Base64UrlDecode("Zm9v*").has_value());
  EXPECT_FALSE(Base64UrlDecode("Z").has_value());  // 6 bits cannot make a byte
  EXPECT_FALSE(Base64UrlDecode("Z===").has_value());
  EXPECT_FALSE(Base64UrlDecode("Zg=").has_value());  // padding that does not end a group
  EXPECT_FALSE(Base64UrlDecode("Z=g").has_value());
  EXPECT_FALSE(Base64UrlDecode("Zh").has_value());  // non-zero unused bits
}

TEST(JwtTest, SignThenVerifyRoundTrips) {
  const std::string token = SignJwt("user-1", "operator", 3600, kSecret, kNow);
  Result<JwtClaims> claims = VerifyJwt(token, kSecret, kNow);
  ASSERT_TRUE(claims.ok()) << claims.status().ToString();
  EXPECT_EQ(claims->sub, "user-1");
  EXPECT_EQ(claims->role, "operator");
  EXPECT_EQ(claims->exp, kNowSeconds + 3600);
  EXPECT_EQ(claims->iat, kNowSeconds);
  EXPECT_FALSE(claims->nbf.has_value());
}

TEST(JwtTest, SignSaturatesExpInsteadOfOverflowing) {
  Result<JwtClaims> claims = VerifyJwt(
      SignJwt("u", "", std::numeric_limits<int64_t>::max(), kSecret, kNow), kSecret, kNow);
  ASSERT_TRUE(claims.ok()) << claims.status().ToString();
  EXPECT_EQ(claims->exp, std::numeric_limits<int64_t>::max());
  ExpectUnauthorized(VerifyJwt(SignJwt("u", "", std::numeric_limits<int64_t>::min(), kSecret, kNow),
                               kSecret, kNow),
                     "token expired");
}

TEST(JwtTest, SignedTokenIsCompactHs256) {
  const std::string token = SignJwt("user-1", "", 60, kSecret, kNow);
  EXPECT_EQ(token.find('='), std::string::npos);
  const size_t dot = token.find('.');
  ASSERT_NE(dot, std::string::npos);
  EXPECT_EQ(Base64UrlDecode(token.substr(0, dot)), R"({"alg":"HS256","typ":"JWT"})");
  Result<JwtClaims> claims = VerifyJwt(token, kSecret, kNow);
  ASSERT_TRUE(claims.ok()) << claims.status().ToString();
  EXPECT_EQ(claims->role, "");
}

TEST(JwtTest, VerifiesTokenFromAnotherImplementation) {
  // Made with Python's hmac/hashlib: {"sub":"user-42","role":"operator","iat":1767225600,
  // "exp":1767229200}, secret "vector-secret".
  const std::string token =
      "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."
      "eyJzdWIiOiJ1c2VyLTQyIiwicm9sZSI6Im9wZXJhdG9yIiwi"
      "aWF0IjoxNzY3MjI1NjAwLCJleHAiOjE3NjcyMjkyMDB9."
      "xtfrxLsSyaiTqRjZzAOYB9Zy-wc-7RnXklA3Dln7TLs";
  Result<JwtClaims> claims = VerifyJwt(token, "vector-secret", kNow);
  ASSERT_TRUE(claims.ok()) << claims.status().ToString();
  EXPECT_EQ(claims->sub, "user-42");
  EXPECT_EQ(claims->role, "operator");
  EXPECT_EQ(claims->exp, 1767229200);
  EXPECT_EQ(claims->iat, 1767225600);
}

TEST(JwtTest, JwtIoExampleHasValidSignatureButNoExp) {
  // The well-known jwt.io example: its signature verifies, then the claims are refused.
  const std::string token =
      "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."
      "eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ."
      "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c";
  ExpectUnauthorized(VerifyJwt(token, "your-256-bit-secret", kNow), "missing exp");
  ExpectUnauthorized(VerifyJwt(token, "not-the-secret", kNow), "bad signature");
}

TEST(JwtTest, RejectsBadSignature) {
  const std::string token = SignJwt("user-1", "operator", 3600, kSecret, kNow);
  ExpectUnauthorized(VerifyJwt(token, "another-secret", kNow), "bad signature");
  ExpectUnauthorized(VerifyJwt(token, "", kNow), "bad signature");

  // One signature character changed.
  std::string flipped = token;
  flipped[flipped.size() - 3] = flipped[flipped.size() - 3] == 'A' ? 'B' : 'A';
  ExpectUnauthorized(VerifyJwt(flipped, kSecret, kNow), "bad signature");

  // Truncated and empty signatures.
  const size_t last_dot = token.rfind('.');
  ExpectUnauthorized(VerifyJwt(token.substr(0, token.size() - 4), kSecret, kNow), "bad signature");
  ExpectUnauthorized(VerifyJwt(token.substr(0, last_dot + 1), kSecret, kNow), "bad signature");

  // Payload swapped for another one (sub changed), signature kept.
  const size_t first_dot = token.find('.');
  std::string forged =
      token.substr(0, first_dot + 1) +
      Base64UrlEncode(Payload(R"("sub":"admin","exp":)" + std::to_string(kNowSeconds + 3600))) +
      token.substr(last_dot);
  ExpectUnauthorized(VerifyJwt(forged, kSecret, kNow), "bad signature");
}

// Regression guard for the per-thread keyed MAC context: a change of secret must rekey it.
TEST(JwtTest, VerifiesUnderWhicheverSecretIsGivenWhenSecretsAlternate) {
  const std::string a = SignJwt("user-a", "", 3600, "secret-a", kNow);
  const std::string b = SignJwt("user-b", "", 3600, "secret-b", kNow);
  for (int round = 0; round < 3; ++round) {
    auto va = VerifyJwt(a, "secret-a", kNow);
    ASSERT_TRUE(va.ok()) << va.status().ToString();
    EXPECT_EQ(va->sub, "user-a");
    ExpectUnauthorized(VerifyJwt(a, "secret-b", kNow), "bad signature");
    auto vb = VerifyJwt(b, "secret-b", kNow);
    ASSERT_TRUE(vb.ok()) << vb.status().ToString();
    EXPECT_EQ(vb->sub, "user-b");
    ExpectUnauthorized(VerifyJwt(b, "secret-a", kNow), "bad signature");
  }
}

TEST(JwtTest, RejectsAlgNone) {
  const std::string token =
      Base64UrlEncode(R"({"alg":"none"})") + "." + Base64UrlEncode(ValidPayload()) + ".";
  ExpectUnauthorized(VerifyJwt(token, kSecret, kNow), "unsupported alg");
  // Variations seen in attacks: other spellings, a typ, a signature that happens to be valid.
  ExpectUnauthorized(VerifyJwt(Base64UrlEncode(R"({"alg":"None","typ":"JWT"})") + "." +
                                   Base64UrlEncode(ValidPayload()) + ".",
                               kSecret, kNow),
                     "unsupported alg");
  ExpectUnauthorized(VerifyJwt(Craft(R"({"alg":"none"})", ValidPayload()), kSecret, kNow),
                     "unsupported alg");
}

TEST(JwtTest, RejectsOtherAlgorithms) {
  for (const char* alg : {"HS512", "HS384", "RS256", "ES256", "PS256", "hs256", "HS256 "}) {
    const std::string header = std::string(R"({"alg":")") + alg + R"(","typ":"JWT"})";
    // Even with a valid HS256 MAC over the header and payload.
    ExpectUnauthorized(VerifyJwt(Craft(header, ValidPayload()), kSecret, kNow), "unsupported alg");
  }
}

TEST(JwtTest, HeaderShape) {
  EXPECT_TRUE(VerifyJwt(Craft(R"({"alg":"HS256"})", ValidPayload()), kSecret, kNow).ok());
  EXPECT_TRUE(
      VerifyJwt(Craft(R"({"alg":"HS256","kid":"k1"})", ValidPayload()), kSecret, kNow).ok());
  ExpectUnauthorized(VerifyJwt(Craft(R"({"typ":"JWT"})", ValidPayload()), kSecret, kNow),
                     "malformed token");
  ExpectUnauthorized(VerifyJwt(Craft(R"({"alg":256})", ValidPayload()), kSecret, kNow),
                     "malformed token");
  ExpectUnauthorized(
      VerifyJwt(Craft(R"({"alg":"HS256","typ":"JWS"})", ValidPayload()), kSecret, kNow),
      "malformed token");
  ExpectUnauthorized(VerifyJwt(Craft(R"({"alg":"HS256","typ":1})", ValidPayload()), kSecret, kNow),
                     "malformed token");
  ExpectUnauthorized(
      VerifyJwt(Craft(R"({"alg":"HS256","crit":["exp"]})", ValidPayload()), kSecret, kNow),
      "malformed token");
}

TEST(JwtTest, RejectsExpiredTokenWithLeeway) {
  const std::string token = SignJwt("user-1", "", 60, kSecret, kNow);
  const WallMillis exp_ms = (kNowSeconds + 60) * 1000;
  EXPECT_TRUE(VerifyJwt(token, kSecret, exp_ms).ok());
  EXPECT_TRUE(VerifyJwt(token, kSecret, exp_ms + 29'999).ok());  // within the 30 s leeway
  ExpectUnauthorized(VerifyJwt(token, kSecret, exp_ms + 30'000), "token expired");
  ExpectUnauthorized(VerifyJwt(token, kSecret, exp_ms + 86'400'000), "token expired");
  // Negative ttl: born expired.
  ExpectUnauthorized(VerifyJwt(SignJwt("user-1", "", -3600, kSecret, kNow), kSecret, kNow),
                     "token expired");
}

TEST(JwtTest, RejectsTokenNotYetValid) {
  const std::string exp = R"(,"exp":)" + std::to_string(kNowSeconds + 3600);
  const std::string future =
      Craft(kHs256, Payload(R"("sub":"u","nbf":)" + std::to_string(kNowSeconds + 31) + exp));
  ExpectUnauthorized(VerifyJwt(future, kSecret, kNow), "token not yet valid");
  EXPECT_TRUE(VerifyJwt(future, kSecret, kNow + 1000).ok());

  const std::string in_leeway =
      Craft(kHs256, Payload(R"("sub":"u","nbf":)" + std::to_string(kNowSeconds + 30) + exp));
  Result<JwtClaims> claims = VerifyJwt(in_leeway, kSecret, kNow);
  ASSERT_TRUE(claims.ok()) << claims.status().ToString();
  EXPECT_EQ(claims->nbf, kNowSeconds + 30);
}

TEST(JwtTest, RequiresSub) {
  const std::string exp = R"("exp":)" + std::to_string(kNowSeconds + 600);
  ExpectUnauthorized(VerifyJwt(Craft(kHs256, Payload(exp)), kSecret, kNow), "missing sub");
  ExpectUnauthorized(VerifyJwt(Craft(kHs256, Payload(R"("sub":"",)" + exp)), kSecret, kNow),
                     "missing sub");
  ExpectUnauthorized(VerifyJwt(SignJwt("", "operator", 60, kSecret, kNow), kSecret, kNow),
                     "missing sub");
  ExpectUnauthorized(VerifyJwt(Craft(kHs256, Payload(R"("sub":42,)" + exp)), kSecret, kNow),
                     "malformed token");
  ExpectUnauthorized(VerifyJwt(Craft(kHs256, Payload(R"("sub":null,)" + exp)), kSecret, kNow),
                     "malformed token");
}

TEST(JwtTest, SubAtMost128Bytes) {
  EXPECT_TRUE(VerifyJwt(SignJwt(std::string(128, 'u'), "", 60, kSecret, kNow), kSecret, kNow).ok());
  ExpectUnauthorized(
      VerifyJwt(SignJwt(std::string(129, 'u'), "", 60, kSecret, kNow), kSecret, kNow),
      "malformed token");
}

TEST(JwtTest, RequiresIntegerExp) {
  ExpectUnauthorized(VerifyJwt(Craft(kHs256, Payload(R"("sub":"u")")), kSecret, kNow),
                     "missing exp");
  for (const std::string exp : {"\"1767229200\"", "1767229200.5", "1767229200.0", "1.8e9", "null",
                                "true", "[1767229200]", "18446744073709551615"}) {
    ExpectUnauthorized(
        VerifyJwt(Craft(kHs256, Payload(R"("sub":"u","exp":)" + exp)), kSecret, kNow),
        "malformed token");
  }
  // The same checks apply to nbf and iat when present.
  const std::string ok_exp = R"("sub":"u","exp":)" + std::to_string(kNowSeconds + 600);
  ExpectUnauthorized(VerifyJwt(Craft(kHs256, Payload(ok_exp + R"(,"nbf":"0")")), kSecret, kNow),
                     "malformed token");
  ExpectUnauthorized(VerifyJwt(Craft(kHs256, Payload(ok_exp + R"(,"iat":1.5)")), kSecret, kNow),
                     "malformed token");
  // Extreme but integral values are fine.
  EXPECT_TRUE(
      VerifyJwt(Craft(kHs256, Payload(R"("sub":"u","exp":9223372036854775807)")), kSecret, kNow)
          .ok());
  ExpectUnauthorized(
      VerifyJwt(Craft(kHs256, Payload(R"("sub":"u","exp":-9223372036854775808)")), kSecret, kNow),
      "token expired");
}

TEST(JwtTest, ReadsRoleClaim) {
  const std::string exp = R"(,"exp":)" + std::to_string(kNowSeconds + 600);
  Result<JwtClaims> claims =
      VerifyJwt(Craft(kHs256, Payload(R"("sub":"u","role":"operator","extra":{"x":[1,2]})" + exp)),
                kSecret, kNow);
  ASSERT_TRUE(claims.ok()) << claims.status().ToString();
  EXPECT_EQ(claims->role, "operator");

  claims = VerifyJwt(Craft(kHs256, Payload(R"("sub":"u")" + exp)), kSecret, kNow);
  ASSERT_TRUE(claims.ok()) << claims.status().ToString();
  EXPECT_EQ(claims->role, "");

  ExpectUnauthorized(
      VerifyJwt(Craft(kHs256, Payload(R"("sub":"u","role":["operator"])" + exp)), kSecret, kNow),
      "malformed token");
}

TEST(JwtTest, RejectsGarbage) {
  const std::string good = SignJwt("user-1", "", 60, kSecret, kNow);
  const size_t dot1 = good.find('.');
  const size_t dot2 = good.rfind('.');
  const std::string header = good.substr(0, dot1);
  const std::string payload = good.substr(dot1 + 1, dot2 - dot1 - 1);
  const std::string signature = good.substr(dot2 + 1);
  const std::vector<std::string> garbage = {
      "",
      "abc",
      ".",
      "..",
      "...",
      "a.b",
      "a.b.c",
      "a.b.c.d",
      header + "." + payload,
      good + ".",
      good + "." + signature,
      "." + payload + "." + signature,
      header + ".." + signature,
      header + "*." + payload + "." + signature,  // bad base64url in the header
      header + "." + payload + "." + signature + "!",
      header + "=." + payload + "." + signature,  // padding is not allowed in a token
      "Bearer " + good,
      " " + good,
      good + "\n",
      Base64UrlEncode("not json") + "." + payload + "." + signature,
      Base64UrlEncode(R"(["alg","HS256"])") + "." + payload + "." + signature,
      Base64UrlEncode(R"("HS256")") + "." + payload + "." + signature,
      Base64UrlEncode("{\"alg\":\"HS256\"") + "." + payload + "." + signature,
      Base64UrlEncode("{\"alg\":\"HS\xff\"}") + "." + payload + "." + signature,  // bad UTF-8
  };
  for (const std::string& token : garbage) {
    Result<JwtClaims> r = VerifyJwt(token, kSecret, kNow);
    ASSERT_FALSE(r.ok()) << token;
    EXPECT_EQ(r.status().code(), Code::kUnauthenticated) << token;
    EXPECT_EQ(r.status().error(), "unauthorized") << token;
    EXPECT_EQ(r.status().message(), "malformed token") << token;
  }
}

TEST(JwtTest, RejectsSignedPayloadThatIsNotAnObject) {
  for (const char* payload : {"[]", "\"user-1\"", "42", "null", "{", "", "{\"sub\":\"u\"} x"}) {
    ExpectUnauthorized(VerifyJwt(Craft(kHs256, payload), kSecret, kNow), "malformed token");
  }
}

TEST(JwtTest, RejectsTokensLongerThan8KiB) {
  const std::string exp = R"(,"exp":)" + std::to_string(kNowSeconds + 600);
  // Find padding lengths that put the token just at and just over 8192 bytes.
  std::string at_limit;
  std::string over_limit;
  for (size_t pad = 5000; pad < 7000 && over_limit.empty(); ++pad) {
    std::string token =
        Craft(kHs256, Payload(R"("sub":"u","pad":")" + std::string(pad, 'x') + "\"" + exp));
    if (token.size() == 8192) at_limit = token;
    if (token.size() == 8193) over_limit = token;
  }
  ASSERT_FALSE(at_limit.empty());
  ASSERT_FALSE(over_limit.empty());
  EXPECT_TRUE(VerifyJwt(at_limit, kSecret, kNow).ok());
  ExpectUnauthorized(VerifyJwt(over_limit, kSecret, kNow), "malformed token");
  ExpectUnauthorized(VerifyJwt(std::string(1 << 20, 'a'), kSecret, kNow), "malformed token");
}

TEST(JwtTest, DeeplyNestedJsonDoesNotCrash) {
  const std::string nested = std::string(2800, '[') + std::string(2800, ']');
  const std::string token = Craft(kHs256, R"({"sub":"u","x":)" + nested + R"(,"exp":)" +
                                              std::to_string(kNowSeconds + 600) + "}");
  ASSERT_LE(token.size(), 8192u);
  EXPECT_TRUE(VerifyJwt(token, kSecret, kNow).ok());
}

TEST(JwtTest, SignNeverThrowsOnInvalidUtf8) {
  std::string token;
  EXPECT_NO_THROW(token = SignJwt("user-\xff", "op\xc3", 60, kSecret, kNow));
  Result<JwtClaims> claims = VerifyJwt(token, kSecret, kNow);
  ASSERT_TRUE(claims.ok()) << claims.status().ToString();
  EXPECT_EQ(claims->sub, "user-\xef\xbf\xbd");  // U+FFFD replaces the invalid byte
}

TEST(JwtTest, MessagesNeverContainSecretOrToken) {
  const std::string exp = R"(,"exp":)" + std::to_string(kNowSeconds + 600);
  const std::string good = SignJwt("user-1", "operator", 60, kSecret, kNow);
  const std::vector<std::pair<std::string, WallMillis>> cases = {
      {good, kNow + 3'600'000},                               // expired
      {good.substr(0, good.size() - 2), kNow},                // bad signature
      {Craft(R"({"alg":"none"})", ValidPayload()), kNow},     // unsupported alg
      {Craft(kHs256, Payload(R"("role":"x")" + exp)), kNow},  // missing sub
      {Craft(kHs256, Payload(R"("sub":"u")")), kNow},         // missing exp
      {Craft(kHs256, Payload(std::string(R"("sub":")") + kSecret + R"(","nbf":)" +
                             std::to_string(kNowSeconds + 999) + exp)),
       kNow},  // not yet valid
      {Craft(kHs256, Payload(R"("sub":")" + std::string(200, 's') + "\"" + exp)), kNow},
      {std::string(kSecret), kNow},                                  // malformed
      {std::string(kSecret) + "." + kSecret + "." + kSecret, kNow},  // malformed
  };
  for (const auto& [token, now] : cases) {
    Result<JwtClaims> r = VerifyJwt(token, kSecret, now);
    ASSERT_FALSE(r.ok()) << token;
    EXPECT_EQ(r.status().code(), Code::kUnauthenticated);
    EXPECT_EQ(r.status().error(), "unauthorized");
    const std::string text = r.status().ToString();
    EXPECT_EQ(text.find(kSecret), std::string::npos) << text;
    EXPECT_EQ(text.find(token), std::string::npos) << text;
    EXPECT_EQ(text.find("user-1"), std::string::npos) << text;
  }
}

}  // namespace
}  // namespace lastcall
