"""The NATS JetStream bus through the real `lastcall serve` (issue 6), whatever
LASTCALL_TEST_SERVICES says: each test starts its own `nats-server -js`.

A deletion requested while NATS is down is answered 202 (the outbox holds the event) and finishes
once NATS is back; a NATS server that loses its whole store costs latency, never a deletion; a
bad LASTCALL_NATS_URL or an unreachable NATS stops the start with a message.
"""

import os
import unittest

import harness
from harness import Server, make_csv, unique_user, wait_until

ROWS = [("2024-05-01", "Coffee", "-3.50", "USD", "Cafe"),
        ("2024-05-02", "Salary", "1000.00", "USD", "Employer")]


class NatsScaleOutTest(harness.Assertions, unittest.TestCase):

    def setUp(self):
        self.nats = harness.NatsService()
        self.servers = []

    def tearDown(self):
        try:
            for s in self.servers:
                try:
                    s.stop()
                finally:
                    s.cleanup()
        finally:
            self.nats.close()

    def start(self, **env):
        base = self.nats.env("t" + harness.secrets.token_hex(4))
        base.update(env)
        server = Server(base)
        self.servers.append(server)
        server.start()
        return server

    def upload(self, server):
        c = server.client(unique_user("nats"))
        account = c.create_account()["accountId"]
        f = c.upload_ok(account, "may.csv", make_csv(ROWS))
        c.wait_categorized(f["fileId"])
        return c, account, f["fileId"]

    def delete(self, c, file_id):
        r = c.delete("/files/" + file_id)
        self.assertStatus(r, 202)
        return r.body["coordinationId"]

    def assert_deleted_once(self, server, c, account, file_id, coordination_id):
        coord = c.wait_coordination(coordination_id, timeout=30)
        self.assertEqual(coord["outcome"], "all_completed")
        self.assertError(c.get("/files/" + file_id), 404, "not_found")
        self.assertAccountDerived(c, account, "0.00", 0, None)
        self.assertEqual(len(server.file_deleted_events(coordination_id)), 1)

    def test_full_flow_over_nats(self):
        server = self.start()
        logs = "\n".join(str(l) for l in server.logs())
        self.assertIn("event bus: NATS JetStream", logs)
        c, account, file_id = self.upload(server)
        self.assert_deleted_once(server, c, account, file_id, self.delete(c, file_id))

    def test_delete_while_nats_is_down_finishes_when_it_is_back(self):
        server = self.start()
        c, account, file_id = self.upload(server)
        self.nats.kill()
        coordination_id = self.delete(c, file_id)  # committed to the outbox: 202 all the same
        self.assertEqual(c.coordination(coordination_id)["status"], "waiting")
        self.nats.start()
        self.assert_deleted_once(server, c, account, file_id, coordination_id)

    def test_nats_restarted_with_an_empty_store_is_set_up_again(self):
        server = self.start()
        c, account, file_id = self.upload(server)
        # The server loses its disk while lastcall runs: no stream, no consumers any more.
        self.nats.kill(wipe=True)
        self.nats.start()
        coordination_id = self.delete(c, file_id)
        self.assert_deleted_once(server, c, account, file_id, coordination_id)
        created = [l for l in server.logs() if l.get("message") == "NATS stream created"]
        self.assertEqual(len(created), 2, "the stream was created at start and again after the loss")

    def test_bad_or_unreachable_nats_stops_the_start(self):
        server = Server({"LASTCALL_NATS_URL": "http://127.0.0.1:4222"})
        self.servers.append(server)
        p = server.run_cli("serve", timeout=15)
        self.assertEqual(p.returncode, 2)
        self.assertIn(b"LASTCALL_NATS_URL", p.stderr)
        port = harness.free_port()
        server.extra_env = {"LASTCALL_NATS_URL": "nats://127.0.0.1:%d" % port}
        p = server.run_cli("serve", timeout=20)
        self.assertEqual(p.returncode, 1)
        self.assertIn(b"cannot connect to NATS", p.stderr)


if __name__ == "__main__":
    unittest.main()


