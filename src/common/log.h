// Structured logs: one JSON object per line on stderr with "time", "level", "message" and the ids
// involved (userId, fileId, coordinationId, requestId, ...). Thread-safe. Never pass secrets,
// tokens or user content (descriptions, merchants, amounts, file names) as fields.
#pragma once

#include <nlohmann/json.hpp>
#include <string_view>

namespace lastcall::log {

using Fields = nlohmann::json;  // an object; {} for none

enum class Level { kDebug, kInfo, kWarn, kError };

void SetLevel(Level level);
// True when a line at level would be written: lets a hot path skip building its fields.
bool Enabled(Level level);
void Write(Level level, std::string_view message, const Fields& fields);
inline void Debug(std::string_view m, const Fields& f = Fields::object()) { Write(Level::kDebug, m, f); }
inline void Info(std::string_view m, const Fields& f = Fields::object()) { Write(Level::kInfo, m, f); }
inline void Warn(std::string_view m, const Fields& f = Fields::object()) { Write(Level::kWarn, m, f); }
inline void Error(std::string_view m, const Fields& f = Fields::object()) { Write(Level::kError, m, f); }

}  // namespace lastcall::log
