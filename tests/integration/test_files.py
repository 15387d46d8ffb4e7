"""Accounts, file import (CSV and OFX), content, listing, the synchronous delete, every error
status (each checked to leave the data unchanged), auth, and isolation between users.
"""

import hashlib
import os
import threading
import time
import unittest

import harness
from harness import (ACCOUNT_FIELDS, FILE_FIELDS, TRANSACTION_FIELDS, UUID_RE, ServerTestCase,
                     expected_from_rows, make_csv, make_jwt, claims_for, random_uuid, unique_user,
                     wait_until)

PNG_BYTES = (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06"
             b"\x00\x00\x00\x1f\x15\xc4\x89\x00\x00\x00\rIDATx\x9cc\xf8\xff\xff?\x00\x05\xfe"
             b"\x02\xfe\xa7\x35\x81\x84\x00\x00\x00\x00IEND\xaeB`\x82")

OFX_ROWS = [  # data/statement.ofx: (date, description=MEMO, amount, merchant=NAME)
    ("2024-01-05", "Weekly groceries", "-42.50", "TRADER JOES 552"),
    ("2024-01-12", "Salary January", "1500.00", "ACME PAYROLL"),
    ("2024-01-20", "Streaming plan", "-15.99", "NETFLIX.COM"),
]

# An OFX header followed by something libofx cannot read.
BAD_OFX = (b"OFXHEADER:100\nDATA:OFXSGML\nVERSION:102\nSECURITY:NONE\nENCODING:USASCII\n"
           b"CHARSET:1252\nCOMPRESSION:NONE\nOLDFILEUID:NONE\nNEWFILEUID:NONE\n\n"
           b"this is not an ofx body\n")

SIMPLE_ROWS = [
    ("2024-05-01", "Groceries at the supermarket", "-23.45", "USD", "Fresh Market"),
    ("2024-05-03", "Coffee shop", "-4.80", "USD", "Bean There"),
]


def wait_categorized_or_current(client, file_id):
    """The file's transactions once the categorization consumer ran (or after 5 s anyway:
    these tests are not about categorization)."""
    try:
        return client.wait_categorized(file_id, timeout=5)
    except AssertionError:
        return client.file_transactions(file_id)


class AccountsTest(ServerTestCase):

    def test_create_get_list(self):
        c = self.server.client(unique_user())
        r = c.post("/accounts", {"name": "Checking", "currency": "USD"})
        self.assertStatus(r, 201)
        a = r.body
        self.assertRegex(a["accountId"], UUID_RE)
        self.assertEqual(a, {"accountId": a["accountId"], "name": "Checking", "currency": "USD",
                             "balance": "0.00", "transactionCount": 0, "lastTransactionDate": None})
        r2 = c.post("/accounts", {"name": "Savings", "currency": "EUR"})
        self.assertStatus(r2, 201)
        b = r2.body
        self.assertNotEqual(a["accountId"], b["accountId"])

        r = c.get("/accounts/" + a["accountId"])
        self.assertStatus(r, 200)
        self.assertEqual(r.body, a)
        r = c.get("/accounts")
        self.assertStatus(r, 200)
        self.assertEqual(list(r.body), ["accounts"])
        self.assertEqual(sorted(r.body["accounts"], key=lambda x: x["accountId"]),
                         sorted([a, b], key=lambda x: x["accountId"]))
        for acc in r.body["accounts"]:
            self.assertEqual(set(acc), ACCOUNT_FIELDS)

    def test_empty_lists_for_a_new_user(self):
        c = self.server.client(unique_user())
        self.assertEqual(c.get("/accounts").body, {"accounts": []})
        self.assertEqual(c.get("/files").body, {"files": []})
        self.assertEqual(c.get("/transactions").body, {"transactions": []})


