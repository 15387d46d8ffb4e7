#include "blobs/s3/s3_blob_store.h"

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include <chrono>
#include <ctime>
#include <limits>
#include <thread>

#include "common/log.h"

namespace lastcall {
namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;

namespace {

Status BadUrl(const std::string& what) {
  return Status::Invalid("invalid_config", "LASTCALL_BLOB_URL: " + what);
}

std::string PercentDecode(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size() && std::isxdigit(static_cast<unsigned char>(s[i + 1])) &&
        std::isxdigit(static_cast<unsigned char>(s[i + 2]))) {
      out += static_cast<char>(std::stoi(s.substr(i + 1, 2), nullptr, 16));
      i += 2;
    } else {
      out += s[i];
    }
  }
  return out;
}

std::string AmzDate(std::chrono::system_clock::time_point t) {
  std::time_t secs = std::chrono::system_clock::to_time_t(t);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y%m%dT%H%M%SZ", &tm);
  return buf;
}

// The text of every <tag>...</tag> in xml, entities decoded.
std::vector<std::string> XmlValues(const std::string& xml, const std::string& tag) {
  std::vector<std::string> out;
  std::string open = "<" + tag + ">", close = "</" + tag + ">";
  size_t pos = 0;
  for (;;) {
    size_t a = xml.find(open, pos);
    if (a == std::string::npos) return out;
    a += open.size();
    size_t b = xml.find(close, a);
    if (b == std::string::npos) return out;
    std::string v = xml.substr(a, b - a);
    std::string decoded;
    for (size_t i = 0; i < v.size(); ++i) {
      if (v[i] != '&') {
        decoded += v[i];
        continue;
      }
      static const std::pair<const char*, char> kEntities[] = {
          {"&amp;", '&'}, {"&lt;", '<'}, {"&gt;", '>'}, {"&quot;", '"'}, {"&apos;", '\''}};
      bool matched = false;
      for (const auto& [name, ch] : kEntities) {
        if (v.compare(i, std::strlen(name), name) == 0) {
          decoded += ch;
          i += std::strlen(name) - 1;
          matched = true;
          break;
        }
      }
      if (!matched) decoded += '&';
    }
    out.push_back(decoded);
    pos = b + close.size();
  }
}

// "2026-11-28T09:00:00.000Z" -> ms since the epoch; 0 when unreadable.
WallMillis ParseIsoTime(const std::string& s) {
  std::tm tm{};
  int ms = 0;
  if (std::sscanf(s.c_str(), "%4d-%2d-%2dT%2d:%2d:%2d", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
                  &tm.tm_hour, &tm.tm_min, &tm.tm_sec) != 6) {
    return 0;
  }
  size_t dot = s.find('.');
  if (dot != std::string::npos) ms = std::atoi(s.substr(dot + 1, 3).c_str());
  tm.tm_year -= 1900;
  tm.tm_mon -= 1;
  return static_cast<WallMillis>(timegm(&tm)) * 1000 + ms;
}

std::string S3Error(const S3BlobStore::Response& r) {
  auto code = XmlValues(r.body, "Code");
  return "HTTP " + std::to_string(r.status) + (code.empty() ? "" : " " + code[0]);
}

}  // namespace

Result<S3Options> ParseS3Url(const std::string& url) {
  S3Options o;
  if (url.rfind("s3://", 0) != 0) return BadUrl("must start with s3://");
  std::string rest = url.substr(5);
  size_t q = rest.find('?');
  o.bucket = rest.substr(0, q);
  if (!o.bucket.empty() && o.bucket.back() == '/') o.bucket.pop_back();
  if (o.bucket.empty() || o.bucket.find('/') != std::string::npos) {
    return BadUrl("s3://<bucket>?endpoint=...: the bucket name is missing or has a '/'");
  }
  std::string endpoint;
  if (q != std::string::npos) {
    std::string query = rest.substr(q + 1);
    size_t start = 0;
    while (start < query.size()) {
      size_t amp = query.find('&', start);
      if (amp == std::string::npos) amp = query.size();
      std::string kv = query.substr(start, amp - start);
      size_t eq = kv.find('=');
      std::string k = kv.substr(0, eq), v = eq == std::string::npos ? "" : PercentDecode(kv.substr(eq + 1));
      if (k == "endpoint") {
        endpoint = v;
      } else if (k == "region") {
        o.region = v;
      } else if (k == "prefix") {
        o.prefix = v;
      } else {
        return BadUrl("unknown parameter \"" + k + "\" (endpoint, region and prefix are known)");
      }
      start = amp + 1;
    }
  }
  if (endpoint.empty()) return BadUrl("endpoint=http://host:port is required");
  if (endpoint.rfind("https://", 0) == 0) {
    return BadUrl("https endpoints are not supported yet; use http:// (e.g. to a local gateway)");
  }
  if (endpoint.rfind("http://", 0) != 0) return BadUrl("endpoint must start with http://");
  std::string hostport = endpoint.substr(7);
  if (!hostport.empty() && hostport.back() == '/') hostport.pop_back();
  size_t colon = hostport.rfind(':');
  if (colon != std::string::npos && hostport.find(']') == std::string::npos) {
    o.host = hostport.substr(0, colon);
    o.port = hostport.substr(colon + 1);
  } else {
    o.host = hostport;
  }
  if (o.host.empty() || o.port.empty() ||
      o.port.find_first_not_of("0123456789") != std::string::npos) {
    return BadUrl("endpoint must be http://host[:port]");
  }
  if (o.region.empty()) return BadUrl("region must not be empty");
  return o;
}

