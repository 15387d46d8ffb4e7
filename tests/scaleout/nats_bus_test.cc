// NatsBus against a real `nats-server -js` (started per test on a free port) and a real SQLite
// outbox: delivery by rule and in order, one shared consumer per target across nodes, retries
// after a failed handler, redelivery of what a dead node held, dead letters after MaxDeliver,
// deduplication of a repeated relay, and the outbox publishing again what a NATS server lost.
#include "bus/nats/nats_bus.h"
#include "bus/retention.h"

#include <gtest/gtest.h>
#include <nats/nats.h>

#include <filesystem>
#include <map>
#include <mutex>
#include <set>

#include "../unit/test_util.h"
#include "services.h"
#include "store/schema.h"
#include "store/sqlite/sqlite_database.h"

namespace lastcall {
namespace {

namespace fs = std::filesystem;
using testing::CountRows;

bool Within(int64_t ms, const std::function<bool()>& pred) {
  auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
  while (std::chrono::steady_clock::now() < end) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return pred();
}

// Records each event's "n" in the effects table (with the handler's effect, so a rolled-back
// delivery leaves nothing); fails the next k calls, or always for one n.
class Recorder : public EventHandler {
 public:
  explicit Recorder(std::string target) : target_(std::move(target)) {}
  Status Handle(const CloudEvent& e, SqlTx& tx) override {
    int n = e.data.value("n", -1);
    {
      std::lock_guard<std::mutex> l(mu_);
      ++calls_;
      ++calls_for_[n];
      auto times = fail_times_.find(n);
      bool fail_n = times != fail_times_.end() && times->second > 0;
      if (fail_next_ > 0 || n == fail_always_ || fail_n) {
        if (fail_next_ > 0) {
          --fail_next_;
        } else if (fail_n) {
          --times->second;
        }
        (void)tx.Exec("INSERT INTO effects (target, n) VALUES (?, ?)", {target_, int64_t{-1000} - n});
        return Status::Unavailable("simulated failure");
      }
    }
    auto r = tx.Exec("INSERT INTO effects (target, n) VALUES (?, ?)", {target_, int64_t{n}});
    return r.ok() ? Status::Ok() : r.status();
  }
  int calls() {
    std::lock_guard<std::mutex> l(mu_);
    return calls_;
  }
  void FailNext(int k) {
    std::lock_guard<std::mutex> l(mu_);
    fail_next_ = k;
  }
  void FailAlways(int n) {
    std::lock_guard<std::mutex> l(mu_);
    fail_always_ = n;
  }
  // The next k calls for event n fail (k < 0: until told otherwise).
  void FailTimes(int n, int k) {
    std::lock_guard<std::mutex> l(mu_);
    fail_times_[n] = k < 0 ? 1 << 30 : k;
  }
  int calls_for(int n) {
    std::lock_guard<std::mutex> l(mu_);
    return calls_for_[n];
  }

