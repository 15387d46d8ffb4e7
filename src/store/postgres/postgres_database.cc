#include "store/postgres/postgres_database.h"

#include <libpq-fe.h>

#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <unordered_map>
#include <utility>

#include "common/log.h"

namespace lastcall {
namespace {

// Type OIDs (pg_type.dat); libpq ships no header with them for clients.
constexpr Oid kBoolOid = 16;
constexpr Oid kInt8Oid = 20;
constexpr Oid kInt2Oid = 21;
constexpr Oid kInt4Oid = 23;
constexpr Oid kNumericOid = 1700;

// Statements that are sent as they are (simple protocol) rather than prepared: transaction
// control and DDL, which are neither parameterized nor repeated.
bool IsUtility(std::string_view sql) {
  size_t i = sql.find_first_not_of(" \t\r\n");
  if (i == std::string_view::npos) return true;
  std::string word;
  for (; i < sql.size() && std::isalpha(static_cast<unsigned char>(sql[i])); ++i) {
    word += static_cast<char>(std::toupper(static_cast<unsigned char>(sql[i])));
  }
  return word == "SAVEPOINT" || word == "RELEASE" || word == "ROLLBACK" || word == "BEGIN" ||
         word == "COMMIT" || word == "CREATE" || word == "ALTER" || word == "DROP";
}

// "SAVEPOINT name" or "RELEASE [SAVEPOINT] name" (not ROLLBACK TO, whose caller is recovering).
bool IsSavepointStartOrRelease(std::string_view sql) {
  size_t i = sql.find_first_not_of(" \t\r\n");
  if (i == std::string_view::npos) return false;
  auto starts = [&](std::string_view word) {
    if (sql.size() - i < word.size()) return false;
    for (size_t k = 0; k < word.size(); ++k) {
      if (std::toupper(static_cast<unsigned char>(sql[i + k])) != word[k]) return false;
    }
    return true;
  };
  return starts("SAVEPOINT ") || starts("RELEASE ");
}

// What a failed statement means to the caller. SQLSTATE classes: 23 integrity constraint
// violation; 40 transaction rollback (serialization, deadlock); 08 connection; 57P0x shutdown;
// 53 insufficient resources.
Status PgFailure(const PGresult* res, PGconn* conn, std::string_view sql) {
  const char* state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : nullptr;
  std::string msg = std::string("postgres: ") +
                    (res && *PQresultErrorMessage(res) ? PQresultErrorMessage(res) : PQerrorMessage(conn));
  while (!msg.empty() && (msg.back() == '\n' || msg.back() == ' ')) msg.pop_back();
  msg += " in: " + std::string(sql.substr(0, 120));
  std::string s = state ? state : "";
  if (s.rfind("23", 0) == 0) return Status::Conflict("constraint", msg);
  if (s.empty() || s.rfind("08", 0) == 0 || s.rfind("40", 0) == 0 || s.rfind("57P", 0) == 0 ||
      s.rfind("53", 0) == 0 || PQstatus(conn) != CONNECTION_OK) {
    return Status::Unavailable(msg);
  }
  return Status::Internal(msg);
}

struct ResultDeleter {
  void operator()(PGresult* r) const { PQclear(r); }
};
using PgResult = std::unique_ptr<PGresult, ResultDeleter>;

}  // namespace

std::string ToPostgresPlaceholders(std::string_view sql) {
  std::string out;
  out.reserve(sql.size() + 16);
  int n = 0;
  for (size_t i = 0; i < sql.size(); ++i) {
    char c = sql[i];
    if (c == '\'' || c == '"') {
      // A literal or quoted identifier; a doubled quote inside it is an escaped quote.
      size_t j = i + 1;
      while (j < sql.size() && !(sql[j] == c && !(j + 1 < sql.size() && sql[j + 1] == c))) {
        j += (sql[j] == c) ? 2 : 1;
      }
      out.append(sql.substr(i, j + 1 - i));
      i = j;
    } else if (c == '-' && i + 1 < sql.size() && sql[i + 1] == '-') {
      size_t j = sql.find('\n', i);
      if (j == std::string_view::npos) j = sql.size() - 1;
      out.append(sql.substr(i, j + 1 - i));
      i = j;
    } else if (c == '/' && i + 1 < sql.size() && sql[i + 1] == '*') {
      size_t j = sql.find("*/", i + 2);
      j = (j == std::string_view::npos) ? sql.size() - 1 : j + 1;
      out.append(sql.substr(i, j + 1 - i));
      i = j;
    } else if (c == '?') {
      out += '$';
      out += std::to_string(++n);
    } else {
      out += c;
    }
  }
  return out;
}

std::string RedactDatabaseUrl(const std::string& url) {
  std::string out = url;
  // scheme://user:password@host
  size_t scheme = out.find("://");
  if (scheme != std::string::npos) {
    size_t start = scheme + 3;
    size_t at = out.find('@', start);
    size_t slash = out.find('/', start);
    if (at != std::string::npos && (slash == std::string::npos || at < slash)) {
      size_t colon = out.find(':', start);
      if (colon != std::string::npos && colon < at) out.replace(colon + 1, at - colon - 1, "***");
    }
  }
  // ...?password=secret&... or "password=secret" in a keyword/value string
  for (size_t p = out.find("password="); p != std::string::npos; p = out.find("password=", p + 1)) {
    size_t v = p + 9;
    size_t end = out.find_first_of("& ", v);
    if (end == std::string::npos) end = out.size();
    out.replace(v, end - v, "***");
  }
  return out;
}

// One libpq connection with its prepared-statement cache. Used by one thread at a time.
//
// Pipeline mode (the writer's connection, EnterPipeline): statements are queued on the connection
// and a Sync is sent only where a result is needed (Run, WaitAll), so statements sent with Send,
// and the writer's transaction control, cost no round trip of their own. Every wait point is a
// Sync, so an error skips the server's work only up to there, and the session is then in the
// same state as without a pipeline (a failed transaction until ROLLBACK TO a savepoint).
// A Send that fails makes the connection "failed" (sticky): every later statement returns that
// failure without being sent, until TakeSendFailure.
class PgConnection {
 public:
  ~PgConnection() {
    if (conn_) PQfinish(conn_);
  }

