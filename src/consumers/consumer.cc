#include "consumers/consumer.h"

#include "common/log.h"

namespace lastcall {

Status CompleteAfter(SqlTx& tx, Outbox& outbox, Clock& clock, IdGenerator& ids,
                     const std::string& consumer, const CloudEvent& request,
                     const std::function<WorkResult()>& work, FaultMode fault) {
  std::string coordination_id = request.data.value("coordinationId", std::string());
  std::string file_id = request.data.value("fileId", std::string());
  if (fault == FaultMode::kSilent) {
    log::Warn("test fault: consumer stays silent", {{"consumer", consumer},
                                                    {"coordinationId", coordination_id},
                                                    {"fileId", file_id}});
    return Status::Ok();
  }
  auto sp = tx.Exec("SAVEPOINT consumer_work");
  if (!sp.ok()) return sp.status();
  WorkResult r = fault == FaultMode::kFail
                     ? WorkResult(Status::Unavailable("injected failure (LASTCALL_TEST_CONSUMER_FAULTS)"))
                     : work();
  std::string status = "completed";
  nlohmann::json detail;
  if (r.ok()) {
    detail = r.value();
  } else {
    (void)tx.Exec("ROLLBACK TO consumer_work");
    status = "failed";
    detail = {{"reason", r.status().message()}};
    log::Warn("consumer processing failed; reporting failure", {{"consumer", consumer},
                                                               {"coordinationId", coordination_id},
                                                               {"fileId", file_id},
                                                               {"error", r.status().ToString()}});
  }
  auto rel = tx.Exec("RELEASE consumer_work");
  if (!rel.ok()) return rel.status();
  return PublishCompletion(tx, outbox, clock, ids, consumer, coordination_id, status, detail);
}

Status PublishCompletion(SqlTx& tx, Outbox& outbox, Clock& clock, IdGenerator& ids,
                         const std::string& consumer, const std::string& coordination_id,
                         const std::string& status, const nlohmann::json& detail) {
  WallMillis now = clock.Now();
  CloudEvent e = MakeEvent(ids, std::string(kConsumerSourcePrefix) + consumer,
                           kConsumerCompletion, "coordinations/" + coordination_id, now,
                           {{"coordinationId", coordination_id},
                            {"consumer", consumer},
                            {"status", status},
                            {"detail", detail}});
  return outbox.Append(tx, e, now);
}

}  // namespace lastcall
