// Sending one webhook: an HTTP POST with a whole-request timeout. Behind an interface so the
// delivery worker can be driven by a fake in tests; BeastWebhookSender is the real one (http://
// URLs only: https:// is refused at registration).
#pragma once

#include <map>
#include <string>

#include "common/status.h"

namespace lastcall {

struct WebhookRequest {
  std::string url;  // http://host[:port][/path]
  std::map<std::string, std::string> headers;
  std::string content_type;
  std::string body;
  int64_t timeout_ms = 10000;  // connect + send + answer
};

struct WebhookResponse {
  int status = 0;
  std::string content_type;
  std::string body;  // at most 64 KiB are read
};

class WebhookSender {
 public:
  virtual ~WebhookSender() = default;
  // Sends the request and returns the answer, whatever its status. Errors: kUnavailable with
  // the network error or "timed out". Thread-safe.
  virtual Result<WebhookResponse> Post(const WebhookRequest& request) = 0;
};

// The parts of an http:// URL. Errors: kInvalidArgument "invalid_url".
struct HttpUrl {
  std::string host;
  std::string port;
  std::string target;  // path and query, "/" at least
};
Result<HttpUrl> ParseHttpUrl(const std::string& url);

class BeastWebhookSender : public WebhookSender {
 public:
  Result<WebhookResponse> Post(const WebhookRequest& request) override;
};

}  // namespace lastcall
