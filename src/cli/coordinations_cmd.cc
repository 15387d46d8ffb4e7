#include "cli/coordinations_cmd.h"

#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include "cli/http_client.h"
#include "common/ids.h"

namespace lastcall {

using json = nlohmann::json;

namespace {

std::string Str(const json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return "-";
  return it->is_string() ? it->get<std::string>() : it->dump();
}

std::string Escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    bool safe = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                c == '-' || c == '_' || c == '.';
    out += safe ? std::string(1, c) : fmt::format("%{:02X}", static_cast<unsigned char>(c));
  }
  return out;
}

// Asks the service; maps transport and HTTP failures to exit codes. On success *body holds JSON.
// post: POST with an empty JSON object instead of GET.
int Ask(const CliTarget& t, const std::string& target, json* body, std::ostream& err,
        bool post = false) {
  auto r = post ? HttpPost(t.url, target, t.token, "{}") : HttpGet(t.url, target, t.token);
  if (!r.ok()) {
    err << "lastcall: " << r.status().message() << "\n";
    return r.status().code() == Code::kInvalidArgument ? kExitUsage : kExitUnavailable;
  }
  json j = json::parse(r->body, nullptr, false);
  if (r->status >= 200 && r->status < 300 && !j.is_discarded()) {
    *body = std::move(j);
    return kExitFound;
  }
  std::string message = j.is_object() ? Str(j, "message") : r->body.substr(0, 200);
  err << "lastcall: " << r->status << " " << message << "\n";
  if (r->status == 404) return kExitNotFound;
  if (r->status == 400) return kExitUsage;
  if (r->status == 409) return kExitConflict;
  return kExitUnavailable;
}

std::string ConsumerStates(const json& c) {
  std::string out;
  for (const auto& k : c.value("consumers", json::array())) {
    if (!out.empty()) out += " ";
    out += Str(k, "name") + "=" + Str(k, "status");
  }
  return out.empty() ? "-" : out;
}

}  // namespace

int ListCoordinationsCommand(const CliTarget& t, const ListOptions& o, std::ostream& out,
                             std::ostream& err) {
  std::string query = "?limit=" + std::to_string(o.limit);
  if (o.status) query += "&status=" + Escape(*o.status);
  if (o.outcome) query += "&outcome=" + Escape(*o.outcome);
  if (o.consumer) query += "&consumer=" + Escape(*o.consumer);
  json all = json::array();
  std::string cursor = o.cursor;
  do {
    json page;
    int rc = Ask(t, "/coordinations" + query + (cursor.empty() ? "" : "&cursor=" + Escape(cursor)),
                 &page, err);
    if (rc != kExitFound) return rc;
    for (auto& c : page.value("coordinations", json::array())) all.push_back(std::move(c));
    cursor = page.contains("nextCursor") && page["nextCursor"].is_string()
                 ? page["nextCursor"].get<std::string>()
                 : "";
  } while (o.all_pages && !cursor.empty());

  if (t.json) {
    out << json{{"coordinations", all}, {"nextCursor", cursor.empty() ? json(nullptr) : json(cursor)}}
               .dump(2)
        << "\n";
  } else {
    out << fmt::format("{:<36}  {:<9}  {:<13}  {:<24}  {:<24}  {}\n", "COORDINATION", "STATUS",
                       "OUTCOME", "STARTED", "DEADLINE", "CONSUMERS");
    for (const auto& c : all) {
      out << fmt::format("{:<36}  {:<9}  {:<13}  {:<24}  {:<24}  {}\n", Str(c, "coordinationId"),
                         Str(c, "status"), Str(c, "outcome"), Str(c, "startedAt"),
                         Str(c, "deadlineAt"), ConsumerStates(c));
    }
    if (!cursor.empty()) out << "(more: --cursor " << cursor << ", or --all for every page)\n";
  }
  return all.empty() ? kExitNotFound : kExitFound;
}

