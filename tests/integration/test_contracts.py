"""The API and event contracts (docs/openapi.yaml, docs/asyncapi.yaml) against the real server.

1. The documents are valid: tools/contracts/validate.js runs `redocly lint` (@redocly/cli) on the
   OpenAPI 3.1 document and the AsyncAPI 3.0 parser (@asyncapi/parser) on the AsyncAPI document,
   and the validators are shown to reject broken copies. Nothing is skipped: without the npm
   tools this test fails and says to run `make test`, which installs them.
2. Every response the real `lastcall serve` sends in a full flow (account, CSV upload, reads, a
   category correction, a coordinated delete to completion, the operator's listing and
   timeline), a timeout flow, the synchronous fallback and a series of error responses is
   validated against the schema that docs/openapi.yaml gives for that route, method, status and
   content type, with its required headers. A status the document does not list for the route
   fails. Every documented operation must have been answered with a validated 2xx, and every
   documented path must answer another method with 405 naming exactly the documented methods.
3. Every event the server wrote to its outbox in those flows ($LASTCALL_DATA_DIR/lastcall.db,
   table outbox), rebuilt as the structured CloudEvent (specversion "1.0", datacontenttype
   "application/json"), is validated against the payload schema of the message of the channel
   named by its type in docs/asyncapi.yaml; all four types must have been seen, and so must the
   documented message examples validate.

Needs Python 3 with PyYAML and jsonschema (Debian: python3-yaml, python3-jsonschema), node and
tools/contracts/node_modules (`make test` installs them).
"""

import copy
import json
import os
import re
import shutil
import subprocess
import tempfile
import unittest

import harness
from harness import (DEFAULT_CONSUMERS, Client, Server, make_csv, parse_time, random_uuid,
                     unique_user, wait_until)

try:
    import yaml
except ImportError:  # reported by the tests below, with what to install
    yaml = None
try:
    import jsonschema
except ImportError:
    jsonschema = None

REPO = os.path.abspath(os.path.join(harness.HERE, "..", ".."))
OPENAPI = os.path.join(REPO, "docs", "openapi.yaml")
ASYNCAPI = os.path.join(REPO, "docs", "asyncapi.yaml")
TOOLS = os.path.join(REPO, "tools", "contracts")
TOOLS_BIN = os.path.join(TOOLS, "node_modules", ".bin")
VALIDATE = os.path.join(TOOLS, "validate.js")

INSTALL_HINT = ("run `make test` (it installs the Debian packages and runs `npm ci` in "
                "tools/contracts), or `cd tools/contracts && npm ci`")
CORE_EVENT_TYPES = ["file.uploaded", "file.delete_requested", "consumer.completion", "file.deleted"]
EVENT_TYPES = CORE_EVENT_TYPES + ["file.delete_cancelled", "file.delete_vetoed"]
WITH_AUDIT = "analytics_consumer,categorization_consumer,audit_consumer"

ROWS = [
    ("2024-03-02", "WHOLE FOODS #10", "-61.37", "USD", "Whole Foods"),
    ("2024-03-05", "Uber ride home", "-23.19", "USD", "Uber BV"),
    ("2024-03-28", "Corner Shop purchase", "-8.43", "USD", "Corner Shop"),
    ("2024-04-01", "Monthly Payroll", "3120.55", "USD", "Employer Inc"),
]


def require_python_modules():
    missing = [name for name, mod in (("yaml (Debian: python3-yaml)", yaml),
                                      ("jsonschema (Debian: python3-jsonschema)", jsonschema))
               if mod is None]
    if missing:
        raise AssertionError("missing Python modules: %s; %s" % (", ".join(missing), INSTALL_HINT))


def load_yaml(path):
    require_python_modules()
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)


def format_checker():
    """The formats the documents use, checked the same way on every jsonschema version."""
    checker = jsonschema.FormatChecker(formats=())

    @checker.checks("uuid", raises=(AssertionError, TypeError))
    def _uuid(value):
        return not isinstance(value, str) or bool(harness.UUID_RE.match(value))

    @checker.checks("date-time", raises=(AssertionError, ValueError))
    def _date_time(value):
        if isinstance(value, str):
            parse_time(value)
        return True

    @checker.checks("date", raises=ValueError)
    def _date(value):
        if isinstance(value, str):
            import datetime
            datetime.date.fromisoformat(value)
        return True

    return checker


def schema_errors(validator_cls, schema, components, instance):
    """Errors of instance against schema, whose "#/components/..." refs point into components."""
    root = dict(schema)
    root["components"] = components
    validator = validator_cls(root, format_checker=format_checker())
    # "Unevaluated properties" follows from any failure inside an allOf: list it after the cause.
    errors = sorted(validator.iter_errors(instance),
                    key=lambda e: (e.validator == "unevaluatedProperties",
                                   [str(p) for p in e.absolute_path]))
    out = []
    for e in errors[:8]:
        where = "/".join(str(p) for p in e.absolute_path) or "(root)"
        detail = e.message
        if e.context:
            detail += " [" + "; ".join(sorted({c.message for c in e.context})[:4]) + "]"
        out.append("at %s: %s" % (where, detail[:600]))
    return out


