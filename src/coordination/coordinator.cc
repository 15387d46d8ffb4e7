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
    case CoordinationStatus::kVetoed: return "vetoed";
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
    case ConsumerStatus::kVetoed: return "vetoed";
  }
  return "pending";
}

std::optional<CoordinationStatus> ParseCoordinationStatus(const std::string& s) {
  if (s == "waiting") return CoordinationStatus::kWaiting;
  if (s == "deleting") return CoordinationStatus::kDeleting;
  if (s == "completed") return CoordinationStatus::kCompleted;
  if (s == "held") return CoordinationStatus::kHeld;
  if (s == "cancelled") return CoordinationStatus::kCancelled;
  if (s == "vetoed") return CoordinationStatus::kVetoed;
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
  if (s == "vetoed") return ConsumerStatus::kVetoed;
  return std::nullopt;
}

const char* ToString(ConsumerPriority p) {
  return p == ConsumerPriority::kOptional ? "optional" : "critical";
}

const char* ToString(ProceedRule r) {
  switch (r) {
    case ProceedRule::kReported: return "reported";
    case ProceedRule::kCriticalTimeout: return "critical_timeout";
    case ProceedRule::kOptionalGrace: return "optional_grace";
    case ProceedRule::kOptionalTimeout: return "optional_timeout";
    case ProceedRule::kDeadline: return "deadline";
  }
  return "deadline";
}

std::optional<ConsumerPriority> ParseConsumerPriority(const std::string& s) {
  if (s == "critical") return ConsumerPriority::kCritical;
  if (s == "optional") return ConsumerPriority::kOptional;
  return std::nullopt;
}

std::optional<ProceedRule> ParseProceedRule(const std::string& s) {
  for (ProceedRule r : {ProceedRule::kReported, ProceedRule::kCriticalTimeout,
                        ProceedRule::kOptionalGrace, ProceedRule::kOptionalTimeout,
                        ProceedRule::kDeadline}) {
    if (s == ToString(r)) return r;
  }
  return std::nullopt;
}

