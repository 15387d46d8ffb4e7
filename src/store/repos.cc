#include "store/repos.h"

#include <algorithm>

#include "store/row_mapping.h"

namespace lastcall {
namespace {

Status AsStatus(const Result<int64_t>& r) { return r.ok() ? Status::Ok() : r.status(); }

SqlValue Opt(const std::optional<std::string>& s) {
  return s ? SqlValue(*s) : SqlValue(SqlNull{});
}

const RowMapping<Account>& Accounts() {
  static const RowMapping<Account> m({{"id", &Account::id},
                                      {"user_id", &Account::user_id},
                                      {"name", &Account::name},
                                      {"currency", &Account::currency},
                                      {"balance_units", &Account::balance},
                                      {"transaction_count", &Account::transaction_count},
                                      {"last_transaction_date", &Account::last_transaction_date},
                                      {"created_at", &Account::created_at}});
  return m;
}

const RowMapping<FileRecord>& Files() {
  static const RowMapping<FileRecord> m({{"id", &FileRecord::id},
                                         {"user_id", &FileRecord::user_id},
                                         {"account_id", &FileRecord::account_id},
                                         {"name", &FileRecord::name},
                                         {"content_type", &FileRecord::content_type},
                                         {"size_bytes", &FileRecord::size_bytes},
                                         {"sha256", &FileRecord::sha256},
                                         {"blob_key", &FileRecord::blob_key},
                                         {"transaction_count", &FileRecord::transaction_count},
                                         {"status", &FileRecord::status},
                                         {"coordination_id", &FileRecord::coordination_id},
                                         {"uploaded_at", &FileRecord::uploaded_at}});
  return m;
}

const RowMapping<Transaction>& Transactions() {
  static const RowMapping<Transaction> m({{"id", &Transaction::id},
                                          {"user_id", &Transaction::user_id},
                                          {"account_id", &Transaction::account_id},
                                          {"file_id", &Transaction::file_id},
                                          {"row_no", &Transaction::row_no},
                                          {"date", &Transaction::date},
                                          {"description", &Transaction::description},
                                          {"amount_units", &Transaction::amount},
                                          {"currency", &Transaction::currency},
                                          {"merchant", &Transaction::merchant},
                                          {"category", &Transaction::category},
                                          {"category_source", &Transaction::category_source}});
  return m;
}

}  // namespace

Status InsertAccount(SqlTx& tx, const Account& a) {
  return AsStatus(tx.Exec("INSERT INTO accounts (" + Accounts().columns() + ") VALUES (" +
                              Accounts().placeholders() + ")",
                          Accounts().Values(a)));
}

Result<std::optional<Account>> FindAccount(SqlTx& tx, const std::string& user_id,
                                           const std::string& account_id) {
  return Accounts().One(tx,
                        "SELECT " + Accounts().columns() +
                            " FROM accounts WHERE id = ? AND user_id = ?",
                        {account_id, user_id});
}

Result<std::vector<Account>> ListAccounts(SqlTx& tx, const std::string& user_id) {
  return Accounts().All(tx,
                        "SELECT " + Accounts().columns() +
                            " FROM accounts WHERE user_id = ? ORDER BY created_at, id",
                        {user_id});
}

Status AddToAccount(SqlTx& tx, const std::string& account_id, Money sum, int64_t count,
                    const std::optional<std::string>& max_date) {
  // Locked until commit: the new balance is computed here, and another node may be moving the
  // same account (found by the two-node test as a lost update).
  auto row = tx.QueryOne(std::string("SELECT balance_units, last_transaction_date FROM accounts "
                                     "WHERE id = ?") +
                             std::string(LockRowsClause(tx)),
                         {account_id});
  if (!row.ok()) return row.status();
  if (!*row) return Status::NotFound("account " + account_id + " not found");
  Money balance;
  if (!Money::CheckedAdd(Money::FromUnits((*row)->Int(0)), sum, &balance)) {
    return Status::Unprocessable("amount_out_of_range",
                                 "the account balance would exceed the supported range");
  }
  std::optional<std::string> last = (*row)->OptText(1);
  if (max_date && (!last || *max_date > *last)) last = max_date;
  return AsStatus(tx.Exec(
      "UPDATE accounts SET balance_units = ?, transaction_count = transaction_count + ?, "
      "last_transaction_date = ? WHERE id = ?",
      {balance.units(), count, Opt(last), account_id}));
}

Status InsertFile(SqlTx& tx, const FileRecord& f) {
  return AsStatus(tx.Exec("INSERT INTO files (" + Files().columns() + ", seq) VALUES (" +
                              Files().placeholders() +
                              ", (SELECT COALESCE(MAX(seq), 0) + 1 FROM files))",
                          Files().Values(f)));
}

Result<std::optional<FileRecord>> FindFile(SqlTx& tx, const std::string& user_id,
                                           const std::string& file_id) {
  return Files().One(tx, "SELECT " + Files().columns() + " FROM files WHERE id = ? AND user_id = ?",
                     {file_id, user_id});
}

Result<std::optional<FileRecord>> FindFileById(SqlTx& tx, const std::string& file_id) {
  return Files().One(tx, "SELECT " + Files().columns() + " FROM files WHERE id = ?", {file_id});
}

Result<std::optional<FileRecord>> FindFileForDeletion(SqlTx& tx, const std::string& file_id) {
  return Files().One(tx,
                     "SELECT " + Files().columns() + " FROM files WHERE id = ?" +
                         std::string(LockRowsClause(tx)),
                     {file_id});
}

Result<std::vector<FileRecord>> ListFiles(SqlTx& tx, const std::string& user_id) {
  return Files().All(tx, "SELECT " + Files().columns() + " FROM files WHERE user_id = ? ORDER BY seq DESC",
                     {user_id});
}

Result<bool> MarkDeletionRequested(SqlTx& tx, const std::string& file_id,
                                   const std::string& coordination_id) {
  auto r = tx.Exec(
      "UPDATE files SET status = ?, coordination_id = ? WHERE id = ? AND status = ?",
      {std::string(kFileDeletionRequested), coordination_id, file_id, std::string(kFileActive)});
  if (!r.ok()) return r.status();
  return *r == 1;
}

Result<bool> ReactivateFile(SqlTx& tx, const std::string& file_id,
                            const std::string& coordination_id) {
  auto r = tx.Exec(
      "UPDATE files SET status = ?, coordination_id = NULL WHERE id = ? AND status = ? AND "
      "coordination_id = ?",
      {std::string(kFileActive), file_id, std::string(kFileDeletionRequested), coordination_id});
  if (!r.ok()) return r.status();
  return *r == 1;
}

Status InsertTransactions(SqlTx& tx, const std::vector<Transaction>& rows) {
  // Multi-row statements: one round trip per kChunk rows on a networked engine (PostgreSQL),
  // fewer statement steps on SQLite. 12 parameters a row stays far below both engines' limits.
  constexpr size_t kChunk = 64;
  auto statement = [](size_t n) {
    std::string sql = "INSERT INTO transactions (" + Transactions().columns() + ") VALUES ";
    for (size_t i = 0; i < n; ++i) {
      sql += i ? ", (" : "(";
      sql += Transactions().placeholders() + ")";
    }
    return sql;
  };
  static const std::string full = statement(kChunk);
  SqlParams params;
  for (size_t start = 0; start < rows.size(); start += kChunk) {
    size_t n = std::min(kChunk, rows.size() - start);
    params.clear();
    for (size_t i = start; i < start + n; ++i) Transactions().AppendValues(rows[i], params);
    auto r = tx.Exec(n == kChunk ? full : statement(n), params);
    if (!r.ok()) return r.status();
  }
  return Status::Ok();
}

Result<std::vector<Transaction>> ListFileTransactions(SqlTx& tx, const std::string& file_id) {
  return Transactions().All(
      tx, "SELECT " + Transactions().columns() + " FROM transactions WHERE file_id = ? ORDER BY row_no",
      {file_id});
}

Result<std::vector<Transaction>> ListUserTransactions(
    SqlTx& tx, const std::string& user_id, const std::optional<std::string>& account_id) {
  if (account_id) {
    return Transactions().All(
        tx,
        "SELECT " + Transactions().columns() +
            " FROM transactions WHERE account_id = ? AND user_id = ? ORDER BY date, file_id, row_no",
        {*account_id, user_id});
  }
  return Transactions().All(tx,
                            "SELECT " + Transactions().columns() +
                                " FROM transactions WHERE user_id = ? ORDER BY date, file_id, row_no",
                            {user_id});
}

Result<std::optional<Transaction>> FindTransaction(SqlTx& tx, const std::string& user_id,
                                                   const std::string& transaction_id) {
  return Transactions().One(
      tx, "SELECT " + Transactions().columns() + " FROM transactions WHERE id = ? AND user_id = ?",
      {transaction_id, user_id});
}

Status SetCategory(SqlTx& tx, const std::string& transaction_id, const std::string& category,
                   const std::string& source) {
  return AsStatus(tx.Exec("UPDATE transactions SET category = ?, category_source = ? WHERE id = ?",
                          {category, source, transaction_id}));
}

Status SetCategories(SqlTx& tx, const std::vector<std::string>& transaction_ids,
                     const std::string& category, const std::string& source) {
  constexpr size_t kChunk = 256;
  SqlParams params;
  for (size_t start = 0; start < transaction_ids.size(); start += kChunk) {
    size_t n = std::min(kChunk, transaction_ids.size() - start);
    std::string sql = "UPDATE transactions SET category = ?, category_source = ? WHERE id IN (";
    params = {category, source};
    for (size_t i = 0; i < n; ++i) {
      sql += i ? ", ?" : "?";
      params.push_back(transaction_ids[start + i]);
    }
    sql += ")";
    LASTCALL_RETURN_IF_ERROR(AsStatus(tx.Exec(sql, params)));
  }
  return Status::Ok();
}

Result<int64_t> DeleteFileData(SqlTx& tx, const FileRecord& file, const DeletionRecord& record) {
  // One aggregate over the file's rows, then one set-based delete: complete whatever the size.
  // (A DELETE ... RETURNING of the amounts saves PostgreSQL a round trip but cost SQLite's writer
  // about 12 us more per deletion than these two statements.)
  auto agg = tx.QueryOne("SELECT COUNT(*), COALESCE(SUM(amount_units), 0) FROM transactions "
                         "WHERE file_id = ?",
                         {file.id});
  if (!agg.ok()) return agg.status();
  int64_t count = (*agg)->Int(0);
  int64_t sum = (*agg)->Int(1);
  auto deleted = tx.Exec("DELETE FROM transactions WHERE file_id = ?", {file.id});
  if (!deleted.ok()) return deleted.status();
  if (*deleted != count) return Status::Internal("transaction count changed during deletion");

  // Locked before the balance is read and the latest date recomputed, so that two nodes deleting
  // files of one account at once do not lose each other's update.
  auto acct = tx.QueryOne(std::string("SELECT balance_units FROM accounts WHERE id = ?") +
                              std::string(LockRowsClause(tx)),
                          {file.account_id});
  if (!acct.ok()) return acct.status();
  if (*acct) {
    Money balance;
    if (!Money::CheckedAdd(Money::FromUnits((*acct)->Int(0)), Money::FromUnits(-sum), &balance)) {
      return Status::Internal("account balance overflow while deleting");
    }
    auto last = tx.QueryOne("SELECT MAX(date) FROM transactions WHERE account_id = ?",
                            {file.account_id});
    if (!last.ok()) return last.status();
    // The writes below fail only with the store itself (the rows are locked, the tombstone's
    // key is the file's, which exists once): sent without waiting where the engine can.
    LASTCALL_RETURN_IF_ERROR(tx.Send(
        "UPDATE accounts SET balance_units = ?, transaction_count = transaction_count - ?, "
        "last_transaction_date = ? WHERE id = ?",
        {balance.units(), count, (*last)->IsNull(0) ? SqlValue(SqlNull{}) : SqlValue((*last)->Text(0)),
         file.account_id}));
  }
  LASTCALL_RETURN_IF_ERROR(tx.Send(
      "INSERT INTO tombstones (file_id, user_id, account_id, coordination_id, sha256, requested_at, "
      "deleted_at, outcome, transactions_deleted) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
      {file.id, file.user_id, file.account_id, Opt(record.coordination_id), file.sha256,
       record.requested_at ? SqlValue(*record.requested_at) : SqlValue(SqlNull{}), record.now,
       record.outcome, count}));
  LASTCALL_RETURN_IF_ERROR(
      tx.Send("INSERT INTO blob_gc (blob_key, queued_at) VALUES (?, ?) ON CONFLICT DO NOTHING",
              {file.blob_key, record.now}));
  LASTCALL_RETURN_IF_ERROR(tx.Send("DELETE FROM files WHERE id = ?", {file.id}));
  return count;
}

Result<std::vector<std::string>> ListBlobGc(SqlTx& tx, int limit) {
  std::vector<std::string> keys;
  Status st = tx.Query("SELECT blob_key FROM blob_gc ORDER BY queued_at LIMIT ?",
                       {static_cast<int64_t>(limit)}, [&](const SqlRow& r) {
                         keys.push_back(r.Text(0));
                         return true;
                       });
  if (!st.ok()) return st;
  return keys;
}

Status RemoveBlobGc(SqlTx& tx, const std::string& blob_key) {
  return AsStatus(tx.Exec("DELETE FROM blob_gc WHERE blob_key = ?", {blob_key}));
}

Result<bool> BlobReferenced(SqlTx& tx, const std::string& blob_key) {
  auto r = tx.QueryOne("SELECT 1 FROM files WHERE blob_key = ?", {blob_key});
  if (!r.ok()) return r.status();
  return r->has_value();
}

namespace {
// Every running node holds this session advisory lock shared (PostgreSQL); "lastcall-node".
constexpr int64_t kNodesLockKey = 0x6c632d6e6f6465;
}  // namespace

Result<bool> BeginSoloStart(SqlTx& tx) {
  if (tx.dialect() != SqlDialect::kPostgres) return true;
  auto solo = tx.QueryOne("SELECT pg_try_advisory_lock(?)", {kNodesLockKey});
  if (!solo.ok()) return solo.status();
  if (*solo && (*solo)->Int(0) == 1) return true;
  // Others run: join them (this waits while a starting node holds the lock exclusively).
  auto joined = tx.QueryOne("SELECT pg_advisory_lock_shared(?)", {kNodesLockKey});
  if (!joined.ok()) return joined.status();
  return false;
}

Status EndSoloStart(SqlTx& tx) {
  if (tx.dialect() != SqlDialect::kPostgres) return Status::Ok();
  auto shared = tx.QueryOne("SELECT pg_advisory_lock_shared(?)", {kNodesLockKey});
  if (!shared.ok()) return shared.status();
  auto released = tx.QueryOne("SELECT pg_advisory_unlock(?)", {kNodesLockKey});
  return released.ok() ? Status::Ok() : released.status();
}

}  // namespace lastcall
