"""Security over the real server (issue 5): every way a token can be wrong, on every route that
needs one; another user's objects are 404 on every route and method (with the operator role's
one exception); no HTTP route records a consumer completion; secrets never reach the logs.

The number of cases tried is printed at the end ("security cases tried: N").
"""

import base64
import collections
import hashlib
import hmac
import json
import time
import unittest

import harness
import rawhttp
from harness import (ServerTestCase, claims_for, make_csv, make_jwt, random_uuid, unique_user,
                     wait_until)

CASES = collections.Counter()

ROWS = [
    ("2024-05-01", "Groceries at the supermarket", "-23.45", "USD", "Fresh Market"),
    ("2024-05-03", "Coffee shop", "-4.80", "USD", "Bean There"),
]


def tearDownModule():
    total = sum(CASES.values())
    print("\nsecurity cases tried: %d (%s)" % (
        total, ", ".join("%s %d" % kv for kv in sorted(CASES.items()))))


def b64(data):
    return harness.b64url(data)


def raw_jwt(header, payload, signature):
    """A compact JWT from exact header/payload bytes and a signature (bytes, base64url-encoded)."""
    return b64(header) + "." + b64(payload) + "." + b64(signature)


def hs(secret, signing_input, digest=hashlib.sha256):
    return hmac.new(secret.encode(), signing_input.encode(), digest).digest()


def bad_tokens(secret, user):
    """(name, token, expected message or None) for every way a token can be wrong."""
    now = int(time.time())
    good = claims_for(user)
    out = []

    def signed(header, claims, digest=hashlib.sha256, key=None):
        si = b64(json.dumps(header)) + "." + b64(json.dumps(claims))
        return si + "." + b64(hmac.new((key or secret).encode(), si.encode(), digest).digest())

    hdr = {"alg": "HS256", "typ": "JWT"}
    out.append(("bad signature", signed(hdr, good, key=secret + "x"), "bad signature"))
    out.append(("empty secret", signed(hdr, good, key="\0"), "bad signature"))
    valid = signed(hdr, good)
    h, p, sig = valid.split(".")
    out.append(("signature of another payload",
                h + "." + b64(json.dumps(claims_for(unique_user()))) + "." + sig, "bad signature"))
    out.append(("truncated signature", h + "." + p + "." + sig[:-4], None))
    out.append(("no signature", h + "." + p + ".", None))
    out.append(("alg none, unsigned", b64(json.dumps({"alg": "none"})) + "." + p + ".", "unsupported alg"))
    out.append(("alg none, signed", signed({"alg": "none", "typ": "JWT"}, good), "unsupported alg"))
    out.append(("alg None", signed({"alg": "None"}, good), "unsupported alg"))
    out.append(("alg hs256", signed({"alg": "hs256"}, good), "unsupported alg"))
    out.append(("alg HS384", signed({"alg": "HS384"}, good, hashlib.sha384), "unsupported alg"))
    out.append(("alg HS512", signed({"alg": "HS512"}, good, hashlib.sha512), "unsupported alg"))
    out.append(("alg RS256", signed({"alg": "RS256"}, good), "unsupported alg"))
    out.append(("alg ES256", signed({"alg": "ES256"}, good), "unsupported alg"))
    out.append(("alg EdDSA", signed({"alg": "EdDSA"}, good), "unsupported alg"))
    out.append(("no alg", signed({"typ": "JWT"}, good), None))
    out.append(("alg not a string", signed({"alg": ["HS256"]}, good), None))
    out.append(("typ JWE", signed({"alg": "HS256", "typ": "JWE"}, good), None))
    out.append(("crit header", signed({"alg": "HS256", "crit": ["exp"]}, good), None))
    out.append(("expired", signed(hdr, claims_for(user, ttl_seconds=-120)), "token expired"))
    out.append(("expired long ago", signed(hdr, {"sub": user, "exp": 1}), "token expired"))
    out.append(("not yet valid", signed(hdr, dict(good, nbf=now + 600)), "token not yet valid"))
    out.append(("missing exp", signed(hdr, {"sub": user, "iat": now}), "missing exp"))
    out.append(("exp a string", signed(hdr, {"sub": user, "exp": str(now + 3600)}), None))
    out.append(("exp overflowing", signed(hdr, {"sub": user, "exp": 10 ** 30}), None))
    out.append(("nbf a string", signed(hdr, dict(good, nbf="0")), None))
    out.append(("missing sub", signed(hdr, {"exp": now + 3600}), "missing sub"))
    out.append(("empty sub", signed(hdr, {"sub": "", "exp": now + 3600}), None))
    out.append(("sub a number", signed(hdr, {"sub": 42, "exp": now + 3600}), None))
    out.append(("sub too long", signed(hdr, {"sub": "u" * 129, "exp": now + 3600}), None))
    out.append(("payload not JSON", h + "." + b64("not json") + "." +
                b64(hs(secret, h + "." + b64("not json"))), None))
    out.append(("payload an array", h + "." + b64("[]") + "." + b64(hs(secret, h + "." + b64("[]"))), None))
    out.append(("two parts", h + "." + p, None))
    out.append(("four parts", valid + ".x", None))
    out.append(("standard base64", valid.replace("-", "+").replace("_", "/") + "+/", None))
    out.append(("not base64", "!!!.###.$$$", None))
    out.append(("empty", "", None))
    out.append(("huge", "a" * 8000 + "." + "b" * 4000 + ".c", None))
    out.append(("bytes not UTF-8", b"\xff\xfe.\xff.\xff".decode("latin-1"), None))
    return out


