// An HTTP/1.1 keep-alive load generator on raw non-blocking sockets and epoll: C connections
// driven from one thread (or a few), each request serialized once into one buffer and each answer
// read with a minimal parser (status line, Content-Length, Connection), so that the client's own
// CPU per request stays small next to the server's on a shared machine. Three shapes:
//   closed loop  every connection sends its next request as soon as the previous answer arrived;
//   open loop    request i is due at t0 + i / rate whatever the answers do (one thread only);
//   duration     closed loop until a number of seconds has passed.
// It speaks only what lastcall answers: every response must carry Content-Length (a chunked or
// length-less response counts as a transport failure). HttpOnce (health checks) uses Beast.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

namespace bench {

struct HttpRequestSpec {
  std::string method;         // GET, POST, DELETE
  std::string target;         // "/files/..."
  std::string authorization;  // the whole header value, "Bearer ..."
  std::string content_type;
  std::string body;
};

struct HttpResult {
  int status = 0;               // 0: the request failed in transport (after retries)
  std::string body;
  int64_t send_wall_us = 0;     // wall clock when the request's write started
  int64_t scheduled_wall_us = 0;  // open loop: when it was due; else = send_wall_us
  int64_t latency_us = 0;       // monotonic: write start to the whole response read
};

struct LoadOptions {
  std::string host = "127.0.0.1";
  unsigned short port = 0;
  int connections = 64;
  int threads = 1;          // client threads; the open loop always uses one
  double rate = 0;          // > 0: open loop at this many requests per second
  double duration_s = 0;    // > 0: closed loop for this long; job indexes keep counting up
  bool keep_bodies = true;  // false: HttpResult::body stays empty
};

struct LoadSummary {
  double elapsed_s = 0;
  uint64_t completed = 0;   // answered (any status)
  uint64_t failed = 0;      // transport failures after retries
  uint64_t reconnects = 0;
  uint64_t delayed = 0;     // open loop: started > 1 ms late because every connection was busy
  double max_delay_ms = 0;
};

// make(i, spec) fills request i; done(i, result) receives its result. Both are called on client
// threads, serialized (never concurrently). Jobs are 0..jobs-1, or in duration mode 0, 1, 2, ...
// until the time is up (the caller maps i onto its data, e.g. i % n). A request that fails in
// transport (connection refused, reset or closed before the whole answer, 60 s without progress,
// an answer this client cannot parse) is sent again on a fresh connection, up to 3 times.
using MakeRequest = std::function<void(uint64_t i, HttpRequestSpec& spec)>;
using OnDone = std::function<void(uint64_t i, HttpResult&& r)>;

LoadSummary RunLoad(const LoadOptions& options, uint64_t jobs, const MakeRequest& make,
                    const OnDone& done);

// One blocking request on a fresh connection (for health checks). status 0 on failure.
HttpResult HttpOnce(const std::string& host, unsigned short port, const HttpRequestSpec& spec,
                    double timeout_s);

// The head of an HTTP/1.1 response as RunLoad reads it.
struct ResponseHead {
  int status = 0;
  size_t head_bytes = 0;       // through the blank line
  size_t content_length = 0;
  bool keep_alive = true;      // false on "Connection: close" (or an HTTP/1.0 answer without
                               // "Connection: keep-alive")
};
enum class HeadParse { kNeedMore, kDone, kBad };
// Parses the response head at the start of data. kNeedMore while the blank line has not arrived
// (up to 64 KiB); kBad for a malformed status line or header line, a status outside 200..599 (this
// client never asks for an interim 1xx), a missing (except for 204 and 304), malformed or repeated
// Content-Length, any Transfer-Encoding, or a head over 64 KiB.
HeadParse ParseResponseHead(std::string_view data, ResponseHead* head);

}  // namespace bench
