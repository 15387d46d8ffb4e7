// Request ids: the id the HTTP server gives every request, for logs and the X-Request-Id header.
// A request id grants nothing, so it needs no CSPRNG draw per request (unlike the ids of
// common/ids.h, which grant access and must stay unpredictable). Defined in common/ids.cc.
#pragma once

#include <string>

namespace lastcall {

// A fresh version-4-shaped UUID (lower-case canonical form) from a per-thread mt19937_64 seeded
// once per thread from the CSPRNG. Predictable from earlier ids of the same thread: never use it
// for an id that grants anything. Thread-safe.
std::string NewRequestId();

}  // namespace lastcall
