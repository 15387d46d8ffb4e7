// Running one stored event through one target's handler again, on an operator's request (a dead
// letter's replay). Implemented by the bus that owns the handlers.
#pragma once

#include <string>

#include "common/status.h"
#include "domain/events.h"
#include "store/sql.h"

namespace lastcall {

class EventReplayer {
 public:
  virtual ~EventReplayer() = default;
  // Inside tx (a write unit): hands e to target's handler and records processed(target, e.id),
  // unless that record exists already (then nothing happens). Errors: kNotFound "no such
  // target"; the handler's own error (its effects rolled back). Thread: the writer's.
  virtual Status ReplayEvent(const std::string& target, const CloudEvent& e, SqlTx& tx) = 0;
};

}  // namespace lastcall
