// Webhook consumers without a network: signatures (the Standard Webhooks test vector), the bus
// target that only records deliveries, and the delivery worker over the real SQLite store with a
// scripted fake sender and a simulated clock: delivered, completion in the answer, retries with
// their backoff bounds, dead letters, replay, attempts kept across a restart, rotation.
#include <gtest/gtest.h>

#include <deque>
#include <filesystem>
#include <mutex>

#include "bus/in_process_bus.h"
#include "dlq/dead_letters.h"
#include "store/schema.h"
#include "store/sqlite/sqlite_database.h"
#include "test_util.h"
#include "webhooks/consumer_repo.h"
#include "webhooks/delivery.h"
#include "webhooks/signature.h"

namespace lastcall {
namespace {

using testing::CountRows;
namespace fs = std::filesystem;

TEST(WebhookSignature, MatchesTheStandardWebhooksTestVector) {
  auto sig = SignWebhook("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "msg_p5jXN8AQM9LWM0D4loKWxJek",
                         1614265330, R"({"test": 2432232314})");
  ASSERT_TRUE(sig.ok()) << sig.status().ToString();
  EXPECT_EQ(*sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
}

TEST(WebhookSignature, OneSignaturePerSecretSpaceSeparated) {
  std::string a = NewWebhookSecret(), b = NewWebhookSecret();
  EXPECT_NE(a, b);
  EXPECT_EQ(a.rfind("whsec_", 0), 0u);
  auto both = SignatureHeader({a, b}, "id", 1, "{}");
  ASSERT_TRUE(both.ok());
  EXPECT_EQ(*both, *SignWebhook(a, "id", 1, "{}") + " " + *SignWebhook(b, "id", 1, "{}"));
  EXPECT_FALSE(SignWebhook("not-a-secret", "id", 1, "{}").ok());
}

TEST(WebhookSignature, TokensAreRandomAndStoredAsHashes) {
  std::string t1 = NewConsumerToken(), t2 = NewConsumerToken();
  EXPECT_NE(t1, t2);
  EXPECT_EQ(t1.rfind("lcc_", 0), 0u);
  EXPECT_GE(t1.size(), 40u);
  EXPECT_EQ(TokenHash(t1).size(), 64u);
  EXPECT_NE(TokenHash(t1), TokenHash(t2));
}

TEST(WebhookBackoff, FullJitterStaysUnderTheExponentialCeiling) {
  WebhookOptions o;
  o.backoff_base_ms = 100;
  o.backoff_cap_ms = 1000;
  std::mt19937_64 rng(7);
  for (int n = 1; n <= 8; ++n) {
    int64_t ceiling = std::min<int64_t>(1000, 100 << (n - 1));
    int64_t lo = INT64_MAX, hi = 0;
    for (int i = 0; i < 2000; ++i) {
      int64_t d = BackoffDelay(o, n, rng);
      ASSERT_GE(d, 0);
      ASSERT_LE(d, ceiling);
      lo = std::min(lo, d);
      hi = std::max(hi, d);
    }
    // Full jitter: the whole range is used, not just its top.
    EXPECT_LT(lo, ceiling / 10) << n;
    EXPECT_GT(hi, ceiling * 9 / 10) << n;
  }
}

TEST(WebhookClassify, WhatIsRetriedAndWhatIsRefused) {
  auto answer = [](int s) { return Result<WebhookResponse>(WebhookResponse{s, "", ""}); };
  EXPECT_EQ(Classify(answer(200)), AttemptResult::kDelivered);
  EXPECT_EQ(Classify(answer(204)), AttemptResult::kDelivered);
  EXPECT_EQ(Classify(answer(500)), AttemptResult::kRetry);
  EXPECT_EQ(Classify(answer(503)), AttemptResult::kRetry);
  EXPECT_EQ(Classify(answer(429)), AttemptResult::kRetry);
  EXPECT_EQ(Classify(answer(408)), AttemptResult::kRetry);
  EXPECT_EQ(Classify(Result<WebhookResponse>(Status::Unavailable("timed out"))), AttemptResult::kRetry);
  EXPECT_EQ(Classify(answer(401)), AttemptResult::kRefused);
  EXPECT_EQ(Classify(answer(302)), AttemptResult::kRefused);
}

TEST(WebhookUrl, ParsesHttpUrlsOnly) {
  auto u = ParseHttpUrl("http://127.0.0.1:9000/hooks/lastcall?x=1");
  ASSERT_TRUE(u.ok());
  EXPECT_EQ(u->host, "127.0.0.1");
  EXPECT_EQ(u->port, "9000");
  EXPECT_EQ(u->target, "/hooks/lastcall?x=1");
  EXPECT_EQ(ParseHttpUrl("http://example.com")->port, "80");
  EXPECT_EQ(ParseHttpUrl("http://example.com")->target, "/");
  EXPECT_FALSE(ParseHttpUrl("https://example.com/").ok());
  EXPECT_FALSE(ParseHttpUrl("http://:80/").ok());
  EXPECT_FALSE(ParseHttpUrl("http://host:99999/").ok());
  EXPECT_FALSE(ParseHttpUrl("http://user:pw@host/").ok());
  EXPECT_FALSE(ParseHttpUrl("ftp://host/").ok());
}

// Answers from a script (then 200 {}), and records every request.
class FakeSender : public WebhookSender {
 public:
  Result<WebhookResponse> Post(const WebhookRequest& r) override {
    std::lock_guard<std::mutex> l(mu_);
    requests.push_back(r);
    if (script.empty()) return WebhookResponse{200, "application/json", "{}"};
    Result<WebhookResponse> next = script.front();
    script.pop_front();
    return next;
  }
  std::mutex mu_;
  std::deque<Result<WebhookResponse>> script;
  std::vector<WebhookRequest> requests;
};

class WebhookDeliveryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("lastcall-webhooks-" + RandomHex(6));
    fs::create_directories(dir_);
    Open();
    consumer_.name = "billing";
    consumer_.url = "http://127.0.0.1:9/hook";
    consumer_.priority = ConsumerPriority::kCritical;
    consumer_.timeout_ms = 60000;
    consumer_.heartbeat_ms = 30000;
    consumer_.secret = NewWebhookSecret();
    consumer_.token_hash = TokenHash(NewConsumerToken());
    consumer_.created_at = clock_.Now();
    consumer_.last_heartbeat_at = clock_.Now();
    ASSERT_TRUE(db_->WriteSync([&](SqlTx& tx) { return InsertWebhookConsumer(tx, consumer_); }).ok());
  }
  void TearDown() override {
    worker_.reset();
    db_->Close();
    fs::remove_all(dir_);
  }
  void Open() {
    auto db = SqliteDatabase::Open({(dir_ / "db").string(), "NORMAL"});
    ASSERT_TRUE(db.ok());
    db_ = std::move(db).value();
    ASSERT_TRUE(Migrate(*db_).ok());
    outbox_ = std::make_unique<Outbox>(metrics_, nullptr);
    WebhookOptions o;
    o.max_attempts = 4;
    o.backoff_base_ms = 1000;
    o.backoff_cap_ms = 5000;
    worker_ = std::make_unique<DeliveryWorker>(*db_, sender_, *outbox_, clock_, ids_, metrics_, o);
  }
  // The bus target's unit for a file.delete_requested expecting `expected`.
  CloudEvent Request(std::vector<std::string> expected) {
    CloudEvent e = MakeEvent(ids_, kApiSource, kFileDeleteRequested, "files/f1", clock_.Now(),
                             {{"coordinationId", coordination_},
                              {"fileId", "f1"},
                              {"expectedConsumers", expected}});
    e.seq = 42;
    Deliver(e);
    return e;
  }
  // The bus target's unit for e (again: a redelivery).
  void Deliver(const CloudEvent& e) {
    WebhookTarget target(clock_, ids_, nullptr);
    EXPECT_TRUE(db_->WriteSync([&](SqlTx& tx) { return target.Handle(e, tx); }).ok());
  }
  WebhookDelivery OnlyDelivery() {
    WebhookDelivery out;
    EXPECT_TRUE(db_->Read([&](SqlTx& tx) {
                  auto r = tx.QueryOne("SELECT id FROM webhook_deliveries");
                  if (!r.ok()) return r.status();
                  auto d = FindDelivery(tx, (*r)->Text(0));
                  if (!d.ok()) return d.status();
                  out = **d;
                  return Status::Ok();
                }).ok());
    return out;
  }
  static Result<WebhookResponse> Answer(int status, std::string body = "") {
    return WebhookResponse{status, "application/json", std::move(body)};
  }

