// Faults a SIGKILL cannot reach, over the real SQLite store, coordinator driver, consumers and
// repositories (the crash harness in tests/crash covers process crashes):
//  - FaultInjectionTest: the Nth write unit fails (its effects roll back) or commits with its
//    answer lost, for N swept over every unit of a scenario, and periodically;
//  - ChaosBusTest: deliveries duplicated (also past the processed record) and reordered.
// After each scenario settles, the invariants of docs/reliability.md must hold: every accepted
// deletion finished exactly once, nothing else was touched, derived values match the rows.
#include <gtest/gtest.h>

#include <filesystem>
#include <map>
#include <random>

#include "app/app.h"
#include "blobs/blob_store.h"
#include "bus/in_process_bus.h"
#include "consumers/analytics_consumer.h"
#include "consumers/categorization_consumer.h"
#include "coordination/coordination_repo.h"
#include "coordination/driver.h"
#include "fault_injection.h"
#include "store/repos.h"
#include "store/schema.h"
#include "store/sqlite/sqlite_database.h"
#include "test_util.h"
#include "webhooks/delivery.h"

namespace lastcall {
namespace {

namespace fs = std::filesystem;
using testing::ChaosBus;
using testing::FaultyDatabase;
using testing::WriteFault;

struct Imported {
  FileRecord file;
  int64_t units = 0;          // sum of its amounts
  std::string max_date;
  bool requested = false;     // a deletion was accepted
  std::string coordination_id;
};

// One scenario: a store with the service's pieces, where `db()` is what they write through.
class Scenario {
 public:
  // bus_seed >= 0: a ChaosBus with that seed; else the real InProcessBus.
  Scenario(const fs::path& dir, std::function<std::unique_ptr<FaultyDatabase>(Database&)> faulty,
           int64_t bus_seed, ConsumerFaults faults)
      : dir_(dir) {
    fs::create_directories(dir_);
    real_ = std::move(SqliteDatabase::Open({(dir_ / "db").string(), "NORMAL"})).value();
    EXPECT_TRUE(Migrate(*real_).ok());
    blobs_ = std::move(FsBlobStore::Open((dir_ / "blobs").string())).value();
    faulty_ = faulty(*real_);
    Database& db = faulty_ ? static_cast<Database&>(*faulty_) : *real_;
    if (bus_seed >= 0) {
      chaos_ = std::make_unique<ChaosBus>(db, static_cast<uint64_t>(bus_seed), 30);
      bus_ = chaos_.get();
    } else {
      InProcessBusOptions o;
      o.idle_poll_ms = 20;
      real_bus_ = std::make_unique<InProcessBus>(db, clock_, ids_, metrics_, o);
      bus_ = real_bus_.get();
    }
    outbox_ = std::make_unique<Outbox>(metrics_, [this] { bus_->Notify(); });
    CoordinatorConfig cc;
    cc.expected_consumers = {kAnalyticsConsumer, kCategorizationConsumer};
    cc.timeout_ms = 2000;
    driver_ = std::make_unique<CoordinationDriver>(db, *blobs_, *outbox_, clock_, ids_, metrics_, cc);
    analytics_ = std::make_unique<AnalyticsConsumer>(*outbox_, clock_, ids_, faults);
    categorization_ = std::make_unique<CategorizationConsumer>(*outbox_, clock_, ids_, faults);
    bus_->AddTarget(kAnalyticsConsumer, analytics_.get());
    bus_->AddTarget(kCategorizationConsumer, categorization_.get());
    // The service's webhook target too (ServiceRules routes to it): no webhook consumer is
    // registered here, so it records nothing.
    webhooks_ = std::make_unique<WebhookTarget>(clock_, ids_, [] {});
    bus_->AddTarget(kWebhookTarget, webhooks_.get());
    bus_->AddTarget(kFileDeletionConsumer, driver_.get());
    for (const Rule& r : ServiceRules()) bus_->AddRule(r);
    EXPECT_TRUE(bus_->Start().ok());
    driver_->Start();
  }
  ~Scenario() {
    driver_->Stop();
    bus_->Stop();
    real_->Close();
    fs::remove_all(dir_);
  }

  Database& db() { return faulty_ ? static_cast<Database&>(*faulty_) : *real_; }
  FaultyDatabase* faulty() { return faulty_.get(); }
  ChaosBus* chaos() { return chaos_.get(); }

