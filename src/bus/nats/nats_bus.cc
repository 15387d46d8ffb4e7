#include "bus/nats/nats_bus.h"

#include <nats/nats.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>

#include "bus/delivery.h"
#include "common/log.h"

namespace lastcall {
namespace {

constexpr char kSeqHeader[] = "Lastcall-Outbox-Seq";
constexpr char kRelayLease[] = "nats-outbox-relay";  // stored: do not rename
constexpr int64_t kNanosPerMilli = 1000000;

std::string NatsError(natsStatus s, jsErrCode jerr = static_cast<jsErrCode>(0)) {
  std::string text = natsStatus_GetText(s);
  const char* last = nats_GetLastError(nullptr);
  if (last && *last && text != last) text += " (" + std::string(last) + ")";
  if (jerr != 0) text += " [JetStream error " + std::to_string(static_cast<int>(jerr)) + "]";
  return text;
}

// A durable consumer's BackOff, in milliseconds: the redeliveries of a message that was not acked
// (a node died holding it, or its ack was lost) come after ack_wait, then ever longer. MaxDeliver
// must exceed the list.
std::vector<int64_t> RedeliveryBackoffMs(const NatsBusOptions& o) {
  std::vector<int64_t> backoff;
  for (int i = 0; i + 1 < o.max_deliver && i < 10; ++i) {
    backoff.push_back(o.ack_wait_ms * (int64_t{1} << std::min(i, 4)));
  }
  return backoff;
}

// The URL list without user information, for logs.
std::string Redacted(const std::string& url) {
  std::string out;
  for (std::string one : SplitNatsUrls(url)) {
    size_t scheme = one.find("://");
    size_t at = one.rfind('@');
    if (at != std::string::npos && (scheme == std::string::npos || at > scheme)) {
      one = (scheme == std::string::npos ? "" : one.substr(0, scheme + 3)) + one.substr(at + 1);
    }
    if (!out.empty()) out += ",";
    out += one;
  }
  return out;
}

// The user and password of the first URL that carries them ("nats://user:pw@host:port"), or
// false when none does.
bool FirstUserInfo(const std::vector<std::string>& urls, std::string* user, std::string* password) {
  for (const auto& one : urls) {
    size_t scheme = one.find("://");
    size_t begin = scheme == std::string::npos ? 0 : scheme + 3;
    size_t at = one.rfind('@');
    if (at == std::string::npos || at < begin) continue;
    std::string info = one.substr(begin, at - begin);
    size_t colon = info.find(':');
    *user = info.substr(0, colon);
    *password = colon == std::string::npos ? "" : info.substr(colon + 1);
    return true;
  }
  return false;
}

// Tokens of a subject may not hold spaces, '*', '>' or be empty.
std::string SubjectToken(const std::string& s) {
  std::string out = s;
  for (char& c : out) {
    if (c == ' ' || c == '*' || c == '>' || c == '\t') c = '_';
  }
  return out;
}

std::vector<std::string> SplitDots(const std::string& s) {
  std::vector<std::string> out;
  size_t start = 0;
  for (;;) {
    size_t dot = s.find('.', start);
    out.push_back(s.substr(start, dot == std::string::npos ? std::string::npos : dot - start));
    if (dot == std::string::npos) return out;
    start = dot + 1;
  }
}

}  // namespace

std::vector<std::string> SplitNatsUrls(const std::string& list) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= list.size()) {
    size_t comma = list.find(',', start);
    if (comma == std::string::npos) comma = list.size();
    std::string one = list.substr(start, comma - start);
    size_t b = one.find_first_not_of(" \t");
    size_t e = one.find_last_not_of(" \t");
    out.push_back(b == std::string::npos ? std::string() : one.substr(b, e - b + 1));
    start = comma + 1;
  }
  return out;
}

std::string NatsBus::SubjectFor(const std::string& prefix, const std::string& type) {
  std::string subject = prefix;
  for (const auto& token : SplitDots(type)) {
    subject += token.empty() ? "_" : SubjectToken(token);
    subject += '.';
  }
  subject.pop_back();
  return subject;
}