  static Result<std::unique_ptr<PgConnection>> Open(const std::string& url) {
    auto c = std::unique_ptr<PgConnection>(new PgConnection());
    const char* keys[] = {"connect_timeout", "fallback_application_name", "dbname", nullptr};
    const char* values[] = {"10", "lastcall", url.c_str(), nullptr};
    c->conn_ = PQconnectdbParams(keys, values, 1);
    if (!c->conn_ || PQstatus(c->conn_) != CONNECTION_OK) {
      std::string msg = c->conn_ ? PQerrorMessage(c->conn_) : "out of memory";
      while (!msg.empty() && (msg.back() == '\n' || msg.back() == ' ')) msg.pop_back();
      return Status::Unavailable("cannot connect to PostgreSQL at " + RedactDatabaseUrl(url) +
                                 ": " + msg);
    }
    // Engine-neutral behaviour: UTC, and no notices on stderr.
    PQsetNoticeProcessor(c->conn_, [](void*, const char*) {}, nullptr);
    LASTCALL_RETURN_IF_ERROR(c->Simple("SET TIME ZONE 'UTC'"));
    return c;
  }

  bool healthy() const { return conn_ && !broken_ && PQstatus(conn_) == CONNECTION_OK; }
  bool pipelined() const { return pipeline_; }

  // Reconnects a broken connection (the cache of prepared statements goes with the old session;
  // so does pipeline mode, entered again).
  bool Reset() {
    bool pipeline = pipeline_;
    pipeline_ = false;
    pending_.clear();
    send_failure_ = Status::Ok();
    broken_ = false;
    PQreset(conn_);
    prepared_.clear();
    if (PQpipelineStatus(conn_) != PQ_PIPELINE_OFF) (void)PQexitPipelineMode(conn_);
    if (!healthy() || !Simple("SET TIME ZONE 'UTC'").ok()) return false;
    return !pipeline || EnterPipeline().ok();
  }

