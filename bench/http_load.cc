#include "http_load.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "bench_util.h"

namespace bench {

namespace {

using Clock = std::chrono::steady_clock;

constexpr int kMaxRetries = 3;
constexpr auto kIoTimeout = std::chrono::seconds(60);
constexpr size_t kMaxHeadBytes = 64 * 1024;
constexpr size_t kMaxBodyBytes = 64ull << 20;
constexpr size_t kReadChunk = 16 * 1024;

char Lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

bool IEquals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (Lower(a[i]) != Lower(b[i])) return false;
  }
  return true;
}

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

}  // namespace

HeadParse ParseResponseHead(std::string_view data, ResponseHead* head) {
  size_t end = data.find("\r\n\r\n");
  if (end == std::string_view::npos) {
    return data.size() > kMaxHeadBytes ? HeadParse::kBad : HeadParse::kNeedMore;
  }
  if (end + 4 > kMaxHeadBytes) return HeadParse::kBad;
  std::string_view rest = data.substr(0, end + 2);  // every line ends with CRLF
  size_t eol = rest.find("\r\n");
  std::string_view line = rest.substr(0, eol);
  rest.remove_prefix(eol + 2);
  // "HTTP/1.1 200 OK": version, one space, three digits, then a space or the end of the line.
  bool http11 = line.substr(0, 9) == "HTTP/1.1 ";
  if (!http11 && line.substr(0, 9) != "HTTP/1.0 ") return HeadParse::kBad;
  if (line.size() < 12 || (line.size() > 12 && line[12] != ' ')) return HeadParse::kBad;
  int status = 0;
  for (size_t i = 9; i < 12; ++i) {
    if (line[i] < '0' || line[i] > '9') return HeadParse::kBad;
    status = status * 10 + (line[i] - '0');
  }
  if (status < 200 || status > 599) return HeadParse::kBad;
  ResponseHead h;
  h.status = status;
  h.keep_alive = http11;
  bool has_length = false;
  while (!rest.empty()) {
    eol = rest.find("\r\n");
    line = rest.substr(0, eol);
    rest.remove_prefix(eol + 2);
    size_t colon = line.find(':');
    if (colon == std::string_view::npos || colon == 0) return HeadParse::kBad;
    std::string_view name = line.substr(0, colon);
    std::string_view value = Trim(line.substr(colon + 1));
    if (IEquals(name, "content-length")) {
      if (has_length || value.empty() || value.size() > 18) return HeadParse::kBad;
      size_t n = 0;
      for (char c : value) {
        if (c < '0' || c > '9') return HeadParse::kBad;
        n = n * 10 + static_cast<size_t>(c - '0');
      }
      h.content_length = n;
      has_length = true;
    } else if (IEquals(name, "transfer-encoding")) {
      return HeadParse::kBad;
    } else if (IEquals(name, "connection")) {
      while (!value.empty()) {
        size_t comma = value.find(',');
        std::string_view token = Trim(value.substr(0, comma));
        if (IEquals(token, "close")) h.keep_alive = false;
        if (IEquals(token, "keep-alive") && !http11) h.keep_alive = true;
        if (comma == std::string_view::npos) break;
        value.remove_prefix(comma + 1);
      }
    }
  }
  if (!has_length && status != 204 && status != 304) return HeadParse::kBad;
  h.head_bytes = end + 4;
  *head = h;
  return HeadParse::kDone;
}

namespace {

struct Shared {
  const LoadOptions& o;
  uint64_t jobs;
  const MakeRequest& make;
  const OnDone& done;
  sockaddr_in addr{};
  std::atomic<uint64_t> next{0};
  Clock::time_point t0;
  int64_t t0_wall_us = 0;
  Clock::time_point stop_at;
  std::mutex mu;  // serializes make and done
  std::atomic<uint64_t> completed{0}, failed{0}, reconnects{0}, delayed{0};
  std::atomic<int64_t> max_delay_us{0};
};

// The request line and headers lastcall needs, then the body, in one buffer (one send).
void Serialize(const HttpRequestSpec& spec, std::string* out) {
  out->clear();
  out->reserve(spec.target.size() + spec.authorization.size() + spec.content_type.size() +
               spec.body.size() + 128);
  out->append(spec.method).append(" ").append(spec.target).append(" HTTP/1.1\r\nHost: 127.0.0.1\r\n");
  if (!spec.authorization.empty()) out->append("Authorization: ").append(spec.authorization).append("\r\n");
  if (!spec.content_type.empty()) out->append("Content-Type: ").append(spec.content_type).append("\r\n");
  if (!spec.body.empty() || spec.method == "POST" || spec.method == "PUT" || spec.method == "PATCH") {
    out->append("Content-Length: ").append(std::to_string(spec.body.size())).append("\r\n");
  }
  out->append("\r\n").append(spec.body);
}

// One connection's request in flight. Owned by its Worker; touched by the Worker's thread only.
struct Conn {
  int fd = -1;
  bool busy = false;
  bool want_out = false;  // registered for EPOLLOUT (a send that did not fit)
  uint64_t job = 0;
  int retries = 0;
  int64_t send_wall_us = 0;
  int64_t sched_wall_us = 0;
  Clock::time_point start;
  Clock::time_point deadline;  // a transport failure when no progress by then
  std::string out;             // the serialized request
  size_t out_off = 0;          // bytes of out sent
  std::vector<char> in;        // bytes of the answer received so far: in[0, in_len)
  size_t in_len = 0;
  bool head_done = false;
  ResponseHead head;
};

class Worker {
 public:
  Worker(Shared& s, int connections) : s_(s), conns_(static_cast<size_t>(connections)) {}

