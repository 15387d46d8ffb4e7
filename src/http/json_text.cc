#include "http/json_text.h"

#include "common/clock.h"

namespace lastcall {

void AppendJsonString(std::string* out, std::string_view s) {
  bool plain = true;  // printable ASCII without '"' and '\\': written as it is
  for (char c : s) {
    auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u > 0x7e || c == '"' || c == '\\') {
      plain = false;
      break;
    }
  }
  if (!plain) {
    out->append(nlohmann::json(std::string(s)).dump(-1, ' ', false,
                                                    nlohmann::json::error_handler_t::replace));
    return;
  }
  out->push_back('"');
  out->append(s);
  out->push_back('"');
}

nlohmann::json FileJson(const FileRecord& f) {
  return {{"fileId", f.id},
          {"accountId", f.account_id},
          {"name", f.name},
          {"contentType", f.content_type},
          {"sizeBytes", f.size_bytes},
          {"sha256", f.sha256},
          {"transactionCount", f.transaction_count},
          {"status", f.status},
          {"coordinationId", f.coordination_id ? nlohmann::json(*f.coordination_id) : nlohmann::json()},
          {"uploadedAt", FormatRfc3339(f.uploaded_at)}};
}

std::string FileJsonText(const FileRecord& f) {
  // Keys in nlohmann::json's (std::map) order, which sorts them.
  std::string out;
  out.reserve(256 + f.name.size());
  out.append("{\"accountId\":");
  AppendJsonString(&out, f.account_id);
  out.append(",\"contentType\":");
  AppendJsonString(&out, f.content_type);
  out.append(",\"coordinationId\":");
  if (f.coordination_id) {
    AppendJsonString(&out, *f.coordination_id);
  } else {
    out.append("null");
  }
  out.append(",\"fileId\":");
  AppendJsonString(&out, f.id);
  out.append(",\"name\":");
  AppendJsonString(&out, f.name);
  out.append(",\"sha256\":");
  AppendJsonString(&out, f.sha256);
  out.append(",\"sizeBytes\":").append(std::to_string(f.size_bytes));
  out.append(",\"status\":");
  AppendJsonString(&out, f.status);
  out.append(",\"transactionCount\":").append(std::to_string(f.transaction_count));
  out.append(",\"uploadedAt\":");
  AppendJsonString(&out, FormatRfc3339(f.uploaded_at));
  out.push_back('}');
  return out;
}

}  // namespace lastcall