std::string NatsBus::FilterFor(const std::string& prefix, const std::vector<EventPattern>& patterns) {
  std::vector<std::string> types;
  for (const auto& p : patterns) {
    if (p.types.empty()) return prefix + ">";
    for (const auto& t : p.types) {
      if (std::find(types.begin(), types.end(), t) == types.end()) types.push_back(t);
    }
  }
  if (types.empty()) return prefix + ">";
  if (types.size() == 1) return SubjectFor(prefix, types[0]);
  // The tokens every type shares, then the rest: a.b.c and a.b.d -> <prefix>a.b.>. The common
  // prefix stays shorter than every type, since ">" needs at least one more token to match it.
  std::vector<std::string> common = SplitDots(SubjectFor("", types[0]));
  common.pop_back();
  for (size_t i = 1; i < types.size(); ++i) {
    std::vector<std::string> tokens = SplitDots(SubjectFor("", types[i]));
    size_t n = 0;
    while (n < common.size() && n + 1 < tokens.size() && common[n] == tokens[n]) ++n;
    common.resize(n);
  }
  std::string filter = prefix;
  for (const auto& t : common) filter += t + ".";
  return filter + ">";
}

NatsBus::NatsBus(Database& db, Clock& clock, IdGenerator& ids, Metrics& metrics,
                 NatsBusOptions options)
    : db_(db),
      clock_(clock),
      ids_(ids),
      metrics_(metrics),
      options_(std::move(options)),
      node_id_(options_.node_id.empty() ? ids.NewUuid() : options_.node_id),
      rng_(std::random_device{}()) {}

NatsBus::~NatsBus() { Stop(); }

void NatsBus::AddTarget(const std::string& target, EventHandler* handler) {
  AddTargetTo(targets_, target, handler);
}

void NatsBus::AddRule(const Rule& rule) { AddRuleTo(targets_, rule); }

bool NatsBus::Wants(const Target& t, const CloudEvent& e) const {
  return std::any_of(t.patterns.begin(), t.patterns.end(),
                     [&](const EventPattern& p) { return p.Matches(e); });
}

bool NatsBus::Routed(const CloudEvent& e) const {
  return std::any_of(targets_.begin(), targets_.end(),
                     [&](const Target& t) { return Wants(t, e); });
}

Status NatsBus::ReplayEvent(const std::string& target, const CloudEvent& e, SqlTx& tx) {
  auto it = std::find_if(targets_.begin(), targets_.end(),
                         [&](const Target& t) { return t.name == target; });
  return ReplayInTx(tx, target, it == targets_.end() ? nullptr : it->handler, e, clock_.Now());
}

uint64_t NatsBus::failures() const {
  std::lock_guard<std::mutex> l(mu_);
  return failures_;
}

bool NatsBus::stopping() const {
  std::lock_guard<std::mutex> l(mu_);
  return stopping_;
}

bool NatsBus::Pause(int64_t ms) {
  std::unique_lock<std::mutex> l(mu_);
  cv_.wait_for(l, std::chrono::milliseconds(std::max<int64_t>(1, ms)), [&] { return stopping_; });
  return !stopping_;
}

Status NatsBus::Start() {
  for (auto& t : targets_) {
    if (!t.handler) return Status::Internal("rule target " + t.name + " has no handler");
    t.filter = FilterFor(options_.subject_prefix, t.patterns);
  }
  natsOptions* opts = nullptr;
  natsStatus s = natsOptions_Create(&opts);
  // A comma list is a cluster's seed servers: cnats takes them as a server list (its
  // natsOptions_SetURL takes exactly one URL, and would read "a,b" as one server with a mangled
  // user name). Servers the cluster announces later join the pool without credentials in their
  // URLs, so the first URL's user and password are also given for those.
  std::vector<std::string> servers = SplitNatsUrls(options_.url);
  std::vector<const char*> server_ptrs;
  for (const auto& one : servers) server_ptrs.push_back(one.c_str());
  if (s == NATS_OK) {
    s = natsOptions_SetServers(opts, server_ptrs.data(), static_cast<int>(server_ptrs.size()));
  }
  std::string user, password;
  if (s == NATS_OK && FirstUserInfo(servers, &user, &password)) {
    s = natsOptions_SetUserInfo(opts, user.c_str(), password.c_str());
  }
  if (s == NATS_OK) s = natsOptions_SetName(opts, "lastcall");
  if (s == NATS_OK) s = natsOptions_SetTimeout(opts, 5000);
  // Reconnect for ever: a NATS outage delays events (the outbox keeps them), it never ends the
  // service.
  if (s == NATS_OK) s = natsOptions_SetMaxReconnect(opts, -1);
  if (s == NATS_OK) s = natsOptions_SetReconnectWait(opts, 250);
  if (s == NATS_OK) s = natsConnection_Connect(&conn_, opts);
  natsOptions_Destroy(opts);
  if (s != NATS_OK) {
    return Status::Unavailable("cannot connect to NATS at " + Redacted(options_.url) + ": " +
                               NatsError(s));
  }
  jsOptions jo;
  jsOptions_Init(&jo);
  jo.Wait = 5000;
  s = natsConnection_JetStream(&js_, conn_, &jo);
  if (s != NATS_OK) return Status::Unavailable("NATS JetStream context: " + NatsError(s));
  LASTCALL_RETURN_IF_ERROR(EnsureTopology());
  log::Info("event bus: NATS JetStream", {{"url", Redacted(options_.url)},
                                          {"stream", options_.stream},
                                          {"republishAfterMs", options_.republish_after_ms}});
  relay_thread_ = std::thread([this] { RelayLoop(); });
  for (auto& t : targets_) {
    Target* tp = &t;
    t.thread = std::thread([this, tp] { TargetLoop(tp); });
  }
  return Status::Ok();
}