struct S3BlobStore::Connection {
  asio::io_context ioc;
  beast::tcp_stream stream{ioc};
  beast::flat_buffer buffer;
  bool connected = false;
};

S3BlobStore::S3BlobStore(S3Options options) : options_(std::move(options)) {}
S3BlobStore::~S3BlobStore() = default;

Result<std::unique_ptr<S3BlobStore>> S3BlobStore::Open(S3Options options) {
  if (options.credentials.access_key_id.empty() || options.credentials.secret_access_key.empty()) {
    return Status::Invalid("invalid_config",
                           "LASTCALL_BLOB_URL needs AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY");
  }
  std::unique_ptr<S3BlobStore> store(new S3BlobStore(std::move(options)));
  auto r = store->Send("GET", "", {{"list-type", "2"}, {"max-keys", "1"}}, {});
  if (!r.ok()) return r.status();
  if (r->status != 200) {
    return Status::Unavailable("S3 bucket " + store->options_.bucket + " at " + store->options_.host +
                               ":" + store->options_.port + " refused a listing: " + S3Error(*r));
  }
  return store;
}

std::string S3BlobStore::ObjectPath(const std::string& object) const {
  std::string path = "/" + sigv4::UriEncode(options_.bucket, false);
  if (!object.empty()) path += "/" + sigv4::UriEncode(object, true);
  return path;
}

std::unique_ptr<S3BlobStore::Connection> S3BlobStore::Take() {
  std::lock_guard<std::mutex> l(mu_);
  if (idle_.empty()) return std::make_unique<Connection>();
  auto c = std::move(idle_.back());
  idle_.pop_back();
  return c;
}

void S3BlobStore::Give(std::unique_ptr<Connection> c) {
  std::lock_guard<std::mutex> l(mu_);
  if (idle_.size() < options_.max_idle_connections) idle_.push_back(std::move(c));
}

Result<S3BlobStore::Response> S3BlobStore::SendOnce(Connection& c, const std::string& method,
                                                    const std::string& target,
                                                    const sigv4::Request& sr,
                                                    std::string_view body, bool* reusable) {
  *reusable = false;
  auto timeout = std::chrono::milliseconds(options_.timeout_ms);
  // Runs one asynchronous operation to its end (or its timeout) on the connection's context.
  auto run = [&c](auto&& start) {
    beast::error_code result = asio::error::timed_out;
    start([&result](beast::error_code ec, auto&&...) { result = ec; });
    c.ioc.restart();
    c.ioc.run();
    return result;
  };
  std::string where = options_.host + ":" + options_.port;
  if (!c.connected) {
    asio::ip::tcp::resolver resolver(c.ioc);
    beast::error_code ec;
    auto endpoints = resolver.resolve(options_.host, options_.port, ec);
    if (ec) return Status::Unavailable("S3 endpoint " + where + ": " + ec.message());
    c.stream.expires_after(timeout);
    ec = run([&](auto handler) { c.stream.async_connect(endpoints, handler); });
    if (ec) return Status::Unavailable("S3 endpoint " + where + ": connect: " + ec.message());
    c.connected = true;
  }
  http::request<http::string_body> req{http::string_to_verb(method), target, 11};
  for (const auto& [k, v] : sr.headers) req.set(k, v);
  req.set(http::field::authorization,
          sigv4::Authorization(sr, options_.credentials, sr.headers[1].second, options_.region, "s3"));
  req.keep_alive(true);
  if (method == "PUT" || !body.empty()) {
    req.body() = std::string(body);
    req.prepare_payload();
  }
  c.stream.expires_after(timeout);
  beast::error_code ec = run([&](auto handler) { http::async_write(c.stream, req, handler); });
  if (ec) return Status::Unavailable("S3 " + method + " " + where + ": write: " + ec.message());
  http::response_parser<http::string_body> parser;
  parser.body_limit(std::numeric_limits<std::uint64_t>::max());
  if (method == "HEAD") parser.skip(true);
  c.stream.expires_after(timeout);
  ec = run([&](auto handler) { http::async_read(c.stream, c.buffer, parser, handler); });
  if (ec) return Status::Unavailable("S3 " + method + " " + where + ": read: " + ec.message());
  auto res = parser.release();
  *reusable = res.keep_alive();
  return Response{static_cast<int>(res.result_int()), std::move(res.body())};
}

