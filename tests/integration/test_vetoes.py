"""Consumer vetoes and the operator's override (issue 9) against the real `lastcall serve`.

A webhook consumer registered with "canVeto": true answers a deletion with a veto, by the API
(POST /coordinations/{id}/completions, status "veto") or in its webhook's answer (the reference
consumer, examples/webhook_consumer.py --veto): the coordination ends vetoed, the file stays with
its rows, content and analytics, the owner sees who vetoed and why. A consumer without the right is
refused (422); a veto after the deletion began is 409; a veto while held still records. An operator
overrides (audited) and the deletion proceeds, verified and with a receipt that says so; a hold
still wins over the override; user tokens get 403, a coordination not vetoed 409.
"""

import http.server
import json
import threading
import unittest

import harness
from harness import free_port, http_request, make_csv, unique_user, wait_until
from test_webhooks import ReferenceConsumer

ROWS = [("2024-05-02", "Grocer", "-20.00", "USD", "Grocer"),
        ("2024-05-03", "Salary", "1000.00", "USD", "Employer")]

ENV = {
    "OPTIONAL_GRACE_SECONDS": "1",
    "LASTCALL_WEBHOOK_BACKOFF_BASE_MS": "100",
    "LASTCALL_WEBHOOK_BACKOFF_CAP_MS": "400",
    "LASTCALL_WEBHOOK_MAX_ATTEMPTS": "4",
    "LASTCALL_WEBHOOK_TIMEOUT_MS": "1000",
}


class Receiver(object):
    """A webhook endpoint that only acknowledges (200 {}): its consumer reports by the API."""

    def __init__(self):
        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


