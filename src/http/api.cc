#include "http/api.h"

#include <nlohmann/json.hpp>
#include <limits>
#include <regex>

#include "common/log.h"
#include "common/text.h"
#include "consumers/analytics_consumer.h"
#include "consumers/categorize.h"
#include "consumers/consumer.h"
#include "dlq/dead_letters.h"
#include "coordination/coordination_repo.h"
#include "coordination/holds.h"
#include "domain/consumer_name.h"
#include "domain/events.h"
#include "http/assets.h"
#include "http/json_text.h"
#include "http/jwt.h"
#include "http/multipart.h"
#include "import/statement.h"
#include "receipts/receipts.h"
#include "store/repos.h"
#include "webhooks/consumer_repo.h"
#include "webhooks/sender.h"
#include "webhooks/signature.h"

namespace lastcall {

using json = nlohmann::json;

namespace {

json Null() { return json(nullptr); }

template <typename T>
json OrNull(const std::optional<T>& v) {
  return v ? json(*v) : Null();
}

json AccountJson(const Account& a) {
  return {{"accountId", a.id},
          {"name", a.name},
          {"currency", a.currency},
          {"balance", a.balance.ToString()},
          {"transactionCount", a.transaction_count},
          {"lastTransactionDate", OrNull(a.last_transaction_date)}};
}

json TransactionJson(const Transaction& t) {
  return {{"transactionId", t.id},
          {"accountId", t.account_id},
          {"fileId", t.file_id},
          {"date", t.date},
          {"description", t.description},
          {"amount", t.amount.ToString()},
          {"currency", t.currency},
          {"merchant", OrNull(t.merchant)},
          {"category", OrNull(t.category)}};
}

// null until the deletion was checked; then {"result": "verified"|"residue", "residue": {...},
// "verifiedAt"}.
json VerificationJson(const Coordination& c) {
  if (!c.verification) return Null();
  json residue = json::parse(c.residue_json, nullptr, false);
  if (!residue.is_object()) residue = json::object();
  return {{"result", *c.verification},
          {"residue", residue},
          {"verifiedAt", c.verified_at ? json(FormatRfc3339(*c.verified_at)) : Null()}};
}

// null, or the veto that stopped the coordination: {"consumer", "reason", "vetoedAt"}.
json VetoJson(const Coordination& c) {
  if (!c.veto) return Null();
  return {{"consumer", c.veto->consumer},
          {"reason", c.veto->reason},
          {"vetoedAt", FormatRfc3339(c.veto->at)}};
}

// null, or the operator's override of that veto: {"reason", "overriddenAt"} (the operator's
// subject is on the timeline, for the audit).
json OverrideJson(const Coordination& c) {
  if (!c.overridden) return Null();
  return {{"reason", c.overridden->reason}, {"overriddenAt", FormatRfc3339(c.overridden->at)}};
}

json CoordinationJson(const Coordination& c) {
  json consumers = json::array();
  for (const auto& name : c.expected) {
    const Completion* done = nullptr;
    for (const auto& comp : c.completions) {
      if (comp.consumer == name) done = &comp;
    }
    ConsumerPolicy policy = c.PolicyOf(name);
    json rule = Null();
    for (const auto& [n, r] : c.proceeded_by) {
      if (n == name) rule = ToString(r);
    }
    WallMillis own = policy.timeout_ms > 0 ? std::min(c.started_at + policy.timeout_ms, c.deadline_at)
                                           : c.deadline_at;
    json entry = {{"name", name}, {"status", "pending"}, {"completedAt", Null()}, {"detail", Null()},
                  {"priority", ToString(policy.priority)}, {"timeoutAt", FormatRfc3339(own)},
                  {"proceededBy", rule}};
    if (done) {
      entry["status"] = ToString(done->status);
      entry["completedAt"] = FormatRfc3339(done->at);
      entry["detail"] = json::parse(done->detail_json, nullptr, false);
      if (entry["detail"].is_discarded()) entry["detail"] = json::object();
    }
    consumers.push_back(std::move(entry));
  }
  return {{"coordinationId", c.id},
          {"fileId", c.file_id},
          {"status", ToString(c.status)},
          {"outcome", c.outcome == Outcome::kNone ? Null() : json(ToString(c.outcome))},
          {"expectedConsumers", c.expected},
          {"consumers", consumers},
          {"startedAt", FormatRfc3339(c.started_at)},
          {"deadlineAt", FormatRfc3339(c.deadline_at)},
          {"completedAt", c.completed_at ? json(FormatRfc3339(*c.completed_at)) : Null()},
          {"notBefore", FormatRfc3339(c.not_before)},
          {"holdReason", OrNull(c.hold_reason)},
          {"cancelledAt", c.cancelled_at ? json(FormatRfc3339(*c.cancelled_at)) : Null()},
          {"veto", VetoJson(c)},
          {"override", OverrideJson(c)},
          {"verification", VerificationJson(c)}};
}

json HoldJson(const Hold& h) {
  return {{"holdId", h.id},
          {h.scope == kHoldScopeUser ? "userId" : h.scope == kHoldScopeAccount ? "accountId" : "fileId",
           h.target_id},
          {"scope", h.scope},
          {"reason", h.reason},
          {"placedBy", h.placed_by},
          {"placedAt", FormatRfc3339(h.placed_at)},
          {"releasedBy", OrNull(h.released_by)},
          {"releasedAt", h.released_at ? json(FormatRfc3339(*h.released_at)) : Null()},
          {"active", !h.released_at.has_value()}};
}

HttpResponse JsonResponse(int status, const json& body) {
  HttpResponse r;
  r.status = status;
  r.body = body.dump(-1, ' ', false, json::error_handler_t::replace);
  return r;
}

bool IsCurrencyCode(const std::string& s) {
  return s.size() == 3 && std::all_of(s.begin(), s.end(), [](char c) { return c >= 'A' && c <= 'Z'; });
}

std::vector<std::string> SplitPath(const std::string& path) {
  std::vector<std::string> parts;
  size_t i = 1;
  while (i <= path.size()) {
    size_t j = path.find('/', i);
    if (j == std::string::npos) j = path.size();
    parts.push_back(path.substr(i, j - i));
    i = j + 1;
  }
  if (!parts.empty() && parts.back().empty()) parts.pop_back();  // trailing slash
  return parts;
}

Result<json> ParseJsonObject(const std::string& body) {
  // nlohmann's lexer ends the input at a NUL byte; JSON text never holds one (RFC 8259 escapes it).
  if (body.find('\0') != std::string::npos) {
    return Status::Invalid("invalid_json", "the request body is not valid JSON (a NUL byte)");
  }
  json j = json::parse(body, nullptr, false);
  if (j.is_discarded()) return Status::Invalid("invalid_json", "the request body is not valid JSON");
  if (!j.is_object()) return Status::Invalid("invalid_json", "the request body must be a JSON object");
  return j;
}

// A string field that must be present; max_len 0 checks the type only (the caller validates).
Result<std::string> RequiredString(const json& j, const char* field, size_t max_len) {
  auto it = j.find(field);
  if (it == j.end()) return Status::Invalid("invalid_request", std::string("missing field \"") + field + "\"");
  if (!it->is_string()) return Status::Invalid("invalid_request", std::string("field \"") + field + "\" must be a string");
  std::string v = it->get<std::string>();
  if (max_len > 0 && (v.empty() || v.size() > max_len)) {
    return Status::Invalid("invalid_request", std::string("field \"") + field + "\" must be 1 to " +
                                                  std::to_string(max_len) + " characters");
  }
  return v;
}

// The "reason" field of a veto or an override: a string of 1 to kMaxVetoReason bytes of UTF-8
// (shown to people). Errors: kInvalidArgument "invalid_request".
Result<std::string> ReasonField(const json& j) {
  auto r = RequiredString(j, "reason", kMaxVetoReason);
  if (!r.ok()) return r.status();
  if (!IsValidUtf8(*r)) return Status::Invalid("invalid_request", "field \"reason\" is not valid UTF-8");
  return r;
}

// A listing's `limit` (1-500) or `cursor` ("<millis>.<uuid>", as the listing gave it out) query
// parameter into *limit / *after; the message of a 400 when the value is bad.
std::optional<std::string> ParsePageParam(const std::string& k, const std::string& v, int* limit,
                                          std::optional<std::pair<WallMillis, std::string>>* after) {
  if (k == "limit") {
    auto n = ParseDecimal(v, 500);
    if (!n || *n < 1) return "limit must be 1 to 500";
    *limit = static_cast<int>(*n);
    return std::nullopt;
  }
  size_t dot = v.find('.');
  auto at = dot == std::string::npos
                ? std::nullopt
                : ParseDecimal(std::string_view(v).substr(0, dot), std::numeric_limits<int64_t>::max());
  if (!at || !IsUuid(v.substr(dot + 1))) return "cursor is not one this server gave out";
  *after = std::make_pair(static_cast<WallMillis>(*at), v.substr(dot + 1));
  return std::nullopt;
}

}  // namespace

class Api::Impl {
 public:
  Impl(Database& db, BlobStore& blobs, Outbox& outbox, CoordinationDriver& coordinator, Clock& clock,
       IdGenerator& ids, Metrics& metrics, const ReceiptKeyring& receipt_keys, ApiConfig config,
       ApiDeps deps)
      : db_(db), blobs_(blobs), outbox_(outbox), coordinator_(coordinator), clock_(clock), ids_(ids),
        metrics_(metrics), receipt_keys_(receipt_keys), config_(std::move(config)),
        deps_(std::move(deps)) {}

