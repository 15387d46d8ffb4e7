#include "consumers/faults.h"

#include <algorithm>
#include <cerrno>
#include <cstdlib>

namespace lastcall {

int FaultBucket(const std::string& file_id) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : file_id) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return static_cast<int>(h % 100);
}

Result<std::vector<ConsumerFault>> ParseConsumerFaults(const std::string& spec,
                                                       const std::vector<std::string>& known) {
  std::vector<ConsumerFault> out;
  auto bad = [](const std::string& entry, const std::string& why) {
    return Status::Invalid("invalid_config", "entry \"" + entry + "\": " + why +
                                                 " (expected consumer=fail:percent or "
                                                 "consumer=silent:percent)");
  };
  size_t start = 0;
  while (start <= spec.size()) {
    size_t comma = spec.find(',', start);
    if (comma == std::string::npos) comma = spec.size();
    std::string entry = spec.substr(start, comma - start);
    start = comma + 1;
    entry.erase(0, entry.find_first_not_of(" \t"));
    entry.erase(entry.find_last_not_of(" \t") + 1);
    if (entry.empty()) continue;
    size_t eq = entry.find('=');
    size_t colon = entry.find(':', eq == std::string::npos ? 0 : eq);
    if (eq == std::string::npos || colon == std::string::npos) return bad(entry, "malformed");
    ConsumerFault f;
    f.consumer = entry.substr(0, eq);
    if (std::find(known.begin(), known.end(), f.consumer) == known.end()) {
      return bad(entry, "not an in-process consumer");
    }
    if (std::any_of(out.begin(), out.end(),
                    [&](const ConsumerFault& o) { return o.consumer == f.consumer; })) {
      return bad(entry, "consumer named twice");
    }
    std::string mode = entry.substr(eq + 1, colon - eq - 1);
    if (mode == "fail") {
      f.mode = FaultMode::kFail;
    } else if (mode == "silent") {
      f.mode = FaultMode::kSilent;
    } else {
      return bad(entry, "mode must be fail or silent");
    }
    std::string pct = entry.substr(colon + 1);
    char* end = nullptr;
    errno = 0;
    long v = pct.empty() ? -1 : std::strtol(pct.c_str(), &end, 10);
    if (pct.empty() || errno != 0 || *end != '\0' || v < 0 || v > 100) {
      return bad(entry, "percent must be a whole number 0 to 100");
    }
    f.percent = static_cast<int>(v);
    out.push_back(std::move(f));
  }
  return out;
}

FaultMode ConsumerFaults::For(const std::string& consumer, const std::string& file_id) const {
  for (const auto& f : faults_) {
    if (f.consumer == consumer && FaultBucket(file_id) < f.percent) return f.mode;
  }
  return FaultMode::kNone;
}

}  // namespace lastcall
