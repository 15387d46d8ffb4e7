// The embedded default engine: SQLite in WAL mode. One writer thread owns the only write
// connection and commits many queued units of work in one transaction (group commit), each unit in
// its own savepoint so that one unit's failure does not undo the others. Reads run on the calling
// thread on pooled read-only connections, which WAL lets proceed while the writer commits.
// Checkpoints (copying the WAL back into the database file, with its fsync) run on a checkpointer
// thread with a connection of its own, so the writer does not wait on them: the writer's automatic
// checkpoints are off, and each commit that leaves the WAL past checkpoint_pages wakes the
// checkpointer for a passive checkpoint (the copying and the fsync). The WAL starts over from its
// beginning only when a write begins while all of it is copied. So once the WAL holds
// restart_pages frames or more, the checkpointer goes on with further passes (a few at most), each
// copying the frames committed during the one before, a shorter tail each time unless the writer
// is saturated: a writer with any time between its batches then finds the WAL all copied and
// starts it over, with no checkpoint of its own. When the passes do not catch up (a saturated
// writer, or a reader still using old frames), or they caught up twice and each time the writer
// had begun its next batch before, the checkpointer is not woken again and the writer copies the
// tail itself before its next batch (an fsync that every queued unit waits for), and its next
// write starts the WAL over. The writer does the same whenever the WAL reaches wal_cap_pages,
// whatever the checkpointer did.
#pragma once

#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "store/group_commit.h"
#include "store/sql.h"

struct sqlite3;

namespace lastcall {

class SqliteConnection;

struct SqliteOptions {
  std::string path;                  // database file
  std::string synchronous = "FULL";  // FULL (durable on power loss) or NORMAL
  int max_batch = 512;               // units of work per commit at most
  // The writer connection's page cache; each read connection (up to 16) gets an eighth of it,
  // at least 1 MiB. Bounds the store's memory: a cache fills up to its size with the pages its
  // connection touched, and the database (tombstones, coordinations, timelines) keeps growing.
  int cache_mib = 64;
  int checkpoint_pages = 1024;       // WAL frames (4 KiB pages) that wake the checkpointer
  // WAL frames from which the checkpointer chases the tail. Each start-over of the WAL usually
  // costs one checkpoint of the writer's own (a wait with two fsyncs for every queued unit), so
  // this sets how often that happens: at 4,096 it was several times a second at half the
  // benchmark's load (bench/profile.md, session 9).
  int restart_pages = 16384;
  int wal_cap_pages = 32768;         // WAL frames past which the writer checkpoints regardless
};

// The writer is a GroupCommitWriter driving this object's write connection (GroupCommitConnection,
// private: only the writer calls it).
class SqliteDatabase : public Database, private GroupCommitConnection {
 public:
  // Opens (creating if needed) the database and starts the writer thread. Errors: kUnavailable
  // when the file cannot be opened or WAL mode cannot be set.
  static Result<std::unique_ptr<SqliteDatabase>> Open(const SqliteOptions& options);
  ~SqliteDatabase() override;

  void Write(WriteFn fn, WriteDone done) override;
  Status Read(const ReadFn& fn) override;
  void Close() override;
  bool SetBatchTail(BatchTail* tail) override;

  // Checkpoints since Open: the checkpointer's passes, and the checkpoints the writer ran itself
  // before a batch (each one a wait, with an fsync, for every unit queued behind it). Thread-safe.
  struct CheckpointCounts {
    int64_t checkpointer_passes = 0;
    int64_t writer_checkpoints = 0;
  };
  CheckpointCounts checkpoint_counts() const {
    return {checkpointer_passes_.load(), writer_checkpoints_.load()};
  }

 private:
  explicit SqliteDatabase(SqliteOptions options);
  // GroupCommitConnection, on the writer thread. Begin first copies the WAL's tail when it is due
  // (see the top of this file); no failure is retryable (one writer: nothing to lose a conflict to).
  // ChangedRows is sqlite3_total_changes64, so batches run without unit savepoints until a unit
  // fails after changing rows (group_commit.h); TransactionOpen is !sqlite3_get_autocommit.
  Status Begin(bool unit_savepoints) override;
  GroupCommitTx& tx() override { return *writer_tx_; }
  Status EndUnit(bool keep, bool next) override;
  Status Commit() override;
  void Rollback() override;
  bool TakeRetryable() override { return false; }
  std::optional<int64_t> ChangedRows() override;
  bool TransactionOpen() override;
  void CheckpointerLoop();
  // On the checkpointer thread: the writer is to copy the WAL's tail before its next batch.
  void LeaveTailToWriter();
  // sqlite3_wal_hook of the writer connection: runs on the writer thread after each commit with
  // the number of frames in the WAL; wakes the checkpointer past checkpoint_pages.
  static int OnWalCommit(void* self, sqlite3* db, const char* name, int wal_pages);
  std::unique_ptr<SqliteConnection> TakeReader();
  void ReturnReader(std::unique_ptr<SqliteConnection> c);

  SqliteOptions options_;
  std::unique_ptr<SqliteConnection> writer_;
  std::unique_ptr<GroupCommitTx> writer_tx_;  // on writer_; writer thread only
  std::unique_ptr<GroupCommitWriter> group_;  // the writer thread; started last by Open
  int wal_pages_ = 0;            // frames in the WAL after the last commit; writer thread only
  // Set by the checkpointer when its passes over a WAL of restart_pages or more did not catch up,
  // or caught up twice with no new start of the WAL between (LeaveTailToWriter); the writer clears
  // it when it has copied the tail. The checkpointer is not woken meanwhile.
  std::atomic<bool> tail_wanted_{false};
  // The WAL's frames when the checkpointer last copied all of a WAL of restart_pages or more
  // (0: none since the WAL was last seen shorter than that, or since the tail was left to the
  // writer). Checkpointer thread only.
  int caught_up_at_ = 0;
  std::atomic<int64_t> checkpointer_passes_{0};
  std::atomic<int64_t> writer_checkpoints_{0};

  std::unique_ptr<SqliteConnection> checkpointer_;  // used by checkpointer_thread_ only
  std::mutex ckpt_mu_;
  std::condition_variable ckpt_cv_;
  bool ckpt_wanted_ = false;     // guarded by ckpt_mu_
  bool ckpt_closing_ = false;    // guarded by ckpt_mu_
  std::thread checkpointer_thread_;

  std::mutex readers_mu_;
  std::vector<std::unique_ptr<SqliteConnection>> readers_;  // guarded by readers_mu_
};

}  // namespace lastcall