 private:
  std::string target_;
  std::mutex mu_;
  int calls_ = 0;
  int fail_next_ = 0;
  int fail_always_ = -1;
  std::map<int, int> fail_times_;
  std::map<int, int> calls_for_;
};

class NatsBusTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(nats_.Start()) << "cannot start nats-server (is the Debian package installed?)";
    dir_ = fs::temp_directory_path() / ("lastcall-natsbus-" + RandomHex(6));
    fs::create_directories(dir_);
    db_ = std::move(SqliteDatabase::Open({(dir_ / "db").string(), "NORMAL"})).value();
    ASSERT_TRUE(Migrate(*db_).ok());
    ASSERT_TRUE(db_->WriteSync([](SqlTx& tx) {
                     auto r = tx.Exec("CREATE TABLE effects (seq INTEGER PRIMARY KEY, target TEXT, n INTEGER)");
                     return r.ok() ? Status::Ok() : r.status();
                   }).ok());
    outbox_ = std::make_unique<Outbox>(metrics_, [this] {
      std::lock_guard<std::mutex> l(buses_mu_);
      for (auto& b : buses_) b->Notify();
    });
  }
  void TearDown() override {
    {
      std::lock_guard<std::mutex> l(buses_mu_);
      for (auto& b : buses_) b->Stop();
    }
    db_->Close();
    fs::remove_all(dir_);
  }
  NatsBusOptions Options() {
    NatsBusOptions o;
    o.url = nats_.url();
    o.ack_wait_ms = 1000;
    o.retry_base_ms = 20;
    o.retry_cap_ms = 200;
    o.republish_after_ms = 600;
    o.duplicate_window_ms = 600;
    o.fetch_wait_ms = 200;
    o.relay_lease_ms = 1000;  // quick hand-overs between nodes
    return o;
  }
  // A node: a bus with targets a (t.one, t.two) and b (t.two from /src) and the given handlers.
  NatsBus* StartNode(Recorder* a, Recorder* b, NatsBusOptions o) {
    auto bus = std::make_unique<NatsBus>(*db_, clock_, ids_, metrics_, o);
    if (a) {
      bus->AddTarget("a", a);
      bus->AddRule({"all-to-a", {{"t.one", "t.two"}, {}}, {"a"}});
    }
    if (b) {
      bus->AddTarget("b", b);
      bus->AddRule({"two-to-b", {{"t.two"}, {"/src"}}, {"b"}});
    }
    Status st = bus->Start();
    EXPECT_TRUE(st.ok()) << st.ToString();
    std::lock_guard<std::mutex> l(buses_mu_);
    buses_.push_back(std::move(bus));
    return buses_.back().get();
  }
  std::string Publish(const std::string& type, int n, const std::string& source = "/src") {
    CloudEvent e{ids_.NewTimeOrderedUuid(), source, type, "s", "t", {{"n", n}}};
    EXPECT_TRUE(db_->WriteSync([&](SqlTx& tx) { return outbox_->Append(tx, e, 0); }).ok());
    return e.id;
  }
  std::vector<int64_t> Seen(const std::string& target) {
    std::vector<int64_t> out;
    EXPECT_TRUE(db_->Read([&](SqlTx& tx) {
                     auto rows = tx.QueryAll("SELECT n FROM effects WHERE target = ? ORDER BY seq", {target});
                     if (!rows.ok()) return rows.status();
                     for (const auto& r : *rows) out.push_back(r.Int(0));
                     return Status::Ok();
                   }).ok());
    return out;
  }
  int64_t Count(const std::string& sql, const SqlParams& params = {}) {
    return CountRows(*db_, sql, params);
  }
  // Messages the stream holds, asked of NATS directly.
  int64_t StreamMessages() {
    natsConnection* nc = nullptr;
    jsCtx* js = nullptr;
    jsStreamInfo* si = nullptr;
    int64_t n = -1;
    if (natsConnection_ConnectTo(&nc, nats_.url().c_str()) == NATS_OK &&
        natsConnection_JetStream(&js, nc, nullptr) == NATS_OK &&
        js_GetStreamInfo(&si, js, "LASTCALL_EVENTS", nullptr, nullptr) == NATS_OK) {
      n = static_cast<int64_t>(si->State.Msgs);
    }
    if (si) jsStreamInfo_Destroy(si);
    if (js) jsCtx_Destroy(js);
    if (nc) natsConnection_Destroy(nc);
    return n;
  }

