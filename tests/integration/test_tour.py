"""The README's five-minute tour, step by step, against the real `lastcall serve`.

What a new user does first: check health, get a token, create an account, upload a statement the
way `curl -F accountId=... -F file=@statement.csv` does, look at it, and delete it.
"""

import hashlib
import json
import os
import stat
import unittest

import harness
from harness import (ACCOUNT_FIELDS, COORDINATION_FIELDS, DEFAULT_CONSUMERS, FILE_FIELDS,
                     TRANSACTION_FIELDS, UUID_RE, JWT_RE, ServerTestCase, parse_time, wait_until)

# The rows of data/statement.csv: (date, description, amount, merchant).
STATEMENT_ROWS = [
    ("2024-01-03", "Whole Foods Market #1234", "-54.21", "Whole Foods"),
    ("2024-02-01", "Rent February", "-1200.00", "Landlord LLC"),
    ("2024-01-15", "ACME payroll January", "2500.00", "ACME Corp"),
    ("2024-01-09", "Uber trip downtown", "-18.77", "Uber"),
]
STATEMENT_BALANCE = "1227.02"        # 2500.00 - 54.21 - 1200.00 - 18.77
STATEMENT_LAST_DATE = "2024-02-01"   # the latest date, not the last row


class ReadmeTourTest(ServerTestCase):

    def test_tour(self):
        server = self.server

        # 1. Health needs no token.
        r = harness.http_request(server.port, "GET", "/healthz")
        self.assertStatus(r, 200)

        # 2. A token: the JWT and a newline on stdout.
        out = server.token_output("alice", "1h")
        self.assertTrue(out.endswith("\n"), "token output must end with a newline: %r" % out)
        self.assertRegex(out.strip(), JWT_RE)
        self.assertEqual(out.count("\n"), 1, "token output is exactly one line: %r" % out)
        alice = harness.Client(server, out.strip())

        # 3. An account.
        r = alice.post("/accounts", {"name": "Checking", "currency": "USD"})
        self.assertStatus(r, 201)
        account = r.body
        self.assertRegex(account.get("accountId", ""), UUID_RE)
        self.assertEqual(account, {"accountId": account["accountId"], "name": "Checking",
                                   "currency": "USD", "balance": "0.00", "transactionCount": 0,
                                   "lastTransactionDate": None})
        account_id = account["accountId"]

        # 4. Upload exactly as curl -F file=@statement.csv does (curl sends
        #    application/octet-stream for a .csv file).
        content = harness.data_file("statement.csv")
        r = alice.upload(account_id, "statement.csv", content, "application/octet-stream")
        self.assertStatus(r, 201)
        f = r.body
        file_id = f["fileId"]
        with self.subTest("upload response"):
            self.check_upload_response(f, account_id, content)

        # 5. The file list.
        with self.subTest("GET /files"):
            r = alice.get("/files")
            self.assertStatus(r, 200)
            self.assertEqual(list(r.body.keys()), ["files"])
            self.assertEqual([x["fileId"] for x in r.body["files"]], [file_id])

        # 6. The file itself.
        with self.subTest("GET /files/{id}"):
            r = alice.get("/files/" + file_id)
            self.assertStatus(r, 200)
            got = r.body
            self.assertEqual(set(got), FILE_FIELDS | {"coordinationId"})
            self.assertIsNone(got["coordinationId"])
            for k in FILE_FIELDS:
                self.assertEqual(got[k], f[k], "GET /files/{id} field %s" % k)
            listed = alice.get("/files").body["files"][0]
            self.assertEqual({k: listed.get(k) for k in FILE_FIELDS},
                             {k: got[k] for k in FILE_FIELDS})

        # 7. The content, byte for byte, with the original content type.
        with self.subTest("GET /files/{id}/content"):
            r = alice.get("/files/%s/content" % file_id, raw=True)
            self.assertStatus(r, 200)
            self.assertEqual(r.raw, content)
            self.assertEqual(r.headers.get("content-type"), "application/octet-stream")

        # 8. The transactions, in file order.
        with self.subTest("transactions"):
            r = alice.get("/files/%s/transactions" % file_id)
            self.assertStatus(r, 200)
            txns = r.body["transactions"]
            self.assertEqual(len(txns), len(STATEMENT_ROWS))
            for t, (date, desc, amount, merchant) in zip(txns, STATEMENT_ROWS):
                self.assertEqual(set(t), TRANSACTION_FIELDS, "transaction fields: %r" % t)
                self.assertRegex(t["transactionId"], UUID_RE)
                self.assertEqual((t["accountId"], t["fileId"], t["date"], t["description"],
                                  t["amount"], t["currency"], t["merchant"]),
                                 (account_id, file_id, date, desc, amount, "USD", merchant))
            r = alice.get("/transactions?accountId=" + account_id)
            self.assertStatus(r, 200)
            self.assertEqual(sorted(t["transactionId"] for t in r.body["transactions"]),
                             sorted(t["transactionId"] for t in txns))

        # 9. The account's derived values.
        with self.subTest("derived values"):
            acc = self.assertAccountDerived(alice, account_id, STATEMENT_BALANCE,
                                            len(STATEMENT_ROWS), STATEMENT_LAST_DATE)
            self.assertEqual(set(acc), ACCOUNT_FIELDS)
            r = alice.get("/accounts")
            self.assertStatus(r, 200)
            self.assertEqual(r.body, {"accounts": [acc]})

        # 10. Delete: 202, coordinated.
        r = alice.delete("/files/" + file_id)
        self.assertStatus(r, 202)
        coordination_id = r.body.get("coordinationId")
        self.assertUuid4(coordination_id)
        self.assertEqual(r.body, {"message": "File deletion initiated successfully",
                                  "fileId": file_id, "coordinationId": coordination_id,
                                  "metadata": {"transactionCount": len(STATEMENT_ROWS),
                                               "status": "deletion_requested"}})

        # 11. The coordination completes with every consumer.
        c = alice.wait_coordination(coordination_id, "completed", timeout=15)
        with self.subTest("coordination body"):
            self.assertEqual(c["coordinationId"], coordination_id)
            self.assertEqual(c["fileId"], file_id)
            self.assertEqual(c["outcome"], "all_completed")
            self.assertEqual(sorted(c["expectedConsumers"]), sorted(DEFAULT_CONSUMERS))
            self.assertEqual(sorted((x["name"], x["status"]) for x in c["consumers"]),
                             [(n, "completed") for n in sorted(DEFAULT_CONSUMERS)])
        with self.subTest("GET /coordinations/{id} has exactly the fields of issue 3"):
            self.assertEqual(set(c), COORDINATION_FIELDS)

        # 12. The file is gone, everywhere.
        self.assertError(alice.get("/files/" + file_id), 404, "not_found")
        self.assertError(alice.get("/files/%s/content" % file_id), 404, "not_found")
        self.assertError(alice.get("/files/%s/transactions" % file_id), 404, "not_found")
        self.assertEqual(alice.get("/files").body, {"files": []})
        self.assertEqual(alice.get("/transactions?accountId=" + account_id).body,
                         {"transactions": []})
        self.assertAccountDerived(alice, account_id, "0.00", 0, None)

    def check_upload_response(self, f, account_id, content):
        self.assertTrue(FILE_FIELDS <= set(f), "missing fields in %r" % f)
        self.assertLessEqual(set(f) - FILE_FIELDS, {"coordinationId"}, "unexpected fields in %r" % f)
        self.assertRegex(f["fileId"], UUID_RE)
        self.assertEqual(f["accountId"], account_id)
        self.assertEqual(f["name"], "statement.csv")
        self.assertEqual(f["contentType"], "application/octet-stream")
        self.assertEqual(f["sizeBytes"], len(content))
        self.assertEqual(f["sha256"], hashlib.sha256(content).hexdigest())
        self.assertEqual(f["transactionCount"], len(STATEMENT_ROWS))
        self.assertEqual(f["status"], "active")
        parse_time(f["uploadedAt"])


