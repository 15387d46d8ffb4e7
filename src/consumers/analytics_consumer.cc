#include "consumers/analytics_consumer.h"

#include <map>

#include "consumers/categorize.h"
#include "store/repos.h"

namespace lastcall {

Status AddToMonthly(SqlTx& tx, const std::string& user_id, const std::string& month,
                    const std::string& category, int64_t units, int64_t count) {
  // The row exists and is locked before it is read, so that nodes sharing one database (handling
  // two files of one user at once) never lose each other's update, also for a new row: the
  // INSERT waits for another transaction inserting the same key.
  auto seed = tx.Exec("INSERT INTO analytics_monthly (user_id, month, category, total_units, count) "
                      "VALUES (?, ?, ?, 0, 0) ON CONFLICT (user_id, month, category) DO NOTHING",
                      {user_id, month, category});
  if (!seed.ok()) return seed.status();
  auto row = tx.QueryOne(
      std::string("SELECT total_units, count FROM analytics_monthly WHERE user_id = ? AND "
                  "month = ? AND category = ?") +
          std::string(LockRowsClause(tx)),
      {user_id, month, category});
  if (!row.ok()) return row.status();
  int64_t total = *row ? (*row)->Int(0) : 0;
  int64_t n = *row ? (*row)->Int(1) : 0;
  if (__builtin_add_overflow(total, units, &total) || __builtin_add_overflow(n, count, &n)) {
    return Status::Unprocessable("amount_out_of_range", "monthly total out of range");
  }
  Result<int64_t> r = n <= 0 ? tx.Exec("DELETE FROM analytics_monthly WHERE user_id = ? AND "
                                       "month = ? AND category = ?",
                                       {user_id, month, category})
                             : tx.Exec("UPDATE analytics_monthly SET total_units = ?, count = ? "
                                       "WHERE user_id = ? AND month = ? AND category = ?",
                                       {total, n, user_id, month, category});
  return r.ok() ? Status::Ok() : r.status();
}

namespace {

// Takes the file's whole contribution (analytics_file_totals) out of the monthly totals and drops
// it, in a fixed number of statements whatever the number of buckets. On archive, first copies it
// into analytics_archive under coordination_id (a bucket archived before stays as it is).
// Same results as subtracting bucket by bucket with AddToMonthly: checked arithmetic (nothing
// changes when a total would overflow), a bucket that reaches count 0 (or a missing one) is gone.
// Returns the number of buckets the file had.
Result<int64_t> TakeOutFileContribution(SqlTx& tx, const std::string& file_id,
                                        const std::string* archive_coordination_id,
                                        WallMillis now) {
  // The file's buckets and the monthly rows they count in, locked (PostgreSQL: in a fixed order,
  // the file's rows and then each monthly row, as AddToMonthly locked them) so that a second node
  // taking out the same contribution waits and then finds none, and the overflow check below
  // holds until the commit. A bucket without its monthly row (never expected) has nothing to
  // subtract from, as in AddToMonthly.
  auto rows = tx.QueryAll(
      std::string("SELECT m.total_units, m.count, t.total_units, t.count, t.user_id FROM "
                  "analytics_file_totals t JOIN analytics_monthly m ON m.user_id = t.user_id AND "
                  "m.month = t.month AND m.category = t.category WHERE t.file_id = ? "
                  "ORDER BY t.month, t.category") +
          std::string(LockRowsClause(tx)),
      {file_id});
  if (!rows.ok()) return rows.status();
  bool empties = false;  // some bucket reaches count 0 and goes
  for (const SqlRow& r : *rows) {
    int64_t total = 0, n = 0;
    if (__builtin_sub_overflow(r.Int(0), r.Int(2), &total) ||
        __builtin_sub_overflow(r.Int(1), r.Int(3), &n)) {
      return Status::Unprocessable("amount_out_of_range", "monthly total out of range");
    }
    empties = empties || n <= 0;
  }
  // The three writes below are sent without waiting where the engine can: the rows are locked
  // and the arithmetic checked above, so only the store can fail them, and such a failure fails
  // the caller's whole unit (which its bus runs again) rather than only the consumer's work.
  if (archive_coordination_id) {
    LASTCALL_RETURN_IF_ERROR(tx.Send(
        "INSERT INTO analytics_archive (user_id, file_id, coordination_id, month, category, "
        "total_units, count, archived_at) SELECT user_id, file_id, ?, month, category, "
        "total_units, count, ? FROM analytics_file_totals WHERE file_id = ? "
        "ON CONFLICT (file_id, month, category) DO NOTHING",
        {*archive_coordination_id, now, file_id}));
  }
  if (!rows->empty()) {
    // UPDATE ... FROM: SQLite 3.33 and later, and PostgreSQL. The SET expressions read the row's
    // values before the update (both engines), and each monthly row matches one bucket at most
    // (the same primary key).
    LASTCALL_RETURN_IF_ERROR(tx.Send(
        "UPDATE analytics_monthly SET total_units = analytics_monthly.total_units - t.total_units, "
        "count = analytics_monthly.count - t.count FROM analytics_file_totals t "
        "WHERE t.file_id = ? AND analytics_monthly.user_id = t.user_id AND "
        "analytics_monthly.month = t.month AND analytics_monthly.category = t.category",
        {file_id}));
  }
  if (empties) {
    // The user (every bucket of a file is its owner's) as an equality on the primary key's first
    // column, then a row-value IN on the other two: both engines then look the buckets up by the
    // primary key. With the user inside the IN instead, PostgreSQL's generic plan hash-joined a
    // scan of every monthly row (about 0.3 ms a deletion at 10,000 monthly rows).
    LASTCALL_RETURN_IF_ERROR(tx.Send(
        "DELETE FROM analytics_monthly WHERE user_id = ? AND (month, category) IN (SELECT month, "
        "category FROM analytics_file_totals WHERE file_id = ?) AND count <= 0",
        {(*rows)[0].Text(4), file_id}));
  }
  auto del = tx.Exec("DELETE FROM analytics_file_totals WHERE file_id = ?", {file_id});
  if (!del.ok()) return del.status();
  return *del;
}

}  // namespace

Result<int64_t> RemoveFileContribution(SqlTx& tx, const std::string& file_id) {
  return TakeOutFileContribution(tx, file_id, nullptr, 0);
}

Status AnalyticsConsumer::Handle(const CloudEvent& event, SqlTx& tx) {
  if (event.type == kFileUploaded) return OnUploaded(event, tx);
  if (event.type == kFileDeleteRequested) {
    return CompleteAfter(tx, outbox_, clock_, ids_, kAnalyticsConsumer, event,
                         [&] { return Archive(event, tx); },
                         faults_.For(kAnalyticsConsumer, event.data.value("fileId", std::string())));
  }
  if (event.type == kFileDeleteCancelled || event.type == kFileDeleteVetoed) {
    return OnCancelled(event, tx);
  }
  return Status::Ok();
}

Status AnalyticsConsumer::OnCancelled(const CloudEvent& event, SqlTx& tx) {
  std::string file_id = event.data.value("fileId", std::string());
  std::string coordination_id = event.data.value("coordinationId", std::string());
  if (event.type == kFileDeleteVetoed) {
    // An operator may have overridden the veto before this event arrived: then this deletion
    // goes on (the file is deletion_requested by it again, or gone) and the archive stands.
    auto file = FindFileById(tx, file_id);
    if (!file.ok()) return file.status();
    if (!*file) return Status::Ok();
    if ((*file)->status != kFileActive && (*file)->coordination_id == coordination_id) {
      return Status::Ok();
    }
  }
  // Exactly what this coordination archived goes back: into the file's own contribution and the
  // monthly totals; the archived summary is dropped (the file was not deleted after all).
  auto rows = tx.QueryAll(
      "SELECT user_id, month, category, total_units, count FROM analytics_archive WHERE "
      "file_id = ? AND coordination_id = ? ORDER BY month, category",
      {file_id, coordination_id});
  if (!rows.ok()) return rows.status();
  for (const SqlRow& r : *rows) {
    auto ins = tx.Exec(
        "INSERT INTO analytics_file_totals (user_id, file_id, month, category, total_units, count) "
        "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (file_id, month, category) DO NOTHING",
        {r.Text(0), file_id, r.Text(1), r.Text(2), r.Int(3), r.Int(4)});
    if (!ins.ok()) return ins.status();
    if (*ins == 0) continue;  // already counted: never add a bucket twice
    LASTCALL_RETURN_IF_ERROR(AddToMonthly(tx, r.Text(0), r.Text(1), r.Text(2), r.Int(3), r.Int(4)));
  }
  auto del = tx.Exec("DELETE FROM analytics_archive WHERE file_id = ? AND coordination_id = ?",
                     {file_id, coordination_id});
  return del.ok() ? Status::Ok() : del.status();
}

Status AnalyticsConsumer::OnUploaded(const CloudEvent& event, SqlTx& tx) {
  std::string file_id = event.data.value("fileId", std::string());
  auto file = FindFileById(tx, file_id);
  if (!file.ok()) return file.status();
  if (!*file) return Status::Ok();  // deleted before we got to it: nothing to count
  // A redelivery (the handler must be idempotent per event, bus/event_bus.h): the file was
  // counted already, or its contribution already archived by its deletion. Counting it again
  // would fail on the primary key, or count a file that is being deleted.
  auto counted = tx.QueryOne(
      "SELECT 1 FROM analytics_file_totals WHERE file_id = ? UNION ALL "
      "SELECT 1 FROM analytics_archive WHERE file_id = ?",
      {file_id, file_id});
  if (!counted.ok()) return counted.status();
  if (*counted) return Status::Ok();
  auto rows = ListFileTransactions(tx, file_id);
  if (!rows.ok()) return rows.status();
  // Bucket by month and by the category the transaction has (or will get) now.
  std::map<std::pair<std::string, std::string>, std::pair<int64_t, int64_t>> buckets;
  LearnedCache cache;
  for (const Transaction& t : *rows) {
    auto choice = ChooseCategory(tx, t, &cache);
    if (!choice.ok()) return choice.status();
    auto& b = buckets[{t.date.substr(0, 7), choice->category}];
    if (__builtin_add_overflow(b.first, t.amount.units(), &b.first)) {
      return Status::Unprocessable("amount_out_of_range", "file total out of range");
    }
    ++b.second;
  }
  for (const auto& [key, value] : buckets) {
    auto ins = tx.Exec(
        "INSERT INTO analytics_file_totals (user_id, file_id, month, category, total_units, count) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        {(*file)->user_id, file_id, key.first, key.second, value.first, value.second});
    if (!ins.ok()) return ins.status();
    LASTCALL_RETURN_IF_ERROR(
        AddToMonthly(tx, (*file)->user_id, key.first, key.second, value.first, value.second));
  }
  return Status::Ok();
}

WorkResult AnalyticsConsumer::Archive(const CloudEvent& event, SqlTx& tx) {
  auto n = ArchiveFileContribution(tx, event.data.value("fileId", std::string()),
                                   event.data.value("coordinationId", std::string()), clock_.Now());
  if (!n.ok()) return n.status();
  return nlohmann::json{{"archivedBuckets", *n}};
}

Result<int64_t> ArchiveFileContribution(SqlTx& tx, const std::string& file_id,
                                        const std::string& coordination_id, WallMillis now) {
  return TakeOutFileContribution(tx, file_id, &coordination_id, now);
}

}  // namespace lastcall