  fs::path dir_;
  SimulatedClock clock_{1'800'000'000'000};
  RandomIdGenerator ids_;
  Metrics metrics_;
  FakeSender sender_;
  std::unique_ptr<Database> db_;
  std::unique_ptr<Outbox> outbox_;
  std::unique_ptr<DeliveryWorker> worker_;
  WebhookConsumer consumer_;
  std::string coordination_ = "0b7b3f6e-2f55-4c1e-9a53-4c1a0e7f1d20";
};

TEST_F(WebhookDeliveryTest, TargetRecordsOneDeliveryPerExpectedWebhookConsumerOnly) {
  CloudEvent e = Request({"analytics_consumer", "billing", "nobody_registered"});
  Deliver(e);  // redelivered: still one
  EXPECT_EQ(CountRows(*db_, "SELECT COUNT(*) FROM webhook_deliveries"), 1);
  WebhookDelivery d = OnlyDelivery();
  EXPECT_EQ(d.consumer, "billing");
  EXPECT_EQ(d.event_id, e.id);
  EXPECT_EQ(d.status, kDeliveryPending);
  EXPECT_EQ(d.coordination_id, coordination_);
  auto body = nlohmann::json::parse(d.body);
  EXPECT_EQ(body["specversion"], "1.0");
  EXPECT_EQ(body["id"], e.id);
  EXPECT_EQ(body["type"], kFileDeleteRequested);
  EXPECT_TRUE(sender_.requests.empty()) << "the bus unit must not send anything";
}

TEST_F(WebhookDeliveryTest, DeliversASignedCloudEvent) {
  Request({"billing"});
  EXPECT_EQ(worker_->RunDueOnce(), 1);
  ASSERT_EQ(sender_.requests.size(), 1u);
  const WebhookRequest& r = sender_.requests[0];
  WebhookDelivery d = OnlyDelivery();
  EXPECT_EQ(r.url, consumer_.url);
  EXPECT_EQ(r.content_type, "application/cloudevents+json");
  EXPECT_EQ(r.body, d.body);
  EXPECT_EQ(r.headers.at("webhook-id"), d.id);
  EXPECT_EQ(r.headers.at("webhook-timestamp"), std::to_string(clock_.Now() / 1000));
  EXPECT_EQ(r.headers.at("webhook-signature"),
            *SignWebhook(consumer_.secret, d.id, clock_.Now() / 1000, d.body));
  EXPECT_EQ(d.status, kDeliveryDelivered);
  EXPECT_EQ(d.attempts, 1);
  EXPECT_EQ(worker_->RunDueOnce(), 0);
  // No completion in the answer: none published.
  EXPECT_EQ(CountRows(*db_, "SELECT COUNT(*) FROM outbox"), 0);
}

TEST_F(WebhookDeliveryTest, CompletionInTheAnswerIsPublishedAsTheConsumers) {
  Request({"billing"});
  sender_.script.push_back(Answer(200, R"({"status":"completed","detail":{"rows":3}})"));
  worker_->RunDueOnce();
  EXPECT_EQ(CountRows(*db_, "SELECT COUNT(*) FROM outbox WHERE type = 'consumer.completion' AND "
                            "source = '/lastcall/consumers/billing'"),
            1);
  std::string data;
  ASSERT_TRUE(db_->Read([&](SqlTx& tx) {
                   auto r = tx.QueryOne("SELECT data FROM outbox");
                   data = (*r)->Text(0);
                   return Status::Ok();
                 }).ok());
  auto j = nlohmann::json::parse(data);
  EXPECT_EQ(j["coordinationId"], coordination_);
  EXPECT_EQ(j["consumer"], "billing");
  EXPECT_EQ(j["status"], "completed");
  EXPECT_EQ(j["detail"]["rows"], 3);
}

TEST_F(WebhookDeliveryTest, UnusableCompletionInTheAnswerIsIgnoredButDelivered) {
  Request({"billing"});
  sender_.script.push_back(Answer(200, R"({"status":"done"})"));
  worker_->RunDueOnce();
  EXPECT_EQ(OnlyDelivery().status, kDeliveryDelivered);
  EXPECT_EQ(CountRows(*db_, "SELECT COUNT(*) FROM outbox"), 0);
}

TEST_F(WebhookDeliveryTest, FailuresAreRetriedWithinTheBackoffThenDelivered) {
  Request({"billing"});
  sender_.script.push_back(Answer(503));
  sender_.script.push_back(Result<WebhookResponse>(Status::Unavailable("connect: refused")));
  worker_->RunDueOnce();
  WebhookDelivery d = OnlyDelivery();
  EXPECT_EQ(d.status, kDeliveryPending);
  EXPECT_EQ(d.attempts, 1);
  EXPECT_EQ(d.last_error, "HTTP 503");
  EXPECT_LE(d.next_attempt_at - clock_.Now(), 1000);  // base * 2^0
  clock_.Set(d.next_attempt_at);
  worker_->RunDueOnce();
  d = OnlyDelivery();
  EXPECT_EQ(d.attempts, 2);
  EXPECT_EQ(d.last_error, "connect: refused");
  EXPECT_LE(d.next_attempt_at - clock_.Now(), 2000);  // base * 2^1
  // Not due yet: nothing is sent.
  if (d.next_attempt_at > clock_.Now()) {
    EXPECT_EQ(worker_->RunDueOnce(), 0);
  }
  clock_.Set(d.next_attempt_at);
  worker_->RunDueOnce();
  d = OnlyDelivery();
  EXPECT_EQ(d.status, kDeliveryDelivered);
  EXPECT_EQ(d.attempts, 3);
  EXPECT_EQ(sender_.requests.size(), 3u);
  // The same webhook-id on every attempt (consumers deduplicate on it), a fresh timestamp.
  EXPECT_EQ(sender_.requests[0].headers.at("webhook-id"), sender_.requests[2].headers.at("webhook-id"));
  EXPECT_EQ(metrics_.webhook_retries.Value({"billing"}), 2);
  auto c = db_->Read([&](SqlTx& tx) {
    auto r = FindWebhookConsumer(tx, "billing");
    EXPECT_EQ((*r)->failures, 2);
    EXPECT_EQ((*r)->last_delivery_result, "delivered (HTTP 200)");
    return Status::Ok();
  });
  EXPECT_TRUE(c.ok());
}

TEST_F(WebhookDeliveryTest, LastAttemptDeadLettersAndAReplayDeliversAgain) {
  CloudEvent e = Request({"billing"});
  // The event must be in the outbox for the dead letter to show it.
  ASSERT_TRUE(db_->WriteSync([&](SqlTx& tx) { return outbox_->Append(tx, e, clock_.Now()); }).ok());
  for (int i = 0; i < 4; ++i) sender_.script.push_back(Answer(500));
  for (int i = 0; i < 4; ++i) {
    clock_.Advance(10'000);
    EXPECT_EQ(worker_->RunDueOnce(), 1);
  }
  WebhookDelivery d = OnlyDelivery();
  EXPECT_EQ(d.status, kDeliveryDead);
  EXPECT_EQ(d.attempts, 4);
  clock_.Advance(10'000);
  EXPECT_EQ(worker_->RunDueOnce(), 0);
  std::vector<DeadLetter> letters;
  ASSERT_TRUE(db_->Read([&](SqlTx& tx) {
                   bool more = false;
                   auto r = ListDeadLetters(tx, {}, &more);
                   if (!r.ok()) return r.status();
                   letters = *r;
                   return Status::Ok();
                 }).ok());
  ASSERT_EQ(letters.size(), 1u);
  EXPECT_EQ(letters[0].target, "billing");
  EXPECT_STREQ(letters[0].kind(), "webhook");
  EXPECT_EQ(letters[0].attempts, 4);
  EXPECT_EQ(letters[0].error, "HTTP 500");
  ASSERT_TRUE(letters[0].event);
  EXPECT_EQ(letters[0].event->id, e.id);
  EXPECT_EQ(metrics_.dead_letters.Value({"billing"}), 1);

  InProcessBus bus(*db_, clock_, ids_, metrics_);  // replays in-process targets only
  ASSERT_TRUE(db_->WriteSync([&](SqlTx& tx) {
                   return ReplayDeadLetter(tx, letters[0].id, clock_.Now(), bus);
                 }).ok());
  Status again = db_->WriteSync([&](SqlTx& tx) {
    return ReplayDeadLetter(tx, letters[0].id, clock_.Now(), bus);
  });
  EXPECT_EQ(again.error(), "already_replayed");
  EXPECT_EQ(worker_->RunDueOnce(), 1);
  d = OnlyDelivery();
  EXPECT_EQ(d.status, kDeliveryDelivered);
  EXPECT_EQ(d.attempts, 1);
}

TEST_F(WebhookDeliveryTest, ARefusalDeadLettersAtOnce) {
  Request({"billing"});
  sender_.script.push_back(Answer(401));
  worker_->RunDueOnce();
  WebhookDelivery d = OnlyDelivery();
  EXPECT_EQ(d.status, kDeliveryDead);
  EXPECT_EQ(d.attempts, 1);
  EXPECT_EQ(CountRows(*db_, "SELECT COUNT(*) FROM dead_letters WHERE delivery_id = ?", {d.id}), 1);
}

TEST_F(WebhookDeliveryTest, AttemptsSurviveARestart) {
  Request({"billing"});
  sender_.script.push_back(Answer(500));
  sender_.script.push_back(Answer(500));
  worker_->RunDueOnce();
  clock_.Advance(10'000);
  worker_->RunDueOnce();
  worker_.reset();
  db_->Close();
  Open();
  sender_.script.push_back(Answer(500));
  sender_.script.push_back(Answer(500));
  clock_.Advance(10'000);
  worker_->RunDueOnce();
  EXPECT_EQ(OnlyDelivery().attempts, 3);
  clock_.Advance(10'000);
  worker_->RunDueOnce();
  EXPECT_EQ(OnlyDelivery().status, kDeliveryDead) << "4 attempts in all, across the restart";
}

TEST_F(WebhookDeliveryTest, DuringARotationBothSecretsSign) {
  std::string fresh = NewWebhookSecret();
  ASSERT_TRUE(db_->WriteSync([&](SqlTx& tx) {
                   return RotateWebhookSecret(tx, "billing", fresh, clock_.Now() + 60'000);
                 }).ok());
  Request({"billing"});
  worker_->RunDueOnce();
  WebhookDelivery d = OnlyDelivery();
  int64_t ts = clock_.Now() / 1000;
  EXPECT_EQ(sender_.requests.at(0).headers.at("webhook-signature"),
            *SignWebhook(fresh, d.id, ts, d.body) + " " +
                *SignWebhook(consumer_.secret, d.id, ts, d.body));
  // After the overlap only the new secret signs.
  clock_.Advance(61'000);
  coordination_ = "5d1f0c2a-9d7e-4a43-8f0e-1b2c3d4e5f60";
  CloudEvent second = Request({"billing"});
  worker_->RunDueOnce();
  ASSERT_EQ(sender_.requests.size(), 2u);
  const WebhookRequest& r = sender_.requests[1];
  EXPECT_EQ(r.headers.at("webhook-signature"),
            *SignWebhook(fresh, r.headers.at("webhook-id"), clock_.Now() / 1000, r.body));
}

TEST_F(WebhookDeliveryTest, DeregisteringCancelsPendingDeliveries) {
  Request({"billing"});
  ASSERT_TRUE(db_->WriteSync([&](SqlTx& tx) -> Status {
                   auto r = DeleteWebhookConsumer(tx, "billing", clock_.Now());
                   return r.ok() ? Status::Ok() : r.status();
                 }).ok());
  EXPECT_EQ(OnlyDelivery().status, kDeliveryCancelled);
  EXPECT_EQ(worker_->RunDueOnce(), 0);
  EXPECT_TRUE(sender_.requests.empty());
}

TEST_F(WebhookDeliveryTest, OnlyHealthyConsumersAreExpected) {
  auto healthy = [&] {
    std::vector<std::string> names;
    EXPECT_TRUE(db_->Read([&](SqlTx& tx) {
                  auto r = HealthyConsumerPolicies(tx, clock_.Now());
                  if (!r.ok()) return r.status();
                  for (const auto& p : *r) names.push_back(p.name);
                  return Status::Ok();
                }).ok());
    return names;
  };
  EXPECT_EQ(healthy(), std::vector<std::string>{"billing"});
  clock_.Advance(30'001);
  EXPECT_TRUE(healthy().empty());
  ASSERT_TRUE(db_->WriteSync([&](SqlTx& tx) { return RecordHeartbeat(tx, "billing", clock_.Now()); }).ok());
  EXPECT_EQ(healthy(), std::vector<std::string>{"billing"});
}

}  // namespace
}  // namespace lastcall
