#include "bus/delivery.h"

#include <algorithm>

#include "common/log.h"

namespace lastcall {

CloudEvent EventFromOutboxRow(const SqlRow& r) {
  CloudEvent e;
  e.seq = r.Int(0);
  e.id = r.Text(1);
  e.type = r.Text(2);
  e.source = r.Text(3);
  e.subject = r.Text(4);
  e.time = r.Text(5);
  e.data = nlohmann::json::parse(r.Text(6), nullptr, false);
  return e;
}

Result<DeliveryOutcome> DeliverInTx(SqlTx& tx, const std::string& target, EventHandler& handler,
                                    const CloudEvent& e, WallMillis now, DeliverySteps steps) {
  DeliveryOutcome out;
  if (steps.check_processed) {
    auto seen =
        tx.QueryOne("SELECT 1 FROM processed WHERE target = ? AND event_id = ?", {target, e.id});
    if (!seen.ok()) return seen.status();
    if (*seen) {
      log::Info("duplicate delivery ignored", {{"target", target}, {"eventId", e.id}});
      out.duplicate = true;
      return out;
    }
  }
  if (e.data.is_discarded()) {
    out.failure = Status::Internal("stored event data is not JSON");
    return out;
  }
  if (steps.savepoint) {
    auto sp = tx.Exec("SAVEPOINT delivery");
    if (!sp.ok()) return sp.status();
  }
  out.failure = handler.Handle(e, tx);
  if (steps.savepoint) {
    if (!out.failure.ok()) (void)tx.Exec("ROLLBACK TO delivery");
    auto rel = tx.Exec("RELEASE delivery");
    if (!rel.ok()) return rel.status();
  }
  if (!out.failure.ok()) return out;
  if (steps.defer_processed) {
    steps.defer_processed->rows.emplace_back(e.id, now);
    return out;
  }
  // Sent without waiting where the engine can: its failure fails the caller's whole unit.
  LASTCALL_RETURN_IF_ERROR(tx.Send(
      "INSERT INTO processed (target, event_id, processed_at) VALUES (?, ?, ?)", {target, e.id, now}));
  return out;
}

Status RecordProcessed(SqlTx& tx, const std::string& target, const ProcessedRecords& records) {
  // Chunks of 64, 32, ..., 1 rows: at most seven statement texts for the engines to keep prepared.
  constexpr size_t kMaxRows = 64;
  size_t at = 0;
  while (at < records.rows.size()) {
    size_t left = records.rows.size() - at;
    size_t n = kMaxRows;
    while (n > left) n /= 2;
    SqlParams params;
    params.reserve(3 * n);
    for (size_t i = 0; i < n; ++i) {
      const auto& [event_id, processed_at] = records.rows[at + i];
      params.emplace_back(std::in_place_type<std::string>, target);
      params.emplace_back(std::in_place_type<std::string>, event_id);
      params.emplace_back(std::in_place_type<int64_t>, processed_at);
    }
    LASTCALL_RETURN_IF_ERROR(tx.Send(
        "INSERT INTO processed (target, event_id, processed_at) VALUES " + ValuesRows(3, n), params));
    at += n;
  }
  return Status::Ok();
}

Status ReplayInTx(SqlTx& tx, const std::string& target, EventHandler* handler, const CloudEvent& e,
                  WallMillis now) {
  if (handler == nullptr) return Status::NotFound("no such target: " + target);
  auto delivered = DeliverInTx(tx, target, *handler, e, now);
  if (!delivered.ok()) return delivered.status();
  return delivered->failure;
}

Status RecordDeadLetter(SqlTx& tx, IdGenerator& ids, const std::string& target,
                        const std::string& event_id, int64_t event_seq, int attempts,
                        const std::string& error, WallMillis now,
                        const std::optional<std::string>& delivery_id) {
  // The dead letter keeps a copy of its event: the outbox row may be pruned before a replay.
  auto event = tx.QueryOne("SELECT type, source, subject, time, data FROM outbox WHERE id = ?",
                           {event_id});
  if (!event.ok()) return event.status();
  auto col = [&](size_t i) -> SqlValue {
    return *event ? SqlValue((*event)->Text(i)) : SqlValue(SqlNull{});
  };
  auto ins = tx.Exec(
      "INSERT INTO dead_letters (id, target, event_id, event_seq, attempts, error, created_at, "
      "delivery_id, event_type, event_source, event_subject, event_time, event_data) "
      "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
      {ids.NewUuid(), target, event_id, event_seq, static_cast<int64_t>(attempts), error, now,
       delivery_id ? SqlValue(*delivery_id) : SqlValue(SqlNull{}), col(0), col(1), col(2), col(3),
       col(4)});
  return ins.ok() ? Status::Ok() : ins.status();
}

int64_t RetryDelayMs(int attempt, int64_t base_ms, int64_t cap_ms, std::mt19937_64& rng) {
  int64_t cap = std::min(cap_ms, base_ms << std::clamp(attempt - 1, 0, 20));
  std::uniform_int_distribution<int64_t> jitter(0, std::max<int64_t>(cap, 1));
  return jitter(rng);
}

}  // namespace lastcall
