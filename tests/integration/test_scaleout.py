"""Two `lastcall serve` nodes on one PostgreSQL database (a throwaway server started here).

What is claimed with row locks must happen once whichever node sees it first: many coordinations
reach their deadline at the same moment on both nodes, and each deadline fires once, each file is
deleted once, every derived value is exact. Two DELETEs of one file through both nodes at once get
the same coordination. Only the first node to start sweeps orphan blobs.

The nodes share one data folder for their blobs (an S3-compatible store takes that role in a real
set-up). The in-process event bus is single-node (see docs/scale-out.md), so the expected consumer
here is one that never answers: every coordination finishes by its deadline, which the nodes'
drivers fire from the database alone.
"""

import os
import secrets
import shutil
import tempfile
import threading
import unittest
from collections import Counter

import harness
from harness import Server, make_csv, wait_until

FILES = 40
ROWS_PER_FILE = 3
TIMEOUT_MINUTES = "0.05"  # 3 s


class TwoNodesTest(harness.Assertions, unittest.TestCase):

    def setUp(self):
        self.url = harness.postgres().create_database()
        self.shared_dir = tempfile.mkdtemp(prefix="lastcall-shared-")
        self.addCleanup(shutil.rmtree, self.shared_dir, True)
        secret = secrets.token_hex(32)
        env = {"COORDINATION_TIMEOUT_MINUTES": TIMEOUT_MINUTES,
               "EXPECTED_CONSUMERS": "audit_consumer",
               "LASTCALL_DATA_DIR": self.shared_dir}
        self.nodes = []
        for _ in range(2):
            node = Server(env, secret=secret)
            node.service_env = {"LASTCALL_DATABASE_URL": self.url}
            self.addCleanup(node.cleanup)
            self.nodes.append(node)
        for node in self.nodes:
            node.start()
        self.user = harness.unique_user("scale")

    def tearDown(self):
        for node in self.nodes:
            node.stop()

    def client(self, i):
        node = self.nodes[i % 2]
        return node.client(token=node.py_token(self.user))

    def test_only_the_first_node_sweeps_orphan_blobs(self):
        first = [o for o in self.nodes[0].logs() if o.get("message") == "orphan blob sweep skipped: "
                 "other nodes share the database"]
        second = [o for o in self.nodes[1].logs() if o.get("message") == "orphan blob sweep skipped: "
                  "other nodes share the database"]
        self.assertEqual((len(first), len(second)), (0, 1),
                         "node 2 started while node 1 ran: it must not sweep")

    def test_simultaneous_deadlines_fire_once_and_each_file_is_deleted_once(self):
        account = self.client(0).create_account("Shared", "USD")["accountId"]
        files = []
        for i in range(FILES):
            rows = [("2024-02-%02d" % (1 + r), "Row %d-%d" % (i, r), "-1.%02d" % r, "USD", "Shop")
                    for r in range(ROWS_PER_FILE)]
            files.append(self.client(i).upload_ok(account, "f%d.csv" % i, make_csv(rows))["fileId"])
        acc = self.client(1).account(account)
        self.assertEqual(acc["transactionCount"], FILES * ROWS_PER_FILE)
        self.assertEqual(len(os.listdir(os.path.join(self.shared_dir, "blobs"))) > 0, True)

        # Deletions through both nodes, alternately: all deadlines fall within about a second.
        cids = []
        for i, fid in enumerate(files):
            r = self.client(i).delete("/files/" + fid)
            self.assertStatus(r, 202)
            cids.append(r.body["coordinationId"])
        self.assertEqual(len(set(cids)), FILES)

        def all_completed():
            rows = self.nodes[0].query("SELECT status, COUNT(*) AS n FROM coordinations "
                                       "GROUP BY status")
            return {r["status"]: r["n"] for r in rows} == {"completed": FILES}
        wait_until(all_completed, 30, 0.2, message="every coordination completed")

        # Each coordination: timed out once, decided once, deleted once, one file.deleted event.
        per_kind = Counter()
        for r in self.nodes[0].query("SELECT coordination_id, kind, COUNT(*) AS n "
                                     "FROM coordination_timeline GROUP BY coordination_id, kind"):
            per_kind[(r["coordination_id"], r["kind"])] = r["n"]
        for cid in cids:
            for kind in ("requested", "timeout", "deletion_decided", "transactions_deleted",
                         "deleted"):
                self.assertEqual(per_kind[(cid, kind)], 1, "%s of %s" % (kind, cid))
        deleted_events = Counter(e["data"]["coordinationId"] for e in self.nodes[0].outbox()
                                 if e["type"] == "file.deleted")
        self.assertEqual(deleted_events, Counter({cid: 1 for cid in cids}))
        for cid in cids:
            co = self.client(0).coordination(cid)
            self.assertEqual((co["status"], co["outcome"]), ("completed", "timed_out"))

        # The rows and the derived values: exact.
        tomb = self.nodes[0].query("SELECT file_id, transactions_deleted FROM tombstones")
        self.assertEqual(sorted(t["file_id"] for t in tomb), sorted(files))
        self.assertTrue(all(t["transactions_deleted"] == ROWS_PER_FILE for t in tomb), tomb)
        self.assertEqual(self.nodes[0].query("SELECT COUNT(*) AS n FROM transactions")[0]["n"], 0)
        self.assertAccountDerived(self.client(1), account, "0.00", 0, None)
        wait_until(lambda: not any(files for _, _, files in
                                   os.walk(os.path.join(self.shared_dir, "blobs"))),
                   10, message="every deleted file's blob removed")

        # The nodes' own accounts agree: each deadline fired on exactly one of them.
        fired = Counter()
        deleted = Counter()
        for n, node in enumerate(self.nodes):
            for o in node.logs():
                if o.get("message", "").startswith("coordination timed out"):
                    fired[o.get("coordinationId")] += 1
                    fired["node%d" % n] += 1
                if o.get("message") == "file deleted":
                    deleted[o.get("coordinationId")] += 1
        for cid in cids:
            self.assertEqual(fired[cid], 1, "deadline of %s fired %d times" % (cid, fired[cid]))
            self.assertEqual(deleted[cid], 1, "%s deleted %d times" % (cid, deleted[cid]))
        print("deadlines fired: node 1 %d, node 2 %d" % (fired["node0"], fired["node1"]))

    def test_uploads_to_one_account_through_both_nodes_at_once_all_succeed(self):
        # Each node's group commit holds the account row shared (foreign-key checks) while
        # another unit asks for it exclusively: the upload locks the account first, else two
        # nodes deadlock and a client gets 503 (found by tests/crash/multinode.py).
        account = self.client(0).create_account("Busy", "USD")["accountId"]
        results = []
        lock = threading.Lock()

        def upload(worker):
            for k in range(6):
                r = self.client(worker).upload(account, "w%d-%d.csv" % (worker, k), make_csv(
                    [("2024-04-%02d" % (1 + k), "W%d row %d" % (worker, k), "-1.00", "USD", "Shop")]))
                with lock:
                    results.append(r)
        threads = [threading.Thread(target=upload, args=(w,)) for w in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual([r.status for r in results], [201] * 48,
                         [r for r in results if r.status != 201][:3])
        self.assertAccountDerived(self.client(1), account, "-48.00", 48, "2024-04-06")

    def test_the_same_deletion_through_both_nodes_at_once_is_one_coordination(self):
        account = self.client(0).create_account("Race", "USD")["accountId"]
        for attempt in range(5):
            fid = self.client(0).upload_ok(account, "race.csv", make_csv(
                [("2024-03-01", "Race %d" % attempt, "-2.00", "USD", "Shop")]))["fileId"]
            results = [None, None]
            barrier = threading.Barrier(2)

            def delete(i):
                c = self.client(i)
                barrier.wait()
                results[i] = c.delete("/files/" + fid)
            threads = [threading.Thread(target=delete, args=(i,)) for i in range(2)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            for r in results:
                self.assertStatus(r, 202)
            self.assertEqual(results[0].body["coordinationId"], results[1].body["coordinationId"])
            self.client(1).wait_coordination(results[0].body["coordinationId"], "completed", 30)
        self.assertEqual(self.nodes[0].query("SELECT COUNT(*) AS n FROM coordinations")[0]["n"], 5)
        self.assertAccountDerived(self.client(1), account, "0.00", 0, None)


if __name__ == "__main__":
    unittest.main()