  // Switches to pipeline mode (see the class comment). From then on only Run, Send, Control and
  // WaitAll may be used.
  Status EnterPipeline() {
    if (PQenterPipelineMode(conn_) != 1) {
      return Status::Unavailable(std::string("postgres: cannot enter pipeline mode: ") +
                                 PQerrorMessage(conn_));
    }
    pipeline_ = true;
    return Status::Ok();
  }

  Status Simple(std::string_view sql) {
    PgResult res(PQexec(conn_, std::string(sql).c_str()));
    ExecStatusType st = res ? PQresultStatus(res.get()) : PGRES_FATAL_ERROR;
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
      NoteFailure(res.get());
      return PgFailure(res.get(), conn_, sql);
    }
    return Status::Ok();
  }

  // Whether a statement failed, since the last call, because the server broke a deadlock or a
  // serialization conflict (SQLSTATE 40P01, 40001): the unit of work that ran it succeeds when
  // run again in a new transaction, once the other side has committed. Clears the flag.
  bool TakeConflict() {
    bool c = conflict_;
    conflict_ = false;
    return c;
  }

  // Runs sql with params and returns its result; utility statements go through the simple
  // protocol (without a pipeline), the rest are prepared once per connection (per parameter type
  // signature) and then executed. In pipeline mode: waits for everything queued before it too,
  // and returns the failure of a statement sent before it (Send) instead of its own result.
  Result<PgResult> Run(std::string_view sql, const SqlParams& params) {
    if (pipeline_) {
      if (!send_failure_.ok()) return send_failure_;
      LASTCALL_RETURN_IF_ERROR(Queue(sql, params, Kind::kWaited));
      PgResult out;
      LASTCALL_RETURN_IF_ERROR(WaitAll(&out));
      return out;
    }
    if (params.empty() && IsUtility(sql)) {
      PgResult res(PQexec(conn_, std::string(sql).c_str()));
      return Check(std::move(res), sql);
    }
    Bound b;
    b.key = std::string(sql);
    LASTCALL_RETURN_IF_ERROR(Bind(params, b));
    auto it = prepared_.find(b.key);
    if (it == prepared_.end()) {
      if (prepared_.size() >= kMaxPrepared) {  // dynamic SQL should not grow a session without bound
        LASTCALL_RETURN_IF_ERROR(Simple("DEALLOCATE ALL"));
        prepared_.clear();
      }
      std::string name = "lc" + std::to_string(next_statement_++);
      std::string translated = ToPostgresPlaceholders(sql);
      PgResult prep(PQprepare(conn_, name.c_str(), translated.c_str(),
                              static_cast<int>(b.types.size()), b.types.data()));
      auto checked = Check(std::move(prep), sql);
      if (!checked.ok()) return checked.status();
      it = prepared_.emplace(std::move(b.key), std::move(name)).first;
    }
    PgResult res(PQexecPrepared(conn_, it->second.c_str(), static_cast<int>(b.values.size()),
                                b.values.data(), nullptr, nullptr, 0));
    return Check(std::move(res), sql);
  }

  // Pipeline mode: queues a statement of the current unit without waiting for its result. Its
  // failure, found at the next wait, is the unit's (see the class comment).
  Status Send(std::string_view sql, const SqlParams& params) {
    if (!send_failure_.ok()) return send_failure_;
    LASTCALL_RETURN_IF_ERROR(Queue(sql, params, Kind::kSent));
    // Results pile up on the server while nothing reads them; read them now and then.
    if (pending_.size() >= kMaxPending) return WaitAll(nullptr);
    return Status::Ok();
  }

  // Pipeline mode: queues a transaction-control statement (one, without parameters). Its failure,
  // found at the next wait, is the transaction's, not a unit's.
  Status Control(std::string_view sql) { return Queue(sql, {}, Kind::kControl); }