  // Puts events n = from..to-1 of type t.one on the stream while no node delivers to "a" (whose
  // consumer a node made and left), so that the next node fetches them as one batch.
  void StreamWhileNobodyDelivers(int from, int to, std::vector<std::string>* ids = nullptr) {
    StartNode(&idle_, nullptr, Options())->Stop();
    NatsBus* relay = StartNode(nullptr, nullptr, Options());
    for (int i = from; i < to; ++i) {
      std::string id = Publish("t.one", i);
      if (ids) ids->push_back(id);
    }
    ASSERT_TRUE(Within(5000, [&] { return StreamMessages() == to - from; }));
    relay->Stop();
  }
  // A node that fetches n messages of consumer "a" and dies without acking them.
  void TakeAndDie(int n) {
    natsConnection* nc = nullptr;
    jsCtx* js = nullptr;
    natsSubscription* sub = nullptr;
    ASSERT_EQ(natsConnection_ConnectTo(&nc, nats_.url().c_str()), NATS_OK);
    ASSERT_EQ(natsConnection_JetStream(&js, nc, nullptr), NATS_OK);
    jsSubOptions so;
    jsSubOptions_Init(&so);
    so.Stream = "LASTCALL_EVENTS";
    so.Consumer = "a";
    ASSERT_EQ(js_PullSubscribe(&sub, js, "lastcall.events.t.>", "a", nullptr, &so, nullptr), NATS_OK);
    natsMsgList list{};
    ASSERT_EQ(natsSubscription_Fetch(&list, sub, n, 2000, nullptr), NATS_OK);
    EXPECT_EQ(list.Count, n);
    natsMsgList_Destroy(&list);
    natsSubscription_Destroy(sub);
    jsCtx_Destroy(js);
    natsConnection_Destroy(nc);
  }
  // Publishes e to the stream directly under Nats-Msg-Id msg_id, as a relay would; the stream
  // must store it (not a duplicate within its window).
  void PublishCopy(const CloudEvent& e, const std::string& msg_id) {
    std::string body = ToJson(e).dump();
    std::string subject = NatsBus::SubjectFor("lastcall.events.", e.type);
    natsConnection* nc = nullptr;
    jsCtx* js = nullptr;
    ASSERT_EQ(natsConnection_ConnectTo(&nc, nats_.url().c_str()), NATS_OK);
    ASSERT_EQ(natsConnection_JetStream(&js, nc, nullptr), NATS_OK);
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MsgId = msg_id.c_str();
    jsPubAck* ack = nullptr;
    natsStatus s = js_Publish(&ack, js, subject.c_str(), body.data(), static_cast<int>(body.size()), &po, nullptr);
    EXPECT_EQ(s, NATS_OK);
    EXPECT_TRUE(ack && !ack->Duplicate);
    if (ack) jsPubAck_Destroy(ack);
    jsCtx_Destroy(js);
    natsConnection_Destroy(nc);
  }
  // Consumer "a" as NATS sees it.
  bool ConsumerA(const std::function<bool(const jsConsumerInfo&)>& pred) {
    natsConnection* nc = nullptr;
    jsCtx* js = nullptr;
    jsConsumerInfo* ci = nullptr;
    bool ok = natsConnection_ConnectTo(&nc, nats_.url().c_str()) == NATS_OK &&
              natsConnection_JetStream(&js, nc, nullptr) == NATS_OK &&
              js_GetConsumerInfo(&ci, js, "LASTCALL_EVENTS", "a", nullptr, nullptr) == NATS_OK &&
              pred(*ci);
    if (ci) jsConsumerInfo_Destroy(ci);
    if (js) jsCtx_Destroy(js);
    if (nc) natsConnection_Destroy(nc);
    return ok;
  }

  testing::NatsServer nats_;
  fs::path dir_;
  SystemClock clock_;
  RandomIdGenerator ids_;
  Metrics metrics_;
  std::unique_ptr<SqliteDatabase> db_;
  std::unique_ptr<Outbox> outbox_;
  std::mutex buses_mu_;
  std::vector<std::unique_ptr<NatsBus>> buses_;
  Recorder a_{"a"}, b_{"b"};
  Recorder idle_{"a"};  // never called: its node stops at once
};

