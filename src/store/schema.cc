#include "store/schema.h"

#include <cctype>
#include <string>
#include <vector>

#include "common/clock.h"
#include "common/log.h"

namespace lastcall {
namespace {

struct Migration {
  int version;
  const char* name;
  std::vector<const char*> statements;
};

// Money columns (*_units) hold Money units (1/10,000 of a currency unit). Times (*_at) are
// milliseconds since the epoch, UTC. Status strings are stored: do not rename.
const std::vector<Migration>& Migrations() {
  static const std::vector<Migration> kMigrations = {
      {1,
       "core",
       {
           R"(CREATE TABLE accounts (
                id TEXT PRIMARY KEY,
                user_id TEXT NOT NULL,
                name TEXT NOT NULL,
                currency TEXT NOT NULL,
                balance_units INTEGER NOT NULL DEFAULT 0,
                transaction_count INTEGER NOT NULL DEFAULT 0,
                last_transaction_date TEXT,
                created_at INTEGER NOT NULL))",
           "CREATE INDEX accounts_by_user ON accounts(user_id, created_at)",
           R"(CREATE TABLE files (
                id TEXT PRIMARY KEY,
                user_id TEXT NOT NULL,
                account_id TEXT NOT NULL REFERENCES accounts(id),
                name TEXT NOT NULL,
                content_type TEXT NOT NULL,
                size_bytes INTEGER NOT NULL,
                sha256 TEXT NOT NULL,
                blob_key TEXT NOT NULL,
                transaction_count INTEGER NOT NULL,
                status TEXT NOT NULL,
                coordination_id TEXT,
                uploaded_at INTEGER NOT NULL,
                seq INTEGER NOT NULL))",
           "CREATE INDEX files_by_user ON files(user_id, seq)",
           "CREATE INDEX files_by_blob ON files(blob_key)",
           R"(CREATE TABLE transactions (
                id TEXT PRIMARY KEY,
                user_id TEXT NOT NULL,
                account_id TEXT NOT NULL,
                file_id TEXT NOT NULL,
                row_no INTEGER NOT NULL,
                date TEXT NOT NULL,
                description TEXT NOT NULL,
                amount_units INTEGER NOT NULL,
                currency TEXT NOT NULL,
                merchant TEXT,
                category TEXT,
                category_source TEXT))",
           "CREATE INDEX transactions_by_file ON transactions(file_id, row_no)",
           "CREATE INDEX transactions_by_account ON transactions(account_id, date)",
           "CREATE INDEX transactions_by_user ON transactions(user_id, date)",
           R"(CREATE TABLE tombstones (
                file_id TEXT PRIMARY KEY,
                user_id TEXT NOT NULL,
                account_id TEXT NOT NULL,
                coordination_id TEXT,
                sha256 TEXT NOT NULL,
                requested_at INTEGER,
                deleted_at INTEGER NOT NULL,
                outcome TEXT NOT NULL,
                transactions_deleted INTEGER NOT NULL))",
           R"(CREATE TABLE coordinations (
                id TEXT PRIMARY KEY,
                user_id TEXT NOT NULL,
                file_id TEXT NOT NULL,
                account_id TEXT NOT NULL,
                transaction_count INTEGER NOT NULL,
                expected_consumers TEXT NOT NULL,
                status TEXT NOT NULL,
                outcome TEXT,
                missing_consumers TEXT,
                started_at INTEGER NOT NULL,
                deadline_at INTEGER NOT NULL,
                completed_at INTEGER,
                transactions_deleted INTEGER))",
           "CREATE INDEX coordinations_by_status ON coordinations(status, deadline_at)",
           "CREATE INDEX coordinations_by_user ON coordinations(user_id, started_at)",
           R"(CREATE TABLE coordination_completions (
                coordination_id TEXT NOT NULL,
                consumer TEXT NOT NULL,
                status TEXT NOT NULL,
                detail TEXT NOT NULL,
                expected INTEGER NOT NULL,
                completed_at INTEGER NOT NULL,
                event_id TEXT NOT NULL,
                PRIMARY KEY (coordination_id, consumer)))",
           R"(CREATE TABLE outbox (
                seq INTEGER PRIMARY KEY AUTOINCREMENT,
                id TEXT NOT NULL UNIQUE,
                type TEXT NOT NULL,
                source TEXT NOT NULL,
                subject TEXT NOT NULL,
                time TEXT NOT NULL,
                data TEXT NOT NULL,
                created_at INTEGER NOT NULL))",
           R"(CREATE TABLE delivery_cursors (
                target TEXT PRIMARY KEY,
                last_seq INTEGER NOT NULL))",
           R"(CREATE TABLE processed (
                target TEXT NOT NULL,
                event_id TEXT NOT NULL,
                processed_at INTEGER NOT NULL,
                PRIMARY KEY (target, event_id)))",
           R"(CREATE TABLE dead_letters (
                id TEXT PRIMARY KEY,
                target TEXT NOT NULL,
                event_id TEXT NOT NULL,
                event_seq INTEGER NOT NULL,
                attempts INTEGER NOT NULL,
                error TEXT NOT NULL,
                created_at INTEGER NOT NULL))",
           R"(CREATE TABLE blob_gc (
                blob_key TEXT PRIMARY KEY,
                queued_at INTEGER NOT NULL))",
           R"(CREATE TABLE analytics_file_totals (
                user_id TEXT NOT NULL,
                file_id TEXT NOT NULL,
                month TEXT NOT NULL,
                category TEXT NOT NULL,
                total_units INTEGER NOT NULL,
                count INTEGER NOT NULL,
                PRIMARY KEY (file_id, month, category)))",
           R"(CREATE TABLE analytics_monthly (
                user_id TEXT NOT NULL,
                month TEXT NOT NULL,
                category TEXT NOT NULL,
                total_units INTEGER NOT NULL,
                count INTEGER NOT NULL,
                PRIMARY KEY (user_id, month, category)))",
           R"(CREATE TABLE analytics_archive (
                user_id TEXT NOT NULL,
                file_id TEXT NOT NULL,
                coordination_id TEXT NOT NULL,
                month TEXT NOT NULL,
                category TEXT NOT NULL,
                total_units INTEGER NOT NULL,
                count INTEGER NOT NULL,
                archived_at INTEGER NOT NULL,
                PRIMARY KEY (file_id, month, category)))",
           "CREATE INDEX analytics_archive_by_user ON analytics_archive(user_id, archived_at)",
           R"(CREATE TABLE merchant_mappings (
                user_id TEXT NOT NULL,
                merchant TEXT NOT NULL,
                category TEXT NOT NULL,
                learned_at INTEGER NOT NULL,
                PRIMARY KEY (user_id, merchant)))",
       }},
      {2,
       "timeline",
       {
           R"(CREATE TABLE coordination_timeline (
                seq INTEGER PRIMARY KEY AUTOINCREMENT,
                coordination_id TEXT NOT NULL,
                at INTEGER NOT NULL,
                kind TEXT NOT NULL,
                detail TEXT NOT NULL))",
           "CREATE INDEX coordination_timeline_by_id ON coordination_timeline(coordination_id, seq)",
           "CREATE INDEX coordinations_by_started ON coordinations(started_at, id)",
       }},
      {3,
       "indexes for the hot paths",
       {
           // MAX(seq) for each new file read the whole files_by_user index.
           "CREATE INDEX files_by_seq ON files(seq)",
           "CREATE INDEX blob_gc_by_queued ON blob_gc(queued_at)",
       }},
      {4,
       "webhook consumers, critical and optional waits, one dead letter queue",
       {
           // Registered consumers. secret/previous_secret sign webhooks (whsec_<base64>, kept
           // readable: signing needs them); the consumer token is stored only as its SHA-256.
           R"(CREATE TABLE webhook_consumers (
                name TEXT PRIMARY KEY,
                url TEXT NOT NULL,
                priority TEXT NOT NULL,
                timeout_ms INTEGER NOT NULL,
                heartbeat_ms INTEGER NOT NULL,
                can_veto INTEGER NOT NULL,
                secret TEXT NOT NULL,
                previous_secret TEXT,
                previous_secret_until INTEGER,
                token_hash TEXT NOT NULL UNIQUE,
                created_at INTEGER NOT NULL,
                last_heartbeat_at INTEGER NOT NULL,
                last_delivery_at INTEGER,
                last_delivery_result TEXT,
                failures INTEGER NOT NULL))",
           // One row per (consumer, event) to send; attempts survive restarts. status: pending,
           // delivered, dead, cancelled (stored: do not rename).
           R"(CREATE TABLE webhook_deliveries (
                id TEXT PRIMARY KEY,
                consumer TEXT NOT NULL,
                event_id TEXT NOT NULL,
                event_seq INTEGER NOT NULL,
                coordination_id TEXT,
                body TEXT NOT NULL,
                status TEXT NOT NULL,
                attempts INTEGER NOT NULL,
                next_attempt_at INTEGER NOT NULL,
                last_error TEXT,
                created_at INTEGER NOT NULL,
                delivered_at INTEGER,
                UNIQUE (consumer, event_id)))",
           "CREATE INDEX webhook_deliveries_due ON webhook_deliveries(status, next_attempt_at)",
           // A webhook's dead letter names its delivery; replayed_at marks a replayed one.
           "ALTER TABLE dead_letters ADD COLUMN delivery_id TEXT",
           "ALTER TABLE dead_letters ADD COLUMN replayed_at INTEGER",
           "CREATE INDEX dead_letters_by_created ON dead_letters(created_at, id)",
           // Each expected consumer's priority and timeout, and the rule that let each proceed.
           "ALTER TABLE coordinations ADD COLUMN consumer_policies TEXT",
           "ALTER TABLE coordinations ADD COLUMN proceeded_by TEXT",
       }},
      {6,
       "cancel, grace window and legal holds",
       {
           // not_before_at: the grace window's end; due_at: when the driver's timer may change the
           // coordination next (NULL: only an input can); hold_reason: the blocking hold's reason.
           "ALTER TABLE coordinations ADD COLUMN not_before_at BIGINT",
           "ALTER TABLE coordinations ADD COLUMN due_at BIGINT",
           "ALTER TABLE coordinations ADD COLUMN hold_reason TEXT",
           "ALTER TABLE coordinations ADD COLUMN cancelled_at BIGINT",
           "UPDATE coordinations SET not_before_at = started_at",
           "UPDATE coordinations SET due_at = deadline_at WHERE status = 'waiting'",
           "CREATE INDEX coordinations_by_due ON coordinations(status, due_at)",
           "CREATE INDEX coordinations_by_file ON coordinations(file_id)",
           "CREATE INDEX coordinations_by_account ON coordinations(account_id)",
           // scope: user, account or file (stored: do not rename); target_id: that id.
           R"(CREATE TABLE holds (
                id TEXT PRIMARY KEY,
                scope TEXT NOT NULL,
                target_id TEXT NOT NULL,
                reason TEXT NOT NULL,
                placed_by TEXT NOT NULL,
                placed_at BIGINT NOT NULL,
                released_by TEXT,
                released_at BIGINT))",
           "CREATE INDEX holds_by_target ON holds(scope, target_id, released_at)",
       }},
      {7,
       "verified deletion",
       {
           // verification: NULL until checked, then "verified" or "residue"; residue: a JSON
           // object naming what was found where (no user content); blob_key: to look for content.
           "ALTER TABLE coordinations ADD COLUMN blob_key TEXT",
           "ALTER TABLE coordinations ADD COLUMN verification TEXT",
           "ALTER TABLE coordinations ADD COLUMN residue TEXT",
           "ALTER TABLE coordinations ADD COLUMN verified_at BIGINT",
           "CREATE INDEX coordinations_by_verification ON coordinations(status, verification)",
       }},
      {8,
       "delivery attempts",
       {
           // Failed delivery attempts per (target, event), written in the unit of the failed
           // delivery: the retry budget survives restarts, so a poison event is dead-lettered
           // after max_attempts even when the process keeps crashing. Removed when the event is
           // delivered or dead-lettered.
           R"(CREATE TABLE delivery_attempts (
                target TEXT NOT NULL,
                event_id TEXT NOT NULL,
                attempts INTEGER NOT NULL,
                last_error TEXT NOT NULL,
                updated_at INTEGER NOT NULL,
                PRIMARY KEY (target, event_id)))",
       }},
      {10,
       "outbox relay state for a broker (NATS JetStream)",
       {
           // relayed_at: when a relay last published the row to the broker (NULL: not yet);
           // settled_at: when every target the rules select had recorded it (processed or dead
           // letter), after which it is never published again. Both stay NULL with the in-process
           // bus, which reads the outbox directly.
           "ALTER TABLE outbox ADD COLUMN relayed_at INTEGER",
           "ALTER TABLE outbox ADD COLUMN settled_at INTEGER",
           "CREATE INDEX outbox_relay ON outbox(settled_at, relayed_at)",
           "CREATE INDEX dead_letters_by_event ON dead_letters(target, event_id)",
           // Roles that one node at a time holds (the outbox relay): taken when expired.
           R"(CREATE TABLE bus_leases (
                name TEXT PRIMARY KEY,
                holder TEXT NOT NULL,
                expires_at INTEGER NOT NULL))",
       }},
      {11,
       "consumer vetoes and operator overrides",
       {
           // The veto that stopped a coordination (status vetoed): which consumer, its reason,
           // when; and the operator's override that let it proceed. All NULL when none.
           "ALTER TABLE coordinations ADD COLUMN vetoed_by TEXT",
           "ALTER TABLE coordinations ADD COLUMN veto_reason TEXT",
           "ALTER TABLE coordinations ADD COLUMN vetoed_at BIGINT",
           "ALTER TABLE coordinations ADD COLUMN overridden_by TEXT",
           "ALTER TABLE coordinations ADD COLUMN override_reason TEXT",
           "ALTER TABLE coordinations ADD COLUMN overridden_at BIGINT",
       }},
      {12,
       "retention of the outbox, processed records and delivery attempts",
       {
           // A dead letter carries its event (the outbox row may be pruned before an operator
           // replays it); rows recorded before this version are filled from the outbox.
           "ALTER TABLE dead_letters ADD COLUMN event_type TEXT",
           "ALTER TABLE dead_letters ADD COLUMN event_source TEXT",
           "ALTER TABLE dead_letters ADD COLUMN event_subject TEXT",
           "ALTER TABLE dead_letters ADD COLUMN event_time TEXT",
           "ALTER TABLE dead_letters ADD COLUMN event_data TEXT",
           R"(UPDATE dead_letters SET
                event_type = (SELECT o.type FROM outbox o WHERE o.id = dead_letters.event_id),
                event_source = (SELECT o.source FROM outbox o WHERE o.id = dead_letters.event_id),
                event_subject = (SELECT o.subject FROM outbox o WHERE o.id = dead_letters.event_id),
                event_time = (SELECT o.time FROM outbox o WHERE o.id = dead_letters.event_id),
                event_data = (SELECT o.data FROM outbox o WHERE o.id = dead_letters.event_id))",
           // Pruning removes an event's records by its id.
           "CREATE INDEX processed_by_event ON processed(event_id)",
           "CREATE INDEX delivery_attempts_by_event ON delivery_attempts(event_id)",
       }},
  };
  return kMigrations;
}

