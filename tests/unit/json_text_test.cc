// FileJsonText must be byte for byte the dump of FileJson: GET /files/{id} answers with the first,
// the file list and the upload with the second, and clients compare them.
#include "http/json_text.h"

#include <gtest/gtest.h>

namespace lastcall {
namespace {

std::string Dumped(const FileRecord& f) {
  return FileJson(f).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

FileRecord PlainFile() {
  FileRecord f;
  f.id = "0b6f5a0e-2f1c-4c1e-9a59-7d1c1e1f2a3b";
  f.user_id = "alice";
  f.account_id = "ec74abc9-1111-4222-8333-444455556666";
  f.name = "statement.csv";
  f.content_type = "text/csv";
  f.size_bytes = 272;
  f.sha256 = "b062e616b062e616b062e616b062e616b062e616b062e616b062e616b062e616";
  f.blob_key = "blobs/never-shown";
  f.transaction_count = 5;
  f.status = "active";
  f.uploaded_at = 1764311060169;
  return f;
}

TEST(FileJsonTextTest, PlainFileMatchesTheJsonDump) {
  FileRecord f = PlainFile();
  EXPECT_EQ(FileJsonText(f), Dumped(f));
  EXPECT_EQ(FileJsonText(f).find("blobs/never-shown"), std::string::npos);
}

TEST(FileJsonTextTest, CoordinationIdIsNullOrAString) {
  FileRecord f = PlainFile();
  EXPECT_NE(FileJsonText(f).find("\"coordinationId\":null"), std::string::npos);
  f.status = "deletion_requested";
  f.coordination_id = "298f7c44-aaaa-4bbb-8ccc-dddddddddddd";
  EXPECT_EQ(FileJsonText(f), Dumped(f));
}

TEST(FileJsonTextTest, NamesThatNeedEscapingMatchTheJsonDump) {
  for (std::string name : {std::string("quote\" and \\ backslash"), std::string("tab\tnew\nline\r"),
                           std::string("ctl \x01\x1f del \x7f"), std::string("caf\xc3\xa9 \xe2\x82\xac"),
                           std::string("bad utf-8 \xff\xfe \xc3"), std::string("nul \0 inside", 12),
                           std::string(""), std::string("/slash/ <tag> &amp;")}) {
    FileRecord f = PlainFile();
    f.name = name;
    f.content_type = name;
    EXPECT_EQ(FileJsonText(f), Dumped(f)) << "name: " << name;
    EXPECT_FALSE(nlohmann::json::parse(FileJsonText(f), nullptr, false).is_discarded());
  }
}

TEST(FileJsonTextTest, NumbersAtTheirLimitsMatchTheJsonDump) {
  FileRecord f = PlainFile();
  f.size_bytes = 0;
  f.transaction_count = INT64_MAX;
  EXPECT_EQ(FileJsonText(f), Dumped(f));
  f.size_bytes = -1;
  f.transaction_count = INT64_MIN;
  f.uploaded_at = 0;
  EXPECT_EQ(FileJsonText(f), Dumped(f));
}

}  // namespace
}  // namespace lastcall
