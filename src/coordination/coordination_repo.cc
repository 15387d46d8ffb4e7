#include "coordination/coordination_repo.h"

#include <algorithm>
#include <string_view>
#include <tuple>

#include <nlohmann/json.hpp>

namespace lastcall {
namespace {

std::string JoinJson(const std::vector<std::string>& v) { return nlohmann::json(v).dump(); }

std::vector<std::string> SplitJson(const std::string& s) {
  auto j = nlohmann::json::parse(s, nullptr, false);
  std::vector<std::string> out;
  if (!j.is_array()) return out;
  for (const auto& x : j) {
    if (x.is_string()) out.push_back(x.get<std::string>());
  }
  return out;
}

SqlValue OptInt(const std::optional<int64_t>& v) { return v ? SqlValue(*v) : SqlValue(SqlNull{}); }
SqlValue OptText(const std::optional<std::string>& v) {
  return v ? SqlValue(*v) : SqlValue(SqlNull{});
}

// {"graceMs": N, "consumers": [{"name", "priority", "timeoutMs"}]}; NULL when there are none
// (every consumer critical until the deadline, as before policies existed).
SqlValue PoliciesJson(const Coordination& c) {
  if (c.policies.empty() && c.optional_grace_ms == 0) return SqlNull{};
  nlohmann::json arr = nlohmann::json::array();
  for (const auto& p : c.policies) {
    arr.push_back({{"name", p.name}, {"priority", ToString(p.priority)}, {"timeoutMs", p.timeout_ms}});
  }
  return nlohmann::json{{"graceMs", c.optional_grace_ms}, {"consumers", arr}}.dump();
}

void ParsePolicies(const std::string& s, Coordination* c) {
  auto j = nlohmann::json::parse(s, nullptr, false);
  if (!j.is_object()) return;
  c->optional_grace_ms = j.value("graceMs", int64_t{0});
  auto it = j.find("consumers");
  if (it == j.end() || !it->is_array()) return;
  for (const auto& x : *it) {
    if (!x.is_object()) continue;
    ConsumerPolicy p;
    p.name = x.value("name", std::string());
    p.priority = ParseConsumerPriority(x.value("priority", std::string()))
                     .value_or(ConsumerPriority::kCritical);
    p.timeout_ms = x.value("timeoutMs", int64_t{0});
    c->policies.push_back(std::move(p));
  }
}

// {"<consumer>": "<rule>"} in expected order (an array of pairs keeps the order).
SqlValue ProceededJson(const Coordination& c) {
  if (c.proceeded_by.empty()) return SqlNull{};
  nlohmann::json arr = nlohmann::json::array();
  for (const auto& [name, rule] : c.proceeded_by) arr.push_back({name, ToString(rule)});
  return arr.dump();
}

void ParseProceeded(const std::string& s, Coordination* c) {
  auto j = nlohmann::json::parse(s, nullptr, false);
  if (!j.is_array()) return;
  for (const auto& x : j) {
    if (!x.is_array() || x.size() != 2 || !x[0].is_string() || !x[1].is_string()) continue;
    if (auto r = ParseProceedRule(x[1].get<std::string>())) {
      c->proceeded_by.push_back({x[0].get<std::string>(), *r});
    }
  }
}

// The veto and override columns (NULL when there is none).
SqlValue VetoBy(const Coordination& c) { return c.veto ? SqlValue(c.veto->consumer) : SqlNull{}; }
SqlValue VetoReason(const Coordination& c) { return c.veto ? SqlValue(c.veto->reason) : SqlNull{}; }
SqlValue VetoAt(const Coordination& c) { return c.veto ? SqlValue(c.veto->at) : SqlNull{}; }
SqlValue OverrideBy(const Coordination& c) {
  return c.overridden ? SqlValue(c.overridden->by) : SqlNull{};
}
SqlValue OverrideReason(const Coordination& c) {
  return c.overridden ? SqlValue(c.overridden->reason) : SqlNull{};
}
SqlValue OverrideAt(const Coordination& c) {
  return c.overridden ? SqlValue(c.overridden->at) : SqlNull{};
}

// kWait's advisory lock on the id (PostgreSQL): it also covers a coordination whose row does not
// exist yet (a completion that arrives before its request, on another node). Its result is not
// read: sent without waiting (the caller's row lock waits behind it). Held until the transaction
// ends, by every writer of a coordination's completions.
Status LockCoordinationId(SqlTx& tx, const std::string& id) {
  return tx.Send("SELECT pg_advisory_xact_lock(hashtextextended(?, 0))", {id});
}

}  // namespace

Result<bool> ClaimCoordination(SqlTx& tx, const std::string& id, ClaimMode mode) {
  // SQLite: a lookup only (the single writer runs units alone).
  if (tx.dialect() != SqlDialect::kPostgres) return CoordinationExists(tx, id);
  // The row lock conflicts with the driver's SKIP LOCKED claims.
  if (mode == ClaimMode::kWait) LASTCALL_RETURN_IF_ERROR(LockCoordinationId(tx, id));
  auto r = tx.QueryOne(std::string("SELECT 1 FROM coordinations WHERE id = ?") +
                           std::string(mode == ClaimMode::kWait ? LockRowsClause(tx)
                                                                : SkipLockedRowsClause(tx)),
                       {id});
  if (!r.ok()) return r.status();
  return r->has_value();
}

namespace {

Completion CompletionFromRow(const SqlRow& r, size_t first) {
  Completion c;
  c.consumer = r.Text(first);
  c.status = ParseConsumerStatus(r.Text(first + 1)).value_or(ConsumerStatus::kFailed);
  c.detail_json = r.Text(first + 2);
  c.expected = r.Int(first + 3) != 0;
  c.at = r.Int(first + 4);
  c.event_id = r.Text(first + 5);
  return c;
}

// The coordination's columns (from its first row), in ReadCoordination's order, then its
// completions' (CompletionFromRow's order; NULL when it has none), one row per completion in no
// particular order (QueryCoordination sorts them: a few rows, and no sort step in the engine).
constexpr char kCoordinationWithCompletions[] =
    "SELECT c.id, c.user_id, c.file_id, c.account_id, c.transaction_count, c.expected_consumers, "
    "c.status, c.outcome, c.missing_consumers, c.started_at, c.deadline_at, c.completed_at, "
    "c.transactions_deleted, c.not_before_at, c.due_at, c.hold_reason, c.cancelled_at, "
    "c.verification, c.residue, c.verified_at, c.consumer_policies, c.proceeded_by, c.vetoed_by, "
    "c.veto_reason, c.vetoed_at, c.overridden_by, c.override_reason, c.overridden_at, "
    "k.consumer, k.status, k.detail, k.expected, k.completed_at, k.event_id "
    "FROM coordinations c LEFT JOIN coordination_completions k ON k.coordination_id = c.id "
    "WHERE c.id = ?";
constexpr size_t kFirstCompletionColumn = 28;

Status ReadCoordination(const SqlRow& r, Coordination* out) {
  Coordination& c = *out;
  c.id = r.Text(0);
  c.user_id = r.Text(1);
  c.file_id = r.Text(2);
  c.account_id = r.Text(3);
  c.transaction_count = r.Int(4);
  c.expected = SplitJson(r.Text(5));
  auto status = ParseCoordinationStatus(r.Text(6));
  if (!status) return Status::Internal("coordination " + c.id + " has an unknown status");
  c.status = *status;
  c.outcome = ParseOutcome(r.Text(7)).value_or(Outcome::kNone);
  c.missing = SplitJson(r.IsNull(8) ? "[]" : r.Text(8));
  c.started_at = r.Int(9);
  c.deadline_at = r.Int(10);
  c.completed_at = r.OptInt(11);
  c.transactions_deleted = r.OptInt(12);
  c.not_before = r.IsNull(13) ? c.started_at : r.Int(13);
  c.due_at = r.OptInt(14);
  c.hold_reason = r.OptText(15);
  c.cancelled_at = r.OptInt(16);
  c.verification = r.OptText(17);
  c.residue_json = r.IsNull(18) ? "{}" : r.Text(18);
  c.verified_at = r.OptInt(19);
  if (!r.IsNull(20)) ParsePolicies(r.Text(20), &c);
  if (!r.IsNull(21)) ParseProceeded(r.Text(21), &c);
  if (!r.IsNull(22)) c.veto = Coordination::Veto{r.Text(22), r.Text(23), r.Int(24)};
  if (!r.IsNull(25)) c.overridden = Coordination::Override{r.Text(25), r.Text(26), r.Int(27)};
  return Status::Ok();
}

// Runs kCoordinationWithCompletions followed by suffix (a row-lock clause on PostgreSQL).
Result<std::optional<Coordination>> QueryCoordination(SqlTx& tx, const std::string& id,
                                                      std::string_view suffix) {
  std::optional<Coordination> out;
  Status parsed = Status::Ok();
  Status st = tx.Query(std::string(kCoordinationWithCompletions) + std::string(suffix), {id},
                       [&](const SqlRow& r) {
                         if (!out) {
                           out.emplace();
                           parsed = ReadCoordination(r, &*out);
                           if (!parsed.ok()) return false;
                         }
                         if (!r.IsNull(kFirstCompletionColumn)) {
                           out->completions.push_back(CompletionFromRow(r, kFirstCompletionColumn));
                         }
                         return true;
                       });
  if (!st.ok()) return st;
  if (!parsed.ok()) return parsed;
  if (out) {
    // The order they are kept in (LoadCompletions'): completed_at, then consumer.
    std::sort(out->completions.begin(), out->completions.end(),
              [](const Completion& a, const Completion& b) {
                return std::tie(a.at, a.consumer) < std::tie(b.at, b.consumer);
              });
  }
  return out;
}

}  // namespace

Result<std::optional<Coordination>> ClaimAndLoadCoordination(SqlTx& tx, const std::string& id,
                                                             ClaimMode mode, bool* taken) {
  if (taken) *taken = false;
  if (tx.dialect() != SqlDialect::kPostgres) return QueryCoordination(tx, id, "");
  if (mode == ClaimMode::kWait) {
    // As ClaimCoordination: the advisory lock first (sent; the query waits behind it), then the
    // row lock, taken by the read itself. Every writer of a coordination's completions holds the
    // advisory lock until it commits, so this statement's snapshot, taken once the advisory lock
    // is ours, has all of them; the row's own columns are its newest version (FOR UPDATE).
    LASTCALL_RETURN_IF_ERROR(LockCoordinationId(tx, id));
    return QueryCoordination(tx, id, " FOR UPDATE OF c");
  }
  auto c = QueryCoordination(tx, id, " FOR UPDATE OF c SKIP LOCKED");
  if (!c.ok() || c->has_value()) return c;
  // Nothing returned: held by another transaction, or no such row (rare: look which).
  auto exists = CoordinationExists(tx, id);
  if (!exists.ok()) return exists.status();
  if (taken) *taken = *exists;
  return std::optional<Coordination>();
}

Result<std::vector<Completion>> LoadCompletions(SqlTx& tx, const std::string& coordination_id) {
  std::vector<Completion> out;
  Status st = tx.Query(
      "SELECT consumer, status, detail, expected, completed_at, event_id FROM "
      "coordination_completions WHERE coordination_id = ? ORDER BY completed_at, consumer",
      {coordination_id}, [&](const SqlRow& r) {
        out.push_back(CompletionFromRow(r, 0));
        return true;
      });
  if (!st.ok()) return st;
  return out;
}

Result<std::optional<Coordination>> LoadCoordination(SqlTx& tx, const std::string& id) {
  return QueryCoordination(tx, id, "");
}

Result<bool> CoordinationExists(SqlTx& tx, const std::string& id) {
  auto row = tx.QueryOne("SELECT 1 FROM coordinations WHERE id = ?", {id});
  if (!row.ok()) return row.status();
  return row->has_value();
}

Status InsertCoordination(SqlTx& tx, const Coordination& c) {
  // Sent: its key is a fresh id (or one its claim found free), so only the store can fail it.
  LASTCALL_RETURN_IF_ERROR(tx.Send(
      "INSERT INTO coordinations (id, user_id, file_id, account_id, transaction_count, "
      "expected_consumers, status, outcome, missing_consumers, started_at, deadline_at, "
      "completed_at, transactions_deleted, not_before_at, due_at, hold_reason, cancelled_at, "
      "consumer_policies, proceeded_by, vetoed_by, veto_reason, vetoed_at, overridden_by, "
      "override_reason, overridden_at) "
      "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
      {c.id, c.user_id, c.file_id, c.account_id, c.transaction_count, JoinJson(c.expected),
       std::string(ToString(c.status)),
       c.outcome == Outcome::kNone ? SqlValue(SqlNull{}) : SqlValue(std::string(ToString(c.outcome))),
       JoinJson(c.missing), c.started_at, c.deadline_at, OptInt(c.completed_at),
       OptInt(c.transactions_deleted), c.not_before, OptInt(c.due_at), OptText(c.hold_reason),
       OptInt(c.cancelled_at), PoliciesJson(c), ProceededJson(c), VetoBy(c), VetoReason(c),
       VetoAt(c), OverrideBy(c), OverrideReason(c), OverrideAt(c)}));
  for (const auto& comp : c.completions) LASTCALL_RETURN_IF_ERROR(UpsertCompletion(tx, c.id, comp));
  return Status::Ok();
}

namespace {

// The decision columns of UpdateCoordinationDecision, in its order.
SqlParams DecisionValues(const Coordination& c) {
  return {std::string(ToString(c.status)),
          c.outcome == Outcome::kNone ? SqlValue(SqlNull{}) : SqlValue(std::string(ToString(c.outcome))),
          JoinJson(c.missing), OptInt(c.completed_at), OptInt(c.transactions_deleted), OptInt(c.due_at),
          OptText(c.hold_reason), OptInt(c.cancelled_at), ProceededJson(c), VetoBy(c), VetoReason(c),
          VetoAt(c), OverrideBy(c), OverrideReason(c), OverrideAt(c)};
}

bool SameValues(const SqlParams& a, const SqlParams& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (a[i].index() != b[i].index()) return false;
    if (const auto* x = std::get_if<int64_t>(&a[i]); x && *x != std::get<int64_t>(b[i])) return false;
    if (const auto* x = std::get_if<std::string>(&a[i]); x && *x != std::get<std::string>(b[i])) {
      return false;
    }
  }
  return true;
}

}  // namespace

