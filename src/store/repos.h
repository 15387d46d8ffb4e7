// Repositories: lastcall's records read and written through a SqlTx, in portable SQL. Each function
// does one thing inside the caller's transaction, so a caller composes several into one atomic
// unit (an import, a deletion, a consumer's effects plus its outbox event).
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "domain/model.h"
#include "store/sql.h"

namespace lastcall {

// ---- accounts ----
Status InsertAccount(SqlTx& tx, const Account& a);
// The account when it exists and belongs to user_id; nullopt otherwise (never tells which).
Result<std::optional<Account>> FindAccount(SqlTx& tx, const std::string& user_id,
                                           const std::string& account_id);
Result<std::vector<Account>> ListAccounts(SqlTx& tx, const std::string& user_id);
// Adds a file's rows to the account's derived values (balance, count, last date). Errors:
// kUnprocessable "amount_out_of_range" if the balance would overflow.
Status AddToAccount(SqlTx& tx, const std::string& account_id, Money sum, int64_t count,
                    const std::optional<std::string>& max_date);

// ---- files ----
Status InsertFile(SqlTx& tx, const FileRecord& f);
Result<std::optional<FileRecord>> FindFile(SqlTx& tx, const std::string& user_id,
                                           const std::string& file_id);
Result<std::optional<FileRecord>> FindFileById(SqlTx& tx, const std::string& file_id);
// FindFileById with the row locked until the transaction ends (PostgreSQL), as DeleteFileData
// needs it: of two nodes deleting the same file at once, the second waits here and then finds it
// gone (nullopt).
Result<std::optional<FileRecord>> FindFileForDeletion(SqlTx& tx, const std::string& file_id);
Result<std::vector<FileRecord>> ListFiles(SqlTx& tx, const std::string& user_id);
// Marks the file deletion_requested with the coordination id, only if it is still active.
// Returns true when this call changed it.
Result<bool> MarkDeletionRequested(SqlTx& tx, const std::string& file_id,
                                   const std::string& coordination_id);

// A cancelled deletion: the file becomes active again (coordination_id cleared), only if it is
// still deletion_requested by that coordination. Returns true when this call changed it.
Result<bool> ReactivateFile(SqlTx& tx, const std::string& file_id,
                            const std::string& coordination_id);

// ---- transactions ----
Status InsertTransactions(SqlTx& tx, const std::vector<Transaction>& rows);
Result<std::vector<Transaction>> ListFileTransactions(SqlTx& tx, const std::string& file_id);
// The user's transactions, of one account when account_id is set, ordered by date then row.
Result<std::vector<Transaction>> ListUserTransactions(SqlTx& tx, const std::string& user_id,
                                                      const std::optional<std::string>& account_id);
Result<std::optional<Transaction>> FindTransaction(SqlTx& tx, const std::string& user_id,
                                                   const std::string& transaction_id);
Status SetCategory(SqlTx& tx, const std::string& transaction_id, const std::string& category,
                   const std::string& source);
// The same for many transactions at once (a few statements, not one per row).
Status SetCategories(SqlTx& tx, const std::vector<std::string>& transaction_ids,
                     const std::string& category, const std::string& source);

// ---- deletion: the one place a file's data goes ----
struct DeletionRecord {
  std::optional<std::string> coordination_id;
  std::optional<WallMillis> requested_at;
  std::string outcome;  // "synchronous", "all_completed", "timed_out" (stored)
  WallMillis now = 0;
};
// Deletes the file's transactions (all of them, whatever their number) and its row, moves the
// account's derived values in the same transaction, leaves a tombstone (no user content) and
// queues the blob for removal after commit (blob_gc). Returns the number of transactions deleted.
// file: as FindFileForDeletion returned it in this transaction (the row is there and locked).
Result<int64_t> DeleteFileData(SqlTx& tx, const FileRecord& file, const DeletionRecord& record);

// ---- blobs queued for removal ----
Result<std::vector<std::string>> ListBlobGc(SqlTx& tx, int limit);
Status RemoveBlobGc(SqlTx& tx, const std::string& blob_key);
// True when some file row references the key (used to collect orphans at start).
Result<bool> BlobReferenced(SqlTx& tx, const std::string& blob_key);

// Start-up work that is only safe while no other node runs on the same database (the orphan blob
// sweep: another node's upload in flight has its blob but no file row yet). On PostgreSQL every
// running node holds a shared session-level advisory lock on one of its writer connections
// (released when that connection ends), so both run as units of Database::WriteInSession.
// BeginSoloStart returns true when it took that lock exclusively (no other node runs; other nodes
// starting now wait), false when other nodes run (and then it has joined them, holding the lock
// shared). After a true, EndSoloStart turns the hold into a shared one. On SQLite (one process per
// database file): true, and EndSoloStart does nothing.
Result<bool> BeginSoloStart(SqlTx& tx);
Status EndSoloStart(SqlTx& tx);

}  // namespace lastcall
