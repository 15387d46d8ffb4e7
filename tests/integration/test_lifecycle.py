"""Beyond the plain deletion (issue 9) against the real `lastcall serve`: the owner's cancel
within a window (before and after the deletion began, racing it, the grace window), legal holds
on a user, an account and a file (placed before and during a coordination, released), verified
deletion (clean, and residue planted in the store), and signed receipts (verified offline by
`lastcall receipt verify`, by the npm package jose, refused after one byte changed, and still
verifying after the signing key was rotated).
"""

import json
import os
import random
import shutil
import sqlite3
import subprocess
import tempfile
import threading
import time
import unittest

import harness
from harness import make_csv, parse_time, random_uuid, unique_user, wait_until

HERE = os.path.dirname(os.path.abspath(__file__))
JOSE_DIR = os.path.join(HERE, "jose")

ROWS = [
    ("2024-03-02", "WHOLE FOODS #10", "-61.37", "USD", "Whole Foods"),
    ("2024-03-05", "Uber ride home", "-23.19", "USD", "Uber BV"),
    ("2024-04-01", "Monthly Payroll", "3120.55", "USD", "Employer Inc"),
]
WITH_AUDIT = "analytics_consumer,categorization_consumer,audit_consumer"


def kinds(client, cid):
    r = client.get("/coordinations/%s/timeline" % cid)
    assert r.status == 200, r
    return [e["kind"] for e in r.body["entries"]]


def metric(server, name, labels=""):
    """The value of one series of GET /metrics (0 when absent)."""
    r = harness.http_request(server.port, "GET", "/metrics", raw=True)
    want = name + ("{%s}" % labels if labels else "")
    for line in r.raw.decode().splitlines():
        if line.startswith(want + " "):
            return float(line.split()[-1])
    return 0.0


class Base(harness.ServerPool, harness.Assertions, unittest.TestCase):
    servers = []

    def user_with_file(self, server, rows=ROWS):
        c = server.client(unique_user("owner"))
        acct = c.create_account("Checking", "USD")["accountId"]
        f = c.upload_ok(acct, "statement.csv", make_csv(rows))
        c.wait_categorized(f["fileId"])
        return c, acct, f

    def delete(self, c, file_id):
        r = c.delete("/files/" + file_id)
        self.assertStatus(r, 202)
        return r.body["coordinationId"]

    def consumers_done(self, c, cid, names=("analytics_consumer", "categorization_consumer")):
        def check():
            co = c.coordination(cid)
            st = {x["name"]: x["status"] for x in co["consumers"]}
            return co if all(st.get(n) != "pending" for n in names) else None
        return wait_until(check, 10, message="consumers of %s reported" % cid)


