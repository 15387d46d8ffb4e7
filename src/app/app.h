// Wiring: builds the embedded-default service from a Config (store, blobs, bus, coordinator,
// consumers, HTTP) and runs it until SIGTERM or SIGINT. The only place that knows every piece.
#pragma once

#include <vector>

#include "app/config.h"
#include "bus/event_bus.h"
#include "common/clock.h"

namespace lastcall {

// Runs `lastcall serve`. Returns the process exit code: 0 after a clean shutdown, 1 when start-up
// failed (the reason is logged).
int RunServe(const Config& config);

// The bus rules of the service, in the manner of EventBridge rules (name, pattern, targets):
// uploads to both consumers, deletion requests to the coordinator and both consumers, consumer
// completions to the coordinator. Tests that assemble the flow use the same rules.
std::vector<Rule> ServiceRules();

// Removes blobs written before written_before that no file references. An upload writes its blob
// before its row commits, so written_before must be earlier than any upload still in flight: the
// start time for a folder this process alone owns; start minus a grace period (an hour) for a
// bucket other nodes write to while this one starts. Returns how many were removed.
class Database;
class BlobStore;
Result<int> SweepOrphanBlobs(Database& db, BlobStore& blobs, WallMillis written_before);

}  // namespace lastcall
