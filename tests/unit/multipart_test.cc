#include "http/multipart.h"

#include <gtest/gtest.h>

#include <chrono>
#include <string>
#include <vector>

namespace lastcall {
namespace {

using std::string_literals::operator""s;

constexpr char kCurlBoundary[] = "------------------------d74496d66958873e";

// A body made of parts `--boundary CRLF headers CRLF CRLF data CRLF`, then the close delimiter.
struct PartSpec {
  std::string headers;  // complete header lines, each ending in CRLF
  std::string data;
};

std::string Body(const std::string& boundary, const std::vector<PartSpec>& parts) {
  std::string body;
  for (const PartSpec& part : parts) {
    body += "--" + boundary + "\r\n" + part.headers + "\r\n" + part.data + "\r\n";
  }
  body += "--" + boundary + "--\r\n";
  return body;
}

std::string Field(const std::string& name) {
  return "Content-Disposition: form-data; name=\"" + name + "\"\r\n";
}

void ExpectInvalidForm(const Result<std::vector<MultipartPart>>& r) {
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kInvalidArgument);
  EXPECT_EQ(r.status().error(), "invalid_form");
  EXPECT_FALSE(r.status().message().empty());
}

void ExpectUnsupported(const Result<std::vector<MultipartPart>>& r) {
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kUnsupported);
  EXPECT_EQ(r.status().error(), "unsupported_media_type");
}

TEST(MultipartTest, ParsesWhatCurlSends) {
  // curl -F account=checking -F 'note=hello world' -F file=@stmt.csv;type=text/csv
  const std::string dash_boundary = "--"s + kCurlBoundary;
  std::string body;
  body += dash_boundary + "\r\n";
  body += "Content-Disposition: form-data; name=\"account\"\r\n";
  body += "\r\n";
  body += "checking\r\n";
  body += dash_boundary + "\r\n";
  body += "Content-Disposition: form-data; name=\"note\"\r\n";
  body += "\r\n";
  body += "hello world\r\n";
  body += dash_boundary + "\r\n";
  body += "Content-Disposition: form-data; name=\"file\"; filename=\"stmt.csv\"\r\n";
  body += "Content-Type: text/csv\r\n";
  body += "\r\n";
  body += "date,amount\r\n2026-01-01,-10.00\r\n";
  body += "\r\n";
  body += dash_boundary + "--\r\n";
  Result<std::vector<MultipartPart>> parts =
      ParseMultipart("multipart/form-data; boundary="s + kCurlBoundary, body);
  ASSERT_TRUE(parts.ok()) << parts.status().ToString();
  ASSERT_EQ(parts->size(), 3u);
  EXPECT_EQ((*parts)[0].name, "account");
  EXPECT_FALSE((*parts)[0].filename.has_value());
  EXPECT_EQ((*parts)[0].content_type, "");
  EXPECT_EQ((*parts)[0].data, "checking");
  EXPECT_EQ((*parts)[1].name, "note");
  EXPECT_EQ((*parts)[1].data, "hello world");
  EXPECT_EQ((*parts)[2].name, "file");
  EXPECT_EQ((*parts)[2].filename, "stmt.csv");
  EXPECT_EQ((*parts)[2].content_type, "text/csv");
  EXPECT_EQ((*parts)[2].data, "date,amount\r\n2026-01-01,-10.00\r\n");
}

