#include "bus/in_process_bus.h"

#include <algorithm>
#include <future>

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
  auto r = tx.Exec(
      "INSERT INTO outbox (id, type, source, subject, time, data, created_at) "
      "VALUES (?, ?, ?, ?, ?, ?, ?)",
      {e.id, e.type, e.source, e.subject, e.time, e.data.dump(), now});
  if (!r.ok()) return r.status();
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
  for (auto& t : targets_) {
    if (t.name == target) {
      t.handler = handler;
      return;
    }
  }
  Target t;
  t.name = target;
  t.handler = handler;
  targets_.push_back(std::move(t));
}

void InProcessBus::AddRule(const Rule& rule) {
  for (const auto& name : rule.targets) {
    auto it = std::find_if(targets_.begin(), targets_.end(),
                           [&](const Target& t) { return t.name == name; });
    if (it == targets_.end()) {
      AddTarget(name, nullptr);
      it = targets_.end() - 1;
    }
    it->patterns.push_back(rule.pattern);
  }
}

Status InProcessBus::Start() {
  for (const auto& t : targets_) {
    if (!t.handler) return Status::Internal("rule target " + t.name + " has no handler");
  }
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
}

uint64_t InProcessBus::failures() const {
  std::lock_guard<std::mutex> l(mu_);
  return failures_;
}

Status InProcessBus::DeliverBatch(Target& t, SqlTx& tx, Progress* p) {
  auto cursor_row = tx.QueryOne("SELECT last_seq FROM delivery_cursors WHERE target = ?", {t.name});
  if (!cursor_row.ok()) return cursor_row.status();
  int64_t cursor = *cursor_row ? (*cursor_row)->Int(0) : 0;
  auto rows = tx.QueryAll(
      "SELECT seq, id, type, source, subject, time, data FROM outbox WHERE seq > ? "
      "ORDER BY seq LIMIT ?",
      {cursor, static_cast<int64_t>(options_.batch)});
  if (!rows.ok()) return rows.status();
  int64_t last = cursor;
  for (const SqlRow& r : *rows) {
    CloudEvent e;
    e.seq = r.Int(0);
    e.id = r.Text(1);
    e.type = r.Text(2);
    e.source = r.Text(3);
    e.subject = r.Text(4);
    e.time = r.Text(5);
    e.data = nlohmann::json::parse(r.Text(6), nullptr, false);
    bool wanted = std::any_of(t.patterns.begin(), t.patterns.end(),
                              [&](const EventPattern& pat) { return pat.Matches(e); });
    if (!wanted) {
      last = e.seq;
      continue;
    }
    auto seen = tx.QueryOne("SELECT 1 FROM processed WHERE target = ? AND event_id = ?",
                            {t.name, e.id});
    if (!seen.ok()) return seen.status();
    if (*seen) {
      log::Info("duplicate delivery ignored", {{"target", t.name}, {"eventId", e.id}});
      last = e.seq;
      continue;
    }
    if (e.data.is_discarded()) {
      p->failure = Status::Internal("stored event data is not JSON");
    } else {
      auto sp = tx.Exec("SAVEPOINT delivery");
      if (!sp.ok()) return sp.status();
      p->failure = t.handler->Handle(e, tx);
      if (!p->failure.ok()) {
        (void)tx.Exec("ROLLBACK TO delivery");
      }
      auto rel = tx.Exec("RELEASE delivery");
      if (!rel.ok()) return rel.status();
    }
    if (!p->failure.ok()) {
      p->failed_seq = e.seq;
      p->failed_event = e.id;
      break;
    }
    auto rec = tx.Exec("INSERT INTO processed (target, event_id, processed_at) VALUES (?, ?, ?)",
                       {t.name, e.id, clock_.Now()});
    if (!rec.ok()) return rec.status();
    last = e.seq;
    ++p->consumed;
    p->types.push_back(e.type);
  }
  if (last != cursor) {
    auto up = tx.Exec(
        "INSERT INTO delivery_cursors (target, last_seq) VALUES (?, ?) "
        "ON CONFLICT (target) DO UPDATE SET last_seq = excluded.last_seq",
        {t.name, last});
    if (!up.ok()) return up.status();
    if (p->consumed == 0) p->consumed = -1;  // moved past unmatched events: look again at once
  }
  return Status::Ok();
}

