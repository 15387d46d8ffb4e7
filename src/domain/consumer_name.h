// The rule for consumer names, shared by the configuration (EXPECTED_CONSUMERS) and the API's
// ?consumer= filter.
#pragma once

#include <string_view>

namespace lastcall {

// True for 1-64 characters of a-z, 0-9, '_' and '-'.
inline bool IsConsumerName(std::string_view n) {
  if (n.empty() || n.size() > 64) return false;
  for (char c : n) {
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-')) return false;
  }
  return true;
}

}  // namespace lastcall
