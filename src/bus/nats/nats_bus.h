// The scale-out bus: NATS JetStream carries the events, the store keeps the truth.
//
// Relay. One thread per node; the node holding the relay lease (a row of bus_leases, renewed
// every round, taken over by another node relay_lease_ms after its holder stops) relays, so the
// stream receives the events in outbox order even with many nodes. It claims outbox rows not yet
// relayed (relayed_at IS NULL; with FOR UPDATE SKIP LOCKED on PostgreSQL, so even two holders in
// a lease hand-over claim disjoint rows), stamps relayed_at in that short transaction, and then
// publishes each event to the stream on subject <subject_prefix><type> with Nats-Msg-Id = the
// event id, so a publish repeated within the stream's duplicate window is stored once. A round's
// publishes go out without waiting for each ack (PublishInOrder), chained so that none is stored
// after one that failed; the rows from the first failure on are put back (relayed_at = NULL).
//
// A JetStream ack is never taken as durable (a server acknowledges before its disk has the
// message, and a lost store loses everything). The relay thread also re-checks rows relayed more
// than republish_after_ms ago and not yet settled: a row whose every target (by the rules) has
// recorded it, as processed or as a dead letter, becomes settled and is never looked at again;
// any other row is published again. Losing the whole NATS store costs latency, never an event.
//
// Delivery. Each target is one durable pull consumer (named after the target, shared by every
// node) with explicit acks and MaxAckPending = batch. One node at a time fetches for a target: the
// holder of the target's lease (a row of bus_leases named "nats-target:<target>", renewed in the
// same write unit that commits a batch, so a node that lost the lease commits nothing: the store
// fences it). It fetches up to `batch` messages and handles them, in stream order, in ONE write
// unit: one query for what the store already knows of them (processed, dead-lettered, pruned),
// then per event processed(target, event id) and the handler's effects (DeliverInTx), and the
// whole batch is acked after the commit. The events run without a savepoint each (two round
// trips saved per event); when a handler fails, the unit is rolled back and the batch redone with
// a savepoint per event, so that the events before the failed one commit. Its filter subject is
// the narrowest one subject that covers its rules (nats-server 2.9 takes one); the rules
// themselves are matched here and anything else is acked unhandled.
//
// Order. A target sees its events in stream order, as with the in-process bus, across nodes and
// failures: only the lease holder fetches; when an event's handler fails, the events before it
// commit and are acked, and the holder keeps the failed event and those after it, retries the
// failed one itself after a jittered delay (extending their ack deadlines with InProgress), so no
// later event overtakes it; after max_deliver attempts (the deliveries earlier holders made count)
// it is dead-lettered (dead_letters, then acked) and the holder moves on. A node that takes a lease
// (a first start, a holder that died or stopped, or its own lease after it lapsed) first waits
// until what the previous holder may still hold comes back: fetch_wait after taking it (a pull the
// old holder sent before its lease ran out), then, when the consumer still has unacked messages,
// until AckWait has passed. nats-server redelivers those before any new message (consumer.go
// getNextMsg serves the redelivery queue first). A holder that loses its lease naks what it holds.
// A copy of an event already processed or dead-lettered for the target is acked without running
// the handler, also inside one batch; so is a copy of an event whose outbox row retention pruned
// (bus/retention.h: only settled rows go).
//
// A lease is judged by each node's wall clock (expires_at): nodes' clocks must agree to well
// within relay_lease_ms, as for the relay.
//
// Start creates or updates the stream and the consumers (idempotent; every node does it) and
// fails when NATS cannot be reached. Later, a consumer or stream that disappeared (a server that
// lost its store) is created again by whichever thread notices.
#pragma once

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "bus/event_bus.h"
#include "bus/replayer.h"
#include "common/clock.h"
#include "common/ids.h"

struct __natsConnection;
struct __jsCtx;
struct __natsMsg;
struct jsPubAckErr;

