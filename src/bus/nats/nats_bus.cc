#include "bus/nats/nats_bus.h"

#include <pthread.h>

#include <nats/nats.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <unordered_set>

#include "bus/delivery.h"
#include "common/log.h"

namespace lastcall {
namespace {

constexpr char kSeqHeader[] = "Lastcall-Outbox-Seq";
constexpr char kRelayLease[] = "nats-outbox-relay";  // stored: do not rename
constexpr char kTargetLeasePrefix[] = "nats-target:";  // + target name; stored: do not rename
constexpr int64_t kNanosPerMilli = 1000000;

std::string NatsError(natsStatus s, jsErrCode jerr = static_cast<jsErrCode>(0)) {
  std::string text = natsStatus_GetText(s);
  const char* last = nats_GetLastError(nullptr);
  if (last && *last && text != last) text += " (" + std::string(last) + ")";
  if (jerr != 0) text += " [JetStream error " + std::to_string(static_cast<int>(jerr)) + "]";
  return text;
}

// The bound RedeliveryHorizonMs has always given: AckWait doubling per redelivery (up to 16 times
// it), summed over max_deliver deliveries. The consumers no longer set a BackOff (a redelivery
// comes AckWait after its holder went silent, so a new lease holder knows how long to wait), so
// this is an upper bound on max_deliver + 1 deliveries each AckWait (plus a hand-over) apart.
int64_t RedeliveryBoundMs(const NatsBusOptions& o) {
  int64_t sum = 0;
  for (int i = 0; i + 1 < o.max_deliver && i < 10; ++i) {
    sum += o.ack_wait_ms * (int64_t{1} << std::min(i, 4));
  }
  return sum;
}

// The margin a lease holder keeps before its lease's end, and a new holder adds to its hand-over
// wait (timers on the NATS server and the time a statement takes).
int64_t LeaseMarginMs(const NatsBusOptions& o) {
  return std::clamp<int64_t>(std::min(o.relay_lease_ms, o.ack_wait_ms) / 5, 50, 2000);
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
  jo.PublishAsync.ErrHandler = &NatsBus::OnPublishError;  // the relay's PublishInOrder
  jo.PublishAsync.ErrHandlerClosure = this;
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
  for (const auto& t : targets_) {
    jsConsumerConfig cc;
    jsConsumerConfig_Init(&cc);
    cc.Durable = t.name.c_str();
    cc.Description = "lastcall target";
    cc.DeliverPolicy = js_DeliverAll;
    cc.AckPolicy = js_AckExplicit;
    cc.AckWait = options_.ack_wait_ms * kNanosPerMilli;
    // One more than the attempts: the holder dead-letters an event delivered max_deliver + 1 times
    // (its earlier holders died with it) before running it; the server never gives up first.
    cc.MaxDeliver = options_.max_deliver + 1;
    cc.BackOff = nullptr;  // redeliveries AckWait apart: what a new lease holder waits for
    cc.BackOffLen = 0;
    cc.FilterSubject = t.filter.c_str();
    cc.MaxAckPending = std::max(1, options_.batch);  // one batch; one fetcher (the lease holder)
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
  // Hand the relay and the targets over at once instead of after the leases run out. The acks
  // and naks go out first, so the next holder usually finds nothing pending and starts at once.
  if (conn_) {
    (void)natsConnection_FlushTimeout(conn_, 1000);
    Status released = db_.WriteSync([&](SqlTx& tx) -> Status {
      std::vector<std::string> names{kRelayLease};
      for (const auto& t : targets_) names.push_back(kTargetLeasePrefix + t.name);
      for (const auto& name : names) {
        auto r = tx.Exec("DELETE FROM bus_leases WHERE name = ? AND holder = ?", {name, node_id_});
        if (!r.ok()) return r.status();
      }
      return Status::Ok();
    });
    if (!released.ok()) log::Warn("cannot release the bus leases", {{"error", released.ToString()}});
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
                                                      WallMillis /*implausible_after*/,
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
  // comes back at most max_deliver times, each AckWait (and a lease hand-over) after the last.
  int64_t horizon = options_.duplicate_window_ms + options_.ack_wait_ms;
  horizon += RedeliveryBoundMs(options_);
  return horizon;
}

namespace {

// The message for e: its subject, its CloudEvent JSON, and its outbox seq in a header. nullptr
// (and *s set) on failure.
natsMsg* MessageFor(const std::string& subject, const CloudEvent& e, natsStatus* s) {
  std::string body = ToJson(e).dump();
  natsMsg* msg = nullptr;
  *s = natsMsg_Create(&msg, subject.c_str(), nullptr, body.data(), static_cast<int>(body.size()));
  std::string seq = std::to_string(e.seq);
  if (*s == NATS_OK) *s = natsMsgHeader_Set(msg, kSeqHeader, seq.c_str());
  if (*s != NATS_OK && msg) {
    natsMsg_Destroy(msg);
    msg = nullptr;
  }
  return msg;
}

// The outbox seq a message carries (MessageFor), or -1.
int64_t SeqOf(natsMsg* msg) {
  const char* seq = nullptr;
  if (!msg || natsMsgHeader_Get(msg, kSeqHeader, &seq) != NATS_OK || !seq) return -1;
  return std::atoll(seq);
}

}  // namespace

Status NatsBus::Publish(const CloudEvent& e) {
  if (!js_) return Status::Unavailable("the NATS bus is not started");
  std::string subject = SubjectFor(options_.subject_prefix, e.type);
  natsStatus s = NATS_OK;
  natsMsg* msg = MessageFor(subject, e, &s);
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

void NatsBus::PutBack(const std::vector<CloudEvent>& events, size_t from) {
  if (from >= events.size()) return;
  const size_t count = events.size() - from;
  SqlParams seqs;
  for (size_t i = from; i < events.size(); ++i) seqs.push_back(events[i].seq);
  // Set-based, as the claim stamped them: one statement for the whole rest of a round.
  const std::string in = PaddedInList(seqs);
  Status st = db_.WriteSync([&](SqlTx& tx) -> Status {
    auto r = tx.Exec("UPDATE outbox SET relayed_at = NULL, settled_at = NULL WHERE seq IN " + in,
                     seqs);
    return r.ok() ? Status::Ok() : r.status();
  });
  if (!st.ok()) {
    log::Error("cannot put unpublished events back (they are republished later)",
               {{"error", st.ToString()}, {"count", count}});
  }
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
  PutBack(events, sent);
  return failure;
}

void NatsBus::OnPublishError(jsCtx* /*js*/, jsPubAckErr* pae, void* closure) {
  auto* bus = static_cast<NatsBus*>(closure);
  std::lock_guard<std::mutex> l(bus->publish_mu_);
  bus->publish_failed_.push_back(SeqOf(pae->Msg));
  if (bus->publish_error_.empty()) {
    bus->publish_error_ = NatsError(pae->Err, pae->ErrCode) +
                          (pae->ErrText ? std::string(": ") + pae->ErrText : std::string());
  }
}

Status NatsBus::PublishInOrder(const std::vector<CloudEvent>& events, int* published) {
  if (events.empty()) return Status::Ok();
  if (!js_) return Status::Unavailable("the NATS bus is not started");
  {
    std::lock_guard<std::mutex> l(publish_mu_);
    publish_failed_.clear();
    publish_error_.clear();
  }
  size_t sent = 0;
  natsStatus s = NATS_OK;
  for (; sent < events.size(); ++sent) {
    const CloudEvent& e = events[sent];
    natsMsg* msg = MessageFor(SubjectFor(options_.subject_prefix, e.type), e, &s);
    if (s != NATS_OK) break;
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MsgId = e.id.c_str();  // Nats-Msg-Id: a repeated publish is stored once
    po.ExpectStream = options_.stream.c_str();
    // The chain: stored only right after the event before it (see PublishInOrder's contract).
    if (sent > 0) po.ExpectLastMsgId = events[sent - 1].id.c_str();
    s = js_PublishMsgAsync(js_, &msg, &po);  // takes msg (and clears it) when it succeeds
    natsMsg_Destroy(msg);
    if (s != NATS_OK) break;
  }
  jsPubOptions wait;
  jsPubOptions_Init(&wait);
  wait.MaxWait = 5000;
  natsStatus complete = js_PublishAsyncComplete(js_, &wait);
  std::vector<int64_t> failed;
  std::string error = s != NATS_OK ? NatsError(s) : std::string();
  if (complete != NATS_OK) {
    // No answer in time: those are taken back from cnats and count as failed (a copy the stream
    // did store is dropped as a duplicate when it goes out again).
    natsMsgList pending{};
    if (js_PublishAsyncGetPendingList(&pending, js_) == NATS_OK) {
      for (int i = 0; i < pending.Count; ++i) failed.push_back(SeqOf(pending.Msgs[i]));
      natsMsgList_Destroy(&pending);
    }
    if (error.empty()) error = "waiting for the acknowledgements: " + NatsError(complete);
  }
  {
    std::lock_guard<std::mutex> l(publish_mu_);
    failed.insert(failed.end(), publish_failed_.begin(), publish_failed_.end());
    if (error.empty()) error = publish_error_;
    publish_failed_.clear();
  }
  // The first event that is not known to be stored: it and all after it go back, in order.
  // A failed message whose seq cannot be read: every event of the round goes back.
  size_t first = std::find(failed.begin(), failed.end(), -1) != failed.end() ? 0 : sent;
  for (size_t i = 0; i < first; ++i) {
    if (std::find(failed.begin(), failed.end(), events[i].seq) != failed.end()) {
      first = i;
      break;
    }
  }
  if (first == sent && sent < events.size() && error.empty()) error = "not sent";
  *published += static_cast<int>(first);
  if (first == events.size()) return Status::Ok();
  PutBack(events, first);
  std::string subject = SubjectFor(options_.subject_prefix, events[first].type);
  return Status::Unavailable("publish " + subject + ": " + error);
}

Result<bool> NatsBus::HoldLease(const std::string& name, int64_t lease_ms) {
  bool held = false;
  Status st = db_.WriteSync([&](SqlTx& tx) -> Status {
    WallMillis now = clock_.Now();
    auto up = tx.Exec(
        "UPDATE bus_leases SET holder = ?, expires_at = ? WHERE name = ? AND (holder = ? OR "
        "expires_at < ?)",
        {node_id_, now + lease_ms, name, node_id_, now});
    if (!up.ok()) return up.status();
    if (*up == 0) {
      auto ins = tx.Exec(
          "INSERT INTO bus_leases (name, holder, expires_at) VALUES (?, ?, ?) "
          "ON CONFLICT (name) DO NOTHING",
          {name, node_id_, now + lease_ms});
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
    SqlParams routed, unrouted;  // seqs
    for (const SqlRow& r : *rows) {
      CloudEvent e = EventFromOutboxRow(r);
      // An event no rule routes (file.deleted) is published for outside subscribers and is
      // settled at once: no target will ever record it.
      (Routed(e) ? routed : unrouted).push_back(e.seq);
      claimed.push_back(std::move(e));
    }
    // Stamped set-based: one statement for each kind instead of one per row.
    for (SqlParams* seqs : {&routed, &unrouted}) {
      if (seqs->empty()) continue;
      std::string in = PaddedInList(*seqs);
      SqlParams params{now, seqs == &routed ? SqlValue(SqlNull{}) : SqlValue(now)};
      params.insert(params.end(), seqs->begin(), seqs->end());
      LASTCALL_RETURN_IF_ERROR(
          tx.Send("UPDATE outbox SET relayed_at = ?, settled_at = ? WHERE seq IN " + in, params));
    }
    return Status::Ok();
  });
  if (!st.ok()) return st;
  return PublishInOrder(claimed, published);
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
  pthread_setname_np(pthread_self(), "nats-relay");  // for ps, perf and the benchmark
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
      lease = HoldLease(kRelayLease, options_.relay_lease_ms);
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

void NatsBus::HandBack(Fetcher* f) {
  for (auto& h : f->held) {
    (void)natsMsg_Nak(h.msg, nullptr);
    natsMsg_Destroy(h.msg);
  }
  f->held.clear();
  f->head_failures = 0;
  f->head_error.clear();
  f->solo = false;
}

void NatsBus::TargetLoop(Target* t) {
  using clock = std::chrono::steady_clock;
  using ms = std::chrono::milliseconds;
  // For ps, perf and the benchmark: "nats:" and the target's name, cut to the 15 characters a
  // thread's name holds.
  pthread_setname_np(pthread_self(), ("nats:" + t->name).substr(0, 15).c_str());
  const std::string lease = kTargetLeasePrefix + t->name;
  const int64_t lease_ms = options_.relay_lease_ms;
  const int64_t margin = LeaseMarginMs(options_);
  natsSubscription* sub = nullptr;
  Fetcher f;
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
  auto lost = [&](const char* why) {
    if (f.leading) log::Info("NATS target: this node no longer delivers", {{"target", t->name}, {"why", why}});
    HandBack(&f);
    f.leading = false;
  };
  auto until = [](clock::time_point a) {
    return std::max<int64_t>(1, std::chrono::duration_cast<ms>(a - clock::now()).count());
  };
  while (!stopping()) {
    // The lease: only its holder fetches for this target, so the target's events stay in order.
    auto now = clock::now();
    if (!f.leading || now >= f.renew_due) {
      Result<bool> held = HoldLease(lease, lease_ms);
      if (!held.ok() || !*held) {
        lost(held.ok() ? "another node holds the lease" : "cannot renew the lease");
        if (!Pause(held.ok() ? std::max<int64_t>(50, lease_ms / 4) : std::max<int64_t>(100, margin))) break;
        continue;
      }
      if (!f.leading) {
        // Taken (not renewed): what the previous holder may hold must come back first.
        f.leading = true;
        f.taken = now;
        f.fetch_after = now + ms(options_.fetch_wait_ms + margin);
        f.handover_checked = false;
        log::Info("NATS target: this node delivers", {{"target", t->name}});
      }
      f.valid_until = now + ms(lease_ms - margin);
      f.renew_due = now + ms(lease_ms / 3);
    }
    if (clock::now() >= f.valid_until) {
      lost("the lease ran out before it was renewed");
      continue;
    }
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
    now = clock::now();
    if (now < f.fetch_after) {
      if (!Pause(until(std::min(f.fetch_after, f.renew_due)))) break;
      continue;
    }
    if (!f.handover_checked) {
      // The previous holder's pulls have expired. When the consumer still has unacked messages,
      // they are redelivered AckWait after their holder went silent (before it lost the lease),
      // and nats-server serves redeliveries before any new message.
      jsConsumerInfo* ci = nullptr;
      jsErrCode jerr = static_cast<jsErrCode>(0);
      natsStatus s = js_GetConsumerInfo(&ci, js_, options_.stream.c_str(), t->name.c_str(), nullptr, &jerr);
      int64_t pending = (s == NATS_OK && ci) ? static_cast<int64_t>(ci->NumAckPending) : -1;
      if (ci) jsConsumerInfo_Destroy(ci);
      if (pending < 0) {
        down(NatsError(s, jerr));
        Status topo = EnsureTopology();
        (void)topo;
        if (!Pause(error_backoff)) break;
        continue;
      }
      f.handover_checked = true;
      if (pending > 0) {
        f.fetch_after = f.taken + ms(options_.fetch_wait_ms + options_.ack_wait_ms + 2 * margin);
        log::Info("NATS target: waiting for the previous holder's messages to come back",
                  {{"target", t->name}, {"pending", pending}});
        continue;
      }
    }
    if (f.held.empty()) {
      natsMsgList list{};
      jsErrCode jerr = static_cast<jsErrCode>(0);
      int64_t wait = std::min<int64_t>(options_.fetch_wait_ms, until(f.valid_until));
      natsStatus s = natsSubscription_Fetch(&list, sub, std::max(1, options_.batch), wait, &jerr);
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
      for (int i = 0; i < list.Count; ++i) {
        Held h;
        h.msg = list.Msgs[i];
        list.Msgs[i] = nullptr;  // owned by h now: natsMsgList_Destroy skips it
        auto parsed = ParseCloudEvent(std::string_view(
            natsMsg_GetData(h.msg), static_cast<size_t>(natsMsg_GetDataLength(h.msg))));
        if (parsed.ok()) {
          h.event_ok = true;
          h.event = std::move(*parsed);
          const char* seq = nullptr;
          if (natsMsgHeader_Get(h.msg, kSeqHeader, &seq) == NATS_OK && seq) h.event.seq = std::atoll(seq);
          h.wanted = Wants(*t, h.event);
        } else {
          // Not ours (or corrupt): nothing can handle it, ever. The outbox has every real event.
          log::Error("message on the event stream is not a CloudEvent: terminated",
                     {{"target", t->name}, {"subject", natsMsg_GetSubject(h.msg)},
                      {"error", parsed.status().ToString()}});
        }
        jsMsgMetaData* meta = nullptr;
        if (natsMsg_GetMetaData(&meta, h.msg) == NATS_OK && meta) {
          h.delivered = static_cast<int>(meta->NumDelivered);
          jsMsgMetaData_Destroy(meta);
        }
        f.held.push_back(std::move(h));
      }
      natsMsgList_Destroy(&list);
      f.progress_due = clock::now() + ms(std::max<int64_t>(1, options_.ack_wait_ms / 3));
      f.careful = false;
      if (f.held.empty()) continue;
    }
    now = clock::now();
    if (now < f.retry_at) {
      // Retrying the head later: the held messages stay ours meanwhile.
      if (now >= f.progress_due) {
        for (auto& h : f.held) (void)natsMsg_InProgress(h.msg, nullptr);
        f.progress_due = now + ms(std::max<int64_t>(1, options_.ack_wait_ms / 3));
      }
      if (!Pause(until(std::min({f.retry_at, f.renew_due, f.progress_due})))) break;
      continue;
    }
    if (!HandleHeld(*t, &f)) lost("another node holds the lease");
  }
  HandBack(&f);
  if (sub) natsSubscription_Destroy(sub);  // binds only: the durable consumer stays
}

bool NatsBus::HandleHeld(Target& t, Fetcher* f) {
  using clock = std::chrono::steady_clock;
  const std::string lease = kTargetLeasePrefix + t.name;
  const size_t limit = f->solo ? 1 : f->held.size();
  struct Done {
    bool duplicate = false;
    bool dead = false;
    int attempts = 0;   // of a dead letter
    std::string error;  // of a dead letter
  };
  std::vector<Done> done;  // one per leading held message the unit settled
  Status failure;          // the handler's failure at held[done.size()]
  bool fenced = false;
  bool redo_carefully = false;  // a handler failed without its savepoint: nothing committed
  bool head_failed = false;     // the first event to run failed (nothing to commit before it)
  auto started = clock::now();
  Status unit = db_.WriteSync([&](SqlTx& tx) -> Status {
    done.clear();
    failure = Status::Ok();
    fenced = false;
    redo_carefully = false;
    head_failed = false;
    WallMillis now = clock_.Now();
    // The fence and the renewal: this batch commits only while this node holds the lease.
    auto renewed = tx.Exec("UPDATE bus_leases SET expires_at = ? WHERE name = ? AND holder = ?",
                           {now + options_.relay_lease_ms, lease, node_id_});
    if (!renewed.ok()) return renewed.status();
    if (*renewed == 0) {
      fenced = true;
      return Status::Unavailable("the lease for target " + t.name + " is held by another node");
    }
    // What the store knows of the batch's events, in one round trip: processed or dead-lettered
    // for this target, and still in the outbox. A copy of an event this target already gave up
    // on (the outbox may publish one again while the original is still being retried), or whose
    // outbox row is gone (retention prunes a row only after every target recorded it, with its
    // processed records; the stream may hold such a copy until its max age), is settled for
    // this target like a handled one.
    std::unordered_set<std::string> processed, dead, kept;
    ProcessedRecords handled;  // written together once the loop ends
    {
      std::string in;
      SqlParams ids;
      for (size_t i = 0; i < limit; ++i) {
        if (!f->held[i].event_ok || !f->held[i].wanted) continue;
        in += in.empty() ? "?" : ", ?";
        ids.push_back(f->held[i].event.id);
      }
      if (!ids.empty()) {
        SqlParams params{t.name};
        params.insert(params.end(), ids.begin(), ids.end());
        params.push_back(t.name);
        params.insert(params.end(), ids.begin(), ids.end());
        params.insert(params.end(), ids.begin(), ids.end());
        Status st = tx.Query(
            "SELECT event_id, 1 FROM processed WHERE target = ? AND event_id IN (" + in +
                ") UNION ALL SELECT event_id, 2 FROM dead_letters WHERE target = ? AND event_id IN (" +
                in + ") UNION ALL SELECT id, 3 FROM outbox WHERE id IN (" + in + ")",
            params, [&](const SqlRow& r) {
              int64_t kind = r.Int(1);
              (kind == 1 ? processed : kind == 2 ? dead : kept).insert(r.Text(0));
              return true;
            });
        if (!st.ok()) return st;
      }
    }
    for (size_t i = 0; i < limit; ++i) {
      const Held& h = f->held[i];
      if (!h.event_ok || !h.wanted) {
        done.push_back({true, false, 0, {}});
        continue;
      }
      const CloudEvent& e = h.event;
      if (dead.count(e.id) || !kept.count(e.id)) {
        if (!kept.count(e.id)) {
          log::Info("delivery of a pruned event ignored", {{"target", t.name}, {"eventId", e.id}});
        }
        done.push_back({true, false, 0, {}});
        continue;
      }
      if (processed.count(e.id)) {  // earlier, or an earlier copy in this batch
        log::Info("duplicate delivery ignored", {{"target", t.name}, {"eventId", e.id}});
        done.push_back({true, false, 0, {}});
        continue;
      }
      int attempts = h.delivered - 1 + (i == 0 ? f->head_failures : 0);
      if (attempts >= options_.max_deliver) {
        // Out of attempts (this node's failures and the deliveries of holders that died).
        std::string error = i == 0 && !f->head_error.empty()
                                ? f->head_error
                                : "delivered " + std::to_string(h.delivered) + " times without a result";
        Status dl = RecordDeadLetter(tx, ids_, t.name, e.id, e.seq, attempts, error, now);
        if (!dl.ok()) return dl;
        dead.insert(e.id);
        done.push_back({false, true, attempts, error});
        continue;
      }
      // Optimistic first: no savepoint per event (two round trips each). A handler that fails
      // then fails the whole unit, and the batch is redone with a savepoint per event.
      auto r = DeliverInTx(tx, t.name, *t.handler, e, now,
                           {.check_processed = false, .savepoint = f->careful,
                            .defer_processed = &handled});
      if (!r.ok()) return r.status();
      if (!r->failure.ok()) {
        failure = r->failure;
        if (!f->careful) {
          // Nothing before it: its failure is simply an attempt. Otherwise the events before
          // it run again, each in its savepoint, so that they commit without it.
          (done.empty() ? head_failed : redo_carefully) = true;
          return failure;
        }
        break;  // the events after it wait: none overtakes it
      }
      processed.insert(e.id);
      done.push_back({r->duplicate, false, 0, {}});
    }
    return RecordProcessed(tx, t.name, handled);
  });
  if (fenced) return false;
  if (redo_carefully) {
    f->careful = true;  // at once, not an attempt: the failing handler runs again in its savepoint
    return true;
  }
  if (unit.ok()) {
    // Committed (and the lease renewed with it): now the acks. A lost ack only brings a
    // redelivery that processed() skips.
    f->valid_until = started + std::chrono::milliseconds(options_.relay_lease_ms - LeaseMarginMs(options_));
    f->renew_due = started + std::chrono::milliseconds(options_.relay_lease_ms / 3);
    for (size_t i = 0; i < done.size(); ++i) {
      Held& h = f->held[i];
      if (!h.event_ok) {
        (void)natsMsg_Term(h.msg, nullptr);
      } else {
        (void)natsMsg_Ack(h.msg, nullptr);
        if (done[i].dead) {
          metrics_.dead_letters.Inc({t.name});
          log::Error("event dead-lettered", {{"target", t.name},
                                             {"eventId", h.event.id},
                                             {"attempts", done[i].attempts},
                                             {"error", done[i].error}});
        }
        if (h.wanted && !done[i].duplicate && !done[i].dead) metrics_.events_delivered.Inc({h.event.type, t.name});
      }
      natsMsg_Destroy(h.msg);
    }
    f->held.erase(f->held.begin(), f->held.begin() + static_cast<std::ptrdiff_t>(done.size()));
    if (!done.empty()) {
      f->head_failures = 0;
      f->head_error.clear();
      f->solo = false;
    }
    if (failure.ok()) return true;
  }
  // The head failed: its handler (the events before it committed), or the whole unit (nothing
  // committed; the head is tried alone next, so a later event's failure is not charged to it).
  const bool handler_failed = unit.ok() || head_failed;  // else the unit itself failed
  Status why = handler_failed ? failure : unit;
  if (!handler_failed && !f->solo && limit > 1) {
    f->solo = true;
  } else {
    ++f->head_failures;
    f->head_error = why.ToString();
  }
  const Held& head = f->held.front();
  int attempts = head.delivered - 1 + f->head_failures;
  int64_t delay = 0;
  {
    std::lock_guard<std::mutex> l(mu_);
    ++failures_;
    delay = RetryDelayMs(std::max(1, attempts), options_.retry_base_ms, options_.retry_cap_ms, rng_);
  }
  metrics_.delivery_failures.Inc({t.name});
  log::Warn("delivery failed", {{"target", t.name},
                                {"eventId", head.event_ok ? head.event.id : std::string()},
                                {"attempt", attempts},
                                {"error", why.ToString()}});
  // Out of attempts: the next unit dead-letters it at once; otherwise it is retried after delay.
  // (A failed unit always waits: the store may be down.)
  f->retry_at = handler_failed && attempts >= options_.max_deliver
                    ? clock::now()
                    : clock::now() + std::chrono::milliseconds(delay);
  return true;
}

}  // namespace lastcall