  void HandleMetricsOnly(HttpRequest&& req, Respond respond) {
    if (req.path != "/metrics") return respond(ErrorResponse(Status::NotFound("no such endpoint: " + req.path)));
    if (req.method != "GET") {
      HttpResponse r = ErrorResponse(MethodNotAllowed(req));
      r.headers["Allow"] = "GET";
      return respond(std::move(r));
    }
    respond(MetricsResponse());
  }

  HttpResponse MetricsResponse() {
    HttpResponse r;
    r.content_type = "text/plain; version=0.0.4; charset=utf-8";
    r.body = metrics_.Render(db_, clock_.Now());
    return r;
  }

  void Handle(HttpRequest&& req, Respond respond) {
    std::vector<std::string> parts = SplitPath(req.path);
    std::vector<std::string> allowed = AllowedMethods(parts);
    std::string route = RouteLabel(parts, allowed);
    Respond logged = [this, respond = std::move(respond), route, method = req.method,
                      path = log::Enabled(log::Level::kDebug) ? req.path : std::string(),
                      id = req.request_id, start = std::chrono::steady_clock::now()](HttpResponse r) {
      double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      metrics_.http_requests.Inc({method, route, std::to_string(r.status)});
      metrics_.http_duration.Observe({route}, seconds);
      if (r.status >= 500) {
        log::Error("request failed", {{"requestId", id}, {"method", method}, {"status", r.status}});
      }
      if (log::Enabled(log::Level::kDebug)) {
        log::Debug("request", {{"requestId", id},
                               {"method", method},
                               {"path", path},
                               {"status", r.status},
                               {"micros", std::chrono::duration_cast<std::chrono::microseconds>(
                                              std::chrono::steady_clock::now() - start)
                                              .count()}});
      }
      respond(std::move(r));
    };
    try {
      Route(req, parts, allowed, logged);
    } catch (const std::exception& e) {
      log::Error("handler threw", {{"requestId", req.request_id}, {"error", e.what()}});
      logged(ErrorResponse(Status::Internal("internal error; see the server log for request " +
                                            req.request_id)));
    }
  }

 private:
  struct Caller {
    std::string user_id;
    std::string role;
    std::optional<std::string> consumer;  // set for a consumer token (lcc_...), not a JWT
  };

  Result<Caller> Authenticate(const HttpRequest& req) {
    const std::string prefix = "Bearer ";
    if (req.authorization.empty()) return Status::Unauthenticated("missing Authorization header");
    if (req.authorization.size() <= prefix.size() ||
        strncasecmp(req.authorization.c_str(), prefix.c_str(), prefix.size()) != 0) {
      return Status::Unauthenticated("the Authorization header must be \"Bearer <token>\"");
    }
    std::string_view token = std::string_view(req.authorization).substr(prefix.size());
    if (token.rfind(kConsumerTokenPrefix, 0) == 0) {
      std::optional<WebhookConsumer> consumer;
      Status st = db_.Read([&](SqlTx& tx) {
        auto c = FindWebhookConsumerByToken(tx, TokenHash(token));
        if (!c.ok()) return c.status();
        consumer = *c;
        return Status::Ok();
      });
      if (!st.ok()) return st;
      if (!consumer) return Status::Unauthenticated("unknown consumer token");
      return Caller{"", "consumer", consumer->name};
    }
    auto claims = VerifyJwt(std::string_view(req.authorization).substr(prefix.size()),
                            config_.jwt_secret, clock_.Now());
    if (!claims.ok()) return claims.status();
    return Caller{claims->sub, claims->role};
  }

  // The route template for metrics labels ("/files/{id}/content"); "unmatched" for anything that
  // is not a route, so random paths cannot grow the label set.
  // allowed is AllowedMethods(p).
  std::string RouteLabel(const std::vector<std::string>& p,
                         const std::vector<std::string>& allowed) const {
    if (allowed.empty()) return "unmatched";
    if (p.size() == 2 && p[0] == "dashboard") return "/dashboard/{asset}";
    std::string out;
    for (size_t i = 0; i < p.size(); ++i) {
      bool id = i == 1 && (p[0] == "accounts" || p[0] == "files" || p[0] == "transactions" ||
                           p[0] == "coordinations" || p[0] == "holds" || p[0] == "dlq");
      bool name = i == 1 && p[0] == "consumers";
      out += "/" + (id ? std::string("{id}") : name ? std::string("{name}") : p[i]);
    }
    return out;
  }

  static Status MethodNotAllowed(const HttpRequest& req) {
    return Status(Code::kMethodNotAllowed, "method_not_allowed",
                  req.method + " is not allowed on " + req.path);
  }

  static Status CheckId(const std::string& id, const char* what) {
    if (!IsUuid(id)) {
      return Status::Invalid("invalid_id", std::string("malformed ") + what + " id in the path");
    }
    return Status::Ok();
  }

  // p is SplitPath(req.path), allowed is AllowedMethods(p).
  void Route(const HttpRequest& req, const std::vector<std::string>& p,
             const std::vector<std::string>& allowed, const Respond& respond) {
    auto fail = [&](const Status& st) { respond(ErrorResponse(st)); };
    const std::string& m = req.method;

    // Which routes exist, and with which methods: unknown paths are 404, known ones with another
    // method 405 (with Allow), both before authentication so nothing about data leaks.
    if (allowed.empty()) return fail(Status::NotFound("no such endpoint: " + req.path));
    if (std::find(allowed.begin(), allowed.end(), m) == allowed.end()) {
      HttpResponse r = ErrorResponse(MethodNotAllowed(req));
      std::string allow;
      for (const auto& a : allowed) allow += (allow.empty() ? "" : ", ") + a;
      r.headers["Allow"] = allow;
      return respond(std::move(r));
    }

    if (p.size() == 1 && p[0] == "healthz") {
      Status st = db_.Read([](SqlTx& tx) {
        auto r = tx.QueryOne("SELECT 1");
        return r.ok() ? Status::Ok() : r.status();
      });
      if (!st.ok()) return fail(Status::Unavailable("the store does not answer"));
      return respond(JsonResponse(200, {{"status", "ok"}}));
    }

    if (p.size() == 1 && p[0] == "metrics") return respond(MetricsResponse());
    if (p[0] == ".well-known") return respond(JsonResponse(200, receipt_keys_.Jwks()));
    if (p[0] == "dashboard") return ServeAsset(p.size() == 1 ? "index.html" : p[1], respond);

    auto caller = Authenticate(req);
    if (!caller.ok()) return fail(caller.status());
    const std::string& user = caller->user_id;
    bool operator_role = !caller->consumer && caller->role == kOperatorRole;

    // A consumer token reports completions and heartbeats, nothing else; those two take nothing
    // but a consumer token.
    bool consumer_route = (p[0] == "coordinations" && p.size() == 3 && p[2] == "completions") ||
                          (p[0] == "consumers" && p.size() == 3 && p[2] == "heartbeat");
    if (caller->consumer && !consumer_route) {
      return fail(Status::Forbidden("a consumer token only reports completions and heartbeats"));
    }
    if (!caller->consumer && consumer_route) {
      return fail(Status::Forbidden("this route takes the consumer's own token (lcc_...)"));
    }
    if (p[0] == "coordinations" && p.size() == 3 && p[2] == "completions") {
      if (Status st = CheckId(p[1], "coordination"); !st.ok()) return fail(st);
      return ReportCompletion(*caller->consumer, p[1], req, respond);
    }
    if (p[0] == "consumers" && p.size() == 3 && p[2] == "heartbeat") {
      return Heartbeat(*caller->consumer, p[1], respond);
    }
    if (p[0] == "consumers" || p[0] == "dlq") {
      if (!operator_role) return fail(Status::Forbidden("this route needs the operator role"));
      if (p[0] == "consumers" && p.size() == 1 && m == "POST") return RegisterConsumer(req, respond);
      if (p[0] == "consumers" && p.size() == 1) return ListConsumersRoute(respond);
      if (p[0] == "consumers" && p.size() == 2) return DeregisterConsumer(p[1], respond);
      if (p[0] == "consumers") return RotateSecret(p[1], req, respond);
      if (p.size() == 1) return ListDeadLettersRoute(req, respond);
      if (Status st = CheckId(p[1], "dead letter"); !st.ok()) return fail(st);
      return ReplayDeadLetterRoute(p[1], respond);
    }

    if (p[0] == "accounts") {
      if (p.size() == 1 && m == "POST") return CreateAccount(user, req, respond);
      if (p.size() == 1) return ListAccountsRoute(user, respond);
      if (Status st = CheckId(p[1], "account"); !st.ok()) return fail(st);
      return GetAccount(user, p[1], respond);
    }
    if (p[0] == "files") {
      if (p.size() == 1 && m == "POST") return Upload(user, req, respond);
      if (p.size() == 1) return ListFilesRoute(user, respond);
      if (Status st = CheckId(p[1], "file"); !st.ok()) return fail(st);
      if (p.size() == 2 && m == "DELETE") return DeleteFile(user, p[1], req.request_id, respond);
      if (p.size() == 2) return GetFile(user, p[1], respond);
      if (p[2] == "content") return GetContent(user, p[1], respond);
      return GetFileTransactions(user, p[1], respond);
    }
    if (p[0] == "transactions") {
      if (p.size() == 1) return ListTransactions(user, req, respond);
      if (Status st = CheckId(p[1], "transaction"); !st.ok()) return fail(st);
      return PatchTransaction(user, p[1], req, respond);
    }
    if (p[0] == "coordinations") {
      if (p.size() == 1) return ListCoordinationsRoute(user, operator_role, req, respond);
      if (Status st = CheckId(p[1], "coordination"); !st.ok()) return fail(st);
      if (p.size() == 3 && p[2] == "cancel") return CancelRoute(user, p[1], respond);
      if (p.size() == 3 && p[2] == "override") {
        if (!operator_role) {
          return fail(Status::Forbidden("overriding a veto is for operators (a token with role "
                                        "operator)"));
        }
        return OverrideRoute(user, p[1], req, respond);
      }
      if (p.size() == 3 && p[2] == "receipt") return ReceiptRoute(user, operator_role, p[1], respond);
      if (p.size() == 3) return Timeline(user, operator_role, p[1], respond);
      return GetCoordination(user, operator_role, p[1], respond);
    }
    if (p[0] == "holds") {
      if (caller->role != kOperatorRole) {
        return fail(Status::Forbidden("legal holds are for operators (a token with role operator)"));
      }
      if (p.size() == 1 && m == "POST") return PlaceHoldRoute(user, req, respond);
      if (p.size() == 1) return ListHoldsRoute(req, respond);
      if (Status st = CheckId(p[1], "hold"); !st.ok()) return fail(st);
      return ReleaseHoldRoute(user, p[1], respond);
    }
    if (p[0] == "analytics" && p[1] == "monthly") return Monthly(user, respond);
    if (p[0] == "analytics" && p[1] == "archive") return ArchiveRoute(user, respond);
    if (p[0] == "categorization") return Mappings(user, respond);
    fail(Status::NotFound("no such endpoint: " + req.path));
  }

