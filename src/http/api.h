// lastcall's HTTP API: routing, authentication and the translation between HTTP/JSON and the
// domain. Reads run on the calling (I/O) thread against a read snapshot; writes are units of work
// handed to the store's group commit, answered only after they committed.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "blobs/blob_store.h"
#include "bus/event_bus.h"
#include "bus/replayer.h"
#include "common/clock.h"
#include "common/ids.h"
#include "coordination/driver.h"
#include "http/server.h"
#include "metrics/metrics.h"
#include "receipts/receipts.h"
#include "store/sql.h"

namespace lastcall {

struct ApiConfig {
  std::string jwt_secret;                    // never logged
  uint64_t max_upload_bytes = 20 * 1024 * 1024;
  bool event_publishing = true;              // ENABLE_EVENT_PUBLISHING
  bool serve_metrics = true;                 // GET /metrics here (false: on its own listener)
  // Transactions one file may import (LASTCALL_MAX_IMPORT_ROWS); more is 413. An import is one
  // transaction on the single writer, so this bounds how long one upload holds everyone's writes.
  size_t max_import_rows = 100000;
  // Consumer names a webhook consumer may not take (the in-process consumers and bus targets).
  std::vector<std::string> reserved_consumers;
};

// What the consumer and dead-letter routes act on besides the store.
struct ApiDeps {
  EventReplayer* replayer = nullptr;      // replays an in-process target's dead letter
  std::function<void()> wake_webhooks;    // after a webhook delivery became due (a replay)
};

// The role claim that lets a token read every coordination. stored in tokens: do not rename.
inline constexpr char kOperatorRole[] = "operator";

class Api {
 public:
  Api(Database& db, BlobStore& blobs, Outbox& outbox, CoordinationDriver& coordinator, Clock& clock,
      IdGenerator& ids, Metrics& metrics, const ReceiptKeyring& receipt_keys, ApiConfig config,
      ApiDeps deps = {});
  ~Api();
  // The server's Handler. Thread-safe.
  void Handle(HttpRequest&& req, Respond respond);
  // Answers GET /metrics only (for LASTCALL_METRICS_LISTEN's listener). Thread-safe.
  void HandleMetricsOnly(HttpRequest&& req, Respond respond);

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace lastcall
