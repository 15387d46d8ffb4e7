#include "webhooks/consumer_repo.h"

namespace lastcall {
namespace {

constexpr char kConsumerColumns[] =
    "name, url, priority, timeout_ms, heartbeat_ms, can_veto, secret, previous_secret, "
    "previous_secret_until, token_hash, created_at, last_heartbeat_at, last_delivery_at, "
    "last_delivery_result, failures";

WebhookConsumer ConsumerFromRow(const SqlRow& r) {
  WebhookConsumer c;
  c.name = r.Text(0);
  c.url = r.Text(1);
  c.priority = ParseConsumerPriority(r.Text(2)).value_or(ConsumerPriority::kCritical);
  c.timeout_ms = r.Int(3);
  c.heartbeat_ms = r.Int(4);
  c.can_veto = r.Int(5) != 0;
  c.secret = r.Text(6);
  c.previous_secret = r.OptText(7);
  c.previous_secret_until = r.OptInt(8);
  c.token_hash = r.Text(9);
  c.created_at = r.Int(10);
  c.last_heartbeat_at = r.Int(11);
  c.last_delivery_at = r.OptInt(12);
  c.last_delivery_result = r.OptText(13);
  c.failures = r.Int(14);
  return c;
}

Result<std::optional<WebhookConsumer>> FindBy(SqlTx& tx, const char* column,
                                              const std::string& value) {
  auto row = tx.QueryOne(std::string("SELECT ") + kConsumerColumns +
                             " FROM webhook_consumers WHERE " + column + " = ?",
                         {value});
  if (!row.ok()) return row.status();
  if (!*row) return std::optional<WebhookConsumer>();
  return std::optional<WebhookConsumer>(ConsumerFromRow(**row));
}

constexpr char kDeliveryColumns[] =
    "id, consumer, event_id, event_seq, coordination_id, body, status, attempts, "
    "next_attempt_at, last_error, created_at";

WebhookDelivery DeliveryFromRow(const SqlRow& r) {
  WebhookDelivery d;
  d.id = r.Text(0);
  d.consumer = r.Text(1);
  d.event_id = r.Text(2);
  d.event_seq = r.Int(3);
  d.coordination_id = r.OptText(4);
  d.body = r.Text(5);
  d.status = r.Text(6);
  d.attempts = r.Int(7);
  d.next_attempt_at = r.Int(8);
  d.last_error = r.OptText(9);
  d.created_at = r.Int(10);
  return d;
}

SqlValue OptText(const std::optional<std::string>& v) {
  return v ? SqlValue(*v) : SqlValue(SqlNull{});
}

}  // namespace

std::vector<std::string> WebhookConsumer::SigningSecrets(WallMillis now) const {
  std::vector<std::string> out{secret};
  if (previous_secret && previous_secret_until && now < *previous_secret_until) {
    out.push_back(*previous_secret);
  }
  return out;
}

Status InsertWebhookConsumer(SqlTx& tx, const WebhookConsumer& c) {
  auto existing = tx.QueryOne("SELECT 1 FROM webhook_consumers WHERE name = ?", {c.name});
  if (!existing.ok()) return existing.status();
  if (*existing) {
    return Status::Conflict("consumer_exists", "a consumer named " + c.name + " is registered");
  }
  auto r = tx.Exec(std::string("INSERT INTO webhook_consumers (") + kConsumerColumns +
                       ") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                   {c.name, c.url, std::string(ToString(c.priority)), c.timeout_ms, c.heartbeat_ms,
                    static_cast<int64_t>(c.can_veto ? 1 : 0), c.secret, OptText(c.previous_secret),
                    c.previous_secret_until ? SqlValue(*c.previous_secret_until) : SqlValue(SqlNull{}),
                    c.token_hash, c.created_at, c.last_heartbeat_at,
                    c.last_delivery_at ? SqlValue(*c.last_delivery_at) : SqlValue(SqlNull{}),
                    OptText(c.last_delivery_result), c.failures});
  return r.ok() ? Status::Ok() : r.status();
}

Result<std::optional<WebhookConsumer>> FindWebhookConsumer(SqlTx& tx, const std::string& name) {
  return FindBy(tx, "name", name);
}

Result<std::optional<WebhookConsumer>> FindWebhookConsumerByToken(SqlTx& tx,
                                                                  const std::string& token_hash) {
  return FindBy(tx, "token_hash", token_hash);
}

Result<std::vector<WebhookConsumer>> ListWebhookConsumers(SqlTx& tx) {
  std::vector<WebhookConsumer> out;
  Status st = tx.Query(std::string("SELECT ") + kConsumerColumns +
                           " FROM webhook_consumers ORDER BY name",
                       {}, [&](const SqlRow& r) {
                         out.push_back(ConsumerFromRow(r));
                         return true;
                       });
  if (!st.ok()) return st;
  return out;
}