  std::vector<std::string> AllowedMethods(const std::vector<std::string>& p) const {
    if (p.empty()) return {};
    const std::string& a = p[0];
    if (a == "healthz" && p.size() == 1) return {"GET"};
    if (a == "metrics" && p.size() == 1) return config_.serve_metrics ? std::vector<std::string>{"GET"}
                                                                      : std::vector<std::string>{};
    if (a == "dashboard" && p.size() <= 2) return {"GET"};
    if (a == "accounts" && p.size() == 1) return {"GET", "POST"};
    if (a == "accounts" && p.size() == 2) return {"GET"};
    if (a == "files" && p.size() == 1) return {"GET", "POST"};
    if (a == "files" && p.size() == 2) return {"GET", "DELETE"};
    if (a == "files" && p.size() == 3 && (p[2] == "content" || p[2] == "transactions")) return {"GET"};
    if (a == "transactions" && p.size() == 1) return {"GET"};
    if (a == "transactions" && p.size() == 2) return {"GET", "PATCH"};
    if (a == "coordinations" && p.size() == 1) return {"GET"};
    if (a == "coordinations" && p.size() == 2) return {"GET"};
    if (a == "coordinations" && p.size() == 3 && p[2] == "timeline") return {"GET"};
    if (a == "coordinations" && p.size() == 3 && p[2] == "completions") return {"POST"};
    if (a == "consumers" && p.size() == 1) return {"GET", "POST"};
    if (a == "consumers" && p.size() == 2) return {"DELETE"};
    if (a == "consumers" && p.size() == 3 && (p[2] == "heartbeat" || p[2] == "rotate-secret")) {
      return {"POST"};
    }
    if (a == "dlq" && p.size() == 1) return {"GET"};
    if (a == "dlq" && p.size() == 3 && p[2] == "replay") return {"POST"};
    if (a == "coordinations" && p.size() == 3 && p[2] == "receipt") return {"GET"};
    if (a == "coordinations" && p.size() == 3 && p[2] == "cancel") return {"POST"};
    if (a == "coordinations" && p.size() == 3 && p[2] == "override") return {"POST"};
    if (a == "holds" && p.size() == 1) return {"GET", "POST"};
    if (a == "holds" && p.size() == 2) return {"DELETE"};
    if (a == ".well-known" && p.size() == 2 && p[1] == "jwks.json") return {"GET"};
    if (a == "analytics" && p.size() == 2 && (p[1] == "monthly" || p[1] == "archive")) return {"GET"};
    if (a == "categorization" && p.size() == 2 && p[1] == "mappings") return {"GET"};
    return {};
  }

  // Runs a read and answers with its JSON, or the error.
  void ReadJson(const Respond& respond, const std::function<Result<json>(SqlTx&)>& fn,
                int status = 200) {
    json out;
    Status st = db_.Read([&](SqlTx& tx) {
      auto r = fn(tx);
      if (!r.ok()) return r.status();
      out = std::move(r).value();
      return Status::Ok();
    });
    if (!st.ok()) return respond(ErrorResponse(st));
    respond(JsonResponse(status, out));
  }

  // Queues a write; answers once it committed.
  void WriteJson(const Respond& respond, std::function<Result<std::pair<int, json>>(SqlTx&)> fn,
                 std::function<void(const Status&)> after = nullptr) {
    auto out = std::make_shared<std::pair<int, json>>();
    db_.Write(
        [fn = std::move(fn), out](SqlTx& tx) -> Status {
          auto r = fn(tx);
          if (!r.ok()) return r.status();
          *out = std::move(r).value();
          return Status::Ok();
        },
        [respond, out, after = std::move(after)](Status st) {
          if (after) after(st);
          if (!st.ok()) return respond(ErrorResponse(st));
          respond(JsonResponse(out->first, out->second));
        });
  }

  void CreateAccount(const std::string& user, const HttpRequest& req, const Respond& respond) {
    auto body = ParseJsonObject(req.body);
    if (!body.ok()) return respond(ErrorResponse(body.status()));
    auto name = RequiredString(*body, "name", 200);
    if (!name.ok()) return respond(ErrorResponse(name.status()));
    auto currency = RequiredString(*body, "currency", 0);
    if (!currency.ok()) return respond(ErrorResponse(currency.status()));
    if (!IsCurrencyCode(*currency)) {
      return respond(ErrorResponse(Status::Unprocessable(
          "invalid_currency", "currency must be an ISO 4217 code of three upper-case letters")));
    }
    Account a;
    a.id = ids_.NewUuid();
    a.user_id = user;
    a.name = *name;
    a.currency = *currency;
    a.created_at = clock_.Now();
    WriteJson(respond, [a](SqlTx& tx) -> Result<std::pair<int, json>> {
      LASTCALL_RETURN_IF_ERROR(InsertAccount(tx, a));
      return std::make_pair(201, AccountJson(a));
    });
  }

  void ListAccountsRoute(const std::string& user, const Respond& respond) {
    ReadJson(respond, [&](SqlTx& tx) -> Result<json> {
      auto r = ListAccounts(tx, user);
      if (!r.ok()) return r.status();
      json arr = json::array();
      for (const auto& a : *r) arr.push_back(AccountJson(a));
      return json{{"accounts", arr}};
    });
  }

  void GetAccount(const std::string& user, const std::string& id, const Respond& respond) {
    ReadJson(respond, [&](SqlTx& tx) -> Result<json> {
      auto r = FindAccount(tx, user, id);
      if (!r.ok()) return r.status();
      if (!*r) return Status::NotFound("account " + id + " not found");
      return AccountJson(**r);
    });
  }