class ImportTest(ServerTestCase):

    def setUp(self):
        self.c = self.server.client(unique_user())
        self.account = self.c.create_account("Checking", "USD")
        self.account_id = self.account["accountId"]

    def test_csv_quoting(self):
        content = harness.data_file("quoted.csv")
        f = self.c.upload_ok(self.account_id, "quoted.csv", content)
        self.assertEqual(f["transactionCount"], 3)
        txns = self.c.file_transactions(f["fileId"])
        got = [(t["date"], t["description"], t["amount"], t["currency"], t["merchant"])
               for t in txns]
        self.assertEqual(got, [
            ("2024-03-01", 'Coffee, beans and "more"', "-7.25", "USD", "Blue Bottle, Inc."),
            ("2024-03-02", "Line one\nline two", "-3.10", "USD", "Corner Shop"),
            ("2024-03-03", "Plain refund", "12.50", "USD", "Refunds R Us"),
        ])
        for t in txns:
            self.assertEqual(set(t), TRANSACTION_FIELDS)
            self.assertEqual(t["fileId"], f["fileId"])
            self.assertEqual(t["accountId"], self.account_id)
        self.assertAccountDerived(self.c, self.account_id, "2.15", 3, "2024-03-03")

    def test_csv_bom_crlf_and_header_case(self):
        content = ("\ufeffDATE , Description,AMOUNT,Currency\r\n"
                   "2024-04-01,\"Caf\u00e9 \u2615, \"\"Z\u00fcrich\"\"\",-4.20,USD\r\n"
                   "\r\n"
                   "2024-04-02,Tram ticket,-2.80,USD\r\n").encode("utf-8")
        f = self.c.upload_ok(self.account_id, "bom.csv", content)
        self.assertEqual(f["transactionCount"], 2)
        txns = self.c.file_transactions(f["fileId"])
        self.assertEqual([(t["date"], t["description"], t["amount"]) for t in txns],
                         [("2024-04-01", "Caf\u00e9 \u2615, \"Z\u00fcrich\"", "-4.20"),
                          ("2024-04-02", "Tram ticket", "-2.80")])
        self.assertAccountDerived(self.c, self.account_id, "-7.00", 2, "2024-04-02")

    def test_ofx_import(self):
        content = harness.data_file("statement.ofx")
        r = self.c.upload(self.account_id, "statement.ofx", content, "application/x-ofx")
        self.assertStatus(r, 201)
        f = r.body
        self.assertEqual(f["name"], "statement.ofx")
        self.assertEqual(f["contentType"], "application/x-ofx")
        self.assertEqual(f["sizeBytes"], len(content))
        self.assertEqual(f["sha256"], hashlib.sha256(content).hexdigest())
        self.assertEqual(f["transactionCount"], 3)
        self.assertEqual(f["status"], "active")
        txns = self.c.file_transactions(f["fileId"])
        self.assertEqual([(t["date"], t["description"], t["amount"], t["currency"], t["merchant"])
                          for t in txns],
                         [(d, desc, amt, "USD", m) for d, desc, amt, m in OFX_ROWS])
        self.assertAccountDerived(self.c, self.account_id, "1441.51", 3, "2024-01-20")
        r = self.c.get("/files/%s/content" % f["fileId"], raw=True)
        self.assertStatus(r, 200)
        self.assertEqual(r.raw, content)
        self.assertEqual(r.headers.get("content-type"), "application/x-ofx")

    def test_content_round_trip_byte_for_byte(self):
        # BOM, CRLF and LF mixed, multi-byte UTF-8, a tab, trailing spaces, DEL, no final newline.
        content = (b"\xef\xbb\xbfdate,description,amount,merchant\r\n"
                   b"2024-06-01,\"Cr\xc3\xa8me br\xc3\xbbl\xc3\xa9e\t\xf0\x9f\x8d\xae\",-6.50,"
                   b"P\xc3\xa2tisserie  \n"
                   b"2024-06-02,\"quote \"\"inside\"\" \x7f\",0.01,Odd Shop")
        name = "M\u00e4rz 2024.csv"
        ctype = "text/csv; charset=utf-8"
        f = self.c.upload_ok(self.account_id, name, content, ctype)
        self.assertEqual(f["name"], name)
        self.assertEqual(f["contentType"], ctype)
        self.assertEqual(f["sizeBytes"], len(content))
        self.assertEqual(f["sha256"], hashlib.sha256(content).hexdigest())
        self.assertEqual(f["transactionCount"], 2)
        r = self.c.get("/files/%s/content" % f["fileId"], raw=True)
        self.assertStatus(r, 200)
        self.assertEqual(r.raw, content)
        self.assertEqual(r.headers.get("content-type"), ctype)
        r = self.c.get("/files/" + f["fileId"])
        self.assertEqual((r.body["name"], r.body["contentType"], r.body["sizeBytes"],
                          r.body["sha256"]), (name, ctype, len(content), f["sha256"]))

    def test_list_newest_first(self):
        ids = []
        for i in range(3):
            rows = [("2024-07-%02d" % (i + 1), "Upload %d" % i, "-1.0%d" % i, "USD", "Shop")]
            ids.append(self.c.upload_ok(self.account_id, "f%d.csv" % i, make_csv(rows))["fileId"])
        r = self.c.get("/files")
        self.assertStatus(r, 200)
        self.assertEqual([f["fileId"] for f in r.body["files"]], list(reversed(ids)))
        for f in r.body["files"]:
            self.assertTrue(FILE_FIELDS <= set(f), f)
        stamps = [harness.parse_time(f["uploadedAt"]) for f in r.body["files"]]
        self.assertEqual(stamps, sorted(stamps, reverse=True))

    def test_money_is_exact(self):
        rows = [("2024-08-01", "Big", "90071992547409.93", "USD", "A"),
                ("2024-08-02", "Dime", "0.10", "USD", "B"),
                ("2024-08-03", "Two dimes", "0.20", "USD", "C"),
                ("2024-08-04", "Cent back", "-0.01", "USD", "D"),
                ("2024-08-05", "Three decimals", "1.005", "USD", "E")]
        f = self.c.upload_ok(self.account_id, "money.csv", make_csv(rows))
        txns = self.c.file_transactions(f["fileId"])
        self.assertEqual([t["amount"] for t in txns],
                         ["90071992547409.93", "0.10", "0.20", "-0.01", "1.005"])
        self.assertAccountDerived(self.c, self.account_id, "90071992547411.225", 5, "2024-08-05")

    def test_concurrent_uploads_keep_derived_values_exact(self):
        files = []
        for i in range(8):
            rows = [("2024-10-%02d" % (i + 1), "Concurrent %d-%d" % (i, j),
                     "%s%d.%02d" % ("-" if j % 2 else "", i + 1, j * 7 % 100), "USD", "Shop")
                    for j in range(25)]
            files.append(rows)
        results = [None] * len(files)

        def upload(i):
            results[i] = self.c.upload(self.account_id, "c%d.csv" % i, make_csv(files[i]))
        threads = [threading.Thread(target=upload, args=(i,)) for i in range(len(files))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        for r in results:
            self.assertStatus(r, 201)
        all_rows = [row for rows in files for row in rows]
        self.assertAccountDerived(self.c, self.account_id,
                                  *expected_from_rows([(r[0], r[2]) for r in all_rows]))
        self.assertEqual(len(self.c.get("/files").body["files"]), len(files))

    def test_transactions_by_account_and_all(self):
        other = self.c.create_account("Second", "USD")
        f1 = self.c.upload_ok(self.account_id, "a.csv", make_csv(SIMPLE_ROWS))
        f2 = self.c.upload_ok(other["accountId"], "b.csv", make_csv(SIMPLE_ROWS[:1]))
        r = self.c.get("/transactions?accountId=" + self.account_id)
        self.assertStatus(r, 200)
        self.assertEqual({t["fileId"] for t in r.body["transactions"]}, {f1["fileId"]})
        self.assertEqual(len(r.body["transactions"]), 2)
        r = self.c.get("/transactions")
        self.assertStatus(r, 200)
        self.assertEqual(sorted(t["fileId"] for t in r.body["transactions"]),
                         sorted([f1["fileId"]] * 2 + [f2["fileId"]]))


class ErrorsLeaveDataUnchangedTest(ServerTestCase):
    """Each error status, with its code, and the user's data the same before and after."""

    def setUp(self):
        self.c = self.server.client(unique_user())
        self.account = self.c.create_account("Checking", "USD")
        self.account_id = self.account["accountId"]
        self.file = self.c.upload_ok(self.account_id, "simple.csv", make_csv(SIMPLE_ROWS))
        # Wait for the categorization consumer so nothing moves under the snapshots.
        self.txns = wait_categorized_or_current(self.c, self.file["fileId"])
        self.before = self.c.snapshot()

    def assertUnchanged(self):
        self.assertEqual(self.c.snapshot(), self.before, "an error left a change behind")

    def upload_error(self, status, code, content, filename="s.csv", ctype="text/csv",
                     account_id=None, contains=()):
        blobs_before = len(self.server.blobs_holding(content)) if content else 0
        r = self.c.upload(account_id or self.account_id, filename, content, ctype)
        self.assertError(r, status, code, contains)
        self.assertUnchanged()
        if content:
            wait_until(lambda: len(self.server.blobs_holding(content)) == blobs_before, 5,
                       message="no orphan blob left by a rejected upload")
        return r

    def test_400_invalid_json(self):
        for path, method in (("/accounts", "POST"),
                             ("/transactions/" + self.txns[0]["transactionId"], "PATCH")):
            r = self.c.request(method, path, body=b'{"name": "Broken", ',
                               headers={"Content-Type": "application/json"})
            self.assertError(r, 400, "invalid_json")
        self.assertUnchanged()

    def test_400_invalid_request(self):
        for body in ({"currency": "USD"}, {"name": 5, "currency": "USD"}, {"name": "No currency"},
                     {"name": "x", "currency": 840}):
            self.assertError(self.c.post("/accounts", body), 400, "invalid_request")
        tid = self.txns[0]["transactionId"]
        for body in ({}, {"category": 5}):
            self.assertError(self.c.patch("/transactions/" + tid, body), 400, "invalid_request")
        self.assertUnchanged()

    def test_422_invalid_currency(self):
        for cur in ("US", "DOLLAR", "U5D", ""):
            with self.subTest(currency=cur):
                self.assertError(self.c.post("/accounts", {"name": "Bad", "currency": cur}),
                                 422, "invalid_currency")
        self.assertUnchanged()

    def test_422_invalid_category(self):
        tid = self.txns[0]["transactionId"]
        for cat in ("Bad!Category", "", "x" * 65, "caf\u00e9", "semi;colon"):
            with self.subTest(category=cat):
                self.assertError(self.c.patch("/transactions/" + tid, {"category": cat}),
                                 422, "invalid_category")
        self.assertUnchanged()

    def test_patch_category_valid(self):
        tid = self.txns[1]["transactionId"]
        r = self.c.patch("/transactions/" + tid, {"category": "eating_out 2-go"})
        self.assertStatus(r, 200)
        self.assertEqual(r.body["transactionId"], tid)
        self.assertEqual(r.body["category"], "eating_out 2-go")
        self.assertEqual(set(r.body), TRANSACTION_FIELDS)
        txns = self.c.file_transactions(self.file["fileId"])
        self.assertEqual(txns[1]["category"], "eating_out 2-go")
        self.assertEqual(txns[1]["amount"], self.txns[1]["amount"])
        r = self.c.patch("/transactions/" + tid, {"category": "x" * 64})
        self.assertStatus(r, 200)

    def test_400_invalid_id(self):
        for method, path in (("GET", "/files/not-a-uuid"),
                             ("DELETE", "/files/not-a-uuid"),
                             ("GET", "/files/not-a-uuid/content"),
                             ("GET", "/files/not-a-uuid/transactions"),
                             ("GET", "/files/" + self.file["fileId"] + "x"),
                             ("GET", "/accounts/123"),
                             ("GET", "/coordinations/abc")):
            r = self.c.request(method, path)
            self.assertError(r, 400, "invalid_id")
        r = self.c.patch("/transactions/abc", {"category": "groceries"})
        self.assertError(r, 400, "invalid_id")
        self.assertUnchanged()

    def test_400_invalid_form(self):
        content = make_csv(SIMPLE_ROWS)
        # No accountId field.
        ctype, body = harness.encode_multipart([], [("file", "s.csv", "text/csv", content)])
        self.assertError(self.c.post("/files", body, {"Content-Type": ctype}), 400, "invalid_form")
        # No file part.
        ctype, body = harness.encode_multipart([("accountId", self.account_id)], [])
        self.assertError(self.c.post("/files", body, {"Content-Type": ctype}), 400, "invalid_form")
        # The file under another name.
        ctype, body = harness.encode_multipart([("accountId", self.account_id)],
                                               [("document", "s.csv", "text/csv", content)])
        self.assertError(self.c.post("/files", body, {"Content-Type": ctype}), 400, "invalid_form")
        # No closing delimiter.
        ctype, body = harness.encode_multipart([("accountId", self.account_id)],
                                               [("file", "s.csv", "text/csv", content)])
        truncated = body[:body.rindex(b"\r\n--")]
        self.assertError(self.c.post("/files", truncated, {"Content-Type": ctype}),
                         400, "invalid_form")
        # multipart/form-data without a boundary.
        self.assertError(self.c.post("/files", body, {"Content-Type": "multipart/form-data"}),
                         400, "invalid_form")
        self.assertUnchanged()

    def test_415_unsupported_media_type(self):
        r = self.c.post("/files", {"accountId": self.account_id, "file": "date,amount"})
        self.assertError(r, 415, "unsupported_media_type")
        self.upload_error(415, "unsupported_media_type", PNG_BYTES, "statement.png", "image/png")
        # Binary bytes are not CSV whatever the name and declared type say.
        self.upload_error(415, "unsupported_media_type", PNG_BYTES, "sneaky.csv", "text/csv")

    def test_422_invalid_csv_names_line_and_column(self):
        bad_amount = (b"date,description,amount\n"
                      b"2024-01-01,fine,-1.00\n"
                      b"2024-01-02,bad amount,twelve\n")
        self.upload_error(422, "invalid_csv", bad_amount, contains=("line 3", "column 3"))
        bad_date = (b"date,description,amount\n"
                    b"2024-01-01,fine,-1.00\n"
                    b"2024-01-02,fine,-2.00\n"
                    b"2024-13-45,bad date,-3.00\n")
        self.upload_error(422, "invalid_csv", bad_date, contains=("line 4", "column 1"))
        no_amount_column = b"date,description,value\n2024-01-01,x,1.00\n"
        self.upload_error(422, "invalid_csv", no_amount_column, contains="amount")

    def test_422_empty_file(self):
        self.upload_error(422, "empty_file", b"")

    def test_422_invalid_ofx(self):
        self.upload_error(422, "invalid_ofx", BAD_OFX, "broken.ofx", "application/x-ofx")

    def test_422_unknown_account(self):
        self.upload_error(422, "unknown_account", make_csv(SIMPLE_ROWS), account_id=random_uuid())
        other = self.server.client(unique_user("other"))
        other_account = other.create_account("Theirs", "USD")
        other_before = other.snapshot()
        self.upload_error(422, "unknown_account", make_csv(SIMPLE_ROWS),
                          account_id=other_account["accountId"])
        self.assertEqual(other.snapshot(), other_before)

    def test_422_currency_mismatch(self):
        rows = [("2024-02-01", "fine", "-1.00", "USD", "Shop"),
                ("2024-02-02", "euro row", "-2.00", "EUR", "Shop")]
        self.upload_error(422, "currency_mismatch", make_csv(rows))
        eur = self.c.create_account("Euro", "EUR")
        self.before = self.c.snapshot()
        self.upload_error(422, "currency_mismatch", harness.data_file("statement.ofx"),
                          "statement.ofx", "application/x-ofx", account_id=eur["accountId"])

    def test_404_not_found(self):
        missing = random_uuid()
        for method, path in (("GET", "/files/" + missing),
                             ("DELETE", "/files/" + missing),
                             ("GET", "/files/%s/content" % missing),
                             ("GET", "/files/%s/transactions" % missing),
                             ("GET", "/accounts/" + missing),
                             ("GET", "/coordinations/" + missing),
                             ("GET", "/transactions?accountId=" + missing),
                             ("GET", "/no-such-route")):
            self.assertError(self.c.request(method, path), 404, "not_found")
        self.assertError(self.c.patch("/transactions/" + missing, {"category": "groceries"}),
                         404, "not_found")
        self.assertUnchanged()

    def test_405_method_not_allowed(self):
        fid = self.file["fileId"]
        for method, path, body in (("PUT", "/accounts", {"name": "x", "currency": "USD"}),
                                   ("PUT", "/files/" + fid, {"name": "renamed.csv"}),
                                   ("POST", "/files/" + fid, {"name": "renamed.csv"}),
                                   ("DELETE", "/accounts", None)):
            self.assertError(self.c.request(method, path, body=body), 405, "method_not_allowed")
        self.assertUnchanged()


class UploadLimitTest(ServerTestCase):
    SERVER_ENV = {"LASTCALL_MAX_UPLOAD_BYTES": "4096"}

    def test_413_over_the_limit_and_nothing_stored(self):
        c = self.server.client(unique_user())
        account = c.create_account("Checking", "USD")
        before = c.snapshot()
        big = make_csv(harness.many_rows(400))
        self.assertGreater(len(big), 8192)
        r = c.upload(account["accountId"], "big.csv", big)
        self.assertError(r, 413, "payload_too_large")
        self.assertEqual(c.snapshot(), before)
        small = make_csv(harness.many_rows(5))
        f = c.upload_ok(account["accountId"], "small.csv", small)
        self.assertEqual(f["transactionCount"], 5)


class AuthTest(ServerTestCase):

    def setUp(self):
        self.user = unique_user()
        self.good = self.server.client(self.user)
        self.account = self.good.create_account("Checking", "USD")
        self.before = self.good.snapshot()

    def check_401(self, headers):
        for method, path, body in (("GET", "/accounts", None),
                                   ("GET", "/files", None),
                                   ("GET", "/accounts/" + self.account["accountId"], None),
                                   ("POST", "/accounts", {"name": "Intruder", "currency": "USD"}),
                                   ("DELETE", "/files/" + random_uuid(), None)):
            r = harness.http_request(self.server.port, method, path, body=body, headers=headers)
            self.assertError(r, 401, "unauthorized")
        self.assertEqual(self.good.snapshot(), self.before)

    def test_valid_tokens_work(self):
        # The CLI's token and one crafted here with the same secret are both accepted.
        r = self.good.get("/accounts")
        self.assertStatus(r, 200)
        self.assertEqual(len(r.body["accounts"]), 1)
        r = harness.http_request(self.server.port, "GET", "/accounts",
                                 headers={"Authorization": "Bearer " + self.server.py_token(self.user)})
        self.assertStatus(r, 200)
        self.assertEqual(r.body, self.before["/accounts"])
        # An operator token is a token too.
        op = self.server.token(self.user, role="operator")
        r = harness.http_request(self.server.port, "GET", "/healthz")
        self.assertStatus(r, 200)
        self.assertRegex(op, harness.JWT_RE)

    def test_missing_or_malformed_header(self):
        self.check_401({})
        self.check_401({"Authorization": "Bearer"})
        self.check_401({"Authorization": "Bearer not.a.jwt"})
        self.check_401({"Authorization": "Bearer garbage"})
        self.check_401({"Authorization": "Basic YWxpY2U6c2VjcmV0"})
        self.check_401({"Authorization": self.good.token})  # no scheme

    def test_bad_signature(self):
        forged = make_jwt(self.server.secret, claims_for(self.user), key="not-the-secret")
        self.check_401({"Authorization": "Bearer " + forged})
        # A valid token whose payload was swapped after signing.
        valid = self.server.py_token(self.user)
        other = make_jwt(self.server.secret, claims_for(unique_user()))
        tampered = ".".join([valid.split(".")[0], other.split(".")[1], valid.split(".")[2]])
        self.check_401({"Authorization": "Bearer " + tampered})

    def test_expired(self):
        expired = make_jwt(self.server.secret, claims_for(self.user, ttl_seconds=-3600))
        self.check_401({"Authorization": "Bearer " + expired})
        no_exp = make_jwt(self.server.secret, {"sub": self.user, "iat": int(time.time())})
        self.check_401({"Authorization": "Bearer " + no_exp})

    def test_alg_none(self):
        none = make_jwt(self.server.secret, claims_for(self.user), header={"alg": "none"},
                        sign=False)
        self.check_401({"Authorization": "Bearer " + none})
        none_signed = make_jwt(self.server.secret, claims_for(self.user),
                               header={"alg": "none", "typ": "JWT"})
        self.check_401({"Authorization": "Bearer " + none_signed})
        hs512 = make_jwt(self.server.secret, claims_for(self.user),
                         header={"alg": "HS512", "typ": "JWT"})
        self.check_401({"Authorization": "Bearer " + hs512})

    def test_missing_sub(self):
        now = int(time.time())
        no_sub = make_jwt(self.server.secret, {"iat": now, "exp": now + 3600})
        self.check_401({"Authorization": "Bearer " + no_sub})
        empty_sub = make_jwt(self.server.secret, {"sub": "", "iat": now, "exp": now + 3600})
        self.check_401({"Authorization": "Bearer " + empty_sub})

    def test_healthz_needs_no_token(self):
        r = harness.http_request(self.server.port, "GET", "/healthz")
        self.assertStatus(r, 200)


class IsolationTest(ServerTestCase):
    """Another user's account, file, transaction or coordination is a 404 on every route and
    method, indistinguishable from one that does not exist."""

    def setUp(self):
        self.alice = self.server.client(unique_user("alice"))
        self.bob = self.server.client(unique_user("bob"))
        self.account = self.alice.create_account("Alice", "USD")
        aid = self.account["accountId"]
        self.file = self.alice.upload_ok(aid, "alice.csv", make_csv(SIMPLE_ROWS))
        self.txns = wait_categorized_or_current(self.alice, self.file["fileId"])
        gone = self.alice.upload_ok(aid, "gone.csv", make_csv(SIMPLE_ROWS[:1]))
        wait_categorized_or_current(self.alice, gone["fileId"])
        r = self.alice.delete("/files/" + gone["fileId"])
        self.assertStatus(r, 202)
        self.coordination_id = r.body["coordinationId"]
        self.alice.wait_coordination(self.coordination_id, "completed")
        self.bob_account = self.bob.create_account("Bob", "USD")
        bob_file = self.bob.upload_ok(self.bob_account["accountId"], "bob.csv",
                                      make_csv(SIMPLE_ROWS[1:]))
        # The consumers categorize Bob's rows after the upload: let them, before the snapshot.
        wait_categorized_or_current(self.bob, bob_file["fileId"])
        self.alice_before = self.alice.snapshot()
        self.alice_coordination = self.alice.coordination(self.coordination_id)
        self.bob_before = self.bob.snapshot()

    def assertSame404(self, resp, obj_id, missing_resp, missing_id):
        self.assertError(resp, 404, "not_found")
        self.assertEqual(resp.body["message"].replace(obj_id, "<id>"),
                         missing_resp.body["message"].replace(missing_id, "<id>"),
                         "another user's object must look exactly like a missing one")

    def test_every_route_is_404(self):
        fid = self.file["fileId"]
        aid = self.account["accountId"]
        tid = self.txns[0]["transactionId"]
        cid = self.coordination_id
        missing = random_uuid()
        cases = [
            ("GET", "/files/%s", fid, None),
            ("GET", "/files/%s/content", fid, None),
            ("GET", "/files/%s/transactions", fid, None),
            ("DELETE", "/files/%s", fid, None),
            ("GET", "/accounts/%s", aid, None),
            ("GET", "/transactions?accountId=%s", aid, None),
            ("PATCH", "/transactions/%s", tid, {"category": "stolen"}),
            ("GET", "/coordinations/%s", cid, None),
        ]
        for method, pattern, obj_id, body in cases:
            with self.subTest(method=method, route=pattern):
                r = self.bob.request(method, pattern % obj_id, body=body)
                m = self.bob.request(method, pattern % missing, body=body)
                self.assertSame404(r, obj_id, m, missing)
        # Uploading into Alice's account: the account does not exist for Bob.
        r = self.bob.upload(aid, "x.csv", make_csv(SIMPLE_ROWS))
        self.assertError(r, 422, "unknown_account")

        # Nothing of Alice's changed, nothing of hers shows up in Bob's lists.
        self.assertEqual(self.alice.snapshot(), self.alice_before)
        self.assertEqual(self.alice.coordination(cid), self.alice_coordination)
        r = self.alice.get("/files/" + fid)
        self.assertEqual((r.status, r.body["status"], r.body["coordinationId"]),
                         (200, "active", None))
        self.assertEqual(self.bob.snapshot(), self.bob_before)
        bob_text = repr(self.bob_before)
        for secret_id in (fid, aid, tid, cid):
            self.assertNotIn(secret_id, bob_text)


class SyncDeleteTest(ServerTestCase):
    """ENABLE_EVENT_PUBLISHING=false: the seed's synchronous delete."""
    SERVER_ENV = {"ENABLE_EVENT_PUBLISHING": "false"}

    def setUp(self):
        self.c = self.server.client(unique_user())
        self.account_id = self.c.create_account("Checking", "USD")["accountId"]

    def test_delete_exact_body_and_derived_values(self):
        rows_a = [("2024-09-30", "Latest of all", "-100.25", "USD", "Shop A"),
                  ("2024-09-01", "Earlier", "20.00", "USD", "Shop A"),
                  ("2024-09-02", "Middle", "-3.33", "USD", "Shop A")]
        rows_b = [("2024-08-15", "Other file", "-12.34", "USD", "Shop B"),
                  ("2024-08-20", "Other file 2", "50.00", "USD", "Shop B")]
        content_a = make_csv(rows_a)
        fa = self.c.upload_ok(self.account_id, "a.csv", content_a)
        fb = self.c.upload_ok(self.account_id, "b.csv", make_csv(rows_b))
        both = expected_from_rows([(r[0], r[2]) for r in rows_a + rows_b])
        self.assertAccountDerived(self.c, self.account_id, *both)
        self.assertTrue(self.server.blobs_holding(content_a), "A's content is in the blob store")

        r = self.c.delete("/files/" + fa["fileId"])
        self.assertStatus(r, 200)
        self.assertEqual(r.body, {"message": "File deleted successfully", "fileId": fa["fileId"],
                                  "metadata": {"transactionsDeleted": 3}})

        self.assertAccountDerived(self.c, self.account_id,
                                  *expected_from_rows([(r[0], r[2]) for r in rows_b]))
        for path in ("/files/%s", "/files/%s/content", "/files/%s/transactions"):
            self.assertError(self.c.get(path % fa["fileId"]), 404, "not_found")
        self.assertError(self.c.delete("/files/" + fa["fileId"]), 404, "not_found")
        self.assertEqual([f["fileId"] for f in self.c.get("/files").body["files"]], [fb["fileId"]])
        txns = self.c.get("/transactions?accountId=" + self.account_id).body["transactions"]
        self.assertEqual(sorted(t["description"] for t in txns), ["Other file", "Other file 2"])
        wait_until(lambda: not self.server.blobs_holding(content_a), 5,
                   message="the deleted file's content leaves the blob store")
        r = self.c.get("/files/" + fb["fileId"])
        self.assertEqual((r.status, r.body["status"]), (200, "active"))

        r = self.c.delete("/files/" + fb["fileId"])
        self.assertStatus(r, 200)
        self.assertEqual(r.body["metadata"], {"transactionsDeleted": 2})
        self.assertAccountDerived(self.c, self.account_id, "0.00", 0, None)
        self.assertEqual(self.c.get("/files").body, {"files": []})

    def test_large_file_deleted_completely(self):
        rows = harness.many_rows(3000)
        keep = [("2022-01-01", "Keeper", "1.00", "USD", "K")]
        f = self.c.upload_ok(self.account_id, "large.csv", make_csv(rows))
        self.c.upload_ok(self.account_id, "keep.csv", make_csv(keep))
        self.assertEqual(f["transactionCount"], 3000)
        self.assertEqual(len(self.c.file_transactions(f["fileId"])), 3000)
        r = self.c.delete("/files/" + f["fileId"])
        self.assertStatus(r, 200)
        self.assertEqual(r.body["metadata"], {"transactionsDeleted": 3000})
        self.assertAccountDerived(self.c, self.account_id, "1.00", 1, "2022-01-01")
        txns = self.c.get("/transactions?accountId=" + self.account_id).body["transactions"]
        self.assertEqual(len(txns), 1)


if __name__ == "__main__":
    unittest.main()