class CancelTest(Base):
    def test_cancel_within_the_grace_window_restores_everything(self):
        server = self.start({"DELETION_GRACE_MINUTES": "0.1"})  # 6 s
        c, acct, f = self.user_with_file(server)
        # The totals once the analytics consumer has counted the upload (on NATS it may not
        # have yet when categorization has): "restored" below must mean restored to these.
        monthly_before = wait_until(lambda: (lambda b: b if b["months"] else None)(
            c.get("/analytics/monthly").body), 10, message="analytics counted the upload")
        account_before = c.account(acct)
        cid = self.delete(c, f["fileId"])
        co = self.consumers_done(c, cid)
        # Everyone has answered, yet the grace window keeps the deletion waiting.
        self.assertEqual(co["status"], "waiting")
        self.assertGreaterEqual(parse_time(co["notBefore"]), parse_time(co["startedAt"]))
        self.assertTrue(c.get("/analytics/archive").body["entries"], "analytics archived nothing")
        self.assertEqual(c.get("/analytics/monthly").body["months"], [])

        # Another user (and an operator, who is not the owner) cannot cancel it.
        other = server.client(unique_user("mallory"))
        self.assertError(other.post("/coordinations/%s/cancel" % cid), 404, "not_found")
        op = server.client(unique_user("ops"), token=server.token("ops", role="operator"))
        self.assertError(op.post("/coordinations/%s/cancel" % cid), 404, "not_found")
        self.assertError(c.post("/coordinations/%s/cancel" % random_uuid()), 404, "not_found")

        r = c.post("/coordinations/%s/cancel" % cid)
        self.assertStatus(r, 200)
        self.assertEqual(r.body["status"], "cancelled")
        self.assertIsNotNone(r.body["cancelledAt"])
        again = c.post("/coordinations/%s/cancel" % cid)
        self.assertStatus(again, 200)
        self.assertEqual(again.body["status"], "cancelled")

        # The file is active again, with all its data, and stays (the grace window passes).
        got = c.get("/files/" + f["fileId"]).body
        self.assertEqual((got["status"], got["coordinationId"]), ("active", None))
        self.assertEqual(len(c.file_transactions(f["fileId"])), len(ROWS))
        self.assertEqual(c.account(acct), account_before)
        # The analytics consumer undid its anticipation: totals back, archived summary dropped.
        wait_until(lambda: c.get("/analytics/monthly").body == monthly_before, 10,
                   message="monthly totals restored")
        self.assertEqual(c.get("/analytics/archive").body["entries"], [])
        events = [e for e in server.outbox() if e["type"] == "file.delete_cancelled"]
        self.assertEqual([e["data"]["coordinationId"] for e in events], [cid])
        self.assertNotIn("raw", json.dumps(events[0]["data"]))
        self.assertIn("cancelled", kinds(c, cid))
        self.assertNotIn("deleted", kinds(c, cid))
        self.assertEqual(c.get("/coordinations?status=cancelled").body["coordinations"][0]
                         ["coordinationId"], cid)
        self.assertEqual(metric(server, "lastcall_coordinations_cancelled_total"), 1)
        self.assertError(c.get("/coordinations/%s/receipt" % cid), 409, "receipt_not_ready")
        time.sleep(6.5)
        self.assertEqual(c.coordination(cid)["status"], "cancelled")
        self.assertEqual(c.get("/files/" + f["fileId"]).body["status"], "active")

        # A new DELETE starts a new coordination, which deletes after its own window.
        cid2 = self.delete(c, f["fileId"])
        self.assertNotEqual(cid2, cid)
        done = c.wait_coordination(cid2, "completed", timeout=20)
        self.assertEqual(done["outcome"], "all_completed")
        self.assertGreaterEqual(parse_time(done["completedAt"]), parse_time(done["notBefore"]))
        self.assertStatus(c.get("/files/" + f["fileId"]), 404)
        self.assertEqual(c.get("/analytics/monthly").body["months"], [])
        self.assertEqual({e["coordinationId"] for e in c.get("/analytics/archive").body["entries"]},
                         {cid2})

    def test_grace_window_holds_a_completed_coordination_back(self):
        server = self.start({"DELETION_GRACE_MINUTES": "0.05"})  # 3 s
        c, _, f = self.user_with_file(server)
        cid = self.delete(c, f["fileId"])
        self.consumers_done(c, cid)
        done = c.wait_coordination(cid, "completed", timeout=15)
        started = parse_time(done["startedAt"])
        self.assertGreaterEqual((parse_time(done["completedAt"]) - started).total_seconds(), 3.0)
        self.assertEqual((parse_time(done["notBefore"]) - started).total_seconds(), 3.0)
        self.assertEqual(done["outcome"], "all_completed")

    def test_cancel_after_the_deletion_began_is_refused(self):
        server = self.start({"LASTCALL_TEST_DELETION_DELAY_MS": "1500"})
        c, acct, f = self.user_with_file(server)
        cid = self.delete(c, f["fileId"])
        c.wait_coordination(cid, "deleting", timeout=10)
        self.assertError(c.post("/coordinations/%s/cancel" % cid), 409, "deletion_started")
        done = c.wait_coordination(cid, "completed", timeout=15)
        self.assertError(c.post("/coordinations/%s/cancel" % cid), 409, "deletion_started")
        self.assertIsNone(done["cancelledAt"])
        self.assertStatus(c.get("/files/" + f["fileId"]), 404)
        self.assertEqual(c.account(acct)["transactionCount"], 0)
        self.assertFalse([e for e in server.outbox() if e["type"] == "file.delete_cancelled"])

    def test_a_cancel_racing_the_deletion_has_exactly_one_winner(self):
        # A 60 ms window: the cancel lands just before or just after the deletion begins.
        server = self.start({"DELETION_GRACE_MINUTES": "0.001"})
        outcomes = []
        for i in range(12):
            c, acct, f = self.user_with_file(server, ROWS[:1])
            cid = self.delete(c, f["fileId"])
            time.sleep(random.uniform(0.0, 0.12))
            r = c.post("/coordinations/%s/cancel" % cid)
            self.assertIn(r.status, (200, 409), r)
            if r.status == 200:
                outcomes.append("cancel")
                time.sleep(0.2)  # give a wrong deletion the time to happen
                co = c.coordination(cid)
                self.assertEqual(co["status"], "cancelled")
                self.assertEqual(c.get("/files/" + f["fileId"]).body["status"], "active")
                self.assertEqual(len(c.file_transactions(f["fileId"])), 1)
                self.assertNotIn("deleted", kinds(c, cid))
            else:
                self.assertEqual(r.body["error"], "deletion_started")
                outcomes.append("delete")
                co = c.wait_coordination(cid, "completed")
                self.assertIsNone(co["cancelledAt"])
                self.assertStatus(c.get("/files/" + f["fileId"]), 404)
                self.assertNotIn("cancelled", kinds(c, cid))
            events = server.events_for(coordination_id=cid)
            types = [e["type"] for e in events]
            # Never both: one winner, whichever committed first.
            self.assertFalse("file.deleted" in types and "file.delete_cancelled" in types, types)
        print("race outcomes: %s" % outcomes)


