// Wiring: builds the embedded-default service from a Config (store, blobs, bus, coordinator,
// consumers, HTTP) and runs it until SIGTERM or SIGINT. The only place that knows every piece.
#pragma once

#include <vector>

#include "app/config.h"
#include "bus/event_bus.h"

namespace lastcall {

// Runs `lastcall serve`. Returns the process exit code: 0 after a clean shutdown, 1 when start-up
// failed (the reason is logged).
int RunServe(const Config& config);

// The bus rules of the service, in the manner of EventBridge rules (name, pattern, targets):
// uploads to both consumers, deletion requests to the coordinator and both consumers, consumer
// completions to the coordinator. Tests that assemble the flow use the same rules.
std::vector<Rule> ServiceRules();

// Removes blobs that no file references. Only safe when no import is in flight (at start).
// Returns how many were removed.
class Database;
class BlobStore;
Result<int> SweepOrphanBlobs(Database& db, BlobStore& blobs);

}  // namespace lastcall
