"""Webhook consumers end to end: the real `lastcall serve` and the reference consumer
(examples/webhook_consumer.py) as a real external process.

Registration and health (operator only), deliveries signed per Standard Webhooks, completions by
API and in the webhook's answer, the refusals (another consumer's token, a coordination the
consumer was not expected in), critical versus optional timing, retries that recover, a consumer
that never answers (dead letter, deadline, deletion proceeds), the dead letter queue by API and
CLI, secret rotation without downtime, and signatures the reference consumer refuses (forged,
stale, replayed). Backoff and timeouts are kept small so the class runs in seconds.
"""

import base64
import hashlib
import hmac
import json
import os
import socket
import subprocess
import sys
import threading
import time
import unittest

import harness
from harness import free_port, http_request, make_csv, unique_user, wait_until

REPO = os.path.abspath(os.path.join(harness.HERE, "..", ".."))
REFERENCE = os.path.join(REPO, "examples", "webhook_consumer.py")

ROWS = [("2024-05-02", "Grocer", "-20.00", "USD", "Grocer"),
        ("2024-05-03", "Salary", "1000.00", "USD", "Employer")]

ENV = {
    "COORDINATION_TIMEOUT_MINUTES": "0.1",      # 6 s: the deadline of a consumer that never answers
    "OPTIONAL_GRACE_SECONDS": "1",
    "LASTCALL_WEBHOOK_BACKOFF_BASE_MS": "100",
    "LASTCALL_WEBHOOK_BACKOFF_CAP_MS": "400",
    "LASTCALL_WEBHOOK_MAX_ATTEMPTS": "4",
    "LASTCALL_WEBHOOK_TIMEOUT_MS": "400",
}


def sign(secret, msg_id, timestamp, body):
    key = base64.b64decode(secret[len("whsec_"):])
    mac = hmac.new(key, ("%s.%s." % (msg_id, timestamp)).encode() + body, hashlib.sha256)
    return "v1," + base64.b64encode(mac.digest()).decode()