class VetoTest(harness.ServerTestCase):
    SERVER_ENV = ENV

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.receiver = Receiver()

    @classmethod
    def tearDownClass(cls):
        cls.receiver.stop()
        super().tearDownClass()

    def setUp(self):
        self.op = self.server.client(token=self.server.token(unique_user("ops"), role="operator"))
        self.user = self.server.client(unique_user("owner"))
        self.account = self.user.create_account("Checking", "USD")["accountId"]

    # -- helpers

    def register(self, can_veto, priority="critical", port=None):
        name = unique_user("v").replace("-", "_")
        body = {"name": name, "url": "http://127.0.0.1:%d/webhook" % (port or self.receiver.port),
                "priority": priority, "timeoutMinutes": 5, "heartbeatSeconds": 3600,
                "canVeto": can_veto}
        r = self.op.post("/consumers", body)
        self.assertStatus(r, 201)
        self.addCleanup(lambda: self.op.delete("/consumers/" + name))
        r.body["client"] = self.server.client(token=r.body["token"])
        r.body["port"] = port
        return r.body

    def upload(self):
        f = self.user.upload_ok(self.account, "s.csv", make_csv(ROWS))
        self.user.wait_categorized(f["fileId"])
        return f

    def delete(self, file_id):
        r = self.user.delete("/files/" + file_id)
        self.assertStatus(r, 202)
        return r.body["coordinationId"]

    def answer(self, consumer, cid, status, **extra):
        body = dict({"consumer": consumer["name"], "status": status}, **extra)
        return consumer["client"].post("/coordinations/%s/completions" % cid, body)

    def entry(self, coordination, name):
        return {c["name"]: c for c in coordination["consumers"]}[name]

    def wait_consumers(self, cid, names):
        def check():
            co = self.user.coordination(cid)
            return co if all(self.entry(co, n)["status"] != "pending" for n in names) else None
        return wait_until(check, 10, message="consumers %s of %s reported" % (names, cid))

    def kinds(self, cid):
        r = self.user.get("/coordinations/%s/timeline" % cid)
        self.assertStatus(r, 200)
        return r.body["entries"]

    def metric(self, name, labels=""):
        text = http_request(self.server.port, "GET", "/metrics", raw=True).raw.decode()
        want = name + ("{%s}" % labels if labels else "")
        for line in text.splitlines():
            if line.startswith(want + " "):
                return float(line.split()[-1])
        return 0.0

    def monthly(self):
        r = self.user.get("/analytics/monthly")
        self.assertStatus(r, 200)
        return r.body

    # -- tests

    def test_veto_by_api_keeps_the_file_until_the_operator_overrides(self):
        veto = self.register(can_veto=True)
        plain = self.register(can_veto=False)
        f = self.upload()
        fid = f["fileId"]
        content = self.user.get("/files/%s/content" % fid, raw=True).raw
        monthly_before = self.monthly()
        vetoes_before = self.metric("lastcall_vetoes_total", 'consumer="%s"' % veto["name"])
        cid = self.delete(fid)
        self.wait_consumers(cid, ["analytics_consumer", "categorization_consumer"])

        # Refusals first: none of them changes anything.
        self.assertError(self.answer(plain, cid, "veto", reason="not mine to stop"), 422,
                         "veto_not_allowed")
        self.assertEqual(self.metric("lastcall_vetoes_refused_total", 'reason="veto_not_allowed"'),
                         1)
        self.assertError(self.answer(veto, cid, "veto"), 400, "invalid_request")  # no reason
        self.assertError(self.answer(veto, cid, "veto", reason=""), 400, "invalid_request")
        self.assertError(self.answer(veto, cid, "veto", reason="x" * 501), 400, "invalid_request")
        self.assertError(self.answer(veto, cid, "veto", reason=7), 400, "invalid_request")
        self.assertError(self.answer(veto, cid, "completed", reason="why"), 400, "invalid_request")
        self.assertError(self.answer(veto, harness.random_uuid(), "veto", reason="r"), 404,
                         "not_found")
        self.assertError(veto["client"].post("/coordinations/%s/completions" % cid,
                                             {"consumer": plain["name"], "status": "veto",
                                              "reason": "as another"}), 403, "forbidden")
        self.assertError(self.user.post("/coordinations/%s/completions" % cid,
                                        {"consumer": veto["name"], "status": "veto",
                                         "reason": "as a user"}), 403, "forbidden")
        self.assertEqual(self.user.coordination(cid)["status"], "waiting")

        reason = "retention: statement under audit until 2031"
        r = self.answer(veto, cid, "veto", reason=reason, detail={"ticket": "AUD-7"})
        self.assertStatus(r, 200)
        self.assertEqual((r.body["status"], r.body["duplicate"], r.body["coordinationStatus"]),
                         ("vetoed", False, "vetoed"))
        again = self.answer(veto, cid, "veto", reason="again")
        self.assertStatus(again, 200)
        self.assertEqual(again.body["duplicate"], True)
        # A completion after its veto is the duplicate of its answer (the veto stands).
        late = self.answer(veto, cid, "completed")
        self.assertStatus(late, 200)
        self.assertEqual((late.body["duplicate"], late.body["status"]), (True, "vetoed"))

        # The owner sees who vetoed and why; the file, its rows, content and totals stay.
        co = self.user.coordination(cid)
        self.assertEqual(co["status"], "vetoed")
        self.assertEqual((co["veto"]["consumer"], co["veto"]["reason"]), (veto["name"], reason))
        harness.parse_time(co["veto"]["vetoedAt"])
        self.assertIsNone(co["override"])
        self.assertIsNone(co["verification"])
        mine = self.entry(co, veto["name"])
        self.assertEqual(mine["status"], "vetoed")
        self.assertEqual(mine["detail"], {"ticket": "AUD-7", "reason": reason})
        self.assertEqual(self.user.get("/coordinations?status=vetoed").body["coordinations"][0]
                         ["coordinationId"], cid)
        got = self.user.get("/files/" + fid)
        self.assertStatus(got, 200)
        self.assertEqual((got.body["status"], got.body["coordinationId"]), ("active", None))
        self.assertEqual(len(self.user.file_transactions(fid)), len(ROWS))
        self.assertEqual(self.user.get("/files/%s/content" % fid, raw=True).raw, content)
        wait_until(lambda: self.monthly() == monthly_before, 10,
                   message="analytics totals restored after the veto")
        self.assertEqual(self.user.get("/analytics/archive").body.get("files", []), [])
        entries = self.kinds(cid)
        vetoed = [e["detail"] for e in entries if e["kind"] == "vetoed"]
        self.assertEqual(vetoed, [{"consumer": veto["name"], "reason": reason, "fileActive": True}])
        events = [e for e in self.server.events_for(coordination_id=cid)
                  if e["type"] == "file.delete_vetoed"]
        self.assertEqual(len(events), 1)
        self.assertEqual(events[0]["data"]["consumer"], veto["name"])
        self.assertNotIn(reason, events[0]["raw_data"])  # reasons stay off the bus
        self.assertEqual(self.metric("lastcall_vetoes_total", 'consumer="%s"' % veto["name"]),
                         vetoes_before + 1)
        self.assertGreaterEqual(self.metric("lastcall_coordinations_vetoed"), 1)
        # No receipt for a deletion that did not happen; the deadline does not move it.
        self.assertError(self.user.get("/coordinations/%s/receipt" % cid), 409, "receipt_not_ready")

        # The override: the operator's alone, only for a vetoed coordination.
        path = "/coordinations/%s/override" % cid
        self.assertError(self.user.post(path, {"reason": "mine"}), 403, "forbidden")
        self.assertError(veto["client"].post(path, {}), 403, "forbidden")
        self.assertError(self.server.client().post(path, {}), 401, "unauthorized")
        self.assertError(self.op.post("/coordinations/%s/override" % harness.random_uuid(), {}),
                         404, "not_found")
        self.assertError(self.op.post("/coordinations/not-a-uuid/override", {}), 400, "invalid_id")
        self.assertError(self.op.post(path, {"reason": ""}), 400, "invalid_request")
        self.assertError(self.op.post(path, {"reason": 5}), 400, "invalid_request")
        self.assertError(self.op.post(path, {"why": "x"}), 400, "invalid_request")
        self.assertError(self.op.request("POST", path, body=b"[1]"), 400, "invalid_json")
        self.assertError(self.op.get(path), 405, "method_not_allowed")
        self.assertEqual(self.user.coordination(cid)["status"], "vetoed")
        # The plain consumer still answers (counted: the override resumes the wait).
        self.assertStatus(self.answer(plain, cid, "completed"), 202)
        self.wait_consumers(cid, [plain["name"]])

        overrides_before = self.metric("lastcall_veto_overrides_total", 'result="proceeding"')
        r = self.op.post(path, {"reason": "legal confirmed: the audit copy is kept elsewhere"})
        self.assertStatus(r, 200)
        self.assertIn(r.body["status"], ("deleting", "completed"))
        self.assertError(self.op.post(path, {}), 409, "not_vetoed")
        done = self.user.wait_coordination(cid, "completed")
        self.assertEqual(done["outcome"], "all_completed")
        self.assertEqual(done["veto"]["consumer"], veto["name"])
        self.assertEqual(done["override"]["reason"],
                         "legal confirmed: the audit copy is kept elsewhere")
        self.assertEqual(self.entry(done, veto["name"])["proceededBy"], "reported")
        self.assertError(self.user.get("/files/" + fid), 404, "not_found")
        verified = wait_until(lambda: self.user.coordination(cid)["verification"], 10,
                              message="verification of the overridden deletion")
        self.assertEqual(verified["result"], "verified", verified)
        # The archived summary is back (the veto had put it back into the totals).
        archive = self.user.get("/analytics/archive")
        self.assertStatus(archive, 200)
        self.assertIn(fid, json.dumps(archive.body))
        receipt = self.user.get("/coordinations/%s/receipt" % cid)
        self.assertStatus(receipt, 200)
        claims = receipt.body["claims"]
        self.assertEqual(claims["verification"]["result"], "verified")
        self.assertEqual({c["name"]: c["status"] for c in claims["consumers"]}[veto["name"]],
                         "vetoed")
        self.assertEqual(claims["veto"]["consumer"], veto["name"])
        self.assertIn("overriddenAt", claims["override"])
        entries = self.kinds(cid)
        over = [e["detail"] for e in entries if e["kind"] == "overridden"]
        self.assertEqual(len(over), 1)
        self.assertEqual((over[0]["vetoedBy"], over[0]["held"]), (veto["name"], False))
        self.assertTrue(over[0]["operator"].startswith("ops"))
        names = [e["kind"] for e in entries]
        self.assertLess(names.index("vetoed"), names.index("overridden"))
        self.assertLess(names.index("overridden"), names.index("deleted"))
        self.assertEqual(self.metric("lastcall_veto_overrides_total", 'result="proceeding"'),
                         overrides_before + 1)
        self.assertIn("veto overridden by an operator", self.server.log_text())

    def test_veto_in_the_webhook_answer_and_refused_without_the_right(self):
        reg = self.register(can_veto=True, port=free_port())
        ref = ReferenceConsumer(self.server, reg["name"], reg["secret"], reg["token"], reg["port"],
                                "--complete-in-answer", "--veto", "billing dispute open")
        self.addCleanup(ref.stop)
        f = self.upload()
        cid = self.delete(f["fileId"])
        co = self.user.wait_coordination(cid, "vetoed")
        self.assertEqual((co["veto"]["consumer"], co["veto"]["reason"]),
                         (reg["name"], "billing dispute open"))
        self.assertEqual(self.entry(co, reg["name"])["detail"]["reason"], "billing dispute open")
        self.assertEqual(self.user.get("/files/" + f["fileId"]).body["status"], "active")
        self.assertEqual(ref.entries("completion_reported"), [])  # it answered in the webhook

        # The webhook consumers asked for the deletion hear, signed like every webhook, that it
        # will not happen, so they can undo what they anticipated: the veto, then the cancel.
        def undone():
            return [(e["type"], e["coordinationId"]) for e in ref.entries("undone")]
        wait_until(lambda: undone() == [("file.delete_vetoed", cid)], 10,
                   message="file.delete_vetoed delivered to the webhook consumer")
        # The owner may still cancel it (the last word: no override follows).
        r = self.user.post("/coordinations/%s/cancel" % cid)
        self.assertStatus(r, 200)
        self.assertEqual(r.body["status"], "cancelled")
        self.assertError(self.op.post("/coordinations/%s/override" % cid, {}), 409, "not_vetoed")
        wait_until(lambda: undone() == [("file.delete_vetoed", cid), ("file.delete_cancelled", cid)],
                   10, message="file.delete_cancelled delivered to the webhook consumer")
        self.assertEqual(ref.entries("refused"), [])  # every delivery carried a valid signature

    def test_veto_in_the_webhook_answer_without_the_right_is_refused(self):
        reg = self.register(can_veto=False, priority="optional", port=free_port())
        ref = ReferenceConsumer(self.server, reg["name"], reg["secret"], reg["token"], reg["port"],
                                "--complete-in-answer", "--veto", "I would like to keep it")
        self.addCleanup(ref.stop)
        refused_before = self.metric("lastcall_vetoes_refused_total", 'reason="veto_not_allowed"')
        f = self.upload()
        cid = self.delete(f["fileId"])
        wait_until(lambda: self.metric("lastcall_vetoes_refused_total",
                                       'reason="veto_not_allowed"') == refused_before + 1,
                   10, message="the veto refused")
        self.assertTrue(ref.entries("received"))
        # An optional consumer's refused veto is no answer: the deletion goes on without it.
        done = self.user.wait_coordination(cid, "completed", timeout=20)
        self.assertIsNone(done["veto"])
        self.assertEqual(self.entry(done, reg["name"])["status"], "pending")
        self.assertEqual(self.entry(done, reg["name"])["proceededBy"], "optional_grace")
        self.assertIn("veto refused", self.server.log_text())

    def test_veto_after_the_deletion_began_is_409_and_a_hold_wins_over_the_override(self):
        critical = self.register(can_veto=True)
        late = self.register(can_veto=True, priority="optional")
        op_sub = unique_user("ops-hold")
        op = self.server.client(token=self.server.token(op_sub, role="operator"))

        # 1. A veto while held is recorded; the override then finds the hold, which still wins.
        f = self.upload()
        cid = self.delete(f["fileId"])
        hold = op.post("/holds", {"fileId": f["fileId"], "reason": "case 88: preserve"})
        self.assertStatus(hold, 201)
        self.assertEqual(self.user.coordination(cid)["status"], "held")
        self.assertStatus(self.answer(critical, cid, "veto", reason="contract clause 4"), 200)
        co = self.user.coordination(cid)
        self.assertEqual((co["status"], co["holdReason"], co["veto"]["reason"]),
                         ("vetoed", None, "contract clause 4"))
        held_before = self.metric("lastcall_veto_overrides_total", 'result="held"')
        r = op.post("/coordinations/%s/override" % cid)  # no body: no reason
        self.assertStatus(r, 200)
        self.assertEqual((r.body["status"], r.body["holdReason"]), ("held", "case 88: preserve"))
        self.assertEqual(r.body["override"]["reason"], "")
        self.assertEqual(self.metric("lastcall_veto_overrides_total", 'result="held"'),
                         held_before + 1)
        self.assertEqual(self.user.get("/files/" + f["fileId"]).body["status"],
                         "deletion_requested")
        over = [e["detail"] for e in self.kinds(cid) if e["kind"] == "overridden"]
        self.assertEqual(over, [{"operator": op_sub, "reason": "", "vetoedBy": critical["name"],
                                 "held": True}])
        # Releasing the hold lets it go: the critical consumer's veto was its answer, the optional
        # one gets its grace.
        self.assertStatus(op.delete("/holds/" + hold.body["holdId"]), 200)
        done = self.user.wait_coordination(cid, "completed", timeout=20)
        self.assertEqual(self.entry(done, late["name"])["proceededBy"], "optional_grace")

        # 2. The deletion began (the optional consumer's grace passed): its veto is 409.
        f2 = self.upload()
        cid2 = self.delete(f2["fileId"])
        self.assertStatus(self.answer(critical, cid2, "completed"), 202)
        self.user.wait_coordination(cid2, "completed", timeout=20)
        before = self.metric("lastcall_vetoes_refused_total", 'reason="deletion_started"')
        self.assertError(self.answer(late, cid2, "veto", reason="too late"), 409,
                         "deletion_started")
        self.assertEqual(self.metric("lastcall_vetoes_refused_total", 'reason="deletion_started"'),
                         before + 1)
        # A consumer that completed cannot veto afterwards: its first answer stands.
        self.assertError(self.answer(critical, cid2, "veto", reason="changed my mind"), 409,
                         "already_reported")
        final = self.user.coordination(cid2)
        self.assertIsNone(final["veto"])
        self.assertEqual(final["verification"] is None or final["verification"]["result"] ==
                         "verified", True)


if __name__ == "__main__":
    unittest.main()