Status NatsBus::EnsureTopology() {
  std::lock_guard<std::mutex> l(topology_mu_);
  std::string all = options_.subject_prefix + ">";
  const char* subjects[] = {all.c_str()};
  jsStreamConfig sc;
  jsStreamConfig_Init(&sc);
  sc.Name = options_.stream.c_str();
  sc.Subjects = subjects;
  sc.SubjectsLen = 1;
  sc.Retention = js_LimitsPolicy;
  sc.Storage = js_FileStorage;
  sc.Replicas = options_.replicas;
  sc.MaxAge = options_.max_age_ms * kNanosPerMilli;
  sc.Duplicates = options_.duplicate_window_ms * kNanosPerMilli;
  jsStreamInfo* si = nullptr;
  jsErrCode jerr = static_cast<jsErrCode>(0);
  natsStatus s = js_GetStreamInfo(&si, js_, options_.stream.c_str(), nullptr, &jerr);
  if (si) jsStreamInfo_Destroy(si);
  si = nullptr;
  bool created = false;
  if (s == NATS_NOT_FOUND) {
    s = js_AddStream(&si, js_, &sc, nullptr, &jerr);
    created = s == NATS_OK;
    if (created) log::Info("NATS stream created", {{"stream", options_.stream}});
  } else if (s == NATS_OK) {
    s = js_UpdateStream(&si, js_, &sc, nullptr, &jerr);
  }
  if (si) jsStreamInfo_Destroy(si);
  if (s != NATS_OK) {
    return Status::Unavailable("cannot create or update the NATS stream " + options_.stream + ": " +
                               NatsError(s, jerr));
  }
  if (created) {
    // A new stream holds none of the events relayed before (a first start, or a server that lost
    // its store). Every relayed event not yet settled goes again, from the oldest: put back
    // together, the relay publishes them in outbox order. (Republishing each after
    // republish_after_ms instead would let an event the relay was publishing when the server
    // died overtake the older ones.) The relay and the recheck publish under topology_mu_, so
    // none of them publishes into the new stream before this put-back.
    Status back = db_.WriteSync([](SqlTx& tx) -> Status {
      auto r = tx.Exec(
          "UPDATE outbox SET relayed_at = NULL WHERE settled_at IS NULL AND relayed_at IS NOT NULL",
          {});
      return r.ok() ? Status::Ok() : r.status();
    });
    if (!back.ok()) return back;
  }
  std::vector<int64_t> backoff = RedeliveryBackoffMs(options_);
  for (int64_t& b : backoff) b *= kNanosPerMilli;
  for (const auto& t : targets_) {
    jsConsumerConfig cc;
    jsConsumerConfig_Init(&cc);
    cc.Durable = t.name.c_str();
    cc.Description = "lastcall target";
    cc.DeliverPolicy = js_DeliverAll;
    cc.AckPolicy = js_AckExplicit;
    cc.AckWait = options_.ack_wait_ms * kNanosPerMilli;
    cc.MaxDeliver = options_.max_deliver;
    cc.BackOff = backoff.empty() ? nullptr : backoff.data();
    cc.BackOffLen = static_cast<int>(backoff.size());
    cc.FilterSubject = t.filter.c_str();
    cc.MaxAckPending = 1;  // one event of this target in flight across all nodes: stream order
    cc.Replicas = options_.replicas;
    jsConsumerInfo* ci = nullptr;
    jerr = static_cast<jsErrCode>(0);
    s = js_GetConsumerInfo(&ci, js_, options_.stream.c_str(), t.name.c_str(), nullptr, &jerr);
    if (ci) jsConsumerInfo_Destroy(ci);
    ci = nullptr;
    if (s == NATS_NOT_FOUND) {
      s = js_AddConsumer(&ci, js_, options_.stream.c_str(), &cc, nullptr, &jerr);
      if (s == NATS_OK) log::Info("NATS consumer created", {{"consumer", t.name}, {"filter", t.filter}});
    } else if (s == NATS_OK) {
      s = js_UpdateConsumer(&ci, js_, options_.stream.c_str(), &cc, nullptr, &jerr);
    }
    if (ci) jsConsumerInfo_Destroy(ci);
    if (s != NATS_OK) {
      return Status::Unavailable("cannot create or update the NATS consumer " + t.name + ": " +
                                 NatsError(s, jerr));
    }
  }
  return Status::Ok();
}