  ~Worker() {
    for (auto& c : conns_) CloseFd(c);
    if (timer_fd_ >= 0) close(timer_fd_);
    if (ep_ >= 0) close(ep_);
  }

  void Run() {
    ep_ = epoll_create1(EPOLL_CLOEXEC);
    if (ep_ < 0) return FailAll();
    if (s_.o.rate > 0) {
      timer_fd_ = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
      epoll_event ev{};
      ev.events = EPOLLIN;
      ev.data.u64 = kTimerTag;
      if (timer_fd_ < 0 || epoll_ctl(ep_, EPOLL_CTL_ADD, timer_fd_, &ev) != 0) return FailAll();
      for (auto& c : conns_) idle_.push_back(&c);
      Arm();
    } else {
      for (auto& c : conns_) NextClosed(&c);
    }
    std::vector<epoll_event> events(256);
    auto next_scan = Clock::now() + std::chrono::seconds(1);
    while (Busy() > 0 || timer_armed_) {
      int n = epoll_wait(ep_, events.data(), static_cast<int>(events.size()), 1000);
      if (n < 0 && errno != EINTR) return FailAll();
      for (int k = 0; k < n; ++k) {
        if (events[k].data.u64 == kTimerTag) {
          uint64_t expirations;
          (void)!read(timer_fd_, &expirations, sizeof expirations);
          timer_armed_ = false;
          Arm();
          continue;
        }
        Conn& c = conns_[events[k].data.u64];
        if (!c.busy) {
          CloseFd(c);  // the server closed an idle keep-alive connection (or sent stray bytes)
        } else if (c.out_off < c.out.size()) {
          WriteSome(&c);
        } else {
          ReadSome(&c);
        }
      }
      auto now = Clock::now();
      if (now >= next_scan) {
        next_scan = now + std::chrono::seconds(1);
        for (auto& c : conns_) {
          if (c.busy && now >= c.deadline) Fail(&c);
        }
      }
    }
  }

 private:
  static constexpr uint64_t kTimerTag = ~uint64_t{0};

  size_t Busy() const {
    size_t n = 0;
    for (const auto& c : conns_) n += c.busy ? 1 : 0;
    return n;
  }

  // epoll or the timer could not be set up: every job this worker would run fails.
  void FailAll() {
    for (;;) {
      uint64_t i = s_.next.fetch_add(1);
      if (i >= s_.jobs || s_.o.duration_s > 0) return;
      HttpResult r;
      r.send_wall_us = r.scheduled_wall_us = WallMicros();
      ++s_.failed;
      std::lock_guard<std::mutex> l(s_.mu);
      s_.done(i, std::move(r));
    }
  }

  size_t Index(const Conn* c) const { return static_cast<size_t>(c - conns_.data()); }

  void CloseFd(Conn& c) {
    if (c.fd >= 0) close(c.fd);  // also leaves the epoll set
    c.fd = -1;
    c.want_out = false;
  }