# ---------------------------------------------------------------------------------------------
# OpenAPI: find the operation, response and schema of a real response


class OpenApi(object):
    def __init__(self, path=OPENAPI):
        self.doc = load_yaml(path)
        self.components = self.doc.get("components", {})
        self.routes = []  # (regex, template, path item)
        for template, item in self.doc["paths"].items():
            pattern = "^" + re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template)) + "$"
            literal = "{" not in template
            self.routes.append((re.compile(pattern), template, item, literal))
        # Literal paths win over templates.
        self.routes.sort(key=lambda r: not r[3])
        self.validated = {}  # operationId -> set of statuses validated

    def resolve(self, obj):
        seen = 0
        while isinstance(obj, dict) and "$ref" in obj and len(obj) == 1:
            ref = obj["$ref"]
            assert ref.startswith("#/"), ref
            node = self.doc
            for part in ref[2:].split("/"):
                node = node[part.replace("~1", "/").replace("~0", "~")]
            obj = node
            seen += 1
            assert seen < 20, "reference loop at %s" % ref
        return obj

    def route(self, path):
        for regex, template, item, _ in self.routes:
            if regex.match(path):
                return template, item
        return None, None

    def operations(self):
        for template, item in self.doc["paths"].items():
            for method, op in item.items():
                if method in ("get", "put", "post", "delete", "patch", "head", "options"):
                    yield template, method.upper(), op

    def check(self, method, raw_path, resp):
        """Validates one real response; returns a list of problems (empty when it conforms)."""
        path = raw_path.split("?", 1)[0]
        template, item = self.route(path)
        problems = []
        op = item.get(method.lower()) if item else None
        if op is None:
            # Not an operation: only the generic error answers are possible.
            if template is None and resp.status == 404:
                response = self.resolve({"$ref": "#/components/responses/NotFound"})
            elif template is not None and resp.status == 405:
                response = self.resolve({"$ref": "#/components/responses/MethodNotAllowed"})
            else:
                return ["%s %s answered %d, but the document has no operation %s %s"
                        % (method, raw_path, resp.status, method, template or path)]
            op_id = None
        else:
            op_id = op.get("operationId")
            responses = op.get("responses", {})
            response = responses.get(str(resp.status)) or responses.get("default")
            if response is None:
                return ["%s %s answered %d, which docs/openapi.yaml does not list for %s %s "
                        "(listed: %s); body %r"
                        % (method, raw_path, resp.status, method, template,
                           ", ".join(sorted(responses)), resp.raw[:300])]
            response = self.resolve(response)

        # Headers the document marks as required, and the schemas of the ones present.
        for name, header in (response.get("headers") or {}).items():
            header = self.resolve(header)
            value = resp.headers.get(name.lower())
            if value is None:
                if header.get("required"):
                    problems.append("required header %s missing" % name)
                continue
            if "schema" in header:
                errs = schema_errors(jsonschema.Draft202012Validator, header["schema"],
                                     self.components, value)
                problems.extend("header %s=%r %s" % (name, value, e) for e in errs)

        content = response.get("content") or {}
        ctype = resp.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        media = None
        for mt, obj in content.items():
            if mt.lower() == ctype or mt == "*/*" or (mt.endswith("/*") and ctype.startswith(mt[:-1])):
                media = obj
                break
        if content and media is None:
            problems.append("content type %r is not one of the documented %s"
                            % (ctype, ", ".join(sorted(content))))
        elif media is not None and ctype == "application/json":
            if isinstance(resp.body, (bytes, bytearray)):
                problems.append("body is not JSON: %r" % resp.raw[:200])
            elif "schema" in media:
                errs = schema_errors(jsonschema.Draft202012Validator, media["schema"],
                                     self.components, resp.body)
                problems.extend(errs)
        if problems:
            return ["%s %s -> %d does not match docs/openapi.yaml (%s %s, response %d): %s\n"
                    "  body: %s" % (method, raw_path, resp.status, method, template, resp.status,
                                    "; ".join(problems), resp.raw[:800])]
        if op_id:
            self.validated.setdefault(op_id, set()).add(resp.status)
        return []


class CheckedClient(Client):
    """A harness Client whose every response is validated against docs/openapi.yaml."""

    def __init__(self, server, token, spec, failures):
        Client.__init__(self, server, token)
        self.spec = spec
        self.failures = failures

    def request(self, method, path, body=None, headers=None, raw=False):
        resp = Client.request(self, method, path, body=body, headers=headers, raw=raw)
        # raw responses are parsed here for validation; the caller still gets the raw body.
        checked = resp
        if raw and "json" in resp.headers.get("content-type", ""):
            try:
                checked = harness.Response(resp.status, resp.headers, json.loads(resp.raw), resp.raw)
            except ValueError:
                pass
        problems = self.spec.check(method, path, checked)
        if problems:
            self.failures.extend(problems)
            raise AssertionError("\n".join(problems))
        return resp


