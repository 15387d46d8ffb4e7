#include "app/config.h"

#include <gtest/gtest.h>

#include <map>

namespace lastcall {
namespace {

Result<Config> Load(std::map<std::string, std::string> env) {
  return LoadConfig([env](const std::string& k) -> std::optional<std::string> {
    auto it = env.find(k);
    if (it == env.end()) return std::nullopt;
    return it->second;
  });
}

TEST(ConfigTest, DefaultsAreTheSeeds) {
  auto c = Load({});
  ASSERT_TRUE(c.ok());
  EXPECT_TRUE(c->event_publishing);
  EXPECT_EQ(c->coordination_timeout_ms, 5 * 60 * 1000);
  EXPECT_EQ(c->expected_consumers,
            (std::vector<std::string>{"analytics_consumer", "categorization_consumer"}));
  EXPECT_EQ(c->listen_address, "127.0.0.1");
  EXPECT_EQ(c->listen_port, 8080);
  EXPECT_EQ(c->db_path(), "var/lastcall.db");
  EXPECT_EQ(c->max_upload_bytes, 20u * 1024 * 1024);
}

TEST(ConfigTest, FractionalTimeoutMinutes) {
  auto c = Load({{"COORDINATION_TIMEOUT_MINUTES", "0.02"}});
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->coordination_timeout_ms, 1200);
}

TEST(ConfigTest, ExpectedConsumersAreTrimmedAndDeduplicated) {
  auto c = Load({{"EXPECTED_CONSUMERS", " analytics_consumer, audit_consumer,,analytics_consumer "}});
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->expected_consumers, (std::vector<std::string>{"analytics_consumer", "audit_consumer"}));
}

TEST(ConfigTest, BadValuesNameTheirVariable) {
  const std::map<std::string, std::string> bad[] = {
      {{"COORDINATION_TIMEOUT_MINUTES", "abc"}}, {{"COORDINATION_TIMEOUT_MINUTES", "0"}},
      {{"COORDINATION_TIMEOUT_MINUTES", "-1"}},  {{"COORDINATION_TIMEOUT_MINUTES", "nan"}},
      {{"COORDINATION_TIMEOUT_MINUTES", "1e9"}}, {{"ENABLE_EVENT_PUBLISHING", "maybe"}},
      {{"EXPECTED_CONSUMERS", "Bad Name"}},      {{"LASTCALL_LISTEN", "8080"}},
      {{"LASTCALL_LISTEN", "host:99999"}},       {{"LASTCALL_MAX_UPLOAD_BYTES", "-5"}},
      {{"LASTCALL_JWT_SECRET", "short"}},        {{"LASTCALL_SQLITE_SYNCHRONOUS", "OFF"}},
  };
  for (const auto& env : bad) {
    auto c = Load(env);
    ASSERT_FALSE(c.ok()) << env.begin()->first << "=" << env.begin()->second;
    EXPECT_EQ(c.status().error(), "invalid_config");
    EXPECT_NE(c.status().message().find(env.begin()->first), std::string::npos)
        << c.status().message();
  }
}

TEST(ConfigTest, EventPublishingSpellings) {
  EXPECT_FALSE(Load({{"ENABLE_EVENT_PUBLISHING", "false"}})->event_publishing);
  EXPECT_FALSE(Load({{"ENABLE_EVENT_PUBLISHING", "FALSE"}})->event_publishing);
  EXPECT_TRUE(Load({{"ENABLE_EVENT_PUBLISHING", "true"}})->event_publishing);
  EXPECT_TRUE(Load({{"ENABLE_EVENT_PUBLISHING", "1"}})->event_publishing);
}

TEST(ConfigTest, ScaleOutBackendsAreOptInAndValidated) {
  auto d = Load({});
  ASSERT_TRUE(d.ok());
  EXPECT_FALSE(d->nats_url);
  EXPECT_FALSE(d->blob_url);
  auto c = Load({{"LASTCALL_NATS_URL", "nats://lc:pw@n1:4222,nats://n2:4222"},
                 {"LASTCALL_NATS_REPLICAS", "3"},
                 {"LASTCALL_NATS_STREAM", "LC_STAGING"},
                 {"LASTCALL_NATS_SUBJECT_PREFIX", "staging.events"},
                 {"LASTCALL_BLOB_URL", "s3://b?endpoint=http://minio:9000"},
                 {"AWS_ACCESS_KEY_ID", "AK"},
                 {"AWS_SECRET_ACCESS_KEY", "SK"}});
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(*c->nats_url, "nats://lc:pw@n1:4222,nats://n2:4222");
  EXPECT_EQ(c->nats_replicas, 3);
  EXPECT_EQ(c->nats_stream, "LC_STAGING");
  EXPECT_EQ(c->nats_subject_prefix, "staging.events");
  EXPECT_EQ(c->aws_secret_access_key, "SK");
  const std::vector<std::pair<std::map<std::string, std::string>, std::string>> bad = {
      {{{"LASTCALL_NATS_URL", "http://n1:4222"}}, "LASTCALL_NATS_URL"},
      {{{"LASTCALL_NATS_URL", "nats://n1:4222,"}}, "LASTCALL_NATS_URL"},
      {{{"LASTCALL_NATS_REPLICAS", "0"}}, "LASTCALL_NATS_REPLICAS"},
      {{{"LASTCALL_NATS_STREAM", "a.b"}}, "LASTCALL_NATS_STREAM"},
      {{{"LASTCALL_NATS_SUBJECT_PREFIX", "a.>"}}, "LASTCALL_NATS_SUBJECT_PREFIX"},
      {{{"LASTCALL_NATS_SUBJECT_PREFIX", "a..b"}}, "LASTCALL_NATS_SUBJECT_PREFIX"},
      {{{"LASTCALL_NATS_ACK_WAIT_MS", "5"}}, "LASTCALL_NATS_ACK_WAIT_MS"},
      {{{"LASTCALL_NATS_REPUBLISH_AFTER_MS", "x"}}, "LASTCALL_NATS_REPUBLISH_AFTER_MS"},
      {{{"LASTCALL_BLOB_URL", "s3://b?endpoint=http://h:1"}}, "AWS_ACCESS_KEY_ID"},
      {{{"LASTCALL_BLOB_URL", "s3://b"}, {"AWS_ACCESS_KEY_ID", "a"}, {"AWS_SECRET_ACCESS_KEY", "s"}},
       "LASTCALL_BLOB_URL"},
  };
  for (const auto& [env, var] : bad) {
    auto r = Load(env);
    ASSERT_FALSE(r.ok()) << var;
    EXPECT_EQ(r.status().error(), "invalid_config");
    EXPECT_NE(r.status().message().find(var), std::string::npos) << r.status().message();
  }
}

}  // namespace
}  // namespace lastcall