TEST(NatsSubjectsTest, OneFilterCoversEveryRuleOfATarget) {
  const std::string p = "lastcall.events.";
  EXPECT_EQ(NatsBus::SubjectFor(p, "file.delete_requested"), "lastcall.events.file.delete_requested");
  EXPECT_EQ(NatsBus::FilterFor(p, {{{"file.uploaded"}, {}}}), "lastcall.events.file.uploaded");
  EXPECT_EQ(NatsBus::FilterFor(p, {{{"file.uploaded"}, {}}, {{"file.delete_requested"}, {}}}),
            "lastcall.events.file.>");
  EXPECT_EQ(NatsBus::FilterFor(p, {{{"file.delete_requested"}, {}}, {{"consumer.completion"}, {}}}),
            "lastcall.events.>");
  EXPECT_EQ(NatsBus::FilterFor(p, {{{}, {"/x"}}}), "lastcall.events.>");
  // "file" alone and "file.x": ">" must still match the shorter one.
  EXPECT_EQ(NatsBus::FilterFor(p, {{{"file", "file.x"}, {}}}), "lastcall.events.>");
  EXPECT_EQ(NatsBus::FilterFor(p, {{{"file.x", "file"}, {}}}), "lastcall.events.>");
  // Regression: a third and a fourth type under the same prefix (the analytics consumer's
  // uploads, requests, cancels and vetoes) keep the shared prefix; the fourth used to crash.
  EXPECT_EQ(NatsBus::FilterFor(p, {{{"file.uploaded"}, {}},
                                   {{"file.delete_requested"}, {}},
                                   {{"file.delete_cancelled"}, {}},
                                   {{"file.delete_vetoed"}, {}}}),
            "lastcall.events.file.>");
  EXPECT_EQ(NatsBus::FilterFor(p, {{{"a.b.c", "a.b.d", "a.b.e.f"}, {}}}), "lastcall.events.a.b.>");
}

TEST_F(NatsBusTest, DeliversByRuleInOrderPerTargetAndSettlesTheOutbox) {
  NatsBus* bus = StartNode(&a_, &b_, Options());
  for (int i = 0; i < 30; ++i) Publish(i % 2 ? "t.two" : "t.one", i);
  Publish("t.two", 99, "/elsewhere");  // b's rule wants source /src only
  Publish("t.other", 100);             // no rule: published, settled at once
  std::vector<int64_t> want_a, want_b;
  for (int i = 0; i < 30; ++i) {
    want_a.push_back(i);
    if (i % 2) want_b.push_back(i);
  }
  want_a.push_back(99);
  ASSERT_TRUE(Within(10000, [&] { return Seen("a").size() == want_a.size() && Seen("b").size() == want_b.size(); }));
  EXPECT_EQ(Seen("a"), want_a);
  EXPECT_EQ(Seen("b"), want_b);
  EXPECT_EQ(Count("SELECT COUNT(*) FROM processed WHERE target = 'a'"), 31);
  EXPECT_EQ(Count("SELECT COUNT(*) FROM outbox WHERE relayed_at IS NULL"), 0);
  EXPECT_EQ(StreamMessages(), 32);
  // Once every target recorded them, the re-check settles the rows without publishing again.
  ASSERT_TRUE(Within(5000, [&] { return Count("SELECT COUNT(*) FROM outbox WHERE settled_at IS NULL") == 0; }));
  EXPECT_EQ(StreamMessages(), 32);
  Status st = db_->Read([&](SqlTx& tx) {
    auto n = bus->Backlog(tx, "a");
    if (!n.ok()) return n.status();
    EXPECT_EQ(*n, 0);
    return Status::Ok();
  });
  EXPECT_TRUE(st.ok());
}

TEST_F(NatsBusTest, TwoNodesShareOneConsumerPerTargetAndKeepItsOrder) {
  Recorder a2{"a"}, b2{"b"};
  StartNode(&a_, &b_, Options());
  StartNode(&a2, &b2, Options());
  for (int i = 0; i < 40; ++i) Publish("t.two", i);
  ASSERT_TRUE(Within(15000, [&] { return Seen("a").size() == 40 && Seen("b").size() == 40; }));
  std::vector<int64_t> want;
  for (int i = 0; i < 40; ++i) want.push_back(i);
  EXPECT_EQ(Seen("a"), want);  // each once, in stream order, whichever node handled it
  EXPECT_EQ(Seen("b"), want);
  EXPECT_EQ(a_.calls() + a2.calls(), 40);
  EXPECT_EQ(StreamMessages(), 40);  // two relays, each event stored once
}