TEST(MultipartTest, ContentTypeIsCaseInsensitiveAndBoundaryMayBeQuoted) {
  const std::string body = Body("a'b(c) d:e", {{Field("x"), "1"}});
  for (const std::string& content_type : {
           "multipart/form-data; boundary=\"a'b(c) d:e\""s,
           "Multipart/Form-Data; BOUNDARY=\"a'b(c) d:e\""s,
           "multipart/form-data;boundary=\"a'b(c) d:e\";charset=utf-8"s,
           "multipart/form-data; charset=utf-8; Boundary=\"a'b(c) d:e\" "s,
           " multipart/form-data ; boundary = \"a'b(c) d:e\""s,
       }) {
    Result<std::vector<MultipartPart>> parts = ParseMultipart(content_type, body);
    ASSERT_TRUE(parts.ok()) << content_type << ": " << parts.status().ToString();
    ASSERT_EQ(parts->size(), 1u);
    EXPECT_EQ((*parts)[0].data, "1");
  }
  // Unquoted token boundary, mixed-case header names and disposition type.
  const std::string body2 =
      "--XyZ\r\ncontent-disposition: FORM-DATA; NAME=field; FileName=a.txt\r\n"
      "CONTENT-TYPE:  text/plain \r\n\r\nabc\r\n--XyZ--";
  Result<std::vector<MultipartPart>> parts =
      ParseMultipart("MULTIPART/FORM-DATA; boundary=XyZ", body2);
  ASSERT_TRUE(parts.ok()) << parts.status().ToString();
  ASSERT_EQ(parts->size(), 1u);
  EXPECT_EQ((*parts)[0].name, "field");
  EXPECT_EQ((*parts)[0].filename, "a.txt");
  EXPECT_EQ((*parts)[0].content_type, "text/plain");
  EXPECT_EQ((*parts)[0].data, "abc");
}

TEST(MultipartTest, BinaryDataWithLineBreaksAndDashesIsKeptExactly) {
  const std::string boundary = "----WebKitFormBoundary7MA4YWxkTrZu0gW";
  std::string data = "\x00\x01\xff\r\n"s;     // NUL, high bytes, CRLF
  data += "--\r\n";                           // a dash-dash line
  data += "\r\n--" + boundary.substr(0, 20);  // a prefix of the delimiter
  data += "\r\n--" + boundary + "X";          // the boundary followed by a non-delimiter
  data += "\r\n--" + boundary + "-x";         // one dash is not a close delimiter
  data += "\n--" + boundary + "\r\n";         // bare LF delimiter in a CRLF body is data
  data += "x--" + boundary + "--";            // not after a line break
  data += "\r\r\n\n\r";                       // ends in a lone CR
  const std::string body = Body(boundary, {
                                              {Field("a"), data},
                                              {Field("b") + "Content-Type: image/png\r\n", data},
                                          });
  Result<std::vector<MultipartPart>> parts =
      ParseMultipart("multipart/form-data; boundary=" + boundary, body);
  ASSERT_TRUE(parts.ok()) << parts.status().ToString();
  ASSERT_EQ(parts->size(), 2u);
  EXPECT_EQ((*parts)[0].data, data);
  EXPECT_EQ((*parts)[1].data, data);
  EXPECT_EQ((*parts)[1].content_type, "image/png");
}

TEST(MultipartTest, ToleratesBareLineFeeds) {
  const std::string body =
      "--b\n"
      "Content-Disposition: form-data; name=\"a\"\n"
      "\n"
      "line1\r\nline2\n"
      "--b\n"
      "Content-Disposition: form-data; name=\"f\"; filename=\"x.bin\"\n"
      "\n"
      "\n"
      "--b--\n";
  Result<std::vector<MultipartPart>> parts =
      ParseMultipart("multipart/form-data; boundary=b", body);
  ASSERT_TRUE(parts.ok()) << parts.status().ToString();
  ASSERT_EQ(parts->size(), 2u);
  EXPECT_EQ((*parts)[0].data, "line1\r\nline2");
  EXPECT_EQ((*parts)[1].data, "");
  EXPECT_EQ((*parts)[1].filename, "x.bin");
}

TEST(MultipartTest, IgnoresPreambleEpilogueAndTransportPadding) {
  const std::string body =
      "This is the preamble.\r\n--b is not the boundary line\r\n"
      "--b \t\r\n"
      "Content-Disposition: form-data; name=\"a\"\r\n\r\n"
      "1\r\n"
      "--b\r\n"
      "Content-Disposition: form-data; name=\"b\"\r\n\r\n"
      "2\r\n"
      "--b--  trailing\r\nepilogue\r\n--b\r\nContent-Disposition: form-data\r\n\r\nzzz";
  Result<std::vector<MultipartPart>> parts =
      ParseMultipart("multipart/form-data; boundary=b", body);
  ASSERT_TRUE(parts.ok()) << parts.status().ToString();
  ASSERT_EQ(parts->size(), 2u);
  EXPECT_EQ((*parts)[0].name, "a");
  EXPECT_EQ((*parts)[0].data, "1");
  EXPECT_EQ((*parts)[1].name, "b");
  EXPECT_EQ((*parts)[1].data, "2");
}

