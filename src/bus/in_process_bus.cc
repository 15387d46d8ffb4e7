#include "bus/in_process_bus.h"

#include <pthread.h>
#include <algorithm>
#include <cstdint>
#include <future>
#include <unordered_set>

#include "bus/delivery.h"
#include "common/log.h"

namespace lastcall {

bool EventPattern::Matches(const CloudEvent& e) const {
  bool type_ok = types.empty() || std::find(types.begin(), types.end(), e.type) != types.end();
  if (!type_ok) return false;
  if (source_prefixes.empty()) return true;
  for (const auto& p : source_prefixes) {
    if (e.source.compare(0, p.size(), p) == 0) return true;
  }
  return false;
}

Status Outbox::Append(SqlTx& tx, const CloudEvent& e, WallMillis now) {
  // Sent without waiting where the engine can: its failure fails the caller's whole unit.
  LASTCALL_RETURN_IF_ERROR(tx.Send(
      "INSERT INTO outbox (id, type, source, subject, time, data, created_at) "
      "VALUES (?, ?, ?, ?, ?, ?, ?)",
      {e.id, e.type, e.source, e.subject, e.time, e.data.dump(), now}));
  tx.AfterCommit([this, type = e.type] {
    metrics_.events_published.Inc({type});
    if (on_commit_) on_commit_();
  });
  return Status::Ok();
}

InProcessBus::InProcessBus(Database& db, Clock& clock, IdGenerator& ids, Metrics& metrics,
                           InProcessBusOptions options)
    : db_(db),
      clock_(clock),
      ids_(ids),
      metrics_(metrics),
      options_(options),
      rng_(std::random_device{}()) {}

InProcessBus::~InProcessBus() { Stop(); }

void InProcessBus::AddTarget(const std::string& target, EventHandler* handler) {
  AddTargetTo(targets_, target, handler);
}

void InProcessBus::AddRule(const Rule& rule) { AddRuleTo(targets_, rule); }

Status InProcessBus::Start() {
  for (const auto& t : targets_) {
    if (!t.handler) return Status::Internal("rule target " + t.name + " has no handler");
  }
  standing_ = std::make_unique<std::atomic<int>[]>(targets_.size());
  for (size_t i = 0; i < targets_.size(); ++i) standing_[i] = kGood;
  if (options_.deliver_in_batch && !targets_.empty()) tail_installed_ = db_.SetBatchTail(this);
  thread_ = std::thread([this] { Loop(); });
  return Status::Ok();
}

void InProcessBus::Notify() {
  {
    std::lock_guard<std::mutex> l(mu_);
    dirty_ = true;
  }
  cv_.notify_one();
}

void InProcessBus::Stop() {
  {
    std::lock_guard<std::mutex> l(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  if (tail_installed_) {
    db_.SetBatchTail(nullptr);  // waits for a batch still running this bus's units
    tail_installed_ = false;
  }
}

Result<int64_t> InProcessBus::Backlog(SqlTx& tx, const std::string& target) {
  // A target with no cursor yet has handled nothing: all of the outbox is its backlog.
  auto r = tx.QueryOne(
      "SELECT COUNT(*) FROM outbox WHERE seq > COALESCE((SELECT last_seq FROM "
      "delivery_cursors WHERE target = ?), 0)",
      {target});
  if (!r.ok()) return r.status();
  return (*r)->Int(0);
}

Result<std::vector<OutboxEventRef>> InProcessBus::Finished(SqlTx& tx, WallMillis finished_before,
                                                           WallMillis implausible_after,
                                                           int limit) {
  std::vector<OutboxEventRef> out;
  if (targets_.empty()) return out;
  auto cursors = tx.QueryAll("SELECT target, last_seq FROM delivery_cursors");
  if (!cursors.ok()) return cursors.status();
  int64_t passed = INT64_MAX;
  for (const Target& t : targets_) {
    auto it = std::find_if(cursors->begin(), cursors->end(),
                           [&](const SqlRow& r) { return r.Text(0) == t.name; });
    if (it == cursors->end()) return out;
    passed = std::min(passed, it->Int(1));
  }
  // Oldest first, up to the first event created at or after finished_before. The age is not a
  // condition of the query: when fewer than limit events were old enough (every round once the
  // pruner has caught up), the database would read the whole retention window looking for more,
  // inside the writer's unit (tens of ms every round at a few hundred deletions a second). The
  // outbox is appended in commit order with the writer's clock, so created_at follows seq; an
  // event behind a younger one (the clock stepped back a little) waits for a later round, never
  // the other way round. A stamp after implausible_after is no age at all (the clock stepped
  // back further than that since): it does not stop the round.
  Status st = tx.Query(std::string("SELECT seq, id, created_at FROM outbox WHERE seq <= ? "
                                   "ORDER BY seq LIMIT ?") +
                           std::string(SkipLockedRowsClause(tx)),
                       {passed, static_cast<int64_t>(limit)},
                       [&](const SqlRow& r) {
                         int64_t created = r.Int(2);
                         if (created >= finished_before && created <= implausible_after) {
                           return false;
                         }
                         out.push_back({r.Int(0), r.Text(1)});
                         return true;
                       });
  if (!st.ok()) return st;
  return out;
}

uint64_t InProcessBus::failures() const {
  std::lock_guard<std::mutex> l(mu_);
  return failures_;
}

namespace {

// Moves target's delivery cursor to seq (the last outbox row it is done with).
Status SetCursor(SqlTx& tx, const std::string& target, int64_t seq) {
  auto up = tx.Exec(
      "INSERT INTO delivery_cursors (target, last_seq) VALUES (?, ?) "
      "ON CONFLICT (target) DO UPDATE SET last_seq = excluded.last_seq",
      {target, seq});
  return up.ok() ? Status::Ok() : up.status();
}

}  // namespace

Result<std::vector<size_t>> InProcessBus::BehindIn(SqlTx& tx, const std::vector<size_t>& of) {
  std::vector<size_t> behind;
  auto top = tx.QueryOne("SELECT MAX(seq) FROM outbox");
  if (!top.ok()) return top.status();
  if (!*top || (*top)->IsNull(0)) return behind;
  int64_t last = (*top)->Int(0);
  auto cursors = tx.QueryAll("SELECT target, last_seq FROM delivery_cursors");
  if (!cursors.ok()) return cursors.status();
  for (size_t i : of) {
    auto it = std::find_if(cursors->begin(), cursors->end(),
                           [&](const SqlRow& r) { return r.Text(0) == targets_[i].name; });
    if ((it == cursors->end() ? 0 : it->Int(1)) < last) behind.push_back(i);
  }
  return behind;
}

Result<std::vector<TailUnit>> InProcessBus::More(SqlTx& tx) {
  std::vector<size_t> good;
  for (size_t i = 0; i < targets_.size(); ++i) {
    if (standing_[i].load() == kGood) good.push_back(i);
  }
  if (good.empty()) return std::vector<TailUnit>{};
  auto behind = BehindIn(tx, good);
  if (!behind.ok()) return behind.status();
  std::vector<TailUnit> units;
  for (size_t i : *behind) {
    const Target* t = &targets_[i];
    auto p = std::make_shared<Progress>();
    units.push_back(TailUnit{
        [this, t, i, p](SqlTx& utx) {
          Status st = DeliverBatch(*t, /*careful=*/false, utx, p.get());
          if (!st.ok()) {
            // Rolled back alone. The dispatcher takes the target over until it delivers it again
            // (this batch's next round included), and settles the failure (an attempt, a
            // careful rerun) before its next round, since it learns of it here, before the
            // commit that wakes it.
            standing_[i] = kTailFailed;
            std::lock_guard<std::mutex> l(mu_);
            tail_failures_.push_back({i, *p, st});
          }
          return st;
        },
        [this, t, i, p](Status st) {
          if (st.ok()) {
            for (const auto& type : p->types) metrics_.events_delivered.Inc({type, t->name});
            return;
          }
          // Failed after its function returned (its batch failed as a whole, or a statement it
          // sent without waiting failed): the dispatcher takes the target over as well, so a
          // lasting failure is retried with backoff there, not by every batch's tail.
          int expected = kGood;
          standing_[i].compare_exchange_strong(expected, kDispatcher);
          Notify();
        }});
  }
  return units;
}

std::vector<size_t> InProcessBus::Behind(const std::vector<size_t>& due) {
  std::vector<size_t> behind;
  Status st = db_.Read([&](SqlTx& tx) -> Status {
    auto r = BehindIn(tx, due);
    if (!r.ok()) return r.status();
    behind = std::move(r).value();
    return Status::Ok();
  });
  return st.ok() ? behind : due;
}

Status InProcessBus::DeliverBatch(const Target& t, bool careful, SqlTx& tx, Progress* p) {
  *p = Progress{};  // an engine may run the unit again: each run reports afresh
  auto cursor_row = tx.QueryOne("SELECT last_seq FROM delivery_cursors WHERE target = ?", {t.name});
  if (!cursor_row.ok()) return cursor_row.status();
  int64_t cursor = *cursor_row ? (*cursor_row)->Int(0) : 0;
  auto rows = tx.QueryAll(
      std::string("SELECT ") + kOutboxEventColumns + " FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?",
      {cursor, static_cast<int64_t>(options_.batch)});
  if (!rows.ok()) return rows.status();
  int64_t last = cursor;
  // Which rows this target wants, matched on their type and source before any JSON is parsed
  // (most rows are for the other targets); then which of those it already processed (an
  // operator's replay can record one ahead of the cursor), in one lookup for the whole batch
  // rather than one per event.
  std::vector<char> wanted(rows->size(), 0);
  SqlParams wanted_ids;
  CloudEvent head;  // type and source only: enough for the patterns
  for (size_t i = 0; i < rows->size(); ++i) {
    const SqlRow& r = (*rows)[i];
    head.type = r.Text(2);
    head.source = r.Text(3);
    wanted[i] = std::any_of(t.patterns.begin(), t.patterns.end(),
                            [&](const EventPattern& pat) { return pat.Matches(head); });
    if (wanted[i]) wanted_ids.emplace_back(std::in_place_type<std::string>, r.Text(1));
  }
  std::unordered_set<std::string> processed;
  if (!wanted_ids.empty()) {
    std::string in = PaddedInList(wanted_ids);
    SqlParams params{t.name};
    params.insert(params.end(), wanted_ids.begin(), wanted_ids.end());
    LASTCALL_RETURN_IF_ERROR(tx.Query(
        "SELECT event_id FROM processed WHERE target = ? AND event_id IN " + in, params,
        [&](const SqlRow& r) {
          processed.insert(r.Text(0));
          return true;
        }));
  }
  ProcessedRecords handled;  // written together once the loop ends
  for (size_t i = 0; i < rows->size(); ++i) {
    const SqlRow& r = (*rows)[i];
    if (!wanted[i]) {
      last = r.Int(0);
      continue;
    }
    if (processed.count(r.Text(1))) {
      log::Info("duplicate delivery ignored", {{"target", t.name}, {"eventId", r.Text(1)}});
      last = r.Int(0);
      continue;
    }
    std::shared_ptr<const CloudEvent> parsed = Parsed(r);
    const CloudEvent& e = *parsed;
    // Optimistic first: no savepoint per event (each costs a copy of every page the handler
    // writes first). A handler that fails then fails the whole unit, and the batch runs again
    // with a savepoint per event, so that the events before the failing one commit without it.
    auto delivered = DeliverInTx(tx, t.name, *t.handler, e, clock_.Now(),
                                 {.check_processed = false, .savepoint = careful,
                                  .defer_processed = &handled});
    if (!delivered.ok()) return delivered.status();
    p->failure = delivered->failure;
    if (!p->failure.ok()) {
      p->failed_seq = e.seq;
      p->failed_event = e.id;
      if (!careful) {
        // Its partial effects are in tx: the unit fails, and the writer rolls all of it back.
        (p->consumed <= 0 ? p->head_failed : p->redo_carefully) = true;
        p->passed = last != cursor ? last : 0;  // rows before it this target does not want
        return p->failure;
      }
      // Count the attempt in this unit (the handler's effects were rolled back above).
      LASTCALL_RETURN_IF_ERROR(RecordAttempt(t, tx, p));
      break;
    }
    if (p->consumed <= 0) {
      // Only the first event a unit handles can have failed before (a failing target stops at
      // its failing event): forget its attempts.
      auto forget = tx.Exec("DELETE FROM delivery_attempts WHERE target = ? AND event_id = ?",
                            {t.name, e.id});
      if (!forget.ok()) return forget.status();
    }
    last = e.seq;
    ++p->consumed;
    p->types.push_back(e.type);
  }
  LASTCALL_RETURN_IF_ERROR(RecordProcessed(tx, t.name, handled));
  if (last != cursor) {
    LASTCALL_RETURN_IF_ERROR(SetCursor(tx, t.name, last));
    if (p->consumed == 0) p->consumed = -1;  // moved past unmatched events: look again at once
  }
  return Status::Ok();
}

std::shared_ptr<const CloudEvent> InProcessBus::Parsed(const SqlRow& r) {
  int64_t seq = r.Int(0);
  std::lock_guard<std::mutex> l(parsed_mu_);
  auto it = parsed_.find(seq);
  if (it != parsed_.end() && it->second->id == r.Text(1)) return it->second;
  if (parsed_.size() >= kParsedCacheSize) parsed_.clear();
  auto e = std::make_shared<const CloudEvent>(EventFromOutboxRow(r));
  parsed_[seq] = e;
  return e;
}

Status InProcessBus::RecordAttempt(const Target& t, SqlTx& tx, Progress* p) {
  auto att = tx.Exec(
      "INSERT INTO delivery_attempts (target, event_id, attempts, last_error, updated_at) "
      "VALUES (?, ?, 1, ?, ?) ON CONFLICT (target, event_id) DO UPDATE SET "
      "attempts = delivery_attempts.attempts + 1, last_error = excluded.last_error, "
      "updated_at = excluded.updated_at",
      {t.name, p->failed_event, p->failure.ToString(), clock_.Now()});
  if (!att.ok()) return att.status();
  auto n = tx.QueryOne("SELECT attempts FROM delivery_attempts WHERE target = ? AND event_id = ?",
                       {t.name, p->failed_event});
  if (!n.ok()) return n.status();
  p->attempts = *n ? (*n)->Int(0) : 1;
  return Status::Ok();
}

Status InProcessBus::ReplayEvent(const std::string& target, const CloudEvent& e, SqlTx& tx) {
  auto it = std::find_if(targets_.begin(), targets_.end(),
                         [&](const Target& t) { return t.name == target; });
  return ReplayInTx(tx, target, it == targets_.end() ? nullptr : it->handler, e, clock_.Now());
}

void InProcessBus::OnFailure(Target& t, const Progress& p) {
  {
    std::lock_guard<std::mutex> l(mu_);
    ++failures_;
  }
  metrics_.delivery_failures.Inc({t.name});
  log::Warn("delivery failed", {{"target", t.name},
                                {"eventId", p.failed_event},
                                {"attempt", p.attempts},
                                {"error", p.failure.ToString()}});
  if (p.attempts < options_.max_attempts) {
    t.retry_at = clock_.Now() + RetryDelayMs(static_cast<int>(p.attempts), options_.backoff_base_ms,
                                             options_.backoff_cap_ms, rng_);
    return;
  }
  // Out of attempts: record the dead letter and move this target past the event, atomically.
  std::string target = t.name;
  Status st = db_.WriteSync([&](SqlTx& tx) -> Status {
    LASTCALL_RETURN_IF_ERROR(RecordDeadLetter(tx, ids_, target, p.failed_event, p.failed_seq,
                                              static_cast<int>(p.attempts), p.failure.ToString(),
                                              clock_.Now()));
    auto forget = tx.Exec("DELETE FROM delivery_attempts WHERE target = ? AND event_id = ?",
                          {target, p.failed_event});
    if (!forget.ok()) return forget.status();
    return SetCursor(tx, target, p.failed_seq);
  });
  if (st.ok()) {
    metrics_.dead_letters.Inc({target});
    log::Error("event dead-lettered", {{"target", target},
                                       {"eventId", p.failed_event},
                                       {"attempts", p.attempts},
                                       {"error", p.failure.ToString()}});
    t.retry_at = 0;
  } else {
    t.retry_at = clock_.Now() + options_.backoff_cap_ms;
  }
}

bool InProcessBus::SettleFailedUnit(Target& t, Progress& p, Status st) {
  if (p.redo_carefully) {
    t.careful = true;  // at once, not an attempt: the failing handler runs again in its savepoint
    return true;
  }
  if (p.head_failed) {
    // Nothing has delivered the event since (standing_ lets no try run before this one is
    // settled), so the attempt counts as it stands.
    st = db_.WriteSync([&](SqlTx& tx) {
      if (p.passed > 0) LASTCALL_RETURN_IF_ERROR(SetCursor(tx, t.name, p.passed));
      return RecordAttempt(t, tx, &p);
    });
    if (st.ok()) {
      OnFailure(t, p);
      return false;
    }
  }
  log::Error("delivery unit failed", {{"target", t.name}, {"error", st.ToString()}});
  t.retry_at = clock_.Now() + options_.backoff_base_ms;
  return false;
}

void InProcessBus::HandBack(size_t i) {
  const Target& t = targets_[i];
  if (t.careful || t.retry_at > clock_.Now()) return;
  int expected = kDispatcher;
  standing_[i].compare_exchange_strong(expected, kGood);  // not over a tail's failure since
}

void InProcessBus::Loop() {
  pthread_setname_np(pthread_self(), "bus-dispatch");  // for ps, perf and the benchmark
  for (;;) {
    std::vector<TailFailure> tail_failures;
    {
      std::lock_guard<std::mutex> l(mu_);
      if (stopping_) return;
      dirty_ = false;
      tail_failures.swap(tail_failures_);
    }
    // Failed units of batch tails count as this thread's own would (they were rolled back alone).
    for (TailFailure& f : tail_failures) {
      Target& t = targets_[f.target];
      (void)SettleFailedUnit(t, f.progress, std::move(f.status));
      standing_[f.target] = kDispatcher;
      HandBack(f.target);
    }
    WallMillis now = clock_.Now();
    std::vector<size_t> due;
    for (size_t i = 0; i < targets_.size(); ++i) {
      if (targets_[i].retry_at <= now) due.push_back(i);
    }
    if (!due.empty()) due = Behind(due);
    // One unit per due target, submitted together so they share a commit.
    std::vector<Progress> progress(due.size());
    std::vector<std::promise<Status>> done(due.size());
    for (size_t k = 0; k < due.size(); ++k) {
      Target* t = &targets_[due[k]];
      Progress* p = &progress[k];
      bool careful = t->careful;
      size_t i = due[k];
      db_.Write(
          [this, t, i, careful, p](SqlTx& tx) {
            // A batch tail's failure of this target is not settled yet (counted as an attempt):
            // deliver nothing, so that no try runs before it counts. Settled next round.
            if (standing_[i].load() == kTailFailed) return Status::Ok();
            Status st = DeliverBatch(*t, careful, tx, p);
            if (!st.ok()) standing_[i] = kDispatcher;  // not in this batch's tail: settled below
            return st;
          },
                [&done, k](Status st) { done[k].set_value(std::move(st)); });
    }
    bool progressed = false;
    for (size_t k = 0; k < due.size(); ++k) {
      Status st = done[k].get_future().get();
      Target& t = targets_[due[k]];
      Progress& p = progress[k];
      if (!st.ok()) {
        progressed |= SettleFailedUnit(t, p, std::move(st));
        continue;
      }
      if (progress[k].consumed != 0) progressed = true;
      for (const auto& type : progress[k].types) metrics_.events_delivered.Inc({type, t.name});
      if (!progress[k].failure.ok()) {
        OnFailure(t, progress[k]);
      } else {
        t.careful = false;
      }
    }
    // Back in good standing for the batch tail once delivered with no failure pending.
    for (size_t i : due) HandBack(i);
    if (progressed) continue;
    WallMillis wake = clock_.Now() + options_.idle_poll_ms;
    for (const auto& t : targets_) {
      if (t.retry_at > clock_.Now()) wake = std::min(wake, t.retry_at);
    }
    std::unique_lock<std::mutex> l(mu_);
    cv_.wait_for(l, std::chrono::milliseconds(std::max<int64_t>(1, wake - clock_.Now())),
                 [&] { return dirty_ || stopping_; });
  }
}

}  // namespace lastcall
