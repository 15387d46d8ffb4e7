#include "store/repos.h"

namespace lastcall {
namespace {

Status AsStatus(const Result<int64_t>& r) { return r.ok() ? Status::Ok() : r.status(); }

SqlValue Opt(const std::optional<std::string>& s) {
  return s ? SqlValue(*s) : SqlValue(SqlNull{});
}

constexpr char kAccountColumns[] =
    "id, user_id, name, currency, balance_units, transaction_count, last_transaction_date, "
    "created_at";

Account ReadAccount(const SqlRow& r) {
  Account a;
  a.id = r.Text(0);
  a.user_id = r.Text(1);
  a.name = r.Text(2);
  a.currency = r.Text(3);
  a.balance = Money::FromUnits(r.Int(4));
  a.transaction_count = r.Int(5);
  a.last_transaction_date = r.OptText(6);
  a.created_at = r.Int(7);
  return a;
}

constexpr char kFileColumns[] =
    "id, user_id, account_id, name, content_type, size_bytes, sha256, blob_key, "
    "transaction_count, status, coordination_id, uploaded_at";

FileRecord ReadFile(const SqlRow& r) {
  FileRecord f;
  f.id = r.Text(0);
  f.user_id = r.Text(1);
  f.account_id = r.Text(2);
  f.name = r.Text(3);
  f.content_type = r.Text(4);
  f.size_bytes = r.Int(5);
  f.sha256 = r.Text(6);
  f.blob_key = r.Text(7);
  f.transaction_count = r.Int(8);
  f.status = r.Text(9);
  f.coordination_id = r.OptText(10);
  f.uploaded_at = r.Int(11);
  return f;
}

constexpr char kTxColumns[] =
    "id, user_id, account_id, file_id, row_no, date, description, amount_units, currency, "
    "merchant, category, category_source";

Transaction ReadTx(const SqlRow& r) {
  Transaction t;
  t.id = r.Text(0);
  t.user_id = r.Text(1);
  t.account_id = r.Text(2);
  t.file_id = r.Text(3);
  t.row_no = r.Int(4);
  t.date = r.Text(5);
  t.description = r.Text(6);
  t.amount = Money::FromUnits(r.Int(7));
  t.currency = r.Text(8);
  t.merchant = r.OptText(9);
  t.category = r.OptText(10);
  t.category_source = r.OptText(11);
  return t;
}

template <typename T, typename F>
Result<std::vector<T>> Collect(SqlTx& tx, const std::string& sql, const SqlParams& params, F read) {
  std::vector<T> out;
  Status st = tx.Query(sql, params, [&](const SqlRow& r) {
    out.push_back(read(r));
    return true;
  });
  if (!st.ok()) return st;
  return out;
}

template <typename T, typename F>
Result<std::optional<T>> One(SqlTx& tx, const std::string& sql, const SqlParams& params, F read) {
  auto row = tx.QueryOne(sql, params);
  if (!row.ok()) return row.status();
  if (!*row) return std::optional<T>();
  return std::optional<T>(read(**row));
}

}  // namespace

Status InsertAccount(SqlTx& tx, const Account& a) {
  return AsStatus(tx.Exec(std::string("INSERT INTO accounts (") + kAccountColumns +
                              ") VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                          {a.id, a.user_id, a.name, a.currency, a.balance.units(),
                           a.transaction_count, Opt(a.last_transaction_date), a.created_at}));
}

Result<std::optional<Account>> FindAccount(SqlTx& tx, const std::string& user_id,
                                           const std::string& account_id) {
  return One<Account>(tx,
                      std::string("SELECT ") + kAccountColumns +
                          " FROM accounts WHERE id = ? AND user_id = ?",
                      {account_id, user_id}, ReadAccount);
}

Result<std::vector<Account>> ListAccounts(SqlTx& tx, const std::string& user_id) {
  return Collect<Account>(tx,
                          std::string("SELECT ") + kAccountColumns +
                              " FROM accounts WHERE user_id = ? ORDER BY created_at, id",
                          {user_id}, ReadAccount);
}