Result<S3BlobStore::Response> S3BlobStore::Send(
    const std::string& method, const std::string& object,
    const std::vector<std::pair<std::string, std::string>>& query, std::string_view body) {
  std::string path = ObjectPath(object);
  std::string target = path;
  for (size_t i = 0; i < query.size(); ++i) {
    target += (i == 0 ? "?" : "&") + sigv4::UriEncode(query[i].first, false) + "=" +
              sigv4::UriEncode(query[i].second, false);
  }
  std::string host = options_.port == "80" ? options_.host : options_.host + ":" + options_.port;
  std::string payload_sha = sigv4::Sha256Hex(body);
  Status last;
  for (int attempt = 1; attempt <= options_.max_attempts; ++attempt) {
    if (attempt > 1) std::this_thread::sleep_for(std::chrono::milliseconds(100 << (attempt - 2)));
    sigv4::Request sr;
    sr.method = method;
    sr.path = path;
    sr.query = query;
    // headers[1] is x-amz-date (SendOnce signs with it).
    sr.headers = {{"host", host},
                  {"x-amz-date", AmzDate(std::chrono::system_clock::now())},
                  {"x-amz-content-sha256", payload_sha}};
    if (!options_.credentials.session_token.empty()) {
      sr.headers.emplace_back("x-amz-security-token", options_.credentials.session_token);
    }
    sr.payload_sha256 = payload_sha;
    auto conn = Take();
    bool reusable = false;
    auto r = SendOnce(*conn, method, target, sr, body, &reusable);
    if (r.ok() && reusable) Give(std::move(conn));
    if (!r.ok()) {
      last = r.status();  // a network error: a fresh connection next time
      continue;
    }
    if (r->status >= 500 || r->status == 429) {
      last = Status::Unavailable("S3 " + method + " " + path + ": " + S3Error(*r));
      continue;
    }
    return r;
  }
  log::Warn("S3 request failed after retries", {{"method", method},
                                                {"attempts", options_.max_attempts},
                                                {"error", last.ToString()}});
  return last;
}

Status S3BlobStore::Put(const std::string& key, std::string_view bytes) {
  auto r = Send("PUT", options_.prefix + key, {}, bytes);
  if (!r.ok()) return r.status();
  if (r->status != 200) return Status::Unavailable("S3 PUT of a blob: " + S3Error(*r));
  return Status::Ok();
}

Result<std::string> S3BlobStore::Get(const std::string& key) {
  auto r = Send("GET", options_.prefix + key, {}, {});
  if (!r.ok()) return r.status();
  if (r->status == 404) return Status::NotFound("blob not found");
  if (r->status != 200) return Status::Unavailable("S3 GET of a blob: " + S3Error(*r));
  return std::move(r->body);
}

Status S3BlobStore::Delete(const std::string& key) {
  auto r = Send("DELETE", options_.prefix + key, {}, {});
  if (!r.ok()) return r.status();
  // 204 normally; S3 also answers 204 for an absent key, some servers 404: both mean gone.
  if (r->status != 204 && r->status != 200 && r->status != 404) {
    return Status::Unavailable("S3 DELETE of a blob: " + S3Error(*r));
  }
  return Status::Ok();
}

Result<std::vector<BlobEntry>> S3BlobStore::List() {
  std::vector<BlobEntry> out;
  std::string token;
  for (;;) {
    std::vector<std::pair<std::string, std::string>> query = {
        {"list-type", "2"},
        {"max-keys", std::to_string(options_.list_page_size)},
        {"prefix", options_.prefix}};
    if (!token.empty()) query.emplace_back("continuation-token", token);
    auto r = Send("GET", "", query, {});
    if (!r.ok()) return r.status();
    if (r->status != 200) return Status::Unavailable("S3 listing: " + S3Error(*r));
    size_t pos = 0;
    for (;;) {
      size_t a = r->body.find("<Contents>", pos);
      if (a == std::string::npos) break;
      size_t b = r->body.find("</Contents>", a);
      if (b == std::string::npos) break;
      std::string item = r->body.substr(a, b - a);
      auto key = XmlValues(item, "Key");
      auto modified = XmlValues(item, "LastModified");
      if (!key.empty() && key[0].rfind(options_.prefix, 0) == 0) {
        out.push_back({key[0].substr(options_.prefix.size()),
                       modified.empty() ? 0 : ParseIsoTime(modified[0])});
      }
      pos = b;
    }
    auto truncated = XmlValues(r->body, "IsTruncated");
    auto next = XmlValues(r->body, "NextContinuationToken");
    if (truncated.empty() || truncated[0] != "true" || next.empty() || next[0].empty()) break;
    token = next[0];
  }
  return out;
}

}  // namespace lastcall
