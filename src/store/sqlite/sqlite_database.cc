#include "store/sqlite/sqlite_database.h"

#include <pthread.h>
#include <sqlite3.h>

#include <algorithm>
#include <unordered_map>

#include "common/log.h"
#include "store/sqlite/page_cache.h"

namespace lastcall {

// One sqlite3 handle with its prepared-statement cache. Used by one thread at a time.
class SqliteConnection {
 public:
  ~SqliteConnection() {
    for (auto& [sql, stmt] : cache_) sqlite3_finalize(stmt);
    if (db_) sqlite3_close(db_);
  }

  static Result<std::unique_ptr<SqliteConnection>> Open(const std::string& path, bool readonly,
                                                        const std::string& synchronous,
                                                        int64_t cache_kib) {
    (void)InstallSqlitePageCache();  // before SQLite initializes, or never
    auto c = std::unique_ptr<SqliteConnection>(new SqliteConnection());
    int flags = readonly ? SQLITE_OPEN_READONLY : (SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
    flags |= SQLITE_OPEN_NOMUTEX;
    if (sqlite3_open_v2(path.c_str(), &c->db_, flags, nullptr) != SQLITE_OK) {
      return Status::Unavailable("cannot open database " + path + ": " +
                                 (c->db_ ? sqlite3_errmsg(c->db_) : "out of memory"));
    }
    sqlite3_busy_timeout(c->db_, 10000);
    sqlite3_extended_result_codes(c->db_, 1);
    // Page cache (SqliteOptions::cache_mib): it holds every page the connection touched until it
    // is full, so it is most of the process's memory; pages it evicted are read back from the
    // kernel's file cache.
    LASTCALL_RETURN_IF_ERROR(c->Simple("PRAGMA cache_size=-" + std::to_string(cache_kib)));
    LASTCALL_RETURN_IF_ERROR(c->Simple("PRAGMA temp_store=MEMORY"));
    if (!readonly) {
      LASTCALL_RETURN_IF_ERROR(c->Simple("PRAGMA journal_mode=WAL"));
      LASTCALL_RETURN_IF_ERROR(c->Simple("PRAGMA synchronous=" + synchronous));
      LASTCALL_RETURN_IF_ERROR(c->Simple("PRAGMA foreign_keys=ON"));
    }
    return c;
  }

  Status Simple(const std::string& sql) {
    char* err = nullptr;
    if (sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &err) != SQLITE_OK) {
      std::string msg = err ? err : "unknown";
      sqlite3_free(err);
      return Status::Unavailable("sqlite: " + sql + ": " + msg);
    }
    return Status::Ok();
  }

  // Runs a statement without parameters whose rows, if any, are not needed (BEGIN, COMMIT,
  // SAVEPOINT, RELEASE, ROLLBACK TO) through the prepared-statement cache: parsed once per
  // connection rather than on every call as sqlite3_exec would. Errors: kUnavailable naming sql.
  Status Step(std::string_view sql) {
    auto stmt = Prepare(sql);
    if (!stmt.ok()) return stmt.status();
    int rc;
    while ((rc = sqlite3_step(*stmt)) == SQLITE_ROW) {
    }
    if (rc != SQLITE_DONE) {
      std::string msg = sqlite3_errmsg(db_);
      sqlite3_reset(*stmt);
      return Status::Unavailable("sqlite: " + std::string(sql) + ": " + msg);
    }
    sqlite3_reset(*stmt);
    return Status::Ok();
  }

  Result<sqlite3_stmt*> Prepare(std::string_view sql) {
    auto it = cache_.find(sql);
    if (it != cache_.end()) return it->second;
    sqlite3_stmt* stmt = nullptr;
    if (sqlite3_prepare_v3(db_, sql.data(), static_cast<int>(sql.size()), SQLITE_PREPARE_PERSISTENT,
                           &stmt, nullptr) != SQLITE_OK) {
      return Status::Internal("sqlite prepare: " + std::string(sqlite3_errmsg(db_)) + " in: " +
                              std::string(sql));
    }
    cache_.emplace(std::string(sql), stmt);
    return stmt;
  }

  sqlite3* db() { return db_; }

 private:
  SqliteConnection() = default;
  sqlite3* db_ = nullptr;
  // Keyed by the SQL text; looked up by string_view without building a std::string.
  struct TextHash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  std::unordered_map<std::string, sqlite3_stmt*, TextHash, std::equal_to<>> cache_;
};

namespace {

class SqliteTx : public GroupCommitTx {
 public:
  SqliteTx(SqliteConnection* c, bool writable) : c_(c), writable_(writable) {}

