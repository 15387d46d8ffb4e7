#include "store_bench.h"

#include <sqlite3.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>

#include "bench_util.h"
#include "common/clock.h"
#include "common/ids.h"
#include "store/postgres/postgres_database.h"
#include "store/schema.h"
#include "store/sqlite/sqlite_database.h"

namespace bench {

ReadOnlyDb::ReadOnlyDb(const std::string& path) {
  if (sqlite3_open_v2(path.c_str(), &db_, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, nullptr) !=
      SQLITE_OK) {
    if (db_) sqlite3_close(db_);
    db_ = nullptr;
    return;
  }
  sqlite3_busy_timeout(db_, 10000);
}

std::unique_ptr<ReadOnlyDb> ReadOnlyDb::Postgres(const std::string& url) {
  std::unique_ptr<ReadOnlyDb> r(new ReadOnlyDb());
  auto pg = lastcall::PostgresDatabase::Open({url});
  if (!pg.ok()) {
    Note("cannot open the PostgreSQL database: " + pg.status().message());
    return r;
  }
  r->pg_ = std::move(pg).value();
  return r;
}

ReadOnlyDb::~ReadOnlyDb() {
  if (db_) sqlite3_close(db_);
  if (pg_) pg_->Close();
}

int64_t ReadOnlyDb::Scalar(const std::string& sql) {
  auto rows = Ints(sql);
  return rows.empty() || rows[0].empty() ? 0 : rows[0][0];
}

std::vector<std::vector<int64_t>> ReadOnlyDb::Ints(const std::string& sql) {
  std::vector<std::vector<int64_t>> out;
  if (pg_) {
    lastcall::Status st = pg_->Read([&](lastcall::SqlTx& tx) {
      return tx.Query(sql, {}, [&](const lastcall::SqlRow& r) {
        std::vector<int64_t> row;
        for (size_t i = 0; i < r.size(); ++i) row.push_back(r.Int(i));
        out.push_back(std::move(row));
        return true;
      });
    });
    if (!st.ok()) Note("read-only query failed: " + st.message() + " in " + sql);
    return out;
  }
  if (!db_) return out;
  sqlite3_stmt* st = nullptr;
  if (sqlite3_prepare_v2(db_, sql.c_str(), -1, &st, nullptr) != SQLITE_OK) {
    Note("read-only query failed: " + std::string(sqlite3_errmsg(db_)) + " in " + sql);
    return out;
  }
  while (sqlite3_step(st) == SQLITE_ROW) {
    std::vector<int64_t> row;
    for (int i = 0; i < sqlite3_column_count(st); ++i) row.push_back(sqlite3_column_int64(st, i));
    out.push_back(std::move(row));
  }
  sqlite3_finalize(st);
  return out;
}

std::map<std::string, int64_t> ReadOnlyDb::TextToInt(const std::string& sql) {
  std::map<std::string, int64_t> out;
  if (pg_) {
    lastcall::Status st = pg_->Read([&](lastcall::SqlTx& tx) {
      return tx.Query(sql, {}, [&](const lastcall::SqlRow& r) {
        if (!r.IsNull(0)) out[r.Text(0)] = r.Int(1);
        return true;
      });
    });
    if (!st.ok()) Note("read-only query failed: " + st.message() + " in " + sql);
    return out;
  }
  if (!db_) return out;
  sqlite3_stmt* st = nullptr;
  if (sqlite3_prepare_v2(db_, sql.c_str(), -1, &st, nullptr) != SQLITE_OK) {
    Note("read-only query failed: " + std::string(sqlite3_errmsg(db_)) + " in " + sql);
    return out;
  }
  while (sqlite3_step(st) == SQLITE_ROW) {
    const unsigned char* k = sqlite3_column_text(st, 0);
    if (k) out[reinterpret_cast<const char*>(k)] = sqlite3_column_int64(st, 1);
  }
  sqlite3_finalize(st);
  return out;
}

bool CreateSchema(const std::string& path, const std::string& synchronous, std::string* error) {
  std::error_code ec;
  std::filesystem::create_directories(std::filesystem::path(path).parent_path(), ec);
  auto db = lastcall::SqliteDatabase::Open({path, synchronous});
  if (!db.ok()) {
    *error = db.status().message();
    return false;
  }
  lastcall::Status st = lastcall::Migrate(**db);
  (*db)->Close();
  if (!st.ok()) {
    *error = st.message();
    return false;
  }
  return true;
}

namespace {

// A writer connection with a handful of prepared statements.
class Writer {
 public:
  ~Writer() {
    for (auto* s : stmts_) sqlite3_finalize(s);
    if (db_) sqlite3_close(db_);
  }
  bool Open(const std::string& path, const std::string& synchronous, std::string* error) {
    if (sqlite3_open_v2(path.c_str(), &db_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, nullptr) !=
        SQLITE_OK) {
      *error = "cannot open " + path;
      return false;
    }
    sqlite3_busy_timeout(db_, 10000);
    return Exec("PRAGMA journal_mode=WAL", error) &&
           Exec("PRAGMA synchronous=" + synchronous, error) &&
           Exec("PRAGMA foreign_keys=ON", error);
  }
  bool Exec(const std::string& sql, std::string* error) {
    char* err = nullptr;
    if (sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &err) != SQLITE_OK) {
      *error = sql + ": " + (err ? err : "?");
      sqlite3_free(err);
      return false;
    }
    return true;
  }
  sqlite3_stmt* Prepare(const std::string& sql, std::string* error) {
    sqlite3_stmt* st = nullptr;
    if (sqlite3_prepare_v3(db_, sql.c_str(), -1, SQLITE_PREPARE_PERSISTENT, &st, nullptr) !=
        SQLITE_OK) {
      *error = std::string(sqlite3_errmsg(db_)) + " in " + sql;
      return nullptr;
    }
    stmts_.push_back(st);
    return st;
  }
  // Binds text/int64 values in order and steps to completion.
  struct V {
    V(const std::string& s) : text(&s) {}
    V(int64_t i) : num(i) {}
    V(std::nullptr_t) : null(true) {}
    const std::string* text = nullptr;
    int64_t num = 0;
    bool null = false;
  };
  bool Run(sqlite3_stmt* st, std::initializer_list<V> values, std::string* error) {
    int i = 1;
    for (const V& v : values) {
      if (v.null) {
        sqlite3_bind_null(st, i);
      } else if (v.text) {
        sqlite3_bind_text(st, i, v.text->data(), static_cast<int>(v.text->size()), SQLITE_TRANSIENT);
      } else {
        sqlite3_bind_int64(st, i, v.num);
      }
      ++i;
    }
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    if (rc != SQLITE_DONE) {
      *error = sqlite3_errmsg(db_);
      return false;
    }
    return true;
  }
  int Changes() { return sqlite3_changes(db_); }

