#include "coordination/coordinator.h"

#include <algorithm>

namespace lastcall {

const char* ToString(CoordinationStatus s) {
  switch (s) {
    case CoordinationStatus::kWaiting: return "waiting";
    case CoordinationStatus::kDeleting: return "deleting";
    case CoordinationStatus::kCompleted: return "completed";
  }
  return "waiting";
}

const char* ToString(Outcome o) {
  switch (o) {
    case Outcome::kNone: return "";
    case Outcome::kAllCompleted: return "all_completed";
    case Outcome::kTimedOut: return "timed_out";
  }
  return "";
}

const char* ToString(ConsumerStatus s) {
  switch (s) {
    case ConsumerStatus::kPending: return "pending";
    case ConsumerStatus::kCompleted: return "completed";
    case ConsumerStatus::kFailed: return "failed";
  }
  return "pending";
}

std::optional<CoordinationStatus> ParseCoordinationStatus(const std::string& s) {
  if (s == "waiting") return CoordinationStatus::kWaiting;
  if (s == "deleting") return CoordinationStatus::kDeleting;
  if (s == "completed") return CoordinationStatus::kCompleted;
  return std::nullopt;
}

std::optional<Outcome> ParseOutcome(const std::string& s) {
  if (s.empty()) return Outcome::kNone;
  if (s == "all_completed") return Outcome::kAllCompleted;
  if (s == "timed_out") return Outcome::kTimedOut;
  return std::nullopt;
}

std::optional<ConsumerStatus> ParseConsumerStatus(const std::string& s) {
  if (s == "pending") return ConsumerStatus::kPending;
  if (s == "completed") return ConsumerStatus::kCompleted;
  if (s == "failed") return ConsumerStatus::kFailed;
  return std::nullopt;
}

const Completion* Coordination::CompletionOf(const std::string& consumer) const {
  for (const auto& c : completions) {
    if (c.consumer == consumer && c.expected) return &c;
  }
  return nullptr;
}

std::vector<std::string> Coordination::Pending() const {
  std::vector<std::string> out;
  for (const auto& e : expected) {
    if (!CompletionOf(e)) out.push_back(e);
  }
  return out;
}

bool Decision::Has(ActionKind k) const {
  return std::any_of(actions.begin(), actions.end(), [k](const Action& a) { return a.kind == k; });
}

namespace {

bool IsExpected(const Coordination& c, const std::string& consumer) {
  return std::find(c.expected.begin(), c.expected.end(), consumer) != c.expected.end();
}

bool HasCompletion(const Coordination& c, const std::string& consumer) {
  return std::any_of(c.completions.begin(), c.completions.end(),
                     [&](const Completion& x) { return x.consumer == consumer; });
}

// While waiting: proceed if everyone expected answered, or the deadline has come.
void MaybeProceed(Coordination& c, WallMillis now, Decision& d) {
  if (c.status != CoordinationStatus::kWaiting) return;
  std::vector<std::string> pending = c.Pending();
  if (pending.empty()) {
    c.status = CoordinationStatus::kDeleting;
    c.outcome = Outcome::kAllCompleted;
    c.missing.clear();
    d.actions.push_back({ActionKind::kBeginDeletion, "all expected consumers completed"});
    d.changed = true;
  } else if (now >= c.deadline_at) {
    c.status = CoordinationStatus::kDeleting;
    c.outcome = Outcome::kTimedOut;
    c.missing = pending;
    d.actions.push_back({ActionKind::kWarnTimeout, "deadline passed with consumers missing"});
    d.actions.push_back({ActionKind::kBeginDeletion, "deadline passed"});
    d.changed = true;
  }
}

}  // namespace

Decision Decide(const std::optional<Coordination>& existing, const std::vector<Completion>& early,
                const Input& input, WallMillis now) {
  Decision d;
  d.state = existing;

  if (const auto* req = std::get_if<DeleteRequested>(&input)) {
    if (existing) {
      d.actions.push_back({ActionKind::kIgnore, "duplicate delete request"});
      return d;
    }
    Coordination c;
    c.id = req->coordination_id;
    c.user_id = req->user_id;
    c.file_id = req->file_id;
    c.account_id = req->account_id;
    c.transaction_count = req->transaction_count;
    c.expected = req->expected;
    c.started_at = now;
    c.deadline_at = now + req->timeout_ms;
    for (Completion e : early) {
      if (HasCompletion(c, e.consumer)) continue;
      e.expected = IsExpected(c, e.consumer);
      c.completions.push_back(std::move(e));
    }
    d.actions.push_back({ActionKind::kCreate, "delete requested"});
    d.changed = true;
    d.state = std::move(c);
    MaybeProceed(*d.state, now, d);
    return d;
  }

  if (const auto* rep = std::get_if<CompletionReported>(&input)) {
    Completion comp = rep->completion;
    if (!existing) {
      comp.expected = false;
      d.completion = comp;
      d.actions.push_back({ActionKind::kKeepEarly, "completion before its delete request"});
      return d;
    }
    Coordination c = *existing;
    if (HasCompletion(c, comp.consumer)) {
      d.actions.push_back({ActionKind::kIgnore, "duplicate completion"});
      return d;
    }
    comp.expected = IsExpected(c, comp.consumer);
    if (c.status != CoordinationStatus::kWaiting) {
      // Kept for the record (never counted): the deletion was already decided.
      comp.expected = false;
      d.completion = comp;
      d.actions.push_back({ActionKind::kRecordUnexpected, "completion after the deletion began"});
      c.completions.push_back(comp);
      d.state = std::move(c);
      d.changed = true;
      return d;
    }
    d.completion = comp;
    d.actions.push_back({comp.expected ? ActionKind::kRecordCompletion : ActionKind::kRecordUnexpected,
                         comp.expected ? "completion recorded" : "completion from a consumer "
                                                                 "that was not expected"});
    c.completions.push_back(comp);
    d.changed = true;
    MaybeProceed(c, now, d);
    d.state = std::move(c);
    return d;
  }

  if (std::holds_alternative<Tick>(input)) {
    if (!existing) return d;
    Coordination c = *existing;
    MaybeProceed(c, now, d);
    d.state = std::move(c);
    return d;
  }

  const auto& done = std::get<DeletionDone>(input);
  if (!existing || existing->status != CoordinationStatus::kDeleting) {
    d.actions.push_back({ActionKind::kIgnore, "deletion finished for a coordination not deleting"});
    return d;
  }
  Coordination c = *existing;
  c.status = CoordinationStatus::kCompleted;
  c.completed_at = now;
  c.transactions_deleted = done.transactions_deleted;
  d.actions.push_back({ActionKind::kFinish, "deleted"});
  d.changed = true;
  d.state = std::move(c);
  return d;
}

}  // namespace lastcall
