#include "domain/events.h"

namespace lastcall {

CloudEvent MakeEvent(IdGenerator& ids, std::string source, std::string type, std::string subject,
                     WallMillis now, nlohmann::json data) {
  CloudEvent e;
  e.id = ids.NewTimeOrderedUuid();
  e.source = std::move(source);
  e.type = std::move(type);
  e.subject = std::move(subject);
  e.time = FormatRfc3339(now);
  e.data = std::move(data);
  return e;
}

nlohmann::json ToJson(const CloudEvent& e) {
  return nlohmann::json{{"specversion", "1.0"},
                        {"id", e.id},
                        {"source", e.source},
                        {"type", e.type},
                        {"subject", e.subject},
                        {"time", e.time},
                        {"datacontenttype", "application/json"},
                        {"data", e.data}};
}

Result<CloudEvent> ParseCloudEvent(std::string_view json_text) {
  nlohmann::json j = nlohmann::json::parse(json_text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return Status::Invalid("invalid_event", "the event is not a JSON object");
  }
  auto text = [&](const char* key, bool required, std::string* out) -> Status {
    auto it = j.find(key);
    if (it == j.end()) {
      return required ? Status::Invalid("invalid_event", std::string("missing attribute ") + key)
                      : Status::Ok();
    }
    if (!it->is_string() || (required && it->get_ref<const std::string&>().empty())) {
      return Status::Invalid("invalid_event", std::string("attribute ") + key +
                                                  " must be a non-empty string");
    }
    *out = it->get<std::string>();
    return Status::Ok();
  };
  std::string specversion;
  CloudEvent e;
  LASTCALL_RETURN_IF_ERROR(text("specversion", true, &specversion));
  if (specversion != "1.0") return Status::Invalid("invalid_event", "specversion must be 1.0");
  LASTCALL_RETURN_IF_ERROR(text("id", true, &e.id));
  LASTCALL_RETURN_IF_ERROR(text("source", true, &e.source));
  LASTCALL_RETURN_IF_ERROR(text("type", true, &e.type));
  LASTCALL_RETURN_IF_ERROR(text("subject", false, &e.subject));
  LASTCALL_RETURN_IF_ERROR(text("time", false, &e.time));
  std::string ct;
  LASTCALL_RETURN_IF_ERROR(text("datacontenttype", false, &ct));
  if (!ct.empty() && ct != "application/json") {
    return Status::Invalid("invalid_event", "datacontenttype must be application/json");
  }
  auto data = j.find("data");
  if (data != j.end()) {
    if (!data->is_object()) return Status::Invalid("invalid_event", "data must be an object");
    e.data = *data;
  }
  return e;
}

}  // namespace lastcall