  void Upload(const std::string& user, const HttpRequest& req, const Respond& respond) {
    auto fail = [&](const Status& st) { respond(ErrorResponse(st)); };
    auto parts = ParseMultipart(req.content_type, req.body);
    if (!parts.ok()) return fail(parts.status());
    const MultipartPart* account_part = nullptr;
    const MultipartPart* file_part = nullptr;
    for (const auto& part : *parts) {
      if (part.name == "accountId" && !account_part) account_part = &part;
      if (part.name == "file" && !file_part) file_part = &part;
    }
    if (!account_part) return fail(Status::Invalid("invalid_form", "missing form field \"accountId\""));
    if (!file_part || !file_part->filename) {
      return fail(Status::Invalid("invalid_form", "missing file part \"file\" (with a filename)"));
    }
    if (file_part->data.size() > config_.max_upload_bytes) {
      return fail(Status::TooLarge("the file is " + std::to_string(file_part->data.size()) +
                                   " bytes; the limit is " +
                                   std::to_string(config_.max_upload_bytes)));
    }
    std::string account_id = account_part->data;
    if (!IsUuid(account_id)) {
      return fail(Status::Unprocessable("unknown_account", "accountId is not a known account"));
    }
    if (!IsValidUtf8(*file_part->filename)) {
      return fail(Status::Invalid("invalid_form", "the file name is not valid UTF-8"));
    }
    std::string filename = file_part->filename->empty() ? std::string("upload")
                                                        : std::string(Utf8Prefix(*file_part->filename, 255));
    std::string content_type = file_part->content_type.empty() ? "application/octet-stream"
                                                               : file_part->content_type;
    if (file_part->data.empty()) return fail(Status::Unprocessable("empty_file", "the file is empty"));

    // Parse before touching storage: a bad file changes nothing.
    Result<ParsedStatement> parsed = Status::Internal("unparsed");
    switch (DetectFormat(filename, content_type, file_part->data)) {
      case StatementFormat::kCsv: parsed = ParseCsv(file_part->data); break;
      case StatementFormat::kOfx: parsed = ParseOfx(file_part->data); break;
      case StatementFormat::kUnknown:
        return fail(Status::Unsupported("unsupported_media_type",
                                        "the file is neither CSV nor OFX/QFX"));
    }
    if (!parsed.ok()) return fail(parsed.status());
    if (parsed->transactions.size() > config_.max_import_rows) {
      return fail(Status::TooLarge("the file has " + std::to_string(parsed->transactions.size()) +
                                   " transactions; the limit is " +
                                   std::to_string(config_.max_import_rows) + " per file"));
    }

    auto account = ReadAccountFor(user, account_id);
    if (!account.ok()) return fail(account.status());
    if (!*account) return fail(Status::Unprocessable("unknown_account", "accountId is not a known account"));
    const std::string currency = (*account)->currency;
    if (!parsed->currency.empty() && parsed->currency != currency) {
      return fail(Status::Unprocessable("currency_mismatch", "the statement currency " + parsed->currency +
                                                                 " does not match the account currency " +
                                                                 currency));
    }
    WallMillis now = clock_.Now();
    auto file = std::make_shared<FileRecord>();
    file->id = ids_.NewUuid();
    file->user_id = user;
    file->account_id = account_id;
    file->name = filename;
    file->content_type = content_type;
    file->size_bytes = static_cast<int64_t>(file_part->data.size());
    file->sha256 = Sha256Hex(file_part->data);
    file->blob_key = ids_.NewUuid();
    file->transaction_count = static_cast<int64_t>(parsed->transactions.size());
    file->status = kFileActive;
    file->uploaded_at = now;

    auto rows = std::make_shared<std::vector<Transaction>>();
    rows->reserve(parsed->transactions.size());
    Money sum;
    std::optional<std::string> max_date;
    for (const auto& pt : parsed->transactions) {
      if (!pt.currency.empty() && pt.currency != currency) {
        return fail(Status::Unprocessable(
            "currency_mismatch", "line " + std::to_string(pt.line) + ": currency " + pt.currency +
                                     " does not match the account currency " + currency));
      }
      if (!Money::CheckedAdd(sum, pt.amount, &sum)) {
        return fail(Status::Unprocessable("amount_out_of_range",
                                          "line " + std::to_string(pt.line) +
                                              ": the file's total exceeds the supported range"));
      }
      if (!max_date || pt.date > *max_date) max_date = pt.date;
      Transaction t;
      t.id = ids_.NewTimeOrderedUuid();
      t.user_id = user;
      t.account_id = account_id;
      t.file_id = file->id;
      t.row_no = static_cast<int64_t>(rows->size()) + 1;
      t.date = pt.date;
      t.description = pt.description;
      t.amount = pt.amount;
      t.currency = currency;
      if (!pt.merchant.empty()) t.merchant = pt.merchant;
      if (!pt.category.empty()) {
        auto c = NormalizeCategory(pt.category);
        if (!c) {
          return fail(Status::Unprocessable(
              "invalid_csv", "line " + std::to_string(pt.line) + " (category): invalid category"));
        }
        t.category = *c;
        t.category_source = "import";
      }
      rows->push_back(std::move(t));
    }

    // Content first (durable), then metadata and rows in one transaction; if that fails the blob
    // is removed again, and a crash in between leaves only an unreferenced blob that the start-up
    // sweep removes.
    Status put = blobs_.Put(file->blob_key, file_part->data);
    if (!put.ok()) return fail(put);
    CloudEvent e = MakeEvent(ids_, kApiSource, kFileUploaded, "files/" + file->id, now,
                             {{"fileId", file->id},
                              {"userId", user},
                              {"accountId", account_id},
                              {"transactionCount", file->transaction_count},
                              {"uploadedAt", FormatRfc3339(now)}});
    WriteJson(
        respond,
        [this, file, rows, sum, max_date, e, now](SqlTx& tx) -> Result<std::pair<int, json>> {
          auto acct = FindAccount(tx, file->user_id, file->account_id);
          if (!acct.ok()) return acct.status();
          if (!*acct) return Status::Unprocessable("unknown_account", "accountId is not a known account");
          // The account's row lock first: the inserts below check their foreign key with a
          // shared lock on that row, and two nodes each holding it shared while asking for it
          // exclusively deadlock (found by the multi-node test on PostgreSQL).
          LASTCALL_RETURN_IF_ERROR(
              AddToAccount(tx, file->account_id, sum, static_cast<int64_t>(rows->size()), max_date));
          LASTCALL_RETURN_IF_ERROR(InsertFile(tx, *file));
          LASTCALL_RETURN_IF_ERROR(InsertTransactions(tx, *rows));
          LASTCALL_RETURN_IF_ERROR(outbox_.Append(tx, e, now));
          return std::make_pair(201, FileJson(*file));
        },
        [this, key = file->blob_key, id = file->id, user, request_id = req.request_id](const Status& st) {
          if (st.ok()) {
            log::Info("file imported", {{"fileId", id}, {"userId", user}, {"requestId", request_id}});
          } else {
            if (!blobs_.Delete(key).ok()) {
              log::Error("could not remove the blob of a failed import", {{"fileId", id}});
            }
          }
        });
  }

  Result<std::optional<Account>> ReadAccountFor(const std::string& user, const std::string& id) {
    std::optional<Account> out;
    Status st = db_.Read([&](SqlTx& tx) {
      auto r = FindAccount(tx, user, id);
      if (!r.ok()) return r.status();
      out = *r;
      return Status::Ok();
    });
    if (!st.ok()) return st;
    return out;
  }

  void ListFilesRoute(const std::string& user, const Respond& respond) {
    ReadJson(respond, [&](SqlTx& tx) -> Result<json> {
      auto r = ListFiles(tx, user);
      if (!r.ok()) return r.status();
      json arr = json::array();
      for (const auto& f : *r) arr.push_back(FileJson(f));
      return json{{"files", arr}};
    });
  }

  static Result<FileRecord> OwnFile(SqlTx& tx, const std::string& user, const std::string& id) {
    auto r = FindFile(tx, user, id);
    if (!r.ok()) return r.status();
    if (!*r) return Status::NotFound("file " + id + " not found");
    return **r;
  }

  // The hottest read route: its body is written as text (http/json_text.h), not built as json.
  void GetFile(const std::string& user, const std::string& id, const Respond& respond) {
    std::optional<FileRecord> file;
    Status st = db_.Read([&](SqlTx& tx) {
      auto f = OwnFile(tx, user, id);
      if (!f.ok()) return f.status();
      file = std::move(f).value();
      return Status::Ok();
    });
    if (!st.ok()) return respond(ErrorResponse(st));
    HttpResponse r;
    r.status = 200;
    r.body = FileJsonText(*file);
    respond(std::move(r));
  }

  void GetContent(const std::string& user, const std::string& id, const Respond& respond) {
    std::optional<FileRecord> file;
    Status st = db_.Read([&](SqlTx& tx) {
      auto f = OwnFile(tx, user, id);
      if (!f.ok()) return f.status();
      file = *f;
      return Status::Ok();
    });
    if (!st.ok()) return respond(ErrorResponse(st));
    auto bytes = blobs_.Get(file->blob_key);
    if (!bytes.ok()) {
      // The file row exists but its content is gone: only possible mid-deletion.
      if (bytes.status().code() == Code::kNotFound) {
        return respond(ErrorResponse(Status::NotFound("file " + id + " not found")));
      }
      return respond(ErrorResponse(bytes.status()));
    }
    HttpResponse r;
    r.status = 200;
    r.content_type = file->content_type;
    r.body = std::move(bytes).value();
    r.headers["Content-Disposition"] = "attachment";
    respond(std::move(r));
  }

  void GetFileTransactions(const std::string& user, const std::string& id, const Respond& respond) {
    ReadJson(respond, [&](SqlTx& tx) -> Result<json> {
      auto f = OwnFile(tx, user, id);
      if (!f.ok()) return f.status();
      auto rows = ListFileTransactions(tx, id);
      if (!rows.ok()) return rows.status();
      json arr = json::array();
      for (const auto& t : *rows) arr.push_back(TransactionJson(t));
      return json{{"transactions", arr}};
    });
  }

