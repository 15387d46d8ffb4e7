// categorization_consumer: gives transactions categories and learns from users' corrections.
//  - file.uploaded: each transaction without a category gets one (ChooseCategory).
//  - file.delete_requested: learns merchant -> category mappings from the file's transactions that
//    the user corrected (PATCH /transactions/{id}), so they outlive the file, then completes (also
//    when there was nothing to learn).
//  - file.delete_cancelled: nothing to undo, so it is not routed here. The mappings it learned
//    come from the user's own corrections, which the file (active again) still carries; the next
//    import would have learned the same, and an earlier mapping of the same merchant was the
//    user's older choice, which the correction replaced on purpose.
#pragma once

#include "consumers/consumer.h"

namespace lastcall {

class CategorizationConsumer : public EventHandler {
 public:
  CategorizationConsumer(Outbox& outbox, Clock& clock, IdGenerator& ids)
      : outbox_(outbox), clock_(clock), ids_(ids) {}
  Status Handle(const CloudEvent& event, SqlTx& tx) override;

 private:
  Status OnUploaded(const CloudEvent& event, SqlTx& tx);
  WorkResult Learn(const CloudEvent& event, SqlTx& tx);
  Outbox& outbox_;
  Clock& clock_;
  IdGenerator& ids_;
};

}  // namespace lastcall
