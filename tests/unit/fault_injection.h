// Test doubles for faults a SIGKILL cannot produce (tests/unit/fault_injection_test.cc):
//  - FaultyDatabase forwards to a real Database and fails chosen write units: either the unit's
//    effects are rolled back and its caller told so (kFailUnit), or the unit commits and its
//    caller is told it failed (kLostAck: a commit whose answer was lost).
//  - ChaosBus is an EventBus that delivers the outbox to the targets its rules select in a random
//    order (across targets and within one), and redelivers events a second time, sometimes past
//    the processed(target, event_id) record, so the handlers' own idempotency is exercised too.
// Both record what they did, so a test can say how many faults it injected.
#pragma once

#include <atomic>
#include <condition_variable>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <thread>

#include "bus/delivery.h"
#include "bus/event_bus.h"
#include "store/sql.h"

namespace lastcall::testing {

enum class WriteFault { kFailUnit, kLostAck };

class FaultyDatabase : public Database {
 public:
  // Fails write unit number `first` (1-based, counting every Write on this object), and then
  // every `every`-th unit after it when every > 0.
  FaultyDatabase(Database& inner, WriteFault mode, int64_t first, int64_t every = 0)
      : inner_(inner), mode_(mode), first_(first), every_(every) {}

  void Write(WriteFn fn, WriteDone done) override {
    int64_t n = ++units_;
    bool fail = n == first_ || (every_ > 0 && n > first_ && (n - first_) % every_ == 0);
    if (!fail) {
      inner_.Write(std::move(fn), std::move(done));
      return;
    }
    ++injected_;
    if (mode_ == WriteFault::kFailUnit) {
      // The unit runs (its writes happen), then fails: all of it must roll back.
      inner_.Write(
          [fn = std::move(fn)](SqlTx& tx) -> Status {
            Status st = fn(tx);
            (void)st;
            return Status::Unavailable("injected: write unit failed");
          },
          std::move(done));
    } else {
      inner_.Write(std::move(fn), [done = std::move(done)](Status st) {
        done(st.ok() ? Status::Unavailable("injected: commit answer lost") : st);
      });
    }
  }
  Status Read(const ReadFn& fn) override { return inner_.Read(fn); }
  void Close() override { inner_.Close(); }

  int64_t units() const { return units_.load(); }
  int64_t injected() const { return injected_.load(); }

 private:
  Database& inner_;
  WriteFault mode_;
  int64_t first_;
  int64_t every_;
  std::atomic<int64_t> units_{0};
  std::atomic<int64_t> injected_{0};
};

class ChaosBus : public EventBus {
 public:
  // dup_percent: the share of deliveries that are delivered again later; half of those
  // redeliveries skip the processed check (a broker and a lost processed record at once).
  ChaosBus(Database& db, uint64_t seed, int dup_percent) : db_(db), rng_(seed), dup_(dup_percent) {}
  ~ChaosBus() override { Stop(); }

  void AddTarget(const std::string& target, EventHandler* handler) override { handlers_[target] = handler; }
  void AddRule(const Rule& rule) override { rules_.push_back(rule); }
  // Not asked of this double: the flows it drives read their state from the store directly.
  Result<int64_t> Backlog(SqlTx&, const std::string&) override {
    return Status::Unavailable("ChaosBus keeps no backlog");
  }
  // Not asked either: nothing prunes under this double.
  Result<std::vector<OutboxEventRef>> Finished(SqlTx&, WallMillis, WallMillis, int) override {
    return Status::Unavailable("ChaosBus does not tell which events are finished");
  }
  Status Start() override {
    thread_ = std::thread([this] { Loop(); });
    return Status::Ok();
  }
  void Notify() override {
    std::lock_guard<std::mutex> l(mu_);
    dirty_ = true;
    cv_.notify_one();
  }
  void Stop() override {
    {
      std::lock_guard<std::mutex> l(mu_);
      stopping_ = true;
    }
    cv_.notify_all();
    if (thread_.joinable()) thread_.join();
  }

  // True when every event read so far has been delivered (and redelivered) to every target.
  bool Idle() const { return idle_.load(); }
  int64_t deliveries() const { return deliveries_.load(); }
  int64_t duplicates() const { return duplicates_.load(); }
  int64_t out_of_order() const { return out_of_order_.load(); }