  bool Connect(Conn* c) {
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c->fd < 0) return false;
    if (connect(c->fd, reinterpret_cast<const sockaddr*>(&s_.addr), sizeof s_.addr) != 0) {
      CloseFd(*c);
      return false;
    }
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) | O_NONBLOCK);
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = Index(c);
    if (epoll_ctl(ep_, EPOLL_CTL_ADD, c->fd, &ev) != 0) {
      CloseFd(*c);
      return false;
    }
    return true;
  }

  void Interest(Conn* c, bool out) {
    if (c->want_out == out) return;
    epoll_event ev{};
    ev.events = EPOLLIN | (out ? EPOLLOUT : 0u);
    ev.data.u64 = Index(c);
    epoll_ctl(ep_, EPOLL_CTL_MOD, c->fd, &ev);
    c->want_out = out;
  }

  // Starts job i (scheduled at sched_wall_us for the open loop, else 0).
  void Start(Conn* c, uint64_t i, int64_t sched_wall_us) {
    c->busy = true;
    c->job = i;
    c->sched_wall_us = sched_wall_us;
    c->retries = 0;
    HttpRequestSpec spec;
    {
      std::lock_guard<std::mutex> l(s_.mu);
      s_.make(i, spec);
    }
    Serialize(spec, &c->out);
    Send(c);
  }

  void Send(Conn* c) {
    if (c->fd < 0 && !Connect(c)) return Fail(c);
    c->send_wall_us = WallMicros();
    c->start = Clock::now();
    c->deadline = c->start + kIoTimeout;
    if (c->sched_wall_us == 0) c->sched_wall_us = c->send_wall_us;
    c->out_off = 0;
    c->in_len = 0;
    c->head_done = false;
    WriteSome(c);
  }

  void WriteSome(Conn* c) {
    while (c->out_off < c->out.size()) {
      ssize_t n = send(c->fd, c->out.data() + c->out_off, c->out.size() - c->out_off, MSG_NOSIGNAL);
      if (n > 0) {
        c->out_off += static_cast<size_t>(n);
        c->deadline = Clock::now() + kIoTimeout;
      } else if (n < 0 && errno == EINTR) {
        continue;
      } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        return Interest(c, true);
      } else {
        return Fail(c);
      }
    }
    Interest(c, false);  // sent: the answer comes with EPOLLIN
  }

  void ReadSome(Conn* c) {
    for (;;) {
      if (c->in.size() - c->in_len < kReadChunk) c->in.resize(c->in_len + kReadChunk);
      size_t room = c->in.size() - c->in_len;
      ssize_t n = recv(c->fd, c->in.data() + c->in_len, room, 0);
      if (n == 0) return Fail(c);  // closed before the whole answer
      if (n < 0) {
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) return;  // the rest comes with EPOLLIN
        return Fail(c);
      }
      c->in_len += static_cast<size_t>(n);
      c->deadline = Clock::now() + kIoTimeout;
      std::string_view got(c->in.data(), c->in_len);
      if (!c->head_done) {
        HeadParse p = ParseResponseHead(got, &c->head);
        if (p == HeadParse::kBad) return Fail(c);
        if (p == HeadParse::kNeedMore) continue;
        if (c->head.content_length > kMaxBodyBytes) return Fail(c);
        c->head_done = true;
      }
      if (c->in_len >= c->head.head_bytes + c->head.content_length) return Answered(c);
      if (static_cast<size_t>(n) < room) return;  // drained for now
    }
  }

  void Fail(Conn* c) {
    CloseFd(*c);
    ++s_.reconnects;
    if (++c->retries <= kMaxRetries) return Send(c);
    HttpResult r;
    r.status = 0;
    r.send_wall_us = c->send_wall_us;
    r.scheduled_wall_us = c->sched_wall_us;
    ++s_.failed;
    Finish(c, std::move(r));
  }

  void Answered(Conn* c) {
    HttpResult r;
    r.status = c->head.status;
    if (s_.o.keep_bodies) r.body.assign(c->in.data() + c->head.head_bytes, c->head.content_length);
    r.send_wall_us = c->send_wall_us;
    r.scheduled_wall_us = c->sched_wall_us;
    r.latency_us = std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - c->start).count();
    // Bytes past the answer were never asked for (no pipelining): the connection is not trusted.
    bool extra = c->in_len > c->head.head_bytes + c->head.content_length;
    if (!c->head.keep_alive || extra) CloseFd(*c);
    ++s_.completed;
    Finish(c, std::move(r));
  }

  void Finish(Conn* c, HttpResult&& r) {
    c->busy = false;
    {
      std::lock_guard<std::mutex> l(s_.mu);
      s_.done(c->job, std::move(r));
    }
    Released(c);
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

  void NextClosed(Conn* c) {
    uint64_t i = s_.next.fetch_add(1);
    bool more = s_.o.duration_s > 0 ? Clock::now() < s_.stop_at : i < s_.jobs;
    if (more) Start(c, i, 0);
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
    Start(c, i, sched);
  }

  // Open loop: release every job that is due, then arm the timer for the next one.
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
    // steady_clock is CLOCK_MONOTONIC (libstdc++ on Linux), which the timer counts in.
    auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(Due(i).time_since_epoch()).count();
    itimerspec t{};
    t.it_value.tv_sec = static_cast<time_t>(ns / 1000000000);
    t.it_value.tv_nsec = static_cast<long>(ns % 1000000000);
    if (t.it_value.tv_sec == 0 && t.it_value.tv_nsec == 0) t.it_value.tv_nsec = 1;  // 0 disarms
    timer_armed_ = timerfd_settime(timer_fd_, TFD_TIMER_ABSTIME, &t, nullptr) == 0;
  }

  Shared& s_;
  std::vector<Conn> conns_;
  int ep_ = -1;
  int timer_fd_ = -1;
  bool timer_armed_ = false;
  std::vector<Conn*> idle_;
  std::deque<std::pair<uint64_t, int64_t>> pending_;  // open loop: due, no idle connection
};

}  // namespace

LoadSummary RunLoad(const LoadOptions& o, uint64_t jobs, const MakeRequest& make, const OnDone& done) {
  Shared s{o, jobs, make, done};
  s.addr.sin_family = AF_INET;
  s.addr.sin_port = htons(o.port);
  if (inet_pton(AF_INET, o.host.c_str(), &s.addr.sin_addr) != 1) {
    s.addr.sin_addr.s_addr = htonl(INADDR_NONE);  // every connect fails: reported as failures
  }
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
  namespace beast = boost::beast;
  namespace http = beast::http;
  namespace net = boost::asio;
  using tcp = net::ip::tcp;
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
