// The event bus: how an event written to the outbox reaches the handlers that its rules select.
//
// Publishing is always transactional: Outbox::Append writes the event in the caller's transaction,
// so an event exists exactly when the state change that caused it committed. A bus then delivers
// each event to every target whose rule matches it, at least once and in order per target. A target
// handler runs inside a write unit together with the record processed(target, event id): the
// handler's effects and that record commit together, so a redelivery changes nothing.
//
// Implementations: InProcessBus (the embedded default, reading the outbox table) and NatsBus
// (NATS JetStream: relays the outbox with Nats-Msg-Id = event id, one durable consumer per target).
#pragma once

#include <algorithm>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/clock.h"
#include "common/status.h"
#include "domain/events.h"
#include "metrics/metrics.h"
#include "store/sql.h"

namespace lastcall {

// An EventBridge-style pattern: an event matches when its type is one of types (or types is
// empty) and its source starts with one of source_prefixes (or source_prefixes is empty).
struct EventPattern {
  std::vector<std::string> types;
  std::vector<std::string> source_prefixes;
  bool Matches(const CloudEvent& e) const;
};

// A handler of events for one target (a consumer). Called on the bus's thread inside a write
// unit; must be idempotent per event id (the bus also records processed ids). Returning an error
// rolls the handler's effects back and the bus retries the delivery later with backoff; after the
// last attempt the event is dead-lettered for that target.
class EventHandler {
 public:
  virtual ~EventHandler() = default;
  virtual Status Handle(const CloudEvent& event, SqlTx& tx) = 0;
};

// An outbox row, by its position and event id.
struct OutboxEventRef {
  int64_t seq = 0;
  std::string id;
};

struct Rule {
  std::string name;
  EventPattern pattern;
  std::vector<std::string> targets;
};

// Target registration, the same on every bus (EventBus::AddTarget and AddRule): targets is the
// bus's list of a struct with `name`, `handler` (EventHandler*) and `patterns`
// (std::vector<EventPattern>). AddTargetTo sets a target's handler, adding the target when it is
// new; AddRuleTo adds the rule's pattern to each of its targets, adding a target without a handler
// where needed (the bus's Start refuses a target that still has none).
template <typename Target>
void AddTargetTo(std::vector<Target>& targets, const std::string& name, EventHandler* handler) {
  for (auto& t : targets) {
    if (t.name == name) {
      t.handler = handler;
      return;
    }
  }
  Target t;
  t.name = name;
  t.handler = handler;
  targets.push_back(std::move(t));
}

template <typename Target>
void AddRuleTo(std::vector<Target>& targets, const Rule& rule) {
  for (const auto& name : rule.targets) {
    auto it = std::find_if(targets.begin(), targets.end(),
                           [&](const Target& t) { return t.name == name; });
    if (it == targets.end()) {
      AddTargetTo(targets, name, nullptr);
      it = targets.end() - 1;
    }
    it->patterns.push_back(rule.pattern);
  }
}

// Writes events in the caller's transaction and wakes the bus after the commit.
class Outbox {
 public:
  Outbox(Metrics& metrics, std::function<void()> on_commit)
      : metrics_(metrics), on_commit_(std::move(on_commit)) {}
  // Appends e (its id, type, source, subject, time and data must be set). Thread: any writer unit.
  Status Append(SqlTx& tx, const CloudEvent& e, WallMillis now);

 private:
  Metrics& metrics_;
  std::function<void()> on_commit_;
};

class EventBus {
 public:
  virtual ~EventBus() = default;
  // Registers a target's handler. Before Start only. handler must outlive the bus.
  virtual void AddTarget(const std::string& target, EventHandler* handler) = 0;
  virtual void AddRule(const Rule& rule) = 0;
  // Starts delivering (resuming where each target's record stops after a restart).
  virtual Status Start() = 0;
  // Something was appended to the outbox and committed. Thread-safe, cheap, never blocks.
  virtual void Notify() = 0;
  // Stops delivering; returns after the delivery in flight finished. Idempotent.
  virtual void Stop() = 0;
  // How many events in the outbox target has yet to handle, read in tx (the
  // lastcall_outbox_backlog gauge). Thread-safe.
  virtual Result<int64_t> Backlog(SqlTx& tx, const std::string& target) = 0;

  // Retention (bus/retention.h). Up to limit outbox events, oldest first, that no target will
  // ever be handed again and that finished before finished_before (in-process: created before it
  // and passed by every registered target's cursor; NATS: settled, i.e. every target recorded
  // it, before it). Their outbox rows and processed records may then be deleted. A bus may
  // return fewer than every such event; the rest come in a later call. The in-process bus stops
  // at the first event created at or after finished_before, but takes one created after
  // implausible_after as finished in time: such a stamp comes from a clock that has since
  // stepped back, and waiting for the clock to reach it would stop pruning for that long (it
  // needs no retention: passed cursors never hand it again). NATS ignores implausible_after (its
  // redelivery horizon needs the full retention). Read in tx (a write unit). Thread: the
  // writer's; safe while the bus delivers.
  virtual Result<std::vector<OutboxEventRef>> Finished(SqlTx& tx, WallMillis finished_before,
                                                       WallMillis implausible_after,
                                                       int limit) = 0;
  // How long after an event finished the bus may still hand a copy of it to a target (NATS: a
  // redelivery of a message whose ack was lost), so its processed record must stay at least that
  // long. 0: never (the in-process bus reads only past its cursors).
  virtual int64_t RedeliveryHorizonMs() const { return 0; }
};

}  // namespace lastcall