Status UpdateCoordinationDecision(SqlTx& tx, const Coordination& c,
                                  const std::optional<std::string>& blob_key,
                                  const Coordination* stored) {
  SqlParams params = DecisionValues(c);
  if (stored && !blob_key && SameValues(params, DecisionValues(*stored))) return Status::Ok();
  if (blob_key) params.push_back(*blob_key);
  params.push_back(c.id);
  auto r = tx.Exec(
      blob_key
          ? "UPDATE coordinations SET status = ?, outcome = ?, missing_consumers = ?, "
            "completed_at = ?, transactions_deleted = ?, due_at = ?, hold_reason = ?, "
            "cancelled_at = ?, proceeded_by = ?, vetoed_by = ?, veto_reason = ?, vetoed_at = ?, "
            "overridden_by = ?, override_reason = ?, overridden_at = ?, blob_key = ? WHERE id = ?"
          : "UPDATE coordinations SET status = ?, outcome = ?, missing_consumers = ?, "
            "completed_at = ?, transactions_deleted = ?, due_at = ?, hold_reason = ?, "
            "cancelled_at = ?, proceeded_by = ?, vetoed_by = ?, veto_reason = ?, vetoed_at = ?, "
            "overridden_by = ?, override_reason = ?, overridden_at = ? WHERE id = ?",
      params);
  if (!r.ok()) return r.status();
  if (*r != 1) return Status::Internal("coordination " + c.id + " vanished during an update");
  return Status::Ok();
}

