// The HTTP/1.1 server (Boost.Beast over Boost.Asio): keep-alive connections, each on its own
// strand, read with header and body limits and timeouts so a slow or hostile client cannot hold a
// thread or starve others. Requests go to one Handler; responses may be produced on any thread.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>

#include "common/status.h"

namespace lastcall {

struct HttpRequest {
  std::string method;        // "GET", ...
  std::string path;          // decoded target path, without the query
  std::map<std::string, std::string> query;  // decoded query parameters (last one wins)
  std::string authorization;
  std::string content_type;
  std::string body;
  std::string request_id;    // made by the server for every request
};

struct HttpResponse {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
  std::map<std::string, std::string> headers;
};

// Called once per request; must call respond exactly once, from any thread.
using Respond = std::function<void(HttpResponse)>;
using Handler = std::function<void(HttpRequest&&, Respond)>;

struct HttpServerOptions {
  std::string address = "127.0.0.1";
  unsigned short port = 8080;
  uint64_t body_limit = 20 * 1024 * 1024 + 64 * 1024;
  uint32_t header_limit = 16 * 1024;
  // A whole request (headers and body) must arrive within this, counted from when the server
  // starts waiting for it; an idle keep-alive connection is closed after it too. A client that
  // trickles bytes therefore holds a connection for this long at most.
  int read_timeout_seconds = 30;
  // Open connections at most. When a new connection arrives at the limit, the connection that
  // has waited longest for (the rest of) its request is closed to make room (a slowloris's
  // connections go first, a request being handled is never cut); when every connection is busy
  // with a request, the new one is closed at once. Keep it below the process's file limit.
  size_t max_connections = 1024;
};

class HttpServer {
 public:
  HttpServer(boost::asio::io_context& io, HttpServerOptions options, Handler handler);
  ~HttpServer();
  // Binds and starts accepting. Errors: kUnavailable naming the address when the bind fails.
  Status Start();
  // The bound port (useful when options.port was 0).
  unsigned short port() const;
  // Stops accepting; connections finish their request in flight, then close.
  void Stop();

  class Impl;  // public so the connection sessions in server.cc can name it

 private:
  std::shared_ptr<Impl> impl_;
};

// Splits a request target ("/path?query") into the percent-decoded path and query parameters
// ('+' is a space in the query only; the last of repeated keys wins; empty keys are dropped).
// Errors: kInvalidArgument "bad_request": "malformed request target" when the decoded path does
// not start with '/' or an escape is broken, "malformed query string" for a broken escape there.
Status ParseRequestTarget(std::string_view target, std::string* path,
                          std::map<std::string, std::string>* query);

// JSON error body {"error": code, "message": message} with the status for code.
HttpResponse ErrorResponse(const Status& status);
int HttpStatusFor(Code code);

}  // namespace lastcall