  void DeleteFile(const std::string& user, const std::string& id, const std::string& request_id,
                  const Respond& respond) {
    bool events = config_.event_publishing;
    WriteJson(respond, [this, user, id, events, request_id](SqlTx& tx) -> Result<std::pair<int, json>> {
      auto f = OwnFile(tx, user, id);
      if (!f.ok()) return f.status();
      // A pending coordinated deletion stays the way this file goes, whatever the setting now.
      if (events || f->status == kFileDeletionRequested) {
        auto coordination_id = coordinator_.RequestDeletion(tx, *f);
        if (!coordination_id.ok()) return coordination_id.status();
        tx.AfterCommit([user, id, request_id, c = *coordination_id] {
          log::Info("file deletion accepted",
                    {{"fileId", id}, {"userId", user}, {"coordinationId", c}, {"requestId", request_id}});
        });
        return std::make_pair(
            202, json{{"message", "File deletion initiated successfully"},
                      {"fileId", id},
                      {"coordinationId", *coordination_id},
                      {"metadata",
                       {{"transactionCount", f->transaction_count}, {"status", kFileDeletionRequested}}}});
      }
      DeletionRecord rec{std::nullopt, clock_.Now(), "synchronous", clock_.Now()};
      auto locked = FindFileForDeletion(tx, id);
      if (!locked.ok()) return locked.status();
      if (!*locked) return Status::NotFound("file " + id + " is already deleted");
      auto n = DeleteFileData(tx, **locked, rec);
      if (!n.ok()) return n.status();
      // No consumer gets a last look on this path; keep analytics from counting a file that is gone.
      auto removed = RemoveFileContribution(tx, id);
      if (!removed.ok()) return removed.status();
      tx.AfterCommit([this] { coordinator_.Wake(); });  // removes the queued blob
      tx.AfterCommit([this, user, id, request_id, n = *n] {
        metrics_.file_deletions.Inc({"synchronous", "deleted"});
        log::Info("file deleted synchronously", {{"fileId", id},
                                                 {"userId", user},
                                                 {"requestId", request_id},
                                                 {"transactionsDeleted", n}});
      });
      return std::make_pair(200, json{{"message", "File deleted successfully"},
                                      {"fileId", id},
                                      {"metadata", {{"transactionsDeleted", *n}}}});
    },
    [this, events](const Status& st) {
      // A deletion that the store could not carry out (not a client's mistake such as a 404).
      bool server_side = st.code() == Code::kInternal || st.code() == Code::kUnavailable;
      if (!events && server_side) metrics_.file_deletions.Inc({"synchronous", "failed"});
    });
  }

  void ListTransactions(const std::string& user, const HttpRequest& req, const Respond& respond) {
    std::optional<std::string> account_id;
    if (auto it = req.query.find("accountId"); it != req.query.end()) {
      if (Status st = CheckId(it->second, "account"); !st.ok()) {
        return respond(ErrorResponse(Status::Invalid("invalid_id", "malformed accountId")));
      }
      account_id = it->second;
    }
    ReadJson(respond, [&](SqlTx& tx) -> Result<json> {
      if (account_id) {
        auto a = FindAccount(tx, user, *account_id);
        if (!a.ok()) return a.status();
        if (!*a) return Status::NotFound("account " + *account_id + " not found");
      }
      auto rows = ListUserTransactions(tx, user, account_id);
      if (!rows.ok()) return rows.status();
      json arr = json::array();
      for (const auto& t : *rows) arr.push_back(TransactionJson(t));
      return json{{"transactions", arr}};
    });
  }

  void PatchTransaction(const std::string& user, const std::string& id, const HttpRequest& req,
                        const Respond& respond) {
    if (req.method == "GET") {
      return ReadJson(respond, [&](SqlTx& tx) -> Result<json> {
        auto t = FindTransaction(tx, user, id);
        if (!t.ok()) return t.status();
        if (!*t) return Status::NotFound("transaction " + id + " not found");
        return TransactionJson(**t);
      });
    }
    auto body = ParseJsonObject(req.body);
    if (!body.ok()) return respond(ErrorResponse(body.status()));
    auto raw = RequiredString(*body, "category", 0);
    if (!raw.ok()) return respond(ErrorResponse(raw.status()));
    auto category = NormalizeCategory(*raw);
    if (!category) {
      return respond(ErrorResponse(Status::Unprocessable(
          "invalid_category", "category must be 1-64 characters of a-z, 0-9, space, _ or -")));
    }
    WriteJson(respond, [user, id, c = *category](SqlTx& tx) -> Result<std::pair<int, json>> {
      auto t = FindTransaction(tx, user, id);
      if (!t.ok()) return t.status();
      if (!*t) return Status::NotFound("transaction " + id + " not found");
      LASTCALL_RETURN_IF_ERROR(SetCategory(tx, id, c, "user"));
      Transaction updated = **t;
      updated.category = c;
      return std::make_pair(200, TransactionJson(updated));
    });
  }

  // The coordination when the caller may see it (its owner, or an operator); else kNotFound.
  static Result<Coordination> VisibleCoordination(SqlTx& tx, const std::string& user,
                                                  bool operator_role, const std::string& id) {
    auto c = LoadCoordination(tx, id);
    if (!c.ok()) return c.status();
    if (!*c || (!operator_role && (*c)->user_id != user)) {
      return Status::NotFound("coordination " + id + " not found");
    }
    return std::move(**c);
  }

  void GetCoordination(const std::string& user, bool operator_role, const std::string& id,
                       const Respond& respond) {
    ReadJson(respond, [&](SqlTx& tx) -> Result<json> {
      auto c = VisibleCoordination(tx, user, operator_role, id);
      if (!c.ok()) return c.status();
      return CoordinationJson(*c);
    });
  }

  void Timeline(const std::string& user, bool operator_role, const std::string& id,
                const Respond& respond) {
    ReadJson(respond, [&](SqlTx& tx) -> Result<json> {
      auto c = VisibleCoordination(tx, user, operator_role, id);
      if (!c.ok()) return c.status();
      auto entries = LoadTimeline(tx, id);
      if (!entries.ok()) return entries.status();
      json arr = json::array();
      for (const auto& e : *entries) {
        json detail = json::parse(e.detail_json, nullptr, false);
        if (detail.is_discarded()) detail = json::object();
        arr.push_back({{"at", FormatRfc3339(e.at)}, {"kind", e.kind}, {"detail", detail}});
      }
      return json{{"coordinationId", id}, {"entries", arr}};
    });
  }

  void ListCoordinationsRoute(const std::string& user, bool operator_role, const HttpRequest& req,
                              const Respond& respond) {
    auto fail = [&](const std::string& what) {
      respond(ErrorResponse(Status::Invalid("invalid_request", what)));
    };
    CoordinationFilter f;
    if (!operator_role) f.user_id = user;
    for (const auto& [k, v] : req.query) {
      if (k == "status") {
        auto s = ParseCoordinationStatus(v);
        if (!s) return fail("status must be waiting, held, deleting, completed, cancelled or vetoed");
        f.status = s;
      } else if (k == "outcome") {
        auto o = ParseOutcome(v);
        if (!o || *o == Outcome::kNone) return fail("outcome must be all_completed or timed_out");
        f.outcome = o;
      } else if (k == "consumer") {
        if (!IsConsumerName(v)) return fail("consumer must be a consumer name");
        f.pending_consumer = v;
      } else if (k == "limit" || k == "cursor") {
        // The cursor is opaque to clients: "<startedAtMillis>.<coordinationId>".
        if (auto bad = ParsePageParam(k, v, &f.limit, &f.after)) return fail(*bad);
      } else {
        return fail("unknown query parameter \"" + k + "\"");
      }
    }
    ReadJson(respond, [&](SqlTx& tx) -> Result<json> {
      bool more = false;
      auto list = ListCoordinations(tx, f, &more);
      if (!list.ok()) return list.status();
      json arr = json::array();
      for (const auto& c : *list) {
        json j = CoordinationJson(c);
        j["userId"] = c.user_id;
        arr.push_back(std::move(j));
      }
      json next = nullptr;
      if (more && !list->empty()) {
        next = std::to_string(list->back().started_at) + "." + list->back().id;
      }
      return json{{"coordinations", arr}, {"nextCursor", next}};
    });
  }

  // ---- webhook consumers (docs/consumers.md) ----

  static bool ValidConsumerName(const std::string& n) {
    if (n.empty() || n.size() > 64) return false;
    return std::all_of(n.begin(), n.end(), [](char c) {
      return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
    });
  }

  static json ConsumerJson(const WebhookConsumer& c, WallMillis now, int64_t in_flight,
                           int64_t dead_letters) {
    return {{"name", c.name},
            {"url", c.url},
            {"priority", ToString(c.priority)},
            {"timeoutMinutes", static_cast<double>(c.timeout_ms) / 60000.0},
            {"heartbeatSeconds", c.heartbeat_ms / 1000},
            {"canVeto", c.can_veto},
            {"createdAt", FormatRfc3339(c.created_at)},
            {"previousSecretValidUntil",
             c.previous_secret_until && *c.previous_secret_until > now
                 ? json(FormatRfc3339(*c.previous_secret_until))
                 : Null()},
            {"health",
             {{"healthy", c.HealthyAt(now)},
              {"lastHeartbeatAt", FormatRfc3339(c.last_heartbeat_at)},
              {"lastDeliveryAt", c.last_delivery_at ? json(FormatRfc3339(*c.last_delivery_at)) : Null()},
              {"lastDeliveryResult", OrNull(c.last_delivery_result)},
              {"deliveriesInFlight", in_flight},
              {"failures", c.failures},
              {"deadLetters", dead_letters}}}};
  }

