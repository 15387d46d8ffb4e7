// Test-only fault injection for the in-process consumers (LASTCALL_TEST_CONSUMER_FAULTS): a named
// consumer fails, or never reports, on file.delete_requested for a deterministic share of files,
// so crash and timeout tests can have consumers that complete, fail and stay silent in one run.
// Never set in production: a silent consumer makes every affected deletion wait for its deadline.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"

namespace lastcall {

enum class FaultMode {
  kNone,
  kFail,    // the consumer skips its work and reports status "failed"
  kSilent,  // the consumer does nothing and never reports (its deadline decides)
};

struct ConsumerFault {
  std::string consumer;  // an in-process consumer's stored name
  FaultMode mode = FaultMode::kNone;
  int percent = 0;       // 0..100: the share of files affected
};

// Which bucket 0..99 a file falls in: FNV-1a (64-bit) of the file id's bytes, modulo 100. Stable
// across runs and machines, so a test can compute the same set (tests/crash/crash_harness.py).
int FaultBucket(const std::string& file_id);

// Parses "consumer=mode:percent[,consumer=mode:percent...]" with mode fail or silent and percent
// 0..100, e.g. "analytics_consumer=fail:20,categorization_consumer=silent:15". known: the
// consumers that may be named; each at most once. Empty spec: no faults. Errors: kInvalidArgument
// with a message naming the bad entry.
Result<std::vector<ConsumerFault>> ParseConsumerFaults(const std::string& spec,
                                                       const std::vector<std::string>& known);

// The faults of one run; a file is affected when FaultBucket(file id) < percent.
class ConsumerFaults {
 public:
  ConsumerFaults() = default;
  explicit ConsumerFaults(std::vector<ConsumerFault> faults) : faults_(std::move(faults)) {}
  FaultMode For(const std::string& consumer, const std::string& file_id) const;
  bool empty() const { return faults_.empty(); }

 private:
  std::vector<ConsumerFault> faults_;
};

}  // namespace lastcall
