#include "coordination/coordinator.h"

#include <algorithm>

namespace lastcall {

const char* ToString(CoordinationStatus s) {
  switch (s) {
    case CoordinationStatus::kWaiting: return "waiting";
    case CoordinationStatus::kDeleting: return "deleting";
    case CoordinationStatus::kCompleted: return "completed";
    case CoordinationStatus::kHeld: return "held";
    case CoordinationStatus::kCancelled: return "cancelled";
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
  if (s == "held") return CoordinationStatus::kHeld;
  if (s == "cancelled") return CoordinationStatus::kCancelled;
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

// While waiting and past the grace window: proceed if everyone expected answered, or the deadline
// has come.
void MaybeProceed(Coordination& c, WallMillis now, Decision& d) {
  if (c.status != CoordinationStatus::kWaiting) return;
  if (now < c.not_before) return;
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

// When a Tick may change c next (see Coordination::due_at).
std::optional<WallMillis> DueAt(const Coordination& c) {
  if (c.status != CoordinationStatus::kWaiting) return std::nullopt;
  if (c.Pending().empty()) return c.not_before;
  return std::max(c.deadline_at, c.not_before);
}

// The owner's cancel: wins while the deletion has not begun.
Decision DecideCancel(const std::optional<Coordination>& existing, WallMillis now) {
  Decision d;
  d.state = existing;
  if (!existing) {
    d.actions.push_back({ActionKind::kIgnore, "cancel of an unknown coordination"});
    return d;
  }
  Coordination c = *existing;
  switch (c.status) {
    case CoordinationStatus::kWaiting:
    case CoordinationStatus::kHeld:
      c.status = CoordinationStatus::kCancelled;
      c.cancelled_at = now;
      c.hold_reason.reset();
      d.actions.push_back({ActionKind::kCancel, "cancelled by the owner"});
      d.changed = true;
      d.state = std::move(c);
      return d;
    case CoordinationStatus::kCancelled:
      d.actions.push_back({ActionKind::kIgnore, "already cancelled"});
      return d;
    case CoordinationStatus::kDeleting:
    case CoordinationStatus::kCompleted:
      d.actions.push_back({ActionKind::kRefuseCancel, "the deletion has already begun"});
      return d;
  }
  return d;
}

// Legal holds: a held coordination waits for the release, whatever its consumers and deadline.
Decision DecideHold(const std::optional<Coordination>& existing, const Input& input,
                    WallMillis now) {
  Decision d;
  d.state = existing;
  if (!existing) return d;
  Coordination c = *existing;
  if (const auto* placed = std::get_if<HoldPlaced>(&input)) {
    if (c.status != CoordinationStatus::kWaiting) {
      d.actions.push_back({ActionKind::kIgnore, std::string("hold on a coordination ") +
                                                    ToString(c.status)});
      return d;
    }
    c.status = CoordinationStatus::kHeld;
    c.hold_reason = placed->reason;
    d.actions.push_back({ActionKind::kHold, placed->reason});
    d.changed = true;
    d.state = std::move(c);
    return d;
  }
  const auto& released = std::get<HoldReleased>(input);
  if (c.status != CoordinationStatus::kHeld) {
    d.actions.push_back({ActionKind::kIgnore, "release of a coordination not held"});
    return d;
  }
  if (released.still_held) {
    if (c.hold_reason != released.still_held) {
      c.hold_reason = released.still_held;
      d.changed = true;
    }
    d.state = std::move(c);
    return d;
  }
  c.status = CoordinationStatus::kWaiting;
  c.hold_reason.reset();
  d.actions.push_back({ActionKind::kRelease, "every hold released"});
  d.changed = true;
  MaybeProceed(c, now, d);
  d.state = std::move(c);
  return d;
}

Decision DecideInner(const std::optional<Coordination>& existing,
                     const std::vector<Completion>& early, const Input& input, WallMillis now);

}  // namespace

Decision Decide(const std::optional<Coordination>& existing, const std::vector<Completion>& early,
                const Input& input, WallMillis now) {
  Decision d;
  if (std::holds_alternative<CancelRequested>(input)) {
    d = DecideCancel(existing, now);
  } else if (std::holds_alternative<HoldPlaced>(input) ||
             std::holds_alternative<HoldReleased>(input)) {
    d = DecideHold(existing, input, now);
  } else {
    d = DecideInner(existing, early, input, now);
  }
  if (d.state && d.changed) d.state->due_at = DueAt(*d.state);
  return d;
}

namespace {

Decision DecideInner(const std::optional<Coordination>& existing,
                     const std::vector<Completion>& early, const Input& input, WallMillis now) {
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
    c.not_before = now + std::max<int64_t>(0, req->grace_ms);
    for (Completion e : early) {
      if (HasCompletion(c, e.consumer)) continue;
      e.expected = IsExpected(c, e.consumer);
      c.completions.push_back(std::move(e));
    }
    d.actions.push_back({ActionKind::kCreate, "delete requested"});
    d.changed = true;
    if (req->hold_reason) {
      c.status = CoordinationStatus::kHeld;
      c.hold_reason = req->hold_reason;
      d.actions.push_back({ActionKind::kHold, *req->hold_reason});
    }
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
    if (c.status != CoordinationStatus::kWaiting && c.status != CoordinationStatus::kHeld) {
      // Kept for the record (never counted): the deletion was already decided.
      comp.expected = false;
      d.completion = comp;
      d.actions.push_back({ActionKind::kRecordUnexpected, "completion after the deletion began or "
                                                          "was cancelled"});
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

}  // namespace

}  // namespace lastcall
