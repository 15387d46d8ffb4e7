// What every in-process consumer shares: its stored name and the way it reports completion.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "bus/event_bus.h"
#include "common/clock.h"
#include "common/ids.h"
#include "consumers/faults.h"
#include "store/sql.h"

namespace lastcall {

// stored: do not rename
inline constexpr char kAnalyticsConsumer[] = "analytics_consumer";
inline constexpr char kCategorizationConsumer[] = "categorization_consumer";

// The effects of a consumer's work on file.delete_requested: ok with a detail object, or a
// failure whose message becomes the reason.
using WorkResult = Result<nlohmann::json>;

// Appends consumer.completion (source kConsumerSourcePrefix + consumer) for a coordination in
// tx: the one way every consumer, in-process or webhook, reports. status: "completed" or
// "failed"; detail: an object. The file deletion consumer takes it in through the bus.
Status PublishCompletion(SqlTx& tx, Outbox& outbox, Clock& clock, IdGenerator& ids,
                         const std::string& consumer, const std::string& coordination_id,
                         const std::string& status, const nlohmann::json& detail);

// Runs work inside a savepoint and appends the consumer's consumer.completion for the
// coordination in the same transaction: "completed" with work's detail, or, when work fails, its
// effects rolled back and "failed" with {"reason": message}. A failure never blocks deletion, and
// every path completes (including "nothing to do").
// fault (test only, LASTCALL_TEST_CONSUMER_FAULTS): kFail skips work and reports "failed";
// kSilent skips work and reports nothing, returning ok (the delivery counts as handled).
Status CompleteAfter(SqlTx& tx, Outbox& outbox, Clock& clock, IdGenerator& ids,
                     const std::string& consumer, const CloudEvent& request,
                     const std::function<WorkResult()>& work, FaultMode fault = FaultMode::kNone);

}  // namespace lastcall