namespace lastcall {

struct NatsBusOptions {
  std::string url;  // nats://host:port, a comma list for a cluster; may carry user:password@
  std::string stream = "LASTCALL_EVENTS";
  std::string subject_prefix = "lastcall.events.";
  int replicas = 1;                             // stream replicas (3 on a three-server cluster)
  int64_t ack_wait_ms = 30000;                  // a holder silent longer: its messages redelivered
  int max_deliver = 8;                          // attempts per event; then dead-lettered
  int64_t retry_base_ms = 100;                  // delay before retrying a failed handler:
  int64_t retry_cap_ms = 30000;                 //   jittered, doubling from base up to cap
  int batch = 256;                              // events per fetch and write unit (MaxAckPending)
  int64_t republish_after_ms = 120000;          // unsettled this long after a publish: again
  int64_t duplicate_window_ms = 120000;         // the stream's Nats-Msg-Id window
  int64_t max_age_ms = 7LL * 24 * 3600 * 1000;  // the stream keeps messages this long
  int relay_batch = 256;                        // rows per relay claim
  int64_t relay_lease_ms = 10000;               // a relay or target lease holder that stops
                                                //   renewing is replaced after this
  std::string node_id;                          // lease holder id, stable across restarts of a
                                                //   node (empty: random, for tests)
  int64_t fetch_wait_ms = 500;                  // one pull's wait (bounds Stop's latency)
};

// The servers of a LASTCALL_NATS_URL value: split at commas, each trimmed of spaces; an empty
// item stays (an empty string), so a caller can refuse "a,,b". A single URL gives one item.
std::vector<std::string> SplitNatsUrls(const std::string& list);

class NatsBus : public EventBus, public EventReplayer {
 public:
  NatsBus(Database& db, Clock& clock, IdGenerator& ids, Metrics& metrics, NatsBusOptions options);
  ~NatsBus() override;

  void AddTarget(const std::string& target, EventHandler* handler) override;
  void AddRule(const Rule& rule) override;
  // Connects, creates or updates the stream and one consumer per target, starts the relay and
  // one delivery thread per target. Errors: kUnavailable when NATS cannot be reached or refuses
  // the stream or a consumer; kInternal for a target without a handler.
  Status Start() override;
  void Notify() override;
  void Stop() override;
  // The outbox events not settled whose rules select target and that target has not recorded
  // (processed or dead-lettered).
  Result<int64_t> Backlog(SqlTx& tx, const std::string& target) override;
  // Settled events (every target recorded them as processed or dead-lettered), oldest settled
  // first. A copy that reaches a target after its row was pruned is acked as a duplicate.
  Result<std::vector<OutboxEventRef>> Finished(SqlTx& tx, WallMillis finished_before,
                                               WallMillis implausible_after, int limit) override;
  // The duplicate window plus AckWait and a bound on every redelivery: the latest a copy of a
  // settled event can still be delivered while its stream message is pending redelivery.
  int64_t RedeliveryHorizonMs() const override;

  // One relay round and one re-check round, as the relay thread runs them (for tests and
  // tools). *published / *republished count the events handed to NATS. Thread-safe.
  Status RelayOnce(int* published);
  Status RecheckOnce(int* republished, int* settled);

  // The subject of an event type, and the one filter subject that covers every pattern.
  static std::string SubjectFor(const std::string& prefix, const std::string& type);
  static std::string FilterFor(const std::string& prefix, const std::vector<EventPattern>& patterns);

  // Delivery failures so far (handler errors and failed units). Thread-safe.
  uint64_t failures() const;

  // A dead letter's replay (EventReplayer): runs target's handler in tx like a delivery.
  Status ReplayEvent(const std::string& target, const CloudEvent& e, SqlTx& tx) override;