  void RegisterConsumer(const HttpRequest& req, const Respond& respond) {
    auto fail = [&](const Status& st) { respond(ErrorResponse(st)); };
    auto body = ParseJsonObject(req.body);
    if (!body.ok()) return fail(body.status());
    for (const auto& [k, v] : body->items()) {
      if (k != "name" && k != "url" && k != "priority" && k != "timeoutMinutes" &&
          k != "heartbeatSeconds" && k != "canVeto") {
        return fail(Status::Invalid("invalid_request", "unknown field \"" + k + "\""));
      }
    }
    auto name = RequiredString(*body, "name", 0);
    if (!name.ok()) return fail(name.status());
    if (!ValidConsumerName(*name)) {
      return fail(Status::Unprocessable("invalid_name",
                                        "name must be 1-64 characters of a-z, 0-9, _ and -"));
    }
    for (const auto& reserved : config_.reserved_consumers) {
      if (*name == reserved) {
        return fail(Status::Conflict("consumer_exists", *name + " is an in-process consumer"));
      }
    }
    auto url = RequiredString(*body, "url", 2048);
    if (!url.ok()) return fail(url.status());
    if (url->rfind("https://", 0) == 0) {
      return fail(Status::Unprocessable("unsupported_url",
                                        "https:// URLs are not supported yet; use http://"));
    }
    if (auto parsed = ParseHttpUrl(*url); !parsed.ok()) {
      return fail(Status::Unprocessable("invalid_url", "url: " + parsed.status().message()));
    }
    auto priority_text = RequiredString(*body, "priority", 0);
    if (!priority_text.ok()) return fail(priority_text.status());
    auto priority = ParseConsumerPriority(*priority_text);
    if (!priority) {
      return fail(Status::Unprocessable("invalid_priority", "priority must be critical or optional"));
    }
    auto timeout = body->find("timeoutMinutes");
    if (timeout == body->end() || !timeout->is_number()) {
      return fail(Status::Invalid("invalid_request", "field \"timeoutMinutes\" must be a number"));
    }
    double minutes = timeout->get<double>();
    if (!(minutes > 0) || minutes > 7 * 24 * 60) {
      return fail(Status::Unprocessable("invalid_timeout",
                                        "timeoutMinutes must be greater than 0 and at most 10080"));
    }
    auto heartbeat = body->find("heartbeatSeconds");
    if (heartbeat == body->end() || !heartbeat->is_number_integer()) {
      return fail(Status::Invalid("invalid_request",
                                  "field \"heartbeatSeconds\" must be a whole number"));
    }
    int64_t heartbeat_s = heartbeat->get<int64_t>();
    if (heartbeat_s < 1 || heartbeat_s > 86400) {
      return fail(Status::Unprocessable("invalid_heartbeat",
                                        "heartbeatSeconds must be 1 to 86400"));
    }
    bool can_veto = false;
    if (auto v = body->find("canVeto"); v != body->end()) {
      if (!v->is_boolean()) {
        return fail(Status::Invalid("invalid_request", "field \"canVeto\" must be true or false"));
      }
      can_veto = v->get<bool>();
    }
    WebhookConsumer c;
    c.name = *name;
    c.url = *url;
    c.priority = *priority;
    c.timeout_ms = std::max<int64_t>(1, std::llround(minutes * 60000.0));
    c.heartbeat_ms = heartbeat_s * 1000;
    c.can_veto = can_veto;
    c.secret = NewWebhookSecret();
    std::string token = NewConsumerToken();
    c.token_hash = TokenHash(token);
    c.created_at = clock_.Now();
    c.last_heartbeat_at = c.created_at;
    WriteJson(respond, [this, c, token](SqlTx& tx) -> Result<std::pair<int, json>> {
      LASTCALL_RETURN_IF_ERROR(InsertWebhookConsumer(tx, c));
      tx.AfterCommit([this, name = c.name, url = c.url] {
        metrics_.DeclareWebhookConsumer(name);
        log::Info("webhook consumer registered", {{"consumer", name}, {"url", url}});
      });
      json out = ConsumerJson(c, c.created_at, 0, 0);
      out["secret"] = c.secret;
      out["token"] = token;
      return std::make_pair(201, out);
    });
  }

  // POST /coordinations/{id}/cancel: the owner's cancel (another user's: 404; begun: 409).
  void CancelRoute(const std::string& user, const std::string& id, const Respond& respond) {
    WriteJson(respond, [this, user, id](SqlTx& tx) -> Result<std::pair<int, json>> {
      auto c = coordinator_.Cancel(tx, user, id);
      if (!c.ok()) return c.status();
      return std::make_pair(200, CoordinationJson(*c));
    });
  }

  // POST /coordinations/{id}/override (operator): lets a vetoed coordination proceed. Body: none,
  // or {"reason": "..."} (1 to 500 characters). Unknown: 404; not vetoed: 409.
  void OverrideRoute(const std::string& operator_id, const std::string& id, const HttpRequest& req,
                     const Respond& respond) {
    std::string reason;
    if (!req.body.empty()) {
      auto body = ParseJsonObject(req.body);
      if (!body.ok()) return respond(ErrorResponse(body.status()));
      for (const auto& [k, v] : body->items()) {
        if (k != "reason") {
          return respond(ErrorResponse(Status::Invalid("invalid_request", "unknown field \"" + k + "\"")));
        }
      }
      if (body->contains("reason")) {
        auto r = ReasonField(*body);
        if (!r.ok()) return respond(ErrorResponse(r.status()));
        reason = *r;
      }
    }
    WriteJson(respond, [this, operator_id, id, reason](SqlTx& tx) -> Result<std::pair<int, json>> {
      auto c = coordinator_.Override(tx, operator_id, id, reason);
      if (!c.ok()) return c.status();
      return std::make_pair(200, CoordinationJson(*c));
    });
  }

  // GET /coordinations/{id}/receipt: a JWS over what was deleted, when, and how it was verified.
  void ReceiptRoute(const std::string& user, bool operator_role, const std::string& id,
                    const Respond& respond) {
    json payload;
    Status st = db_.Read([&](SqlTx& tx) -> Status {
      auto c = VisibleCoordination(tx, user, operator_role, id);
      if (!c.ok()) return c.status();
      if (c->status != CoordinationStatus::kCompleted || !c->verification) {
        return Status::Conflict("receipt_not_ready",
                                "coordination " + id + " is " + ToString(c->status) +
                                    (c->status == CoordinationStatus::kCompleted
                                         ? " and its verification has not run yet"
                                         : ": a receipt exists once the file is deleted and verified"));
      }
      auto tomb = tx.QueryOne("SELECT sha256, deleted_at FROM tombstones WHERE file_id = ? AND "
                              "coordination_id = ?",
                              {c->file_id, c->id});
      if (!tomb.ok()) return tomb.status();
      if (!*tomb) return Status::Internal("coordination " + id + " completed without a tombstone");
      json consumers = json::array();
      for (const auto& name : c->expected) {
        const Completion* done = c->CompletionOf(name);
        consumers.push_back({{"name", name}, {"status", done ? ToString(done->status) : "pending"}});
      }
      payload = {{"iss", "lastcall"},
                 {"sub", c->file_id},
                 {"iat", clock_.Now() / 1000},
                 {"receiptType", "lastcall.deletion.v1"},
                 {"coordinationId", c->id},
                 {"fileId", c->file_id},
                 {"contentSha256", (*tomb)->Text(0)},
                 {"requestedAt", FormatRfc3339(c->started_at)},
                 {"deletedAt", FormatRfc3339((*tomb)->Int(1))},
                 {"outcome", ToString(c->outcome)},
                 {"transactionsDeleted", c->transactions_deleted.value_or(0)},
                 {"consumers", consumers},
                 {"verification", VerificationJson(*c)}};
      // A deletion that went ahead despite a veto says so (absent otherwise, so that receipts
      // of other deletions read as before).
      if (c->veto && c->overridden) {
        payload["veto"] = VetoJson(*c);
        payload["override"] = OverrideJson(*c);
      }
      return Status::Ok();
    });
    if (!st.ok()) return respond(ErrorResponse(st));
    auto jws = SignReceipt(*receipt_keys_.signing, payload);
    if (!jws.ok()) return respond(ErrorResponse(jws.status()));
    metrics_.receipts_issued.Inc({});
    respond(JsonResponse(200, {{"coordinationId", id},
                               {"kid", receipt_keys_.signing->kid()},
                               {"receipt", *jws},
                               {"claims", payload}}));
  }

