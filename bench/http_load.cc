#include "http_load.h"

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include <atomic>
#include <chrono>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "bench_util.h"

namespace bench {
namespace {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;
using tcp = net::ip::tcp;
using Clock = std::chrono::steady_clock;

constexpr int kMaxRetries = 3;
constexpr auto kIoTimeout = std::chrono::seconds(60);

struct Shared {
  const LoadOptions& o;
  uint64_t jobs;
  const MakeRequest& make;
  const OnDone& done;
  tcp::endpoint endpoint;
  std::atomic<uint64_t> next{0};
  Clock::time_point t0;
  int64_t t0_wall_us = 0;
  Clock::time_point stop_at;
  std::mutex mu;  // serializes make and done
  std::atomic<uint64_t> completed{0}, failed{0}, reconnects{0}, delayed{0};
  std::atomic<int64_t> max_delay_us{0};
};

class Worker;

class Conn : public std::enable_shared_from_this<Conn> {
 public:
  Conn(net::io_context& io, Shared& s, Worker& w) : stream_(io), s_(s), w_(w) {}

  bool busy() const { return busy_; }

  // Starts job i (scheduled at sched_wall_us for the open loop, else 0).
  void Start(uint64_t i, int64_t sched_wall_us) {
    busy_ = true;
    job_ = i;
    sched_wall_us_ = sched_wall_us;
    retries_ = 0;
    HttpRequestSpec spec;
    {
      std::lock_guard<std::mutex> l(s_.mu);
      s_.make(i, spec);
    }
    req_ = {};
    req_.method_string(spec.method);
    req_.target(spec.target);
    req_.version(11);
    req_.set(http::field::host, "127.0.0.1");
    req_.keep_alive(true);
    if (!spec.authorization.empty()) req_.set(http::field::authorization, spec.authorization);
    if (!spec.content_type.empty()) req_.set(http::field::content_type, spec.content_type);
    req_.body() = std::move(spec.body);
    req_.prepare_payload();
    Send();
  }

 private:
  bool EnsureConnected() {
    if (connected_) return true;
    beast::error_code ec;
    stream_.socket().close(ec);
    stream_.socket().open(tcp::v4(), ec);
    if (!ec) stream_.socket().connect(s_.endpoint, ec);
    if (ec) return false;
    stream_.socket().set_option(tcp::no_delay(true), ec);
    buffer_.clear();
    connected_ = true;
    return true;
  }

  void Send() {
    if (!EnsureConnected()) return Failed();
    send_wall_us_ = WallMicros();
    start_ = Clock::now();
    if (sched_wall_us_ == 0) sched_wall_us_ = send_wall_us_;
    stream_.expires_after(kIoTimeout);
    http::async_write(stream_, req_, [self = shared_from_this()](beast::error_code ec, size_t) {
      if (ec) return self->Failed();
      self->parser_.emplace();
      self->parser_->body_limit(64ull << 20);
      self->stream_.expires_after(kIoTimeout);
      http::async_read(self->stream_, self->buffer_, *self->parser_,
                       [self](beast::error_code ec2, size_t) {
                         if (ec2) return self->Failed();
                         self->Answered();
                       });
    });
  }

  void Failed() {
    connected_ = false;
    ++s_.reconnects;
    if (++retries_ <= kMaxRetries) return Send();
    HttpResult r;
    r.status = 0;
    r.send_wall_us = send_wall_us_;
    r.scheduled_wall_us = sched_wall_us_;
    ++s_.failed;
    Finish(std::move(r));
  }

  void Answered() {
    auto& res = parser_->get();
    HttpResult r;
    r.status = res.result_int();
    if (s_.o.keep_bodies) r.body = std::move(res.body());
    r.send_wall_us = send_wall_us_;
    r.scheduled_wall_us = sched_wall_us_;
    r.latency_us =
        std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - start_).count();
    if (!res.keep_alive()) connected_ = false;
    ++s_.completed;
    Finish(std::move(r));
  }

  void Finish(HttpResult&& r);

  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
  http::request<http::string_body> req_;
  std::optional<http::response_parser<http::string_body>> parser_;
  Shared& s_;
  Worker& w_;
  bool connected_ = false;
  bool busy_ = false;
  uint64_t job_ = 0;
  int retries_ = 0;
  int64_t send_wall_us_ = 0;
  int64_t sched_wall_us_ = 0;
  Clock::time_point start_;
};

class Worker {
 public:
  Worker(Shared& s, int connections) : s_(s), timer_(io_) {
    for (int i = 0; i < connections; ++i) conns_.push_back(std::make_shared<Conn>(io_, s_, *this));
  }

  void Run() {
    if (s_.o.rate > 0) {
      for (auto& c : conns_) idle_.push_back(c.get());
      Arm();
    } else {
      for (auto& c : conns_) NextClosed(c.get());
    }
    io_.run();
  }

  // A connection finished its job: give it the next one, or let it rest.
  void Released(Conn* c) {
    if (s_.o.rate > 0) {
      if (!pending_.empty()) {
        auto [i, sched] = pending_.front();
        pending_.pop_front();
        StartLate(c, i, sched);
      } else {
        idle_.push_back(c);
      }
      return;
    }
    NextClosed(c);
  }

