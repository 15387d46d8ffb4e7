// Time, injected. Wall time (stored and shown: deadlines, timestamps) is milliseconds since the
// Unix epoch in UTC. Monotonic time (measured durations) comes from std::chrono::steady_clock
// directly and never goes into storage.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>

namespace lastcall {

using WallMillis = int64_t;  // ms since 1970-01-01T00:00:00Z

class Clock {
 public:
  virtual ~Clock() = default;
  // Current wall time. Thread-safe.
  virtual WallMillis Now() const = 0;
};

class SystemClock : public Clock {
 public:
  WallMillis Now() const override;
};

// A clock that moves only when a test says so. Thread-safe.
class SimulatedClock : public Clock {
 public:
  explicit SimulatedClock(WallMillis start) : now_(start) {}
  WallMillis Now() const override { return now_.load(); }
  void Advance(int64_t ms) { now_ += ms; }
  void Set(WallMillis t) { now_ = t; }

 private:
  std::atomic<WallMillis> now_;
};

// RFC 3339 UTC with milliseconds: "2026-11-28T06:04:20.123Z".
std::string FormatRfc3339(WallMillis t);

}  // namespace lastcall
