#include "common/clock.h"

#include <chrono>
#include <ctime>
#include <fmt/format.h>

namespace lastcall {

WallMillis SystemClock::Now() const {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string FormatRfc3339(WallMillis t) {
  int64_t secs = t >= 0 ? t / 1000 : (t - 999) / 1000;
  int ms = static_cast<int>(t - secs * 1000);
  std::time_t tt = static_cast<std::time_t>(secs);
  std::tm tm{};
  gmtime_r(&tt, &tm);
  // Digit by digit: this runs for every event and log line, and a format string parsed at run
  // time cost more than the rest of it. Years outside 0..9999 keep fmt's general form.
  int year = tm.tm_year + 1900;
  if (year < 0 || year > 9999) {
    return fmt::format("{:04d}-{:02d}-{:02d}T{:02d}:{:02d}:{:02d}.{:03d}Z", year, tm.tm_mon + 1,
                       tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ms);
  }
  std::string out = "0000-00-00T00:00:00.000Z";
  auto put = [&out](size_t end, int value, int digits) {
    for (int i = 0; i < digits; ++i, value /= 10) out[end - i] = static_cast<char>('0' + value % 10);
  };
  put(3, year, 4);
  put(6, tm.tm_mon + 1, 2);
  put(9, tm.tm_mday, 2);
  put(12, tm.tm_hour, 2);
  put(15, tm.tm_min, 2);
  put(18, tm.tm_sec, 2);
  put(22, ms, 3);
  return out;
}

}  // namespace lastcall