  // Imports a file of n rows for user into account (creating the account on first use), as the
  // API does: one unit with the rows, the derived values and file.uploaded. A failed unit is
  // retried like a client retries a 503; a lost answer is recognised by the file being there.
  Imported Import(const std::string& user, const std::string& account_id, int n, std::mt19937& rng) {
    Imported im;
    FileRecord& f = im.file;
    f.id = ids_.NewUuid();
    f.user_id = user;
    f.account_id = account_id;
    f.name = "s.csv";
    f.content_type = "text/csv";
    f.sha256 = "00";
    f.blob_key = ids_.NewUuid();
    f.transaction_count = n;
    f.status = kFileActive;
    EXPECT_TRUE(blobs_->Put(f.blob_key, "bytes of " + f.id).ok());
    std::vector<Transaction> rows;
    for (int i = 0; i < n; ++i) {
      Transaction t;
      t.id = ids_.NewUuid();
      t.user_id = user;
      t.account_id = account_id;
      t.file_id = f.id;
      t.row_no = i + 1;
      t.date = "2024-0" + std::to_string(1 + rng() % 9) + "-1" + std::to_string(rng() % 10);
      t.description = "coffee " + std::to_string(i);
      t.amount = Money::FromUnits(static_cast<int64_t>(rng() % 200000) - 100000);
      t.currency = "USD";
      im.units += t.amount.units();
      im.max_date = std::max(im.max_date, t.date);
      rows.push_back(t);
    }
    for (int attempt = 0; attempt < 50; ++attempt) {
      Status st = db().WriteSync([&](SqlTx& tx) -> Status {
        auto have = FindFileById(tx, f.id);
        if (!have.ok()) return have.status();
        if (*have) return Status::Ok();  // an earlier attempt committed; its answer was lost
        auto acc = tx.QueryOne("SELECT 1 FROM accounts WHERE id = ?", {account_id});
        if (!acc.ok()) return acc.status();
        if (!*acc) LASTCALL_RETURN_IF_ERROR(InsertAccount(tx, Account{account_id, user, "Checking", "USD"}));
        LASTCALL_RETURN_IF_ERROR(InsertFile(tx, f));
        LASTCALL_RETURN_IF_ERROR(InsertTransactions(tx, rows));
        LASTCALL_RETURN_IF_ERROR(AddToAccount(tx, account_id, Money::FromUnits(im.units), n, im.max_date));
        CloudEvent e{ids_.NewUuid(), kApiSource, kFileUploaded, "files/" + f.id, "t",
                     {{"fileId", f.id}, {"userId", user}}};
        return outbox_->Append(tx, e, clock_.Now());
      });
      if (st.ok()) return im;
    }
    ADD_FAILURE() << "import never committed";
    return im;
  }

  // DELETE as the API does it; retried on a failed unit. Returns the coordination id.
  void RequestDeletion(Imported& im) {
    for (int attempt = 0; attempt < 50; ++attempt) {
      std::string id;
      Status st = db().WriteSync([&](SqlTx& tx) -> Status {
        auto file = FindFileById(tx, im.file.id);
        if (!file.ok()) return file.status();
        if (!*file) return Status::NotFound("gone");  // accepted earlier, already deleted
        auto r = driver_->RequestDeletion(tx, **file);
        if (!r.ok()) return r.status();
        id = *r;
        return Status::Ok();
      });
      if (st.ok() || st.code() == Code::kNotFound) {
        if (!id.empty()) {
          EXPECT_TRUE(im.coordination_id.empty() || im.coordination_id == id)
              << "a second request named another coordination";
          im.coordination_id = id;
        }
        im.requested = true;
        return;
      }
    }
    ADD_FAILURE() << "deletion request never committed";
  }

  // Advances the simulated clock until nothing is waiting, deleting or queued (and the chaos
  // bus has delivered everything); false after 20 s of real time.
  bool Settle() {
    for (int i = 0; i < 4000; ++i) {
      clock_.Advance(100);
      driver_->Wake();
      bus_->Notify();
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
      if (Count("SELECT COUNT(*) FROM coordinations WHERE status != 'completed'") == 0 &&
          Count("SELECT COUNT(*) FROM blob_gc") == 0 && (!chaos_ || chaos_->Idle())) {
        return true;
      }
    }
    return false;
  }

  int64_t Count(const std::string& sql, const SqlParams& p = {}) {
    return testing::CountRows(*real_, sql, p);
  }