# ---------------------------------------------------------------------------------------------
# AsyncAPI: the message of each channel


class AsyncApi(object):
    def __init__(self, path=ASYNCAPI):
        self.doc = load_yaml(path)
        self.components = self.doc.get("components", {})

    def resolve(self, obj):
        while isinstance(obj, dict) and "$ref" in obj:
            node = self.doc
            for part in obj["$ref"][2:].split("/"):
                node = node[part]
            obj = node
        return obj

    def messages_for(self, event_type):
        channel = self.doc.get("channels", {}).get(event_type)
        if channel is None:
            return None
        return [self.resolve(m) for m in (channel.get("messages") or {}).values()]

    def event_errors(self, event):
        messages = self.messages_for(event["type"])
        if not messages:
            return ["event type %r has no channel with a message in docs/asyncapi.yaml"
                    % event["type"]]
        best = None
        for m in messages:
            errs = schema_errors(jsonschema.Draft7Validator, self.resolve(m["payload"]),
                                 self.components, event)
            if not errs:
                return []
            best = best or errs
        return best


def cloud_event(row):
    """The structured CloudEvent of one outbox row."""
    return {"specversion": "1.0", "id": row["id"], "source": row["source"], "type": row["type"],
            "subject": row["subject"], "time": row["time"], "datacontenttype": "application/json",
            "data": row["data"]}


# ---------------------------------------------------------------------------------------------


class ValidatorsTest(unittest.TestCase):
    """The npm validators accept the documents and reject broken ones."""

    def run_validate(self, *paths):
        node = shutil.which("node")
        if node is None:
            self.fail("node is not installed: " + INSTALL_HINT)
        for tool in ("redocly",):
            if not os.path.exists(os.path.join(TOOLS_BIN, tool)):
                self.fail("%s is missing from %s: %s" % (tool, TOOLS_BIN, INSTALL_HINT))
        if not os.path.isdir(os.path.join(TOOLS, "node_modules", "@asyncapi", "parser")):
            self.fail("@asyncapi/parser is missing from tools/contracts/node_modules: "
                      + INSTALL_HINT)
        p = subprocess.run([node, VALIDATE] + list(paths), cwd=TOOLS, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=300)
        return p.returncode, p.stdout.decode(errors="replace")

    def test_documents_are_valid(self):
        rc, out = self.run_validate()
        self.assertEqual(rc, 0, "tools/contracts/validate.js failed:\n" + out)
        self.assertIn("openapi: docs/openapi.yaml is valid", out)
        self.assertIn("asyncapi: docs/asyncapi.yaml is valid (AsyncAPI 3.0.0", out)

    def test_validators_reject_broken_documents(self):
        openapi = load_yaml(OPENAPI)
        asyncapi = load_yaml(ASYNCAPI)
        bad_openapi = copy.deepcopy(openapi)
        # A dangling reference and an operation without responses.
        bad_openapi["paths"]["/accounts"]["get"]["responses"]["200"]["content"][
            "application/json"]["schema"] = {"$ref": "#/components/schemas/NoSuchSchema"}
        del bad_openapi["paths"]["/healthz"]["get"]["responses"]
        bad_asyncapi = copy.deepcopy(asyncapi)
        # An example that does not match its payload schema.
        ex = bad_asyncapi["components"]["messages"]["fileDeleted"]["examples"][0]["payload"]
        ex["data"]["transactionsDeleted"] = "five"
        with tempfile.TemporaryDirectory(prefix="lastcall-contracts-") as d:
            good_o, good_a = os.path.join(d, "openapi.yaml"), os.path.join(d, "asyncapi.yaml")
            bad_o, bad_a = os.path.join(d, "bad-openapi.yaml"), os.path.join(d, "bad-asyncapi.yaml")
            for path, doc in ((good_o, openapi), (good_a, asyncapi), (bad_o, bad_openapi),
                              (bad_a, bad_asyncapi)):
                with open(path, "w", encoding="utf-8") as f:
                    yaml.safe_dump(doc, f, sort_keys=False, allow_unicode=True)
            rc, out = self.run_validate(bad_o, good_a)
            self.assertNotEqual(rc, 0, "redocly accepted a broken OpenAPI document:\n" + out)
            self.assertIn("NoSuchSchema", out)
            rc, out = self.run_validate(good_o, bad_a)
            self.assertNotEqual(rc, 0, "a broken AsyncAPI example was accepted:\n" + out)
            self.assertIn("transactionsDeleted", out)

    def test_asyncapi_names_every_event_type(self):
        doc = load_yaml(ASYNCAPI)
        self.assertEqual(doc["asyncapi"], "3.0.0")
        self.assertEqual(sorted(doc["channels"]), sorted(EVENT_TYPES))
        for t in EVENT_TYPES:
            self.assertEqual(doc["channels"][t]["address"], "lastcall.events." + t)
        spec = AsyncApi()
        for t in EVENT_TYPES:
            for m in spec.messages_for(t):
                for ex in m.get("examples", []):
                    self.assertEqual(spec.event_errors(ex["payload"]), [],
                                     "example %s of %s" % (ex.get("name"), t))

    def test_openapi_documents_the_contract(self):
        doc = load_yaml(OPENAPI)
        self.assertEqual(doc["openapi"], "3.1.0")
        expected = {
            ("/healthz", "GET"), ("/metrics", "GET"), ("/accounts", "GET"), ("/accounts", "POST"),
            ("/accounts/{accountId}", "GET"), ("/files", "GET"), ("/files", "POST"),
            ("/files/{fileId}", "GET"), ("/files/{fileId}", "DELETE"),
            ("/files/{fileId}/content", "GET"), ("/files/{fileId}/transactions", "GET"),
            ("/transactions", "GET"), ("/transactions/{transactionId}", "GET"),
            ("/transactions/{transactionId}", "PATCH"), ("/coordinations", "GET"),
            ("/coordinations/{coordinationId}", "GET"),
            ("/coordinations/{coordinationId}/timeline", "GET"),
            ("/coordinations/{coordinationId}/cancel", "POST"),
            ("/coordinations/{coordinationId}/override", "POST"),
            ("/coordinations/{coordinationId}/receipt", "GET"), ("/.well-known/jwks.json", "GET"),
            ("/holds", "GET"), ("/holds", "POST"), ("/holds/{holdId}", "DELETE"),
            ("/analytics/monthly", "GET"),
            ("/analytics/archive", "GET"), ("/categorization/mappings", "GET"),
            ("/dashboard", "GET"), ("/dashboard/app.js", "GET"), ("/dashboard/app.css", "GET"),
            ("/dashboard/favicon.svg", "GET"),
            ("/coordinations/{coordinationId}/completions", "POST"), ("/consumers", "GET"),
            ("/consumers", "POST"), ("/consumers/{name}", "DELETE"),
            ("/consumers/{name}/heartbeat", "POST"), ("/consumers/{name}/rotate-secret", "POST"),
            ("/dlq", "GET"), ("/dlq/{deadLetterId}/replay", "POST"),
        }
        documented = {(t, m) for t, m, _ in OpenApi().operations()}
        self.assertEqual(documented, expected)
        self.assertEqual(doc["components"]["securitySchemes"]["bearerAuth"],
                         {**doc["components"]["securitySchemes"]["bearerAuth"],
                          "type": "http", "scheme": "bearer", "bearerFormat": "JWT"})
        error = doc["components"]["schemas"]["Error"]
        self.assertEqual(error["required"], ["error", "message"])
        self.assertIs(error["additionalProperties"], False)
        public = {t for t, m, op in OpenApi().operations() if op.get("security") == []}
        self.assertEqual(public, {"/healthz", "/metrics", "/dashboard", "/dashboard/app.js",
                                  "/dashboard/app.css", "/dashboard/favicon.svg",
                                  "/.well-known/jwks.json"})