 private:
  void NextClosed(Conn* c) {
    uint64_t i = s_.next.fetch_add(1);
    bool more = s_.o.duration_s > 0 ? Clock::now() < s_.stop_at : i < s_.jobs;
    if (more) c->Start(i, 0);
  }

  Clock::time_point Due(uint64_t i) const {
    return s_.t0 + std::chrono::nanoseconds(
                       static_cast<int64_t>(static_cast<double>(i) * 1e9 / s_.o.rate));
  }

  int64_t DueWall(uint64_t i) const {
    return s_.t0_wall_us + static_cast<int64_t>(static_cast<double>(i) * 1e6 / s_.o.rate);
  }

  void StartLate(Conn* c, uint64_t i, int64_t sched) {
    int64_t late = WallMicros() - sched;
    if (late > 1000) ++s_.delayed;
    int64_t prev = s_.max_delay_us.load();
    while (late > prev && !s_.max_delay_us.compare_exchange_weak(prev, late)) {
    }
    c->Start(i, sched);
  }

  // Open loop: release every job that is due, then sleep until the next one.
  void Arm() {
    auto now = Clock::now();
    uint64_t i = s_.next.load();
    while (i < s_.jobs && Due(i) <= now) {
      if (!idle_.empty()) {
        Conn* c = idle_.back();
        idle_.pop_back();
        StartLate(c, i, DueWall(i));
      } else {
        pending_.emplace_back(i, DueWall(i));
      }
      s_.next.store(++i);
    }
    if (i >= s_.jobs) return;
    timer_.expires_at(Due(i));
    timer_.async_wait([this](const beast::error_code& ec) {
      if (!ec) Arm();
    });
  }

  Shared& s_;
  net::io_context io_;
  net::steady_timer timer_;
  std::vector<std::shared_ptr<Conn>> conns_;
  std::vector<Conn*> idle_;
  std::deque<std::pair<uint64_t, int64_t>> pending_;

  friend class Conn;
};

void Conn::Finish(HttpResult&& r) {
  busy_ = false;
  {
    std::lock_guard<std::mutex> l(s_.mu);
    s_.done(job_, std::move(r));
  }
  w_.Released(this);
}

}  // namespace

LoadSummary RunLoad(const LoadOptions& o, uint64_t jobs, const MakeRequest& make, const OnDone& done) {
  Shared s{o, jobs, make, done, tcp::endpoint(net::ip::make_address(o.host), o.port)};
  int threads = o.rate > 0 ? 1 : std::max(1, o.threads);
  int conns = std::max(1, o.connections);
  threads = std::min(threads, conns);
  std::vector<std::unique_ptr<Worker>> workers;
  for (int t = 0; t < threads; ++t) {
    int share = conns / threads + (t < conns % threads ? 1 : 0);
    workers.push_back(std::make_unique<Worker>(s, share));
  }
  s.t0 = Clock::now();
  s.t0_wall_us = WallMicros();
  s.stop_at = s.t0 + std::chrono::duration_cast<Clock::duration>(
                         std::chrono::duration<double>(o.duration_s));
  std::vector<std::thread> pool;
  for (int t = 1; t < threads; ++t) pool.emplace_back([&, t] { workers[t]->Run(); });
  workers[0]->Run();
  for (auto& th : pool) th.join();
  LoadSummary sum;
  sum.elapsed_s = std::chrono::duration<double>(Clock::now() - s.t0).count();
  sum.completed = s.completed;
  sum.failed = s.failed;
  sum.reconnects = s.reconnects;
  sum.delayed = s.delayed;
  sum.max_delay_ms = static_cast<double>(s.max_delay_us.load()) / 1000.0;
  return sum;
}

HttpResult HttpOnce(const std::string& host, unsigned short port, const HttpRequestSpec& spec,
                    double timeout_s) {
  HttpResult r;
  try {
    net::io_context io;
    beast::tcp_stream stream(io);
    stream.expires_after(std::chrono::duration_cast<std::chrono::steady_clock::duration>(
        std::chrono::duration<double>(timeout_s)));
    stream.connect(tcp::endpoint(net::ip::make_address(host), port));
    http::request<http::string_body> req;
    req.method_string(spec.method);
    req.target(spec.target);
    req.version(11);
    req.set(http::field::host, host);
    if (!spec.authorization.empty()) req.set(http::field::authorization, spec.authorization);
    if (!spec.content_type.empty()) req.set(http::field::content_type, spec.content_type);
    req.body() = spec.body;
    req.prepare_payload();
    r.send_wall_us = WallMicros();
    auto start = Clock::now();
    http::write(stream, req);
    beast::flat_buffer buf;
    http::response<http::string_body> res;
    http::read(stream, buf, res);
    r.latency_us = std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - start).count();
    r.status = res.result_int();
    r.body = std::move(res.body());
    beast::error_code ec;
    stream.socket().shutdown(tcp::socket::shutdown_both, ec);
  } catch (const std::exception&) {
    r.status = 0;
  }
  return r;
}

}  // namespace bench