  // Every invariant of docs/reliability.md over the store and the blob folder; one line per
  // violation. archive_exact: the analytics archive must hold the file's totals (false when
  // deliveries may be reordered within a target, where an archive may legitimately be empty).
  std::vector<std::string> Violations(const std::vector<Imported>& files, const ConsumerFaults& faults,
                                      bool archive_exact) {
    std::vector<std::string> v;
    auto expect = [&](bool ok, const std::string& what) {
      if (!ok) v.push_back(what);
    };
    std::map<std::string, std::tuple<int64_t, int64_t, std::string>> want;  // per account
    for (const Imported& im : files) {
      const std::string& id = im.file.id;
      auto& w = want[im.file.account_id];
      if (!im.requested) {
        expect(Count("SELECT COUNT(*) FROM files WHERE id = ? AND status = 'active' AND "
                     "coordination_id IS NULL", {id}) == 1, "kept file changed: " + id);
        expect(Count("SELECT COUNT(*) FROM transactions WHERE file_id = ?", {id}) ==
                   im.file.transaction_count, "kept file lost rows: " + id);
        expect(Count("SELECT COALESCE(SUM(amount_units), 0) FROM transactions WHERE file_id = ?", {id}) ==
                   im.units, "kept file's amounts changed: " + id);
        expect(blobs_->Get(im.file.blob_key).ok(), "kept file lost its blob: " + id);
        expect(Count("SELECT COUNT(*) FROM tombstones WHERE file_id = ?", {id}) == 0 &&
                   Count("SELECT COUNT(*) FROM coordinations WHERE file_id = ?", {id}) == 0,
               "kept file has a deletion trace: " + id);
        std::get<0>(w) += im.units;
        std::get<1>(w) += im.file.transaction_count;
        std::get<2>(w) = std::max(std::get<2>(w), im.max_date);
        continue;
      }
      expect(Count("SELECT COUNT(*) FROM files WHERE id = ?", {id}) == 0, "deleted file's row left: " + id);
      expect(Count("SELECT COUNT(*) FROM transactions WHERE file_id = ?", {id}) == 0,
             "deleted file's rows left: " + id);
      expect(!blobs_->Get(im.file.blob_key).ok(), "deleted file's blob left: " + id);
      // (With reordering within a target, an upload handled after the delete request can count
      // the file again; the in-process bus delivers in order per target.)
      expect(!archive_exact ||
                 Count("SELECT COUNT(*) FROM analytics_file_totals WHERE file_id = ?", {id}) == 0,
             "deleted file's analytics totals left: " + id);
      expect(Count("SELECT COUNT(*) FROM tombstones WHERE file_id = ?", {id}) == 1,
             "not exactly one tombstone: " + id);
      expect(Count("SELECT COUNT(*) FROM coordinations WHERE file_id = ? AND status = 'completed' "
                   "AND transactions_deleted = ?", {id, im.file.transaction_count}) == 1 &&
                 Count("SELECT COUNT(*) FROM coordinations WHERE file_id = ?", {id}) == 1,
             "not exactly one completed coordination: " + id);
      expect(Count("SELECT COUNT(*) FROM outbox WHERE type = 'file.deleted' AND data LIKE ?",
                   {"%\"fileId\":\"" + id + "\"%"}) == 1,
             "not exactly one file.deleted: " + id);
      bool analytics_faulted = faults.For(kAnalyticsConsumer, id) != FaultMode::kNone;
      int64_t archived = Count("SELECT COUNT(DISTINCT coordination_id) FROM analytics_archive WHERE file_id = ?", {id});
      int64_t archived_n = Count("SELECT COALESCE(SUM(count), 0) FROM analytics_archive WHERE file_id = ?", {id});
      int64_t archived_units = Count("SELECT COALESCE(SUM(total_units), 0) FROM analytics_archive WHERE file_id = ?", {id});
      // Analytics gets its last look only while the file exists: when the deadline passed with
      // analytics missing (its units kept failing), the deletion went first and nothing is
      // archived; that is the timeout doing its job, not a lost archive.
      bool analytics_missed = Count("SELECT COUNT(*) FROM coordinations WHERE file_id = ? AND "
                                    "outcome = 'timed_out' AND missing_consumers LIKE ?",
                                    {id, std::string("%") + kAnalyticsConsumer + "%"}) > 0;
      if (analytics_faulted) {
        expect(archived == 0, "archive written although analytics failed: " + id);
      } else if (analytics_missed) {
        expect(archived <= 1, "analytics archive written twice: " + id);
      } else if (archive_exact || archived > 0) {
        expect(archived == 1 && archived_n == im.file.transaction_count && archived_units == im.units,
               "analytics archive not written exactly once with the file's totals: " + id +
                   " (archived " + std::to_string(archived) + " coordinations, " +
                   std::to_string(archived_n) + " of " + std::to_string(im.file.transaction_count) +
                   " transactions, " + std::to_string(archived_units) + " of " +
                   std::to_string(im.units) + " units)");
      }
      if (faults.For(kCategorizationConsumer, id) == FaultMode::kSilent) {
        expect(Count("SELECT COUNT(*) FROM coordinations WHERE file_id = ? AND outcome = 'timed_out'", {id}) == 1,
               "silent consumer but not timed out: " + id);
      }
    }
    for (const auto& [account, w] : want) {
      expect(Count("SELECT balance_units FROM accounts WHERE id = ?", {account}) == std::get<0>(w),
             "balance is not imports minus deletions: " + account);
      expect(Count("SELECT transaction_count FROM accounts WHERE id = ?", {account}) == std::get<1>(w),
             "count is not imports minus deletions: " + account);
    }
    expect(Count("SELECT COUNT(*) FROM accounts a WHERE balance_units != (SELECT COALESCE(SUM(amount_units), 0) "
                 "FROM transactions t WHERE t.account_id = a.id) OR transaction_count != (SELECT COUNT(*) "
                 "FROM transactions t WHERE t.account_id = a.id) OR COALESCE(last_transaction_date, '') != "
                 "(SELECT COALESCE(MAX(date), '') FROM transactions t WHERE t.account_id = a.id)") == 0,
           "an account's derived values differ from its transactions");
    expect(Count("SELECT COUNT(*) FROM coordinations WHERE status != 'completed'") == 0,
           "a coordination is unfinished");
    expect(Count("SELECT COUNT(*) FROM dead_letters") == 0, "dead letters");
    auto keys = blobs_->List();
    for (const auto& b : keys.ok() ? *keys : std::vector<BlobEntry>{}) {
      expect(Count("SELECT COUNT(*) FROM files WHERE blob_key = ?", {b.key}) == 1,
             "blob without its file: " + b.key);
    }
    return v;
  }

