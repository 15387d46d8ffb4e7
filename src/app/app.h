// Wiring: builds the embedded-default service from a Config (store, blobs, bus, coordinator,
// consumers, HTTP) and runs it until SIGTERM or SIGINT. The only place that knows every piece.
#pragma once

#include "app/config.h"

namespace lastcall {

// Runs `lastcall serve`. Returns the process exit code: 0 after a clean shutdown, 1 when start-up
// failed (the reason is logged).
int RunServe(const Config& config);

// Removes blobs that no file references. Only safe when no import is in flight (at start).
// Returns how many were removed.
class Database;
class BlobStore;
Result<int> SweepOrphanBlobs(Database& db, BlobStore& blobs);

}  // namespace lastcall
