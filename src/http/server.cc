#include "http/server.h"

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <nlohmann/json.hpp>

#include <array>
#include <atomic>
#include <list>
#include <mutex>
#include <optional>

#include "common/request_id.h"
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

// A connection as the server's admission control sees it: it can be closed from any thread.
class Connection {
 public:
  virtual ~Connection() = default;
  // Closes the connection on its own strand; whatever it was waiting for is abandoned.
  virtual void Evict() = 0;
};

Status ParseRequestTarget(std::string_view target, std::string* path,
                          std::map<std::string, std::string>* query) {
  path->clear();
  query->clear();
  size_t q = target.find('?');
  if (!Decode(target.substr(0, q), false, path) || path->empty() || (*path)[0] != '/') {
    return Status::Invalid("bad_request", "malformed request target");
  }
  if (q == std::string_view::npos) return Status::Ok();
  std::string_view qs = target.substr(q + 1);
  while (!qs.empty()) {
    size_t amp = qs.find('&');
    std::string_view pair = qs.substr(0, amp);
    size_t eq = pair.find('=');
    std::string k, v;
    if (!Decode(pair.substr(0, eq), true, &k) ||
        !Decode(eq == std::string_view::npos ? "" : pair.substr(eq + 1), true, &v)) {
      return Status::Invalid("bad_request", "malformed query string");
    }
    if (!k.empty()) (*query)[k] = v;
    if (amp == std::string_view::npos) break;
    qs.remove_prefix(amp + 1);
  }
  return Status::Ok();
}

class HttpServer::Impl : public std::enable_shared_from_this<HttpServer::Impl> {
 public:
  Impl(net::io_context& io, HttpServerOptions options, Handler handler)
      : io_(io), options_(std::move(options)), handler_(std::move(handler)), acceptor_(io),
        retry_accept_(io) {}

  // Admission control. Each open connection is counted from Opened() to Closed(); while it waits
  // for a request it sits in the waiting list (oldest first), from which Admit() evicts. All of
  // these may be called from any thread.
  struct Waiting {
    std::weak_ptr<Connection> connection;
    bool evicted = false;
  };
  using WaitingList = std::list<Waiting>;
  void Opened() { ++open_; }
  void Closed() { --open_; }
  WaitingList::iterator StartWaiting(std::weak_ptr<Connection> c) {
    std::lock_guard<std::mutex> lock(mu_);
    return waiting_.insert(waiting_.end(), Waiting{std::move(c), false});
  }
  void StopWaiting(WaitingList::iterator it) {
    std::lock_guard<std::mutex> lock(mu_);
    waiting_.erase(it);
  }
  // True when a new connection may be served: below the limit, or after evicting the connection
  // that has waited longest. False when every open connection is busy with a request.
  bool Admit() {
    if (open_.load() < options_.max_connections) return true;
    std::shared_ptr<Connection> victim;
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (auto& w : waiting_) {
        if (w.evicted) continue;
        victim = w.connection.lock();
        if (!victim) continue;
        w.evicted = true;
        break;
      }
    }
    if (!victim) return false;
    victim->Evict();
    return true;
  }

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
      self->retry_accept_.cancel();
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
  net::steady_timer retry_accept_;  // after a failed accept (e.g. out of file descriptors)
  std::atomic<unsigned short> port_{0};
  std::atomic<bool> stopped_{false};
  std::atomic<size_t> open_{0};
  std::mutex mu_;
  WaitingList waiting_;  // GUARDED_BY(mu_)
};

namespace {

class Session;

// The session whose handler this thread is running (inside Session::OnRead), else null. A
// response given while it is set is that handler answering synchronously on the session's strand.
thread_local Session* t_handling = nullptr;

// Sets t_handling for a scope (restoring the previous value, also when the handler throws).
class HandlingGuard {
 public:
  explicit HandlingGuard(Session* s) : previous_(t_handling) { t_handling = s; }
  ~HandlingGuard() { t_handling = previous_; }
  HandlingGuard(const HandlingGuard&) = delete;
  HandlingGuard& operator=(const HandlingGuard&) = delete;

 private:
  Session* previous_;
};

class Session : public Connection, public std::enable_shared_from_this<Session> {
 public:
  Session(tcp::socket&& socket, std::shared_ptr<HttpServer::Impl> server)
      : stream_(std::move(socket)), server_(std::move(server)) {
    server_->Opened();
  }
  ~Session() override { server_->Closed(); }

  void Run() {
    net::dispatch(stream_.get_executor(), [self = shared_from_this()] { self->Read(); });
  }

  void Evict() override {
    net::post(stream_.get_executor(), [self = shared_from_this()] {
      if (self->waiting_) self->Close();  // not if its request arrived meanwhile
    });
  }