  // Pipeline mode: sends a Sync and reads every queued result. Returns the first failure (and
  // the statements after it were skipped). A failed Send becomes the sticky failure. *out, when
  // given, receives the result of the last waited statement.
  Status WaitAll(PgResult* out) {
    if (pending_.empty()) return Status::Ok();
    if (PQpipelineSync(conn_) != 1) return Broken("cannot send to the server");
    Status first;
    for (Pending& p : pending_) {
      PGresult* r = PQgetResult(conn_);
      if (r == nullptr) return Broken("the server sent no result");
      PgResult res(r);
      // The NULL that ends this statement's results.
      while (PGresult* more = PQgetResult(conn_)) PQclear(more);
      ExecStatusType st = PQresultStatus(res.get());
      if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) {
        if (p.kind == Kind::kWaited && out) *out = std::move(res);
        continue;
      }
      // Failed or skipped (PGRES_PIPELINE_ABORTED): a statement prepared here is not.
      if (!p.prepared_key.empty()) prepared_.erase(p.prepared_key);
      if (st == PGRES_PIPELINE_ABORTED || !first.ok()) continue;
      NoteFailure(res.get());
      first = PgFailure(res.get(), conn_, p.sql);
      if (p.kind == Kind::kSent) send_failure_ = first;
    }
    pending_.clear();
    for (;;) {  // the Sync's own result
      PGresult* r = PQgetResult(conn_);
      if (r == nullptr) return Broken("the server sent no sync");
      PgResult res(r);
      if (PQresultStatus(res.get()) == PGRES_PIPELINE_SYNC) break;
    }
    return first;
  }

  // The sticky failure of a statement sent with Send (Ok when none), cleared.
  Status TakeSendFailure() { return std::exchange(send_failure_, Status::Ok()); }

 private:
  PgConnection() = default;

  static constexpr size_t kMaxPrepared = 2000;
  static constexpr size_t kMaxPending = 256;

  enum class Kind { kWaited, kSent, kControl };
  struct Pending {
    Kind kind;
    std::string sql;           // the start of the statement, for error messages
    std::string prepared_key;  // set when this entry prepares a statement
  };
  struct Bound {
    std::string key;  // sql + type signature
    std::vector<Oid> types;
    std::vector<std::string> text;
    std::vector<const char*> values;
  };

  Status Bind(const SqlParams& params, Bound& b) {
    b.types.assign(params.size(), 0);
    b.text.resize(params.size());
    b.values.assign(params.size(), nullptr);
    b.key += '\0';
    for (size_t i = 0; i < params.size(); ++i) {
      const SqlValue& v = params[i];
      if (auto p = std::get_if<int64_t>(&v)) {
        b.types[i] = kInt8Oid;
        b.text[i] = std::to_string(*p);
        b.values[i] = b.text[i].c_str();
        b.key += 'i';
      } else if (auto s = std::get_if<std::string>(&v)) {
        if (s->find('\0') != std::string::npos) {
          return Status::Invalid("invalid_text", "text values must not hold NUL characters");
        }
        b.values[i] = s->c_str();
        b.key += 't';
      } else {
        b.key += 'n';
      }
    }
    return Status::Ok();
  }

  // Pipeline mode: queues sql (prepared first when new; a utility statement without parameters
  // as it is). libpq copies the parameters into its output buffer here.
  Status Queue(std::string_view sql, const SqlParams& params, Kind kind) {
    std::string head(sql.substr(0, 120));
    if (params.empty() && IsUtility(sql)) {
      std::string text(sql);
      if (PQsendQueryParams(conn_, text.c_str(), 0, nullptr, nullptr, nullptr, nullptr, 0) != 1) {
        return Broken("cannot queue a statement");
      }
      pending_.push_back({kind, std::move(head), {}});
      return Status::Ok();
    }
    Bound b;
    b.key = std::string(sql);
    LASTCALL_RETURN_IF_ERROR(Bind(params, b));
    auto it = prepared_.find(b.key);
    if (it == prepared_.end()) {
      if (prepared_.size() >= kMaxPrepared) {
        if (PQsendQueryParams(conn_, "DEALLOCATE ALL", 0, nullptr, nullptr, nullptr, nullptr, 0) != 1) {
          return Broken("cannot queue a statement");
        }
        pending_.push_back({kind, "DEALLOCATE ALL", {}});
        prepared_.clear();
      }
      std::string name = "lc" + std::to_string(next_statement_++);
      std::string translated = ToPostgresPlaceholders(sql);
      if (PQsendPrepare(conn_, name.c_str(), translated.c_str(), static_cast<int>(b.types.size()),
                        b.types.data()) != 1) {
        return Broken("cannot queue a statement");
      }
      pending_.push_back({kind, head, b.key});
      it = prepared_.emplace(b.key, std::move(name)).first;
    }
    if (PQsendQueryPrepared(conn_, it->second.c_str(), static_cast<int>(b.values.size()),
                            b.values.data(), nullptr, nullptr, 0) != 1) {
      return Broken("cannot queue a statement");
    }
    pending_.push_back({kind, std::move(head), {}});
    return Status::Ok();
  }

  // The connection can no longer be trusted to be in step with the server: it is reset before
  // the next batch (PostgresDatabase::Begin).
  Status Broken(std::string_view what) {
    broken_ = true;
    pending_.clear();
    std::string msg = std::string("postgres: ") + std::string(what) + ": " + PQerrorMessage(conn_);
    while (!msg.empty() && (msg.back() == '\n' || msg.back() == ' ')) msg.pop_back();
    return Status::Unavailable(msg);
  }

  Result<PgResult> Check(PgResult res, std::string_view sql) {
    ExecStatusType st = res ? PQresultStatus(res.get()) : PGRES_FATAL_ERROR;
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
      NoteFailure(res.get());
      return PgFailure(res.get(), conn_, sql);
    }
    return res;
  }

  void NoteFailure(const PGresult* res) {
    const char* state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : nullptr;
    if (state && (std::strcmp(state, "40P01") == 0 || std::strcmp(state, "40001") == 0)) {
      conflict_ = true;
    }
  }

  PGconn* conn_ = nullptr;
  bool conflict_ = false;  // see TakeConflict
  bool pipeline_ = false;
  bool broken_ = false;    // out of step with the server (see Broken)
  std::deque<Pending> pending_;  // pipeline mode: queued, results not read yet
  Status send_failure_;          // pipeline mode: see the class comment
  std::unordered_map<std::string, std::string> prepared_;  // sql + type signature -> name
  int64_t next_statement_ = 0;
};

