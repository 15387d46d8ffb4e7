#include "webhooks/consumer_repo.h"

#include "store/row_mapping.h"

namespace lastcall {
namespace {

const RowMapping<WebhookConsumer>& Consumers() {
  using C = WebhookConsumer;
  static const RowMapping<C> m(
      {{"name", &C::name},
       {"url", &C::url},
       {"priority", RowMapping<C>::Custom{
                        [](C& c, const SqlRow& r, size_t i) {
                          c.priority = ParseConsumerPriority(r.Text(i))
                                           .value_or(ConsumerPriority::kCritical);
                        },
                        [](const C& c) { return SqlValue(std::string(ToString(c.priority))); }}},
       {"timeout_ms", &C::timeout_ms},
       {"heartbeat_ms", &C::heartbeat_ms},
       {"can_veto", &C::can_veto},
       {"secret", &C::secret},
       {"previous_secret", &C::previous_secret},
       {"previous_secret_until", &C::previous_secret_until},
       {"token_hash", &C::token_hash},
       {"created_at", &C::created_at},
       {"last_heartbeat_at", &C::last_heartbeat_at},
       {"last_delivery_at", &C::last_delivery_at},
       {"last_delivery_result", &C::last_delivery_result},
       {"failures", &C::failures}});
  return m;
}

Result<std::optional<WebhookConsumer>> FindBy(SqlTx& tx, const char* column,
                                              const std::string& value) {
  return Consumers().One(
      tx, "SELECT " + Consumers().columns() + " FROM webhook_consumers WHERE " + column + " = ?",
      {value});
}

const RowMapping<WebhookDelivery>& Deliveries() {
  using D = WebhookDelivery;
  static const RowMapping<D> m({{"id", &D::id},
                                {"consumer", &D::consumer},
                                {"event_id", &D::event_id},
                                {"event_seq", &D::event_seq},
                                {"coordination_id", &D::coordination_id},
                                {"body", &D::body},
                                {"status", &D::status},
                                {"attempts", &D::attempts},
                                {"next_attempt_at", &D::next_attempt_at},
                                {"last_error", &D::last_error},
                                {"created_at", &D::created_at}});
  return m;
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
  auto r = tx.Exec("INSERT INTO webhook_consumers (" + Consumers().columns() + ") VALUES (" +
                       Consumers().placeholders() + ")",
                   Consumers().Values(c));
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
  return Consumers().All(tx, "SELECT " + Consumers().columns() + " FROM webhook_consumers ORDER BY name",
                         {});
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
  auto r = tx.Exec("INSERT INTO webhook_deliveries (" + Deliveries().columns() + ") VALUES (" +
                       Deliveries().placeholders() + ") ON CONFLICT (consumer, event_id) DO NOTHING",
                   Deliveries().Values(d));
  if (!r.ok()) return r.status();
  return *r > 0;
}

Result<std::vector<WebhookDelivery>> DueDeliveries(SqlTx& tx, WallMillis now, int limit) {
  return Deliveries().All(tx,
                          "SELECT " + Deliveries().columns() +
                              " FROM webhook_deliveries WHERE status = ? AND next_attempt_at <= ? "
                              "ORDER BY next_attempt_at LIMIT ?",
                          {std::string(kDeliveryPending), now, static_cast<int64_t>(limit)});
}

Result<std::optional<WebhookDelivery>> FindDelivery(SqlTx& tx, const std::string& id) {
  return Deliveries().One(
      tx, "SELECT " + Deliveries().columns() + " FROM webhook_deliveries WHERE id = ?", {id});
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