 private:
  void Read() {
    waiting_ = server_->StartWaiting(weak_from_this());
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
    if (waiting_) {
      server_->StopWaiting(*waiting_);
      waiting_.reset();
    }
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
    // A length that is not chunked-last, or both a length and chunked: the body's end is
    // ambiguous (request smuggling). RFC 9112 section 6.3: 400, then close.
    if (msg.count(http::field::transfer_encoding) > 0 &&
        (!msg.chunked() || msg.count(http::field::content_length) > 0)) {
      return SendFinal(ErrorResponse(Status::Invalid(
          "bad_request", "malformed HTTP request: Transfer-Encoding must be chunked alone, "
                         "without Content-Length")));
    }
    keep_alive_ = msg.keep_alive();
    HttpRequest req;
    req.method = std::string(msg.method_string());
    req.request_id = NewRequestId();
    if (Status st = ParseRequestTarget(std::string_view(msg.target().data(), msg.target().size()),
                                       &req.path, &req.query);
        !st.ok()) {
      return SendFinal(ErrorResponse(st), req.request_id);
    }
    req.authorization = std::string(msg[http::field::authorization]);
    req.content_type = std::string(msg[http::field::content_type]);
    req.body = std::move(msg.body());
    std::string request_id = req.request_id;
    stream_.expires_never();
    {
      HandlingGuard guard(this);
      server_->handler()(std::move(req), [self = shared_from_this(), request_id](HttpResponse r) {
        if (t_handling == self.get()) {
          // Answered inside the handler, on this session's strand: sent when it returns.
          self->sync_response_.emplace(std::move(r));
          return;
        }
        net::post(self->stream_.get_executor(), [self, request_id, r = std::move(r)]() mutable {
          self->Send(std::move(r), request_id);
        });
      });
    }
    if (sync_response_) {
      HttpResponse r = std::move(*sync_response_);
      sync_response_.reset();
      Send(std::move(r), request_id);
    }
  }

  void SendFinal(HttpResponse r, std::string request_id = {}) {
    keep_alive_ = false;
    if (request_id.empty()) request_id = NewRequestId();
    Send(std::move(r), request_id);
  }

  // Writes the response as one head string and the body, gathered into one write. The head is
  // what Beast's serializer wrote for the same response: the status line, Server, Content-Type,
  // X-Request-Id, X-Content-Type-Options, the handler's headers, Content-Length, and
  // "Connection: close" when the connection ends after it.
  void Send(HttpResponse r, const std::string& request_id) {
    bool keep = keep_alive_ && !server_->stopped();
    out_body_ = std::move(r.body);
    out_head_.clear();
    out_head_.reserve(256 + request_id.size() + r.content_type.size());
    auto status = static_cast<unsigned>(r.status);
    out_head_.append("HTTP/1.1 ").append(std::to_string(status)).append(" ");
    beast::string_view reason = http::obsolete_reason(static_cast<http::status>(status));
    out_head_.append(reason.data(), reason.size()).append("\r\nServer: lastcall\r\n");
    AppendField("Content-Type", r.content_type);
    AppendField("X-Request-Id", request_id);
    out_head_.append("X-Content-Type-Options: nosniff\r\n");
    for (const auto& [k, v] : r.headers) AppendField(k, v);
    // 1xx, 204 and 304 carry no body and no length (RFC 9110 8.6).
    if (status >= 200 && status != 204 && status != 304) {
      out_head_.append("Content-Length: ").append(std::to_string(out_body_.size())).append("\r\n");
    } else {
      out_body_.clear();
    }
    if (!keep) out_head_.append("Connection: close\r\n");
    out_head_.append("\r\n");
    stream_.expires_after(std::chrono::seconds(server_->options().read_timeout_seconds));
    std::array<net::const_buffer, 2> buffers{net::buffer(out_head_), net::buffer(out_body_)};
    net::async_write(stream_, buffers, [self = shared_from_this(), keep](beast::error_code ec, size_t) {
      if (ec || !keep) return self->Close();
      self->Read();
    });
  }

  // "name: value\r\n"; a CR or LF in either (never set by lastcall's handlers) becomes a space,
  // so no field can end the head early or add another.
  void AppendField(std::string_view name, std::string_view value) {
    auto clean = [this](std::string_view s) {
      for (char c : s) out_head_.push_back(c == '\r' || c == '\n' ? ' ' : c);
    };
    clean(name);
    out_head_.append(": ");
    clean(value);
    out_head_.append("\r\n");
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
  std::optional<HttpServer::Impl::WaitingList::iterator> waiting_;  // while a read is pending
  bool keep_alive_ = true;
  std::optional<HttpResponse> sync_response_;  // answered inside the handler (see OnRead)
  std::string out_head_;  // the response being written: head and body (one write at a time)
  std::string out_body_;
};

}  // namespace

void HttpServer::Impl::Accept() {
  acceptor_.async_accept(net::make_strand(io_), [self = shared_from_this()](beast::error_code ec,
                                                                          tcp::socket socket) {
    if (ec) {
      if (!self->stopped_ && ec != net::error::operation_aborted) {
        // Out of file descriptors (or another transient failure): the pending connection stays
        // in the backlog, so accepting again at once would spin. Retry shortly.
        log::Warn("accept failed; retrying in 100 ms", {{"error", ec.message()}});
        self->retry_accept_.expires_after(std::chrono::milliseconds(100));
        self->retry_accept_.async_wait([self](beast::error_code e) {
          if (!e && !self->stopped_) self->Accept();
        });
      }
      return;
    }
    if (self->Admit()) {
      std::make_shared<Session>(std::move(socket), self)->Run();
    } else {
      beast::error_code ignored;
      socket.close(ignored);  // every connection is busy with a request
    }
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