Status UpsertCompletion(SqlTx& tx, const std::string& coordination_id, const Completion& c) {
  // Sent: a second report of one consumer is the ON CONFLICT, so only the store can fail it.
  return tx.Send(
      "INSERT INTO coordination_completions (coordination_id, consumer, status, detail, expected, "
      "completed_at, event_id) VALUES (?, ?, ?, ?, ?, ?, ?) "
      "ON CONFLICT (coordination_id, consumer) DO UPDATE SET expected = excluded.expected",
      {coordination_id, c.consumer, std::string(ToString(c.status)), c.detail_json,
       static_cast<int64_t>(c.expected ? 1 : 0), c.at, c.event_id});
}

Result<std::vector<DueCoordination>> DueCoordinations(SqlTx& tx, CoordinationStatus s,
                                                      WallMillis due, int limit) {
  std::vector<DueCoordination> out;
  // Waiting ones by their timer (due_at: deadline or grace end); deleting ones all, oldest first.
  Status st = tx.Query(
      s == CoordinationStatus::kWaiting
          ? "SELECT id, account_id FROM coordinations WHERE status = ? AND due_at <= ? ORDER BY "
            "due_at LIMIT ?"
          : "SELECT id, account_id FROM coordinations WHERE status = ? AND deadline_at <= ? "
            "ORDER BY deadline_at LIMIT ?",
      {std::string(ToString(s)), s == CoordinationStatus::kWaiting ? due : INT64_MAX,
       static_cast<int64_t>(limit)},
      [&](const SqlRow& r) {
        out.push_back({r.Text(0), r.Text(1)});
        return true;
      });
  if (!st.ok()) return st;
  return out;
}