  void PlaceHoldRoute(const std::string& operator_id, const HttpRequest& req,
                      const Respond& respond) {
    auto fail = [&](const Status& st) { respond(ErrorResponse(st)); };
    auto body = ParseJsonObject(req.body);
    if (!body.ok()) return fail(body.status());
    Hold h;
    int targets = 0;
    static constexpr std::pair<const char*, const char*> kTargets[] = {
        {"userId", kHoldScopeUser}, {"accountId", kHoldScopeAccount}, {"fileId", kHoldScopeFile}};
    for (const auto& [field, scope] : kTargets) {
      if (!body->contains(field)) continue;
      ++targets;
      auto v = RequiredString(*body, field, 128);
      if (!v.ok()) return fail(v.status());
      if (std::string(scope) != kHoldScopeUser && !IsUuid(*v)) {
        return fail(Status::Invalid("invalid_request", std::string("field \"") + field +
                                                           "\" must be a UUID"));
      }
      h.scope = scope;
      h.target_id = *v;
    }
    if (targets != 1) {
      return fail(Status::Invalid("invalid_request",
                                  "give exactly one of \"userId\", \"accountId\" or \"fileId\""));
    }
    auto reason = RequiredString(*body, "reason", 500);
    if (!reason.ok()) return fail(reason.status());
    for (auto it = body->begin(); it != body->end(); ++it) {
      const std::string& k = it.key();
      if (k != "userId" && k != "accountId" && k != "fileId" && k != "reason") {
        return fail(Status::Invalid("invalid_request", "unknown field \"" + k + "\""));
      }
    }
    h.id = ids_.NewUuid();
    h.reason = *reason;
    h.placed_by = operator_id;
    h.placed_at = clock_.Now();
    WriteJson(respond, [this, h](SqlTx& tx) -> Result<std::pair<int, json>> {
      LASTCALL_RETURN_IF_ERROR(InsertHold(tx, h));
      auto held = coordinator_.PlaceHold(tx, h);
      if (!held.ok()) return held.status();
      tx.AfterCommit([this, h, n = *held] {
        metrics_.holds_placed.Inc({h.scope});
        log::Info("legal hold placed", {{"holdId", h.id}, {"scope", h.scope},
                                        {"targetId", h.target_id}, {"placedBy", h.placed_by},
                                        {"coordinationsHeld", n}});
      });
      json out = HoldJson(h);
      out["coordinationsHeld"] = *held;
      return std::make_pair(201, out);
    });
  }

  void ListConsumersRoute(const Respond& respond) {
    ReadJson(respond, [&](SqlTx& tx) -> Result<json> {
      auto list = ListWebhookConsumers(tx);
      if (!list.ok()) return list.status();
      WallMillis now = clock_.Now();
      json arr = json::array();
      for (const auto& c : *list) {
        auto in_flight = PendingDeliveries(tx, c.name);
        if (!in_flight.ok()) return in_flight.status();
        auto dead = tx.QueryOne(
            "SELECT COUNT(*) FROM dead_letters WHERE target = ? AND replayed_at IS NULL", {c.name});
        if (!dead.ok()) return dead.status();
        arr.push_back(ConsumerJson(c, now, *in_flight, (*dead)->Int(0)));
      }
      return json{{"consumers", arr}};
    });
  }

  void DeregisterConsumer(const std::string& name, const Respond& respond) {
    WriteJson(respond, [this, name](SqlTx& tx) -> Result<std::pair<int, json>> {
      auto removed = DeleteWebhookConsumer(tx, name, clock_.Now());
      if (!removed.ok()) return removed.status();
      if (!*removed) return Status::NotFound("consumer " + name + " not found");
      tx.AfterCommit([name] { log::Info("webhook consumer deregistered", {{"consumer", name}}); });
      return std::make_pair(200, json{{"name", name}, {"deleted", true}});
    });
  }

  void Heartbeat(const std::string& caller, const std::string& name, const Respond& respond) {
    if (caller != name) {
      return respond(ErrorResponse(Status::Forbidden("a consumer heartbeats only as itself")));
    }
    WriteJson(respond, [this, name](SqlTx& tx) -> Result<std::pair<int, json>> {
      WallMillis now = clock_.Now();
      LASTCALL_RETURN_IF_ERROR(RecordHeartbeat(tx, name, now));
      auto c = FindWebhookConsumer(tx, name);
      if (!c.ok()) return c.status();
      if (!*c) return Status::NotFound("consumer " + name + " not found");
      return std::make_pair(200, json{{"name", name},
                                      {"lastHeartbeatAt", FormatRfc3339(now)},
                                      {"healthyUntil", FormatRfc3339(now + (*c)->heartbeat_ms)}});
    });
  }

  void RotateSecret(const std::string& name, const HttpRequest& req, const Respond& respond) {
    int64_t overlap_s = 24 * 3600;
    if (!req.body.empty()) {
      auto body = ParseJsonObject(req.body);
      if (!body.ok()) return respond(ErrorResponse(body.status()));
      for (const auto& [k, v] : body->items()) {
        if (k != "previousSecretValidSeconds") {
          return respond(ErrorResponse(Status::Invalid("invalid_request", "unknown field \"" + k + "\"")));
        }
        if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() > 7 * 24 * 3600) {
          return respond(ErrorResponse(Status::Unprocessable(
              "invalid_overlap", "previousSecretValidSeconds must be a whole number from 0 to 604800")));
        }
        overlap_s = v.get<int64_t>();
      }
    }
    std::string secret = NewWebhookSecret();
    WriteJson(respond, [this, name, secret, overlap_s](SqlTx& tx) -> Result<std::pair<int, json>> {
      WallMillis until = clock_.Now() + overlap_s * 1000;
      LASTCALL_RETURN_IF_ERROR(RotateWebhookSecret(tx, name, secret, until));
      tx.AfterCommit([name] { log::Info("webhook secret rotated", {{"consumer", name}}); });
      return std::make_pair(200, json{{"name", name},
                                      {"secret", secret},
                                      {"previousSecretValidUntil", FormatRfc3339(until)}});
    });
  }

  // POST /coordinations/{id}/completions with a consumer token: published as consumer.completion,
  // taken in by the coordinator like an in-process consumer's.
  void ReportCompletion(const std::string& caller, const std::string& id, const HttpRequest& req,
                        const Respond& respond) {
    auto fail = [&](const Status& st) { respond(ErrorResponse(st)); };
    auto body = ParseJsonObject(req.body);
    if (!body.ok()) return fail(body.status());
    auto consumer = RequiredString(*body, "consumer", 0);
    if (!consumer.ok()) return fail(consumer.status());
    if (*consumer != caller) {
      return fail(Status::Forbidden("a consumer token completes only as its own consumer (" +
                                    caller + ")"));
    }
    auto status = RequiredString(*body, "status", 0);
    if (!status.ok()) return fail(status.status());
    if (*status != "completed" && *status != "failed" && *status != kVetoStatus) {
      return fail(Status::Unprocessable("invalid_status", "status must be completed, failed or veto"));
    }
    std::string reason;
    if (*status == kVetoStatus) {
      auto r = ReasonField(*body);
      if (!r.ok()) return fail(r.status());
      reason = *r;
    } else if (body->contains("reason")) {
      return fail(Status::Invalid("invalid_request", "field \"reason\" goes with status \"veto\" only"));
    }
    json detail = json::object();
    if (auto d = body->find("detail"); d != body->end() && !d->is_null()) {
      if (!d->is_object()) {
        return fail(Status::Invalid("invalid_request", "field \"detail\" must be an object"));
      }
      if (d->dump().size() > 16 * 1024) {
        return fail(Status::Unprocessable("detail_too_large", "detail must be at most 16 KiB of JSON"));
      }
      detail = *d;
    }
    if (*status == kVetoStatus) return ReportVeto(caller, id, reason, detail, respond);
    WriteJson(respond, [this, id, caller, s = *status, detail](SqlTx& tx) -> Result<std::pair<int, json>> {
      auto c = LoadCoordination(tx, id);
      if (!c.ok()) return c.status();
      // Not expected there: as unknown as a coordination that does not exist.
      if (!*c || std::find((*c)->expected.begin(), (*c)->expected.end(), caller) == (*c)->expected.end()) {
        return Status::NotFound("coordination " + id + " not found");
      }
      for (const auto& done : (*c)->completions) {
        if (done.consumer == caller) {
          return std::make_pair(200, json{{"coordinationId", id},
                                          {"consumer", caller},
                                          {"status", ToString(done.status)},
                                          {"duplicate", true}});
        }
      }
      LASTCALL_RETURN_IF_ERROR(PublishCompletion(tx, outbox_, clock_, ids_, caller, id, s, detail));
      return std::make_pair(202, json{{"coordinationId", id},
                                      {"consumer", caller},
                                      {"status", s},
                                      {"duplicate", false}});
    });
  }

  // A veto (POST /coordinations/{id}/completions with status "veto"): decided at once, in this
  // write, so the answer is final: 200 vetoed (or the duplicate), 404, 409 or 422.
  void ReportVeto(const std::string& caller, const std::string& id, const std::string& reason,
                  const json& detail, const Respond& respond) {
    WriteJson(
        respond,
        [this, id, caller, reason, detail](SqlTx& tx) -> Result<std::pair<int, json>> {
          bool duplicate = false;
          auto c = coordinator_.Veto(tx, caller, id, reason, detail, &duplicate);
          if (!c.ok()) return c.status();
          return std::make_pair(200, json{{"coordinationId", id},
                                          {"consumer", caller},
                                          {"status", "vetoed"},
                                          {"duplicate", duplicate},
                                          {"coordinationStatus", ToString(c->status)}});
        },
        [this](const Status& st) {
          if (st.code() == Code::kNotFound) metrics_.vetoes_refused.Inc({"not_expected"});
          else if (st.code() == Code::kConflict || st.code() == Code::kUnprocessable) {
            metrics_.vetoes_refused.Inc({st.error()});
          }
        });
  }