TEST_F(NatsBusTest, RetriesAFailedHandlerAndKeepsOnlyTheSuccessfulEffect) {
  StartNode(&a_, nullptr, Options());
  a_.FailNext(2);
  Publish("t.one", 1);
  Publish("t.one", 2);
  ASSERT_TRUE(Within(10000, [&] { return Seen("a").size() == 2; }));
  EXPECT_EQ(Seen("a"), (std::vector<int64_t>{1, 2}));  // the failed attempts left no effect
  EXPECT_EQ(a_.calls(), 4);
  EXPECT_EQ(Count("SELECT COUNT(*) FROM dead_letters"), 0);
}

TEST_F(NatsBusTest, DeadLettersAfterTheLastDeliveryAndMovesOn) {
  NatsBusOptions o = Options();
  o.max_deliver = 3;
  StartNode(&a_, nullptr, o);
  a_.FailAlways(7);
  std::string bad = Publish("t.one", 7);
  Publish("t.one", 8);
  ASSERT_TRUE(Within(10000, [&] { return Seen("a") == std::vector<int64_t>{8}; }));
  EXPECT_EQ(Count("SELECT COUNT(*) FROM dead_letters WHERE target = 'a' AND event_id = ? AND attempts = 3", {bad}), 1);
  EXPECT_EQ(Count("SELECT COUNT(*) FROM processed WHERE event_id = ?", {bad}), 0);
  // A dead letter counts as recorded: the event settles and is not published again.
  ASSERT_TRUE(Within(5000, [&] { return Count("SELECT COUNT(*) FROM outbox WHERE settled_at IS NULL") == 0; }));
  // A copy the outbox published while the event was still being retried is not run again.
  std::this_thread::sleep_for(std::chrono::milliseconds(700));
  EXPECT_EQ(a_.calls(), 4);
  EXPECT_EQ(Count("SELECT COUNT(*) FROM dead_letters"), 1);
}

TEST_F(NatsBusTest, ARelayRetryIsStoredOnce) {
  NatsBus* bus = StartNode(&a_, nullptr, Options());
  Publish("t.one", 1);
  ASSERT_TRUE(Within(10000, [&] { return Seen("a").size() == 1; }));
  // A relay that published and died before recording it: the row goes out again, same id.
  ASSERT_TRUE(db_->WriteSync([](SqlTx& tx) {
                   auto r = tx.Exec("UPDATE outbox SET relayed_at = NULL");
                   return r.ok() ? Status::Ok() : r.status();
                 }).ok());
  int published = 0;
  ASSERT_TRUE(bus->RelayOnce(&published).ok());
  EXPECT_EQ(published, 1);
  EXPECT_EQ(StreamMessages(), 1);  // Nats-Msg-Id deduplicated it
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_EQ(a_.calls(), 1);
}