Status AppendTimeline(SqlTx& tx, const std::string& coordination_id, WallMillis at,
                      const std::string& kind, const std::string& detail_json) {
  return tx.Send(
      "INSERT INTO coordination_timeline (coordination_id, at, kind, detail) VALUES (?, ?, ?, ?)",
      {coordination_id, at, kind, detail_json});
}

Status AppendTimeline(SqlTx& tx, const std::string& coordination_id,
                      const std::vector<TimelineEntry>& entries) {
  if (entries.empty()) return Status::Ok();
  // One multi-row INSERT: both engines insert VALUES rows in their order, so seq keeps it.
  std::string sql = "INSERT INTO coordination_timeline (coordination_id, at, kind, detail) VALUES " +
                    ValuesRows(4, entries.size());
  SqlParams params;
  params.reserve(entries.size() * 4);
  for (size_t i = 0; i < entries.size(); ++i) {
    params.push_back(coordination_id);
    params.push_back(entries[i].at);
    params.push_back(entries[i].kind);
    params.push_back(entries[i].detail_json);
  }
  return tx.Send(sql, params);
}

Result<std::vector<TimelineEntry>> LoadTimeline(SqlTx& tx, const std::string& coordination_id) {
  std::vector<TimelineEntry> out;
  Status st = tx.Query(
      "SELECT at, kind, detail FROM coordination_timeline WHERE coordination_id = ? ORDER BY seq",
      {coordination_id}, [&](const SqlRow& r) {
        out.push_back({r.Int(0), r.Text(1), r.Text(2)});
        return true;
      });
  if (!st.ok()) return st;
  return out;
}