TEST(MultipartTest, OnlyCloseDelimiterIsAnEmptyForm) {
  Result<std::vector<MultipartPart>> parts =
      ParseMultipart("multipart/form-data; boundary=b", "--b--\r\n");
  ASSERT_TRUE(parts.ok()) << parts.status().ToString();
  EXPECT_TRUE(parts->empty());
}

TEST(MultipartTest, MissingClosingDelimiterIsInvalid) {
  const std::string content_type = "multipart/form-data; boundary=b";
  const std::string complete = Body("b", {{Field("a"), "1"}});
  // Truncated anywhere before the close delimiter's "--".
  for (size_t len : {complete.size() - 4, complete.size() - 5, complete.size() - 10}) {
    ExpectInvalidForm(ParseMultipart(content_type, complete.substr(0, len)));
  }
  ExpectInvalidForm(ParseMultipart(content_type, "--b\r\n" + Field("a") + "\r\n1\r\n--b\r\n"));
  ExpectInvalidForm(ParseMultipart(content_type, "--b\r\n" + Field("a") + "\r\n1\r\n--b-"));
  ExpectInvalidForm(ParseMultipart(content_type, "--b\r\n" + Field("a") + "\r\n1"));
  // No boundary in the body at all, or an empty body.
  ExpectInvalidForm(ParseMultipart(content_type, "hello"));
  ExpectInvalidForm(ParseMultipart(content_type, ""));
  ExpectInvalidForm(ParseMultipart(content_type, "--bb\r\n" + Field("a") + "\r\n1\r\n--bb--"));
}

TEST(MultipartTest, WrongContentTypeIsUnsupported) {
  const std::string body = Body("b", {{Field("a"), "1"}});
  for (const std::string& content_type : {
           ""s,
           "application/json"s,
           "application/x-www-form-urlencoded"s,
           "text/csv; boundary=b"s,
           "multipart/mixed; boundary=b"s,
           "multipart/form-datax; boundary=b"s,
           "multipart/form-data-x; boundary=b"s,
           "boundary=b"s,
       }) {
    ExpectUnsupported(ParseMultipart(content_type, body));
  }
}

TEST(MultipartTest, MissingOrBadBoundaryIsInvalid) {
  const std::string body = Body("b", {{Field("a"), "1"}});
  for (const std::string& content_type : {
           "multipart/form-data"s,
           "multipart/form-data;"s,
           "multipart/form-data; charset=utf-8"s,
           "multipart/form-data; boundary="s,
           "multipart/form-data; boundary=\"\""s,
           "multipart/form-data; boundary=\"b"s,            // unterminated quoted string
           "multipart/form-data; boundary=\"b\"x"s,         // garbage after the quotes
           "multipart/form-data; boundary"s,                // no '='
           "multipart/form-data; boundary=b; boundary=c"s,  // ambiguous
           "multipart/form-data; boundary=" + std::string(71, 'b'),
       }) {
    ExpectInvalidForm(ParseMultipart(content_type, body));
  }
  // 70 characters is the RFC 2046 maximum and is accepted.
  const std::string long_boundary(70, 'b');
  EXPECT_TRUE(ParseMultipart("multipart/form-data; boundary=" + long_boundary,
                             Body(long_boundary, {{Field("a"), "1"}}))
                  .ok());
}

