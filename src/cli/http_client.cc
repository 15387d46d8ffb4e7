#include "cli/http_client.h"

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

namespace lastcall {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;

namespace {

Result<HttpResult> Call(http::verb method, const std::string& base_url, const std::string& target,
                        const std::string& token, const std::string& body, int timeout_seconds) {
  const std::string scheme = "http://";
  if (base_url.compare(0, scheme.size(), scheme) != 0) {
    return Status::Invalid("invalid_url", "the service URL must start with http://");
  }
  std::string hostport = base_url.substr(scheme.size());
  while (!hostport.empty() && hostport.back() == '/') hostport.pop_back();
  if (hostport.find('/') != std::string::npos) {
    return Status::Invalid("invalid_url", "the service URL must be http://host:port");
  }
  size_t colon = hostport.rfind(':');
  std::string host = colon == std::string::npos ? hostport : hostport.substr(0, colon);
  std::string port = colon == std::string::npos ? "80" : hostport.substr(colon + 1);
  if (host.empty() || port.empty()) return Status::Invalid("invalid_url", "bad service URL " + base_url);
  try {
    net::io_context io;
    net::ip::tcp::resolver resolver(io);
    beast::tcp_stream stream(io);
    stream.expires_after(std::chrono::seconds(timeout_seconds));
    stream.connect(resolver.resolve(host, port));
    http::request<http::string_body> req{method, target, 11};
    req.set(http::field::host, hostport);
    req.set(http::field::user_agent, "lastcall-cli");
    if (!token.empty()) req.set(http::field::authorization, "Bearer " + token);
    if (method != http::verb::get) {
      req.set(http::field::content_type, "application/json");
      req.body() = body;
      req.prepare_payload();
    }
    http::write(stream, req);
    beast::flat_buffer buffer;
    http::response_parser<http::string_body> parser;
    parser.body_limit(64 * 1024 * 1024);
    http::read(stream, buffer, parser);
    beast::error_code ec;
    stream.socket().shutdown(net::ip::tcp::socket::shutdown_both, ec);
    return HttpResult{static_cast<int>(parser.get().result_int()), parser.get().body()};
  } catch (const std::exception& e) {
    return Status::Unavailable("cannot reach " + base_url + ": " + e.what());
  }
}

}  // namespace

Result<HttpResult> HttpGet(const std::string& base_url, const std::string& target,
                           const std::string& token, int timeout_seconds) {
  return Call(http::verb::get, base_url, target, token, "", timeout_seconds);
}

Result<HttpResult> HttpPost(const std::string& base_url, const std::string& target,
                            const std::string& token, const std::string& body,
                            int timeout_seconds) {
  return Call(http::verb::post, base_url, target, token, body, timeout_seconds);
}

}  // namespace lastcall