class HoldTest(Base):
    def operator(self, server):
        return server.client(unique_user("ops"), token=server.token("legal-ops", role="operator"))

    def test_hold_on_a_file_during_its_coordination_blocks_the_deadline(self):
        server = self.start({"EXPECTED_CONSUMERS": WITH_AUDIT, "COORDINATION_TIMEOUT_MINUTES": "0.04"})
        op = self.operator(server)
        c, _, f = self.user_with_file(server)
        cid = self.delete(c, f["fileId"])
        r = op.post("/holds", {"fileId": f["fileId"], "reason": "case 2024-17: preserve statements"})
        self.assertStatus(r, 201)
        self.assertEqual((r.body["scope"], r.body["fileId"], r.body["coordinationsHeld"]),
                         ("file", f["fileId"], 1))
        self.assertEqual(r.body["placedBy"], "legal-ops")
        hold_id = r.body["holdId"]
        co = c.coordination(cid)
        self.assertEqual((co["status"], co["holdReason"]),
                         ("held", "case 2024-17: preserve statements"))
        # Completions still arrive; the deadline (2.4 s) passes; nothing proceeds.
        self.consumers_done(c, cid)
        time.sleep(3.5)
        self.assertEqual(c.coordination(cid)["status"], "held")
        self.assertEqual(c.get("/files/" + f["fileId"]).body["status"], "deletion_requested")
        # A new DELETE of a held file is still accepted and shows the hold.
        again = c.delete("/files/" + f["fileId"])
        self.assertStatus(again, 202)
        self.assertEqual(again.body["coordinationId"], cid)
        self.assertEqual(metric(server, "lastcall_coordinations_held"), 1)
        self.assertEqual(metric(server, "lastcall_deletions_blocked_total"), 1)
        self.assertEqual(metric(server, "lastcall_holds_placed_total", 'scope="file"'), 1)
        self.assertEqual([h["holdId"] for h in op.get("/holds?active=true").body["holds"]], [hold_id])

        # Released after the original deadline: it proceeds at once, timed out.
        r = op.delete("/holds/" + hold_id)
        self.assertStatus(r, 200)
        self.assertEqual((r.body["active"], r.body["coordinationsReleased"]), (False, 1))
        self.assertEqual(r.body["releasedBy"], "legal-ops")
        done = c.wait_coordination(cid, "completed", timeout=10)
        self.assertEqual(done["outcome"], "timed_out")
        self.assertIsNone(done["holdReason"])
        k = kinds(c, cid)
        self.assertLess(k.index("held"), k.index("hold_released"))
        self.assertLess(k.index("hold_released"), k.index("resumed"))
        self.assertLess(k.index("resumed"), k.index("deletion_decided"))
        self.assertEqual(metric(server, "lastcall_holds_released_total", 'scope="file"'), 1)
        self.assertEqual(op.get("/holds?active=true").body["holds"], [])
        self.assertStatus(op.delete("/holds/" + hold_id), 200)  # releasing again: unchanged

    def test_hold_on_a_user_before_the_request_then_release(self):
        server = self.start()
        op = self.operator(server)
        c, _, f = self.user_with_file(server)
        r = op.post("/holds", {"userId": c_user(c), "reason": "regulator inquiry"})
        self.assertStatus(r, 201)
        self.assertEqual(r.body["coordinationsHeld"], 0)
        cid = self.delete(c, f["fileId"])
        co = c.coordination(cid)
        self.assertEqual((co["status"], co["holdReason"]), ("held", "regulator inquiry"))
        self.consumers_done(c, cid)
        self.assertEqual(c.coordination(cid)["status"], "held")
        rel = op.delete("/holds/" + r.body["holdId"])
        self.assertStatus(rel, 200)
        done = c.wait_coordination(cid, "completed", timeout=10)
        self.assertEqual(done["outcome"], "all_completed")
        self.assertStatus(c.get("/files/" + f["fileId"]), 404)

    def test_two_holds_on_account_and_file_need_both_released(self):
        server = self.start()
        op = self.operator(server)
        c, acct, f = self.user_with_file(server)
        cid = self.delete(c, f["fileId"])
        c.wait_coordination(cid, "completed")  # the first file goes; holds cover the next one
        f2 = c.upload_ok(acct, "second.csv", make_csv(ROWS[:2]))
        h_acct = op.post("/holds", {"accountId": acct, "reason": "account frozen"}).body
        h_file = op.post("/holds", {"fileId": f2["fileId"], "reason": "file evidence"}).body
        cid2 = self.delete(c, f2["fileId"])
        self.assertEqual(c.coordination(cid2)["holdReason"], "account frozen")
        self.consumers_done(c, cid2)
        self.assertEqual(op.delete("/holds/" + h_acct["holdId"]).body["coordinationsReleased"], 0)
        co = c.coordination(cid2)
        self.assertEqual((co["status"], co["holdReason"]), ("held", "file evidence"))
        tl = c.get("/coordinations/%s/timeline" % cid2).body["entries"]
        rel = [e["detail"] for e in tl if e["kind"] == "hold_released"]
        self.assertEqual(rel, [{"holdId": h_acct["holdId"], "stillHeld": True}])
        self.assertEqual(op.delete("/holds/" + h_file["holdId"]).body["coordinationsReleased"], 1)
        self.assertEqual(c.wait_coordination(cid2, "completed")["outcome"], "all_completed")

    def test_the_owner_may_cancel_a_held_deletion(self):
        server = self.start()
        op = self.operator(server)
        c, _, f = self.user_with_file(server)
        h = op.post("/holds", {"fileId": f["fileId"], "reason": "hold"}).body
        cid = self.delete(c, f["fileId"])
        self.assertEqual(c.coordination(cid)["status"], "held")
        self.assertEqual(c.post("/coordinations/%s/cancel" % cid).body["status"], "cancelled")
        self.assertEqual(c.get("/files/" + f["fileId"]).body["status"], "active")
        self.assertEqual(op.delete("/holds/" + h["holdId"]).body["coordinationsReleased"], 0)
        self.assertEqual(c.coordination(cid)["status"], "cancelled")

    def test_holds_are_for_operators_and_validate_their_input(self):
        server = self.start()
        op = self.operator(server)
        user = server.client(unique_user("u"))
        for r in (user.get("/holds"), user.post("/holds", {"userId": "x", "reason": "r"}),
                  user.delete("/holds/" + random_uuid())):
            self.assertError(r, 403, "forbidden")
        self.assertError(harness.Client(server).get("/holds"), 401, "unauthorized")
        for body in ({"reason": "no target"}, {"userId": "a", "fileId": random_uuid(), "reason": "r"},
                     {"fileId": "not-a-uuid", "reason": "r"}, {"accountId": random_uuid()},
                     {"userId": "a", "reason": ""}, {"userId": 7, "reason": "r"},
                     {"userId": "a", "reason": "r", "extra": 1}):
            self.assertError(op.post("/holds", body), 400, "invalid_request")
        self.assertError(op.post("/holds", b"[", headers={"Content-Type": "application/json"}),
                         400, "invalid_json")
        self.assertError(op.delete("/holds/" + random_uuid()), 404, "not_found")
        self.assertError(op.delete("/holds/nope"), 400, "invalid_id")
        self.assertError(op.get("/holds?active=maybe"), 400, "invalid_request")
        self.assertEqual(op.get("/holds").body, {"holds": []})