class ConventionsTest(ServerTestCase):
    """What every response and every log line promise."""

    def test_every_response_carries_a_request_id(self):
        alice = self.server.client(harness.unique_user("alice"))
        responses = [
            harness.http_request(self.server.port, "GET", "/healthz"),
            alice.get("/accounts"),
            alice.post("/accounts", {"name": "Savings", "currency": "EUR"}),
            alice.get("/files/" + harness.random_uuid()),             # 404
            alice.get("/files/not-a-uuid"),                           # 400
            harness.Client(self.server).get("/accounts"),             # 401
            alice.put("/accounts", {"name": "x", "currency": "USD"}),  # 405
        ]
        ids = []
        for r in responses:
            rid = r.headers.get("x-request-id")
            self.assertTrue(rid, "no X-Request-Id on %r" % (r,))
            ids.append(rid)
        self.assertEqual(len(set(ids)), len(ids), "request ids must differ: %r" % ids)

    def test_logs_are_json_lines(self):
        user = harness.unique_user("alice")
        alice = self.server.client(user)
        account = alice.create_account("Logged", "USD")
        r = alice.upload(account["accountId"], "statement.csv", harness.data_file("statement.csv"))
        self.assertStatus(r, 201)
        file_id, request_id = r.body["fileId"], r.headers["x-request-id"]
        lines = wait_until(lambda: self.server.log_lines(), 5, message="some log lines")
        for raw, obj in lines:
            self.assertIsNotNone(obj, "log line is not a JSON object: %r" % raw)
            for field in ("time", "level", "message"):
                self.assertIn(field, obj, "log line without %r: %r" % (field, raw))
            parse_time(obj["time"])

        # The ids involved are logged: the import's line names the user, the file and the
        # request that caused it (the X-Request-Id the client saw).
        def import_lines():
            return [o for o in self.server.logs() if file_id in json.dumps(o)]
        found = wait_until(import_lines, 5, message="a log line naming file %s" % file_id)
        self.assertTrue(any(user in json.dumps(o) and request_id in json.dumps(o) for o in found),
                        "no log line names fileId, userId and requestId together: %r" % found)

    def test_sigterm_exits_zero_and_data_survives_restart(self):
        user = harness.unique_user("alice")
        alice = self.server.client(user)
        account = alice.create_account("Durable", "USD")
        f = alice.upload_ok(account["accountId"], "statement.csv", harness.data_file("statement.csv"))
        self.server.restart()  # stop() asserts exit status 0 within 10 s
        alice = self.server.client(user)
        r = alice.get("/files/" + f["fileId"])
        self.assertStatus(r, 200)
        self.assertAccountDerived(alice, account["accountId"], STATEMENT_BALANCE,
                                  len(STATEMENT_ROWS), STATEMENT_LAST_DATE)
        r = alice.get("/files/%s/content" % f["fileId"], raw=True)
        self.assertEqual(r.raw, harness.data_file("statement.csv"))


