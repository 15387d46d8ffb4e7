#include "app/app.h"

#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>

#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <thread>

#include "blobs/blob_store.h"
#include "blobs/s3/s3_blob_store.h"
#include "bus/in_process_bus.h"
#include "bus/nats/nats_bus.h"
#include "bus/retention.h"
#include "common/log.h"
#include "consumers/analytics_consumer.h"
#include "consumers/categorization_consumer.h"
#include "coordination/driver.h"
#include "http/api.h"
#include "http/server.h"
#include "receipts/receipts.h"
#include "store/repos.h"
#include "store/schema.h"
#include "store/postgres/postgres_database.h"
#include "store/sqlite/sqlite_database.h"
#include "store/sqlite/sqlite_memory.h"
#include "webhooks/consumer_repo.h"
#include "webhooks/delivery.h"

namespace lastcall {

Result<int> SweepOrphanBlobs(Database& db, BlobStore& blobs, WallMillis written_before) {
  auto entries = blobs.List();
  if (!entries.ok()) return entries.status();
  int removed = 0;
  for (const auto& entry : *entries) {
    // Younger objects may belong to an upload whose row has not committed yet (on this node or,
    // with a shared bucket, on another).
    if (entry.modified_at >= written_before) continue;
    bool referenced = true;
    Status st = db.Read([&](SqlTx& tx) {
      auto r = BlobReferenced(tx, entry.key);
      if (!r.ok()) return r.status();
      referenced = *r;
      return Status::Ok();
    });
    if (!st.ok()) return st;
    if (referenced) continue;
    LASTCALL_RETURN_IF_ERROR(blobs.Delete(entry.key));
    ++removed;
  }
  return removed;
}

namespace {

// The store the configuration names: PostgreSQL when LASTCALL_DATABASE_URL is set, else the
// SQLite file in the data folder.
Result<std::unique_ptr<Database>> OpenDatabase(const Config& config) {
  if (config.database_url) {
    PostgresOptions pg_options;
    pg_options.url = *config.database_url;
    pg_options.writers = config.database_writers;
    auto pg = PostgresDatabase::Open(pg_options);
    if (!pg.ok()) return pg.status();
    log::Info("database: PostgreSQL", {{"url", RedactDatabaseUrl(*config.database_url)},
                                       {"writers", pg_options.writers}});
    return std::unique_ptr<Database>(std::move(pg).value());
  }
  // Before the first connection: one budget for every connection's page cache together.
  LASTCALL_RETURN_IF_ERROR(SetSqliteMemoryBudget(int64_t{config.sqlite_memory_mib} * 1024 * 1024));
  SqliteOptions lite_options;
  lite_options.path = config.db_path();
  lite_options.synchronous = config.sqlite_synchronous;
  lite_options.cache_mib = config.sqlite_cache_mib;
  auto lite = SqliteDatabase::Open(lite_options);
  if (!lite.ok()) return lite.status();
  return std::unique_ptr<Database>(std::move(lite).value());
}

log::Level ParseLevel(const std::string& s) {
  if (s == "debug") return log::Level::kDebug;
  if (s == "warn") return log::Level::kWarn;
  if (s == "error") return log::Level::kError;
  return log::Level::kInfo;
}

// The number of HTTP connections the process can hold: `wanted`, unless the file-descriptor
// limit is lower; then that limit minus room for the database, the blobs and the listeners. The
// soft limit is first raised towards the hard one when that would make room.
size_t ConnectionLimit(int64_t wanted) {
  constexpr rlim_t kReserve = 64;
  const rlim_t need = static_cast<rlim_t>(wanted) + kReserve;
  struct rlimit rl {};
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return static_cast<size_t>(wanted);
  if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < need) {
    struct rlimit raised = rl;
    raised.rlim_cur = (rl.rlim_max == RLIM_INFINITY || rl.rlim_max >= need) ? need : rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &raised) == 0) rl.rlim_cur = raised.rlim_cur;
  }
  if (rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur >= need) return static_cast<size_t>(wanted);
  return static_cast<size_t>(rl.rlim_cur > 2 * kReserve ? rl.rlim_cur - kReserve : rl.rlim_cur / 2);
}

}  // namespace

std::vector<Rule> ServiceRules() {
  return {
      {"file-uploads", {{kFileUploaded}, {kApiSource}}, {kAnalyticsConsumer, kCategorizationConsumer}},
      {"file-deletion-requests",
       {{kFileDeleteRequested}, {kApiSource}},
       {kFileDeletionConsumer, kAnalyticsConsumer, kCategorizationConsumer}},
      {"file-deletion-cancels", {{kFileDeleteCancelled}, {kCoordinatorSource}}, {kAnalyticsConsumer}},
      {"file-deletion-vetoes", {{kFileDeleteVetoed}, {kCoordinatorSource}}, {kAnalyticsConsumer}},
      {"consumer-completions", {{kConsumerCompletion}, {kConsumerSourcePrefix}}, {kFileDeletionConsumer}},
      // Webhook consumers: the target records one delivery per expected webhook consumer.
      {"webhook-consumers", {{kFileDeleteRequested}, {kApiSource}}, {kWebhookTarget}},
      {"webhook-consumer-undos", {{kFileDeleteCancelled, kFileDeleteVetoed}, {kCoordinatorSource}},
       {kWebhookTarget}},
  };
}

