#include "app/config.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "blobs/s3/s3_blob_store.h"
#include "bus/nats/nats_bus.h"
#include "common/ids.h"
#include "domain/consumer_name.h"
#include "store/postgres/postgres_database.h"

namespace lastcall {
namespace {

Status Bad(const std::string& var, const std::string& what) {
  return Status::Invalid("invalid_config", var + ": " + what);
}

std::string Trim(const std::string& s) {
  size_t a = s.find_first_not_of(" \t");
  if (a == std::string::npos) return "";
  size_t b = s.find_last_not_of(" \t");
  return s.substr(a, b - a + 1);
}

std::string Lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

bool ParseInt(const std::string& s, int64_t lo, int64_t hi, int64_t* out) {
  if (s.empty()) return false;
  char* end = nullptr;
  errno = 0;
  long long v = std::strtoll(s.c_str(), &end, 10);
  if (errno != 0 || *end != '\0' || v < lo || v > hi) return false;
  *out = v;
  return true;
}

// A number of minutes, 0 (when allow_zero) or more than 0, at most a week; fractions allowed.
bool ParseMinutes(const std::string& raw, bool allow_zero, double* out) {
  std::string s = Trim(raw);
  char* end = nullptr;
  errno = 0;
  double minutes = s.empty() ? NAN : std::strtod(s.c_str(), &end);
  if (s.empty() || errno != 0 || *end != '\0' || !std::isfinite(minutes) || minutes < 0 ||
      (minutes == 0 && !allow_zero) || minutes > 7 * 24 * 60) {
    return false;
  }
  *out = minutes;
  return true;
}

}  // namespace

std::optional<std::string> ProcessEnv(const std::string& name) {
  const char* v = std::getenv(name.c_str());
  if (!v) return std::nullopt;
  return std::string(v);
}

Result<Config> LoadConfig(const GetEnv& getenv) {
  Config c;
  if (auto v = getenv("LASTCALL_DATA_DIR")) {
    if (v->empty()) return Bad("LASTCALL_DATA_DIR", "must not be empty");
    c.data_dir = *v;
  }
  for (const char* var : {"LASTCALL_LISTEN", "LASTCALL_METRICS_LISTEN"}) {
    auto v = getenv(var);
    if (!v) continue;
    size_t colon = v->rfind(':');
    int64_t port = 0;
    if (colon == std::string::npos || colon == 0 || !ParseInt(v->substr(colon + 1), 0, 65535, &port)) {
      return Bad(var, "must be host:port, e.g. 127.0.0.1:8080");
    }
    std::string host = v->substr(0, colon);
    if (host.size() > 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
    if (host == "localhost") host = "127.0.0.1";
    if (std::string(var) == "LASTCALL_LISTEN") {
      c.listen_address = host;
      c.listen_port = static_cast<unsigned short>(port);
    } else {
      c.metrics_address = host;
      c.metrics_port = static_cast<unsigned short>(port);
    }
  }
  if (auto v = getenv("LASTCALL_JWT_SECRET")) {
    if (v->size() < 16) return Bad("LASTCALL_JWT_SECRET", "must be at least 16 characters");
    c.jwt_secret = *v;
  }
  if (auto v = getenv("LASTCALL_MAX_UPLOAD_BYTES")) {
    int64_t n = 0;
    if (!ParseInt(Trim(*v), 1, int64_t{1} << 30, &n)) {
      return Bad("LASTCALL_MAX_UPLOAD_BYTES", "must be a whole number of bytes from 1 to 1073741824");
    }
    c.max_upload_bytes = static_cast<uint64_t>(n);
  }
  if (auto v = getenv("ENABLE_EVENT_PUBLISHING")) {
    std::string s = Lower(Trim(*v));
    if (s == "true" || s == "1" || s == "yes" || s == "on") {
      c.event_publishing = true;
    } else if (s == "false" || s == "0" || s == "no" || s == "off") {
      c.event_publishing = false;
    } else {
      return Bad("ENABLE_EVENT_PUBLISHING", "must be true or false, got \"" + *v + "\"");
    }
  }
  if (auto v = getenv("COORDINATION_TIMEOUT_MINUTES")) {
    double minutes = 0;
    if (!ParseMinutes(*v, /*allow_zero=*/false, &minutes)) {
      return Bad("COORDINATION_TIMEOUT_MINUTES",
                 "must be a number of minutes greater than 0 and at most 10080 (fractions such as "
                 "0.02 allowed), got \"" + *v + "\"");
    }
    c.coordination_timeout_ms = std::max<int64_t>(1, std::llround(minutes * 60000.0));
  }
  if (auto v = getenv("DELETION_GRACE_MINUTES")) {
    double minutes = 0;
    if (!ParseMinutes(*v, /*allow_zero=*/true, &minutes)) {
      return Bad("DELETION_GRACE_MINUTES",
                 "must be a number of minutes from 0 to 10080 (fractions such as 0.02 allowed), "
                 "got \"" + *v + "\"");
    }
    c.deletion_grace_ms = std::llround(minutes * 60000.0);
  }
  if (auto v = getenv("EXPECTED_CONSUMERS")) {
    c.expected_consumers.clear();
    std::string s = *v;
    size_t start = 0;
    while (start <= s.size()) {
      size_t comma = s.find(',', start);
      if (comma == std::string::npos) comma = s.size();
      std::string name = Trim(s.substr(start, comma - start));
      if (!name.empty()) {
        if (!IsConsumerName(name)) {
          return Bad("EXPECTED_CONSUMERS", "consumer names are 1-64 characters of a-z, 0-9, _ and -; got \"" + name + "\"");
        }
        if (std::find(c.expected_consumers.begin(), c.expected_consumers.end(), name) ==
            c.expected_consumers.end()) {
          c.expected_consumers.push_back(name);
        }
      }
      start = comma + 1;
    }
  }
  if (auto v = getenv("LASTCALL_SQLITE_SYNCHRONOUS")) {
    std::string s = Trim(*v);
    for (char& ch : s) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
    if (s != "FULL" && s != "NORMAL") return Bad("LASTCALL_SQLITE_SYNCHRONOUS", "must be FULL or NORMAL");
    c.sqlite_synchronous = s;
  }
  if (auto v = getenv("LASTCALL_DATABASE_URL")) {
    // Unset or empty: the embedded SQLite file. Never echo the value: it may hold a password.
    std::string s = Trim(*v);
    if (!s.empty()) {
      if (s.rfind("postgresql://", 0) != 0 && s.rfind("postgres://", 0) != 0) {
        return Bad("LASTCALL_DATABASE_URL",
                   "must be a PostgreSQL URL, postgresql://user:password@host:port/database");
      }
      c.database_url = s;
    }
  }
  if (auto v = getenv("LASTCALL_HTTP_THREADS")) {
    int64_t n = 0;
    if (!ParseInt(Trim(*v), 1, 256, &n)) return Bad("LASTCALL_HTTP_THREADS", "must be 1 to 256");
    c.http_threads = static_cast<int>(n);
  }
  if (auto v = getenv("LASTCALL_MAX_IMPORT_ROWS")) {
    int64_t n = 0;
    if (!ParseInt(Trim(*v), 1, 1000000, &n)) return Bad("LASTCALL_MAX_IMPORT_ROWS", "must be 1 to 1000000");
    c.max_import_rows = n;
  }
  if (auto v = getenv("LASTCALL_HTTP_READ_TIMEOUT_SECONDS")) {
    int64_t n = 0;
    if (!ParseInt(Trim(*v), 1, 3600, &n)) {
      return Bad("LASTCALL_HTTP_READ_TIMEOUT_SECONDS", "must be 1 to 3600");
    }
    c.http_read_timeout_seconds = static_cast<int>(n);
  }
  if (auto v = getenv("LASTCALL_HTTP_MAX_CONNECTIONS")) {
    int64_t n = 0;
    if (!ParseInt(Trim(*v), 1, 1000000, &n)) {
      return Bad("LASTCALL_HTTP_MAX_CONNECTIONS", "must be 1 to 1000000");
    }
    c.http_max_connections = n;
  }
  if (auto v = getenv("LASTCALL_LOG_LEVEL")) {
    std::string s = Lower(Trim(*v));
    if (s != "debug" && s != "info" && s != "warn" && s != "error") {
      return Bad("LASTCALL_LOG_LEVEL", "must be debug, info, warn or error");
    }
    c.log_level = s;
  }
  if (auto v = getenv("LASTCALL_RECEIPT_KEY_FILE")) {
    if (v->empty()) return Bad("LASTCALL_RECEIPT_KEY_FILE", "must be the path of a PEM file");
    c.receipt_key_file = *v;
  }
  if (auto v = getenv("LASTCALL_TEST_DELETION_DELAY_MS")) {
    int64_t n = 0;
    if (!ParseInt(Trim(*v), 0, 600000, &n)) {
      return Bad("LASTCALL_TEST_DELETION_DELAY_MS", "must be 0 to 600000");
    }
    c.test_deletion_delay_ms = n;
  }
  if (auto v = getenv("LASTCALL_TEST_CONSUMER_FAULTS")) {
    auto faults = ParseConsumerFaults(*v, {"analytics_consumer", "categorization_consumer"});
    if (!faults.ok()) return Bad("LASTCALL_TEST_CONSUMER_FAULTS", faults.status().message());
    c.test_consumer_faults = std::move(faults).value();
  }
  if (auto v = getenv("LASTCALL_NATS_URL")) {
    std::string s = Trim(*v);
    for (const std::string& one : SplitNatsUrls(s)) {
      bool scheme_ok = one.rfind("nats://", 0) == 0 || one.rfind("tls://", 0) == 0;
      if (!scheme_ok || one.size() <= one.find("://") + 3) {
        return Bad("LASTCALL_NATS_URL",
                   "must be nats://host:port (or tls://), several separated by commas");
      }
    }
    c.nats_url = s;
  }
  auto name_chars = [](const std::string& n, bool dots) {
    if (n.empty() || n.size() > 64 || n.front() == '.' || n.back() == '.') return false;
    for (size_t i = 0; i < n.size(); ++i) {
      char ch = n[i];
      bool ok = std::isalnum(static_cast<unsigned char>(ch)) || ch == '_' || ch == '-' ||
                (dots && ch == '.' && n[i - 1] != '.');
      if (!ok) return false;
    }
    return true;
  };
  if (auto v = getenv("LASTCALL_NATS_STREAM")) {
    if (!name_chars(Trim(*v), false)) {
      return Bad("LASTCALL_NATS_STREAM", "must be 1-64 characters of A-Z, a-z, 0-9, _ and -");
    }
    c.nats_stream = Trim(*v);
  }
  if (auto v = getenv("LASTCALL_NATS_SUBJECT_PREFIX")) {
    if (!name_chars(Trim(*v), true)) {
      return Bad("LASTCALL_NATS_SUBJECT_PREFIX",
                 "must be subject tokens (A-Z, a-z, 0-9, _ and -) separated by single dots, e.g. lastcall.events");
    }
    c.nats_subject_prefix = Trim(*v);
  }
  if (auto v = getenv("LASTCALL_NATS_REPLICAS")) {
    int64_t n = 0;
    if (!ParseInt(Trim(*v), 1, 5, &n)) return Bad("LASTCALL_NATS_REPLICAS", "must be 1 to 5");
    c.nats_replicas = static_cast<int>(n);
  }
  if (auto v = getenv("LASTCALL_NATS_ACK_WAIT_MS")) {
    if (!ParseInt(Trim(*v), 100, 3600000, &c.nats_ack_wait_ms)) {
      return Bad("LASTCALL_NATS_ACK_WAIT_MS", "must be 100 to 3600000 milliseconds");
    }
  }
  if (auto v = getenv("LASTCALL_NATS_REPUBLISH_AFTER_MS")) {
    if (!ParseInt(Trim(*v), 100, 86400000, &c.nats_republish_after_ms)) {
      return Bad("LASTCALL_NATS_REPUBLISH_AFTER_MS", "must be 100 to 86400000 milliseconds");
    }
  }
  if (auto v = getenv("LASTCALL_BLOB_URL")) {
    auto parsed = ParseS3Url(Trim(*v));
    if (!parsed.ok()) return parsed.status();
    c.blob_url = Trim(*v);
    c.aws_access_key_id = getenv("AWS_ACCESS_KEY_ID").value_or("");
    c.aws_secret_access_key = getenv("AWS_SECRET_ACCESS_KEY").value_or("");
    c.aws_session_token = getenv("AWS_SESSION_TOKEN").value_or("");
    if (c.aws_access_key_id.empty() || c.aws_secret_access_key.empty()) {
      return Bad("LASTCALL_BLOB_URL", "needs AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY set");
    }
  }
  if (auto v = getenv("LASTCALL_DATABASE_WRITERS")) {
    int64_t n = 0;
    if (!ParseInt(Trim(*v), 1, PostgresOptions::kMaxWriters, &n)) {
      return Bad("LASTCALL_DATABASE_WRITERS", "must be a whole number from 1 to " +
                                                  std::to_string(PostgresOptions::kMaxWriters) +
                                                  ", got \"" + *v + "\"");
    }
    if (!c.database_url) {
      return Bad("LASTCALL_DATABASE_WRITERS",
                 "needs LASTCALL_DATABASE_URL: SQLite has one writer");
    }
    if (n > 1 && !c.nats_url) {
      return Bad("LASTCALL_DATABASE_WRITERS",
                 "more than 1 needs LASTCALL_NATS_URL: the in-process bus delivers in the order "
                 "of one writer's commits");
    }
    c.database_writers = static_cast<int>(n);
  } else if (c.database_url && c.nats_url) {
    c.database_writers = Config::kDefaultDatabaseWriters;
  }
  if (auto v = getenv("OPTIONAL_GRACE_SECONDS")) {
    std::string s = Trim(*v);
    char* end = nullptr;
    errno = 0;
    double seconds = s.empty() ? NAN : std::strtod(s.c_str(), &end);
    if (s.empty() || errno != 0 || *end != '\0' || !std::isfinite(seconds) || seconds < 0 ||
        seconds > 24 * 3600) {
      return Bad("OPTIONAL_GRACE_SECONDS",
                 "must be a number of seconds from 0 to 86400 (fractions allowed), got \"" + *v + "\"");
    }
    c.optional_grace_ms = std::llround(seconds * 1000.0);
  }
  struct IntVar {
    const char* name;
    int64_t lo, hi;
    int64_t* out;
  };
  int64_t attempts = c.webhook_max_attempts, workers = c.webhook_workers;
  int64_t retention_s = c.outbox_retention_ms / 1000, prune_interval_s = c.prune_interval_ms / 1000;
  int64_t prune_batch = c.prune_batch, cache_mib = c.sqlite_cache_mib, memory_mib = -1;
  for (const IntVar& iv : {IntVar{"LASTCALL_OUTBOX_RETENTION_SECONDS", 0, 366 * 86400, &retention_s},
                           IntVar{"LASTCALL_PRUNE_INTERVAL_SECONDS", 1, 86400, &prune_interval_s},
                           IntVar{"LASTCALL_PRUNE_BATCH", 1, 10000, &prune_batch},
                           IntVar{"LASTCALL_SQLITE_CACHE_MIB", 1, 4096, &cache_mib},
                           IntVar{"LASTCALL_SQLITE_MEMORY_MIB", 0, 65536, &memory_mib},
                           IntVar{"LASTCALL_WEBHOOK_MAX_ATTEMPTS", 1, 100, &attempts},
                           IntVar{"LASTCALL_WEBHOOK_BACKOFF_BASE_MS", 1, 3600000, &c.webhook_backoff_base_ms},
                           IntVar{"LASTCALL_WEBHOOK_BACKOFF_CAP_MS", 1, 86400000, &c.webhook_backoff_cap_ms},
                           IntVar{"LASTCALL_WEBHOOK_TIMEOUT_MS", 10, 600000, &c.webhook_timeout_ms},
                           IntVar{"LASTCALL_WEBHOOK_WORKERS", 1, 64, &workers}}) {
    auto v = getenv(iv.name);
    if (!v) continue;
    if (!ParseInt(Trim(*v), iv.lo, iv.hi, iv.out)) {
      return Bad(iv.name, "must be a whole number from " + std::to_string(iv.lo) + " to " +
                              std::to_string(iv.hi) + ", got \"" + *v + "\"");
    }
  }
  c.outbox_retention_ms = retention_s * 1000;
  c.prune_interval_ms = prune_interval_s * 1000;
  c.prune_batch = static_cast<int>(prune_batch);
  c.sqlite_cache_mib = static_cast<int>(cache_mib);
  c.sqlite_memory_mib =
      memory_mib < 0 ? SqliteMemoryMibDefault(c.sqlite_cache_mib) : static_cast<int>(memory_mib);
  c.webhook_max_attempts = static_cast<int>(attempts);
  c.webhook_workers = static_cast<int>(workers);
  if (c.webhook_backoff_cap_ms < c.webhook_backoff_base_ms) {
    return Bad("LASTCALL_WEBHOOK_BACKOFF_CAP_MS", "must be at least LASTCALL_WEBHOOK_BACKOFF_BASE_MS");
  }
  return c;
}

int SqliteMemoryMibDefault(int sqlite_cache_mib) { return std::max(8, sqlite_cache_mib / 4); }

Result<std::string> ResolveJwtSecret(const Config& config, bool* created) {
  *created = false;
  if (config.jwt_secret) return *config.jwt_secret;
  std::string path = config.secret_path();
  std::ifstream in(path);
  if (in) {
    std::string secret;
    std::getline(in, secret);
    secret = Trim(secret);
    if (secret.size() < 16) return Status::Invalid("invalid_config", "the secret file " + path + " is too short");
    return secret;
  }
  std::error_code ec;
  std::filesystem::create_directories(config.data_dir, ec);
  std::string secret = RandomHex(32);
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) return Status::Unavailable("cannot create " + path + ": " + std::strerror(errno));
  std::string line = secret + "\n";
  bool ok = ::write(fd, line.data(), line.size()) == static_cast<ssize_t>(line.size()) && ::fsync(fd) == 0;
  ::close(fd);
  if (!ok) return Status::Unavailable("cannot write " + path);
  *created = true;
  return secret;
}

}  // namespace lastcall
