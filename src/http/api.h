// lastcall's HTTP API: routing, authentication and the translation between HTTP/JSON and the
// domain. Reads run on the calling (I/O) thread against a read snapshot; writes are units of work
// handed to the store's group commit, answered only after they committed.
#pragma once

#include <memory>
#include <string>

#include "blobs/blob_store.h"
#include "bus/event_bus.h"
#include "common/clock.h"
#include "common/ids.h"
#include "coordination/driver.h"
#include "http/server.h"
#include "store/sql.h"

namespace lastcall {

struct ApiConfig {
  std::string jwt_secret;                    // never logged
  uint64_t max_upload_bytes = 20 * 1024 * 1024;
  bool event_publishing = true;              // ENABLE_EVENT_PUBLISHING
};

class Api {
 public:
  Api(Database& db, BlobStore& blobs, Outbox& outbox, CoordinationDriver& coordinator, Clock& clock,
      IdGenerator& ids, ApiConfig config);
  ~Api();
  // The server's Handler. Thread-safe.
  void Handle(HttpRequest&& req, Respond respond);

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace lastcall
