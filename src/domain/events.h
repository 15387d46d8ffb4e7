// lastcall's events, as CloudEvents 1.0 in structured JSON. The type strings are stored and sent:
// never rename them. Coordination events carry ids, counts and times only, never user content
// (descriptions, merchants, amounts, file names).
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "common/clock.h"
#include "common/ids.h"
#include "common/status.h"

namespace lastcall {

// stored: do not rename
inline constexpr char kFileUploaded[] = "file.uploaded";
inline constexpr char kFileDeleteRequested[] = "file.delete_requested";
inline constexpr char kConsumerCompletion[] = "consumer.completion";
inline constexpr char kFileDeleted[] = "file.deleted";
// The owner cancelled a pending deletion: consumers undo what they did in anticipation.
inline constexpr char kFileDeleteCancelled[] = "file.delete_cancelled";
// A consumer vetoed a pending deletion: the file stays, consumers undo what they did in
// anticipation (as for a cancel). An operator's override may still let the deletion proceed.
inline constexpr char kFileDeleteVetoed[] = "file.delete_vetoed";

// Sources. A consumer's completions come from kConsumerSourcePrefix + its name.
inline constexpr char kApiSource[] = "/lastcall/api";
inline constexpr char kCoordinatorSource[] = "/lastcall/file_deletion_consumer";
inline constexpr char kConsumerSourcePrefix[] = "/lastcall/consumers/";

struct CloudEvent {
  std::string id;       // UUIDv4, unique per event; the idempotency key of every handler
  std::string source;
  std::string type;
  std::string subject;  // e.g. "files/<fileId>"
  std::string time;     // RFC 3339
  nlohmann::json data = nlohmann::json::object();
  int64_t seq = 0;      // outbox position (delivery order); not part of the wire format
};

// A new event with a fresh time-ordered id (ids.NewTimeOrderedUuid) and time = now.
CloudEvent MakeEvent(IdGenerator& ids, std::string source, std::string type, std::string subject,
                     WallMillis now, nlohmann::json data);

// The structured-mode JSON: specversion "1.0", datacontenttype "application/json".
nlohmann::json ToJson(const CloudEvent& e);
// Parses a structured-mode CloudEvent. Errors: kInvalidArgument "invalid_event" naming the
// missing or ill-typed attribute; specversion must be "1.0"; data must be an object.
Result<CloudEvent> ParseCloudEvent(std::string_view json_text);

}  // namespace lastcall
