"""The coordinated, event-driven deletion (issue 3) against the real `lastcall serve`:

the full flow with real consumer work (analytics archive, learned mappings), the events in the
outbox and their order, a second DELETE while pending, a consumer that never answers (timeout),
configuration validation, and SIGKILL of the server while a coordination waits and while it
deletes, each deletion finishing exactly once after a restart.
"""

import datetime
import json
import os
import re
import subprocess
import threading
import time
import unittest
from collections import defaultdict
from decimal import Decimal

import harness
from harness import (COORDINATION_FIELDS, DEFAULT_CONSUMERS, Server, ServerTestCase,
                     expected_from_rows, make_csv, money_str, parse_time, unique_user, wait_until)

WITH_AUDIT = "analytics_consumer,categorization_consumer,audit_consumer"
ALL_WITH_AUDIT = DEFAULT_CONSUMERS + ["audit_consumer"]

# (date, description, amount, currency, merchant, expected keyword category)
FILE_A = [
    ("2024-03-02", "WHOLE FOODS #10", "-61.37", "USD", "Whole Foods", "groceries"),
    ("2024-03-05", "Uber ride home", "-23.19", "USD", "Uber BV", "transport"),
    ("2024-03-28", "Corner Shop purchase", "-8.43", "USD", "Corner Shop", "uncategorized"),
    ("2024-04-30", "NETFLIX subscription", "-15.49", "USD", "Netflix", "subscriptions"),
    ("2024-04-01", "Monthly Payroll", "3120.55", "USD", "Employer Inc", "income"),
    ("2024-04-03", "Starbucks Reserve", "-6.71", "USD", "Starbucks", "dining"),
    ("2024-04-02", "Apartment rent", "-1450.00", "USD", "Property Mgmt", "housing"),
]
FILE_B = [
    ("2024-03-15", "Trader Joe's run", "-34.12", "USD", "Trader Joe's", "groceries"),
    ("2024-04-12", "Shell fuel", "-45.66", "USD", "Shell", "transport"),
    ("2024-02-10", "Mystery charge", "-9.99", "USD", "Acme Widgets", "uncategorized"),
]
FILE_A_NAME = "march-april-statement.csv"


def csv_of(rows):
    return make_csv([r[:5] for r in rows])


def derived(rows):
    return expected_from_rows([(r[0], r[2]) for r in rows])


def per_month(entries):
    """{month: (total, count)} summed over categories, from analytics entries."""
    acc = defaultdict(lambda: [Decimal(0), 0])
    for e in entries:
        acc[e["month"]][0] += Decimal(e["total"])
        acc[e["month"]][1] += e["count"]
    return {m: (money_str(t), c) for m, (t, c) in acc.items()}


def per_month_rows(rows):
    acc = defaultdict(lambda: [Decimal(0), 0])
    for r in rows:
        acc[r[0][:7]][0] += Decimal(r[2])
        acc[r[0][:7]][1] += 1
    return {m: (money_str(t), c) for m, (t, c) in acc.items()}


def consumers_by_name(coordination):
    return {c["name"]: c for c in coordination["consumers"]}