def route_path(template, ids):
    kind = template.split("/")[1]
    return (template.replace("{id}", ids.get(kind, random_uuid())).replace("{asset}", "app.js")
            .replace("{name}", "audit_consumer"))


class TokenTest(ServerTestCase):
    """Each wrong token, on every route that needs a token: 401 with a JSON error and
    WWW-Authenticate, nothing changed. Tokens inside the leeway still work."""

    def test_every_bad_token_on_every_route_is_401(self):
        user = unique_user("tok")
        c = self.server.client(user)
        acc = c.create_account("A", "USD")
        f = c.upload_ok(acc["accountId"], "a.csv", make_csv(ROWS))
        c.wait_categorized(f["fileId"])
        before = c.snapshot()
        ids = {"accounts": acc["accountId"], "files": f["fileId"]}
        bodies = {"POST /accounts": {"name": "X", "currency": "USD"},
                  "PATCH /transactions/{id}": {"category": "x"},
                  "POST /holds": {"userId": user, "reason": "x"}}
        for name, token, message in bad_tokens(self.server.secret, user):
            for method, template in rawhttp.ROUTES:
                if (method, template) in rawhttp.PUBLIC_ROUTES:
                    continue
                with self.subTest(token=name, route=method + " " + template):
                    CASES["bad_tokens"] += 1
                    body = bodies.get(method + " " + template)
                    r = harness.http_request(self.server.port, method, route_path(template, ids),
                                             body=body, headers={"Authorization": "Bearer " + token})
                    self.assertError(r, 401, "unauthorized", message or ())
                    self.assertEqual(r.headers.get("www-authenticate"), "Bearer")
        self.assertEqual(c.snapshot(), before)

    def test_leeway_and_the_cli_token(self):
        user = unique_user("leeway")
        now = int(time.time())
        for claims in ({"sub": user, "exp": now - 10},          # expired 10 s ago: within 30 s
                       {"sub": user, "exp": now + 60, "nbf": now + 10},
                       {"sub": user, "exp": now + 60, "iat": now + 10, "role": "nobody"}):
            with self.subTest(claims=claims):
                CASES["bad_tokens"] += 1
                tok = make_jwt(self.server.secret, claims)
                r = harness.http_request(self.server.port, "GET", "/accounts",
                                         headers={"Authorization": "Bearer " + tok})
                self.assertStatus(r, 200)
        # The scheme is case-insensitive; anything but Bearer is not.
        tok = self.server.token(user)
        for header, status in (("bearer " + tok, 200), ("BEARER " + tok, 200),
                               ("Basic " + base64.b64encode(b"u:p").decode(), 401),
                               ("Bearer  " + tok, 401), (tok, 401), ("Bearer", 401)):
            with self.subTest(header=header[:20]):
                CASES["bad_tokens"] += 1
                r = harness.http_request(self.server.port, "GET", "/accounts",
                                         headers={"Authorization": header})
                self.assertEqual(r.status, status, r)


