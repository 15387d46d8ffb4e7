#include "webhooks/sender.h"

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

namespace lastcall {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;

Result<HttpUrl> ParseHttpUrl(const std::string& url) {
  const std::string scheme = "http://";
  if (url.compare(0, scheme.size(), scheme) != 0) {
    return Status::Invalid("invalid_url", "the URL must start with http://");
  }
  std::string rest = url.substr(scheme.size());
  size_t slash = rest.find('/');
  std::string hostport = rest.substr(0, slash);
  HttpUrl out;
  out.target = slash == std::string::npos ? "/" : rest.substr(slash);
  if (hostport.find('@') != std::string::npos) {
    return Status::Invalid("invalid_url", "the URL must not carry credentials");
  }
  if (!hostport.empty() && hostport.front() == '[') {
    size_t close = hostport.find(']');
    if (close == std::string::npos) return Status::Invalid("invalid_url", "bad IPv6 host");
    out.host = hostport.substr(1, close - 1);
    std::string after = hostport.substr(close + 1);
    out.port = after.empty() ? "80" : (after[0] == ':' ? after.substr(1) : "");
  } else {
    size_t colon = hostport.rfind(':');
    out.host = colon == std::string::npos ? hostport : hostport.substr(0, colon);
    out.port = colon == std::string::npos ? "80" : hostport.substr(colon + 1);
  }
  if (out.host.empty() || out.port.empty() ||
      out.port.find_first_not_of("0123456789") != std::string::npos || out.port.size() > 5 ||
      std::stoi(out.port) < 1 || std::stoi(out.port) > 65535) {
    return Status::Invalid("invalid_url", "the URL needs a host and a port from 1 to 65535");
  }
  for (char c : out.target) {
    if (static_cast<unsigned char>(c) <= 0x20 || c == 0x7f) {
      return Status::Invalid("invalid_url", "the URL path must not contain spaces or controls");
    }
  }
  return out;
}

Result<WebhookResponse> BeastWebhookSender::Post(const WebhookRequest& request) {
  auto url = ParseHttpUrl(request.url);
  if (!url.ok()) return url.status();
  net::io_context io;
  net::ip::tcp::resolver resolver(io);
  beast::tcp_stream stream(io);
  beast::flat_buffer buffer;
  http::request<http::string_body> req{http::verb::post, url->target, 11};
  req.set(http::field::host, url->host + ":" + url->port);
  req.set(http::field::user_agent, "lastcall-webhooks");
  req.set(http::field::content_type, request.content_type);
  for (const auto& [k, v] : request.headers) req.set(k, v);
  req.body() = request.body;
  req.prepare_payload();
  http::response_parser<http::string_body> parser;
  parser.body_limit(64 * 1024);
  beast::error_code result;
  std::string step = "resolve";
  // One deadline for the whole exchange: the stream's timer covers connect, write and read; the
  // resolver is cancelled by a timer of its own.
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(request.timeout_ms);
  net::steady_timer resolve_timer(io);
  resolve_timer.expires_at(deadline);
  resolve_timer.async_wait([&](beast::error_code ec) {
    if (!ec) resolver.cancel();
  });
  resolver.async_resolve(url->host, url->port, [&](beast::error_code ec,
                                                   net::ip::tcp::resolver::results_type results) {
    resolve_timer.cancel();
    if (ec) {
      result = ec;
      return;
    }
    step = "connect";
    stream.expires_at(deadline);
    stream.async_connect(results, [&](beast::error_code ec2, const net::ip::tcp::endpoint&) {
      if (ec2) {
        result = ec2;
        return;
      }
      step = "send";
      http::async_write(stream, req, [&](beast::error_code ec3, size_t) {
        if (ec3) {
          result = ec3;
          return;
        }
        step = "answer";
        http::async_read(stream, buffer, parser, [&](beast::error_code ec4, size_t) {
          result = ec4;
        });
      });
    });
  });
  io.run();
  if (result) {
    bool timed_out = result == beast::error::timeout || result == net::error::operation_aborted;
    return Status::Unavailable(timed_out ? step + " timed out after " +
                                               std::to_string(request.timeout_ms) + " ms"
                                         : step + ": " + result.message());
  }
  beast::error_code ignored;
  stream.socket().shutdown(net::ip::tcp::socket::shutdown_both, ignored);
  WebhookResponse out;
  out.status = static_cast<int>(parser.get().result_int());
  out.content_type = std::string(parser.get()[http::field::content_type]);
  out.body = parser.get().body();
  return out;
}

}  // namespace lastcall
