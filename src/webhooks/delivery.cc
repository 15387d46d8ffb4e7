#include "webhooks/delivery.h"

#include <algorithm>

#include "bus/delivery.h"
#include "common/log.h"
#include "consumers/consumer.h"
#include "coordination/coordination_repo.h"
#include "coordination/coordinator.h"
#include "webhooks/signature.h"

namespace lastcall {

Status WebhookTarget::Handle(const CloudEvent& event, SqlTx& tx) {
  std::string coordination_id = event.data.value("coordinationId", std::string());
  std::vector<std::string> expected;
  if (event.type == kFileDeleteRequested) {
    auto x = event.data.find("expectedConsumers");
    if (x == event.data.end() || !x->is_array()) return Status::Ok();
    for (const auto& name : *x) {
      if (name.is_string()) expected.push_back(name.get<std::string>());
    }
  } else if (event.type == kFileDeleteCancelled || event.type == kFileDeleteVetoed) {
    // The undo of a deletion goes to the webhook consumers that were asked for it (the
    // coordination's expected consumers), so they can undo what they did in anticipation. It
    // asks for no completion: its deliveries carry no coordination id.
    if (coordination_id.empty()) return Status::Ok();
    auto c = LoadCoordination(tx, coordination_id);
    if (!c.ok()) return c.status();
    if (!*c) return Status::Ok();
    expected = (*c)->expected;
    coordination_id.clear();
  } else {
    return Status::Ok();
  }
  std::string body = ToJson(event).dump();
  WallMillis now = clock_.Now();
  bool recorded = false;
  for (const auto& name : expected) {
    auto consumer = FindWebhookConsumer(tx, name);
    if (!consumer.ok()) return consumer.status();
    if (!*consumer) continue;  // an in-process consumer, or one deregistered since
    WebhookDelivery d;
    d.id = ids_.NewUuid();
    d.consumer = (*consumer)->name;
    d.event_id = event.id;
    d.event_seq = event.seq;
    if (!coordination_id.empty()) d.coordination_id = coordination_id;
    d.body = body;
    d.status = kDeliveryPending;
    d.next_attempt_at = now;
    d.created_at = now;
    auto inserted = InsertDelivery(tx, d);
    if (!inserted.ok()) return inserted.status();
    recorded = recorded || *inserted;
  }
  if (recorded && on_recorded_) tx.AfterCommit(on_recorded_);
  return Status::Ok();
}

int64_t BackoffDelay(const WebhookOptions& o, int64_t failed_attempts, std::mt19937_64& rng) {
  int64_t shift = std::clamp<int64_t>(failed_attempts - 1, 0, 30);
  int64_t ceiling = std::min(o.backoff_cap_ms, o.backoff_base_ms << shift);
  std::uniform_int_distribution<int64_t> jitter(0, std::max<int64_t>(ceiling, 0));
  return jitter(rng);
}

AttemptResult Classify(const Result<WebhookResponse>& r) {
  if (!r.ok()) return AttemptResult::kRetry;
  int s = r->status;
  if (s >= 200 && s < 300) return AttemptResult::kDelivered;
  if (s >= 500 || s == 408 || s == 429) return AttemptResult::kRetry;
  return AttemptResult::kRefused;
}

DeliveryWorker::DeliveryWorker(Database& db, WebhookSender& sender, Outbox& outbox, Clock& clock,
                               IdGenerator& ids, Metrics& metrics, WebhookOptions options)
    : db_(db),
      sender_(sender),
      outbox_(outbox),
      clock_(clock),
      ids_(ids),
      metrics_(metrics),
      options_(options),
      rng_(std::random_device{}()) {}

DeliveryWorker::~DeliveryWorker() { Stop(); }

void DeliveryWorker::Start() {
  dispatcher_ = std::thread([this] { Loop(); });
  for (int i = 0; i < std::max(1, options_.workers); ++i) workers_.emplace_back([this] { Work(); });
}

void DeliveryWorker::Stop() {
  {
    std::lock_guard<std::mutex> l(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  work_cv_.notify_all();
  if (dispatcher_.joinable()) dispatcher_.join();
  for (auto& w : workers_) {
    if (w.joinable()) w.join();
  }
  workers_.clear();
}

void DeliveryWorker::Wake() {
  {
    std::lock_guard<std::mutex> l(mu_);
    dirty_ = true;
  }
  cv_.notify_one();
}

int DeliveryWorker::RunDueOnce() {
  std::vector<WebhookDelivery> due;
  Status st = db_.Read([&](SqlTx& tx) {
    auto r = DueDeliveries(tx, clock_.Now(), 256);
    if (!r.ok()) return r.status();
    due = std::move(r).value();
    return Status::Ok();
  });
  if (!st.ok()) return 0;
  for (const auto& d : due) Attempt(d);
  return static_cast<int>(due.size());
}

void DeliveryWorker::Loop() {
  for (;;) {
    {
      std::lock_guard<std::mutex> l(mu_);
      if (stopping_) return;
      dirty_ = false;
    }
    std::vector<WebhookDelivery> due;
    std::optional<WallMillis> next;
    WallMillis now = clock_.Now();
    Status st = db_.Read([&](SqlTx& tx) {
      auto r = DueDeliveries(tx, now, 256);
      if (!r.ok()) return r.status();
      due = std::move(r).value();
      auto n = NextDeliveryAfter(tx, now);
      if (!n.ok()) return n.status();
      next = *n;
      return Status::Ok();
    });
    if (!st.ok()) log::Error("webhook delivery scan failed", {{"error", st.ToString()}});
    size_t queued = 0;
    {
      std::lock_guard<std::mutex> l(mu_);
      for (auto& d : due) {
        if (in_flight_.count(d.id)) continue;
        in_flight_.insert(d.id);
        queue_.push_back(std::move(d));
        ++queued;
      }
    }
    if (queued > 0) work_cv_.notify_all();
    // Sleep until the next attempt falls due, a Wake() (new deliveries, a replay, or a finished
    // attempt, whose retry may be due sooner), or the poll.
    int64_t wait_ms = options_.idle_poll_ms;
    if (st.ok() && next) wait_ms = std::clamp<int64_t>(*next - clock_.Now(), 1, wait_ms);
    std::unique_lock<std::mutex> l(mu_);
    cv_.wait_for(l, std::chrono::milliseconds(wait_ms), [&] { return dirty_ || stopping_; });
  }
}

void DeliveryWorker::Work() {
  for (;;) {
    WebhookDelivery d;
    {
      std::unique_lock<std::mutex> l(mu_);
      work_cv_.wait(l, [&] { return stopping_ || !queue_.empty(); });
      if (stopping_) return;
      d = std::move(queue_.front());
      queue_.pop_front();
    }
    Attempt(d);
    {
      std::lock_guard<std::mutex> l(mu_);
      in_flight_.erase(d.id);
      dirty_ = true;  // its next attempt may be due sooner than the dispatcher's sleep
    }
    cv_.notify_one();
  }
}

void DeliveryWorker::Attempt(const WebhookDelivery& queued) {
  std::optional<WebhookConsumer> consumer;
  std::optional<WebhookDelivery> current;
  WallMillis now = clock_.Now();
  Status st = db_.Read([&](SqlTx& tx) {
    auto fresh = FindDelivery(tx, queued.id);
    if (!fresh.ok()) return fresh.status();
    current = *fresh;
    auto c = FindWebhookConsumer(tx, queued.consumer);
    if (!c.ok()) return c.status();
    consumer = *c;
    return Status::Ok();
  });
  // The row as it is now: the scan that queued it may have raced with its previous attempt.
  if (st.ok() && (!current || current->status != kDeliveryPending || current->next_attempt_at > now)) {
    return;
  }
  const WebhookDelivery& d = st.ok() ? *current : queued;
  if (!st.ok()) {
    log::Error("webhook delivery: cannot read its consumer", {{"deliveryId", d.id},
                                                             {"error", st.ToString()}});
    return;
  }
  if (!consumer) {
    // Deregistered after the delivery was recorded (DELETE cancels pending ones; this closes
    // the race with a delivery recorded meanwhile).
    (void)db_.WriteSync([&](SqlTx& tx) -> Status {
      auto r = tx.Exec("UPDATE webhook_deliveries SET status = ? WHERE id = ? AND status = ?",
                       {std::string(kDeliveryCancelled), d.id, std::string(kDeliveryPending)});
      return r.ok() ? Status::Ok() : r.status();
    });
    return;
  }
  int64_t timestamp = now / 1000;
  WebhookRequest req;
  req.url = consumer->url;
  req.content_type = kCloudEventsJson;
  req.body = d.body;
  req.timeout_ms = options_.timeout_ms;
  req.headers["webhook-id"] = d.id;
  req.headers["webhook-timestamp"] = std::to_string(timestamp);
  auto signature = SignatureHeader(consumer->SigningSecrets(now), d.id, timestamp, d.body);
  auto started = std::chrono::steady_clock::now();
  Result<WebhookResponse> response = signature.status();  // a secret that cannot sign: retried
  if (signature.ok()) {
    req.headers["webhook-signature"] = *signature;
    response = sender_.Post(req);
  }
  int64_t attempt_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                           std::chrono::steady_clock::now() - started)
                           .count();
  st = Record(d, *consumer, response, attempt_ms);
  if (!st.ok()) {
    // The attempt happened but its result is not stored: it will be made again (at least once).
    log::Error("webhook delivery: cannot record the attempt", {{"deliveryId", d.id},
                                                              {"error", st.ToString()}});
  }
}

Status DeliveryWorker::Record(const WebhookDelivery& d, const WebhookConsumer& consumer,
                              const Result<WebhookResponse>& response, int64_t attempt_ms) {
  AttemptResult result = Classify(response);
  std::string error;
  if (!response.ok()) {
    error = response.status().message();
  } else if (result != AttemptResult::kDelivered) {
    error = "HTTP " + std::to_string(response->status);
  }
  int64_t delay = 0;
  if (result == AttemptResult::kRetry) {
    std::lock_guard<std::mutex> l(rng_mu_);
    delay = BackoffDelay(options_, d.attempts + 1, rng_);
  }
  return db_.WriteSync([&](SqlTx& tx) -> Status {
    auto current = FindDelivery(tx, d.id);
    if (!current.ok()) return current.status();
    if (!*current || (*current)->status != kDeliveryPending) return Status::Ok();  // cancelled
    int64_t attempts = (*current)->attempts + 1;
    WallMillis now = clock_.Now();
    std::string status = kDeliveryPending;
    std::string summary;
    if (result == AttemptResult::kDelivered) {
      status = kDeliveryDelivered;
      summary = "delivered (HTTP " + std::to_string(response->status) + ")";
    } else if (result == AttemptResult::kRetry && attempts < options_.max_attempts) {
      summary = "failed: " + error + "; retrying";
    } else {
      status = kDeliveryDead;
      summary = "dead-lettered: " + error;
    }
    auto up = tx.Exec(
        "UPDATE webhook_deliveries SET status = ?, attempts = ?, next_attempt_at = ?, "
        "last_error = ?, delivered_at = ? WHERE id = ?",
        {status, attempts, now + delay,
         error.empty() ? SqlValue(SqlNull{}) : SqlValue(error),
         status == kDeliveryDelivered ? SqlValue(now) : SqlValue(SqlNull{}), d.id});
    if (!up.ok()) return up.status();
    auto health = tx.Exec(
        "UPDATE webhook_consumers SET last_delivery_at = ?, last_delivery_result = ?, "
        "failures = failures + ? WHERE name = ?",
        {now, summary, static_cast<int64_t>(error.empty() ? 0 : 1), consumer.name});
    if (!health.ok()) return health.status();
    if (status == kDeliveryDead) {
      LASTCALL_RETURN_IF_ERROR(RecordDeadLetter(tx, ids_, consumer.name, d.event_id, d.event_seq,
                                                static_cast<int>(attempts), error, now, d.id));
    }
    bool completion = false;
    if (status == kDeliveryDelivered && d.coordination_id) {
      // A consumer that finished at once may answer with its completion.
      auto body = nlohmann::json::parse(response->body, nullptr, false);
      if (body.is_object() && body.contains("status") && body["status"].is_string()) {
        std::string s = body["status"].get<std::string>();
        auto detail = body.find("detail");
        // A veto carries its reason at the top level, like the API's; it travels in the detail.
        auto reason = body.find("reason");
        bool veto_ok = s != kVetoStatus ||
                       (reason != body.end() && reason->is_string() &&
                        !reason->get<std::string>().empty() &&
                        reason->get<std::string>().size() <= kMaxVetoReason);
        if ((s == "completed" || s == "failed" || s == kVetoStatus) && veto_ok &&
            (detail == body.end() || detail->is_object())) {
          nlohmann::json det = detail == body.end() ? nlohmann::json::object() : *detail;
          if (s == kVetoStatus) det["reason"] = *reason;
          LASTCALL_RETURN_IF_ERROR(PublishCompletion(tx, outbox_, clock_, ids_, consumer.name,
                                                     *d.coordination_id, s, det));
          completion = true;
        } else {
          log::Warn("webhook answer with an unusable completion ignored",
                    {{"consumer", consumer.name}, {"deliveryId", d.id}});
        }
      }
    }
    tx.AfterCommit([this, name = consumer.name, id = d.id, event = d.event_id, status, attempts,
                    error, delay, attempt_ms, completion,
                    since = static_cast<double>(now - d.created_at) / 1000.0] {
      if (status == kDeliveryDelivered) {
        metrics_.webhook_deliveries.Inc({name, "delivered"});
        metrics_.webhook_delivery.Observe({name}, std::max(0.0, since));
        log::Info("webhook delivered", {{"consumer", name}, {"deliveryId", id}, {"eventId", event},
                                        {"attempts", attempts}, {"attemptMs", attempt_ms},
                                        {"completionInAnswer", completion}});
        return;
      }
      metrics_.delivery_failures.Inc({name});
      if (status == kDeliveryDead) {
        metrics_.webhook_deliveries.Inc({name, "dead_lettered"});
        metrics_.dead_letters.Inc({name});
        log::Error("webhook dead-lettered", {{"consumer", name}, {"deliveryId", id},
                                             {"eventId", event}, {"attempts", attempts},
                                             {"error", error}});
      } else {
        metrics_.webhook_retries.Inc({name});
        log::Warn("webhook attempt failed; retrying", {{"consumer", name}, {"deliveryId", id},
                                                       {"eventId", event}, {"attempt", attempts},
                                                       {"retryInMs", delay}, {"error", error}});
      }
    });
    return Status::Ok();
  });
}

}  // namespace lastcall