class OwnershipTest(ServerTestCase):
    """Another user's account, file, transaction or coordination: 404 on every route and every
    method, exactly like a missing one; lists never show it. The operator role reads every
    coordination and its timeline, and nothing else."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        s = cls.server
        cls.alice = s.client(unique_user("alice"))
        cls.bob_user = unique_user("bob")
        cls.bob = s.client(cls.bob_user)
        cls.bob_operator = s.client(token=s.token(cls.bob_user, role="operator"))
        cls.bob_admin = s.client(token=s.py_token(cls.bob_user, role="admin"))
        cls.bob_Operator = s.client(token=s.py_token(cls.bob_user, role="Operator"))
        a = cls.alice.create_account("Alice", "USD")
        f = cls.alice.upload_ok(a["accountId"], "alice.csv", make_csv(ROWS))
        txns = cls.alice.wait_categorized(f["fileId"])
        r = cls.alice.patch("/transactions/" + txns[0]["transactionId"], {"category": "dining"})
        assert r.status == 200, r
        gone = cls.alice.upload_ok(a["accountId"], "gone.csv", make_csv(ROWS[:1]))
        cls.alice.wait_categorized(gone["fileId"])
        r = cls.alice.delete("/files/" + gone["fileId"])
        assert r.status == 202, r
        cls.coordination_id = r.body["coordinationId"]
        cls.alice.wait_coordination(cls.coordination_id, "completed")
        # The deletion is verified (and its receipt ready) about a second after it completes.
        wait_until(lambda: cls.alice.get("/coordinations/%s/receipt" % cls.coordination_id).status == 200,
                   message="the deletion's receipt")
        cls.ids = {"accounts": a["accountId"], "files": f["fileId"],
                   "transactions": txns[0]["transactionId"], "coordinations": cls.coordination_id}
        b = cls.bob.create_account("Bob", "USD")
        bf = cls.bob.upload_ok(b["accountId"], "bob.csv", make_csv(ROWS[1:]))
        cls.bob.wait_categorized(bf["fileId"])

    @staticmethod
    def receipt_claims(client, cid):
        """A receipt's claims without iat (each receipt is signed when it is asked for)."""
        r = client.get("/coordinations/%s/receipt" % cid)
        assert r.status == 200, r
        return {k: v for k, v in r.body["claims"].items() if k != "iat"}

    def alice_state(self):
        snap = self.alice.snapshot()
        cid = self.coordination_id
        snap["coordination"] = self.alice.coordination(cid)
        snap["timeline"] = self.alice.get("/coordinations/%s/timeline" % cid).body
        snap["receipt"] = self.receipt_claims(self.alice, cid)
        for path in ("/analytics/monthly", "/analytics/archive", "/categorization/mappings",
                     "/coordinations"):
            snap[path] = self.alice.get(path).body
        return snap

    def test_every_route_and_method_is_404_or_405_for_another_user(self):
        before = self.alice_state()
        methods = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
        allowed = collections.defaultdict(set)
        for m, t in rawhttp.ROUTES:
            allowed[t].add(m)
        for template in allowed:
            if "{id}" not in template:
                continue
            kind = template.split("/")[1]
            if kind not in self.ids:
                continue  # holds belong to no user: test_holds_are_the_operators_alone
            theirs = template.replace("{id}", self.ids[kind])
            missing_id = random_uuid()
            missing = template.replace("{id}", missing_id)
            for method in methods:
                for who, client in (("bob", self.bob), ("bob as admin", self.bob_admin),
                                    ("bob as Operator", self.bob_Operator),
                                    ("bob as operator", self.bob_operator)):
                    if who == "bob as operator" and kind == "coordinations" and method == "GET":
                        continue  # the operator's exception, checked below
                    with self.subTest(who=who, method=method, route=template):
                        CASES["ownership"] += 1
                        body = {"category": "stolen"} if method in ("PATCH", "PUT", "POST") else None
                        r = client.request(method, theirs, body=body)
                        m = client.request(method, missing, body=body)
                        if method not in allowed[template]:
                            self.assertEqual(r.status, 405, r)
                            self.assertEqual(r.headers.get("allow"), m.headers.get("allow"))
                            continue
                        if method == "HEAD":
                            continue
                        if (method, template) in rawhttp.CONSUMER_ROUTES:
                            # A user's token is never a consumer's, whoever owns the id.
                            self.assertError(r, 403, "forbidden")
                            self.assertError(m, 403, "forbidden")
                            continue
                        if (method, template) in rawhttp.OPERATOR_ROUTES:
                            # The operator's override acts on anyone's coordination: Alice's
                            # (completed, not vetoed) is a 409; everyone else gets 403.
                            if who == "bob as operator":
                                self.assertError(client.request(method, theirs), 409, "not_vetoed")
                                self.assertError(client.request(method, missing), 404, "not_found")
                                self.assertError(r, 400, "invalid_request")  # the body is checked first
                            else:
                                self.assertError(r, 403, "forbidden")
                                self.assertError(m, 403, "forbidden")
                            continue
                        self.assertError(r, 404, "not_found")
                        self.assertEqual(r.body["message"].replace(self.ids[kind], "<id>"),
                                         m.body["message"].replace(missing_id, "<id>"))
        # Routes that take an id elsewhere: the accountId filter, and the upload form.
        for client in (self.bob, self.bob_operator):
            CASES["ownership"] += 2
            r = client.get("/transactions?accountId=" + self.ids["accounts"])
            self.assertError(r, 404, "not_found")
            r = client.upload(self.ids["accounts"], "x.csv", make_csv(ROWS))
            self.assertError(r, 422, "unknown_account")
        self.assertEqual(self.alice_state(), before)

    def test_lists_show_only_ones_own(self):
        alice_ids = set(self.ids.values())
        for who, client in (("bob", self.bob), ("bob as operator", self.bob_operator),
                            ("bob as admin", self.bob_admin)):
            for method, template in rawhttp.ROUTES:
                if "{" in template or method != "GET" or (method, template) in rawhttp.PUBLIC_ROUTES:
                    continue
                if who == "bob as operator" and template == "/coordinations":
                    continue
                with self.subTest(who=who, route=template):
                    CASES["ownership"] += 1
                    r = client.get(template)
                    if (method, template) in rawhttp.OPERATOR_ROUTES and who != "bob as operator":
                        self.assertError(r, 403, "forbidden")
                        continue
                    self.assertStatus(r, 200)
                    text = json.dumps(r.body)
                    for i in alice_ids:
                        self.assertNotIn(i, text)
                    self.assertNotIn("Fresh Market", text)   # Alice's merchant
                    self.assertNotIn("fresh market", text)   # her learned mapping
        # Bob's own views do show Bob's data (so the lists above were not just empty).
        self.assertEqual(len(self.bob.get("/files").body["files"]), 1)
        self.assertEqual(len(self.bob.get("/analytics/monthly").body["months"]), 1)

    def test_holds_are_the_operators_alone(self):
        # Every /holds route and method: 403 for a user, an "admin" and an "Operator"; the
        # operator's own GET answers. Nothing is placed.
        hold_body = {"userId": "someone", "reason": "not yours"}
        for method, template in sorted(rawhttp.OPERATOR_ROUTES):
            for who, client in (("bob", self.bob), ("bob as admin", self.bob_admin),
                                ("bob as Operator", self.bob_Operator)):
                with self.subTest(who=who, method=method, route=template):
                    CASES["ownership"] += 1
                    r = client.request(method, template.replace("{id}", random_uuid()),
                                       body=hold_body if method == "POST" else None)
                    self.assertError(r, 403, "forbidden")
        self.assertEqual(self.bob_operator.get("/holds").body, {"holds": []})

    def test_operator_reads_every_coordination_and_nothing_else(self):
        cid = self.coordination_id
        CASES["ownership"] += 4
        r = self.bob_operator.get("/coordinations/" + cid)
        self.assertStatus(r, 200)
        self.assertEqual(r.body, self.alice.coordination(cid))
        r = self.bob_operator.get("/coordinations/%s/timeline" % cid)
        self.assertStatus(r, 200)
        self.assertEqual(r.body, self.alice.get("/coordinations/%s/timeline" % cid).body)
        r = self.bob_operator.get("/coordinations/%s/receipt" % cid)
        self.assertStatus(r, 200)
        self.assertEqual(self.receipt_claims(self.bob_operator, cid), self.receipt_claims(self.alice, cid))
        r = self.bob_operator.get("/coordinations?limit=500")
        self.assertIn(cid, [c["coordinationId"] for c in r.body["coordinations"]])
        # Another role value, or the same one spelled otherwise, is an ordinary user.
        for client in (self.bob_admin, self.bob_Operator, self.bob):
            r = client.get("/coordinations/" + cid)
            self.assertError(r, 404, "not_found")
            r = client.get("/coordinations?limit=500")
            self.assertNotIn(cid, [c["coordinationId"] for c in r.body["coordinations"]])


