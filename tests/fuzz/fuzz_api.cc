// The whole request handling of the HTTP API (src/http/api.cc) behind the server: routing, path
// ids, query parameters, JSON bodies, uploads (multipart, CSV, OFX), deletions and reads, over a
// real SQLite store and blob folder in a private temporary directory. Each input is one request
// built with FuzzedDataProvider (method, target, token, content type, body; uploads are wrapped
// in a well-formed form for an existing account so that the statement readers are reached).
// Properties: the handler answers exactly once; never a 5xx (every request here is a client's
// doing and the store is healthy); every 4xx has the JSON body {"error", "message"}; every JSON
// answer is valid JSON; another user's account is never listed.
#include <fuzzer/FuzzedDataProvider.h>
#include <nlohmann/json.hpp>
#include <stdlib.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <future>
#include <memory>
#include <string>

#include "blobs/blob_store.h"
#include "bus/event_bus.h"
#include "common/clock.h"
#include "common/ids.h"
#include "common/log.h"
#include "coordination/driver.h"
#include "fuzz_check.h"
#include "http/api.h"
#include "http/jwt.h"
#include "http/server.h"
#include "metrics/metrics.h"
#include "receipts/receipts.h"
#include "store/schema.h"
#include "store/sqlite/sqlite_database.h"

