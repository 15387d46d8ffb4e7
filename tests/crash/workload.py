"""The workload and the invariant checks shared by the crash harness (one node, SIGKILLed) and the
multi-node test (three nodes on PostgreSQL, a JetStream cluster and S3, nodes and NATS servers
killed): users import files, deletions are requested, consumers complete, fail and stay silent
(LASTCALL_TEST_CONSUMER_FAULTS), and at the end every deletion must have finished exactly once.

A run is a `Workload` given the lastcall nodes (harness.Server objects sharing one JWT secret), a
`store` that gives a read-only view of the database (SqliteStore or PostgresStore), a `blobs` view
of the blob store (FolderBlobs or S3rverBlobs) and a `chaos()` method that kills things while the
work runs. Requests go to a random node that is up; an answer lost to a kill is resolved as the
crash harness always did (a lost upload is reconciled from the store, a lost DELETE is repeated).

After the chaos, `check()` waits for the work to settle and checks, through the API and by reading
the store and the blobs directly:
  - every deletion that got a 202 (or whose answer a kill lost) finished exactly once: the file,
    its transactions and its blob are gone, one tombstone, one file.deleted event in the outbox,
    the analytics archive written once (unless analytics was made to fail), one coordination, and
    it ended `completed` (`timed_out` when a consumer was silent; no archive is expected when
    analytics was late past the deadline, the deletion went first), its timeline records one
    deletion decision and one deletion, and its deadline fired at most once (the timeline's
    `timeout` entries);
  - every other file is untouched: row, status, transactions and blob as imported;
  - every account's balance, count and last date equal a recomputation from its remaining
    transactions, and what the imports minus the deletions predict;
  - no coordination waits past its deadline, none is left unfinished, every deletion's own
    verification says `verified` (no residue), no dead letter, no blob without its file (on S3,
    the blob of an upload a kill interrupted before its commit is counted instead: the sweep of a
    shared bucket removes it after an hour), no blob_gc row left.

Python 3 standard library only (psql for PostgresStore).
"""

import hashlib
import http.client
import json
import os
import queue
import random
import sqlite3
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
import harness  # noqa: E402  (tests/integration/harness.py: Server, Client)
import pg_service  # noqa: E402


def fault_bucket(file_id):
    """src/consumers/faults.cc FaultBucket: FNV-1a-64 of the id's bytes, modulo 100."""
    h = 1469598103934665603
    for c in file_id.encode():
        h ^= c
        h = (h * 1099511628211) & 0xFFFFFFFFFFFFFFFF
    return h % 100


def parse_faults(spec):
    out = {}
    for entry in filter(None, (e.strip() for e in spec.split(","))):
        name, _, rest = entry.partition("=")
        mode, _, pct = rest.partition(":")
        out[name] = (mode, int(pct))
    return out


def fault_of(faults, consumer, file_id):
    mode, pct = faults.get(consumer, (None, 0))
    return mode if fault_bucket(file_id) < pct else None


class Lost(Exception):
    """The server went away before answering (a kill): the outcome of the request is unknown."""