 private:
  struct Target {
    std::string name;
    EventHandler* handler = nullptr;
    std::vector<EventPattern> patterns;
    std::string filter;
    std::thread thread;
  };
  // A fetched message the lease holder keeps until it is acked (or handed back with a nak).
  struct Held {
    __natsMsg* msg = nullptr;  // owned
    bool event_ok = false;     // false: not a CloudEvent (terminated, never handled)
    CloudEvent event;
    bool wanted = false;       // a rule of the target selects it
    int delivered = 1;         // JetStream's delivery count
  };
  // What one target's fetcher knows between rounds (its thread only).
  struct Fetcher {
    bool leading = false;
    std::chrono::steady_clock::time_point valid_until;  // stop acting before this (lease)
    std::chrono::steady_clock::time_point renew_due;
    std::chrono::steady_clock::time_point taken;        // when this node took the lease
    std::chrono::steady_clock::time_point fetch_after;  // the hand-over wait
    bool handover_checked = false;
    std::vector<Held> held;      // in stream order; held[0] is the head
    int head_failures = 0;       // failed attempts of held[0] on this node
    std::string head_error;
    bool solo = false;           // a whole unit failed: try the head alone next
    bool careful = false;        // a savepoint per event (after a handler failed without one)
    std::chrono::steady_clock::time_point retry_at;
    std::chrono::steady_clock::time_point progress_due;  // next InProgress for held messages
  };
  bool Wants(const Target& t, const CloudEvent& e) const;
  bool Routed(const CloudEvent& e) const;
  Status EnsureTopology();
  // Takes or renews the lease `name` (bus_leases) for this node; false: another node holds it.
  Result<bool> HoldLease(const std::string& name, int64_t lease_ms);
  Status Publish(const CloudEvent& e);
  // Publishes events in order, one PubAck wait each; rows of those that did not reach NATS are
  // put back. For events that may be in the stream already (the recheck's).
  Status PublishClaimed(const std::vector<CloudEvent>& events, int* published);
  // The relay's fresh events (outbox order): published without waiting for each PubAck, then
  // all waited for at once. Each but the first expects the one before it to be the stream's last
  // message (Nats-Expected-Last-Msg-Id), so after a failed publish the stream refuses every later
  // one of the round: the rows from the first failure on are put back and go out again in order,
  // never overtaking it. Returns the first failure.
  Status PublishInOrder(const std::vector<CloudEvent>& events, int* published);
  // Puts the rows of events back in the outbox's unrelayed set (logged on failure).
  void PutBack(const std::vector<CloudEvent>& events, size_t from);
  // cnats's asynchronous publish error callback (its own thread): records the failed seq.
  static void OnPublishError(__jsCtx* js, ::jsPubAckErr* pae, void* closure);
  void RelayLoop();
  void TargetLoop(Target* t);
  // Handles f->held from the head in one write unit; acks what committed. False when this node
  // found it no longer holds the target's lease (the held messages were handed back).
  bool HandleHeld(Target& t, Fetcher* f);
  // Naks and drops every held message (another holder gets them first).
  void HandBack(Fetcher* f);
  // Sleeps up to ms unless Stop is called; returns false when stopping.
  bool Pause(int64_t ms);
  bool stopping() const;

  Database& db_;
  Clock& clock_;
  IdGenerator& ids_;
  Metrics& metrics_;
  NatsBusOptions options_;
  std::string node_id_;          // this bus's holder id in bus_leases
  std::vector<Target> targets_;  // fixed after Start
  __natsConnection* conn_ = nullptr;
  __jsCtx* js_ = nullptr;        // thread-safe (cnats): shared by the relay and the targets
  std::mutex topology_mu_;       // one EnsureTopology at a time; held while the relay and the
                                 // recheck publish, so a recreated stream is refilled in order
  std::mutex publish_mu_;
  std::vector<int64_t> publish_failed_;  // guarded by publish_mu_: seqs OnPublishError reported
  std::string publish_error_;            // guarded by publish_mu_: the first of their errors

  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool dirty_ = false;     // guarded by mu_
  bool stopping_ = false;  // guarded by mu_
  uint64_t failures_ = 0;  // guarded by mu_
  std::mt19937_64 rng_;    // guarded by mu_
  std::thread relay_thread_;
};

}  // namespace lastcall