class CoordinationAssertions(object):
    """Helpers shared by the test classes below (mixed into ServerTestCase / TestCase)."""

    def setup_user_with_files(self, server, rows_a=FILE_A, rows_b=FILE_B):
        self.user = unique_user("alice")
        self.c = server.client(self.user)
        self.account_id = self.c.create_account("Checking", "USD")["accountId"]
        self.content_a = csv_of(rows_a)
        self.file_a = self.c.upload_ok(self.account_id, FILE_A_NAME, self.content_a)
        self.file_b = self.c.upload_ok(self.account_id, "other.csv", csv_of(rows_b))
        # Wait for the categorization consumer (test_full_flow checks the categories).
        self.txns_a = self.wait_categorized_or_current(self.file_a["fileId"])
        self.txns_b = self.wait_categorized_or_current(self.file_b["fileId"])
        self.assertTrue(server.blobs_holding(self.content_a),
                        "the uploaded content is in $LASTCALL_DATA_DIR/blobs")

    def wait_categorized_or_current(self, file_id):
        try:
            return self.c.wait_categorized(file_id, timeout=5)
        except AssertionError:
            return self.c.file_transactions(file_id)

    def assertCoordinationShape(self, c, coordination_id, file_id, expected_consumers):
        self.assertLessEqual(COORDINATION_FIELDS, set(c), "coordination fields: %r" % c)
        with self.subTest("GET /coordinations/{id} has exactly the fields of issue 3"):
            self.assertEqual(set(c), COORDINATION_FIELDS, "coordination fields: %r" % c)
        self.assertEqual(c["coordinationId"], coordination_id)
        self.assertEqual(c["fileId"], file_id)
        self.assertIn(c["status"], ("waiting", "deleting", "completed"))
        self.assertEqual(sorted(c["expectedConsumers"]), sorted(expected_consumers))
        for entry in c["consumers"]:
            self.assertEqual(set(entry), {"name", "status", "completedAt", "detail", "priority",
                                          "timeoutAt", "proceededBy"}, entry)
            # EXPECTED_CONSUMERS are critical and waited for until the deadline.
            self.assertEqual(entry["priority"], "critical")
            self.assertEqual(entry["timeoutAt"], c["deadlineAt"])
            if c["status"] == "waiting":
                self.assertIsNone(entry["proceededBy"])
            else:
                self.assertEqual(entry["proceededBy"],
                                 "deadline" if entry["status"] == "pending" else "reported")
            self.assertIn(entry["status"], ("pending", "completed", "failed"))
            if entry["status"] == "pending":
                self.assertIsNone(entry["completedAt"])
                self.assertIsNone(entry["detail"])
            else:
                parse_time(entry["completedAt"])
                self.assertIsInstance(entry["detail"], dict)
        start = parse_time(c["startedAt"])
        deadline = parse_time(c["deadlineAt"])
        self.assertGreater(deadline, start)
        if c["status"] == "completed":
            self.assertIn(c["outcome"], ("all_completed", "timed_out"))
            self.assertGreaterEqual(parse_time(c["completedAt"]), start)
        else:
            self.assertIsNone(c["outcome"])
            self.assertIsNone(c["completedAt"])

    def assertNoUserContent(self, events, rows, file_name):
        words = [file_name] + [r[1] for r in rows] + [r[4] for r in rows]
        amounts = [r[2].lstrip("-") for r in rows]
        for e in events:
            text = json.dumps([e["raw_data"], e["subject"], e["source"]])
            for word in words:
                self.assertNotIn(word.lower(), text.lower(), "user content %r in %s event: %s"
                                 % (word, e["type"], e["raw_data"]))
            for amount in amounts:
                # As a number of its own, not a piece of a timestamp like 12:34:56.712Z.
                self.assertNotRegex(text, r"(?<![\d.:])%s(?!\d)" % re.escape(amount),
                                    "amount %s in %s event: %s" % (amount, e["type"], e["raw_data"]))

    def assertCoordinationEvents(self, server, coordination_id, file_id, user, account_id,
                                 n_txns, expected_consumers, outcome, missing, rows, file_name):
        """The outbox holds, for this coordination, in order: one file.delete_requested, one
        consumer.completion per answering consumer, exactly one file.deleted."""
        events = server.events_for(coordination_id=coordination_id)
        types = [e["type"] for e in events]
        self.assertEqual(types.count("file.delete_requested"), 1, types)
        self.assertEqual(types.count("file.deleted"), 1, "exactly one file.deleted: %r" % types)
        self.assertEqual(types[0], "file.delete_requested", types)
        self.assertEqual(types[-1], "file.deleted", types)
        seqs = [e["seq"] for e in events]
        self.assertEqual(seqs, sorted(seqs))
        ids = [e["id"] for e in server.outbox()]
        self.assertEqual(len(ids), len(set(ids)), "event ids are unique")

        req = events[0]["data"]
        self.assertEqual(set(req), {"coordinationId", "userId", "fileId", "accountId",
                                    "transactionCount", "expectedConsumers", "requestedAt"}, req)
        self.assertEqual((req["coordinationId"], req["userId"], req["fileId"], req["accountId"],
                          req["transactionCount"]),
                         (coordination_id, user, file_id, account_id, n_txns))
        self.assertEqual(sorted(req["expectedConsumers"]), sorted(expected_consumers))
        parse_time(req["requestedAt"])

        completions = [e["data"] for e in events if e["type"] == "consumer.completion"]
        answered = sorted(set(expected_consumers) - set(missing))
        self.assertEqual(sorted(d["consumer"] for d in completions), answered,
                         "one consumer.completion per consumer")
        for d in completions:
            self.assertEqual(set(d), {"coordinationId", "consumer", "status", "detail"}, d)
            self.assertEqual(d["status"], "completed", d)
            self.assertIsInstance(d["detail"], dict)

        done = events[-1]["data"]
        self.assertEqual(done, {"coordinationId": coordination_id, "userId": user,
                                "fileId": file_id, "outcome": outcome,
                                "transactionsDeleted": n_txns, "missingConsumers": missing})
        for e in events:
            self.assertTrue(e["id"] and e["source"] and e["time"], e)
        self.assertNoUserContent(events, rows, file_name)
        return events

    def assertFileGone(self, client, file_id):
        for path in ("/files/%s", "/files/%s/content", "/files/%s/transactions"):
            self.assertError(client.get(path % file_id), 404, "not_found")
        self.assertError(client.delete("/files/" + file_id), 404, "not_found")
        self.assertNotIn(file_id, [f["fileId"] for f in client.get("/files").body["files"]])