class SecretInDataFolderTest(harness.Assertions, unittest.TestCase):
    """`make run` sets no LASTCALL_JWT_SECRET: serve makes one in the data folder (mode 0600),
    says where, and `lastcall token` signs with it."""

    def test_generated_secret(self):
        server = harness.Server(secret_in_env=False)
        self.addCleanup(server.cleanup)
        server.start()
        log = server.log_text()
        secret_files = []
        for root, _, names in os.walk(server.data_dir):
            for n in names:
                p = os.path.join(root, n)
                if stat.S_IMODE(os.stat(p).st_mode) == 0o600 and p in log:
                    secret_files.append(p)
        self.assertTrue(secret_files, "a mode-0600 secret file in the data folder, named in the "
                        "log: files %r, log:\n%s" % (os.listdir(server.data_dir), log))
        token = server.token("alice")
        alice = harness.Client(server, token)
        self.assertStatus(alice.get("/accounts"), 200)
        account = alice.create_account("Kept", "USD")
        # A token made with some other secret is refused.
        forged = harness.make_jwt("some-other-secret-0123456789", harness.claims_for("alice"))
        self.assertError(harness.Client(server, forged).get("/accounts"), 401, "unauthorized")
        # The same secret after a restart: the old token still works.
        server.restart()
        r = alice.get("/accounts/" + account["accountId"])
        self.assertStatus(r, 200)


if __name__ == "__main__":
    unittest.main()
