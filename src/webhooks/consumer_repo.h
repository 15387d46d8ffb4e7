// Registered webhook consumers and their deliveries in the store (portable SQL, see store/sql.h).
// A consumer is healthy when its last heartbeat (registration counts as one) is at most
// heartbeat_ms old; only healthy consumers are expected by a new coordination.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "common/clock.h"
#include "coordination/coordinator.h"
#include "store/sql.h"

namespace lastcall {

struct WebhookConsumer {
  std::string name;  // a-z, 0-9, _ and -; 1 to 64 characters
  std::string url;
  ConsumerPriority priority = ConsumerPriority::kCritical;
  int64_t timeout_ms = 0;
  int64_t heartbeat_ms = 0;
  bool can_veto = false;  // may answer a deletion with a veto (coordination/driver.h Veto)
  std::string secret;     // whsec_..., signs every webhook
  std::optional<std::string> previous_secret;  // still signs until previous_secret_until
  std::optional<WallMillis> previous_secret_until;
  std::string token_hash;
  WallMillis created_at = 0;
  WallMillis last_heartbeat_at = 0;
  std::optional<WallMillis> last_delivery_at;
  std::optional<std::string> last_delivery_result;
  int64_t failures = 0;  // failed delivery attempts, all time

  bool HealthyAt(WallMillis now) const { return now - last_heartbeat_at <= heartbeat_ms; }
  // The secrets that sign a webhook sent at now: the current one, and the previous one while
  // its overlap lasts.
  std::vector<std::string> SigningSecrets(WallMillis now) const;
};

// Errors: kConflict "consumer_exists" when the name is taken.
Status InsertWebhookConsumer(SqlTx& tx, const WebhookConsumer& c);
Result<std::optional<WebhookConsumer>> FindWebhookConsumer(SqlTx& tx, const std::string& name);
Result<std::optional<WebhookConsumer>> FindWebhookConsumerByToken(SqlTx& tx,
                                                                  const std::string& token_hash);
Result<std::vector<WebhookConsumer>> ListWebhookConsumers(SqlTx& tx);
// Removes the consumer and cancels its pending deliveries. Returns false when there was none.
Result<bool> DeleteWebhookConsumer(SqlTx& tx, const std::string& name, WallMillis now);
Status RecordHeartbeat(SqlTx& tx, const std::string& name, WallMillis now);
// New secret; the old one keeps signing until previous_until.
Status RotateWebhookSecret(SqlTx& tx, const std::string& name, const std::string& new_secret,
                           WallMillis previous_until);
// The policies (priority, timeout) of the consumers healthy at now, by name.
Result<std::vector<ConsumerPolicy>> HealthyConsumerPolicies(SqlTx& tx, WallMillis now);

// ---- deliveries ----
// stored: do not rename
inline constexpr char kDeliveryPending[] = "pending";
inline constexpr char kDeliveryDelivered[] = "delivered";
inline constexpr char kDeliveryDead[] = "dead";
inline constexpr char kDeliveryCancelled[] = "cancelled";

struct WebhookDelivery {
  std::string id;
  std::string consumer;
  std::string event_id;
  int64_t event_seq = 0;
  std::optional<std::string> coordination_id;
  std::string body;  // the CloudEvent, structured JSON, exactly as sent
  std::string status;
  int64_t attempts = 0;
  WallMillis next_attempt_at = 0;
  std::optional<std::string> last_error;
  WallMillis created_at = 0;
};

// Inserts the delivery unless one exists for (consumer, event_id). Returns true when inserted.
Result<bool> InsertDelivery(SqlTx& tx, const WebhookDelivery& d);
// Pending deliveries due at now, earliest first, at most limit.
Result<std::vector<WebhookDelivery>> DueDeliveries(SqlTx& tx, WallMillis now, int limit);
Result<std::optional<WebhookDelivery>> FindDelivery(SqlTx& tx, const std::string& id);
// The earliest next_attempt_at after `after` of a pending delivery (those due by then are being
// attempted already).
Result<std::optional<WallMillis>> NextDeliveryAfter(SqlTx& tx, WallMillis after);
// Pending deliveries per consumer (the "in flight" of GET /consumers).
Result<int64_t> PendingDeliveries(SqlTx& tx, const std::string& consumer);

}  // namespace lastcall
