#include "app/config.h"
#include "bus/nats/nats_bus.h"

#include <gtest/gtest.h>

#include <map>
#include <string>
#include <vector>

namespace lastcall {
namespace {

Result<Config> Load(std::map<std::string, std::string> env) {
  return LoadConfig([env](const std::string& k) -> std::optional<std::string> {
    auto it = env.find(k);
    if (it == env.end()) return std::nullopt;
    return it->second;
  });
}

TEST(ConfigTest, HttpReadTimeoutConnectionAndImportLimits) {
  auto d = Load({});
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->http_read_timeout_seconds, 30);
  EXPECT_EQ(d->http_max_connections, 1024);
  EXPECT_EQ(d->max_import_rows, 100000);
  auto c = Load({{"LASTCALL_HTTP_READ_TIMEOUT_SECONDS", " 3 "},
                 {"LASTCALL_HTTP_MAX_CONNECTIONS", "64"},
                 {"LASTCALL_MAX_IMPORT_ROWS", "1000000"}});
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->max_import_rows, 1000000);
  EXPECT_EQ(c->http_read_timeout_seconds, 3);
  EXPECT_EQ(c->http_max_connections, 64);
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
      {{"LASTCALL_HTTP_READ_TIMEOUT_SECONDS", "0"}}, {{"LASTCALL_HTTP_READ_TIMEOUT_SECONDS", "x"}},
      {{"LASTCALL_HTTP_MAX_CONNECTIONS", "0"}},  {{"LASTCALL_HTTP_MAX_CONNECTIONS", "1e3"}},
      {{"LASTCALL_MAX_IMPORT_ROWS", "0"}},       {{"LASTCALL_MAX_IMPORT_ROWS", "1000001"}},
      {{"LASTCALL_TEST_CONSUMER_FAULTS", "analytics_consumer=explode:5"}},
      {{"LASTCALL_TEST_CONSUMER_FAULTS", "analytics_consumer=fail:101"}},
      {{"LASTCALL_TEST_CONSUMER_FAULTS", "analytics_consumer=fail"}},
      {{"LASTCALL_TEST_CONSUMER_FAULTS", "audit_consumer=fail:5"}},
      {{"LASTCALL_TEST_CONSUMER_FAULTS", "analytics_consumer=fail:5,analytics_consumer=silent:5"}},
  };
  for (const auto& env : bad) {
    auto c = Load(env);
    ASSERT_FALSE(c.ok()) << env.begin()->first << "=" << env.begin()->second;
    EXPECT_EQ(c.status().error(), "invalid_config");
    EXPECT_NE(c.status().message().find(env.begin()->first), std::string::npos)
        << c.status().message();
  }
}

TEST(ConfigTest, SqliteMemoryBudgetDefaultsFromTheCacheAndRejectsBadValues) {
  auto d = Load({});
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->sqlite_cache_mib, 64);
  EXPECT_EQ(d->sqlite_memory_mib, SqliteMemoryMibDefault(64));
  auto small = Load({{"LASTCALL_SQLITE_CACHE_MIB", "8"}});
  ASSERT_TRUE(small.ok());
  EXPECT_EQ(small->sqlite_memory_mib, SqliteMemoryMibDefault(8));
  auto set = Load({{"LASTCALL_SQLITE_MEMORY_MIB", " 48 "}});
  ASSERT_TRUE(set.ok());
  EXPECT_EQ(set->sqlite_memory_mib, 48);
  auto off = Load({{"LASTCALL_SQLITE_MEMORY_MIB", "0"}});
  ASSERT_TRUE(off.ok());
  EXPECT_EQ(off->sqlite_memory_mib, 0);
  for (const char* bad : {"", "abc", "-1", "1.5", "65537", "32MiB", "99999999999999999999"}) {
    auto c = Load({{"LASTCALL_SQLITE_MEMORY_MIB", bad}});
    ASSERT_FALSE(c.ok()) << bad;
    EXPECT_EQ(c.status().error(), "invalid_config");
    EXPECT_NE(c.status().message().find("LASTCALL_SQLITE_MEMORY_MIB"), std::string::npos)
        << c.status().message();
  }
}

TEST(ConfigTest, TestConsumerFaultsAreParsed) {
  auto c = Load({{"LASTCALL_TEST_CONSUMER_FAULTS",
                  " analytics_consumer=fail:20, categorization_consumer=silent:100 ,"}});
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  ASSERT_EQ(c->test_consumer_faults.size(), 2u);
  EXPECT_EQ(c->test_consumer_faults[0].consumer, "analytics_consumer");
  EXPECT_EQ(c->test_consumer_faults[0].mode, FaultMode::kFail);
  EXPECT_EQ(c->test_consumer_faults[0].percent, 20);
  EXPECT_EQ(c->test_consumer_faults[1].mode, FaultMode::kSilent);
  EXPECT_TRUE(Load({})->test_consumer_faults.empty());
}