// The relay publishes a round without waiting for each acknowledgement. When one publish fails,
// none after it may reach the stream before it does: a consumer would see them out of order.
TEST_F(NatsBusTest, AFailedPublishTakesTheRestOfItsRoundBackAndNothingOvertakesIt) {
  StartNode(&a_, nullptr, Options());
  // The stream refuses messages over 600 bytes, until the relay, told so by the failure, puts
  // its own configuration back (EnsureTopology, which sets no such limit).
  {
    natsConnection* nc = nullptr;
    jsCtx* js = nullptr;
    jsStreamInfo* si = nullptr;
    jsStreamInfo* updated = nullptr;
    ASSERT_EQ(natsConnection_ConnectTo(&nc, nats_.url().c_str()), NATS_OK);
    ASSERT_EQ(natsConnection_JetStream(&js, nc, nullptr), NATS_OK);
    ASSERT_EQ(js_GetStreamInfo(&si, js, "LASTCALL_EVENTS", nullptr, nullptr), NATS_OK);
    si->Config->MaxMsgSize = 600;
    EXPECT_EQ(js_UpdateStream(&updated, js, si->Config, nullptr, nullptr), NATS_OK);
    if (updated) jsStreamInfo_Destroy(updated);
    jsStreamInfo_Destroy(si);
    jsCtx_Destroy(js);
    natsConnection_Destroy(nc);
  }
  // One commit, so one relay round: small, too big (refused), small, small.
  ASSERT_TRUE(db_->WriteSync([&](SqlTx& tx) -> Status {
                   for (int n = 0; n < 4; ++n) {
                     nlohmann::json data = {{"n", n}};
                     if (n == 1) data["pad"] = std::string(2000, 'x');
                     CloudEvent e{ids_.NewTimeOrderedUuid(), "/src", "t.one", "s", "t", data};
                     LASTCALL_RETURN_IF_ERROR(outbox_->Append(tx, e, 0));
                   }
                   return Status::Ok();
                 }).ok());
  ASSERT_TRUE(Within(10000, [&] { return Seen("a").size() == 4; })) << Seen("a").size();
  EXPECT_EQ(Seen("a"), (std::vector<int64_t>{0, 1, 2, 3}));
  EXPECT_EQ(StreamMessages(), 4);
}

TEST_F(NatsBusTest, TheOutboxPublishesAgainWhatANatsServerLost) {
  NatsBusOptions o = Options();
  o.max_deliver = 1000;  // keep failing without dead-lettering while NATS goes away
  StartNode(&a_, &b_, o);
  a_.FailNext(1000000);
  b_.FailNext(1000000);
  for (int i = 0; i < 5; ++i) Publish("t.two", i);
  ASSERT_TRUE(Within(5000, [&] {
    return Count("SELECT COUNT(*) FROM outbox WHERE relayed_at IS NULL") == 0 && a_.calls() > 0;
  }));
  // The server dies and comes back with an empty store: stream, consumers and messages gone.
  nats_.Kill(/*wipe=*/true);
  ASSERT_TRUE(nats_.Start());
  a_.FailNext(0);
  b_.FailNext(0);
  ASSERT_TRUE(Within(20000, [&] { return Seen("a").size() == 5 && Seen("b").size() == 5; }))
      << "a saw " << Seen("a").size() << ", b saw " << Seen("b").size();
  std::vector<int64_t> want{0, 1, 2, 3, 4};
  EXPECT_EQ(Seen("a"), want);
  EXPECT_EQ(Seen("b"), want);
  ASSERT_TRUE(Within(5000, [&] { return Count("SELECT COUNT(*) FROM outbox WHERE settled_at IS NULL") == 0; }));
}