TEST(MultipartTest, PartWithoutNameIsInvalid) {
  const std::string content_type = "multipart/form-data; boundary=b";
  for (const std::string& headers : {
           "Content-Disposition: form-data\r\n"s,
           "Content-Disposition: form-data; filename=\"a.txt\"\r\n"s,
           "Content-Disposition: form-data; name=\"\"\r\n"s,
           "Content-Disposition: form-data; name=\r\n"s,
           "Content-Disposition: attachment; name=\"a\"\r\n"s,
           "Content-Disposition: inline; name=\"a\"\r\n"s,
           "Content-Type: text/plain\r\n"s,
           ""s,
       }) {
    ExpectInvalidForm(
        ParseMultipart(content_type, Body("b", {{Field("ok"), "1"}, {headers, "data"}})));
  }
}

TEST(MultipartTest, MalformedPartHeadersAreInvalid) {
  const std::string content_type = "multipart/form-data; boundary=b";
  for (const std::string& headers : {
           Field("a") + Field("b"),                                    // two dispositions
           Field("a") + "Content-Type: a/b\r\nContent-Type: c/d\r\n",  // two content types
           Field("a") + "no colon here\r\n", Field("a") + ": empty name\r\n",
           Field("a") + " folded: header\r\n",
           "Content-Disposition: form-data; name=\"a\"; name=\"b\"\r\n"s,
           "Content-Disposition: form-data; name=\"a\"; filename=x; filename=y\r\n"s,
           "Content-Disposition: form-data; name=\"a\r\n"s,  // unterminated quote
       }) {
    ExpectInvalidForm(ParseMultipart(content_type, Body("b", {{headers, "data"}})));
  }
}

TEST(MultipartTest, FilenameDirectoriesAreStripped) {
  struct Case {
    std::string sent;  // as it appears between the quotes on the wire
    std::string want;
  };
  for (const Case& c : std::vector<Case>{
           {"../../etc/passwd", "passwd"},
           {"/etc/passwd", "passwd"},
           {"C:\\\\x\\\\y.csv", "y.csv"},  // escaped backslashes: C:\x\y.csv
           {"C:\\x\\y.csv", "y.csv"},      // raw backslashes, as old browsers send them
           {"..\\..\\boot.ini", "boot.ini"},
           {"dir/", ""},
           {"a/..", ""},
           {"..", ""},
           {".", ""},
           {"report.final.csv", "report.final.csv"},
           {"sp ace; semi=colon.csv", "sp ace; semi=colon.csv"},
           {"quo\\\"te.csv", "quo\"te.csv"},
           {"%22pct%22.csv", "%22pct%22.csv"},  // no percent-decoding
           {"r\xc3\xa9sum\xc3\xa9.pdf", "r\xc3\xa9sum\xc3\xa9.pdf"},
       }) {
    const std::string headers =
        "Content-Disposition: form-data; name=\"f\"; filename=\"" + c.sent + "\"\r\n";
    Result<std::vector<MultipartPart>> parts =
        ParseMultipart("multipart/form-data; boundary=b", Body("b", {{headers, "x"}}));
    ASSERT_TRUE(parts.ok()) << c.sent << ": " << parts.status().ToString();
    ASSERT_EQ(parts->size(), 1u);
    EXPECT_EQ((*parts)[0].filename, c.want) << c.sent;
  }
}

TEST(MultipartTest, FilenameStarIsIgnored) {
  const std::string headers =
      "Content-Disposition: form-data; name=\"f\"; filename=\"a.txt\"; "
      "filename*=UTF-8''%E2%82%AC.txt\r\n";
  Result<std::vector<MultipartPart>> parts =
      ParseMultipart("multipart/form-data; boundary=b", Body("b", {{headers, "x"}}));
  ASSERT_TRUE(parts.ok()) << parts.status().ToString();
  EXPECT_EQ((*parts)[0].filename, "a.txt");
}