  Result<int64_t> Exec(std::string_view sql, const SqlParams& params) override {
    auto stmt = Bind(sql, params);
    if (!stmt.ok()) return stmt.status();
    int rc;
    while ((rc = sqlite3_step(*stmt)) == SQLITE_ROW) {
    }
    sqlite3_reset(*stmt);
    if (rc != SQLITE_DONE) return Failure(rc, sql);
    return static_cast<int64_t>(sqlite3_changes(c_->db()));
  }

  Status Query(std::string_view sql, const SqlParams& params,
               const std::function<bool(const SqlRow&)>& on_row) override {
    auto stmt = Bind(sql, params);
    if (!stmt.ok()) return stmt.status();
    int rc;
    while ((rc = sqlite3_step(*stmt)) == SQLITE_ROW) {
      int n = sqlite3_column_count(*stmt);
      std::vector<SqlValue> values;
      values.reserve(n);
      for (int i = 0; i < n; ++i) {
        switch (sqlite3_column_type(*stmt, i)) {
          case SQLITE_NULL:
            values.emplace_back(SqlNull{});
            break;
          case SQLITE_INTEGER:
            values.emplace_back(static_cast<int64_t>(sqlite3_column_int64(*stmt, i)));
            break;
          default: {
            const void* p = sqlite3_column_blob(*stmt, i);
            int len = sqlite3_column_bytes(*stmt, i);
            values.emplace_back(std::string(static_cast<const char*>(p ? p : ""), len));
          }
        }
      }
      if (!on_row(SqlRow(std::move(values)))) {
        rc = SQLITE_DONE;
        break;
      }
    }
    sqlite3_reset(*stmt);
    if (rc != SQLITE_DONE) return Failure(rc, sql);
    return Status::Ok();
  }

  bool writable() const override { return writable_; }
  SqlDialect dialect() const override { return SqlDialect::kSqlite; }

 private:
  Result<sqlite3_stmt*> Bind(std::string_view sql, const SqlParams& params) {
    auto stmt = c_->Prepare(sql);
    if (!stmt.ok()) return stmt;
    sqlite3_clear_bindings(*stmt);
    for (size_t i = 0; i < params.size(); ++i) {
      int idx = static_cast<int>(i + 1);
      const SqlValue& v = params[i];
      if (std::holds_alternative<SqlNull>(v)) {
        sqlite3_bind_null(*stmt, idx);
      } else if (auto p = std::get_if<int64_t>(&v)) {
        sqlite3_bind_int64(*stmt, idx, *p);
      } else {
        const std::string& s = std::get<std::string>(v);
        // SQLITE_STATIC: no copy. params outlives every step of this use of the statement, and
        // the next use clears these bindings (above) before it binds its own.
        sqlite3_bind_text(*stmt, idx, s.data(), static_cast<int>(s.size()), SQLITE_STATIC);
      }
    }
    return stmt;
  }

  Status Failure(int rc, std::string_view sql) {
    std::string msg = std::string("sqlite: ") + sqlite3_errmsg(c_->db()) + " in: " +
                      std::string(sql.substr(0, 120));
    if ((rc & 0xff) == SQLITE_CONSTRAINT) return Status::Conflict("constraint", msg);
    if ((rc & 0xff) == SQLITE_BUSY || (rc & 0xff) == SQLITE_LOCKED) return Status::Unavailable(msg);
    return Status::Internal(msg);
  }