TEST_F(NatsBusTest, ACopyOfAPrunedEventThatTheStreamStillHoldsIsNotAppliedAgain) {
  NatsBus* bus = StartNode(&a_, &b_, Options());
  std::string id = Publish("t.two", 7);
  ASSERT_TRUE(Within(10000, [&] { return Seen("a").size() == 1 && Seen("b").size() == 1; }));
  ASSERT_TRUE(Within(5000, [&] { return Count("SELECT COUNT(*) FROM outbox WHERE settled_at IS NULL") == 0; }));
  // Inside the redelivery horizon nothing goes; past it the row and its records go together.
  auto prune = [&](WallMillis now) {
    PruneCounts counts;
    EXPECT_TRUE(db_->WriteSync([&](SqlTx& tx) -> Status {
                     auto r = PruneOnce(tx, *bus, now, {.retention_ms = 0});
                     if (!r.ok()) return r.status();
                     counts = *r;
                     return Status::Ok();
                   }).ok());
    return counts;
  };
  EXPECT_EQ(prune(clock_.Now()).outbox, 0);
  PruneCounts past = prune(clock_.Now() + bus->RedeliveryHorizonMs() + 1000);
  EXPECT_EQ(past.outbox, 1);
  EXPECT_EQ(past.processed, 2);
  // The stream receives a copy after its duplicate window (a republish that raced settling):
  // both targets get it, find no outbox row, and ack it without running their handlers.
  std::this_thread::sleep_for(std::chrono::milliseconds(700));
  ASSERT_NO_FATAL_FAILURE(PublishCopy({id, "/src", "t.two", "s", "t", {{"n", 7}}}, id));
  natsConnection* nc = nullptr;
  jsCtx* js = nullptr;
  ASSERT_EQ(natsConnection_ConnectTo(&nc, nats_.url().c_str()), NATS_OK);
  ASSERT_EQ(natsConnection_JetStream(&js, nc, nullptr), NATS_OK);
  uint64_t last = static_cast<uint64_t>(StreamMessages());
  auto settled = [&](const char* consumer) {
    jsConsumerInfo* ci = nullptr;
    bool done = js_GetConsumerInfo(&ci, js, "LASTCALL_EVENTS", consumer, nullptr, nullptr) == NATS_OK &&
                ci->NumPending == 0 && ci->NumAckPending == 0 && ci->Delivered.Stream == last;
    if (ci) jsConsumerInfo_Destroy(ci);
    return done;
  };
  ASSERT_TRUE(Within(10000, [&] { return settled("a") && settled("b"); }));
  jsCtx_Destroy(js);
  natsConnection_Destroy(nc);
  EXPECT_EQ(Seen("a"), std::vector<int64_t>{7});
  EXPECT_EQ(Seen("b"), std::vector<int64_t>{7});
  EXPECT_EQ(a_.calls(), 1);
  EXPECT_EQ(b_.calls(), 1);
  EXPECT_EQ(Count("SELECT COUNT(*) FROM processed"), 0);
}

TEST_F(NatsBusTest, AFailingEventHoldsBackTheRestOfItsBatchAndNoneOvertakesIt) {
  StreamWhileNobodyDelivers(0, 10);
  a_.FailTimes(3, 2);
  StartNode(&a_, nullptr, Options());
  ASSERT_TRUE(Within(10000, [&] { return Seen("a").size() == 10; }));
  std::vector<int64_t> want;
  for (int i = 0; i < 10; ++i) want.push_back(i);
  EXPECT_EQ(Seen("a"), want);
  // 0..2 committed before 3 failed (run once more, each in its savepoint, after the batch's
  // first run without savepoints was rolled back by 3's failure); 4..9 waited and ran once,
  // after 3 succeeded.
  EXPECT_EQ(a_.calls_for(3), 3);
  for (int i = 0; i < 10; ++i) {
    if (i < 3) {
      EXPECT_EQ(a_.calls_for(i), 2) << "event " << i;
    } else if (i > 3) {
      EXPECT_EQ(a_.calls_for(i), 1) << "event " << i;
    }
  }
  EXPECT_EQ(Count("SELECT COUNT(*) FROM dead_letters"), 0);
  // The retries were the holder's own: JetStream redelivered nothing and has nothing pending.
  EXPECT_TRUE(Within(3000, [&] {
    return ConsumerA([](const jsConsumerInfo& ci) {
      return ci.NumRedelivered == 0 && ci.NumAckPending == 0 && ci.Delivered.Stream == 10;
    });
  }));
}

TEST_F(NatsBusTest, ADuplicateInsideOneBatchIsHandledOnce) {
  std::vector<std::string> ids;
  StreamWhileNobodyDelivers(1, 3, &ids);
  // A copy of event 1 under another Nats-Msg-Id (a republish after the duplicate window), on
  // the stream behind event 2: the next fetch holds both copies.
  ASSERT_NO_FATAL_FAILURE(PublishCopy({ids[0], "/src", "t.one", "s", "t", {{"n", 1}}}, ids[0] + "-again"));
  ASSERT_EQ(StreamMessages(), 3);
  StartNode(&a_, nullptr, Options());
  ASSERT_TRUE(Within(10000, [&] {
    return ConsumerA([](const jsConsumerInfo& ci) {
      return ci.NumAckPending == 0 && ci.Delivered.Stream == 3;
    });
  }));
  EXPECT_EQ(Seen("a"), (std::vector<int64_t>{1, 2}));
  EXPECT_EQ(a_.calls(), 2);
  EXPECT_EQ(Count("SELECT COUNT(*) FROM processed WHERE target = 'a'"), 2);
}

