#include "metrics/metrics.h"

#include "common/log.h"

namespace lastcall {

Metrics::Metrics() {
  // Series that exist from the start, so rates and alerts see 0 rather than nothing.
  coordinations_started.Inc({}, 0);
  for (const char* o : {"all_completed", "timed_out"}) coordinations_finished.Inc({o}, 0);
  file_deletions.Inc({"coordinated", "deleted"}, 0);
  file_deletions.Inc({"coordinated", "failed"}, 0);
  file_deletions.Inc({"synchronous", "deleted"}, 0);
  file_deletions.Inc({"synchronous", "failed"}, 0);
  for (const char* p : {"critical", "optional"}) {
    for (const char* r : {"reported", "critical_timeout", "optional_grace", "optional_timeout",
                          "deadline"}) {
      if (std::string(p) == "critical" && std::string(r).rfind("optional", 0) == 0) continue;
      if (std::string(p) == "optional" && std::string(r) == "critical_timeout") continue;
      proceed_rules.Inc({p, r}, 0);
    }
  }
  coordinations_cancelled.Inc({}, 0);
  for (const char* r : {"veto_not_allowed", "deletion_started", "coordination_cancelled",
                        "already_reported", "not_expected"}) {
    vetoes_refused.Inc({r}, 0);
  }
  veto_overrides.Inc({"proceeding"}, 0);
  veto_overrides.Inc({"held"}, 0);
  for (const char* s : {"user", "account", "file"}) {
    holds_placed.Inc({s}, 0);
    holds_released.Inc({s}, 0);
  }
  deletions_blocked.Inc({}, 0);
  deletion_verifications.Inc({"verified"}, 0);
  deletion_verifications.Inc({"residue"}, 0);
  receipts_issued.Inc({}, 0);
}

void Metrics::DeclareWebhookConsumer(const std::string& name) {
  webhook_deliveries.Inc({name, "delivered"}, 0);
  webhook_deliveries.Inc({name, "dead_lettered"}, 0);
  webhook_retries.Inc({name}, 0);
  delivery_failures.Inc({name}, 0);
  dead_letters.Inc({name}, 0);
}

void Metrics::Declare(const std::vector<std::string>& consumers,
                      const std::vector<std::string>& targets) {
  for (const auto& c : consumers) {
    coordination_timeouts.Inc({c}, 0);
    consumer_completions.Inc({c, "completed"}, 0);
    consumer_completions.Inc({c, "failed"}, 0);
  }
  for (const auto& t : targets) {
    delivery_failures.Inc({t}, 0);
    dead_letters.Inc({t}, 0);
  }
  std::lock_guard<std::mutex> l(targets_mu_);
  targets_ = targets;
}

void Metrics::SetBacklogSource(BacklogSource source) {
  std::lock_guard<std::mutex> l(targets_mu_);
  backlog_source_ = std::move(source);
}

std::string Metrics::Render(Database& db, WallMillis now) {
  std::string out;
  out.reserve(16 * 1024);
  coordinations_started.Render(&out);
  coordinations_finished.Render(&out);
  coordination_timeouts.Render(&out);
  consumer_completions.Render(&out);
  file_deletions.Render(&out);
  coordination_duration.Render(&out);
  consumer_completion.Render(&out);
  coordinations_cancelled.Render(&out);
  vetoes.Render(&out);
  vetoes_refused.Render(&out);
  veto_overrides.Render(&out);
  holds_placed.Render(&out);
  holds_released.Render(&out);
  deletions_blocked.Render(&out);
  deletion_verifications.Render(&out);
  receipts_issued.Render(&out);
  events_published.Render(&out);
  events_delivered.Render(&out);
  delivery_failures.Render(&out);
  dead_letters.Render(&out);
  dead_letter_replays.Render(&out);
  rows_pruned.Render(&out);
  proceed_rules.Render(&out);
  webhook_deliveries.Render(&out);
  webhook_retries.Render(&out);
  webhook_delivery.Render(&out);
  http_requests.Render(&out);
  http_duration.Render(&out);

  double waiting = 0, deleting = 0, held = 0, vetoed = 0, active_holds = 0, oldest_age = 0;
  std::vector<std::pair<std::vector<std::string>, double>> backlog;
  Status st = db.Read([&](SqlTx& tx) -> Status {
    auto counts = tx.QueryAll(
        "SELECT status, COUNT(*), MIN(started_at) FROM coordinations WHERE status IN "
        "('waiting', 'deleting', 'held', 'vetoed') GROUP BY status");
    if (!counts.ok()) return counts.status();
    for (const auto& r : *counts) {
      if (r.Text(0) == "waiting") {
        waiting = static_cast<double>(r.Int(1));
        oldest_age = std::max<double>(0, static_cast<double>(now - r.Int(2)) / 1000.0);
      } else if (r.Text(0) == "held") {
        held = static_cast<double>(r.Int(1));
      } else if (r.Text(0) == "vetoed") {
        vetoed = static_cast<double>(r.Int(1));
      } else {
        deleting = static_cast<double>(r.Int(1));
      }
    }
    auto holds = tx.QueryOne("SELECT COUNT(*) FROM holds WHERE released_at IS NULL");
    if (!holds.ok()) return holds.status();
    active_holds = static_cast<double>((*holds)->Int(0));
    std::vector<std::string> targets;
    BacklogSource source;
    {
      std::lock_guard<std::mutex> l(targets_mu_);
      targets = targets_;
      source = backlog_source_;
    }
    if (!source) return Status::Ok();
    for (const auto& t : targets) {
      auto n = source(tx, t);
      if (!n.ok()) return n.status();
      backlog.push_back({{t}, static_cast<double>(*n)});
    }
    return Status::Ok();
  });
  if (!st.ok()) {
    log::Error("metrics: cannot read stored state", {{"error", st.ToString()}});
    return out;
  }
  GaugeFamily{"lastcall_coordinations_waiting", "Coordinations waiting for consumers or their deadline.",
              {}, [&] { return std::vector<std::pair<std::vector<std::string>, double>>{{{}, waiting}}; }}
      .Render(&out);
  GaugeFamily{"lastcall_coordinations_deleting", "Coordinations whose deletion is under way.", {},
              [&] { return std::vector<std::pair<std::vector<std::string>, double>>{{{}, deleting}}; }}
      .Render(&out);
  GaugeFamily{"lastcall_coordinations_held", "Coordinations blocked by a legal hold.", {},
              [&] { return std::vector<std::pair<std::vector<std::string>, double>>{{{}, held}}; }}
      .Render(&out);
  GaugeFamily{"lastcall_coordinations_vetoed",
              "Coordinations stopped by a veto and not overridden or cancelled.", {},
              [&] { return std::vector<std::pair<std::vector<std::string>, double>>{{{}, vetoed}}; }}
      .Render(&out);
  GaugeFamily{"lastcall_holds_active", "Legal holds placed and not released.", {},
              [&] { return std::vector<std::pair<std::vector<std::string>, double>>{{{}, active_holds}}; }}
      .Render(&out);
  GaugeFamily{"lastcall_oldest_waiting_coordination_age_seconds",
              "Age of the oldest waiting coordination (0 when none waits).", {},
              [&] { return std::vector<std::pair<std::vector<std::string>, double>>{{{}, oldest_age}}; }}
      .Render(&out);
  GaugeFamily{"lastcall_outbox_backlog", "Events in the outbox a target has not handled yet.",
              {"target"}, [&] { return backlog; }}
      .Render(&out);
  return out;
}

}  // namespace lastcall