class FullFlowTest(CoordinationAssertions, ServerTestCase):
    """Default configuration: events on, the two default consumers, 5 minute timeout."""

    def test_full_flow(self):
        server = self.server
        self.setup_user_with_files(server)
        c = self.c
        fa, fb = self.file_a["fileId"], self.file_b["fileId"]

        with self.subTest("keyword categories on upload"):
            self.assertEqual([t["category"] for t in self.txns_a], [r[5] for r in FILE_A])
            self.assertEqual([t["category"] for t in self.txns_b], [r[5] for r in FILE_B])

        with self.subTest("monthly totals include both files"):
            r = c.get("/analytics/monthly")
            self.assertStatus(r, 200)
            self.assertEqual(list(r.body), ["months"])
            for e in r.body["months"]:
                self.assertEqual(set(e), {"month", "category", "total", "count"}, e)
            want = per_month_rows(FILE_A + FILE_B)

            def monthly_has_both():
                got = per_month(c.get("/analytics/monthly").body["months"])
                return got if got == want else None
            wait_until(monthly_has_both, 5, message="monthly totals include both files")

        with self.subTest("no learned mapping before a deletion"):
            r = c.get("/categorization/mappings")
            self.assertStatus(r, 200)
            self.assertEqual(r.body, {"mappings": []})

        # The user corrects one category.
        corner = self.txns_a[2]
        r = c.patch("/transactions/" + corner["transactionId"], {"category": "groceries"})
        self.assertStatus(r, 200)
        self.assertEqual(r.body["category"], "groceries")

        self.assertAccountDerived(c, self.account_id, *derived(FILE_A + FILE_B))

        # DELETE: 202, exactly the seed's body.
        r = c.delete("/files/" + fa)
        self.assertStatus(r, 202)
        cid = r.body.get("coordinationId")
        self.assertUuid4(cid)
        self.assertEqual(r.body, {"message": "File deletion initiated successfully", "fileId": fa,
                                  "coordinationId": cid,
                                  "metadata": {"transactionCount": len(FILE_A),
                                               "status": "deletion_requested"}})
        with self.subTest("readable and marked until the deletion executes"):
            r = c.get("/files/" + fa)
            if r.status == 200:
                self.assertEqual((r.body["status"], r.body["coordinationId"]),
                                 ("deletion_requested", cid))
            else:
                self.assertError(r, 404, "not_found")

        # The coordination completes with both consumers.
        coord = c.wait_coordination(cid, "completed")
        with self.subTest("coordination body"):
            self.assertCoordinationShape(coord, cid, fa, DEFAULT_CONSUMERS)
            self.assertEqual(coord["outcome"], "all_completed")
            self.assertEqual({n: e["status"] for n, e in consumers_by_name(coord).items()},
                             {n: "completed" for n in DEFAULT_CONSUMERS})
            span = parse_time(coord["deadlineAt"]) - parse_time(coord["startedAt"])
            self.assertAlmostEqual(span.total_seconds(), 300, delta=2)

        with self.subTest("file gone, derived values moved, other file untouched"):
            self.assertFileGone(c, fa)
            self.assertAccountDerived(c, self.account_id, *derived(FILE_B))
            txns = c.get("/transactions?accountId=" + self.account_id).body["transactions"]
            self.assertEqual(sorted(t["transactionId"] for t in txns),
                             sorted(t["transactionId"] for t in self.txns_b))
            r = c.get("/files/" + fb)
            self.assertEqual((r.status, r.body["status"], r.body["coordinationId"]),
                             (200, "active", None))

        with self.subTest("content leaves the blob store"):
            wait_until(lambda: not server.blobs_holding(self.content_a), 5,
                       message="the deleted file's content leaves the blob store")

        with self.subTest("analytics archive keeps the file's contribution"):
            r = c.get("/analytics/archive")
            self.assertStatus(r, 200)
            self.assertEqual(list(r.body), ["entries"])
            archived = [e for e in r.body["entries"] if e.get("fileId") == fa]
            self.assertTrue(archived, "archive entries for the deleted file: %r" % r.body)
            for e in archived:
                self.assertEqual(set(e), {"fileId", "coordinationId", "month", "category",
                                          "total", "count", "archivedAt"}, e)
                self.assertEqual(e["coordinationId"], cid)
                parse_time(e["archivedAt"])
            self.assertEqual(per_month(archived), per_month_rows(FILE_A))

        with self.subTest("monthly totals no longer include the file"):
            months = c.get("/analytics/monthly").body["months"]
            self.assertEqual(per_month(months), per_month_rows(FILE_B))

        with self.subTest("the correction is learned as a mapping"):
            r = c.get("/categorization/mappings")
            self.assertStatus(r, 200)
            self.assertEqual(len(r.body["mappings"]), 1, r.body)
            m = r.body["mappings"][0]
            self.assertEqual(set(m), {"merchant", "category", "learnedAt"})
            self.assertEqual((m["merchant"], m["category"]), ("corner shop", "groceries"))
            parse_time(m["learnedAt"])

        with self.subTest("a learned mapping wins over the keyword rules"):
            # "coffee" would say dining; the learned merchant mapping says groceries.
            f3 = c.upload_ok(self.account_id, "may.csv", make_csv(
                [("2024-05-01", "Coffee and snacks", "-3.00", "USD", "CORNER SHOP"),
                 ("2024-05-02", "Coffee to go", "-2.50", "USD", "Kiosk")]))
            t3 = c.wait_categorized(f3["fileId"])
            self.assertEqual([t["category"] for t in t3], ["groceries", "dining"])

        with self.subTest("events in order, exactly one file.deleted, no user content"):
            self.assertCoordinationEvents(server, cid, fa, self.user, self.account_id,
                                          len(FILE_A), DEFAULT_CONSUMERS, "all_completed", [],
                                          FILE_A, FILE_A_NAME)

        with self.subTest("one file.uploaded for the import, before the delete request"):
            uploaded = [e for e in server.outbox()
                        if e["type"] == "file.uploaded" and (e["data"] or {}).get("fileId") == fa]
            self.assertEqual(len(uploaded), 1, "one file.uploaded for the import")
            first = server.events_for(coordination_id=cid)[0]
            self.assertLess(uploaded[0]["seq"], first["seq"])

        # The coordination stays readable by its owner.
        self.assertEqual(c.coordination(cid)["status"], "completed")

    def test_large_file_deleted_completely(self):
        c = self.server.client(unique_user())
        account_id = c.create_account("Big", "USD")["accountId"]
        rows = harness.many_rows(3000)
        keep = [("2021-06-01", "Keeper", "2.00", "USD", "K")]
        f = c.upload_ok(account_id, "large.csv", make_csv(rows))
        c.upload_ok(account_id, "keep.csv", make_csv(keep))
        self.assertEqual(f["transactionCount"], 3000)
        r = c.delete("/files/" + f["fileId"])
        self.assertStatus(r, 202)
        self.assertEqual(r.body["metadata"]["transactionCount"], 3000)
        coord = c.wait_coordination(r.body["coordinationId"], "completed", timeout=30)
        self.assertEqual(coord["outcome"], "all_completed")
        done = self.server.file_deleted_events(r.body["coordinationId"])
        self.assertEqual(len(done), 1)
        self.assertEqual(done[0]["data"]["transactionsDeleted"], 3000)
        self.assertAccountDerived(c, account_id, "2.00", 1, "2021-06-01")
        self.assertEqual(len(c.get("/transactions?accountId=" + account_id).body["transactions"]), 1)