class LiveContractTest(harness.ServerPool, harness.Assertions, unittest.TestCase):
    """Real responses and real events against the documents."""

    servers = []

    @classmethod
    def setUpClass(cls):
        require_python_modules()
        cls.openapi = OpenApi()
        cls.asyncapi = AsyncApi()
        cls.failures = []

    def client(self, server, user=None, token=None, role=None):
        if token is None and user is not None:
            token = server.token(user, role=role)
        return CheckedClient(server, token, self.openapi, self.failures)

    def check_events(self, server, expect_types):
        rows = server.outbox()
        self.assertTrue(rows, "no events in the outbox")
        problems = []
        for row in rows:
            event = cloud_event(row)
            for e in self.asyncapi.event_errors(event):
                problems.append("event seq %s type %s: %s\n  event: %s"
                                % (row["seq"], row["type"], e, json.dumps(event)[:800]))
        self.assertEqual(problems, [], "events that do not match docs/asyncapi.yaml:\n"
                         + "\n".join(problems))
        seen = {r["type"] for r in rows}
        self.assertTrue(set(expect_types) <= seen, "event types seen: %s" % sorted(seen))
        return rows

    # -- the flows

    def upload_and_delete(self, c, account_id, rows=ROWS):
        f = c.upload_ok(account_id, "statement.csv", make_csv(rows))
        c.wait_categorized(f["fileId"])
        r = c.delete("/files/" + f["fileId"])
        self.assertStatus(r, 202)
        return f, r.body["coordinationId"]

    def flow_full(self):
        server = self.start()
        anon = self.client(server)
        user = unique_user("alice")
        other = unique_user("bob")
        c = self.client(server, user)
        bob = self.client(server, other)
        op = self.client(server, unique_user("oncall"), role="operator")

        # Public routes.
        self.assertStatus(anon.get("/healthz"), 200)
        m = anon.get("/metrics", raw=True)
        self.assertStatus(m, 200)
        self.assertIn(b"lastcall_coordinations_started_total", m.raw)
        for path in ("/dashboard", "/dashboard/app.js", "/dashboard/app.css",
                     "/dashboard/favicon.svg"):
            self.assertStatus(anon.get(path, raw=True), 200)
        self.assertError(anon.get("/dashboard/no-such-file.js"), 404, "not_found")

        # Accounts, upload, reads, a correction.
        acct = c.create_account("Checking", "USD")
        self.assertStatus(c.get("/accounts"), 200)
        self.assertStatus(c.get("/accounts/" + acct["accountId"]), 200)
        f = c.upload_ok(acct["accountId"], "statement.csv", make_csv(ROWS))
        txns = c.wait_categorized(f["fileId"])
        self.assertStatus(c.get("/files"), 200)
        self.assertStatus(c.get("/files/" + f["fileId"]), 200)
        self.assertStatus(c.get("/files/%s/content" % f["fileId"], raw=True), 200)
        self.assertStatus(c.get("/transactions"), 200)
        self.assertStatus(c.get("/transactions?accountId=" + acct["accountId"]), 200)
        self.assertStatus(c.get("/transactions/" + txns[2]["transactionId"]), 200)
        self.assertStatus(c.patch("/transactions/" + txns[2]["transactionId"],
                                  {"category": "dining"}), 200)
        self.assertStatus(c.get("/analytics/monthly"), 200)

        # The coordinated delete to completion.
        r = c.delete("/files/" + f["fileId"])
        self.assertStatus(r, 202)
        cid = r.body["coordinationId"]
        again = c.delete("/files/" + f["fileId"])
        if again.status == 202:
            self.assertEqual(again.body["coordinationId"], cid)
        else:
            self.assertStatus(again, 404)  # it may already be gone
        done = c.wait_coordination(cid, "completed")
        self.assertEqual(done["outcome"], "all_completed")
        tl = c.get("/coordinations/%s/timeline" % cid)
        self.assertStatus(tl, 200)
        kinds = [e["kind"] for e in tl.body["entries"]]
        self.assertEqual(kinds[0], "requested")
        # The verification step may follow the deletion between the two reads (as in the dashboard
        # test): the deletion's last step is "deleted", with at most "verified" after it.
        self.assertEqual([k for k in kinds if k != "verified"][-1], "deleted")
        self.assertStatus(c.get("/files/" + f["fileId"]), 404)
        self.assertStatus(c.get("/analytics/archive"), 200)
        maps = c.get("/categorization/mappings")
        self.assertStatus(maps, 200)
        self.assertTrue(maps.body["mappings"], "the correction was not learned")

        # Listings: the user's own, an operator's, filters and pagination.
        mine = c.get("/coordinations")
        self.assertStatus(mine, 200)
        self.assertEqual([x["coordinationId"] for x in mine.body["coordinations"]], [cid])
        self.assertEqual(mine.body["coordinations"][0]["userId"], user)
        self.assertStatus(bob.get("/coordinations"), 200)
        self.assertEqual(bob.get("/coordinations").body["coordinations"], [])
        for q in ("status=completed", "outcome=all_completed", "status=waiting",
                  "consumer=analytics_consumer", "limit=500"):
            self.assertStatus(op.get("/coordinations?" + q), 200)
        self.assertStatus(op.get("/coordinations/" + cid), 200)
        self.assertStatus(op.get("/coordinations/%s/timeline" % cid), 200)
        # A second coordination, so that limit=1 pages.
        _, cid2 = self.upload_and_delete(c, acct["accountId"])
        c.wait_coordination(cid2, "completed")
        page1 = op.get("/coordinations?limit=1")
        self.assertStatus(page1, 200)
        self.assertEqual(len(page1.body["coordinations"]), 1)
        self.assertIsInstance(page1.body["nextCursor"], str)
        page2 = op.get("/coordinations?limit=1&cursor=" + page1.body["nextCursor"])
        self.assertStatus(page2, 200)
        self.assertEqual({page1.body["coordinations"][0]["coordinationId"],
                          page2.body["coordinations"][0]["coordinationId"]}, {cid, cid2})

        # Errors, each validated against the route's documented response.
        self.assertError(anon.get("/accounts"), 401, "unauthorized")
        expired = self.client(server, token=server.py_token(user, ttl_seconds=-3600))
        self.assertError(expired.get("/files"), 401, "unauthorized")
        self.assertError(c.get("/files/not-a-uuid"), 400, "invalid_id")
        self.assertError(c.get("/transactions?accountId=nope"), 400, "invalid_id")
        self.assertError(c.post("/accounts", b"{", headers={"Content-Type": "application/json"}),
                         400, "invalid_json")
        self.assertError(c.post("/accounts", {"currency": "USD"}), 400, "invalid_request")
        self.assertError(c.post("/accounts", {"name": "X", "currency": "usd"}), 422,
                         "invalid_currency")
        self.assertError(c.get("/files/" + random_uuid()), 404, "not_found")
        self.assertError(c.get("/accounts/" + random_uuid()), 404, "not_found")
        self.assertError(c.get("/coordinations/" + random_uuid()), 404, "not_found")
        self.assertError(bob.get("/coordinations/" + cid), 404, "not_found")
        self.assertError(bob.get("/coordinations/%s/timeline" % cid), 404, "not_found")
        self.assertError(c.get("/no/such/route"), 404, "not_found")
        r = c.put("/accounts", {"name": "X"})
        self.assertError(r, 405, "method_not_allowed")
        self.assertError(c.post("/files", {"accountId": acct["accountId"]}), 415,
                         "unsupported_media_type")
        self.assertError(c.upload(acct["accountId"], "bad.csv",
                                  b"date,description,amount\n2024-13-01,x,1.00\n"), 422,
                         "invalid_csv")
        self.assertError(c.upload(random_uuid(), "s.csv", make_csv(ROWS)), 422, "unknown_account")
        self.assertError(c.upload(acct["accountId"], "s.csv", make_csv(ROWS),
                                  fields=[("other", "x")]), 400, "invalid_form")
        self.assertError(c.patch("/transactions/" + txns[0]["transactionId"],
                                 {"category": "travel"}), 404, "not_found")  # its file is gone
        f3 = c.upload_ok(acct["accountId"], "third.csv", make_csv(ROWS[:1]))
        t3 = c.file_transactions(f3["fileId"])[0]
        self.assertError(c.patch("/transactions/" + t3["transactionId"], {"category": "Not Valid!"}),
                         422, "invalid_category")
        self.assertError(c.patch("/transactions/" + t3["transactionId"], {"category": 7}),
                         400, "invalid_request")
        for q in ("status=bogus", "outcome=waiting", "limit=0", "limit=501", "limit=x",
                  "cursor=garbage", "colour=blue"):
            self.assertError(op.get("/coordinations?" + q), 400, "invalid_request")
        self.assertError(c.delete("/files/" + random_uuid()), 404, "not_found")

        self.check_events(server, CORE_EVENT_TYPES)

    def flow_lifecycle(self):
        """Cancel, legal holds, verification and receipts."""
        server = self.start({"DELETION_GRACE_MINUTES": "0.03"})
        anon = self.client(server)
        user = unique_user("gina")
        c = self.client(server, user)
        op = self.client(server, unique_user("legal"), role="operator")
        acct = c.create_account("Checking", "USD")
        f, cid = self.upload_and_delete(c, acct["accountId"])
        cancelled = c.post("/coordinations/%s/cancel" % cid)
        self.assertStatus(cancelled, 200)
        self.assertEqual(cancelled.body["status"], "cancelled")
        self.assertError(c.get("/coordinations/%s/receipt" % cid), 409, "receipt_not_ready")
        self.assertStatus(c.get("/coordinations?status=cancelled"), 200)

        self.assertStatus(op.get("/holds"), 200)
        hold = op.post("/holds", {"fileId": f["fileId"], "reason": "contract test hold"})
        self.assertStatus(hold, 201)
        self.assertError(c.get("/holds"), 403, "forbidden")
        self.assertError(op.post("/holds", {"reason": "no target"}), 400, "invalid_request")
        r = c.delete("/files/" + f["fileId"])
        self.assertStatus(r, 202)
        cid2 = r.body["coordinationId"]
        held = c.get("/coordinations/" + cid2)
        self.assertStatus(held, 200)
        self.assertEqual(held.body["status"], "held")
        self.assertStatus(op.get("/coordinations?status=held"), 200)
        self.assertStatus(op.get("/holds?active=true"), 200)
        self.assertStatus(op.delete("/holds/" + hold.body["holdId"]), 200)
        self.assertError(op.delete("/holds/" + random_uuid()), 404, "not_found")
        c.wait_coordination(cid2, "completed", timeout=20)
        wait_until(lambda: c.get("/coordinations/" + cid2).body["verification"], 10,
                   message="verification")
        self.assertError(c.post("/coordinations/%s/cancel" % cid2), 409, "deletion_started")
        self.assertStatus(c.get("/coordinations/%s/timeline" % cid2), 200)
        self.assertStatus(c.get("/coordinations/%s/receipt" % cid2), 200)
        self.assertStatus(anon.get("/.well-known/jwks.json"), 200)
        self.check_events(server, ["file.delete_cancelled", "file.deleted"])

    def flow_timeout(self):
        server = self.start({"EXPECTED_CONSUMERS": WITH_AUDIT,
                             "COORDINATION_TIMEOUT_MINUTES": "0.02"})
        c = self.client(server, unique_user("carol"))
        acct = c.create_account("Savings", "USD")
        f, cid = self.upload_and_delete(c, acct["accountId"])
        waiting = c.get("/coordinations/" + cid)
        self.assertStatus(waiting, 200)
        self.assertStatus(c.get("/coordinations?status=waiting"), 200)
        self.assertStatus(c.get("/coordinations?consumer=audit_consumer"), 200)
        done = c.wait_coordination(cid, "completed", timeout=20)
        self.assertEqual(done["outcome"], "timed_out")
        by_name = {x["name"]: x for x in done["consumers"]}
        self.assertEqual(by_name["audit_consumer"]["status"], "pending")
        tl = c.get("/coordinations/%s/timeline" % cid)
        self.assertStatus(tl, 200)
        timeouts = [e for e in tl.body["entries"] if e["kind"] == "timeout"]
        self.assertEqual([e["detail"]["missingConsumers"] for e in timeouts], [["audit_consumer"]])
        self.assertStatus(c.get("/coordinations?outcome=timed_out"), 200)
        rows = self.check_events(server, CORE_EVENT_TYPES)
        deleted = [r for r in rows if r["type"] == "file.deleted"]
        self.assertEqual(deleted[-1]["data"]["missingConsumers"], ["audit_consumer"])

    def flow_synchronous(self):
        server = self.start({"ENABLE_EVENT_PUBLISHING": "false"})
        c = self.client(server, unique_user("dave"))
        acct = c.create_account("Cash", "EUR")
        f = c.upload_ok(acct["accountId"], "eur.csv",
                        make_csv([("2024-01-02", "Bakery", "-3.50", "EUR", "Bakery")]))
        r = c.delete("/files/" + f["fileId"])
        self.assertStatus(r, 200)
        self.assertEqual(r.body["metadata"]["transactionsDeleted"], 1)
        self.check_events(server, ["file.uploaded"])

    def flow_upload_limit(self):
        server = self.start({"LASTCALL_MAX_UPLOAD_BYTES": "2048"})
        c = self.client(server, unique_user("erin"))
        acct = c.create_account("Big", "USD")
        big = make_csv([("2024-01-01", "Row %d" % i, "1.00", "USD", "Shop") for i in range(200)])
        self.assertGreater(len(big), 2048)
        self.assertError(c.upload(acct["accountId"], "big.csv", big), 413, "payload_too_large")

    def flow_webhooks(self):
        """A webhook consumer registered, expected, completing by API; health, heartbeat,
        rotation, the dead letter queue and its replay, deregistration."""
        server = self.start({"LASTCALL_WEBHOOK_BACKOFF_BASE_MS": "10",
                             "LASTCALL_WEBHOOK_BACKOFF_CAP_MS": "20",
                             "LASTCALL_WEBHOOK_MAX_ATTEMPTS": "2",
                             "LASTCALL_WEBHOOK_TIMEOUT_MS": "300"})
        op = self.client(server, unique_user("ops"), role="operator")
        c = self.client(server, unique_user("gina"))
        name = "billing_%s" % random_uuid()[:8]
        reg = op.post("/consumers", {"name": name, "url": "http://127.0.0.1:%d/hook"
                                     % harness.free_port(), "priority": "optional",
                                     "timeoutMinutes": 1, "heartbeatSeconds": 600})
        self.assertStatus(reg, 201)
        self.assertError(op.post("/consumers", {"name": name, "url": "http://x/",
                                                "priority": "critical", "timeoutMinutes": 1,
                                                "heartbeatSeconds": 1}), 409, "consumer_exists")
        self.assertError(op.post("/consumers", {"name": "x"}), 400, "invalid_request")
        self.assertError(c.get("/consumers"), 403, "forbidden")
        me = self.client(server, token=reg.body["token"])
        self.assertStatus(me.post("/consumers/%s/heartbeat" % name, {}), 200)
        acct = c.create_account("Webhooks", "USD")
        f, cid = self.upload_and_delete(c, acct["accountId"])
        self.assertIn(name, c.get("/coordinations/" + cid).body["expectedConsumers"])
        path = "/coordinations/%s/completions" % cid
        self.assertError(me.post(path, {"consumer": "someone_else", "status": "completed"}), 403,
                         "forbidden")
        self.assertError(me.post(path, {"consumer": name, "status": "maybe"}), 422,
                         "invalid_status")
        self.assertStatus(me.post(path, {"consumer": name, "status": "completed",
                                         "detail": {"rows": 4}}), 202)
        done = c.wait_coordination(cid, "completed")
        self.assertEqual(done["outcome"], "all_completed")
        self.assertStatus(me.post(path, {"consumer": name, "status": "completed"}), 200)
        # Nobody listens at the URL: the delivery is dead-lettered after two attempts.
        letters = wait_until(lambda: op.get("/dlq?target=" + name).body["deadLetters"], 10,
                             message="dead letter")
        self.assertStatus(op.get("/dlq?target=%s&replayed=false&limit=5" % name), 200)
        self.assertStatus(op.post("/dlq/%s/replay" % letters[0]["id"], {}), 202)
        self.assertError(op.post("/dlq/%s/replay" % letters[0]["id"], {}), 409, "already_replayed")
        self.assertStatus(op.get("/consumers"), 200)
        self.assertStatus(op.post("/consumers/%s/rotate-secret" % name,
                                  {"previousSecretValidSeconds": 60}), 200)
        self.assertStatus(op.delete("/consumers/" + name), 200)
        self.assertError(op.delete("/consumers/" + name), 404, "not_found")

    def flow_veto(self):
        """A consumer with the right to veto vetoes by API; the owner sees it; an operator
        overrides it; the deletion, its timeline, receipt and events match the documents."""
        server = self.start()
        op = self.client(server, unique_user("ops"), role="operator")
        c = self.client(server, unique_user("hana"))
        name = "legal_%s" % random_uuid()[:8]
        reg = op.post("/consumers", {"name": name, "url": "http://127.0.0.1:%d/hook"
                                     % harness.free_port(), "priority": "critical",
                                     "timeoutMinutes": 1, "heartbeatSeconds": 600,
                                     "canVeto": True})
        self.assertStatus(reg, 201)
        me = self.client(server, token=reg.body["token"])
        acct = c.create_account("Vetoes", "USD")
        f, cid = self.upload_and_delete(c, acct["accountId"])
        path = "/coordinations/%s/completions" % cid
        self.assertError(me.post(path, {"consumer": name, "status": "veto"}), 400,
                         "invalid_request")
        self.assertError(op.post("/coordinations/%s/override" % cid, {}), 409, "not_vetoed")
        vetoed = me.post(path, {"consumer": name, "status": "veto", "reason": "legal review",
                                "detail": {"ticket": "L-1"}})
        self.assertStatus(vetoed, 200)
        self.assertEqual(vetoed.body["coordinationStatus"], "vetoed")
        self.assertStatus(me.post(path, {"consumer": name, "status": "veto", "reason": "again"}),
                          200)
        co = c.get("/coordinations/" + cid)
        self.assertStatus(co, 200)
        self.assertEqual(co.body["veto"]["reason"], "legal review")
        self.assertStatus(op.get("/coordinations?status=vetoed"), 200)
        self.assertError(c.post("/coordinations/%s/override" % cid, {}), 403, "forbidden")
        over = op.post("/coordinations/%s/override" % cid, {"reason": "cleared"})
        self.assertStatus(over, 200)
        c.wait_coordination(cid, "completed", timeout=20)
        wait_until(lambda: c.get("/coordinations/" + cid).body["verification"], 10,
                   message="verification")
        self.assertStatus(c.get("/coordinations/%s/timeline" % cid), 200)
        receipt = c.get("/coordinations/%s/receipt" % cid)
        self.assertStatus(receipt, 200)
        self.assertEqual(receipt.body["claims"]["override"]["reason"], "cleared")
        self.check_events(server, ["file.delete_vetoed", "file.deleted"])
        self.assertStatus(op.delete("/consumers/" + name), 200)

    def test_responses_and_events_match_the_documents(self):
        """The flows, then: every documented operation was answered with a validated 2xx."""
        for name in ("flow_full", "flow_lifecycle", "flow_timeout", "flow_synchronous",
                     "flow_upload_limit", "flow_webhooks", "flow_veto"):
            with self.subTest(flow=name):
                getattr(self, name)()
        missing = []
        for template, method, op in self.openapi.operations():
            statuses = self.openapi.validated.get(op["operationId"], set())
            if not any(200 <= s < 300 for s in statuses):
                missing.append("%s %s (%s)" % (method, template, op["operationId"]))
        self.assertEqual(missing, [], "operations never answered with a validated 2xx "
                         "(validated: %r)" % self.openapi.validated)
        self.assertEqual(self.failures, [])

    def test_every_documented_path_answers_its_methods(self):
        """Another method on each documented path is 405, and `Allow` (when sent) names exactly
        the documented methods: a method added in the code and not here fails."""
        server = self.start()
        c = self.client(server, unique_user("frank"))
        ids = {"accountId": random_uuid(), "fileId": random_uuid(),
               "transactionId": random_uuid(), "coordinationId": random_uuid(),
               "holdId": random_uuid(), "name": "some_consumer",
               "deadLetterId": random_uuid()}
        for template, item in self.openapi.doc["paths"].items():
            path = re.sub(r"\{(\w+)\}", lambda m: ids[m.group(1)], template)
            documented = sorted(m.upper() for m in item if m in ("get", "post", "put", "patch",
                                                                 "delete", "head", "options"))
            other = "PUT" if "PUT" not in documented else "POST"
            r = c.request(other, path)
            self.assertError(r, 405, "method_not_allowed")
            if "allow" in r.headers:
                self.assertEqual(sorted(a.strip() for a in r.headers["allow"].split(",")),
                                 documented, "Allow of %s" % template)


if __name__ == "__main__":
    unittest.main()
