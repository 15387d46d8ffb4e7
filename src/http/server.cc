#include "http/server.h"

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <nlohmann/json.hpp>

#include <atomic>

#include "common/ids.h"
#include "common/log.h"

namespace lastcall {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;
using tcp = net::ip::tcp;

int HttpStatusFor(Code code) {
  switch (code) {
    case Code::kOk: return 200;
    case Code::kInvalidArgument: return 400;
    case Code::kUnauthenticated: return 401;
    case Code::kForbidden: return 403;
    case Code::kNotFound: return 404;
    case Code::kMethodNotAllowed: return 405;
    case Code::kConflict: return 409;
    case Code::kTooLarge: return 413;
    case Code::kUnsupported: return 415;
    case Code::kUnprocessable: return 422;
    case Code::kUnavailable: return 503;
    case Code::kInternal: return 500;
  }
  return 500;
}

HttpResponse ErrorResponse(const Status& status) {
  HttpResponse r;
  r.status = HttpStatusFor(status.code());
  r.body = nlohmann::json{{"error", status.error()}, {"message", status.message()}}.dump(
      -1, ' ', false, nlohmann::json::error_handler_t::replace);
  if (status.code() == Code::kUnauthenticated) r.headers["WWW-Authenticate"] = "Bearer";
  return r;
}

namespace {

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Percent-decodes; '+' means space only in query strings. False on a broken escape.
bool Decode(std::string_view in, bool query, std::string* out) {
  out->clear();
  for (size_t i = 0; i < in.size(); ++i) {
    char c = in[i];
    if (c == '%') {
      if (i + 2 >= in.size()) return false;
      int hi = HexValue(in[i + 1]), lo = HexValue(in[i + 2]);
      if (hi < 0 || lo < 0) return false;
      out->push_back(static_cast<char>(hi * 16 + lo));
      i += 2;
    } else if (query && c == '+') {
      out->push_back(' ');
    } else {
      out->push_back(c);
    }
  }
  return true;
}

}  // namespace

class HttpServer::Impl : public std::enable_shared_from_this<HttpServer::Impl> {
 public:
  Impl(net::io_context& io, HttpServerOptions options, Handler handler)
      : io_(io), options_(std::move(options)), handler_(std::move(handler)), acceptor_(io) {}

  Status Start() {
    beast::error_code ec;
    auto addr = net::ip::make_address(options_.address, ec);
    if (ec) return Status::Invalid("invalid_config", "bad listen address " + options_.address);
    tcp::endpoint ep(addr, options_.port);
    acceptor_.open(ep.protocol(), ec);
    if (!ec) acceptor_.set_option(net::socket_base::reuse_address(true), ec);
    if (!ec) acceptor_.bind(ep, ec);
    if (!ec) acceptor_.listen(net::socket_base::max_listen_connections, ec);
    if (ec) {
      return Status::Unavailable("cannot listen on " + options_.address + ":" +
                                 std::to_string(options_.port) + ": " + ec.message());
    }
    port_ = acceptor_.local_endpoint().port();
    Accept();
    return Status::Ok();
  }

  void Stop() {
    stopped_ = true;
    net::post(acceptor_.get_executor(), [self = shared_from_this()] {
      beast::error_code ec;
      self->acceptor_.close(ec);
    });
  }

  unsigned short port() const { return port_; }
  const HttpServerOptions& options() const { return options_; }
  const Handler& handler() const { return handler_; }
  bool stopped() const { return stopped_; }

 private:
  void Accept();

  net::io_context& io_;
  HttpServerOptions options_;
  Handler handler_;
  tcp::acceptor acceptor_;
  std::atomic<unsigned short> port_{0};
  std::atomic<bool> stopped_{false};
};

namespace {

class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(tcp::socket&& socket, std::shared_ptr<HttpServer::Impl> server)
      : stream_(std::move(socket)), server_(std::move(server)) {}

  void Run() {
    net::dispatch(stream_.get_executor(), [self = shared_from_this()] { self->Read(); });
  }

 private:
  void Read() {
    parser_.emplace();
    parser_->header_limit(server_->options().header_limit);
    parser_->body_limit(server_->options().body_limit);
    stream_.expires_after(std::chrono::seconds(server_->options().read_timeout_seconds));
    http::async_read(stream_, buffer_, *parser_,
                     [self = shared_from_this()](beast::error_code ec, size_t) {
                       self->OnRead(ec);
                     });
  }