Status InProcessBus::ReplayEvent(const std::string& target, const CloudEvent& e, SqlTx& tx) {
  auto it = std::find_if(targets_.begin(), targets_.end(),
                         [&](const Target& t) { return t.name == target; });
  if (it == targets_.end() || !it->handler) return Status::NotFound("no such target: " + target);
  auto seen = tx.QueryOne("SELECT 1 FROM processed WHERE target = ? AND event_id = ?", {target, e.id});
  if (!seen.ok()) return seen.status();
  if (*seen) return Status::Ok();
  LASTCALL_RETURN_IF_ERROR(it->handler->Handle(e, tx));
  auto rec = tx.Exec("INSERT INTO processed (target, event_id, processed_at) VALUES (?, ?, ?)",
                     {target, e.id, clock_.Now()});
  return rec.ok() ? Status::Ok() : rec.status();
}

void InProcessBus::OnFailure(Target& t, const Progress& p) {
  {
    std::lock_guard<std::mutex> l(mu_);
    ++failures_;
  }
  metrics_.delivery_failures.Inc({t.name});
  if (t.failing_event != p.failed_event) {
    t.failing_event = p.failed_event;
    t.attempts = 0;
  }
  ++t.attempts;
  log::Warn("delivery failed", {{"target", t.name},
                                {"eventId", p.failed_event},
                                {"attempt", t.attempts},
                                {"error", p.failure.ToString()}});
  if (t.attempts < options_.max_attempts) {
    int64_t cap = std::min(options_.backoff_cap_ms,
                           options_.backoff_base_ms << std::min(t.attempts - 1, 20));
    std::uniform_int_distribution<int64_t> jitter(0, std::max<int64_t>(cap, 1));
    t.retry_at = clock_.Now() + jitter(rng_);
    return;
  }
  // Out of attempts: record the dead letter and move this target past the event, atomically.
  std::string target = t.name;
  Status st = db_.WriteSync([&](SqlTx& tx) -> Status {
    auto ins = tx.Exec(
        "INSERT INTO dead_letters (id, target, event_id, event_seq, attempts, error, created_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        {ids_.NewUuid(), target, p.failed_event, p.failed_seq, static_cast<int64_t>(t.attempts),
         p.failure.ToString(), clock_.Now()});
    if (!ins.ok()) return ins.status();
    auto up = tx.Exec(
        "INSERT INTO delivery_cursors (target, last_seq) VALUES (?, ?) "
        "ON CONFLICT (target) DO UPDATE SET last_seq = excluded.last_seq",
        {target, p.failed_seq});
    return up.ok() ? Status::Ok() : up.status();
  });
  if (st.ok()) {
    metrics_.dead_letters.Inc({target});
    log::Error("event dead-lettered", {{"target", target},
                                       {"eventId", p.failed_event},
                                       {"attempts", t.attempts},
                                       {"error", p.failure.ToString()}});
    t.attempts = 0;
    t.failing_event.clear();
    t.retry_at = 0;
  } else {
    t.retry_at = clock_.Now() + options_.backoff_cap_ms;
  }
}

void InProcessBus::Loop() {
  for (;;) {
    {
      std::lock_guard<std::mutex> l(mu_);
      if (stopping_) return;
      dirty_ = false;
    }
    WallMillis now = clock_.Now();
    std::vector<size_t> due;
    for (size_t i = 0; i < targets_.size(); ++i) {
      if (targets_[i].retry_at <= now) due.push_back(i);
    }
    // One unit per due target, submitted together so they share a commit.
    std::vector<Progress> progress(due.size());
    std::vector<std::promise<Status>> done(due.size());
    for (size_t k = 0; k < due.size(); ++k) {
      Target* t = &targets_[due[k]];
      Progress* p = &progress[k];
      db_.Write([this, t, p](SqlTx& tx) { return DeliverBatch(*t, tx, p); },
                [&done, k](Status st) { done[k].set_value(std::move(st)); });
    }
    bool progressed = false;
    for (size_t k = 0; k < due.size(); ++k) {
      Status st = done[k].get_future().get();
      Target& t = targets_[due[k]];
      if (!st.ok()) {
        log::Error("delivery unit failed", {{"target", t.name}, {"error", st.ToString()}});
        t.retry_at = clock_.Now() + options_.backoff_base_ms;
        continue;
      }
      if (progress[k].consumed != 0) progressed = true;
      for (const auto& type : progress[k].types) metrics_.events_delivered.Inc({type, t.name});
      if (!progress[k].failure.ok()) {
        OnFailure(t, progress[k]);
      } else if (t.attempts > 0) {
        t.attempts = 0;
        t.failing_event.clear();
      }
    }
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
