// RFC 3339 timestamps as events, timelines and logs carry them: UTC, milliseconds, a Z.
#include "common/clock.h"

#include <gtest/gtest.h>

namespace lastcall {
namespace {

TEST(ClockTest, FormatsMillisecondsAsRfc3339InUtc) {
  EXPECT_EQ(FormatRfc3339(0), "1970-01-01T00:00:00.000Z");
  EXPECT_EQ(FormatRfc3339(1795939200123), "2026-11-29T08:00:00.123Z");
  EXPECT_EQ(FormatRfc3339(951782400007), "2000-02-29T00:00:00.007Z");  // a leap day
  EXPECT_EQ(FormatRfc3339(-1), "1969-12-31T23:59:59.999Z");             // before the epoch
  EXPECT_EQ(FormatRfc3339(253402300799999), "9999-12-31T23:59:59.999Z");
  EXPECT_EQ(FormatRfc3339(253402300800000), "10000-01-01T00:00:00.000Z");  // past four digits
}

}  // namespace
}  // namespace lastcall
