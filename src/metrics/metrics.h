// lastcall's metric families (names are part of the operations contract: docs/operations.md,
// deploy/grafana, deploy/prometheus/alerts.yml; do not rename). One Metrics object per process,
// handed by reference to whatever records. Counters move only after the fact they count has
// committed. Gauges describing stored state are computed at scrape time (Render).
#pragma once

#include <functional>
#include <string>

#include "common/clock.h"
#include "metrics/registry.h"
#include "store/sql.h"

namespace lastcall {

class Metrics {
 public:
  using BacklogSource = std::function<Result<int64_t>(SqlTx& tx, const std::string& target)>;
  Metrics();

  CounterFamily coordinations_started{"lastcall_coordinations_started_total",
                                      "Coordinated deletions requested.", {}};
  CounterFamily coordinations_finished{"lastcall_coordinations_finished_total",
                                       "Coordinations whose deletion finished, by outcome.", {"outcome"}};
  CounterFamily coordination_timeouts{"lastcall_coordination_timeouts_total",
                                      "Consumers missing when a coordination timed out.", {"consumer"}};
  CounterFamily consumer_completions{"lastcall_consumer_completions_total",
                                     "Consumer completions that counted toward their coordination, by consumer and status.",
                                     {"consumer", "status"}};
  CounterFamily file_deletions{"lastcall_file_deletions_total",
                               "File deletions, by mode (coordinated, synchronous) and result.",
                               {"mode", "result"}};
  HistogramFamily coordination_duration{
      "lastcall_coordination_duration_seconds",
      "Time from a deletion request to the file's deletion.", {"outcome"},
      {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600}};
  HistogramFamily consumer_completion{
      "lastcall_consumer_completion_seconds",
      "Time from a deletion request to a consumer's completion.", {"consumer"},
      {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600}};
  CounterFamily coordinations_cancelled{"lastcall_coordinations_cancelled_total",
                                        "Coordinated deletions cancelled by their owner.", {}};
  CounterFamily vetoes{"lastcall_vetoes_total",
                                     "Coordinated deletions stopped by a consumer's veto, by consumer.",
                                     {"consumer"}};
  CounterFamily vetoes_refused{"lastcall_vetoes_refused_total",
                               "Vetoes refused, by reason (veto_not_allowed, deletion_started, ...).",
                               {"reason"}};
  CounterFamily veto_overrides{"lastcall_veto_overrides_total",
                               "Vetoed coordinations an operator let proceed, by what followed "
                               "(proceeding, held).",
                               {"result"}};
  CounterFamily holds_placed{"lastcall_holds_placed_total", "Legal holds placed, by scope.",
                             {"scope"}};
  CounterFamily holds_released{"lastcall_holds_released_total", "Legal holds released, by scope.",
                               {"scope"}};
  CounterFamily deletions_blocked{"lastcall_deletions_blocked_total",
                                  "Coordinations that a legal hold blocked (became held).", {}};
  CounterFamily deletion_verifications{
      "lastcall_deletion_verifications_total",
      "Deletions checked for residue afterwards, by result (verified, residue).", {"result"}};
  CounterFamily receipts_issued{"lastcall_receipts_issued_total", "Signed deletion receipts served.",
                                {}};
  CounterFamily events_published{"lastcall_events_published_total",
                                 "Events committed to the outbox, by type.", {"type"}};
  CounterFamily events_delivered{"lastcall_events_delivered_total",
                                 "Events handled by a target, by type and target.", {"type", "target"}};
  CounterFamily delivery_failures{"lastcall_delivery_failures_total",
                                  "Failed deliveries (each is retried), by target.", {"target"}};
  CounterFamily dead_letters{"lastcall_dead_letters_total",
                             "Events dead-lettered after the last attempt, by target.", {"target"}};
  CounterFamily proceed_rules{"lastcall_deletion_proceed_rules_total",
                              "Expected consumers of each deletion decided, by their priority and "
                              "the rule that let the deletion proceed without them waiting longer.",
                              {"priority", "rule"}};
  CounterFamily webhook_deliveries{"lastcall_webhook_deliveries_total",
                                   "Webhook deliveries finished, by consumer and result "
                                   "(delivered, dead_lettered).",
                                   {"consumer", "result"}};
  CounterFamily webhook_retries{"lastcall_webhook_retries_total",
                                "Failed webhook attempts scheduled for another attempt, by consumer.",
                                {"consumer"}};
  HistogramFamily webhook_delivery{
      "lastcall_webhook_delivery_seconds",
      "Time from a webhook delivery being recorded to the consumer's 2xx, retries included.",
      {"consumer"},
      {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600}};
  CounterFamily dead_letter_replays{"lastcall_dead_letter_replays_total",
                                    "Dead letters replayed by an operator, by target.", {"target"}};
  CounterFamily rows_pruned{"lastcall_rows_pruned_total",
                            "Rows removed by retention, by table (outbox, processed, "
                            "delivery_attempts).",
                            {"table"}};
  CounterFamily http_requests{"lastcall_http_requests_total", "HTTP requests answered.",
                              {"method", "route", "status"}};
  HistogramFamily http_duration{"lastcall_http_request_duration_seconds",
                                "Time to answer an HTTP request.", {"route"},
                                {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5}};

 private:
  std::mutex targets_mu_;
  std::vector<std::string> targets_;  // guarded by targets_mu_
  BacklogSource backlog_source_;      // guarded by targets_mu_
 public:

  // Creates at 0 the series of every expected consumer and bus target, so the first timeout,
  // failure or dead letter shows as an increase (Prometheus cannot see a series' first sample
  // as one). Also fixes the targets whose outbox backlog is reported. Call once, at start.
  void Declare(const std::vector<std::string>& consumers, const std::vector<std::string>& targets);

  // Counts the events a target has not handled yet, in a read snapshot (the bus in use knows
  // what that means for it: EventBus::Backlog). Without one, lastcall_outbox_backlog has no
  // series. Call once, at start, before the first Render.
  void SetBacklogSource(BacklogSource source);
  // Creates at 0 the webhook series of a registered consumer (at start and on registration).
  void DeclareWebhookConsumer(const std::string& name);

  // The text exposition of every family; the stored-state gauges are read from db (a read
  // snapshot) at this moment. A store failure leaves those gauges out and is logged.
  std::string Render(Database& db, WallMillis now);
};

}  // namespace lastcall