def c_user(client):
    """The user id a harness client's token names (its `sub`)."""
    payload = client.token.split(".")[1]
    payload += "=" * (-len(payload) % 4)
    import base64
    return json.loads(base64.urlsafe_b64decode(payload))["sub"]


class VerificationAndReceiptTest(Base):
    def cli(self, server, *args):
        env = dict(os.environ, LASTCALL_DATA_DIR=server.data_dir)
        return subprocess.run([server.bin] + list(args), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, env=env, timeout=20)

    def jose(self, receipt_path, jwks_path):
        if not shutil.which("node"):
            self.fail("no `node` on PATH (make test installs Debian's nodejs)")
        if not os.path.isdir(os.path.join(JOSE_DIR, "node_modules", "jose")):
            self.fail("jose is not installed in %s (make node-tools)" % JOSE_DIR)
        return subprocess.run(["node", os.path.join(JOSE_DIR, "verify.mjs"), receipt_path,
                               jwks_path], cwd=JOSE_DIR, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, timeout=30)

    def verified_deletion(self, server):
        c, _, f = self.user_with_file(server)
        cid = self.delete(c, f["fileId"])
        c.wait_coordination(cid, "completed")
        co = wait_until(lambda: (lambda x: x if x["verification"] else None)(c.coordination(cid)),
                        10, message="verification of %s" % cid)
        return c, f, cid, co

    def test_a_deletion_is_verified_and_its_receipt_checks_out_everywhere(self):
        server = self.start()
        c, f, cid, co = self.verified_deletion(server)
        self.assertEqual(co["verification"]["result"], "verified")
        self.assertEqual(co["verification"]["residue"], {})
        self.assertIn("verified", kinds(c, cid))
        self.assertEqual(metric(server, "lastcall_deletion_verifications_total", 'result="verified"'), 1)

        r = c.get("/coordinations/%s/receipt" % cid)
        self.assertStatus(r, 200)
        claims = r.body["claims"]
        self.assertEqual(claims["fileId"], f["fileId"])
        self.assertEqual(claims["contentSha256"], f["sha256"])
        self.assertEqual(claims["outcome"], "all_completed")
        self.assertEqual(claims["requestedAt"], co["startedAt"])
        self.assertEqual({x["name"]: x["status"] for x in claims["consumers"]},
                         {"analytics_consumer": "completed", "categorization_consumer": "completed"})
        self.assertEqual(claims["verification"]["result"], "verified")
        self.assertError(server.client(unique_user("eve")).get("/coordinations/%s/receipt" % cid),
                         404, "not_found")
        jwks = harness.Client(server).get("/.well-known/jwks.json")
        self.assertStatus(jwks, 200)
        self.assertEqual([k["kid"] for k in jwks.body["keys"]], [r.body["kid"]])
        key_file = os.path.join(server.data_dir, "receipt_keys", "signing.pem")
        self.assertEqual(os.stat(key_file).st_mode & 0o777, 0o600)

        with tempfile.TemporaryDirectory(prefix="lastcall-receipt-") as d:
            receipt = os.path.join(d, "receipt.jws")
            jwks_path = os.path.join(d, "jwks.json")
            with open(receipt, "w") as fh:
                fh.write(r.body["receipt"])
            with open(jwks_path, "w") as fh:
                json.dump(jwks.body, fh)
            # Offline, three ways: a saved JWKS, the data folder's keys, the saved API answer.
            p = self.cli(server, "receipt", "verify", receipt, "--jwks", jwks_path)
            self.assertEqual(p.returncode, 0, p.stderr)
            self.assertEqual(json.loads(p.stdout)["contentSha256"], f["sha256"])
            self.assertEqual(self.cli(server, "receipt", "verify", receipt).returncode, 0)
            answer = os.path.join(d, "answer.json")
            with open(answer, "w") as fh:
                json.dump(r.body, fh)
            self.assertEqual(self.cli(server, "receipt", "verify", answer, "--jwks", jwks_path)
                             .returncode, 0)
            # An independent JOSE implementation agrees.
            j = self.jose(receipt, jwks_path)
            self.assertEqual(j.returncode, 0, j.stderr.decode())
            out = json.loads(j.stdout)
            self.assertEqual(out["header"]["alg"], "EdDSA")
            self.assertEqual(out["payload"], claims)
            # One byte changed, in the payload and in the signature: refused by both.
            jws = r.body["receipt"]
            head, payload, sig = jws.split(".")
            for i, tampered in enumerate((
                    head + "." + flip(payload, len(payload) // 2) + "." + sig,
                    head + "." + payload + "." + flip(sig, 5))):
                bad = os.path.join(d, "bad%d.jws" % i)
                with open(bad, "w") as fh:
                    fh.write(tampered)
                p = self.cli(server, "receipt", "verify", bad, "--jwks", jwks_path)
                self.assertEqual(p.returncode, 1, (tampered, p.stdout, p.stderr))
                self.assertIn(b"NOT valid", p.stderr)
                self.assertNotEqual(self.jose(bad, jwks_path).returncode, 0, tampered)
        self.assertEqual(metric(server, "lastcall_receipts_issued_total"), 1)

    def test_rotated_keys_keep_old_receipts_verifying(self):
        server = self.start()
        c, _, cid, _ = self.verified_deletion(server)
        old = c.get("/coordinations/%s/receipt" % cid).body
        server.stop()
        p = self.cli(server, "receipt", "rotate-key")
        self.assertEqual(p.returncode, 0, p.stderr)
        new_kid = p.stdout.decode().strip()
        self.assertNotEqual(new_kid, old["kid"])
        server.start()
        jwks = harness.Client(server).get("/.well-known/jwks.json").body
        self.assertEqual([k["kid"] for k in jwks["keys"]], [new_kid, old["kid"]])
        fresh = c.get("/coordinations/%s/receipt" % cid).body
        self.assertEqual(fresh["kid"], new_kid)
        with tempfile.TemporaryDirectory(prefix="lastcall-receipt-") as d:
            jwks_path = os.path.join(d, "jwks.json")
            with open(jwks_path, "w") as fh:
                json.dump(jwks, fh)
            for name, body in (("old", old), ("new", fresh)):
                path = os.path.join(d, name + ".jws")
                with open(path, "w") as fh:
                    fh.write(body["receipt"])
                p = self.cli(server, "receipt", "verify", path, "--jwks", jwks_path)
                self.assertEqual(p.returncode, 0, (name, p.stderr))
                self.assertEqual(self.jose(path, jwks_path).returncode, 0, name)

    @unittest.skipIf("postgres" in harness.test_services(),
                     "plants residue by writing the SQLite file directly; the verification step "
                     "itself is engine-neutral SQL, covered on PostgreSQL by the other tests")
    def test_planted_residue_is_found(self):
        # The deletion pauses 1.5 s in `deleting`: time to plant a row the deletion does not
        # remove (a per-file analytics total, as a buggy consumer would leave behind).
        server = self.start({"LASTCALL_TEST_DELETION_DELAY_MS": "1500"})
        c, _, f = self.user_with_file(server)
        cid = self.delete(c, f["fileId"])
        c.wait_coordination(cid, "deleting", timeout=10)
        conn = sqlite3.connect(server.db_path, timeout=10)
        try:
            conn.execute("INSERT INTO analytics_file_totals (user_id, file_id, month, category, "
                         "total_units, count) VALUES (?, ?, '2024-03', 'planted', 1, 1)",
                         (c_user(c), f["fileId"]))
            conn.commit()
        finally:
            conn.close()
        c.wait_coordination(cid, "completed", timeout=15)
        co = wait_until(lambda: (lambda x: x if x["verification"] else None)(c.coordination(cid)),
                        10, message="verification")
        self.assertEqual(co["verification"]["result"], "residue")
        self.assertEqual(co["verification"]["residue"], {"analyticsFileTotals": 1})
        tl = c.get("/coordinations/%s/timeline" % cid).body["entries"]
        self.assertEqual([e["detail"] for e in tl if e["kind"] == "residue_found"],
                         [{"residue": {"analyticsFileTotals": 1}}])
        self.assertEqual(metric(server, "lastcall_deletion_verifications_total", 'result="residue"'), 1)
        receipt = c.get("/coordinations/%s/receipt" % cid).body
        self.assertEqual(receipt["claims"]["verification"]["result"], "residue")
        errors = [obj for _, obj in server.log_lines()
                  if obj and obj.get("message") == "residue found after a deletion"]
        self.assertEqual([(e.get("level"), e.get("coordinationId")) for e in errors],
                         [("error", cid)])


def flip(text, i):
    """text with the base64url character at i replaced by another one."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    ch = text[i]
    return text[:i] + alphabet[(alphabet.index(ch) + 1) % 64] + text[i + 1:]


if __name__ == "__main__":
    unittest.main()