Result<bool> DeleteWebhookConsumer(SqlTx& tx, const std::string& name, WallMillis now) {
  auto r = tx.Exec("DELETE FROM webhook_consumers WHERE name = ?", {name});
  if (!r.ok()) return r.status();
  if (*r == 0) return false;
  auto c = tx.Exec(
      "UPDATE webhook_deliveries SET status = ?, last_error = ?, next_attempt_at = ? "
      "WHERE consumer = ? AND status = ?",
      {std::string(kDeliveryCancelled), std::string("consumer deregistered"), now, name,
       std::string(kDeliveryPending)});
  if (!c.ok()) return c.status();
  return true;
}

Status RecordHeartbeat(SqlTx& tx, const std::string& name, WallMillis now) {
  auto r = tx.Exec("UPDATE webhook_consumers SET last_heartbeat_at = ? WHERE name = ?", {now, name});
  if (!r.ok()) return r.status();
  if (*r == 0) return Status::NotFound("consumer " + name + " not found");
  return Status::Ok();
}

Status RotateWebhookSecret(SqlTx& tx, const std::string& name, const std::string& new_secret,
                           WallMillis previous_until) {
  auto r = tx.Exec(
      "UPDATE webhook_consumers SET previous_secret = secret, previous_secret_until = ?, "
      "secret = ? WHERE name = ?",
      {previous_until, new_secret, name});
  if (!r.ok()) return r.status();
  if (*r == 0) return Status::NotFound("consumer " + name + " not found");
  return Status::Ok();
}

Result<std::vector<ConsumerPolicy>> HealthyConsumerPolicies(SqlTx& tx, WallMillis now) {
  std::vector<ConsumerPolicy> out;
  Status st = tx.Query(
      "SELECT name, priority, timeout_ms FROM webhook_consumers WHERE last_heartbeat_at + "
      "heartbeat_ms >= ? ORDER BY name",
      {now}, [&](const SqlRow& r) {
        out.push_back({r.Text(0), ParseConsumerPriority(r.Text(1)).value_or(ConsumerPriority::kCritical),
                       r.Int(2)});
        return true;
      });
  if (!st.ok()) return st;
  return out;
}

Result<bool> InsertDelivery(SqlTx& tx, const WebhookDelivery& d) {
  auto r = tx.Exec(std::string("INSERT INTO webhook_deliveries (") + kDeliveryColumns +
                       ") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                       "ON CONFLICT (consumer, event_id) DO NOTHING",
                   {d.id, d.consumer, d.event_id, d.event_seq, OptText(d.coordination_id), d.body,
                    d.status, d.attempts, d.next_attempt_at, OptText(d.last_error), d.created_at});
  if (!r.ok()) return r.status();
  return *r > 0;
}

Result<std::vector<WebhookDelivery>> DueDeliveries(SqlTx& tx, WallMillis now, int limit) {
  std::vector<WebhookDelivery> out;
  Status st = tx.Query(std::string("SELECT ") + kDeliveryColumns +
                           " FROM webhook_deliveries WHERE status = ? AND next_attempt_at <= ? "
                           "ORDER BY next_attempt_at LIMIT ?",
                       {std::string(kDeliveryPending), now, static_cast<int64_t>(limit)},
                       [&](const SqlRow& r) {
                         out.push_back(DeliveryFromRow(r));
                         return true;
                       });
  if (!st.ok()) return st;
  return out;
}

Result<std::optional<WebhookDelivery>> FindDelivery(SqlTx& tx, const std::string& id) {
  auto row = tx.QueryOne(std::string("SELECT ") + kDeliveryColumns +
                             " FROM webhook_deliveries WHERE id = ?",
                         {id});
  if (!row.ok()) return row.status();
  if (!*row) return std::optional<WebhookDelivery>();
  return std::optional<WebhookDelivery>(DeliveryFromRow(**row));
}

Result<std::optional<WallMillis>> NextDeliveryAfter(SqlTx& tx, WallMillis after) {
  auto r = tx.QueryOne(
      "SELECT MIN(next_attempt_at) FROM webhook_deliveries WHERE status = ? AND next_attempt_at > ?",
      {std::string(kDeliveryPending), after});
  if (!r.ok()) return r.status();
  if (!*r || (*r)->IsNull(0)) return std::optional<WallMillis>();
  return std::optional<WallMillis>((*r)->Int(0));
}

Result<int64_t> PendingDeliveries(SqlTx& tx, const std::string& consumer) {
  auto r = tx.QueryOne("SELECT COUNT(*) FROM webhook_deliveries WHERE consumer = ? AND status = ?",
                       {consumer, std::string(kDeliveryPending)});
  if (!r.ok()) return r.status();
  return (*r)->Int(0);
}

}  // namespace lastcall
