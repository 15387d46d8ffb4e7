// JSON bodies of the hottest read route (GET /files/{id}) written straight into a string, without
// building an nlohmann::json value first (a std::map node and key per field, then a walk to dump
// it). The text is byte for byte what dumping the equivalent json value gives; the json builders
// stay here next to them, for the routes that embed them and for the tests that compare the two.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "domain/model.h"

namespace lastcall {

// Appends s as a JSON string literal exactly as nlohmann::json(s).dump(-1, ' ', false,
// error_handler_t::replace) writes it (escapes, and invalid UTF-8 replaced by U+FFFD).
void AppendJsonString(std::string* out, std::string_view s);

// The file resource of docs/openapi.yaml: {"accountId", "contentType", "coordinationId" (or null),
// "fileId", "name", "sha256", "sizeBytes", "status", "transactionCount", "uploadedAt"}.
nlohmann::json FileJson(const FileRecord& f);
// FileJson(f).dump(-1, ' ', false, error_handler_t::replace), written directly.
std::string FileJsonText(const FileRecord& f);

}  // namespace lastcall