int ShowCoordinationCommand(const CliTarget& t, const std::string& id, std::ostream& out,
                            std::ostream& err) {
  if (!IsUuid(id)) {
    err << "lastcall: " << id << " is not a coordination id (a UUID)\n";
    return kExitUsage;
  }
  json c, timeline;
  int rc = Ask(t, "/coordinations/" + id, &c, err);
  if (rc != kExitFound) return rc;
  rc = Ask(t, "/coordinations/" + id + "/timeline", &timeline, err);
  if (rc != kExitFound) return rc;
  if (t.json) {
    out << json{{"coordination", c}, {"timeline", timeline}}.dump(2) << "\n";
    return kExitFound;
  }
  out << "coordination  " << Str(c, "coordinationId") << "\n"
      << "file          " << Str(c, "fileId") << "\n"
      << "status        " << Str(c, "status") << "\n"
      << "outcome       " << Str(c, "outcome") << "\n"
      << "started       " << Str(c, "startedAt") << "\n"
      << "deadline      " << Str(c, "deadlineAt") << "\n"
      << "completed     " << Str(c, "completedAt") << "\n\n";
  out << fmt::format("{:<28}  {:<10}  {:<24}  {}\n", "CONSUMER", "STATUS", "COMPLETED", "DETAIL");
  for (const auto& k : c.value("consumers", json::array())) {
    out << fmt::format("{:<28}  {:<10}  {:<24}  {}\n", Str(k, "name"), Str(k, "status"),
                       Str(k, "completedAt"), Str(k, "detail"));
  }
  out << "\n" << fmt::format("{:<24}  {:<20}  {}\n", "AT", "STEP", "DETAIL");
  for (const auto& e : timeline.value("entries", json::array())) {
    out << fmt::format("{:<24}  {:<20}  {}\n", Str(e, "at"), Str(e, "kind"), Str(e, "detail"));
  }
  return kExitFound;
}

int ListDeadLettersCommand(const CliTarget& t, const DlqListOptions& o, std::ostream& out,
                           std::ostream& err) {
  std::string query = "?limit=" + std::to_string(o.limit);
  if (o.target) query += "&target=" + Escape(*o.target);
  if (!o.include_replayed) query += "&replayed=false";
  json page;
  int rc = Ask(t, "/dlq" + query, &page, err);
  if (rc != kExitFound) return rc;
  json letters = page.value("deadLetters", json::array());
  if (t.json) {
    out << page.dump(2) << "\n";
  } else {
    out << fmt::format("{:<36}  {:<24}  {:<10}  {:<24}  {:>8}  {:<24}  {}\n", "DEAD LETTER",
                       "TARGET", "KIND", "CREATED", "ATTEMPTS", "REPLAYED", "ERROR");
    for (const auto& d : letters) {
      out << fmt::format("{:<36}  {:<24}  {:<10}  {:<24}  {:>8}  {:<24}  {}\n", Str(d, "id"),
                         Str(d, "target"), Str(d, "kind"), Str(d, "createdAt"), Str(d, "attempts"),
                         Str(d, "replayedAt"), Str(d, "error"));
    }
  }
  return letters.empty() ? kExitNotFound : kExitFound;
}

int ReplayDeadLetterCommand(const CliTarget& t, const std::string& id, std::ostream& out,
                            std::ostream& err) {
  if (!IsUuid(id)) {
    err << "lastcall: " << id << " is not a dead letter id (a UUID)\n";
    return kExitUsage;
  }
  json d;
  int rc = Ask(t, "/dlq/" + id + "/replay", &d, err, /*post=*/true);
  if (rc != kExitFound) return rc;
  if (t.json) {
    out << d.dump(2) << "\n";
  } else {
    out << "replayed " << Str(d, "id") << " (" << Str(d, "kind") << " " << Str(d, "target")
        << ", event " << Str(d, "eventId") << ") at " << Str(d, "replayedAt") << "\n";
  }
  return kExitFound;
}

}  // namespace lastcall