// The bucket is part of the knob's contract: tests/crash/crash_harness.py computes the same one.
TEST(ConfigTest, FaultBucketIsFnv1aModulo100) {
  EXPECT_EQ(FaultBucket(""), 3);
  EXPECT_EQ(FaultBucket("a"), 66);
  EXPECT_EQ(FaultBucket("0f8fad5b-d9cb-469f-a165-70867728950e"), 15);
  EXPECT_EQ(FaultBucket("7c9e6679-7425-40de-944b-e07fc1f90ae7"), 81);
  ConsumerFaults faults({{"analytics_consumer", FaultMode::kFail, 16}});
  EXPECT_EQ(faults.For("analytics_consumer", "0f8fad5b-d9cb-469f-a165-70867728950e"), FaultMode::kFail);
  EXPECT_EQ(faults.For("analytics_consumer", "7c9e6679-7425-40de-944b-e07fc1f90ae7"), FaultMode::kNone);
  EXPECT_EQ(faults.For("categorization_consumer", "0f8fad5b-d9cb-469f-a165-70867728950e"),
            FaultMode::kNone);
}

TEST(ConfigTest, EventPublishingSpellings) {
  EXPECT_FALSE(Load({{"ENABLE_EVENT_PUBLISHING", "false"}})->event_publishing);
  EXPECT_FALSE(Load({{"ENABLE_EVENT_PUBLISHING", "FALSE"}})->event_publishing);
  EXPECT_TRUE(Load({{"ENABLE_EVENT_PUBLISHING", "true"}})->event_publishing);
  EXPECT_TRUE(Load({{"ENABLE_EVENT_PUBLISHING", "1"}})->event_publishing);
}

TEST(ConfigTest, DatabaseWritersDefaultToSeveralOnlyWithTheNatsBus) {
  const std::string pg = "postgresql://lc@db/lastcall";
  auto lite = Load({});
  ASSERT_TRUE(lite.ok());
  EXPECT_EQ(lite->database_writers, 1);
  auto in_process = Load({{"LASTCALL_DATABASE_URL", pg}});
  ASSERT_TRUE(in_process.ok());
  EXPECT_EQ(in_process->database_writers, 1);
  auto nats = Load({{"LASTCALL_DATABASE_URL", pg}, {"LASTCALL_NATS_URL", "nats://n1:4222"}});
  ASSERT_TRUE(nats.ok());
  EXPECT_EQ(nats->database_writers, Config::kDefaultDatabaseWriters);
  auto set = Load({{"LASTCALL_DATABASE_URL", pg},
                   {"LASTCALL_NATS_URL", "nats://n1:4222"},
                   {"LASTCALL_DATABASE_WRITERS", " 12 "}});
  ASSERT_TRUE(set.ok()) << set.status().ToString();
  EXPECT_EQ(set->database_writers, 12);
  auto one = Load({{"LASTCALL_DATABASE_URL", pg}, {"LASTCALL_DATABASE_WRITERS", "1"}});
  ASSERT_TRUE(one.ok()) << one.status().ToString();
  EXPECT_EQ(one->database_writers, 1);
  // Out of range; on SQLite (one writer); several with the in-process bus.
  auto scale_out = [&](const std::string& writers) {
    return std::map<std::string, std::string>{{"LASTCALL_DATABASE_URL", pg},
                                              {"LASTCALL_NATS_URL", "nats://n1:4222"},
                                              {"LASTCALL_DATABASE_WRITERS", writers}};
  };
  const std::vector<std::map<std::string, std::string>> bad = {
      scale_out("0"),
      scale_out("33"),
      scale_out("two"),
      {{"LASTCALL_DATABASE_WRITERS", "1"}},
      {{"LASTCALL_DATABASE_URL", pg}, {"LASTCALL_DATABASE_WRITERS", "2"}},
  };
  for (const auto& env : bad) {
    auto c = Load(env);
    ASSERT_FALSE(c.ok()) << env.at("LASTCALL_DATABASE_WRITERS");
    EXPECT_EQ(c.status().error(), "invalid_config");
    EXPECT_NE(c.status().message().find("LASTCALL_DATABASE_WRITERS"), std::string::npos)
        << c.status().message();
  }
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
  // The bus connects to each server of the list (cnats takes one URL per server).
  EXPECT_EQ(SplitNatsUrls(" nats://lc:pw@n1:4222 , nats://n2:4222"),
            (std::vector<std::string>{"nats://lc:pw@n1:4222", "nats://n2:4222"}));
  EXPECT_EQ(SplitNatsUrls("nats://n1:4222"), (std::vector<std::string>{"nats://n1:4222"}));
  EXPECT_EQ(SplitNatsUrls("nats://n1:4222,"), (std::vector<std::string>{"nats://n1:4222", ""}));
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
