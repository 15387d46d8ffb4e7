#include "common/log.h"

#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <atomic>

#include "common/clock.h"

namespace lastcall::log {
namespace {

std::atomic<int> g_level{static_cast<int>(Level::kInfo)};

spdlog::logger& Logger() {
  static std::shared_ptr<spdlog::logger> logger = [] {
    auto l = std::make_shared<spdlog::logger>("lastcall",
                                              std::make_shared<spdlog::sinks::stderr_sink_mt>());
    l->set_pattern("%v");
    l->set_level(spdlog::level::trace);
    l->flush_on(spdlog::level::trace);
    return l;
  }();
  return *logger;
}

const char* Name(Level l) {
  switch (l) {
    case Level::kDebug: return "debug";
    case Level::kInfo: return "info";
    case Level::kWarn: return "warn";
    case Level::kError: return "error";
  }
  return "info";
}

}  // namespace

void SetLevel(Level level) { g_level = static_cast<int>(level); }

bool Enabled(Level level) { return static_cast<int>(level) >= g_level.load(std::memory_order_relaxed); }

void Write(Level level, std::string_view message, const Fields& fields) {
  if (!Enabled(level)) return;
  // Written as text, value by value, rather than copied into a new JSON object and dumped: the
  // writer thread logs each deletion's steps. A field named time, level or message replaces the
  // built-in one, as it always did.
  auto dump = [](const nlohmann::json& v) {
    return v.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  };
  bool object = fields.is_object();
  auto given = [&](const char* key) { return object && fields.contains(key); };
  std::string line = "{\"time\":";
  line += given("time") ? dump(fields["time"]) : "\"" + FormatRfc3339(SystemClock().Now()) + "\"";
  line += ",\"level\":";
  line += given("level") ? dump(fields["level"]) : std::string("\"") + Name(level) + "\"";
  line += ",\"message\":";
  line += given("message") ? dump(fields["message"]) : dump(nlohmann::json(std::string(message)));
  if (object) {
    for (auto it = fields.begin(); it != fields.end(); ++it) {
      if (it.key() == "time" || it.key() == "level" || it.key() == "message") continue;
      line += ',';
      line += dump(nlohmann::json(it.key()));
      line += ':';
      line += dump(it.value());
    }
  }
  line += '}';
  Logger().info(line);
}

}  // namespace lastcall::log