class PendingDeletionTest(CoordinationAssertions, ServerTestCase):
    """A consumer that never answers keeps the coordination waiting until the deadline (3 s)."""
    SERVER_ENV = {"EXPECTED_CONSUMERS": WITH_AUDIT, "COORDINATION_TIMEOUT_MINUTES": "0.05"}

    def test_readable_while_waiting_second_delete_same_coordination_then_timeout(self):
        server = self.server
        self.setup_user_with_files(server)
        c = self.c
        fa = self.file_a["fileId"]
        t0 = time.monotonic()
        r1 = c.delete("/files/" + fa)
        self.assertStatus(r1, 202)
        cid = r1.body["coordinationId"]
        self.assertUuid4(cid)

        # A second DELETE while pending: 202 with the same coordinationId.
        r2 = c.delete("/files/" + fa)
        self.assertStatus(r2, 202)
        self.assertEqual(r2.body, r1.body)

        # Readable, marked, derived values unchanged while waiting.
        r = c.get("/files/" + fa)
        self.assertStatus(r, 200)
        self.assertEqual((r.body["status"], r.body["coordinationId"]), ("deletion_requested", cid))
        self.assertEqual(c.get("/files/%s/content" % fa, raw=True).raw, self.content_a)
        self.assertEqual(len(c.file_transactions(fa)), len(FILE_A))
        self.assertAccountDerived(c, self.account_id, *derived(FILE_A + FILE_B))

        # The two real consumers answer; audit_consumer never does.
        def both_answered():
            co = c.coordination(cid)
            by = consumers_by_name(co)
            ok = all(by.get(n, {}).get("status") == "completed" for n in DEFAULT_CONSUMERS)
            return co if ok else None
        co = wait_until(both_answered, 2.5, message="both default consumers completed")
        self.assertLess(time.monotonic() - t0, 3.0, "checks ran before the deadline")
        self.assertEqual(co["status"], "waiting")
        self.assertCoordinationShape(co, cid, fa, ALL_WITH_AUDIT)
        self.assertEqual(consumers_by_name(co)["audit_consumer"]["status"], "pending")
        self.assertEqual(len(server.file_deleted_events(cid)), 0)

        # The deadline fires with no further request: watch the outbox only.
        wait_until(lambda: server.file_deleted_events(cid), 10,
                   message="file.deleted after the deadline")
        self.assertGreaterEqual(time.monotonic() - t0, 2.5, "not before the deadline")
        co = c.coordination(cid)
        self.assertCoordinationShape(co, cid, fa, ALL_WITH_AUDIT)
        self.assertEqual((co["status"], co["outcome"]), ("completed", "timed_out"))
        self.assertEqual(consumers_by_name(co)["audit_consumer"],
                         {"name": "audit_consumer", "status": "pending", "completedAt": None,
                          "detail": None, "priority": "critical", "timeoutAt": co["deadlineAt"],
                          "proceededBy": "deadline"})
        self.assertFileGone(c, fa)
        self.assertAccountDerived(c, self.account_id, *derived(FILE_B))
        self.assertCoordinationEvents(server, cid, fa, self.user, self.account_id, len(FILE_A),
                                      ALL_WITH_AUDIT, "timed_out", ["audit_consumer"], FILE_A,
                                      FILE_A_NAME)


    def test_concurrent_deletes_share_one_coordination(self):
        server = self.server
        self.setup_user_with_files(server)
        fa = self.file_a["fileId"]
        results = [None] * 8

        def delete(i):
            results[i] = self.c.delete("/files/" + fa)
        threads = [threading.Thread(target=delete, args=(i,)) for i in range(len(results))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(15)
        for r in results:
            self.assertStatus(r, 202)
        cids = {r.body["coordinationId"] for r in results}
        self.assertEqual(len(cids), 1, "every DELETE answers the same coordinationId: %r" % cids)
        cid = cids.pop()
        requested = [e for e in server.events_for(file_id=fa)
                     if e["type"] == "file.delete_requested"]
        self.assertEqual(len(requested), 1, "one file.delete_requested for concurrent DELETEs")
        wait_until(lambda: server.file_deleted_events(cid), 10, message="file.deleted")
        self.assertEqual(len(server.file_deleted_events(cid)), 1)
        self.assertAccountDerived(self.c, self.account_id, *derived(FILE_B))


class TimeoutFlowTest(CoordinationAssertions, ServerTestCase):
    """COORDINATION_TIMEOUT_MINUTES=0.02 (1.2 s) and a consumer that never answers."""
    SERVER_ENV = {"EXPECTED_CONSUMERS": WITH_AUDIT, "COORDINATION_TIMEOUT_MINUTES": "0.02"}

    def test_timeout_names_the_missing_consumer(self):
        server = self.server
        self.setup_user_with_files(server)
        c = self.c
        fa = self.file_a["fileId"]
        t0 = time.monotonic()
        r = c.delete("/files/" + fa)
        self.assertStatus(r, 202)
        cid = r.body["coordinationId"]

        wait_until(lambda: server.file_deleted_events(cid), 6,
                   message="file.deleted within a few seconds of the 1.2 s deadline")
        elapsed = time.monotonic() - t0
        self.assertGreaterEqual(elapsed, 1.0, "deleted before the deadline")
        self.assertLess(elapsed, 4.5, "the deadline fired late")

        co = c.coordination(cid)
        self.assertCoordinationShape(co, cid, fa, ALL_WITH_AUDIT)
        self.assertEqual((co["status"], co["outcome"]), ("completed", "timed_out"))
        by = consumers_by_name(co)
        self.assertEqual(by["audit_consumer"]["status"], "pending")
        for n in DEFAULT_CONSUMERS:
            self.assertEqual(by[n]["status"], "completed")
        span = parse_time(co["deadlineAt"]) - parse_time(co["startedAt"])
        self.assertAlmostEqual(span.total_seconds(), 1.2, delta=1.0)
        self.assertGreaterEqual(parse_time(co["completedAt"]),
                                parse_time(co["deadlineAt"]) - datetime.timedelta(seconds=1))

        self.assertCoordinationEvents(server, cid, fa, self.user, self.account_id, len(FILE_A),
                                      ALL_WITH_AUDIT, "timed_out", ["audit_consumer"], FILE_A,
                                      FILE_A_NAME)
        self.assertFileGone(c, fa)
        self.assertAccountDerived(c, self.account_id, *derived(FILE_B))

        # The warning names the missing consumer.
        def warning():
            return [o for o in server.logs()
                    if o.get("level") == "warn" and "audit_consumer" in json.dumps(o)]
        warnings = wait_until(warning, 5, message="a warn log line naming audit_consumer")
        self.assertTrue(any(cid in json.dumps(o) for o in warnings),
                        "the timeout warning carries the coordinationId: %r" % warnings)


class ConfigValidationTest(unittest.TestCase):
    """A bad configuration value stops `serve` with a message that names the variable."""

    def setUp(self):
        self.server = Server()
        self.addCleanup(self.server.cleanup)

    def check_refused(self, var, value):
        try:
            p = self.server.run_cli("serve", extra_env={var: value}, timeout=10)
        except subprocess.TimeoutExpired:
            self.fail("serve kept running with %s=%r" % (var, value))
        out = (p.stdout + p.stderr).decode(errors="replace")
        self.assertNotEqual(p.returncode, 0, "serve accepted %s=%r:\n%s" % (var, value, out))
        self.assertIn(var, out, "the message names the variable")

    def test_bad_timeouts(self):
        for value in ("abc", "0", "-1"):
            with self.subTest(value=value):
                self.check_refused("COORDINATION_TIMEOUT_MINUTES", value)

    def test_bad_enable_event_publishing(self):
        self.check_refused("ENABLE_EVENT_PUBLISHING", "maybe")


class CrashRecoveryTest(CoordinationAssertions, harness.Assertions, unittest.TestCase):
    """SIGKILL while a coordination waits, after its deadline passed while down, and while it
    deletes: after a restart each deletion finishes exactly once."""

    def start(self, env):
        server = Server(env)
        self.addCleanup(server.cleanup)
        server.start()
        return server

    def assertOnceAndConsistent(self, server, cid, outcome, missing, expected_consumers):
        c = server.client(self.user)
        co = c.wait_coordination(cid, "completed", timeout=15)
        self.assertEqual(co["outcome"], outcome)
        self.assertCoordinationEvents(server, cid, self.file_a["fileId"], self.user,
                                      self.account_id, len(FILE_A), expected_consumers, outcome,
                                      missing, FILE_A, FILE_A_NAME)
        self.assertFileGone(c, self.file_a["fileId"])
        self.assertAccountDerived(c, self.account_id, *derived(FILE_B))
        txns = c.get("/transactions?accountId=" + self.account_id).body["transactions"]
        self.assertEqual(sorted(t["transactionId"] for t in txns),
                         sorted(t["transactionId"] for t in self.txns_b))
        wait_until(lambda: not server.blobs_holding(self.content_a), 5,
                   message="the deleted file's content leaves the blob store")
        # One more clean restart: still exactly one file.deleted, nothing re-runs.
        server.restart()
        c = server.client(self.user)
        self.assertEqual(c.coordination(cid)["status"], "completed")
        self.assertAccountDerived(c, self.account_id, *derived(FILE_B))
        self.assertEqual(len(server.file_deleted_events(cid)), 1)

    def wait_both_answered(self, server, cid):
        c = server.client(self.user)

        def check():
            co = c.coordination(cid)
            by = consumers_by_name(co)
            ok = all(by.get(n, {}).get("status") == "completed" for n in DEFAULT_CONSUMERS)
            return co if ok and co["status"] == "waiting" else None
        return wait_until(check, 5, message="coordination waiting with both consumers answered")

    def test_sigkill_while_waiting(self):
        env = {"EXPECTED_CONSUMERS": WITH_AUDIT, "COORDINATION_TIMEOUT_MINUTES": "0.1"}
        server = self.start(env)
        self.setup_user_with_files(server)
        r = self.c.delete("/files/" + self.file_a["fileId"])
        self.assertEqual(r.status, 202, r)
        cid = r.body["coordinationId"]
        self.wait_both_answered(server, cid)
        server.kill()
        self.assertEqual(len(server.file_deleted_events(cid)), 0)

        # Restart with a short timeout; the stored coordination must still finish, once.
        server.start(dict(env, COORDINATION_TIMEOUT_MINUTES="0.02"))
        wait_until(lambda: server.file_deleted_events(cid), 12,
                   message="file.deleted after the restart, with no further request")
        self.assertOnceAndConsistent(server, cid, "timed_out", ["audit_consumer"], ALL_WITH_AUDIT)

    def test_deadline_passes_while_down(self):
        env = {"EXPECTED_CONSUMERS": WITH_AUDIT, "COORDINATION_TIMEOUT_MINUTES": "0.05"}
        server = self.start(env)
        self.setup_user_with_files(server)
        r = self.c.delete("/files/" + self.file_a["fileId"])
        self.assertEqual(r.status, 202, r)
        cid = r.body["coordinationId"]
        co = self.wait_both_answered(server, cid)
        server.kill()
        deadline = parse_time(co["deadlineAt"])
        # The server is down: wait for its stored deadline to pass on the wall clock.
        wait_until(lambda: datetime.datetime.now(datetime.timezone.utc) >
                   deadline + datetime.timedelta(seconds=0.5), 10, interval=0.05,
                   message="the deadline passes while the server is down")
        self.assertEqual(len(server.file_deleted_events(cid)), 0)
        t0 = time.monotonic()
        server.start(env)
        # No request but /healthz: the deadline must fire on its own after the restart.
        wait_until(lambda: server.file_deleted_events(cid), 5,
                   message="an overdue deadline fires right after the restart")
        self.assertLess(time.monotonic() - t0, 5)
        self.assertOnceAndConsistent(server, cid, "timed_out", ["audit_consumer"], ALL_WITH_AUDIT)

    def test_sigkill_while_deleting(self):
        server = self.start({"LASTCALL_TEST_DELETION_DELAY_MS": "3000"})
        self.setup_user_with_files(server)
        r = self.c.delete("/files/" + self.file_a["fileId"])
        self.assertEqual(r.status, 202, r)
        cid = r.body["coordinationId"]
        self.c.wait_coordination(cid, "deleting", timeout=10)
        server.kill()
        self.assertEqual(len(server.file_deleted_events(cid)), 0,
                         "the deletion had not run when the server was killed")

        server.start({})  # no delay now
        self.assertOnceAndConsistent(server, cid, "all_completed", [], DEFAULT_CONSUMERS)


if __name__ == "__main__":
    unittest.main()
