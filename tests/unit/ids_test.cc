#include "common/ids.h"
#include "common/request_id.h"

#include <gtest/gtest.h>

#include <chrono>
#include <set>
#include <thread>
#include <vector>

namespace lastcall {
namespace {

TEST(IdsTest, Version4IsRandomAndWellFormed) {
  RandomIdGenerator ids;
  std::set<std::string> seen;
  for (int i = 0; i < 1000; ++i) {
    std::string id = ids.NewUuid();
    ASSERT_TRUE(IsUuid(id)) << id;
    EXPECT_EQ(id[14], '4') << id;
    EXPECT_NE(std::string("89ab").find(id[19]), std::string::npos) << id;
    seen.insert(id);
  }
  EXPECT_EQ(seen.size(), 1000u);
}

TEST(IdsTest, Version7SortsByTimeAndIsUnique) {
  RandomIdGenerator ids;
  std::string a = ids.NewTimeOrderedUuid();
  std::this_thread::sleep_for(std::chrono::milliseconds(2));
  std::string b = ids.NewTimeOrderedUuid();
  ASSERT_TRUE(IsUuid(a));
  EXPECT_EQ(a[14], '7') << a;
  EXPECT_NE(std::string("89ab").find(a[19]), std::string::npos) << a;
  EXPECT_LT(a, b);  // a later millisecond sorts later
  std::set<std::string> seen;
  for (int i = 0; i < 1000; ++i) seen.insert(ids.NewTimeOrderedUuid());
  EXPECT_EQ(seen.size(), 1000u);  // 74 random bits within one millisecond
}

TEST(IdsTest, RequestIdsAreWellFormedAndDistinctAcrossThreads) {
  std::vector<std::set<std::string>> per_thread(4);
  std::vector<std::thread> threads;
  for (auto& seen : per_thread) {
    threads.emplace_back([&seen] {
      for (int i = 0; i < 1000; ++i) seen.insert(NewRequestId());
    });
  }
  for (auto& t : threads) t.join();
  std::set<std::string> all;
  for (const auto& seen : per_thread) {
    EXPECT_EQ(seen.size(), 1000u);
    for (const auto& id : seen) {
      ASSERT_TRUE(IsUuid(id)) << id;
      EXPECT_EQ(id[14], '4') << id;
      EXPECT_NE(std::string("89ab").find(id[19]), std::string::npos) << id;
      all.insert(id);
    }
  }
  EXPECT_EQ(all.size(), 4000u);  // each thread's generator is seeded apart from the others
}

}  // namespace
}  // namespace lastcall
