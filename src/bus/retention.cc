#include "bus/retention.h"

#include <algorithm>
#include <chrono>
#include <utility>
#include <variant>

#include "common/log.h"

namespace lastcall {
Result<PruneCounts> PruneOnce(SqlTx& tx, EventBus& bus, WallMillis now,
                              const RetentionOptions& options) {
  PruneCounts counts;
  int64_t keep = std::max(options.retention_ms, bus.RedeliveryHorizonMs());
  // A stamp more than the retention ahead of this clock: that clock has stepped back since.
  auto finished = bus.Finished(tx, now - keep, now + keep, options.batch);
  if (!finished.ok()) return finished.status();
  counts.events = static_cast<int64_t>(finished->size());
  if (!finished->empty()) {
    SqlParams seqs, ids;
    seqs.reserve(finished->size());
    ids.reserve(finished->size());
    for (const auto& e : *finished) {
      seqs.emplace_back(std::in_place_type<int64_t>, e.seq);
      ids.emplace_back(std::in_place_type<std::string>, e.id);
    }
    // Padded: batches of every size would each keep a statement of their own on the writer.
    std::string in = PaddedInList(ids);
    PaddedInList(seqs);  // the same length as ids, so `in` fits it too
    auto processed = tx.Exec("DELETE FROM processed WHERE event_id IN " + in, ids);
    if (!processed.ok()) return processed.status();
    counts.processed = *processed;
    auto attempts = tx.Exec("DELETE FROM delivery_attempts WHERE event_id IN " + in, ids);
    if (!attempts.ok()) return attempts.status();
    counts.delivery_attempts = *attempts;
    auto outbox = tx.Exec("DELETE FROM outbox WHERE seq IN " + in, seqs);
    if (!outbox.ok()) return outbox.status();
    counts.outbox = *outbox;
  }
  // Attempts of deliveries that finished otherwise (handled or dead-lettered for their target),
  // whatever the outbox row's fate.
  auto done = tx.Exec(
      "DELETE FROM delivery_attempts WHERE EXISTS (SELECT 1 FROM processed p WHERE p.target = "
      "delivery_attempts.target AND p.event_id = delivery_attempts.event_id) OR EXISTS (SELECT 1 "
      "FROM dead_letters d WHERE d.target = delivery_attempts.target AND d.event_id = "
      "delivery_attempts.event_id)");
  if (!done.ok()) return done.status();
  counts.delivery_attempts += *done;
  return counts;
}

Pruner::Pruner(Database& db, EventBus& bus, Clock& clock, Metrics& metrics,
               RetentionOptions options)
    : db_(db), bus_(bus), clock_(clock), metrics_(metrics), options_(options) {
  metrics_.rows_pruned.Inc({"outbox"}, 0);
  metrics_.rows_pruned.Inc({"processed"}, 0);
  metrics_.rows_pruned.Inc({"delivery_attempts"}, 0);
}

Pruner::~Pruner() { Stop(); }

int64_t Pruner::effective_retention_ms() const {
  return std::max(options_.retention_ms, bus_.RedeliveryHorizonMs());
}

void Pruner::Start() {
  log::Info("retention pruning started", {{"retentionMs", effective_retention_ms()},
                                          {"intervalMs", options_.interval_ms},
                                          {"batch", options_.batch}});
  thread_ = std::thread([this] { Loop(); });
}

void Pruner::Stop() {
  {
    std::lock_guard<std::mutex> l(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

int PruneRoundSize(int max_batch, double others_wait_ms) {
  int small = std::min(kSmallPruneRound, max_batch);
  // One more small round's worth for every 10 ms the rest of the batch kept this one waiting.
  double grown = small * (1.0 + std::max(0.0, others_wait_ms) / 10.0);
  return static_cast<int>(std::clamp<double>(grown, small, max_batch));
}

Result<PruneCounts> Pruner::RunOnce() { return RunRound(options_.batch, nullptr); }

Result<PruneCounts> Pruner::RunRound(int size, double* others_wait_ms) {
  using Ms = std::chrono::duration<double, std::milli>;
  RetentionOptions round = options_;
  round.batch = size;
  PruneCounts counts;
  Ms own{0};
  auto submitted = std::chrono::steady_clock::now();
  Status st = db_.WriteSync([&](SqlTx& tx) -> Status {
    auto start = std::chrono::steady_clock::now();
    auto r = PruneOnce(tx, bus_, clock_.Now(), round);
    own += std::chrono::steady_clock::now() - start;  // an engine may run the unit again
    if (!r.ok()) return r.status();
    counts = *r;
    return Status::Ok();
  });
  if (others_wait_ms) *others_wait_ms = (Ms(std::chrono::steady_clock::now() - submitted) - own).count();
  if (!st.ok()) return st;
  // Counted after the commit only (WriteSync returns ok once the unit is durable).
  metrics_.rows_pruned.Inc({"outbox"}, static_cast<double>(counts.outbox));
  metrics_.rows_pruned.Inc({"processed"}, static_cast<double>(counts.processed));
  metrics_.rows_pruned.Inc({"delivery_attempts"}, static_cast<double>(counts.delivery_attempts));
  return counts;
}

void Pruner::Loop() {
  int size = PruneRoundSize(options_.batch, 0);
  for (;;) {
    {
      std::lock_guard<std::mutex> l(mu_);
      if (stopping_) return;
    }
    double others_wait_ms = 0;
    auto r = RunRound(size, &others_wait_ms);
    int64_t wait = options_.interval_ms;
    if (!r.ok()) {
      log::Warn("retention pruning failed (retried)", {{"error", r.status().ToString()}});
    } else if (r->events >= size) {
      wait = 0;  // more is due: the next round at once (other units still interleave)
    }
    size = PruneRoundSize(options_.batch, others_wait_ms);
    std::unique_lock<std::mutex> l(mu_);
    if (wait > 0) {
      cv_.wait_for(l, std::chrono::milliseconds(wait), [&] { return stopping_; });
    }
  }
}

}  // namespace lastcall