namespace {

using namespace lastcall;
using Json = nlohmann::json;

constexpr char kSecret[] = "fuzz-api-secret-0123456789abcdef0123";

struct World {
  std::unique_ptr<SqliteDatabase> db;
  std::unique_ptr<BlobStore> blobs;
  SystemClock clock;
  RandomIdGenerator ids;
  Metrics metrics;
  std::unique_ptr<Outbox> outbox;
  std::unique_ptr<CoordinationDriver> driver;
  ReceiptKeyring receipt_keys;
  std::unique_ptr<Api> api;
  std::string user_token, operator_token, other_token;
  std::string account_id, other_account_id;
};

HttpResponse Call(World& w, HttpRequest req) {
  std::promise<HttpResponse> answer;
  auto future = answer.get_future();
  auto calls = std::make_shared<std::atomic<int>>(0);
  w.api->Handle(std::move(req), [&answer, calls](HttpResponse r) {
    FUZZ_CHECK(calls->fetch_add(1) == 0, "respond called twice");
    answer.set_value(std::move(r));
  });
  FUZZ_CHECK(future.wait_for(std::chrono::seconds(30)) == std::future_status::ready,
             "no answer within 30 s");
  return future.get();
}

std::string CreateAccount(World& w, const std::string& token) {
  HttpRequest req;
  req.method = "POST";
  req.path = "/accounts";
  req.authorization = "Bearer " + token;
  req.content_type = "application/json";
  req.body = R"({"name":"Fuzz","currency":"EUR"})";
  HttpResponse r = Call(w, std::move(req));
  if (r.status != 201) std::abort();
  return Json::parse(r.body)["accountId"].get<std::string>();
}

World& TheWorld() {
  static World* w = [] {
    log::SetLevel(log::Level::kError);
    char tmpl[] = "/tmp/lastcall-fuzz-api-XXXXXX";
    if (mkdtemp(tmpl) == nullptr) std::abort();
    const std::filesystem::path dir = tmpl;
    setenv("TMPDIR", tmpl, 1);
    auto* world = new World;
    auto db = SqliteDatabase::Open({(dir / "lastcall.db").string(), "NORMAL"});
    if (!db.ok() || !Migrate(**db).ok()) std::abort();
    world->db = std::move(*db);
    auto blobs = FsBlobStore::Open((dir / "blobs").string());
    if (!blobs.ok()) std::abort();
    world->blobs = std::move(*blobs);
    world->outbox = std::make_unique<Outbox>(world->metrics, [] {});
    CoordinatorConfig cc;
    cc.expected_consumers = {"analytics_consumer", "categorization_consumer"};
    world->driver = std::make_unique<CoordinationDriver>(*world->db, *world->blobs, *world->outbox,
                                                         world->clock, world->ids, world->metrics, cc);
    bool created = false;
    auto keys = LoadReceiptKeys((dir / "receipt_keys").string(), "", &created);
    if (!keys.ok()) std::abort();
    world->receipt_keys = std::move(*keys);
    ApiConfig config{kSecret, 1 << 20, true, true};
    world->api = std::make_unique<Api>(*world->db, *world->blobs, *world->outbox, *world->driver,
                                       world->clock, world->ids, world->metrics,
                                       world->receipt_keys, config);
    const WallMillis now = world->clock.Now();
    world->user_token = SignJwt("fuzz-user", "", 86400, kSecret, now);
    world->operator_token = SignJwt("fuzz-operator", "operator", 86400, kSecret, now);
    world->other_token = SignJwt("other-user", "", 86400, kSecret, now);
    world->account_id = CreateAccount(*world, world->user_token);
    world->other_account_id = CreateAccount(*world, world->other_token);
    return world;
  }();
  return *w;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  World& w = TheWorld();
  FuzzedDataProvider in(data, size);
  HttpRequest req;
  req.request_id = "fuzz";
  req.method = in.PickValueInArray({"GET", "POST", "PATCH", "DELETE", "PUT", "HEAD"});
  std::string target = in.PickValueInArray(
      {"/accounts", "/accounts/", "/files", "/files/", "/transactions", "/transactions/",
       "/transactions?accountId=", "/coordinations", "/coordinations?", "/coordinations/",
       "/analytics/monthly", "/healthz", "/dashboard/", "/metrics", "/"});
  target += in.ConsumeRandomLengthString(80);
  if (in.ConsumeBool()) target += w.account_id;
  if (!ParseRequestTarget(target, &req.path, &req.query).ok()) return 0;  // the server's 400
  switch (in.ConsumeIntegralInRange<int>(0, 3)) {
    case 0: req.authorization = "Bearer " + w.user_token; break;
    case 1: req.authorization = "Bearer " + w.operator_token; break;
    case 2: req.authorization = in.ConsumeRandomLengthString(40); break;
    default: break;
  }
  const int body_kind = in.ConsumeIntegralInRange<int>(0, 2);
  if (body_kind == 0) {
    req.content_type = "application/json";
    req.body = in.ConsumeRemainingBytesAsString();
  } else if (body_kind == 1) {
    // A well-formed upload form around fuzzed file bytes, for one of the caller's accounts.
    const std::string filename = in.PickValueInArray({"s.csv", "s.ofx", "s.qfx", "s.txt", "s"});
    const std::string boundary = "lastcallFuzzBoundary";
    req.content_type = "multipart/form-data; boundary=" + boundary;
    const std::string account = in.ConsumeBool() ? w.account_id : in.ConsumeRandomLengthString(40);
    req.body = "--" + boundary + "\r\nContent-Disposition: form-data; name=\"accountId\"\r\n\r\n" +
               account + "\r\n--" + boundary +
               "\r\nContent-Disposition: form-data; name=\"file\"; filename=\"" + filename +
               "\"\r\n\r\n" + in.ConsumeRemainingBytesAsString() + "\r\n--" + boundary + "--\r\n";
  } else {
    req.content_type = in.ConsumeRandomLengthString(60);
    req.body = in.ConsumeRemainingBytesAsString();
  }
  const std::string method = req.method, path = req.path;
  HttpResponse r = Call(w, std::move(req));
  const std::string where = method + " " + path + " -> " + std::to_string(r.status) + " " + r.body.substr(0, 300);
  FUZZ_CHECK(r.status >= 200 && r.status < 500, where);
  if (r.content_type == "application/json") {
    Json j = Json::parse(r.body, nullptr, false);
    FUZZ_CHECK(!j.is_discarded(), "invalid JSON: " + where);
    if (r.status >= 400) {
      FUZZ_CHECK(j.is_object() && j.contains("error") && j["error"].is_string() &&
                     j.contains("message") && j["message"].is_string(),
                 "error body: " + where);
    }
  } else {
    FUZZ_CHECK(r.status < 400, "an error without a JSON body: " + where);
  }
  FUZZ_CHECK(r.body.find(w.other_account_id) == std::string::npos || path.find(w.other_account_id) != std::string::npos,
             "another user's account id leaked: " + where);
  return 0;
}