 private:
  sqlite3* db_ = nullptr;
  std::vector<sqlite3_stmt*> stmts_;
};

struct SeededFile {
  std::string id, user, account, sha;
};

const char* kDescriptions[] = {"Whole Foods Market #1234", "Uber trip downtown", "Rent",
                               "Starbucks coffee",        "ACME payroll",       "Netflix",
                               "Hardware store",          "Shell fuel station", "Book shop",
                               "Pharmacy"};
const char* kCategories[] = {"groceries",     "transport", "housing",      "dining",  "income",
                             "subscriptions", "uncategorized", "transport", "uncategorized",
                             "uncategorized"};

}  // namespace

RawResult RunRawLimit(const RawOptions& o) {
  RawResult res;
  std::string err;
  std::error_code ec;
  std::filesystem::remove(o.path, ec);
  if (!CreateSchema(o.path, o.synchronous, &err)) {
    res.error = "schema: " + err;
    return res;
  }
  Writer w;
  if (!w.Open(o.path, o.synchronous, &err)) {
    res.error = err;
    return res;
  }
  if (o.cache_mib > 0 && !w.Exec("PRAGMA cache_size=-" + std::to_string(o.cache_mib * 1024), &err)) {
    res.error = err;
    return res;
  }
  lastcall::RandomIdGenerator ids;
  int64_t now = WallMillis();
  double t_seed = MonoSeconds();

  // Seed: one account per user, files and their transactions, as the server holds them after the
  // uploads (categories set by the consumers).
  auto ins_account = w.Prepare(
      "INSERT INTO accounts (id, user_id, name, currency, balance_units, transaction_count, "
      "last_transaction_date, created_at) VALUES (?, ?, 'Checking', 'USD', ?, ?, '2024-03-28', ?)",
      &err);
  auto ins_file = w.Prepare(
      "INSERT INTO files (id, user_id, account_id, name, content_type, size_bytes, sha256, "
      "blob_key, transaction_count, status, coordination_id, uploaded_at, seq) VALUES "
      "(?, ?, ?, ?, 'text/csv', 520, ?, ?, ?, 'active', NULL, ?, ?)",
      &err);
  auto ins_tx = w.Prepare(
      "INSERT INTO transactions (id, user_id, account_id, file_id, row_no, date, description, "
      "amount_units, currency, merchant, category, category_source) VALUES "
      "(?, ?, ?, ?, ?, ?, ?, ?, 'USD', NULL, ?, 'rule')",
      &err);
  if (!ins_account || !ins_file || !ins_tx) {
    res.error = err;
    return res;
  }
  std::vector<std::string> users, accounts;
  for (int u = 0; u < o.users; ++u) {
    users.push_back("raw-user-" + std::to_string(u));
    accounts.push_back(ids.NewUuid());
  }
  if (!w.Exec("BEGIN", &err)) {
    res.error = err;
    return res;
  }
  int per_user = (o.files_seeded + o.users - 1) / std::max(1, o.users);
  for (int u = 0; u < o.users; ++u) {
    if (!w.Run(ins_account,
               {accounts[u], users[u], int64_t{-1000000} * per_user,
                static_cast<int64_t>(per_user) * o.transactions, now},
               &err)) {
      res.error = err;
      return res;
    }
  }
  std::vector<SeededFile> files;
  files.reserve(o.files_seeded);
  for (int f = 0; f < o.files_seeded; ++f) {
    int u = f % o.users;
    SeededFile sf{ids.NewUuid(), users[u], accounts[u], lastcall::RandomHex(32)};
    std::string name = "statement-" + std::to_string(f) + ".csv";
    std::string blob = ids.NewUuid();
    if (!w.Run(ins_file,
               {sf.id, sf.user, sf.account, name, sf.sha, blob, int64_t{o.transactions}, now,
                int64_t{f + 1}},
               &err)) {
      res.error = err;
      return res;
    }
    for (int t = 0; t < o.transactions; ++t) {
      std::string tid = ids.NewTimeOrderedUuid();  // as the server makes transaction ids
      std::string d = SeedDate(o.dates, f, o.users, o.transactions, t);
      std::string desc = kDescriptions[(f + t) % 10];
      std::string cat = kCategories[(f + t) % 10];
      if (!w.Run(ins_tx,
                 {tid, sf.user, sf.account, sf.id, int64_t{t + 1}, d, desc,
                  int64_t{-(1000 + 37 * t + f % 1000) * 100}, cat},
                 &err)) {
        res.error = err;
        return res;
      }
    }
    files.push_back(std::move(sf));
  }
  if (!w.Exec("COMMIT", &err)) {
    res.error = err;
    return res;
  }
  res.seed_s = MonoSeconds() - t_seed;

  // The units of work.
  auto ins_coord = w.Prepare(
      "INSERT INTO coordinations (id, user_id, file_id, account_id, transaction_count, "
      "expected_consumers, status, outcome, missing_consumers, started_at, deadline_at, "
      "completed_at, transactions_deleted) VALUES (?, ?, ?, ?, ?, "
      "'[\"analytics_consumer\",\"categorization_consumer\"]', 'waiting', NULL, '[]', ?, ?, NULL, "
      "NULL)",
      &err);
  auto ins_outbox = w.Prepare(
      "INSERT INTO outbox (id, type, source, subject, time, data, created_at) VALUES "
      "(?, 'file.delete_requested', '/lastcall/api', ?, ?, ?, ?)",
      &err);
  auto mark_file = w.Prepare(
      "UPDATE files SET status = 'deletion_requested', coordination_id = ? WHERE id = ? AND "
      "status = 'active'",
      &err);
  auto finish_coord = w.Prepare(
      "UPDATE coordinations SET status = 'completed', outcome = 'all_completed', "
      "missing_consumers = '[]', completed_at = ?, transactions_deleted = ? WHERE id = ?",
      &err);
  auto del_tx = w.Prepare("DELETE FROM transactions WHERE file_id = ?", &err);
  auto del_file = w.Prepare("DELETE FROM files WHERE id = ?", &err);
  if (!ins_coord || !ins_outbox || !mark_file || !finish_coord || !del_tx || !del_file) {
    res.error = err;
    return res;
  }
  int units = std::min<int>(o.units, static_cast<int>(files.size()));
  int batch = std::max(1, o.batch);
  // Ids and event bodies are made inside the timed loop, as the server makes them per request.
  double t0 = MonoSeconds();
  for (int start = 0; start < units; start += batch) {
    if (!w.Exec("BEGIN IMMEDIATE", &err)) {
      res.error = err;
      return res;
    }
    int end = std::min(units, start + batch);
    for (int i = start; i < end; ++i) {
      const SeededFile& f = files[i];
      int64_t t = WallMillis();
      std::string cid = ids.NewUuid();
      std::string eid = ids.NewTimeOrderedUuid();  // as the server makes event ids
      std::string when = lastcall::FormatRfc3339(t);
      std::string subject = "files/" + f.id;
      std::string data = "{\"accountId\":\"" + f.account + "\",\"coordinationId\":\"" + cid +
                         "\",\"expectedConsumers\":[\"analytics_consumer\",\"categorization_"
                         "consumer\"],\"fileId\":\"" + f.id + "\",\"requestedAt\":\"" + when +
                         "\",\"transactionCount\":" + std::to_string(o.transactions) +
                         ",\"userId\":\"" + f.user + "\"}";
      bool ok = w.Run(ins_coord,
                      {cid, f.user, f.id, f.account, int64_t{o.transactions}, t, t + 300000},
                      &err) &&
                w.Run(ins_outbox, {eid, subject, when, data, t}, &err) &&
                w.Run(mark_file, {cid, f.id}, &err) &&
                w.Run(del_tx, {f.id}, &err) &&
                w.Run(del_file, {f.id}, &err) &&
                w.Run(finish_coord, {t, int64_t{o.transactions}, cid}, &err);
      if (!ok) {
        res.error = err;
        return res;
      }
    }
    if (!w.Exec("COMMIT", &err)) {
      res.error = err;
      return res;
    }
    ++res.commits;
  }
  res.elapsed_s = MonoSeconds() - t0;
  res.units = units;
  res.units_per_s = res.elapsed_s > 0 ? static_cast<double>(units) / res.elapsed_s : 0;
  res.ok = true;
  return res;
}

