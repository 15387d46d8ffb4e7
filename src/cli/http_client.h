// A small blocking HTTP/1.1 client for the command line (one request per connection), over
// Boost.Beast. Only http:// URLs: the CLI talks to a service on the operator's own network.
#pragma once

#include <string>

#include "common/status.h"

namespace lastcall {

struct HttpResult {
  int status = 0;
  std::string body;
};

// GETs base_url + target with "Authorization: Bearer <token>" (when token is not empty).
// Errors: kInvalidArgument for a malformed base_url; kUnavailable when the service cannot be
// reached or does not answer within timeout_seconds.
Result<HttpResult> HttpGet(const std::string& base_url, const std::string& target,
                           const std::string& token, int timeout_seconds = 10);
// POSTs body (JSON; may be empty) the same way.
Result<HttpResult> HttpPost(const std::string& base_url, const std::string& target,
                            const std::string& token, const std::string& body,
                            int timeout_seconds = 10);

}  // namespace lastcall