Result<std::vector<Coordination>> ListCoordinations(SqlTx& tx, const CoordinationFilter& f,
                                                    bool* more) {
  std::string sql = "SELECT id FROM coordinations c WHERE 1 = 1";
  SqlParams params;
  if (f.user_id) {
    sql += " AND c.user_id = ?";
    params.push_back(*f.user_id);
  }
  if (f.status) {
    sql += " AND c.status = ?";
    params.push_back(std::string(ToString(*f.status)));
  }
  if (f.outcome) {
    sql += " AND c.outcome = ?";
    params.push_back(std::string(ToString(*f.outcome)));
  }
  if (f.pending_consumer) {
    // Expected (the JSON array holds the quoted name) and no counted completion yet.
    // LIKE with every wildcard escaped: a substring test both engines run alike (consumer names
    // are lower case, so SQLite's case-insensitive LIKE matches exactly what PostgreSQL's does).
    sql += " AND c.expected_consumers LIKE ? ESCAPE '\\' AND NOT EXISTS (SELECT 1 FROM "
           "coordination_completions k WHERE k.coordination_id = c.id AND k.consumer = ? AND "
           "k.expected = 1)";
    std::string pattern = "%";
    for (char ch : nlohmann::json(*f.pending_consumer).dump()) {
      if (ch == '%' || ch == '_' || ch == '\\') pattern += '\\';
      pattern += ch;
    }
    pattern += '%';
    params.push_back(pattern);
    params.push_back(*f.pending_consumer);
  }
  if (f.after) {
    sql += " AND (c.started_at < ? OR (c.started_at = ? AND c.id < ?))";
    params.push_back(f.after->first);
    params.push_back(f.after->first);
    params.push_back(f.after->second);
  }
  sql += " ORDER BY c.started_at DESC, c.id DESC LIMIT ?";
  params.push_back(static_cast<int64_t>(f.limit) + 1);
  std::vector<std::string> ids;
  Status st = tx.Query(sql, params, [&](const SqlRow& r) {
    ids.push_back(r.Text(0));
    return true;
  });
  if (!st.ok()) return st;
  *more = static_cast<int>(ids.size()) > f.limit;
  if (*more) ids.pop_back();
  std::vector<Coordination> out;
  for (const auto& id : ids) {
    auto c = LoadCoordination(tx, id);
    if (!c.ok()) return c.status();
    if (*c) out.push_back(std::move(**c));
  }
  return out;
}

Result<std::optional<WallMillis>> NextDeadline(SqlTx& tx) {
  auto r = tx.QueryOne("SELECT MIN(due_at) FROM coordinations WHERE status = 'waiting'");
  if (!r.ok()) return r.status();
  if (!*r || (*r)->IsNull(0)) return std::optional<WallMillis>();
  return std::optional<WallMillis>((*r)->Int(0));
}

}  // namespace lastcall