class DeployNatsPermissionsTest(harness.Assertions, unittest.TestCase):
    """deploy/nats/accounts.conf on a real nats-server: lastcall's user runs a whole deletion;
    a consumer's user can neither publish an event nor pull another consumer's messages."""

    def setUp(self):
        self.dir = harness.tempfile.mkdtemp(prefix="lastcall-nats-deploy-")
        harness.shutil.copy(os.path.join(harness.HERE, "..", "..", "deploy", "nats", "accounts.conf"),
                            self.dir)
        self.port = harness.free_port()
        conf = os.path.join(self.dir, "single.conf")
        with open(conf, "w") as f:
            f.write("listen: 127.0.0.1:%d\njetstream { store_dir: %s }\ninclude ./accounts.conf\n"
                    % (self.port, os.path.join(self.dir, "js")))
        env = dict(os.environ, LASTCALL_NATS_PASSWORD="lc-pw", ANALYTICS_NATS_PASSWORD="an-pw",
                   CATEGORIZATION_NATS_PASSWORD="ca-pw", NATS_ADMIN_PASSWORD="ad-pw")
        log = os.path.join(self.dir, "server.log")
        with open(log, "ab") as out:
            self.proc = harness.subprocess.Popen(["nats-server", "-c", conf], env=env,
                                                 stdin=harness.subprocess.DEVNULL, stdout=out,
                                                 stderr=out, preexec_fn=harness._die_with_parent)
        harness._wait_port(self.port, self.proc, "nats-server (deploy accounts)", log)
        self.server = None

    def tearDown(self):
        try:
            if self.server:
                try:
                    self.server.stop()
                finally:
                    self.server.cleanup()
        finally:
            self.proc.kill()
            self.proc.wait()
            harness.shutil.rmtree(self.dir, ignore_errors=True)

    def publish_as(self, user, password, subject):
        """What the server answers a raw PUB (then PING) from user: '-ERR ...' or 'PONG'."""
        with harness.socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
            s.recv(4096)  # INFO
            connect = harness.json.dumps({"user": user, "pass": password, "verbose": False})
            s.sendall(("CONNECT %s\r\nPUB %s 2\r\nhi\r\nPING\r\n" % (connect, subject)).encode())
            out = b""
            while b"PONG" not in out:
                chunk = s.recv(4096)
                if not chunk:
                    break
                out += chunk
            return out.decode(errors="replace")

    def test_lastcall_runs_and_consumers_cannot_act_as_each_other(self):
        self.server = Server({"LASTCALL_NATS_URL": "nats://lastcall:lc-pw@127.0.0.1:%d" % self.port,
                              "LASTCALL_NATS_STREAM": "LASTCALL_EVENTS",
                              "LASTCALL_NATS_SUBJECT_PREFIX": "lastcall.events"})
        self.server.start()
        self.assertNotIn("lc-pw", self.server.log_text())
        c = self.server.client(unique_user("deploy"))
        account = c.create_account()["accountId"]
        f = c.upload_ok(account, "may.csv", make_csv(ROWS))
        r = c.delete("/files/" + f["fileId"])
        self.assertStatus(r, 202)
        self.assertEqual(c.wait_coordination(r.body["coordinationId"], timeout=30)["outcome"],
                         "all_completed")
        denied = "Permissions Violation"
        self.assertIn(denied, self.publish_as("analytics", "an-pw", "lastcall.events.consumer.completion"))
        self.assertIn(denied, self.publish_as("categorization", "ca-pw", "lastcall.events.file.deleted"))
        self.assertIn(denied, self.publish_as(
            "analytics", "an-pw", "$JS.API.CONSUMER.MSG.NEXT.LASTCALL_EVENTS.categorization_consumer"))
        self.assertIn(denied, self.publish_as(
            "analytics", "an-pw", "$JS.ACK.LASTCALL_EVENTS.categorization_consumer.1.1.1.1.1"))
        self.assertNotIn(denied, self.publish_as(
            "analytics", "an-pw", "$JS.API.CONSUMER.MSG.NEXT.LASTCALL_EVENTS.analytics_consumer"))