  // ---- the dead letter queue ----

  static json DeadLetterJson(const DeadLetter& d) {
    return {{"id", d.id},
            {"target", d.target},
            {"kind", d.kind()},
            {"eventId", d.event_id},
            {"attempts", d.attempts},
            {"error", d.error},
            {"createdAt", FormatRfc3339(d.created_at)},
            {"replayedAt", d.replayed_at ? json(FormatRfc3339(*d.replayed_at)) : Null()},
            {"event", d.event ? ToJson(*d.event) : Null()}};
  }

  void ListDeadLettersRoute(const HttpRequest& req, const Respond& respond) {
    auto fail = [&](const std::string& what) {
      respond(ErrorResponse(Status::Invalid("invalid_request", what)));
    };
    DeadLetterFilter f;
    for (const auto& [k, v] : req.query) {
      if (k == "target") {
        if (v.empty() || v.size() > 64) return fail("target must be a consumer name");
        f.target = v;
      } else if (k == "replayed") {
        if (v != "true" && v != "false") return fail("replayed must be true or false");
        f.include_replayed = v == "true";
      } else if (k == "limit" || k == "cursor") {
        // The cursor is opaque to clients: "<createdAtMillis>.<deadLetterId>".
        if (auto bad = ParsePageParam(k, v, &f.limit, &f.after)) return fail(*bad);
      } else {
        return fail("unknown query parameter \"" + k + "\"");
      }
    }
    ReadJson(respond, [&](SqlTx& tx) -> Result<json> {
      bool more = false;
      auto list = ListDeadLetters(tx, f, &more);
      if (!list.ok()) return list.status();
      json arr = json::array();
      for (const auto& d : *list) arr.push_back(DeadLetterJson(d));
      json next = nullptr;
      if (more && !list->empty()) {
        next = std::to_string(list->back().created_at) + "." + list->back().id;
      }
      return json{{"deadLetters", arr}, {"nextCursor", next}};
    });
  }

  void ReplayDeadLetterRoute(const std::string& id, const Respond& respond) {
    if (!deps_.replayer) {
      return respond(ErrorResponse(Status::Unavailable("replays are not available here")));
    }
    WriteJson(respond, [this, id](SqlTx& tx) -> Result<std::pair<int, json>> {
      WallMillis now = clock_.Now();
      LASTCALL_RETURN_IF_ERROR(ReplayDeadLetter(tx, id, now, *deps_.replayer));
      auto d = FindDeadLetter(tx, id);
      if (!d.ok()) return d.status();
      tx.AfterCommit([this, target = (*d)->target, webhook = (*d)->delivery_id.has_value(), id] {
        metrics_.dead_letter_replays.Inc({target});
        log::Info("dead letter replayed", {{"deadLetterId", id}, {"target", target}});
        if (webhook && deps_.wake_webhooks) deps_.wake_webhooks();
      });
      return std::make_pair(202, DeadLetterJson(**d));
    });
  }

  void ListHoldsRoute(const HttpRequest& req, const Respond& respond) {
    bool active_only = false;
    for (const auto& [k, v] : req.query) {
      if (k == "active" && (v == "true" || v == "false")) {
        active_only = v == "true";
      } else {
        return respond(ErrorResponse(Status::Invalid(
            "invalid_request", "the only query parameter is active=true|false")));
      }
    }
    ReadJson(respond, [&](SqlTx& tx) -> Result<json> {
      auto holds = ListHolds(tx, active_only);
      if (!holds.ok()) return holds.status();
      json arr = json::array();
      for (const auto& h : *holds) arr.push_back(HoldJson(h));
      return json{{"holds", arr}};
    });
  }

  // DELETE /holds/{id}: releases it (a second release answers the released hold, unchanged).
  void ReleaseHoldRoute(const std::string& operator_id, const std::string& id,
                        const Respond& respond) {
    WriteJson(respond, [this, operator_id, id](SqlTx& tx) -> Result<std::pair<int, json>> {
      auto h = FindHold(tx, id);
      if (!h.ok()) return h.status();
      if (!*h) return Status::NotFound("hold " + id + " not found");
      WallMillis now = clock_.Now();
      auto released = MarkHoldReleased(tx, id, operator_id, now);
      if (!released.ok()) return released.status();
      Hold hold = **h;
      json out;
      if (*released) {
        hold.released_at = now;
        hold.released_by = operator_id;
        auto n = coordinator_.ReleaseHold(tx, hold);
        if (!n.ok()) return n.status();
        tx.AfterCommit([this, hold, n = *n] {
          metrics_.holds_released.Inc({hold.scope});
          log::Info("legal hold released", {{"holdId", hold.id}, {"releasedBy", *hold.released_by},
                                            {"coordinationsReleased", n}});
        });
        out = HoldJson(hold);
        out["coordinationsReleased"] = *n;
      } else {
        out = HoldJson(hold);
        out["coordinationsReleased"] = 0;
      }
      return std::make_pair(200, out);
    });
  }

  void ServeAsset(const std::string& name, const Respond& respond) {
    const Asset* a = FindAsset(name);
    if (!a) return respond(ErrorResponse(Status::NotFound("no such dashboard file: " + name)));
    HttpResponse r;
    auto ends = [&](const char* suffix) {
      return name.size() >= strlen(suffix) && name.compare(name.size() - strlen(suffix), std::string::npos, suffix) == 0;
    };
    r.content_type = ends(".html")  ? "text/html; charset=utf-8"
                     : ends(".js")  ? "text/javascript; charset=utf-8"
                     : ends(".css") ? "text/css; charset=utf-8"
                     : ends(".svg") ? "image/svg+xml"
                                    : "application/octet-stream";
    r.body = std::string(a->bytes);
    r.headers["Cache-Control"] = "no-cache";
    r.headers["Content-Security-Policy"] =
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'";
    respond(std::move(r));
  }

  void Monthly(const std::string& user, const Respond& respond) {
    ReadJson(respond, [&](SqlTx& tx) -> Result<json> {
      auto rows = tx.QueryAll(
          "SELECT month, category, total_units, count FROM analytics_monthly WHERE user_id = ? "
          "ORDER BY month, category",
          {user});
      if (!rows.ok()) return rows.status();
      json arr = json::array();
      for (const auto& r : *rows) {
        arr.push_back({{"month", r.Text(0)},
                       {"category", r.Text(1)},
                       {"total", Money::FromUnits(r.Int(2)).ToString()},
                       {"count", r.Int(3)}});
      }
      return json{{"months", arr}};
    });
  }

  void ArchiveRoute(const std::string& user, const Respond& respond) {
    ReadJson(respond, [&](SqlTx& tx) -> Result<json> {
      auto rows = tx.QueryAll(
          "SELECT file_id, coordination_id, month, category, total_units, count, archived_at FROM "
          "analytics_archive WHERE user_id = ? ORDER BY archived_at, file_id, month, category",
          {user});
      if (!rows.ok()) return rows.status();
      json arr = json::array();
      for (const auto& r : *rows) {
        arr.push_back({{"fileId", r.Text(0)},
                       {"coordinationId", r.Text(1)},
                       {"month", r.Text(2)},
                       {"category", r.Text(3)},
                       {"total", Money::FromUnits(r.Int(4)).ToString()},
                       {"count", r.Int(5)},
                       {"archivedAt", FormatRfc3339(r.Int(6))}});
      }
      return json{{"entries", arr}};
    });
  }

  void Mappings(const std::string& user, const Respond& respond) {
    ReadJson(respond, [&](SqlTx& tx) -> Result<json> {
      auto rows = tx.QueryAll(
          "SELECT merchant, category, learned_at FROM merchant_mappings WHERE user_id = ? ORDER BY "
          "merchant",
          {user});
      if (!rows.ok()) return rows.status();
      json arr = json::array();
      for (const auto& r : *rows) {
        arr.push_back({{"merchant", r.Text(0)},
                       {"category", r.Text(1)},
                       {"learnedAt", FormatRfc3339(r.Int(2))}});
      }
      return json{{"mappings", arr}};
    });
  }

  Database& db_;
  BlobStore& blobs_;
  Outbox& outbox_;
  CoordinationDriver& coordinator_;
  Clock& clock_;
  IdGenerator& ids_;
  Metrics& metrics_;
  const ReceiptKeyring& receipt_keys_;
  ApiConfig config_;
  ApiDeps deps_;
};

Api::Api(Database& db, BlobStore& blobs, Outbox& outbox, CoordinationDriver& coordinator,
         Clock& clock, IdGenerator& ids, Metrics& metrics, const ReceiptKeyring& receipt_keys,
         ApiConfig config, ApiDeps deps)
    : impl_(std::make_unique<Impl>(db, blobs, outbox, coordinator, clock, ids, metrics,
                                   receipt_keys, std::move(config), std::move(deps))) {}

void Api::HandleMetricsOnly(HttpRequest&& req, Respond respond) {
  impl_->HandleMetricsOnly(std::move(req), std::move(respond));
}

Api::~Api() = default;

void Api::Handle(HttpRequest&& req, Respond respond) { impl_->Handle(std::move(req), std::move(respond)); }

}  // namespace lastcall
