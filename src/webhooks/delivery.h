// Webhook consumers on the bus, without network I/O on the writer thread:
//  - WebhookTarget is the bus target "webhook_consumers". Inside the bus's write unit it only
//    records one webhook_deliveries row per expected webhook consumer of a file.delete_requested
//    (the event's expectedConsumers that are registered webhook consumers), and likewise of a
//    file.delete_cancelled or file.delete_vetoed (the coordination's expected consumers), whose
//    deliveries ask for no completion: they tell the consumer to undo what it anticipated.
//  - DeliveryWorker owns its threads: it picks due pending deliveries, signs them (Standard
//    Webhooks), POSTs them outside any transaction with a timeout, and records each attempt in a
//    write unit of its own: delivered (a 2xx; a completion in the answer's body is published as
//    consumer.completion in the same unit), retried later with exponential backoff and full
//    jitter (network error, timeout, 5xx, 408, 429), or dead-lettered (after the last attempt,
//    or at once for any other status: the consumer refused it).
// Attempt counts and due times live in the store, so a restart resumes the schedule.
#pragma once

#include <condition_variable>
#include <deque>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "bus/event_bus.h"
#include "common/clock.h"
#include "common/ids.h"
#include "metrics/metrics.h"
#include "store/sql.h"
#include "webhooks/consumer_repo.h"
#include "webhooks/sender.h"

namespace lastcall {

inline constexpr char kWebhookTarget[] = "webhook_consumers";  // stored: do not rename
inline constexpr char kCloudEventsJson[] = "application/cloudevents+json";

class WebhookTarget : public EventHandler {
 public:
  // on_recorded runs after the commit of a unit that recorded deliveries (wakes the worker).
  WebhookTarget(Clock& clock, IdGenerator& ids, std::function<void()> on_recorded)
      : clock_(clock), ids_(ids), on_recorded_(std::move(on_recorded)) {}
  Status Handle(const CloudEvent& event, SqlTx& tx) override;

 private:
  Clock& clock_;
  IdGenerator& ids_;
  std::function<void()> on_recorded_;
};

struct WebhookOptions {
  int max_attempts = 8;             // LASTCALL_WEBHOOK_MAX_ATTEMPTS
  int64_t backoff_base_ms = 1000;   // LASTCALL_WEBHOOK_BACKOFF_BASE_MS
  int64_t backoff_cap_ms = 60000;   // LASTCALL_WEBHOOK_BACKOFF_CAP_MS
  int64_t timeout_ms = 10000;       // LASTCALL_WEBHOOK_TIMEOUT_MS: one attempt, end to end
  int workers = 4;                  // LASTCALL_WEBHOOK_WORKERS: attempts in parallel
  int64_t idle_poll_ms = 1000;
};

// The wait before attempt n+1 after n failed attempts (n >= 1): uniform in
// [0, min(cap, base * 2^(n-1))] ("full jitter").
int64_t BackoffDelay(const WebhookOptions& o, int64_t failed_attempts, std::mt19937_64& rng);

// What a consumer's answer means for the delivery.
enum class AttemptResult { kDelivered, kRetry, kRefused };
AttemptResult Classify(const Result<WebhookResponse>& r);

class DeliveryWorker {
 public:
  DeliveryWorker(Database& db, WebhookSender& sender, Outbox& outbox, Clock& clock,
                 IdGenerator& ids, Metrics& metrics, WebhookOptions options);
  ~DeliveryWorker();

  void Start();
  void Stop();  // finishes the attempts in flight; idempotent
  // New or replayed deliveries were committed. Thread-safe, cheap.
  void Wake();
  // Tests: makes one attempt of every delivery due now, on the calling thread (without Start).
  // Returns how many were attempted.
  int RunDueOnce();

 private:
  // One attempt: send, then record the result. Never throws.
  void Attempt(const WebhookDelivery& d);
  Status Record(const WebhookDelivery& d, const WebhookConsumer& consumer,
                const Result<WebhookResponse>& response, int64_t attempt_ms);
  void Loop();
  void Work();

  Database& db_;
  WebhookSender& sender_;
  Outbox& outbox_;
  Clock& clock_;
  IdGenerator& ids_;
  Metrics& metrics_;
  WebhookOptions options_;

  std::mutex rng_mu_;
  std::mt19937_64 rng_;  // guarded by rng_mu_

  std::mutex mu_;
  std::condition_variable cv_;       // the dispatcher waits here
  std::condition_variable work_cv_;  // the workers wait here
  std::deque<WebhookDelivery> queue_;  // guarded by mu_
  std::set<std::string> in_flight_;    // delivery ids queued or being attempted; guarded by mu_
  bool dirty_ = false;                 // guarded by mu_
  bool stopping_ = false;              // guarded by mu_
  std::thread dispatcher_;
  std::vector<std::thread> workers_;
};

}  // namespace lastcall