TEST_F(NatsBusTest, RedeliversWhatADeadNodeHeldBeforeAnythingNewer) {
  StreamWhileNobodyDelivers(0, 6);
  // A node takes the first three from consumer "a" and dies without an ack.
  ASSERT_NO_FATAL_FAILURE(TakeAndDie(3));
  auto taken = std::chrono::steady_clock::now();
  // A live node gets them once AckWait (1 s) has passed. It could fetch 3..5 at once
  // (MaxAckPending is a batch); it waits for 0..2, which nats-server redelivers first.
  StartNode(&a_, nullptr, Options());
  ASSERT_TRUE(Within(10000, [&] { return Seen("a").size() == 6; }));
  EXPECT_EQ(Seen("a"), (std::vector<int64_t>{0, 1, 2, 3, 4, 5}));
  EXPECT_GE(std::chrono::steady_clock::now() - taken, std::chrono::milliseconds(900));  // AckWait
  EXPECT_EQ(a_.calls(), 6);
}

TEST_F(NatsBusTest, AHandOverBetweenNodesKeepsTheOrderBehindAFailingEvent) {
  NatsBusOptions o = Options();
  o.max_deliver = 1000;
  Recorder a2{"a"};
  a_.FailTimes(2, -1);  // node 1 keeps failing event 2 and holds 3..9 behind it
  NatsBus* node1 = StartNode(&a_, nullptr, o);
  for (int i = 0; i < 10; ++i) Publish("t.one", i);
  ASSERT_TRUE(Within(10000, [&] { return a_.calls_for(2) >= 2; }));
  EXPECT_EQ(Seen("a"), (std::vector<int64_t>{0, 1}));
  StartNode(&a2, nullptr, o);  // waits for the lease
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_EQ(a2.calls(), 0);
  node1->Stop();  // hands its messages back and the lease over
  ASSERT_TRUE(Within(15000, [&] { return Seen("a").size() == 10; })) << Seen("a").size();
  std::vector<int64_t> want;
  for (int i = 0; i < 10; ++i) want.push_back(i);
  EXPECT_EQ(Seen("a"), want);
  for (int i = 2; i < 10; ++i) EXPECT_EQ(a2.calls_for(i), 1) << "event " << i;
  for (int i = 3; i < 10; ++i) EXPECT_EQ(a_.calls_for(i), 0) << "event " << i;
}

TEST_F(NatsBusTest, ANodeThatLostItsLeaseCommitsNothing) {
  StartNode(&a_, nullptr, Options());
  Publish("t.one", 1);
  ASSERT_TRUE(Within(10000, [&] { return Seen("a").size() == 1; }));
  // Another node holds the lease now (this one's renewal ran late).
  auto steal = [&](const std::string& holder, int64_t expires_at) {
    ASSERT_TRUE(db_->WriteSync([&](SqlTx& tx) {
                     auto r = tx.Exec("UPDATE bus_leases SET holder = ?, expires_at = ? WHERE name = 'nats-target:a'",
                                      {holder, expires_at});
                     if (!r.ok()) return r.status();
                     return *r == 1 ? Status::Ok() : Status::Internal("no lease row");
                   }).ok());
  };
  steal("another-node", clock_.Now() + 60000);
  Publish("t.one", 2);
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  EXPECT_EQ(Seen("a"), std::vector<int64_t>{1});
  // That node goes away: its lease runs out and this node takes over.
  steal("another-node", clock_.Now() - 1);
  ASSERT_TRUE(Within(10000, [&] { return Seen("a").size() == 2; }));
  EXPECT_EQ(Seen("a"), (std::vector<int64_t>{1, 2}));
}

}  // namespace
}  // namespace lastcall
