// Structured log lines: one JSON object per line with time, level, message and the fields.
#include "common/log.h"

#include <gtest/gtest.h>

#include <string>

namespace lastcall {
namespace {

nlohmann::json OneLine(const std::function<void()>& write) {
  testing::internal::CaptureStderr();
  write();
  std::string out = testing::internal::GetCapturedStderr();
  EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 1) << out;
  return nlohmann::json::parse(out, nullptr, false);
}

TEST(LogTest, ALineIsOneJsonObjectWithTimeLevelMessageAndTheFields) {
  nlohmann::json line = OneLine([] {
    log::Warn("a \"quoted\"\nmessage", {{"fileId", "f-1"}, {"count", 3}, {"nested", {{"a", true}}}});
  });
  ASSERT_TRUE(line.is_object());
  EXPECT_EQ(line["level"], "warn");
  EXPECT_EQ(line["message"], "a \"quoted\"\nmessage");
  EXPECT_EQ(line["fileId"], "f-1");
  EXPECT_EQ(line["count"], 3);
  EXPECT_EQ(line["nested"]["a"], true);
  ASSERT_TRUE(line["time"].is_string());
  EXPECT_EQ(line["time"].get<std::string>().back(), 'Z');
  EXPECT_EQ(line.size(), 6u);
}

TEST(LogTest, AFieldNamedLikeABuiltInOneReplacesIt) {
  nlohmann::json line = OneLine([] { log::Info("built in", {{"message", "from the field"}}); });
  ASSERT_TRUE(line.is_object());
  EXPECT_EQ(line["message"], "from the field");
  EXPECT_EQ(line["level"], "info");
  EXPECT_EQ(line.size(), 3u);
}

TEST(LogTest, InvalidUtf8IsReplacedNotThrown) {
  nlohmann::json line = OneLine([] { log::Info("bytes", {{"name", std::string("a\xff" "b")}}); });
  ASSERT_TRUE(line.is_object());
  EXPECT_EQ(line["name"], "a\xef\xbf\xbd" "b");
}

TEST(LogTest, LinesBelowTheLevelAreNotWritten) {
  log::SetLevel(log::Level::kWarn);
  testing::internal::CaptureStderr();
  log::Info("hidden");
  std::string out = testing::internal::GetCapturedStderr();
  log::SetLevel(log::Level::kInfo);
  EXPECT_EQ(out, "");
}

}  // namespace
}  // namespace lastcall
