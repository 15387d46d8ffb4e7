// analytics_consumer: keeps each user's monthly totals (per month and category: sum and count).
//  - file.uploaded: adds the file's transactions to the totals, remembering the file's own
//    contribution so that exactly that can be taken out again.
//  - file.delete_requested: saves the file's contribution as an archived summary that outlives the
//    file (per month and category; no transaction-level data), removes it from the totals, then
//    completes (also when there was nothing to archive).
//  - file.delete_cancelled and file.delete_vetoed: puts back exactly what that coordination
//    archived (the file stays). A veto whose deletion an operator already let proceed again (the
//    file is deletion_requested by that coordination again, or gone) leaves the archive as it is.
#pragma once

#include "consumers/consumer.h"

namespace lastcall {

class AnalyticsConsumer : public EventHandler {
 public:
  // faults: test-only fault injection (LASTCALL_TEST_CONSUMER_FAULTS); none by default.
  AnalyticsConsumer(Outbox& outbox, Clock& clock, IdGenerator& ids, ConsumerFaults faults = {})
      : outbox_(outbox), clock_(clock), ids_(ids), faults_(std::move(faults)) {}
  Status Handle(const CloudEvent& event, SqlTx& tx) override;

 private:
  Status OnUploaded(const CloudEvent& event, SqlTx& tx);
  Status OnCancelled(const CloudEvent& event, SqlTx& tx);
  WorkResult Archive(const CloudEvent& event, SqlTx& tx);
  Outbox& outbox_;
  Clock& clock_;
  IdGenerator& ids_;
  ConsumerFaults faults_;
};

// Archives the file's contribution under coordination_id and takes it out of the monthly totals
// (what file.delete_requested does): also for a vetoed deletion an operator let proceed, whose
// archive the veto had put back. Set-based: at most five statements whatever the number of
// buckets (the DELETE of emptied buckets only when one reaches count 0).
// Returns the number of buckets archived; kUnprocessable "amount_out_of_range" (and nothing
// changed) when a monthly total would leave the 64-bit range.
Result<int64_t> ArchiveFileContribution(SqlTx& tx, const std::string& file_id,
                                        const std::string& coordination_id, WallMillis now);

// Takes a file's contribution out of the monthly totals without archiving it: for the synchronous
// deletion (ENABLE_EVENT_PUBLISHING=false), where no consumer gets a last look, so the totals do not
// keep counting a file that is gone. Set-based like ArchiveFileContribution, with the same errors.
// Returns the number of buckets changed.
Result<int64_t> RemoveFileContribution(SqlTx& tx, const std::string& file_id);

// Adds delta (units, count) to one monthly bucket with checked arithmetic; a bucket that reaches
// count 0 is removed.
Status AddToMonthly(SqlTx& tx, const std::string& user_id, const std::string& month,
                    const std::string& category, int64_t units, int64_t count);

}  // namespace lastcall