def call(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except (OSError, http.client.HTTPException) as e:
        raise Lost(str(e))


def add_arguments(p, kills, timeout_minutes=0.05):
    """The workload's command-line parameters (both harnesses)."""
    p.add_argument("--users", type=int, default=4)
    p.add_argument("--accounts-per-user", type=int, default=2)
    p.add_argument("--files-per-user", type=int, default=20)
    p.add_argument("--min-rows", type=int, default=1)
    p.add_argument("--max-rows", type=int, default=40)
    p.add_argument("--delete-fraction", type=float, default=0.7)
    p.add_argument("--kills", type=int, default=kills, help="at least this many SIGKILLs")
    p.add_argument("--kill-min-s", type=float, default=0.3)
    p.add_argument("--kill-max-s", type=float, default=1.5)
    p.add_argument("--workers", type=int, default=3, help="importing and deleting threads each")
    p.add_argument("--timeout-minutes", type=float, default=timeout_minutes,
                   help="COORDINATION_TIMEOUT_MINUTES (silent consumers wait this long)")
    p.add_argument("--faults", default="analytics_consumer=fail:20,categorization_consumer=silent:15",
                   help="LASTCALL_TEST_CONSUMER_FAULTS")
    p.add_argument("--grace-s", type=float, default=10.0,
                   help="a waiting coordination this far past its deadline is a violation")
    p.add_argument("--settle-s", type=float, default=60.0)
    p.add_argument("--seed", type=int, default=None)


# ---------------------------------------------------------------------------------------------
# Views of the store and of the blobs


class SqliteStore(object):
    """The SQLite file of a node, read-only."""

    def __init__(self, path):
        self.path = path

    def snapshot(self, tables=None):
        conn = sqlite3.connect("file:%s?mode=ro" % self.path, uri=True, timeout=10)
        conn.row_factory = sqlite3.Row
        return conn


# The tables the checks read.
TABLES = ("files", "transactions", "accounts", "tombstones", "coordinations",
          "coordination_completions", "coordination_timeline", "outbox", "analytics_archive",
          "dead_letters", "blob_gc")


class PostgresStore(object):
    """A PostgreSQL database, read through psql: snapshot() copies the named tables (one
    REPEATABLE READ snapshot) into an in-memory SQLite database, so the checks run the same SQL
    on both engines."""

    def __init__(self, url):
        self.url = url

    def snapshot(self, tables=None):
        tables = tuple(tables or TABLES)
        cols = pg_service.query_json(
            self.url, "SELECT table_name AS t, column_name AS c FROM information_schema.columns "
            "WHERE table_schema = 'public' AND table_name IN (%s) ORDER BY table_name, "
            "ordinal_position" % ", ".join("'%s'" % t for t in tables))
        columns = {}
        for r in cols:
            columns.setdefault(r["t"], []).append(r["c"])
        missing = [t for t in tables if t not in columns]
        if missing:
            raise AssertionError("PostgreSQL database has no table(s) %s" % ", ".join(missing))
        sql = "SELECT json_build_object(%s) AS d" % ", ".join(
            "'%s', (SELECT COALESCE(json_agg(x), '[]'::json) FROM %s x)" % (t, t) for t in tables)
        out = pg_service._run(["psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d",
                               self.url, "-c", "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
                               "-c", sql, "-c", "COMMIT"])
        data = json.loads(out)
        conn = sqlite3.connect(":memory:")
        conn.row_factory = sqlite3.Row
        for t in tables:
            cs = columns[t]
            conn.execute("CREATE TABLE %s (%s)" % (t, ", ".join('"%s"' % c for c in cs)))
            conn.executemany("INSERT INTO %s VALUES (%s)" % (t, ", ".join("?" * len(cs))),
                             [tuple(_plain(row.get(c)) for c in cs) for row in data[t]])
        return conn


def _plain(v):
    return json.dumps(v) if isinstance(v, (dict, list)) else v


class FolderBlobs(object):
    """The embedded blob store: $LASTCALL_DATA_DIR/blobs/<key[:2]>/<key>."""

    # A node's start removes every blob no file references (one process owns the folder).
    swept_at_start = True

    def __init__(self, root):
        self.root = root

    def keys(self):
        out = set()
        for _, _, names in os.walk(self.root):
            out.update(names)
        return out

    def read(self, key):
        with open(os.path.join(self.root, key[:2], key), "rb") as f:
            return f.read()


class S3rverBlobs(object):
    """The objects s3rver keeps under one prefix of its bucket: <data>/<bucket>/<prefix><key>
    holds <key>._S3rver_object."""

    SUFFIX = "._S3rver_object"
    # With a shared bucket the start-up sweep only removes unreferenced objects older than an hour
    # (another node's upload may be between its PUT and its commit): the blob of an upload a kill
    # interrupted stays until then.
    swept_at_start = False

    def __init__(self, root):
        self.root = root

    def keys(self):
        out = set()
        for _, _, names in os.walk(self.root):
            out.update(n[:-len(self.SUFFIX)] for n in names if n.endswith(self.SUFFIX))
        return out

    def read(self, key):
        with open(os.path.join(self.root, key + self.SUFFIX), "rb") as f:
            return f.read()


# ---------------------------------------------------------------------------------------------
# The workload


class Upload(object):
    def __init__(self, user, account_id, name, rows):
        self.user = user
        self.account_id = account_id
        self.name = name
        self.rows = rows  # [(date, description, cents)]
        self.content = harness.make_csv(
            [(d, desc, "%s%d.%02d" % ("-" if c < 0 else "", abs(c) // 100, abs(c) % 100), "USD", "")
             for d, desc, c in rows])
        self.sha256 = hashlib.sha256(self.content).hexdigest()
        self.file_id = None
        self.delete = False          # chosen for deletion
        self.coordination_id = None  # from a 202
        self.requested = False       # a DELETE was accepted (202, or a lost answer later proven)
        self.lost = False            # a kill lost the answer to the upload

    @property
    def units(self):
        return sum(c for _, _, c in self.rows) * 100


class Workload(object):
    """Subclasses set self.nodes, self.store and self.blobs in start_services() and implement
    chaos() (runs in its own thread until self.work_done is set and enough kills happened) and
    final_recovery() (after the work: the last kills and restarts before the checks)."""

    def __init__(self, args):
        self.args = args
        self.rng = random.Random(args.seed)
        self.faults = parse_faults(args.faults)
        self.nodes = []
        self.store = None
        self.blobs = None
        self.users = ["%s-user-%d" % (self.name, i) for i in range(args.users)]
        self.tokens = {}
        self.accounts = {}  # account id -> user
        self.uploads = []
        self.lock = threading.Lock()
        self.kills = 0
        self.violations = []
        self.stats = {"lost_uploads": 0, "lost_deletes": 0, "retried_deletes": 0, "202": 0}
        self.work_done = threading.Event()
        self.imports_done = threading.Event()

    name = "crash"

    def server_env(self):
        return {"COORDINATION_TIMEOUT_MINUTES": str(self.args.timeout_minutes),
                "LASTCALL_TEST_CONSUMER_FAULTS": self.args.faults,
                "LASTCALL_LOG_LEVEL": "warn"}

    def violation(self, text):
        with self.lock:
            self.violations.append(text)
        print("VIOLATION: " + text, flush=True)

    def client(self, user):
        """A client of the user on a random node that is running (any node when none is)."""
        up = [n for n in self.nodes if n.running] or self.nodes
        return harness.Client(self.rng.choice(up), self.tokens[user])

    # -- setup

    def start(self):
        self.start_services()
        for u in self.users:
            self.tokens[u] = self.nodes[0].py_token(u, ttl_seconds=86400)
            for n in range(self.args.accounts_per_user):
                acc = self.client(u).create_account(name="Account %d" % n)
                self.accounts[acc["accountId"]] = u
        accounts_of = {u: [a for a, owner in self.accounts.items() if owner == u] for u in self.users}
        for u in self.users:
            for i in range(self.args.files_per_user):
                n = self.rng.randint(self.args.min_rows, self.args.max_rows)
                rows = []
                for r in range(n):
                    cents = self.rng.randint(-50000, 50000)
                    date = "2024-%02d-%02d" % (self.rng.randint(1, 12), self.rng.randint(1, 28))
                    rows.append((date, "%s file %d row %d" % (u, i, r), cents))
                up = Upload(u, self.rng.choice(accounts_of[u]), "%s-%04d.csv" % (u, i), rows)
                up.delete = self.rng.random() < self.args.delete_fraction
                self.uploads.append(up)

    # -- the workers

    def pause(self):
        """Spreads the imports over the kill phase, so kills land while work is in flight."""
        span = self.args.kills * (self.args.kill_min_s + self.args.kill_max_s) / 2.0
        per_worker = max(1.0, len(self.uploads) / float(self.args.workers))
        time.sleep(random.uniform(0, 2.0 * span / per_worker))

    def importer(self, todo, to_delete):
        while True:
            self.pause()
            try:
                up = todo.get_nowait()
            except queue.Empty:
                return
            try:
                r = call(self.client(up.user).upload, up.account_id, up.name, up.content)
            except Lost:
                # A kill may have lost the answer after the commit: reconciled from the store.
                up.lost = True
                with self.lock:
                    self.stats["lost_uploads"] += 1
                continue
            if r.status != 201:
                self.violation("upload %s answered %r" % (up.name, r))
                continue
            up.file_id = r.body["fileId"]
            if up.delete:
                to_delete.put(up)

    def deleter(self, to_delete):
        while True:
            try:
                up = to_delete.get(timeout=0.2)
            except queue.Empty:
                if self.imports_done.is_set() and to_delete.empty():
                    return
                continue
            self.request_deletion(up)

    def request_deletion(self, up):
        """DELETE (each attempt through a random node) until a definite answer: 202 (accepted), or
        404 after a lost answer (it was accepted and has already finished)."""
        lost = False
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                r = call(self.client(up.user).delete, "/files/" + up.file_id)
            except Lost:
                lost = True
                with self.lock:
                    self.stats["lost_deletes"] += 1
                time.sleep(0.05)
                continue
            if r.status == 202:
                cid = r.body.get("coordinationId")
                if up.coordination_id and cid != up.coordination_id:
                    self.violation("file %s: a second 202 named coordination %s, the first %s"
                                   % (up.file_id, cid, up.coordination_id))
                up.coordination_id = cid
                up.requested = True
                with self.lock:
                    self.stats["202"] += 1
                if lost:
                    with self.lock:
                        self.stats["retried_deletes"] += 1
                return
            if r.status == 404 and (lost or up.requested):
                up.requested = True  # an earlier attempt committed; its deletion already finished
                return
            if r.status >= 500:
                time.sleep(0.05)
                lost = True
                continue
            self.violation("DELETE /files/%s answered %r" % (up.file_id, r))
            return
        self.violation("DELETE /files/%s: no definite answer within 60 s" % up.file_id)

    def chaos_thread(self):
        """chaos(), a failed restart recorded as a violation."""
        try:
            self.chaos()
        except AssertionError as e:  # something did not come back after a kill
            self.violation("restart after kill %d failed: %s" % (self.kills, e))
            self.work_done.set()

    # -- the run

    def run(self):
        """The whole run; returns (ok, figures)."""
        started = time.monotonic()
        self.start()
        todo = queue.Queue()
        for up in self.uploads:
            todo.put(up)
        to_delete = queue.Queue()
        importers = [threading.Thread(target=self.importer, args=(todo, to_delete), daemon=True)
                     for _ in range(self.args.workers)]
        deleters = [threading.Thread(target=self.deleter, args=(to_delete,), daemon=True)
                    for _ in range(self.args.workers)]
        for t in importers + deleters:
            t.start()

        def wait_for_work():
            for t in importers:
                t.join()
            self.imports_done.set()
            for t in deleters:
                t.join()
            self.work_done.set()
        waiter = threading.Thread(target=wait_for_work, daemon=True)
        waiter.start()
        # The chaos runs on the main thread: a process started with PR_SET_PDEATHSIG (the
        # throwaway servers) is killed when the THREAD that started it ends.
        self.chaos_thread()
        waiter.join()
        self.final_recovery()
        self.reconcile_uploads()
        self.settle()
        self.check_api()
        self.stop_nodes()
        self.check_store()
        elapsed = time.monotonic() - started
        requested = [u for u in self.uploads if u.requested]
        figures = {
            "deletionsRequested": len(requested),
            "deletionsAnswered202": self.stats["202"],
            "deleteAnswersLostToKills": self.stats["lost_deletes"],
            "uploadAnswersLostToKills": self.stats["lost_uploads"],
            "filesImported": sum(1 for u in self.uploads if u.file_id),
            "filesKept": sum(1 for u in self.uploads if u.file_id and not u.requested),
            "killsSurvived": self.kills,
            "timedOutBySilentConsumer": sum(
                1 for u in requested if fault_of(self.faults, "categorization_consumer", u.file_id)),
            "analyticsFailed": sum(
                1 for u in requested if fault_of(self.faults, "analytics_consumer", u.file_id)),
            "deadlinesFired": self.stats.get("deadlines_fired", 0),
            "analyticsMissedTheDeadline": self.stats.get("analytics_missed_deadline", 0),
            "blobsLeftByInterruptedUploads": self.stats.get("blobs_of_interrupted_uploads", 0),
            "violations": len(self.violations),
            "seconds": round(elapsed, 1),
        }
        return len(self.violations) == 0, figures

    def stop_nodes(self):
        for n in self.nodes:
            n.stop()

    def reconcile_uploads(self):
        """Uploads whose answer a kill lost: the store says whether they were imported."""
        conn = self.store.snapshot(("files",))
        try:
            for up in self.uploads:
                if up.file_id:
                    continue
                rows = conn.execute("SELECT id FROM files WHERE user_id = ? AND name = ?",
                                    (up.user, up.name)).fetchall()
                if len(rows) > 1:
                    self.violation("upload %s was imported %d times" % (up.name, len(rows)))
                if rows:
                    up.file_id = rows[0]["id"]
                    up.delete = False  # kept: checked as untouched
        finally:
            conn.close()

    def settle(self):
        """Waits until no coordination is waiting or deleting and every blob is removed; a
        waiting coordination more than the grace past its deadline is a violation."""
        limit = time.monotonic() + self.args.timeout_minutes * 60 + self.args.settle_s
        up_since = time.monotonic()
        reported = set()
        while True:
            conn = self.store.snapshot(("coordinations", "blob_gc"))
            try:
                now_ms = int(time.time() * 1000)
                busy = conn.execute("SELECT COUNT(*) FROM coordinations WHERE status != 'completed'"
                                    ).fetchone()[0]
                gc = conn.execute("SELECT COUNT(*) FROM blob_gc").fetchone()[0]
                # The verified-deletion check runs after each blob's removal: wait for it too.
                busy += conn.execute("SELECT COUNT(*) FROM coordinations WHERE status = 'completed' "
                                     "AND verification IS NULL").fetchone()[0]
                if time.monotonic() - up_since > self.args.grace_s:
                    for r in conn.execute(
                            "SELECT id, deadline_at FROM coordinations WHERE status = 'waiting' "
                            "AND deadline_at < ?", (now_ms - int(self.args.grace_s * 1000),)):
                        if r["id"] not in reported:
                            reported.add(r["id"])
                            self.violation("coordination %s still waiting %.1f s past its deadline"
                                           % (r["id"], (now_ms - r["deadline_at"]) / 1000.0))
            finally:
                conn.close()
            if busy == 0 and gc == 0:
                return
            if time.monotonic() > limit:
                self.violation("work did not settle: %d coordinations unfinished, %d blobs queued"
                               % (busy, gc))
                return
            time.sleep(0.1)

    # -- checks

    def check_api(self):
        expected = {a: [0, 0, None] for a in self.accounts}
        for up in self.uploads:
            if not up.file_id:
                continue
            client = self.client(up.user)
            r = client.get("/files/" + up.file_id)
            if up.requested:
                if r.status != 404:
                    self.violation("GET deleted file %s answered %r" % (up.file_id, r))
                if up.coordination_id:
                    c = client.get("/coordinations/" + up.coordination_id)
                    if c.status != 200 or c.body.get("status") != "completed":
                        self.violation("coordination %s via the API: %r" % (up.coordination_id, c))
                continue
            if r.status != 200 or r.body.get("status") != "active" or \
                    r.body.get("transactionCount") != len(up.rows):
                self.violation("kept file %s via the API: %r" % (up.file_id, r))
            e = expected[up.account_id]
            e[0] += up.units
            e[1] += len(up.rows)
            last = max(d for d, _, _ in up.rows)
            e[2] = last if e[2] is None or last > e[2] else e[2]
        for account_id, user in self.accounts.items():
            acc = self.client(user).account(account_id)
            units, count, last = expected[account_id]
            want = (harness.money_str(harness.money(units) / 10000), count, last)
            got = (acc["balance"], acc["transactionCount"], acc["lastTransactionDate"])
            if got != want:
                self.violation("account %s via the API: %r, imports minus deletions give %r"
                               % (account_id, got, want))

    def check_store(self):
        conn = self.store.snapshot()
        try:
            self._check_store(conn)
        finally:
            conn.close()

    def _check_store(self, conn):
        q = lambda sql, *p: conn.execute(sql, p).fetchall()  # noqa: E731
        one = lambda sql, *p: conn.execute(sql, p).fetchone()[0]  # noqa: E731
        deleted_events = {}
        for r in q("SELECT data FROM outbox WHERE type = 'file.deleted'"):
            fid = json.loads(r["data"]).get("fileId")
            deleted_events[fid] = deleted_events.get(fid, 0) + 1
        blobs_stored = self.blobs.keys()
        referenced = {r["blob_key"] for r in q("SELECT blob_key FROM files")}
        interrupted = {up.sha256 for up in self.uploads if up.lost and not up.file_id}
        for orphan in sorted(blobs_stored - referenced):
            if not self.blobs.swept_at_start and \
                    hashlib.sha256(self.blobs.read(orphan)).hexdigest() in interrupted:
                self.stats["blobs_of_interrupted_uploads"] = \
                    self.stats.get("blobs_of_interrupted_uploads", 0) + 1
                continue
            self.violation("blob %s stored without its file" % orphan)
        timeline = {}
        for r in q("SELECT coordination_id, kind, COUNT(*) AS n FROM coordination_timeline "
                   "GROUP BY coordination_id, kind"):
            timeline[(r["coordination_id"], r["kind"])] = r["n"]
        self.stats["deadlines_fired"] = sum(n for (_, k), n in timeline.items() if k == "timeout")
        for (cid, kind), n in sorted(timeline.items()):
            if kind == "timeout" and n > 1:
                self.violation("the deadline of coordination %s fired %d times" % (cid, n))
        for up in self.uploads:
            if not up.file_id:
                if one("SELECT COUNT(*) FROM files WHERE user_id = ? AND name = ?", up.user, up.name):
                    self.violation("upload %s is stored but the harness never saw it" % up.name)
                continue
            fid = up.file_id
            if up.requested:
                self.check_deleted(q, one, up, deleted_events.get(fid, 0), timeline)
            else:
                self.check_kept(q, one, up, blobs_stored, deleted_events.get(fid, 0))
        # Derived values equal a recomputation from the remaining transactions.
        for a in q("SELECT id, balance_units, transaction_count, last_transaction_date FROM accounts"):
            s, n, last = conn.execute(
                "SELECT COALESCE(SUM(amount_units), 0), COUNT(*), MAX(date) FROM transactions "
                "WHERE account_id = ?", (a["id"],)).fetchone()
            if (a["balance_units"], a["transaction_count"], a["last_transaction_date"]) != (s, n, last):
                self.violation("account %s stores %r, its transactions give %r"
                               % (a["id"], tuple(a)[1:], (s, n, last)))
        for what, sql in (
                ("unfinished coordinations", "SELECT COUNT(*) FROM coordinations WHERE status != 'completed'"),
                ("dead letters", "SELECT COUNT(*) FROM dead_letters"),
                ("deletions whose verification found residue",
                 "SELECT COUNT(*) FROM coordinations WHERE verification IS NOT 'verified'"),
                ("blob_gc rows", "SELECT COUNT(*) FROM blob_gc"),
                ("transactions without a file",
                 "SELECT COUNT(*) FROM transactions t WHERE NOT EXISTS "
                 "(SELECT 1 FROM files f WHERE f.id = t.file_id)")):
            n = one(sql)
            if n:
                self.violation("%d %s" % (n, what))

    def check_deleted(self, q, one, up, n_events, timeline):
        fid = up.file_id
        if one("SELECT COUNT(*) FROM files WHERE id = ?", fid):
            self.violation("deleted file %s still has its row" % fid)
        if one("SELECT COUNT(*) FROM transactions WHERE file_id = ?", fid):
            self.violation("deleted file %s still has transactions" % fid)
        tomb = q("SELECT coordination_id, transactions_deleted, sha256 FROM tombstones WHERE file_id = ?", fid)
        coords = q("SELECT id, status, outcome, missing_consumers, transactions_deleted "
                   "FROM coordinations WHERE file_id = ?", fid)
        if len(coords) != 1:
            self.violation("deleted file %s has %d coordinations" % (fid, len(coords)))
            return
        c = coords[0]
        if up.coordination_id and c["id"] != up.coordination_id:
            self.violation("file %s: coordination %s, the 202 named %s" % (fid, c["id"], up.coordination_id))
        if c["status"] != "completed" or c["transactions_deleted"] != len(up.rows):
            self.violation("coordination %s of %s: status %s, %s transactions deleted (want %d)"
                           % (c["id"], fid, c["status"], c["transactions_deleted"], len(up.rows)))
        silent = fault_of(self.faults, "categorization_consumer", fid) == "silent" or \
            fault_of(self.faults, "analytics_consumer", fid) == "silent"
        if silent and c["outcome"] != "timed_out":
            self.violation("coordination %s had a silent consumer but ended %s" % (c["id"], c["outcome"]))
        if silent and timeline.get((c["id"], "timeout"), 0) != 1:
            self.violation("coordination %s had a silent consumer; its deadline fired %d times"
                           % (c["id"], timeline.get((c["id"], "timeout"), 0)))
        for kind in ("deletion_decided", "deleted"):
            if timeline.get((c["id"], kind), 0) != 1:
                self.violation("coordination %s: %d '%s' entries in its timeline"
                               % (c["id"], timeline.get((c["id"], kind), 0), kind))
        if len(tomb) != 1 or tomb[0]["coordination_id"] != c["id"] or \
                tomb[0]["transactions_deleted"] != len(up.rows) or tomb[0]["sha256"] != up.sha256:
            self.violation("deleted file %s: tombstones %r" % (fid, [tuple(t) for t in tomb]))
        if n_events != 1:
            self.violation("deleted file %s: %d file.deleted events" % (fid, n_events))
        archive = q("SELECT coordination_id, COALESCE(SUM(total_units), 0) AS u, "
                    "COALESCE(SUM(count), 0) AS n FROM analytics_archive WHERE file_id = ? "
                    "GROUP BY coordination_id", fid)
        analytics = fault_of(self.faults, "analytics_consumer", fid)
        want = [] if analytics else [(c["id"], up.units, len(up.rows))]
        # Analytics archives only while the file exists: when the deadline passed with analytics
        # missing (late, not faulted), the deletion went first and an empty archive is the
        # timeout doing its job (as tests/unit/fault_injection_test.cc); never a wrong one.
        missed = c["outcome"] == "timed_out" and "analytics_consumer" in (c["missing_consumers"] or "")
        if missed and not analytics:
            with self.lock:
                self.stats["analytics_missed_deadline"] = self.stats.get("analytics_missed_deadline", 0) + 1
        if missed and not archive:
            want = []
        if [tuple(a) for a in archive] != want:
            self.violation("deleted file %s: analytics archive %r, want %r (analytics fault: %s)"
                           % (fid, [tuple(a) for a in archive], want, analytics))
        analytics_completion = q("SELECT status FROM coordination_completions WHERE "
                                 "coordination_id = ? AND consumer = 'analytics_consumer'", c["id"])
        if analytics == "fail" and analytics_completion and analytics_completion[0]["status"] != "failed":
            self.violation("coordination %s: analytics was made to fail but reported %s"
                           % (c["id"], analytics_completion[0]["status"]))

    def check_kept(self, q, one, up, blobs_stored, n_events):
        fid = up.file_id
        f = q("SELECT status, transaction_count, sha256, blob_key, coordination_id FROM files WHERE id = ?", fid)
        if len(f) != 1:
            self.violation("kept file %s is gone" % fid)
            return
        f = f[0]
        if f["status"] != "active" or f["coordination_id"] is not None or \
                f["transaction_count"] != len(up.rows) or f["sha256"] != up.sha256:
            self.violation("kept file %s changed: %r" % (fid, tuple(f)))
        rows = [(r["date"], r["description"], r["amount_units"]) for r in
                q("SELECT date, description, amount_units FROM transactions WHERE file_id = ? "
                  "ORDER BY row_no", fid)]
        if rows != [(d, desc, c * 100) for d, desc, c in up.rows]:
            self.violation("kept file %s: its transactions changed" % fid)
        if f["blob_key"] not in blobs_stored:
            self.violation("kept file %s lost its blob" % fid)
        elif hashlib.sha256(self.blobs.read(f["blob_key"])).hexdigest() != up.sha256:
            self.violation("kept file %s: its blob changed" % fid)
        if n_events or one("SELECT COUNT(*) FROM tombstones WHERE file_id = ?", fid) or \
                one("SELECT COUNT(*) FROM coordinations WHERE file_id = ?", fid):
            self.violation("kept file %s has a deletion trace" % fid)


def main(workload_class, description, kills, argv=None, **defaults):
    """Parses the arguments, runs the workload, prints its figures; exit status 0 or 1."""
    import argparse
    p = argparse.ArgumentParser(description=description)
    add_arguments(p, kills)
    workload_class.add_arguments(p)
    p.set_defaults(**defaults)
    args = p.parse_args(argv)
    if args.seed is None:
        args.seed = random.randrange(1 << 30)
    print("%s: seed %d (rerun with --seed %d)" % (workload_class.name, args.seed, args.seed),
          flush=True)
    run = workload_class(args)
    ok = False
    try:
        ok, figures = run.run()
        print(json.dumps(figures, indent=2))
        run.summary(figures)
    except BaseException:
        for n in run.nodes:
            print(n.output_tail(), file=sys.stderr)
        raise
    finally:
        if run.violations or os.environ.get("LASTCALL_KEEP_DATA"):
            os.environ["LASTCALL_KEEP_DATA"] = "1"
        run.cleanup()
    return 0 if ok else 1