TEST(MultipartTest, EmptyFilePart) {
  const std::string body =
      Body("b", {
                    {"Content-Disposition: form-data; name=\"file\"; filename=\"empty.txt\"\r\n"
                     "Content-Type: application/octet-stream\r\n",
                     ""},
                    // A browser's file input with nothing chosen.
                    {"Content-Disposition: form-data; name=\"other\"; filename=\"\"\r\n"
                     "Content-Type: application/octet-stream\r\n",
                     ""},
                    {Field("after"), "z"},
                });
  Result<std::vector<MultipartPart>> parts =
      ParseMultipart("multipart/form-data; boundary=b", body);
  ASSERT_TRUE(parts.ok()) << parts.status().ToString();
  ASSERT_EQ(parts->size(), 3u);
  EXPECT_EQ((*parts)[0].filename, "empty.txt");
  EXPECT_EQ((*parts)[0].content_type, "application/octet-stream");
  EXPECT_EQ((*parts)[0].data, "");
  ASSERT_TRUE((*parts)[1].filename.has_value());
  EXPECT_EQ(*(*parts)[1].filename, "");
  EXPECT_EQ((*parts)[1].data, "");
  EXPECT_EQ((*parts)[2].data, "z");
}

TEST(MultipartTest, HeadersWithoutBlankLineLeaveNoData) {
  // The CRLF after the last header is also the delimiter's CRLF.
  Result<std::vector<MultipartPart>> parts =
      ParseMultipart("multipart/form-data; boundary=b",
                     "--b\r\nContent-Disposition: form-data; name=\"a\"\r\n--b--\r\n");
  ASSERT_TRUE(parts.ok()) << parts.status().ToString();
  ASSERT_EQ(parts->size(), 1u);
  EXPECT_EQ((*parts)[0].name, "a");
  EXPECT_EQ((*parts)[0].data, "");
}

TEST(MultipartTest, AtMost100Parts) {
  std::vector<PartSpec> specs;
  for (int i = 0; i < 100; ++i) specs.push_back({Field("f" + std::to_string(i)), "v"});
  Result<std::vector<MultipartPart>> parts =
      ParseMultipart("multipart/form-data; boundary=b", Body("b", specs));
  ASSERT_TRUE(parts.ok()) << parts.status().ToString();
  EXPECT_EQ(parts->size(), 100u);
  EXPECT_EQ(parts->back().name, "f99");

  specs.push_back({Field("f100"), "v"});
  ExpectInvalidForm(ParseMultipart("multipart/form-data; boundary=b", Body("b", specs)));
}

TEST(MultipartTest, LargeBodyWithManyNearMissesIsLinear) {
  // 20 MiB of data made of almost-delimiters, plus a large preamble of near misses.
  const std::string boundary = "----WebKitFormBoundaryABCDEFGH";
  const std::string near_miss = "\r\n--" + boundary.substr(0, boundary.size() - 1) + "Z";
  std::string data;
  data.reserve(20 << 20);
  while (data.size() + near_miss.size() <= (20u << 20)) data += near_miss;
  std::string preamble;
  for (int i = 0; i < 10000; ++i) preamble += "\n--" + boundary + "X";
  const std::string body =
      preamble + "\r\n" + Body(boundary, {{Field("a"), "small"}, {Field("big"), data}});
  const auto start = std::chrono::steady_clock::now();
  Result<std::vector<MultipartPart>> parts =
      ParseMultipart("multipart/form-data; boundary=" + boundary, body);
  const auto elapsed = std::chrono::steady_clock::now() - start;
  ASSERT_TRUE(parts.ok()) << parts.status().ToString();
  ASSERT_EQ(parts->size(), 2u);
  EXPECT_EQ((*parts)[0].data, "small");
  EXPECT_EQ((*parts)[1].data.size(), data.size());
  EXPECT_TRUE((*parts)[1].data == data);
  // Generous bound (sanitizers, slow CI): a quadratic scan would take minutes.
  EXPECT_LT(elapsed, std::chrono::seconds(20));
}

TEST(MultipartTest, ErrorMessagesDoNotEchoBodyData) {
  Result<std::vector<MultipartPart>> r = ParseMultipart(
      "multipart/form-data; boundary=b",
      Body("b", {{"Content-Disposition: form-data; secret=\"hunter2\"\r\n", "hunter2"}}));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().error(), "invalid_form");
  EXPECT_EQ(r.status().message().find("hunter2"), std::string::npos);
  EXPECT_NE(r.status().message().find("part 1"), std::string::npos);
}

}  // namespace
}  // namespace lastcall
