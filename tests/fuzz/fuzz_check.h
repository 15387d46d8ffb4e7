// Property checks for the libFuzzer targets. FUZZ_CHECK(cond, what) stops the run with a message
// when a property a caller relies on is broken, so libFuzzer saves the input as a crash: a
// target asserts more than "does not crash" wherever the contract says more.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "common/status.h"
#include "common/text.h"

namespace lastcall::fuzz {

[[noreturn]] inline void Fail(const char* file, int line, const char* cond, const std::string& what) {
  std::fprintf(stderr, "%s:%d: property broken: %s (%s)\n", file, line, cond, what.c_str());
  std::abort();
}

// Messages and text fields must be UTF-8 (a JSON body or a log line carries them unchanged).
inline bool IsUtf8(std::string_view s) { return IsValidUtf8(s); }

}  // namespace lastcall::fuzz

#define FUZZ_CHECK(cond, what)                                            \
  do {                                                                    \
    if (!(cond)) ::lastcall::fuzz::Fail(__FILE__, __LINE__, #cond, what); \
  } while (0)
