// multipart/form-data (RFC 7578) as a browser form or `curl -F` sends it.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace lastcall {

struct MultipartPart {
  std::string name;                     // Content-Disposition name=
  std::optional<std::string> filename;  // Content-Disposition filename= (absent for plain fields)
  std::string content_type;             // the part's Content-Type, "" when absent
  std::string data;                     // the raw bytes of the part
};

// Parses a whole body. content_type is the request's Content-Type header value; it must be
// multipart/form-data with a boundary parameter (quoted or not). Errors: kUnsupported
// "unsupported_media_type" when the content type is not multipart/form-data; kInvalidArgument
// "invalid_form" (with what is wrong) for a missing boundary, a missing closing delimiter, a
// part without Content-Disposition form-data or name, or more than 100 parts.
Result<std::vector<MultipartPart>> ParseMultipart(std::string_view content_type,
                                                  std::string_view body);

}  // namespace lastcall