namespace {

SqlValue Cell(const PGresult* res, int row, int col) {
  if (PQgetisnull(res, row, col)) return SqlNull{};
  const char* v = PQgetvalue(res, row, col);
  int len = PQgetlength(res, row, col);
  switch (PQftype(res, col)) {
    case kInt8Oid:
    case kInt4Oid:
    case kInt2Oid:
      return static_cast<int64_t>(std::strtoll(v, nullptr, 10));
    case kBoolOid:
      return static_cast<int64_t>(v[0] == 't' ? 1 : 0);
    case kNumericOid:
      // SUM over BIGINT is NUMERIC; whole values read as integers like SQLite's.
      if (std::memchr(v, '.', len) == nullptr) return static_cast<int64_t>(std::strtoll(v, nullptr, 10));
      return std::string(v, len);
    default:
      return std::string(v, len);
  }
}

class PostgresTx : public GroupCommitTx {
 public:
  PostgresTx(PgConnection* c, bool writable) : c_(c), writable_(writable) {}

  Result<int64_t> Exec(std::string_view sql, const SqlParams& params) override {
    // A savepoint's start or release changes no row and fails only in a transaction that already
    // failed: the pipelined writer sends it without waiting (its failure fails the unit).
    if (c_->pipelined() && params.empty() && IsSavepointStartOrRelease(sql)) {
      LASTCALL_RETURN_IF_ERROR(c_->Send(sql, params));
      return int64_t{0};
    }
    auto res = c_->Run(sql, params);
    if (!res.ok()) return res.status();
    const char* n = PQcmdTuples(res->get());
    return static_cast<int64_t>(n && *n ? std::strtoll(n, nullptr, 10) : 0);
  }

  Status Query(std::string_view sql, const SqlParams& params,
               const std::function<bool(const SqlRow&)>& on_row) override {
    auto res = c_->Run(sql, params);
    if (!res.ok()) return res.status();
    const PGresult* r = res->get();
    int rows = PQntuples(r);
    int cols = PQnfields(r);
    for (int i = 0; i < rows; ++i) {
      std::vector<SqlValue> values;
      values.reserve(cols);
      for (int j = 0; j < cols; ++j) values.push_back(Cell(r, i, j));
      if (!on_row(SqlRow(std::move(values)))) break;
    }
    return Status::Ok();
  }