ConsumerPolicy Coordination::PolicyOf(const std::string& consumer) const {
  for (const auto& p : policies) {
    if (p.name == consumer) return p;
  }
  return ConsumerPolicy{consumer, ConsumerPriority::kCritical, 0};
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

// While waiting and past the grace window: proceed when the consumer policy lets it.
void MaybeProceed(Coordination& c, WallMillis now, Decision& d) {
  if (c.status != CoordinationStatus::kWaiting) return;
  if (now < c.not_before) return;
  PolicyVerdict v = EvaluateConsumerPolicy(c, now);
  if (!v.proceed) return;
  c.status = CoordinationStatus::kDeleting;
  c.proceeded_by = std::move(v.rules);
  c.missing = std::move(v.missing);
  d.changed = true;
  if (c.missing.empty()) {
    c.outcome = Outcome::kAllCompleted;
    d.actions.push_back({ActionKind::kBeginDeletion, "all expected consumers completed"});
  } else {
    c.outcome = Outcome::kTimedOut;
    d.actions.push_back({ActionKind::kWarnTimeout, "consumers missing when the wait ended"});
    d.actions.push_back({ActionKind::kBeginDeletion, "the consumers' waits ended"});
  }
}

// When a Tick may change c next (see Coordination::due_at).
// The consumer policy's next limit, never before the grace window's end.
std::optional<WallMillis> DueAt(const Coordination& c, WallMillis now) {
  if (c.status != CoordinationStatus::kWaiting) return std::nullopt;
  PolicyVerdict v = EvaluateConsumerPolicy(c, now);
  return v.proceed ? c.not_before : std::max(v.wake_at, c.not_before);
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
    case CoordinationStatus::kVetoed:
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

// A consumer's veto: see the rules at Decide (coordinator.h).
Decision DecideVeto(const std::optional<Coordination>& existing, const VetoReported& in,
                    WallMillis now) {
  Decision d;
  d.state = existing;
  auto refuse = [&](const char* code) {
    d.actions.push_back({ActionKind::kRefuseVeto, code});
    return d;
  };
  if (!existing || !IsExpected(*existing, in.completion.consumer)) return refuse("not_expected");
  if (!in.may_veto) return refuse("veto_not_allowed");
  Coordination c = *existing;
  for (const auto& done : c.completions) {
    if (done.consumer != in.completion.consumer) continue;
    if (done.status == ConsumerStatus::kVetoed) {
      d.actions.push_back({ActionKind::kIgnore, "duplicate veto"});
      return d;
    }
    return refuse("already_reported");
  }
  switch (c.status) {
    case CoordinationStatus::kDeleting:
    case CoordinationStatus::kCompleted:
      return refuse("deletion_started");
    case CoordinationStatus::kCancelled:
      return refuse("coordination_cancelled");
    case CoordinationStatus::kWaiting:
    case CoordinationStatus::kHeld:
    case CoordinationStatus::kVetoed:
      break;
  }
  Completion comp = in.completion;
  comp.status = ConsumerStatus::kVetoed;
  comp.expected = true;
  c.completions.push_back(comp);
  d.completion = comp;
  d.actions.push_back({ActionKind::kRecordCompletion, "veto recorded"});
  d.changed = true;
  if (c.status != CoordinationStatus::kVetoed) {
    c.status = CoordinationStatus::kVetoed;
    c.veto = Coordination::Veto{comp.consumer, in.reason, now};
    c.overridden.reset();
    c.hold_reason.reset();
    d.actions.push_back({ActionKind::kVeto, in.reason});
  }
  d.state = std::move(c);
  return d;
}

// An operator's override of a veto: see the rules at Decide (coordinator.h).
Decision DecideOverride(const std::optional<Coordination>& existing, const OverrideRequested& in,
                        WallMillis now) {
  Decision d;
  d.state = existing;
  if (!existing) {
    d.actions.push_back({ActionKind::kIgnore, "override of an unknown coordination"});
    return d;
  }
  if (existing->status != CoordinationStatus::kVetoed) {
    d.actions.push_back({ActionKind::kRefuseOverride, "not_vetoed"});
    return d;
  }
  Coordination c = *existing;
  c.overridden = Coordination::Override{in.by, in.reason, now};
  d.actions.push_back({ActionKind::kOverride, in.reason});
  d.changed = true;
  if (in.hold_reason) {
    c.status = CoordinationStatus::kHeld;
    c.hold_reason = in.hold_reason;
    d.actions.push_back({ActionKind::kHold, *in.hold_reason});
  } else {
    c.status = CoordinationStatus::kWaiting;
    MaybeProceed(c, now, d);
  }
  d.state = std::move(c);
  return d;
}

Decision DecideInner(const std::optional<Coordination>& existing,
                     const std::vector<Completion>& early, const Input& input, WallMillis now);

}  // namespace

PolicyVerdict EvaluateConsumerPolicy(const Coordination& c, WallMillis now) {
  auto own_deadline = [&](const ConsumerPolicy& p) {
    if (p.timeout_ms <= 0) return c.deadline_at;
    return std::min(c.started_at + p.timeout_ms, c.deadline_at);
  };
  PolicyVerdict v;
  v.wake_at = c.deadline_at;
  bool all_resolved = true;
  // Critical consumers first: when did (or will) the critical phase end?
  bool critical_done = true;
  WallMillis critical_end = c.started_at;
  for (const auto& name : c.expected) {
    ConsumerPolicy p = c.PolicyOf(name);
    if (p.priority != ConsumerPriority::kCritical) continue;
    WallMillis own = own_deadline(p);
    if (const Completion* done = c.CompletionOf(name)) {
      critical_end = std::max(critical_end, done->at);
      v.rules.push_back({name, ProceedRule::kReported});
    } else if (now >= own) {
      critical_end = std::max(critical_end, own);
      v.rules.push_back({name, own < c.deadline_at ? ProceedRule::kCriticalTimeout
                                                   : ProceedRule::kDeadline});
      v.missing.push_back(name);
    } else {
      critical_done = false;
      all_resolved = false;
      v.wake_at = std::min(v.wake_at, own);
    }
  }
  for (const auto& name : c.expected) {
    ConsumerPolicy p = c.PolicyOf(name);
    if (p.priority != ConsumerPriority::kOptional) continue;
    WallMillis own = own_deadline(p);
    WallMillis grace_end = critical_done ? critical_end + c.optional_grace_ms : INT64_MAX;
    WallMillis limit = std::min(own, grace_end);
    if (c.CompletionOf(name)) {
      v.rules.push_back({name, ProceedRule::kReported});
    } else if (now >= limit) {
      v.rules.push_back({name, grace_end < own            ? ProceedRule::kOptionalGrace
                               : own < c.deadline_at      ? ProceedRule::kOptionalTimeout
                                                          : ProceedRule::kDeadline});
      v.missing.push_back(name);
    } else {
      all_resolved = false;
      v.wake_at = std::min(v.wake_at, limit);
    }
  }
  v.proceed = all_resolved;
  if (!v.proceed) {
    v.rules.clear();
    v.missing.clear();
    return v;
  }
  // Rules and missing consumers in expected order, as the API shows them.
  std::vector<std::pair<std::string, ProceedRule>> ordered;
  std::vector<std::string> missing;
  for (const auto& name : c.expected) {
    for (const auto& r : v.rules) {
      if (r.first == name) ordered.push_back(r);
    }
    if (std::find(v.missing.begin(), v.missing.end(), name) != v.missing.end()) {
      missing.push_back(name);
    }
  }
  v.rules = std::move(ordered);
  v.missing = std::move(missing);
  return v;
}

Decision Decide(const std::optional<Coordination>& existing, const std::vector<Completion>& early,
                const Input& input, WallMillis now) {
  Decision d;
  if (std::holds_alternative<CancelRequested>(input)) {
    d = DecideCancel(existing, now);
  } else if (std::holds_alternative<HoldPlaced>(input) ||
             std::holds_alternative<HoldReleased>(input)) {
    d = DecideHold(existing, input, now);
  } else if (const auto* veto = std::get_if<VetoReported>(&input)) {
    d = DecideVeto(existing, *veto, now);
  } else if (const auto* ov = std::get_if<OverrideRequested>(&input)) {
    d = DecideOverride(existing, *ov, now);
  } else {
    d = DecideInner(existing, early, input, now);
  }
  if (d.state) {
    // A Tick that changed nothing else may still move the timer (a consumer's limit passed).
    std::optional<WallMillis> due = DueAt(*d.state, now);
    if (d.changed || (existing && due != d.state->due_at)) {
      d.changed = d.changed || due != d.state->due_at;
      d.state->due_at = due;
    }
  }
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
    c.policies = req->policies;
    c.optional_grace_ms = req->optional_grace_ms;
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
    if (c.status != CoordinationStatus::kWaiting && c.status != CoordinationStatus::kHeld &&
        c.status != CoordinationStatus::kVetoed) {
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