// Held (transaction-scoped) by every migration unit on PostgreSQL, so that nodes starting at the
// same time apply each migration once, one after the other. Any constant works; this one is
// "lastcall" in ASCII.
constexpr int64_t kMigrationLockKey = 0x6c61737463616c6c;

Status LockMigrations(SqlTx& tx) {
  if (tx.dialect() != SqlDialect::kPostgres) return Status::Ok();  // one writer serializes SQLite
  auto r = tx.Exec("SELECT pg_advisory_xact_lock(?)", {kMigrationLockKey});
  return r.ok() ? Status::Ok() : r.status();
}

}  // namespace

std::string DdlFor(SqlDialect dialect, std::string_view ddl) {
  std::string out(ddl);
  if (dialect != SqlDialect::kPostgres) return out;
  // SQLite's INTEGER is 64-bit; PostgreSQL's is 32-bit. Its rowid-backed AUTOINCREMENT key is an
  // identity column there.
  const std::string autoinc = "INTEGER PRIMARY KEY AUTOINCREMENT";
  for (size_t p = out.find(autoinc); p != std::string::npos; p = out.find(autoinc, p)) {
    out.replace(p, autoinc.size(), "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY");
  }
  auto word_char = [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_'; };
  const std::string integer = "INTEGER";
  for (size_t p = out.find(integer); p != std::string::npos; p = out.find(integer, p + 1)) {
    bool whole = (p == 0 || !word_char(out[p - 1])) &&
                 (p + integer.size() == out.size() || !word_char(out[p + integer.size()]));
    if (whole) out.replace(p, integer.size(), "BIGINT");
  }
  return out;
}

int LatestSchemaVersion() { return Migrations().back().version; }

Status Migrate(Database& db) {
  LASTCALL_RETURN_IF_ERROR(db.WriteSync([](SqlTx& tx) -> Status {
    LASTCALL_RETURN_IF_ERROR(LockMigrations(tx));
    auto r = tx.Exec(DdlFor(tx.dialect(),
                            "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY "
                            "KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)"));
    return r.ok() ? Status::Ok() : r.status();
  }));
  for (const Migration& m : Migrations()) {
    bool applied = false;
    Status st = db.WriteSync([&](SqlTx& tx) -> Status {
      LASTCALL_RETURN_IF_ERROR(LockMigrations(tx));
      auto newest = tx.QueryOne("SELECT MAX(version) FROM schema_migrations");
      if (!newest.ok()) return newest.status();
      if (*newest && !(*newest)->IsNull(0) && (*newest)->Int(0) > LatestSchemaVersion()) {
        return Status::Conflict("schema_too_new",
                                "the database was written by a newer lastcall (schema version " +
                                    std::to_string((*newest)->Int(0)) + ")");
      }
      auto have = tx.QueryOne("SELECT 1 FROM schema_migrations WHERE version = ?", {m.version});
      if (!have.ok()) return have.status();
      if (*have) return Status::Ok();
      for (const char* sql : m.statements) {
        auto r = tx.Exec(DdlFor(tx.dialect(), sql));
        if (!r.ok()) return r.status();
      }
      auto r = tx.Exec("INSERT INTO schema_migrations(version, name, applied_at) VALUES (?, ?, ?)",
                       {m.version, std::string(m.name), SystemClock().Now()});
      if (!r.ok()) return r.status();
      applied = true;
      return Status::Ok();
    });
    LASTCALL_RETURN_IF_ERROR(st);
    if (applied) log::Info("schema migration applied", {{"version", m.version}, {"name", m.name}});
  }
  return Status::Ok();
}

}  // namespace lastcall