class CompletionTest(ServerTestCase):
    """Only a consumer completes: in process, or a registered webhook consumer with its own token
    (test_webhooks). No user's or operator's token on any HTTP route, method or body records a
    completion, not for an expected consumer that never answers (here audit_consumer, which has no
    in-process implementation and is not registered)."""
    SERVER_ENV = {"EXPECTED_CONSUMERS": "analytics_consumer,categorization_consumer,audit_consumer"}

    def test_no_http_route_records_a_completion(self):
        user = unique_user("owner")
        owner = self.server.client(user)
        operator = self.server.client(token=self.server.token(user, role="operator"))
        acc = owner.create_account("A", "USD")
        f = owner.upload_ok(acc["accountId"], "a.csv", make_csv(ROWS))
        owner.wait_categorized(f["fileId"])
        r = owner.delete("/files/" + f["fileId"])
        self.assertStatus(r, 202)
        cid = r.body["coordinationId"]

        def two_done():
            c = owner.coordination(cid)
            return c if sum(x["status"] == "completed" for x in c["consumers"]) == 2 else None
        before = wait_until(two_done, message="the in-process consumers complete")
        timeline = owner.get("/coordinations/%s/timeline" % cid).body
        events = len(self.server.outbox())
        completion = {"consumer": "audit_consumer", "consumerName": "audit_consumer",
                      "status": "completed", "coordinationId": cid, "fileId": f["fileId"],
                      "type": "consumer.completion", "source": "/lastcall/consumers/audit_consumer",
                      "data": {"consumer": "audit_consumer", "coordinationId": cid,
                               "status": "completed"}}
        paths = ["/coordinations/%s" % cid, "/coordinations/%s/completions" % cid,
                 "/coordinations/%s/complete" % cid, "/coordinations/%s/consumers/audit_consumer" % cid,
                 "/coordinations/%s/timeline" % cid, "/coordinations", "/completions", "/events",
                 "/consumers/audit_consumer/completions", "/files/%s" % f["fileId"]]
        for client in (owner, operator):
            for path in paths:
                for method in ("POST", "PUT", "PATCH"):
                    with self.subTest(path=path, method=method):
                        CASES["completions"] += 1
                        r = client.request(method, path, body=completion)
                        self.assertIn(r.status, (403, 404, 405), r)
        c = owner.coordination(cid)
        self.assertEqual(c, before)
        self.assertEqual([x["status"] for x in c["consumers"]], ["completed", "completed", "pending"])
        self.assertEqual(c["status"], "waiting")
        self.assertEqual(owner.get("/coordinations/%s/timeline" % cid).body, timeline)
        self.assertEqual(len(self.server.outbox()), events)
        self.assertFalse([e for e in self.server.outbox() if e["type"] == "consumer.completion"
                          and "audit" in e["source"]])