  void OnRead(beast::error_code ec) {
    if (ec == http::error::end_of_stream || ec == net::error::operation_aborted ||
        ec == beast::error::timeout || ec == net::error::connection_reset || ec == net::error::eof) {
      return Close();
    }
    if (ec == http::error::body_limit) {
      return SendFinal(ErrorResponse(Status::TooLarge("the request body exceeds the upload limit")));
    }
    if (ec == http::error::header_limit) {
      HttpResponse r = ErrorResponse(
          Status(Code::kInvalidArgument, "headers_too_large", "the request headers are too large"));
      r.status = 431;
      return SendFinal(std::move(r));
    }
    if (ec) {
      return SendFinal(ErrorResponse(
          Status::Invalid("bad_request", "malformed HTTP request: " + ec.message())));
    }
    auto& msg = parser_->get();
    keep_alive_ = msg.keep_alive();
    HttpRequest req;
    req.method = std::string(msg.method_string());
    req.request_id = RandomIdGenerator().NewUuid();
    std::string_view target(msg.target().data(), msg.target().size());
    size_t q = target.find('?');
    std::string_view path = target.substr(0, q);
    if (!Decode(path, false, &req.path) || req.path.empty() || req.path[0] != '/') {
      return SendFinal(ErrorResponse(Status::Invalid("bad_request", "malformed request target")),
                       req.request_id);
    }
    if (q != std::string_view::npos) {
      std::string_view qs = target.substr(q + 1);
      while (!qs.empty()) {
        size_t amp = qs.find('&');
        std::string_view pair = qs.substr(0, amp);
        size_t eq = pair.find('=');
        std::string k, v;
        if (!Decode(pair.substr(0, eq), true, &k) ||
            !Decode(eq == std::string_view::npos ? "" : pair.substr(eq + 1), true, &v)) {
          return SendFinal(ErrorResponse(Status::Invalid("bad_request", "malformed query string")),
                           req.request_id);
        }
        if (!k.empty()) req.query[k] = v;
        if (amp == std::string_view::npos) break;
        qs.remove_prefix(amp + 1);
      }
    }
    req.authorization = std::string(msg[http::field::authorization]);
    req.content_type = std::string(msg[http::field::content_type]);
    req.body = std::move(msg.body());
    std::string request_id = req.request_id;
    stream_.expires_never();
    server_->handler()(std::move(req), [self = shared_from_this(), request_id](HttpResponse r) {
      net::post(self->stream_.get_executor(), [self, request_id, r = std::move(r)]() mutable {
        self->Send(std::move(r), request_id);
      });
    });
  }

  void SendFinal(HttpResponse r, std::string request_id = {}) {
    keep_alive_ = false;
    if (request_id.empty()) request_id = RandomIdGenerator().NewUuid();
    Send(std::move(r), request_id);
  }

  void Send(HttpResponse r, const std::string& request_id) {
    auto res = std::make_shared<http::response<http::string_body>>();
    res->result(static_cast<http::status>(r.status));
    res->version(11);
    res->set(http::field::server, "lastcall");
    res->set(http::field::content_type, r.content_type);
    res->set("X-Request-Id", request_id);
    res->set("X-Content-Type-Options", "nosniff");
    for (const auto& [k, v] : r.headers) res->set(k, v);
    res->body() = std::move(r.body);
    bool keep = keep_alive_ && !server_->stopped();
    res->keep_alive(keep);
    res->prepare_payload();
    stream_.expires_after(std::chrono::seconds(server_->options().read_timeout_seconds));
    http::async_write(stream_, *res,
                      [self = shared_from_this(), res, keep](beast::error_code ec, size_t) {
                        if (ec || !keep) return self->Close();
                        self->Read();
                      });
  }

  void Close() {
    beast::error_code ec;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ec);
    stream_.socket().close(ec);
  }

  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  std::shared_ptr<HttpServer::Impl> server_;
  bool keep_alive_ = true;
};

}  // namespace

void HttpServer::Impl::Accept() {
  acceptor_.async_accept(net::make_strand(io_), [self = shared_from_this()](beast::error_code ec,
                                                                          tcp::socket socket) {
    if (ec) {
      if (!self->stopped_ && ec != net::error::operation_aborted) {
        log::Warn("accept failed", {{"error", ec.message()}});
        self->Accept();
      }
      return;
    }
    std::make_shared<Session>(std::move(socket), self)->Run();
    if (!self->stopped_) self->Accept();
  });
}

HttpServer::HttpServer(net::io_context& io, HttpServerOptions options, Handler handler)
    : impl_(std::make_shared<Impl>(io, std::move(options), std::move(handler))) {}

HttpServer::~HttpServer() = default;

Status HttpServer::Start() { return impl_->Start(); }
unsigned short HttpServer::port() const { return impl_->port(); }
void HttpServer::Stop() { impl_->Stop(); }

}  // namespace lastcall