 private:
  fs::path dir_;
  SimulatedClock clock_{1'700'000'000'000};
  RandomIdGenerator ids_;
  Metrics metrics_;
  std::unique_ptr<SqliteDatabase> real_;
  std::unique_ptr<FsBlobStore> blobs_;
  std::unique_ptr<FaultyDatabase> faulty_;
  std::unique_ptr<ChaosBus> chaos_;
  std::unique_ptr<InProcessBus> real_bus_;
  EventBus* bus_ = nullptr;
  std::unique_ptr<Outbox> outbox_;
  std::unique_ptr<CoordinationDriver> driver_;
  std::unique_ptr<AnalyticsConsumer> analytics_;
  std::unique_ptr<CategorizationConsumer> categorization_;
  std::unique_ptr<WebhookTarget> webhooks_;
};

// The same workload for every scenario: two users, three accounts, ten files, six deletions
// (some requested twice), consumers that complete, fail and stay silent.
ConsumerFaults WorkloadFaults() {
  return ConsumerFaults({{kAnalyticsConsumer, FaultMode::kFail, 25},
                         {kCategorizationConsumer, FaultMode::kSilent, 20}});
}

std::vector<Imported> RunWorkload(Scenario& s, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<Imported> files;
  const char* accounts[][2] = {{"alice", "acc-a1"}, {"alice", "acc-a2"}, {"bob", "acc-b1"}};
  for (int i = 0; i < 10; ++i) {
    const auto& a = accounts[i % 3];
    files.push_back(s.Import(a[0], a[1], 1 + static_cast<int>(rng() % 12), rng));
    if (i >= 3 && i % 2 == 1) s.RequestDeletion(files[static_cast<size_t>(i - 2)]);
  }
  for (size_t i : {0u, 2u, 9u}) s.RequestDeletion(files[i]);
  s.RequestDeletion(files[0]);  // a second request: same coordination
  return files;
}

fs::path TempDir(const std::string& what) {
  return fs::temp_directory_path() / ("lastcall-fault-" + what + "-" + RandomHex(6));
}

std::string Join(const std::vector<std::string>& v) {
  std::string out;
  for (const auto& s : v) out += "\n  " + s;
  return out;
}

struct FaultCase {
  WriteFault mode;
  int64_t first;
  int64_t every;
};

std::string Name(const ::testing::TestParamInfo<FaultCase>& info) {
  return std::string(info.param.mode == WriteFault::kFailUnit ? "FailUnit" : "LostAck") +
         std::to_string(info.param.first) + (info.param.every ? "Every" + std::to_string(info.param.every) : "");
}

class FaultInjectionTest : public ::testing::TestWithParam<FaultCase> {};

TEST_P(FaultInjectionTest, EveryAcceptedDeletionFinishesExactlyOnce) {
  const FaultCase c = GetParam();
  ConsumerFaults faults = WorkloadFaults();
  Scenario s(TempDir("db"),
             [&](Database& inner) { return std::make_unique<FaultyDatabase>(inner, c.mode, c.first, c.every); },
             -1, faults);
  std::vector<Imported> files = RunWorkload(s, static_cast<uint32_t>(c.first * 31 + c.every));
  ASSERT_TRUE(s.Settle()) << "work did not settle";
  EXPECT_GE(s.faulty()->units(), c.first) << "the scenario never reached the faulty unit";
  EXPECT_GE(s.faulty()->injected(), 1);
  std::vector<std::string> v = s.Violations(files, faults, /*archive_exact=*/true);
  EXPECT_TRUE(v.empty()) << v.size() << " violations:" << Join(v);
}

std::vector<FaultCase> Sweep() {
  std::vector<FaultCase> out;
  // The scenario writes about 40 units before it settles; every position fails once.
  for (WriteFault m : {WriteFault::kFailUnit, WriteFault::kLostAck}) {
    for (int64_t n = 1; n <= 40; ++n) out.push_back({m, n, 0});
    for (int64_t every : {2, 3, 5, 7}) out.push_back({m, 1, every});
  }
  return out;
}

INSTANTIATE_TEST_SUITE_P(Sweep, FaultInjectionTest, ::testing::ValuesIn(Sweep()), Name);

class ChaosBusTest : public ::testing::TestWithParam<int> {};

TEST_P(ChaosBusTest, DuplicatedAndReorderedDeliveriesChangeNothing) {
  ConsumerFaults faults = WorkloadFaults();
  Scenario s(TempDir("bus"), [](Database&) { return nullptr; }, GetParam(), faults);
  std::vector<Imported> files = RunWorkload(s, static_cast<uint32_t>(GetParam()));
  ASSERT_TRUE(s.Settle()) << "work did not settle";
  EXPECT_GT(s.chaos()->duplicates(), 0);
  EXPECT_GT(s.chaos()->out_of_order(), 0);
  // Every handler must be idempotent per event id (bus/event_bus.h): a redelivery is no error.
  std::vector<std::string> failed = s.chaos()->failures();
  EXPECT_TRUE(failed.empty()) << failed.size() << " failed deliveries:" << Join(failed);
  // Reordering within a target can hand analytics a file's delete request before its upload: the
  // archive may then be empty, but never duplicated or wrong.
  std::vector<std::string> v = s.Violations(files, faults, /*archive_exact=*/false);
  EXPECT_TRUE(v.empty()) << v.size() << " violations:" << Join(v);
}

INSTANTIATE_TEST_SUITE_P(Seeds, ChaosBusTest, ::testing::Range(1, 21));

// The doubles themselves: they inject what they say.
TEST(FaultyDatabaseTest, FailsExactlyTheChosenUnits) {
  fs::path dir = TempDir("self");
  fs::create_directories(dir);
  {
    auto real = std::move(SqliteDatabase::Open({(dir / "db").string(), "NORMAL"})).value();
    ASSERT_TRUE(real->WriteSync([](SqlTx& tx) {
                      auto r = tx.Exec("CREATE TABLE t (n INTEGER)");
                      return r.ok() ? Status::Ok() : r.status();
                    }).ok());
    FaultyDatabase failing(*real, WriteFault::kFailUnit, 2, 3);
    FaultyDatabase lost(*real, WriteFault::kLostAck, 1);
    std::vector<bool> ok;
    for (int i = 1; i <= 6; ++i) {
      ok.push_back(failing.WriteSync([i](SqlTx& tx) {
                            auto r = tx.Exec("INSERT INTO t (n) VALUES (?)", {int64_t{i}});
                            return r.ok() ? Status::Ok() : r.status();
                          }).ok());
    }
    EXPECT_EQ(ok, (std::vector<bool>{true, false, true, true, false, true}));
    EXPECT_EQ(testing::CountRows(*real, "SELECT COUNT(*) FROM t"), 4);  // failed units rolled back
    EXPECT_FALSE(lost.WriteSync([](SqlTx& tx) {
                       auto r = tx.Exec("INSERT INTO t (n) VALUES (100)");
                       return r.ok() ? Status::Ok() : r.status();
                     }).ok());
    EXPECT_EQ(testing::CountRows(*real, "SELECT COUNT(*) FROM t WHERE n = 100"), 1);  // committed
    EXPECT_EQ(failing.injected(), 2);
    EXPECT_EQ(lost.injected(), 1);
    real->Close();
  }
  fs::remove_all(dir);
}

}  // namespace
}  // namespace lastcall
