#include "dlq/dead_letters.h"

#include "webhooks/consumer_repo.h"

namespace lastcall {
namespace {

constexpr char kColumns[] =
    "d.id, d.target, d.event_id, d.event_seq, d.attempts, d.error, d.created_at, d.delivery_id, "
    "d.replayed_at, COALESCE(d.event_type, o.type), COALESCE(d.event_source, o.source), "
    "COALESCE(d.event_subject, o.subject), COALESCE(d.event_time, o.time), "
    "COALESCE(d.event_data, o.data)";

DeadLetter FromRow(const SqlRow& r) {
  DeadLetter d;
  d.id = r.Text(0);
  d.target = r.Text(1);
  d.event_id = r.Text(2);
  d.event_seq = r.Int(3);
  d.attempts = r.Int(4);
  d.error = r.Text(5);
  d.created_at = r.Int(6);
  d.delivery_id = r.OptText(7);
  d.replayed_at = r.OptInt(8);
  if (!r.IsNull(9)) {
    CloudEvent e;
    e.id = d.event_id;
    e.type = r.Text(9);
    e.source = r.Text(10);
    e.subject = r.Text(11);
    e.time = r.Text(12);
    e.data = nlohmann::json::parse(r.Text(13), nullptr, false);
    if (e.data.is_discarded()) e.data = nlohmann::json::object();
    e.seq = d.event_seq;
    d.event = std::move(e);
  }
  return d;
}

}  // namespace

Result<std::vector<DeadLetter>> ListDeadLetters(SqlTx& tx, const DeadLetterFilter& f, bool* more) {
  std::string sql = std::string("SELECT ") + kColumns +
                    " FROM dead_letters d LEFT JOIN outbox o ON o.id = d.event_id WHERE 1 = 1";
  SqlParams params;
  if (f.target) {
    sql += " AND d.target = ?";
    params.push_back(*f.target);
  }
  if (!f.include_replayed) sql += " AND d.replayed_at IS NULL";
  if (f.after) {
    sql += " AND (d.created_at < ? OR (d.created_at = ? AND d.id < ?))";
    params.push_back(f.after->first);
    params.push_back(f.after->first);
    params.push_back(f.after->second);
  }
  sql += " ORDER BY d.created_at DESC, d.id DESC LIMIT ?";
  params.push_back(static_cast<int64_t>(f.limit) + 1);
  std::vector<DeadLetter> out;
  Status st = tx.Query(sql, params, [&](const SqlRow& r) {
    out.push_back(FromRow(r));
    return true;
  });
  if (!st.ok()) return st;
  *more = static_cast<int>(out.size()) > f.limit;
  if (*more) out.pop_back();
  return out;
}

Result<std::optional<DeadLetter>> FindDeadLetter(SqlTx& tx, const std::string& id) {
  auto row = tx.QueryOne(std::string("SELECT ") + kColumns +
                             " FROM dead_letters d LEFT JOIN outbox o ON o.id = d.event_id "
                             "WHERE d.id = ?",
                         {id});
  if (!row.ok()) return row.status();
  if (!*row) return std::optional<DeadLetter>();
  return std::optional<DeadLetter>(FromRow(**row));
}

Status ReplayDeadLetter(SqlTx& tx, const std::string& id, WallMillis now, EventReplayer& replayer) {
  auto found = FindDeadLetter(tx, id);
  if (!found.ok()) return found.status();
  if (!*found) return Status::NotFound("dead letter " + id + " not found");
  const DeadLetter& d = **found;
  if (d.replayed_at) {
    return Status::Conflict("already_replayed", "dead letter " + id + " was replayed at " +
                                                    FormatRfc3339(*d.replayed_at));
  }
  if (d.delivery_id) {
    auto r = tx.Exec(
        "UPDATE webhook_deliveries SET status = ?, attempts = 0, next_attempt_at = ?, "
        "last_error = NULL WHERE id = ? AND status = ?",
        {std::string(kDeliveryPending), now, *d.delivery_id, std::string(kDeliveryDead)});
    if (!r.ok()) return r.status();
    if (*r == 0) {
      return Status::Conflict("event_gone", "the delivery of dead letter " + id +
                                                " no longer exists (consumer deregistered?)");
    }
  } else {
    if (!d.event) {
      return Status::Conflict("event_gone", "the outbox no longer holds event " + d.event_id);
    }
    auto sp = tx.Exec("SAVEPOINT replay");
    if (!sp.ok()) return sp.status();
    Status st = replayer.ReplayEvent(d.target, *d.event, tx);
    if (!st.ok()) {
      (void)tx.Exec("ROLLBACK TO replay");
      (void)tx.Exec("RELEASE replay");
      return Status::Conflict("replay_failed", d.target + " failed again: " + st.ToString());
    }
    auto rel = tx.Exec("RELEASE replay");
    if (!rel.ok()) return rel.status();
  }
  auto mark = tx.Exec("UPDATE dead_letters SET replayed_at = ? WHERE id = ?", {now, id});
  return mark.ok() ? Status::Ok() : mark.status();
}

}  // namespace lastcall