  Status Send(std::string_view sql, const SqlParams& params) override {
    if (c_->pipelined()) return c_->Send(sql, params);
    return SqlTx::Send(sql, params);
  }

  bool writable() const override { return writable_; }
  SqlDialect dialect() const override { return SqlDialect::kPostgres; }

 private:
  PgConnection* c_;
  bool writable_;
};

}  // namespace

// A unit that keeps losing conflicts is reported (kUnavailable) after this many runs.
constexpr int kConflictAttempts = 5;

// One writer's connection, as its GroupCommitWriter drives it. The connection is in libpq pipeline
// mode: BEGIN and each unit's savepoints are queued without a round trip of their own, a unit's
// statements sent with SqlTx::Send are read with its savepoint's release (EndUnit's one round
// trip), and a unit whose sent statement failed is rolled back to its savepoint alone
// (TakeUnitFailure reports it). Begin reconnects a lost connection first. Retryable: a unit that
// lost a deadlock or serialization conflict (SQLSTATE 40P01, 40001) with another transaction
// (another node's, or another writer's). Every method runs on its writer thread.
class PgWriter : public GroupCommitConnection {
 public:
  static Result<std::unique_ptr<PgWriter>> Open(const std::string& url) {
    auto c = PgConnection::Open(url);
    if (!c.ok()) return c.status();
    LASTCALL_RETURN_IF_ERROR((*c)->EnterPipeline());
    auto w = std::unique_ptr<PgWriter>(new PgWriter(std::move(c).value()));
    return w;
  }

  Status Begin(bool unit_savepoints) override {
    if (!conn_->healthy() && !conn_->Reset()) {
      return Status::Unavailable("the connection to PostgreSQL is lost and reconnecting failed");
    }
    // Queued, not waited for: a failure shows at the first unit's first wait, and fails the batch.
    LASTCALL_RETURN_IF_ERROR(conn_->Control("BEGIN"));
    return unit_savepoints ? conn_->Control("SAVEPOINT unit") : Status::Ok();
  }

  GroupCommitTx& tx() override { return tx_; }

  Status EndUnit(bool keep, bool next) override {
    // The unit's sent statements are read in the same round trip as its savepoint's release.
    Status sent = conn_->TakeSendFailure();
    if (sent.ok() && keep) {
      LASTCALL_RETURN_IF_ERROR(conn_->Control("RELEASE SAVEPOINT unit"));
      if (next) LASTCALL_RETURN_IF_ERROR(conn_->Control("SAVEPOINT unit"));
      Status st = conn_->WaitAll(nullptr);
      sent = conn_->TakeSendFailure();
      if (sent.ok()) return st;
      // A statement the unit sent failed: the release and what followed were skipped, and the
      // transaction waits for the rollback below.
    }
    if (!sent.ok()) unit_failure_ = std::move(sent);
    LASTCALL_RETURN_IF_ERROR(conn_->Control("ROLLBACK TO SAVEPOINT unit"));
    LASTCALL_RETURN_IF_ERROR(conn_->Control("RELEASE SAVEPOINT unit"));
    if (next) LASTCALL_RETURN_IF_ERROR(conn_->Control("SAVEPOINT unit"));
    Status st = conn_->WaitAll(nullptr);
    (void)conn_->TakeSendFailure();  // the unit's statements after its failure: skipped
    return st;
  }

  Status TakeUnitFailure() override { return std::exchange(unit_failure_, Status::Ok()); }

  Status Commit() override {
    LASTCALL_RETURN_IF_ERROR(conn_->Control("COMMIT"));
    return conn_->WaitAll(nullptr);
  }

  void Rollback() override {
    unit_failure_ = Status::Ok();
    (void)conn_->WaitAll(nullptr);  // whatever is queued: skipped or undone below
    (void)conn_->TakeSendFailure();
    if (!conn_->healthy()) return;  // Begin reconnects
    if (conn_->Control("ROLLBACK").ok()) (void)conn_->WaitAll(nullptr);
  }

  bool TakeRetryable() override { return conn_->TakeConflict(); }

  // Ends the connection (and the session's locks with it). Only once the writer thread stopped.
  void Close() { conn_.reset(); }