class ReferenceConsumer(object):
    """examples/webhook_consumer.py in its own process; what it did is in its record file."""

    def __init__(self, server, name, secret, token, port, *extra):
        self.port = port
        self.record = os.path.join(server.data_dir, "consumer-%s-%d-%s.jsonl"
                                   % (name, port, harness.random_uuid()[:8]))
        self.proc = subprocess.Popen(
            [sys.executable, REFERENCE, "--name", name, "--listen", "127.0.0.1:%d" % port,
             "--lastcall", "http://127.0.0.1:%d" % server.port, "--record", self.record] + list(extra),
            env=dict(os.environ, LASTCALL_WEBHOOK_SECRET=secret, LASTCALL_CONSUMER_TOKEN=token),
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wait_until(self._listening, 10, message="reference consumer %s listening" % name)

    def _listening(self):
        if self.proc.poll() is not None:
            raise AssertionError("reference consumer exited: %s" % self.proc.stderr.read().decode())
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
            return True
        except OSError:
            return False

    def entries(self, event=None):
        if not os.path.exists(self.record):
            return []
        with open(self.record) as f:
            rows = [json.loads(line) for line in f if line.strip()]
        return [r for r in rows if event is None or r.get("event") == event]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(5)
        self.proc.stderr.close()


class SilentEndpoint(object):
    """Accepts connections, reads, never answers: a consumer that hangs."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.conns = []
        self.accepted = 0
        self.stopped = False
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        while not self.stopped:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            self.conns.append(c)

    def stop(self):
        self.stopped = True
        self.sock.close()
        for c in self.conns:
            c.close()


class WebhookTest(harness.ServerTestCase):
    SERVER_ENV = ENV

    def setUp(self):
        self.op = self.server.client(token=self.server.token("ops", role="operator"))
        self.user = self.server.client(unique_user("wh"))
        self.account = self.user.create_account("Checking", "USD")["accountId"]

    # -- helpers

    def register(self, name=None, port=None, priority="critical", timeout_minutes=5,
                 heartbeat_seconds=3600, **extra):
        name = name or unique_user("c").replace("-", "_")
        port = port or free_port()
        body = {"name": name, "url": "http://127.0.0.1:%d/webhook" % port, "priority": priority,
                "timeoutMinutes": timeout_minutes, "heartbeatSeconds": heartbeat_seconds}
        body.update(extra)
        r = self.op.post("/consumers", body)
        self.assertStatus(r, 201)
        # Registered consumers are expected by every later deletion: leave none behind.
        self.addCleanup(lambda: self.op.delete("/consumers/" + name))
        r.body["port"] = port
        return r.body

    def start_reference(self, reg, *extra, secret=None):
        c = ReferenceConsumer(self.server, reg["name"], secret or reg["secret"], reg["token"],
                              reg["port"], *extra)
        self.addCleanup(c.stop)
        return c

    def delete_file(self):
        f = self.user.upload_ok(self.account, "s.csv", make_csv(ROWS))
        r = self.user.delete("/files/" + f["fileId"])
        self.assertStatus(r, 202)
        return r.body["coordinationId"], time.monotonic()

    def consumer_entry(self, coordination, name):
        return {c["name"]: c for c in coordination["consumers"]}[name]

    def health(self, name):
        r = self.op.get("/consumers")
        self.assertStatus(r, 200)
        return {c["name"]: c for c in r.body["consumers"]}[name]

    def metric(self, name, **labels):
        text = http_request(self.server.port, "GET", "/metrics", raw=True).raw.decode()
        want = ",".join('%s="%s"' % kv for kv in sorted(labels.items()))
        for line in text.splitlines():
            if line.startswith(name + "{"):
                got = ",".join(sorted(line[len(name) + 1:line.index("}")].split(",")))
                if got == want:
                    return float(line.rsplit(" ", 1)[1])
        return 0.0

    # -- registration and health

    def test_registration_is_for_operators_and_validated(self):
        name = unique_user("reg").replace("-", "_")
        good = {"name": name, "url": "http://127.0.0.1:9/hook", "priority": "optional",
                "timeoutMinutes": 2, "heartbeatSeconds": 30, "canVeto": True}
        self.assertError(self.user.post("/consumers", good), 403, "forbidden")
        self.assertError(self.user.get("/consumers"), 403, "forbidden")
        for field, value, status, code in [
                ("name", "Bad Name", 422, "invalid_name"), ("name", 7, 400, "invalid_request"),
                ("url", "ftp://x/", 422, "invalid_url"), ("url", "https://x/", 422, "unsupported_url"),
                ("priority", "urgent", 422, "invalid_priority"),
                ("timeoutMinutes", 0, 422, "invalid_timeout"),
                ("timeoutMinutes", "5", 400, "invalid_request"),
                ("heartbeatSeconds", 0, 422, "invalid_heartbeat"),
                ("heartbeatSeconds", 1.5, 400, "invalid_request"),
                ("canVeto", "yes", 400, "invalid_request"), ("extra", 1, 400, "invalid_request")]:
            with self.subTest(field=field, value=value):
                self.assertError(self.op.post("/consumers", dict(good, **{field: value})), status, code)
        self.assertError(self.op.post("/consumers", dict(good, name="analytics_consumer")), 409,
                         "consumer_exists")
        self.assertEqual(self.op.get("/consumers").body["consumers"].__len__() >= 0, True)
        r = self.op.post("/consumers", good)
        self.assertStatus(r, 201)
        self.addCleanup(lambda: self.op.delete("/consumers/" + name))
        self.assertRegex(r.body["secret"], r"^whsec_[A-Za-z0-9+/]{43}=$")
        self.assertRegex(r.body["token"], r"^lcc_[A-Za-z0-9_-]{43}$")
        self.assertEqual((r.body["priority"], r.body["timeoutMinutes"], r.body["heartbeatSeconds"],
                          r.body["canVeto"]), ("optional", 2, 30, True))
        self.assertError(self.op.post("/consumers", good), 409, "consumer_exists")
        listed = self.op.get("/consumers")
        self.assertStatus(listed, 200)
        mine = [c for c in listed.body["consumers"] if c["name"] == name][0]
        self.assertNotIn("secret", mine)
        self.assertNotIn("token", mine)
        self.assertEqual(mine["health"]["healthy"], True)
        self.assertEqual(mine["health"]["deliveriesInFlight"], 0)
        self.assertEqual(mine["health"]["failures"], 0)
        self.assertIsNone(mine["health"]["lastDeliveryResult"])
        # The token is stored only as a hash (name is [a-z0-9_-], safe to inline).
        stored = self.server.query("SELECT token_hash FROM webhook_consumers WHERE name = '%s'"
                                   % name)[0]["token_hash"]
        self.assertEqual(stored, hashlib.sha256(r.body["token"].encode()).hexdigest())
        if not self.server.database_url:
            with open(self.server.db_path, "rb") as f:
                self.assertNotIn(r.body["token"].encode(), f.read())
        # A consumer token is not an operator's.
        as_consumer = self.server.client(token=r.body["token"])
        self.assertError(as_consumer.get("/consumers"), 403, "forbidden")
        self.assertError(as_consumer.get("/files"), 403, "forbidden")
        self.assertError(self.server.client(token="lcc_" + "A" * 43).get("/files"), 401,
                         "unauthorized")
        self.assertStatus(self.op.delete("/consumers/" + name), 200)
        self.assertError(self.op.delete("/consumers/" + name), 404, "not_found")
        self.assertError(as_consumer.post("/consumers/%s/heartbeat" % name, {}), 401, "unauthorized")

    def test_heartbeats_decide_who_is_expected(self):
        reg = self.register(heartbeat_seconds=1)
        name = reg["name"]
        other = self.register()
        wait_until(lambda: not self.health(name)["health"]["healthy"], 5,
                   message="unhealthy after a missed heartbeat")
        cid, _ = self.delete_file()
        expected = self.user.coordination(cid)["expectedConsumers"]
        self.assertNotIn(name, expected)
        self.assertIn(other["name"], expected)
        me = self.server.client(token=reg["token"])
        self.assertError(me.post("/consumers/%s/heartbeat" % other["name"], {}), 403, "forbidden")
        self.assertError(self.op.post("/consumers/%s/heartbeat" % name, {}), 403, "forbidden")
        hb = me.post("/consumers/%s/heartbeat" % name, {})
        self.assertStatus(hb, 200)
        self.assertTrue(self.health(name)["health"]["healthy"])
        cid2, _ = self.delete_file()
        self.assertIn(name, self.user.coordination(cid2)["expectedConsumers"])

    # -- deliveries and completions

    def test_reference_consumer_completes_end_to_end(self):
        reg = self.register()
        ref = self.start_reference(reg)
        cid, t0 = self.delete_file()
        done = self.user.wait_coordination(cid, "completed", timeout=15)
        self.assertEqual(done["outcome"], "all_completed")
        mine = self.consumer_entry(done, reg["name"])
        self.assertEqual(mine["status"], "completed")
        self.assertEqual(mine["priority"], "critical")
        self.assertEqual(mine["proceededBy"], "reported")
        self.assertEqual(mine["detail"]["transactionsSeen"], 2)
        received = ref.entries("received")
        self.assertEqual(len(received), 1)
        self.assertEqual(received[0]["type"], "file.delete_requested")
        self.assertEqual(received[0]["contentType"], "application/cloudevents+json")
        self.assertEqual(received[0]["signatures"], 1)
        reported = ref.entries("completion_reported")
        self.assertEqual([r["status"] for r in reported], [202])
        h = self.health(reg["name"])["health"]
        self.assertEqual(h["lastDeliveryResult"], "delivered (HTTP 200)")
        self.assertEqual((h["failures"], h["deliveriesInFlight"]), (0, 0))
        self.assertEqual(self.metric("lastcall_webhook_deliveries_total", consumer=reg["name"],
                                     result="delivered"), 1)
        # The completion went the coordinator's way: a consumer.completion from its source.
        events = [e for e in self.server.events_for(coordination_id=cid)
                  if e["type"] == "consumer.completion"]
        self.assertIn("/lastcall/consumers/" + reg["name"], [e["source"] for e in events])
        latency = received[0]["at"] - (time.time() - (time.monotonic() - t0))
        print("\nwebhook delivery latency (DELETE answered -> consumer received): %.1f ms"
              % (latency * 1000), file=sys.stderr)

    def test_completion_in_the_webhook_answer(self):
        reg = self.register(priority="optional")
        ref = self.start_reference(reg, "--complete-in-answer", "--status", "failed")
        cid, _ = self.delete_file()
        done = self.user.wait_coordination(cid, "completed", timeout=15)
        self.assertEqual(done["outcome"], "all_completed")
        mine = self.consumer_entry(done, reg["name"])
        self.assertEqual((mine["status"], mine["priority"], mine["proceededBy"]),
                         ("failed", "optional", "reported"))
        self.assertEqual(ref.entries("completion_reported"), [])

    def test_completion_refusals(self):
        a = self.register()
        b = self.register()
        cid, _ = self.delete_file()
        self.assertEqual(set(self.user.coordination(cid)["expectedConsumers"]) >=
                         {a["name"], b["name"]}, True)
        late = self.register()  # registered after the request: not expected there
        as_a = self.server.client(token=a["token"])
        as_b = self.server.client(token=b["token"])
        as_late = self.server.client(token=late["token"])
        path = "/coordinations/%s/completions" % cid
        self.assertError(as_b.post(path, {"consumer": a["name"], "status": "completed"}), 403,
                         "forbidden")
        self.assertError(as_late.post(path, {"consumer": late["name"], "status": "completed"}),
                         404, "not_found")
        self.assertError(self.user.post(path, {"consumer": a["name"], "status": "completed"}),
                         403, "forbidden")
        self.assertError(self.op.post(path, {"consumer": a["name"], "status": "completed"}),
                         403, "forbidden")
        self.assertError(self.server.client().post(path, {"consumer": a["name"]}), 401,
                         "unauthorized")
        self.assertError(as_a.post(path, {"consumer": a["name"], "status": "done"}), 422,
                         "invalid_status")
        self.assertError(as_a.post(path, {"consumer": a["name"], "status": "completed",
                                          "detail": [1]}), 400, "invalid_request")
        self.assertError(as_a.post("/coordinations/%s/completions" % harness.random_uuid(),
                                   {"consumer": a["name"], "status": "completed"}), 404, "not_found")
        first = as_a.post(path, {"consumer": a["name"], "status": "completed", "detail": {"n": 1}})
        self.assertStatus(first, 202)
        self.assertEqual(first.body["duplicate"], False)
        wait_until(lambda: self.consumer_entry(self.user.coordination(cid), a["name"])["status"]
                   == "completed", 5, message="completion recorded")
        again = as_a.post(path, {"consumer": a["name"], "status": "failed", "detail": {"n": 2}})
        self.assertStatus(again, 200)
        self.assertEqual((again.body["duplicate"], again.body["status"]), (True, "completed"))
        self.assertStatus(as_b.post(path, {"consumer": b["name"], "status": "completed"}), 202)
        done = self.user.wait_coordination(cid, "completed", timeout=15)
        self.assertEqual(self.consumer_entry(done, a["name"])["detail"], {"n": 1})
        self.assertEqual(done["outcome"], "all_completed")

    def test_optional_consumer_waited_for_only_a_grace_after_the_critical_ones(self):
        critical = self.register(priority="critical")
        optional = self.register(priority="optional")
        self.start_reference(critical)
        # The optional consumer is not running: its deliveries fail; it never reports.
        before = self.metric("lastcall_deletion_proceed_rules_total", priority="optional",
                             rule="optional_grace")
        cid, t0 = self.delete_file()
        done = self.user.wait_coordination(cid, "completed", timeout=5)
        elapsed = time.monotonic() - t0
        self.assertLess(elapsed, 4.0, "waited for the optional consumer beyond the grace")
        self.assertGreaterEqual(elapsed, 0.9, "did not wait the 1 s grace")
        self.assertEqual(done["outcome"], "timed_out")
        self.assertEqual(self.consumer_entry(done, critical["name"])["proceededBy"], "reported")
        self.assertEqual(self.consumer_entry(done, optional["name"])["proceededBy"], "optional_grace")
        self.assertEqual(self.consumer_entry(done, "analytics_consumer")["proceededBy"], "reported")
        self.assertEqual(self.metric("lastcall_deletion_proceed_rules_total", priority="optional",
                                     rule="optional_grace"), before + 1)

    def test_failing_consumer_recovers_through_retries(self):
        reg = self.register()
        ref = self.start_reference(reg, "--fail-first", "2")
        cid, _ = self.delete_file()
        done = self.user.wait_coordination(cid, "completed", timeout=15)
        self.assertEqual(done["outcome"], "all_completed")
        self.assertEqual(self.consumer_entry(done, reg["name"])["status"], "completed")
        tries = ref.entries("failing_on_purpose") + ref.entries("received")
        self.assertEqual(len(tries), 3)
        gaps = [round((b["at"] - a["at"]) * 1000) for a, b in zip(tries, tries[1:])]
        # Full jitter under ceilings of 100 ms then 200 ms (plus the time to send).
        self.assertLess(gaps[0], 100 + 300)
        self.assertLess(gaps[1], 200 + 300)
        print("\nretry schedule seen (ms between attempts): %s" % gaps, file=sys.stderr)
        h = self.health(reg["name"])["health"]
        self.assertEqual(h["failures"], 2)
        self.assertEqual(h["lastDeliveryResult"], "delivered (HTTP 200)")
        self.assertEqual(self.metric("lastcall_webhook_retries_total", consumer=reg["name"]), 2)

    def test_consumer_that_never_answers_is_dead_lettered_and_the_deadline_proceeds(self):
        silent = SilentEndpoint()
        self.addCleanup(silent.stop)
        reg = self.register(port=silent.port, timeout_minutes=60)
        cid, t0 = self.delete_file()
        letters = wait_until(lambda: [d for d in self.op.get("/dlq?target=" + reg["name"])
                                      .body["deadLetters"]], 10, message="dead letter")
        d = letters[0]
        self.assertEqual((d["target"], d["kind"], d["attempts"]), (reg["name"], "webhook", 4))
        self.assertIn("timed out", d["error"])
        self.assertEqual(d["event"]["type"], "file.delete_requested")
        self.assertEqual(d["event"]["data"]["coordinationId"], cid)
        self.assertEqual(silent.accepted, 4)
        self.assertEqual(self.metric("lastcall_dead_letters_total", target=reg["name"]), 1)
        done = self.user.wait_coordination(cid, "completed", timeout=15)
        self.assertGreaterEqual(time.monotonic() - t0, 5.5)
        self.assertEqual(done["outcome"], "timed_out")
        mine = self.consumer_entry(done, reg["name"])
        self.assertEqual((mine["status"], mine["proceededBy"]), ("pending", "deadline"))
        self.assertIn(reg["name"], self.server.file_deleted_events(cid)[-1]["data"]["missingConsumers"])
        # The operator's CLI lists it and replays it once.
        env = {"LASTCALL_URL": "http://127.0.0.1:%d" % self.server.port,
               "LASTCALL_TOKEN": self.server.token("ops", role="operator")}
        listed = self.server.run_cli("dlq", "list", "--target", reg["name"], extra_env=env)
        self.assertEqual(listed.returncode, 0, listed.stderr)
        self.assertIn(d["id"], listed.stdout.decode())
        self.assertIn("webhook", listed.stdout.decode())
        replay = self.server.run_cli("dlq", "replay", d["id"], extra_env=env)
        self.assertEqual(replay.returncode, 0, replay.stderr)
        again = self.server.run_cli("dlq", "replay", d["id"], extra_env=env)
        self.assertEqual(again.returncode, 4, again.stderr)
        self.assertIn(b"was replayed at", again.stderr)
        wait_until(lambda: silent.accepted > 4, 5, message="the replay was delivered again")
        self.assertError(self.user.get("/dlq"), 403, "forbidden")
        self.assertError(self.op.post("/dlq/%s/replay" % harness.random_uuid(), {}), 404, "not_found")
        self.assertError(self.op.post("/dlq/not-a-uuid/replay", {}), 400, "invalid_id")
        none = self.server.run_cli("dlq", "list", "--target", "nobody", extra_env=env)
        self.assertEqual(none.returncode, 1)

    # -- secrets

    def test_secret_rotation_without_downtime(self):
        reg = self.register()
        old = reg["secret"]
        ref = self.start_reference(reg)  # knows only the old secret
        rot = self.op.post("/consumers/%s/rotate-secret" % reg["name"],
                           {"previousSecretValidSeconds": 600})
        self.assertStatus(rot, 200)
        new = rot.body["secret"]
        self.assertNotEqual(new, old)
        self.assertIsNotNone(self.health(reg["name"])["previousSecretValidUntil"])
        cid, _ = self.delete_file()
        self.assertEqual(self.user.wait_coordination(cid, "completed", timeout=15)["outcome"],
                         "all_completed")
        self.assertEqual(ref.entries("received")[-1]["signatures"], 2)
        # The consumer switches to the new secret; both still verify during the overlap.
        ref.stop()
        ref2 = self.start_reference(reg, secret=new)
        cid2, _ = self.delete_file()
        self.assertEqual(self.user.wait_coordination(cid2, "completed", timeout=15)["outcome"],
                         "all_completed")
        self.assertEqual(len(ref2.entries("received")), 1)
        # Ending the overlap: the old secret alone no longer verifies.
        self.assertStatus(self.op.post("/consumers/%s/rotate-secret" % reg["name"],
                                       {"previousSecretValidSeconds": 0}), 200)
        self.assertError(self.op.post("/consumers/%s/rotate-secret" % reg["name"],
                                      {"previousSecretValidSeconds": -1}), 422, "invalid_overlap")
        self.assertError(self.op.post("/consumers/nobody/rotate-secret", {}), 404, "not_found")
        self.assertError(self.user.post("/consumers/%s/rotate-secret" % reg["name"], {}), 403,
                         "forbidden")


class ReferenceConsumerSignatureTest(unittest.TestCase):
    """The reference consumer refuses what it must not trust (no lastcall needed)."""

    SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

    @classmethod
    def setUpClass(cls):
        cls.port = free_port()
        cls.record = os.path.join(os.environ.get("TMPDIR", "/tmp"), "refsig-%d.jsonl" % cls.port)
        cls.proc = subprocess.Popen(
            [sys.executable, REFERENCE, "--name", "sig", "--listen", "127.0.0.1:%d" % cls.port,
             "--lastcall", "http://127.0.0.1:%d" % free_port(), "--complete-in-answer",
             "--record", cls.record],
            env=dict(os.environ, LASTCALL_WEBHOOK_SECRET=cls.SECRET, LASTCALL_CONSUMER_TOKEN="lcc_x"),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def up():
            try:
                socket.create_connection(("127.0.0.1", cls.port), timeout=0.2).close()
                return True
            except OSError:
                return False
        wait_until(up, 10, message="reference consumer listening")

    @classmethod
    def tearDownClass(cls):
        cls.proc.terminate()
        cls.proc.wait(5)
        if os.path.exists(cls.record):
            os.remove(cls.record)

    def post(self, msg_id, ts, body, signature):
        headers = {"webhook-id": msg_id, "webhook-timestamp": str(ts),
                   "webhook-signature": signature, "Content-Type": "application/cloudevents+json"}
        return http_request(self.port, "POST", "/webhook", body=body, headers=headers)

    def event(self):
        return json.dumps({"specversion": "1.0", "id": harness.random_uuid(), "type":
                           "file.delete_requested", "source": "/lastcall/api", "subject": "files/x",
                           "time": "2026-01-01T00:00:00Z", "datacontenttype": "application/json",
                           "data": {"coordinationId": harness.random_uuid(), "fileId": "x",
                                    "transactionCount": 1}}).encode()

    def test_valid_is_accepted_and_an_exact_replay_refused(self):
        body, msg_id, ts = self.event(), "m-" + harness.random_uuid(), int(time.time())
        r = self.post(msg_id, ts, body, sign(self.SECRET, msg_id, ts, body))
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.body["status"], "completed")
        replay = self.post(msg_id, ts, body, sign(self.SECRET, msg_id, ts, body))
        self.assertEqual(replay.status, 409, replay)
        # lastcall's retry: the same id, a new timestamp and signature: accepted, not redone.
        retry = self.post(msg_id, ts + 1, body, sign(self.SECRET, msg_id, ts + 1, body))
        self.assertEqual(retry.status, 200, retry)
        self.assertNotIn("status", retry.body)

    def test_forged_signatures_are_refused(self):
        body, msg_id, ts = self.event(), "m-" + harness.random_uuid(), int(time.time())
        other = "whsec_" + base64.b64encode(b"k" * 32).decode()
        for sig in (sign(other, msg_id, ts, body),                       # wrong secret
                    sign(self.SECRET, msg_id, ts, body + b" "),          # body changed
                    sign(self.SECRET, "other-id", ts, body),             # id changed
                    "v1,", "garbage"):
            with self.subTest(sig=sig[:20]):
                self.assertEqual(self.post(msg_id, ts, body, sig).status, 401)

    def test_stale_and_future_timestamps_are_refused(self):
        body, msg_id = self.event(), "m-" + harness.random_uuid()
        # 30 s past the 300 s tolerance: a timestamp 301 s ahead, truncated to whole seconds, was
        # within it by the time the consumer read its clock whenever the request crossed a second.
        for ts in (int(time.time()) - 330, int(time.time()) + 330):
            with self.subTest(ts=ts):
                r = self.post(msg_id, ts, body, sign(self.SECRET, msg_id, ts, body))
                self.assertEqual(r.status, 401)
        r = http_request(self.port, "POST", "/webhook", body=body, headers={})
        self.assertEqual(r.status, 400)

    def test_any_of_several_signatures_may_verify(self):
        body, msg_id, ts = self.event(), "m-" + harness.random_uuid(), int(time.time())
        other = "whsec_" + base64.b64encode(b"k" * 32).decode()
        both = sign(other, msg_id, ts, body) + " " + sign(self.SECRET, msg_id, ts, body)
        self.assertEqual(self.post(msg_id, ts, body, both).status, 200)


if __name__ == "__main__":
    unittest.main()
