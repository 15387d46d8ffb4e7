// Configuration from the environment, validated at start: a bad value stops the service with a
// message naming the variable. The seed's names (ENABLE_EVENT_PUBLISHING,
// COORDINATION_TIMEOUT_MINUTES, EXPECTED_CONSUMERS) are kept as they are.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"
#include "consumers/faults.h"

namespace lastcall {

struct Config {
  std::string data_dir = "var";               // LASTCALL_DATA_DIR
  std::string listen_address = "127.0.0.1";   // LASTCALL_LISTEN host
  unsigned short listen_port = 8080;          // LASTCALL_LISTEN port
  std::optional<std::string> metrics_address;  // LASTCALL_METRICS_LISTEN host (unset: /metrics on the API)
  unsigned short metrics_port = 0;            // LASTCALL_METRICS_LISTEN port
  std::optional<std::string> jwt_secret;      // LASTCALL_JWT_SECRET (never logged)
  uint64_t max_upload_bytes = 20ull * 1024 * 1024;  // LASTCALL_MAX_UPLOAD_BYTES
  int64_t max_import_rows = 100000;           // LASTCALL_MAX_IMPORT_ROWS
  bool event_publishing = true;               // ENABLE_EVENT_PUBLISHING
  int64_t coordination_timeout_ms = 5 * 60 * 1000;  // COORDINATION_TIMEOUT_MINUTES
  int64_t deletion_grace_ms = 0;              // DELETION_GRACE_MINUTES (cancel window)
  std::vector<std::string> expected_consumers = {"analytics_consumer", "categorization_consumer"};
  std::string sqlite_synchronous = "FULL";    // LASTCALL_SQLITE_SYNCHRONOUS: FULL or NORMAL
  int sqlite_cache_mib = 64;                  // LASTCALL_SQLITE_CACHE_MIB: the writer's page cache
  // LASTCALL_SQLITE_MEMORY_MIB: all of SQLite's memory together (store/sqlite/sqlite_memory.h);
  // 0 means no bound. Unset: SqliteMemoryMibDefault(sqlite_cache_mib).
  int sqlite_memory_mib = 0;
  std::optional<std::string> database_url;   // LASTCALL_DATABASE_URL: PostgreSQL instead of SQLite
                                              // (may hold a password: never logged)
  // LASTCALL_DATABASE_WRITERS: PostgreSQL writer connections (PostgresOptions::writers). Unset:
  // kDefaultDatabaseWriters with the NATS bus, else 1 (the in-process bus needs one writer).
  int database_writers = 1;
  static constexpr int kDefaultDatabaseWriters = 4;
  int http_threads = 2;                       // LASTCALL_HTTP_THREADS
  int http_read_timeout_seconds = 30;         // LASTCALL_HTTP_READ_TIMEOUT_SECONDS
  int64_t http_max_connections = 1024;        // LASTCALL_HTTP_MAX_CONNECTIONS (capped by the fd limit)
  std::string log_level = "info";             // LASTCALL_LOG_LEVEL: debug, info, warn, error
  std::string receipt_key_file;               // LASTCALL_RECEIPT_KEY_FILE ("": the data folder's key)
  int64_t test_deletion_delay_ms = 0;         // LASTCALL_TEST_DELETION_DELAY_MS (fault injection)
  std::vector<ConsumerFault> test_consumer_faults;  // LASTCALL_TEST_CONSUMER_FAULTS (fault injection)
  // Scale-out event bus (unset: the in-process bus). May carry credentials: never logged whole.
  std::optional<std::string> nats_url;        // LASTCALL_NATS_URL nats://host:port[,nats://...]
  int nats_replicas = 1;                      // LASTCALL_NATS_REPLICAS (stream and consumers)
  std::string nats_stream = "LASTCALL_EVENTS";  // LASTCALL_NATS_STREAM
  std::string nats_subject_prefix = "lastcall.events";  // LASTCALL_NATS_SUBJECT_PREFIX (+ .<type>)
  int64_t nats_ack_wait_ms = 30000;           // LASTCALL_NATS_ACK_WAIT_MS
  int64_t nats_republish_after_ms = 120000;   // LASTCALL_NATS_REPUBLISH_AFTER_MS
  // Scale-out blob store (unset: the data folder's blobs/).
  std::optional<std::string> blob_url;        // LASTCALL_BLOB_URL s3://bucket?endpoint=http://h:p&region=r
  std::string aws_access_key_id;              // AWS_ACCESS_KEY_ID (with LASTCALL_BLOB_URL)
  std::string aws_secret_access_key;          // AWS_SECRET_ACCESS_KEY (never logged)
  std::string aws_session_token;              // AWS_SESSION_TOKEN (optional, never logged)
  int64_t blob_sweep_grace_ms = 3600000;      // orphans younger than this are left (shared bucket)
  int64_t optional_grace_ms = 30 * 1000;      // OPTIONAL_GRACE_SECONDS
  int webhook_max_attempts = 8;               // LASTCALL_WEBHOOK_MAX_ATTEMPTS
  int64_t webhook_backoff_base_ms = 1000;     // LASTCALL_WEBHOOK_BACKOFF_BASE_MS
  int64_t webhook_backoff_cap_ms = 60000;     // LASTCALL_WEBHOOK_BACKOFF_CAP_MS
  int64_t webhook_timeout_ms = 10000;         // LASTCALL_WEBHOOK_TIMEOUT_MS
  int webhook_workers = 4;                    // LASTCALL_WEBHOOK_WORKERS
  // Retention of the bus's bookkeeping (bus/retention.h).
  int64_t outbox_retention_ms = 60000;        // LASTCALL_OUTBOX_RETENTION_SECONDS
  int64_t prune_interval_ms = 5000;           // LASTCALL_PRUNE_INTERVAL_SECONDS
  int prune_batch = 500;                      // LASTCALL_PRUNE_BATCH

  std::string db_path() const { return data_dir + "/lastcall.db"; }
  std::string blob_dir() const { return data_dir + "/blobs"; }
  std::string secret_path() const { return data_dir + "/jwt_secret"; }
  std::string receipt_key_dir() const { return data_dir + "/receipt_keys"; }
};

// The SQLite memory budget when LASTCALL_SQLITE_MEMORY_MIB is unset: a quarter of the writer's
// cache size, at least 8 MiB (16 MiB with the default 64 MiB cache). The writer's cache_size still
// bounds what one group commit holds before it spills to the WAL; the budget bounds the clean pages
// every cache keeps together (docs/operations.md).
int SqliteMemoryMibDefault(int sqlite_cache_mib);

// Reads the variables through getenv (a function so tests can pass a map). Errors:
// kInvalidArgument "invalid_config" whose message names the variable and the accepted values.
using GetEnv = std::function<std::optional<std::string>(const std::string&)>;
Result<Config> LoadConfig(const GetEnv& getenv);
std::optional<std::string> ProcessEnv(const std::string& name);

// The JWT secret: LASTCALL_JWT_SECRET when set; else the secret file in the data folder, created
// with 32 random bytes (hex) and mode 0600 when it does not exist yet. *created tells whether this
// call made it.
Result<std::string> ResolveJwtSecret(const Config& config, bool* created);

}  // namespace lastcall