 private:
  explicit PgWriter(std::unique_ptr<PgConnection> conn)
      : conn_(std::move(conn)), tx_(conn_.get(), true) {}

  std::unique_ptr<PgConnection> conn_;
  PostgresTx tx_;        // on conn_
  Status unit_failure_;  // see TakeUnitFailure
};

PostgresDatabase::PostgresDatabase(PostgresOptions options) : options_(std::move(options)) {}

Result<std::unique_ptr<PostgresDatabase>> PostgresDatabase::Open(const PostgresOptions& options) {
  if (options.max_batch < 1) return Status::Invalid("invalid_config", "max_batch must be at least 1");
  if (options.writers < 1 || options.writers > PostgresOptions::kMaxWriters) {
    return Status::Invalid("invalid_config", "writers must be 1 to " +
                                                 std::to_string(PostgresOptions::kMaxWriters));
  }
  auto db = std::unique_ptr<PostgresDatabase>(new PostgresDatabase(options));
  for (int i = 0; i < options.writers; ++i) {
    auto w = PgWriter::Open(options.url);
    if (!w.ok()) return w.status();
    db->writers_.push_back(std::move(w).value());
  }
  for (auto& w : db->writers_) {
    GroupCommitOptions group;
    group.max_batch = options.max_batch;
    group.retryable_attempts = kConflictAttempts;
    group.back_off_after_failure = true;  // a server that is down fails every batch: do not spin
    group.thread_name = "pg-writer";      // for ps, perf and the benchmark
    group.finisher_name = "pg-finish";
    db->groups_.push_back(std::make_unique<GroupCommitWriter>(*w, std::move(group)));
  }
  return db;
}

PostgresDatabase::~PostgresDatabase() { Close(); }

bool PostgresDatabase::SetBatchTail(BatchTail* tail) {
  if (groups_.size() != 1) return false;
  groups_[0]->SetTail(tail);
  return true;
}

void PostgresDatabase::Close() {
  for (auto& g : groups_) g->Stop();
  for (auto& w : writers_) w->Close();
  std::lock_guard<std::mutex> l(readers_mu_);
  readers_.clear();
}

void PostgresDatabase::Write(WriteFn fn, WriteDone done) {
  size_t i = groups_.size() == 1
                 ? 0
                 : next_writer_.fetch_add(1, std::memory_order_relaxed) % groups_.size();
  groups_[i]->Write(std::move(fn), std::move(done));
}

void PostgresDatabase::WriteInSession(WriteFn fn, WriteDone done) {
  groups_[0]->Write(std::move(fn), std::move(done));
}

void PostgresDatabase::WriteKeyed(std::string_view key, WriteFn fn, WriteDone done) {
  groups_[std::hash<std::string_view>{}(key) % groups_.size()]->Write(std::move(fn),
                                                                     std::move(done));
}

Result<std::unique_ptr<PgConnection>> PostgresDatabase::TakeReader() {
  {
    std::lock_guard<std::mutex> l(readers_mu_);
    while (!readers_.empty()) {
      auto c = std::move(readers_.back());
      readers_.pop_back();
      if (c->healthy()) return c;
    }
  }
  return PgConnection::Open(options_.url);
}

void PostgresDatabase::ReturnReader(std::unique_ptr<PgConnection> c) {
  if (!c->healthy()) return;
  std::lock_guard<std::mutex> l(readers_mu_);
  if (static_cast<int>(readers_.size()) < options_.max_idle_readers) readers_.push_back(std::move(c));
}

Status PostgresDatabase::Read(const ReadFn& fn) {
  auto c = TakeReader();
  if (!c.ok()) return c.status();
  Status st = (*c)->Simple("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY");
  if (!st.ok()) return st;
  PostgresTx tx(c->get(), false);
  try {
    st = fn(tx);
  } catch (const std::exception& e) {
    st = Status::Internal(std::string("read threw: ") + e.what());
  }
  // Read-only: ending it either way keeps nothing; ROLLBACK also ends a failed one.
  if ((*c)->Simple("ROLLBACK").ok()) ReturnReader(std::move(c).value());
  return st;
}

}  // namespace lastcall
