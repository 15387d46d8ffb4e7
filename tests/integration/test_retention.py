"""Retention of the bus's bookkeeping against the real `lastcall serve`: once deletions settle,
the outbox, the processed records and the delivery attempts fall back to nothing (retention 0,
one pruning round a second), every deletion still finished exactly once, and
lastcall_rows_pruned_total counts what went. On the scale-out engines (NATS) the retention is
at least the bus's redelivery horizon, so the test shortens AckWait to keep that horizon short.
"""

import unittest

import harness
from harness import make_csv, unique_user, wait_until

ROWS = [
    ("2024-05-02", "GROCER #1", "-12.50", "USD", "Grocer"),
    ("2024-05-03", "Bus fare", "-2.75", "USD", "Transit"),
]


def metric(server, name, labels):
    r = harness.http_request(server.port, "GET", "/metrics", raw=True)
    want = "%s{%s} " % (name, labels)
    for line in r.raw.decode().splitlines():
        if line.startswith(want):
            return float(line.split()[-1])
    return 0.0


def count(server, sql):
    return int(server.query("SELECT COUNT(*) AS n FROM " + sql)[0]["n"])


class RetentionTest(harness.ServerPool, harness.Assertions, unittest.TestCase):
    servers = []

    def test_bookkeeping_falls_back_after_deletions_settle(self):
        server = self.start({"LASTCALL_OUTBOX_RETENTION_SECONDS": "0",
                             "LASTCALL_PRUNE_INTERVAL_SECONDS": "1",
                             # NATS only: a short redelivery horizon (duplicate window + AckWait
                             # + BackOff), about 16 s, bounds the retention from below.
                             "LASTCALL_NATS_ACK_WAIT_MS": "200"})
        c = server.client(unique_user("retention"))
        acct = c.create_account("Checking", "USD")["accountId"]
        kept = c.upload_ok(acct, "kept.csv", make_csv(ROWS))["fileId"]
        files = [c.upload_ok(acct, "f%d.csv" % i, make_csv(ROWS))["fileId"] for i in range(8)]
        coordinations = []
        for f in files:
            r = c.delete("/files/" + f)
            self.assertStatus(r, 202)
            coordinations.append(r.body["coordinationId"])
        for cid in coordinations:
            c.wait_coordination(cid, "completed", timeout=30)

        def settled():
            return all(count(server, t) == 0 for t in ("outbox", "processed", "delivery_attempts"))
        wait_until(settled, 60, message="outbox, processed and delivery_attempts empty after the "
                   "deletions settled")
        # Pruning removed bookkeeping only: every deletion finished once, the kept file is whole.
        for f, cid in zip(files, coordinations):
            self.assertEqual(c.get("/files/" + f).status, 404)
            co = c.coordination(cid)
            self.assertEqual(co["status"], "completed")
        self.assertEqual(count(server, "coordinations WHERE status = 'completed'"), len(files))
        self.assertEqual(count(server, "tombstones"), len(files))
        self.assertEqual(c.get("/files/" + kept).status, 200)
        self.assertEqual(len(c.file_transactions(kept)), len(ROWS))
        self.assertGreater(metric(server, "lastcall_rows_pruned_total", 'table="outbox"'), 0)
        self.assertGreater(metric(server, "lastcall_rows_pruned_total", 'table="processed"'), 0)
        # New work after pruning flows as before (outbox positions are not reused).
        again = c.upload_ok(acct, "again.csv", make_csv(ROWS))["fileId"]
        c.wait_categorized(again)
        r = c.delete("/files/" + again)
        self.assertStatus(r, 202)
        c.wait_coordination(r.body["coordinationId"], "completed", timeout=30)
        wait_until(settled, 60, message="bookkeeping empty again after a second deletion")


if __name__ == "__main__":
    unittest.main()