 private:
  struct Pending {
    std::string target;
    CloudEvent event;
    bool bypass_processed = false;
  };

  void ReadNew() {
    (void)db_.Read([&](SqlTx& tx) {
      return tx.Query(std::string("SELECT ") + kOutboxEventColumns + " FROM outbox WHERE seq > ? ORDER BY seq",
                      {last_seq_}, [&](const SqlRow& r) {
                        CloudEvent e = EventFromOutboxRow(r);
                        last_seq_ = e.seq;
                        std::set<std::string> targets;
                        for (const Rule& rule : rules_) {
                          if (rule.pattern.Matches(e)) targets.insert(rule.targets.begin(), rule.targets.end());
                        }
                        for (const auto& t : targets) pending_.push_back({t, e, false});
                        return true;
                      });
    });
  }

  // Delivers one pending (target, event), chosen at random. Returns false when none is pending.
  bool DeliverOne() {
    if (pending_.empty()) return false;
    size_t i = std::uniform_int_distribution<size_t>(0, pending_.size() - 1)(rng_);
    if (i != 0) ++out_of_order_;
    Pending p = std::move(pending_[i]);
    pending_.erase(pending_.begin() + static_cast<std::ptrdiff_t>(i));
    EventHandler* h = handlers_[p.target];
    Status st = db_.WriteSync([&](SqlTx& tx) -> Status {
      if (!p.bypass_processed) {
        auto seen = tx.QueryOne("SELECT 1 FROM processed WHERE target = ? AND event_id = ?",
                                {p.target, p.event.id});
        if (!seen.ok()) return seen.status();
        if (*seen) return Status::Ok();
      }
      LASTCALL_RETURN_IF_ERROR(h->Handle(p.event, tx));
      auto rec = tx.Exec(
          "INSERT INTO processed (target, event_id, processed_at) VALUES (?, ?, 0) "
          "ON CONFLICT (target, event_id) DO NOTHING",
          {p.target, p.event.id});
      return rec.ok() ? Status::Ok() : rec.status();
    });
    if (!st.ok()) {
      {
        std::lock_guard<std::mutex> l(failures_mu_);
        failures_.push_back(p.target + " " + p.event.type + ": " + st.ToString());
      }
      ++attempts_[p.target + p.event.id];
      if (attempts_[p.target + p.event.id] < 20) pending_.push_back(std::move(p));  // retried later
      return true;
    }
    ++deliveries_;
    if (!p.bypass_processed && std::uniform_int_distribution<int>(0, 99)(rng_) < dup_) {
      ++duplicates_;
      p.bypass_processed = std::uniform_int_distribution<int>(0, 1)(rng_) == 1;
      pending_.push_back(std::move(p));
    }
    return true;
  }

  void Loop() {
    for (;;) {
      {
        std::unique_lock<std::mutex> l(mu_);
        if (stopping_) return;
        dirty_ = false;
      }
      ReadNew();
      // Let several events accumulate before choosing among them: more reordering.
      bool worked = false;
      for (int k = 0; k < 3 && DeliverOne(); ++k) worked = true;
      idle_ = !worked && pending_.empty();
      if (worked) continue;
      std::unique_lock<std::mutex> l(mu_);
      cv_.wait_for(l, std::chrono::milliseconds(20), [&] { return dirty_ || stopping_; });
    }
  }

 public:
  // Deliveries whose handler failed (each is retried, up to 20 times). Thread-safe.
  std::vector<std::string> failures() const {
    std::lock_guard<std::mutex> l(failures_mu_);
    return failures_;
  }

 private:
  Database& db_;
  std::mt19937_64 rng_;
  int dup_;
  std::map<std::string, EventHandler*> handlers_;
  std::vector<Rule> rules_;
  std::vector<Pending> pending_;          // bus thread only
  std::map<std::string, int> attempts_;   // bus thread only
  mutable std::mutex failures_mu_;
  std::vector<std::string> failures_;     // guarded by failures_mu_
  int64_t last_seq_ = 0;                  // bus thread only
  std::atomic<bool> idle_{false};
  std::atomic<int64_t> deliveries_{0}, duplicates_{0}, out_of_order_{0};
  std::mutex mu_;
  std::condition_variable cv_;
  bool dirty_ = false;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace lastcall::testing