class SecretsInLogsTest(unittest.TestCase):
    """With a known LASTCALL_JWT_SECRET and the most verbose log level, the whole log output of a
    session with good and bad tokens, failures and deletions holds neither the secret, nor any
    token, nor any token's signature."""

    def test_no_secret_token_or_signature_in_the_logs(self):
        secret = "s3cr3t-" + harness.secrets.token_hex(24)
        server = harness.Server({"LASTCALL_LOG_LEVEL": "debug"}, secret=secret)
        try:
            server.start()
            user = unique_user("logs")
            tokens = [server.token(user), server.token(user, role="operator"), server.py_token(user)]
            tokens += [t for _, t, _ in bad_tokens(secret, user) if len(t) > 20]
            c = server.client(token=tokens[0])
            acc = c.create_account("A", "USD")
            f = c.upload_ok(acc["accountId"], "a.csv", make_csv(ROWS))
            c.wait_categorized(f["fileId"])
            c.upload(acc["accountId"], "bad.csv", b"date,description,amount\n2024-13-01,x,1\n")
            c.post("/accounts", b"not json")
            cid = c.delete("/files/" + f["fileId"]).body["coordinationId"]
            c.wait_coordination(cid, "completed")
            wait_until(lambda: c.get("/coordinations/%s/receipt" % cid).status == 200,
                       message="a signed receipt")
            for tok in tokens:
                for method, template in rawhttp.ROUTES:
                    CASES["log_scan"] += 1
                    harness.http_request(server.port, method, route_path(template, {}),
                                         headers={"Authorization": "Bearer " + tok})
            r = harness.http_request(server.port, "GET", "/healthz")
            self.assertEqual(r.status, 200)
            server.stop()
            log = server.log_text()
            self.assertIn("listening", log)
            # The scan is meaningful: every request was logged (debug), failures included.
            self.assertGreater(log.count('"message":"request"'), len(tokens) * len(rawhttp.ROUTES))
            forbidden = {"the secret": secret, "the secret in base64url": harness.b64url(secret)}
            for i, tok in enumerate(tokens):
                parts = tok.split(".")
                forbidden["token %d" % i] = tok
                if len(parts) == 3 and len(parts[2]) >= 16:
                    forbidden["signature of token %d" % i] = parts[2]
            for what, value in forbidden.items():
                CASES["log_scan"] += 1
                self.assertNotIn(value, log, "%s appears in the log" % what)
            # Nor the receipt signing key (its PEM body, line by line).
            import os
            pems = [os.path.join(root, n) for root, _, names in os.walk(server.data_dir)
                    for n in names if n.endswith(".pem")]
            self.assertTrue(pems, "no receipt signing key found under the data folder")
            for pem in pems:
                with open(pem) as f:
                    for line in f.read().splitlines():
                        if line and not line.startswith("-----") and len(line) >= 16:
                            CASES["log_scan"] += 1
                            self.assertNotIn(line, log, "a line of %s appears in the log" % pem)
            # The secret does not sit in the data folder either when it came from the environment.
            import os
            self.assertFalse(os.path.exists(os.path.join(server.data_dir, "jwt_secret")))
        finally:
            server.kill()
            server.cleanup()


if __name__ == "__main__":
    unittest.main()
