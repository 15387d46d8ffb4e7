"""Seeing every deletion: the audit timeline, operator versus user visibility, cursor pagination
and the `lastcall coordinations` CLI, over the real binary."""
import json
import unittest

from harness import (COORDINATION_FIELDS, Server, ServerTestCase,
                     make_csv, unique_user, wait_until)

ROWS = [
    ("2024-05-01", "Groceries at the supermarket", "-23.45", "USD", "Fresh Market"),
    ("2024-05-03", "Coffee shop", "-4.80", "USD", "Bean There"),
]


class ObservabilityTest(ServerTestCase):
    # audit_consumer never answers, so coordinations time out after ~1.2 s.
    SERVER_ENV = {"EXPECTED_CONSUMERS": "analytics_consumer,categorization_consumer,audit_consumer",
                  "COORDINATION_TIMEOUT_MINUTES": "0.02"}

    def delete_one(self, client):
        acct = client.create_account("Checking", "USD")
        f = client.upload_ok(acct["accountId"], "s.csv", make_csv(ROWS))
        r = client.delete("/files/" + f["fileId"])
        self.assertStatus(r, 202)
        return f["fileId"], r.body["coordinationId"]

    def test_timeline_lists_every_step_in_order_and_outlives_the_file(self):
        alice = self.server.client(unique_user("alice"))
        file_id, cid = self.delete_one(alice)
        alice.wait_coordination(cid, "completed")
        self.assertEqual(alice.get("/files/" + file_id).status, 404)
        # The verification after the deletion is the last step of every timeline.
        wait_until(lambda: alice.coordination(cid)["verification"], 10, message="verification")
        r = alice.get("/coordinations/%s/timeline" % cid)
        self.assertStatus(r, 200)
        self.assertEqual(r.body["coordinationId"], cid)
        entries = r.body["entries"]
        kinds = [e["kind"] for e in entries]
        self.assertEqual(kinds[0], "requested")
        self.assertEqual(entries[0]["detail"]["expectedConsumers"],
                         ["analytics_consumer", "categorization_consumer", "audit_consumer"])
        completions = [e for e in entries if e["kind"] == "completion"]
        self.assertEqual(sorted(e["detail"]["consumer"] for e in completions),
                         ["analytics_consumer", "categorization_consumer"])
        for e in completions:
            self.assertEqual(e["detail"]["status"], "completed")
            self.assertTrue(e["detail"]["counted"])
        timeout = [e for e in entries if e["kind"] == "timeout"]
        self.assertEqual(len(timeout), 1)
        self.assertEqual(timeout[0]["detail"]["missingConsumers"], ["audit_consumer"])
        tail = kinds[kinds.index("timeout"):]
        self.assertEqual(tail, ["timeout", "deletion_decided", "transactions_deleted",
                                "account_updated", "content_queued", "metadata_deleted", "deleted",
                                "verified"])
        self.assertEqual(entries[-2]["detail"], {"outcome": "timed_out", "transactionsDeleted": 2})
        ats = [e["at"] for e in entries]
        self.assertEqual(ats, sorted(ats))
        # No user content: descriptions, merchants, amounts, file names.
        text = json.dumps(r.body)
        for secret in ("Groceries", "Fresh Market", "Bean There", "23.45", "s.csv"):
            self.assertNotIn(secret, text)

    def test_users_see_only_their_own_and_operators_see_all(self):
        alice_id = unique_user("alice")
        alice = self.server.client(alice_id)
        bob = self.server.client(unique_user("bob"))
        _, alice_cid = self.delete_one(alice)
        _, bob_cid = self.delete_one(bob)
        operator = self.server.client(token=self.server.token("ops", role="operator"))
        for path in ("/coordinations/%s", "/coordinations/%s/timeline"):
            self.assertError(bob.get(path % alice_cid), 404, "not_found")
            self.assertError(alice.get(path % bob_cid), 404, "not_found")
            self.assertStatus(operator.get(path % alice_cid), 200)
            self.assertStatus(operator.get(path % bob_cid), 200)
        mine = alice.get("/coordinations?limit=500")
        self.assertStatus(mine, 200)
        ids = {c["coordinationId"] for c in mine.body["coordinations"]}
        self.assertIn(alice_cid, ids)
        self.assertNotIn(bob_cid, ids)
        self.assertTrue(all(c["userId"] == alice_id for c in mine.body["coordinations"]))
        everyone = operator.get("/coordinations?limit=500")
        ids = {c["coordinationId"] for c in everyone.body["coordinations"]}
        self.assertTrue({alice_cid, bob_cid} <= ids)
        item = everyone.body["coordinations"][0]
        self.assertEqual(set(item), COORDINATION_FIELDS | {"userId"})

    def test_filters_and_cursor_pagination(self):
        carol = self.server.client(unique_user("carol"))
        cids = [self.delete_one(carol)[1] for _ in range(5)]
        waiting = carol.get("/coordinations?status=waiting&consumer=audit_consumer")
        self.assertStatus(waiting, 200)
        self.assertTrue(set(cids) <= {c["coordinationId"] for c in waiting.body["coordinations"]})
        for c in cids:
            carol.wait_coordination(c, "completed")
        seen, cursor, pages = [], None, 0
        while True:
            path = "/coordinations?limit=2&outcome=timed_out"
            if cursor:
                path += "&cursor=" + cursor
            page = carol.get(path)
            self.assertStatus(page, 200)
            self.assertLessEqual(len(page.body["coordinations"]), 2)
            seen += [c["coordinationId"] for c in page.body["coordinations"]]
            pages += 1
            cursor = page.body["nextCursor"]
            if cursor is None:
                break
        self.assertEqual(sorted(seen), sorted(cids))
        self.assertEqual(len(seen), len(set(seen)))
        self.assertEqual(pages, 3)
        started = [carol.coordination(c)["startedAt"] for c in seen]
        self.assertEqual(started, sorted(started, reverse=True))
        self.assertEqual(carol.get("/coordinations?status=waiting&consumer=audit_consumer")
                         .body["coordinations"], [])
        self.assertEqual(carol.get("/coordinations?outcome=all_completed").body["coordinations"], [])
        for bad in ("status=stuck", "outcome=maybe", "limit=0", "limit=501", "limit=x",
                    "cursor=garbage", "colour=red"):
            self.assertError(carol.get("/coordinations?" + bad), 400, "invalid_request")

    def test_cli_list_and_show(self):
        dave = self.server.client(unique_user("dave"))
        _, cid = self.delete_one(dave)
        ops_token = self.server.token("ops", role="operator")
        url = "http://127.0.0.1:%d" % self.server.port
        env = dict(self.server.env())
        env.update({"LASTCALL_URL": url, "LASTCALL_TOKEN": ops_token})
        p = self.server.run_cli("coordinations", "list", "--status", "waiting", extra_env=env)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn(cid, p.stdout.decode())
        self.assertIn("audit_consumer=pending", p.stdout.decode())
        dave.wait_coordination(cid, "completed")
        wait_until(lambda: dave.coordination(cid)["verification"], 10, message="verification")
        p = self.server.run_cli("coordinations", "show", cid, extra_env=env)
        self.assertEqual(p.returncode, 0, p.stderr)
        out = p.stdout.decode()
        for word in ("timed_out", "audit_consumer", "requested", "timeout", "deleted"):
            self.assertIn(word, out)
        p = self.server.run_cli("coordinations", "show", cid, "--json", extra_env=env)
        self.assertEqual(p.returncode, 0)
        doc = json.loads(p.stdout)
        self.assertEqual(doc["coordination"]["coordinationId"], cid)
        self.assertEqual([e["kind"] for e in doc["timeline"]["entries"]][-2:], ["deleted", "verified"])
        # Exit codes: 1 not found, 2 usage, 3 token refused.
        missing = "00000000-0000-4000-8000-000000000000"
        self.assertEqual(self.server.run_cli("coordinations", "show", missing, extra_env=env).returncode, 1)
        self.assertEqual(self.server.run_cli("coordinations", "show", "nope", extra_env=env).returncode, 2)
        self.assertEqual(self.server.run_cli("coordinations", "list", "--status", "stuck",
                                             extra_env=env).returncode, 2)
        self.assertEqual(self.server.run_cli("coordinations", "list", "--outcome", "all_completed",
                                             "--consumer", "nobody", extra_env=env).returncode, 1)
        env_bad = dict(env, LASTCALL_TOKEN="not-a-token")
        self.assertEqual(self.server.run_cli("coordinations", "list", extra_env=env_bad).returncode, 3)
        # Another user's coordination through the CLI with a user token: not found.
        env_user = dict(env, LASTCALL_TOKEN=self.server.token(unique_user("eve")))
        self.assertEqual(self.server.run_cli("coordinations", "show", cid, extra_env=env_user).returncode, 1)


class MetricsListenerTest(unittest.TestCase):
    def test_metrics_on_their_own_listener(self):
        from harness import free_port, http_request
        port = free_port()
        server = Server({"LASTCALL_METRICS_LISTEN": "127.0.0.1:%d" % port})
        try:
            server.start()
            r = http_request(port, "GET", "/metrics", raw=True)
            self.assertEqual(r.status, 200)
            self.assertIn(b"lastcall_coordinations_started_total 0", r.raw)
            self.assertEqual(http_request(server.port, "GET", "/metrics").status, 404)
            self.assertEqual(http_request(port, "GET", "/files").status, 404)
        finally:
            server.stop()
            server.cleanup()


if __name__ == "__main__":
    unittest.main()
