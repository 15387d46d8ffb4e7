// The CloudEvent codec: what the outbox relays and what a broker or webhook hands back.
#include "domain/events.h"

#include <gtest/gtest.h>

namespace lastcall {
namespace {

TEST(CloudEventTest, RoundTripsThroughStructuredJson) {
  CloudEvent e{"0b7e6a52-3f0e-4c36-9f0e-2b1c8a1d2e3f", kApiSource, kFileDeleteRequested,
               "files/f1", "2026-11-28T06:04:20.123Z", {{"coordinationId", "c1"}, {"transactionCount", 3}}};
  nlohmann::json j = ToJson(e);
  EXPECT_EQ(j["specversion"], "1.0");
  EXPECT_EQ(j["datacontenttype"], "application/json");
  auto back = ParseCloudEvent(j.dump());
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->id, e.id);
  EXPECT_EQ(back->type, e.type);
  EXPECT_EQ(back->source, e.source);
  EXPECT_EQ(back->subject, e.subject);
  EXPECT_EQ(back->time, e.time);
  EXPECT_EQ(back->data, e.data);
}

TEST(CloudEventTest, RefusesWhatIsNotAStructuredCloudEvent) {
  const char* bad[] = {
      "", "[]", "not json", R"({"id":"x","source":"s","type":"t"})",
      R"({"specversion":"0.3","id":"x","source":"s","type":"t"})",
      R"({"specversion":"1.0","source":"s","type":"t"})",
      R"({"specversion":"1.0","id":"","source":"s","type":"t"})",
      R"({"specversion":"1.0","id":"x","source":"s","type":5})",
      R"({"specversion":"1.0","id":"x","source":"s","type":"t","data":[1]})",
      R"({"specversion":"1.0","id":"x","source":"s","type":"t","datacontenttype":"text/xml"})",
  };
  for (const char* text : bad) {
    auto r = ParseCloudEvent(text);
    EXPECT_FALSE(r.ok()) << text;
    if (!r.ok()) {
      EXPECT_EQ(r.status().error(), "invalid_event") << text;
    }
  }
}

}  // namespace
}  // namespace lastcall