  SqliteConnection* c_;
  bool writable_;
};

}  // namespace

SqliteDatabase::SqliteDatabase(SqliteOptions options) : options_(std::move(options)) {}

Result<std::unique_ptr<SqliteDatabase>> SqliteDatabase::Open(const SqliteOptions& options) {
  if (options.synchronous != "FULL" && options.synchronous != "NORMAL") {
    return Status::Invalid("invalid_config", "synchronous must be FULL or NORMAL");
  }
  auto db = std::unique_ptr<SqliteDatabase>(new SqliteDatabase(options));
  auto w = SqliteConnection::Open(options.path, false, options.synchronous,
                                  int64_t{options.cache_mib} * 1024);
  if (!w.ok()) return w.status();
  db->writer_ = std::move(w).value();
  // Checkpoints move to the checkpointer: off on the writer (the hook below replaces SQLite's).
  LASTCALL_RETURN_IF_ERROR(db->writer_->Simple("PRAGMA wal_autocheckpoint=0"));
  // A group commit writes its dirty pages to the WAL mid-transaction (a spill) only past the
  // whole cache_size, even when the process is over its SQLite memory budget (sqlite_memory.h):
  // SQLite's default spills as soon as the budget leaves the cache no clean page to reuse.
  LASTCALL_RETURN_IF_ERROR(
      db->writer_->Simple("PRAGMA cache_spill=-" + std::to_string(int64_t{options.cache_mib} * 1024)));
  sqlite3_wal_hook(db->writer_->db(), &SqliteDatabase::OnWalCommit, db.get());
  // A checkpoint copies WAL frames into the database file: it needs no page cache to speak of.
  auto ck = SqliteConnection::Open(options.path, false, options.synchronous, /*cache_kib=*/1024);
  if (!ck.ok()) return ck.status();
  db->checkpointer_ = std::move(ck).value();
  db->checkpointer_thread_ = std::thread([p = db.get()] { p->CheckpointerLoop(); });
  db->writer_tx_ = std::make_unique<SqliteTx>(db->writer_.get(), true);
  GroupCommitOptions group;
  group.max_batch = options.max_batch;
  group.thread_name = "sqlite-writer";  // for ps, perf and the benchmark
  group.finisher_name = "sqlite-finish";
  GroupCommitConnection& conn = *db;  // a private base: converted here, where it is accessible
  db->group_ = std::make_unique<GroupCommitWriter>(conn, std::move(group));
  return db;
}

SqliteDatabase::~SqliteDatabase() { Close(); }

bool SqliteDatabase::SetBatchTail(BatchTail* tail) {
  group_->SetTail(tail);
  return true;
}

void SqliteDatabase::Close() {
  if (group_) group_->Stop();
  {
    std::lock_guard<std::mutex> l(ckpt_mu_);
    ckpt_closing_ = true;
  }
  ckpt_cv_.notify_all();
  if (checkpointer_thread_.joinable()) checkpointer_thread_.join();
  std::lock_guard<std::mutex> l(readers_mu_);
  readers_.clear();
  checkpointer_.reset();
  writer_.reset();  // the last connection to close checkpoints the WAL into the database file
}

int SqliteDatabase::OnWalCommit(void* self, sqlite3* /*db*/, const char* /*name*/, int wal_pages) {
  auto* d = static_cast<SqliteDatabase*>(self);
  d->wal_pages_ = wal_pages;
  // When the writer is to copy the tail itself (Begin), a pass of the checkpointer's would only
  // make the writer's checkpoint fail as busy.
  if (wal_pages >= d->options_.checkpoint_pages && wal_pages < d->options_.wal_cap_pages) {
    bool wake = false;
    {
      std::lock_guard<std::mutex> l(d->ckpt_mu_);  // tail_wanted_ is set under it
      wake = !d->tail_wanted_.load();
      if (wake) d->ckpt_wanted_ = true;
    }
    if (wake) d->ckpt_cv_.notify_one();
  }
  return SQLITE_OK;
}

void SqliteDatabase::CheckpointerLoop() {
  pthread_setname_np(pthread_self(), "sqlite-ckpt");  // for ps, perf and the benchmark
  for (;;) {
    {
      std::unique_lock<std::mutex> l(ckpt_mu_);
      ckpt_cv_.wait(l, [&] { return ckpt_wanted_ || ckpt_closing_; });
      if (ckpt_closing_) return;
      ckpt_wanted_ = false;
    }
    // PASSIVE: copies what no reader still needs, never waits for the writer or readers. Once the
    // WAL is long enough to be started over, further passes copy what the writer committed during
    // the pass before, each a shorter tail than the last unless the writer is saturated, so that
    // the WAL is all copied when the writer next begins (it then starts the WAL over by itself).
    // Passes that do not catch up, or a writer that twice began before they did, leave the tail
    // to the writer.
    constexpr int kTailPasses = 4;
    int copied_before = -1;
    for (int pass = 1;; ++pass) {
      int log_frames = 0, copied = 0;
      int rc = sqlite3_wal_checkpoint_v2(checkpointer_->db(), nullptr, SQLITE_CHECKPOINT_PASSIVE,
                                         &log_frames, &copied);
      checkpointer_passes_.fetch_add(1);
      if (rc != SQLITE_OK && (rc & 0xff) != SQLITE_BUSY) {
        log::Warn("wal checkpoint failed", {{"error", std::string(sqlite3_errmsg(checkpointer_->db()))}});
      }
      if (rc != SQLITE_OK) break;
      if (log_frames < options_.restart_pages) {
        caught_up_at_ = 0;  // the WAL started over since any catching up
        break;
      }
      if (copied >= log_frames) {
        // All copied: the writer's next write starts the WAL over, unless it began before this
        // pass ended. Catching up twice with no new start between leaves it to the writer.
        bool missed = caught_up_at_ != 0 && log_frames > caught_up_at_;
        caught_up_at_ = missed ? 0 : log_frames;
        if (missed) LeaveTailToWriter();
        break;
      }
      // Out of passes, or no progress (a reader still needs the frames left).
      if (pass == kTailPasses || copied <= copied_before) {
        caught_up_at_ = 0;
        LeaveTailToWriter();
        break;
      }
      copied_before = copied;
    }
  }
}

void SqliteDatabase::LeaveTailToWriter() {
  // A wake that came before this would only run a pass that makes the writer's checkpoint busy.
  std::lock_guard<std::mutex> l(ckpt_mu_);
  ckpt_wanted_ = false;
  tail_wanted_.store(true);
}

void SqliteDatabase::Write(WriteFn fn, WriteDone done) { group_->Write(std::move(fn), std::move(done)); }

Status SqliteDatabase::Begin(bool unit_savepoints) {
  if (tail_wanted_.load() || wal_pages_ >= options_.wal_cap_pages) {
    // The checkpointer could not catch up with this writer: copy what it has not, so that the
    // next write finds the WAL all copied and starts it over. SQLITE_BUSY (a pass of the
    // checkpointer's still at work) leaves it to the next batch; a reader of an older snapshot
    // may leave the WAL uncopied, and the next round tries again.
    int log_frames = 0, copied = 0;
    int rc = sqlite3_wal_checkpoint_v2(writer_->db(), nullptr, SQLITE_CHECKPOINT_PASSIVE,
                                       &log_frames, &copied);
    writer_checkpoints_.fetch_add(1);
    if (rc == SQLITE_OK) tail_wanted_.store(false);
  }
  LASTCALL_RETURN_IF_ERROR(writer_->Step("BEGIN IMMEDIATE"));
  if (!unit_savepoints) return Status::Ok();
  if (Status sp = writer_->Step("SAVEPOINT unit"); !sp.ok()) {
    (void)writer_->Step("ROLLBACK");
    return sp;
  }
  return Status::Ok();
}

Status SqliteDatabase::EndUnit(bool keep, bool next) {
  if (!keep) LASTCALL_RETURN_IF_ERROR(writer_->Step("ROLLBACK TO unit"));
  LASTCALL_RETURN_IF_ERROR(writer_->Step("RELEASE unit"));
  return next ? writer_->Step("SAVEPOINT unit") : Status::Ok();
}

Status SqliteDatabase::Commit() { return writer_->Step("COMMIT"); }

std::optional<int64_t> SqliteDatabase::ChangedRows() {
  return sqlite3_total_changes64(writer_->db());
}

bool SqliteDatabase::TransactionOpen() { return sqlite3_get_autocommit(writer_->db()) == 0; }

void SqliteDatabase::Rollback() { (void)writer_->Step("ROLLBACK"); }

std::unique_ptr<SqliteConnection> SqliteDatabase::TakeReader() {
  {
    std::lock_guard<std::mutex> l(readers_mu_);
    if (!readers_.empty()) {
      auto c = std::move(readers_.back());
      readers_.pop_back();
      return c;
    }
  }
  auto c = SqliteConnection::Open(options_.path, true, options_.synchronous,
                                  std::max<int64_t>(1024, int64_t{options_.cache_mib} * 1024 / 8));
  if (!c.ok()) return nullptr;
  return std::move(c).value();
}

void SqliteDatabase::ReturnReader(std::unique_ptr<SqliteConnection> c) {
  std::lock_guard<std::mutex> l(readers_mu_);
  if (readers_.size() < 16) readers_.push_back(std::move(c));
}

Status SqliteDatabase::Read(const ReadFn& fn) {
  auto c = TakeReader();
  if (!c) return Status::Unavailable("cannot open a read connection");
  Status st = c->Step("BEGIN");
  if (!st.ok()) return st;
  SqliteTx tx(c.get(), false);
  try {
    st = fn(tx);
  } catch (const std::exception& e) {
    st = Status::Internal(std::string("read threw: ") + e.what());
  }
  (void)c->Step("COMMIT");
  ReturnReader(std::move(c));
  return st;
}

}  // namespace lastcall
