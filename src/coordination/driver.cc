#include "coordination/driver.h"

#include <pthread.h>
#include <algorithm>
#include <future>

#include "common/log.h"
#include "consumers/analytics_consumer.h"
#include "coordination/coordination_repo.h"
#include "coordination/verification.h"
#include "store/repos.h"

namespace lastcall {

CoordinationDriver::CoordinationDriver(Database& db, BlobStore& blobs, Outbox& outbox, Clock& clock,
                                       IdGenerator& ids, Metrics& metrics, CoordinatorConfig config)
    : db_(db),
      blobs_(blobs),
      outbox_(outbox),
      clock_(clock),
      ids_(ids),
      metrics_(metrics),
      config_(std::move(config)) {}

namespace {

std::string Json(const nlohmann::json& j) { return j.dump(); }

// A string attribute of an event's data, or "" when absent or not a string.
std::string DataString(const nlohmann::json& data, const char* key) {
  auto it = data.find(key);
  return it != data.end() && it->is_string() ? it->get<std::string>() : std::string();
}

// The timeline detail of a completion (its detail object as stored, {} if that is not JSON).
std::string CompletionDetail(const Completion& c) {
  nlohmann::json detail = nlohmann::json::parse(c.detail_json, nullptr, false);
  if (detail.is_discarded()) detail = nlohmann::json::object();
  return Json({{"consumer", c.consumer}, {"status", ToString(c.status)}, {"detail", detail},
               {"counted", c.expected}});
}

// (priority, rule) of every expected consumer of a coordination whose deletion was decided.
std::vector<std::pair<std::string, std::string>> ProceedRuleLabels(const Coordination& c) {
  std::vector<std::pair<std::string, std::string>> out;
  for (const auto& [name, rule] : c.proceeded_by) {
    out.push_back({ToString(c.PolicyOf(name).priority), ToString(rule)});
  }
  return out;
}

// The deletion_decided timeline entry: the outcome, and each consumer's rule when the
// coordination had policies (so the timeline of an older coordination reads as before).
std::string DecisionDetail(const Coordination& c) {
  nlohmann::json j = {{"outcome", ToString(c.outcome)}};
  if (!c.policies.empty()) {
    nlohmann::json rules = nlohmann::json::object();
    for (const auto& [name, rule] : c.proceeded_by) rules[name] = ToString(rule);
    j["proceededBy"] = rules;
  }
  return Json(j);
}

}  // namespace

CoordinationDriver::~CoordinationDriver() { Stop(); }

Status CoordinationDriver::Apply(SqlTx& tx, const Decision& d,
                                 const std::optional<Coordination>& before) {
  LASTCALL_RETURN_IF_ERROR(ApplyActions(tx, d));
  if (d.changed && before) {
    LASTCALL_RETURN_IF_ERROR(UpdateCoordinationDecision(tx, *d.state, std::nullopt, &*before));
  }
  return Status::Ok();
}

Status CoordinationDriver::ApplyActions(SqlTx& tx, const Decision& d,
                                        std::vector<TimelineEntry>* pending) {
  const std::string id = d.state ? d.state->id : "";
  std::vector<TimelineEntry> timeline;  // the actions' entries, appended in order at the end
  for (const Action& a : d.actions) {
    switch (a.kind) {
      case ActionKind::kCreate:
        LASTCALL_RETURN_IF_ERROR(InsertCoordination(tx, *d.state));
        timeline.push_back({d.state->started_at, "requested",
                            Json({{"expectedConsumers", d.state->expected},
                                  {"deadlineAt", FormatRfc3339(d.state->deadline_at)}})});
        for (const auto& c : d.state->completions) {
          timeline.push_back({d.state->started_at, "completion", CompletionDetail(c)});
        }
        tx.AfterCommit([this] { metrics_.coordinations_started.Inc({}); });
        break;
      case ActionKind::kRecordCompletion:
      case ActionKind::kRecordUnexpected: {
        const Completion& c = *d.completion;
        LASTCALL_RETURN_IF_ERROR(UpsertCompletion(tx, id, c));
        timeline.push_back({c.at, "completion", CompletionDetail(c)});
        tx.AfterCommit([this, id, reason = a.reason, consumer = c.consumer, counted = c.expected,
                        status = std::string(ToString(c.status)),
                        seconds = static_cast<double>(c.at - d.state->started_at) / 1000.0] {
          log::Info(reason, {{"coordinationId", id}, {"consumer", consumer}, {"status", status}});
          // Only completions that counted toward the decision: a consumer that always answers
          // after the deadline is one that never completes, as far as alerts are concerned.
          if (!counted) return;
          metrics_.consumer_completions.Inc({consumer, status});
          metrics_.consumer_completion.Observe({consumer}, std::max(0.0, seconds));
        });
        break;
      }
      case ActionKind::kKeepEarly:
        break;  // stored by the caller, which knows the id
      case ActionKind::kIgnore:
        log::Info("coordination input ignored", {{"coordinationId", id}, {"reason", a.reason}});
        break;
      case ActionKind::kWarnTimeout:
        timeline.push_back({clock_.Now(), "timeout", Json({{"missingConsumers", d.state->missing}})});
        tx.AfterCommit([this, id, file_id = d.state->file_id, missing = d.state->missing] {
          for (const auto& m : missing) metrics_.coordination_timeouts.Inc({m});
          log::Warn("coordination timed out; proceeding without missing consumers",
                    {{"coordinationId", id}, {"fileId", file_id}, {"missingConsumers", missing}});
        });
        break;
      case ActionKind::kBeginDeletion:
        timeline.push_back({clock_.Now(), "deletion_decided", DecisionDetail(*d.state)});
        tx.AfterCommit([this, id, file_id = d.state->file_id,
                        outcome = std::string(ToString(d.state->outcome)),
                        rules = ProceedRuleLabels(*d.state)] {
          for (const auto& [priority, rule] : rules) metrics_.proceed_rules.Inc({priority, rule});
          log::Info("deletion decided", {{"coordinationId", id}, {"fileId", file_id}, {"outcome", outcome}});
          Wake();
        });
        break;
      case ActionKind::kFinish:
        break;
      case ActionKind::kCancel:
      case ActionKind::kHold:
      case ActionKind::kRelease:
      case ActionKind::kVeto:
      case ActionKind::kOverride:
        LASTCALL_RETURN_IF_ERROR(ApplyStopOrResume(tx, d, a, &timeline));
        break;
      case ActionKind::kRefuseCancel:
      case ActionKind::kRefuseVeto:
      case ActionKind::kRefuseOverride:
        break;  // the caller answers (409, 422, 404) or logs it
    }
  }
  if (pending) {
    pending->insert(pending->end(), timeline.begin(), timeline.end());
    return Status::Ok();
  }
  return AppendTimeline(tx, id, timeline);
}

Status CoordinationDriver::AddConsumerPolicies(SqlTx& tx, WallMillis now, DeleteRequested* req) {
  req->optional_grace_ms = config_.optional_grace_ms;
  for (const auto& name : req->expected) {
    req->policies.push_back({name, ConsumerPriority::kCritical, 0});
  }
  if (!config_.more_consumers) return Status::Ok();
  auto more = config_.more_consumers(tx, now);
  if (!more.ok()) return more.status();
  for (const auto& p : *more) {
    if (std::find(req->expected.begin(), req->expected.end(), p.name) != req->expected.end()) {
      continue;
    }
    req->expected.push_back(p.name);
    req->policies.push_back(p);
  }
  return Status::Ok();
}

Status CoordinationDriver::ApplyStopOrResume(SqlTx& tx, const Decision& d, const Action& a,
                                             std::vector<TimelineEntry>* timeline) {
  const Coordination& c = *d.state;
  WallMillis now = clock_.Now();
  switch (a.kind) {
    case ActionKind::kCancel: {
      auto reactivated = ReactivateFile(tx, c.file_id, c.id);
      if (!reactivated.ok()) return reactivated.status();
      timeline->push_back({now, "cancelled", Json({{"fileActive", *reactivated}})});
      CloudEvent e = MakeEvent(ids_, kCoordinatorSource, kFileDeleteCancelled, "files/" + c.file_id,
                               now,
                               {{"coordinationId", c.id},
                                {"userId", c.user_id},
                                {"fileId", c.file_id},
                                {"accountId", c.account_id},
                                {"cancelledAt", FormatRfc3339(now)}});
      LASTCALL_RETURN_IF_ERROR(outbox_.Append(tx, e, now));
      tx.AfterCommit([this, id = c.id, file_id = c.file_id, user = c.user_id] {
        metrics_.coordinations_cancelled.Inc({});
        log::Info("deletion cancelled by its owner",
                  {{"coordinationId", id}, {"fileId", file_id}, {"userId", user}});
      });
      return Status::Ok();
    }
    case ActionKind::kHold:
      timeline->push_back({now, "held", Json({{"reason", a.reason}})});
      tx.AfterCommit([this, id = c.id, file_id = c.file_id] {
        metrics_.deletions_blocked.Inc({});
        log::Info("deletion blocked by a legal hold", {{"coordinationId", id}, {"fileId", file_id}});
      });
      return Status::Ok();
    case ActionKind::kRelease:
      timeline->push_back({now, "resumed", "{}"});
      tx.AfterCommit([this] { Wake(); });
      return Status::Ok();
    case ActionKind::kVeto: {
      // Like a cancel: the file is active again and consumers undo their anticipation.
      auto reactivated = ReactivateFile(tx, c.file_id, c.id);
      if (!reactivated.ok()) return reactivated.status();
      timeline->push_back({now, "vetoed",
                           Json({{"consumer", c.veto->consumer}, {"reason", c.veto->reason},
                                 {"fileActive", *reactivated}})});
      CloudEvent e = MakeEvent(ids_, kCoordinatorSource, kFileDeleteVetoed, "files/" + c.file_id,
                               now,
                               {{"coordinationId", c.id},
                                {"userId", c.user_id},
                                {"fileId", c.file_id},
                                {"accountId", c.account_id},
                                {"consumer", c.veto->consumer},
                                {"vetoedAt", FormatRfc3339(now)}});
      LASTCALL_RETURN_IF_ERROR(outbox_.Append(tx, e, now));
      tx.AfterCommit([this, id = c.id, file_id = c.file_id, consumer = c.veto->consumer] {
        metrics_.vetoes.Inc({consumer});
        log::Warn("deletion vetoed by a consumer; waiting for an operator's override or the "
                  "owner's cancel",
                  {{"coordinationId", id}, {"fileId", file_id}, {"consumer", consumer}});
      });
      return Status::Ok();
    }
    case ActionKind::kOverride: {
      // The file goes back to deletion_requested under this coordination, unless it changed
      // meanwhile (deleted, or under a newer coordination after another DELETE).
      auto marked = MarkDeletionRequested(tx, c.file_id, c.id);
      if (!marked.ok()) return marked.status();
      if (!*marked) {
        return Status::Conflict("file_changed", "file " + c.file_id +
                                                    " is no longer the active file this "
                                                    "coordination vetoed (deleted or requested "
                                                    "again since)");
      }
      bool held = c.status == CoordinationStatus::kHeld;
      timeline->push_back({now, "overridden",
                           Json({{"operator", c.overridden->by}, {"reason", c.overridden->reason},
                                 {"vetoedBy", c.veto ? c.veto->consumer : std::string()},
                                 {"held", held}})});
      tx.AfterCommit([this, id = c.id, file_id = c.file_id, by = c.overridden->by,
                      reason = c.overridden->reason, held] {
        metrics_.veto_overrides.Inc({held ? "held" : "proceeding"});
        log::Warn("veto overridden by an operator",
                  {{"coordinationId", id}, {"fileId", file_id}, {"operator", by},
                   {"reason", reason}, {"heldByLegalHold", held}});
        Wake();
      });
      return Status::Ok();
    }
    default:
      return Status::Ok();
  }
}

Result<Coordination> CoordinationDriver::Cancel(SqlTx& tx, const std::string& user_id,
                                                const std::string& coordination_id) {
  auto loaded = ClaimAndLoadCoordination(tx, coordination_id, ClaimMode::kWait);
  if (!loaded.ok()) return loaded.status();
  if (!*loaded || (*loaded)->user_id != user_id) {
    return Status::NotFound("coordination " + coordination_id + " not found");
  }
  Decision d = Decide(*loaded, {}, CancelRequested{}, clock_.Now());
  if (d.Has(ActionKind::kRefuseCancel)) {
    return Status::Conflict("deletion_started", "coordination " + coordination_id + " is " +
                                                    ToString((*loaded)->status) +
                                                    ": the deletion has begun and cannot be "
                                                    "cancelled");
  }
  LASTCALL_RETURN_IF_ERROR(Apply(tx, d, *loaded));
  return *d.state;
}

Result<Coordination> CoordinationDriver::Veto(SqlTx& tx, const std::string& consumer,
                                              const std::string& coordination_id,
                                              const std::string& reason, nlohmann::json detail,
                                              bool* duplicate) {
  if (duplicate) *duplicate = false;
  auto loaded = ClaimAndLoadCoordination(tx, coordination_id, ClaimMode::kWait);
  if (!loaded.ok()) return loaded.status();
  VetoReported in;
  in.reason = reason;
  in.completion.consumer = consumer;
  in.completion.status = ConsumerStatus::kVetoed;
  if (!detail.is_object()) detail = nlohmann::json::object();
  detail["reason"] = reason;
  in.completion.detail_json = detail.dump();
  in.completion.at = clock_.Now();
  in.completion.event_id = ids_.NewUuid();
  if (config_.may_veto) {
    auto may = config_.may_veto(tx, consumer);
    if (!may.ok()) return may.status();
    in.may_veto = *may;
  }
  Decision d = Decide(*loaded, {}, in, clock_.Now());
  for (const Action& a : d.actions) {
    if (a.kind != ActionKind::kRefuseVeto) continue;
    const std::string what = "coordination " + coordination_id;
    if (a.reason == "not_expected") return Status::NotFound(what + " not found");
    if (a.reason == "veto_not_allowed") {
      return Status::Unprocessable("veto_not_allowed",
                                   "consumer " + consumer +
                                       " was not registered with \"canVeto\": true and cannot veto");
    }
    if (a.reason == "already_reported") {
      return Status::Conflict("already_reported",
                              "consumer " + consumer + " already reported on " + what +
                                  "; its first answer stands");
    }
    return Status::Conflict(a.reason, what + " is " + ToString((*loaded)->status) +
                                          ": a veto is possible only before the deletion begins");
  }
  if (d.Has(ActionKind::kIgnore) && duplicate) *duplicate = true;
  LASTCALL_RETURN_IF_ERROR(Apply(tx, d, *loaded));
  return *d.state;
}

Result<Coordination> CoordinationDriver::Override(SqlTx& tx, const std::string& operator_subject,
                                                  const std::string& coordination_id,
                                                  const std::string& reason) {
  auto loaded = ClaimAndLoadCoordination(tx, coordination_id, ClaimMode::kWait);
  if (!loaded.ok()) return loaded.status();
  if (!*loaded) return Status::NotFound("coordination " + coordination_id + " not found");
  const Coordination& c = **loaded;
  OverrideRequested in{operator_subject, reason, std::nullopt};
  auto hold = ActiveHoldCovering(tx, c.user_id, c.account_id, c.file_id);
  if (!hold.ok()) return hold.status();
  if (*hold) in.hold_reason = (*hold)->reason;
  Decision d = Decide(*loaded, {}, in, clock_.Now());
  if (d.Has(ActionKind::kRefuseOverride)) {
    return Status::Conflict("not_vetoed", "coordination " + coordination_id + " is " +
                                              ToString(c.status) +
                                              ": only a vetoed coordination can be overridden");
  }
  LASTCALL_RETURN_IF_ERROR(ApplyAndProceed(tx, d, *loaded));
  // The inline deletion step may have finished it already: answer what is stored now.
  auto now_state = LoadCoordination(tx, coordination_id);
  if (!now_state.ok()) return now_state.status();
  if (!*now_state) return Status::Internal("coordination " + coordination_id + " vanished");
  return **now_state;
}

Result<int> CoordinationDriver::PlaceHold(SqlTx& tx, const Hold& h) {
  auto ids = CoordinationsUnderHold(tx, h, ToString(CoordinationStatus::kWaiting));
  if (!ids.ok()) return ids.status();
  int held = 0;
  for (const auto& id : *ids) {
    auto c = ClaimAndLoadCoordination(tx, id, ClaimMode::kWait);
    if (!c.ok()) return c.status();
    Decision d = Decide(*c, {}, HoldPlaced{h.reason}, clock_.Now());
    LASTCALL_RETURN_IF_ERROR(Apply(tx, d, *c));
    if (d.Has(ActionKind::kHold)) ++held;
  }
  return held;
}

Result<int> CoordinationDriver::ReleaseHold(SqlTx& tx, const Hold& h) {
  auto ids = CoordinationsUnderHold(tx, h, ToString(CoordinationStatus::kHeld));
  if (!ids.ok()) return ids.status();
  int released = 0;
  for (const auto& id : *ids) {
    auto c = ClaimAndLoadCoordination(tx, id, ClaimMode::kWait);
    if (!c.ok()) return c.status();
    if (!*c) continue;
    auto other = ActiveHoldCovering(tx, (*c)->user_id, (*c)->account_id, (*c)->file_id);
    if (!other.ok()) return other.status();
    HoldReleased in;
    if (*other) in.still_held = (*other)->reason;
    LASTCALL_RETURN_IF_ERROR(AppendTimeline(
        tx, id, clock_.Now(), "hold_released",
        Json({{"holdId", h.id}, {"stillHeld", other->has_value()}})));
    Decision d = Decide(*c, {}, in, clock_.Now());
    LASTCALL_RETURN_IF_ERROR(ApplyAndProceed(tx, d, *c));
    if (d.Has(ActionKind::kRelease)) ++released;
  }
  return released;
}

Result<std::string> CoordinationDriver::RequestDeletion(SqlTx& tx, const FileRecord& file) {
  if (file.status == kFileDeletionRequested && file.coordination_id) return *file.coordination_id;
  std::string coordination_id = ids_.NewUuid();
  auto marked = MarkDeletionRequested(tx, file.id, coordination_id);
  if (!marked.ok()) return marked.status();
  if (!*marked) {
    // Another node's request for the same file committed first (the UPDATE waited for it): that
    // coordination is this request's too.
    auto now_file = FindFileById(tx, file.id);
    if (!now_file.ok()) return now_file.status();
    if (*now_file && (*now_file)->status == kFileDeletionRequested && (*now_file)->coordination_id) {
      return *(*now_file)->coordination_id;
    }
    if (!*now_file) return Status::NotFound("file " + file.id + " not found");
    return Status::Conflict("conflict", "the file changed during the request");
  }
  WallMillis now = clock_.Now();
  DeleteRequested req{coordination_id,  file.user_id, file.id, file.account_id,
                      file.transaction_count, config_.expected_consumers, config_.timeout_ms};
  LASTCALL_RETURN_IF_ERROR(AddConsumerPolicies(tx, now, &req));
  req.grace_ms = config_.grace_ms;
  auto hold = ActiveHoldCovering(tx, file.user_id, file.account_id, file.id);
  if (!hold.ok()) return hold.status();
  if (*hold) req.hold_reason = (*hold)->reason;
  // No completion can be stored early under coordination_id: it is a fresh id from the CSPRNG
  // that nobody sees before this transaction commits (early completions come with requests from
  // other producers, HandleDeleteRequested).
  Decision d = Decide(std::nullopt, {}, req, now);
  LASTCALL_RETURN_IF_ERROR(Apply(tx, d, std::nullopt));

  CloudEvent e = MakeEvent(ids_, kApiSource, kFileDeleteRequested, "files/" + file.id, now,
                           {{"coordinationId", coordination_id},
                            {"userId", file.user_id},
                            {"fileId", file.id},
                            {"accountId", file.account_id},
                            {"transactionCount", file.transaction_count},
                            {"expectedConsumers", req.expected},
                            {"requestedAt", FormatRfc3339(now)}});
  LASTCALL_RETURN_IF_ERROR(outbox_.Append(tx, e, now));
  tx.AfterCommit([this, coordination_id, file_id = file.id, user = file.user_id,
                  expected = req.expected] {
    log::Info("deletion requested", {{"coordinationId", coordination_id},
                                     {"fileId", file_id},
                                     {"userId", user},
                                     {"expectedConsumers", expected}});
    Wake();
  });
  return coordination_id;
}

Status CoordinationDriver::Handle(const CloudEvent& event, SqlTx& tx) {
  if (event.type == kConsumerCompletion) return HandleCompletion(event, tx);
  if (event.type == kFileDeleteRequested) return HandleDeleteRequested(event, tx);
  log::Warn("file_deletion_consumer got an event it does not handle", {{"eventId", event.id},
                                                                      {"type", event.type}});
  return Status::Ok();
}

Status CoordinationDriver::HandleDeleteRequested(const CloudEvent& e, SqlTx& tx) {
  const auto& d = e.data;
  auto str = [&](const char* k) { return DataString(d, k); };
  std::string id = str("coordinationId");
  if (id.empty() || !IsUuid(id)) {
    log::Warn("file.delete_requested without a valid coordinationId ignored", {{"eventId", e.id}});
    return Status::Ok();
  }
  auto exists = ClaimCoordination(tx, id, ClaimMode::kWait);
  if (!exists.ok()) return exists.status();
  if (*exists) return Status::Ok();  // created with the request, as it should be
  // Created elsewhere (another producer): build it from the event.
  DeleteRequested req;
  req.coordination_id = id;
  req.user_id = str("userId");
  req.file_id = str("fileId");
  req.account_id = str("accountId");
  req.transaction_count = d.value("transactionCount", int64_t{0});
  req.expected = config_.expected_consumers;
  if (auto it = d.find("expectedConsumers"); it != d.end() && it->is_array()) {
    req.expected.clear();
    for (const auto& x : *it) {
      if (x.is_string()) req.expected.push_back(x.get<std::string>());
    }
  }
  req.timeout_ms = config_.timeout_ms;
  req.grace_ms = config_.grace_ms;
  auto hold = ActiveHoldCovering(tx, req.user_id, req.account_id, req.file_id);
  if (!hold.ok()) return hold.status();
  if (*hold) req.hold_reason = (*hold)->reason;
  auto early = LoadCompletions(tx, id);
  if (!early.ok()) return early.status();
  Decision decision = Decide(std::nullopt, *early, req, clock_.Now());
  return ApplyAndProceed(tx, decision, std::nullopt);
}

Status CoordinationDriver::HandleVetoEvent(const CloudEvent& e, SqlTx& tx) {
  const auto& d = e.data;
  std::string id = DataString(d, "coordinationId");
  std::string consumer = DataString(d, "consumer");
  auto detail = d.find("detail");
  std::string reason;
  if (detail != d.end() && detail->is_object()) reason = DataString(*detail, "reason");
  if (!IsUuid(id) || consumer.empty() || reason.empty() || reason.size() > kMaxVetoReason) {
    log::Warn("malformed veto ignored", {{"eventId", e.id}});
    return Status::Ok();
  }
  if (e.source != std::string(kConsumerSourcePrefix) + consumer) {
    log::Warn("veto refused: source does not match consumer",
              {{"eventId", e.id}, {"coordinationId", id}, {"consumer", consumer},
               {"source", e.source}});
    return Status::Ok();
  }
  auto sp = tx.Exec("SAVEPOINT veto_event");
  if (!sp.ok()) return sp.status();
  auto r = Veto(tx, consumer, id, reason, *detail, nullptr);
  if (!r.ok()) {
    Code code = r.status().code();
    if (code != Code::kNotFound && code != Code::kUnprocessable && code != Code::kConflict) {
      return r.status();  // the store: retried
    }
    // The consumer's mistake (or it lost a race with the deletion): logged and counted, the
    // event is done. Nothing of the refused veto stays.
    (void)tx.Exec("ROLLBACK TO veto_event");
    log::Warn("veto refused", {{"eventId", e.id}, {"coordinationId", id}, {"consumer", consumer},
                               {"error", r.status().ToString()}});
    metrics_.vetoes_refused.Inc({code == Code::kNotFound ? "not_expected" : r.status().error()});
  }
  auto rel = tx.Exec("RELEASE veto_event");
  return rel.ok() ? Status::Ok() : rel.status();
}

Status CoordinationDriver::HandleCompletion(const CloudEvent& e, SqlTx& tx) {
  const auto& d = e.data;
  auto str = [&](const char* k) { return DataString(d, k); };
  if (str("status") == kVetoStatus) return HandleVetoEvent(e, tx);
  std::string id = str("coordinationId");
  std::string consumer = str("consumer");
  auto status = ParseConsumerStatus(str("status"));
  auto detail = d.find("detail");
  if (!IsUuid(id) || consumer.empty() || !status || *status == ConsumerStatus::kPending ||
      (detail != d.end() && !detail->is_object() && !detail->is_null())) {
    log::Warn("malformed consumer.completion ignored", {{"eventId", e.id}});
    return Status::Ok();
  }
  // A consumer completes only as itself: the event's source names the consumer that published it.
  if (e.source != std::string(kConsumerSourcePrefix) + consumer) {
    log::Warn("consumer.completion refused: source does not match consumer",
              {{"eventId", e.id}, {"coordinationId", id}, {"consumer", consumer},
               {"source", e.source}});
    return Status::Ok();
  }
  Completion c;
  c.consumer = consumer;
  c.status = *status;
  c.detail_json = (detail != d.end() && detail->is_object()) ? detail->dump() : "{}";
  c.at = clock_.Now();
  c.event_id = e.id;
  auto existing = ClaimAndLoadCoordination(tx, id, ClaimMode::kWait);
  if (!existing.ok()) return existing.status();
  Decision dec = Decide(*existing, {}, CompletionReported{id, c}, clock_.Now());
  if (dec.Has(ActionKind::kKeepEarly)) {
    log::Info("completion kept until its delete request arrives",
              {{"coordinationId", id}, {"consumer", consumer}});
    return UpsertCompletion(tx, id, *dec.completion);
  }
  return ApplyAndProceed(tx, dec, *existing);
}

Status CoordinationDriver::ApplyAndProceed(SqlTx& tx, const Decision& d,
                                           const std::optional<Coordination>& before) {
  if (!d.Has(ActionKind::kBeginDeletion) || !config_.inline_deletion ||
      config_.test_deletion_delay_ms > 0) {
    return Apply(tx, d, before);
  }
  // The decision's timeline entries go in with the step's (one statement), and the decided state
  // (deleting) is stored by the step's own update, which writes every decision column of it as
  // completed. Both are stored on their own only when the step fails. A new coordination (no
  // before) was inserted by ApplyActions already.
  std::vector<TimelineEntry> decided;
  LASTCALL_RETURN_IF_ERROR(ApplyActions(tx, d, &decided));
  auto sp = tx.Exec("SAVEPOINT inline_deletion");
  if (!sp.ok()) return sp.status();
  Status st = DeleteNow(tx, *d.state, decided);
  if (!st.ok()) {
    // The decision stands (status deleting); the driver thread retries the deletion step.
    (void)tx.Exec("ROLLBACK TO inline_deletion");
    log::Warn("inline deletion step failed; the driver will retry it",
              {{"coordinationId", d.state->id}, {"error", st.ToString()}});
    // Released below: the decision commits with the unit, without the step's effects.
    LASTCALL_RETURN_IF_ERROR(AppendTimeline(tx, d.state->id, decided));
    if (d.changed && before) {
      LASTCALL_RETURN_IF_ERROR(UpdateCoordinationDecision(tx, *d.state, std::nullopt, &*before));
    }
  }
  auto rel = tx.Exec("RELEASE inline_deletion");
  return rel.ok() ? Status::Ok() : rel.status();
}

Status CoordinationDriver::ExecuteDeletion(SqlTx& tx, const std::string& coordination_id,
                                           bool* skipped) {
  bool taken = false;
  auto loaded = ClaimAndLoadCoordination(tx, coordination_id, ClaimMode::kSkipIfTaken, &taken);
  if (!loaded.ok()) return loaded.status();
  if (taken && skipped) *skipped = true;
  if (!*loaded || (*loaded)->status != CoordinationStatus::kDeleting) return Status::Ok();
  return DeleteNow(tx, **loaded, {});
}

Status CoordinationDriver::DeleteNow(SqlTx& tx, const Coordination& c,
                                    std::vector<TimelineEntry> timeline) {
  if (c.status != CoordinationStatus::kDeleting) {
    return Status::Internal("deletion step for coordination " + c.id + " in status " +
                            ToString(c.status));
  }
  WallMillis now = clock_.Now();
  int64_t deleted = 0;
  std::optional<std::string> blob_key;
  auto file = FindFileForDeletion(tx, c.file_id);
  if (!file.ok()) return file.status();
  if (*file) {
    DeletionRecord rec{c.id, c.started_at, ToString(c.outcome), now};
    auto n = DeleteFileData(tx, **file, rec);
    if (!n.ok()) return n.status();
    // An analytics consumer that failed or never answered left the file's contribution in the
    // monthly totals: take it out with the rows (derived values move in the same transaction),
    // so no per-file data outlives the file. When it completed, it archived and removed that
    // contribution itself (anything found later is residue for the verification to report).
    // After an overridden veto, the veto had the analytics consumer put its archive back: it is
    // archived again here, as the consumer's completion had done.
    const Completion* analytics = c.CompletionOf(kAnalyticsConsumer);
    if (!analytics || analytics->status != ConsumerStatus::kCompleted) {
      auto contribution = RemoveFileContribution(tx, c.file_id);
      if (!contribution.ok()) return contribution.status();
    } else if (c.overridden) {
      auto archived = ArchiveFileContribution(tx, c.file_id, c.id, now);
      if (!archived.ok()) return archived.status();
    }
    // Where its content was, for the verification after the blob's removal (stored with the
    // final state below).
    blob_key = (*file)->blob_key;
    deleted = *n;
    // The steps DeleteFileData took, in its order, all in this transaction.
    timeline.push_back({now, "transactions_deleted", Json({{"count", deleted}})});
    timeline.push_back({now, "account_updated", "{}"});
    timeline.push_back({now, "content_queued", "{}"});
    timeline.push_back({now, "metadata_deleted", "{}"});
  } else {
    log::Warn("file of a coordination was already gone", {{"coordinationId", c.id},
                                                         {"fileId", c.file_id}});
  }
  Decision d = Decide(c, {}, DeletionDone{deleted}, now);
  LASTCALL_RETURN_IF_ERROR(ApplyActions(tx, d));
  LASTCALL_RETURN_IF_ERROR(UpdateCoordinationDecision(tx, *d.state, blob_key));
  timeline.push_back({now, "deleted",
                      Json({{"outcome", ToString(c.outcome)}, {"transactionsDeleted", deleted}})});
  LASTCALL_RETURN_IF_ERROR(AppendTimeline(tx, c.id, timeline));
  CloudEvent e = MakeEvent(ids_, kCoordinatorSource, kFileDeleted, "files/" + c.file_id, now,
                           {{"coordinationId", c.id},
                            {"userId", c.user_id},
                            {"fileId", c.file_id},
                            {"outcome", ToString(c.outcome)},
                            {"transactionsDeleted", deleted},
                            {"missingConsumers", c.missing}});
  LASTCALL_RETURN_IF_ERROR(outbox_.Append(tx, e, now));
  tx.AfterCommit([this, id = c.id, file_id = c.file_id, user = c.user_id, deleted,
                  outcome = std::string(ToString(c.outcome)), ms = now - c.started_at] {
    metrics_.coordinations_finished.Inc({outcome});
    metrics_.coordination_duration.Observe({outcome}, static_cast<double>(ms) / 1000.0);
    metrics_.file_deletions.Inc({"coordinated", "deleted"});
    log::Info("file deleted", {{"coordinationId", id},
                               {"fileId", file_id},
                               {"userId", user},
                               {"outcome", outcome},
                               {"transactionsDeleted", deleted},
                               {"durationMs", ms}});
    Wake();  // its blob is queued for removal
  });
  return Status::Ok();
}

void CoordinationDriver::Start() { thread_ = std::thread([this] { Loop(); }); }

void CoordinationDriver::Stop() {
  {
    std::lock_guard<std::mutex> l(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void CoordinationDriver::Wake() {
  {
    std::lock_guard<std::mutex> l(mu_);
    dirty_ = true;
  }
  cv_.notify_one();
}

bool CoordinationDriver::FireDeadlines() {
  WallMillis now = clock_.Now();
  std::vector<DueCoordination> ids;
  Status st = db_.Read([&](SqlTx& tx) {
    auto due = DueCoordinations(tx, CoordinationStatus::kWaiting, now, config_.batch);
    if (!due.ok()) return due.status();
    ids = std::move(due).value();
    return Status::Ok();
  });
  if (!st.ok() || ids.empty()) {
    if (!st.ok()) {
      log::Error("deadline scan failed", {{"error", st.ToString()}});
      step_failed_ = true;
    }
    return false;
  }
  bool skipped = false;
  st = db_.WriteSync([&](SqlTx& tx) -> Status {
    skipped = false;
    for (const DueCoordination& due : ids) {
      const std::string& id = due.id;
      // Another node firing the same deadline holds it: its decision stands, ours is not needed.
      bool taken = false;
      auto c = ClaimAndLoadCoordination(tx, id, ClaimMode::kSkipIfTaken, &taken);
      if (!c.ok()) return c.status();
      skipped = skipped || taken;
      if (!*c) continue;
      Decision d = Decide(*c, {}, Tick{}, clock_.Now());
      LASTCALL_RETURN_IF_ERROR(ApplyAndProceed(tx, d, *c));
    }
    return Status::Ok();
  });
  if (!st.ok()) {
    log::Error("firing deadlines failed", {{"error", st.ToString()}});
    step_failed_ = true;
  }
  if (skipped) claims_skipped_ = true;
  return st.ok();
}

bool CoordinationDriver::RunDeletions() {
  std::vector<DueCoordination> ids;
  Status st = db_.Read([&](SqlTx& tx) {
    auto due = DueCoordinations(tx, CoordinationStatus::kDeleting, 0, config_.batch);
    if (!due.ok()) return due.status();
    ids = std::move(due).value();
    return Status::Ok();
  });
  if (!st.ok() || ids.empty()) {
    if (!st.ok()) log::Error("deletion scan failed", {{"error", st.ToString()}});
    return false;
  }
  if (config_.test_deletion_delay_ms > 0) {
    std::unique_lock<std::mutex> l(mu_);
    cv_.wait_for(l, std::chrono::milliseconds(config_.test_deletion_delay_ms),
                 [&] { return stopping_; });
    if (stopping_) return false;
  }
  // One unit per coordination, submitted together: they share a commit (or one per writer), and
  // one failing deletion does not hold back the others. Keyed by account: the step locks its
  // account's row, so one account's steps all go to the same writer.
  std::vector<std::promise<Status>> done(ids.size());
  std::vector<char> skipped(ids.size(), 0);  // each written by its unit only, read after done
  for (size_t i = 0; i < ids.size(); ++i) {
    db_.WriteKeyed(
        ids[i].account_id,
        [this, id = ids[i].id, flag = &skipped[i]](SqlTx& tx) {
          bool s = false;
          Status st = ExecuteDeletion(tx, id, &s);
          *flag = s ? 1 : 0;
          return st;
        },
        [&done, i](Status s) { done[i].set_value(std::move(s)); });
  }
  bool progressed = false;
  for (size_t i = 0; i < ids.size(); ++i) {
    Status s = done[i].get_future().get();
    if (s.ok() && skipped[i]) {
      claims_skipped_ = true;  // another node is deleting it
    } else if (s.ok()) {
      progressed = true;
    } else {
      metrics_.file_deletions.Inc({"coordinated", "failed"});
      log::Error("deletion step failed; will retry", {{"coordinationId", ids[i].id},
                                                      {"error", s.ToString()}});
    }
  }
  return progressed;
}

bool CoordinationDriver::CollectBlobs() {
  std::vector<std::string> keys;
  Status st = db_.Read([&](SqlTx& tx) {
    auto r = ListBlobGc(tx, config_.batch);
    if (!r.ok()) return r.status();
    keys = std::move(r).value();
    return Status::Ok();
  });
  if (!st.ok() || keys.empty()) return false;
  std::vector<std::string> removed;
  for (const auto& k : keys) {
    Status d = blobs_.Delete(k);
    if (d.ok()) {
      removed.push_back(k);
    } else {
      log::Error("blob removal failed; will retry", {{"error", d.ToString()}});
    }
  }
  if (removed.empty()) return false;
  // One unit: the removals, then the verifications they made ready in a savepoint of their own,
  // so that a failed verification (which registers no after-commit work) is undone alone and the
  // removals still commit; VerifyDeletions retries it. (Two units submitted together would
  // also usually share a commit, but a driver round would then always write an even number of
  // units: a fault that hits every other unit would hit the removal every time.)
  Status verify_failure = Status::Ok();
  st = db_.WriteSync([&](SqlTx& tx) -> Status {
    verify_failure = Status::Ok();  // an engine may run the unit again
    for (const auto& k : removed) LASTCALL_RETURN_IF_ERROR(RemoveBlobGc(tx, k));
    auto sp = tx.Exec("SAVEPOINT verify");
    if (!sp.ok()) return sp.status();
    verify_failure = VerifyIn(tx, nullptr);
    if (!verify_failure.ok()) {
      auto undo = tx.Exec("ROLLBACK TO verify");
      if (!undo.ok()) return undo.status();
    }
    auto rel = tx.Exec("RELEASE verify");
    return rel.ok() ? Status::Ok() : rel.status();
  });
  if (st.ok() && !verify_failure.ok()) {
    log::Error("verification failed; will retry", {{"error", verify_failure.ToString()}});
    step_failed_ = true;
  }
  return st.ok();
}

bool CoordinationDriver::VerifyDeletions() {
  bool any = false;
  Status st = db_.Read([&](SqlTx& tx) {
    // Completed and not yet verified, and the blob's removal no longer queued.
    auto r = tx.QueryOne(
        "SELECT 1 FROM coordinations c WHERE c.status = ? AND c.verification IS NULL AND NOT "
        "EXISTS (SELECT 1 FROM blob_gc g WHERE g.blob_key = c.blob_key) LIMIT 1",
        {std::string(ToString(CoordinationStatus::kCompleted))});
    if (!r.ok()) return r.status();
    any = r->has_value();
    return Status::Ok();
  });
  if (!st.ok() || !any) {
    if (!st.ok()) {
      log::Error("verification scan failed", {{"error", st.ToString()}});
      step_failed_ = true;
    }
    return false;
  }
  size_t found = 0;
  st = db_.WriteSync([&](SqlTx& tx) { return VerifyIn(tx, &found); });
  if (!st.ok()) {
    log::Error("verification failed; will retry", {{"error", st.ToString()}});
    step_failed_ = true;
  }
  return st.ok() && found > 0;
}

Status CoordinationDriver::VerifyIn(SqlTx& tx, size_t* found) {
  struct Pending {
    std::string id, file_id;
    std::optional<std::string> blob_key;
  };
  std::vector<Pending> todo;
  // Completed and not yet verified, and the blob's removal no longer queued.
  LASTCALL_RETURN_IF_ERROR(tx.Query(
      "SELECT c.id, c.file_id, c.blob_key FROM coordinations c WHERE c.status = ? AND "
      "c.verification IS NULL AND NOT EXISTS (SELECT 1 FROM blob_gc g WHERE g.blob_key = "
      "c.blob_key) ORDER BY c.completed_at LIMIT ?",
      {std::string(ToString(CoordinationStatus::kCompleted)), static_cast<int64_t>(config_.batch)},
      [&](const SqlRow& r) {
        todo.push_back({r.Text(0), r.Text(1), r.OptText(2)});
        return true;
      }));
  if (found) *found = todo.size();
  // Registered with tx only once every statement succeeded: a failure leaves none behind.
  std::vector<std::function<void()>> after;
  for (const auto& p : todo) {
    auto residue = FindResidue(tx, blobs_, p.file_id, p.blob_key);
    if (!residue.ok()) return residue.status();
    bool clean = residue->empty();
    WallMillis now = clock_.Now();
    const char* result = clean ? kVerified : kResidue;
    auto r = tx.Exec(
        "UPDATE coordinations SET verification = ?, residue = ?, verified_at = ? WHERE id = ? "
        "AND verification IS NULL",
        {std::string(result), residue->dump(), now, p.id});
    if (!r.ok()) return r.status();
    if (*r == 0) continue;
    LASTCALL_RETURN_IF_ERROR(AppendTimeline(
        tx, p.id, now, clean ? "verified" : "residue_found",
        clean ? "{}" : Json({{"residue", *residue}})));
    after.push_back([this, id = p.id, file_id = p.file_id, result = std::string(result),
                     residue = residue->dump()] {
      metrics_.deletion_verifications.Inc({result});
      if (result == kVerified) {
        log::Info("deletion verified", {{"coordinationId", id}, {"fileId", file_id}});
      } else {
        log::Error("residue found after a deletion",
                   {{"coordinationId", id}, {"fileId", file_id}, {"residue", residue}});
      }
    });
  }
  for (auto& fn : after) tx.AfterCommit(std::move(fn));
  return Status::Ok();
}

void CoordinationDriver::Loop() {
  pthread_setname_np(pthread_self(), "coord-driver");  // for ps, perf and the benchmark
  int64_t error_backoff_ms = 0;
  for (;;) {
    {
      std::lock_guard<std::mutex> l(mu_);
      if (stopping_) return;
      dirty_ = false;
    }
    bool worked = false;
    step_failed_ = false;
    claims_skipped_ = false;
    auto round_start = std::chrono::steady_clock::now();
    worked |= FireDeadlines();
    worked |= RunDeletions();
    worked |= CollectBlobs();
    worked |= VerifyDeletions();
    auto round_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                        std::chrono::steady_clock::now() - round_start)
                        .count();
    if (round_ms > 1000 + config_.test_deletion_delay_ms) {
      // Deadlines fire late when a round is this slow: say so, it is the first thing to look at.
      log::Warn("coordination driver round was slow", {{"durationMs", round_ms}});
    }
    if (worked) continue;

    std::optional<WallMillis> next;
    Status st = db_.Read([&](SqlTx& tx) {
      auto r = NextDeadline(tx);
      if (!r.ok()) return r.status();
      next = *r;
      return Status::Ok();
    });
    // Sleep until the earliest deadline, a Wake(), or a periodic check for deletions and blobs
    // whose earlier attempt failed.
    int64_t wait_ms = 1000;
    if (!st.ok() || step_failed_) {
      error_backoff_ms = std::min<int64_t>(std::max<int64_t>(error_backoff_ms * 2, 100), 5000);
      wait_ms = error_backoff_ms;
    } else {
      error_backoff_ms = 0;
      if (next) wait_ms = std::clamp<int64_t>(*next - clock_.Now(), 0, wait_ms);
    }
    // Work another node holds: look again shortly, once its transaction has ended.
    if (claims_skipped_) wait_ms = std::max<int64_t>(wait_ms, kClaimRetryMs);
    if (wait_ms <= 0) continue;  // a deadline fell due while we looked
    std::unique_lock<std::mutex> l(mu_);
    cv_.wait_for(l, std::chrono::milliseconds(wait_ms), [&] { return dirty_ || stopping_; });
  }
}

}  // namespace lastcall