void NatsBus::Notify() {
  {
    std::lock_guard<std::mutex> l(mu_);
    dirty_ = true;
  }
  cv_.notify_all();
}

void NatsBus::Stop() {
  {
    std::lock_guard<std::mutex> l(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (relay_thread_.joinable()) relay_thread_.join();
  for (auto& t : targets_) {
    if (t.thread.joinable()) t.thread.join();
  }
  // Hand the relay over at once instead of after the lease runs out.
  if (conn_) {
    Status released = db_.WriteSync([&](SqlTx& tx) -> Status {
      auto r = tx.Exec("DELETE FROM bus_leases WHERE name = ? AND holder = ?",
                       {std::string(kRelayLease), node_id_});
      return r.ok() ? Status::Ok() : r.status();
    });
    if (!released.ok()) log::Warn("cannot release the relay lease", {{"error", released.ToString()}});
  }
  if (js_) {
    jsCtx_Destroy(js_);
    js_ = nullptr;
  }
  if (conn_) {
    natsConnection_Close(conn_);
    natsConnection_Destroy(conn_);
    conn_ = nullptr;
  }
}

Result<int64_t> NatsBus::Backlog(SqlTx& tx, const std::string& target) {
  auto it = std::find_if(targets_.begin(), targets_.end(),
                         [&](const Target& t) { return t.name == target; });
  if (it == targets_.end()) return int64_t{0};
  int64_t n = 0;
  std::vector<CloudEvent> open;
  Status st = tx.Query(std::string("SELECT ") + kOutboxEventColumns +
                           " FROM outbox WHERE settled_at IS NULL ORDER BY seq",
                       {}, [&](const SqlRow& r) {
                         CloudEvent e = EventFromOutboxRow(r);
                         if (Wants(*it, e)) open.push_back(std::move(e));
                         return true;
                       });
  if (!st.ok()) return st;
  for (const auto& e : open) {
    auto done = tx.QueryOne(
        "SELECT 1 FROM processed WHERE target = ? AND event_id = ? UNION ALL "
        "SELECT 1 FROM dead_letters WHERE target = ? AND event_id = ?",
        {target, e.id, target, e.id});
    if (!done.ok()) return done.status();
    if (!*done) ++n;
  }
  return n;
}

Result<std::vector<OutboxEventRef>> NatsBus::Finished(SqlTx& tx, WallMillis finished_before,
                                                      int limit) {
  std::vector<OutboxEventRef> out;
  Status st = tx.Query(std::string("SELECT seq, id FROM outbox WHERE settled_at IS NOT NULL AND "
                                   "settled_at < ? ORDER BY settled_at LIMIT ?") +
                           std::string(SkipLockedRowsClause(tx)),
                       {finished_before, static_cast<int64_t>(limit)}, [&](const SqlRow& r) {
                         out.push_back({r.Int(0), r.Text(1)});
                         return true;
                       });
  if (!st.ok()) return st;
  return out;
}

int64_t NatsBus::RedeliveryHorizonMs() const {
  // The last redelivery of the last copy published (a settled row is never published again):
  // the stream drops a repeated Nats-Msg-Id within the duplicate window, and an unacked copy
  // comes back at most max_deliver times, after ack_wait and each BackOff step.
  int64_t horizon = options_.duplicate_window_ms + options_.ack_wait_ms;
  for (int64_t b : RedeliveryBackoffMs(options_)) horizon += b;
  return horizon;
}

Status NatsBus::Publish(const CloudEvent& e) {
  if (!js_) return Status::Unavailable("the NATS bus is not started");
  std::string subject = SubjectFor(options_.subject_prefix, e.type);
  std::string body = ToJson(e).dump();
  natsMsg* msg = nullptr;
  natsStatus s = natsMsg_Create(&msg, subject.c_str(), nullptr, body.data(),
                                static_cast<int>(body.size()));
  std::string seq = std::to_string(e.seq);
  if (s == NATS_OK) s = natsMsgHeader_Set(msg, kSeqHeader, seq.c_str());
  jsErrCode jerr = static_cast<jsErrCode>(0);
  if (s == NATS_OK) {
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MsgId = e.id.c_str();  // Nats-Msg-Id: a repeated publish is stored once
    po.ExpectStream = options_.stream.c_str();
    po.MaxWait = 5000;
    jsPubAck* ack = nullptr;
    s = js_PublishMsg(&ack, js_, msg, &po, &jerr);
    if (ack) jsPubAck_Destroy(ack);
  }
  if (msg) natsMsg_Destroy(msg);
  if (s != NATS_OK) return Status::Unavailable("publish " + subject + ": " + NatsError(s, jerr));
  return Status::Ok();
}

Status NatsBus::PublishClaimed(const std::vector<CloudEvent>& events, int* published) {
  size_t sent = 0;
  Status failure;
  for (; sent < events.size(); ++sent) {
    failure = Publish(events[sent]);
    if (!failure.ok()) break;
    ++*published;
  }
  if (sent == events.size()) return Status::Ok();
  // Put back what did not reach NATS (it stops at the first failure: the rest would fail too),
  // so the next round publishes it again as soon as NATS answers.
  std::vector<int64_t> back;
  for (size_t i = sent; i < events.size(); ++i) back.push_back(events[i].seq);
  Status st = db_.WriteSync([&](SqlTx& tx) -> Status {
    for (int64_t seq : back) {
      auto r = tx.Exec("UPDATE outbox SET relayed_at = NULL, settled_at = NULL WHERE seq = ?", {seq});
      if (!r.ok()) return r.status();
    }
    return Status::Ok();
  });
  if (!st.ok()) {
    log::Error("cannot put unpublished events back (they are republished later)",
               {{"error", st.ToString()}, {"count", back.size()}});
  }
  return failure;
}

Result<bool> NatsBus::HoldRelayLease() {
  bool held = false;
  Status st = db_.WriteSync([&](SqlTx& tx) -> Status {
    WallMillis now = clock_.Now();
    auto up = tx.Exec(
        "UPDATE bus_leases SET holder = ?, expires_at = ? WHERE name = ? AND (holder = ? OR "
        "expires_at < ?)",
        {node_id_, now + options_.relay_lease_ms, std::string(kRelayLease), node_id_, now});
    if (!up.ok()) return up.status();
    if (*up == 0) {
      auto ins = tx.Exec(
          "INSERT INTO bus_leases (name, holder, expires_at) VALUES (?, ?, ?) "
          "ON CONFLICT (name) DO NOTHING",
          {std::string(kRelayLease), node_id_, now + options_.relay_lease_ms});
      if (!ins.ok()) return ins.status();
      held = *ins > 0;
    } else {
      held = true;
    }
    return Status::Ok();
  });
  if (!st.ok()) return st;
  return held;
}

Status NatsBus::RelayOnce(int* published) {
  *published = 0;
  std::lock_guard<std::mutex> topology(topology_mu_);  // see EnsureTopology's put-back
  std::vector<CloudEvent> claimed;
  Status st = db_.WriteSync([&](SqlTx& tx) -> Status {
    claimed.clear();
    std::string sql = std::string("SELECT ") + kOutboxEventColumns +
                      " FROM outbox WHERE settled_at IS NULL AND relayed_at IS NULL ORDER BY seq LIMIT ?";
    if (tx.dialect() == SqlDialect::kPostgres) sql += " FOR UPDATE SKIP LOCKED";
    auto rows = tx.QueryAll(sql, {static_cast<int64_t>(options_.relay_batch)});
    if (!rows.ok()) return rows.status();
    WallMillis now = clock_.Now();
    for (const SqlRow& r : *rows) {
      CloudEvent e = EventFromOutboxRow(r);
      // An event no rule routes (file.deleted) is published for outside subscribers and is
      // settled at once: no target will ever record it.
      SqlValue settled = Routed(e) ? SqlValue(SqlNull{}) : SqlValue(now);
      auto up = tx.Exec("UPDATE outbox SET relayed_at = ?, settled_at = ? WHERE seq = ?",
                        {now, settled, e.seq});
      if (!up.ok()) return up.status();
      claimed.push_back(std::move(e));
    }
    return Status::Ok();
  });
  if (!st.ok()) return st;
  return PublishClaimed(claimed, published);
}

Status NatsBus::RecheckOnce(int* republished, int* settled) {
  *republished = 0;
  *settled = 0;
  std::lock_guard<std::mutex> topology(topology_mu_);  // see EnsureTopology's put-back
  for (;;) {
    std::vector<CloudEvent> again;
    int rows_seen = 0;
    Status st = db_.WriteSync([&](SqlTx& tx) -> Status {
      again.clear();
      rows_seen = 0;
      WallMillis now = clock_.Now();
      std::string sql = std::string("SELECT ") + kOutboxEventColumns +
                        " FROM outbox WHERE settled_at IS NULL AND relayed_at IS NOT NULL AND "
                        "relayed_at <= ? ORDER BY seq LIMIT ?";
      if (tx.dialect() == SqlDialect::kPostgres) sql += " FOR UPDATE SKIP LOCKED";
      auto rows = tx.QueryAll(sql, {now - options_.republish_after_ms,
                                    static_cast<int64_t>(options_.relay_batch)});
      if (!rows.ok()) return rows.status();
      rows_seen = static_cast<int>(rows->size());
      for (const SqlRow& r : *rows) {
        CloudEvent e = EventFromOutboxRow(r);
        bool done = true;
        for (const auto& t : targets_) {
          if (!Wants(t, e)) continue;
          auto rec = tx.QueryOne(
              "SELECT 1 FROM processed WHERE target = ? AND event_id = ? UNION ALL "
              "SELECT 1 FROM dead_letters WHERE target = ? AND event_id = ?",
              {t.name, e.id, t.name, e.id});
          if (!rec.ok()) return rec.status();
          if (!*rec) {
            done = false;
            break;
          }
        }
        auto up = done ? tx.Exec("UPDATE outbox SET settled_at = ? WHERE seq = ?", {now, e.seq})
                       : tx.Exec("UPDATE outbox SET relayed_at = ? WHERE seq = ?", {now, e.seq});
        if (!up.ok()) return up.status();
        if (done) {
          ++*settled;
        } else {
          again.push_back(std::move(e));
        }
      }
      return Status::Ok();
    });
    if (!st.ok()) return st;
    if (!again.empty()) {
      log::Warn("events republished from the outbox: not every target recorded them in time",
                {{"count", again.size()},
                 {"firstEventId", again.front().id},
                 {"republishAfterMs", options_.republish_after_ms}});
      int n = 0;
      Status pub = PublishClaimed(again, &n);
      *republished += n;
      if (!pub.ok()) return pub;
    }
    if (rows_seen < options_.relay_batch) return Status::Ok();
  }
}

void NatsBus::RelayLoop() {
  const int64_t recheck_every = std::clamp<int64_t>(options_.republish_after_ms / 2, 50, 30000);
  auto next_recheck = std::chrono::steady_clock::now();
  int64_t error_backoff = 0;
  bool logged_down = false;
  bool leading = false;
  auto renewed = std::chrono::steady_clock::now();
  for (;;) {
    {
      std::lock_guard<std::mutex> l(mu_);
      if (stopping_) return;
      dirty_ = false;
    }
    // One relay at a time across the nodes sharing the store, so the stream holds the events
    // in outbox order; another node takes over when the holder stops renewing.
    auto now = std::chrono::steady_clock::now();
    Result<bool> lease = true;
    if (!leading || now - renewed > std::chrono::milliseconds(options_.relay_lease_ms / 3)) {
      lease = HoldRelayLease();
      if (lease.ok() && *lease) renewed = now;
    }
    if (lease.ok() && !*lease) {
      if (leading) log::Info("outbox relay: another node holds the lease");
      leading = false;
      if (!Pause(std::max<int64_t>(50, options_.relay_lease_ms / 4))) return;
      continue;
    }
    if (lease.ok() && !leading) log::Info("outbox relay: this node relays");
    if (lease.ok()) leading = true;
    int published = 0;
    Status st = lease.ok() ? RelayOnce(&published) : lease.status();
    if (st.ok() && std::chrono::steady_clock::now() >= next_recheck) {
      int republished = 0, settled = 0;
      st = RecheckOnce(&republished, &settled);
      next_recheck = std::chrono::steady_clock::now() + std::chrono::milliseconds(recheck_every);
    }
    if (!st.ok()) {
      if (!logged_down) {
        log::Error("outbox relay failed (retrying; events wait in the outbox)",
                   {{"error", st.ToString()}});
        logged_down = true;
      }
      if (st.code() == Code::kUnavailable) {
        Status topo = EnsureTopology();
        (void)topo;  // when NATS is still away, the next round says so again
      }
      error_backoff = std::min<int64_t>(5000, std::max<int64_t>(100, error_backoff * 2));
      if (!Pause(error_backoff)) return;
      continue;
    }
    if (logged_down) log::Info("outbox relay resumed");
    logged_down = false;
    error_backoff = 0;
    if (published >= options_.relay_batch) continue;
    auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(
                    next_recheck - std::chrono::steady_clock::now())
                    .count();
    std::unique_lock<std::mutex> l(mu_);
    cv_.wait_for(l, std::chrono::milliseconds(std::clamp<int64_t>(wait, 1, 1000)),
                 [&] { return dirty_ || stopping_; });
  }
}

void NatsBus::TargetLoop(Target* t) {
  natsSubscription* sub = nullptr;
  int64_t error_backoff = 0;
  bool logged_down = false;
  auto down = [&](const std::string& what) {
    if (sub) {
      natsSubscription_Destroy(sub);
      sub = nullptr;
    }
    if (!logged_down) {
      log::Warn("NATS consumer unavailable (retrying)", {{"target", t->name}, {"error", what}});
      logged_down = true;
    }
    error_backoff = std::min<int64_t>(5000, std::max<int64_t>(100, error_backoff * 2));
  };
  while (!stopping()) {
    if (!sub) {
      jsSubOptions so;
      jsSubOptions_Init(&so);
      so.Stream = options_.stream.c_str();
      so.Consumer = t->name.c_str();  // bind to the durable consumer EnsureTopology made
      jsErrCode jerr = static_cast<jsErrCode>(0);
      natsStatus s = js_PullSubscribe(&sub, js_, t->filter.c_str(), t->name.c_str(), nullptr, &so, &jerr);
      if (s != NATS_OK) {
        sub = nullptr;
        down(NatsError(s, jerr));
        Status topo = EnsureTopology();
        (void)topo;
        if (!Pause(error_backoff)) break;
        continue;
      }
    }
    natsMsgList list{};
    jsErrCode jerr = static_cast<jsErrCode>(0);
    natsStatus s = natsSubscription_Fetch(&list, sub, 1, options_.fetch_wait_ms, &jerr);
    if (s == NATS_TIMEOUT) continue;
    if (s != NATS_OK) {
      natsMsgList_Destroy(&list);
      down(NatsError(s, jerr));
      Status topo = EnsureTopology();
      (void)topo;
      if (!Pause(error_backoff)) break;
      continue;
    }
    if (logged_down) log::Info("NATS consumer resumed", {{"target", t->name}});
    logged_down = false;
    error_backoff = 0;
    for (int i = 0; i < list.Count; ++i) HandleMessage(*t, list.Msgs[i]);
    natsMsgList_Destroy(&list);
  }
  if (sub) natsSubscription_Destroy(sub);  // binds only: the durable consumer stays
}

void NatsBus::HandleMessage(Target& t, void* raw) {
  natsMsg* msg = static_cast<natsMsg*>(raw);
  auto parsed = ParseCloudEvent(std::string_view(natsMsg_GetData(msg),
                                                 static_cast<size_t>(natsMsg_GetDataLength(msg))));
  if (!parsed.ok()) {
    // Not ours (or corrupt): nothing can handle it, ever. The outbox still has every real event.
    log::Error("message on the event stream is not a CloudEvent: terminated",
               {{"target", t.name}, {"subject", natsMsg_GetSubject(msg)},
                {"error", parsed.status().ToString()}});
    (void)natsMsg_Term(msg, nullptr);
    return;
  }
  CloudEvent e = std::move(*parsed);
  const char* seq = nullptr;
  if (natsMsgHeader_Get(msg, kSeqHeader, &seq) == NATS_OK && seq) e.seq = std::atoll(seq);
  if (!Wants(t, e)) {
    (void)natsMsg_Ack(msg, nullptr);  // under the filter subject, outside the rules
    return;
  }
  int delivered = 1;
  jsMsgMetaData* meta = nullptr;
  if (natsMsg_GetMetaData(&meta, msg) == NATS_OK && meta) {
    delivered = static_cast<int>(meta->NumDelivered);
    jsMsgMetaData_Destroy(meta);
  }
  DeliveryOutcome outcome;
  Status unit = db_.WriteSync([&](SqlTx& tx) -> Status {
    // A copy of an event this target already gave up on (the outbox may publish one again
    // while the original is still being retried): settled for this target, like a handled one.
    auto dead = tx.QueryOne("SELECT 1 FROM dead_letters WHERE target = ? AND event_id = ?",
                            {t.name, e.id});
    if (!dead.ok()) return dead.status();
    if (*dead) {
      outcome.duplicate = true;
      return Status::Ok();
    }
    // A copy of an event whose outbox row is gone: retention prunes a row only after every
    // target recorded it (settled), together with its processed records, so this target has
    // handled it already. The stream may hold such a copy until its max age.
    auto kept = tx.QueryOne("SELECT 1 FROM outbox WHERE id = ?", {e.id});
    if (!kept.ok()) return kept.status();
    if (!*kept) {
      log::Info("delivery of a pruned event ignored", {{"target", t.name}, {"eventId", e.id}});
      outcome.duplicate = true;
      return Status::Ok();
    }
    auto r = DeliverInTx(tx, t.name, *t.handler, e, clock_.Now());
    if (!r.ok()) return r.status();
    outcome = *r;
    return Status::Ok();
  });
  if (unit.ok() && outcome.failure.ok()) {
    // Committed: now the ack. A lost ack only brings a redelivery that processed() skips.
    (void)natsMsg_Ack(msg, nullptr);
    if (!outcome.duplicate) metrics_.events_delivered.Inc({e.type, t.name});
    return;
  }
  Status failure = unit.ok() ? outcome.failure : unit;
  int64_t delay = 0;
  {
    std::lock_guard<std::mutex> l(mu_);
    ++failures_;
    delay = RetryDelayMs(delivered, options_.retry_base_ms, options_.retry_cap_ms, rng_);
  }
  metrics_.delivery_failures.Inc({t.name});
  log::Warn("delivery failed", {{"target", t.name},
                                {"eventId", e.id},
                                {"attempt", delivered},
                                {"error", failure.ToString()}});
  if (delivered < options_.max_deliver) {
    (void)natsMsg_NakWithDelay(msg, delay, nullptr);  // milliseconds
    return;
  }
  // The last delivery JetStream makes: record the dead letter, then ack so it is not pending.
  Status dl = db_.WriteSync([&](SqlTx& tx) {
    return RecordDeadLetter(tx, ids_, t.name, e.id, e.seq, delivered, failure.ToString(),
                            clock_.Now());
  });
  if (dl.ok()) {
    metrics_.dead_letters.Inc({t.name});
    log::Error("event dead-lettered", {{"target", t.name},
                                       {"eventId", e.id},
                                       {"attempts", delivered},
                                       {"error", failure.ToString()}});
  } else {
    // Not recorded: the event stays unsettled and the relay publishes it again later.
    log::Error("cannot record a dead letter", {{"target", t.name}, {"eventId", e.id},
                                               {"error", dl.ToString()}});
  }
  (void)natsMsg_Ack(msg, nullptr);
}

}  // namespace lastcall