Status AddToAccount(SqlTx& tx, const std::string& account_id, Money sum, int64_t count,
                    const std::optional<std::string>& max_date) {
  auto row = tx.QueryOne("SELECT balance_units, last_transaction_date FROM accounts WHERE id = ?",
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
  return AsStatus(tx.Exec(
      std::string("INSERT INTO files (") + kFileColumns +
          ", seq) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, "
          "(SELECT COALESCE(MAX(seq), 0) + 1 FROM files))",
      {f.id, f.user_id, f.account_id, f.name, f.content_type, f.size_bytes, f.sha256, f.blob_key,
       f.transaction_count, f.status, Opt(f.coordination_id), f.uploaded_at}));
}

Result<std::optional<FileRecord>> FindFile(SqlTx& tx, const std::string& user_id,
                                           const std::string& file_id) {
  return One<FileRecord>(tx,
                         std::string("SELECT ") + kFileColumns +
                             " FROM files WHERE id = ? AND user_id = ?",
                         {file_id, user_id}, ReadFile);
}

Result<std::optional<FileRecord>> FindFileById(SqlTx& tx, const std::string& file_id) {
  return One<FileRecord>(tx, std::string("SELECT ") + kFileColumns + " FROM files WHERE id = ?",
                         {file_id}, ReadFile);
}

Result<std::vector<FileRecord>> ListFiles(SqlTx& tx, const std::string& user_id) {
  return Collect<FileRecord>(tx,
                             std::string("SELECT ") + kFileColumns +
                                 " FROM files WHERE user_id = ? ORDER BY seq DESC",
                             {user_id}, ReadFile);
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
  static const std::string sql = std::string("INSERT INTO transactions (") + kTxColumns +
                                 ") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";
  for (const Transaction& t : rows) {
    auto r = tx.Exec(sql, {t.id, t.user_id, t.account_id, t.file_id, t.row_no, t.date,
                           t.description, t.amount.units(), t.currency, Opt(t.merchant),
                           Opt(t.category), Opt(t.category_source)});
    if (!r.ok()) return r.status();
  }
  return Status::Ok();
}

Result<std::vector<Transaction>> ListFileTransactions(SqlTx& tx, const std::string& file_id) {
  return Collect<Transaction>(tx,
                              std::string("SELECT ") + kTxColumns +
                                  " FROM transactions WHERE file_id = ? ORDER BY row_no",
                              {file_id}, ReadTx);
}

Result<std::vector<Transaction>> ListUserTransactions(
    SqlTx& tx, const std::string& user_id, const std::optional<std::string>& account_id) {
  if (account_id) {
    return Collect<Transaction>(
        tx,
        std::string("SELECT ") + kTxColumns +
            " FROM transactions WHERE account_id = ? AND user_id = ? ORDER BY date, file_id, row_no",
        {*account_id, user_id}, ReadTx);
  }
  return Collect<Transaction>(tx,
                              std::string("SELECT ") + kTxColumns +
                                  " FROM transactions WHERE user_id = ? ORDER BY date, file_id, row_no",
                              {user_id}, ReadTx);
}

Result<std::optional<Transaction>> FindTransaction(SqlTx& tx, const std::string& user_id,
                                                   const std::string& transaction_id) {
  return One<Transaction>(tx,
                          std::string("SELECT ") + kTxColumns +
                              " FROM transactions WHERE id = ? AND user_id = ?",
                          {transaction_id, user_id}, ReadTx);
}

Status SetCategory(SqlTx& tx, const std::string& transaction_id, const std::string& category,
                   const std::string& source) {
  return AsStatus(tx.Exec("UPDATE transactions SET category = ?, category_source = ? WHERE id = ?",
                          {category, source, transaction_id}));
}

Result<int64_t> DeleteFileData(SqlTx& tx, const FileRecord& file, const DeletionRecord& record) {
  auto present = tx.QueryOne("SELECT 1 FROM files WHERE id = ?", {file.id});
  if (!present.ok()) return present.status();
  if (!*present) return Status::NotFound("file " + file.id + " is already deleted");

  // One aggregate over the file's rows, then one set-based delete: complete whatever the size.
  auto agg = tx.QueryOne("SELECT COUNT(*), COALESCE(SUM(amount_units), 0) FROM transactions "
                         "WHERE file_id = ?",
                         {file.id});
  if (!agg.ok()) return agg.status();
  int64_t count = (*agg)->Int(0);
  int64_t sum = (*agg)->Int(1);
  auto deleted = tx.Exec("DELETE FROM transactions WHERE file_id = ?", {file.id});
  if (!deleted.ok()) return deleted.status();
  if (*deleted != count) return Status::Internal("transaction count changed during deletion");

  auto acct = tx.QueryOne("SELECT balance_units FROM accounts WHERE id = ?", {file.account_id});
  if (!acct.ok()) return acct.status();
  if (*acct) {
    Money balance;
    if (!Money::CheckedAdd(Money::FromUnits((*acct)->Int(0)), Money::FromUnits(-sum), &balance)) {
      return Status::Internal("account balance overflow while deleting");
    }
    auto last = tx.QueryOne("SELECT MAX(date) FROM transactions WHERE account_id = ?",
                            {file.account_id});
    if (!last.ok()) return last.status();
    LASTCALL_RETURN_IF_ERROR(AsStatus(tx.Exec(
        "UPDATE accounts SET balance_units = ?, transaction_count = transaction_count - ?, "
        "last_transaction_date = ? WHERE id = ?",
        {balance.units(), count, (*last)->IsNull(0) ? SqlValue(SqlNull{}) : SqlValue((*last)->Text(0)),
         file.account_id})));
  }
  LASTCALL_RETURN_IF_ERROR(AsStatus(tx.Exec(
      "INSERT INTO tombstones (file_id, user_id, account_id, coordination_id, sha256, requested_at, "
      "deleted_at, outcome, transactions_deleted) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
      {file.id, file.user_id, file.account_id, Opt(record.coordination_id), file.sha256,
       record.requested_at ? SqlValue(*record.requested_at) : SqlValue(SqlNull{}), record.now,
       record.outcome, count})));
  LASTCALL_RETURN_IF_ERROR(AsStatus(
      tx.Exec("INSERT INTO blob_gc (blob_key, queued_at) VALUES (?, ?) ON CONFLICT DO NOTHING",
              {file.blob_key, record.now})));
  LASTCALL_RETURN_IF_ERROR(AsStatus(tx.Exec("DELETE FROM files WHERE id = ?", {file.id})));
  return count;
}

Result<std::vector<std::string>> ListBlobGc(SqlTx& tx, int limit) {
  return Collect<std::string>(tx, "SELECT blob_key FROM blob_gc ORDER BY queued_at LIMIT ?",
                              {static_cast<int64_t>(limit)},
                              [](const SqlRow& r) { return r.Text(0); });
}

Status RemoveBlobGc(SqlTx& tx, const std::string& blob_key) {
  return AsStatus(tx.Exec("DELETE FROM blob_gc WHERE blob_key = ?", {blob_key}));
}

Result<bool> BlobReferenced(SqlTx& tx, const std::string& blob_key) {
  auto r = tx.QueryOne("SELECT 1 FROM files WHERE blob_key = ?", {blob_key});
  if (!r.ok()) return r.status();
  return r->has_value();
}

}  // namespace lastcall