SweepSeed SeedWaiting(const std::string& path, int64_t count, int64_t deadline_ms, int tag) {
  SweepSeed res;
  std::string err;
  Writer w;
  double t0 = MonoSeconds();
  if (!w.Open(path, "NORMAL", &err)) {
    res.error = err;
    return res;
  }
  // As the server writes a waiting coordination: its timer (due_at) is the deadline and its grace
  // window (not_before_at) starts and ends at once. Without due_at the driver never finds it due.
  auto ins = w.Prepare(
      "INSERT INTO coordinations (id, user_id, file_id, account_id, transaction_count, "
      "expected_consumers, status, outcome, missing_consumers, started_at, deadline_at, "
      "completed_at, transactions_deleted, not_before_at, due_at) VALUES (?, ?, ?, ?, 10, "
      "'[\"analytics_consumer\",\"categorization_consumer\"]', 'waiting', NULL, '[]', ?, ?, NULL, "
      "NULL, ?, ?)",
      &err);
  if (!ins) {
    res.error = err;
    return res;
  }
  int64_t now = WallMillis();
  const int64_t kChunk = 50000;
  for (int64_t start = 0; start < count; start += kChunk) {
    if (!w.Exec("BEGIN", &err)) {
      res.error = err;
      return res;
    }
    for (int64_t i = start; i < std::min(count, start + kChunk); ++i) {
      char id[64], file[64], account[64], user[48];
      std::snprintf(id, sizeof id, "%08x-0000-4000-8000-%012llx", tag, static_cast<unsigned long long>(i));
      std::snprintf(file, sizeof file, "%08x-0001-4000-8000-%012llx", tag, static_cast<unsigned long long>(i));
      std::snprintf(account, sizeof account, "%08x-0002-4000-8000-%012llx", tag,
                    static_cast<unsigned long long>(i % 100));
      std::snprintf(user, sizeof user, "sweep-user-%lld", static_cast<long long>(i % 100));
      std::string sid = id, sfile = file, sacc = account, suser = user;
      if (!w.Run(ins, {sid, suser, sfile, sacc, now, deadline_ms, now, deadline_ms}, &err)) {
        res.error = err;
        return res;
      }
    }
    if (!w.Exec("COMMIT", &err)) {
      res.error = err;
      return res;
    }
  }
  res.seconds = MonoSeconds() - t0;
  res.ok = true;
  return res;
}

}  // namespace bench
