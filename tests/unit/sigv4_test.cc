// Signature Version 4 against AWS's published examples: the S3 GET Object example of the S3 API
// reference (canonical request, string to sign and signature) and the get-vanilla case of the
// SigV4 test suite.
#include "blobs/s3/sigv4.h"

#include <gtest/gtest.h>

namespace lastcall::sigv4 {
namespace {

constexpr char kEmptySha[] = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

TEST(SigV4Test, S3GetObjectExampleOfTheApiReference) {
  Request r;
  r.method = "GET";
  r.path = "/test.txt";
  r.headers = {{"Host", "examplebucket.s3.amazonaws.com"},
               {"Range", "bytes=0-9"},
               {"x-amz-content-sha256", kEmptySha},
               {"x-amz-date", "20130524T000000Z"}};
  r.payload_sha256 = kEmptySha;
  EXPECT_EQ(CanonicalRequest(r),
            "GET\n/test.txt\n\nhost:examplebucket.s3.amazonaws.com\nrange:bytes=0-9\n"
            "x-amz-content-sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n"
            "x-amz-date:20130524T000000Z\n\nhost;range;x-amz-content-sha256;x-amz-date\n"
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(Sha256Hex(CanonicalRequest(r)),
            "7344ae5b7ee6c3e7e6b0fe0640412a37625d1fbfff95c48bbb2dc43964946972");
  Credentials c{"AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", ""};
  EXPECT_EQ(Authorization(r, c, "20130524T000000Z", "us-east-1", "s3"),
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, "
            "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, "
            "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41");
}

TEST(SigV4Test, GetVanillaOfTheTestSuite) {
  Request r;
  r.method = "GET";
  r.path = "/";
  r.headers = {{"Host", "example.amazonaws.com"}, {"X-Amz-Date", "20150830T123600Z"}};
  r.payload_sha256 = kEmptySha;
  Credentials c{"AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", ""};
  EXPECT_EQ(Authorization(r, c, "20150830T123600Z", "us-east-1", "service"),
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, "
            "SignedHeaders=host;x-amz-date, "
            "Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31");
}

TEST(SigV4Test, QueryIsEncodedAndSortedAndHeadersTrimmed) {
  Request r;
  r.method = "GET";
  r.path = "/bucket";
  r.query = {{"prefix", "a b/c"}, {"list-type", "2"}, {"continuation-token", "x+y="}};
  r.headers = {{"Host", " h  "}, {"X-Amz-Meta", "a   b"}};
  r.payload_sha256 = kEmptySha;
  EXPECT_EQ(CanonicalRequest(r),
            std::string("GET\n/bucket\ncontinuation-token=x%2By%3D&list-type=2&prefix=a%20b%2Fc\n"
                        "host:h\nx-amz-meta:a b\n\nhost;x-amz-meta\n") + kEmptySha);
  EXPECT_EQ(UriEncode("a/b c~", true), "a/b%20c~");
}

}  // namespace
}  // namespace lastcall::sigv4