int RunServe(const Config& config) {
  log::SetLevel(ParseLevel(config.log_level));
  // Everything lastcall writes (database, blobs, secret) is for its own user only.
  ::umask(0077);
  std::error_code ec;
  std::filesystem::create_directories(config.data_dir, ec);
  if (ec) {
    log::Error("cannot create the data folder", {{"dataDir", config.data_dir}, {"error", ec.message()}});
    return 1;
  }
  bool created = false;
  auto secret = ResolveJwtSecret(config, &created);
  if (!secret.ok()) {
    log::Error("no JWT secret", {{"error", secret.status().message()}});
    return 1;
  }
  if (created) {
    log::Info("created a random JWT secret (mode 0600); `lastcall token` signs with it",
              {{"path", config.secret_path()}});
  } else if (!config.jwt_secret) {
    log::Info("using the JWT secret file", {{"path", config.secret_path()}});
  }

  bool key_created = false;
  auto receipt_keys = LoadReceiptKeys(config.receipt_key_dir(), config.receipt_key_file, &key_created);
  if (!receipt_keys.ok()) {
    log::Error("no receipt signing key", {{"error", receipt_keys.status().message()}});
    return 1;
  }
  log::Info(key_created ? "created a receipt signing key (Ed25519, mode 0600)"
                        : "using the receipt signing key",
            {{"kid", receipt_keys->signing->kid()},
             {"path", config.receipt_key_file.empty() ? config.receipt_key_dir() + "/signing.pem"
                                                      : config.receipt_key_file},
             {"retiredKeys", receipt_keys->retired.size()}});

  auto db = OpenDatabase(config);
  if (!db.ok()) {
    log::Error("cannot open the database", {{"error", db.status().message()}});
    return 1;
  }
  if (Status st = Migrate(**db); !st.ok()) {
    log::Error("schema migration failed", {{"error", st.message()}});
    return 1;
  }
  std::unique_ptr<BlobStore> blob_owner;
  // Objects written before this are candidates for the orphan sweep (see SweepOrphanBlobs).
  WallMillis sweep_before = SystemClock().Now();
  if (config.blob_url) {
    auto options = ParseS3Url(*config.blob_url);
    if (!options.ok()) {
      log::Error("invalid blob store URL", {{"error", options.status().message()}});
      return 1;
    }
    options->credentials = {config.aws_access_key_id, config.aws_secret_access_key,
                            config.aws_session_token};
    auto s3 = S3BlobStore::Open(*options);
    if (!s3.ok()) {
      log::Error("cannot open the S3 blob store", {{"error", s3.status().message()}});
      return 1;
    }
    log::Info("blob store: S3", {{"bucket", options->bucket},
                                 {"endpoint", options->host + ":" + options->port},
                                 {"prefix", options->prefix}});
    blob_owner = std::move(*s3);
    sweep_before -= config.blob_sweep_grace_ms;
  } else {
    auto fs_blobs = FsBlobStore::Open(config.blob_dir());
    if (!fs_blobs.ok()) {
      log::Error("cannot open the blob folder", {{"error", fs_blobs.status().message()}});
      return 1;
    }
    blob_owner = std::move(*fs_blobs);
    sweep_before += 1;  // this process owns the folder: nothing is in flight yet
  }
  BlobStore* blobs = blob_owner.get();
  // The sweep is only safe while no other node shares the database (its uploads in flight have
  // blobs without file rows yet); with others running it waits for a start when they do not.
  bool solo = true;
  if (Status st = (*db)->WriteSyncInSession([&solo](SqlTx& tx) -> Status {
        auto r = BeginSoloStart(tx);
        if (!r.ok()) return r.status();
        solo = *r;
        return Status::Ok();
      });
      !st.ok()) {
    log::Error("cannot register this node in the database", {{"error", st.message()}});
    return 1;
  }
  if (solo) {
    auto swept = SweepOrphanBlobs(**db, *blobs, sweep_before);
    if (!swept.ok()) {
      log::Error("orphan blob sweep failed", {{"error", swept.status().message()}});
      return 1;
    }
    if (*swept > 0) log::Info("removed blobs no file references", {{"count", *swept}});
    if (Status st = (*db)->WriteSyncInSession([](SqlTx& tx) { return EndSoloStart(tx); });
        !st.ok()) {
      log::Error("cannot register this node in the database", {{"error", st.message()}});
      return 1;
    }
  } else {
    log::Info("orphan blob sweep skipped: other nodes share the database");
  }

  SystemClock clock;
  RandomIdGenerator ids;
  Metrics metrics;
  std::unique_ptr<EventBus> bus_owner;
  if (config.nats_url) {
    NatsBusOptions no;
    no.url = *config.nats_url;
    no.replicas = config.nats_replicas;
    no.stream = config.nats_stream;
    {
      // Stable across restarts of this node (it takes its relay lease back at once after a
      // crash), distinct between nodes: host name and data folder.
      char host[256] = {0};
      ::gethostname(host, sizeof(host) - 1);
      std::error_code abs_ec;
      no.node_id = std::string(host) + ":" +
                   std::filesystem::absolute(config.data_dir, abs_ec).string();
    }
    no.subject_prefix = config.nats_subject_prefix + ".";
    no.ack_wait_ms = config.nats_ack_wait_ms;
    no.republish_after_ms = config.nats_republish_after_ms;
    // A republish of a message the stream still holds is dropped inside the window (no extra
    // copy); one the stream lost is stored again (its id left the window with it).
    no.duplicate_window_ms = std::min<int64_t>(120000, no.republish_after_ms);
    bus_owner = std::make_unique<NatsBus>(**db, clock, ids, metrics, no);
  } else {
    bus_owner = std::make_unique<InProcessBus>(**db, clock, ids, metrics);
  }
  EventBus& bus = *bus_owner;
  metrics.SetBacklogSource([&bus](SqlTx& tx, const std::string& target) { return bus.Backlog(tx, target); });
  Outbox outbox(metrics, [&bus] { bus.Notify(); });
  CoordinatorConfig cc;
  cc.expected_consumers = config.expected_consumers;
  cc.timeout_ms = config.coordination_timeout_ms;
  cc.grace_ms = config.deletion_grace_ms;
  cc.test_deletion_delay_ms = config.test_deletion_delay_ms;
  // With several writers the driver's steps, one unit each, run on all of them at once.
  cc.inline_deletion = config.database_writers == 1;
  cc.optional_grace_ms = config.optional_grace_ms;
  cc.more_consumers = [](SqlTx& tx, WallMillis now) { return HealthyConsumerPolicies(tx, now); };
  cc.may_veto = [](SqlTx& tx, const std::string& name) -> Result<bool> {
    auto c = FindWebhookConsumer(tx, name);
    if (!c.ok()) return c.status();
    return *c && (*c)->can_veto;
  };
  CoordinationDriver driver(**db, *blobs, outbox, clock, ids, metrics, cc);
  ConsumerFaults faults(config.test_consumer_faults);
  if (!faults.empty()) {
    log::Warn("LASTCALL_TEST_CONSUMER_FAULTS is set: consumers fail or stay silent on purpose "
              "(tests only)", {{"entries", config.test_consumer_faults.size()}});
  }
  AnalyticsConsumer analytics(outbox, clock, ids, faults);
  CategorizationConsumer categorization(outbox, clock, ids, faults);
  BeastWebhookSender sender;
  WebhookOptions wo;
  wo.max_attempts = config.webhook_max_attempts;
  wo.backoff_base_ms = config.webhook_backoff_base_ms;
  wo.backoff_cap_ms = config.webhook_backoff_cap_ms;
  wo.timeout_ms = config.webhook_timeout_ms;
  wo.workers = config.webhook_workers;
  DeliveryWorker webhooks(**db, sender, outbox, clock, ids, metrics, wo);
  WebhookTarget webhook_target(clock, ids, [&webhooks] { webhooks.Wake(); });
  // Targets' units are queued in this order each round and share one commit: the coordinator
  // last, so it already sees the completions the consumers appended in the same transaction.
  bus.AddTarget(kAnalyticsConsumer, &analytics);
  bus.AddTarget(kCategorizationConsumer, &categorization);
  bus.AddTarget(kWebhookTarget, &webhook_target);
  bus.AddTarget(kFileDeletionConsumer, &driver);
  for (const Rule& r : ServiceRules()) bus.AddRule(r);
  metrics.Declare(config.expected_consumers,
                  {kFileDeletionConsumer, kAnalyticsConsumer, kCategorizationConsumer, kWebhookTarget});
  Status declared = (*db)->Read([&](SqlTx& tx) {
    auto list = ListWebhookConsumers(tx);
    if (!list.ok()) return list.status();
    for (const auto& c : *list) metrics.DeclareWebhookConsumer(c.name);
    return Status::Ok();
  });
  if (!declared.ok()) {
    log::Error("cannot read the webhook consumers", {{"error", declared.message()}});
    return 1;
  }
  if (Status st = bus.Start(); !st.ok()) {
    log::Error("event bus failed to start", {{"error", st.message()}});
    return 1;
  }
  driver.Start();
  webhooks.Start();
  RetentionOptions ro;
  ro.retention_ms = config.outbox_retention_ms;
  ro.interval_ms = config.prune_interval_ms;
  ro.batch = config.prune_batch;
  Pruner pruner(**db, bus, clock, metrics, ro);
  pruner.Start();

  ApiConfig api_config{*secret, config.max_upload_bytes, config.event_publishing,
                       !config.metrics_address.has_value(),
                       static_cast<size_t>(config.max_import_rows), {}};
  api_config.reserved_consumers = {kAnalyticsConsumer, kCategorizationConsumer,
                                   kFileDeletionConsumer, kWebhookTarget};
  for (const auto& name : config.expected_consumers) api_config.reserved_consumers.push_back(name);
  ApiDeps api_deps{dynamic_cast<EventReplayer*>(&bus), [&webhooks] { webhooks.Wake(); }};
  Api api(**db, *blobs, outbox, driver, clock, ids, metrics, *receipt_keys, api_config, api_deps);
  std::atomic<int> in_flight{0};
  boost::asio::io_context io(config.http_threads);
  HttpServerOptions http_options;
  http_options.address = config.listen_address;
  http_options.port = config.listen_port;
  http_options.body_limit = config.max_upload_bytes + 64 * 1024;
  http_options.read_timeout_seconds = config.http_read_timeout_seconds;
  http_options.max_connections = ConnectionLimit(config.http_max_connections);
  if (http_options.max_connections < static_cast<size_t>(config.http_max_connections)) {
    log::Warn("HTTP connection limit lowered to fit the open-file limit",
              {{"maxConnections", http_options.max_connections},
               {"configured", config.http_max_connections}});
  }
  HttpServer server(io, http_options, [&](HttpRequest&& req, Respond respond) {
    ++in_flight;
    api.Handle(std::move(req), [&in_flight, respond = std::move(respond)](HttpResponse r) {
      respond(std::move(r));
      --in_flight;
    });
  });
  std::unique_ptr<HttpServer> metrics_server;
  if (config.metrics_address) {
    HttpServerOptions mo;
    mo.address = *config.metrics_address;
    mo.port = config.metrics_port;
    mo.body_limit = 64 * 1024;
    mo.read_timeout_seconds = config.http_read_timeout_seconds;
    mo.max_connections = 64;
    metrics_server = std::make_unique<HttpServer>(io, mo, [&api](HttpRequest&& req, Respond respond) {
      api.HandleMetricsOnly(std::move(req), std::move(respond));
    });
  }
  Status started = server.Start();
  if (started.ok() && metrics_server) started = metrics_server->Start();
  if (!started.ok()) {
    Status st = started;
    log::Error("cannot start the HTTP server", {{"error", st.message()}});
    pruner.Stop();
    webhooks.Stop();
    driver.Stop();
    bus.Stop();
    (*db)->Close();
    return 1;
  }
  if (metrics_server) {
    log::Info("metrics listening", {{"address", *config.metrics_address + ":" +
                                                    std::to_string(metrics_server->port())}});
  }
  log::Info("listening", {{"address", config.listen_address + ":" + std::to_string(server.port())},
                          {"dataDir", config.data_dir},
                          {"database", config.database_url ? "postgresql" : "sqlite"},
                          {"eventPublishing", config.event_publishing},
                          {"expectedConsumers", config.expected_consumers},
                          {"coordinationTimeoutMs", config.coordination_timeout_ms}});

  // SIGTERM/SIGINT: stop accepting, let requests in flight finish (10 s at most), then stop.
  boost::asio::signal_set signals(io, SIGINT, SIGTERM);
  boost::asio::steady_timer drain(io);
  auto deadline = std::make_shared<std::chrono::steady_clock::time_point>();
  std::function<void()> wait_drain = [&] {
    if (in_flight.load() == 0 || std::chrono::steady_clock::now() > *deadline) {
      io.stop();
      return;
    }
    drain.expires_after(std::chrono::milliseconds(10));
    drain.async_wait([&](const boost::system::error_code&) { wait_drain(); });
  };
  signals.async_wait([&](const boost::system::error_code& e, int sig) {
    if (e) return;
    log::Info("shutting down", {{"signal", sig}});
    server.Stop();
    if (metrics_server) metrics_server->Stop();
    *deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    wait_drain();
  });

  std::vector<std::thread> threads;
  for (int i = 1; i < config.http_threads; ++i) threads.emplace_back([&io] { io.run(); });
  io.run();
  for (auto& t : threads) t.join();

  pruner.Stop();
  webhooks.Stop();
  driver.Stop();
  bus.Stop();
  (*db)->Close();
  log::Info("stopped");
  return 0;
}

}  // namespace lastcall
