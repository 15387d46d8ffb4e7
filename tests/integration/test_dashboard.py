"""The live dashboard (issue 4) in a real browser, against the real `lastcall serve`.

Headless Chromium (Debian's package `chromium`) is driven with playwright-core through
tests/integration/browser/dashboard.js, one JSON command per line. The tests sign in with an
operator token, DELETE a file over HTTP from here, and watch its coordination appear in flight
(slow_consumer pending, a deadline counting down), then finish timed out with slow_consumer
missing, and open its timeline; they save a screenshot (DASHBOARD_SCREENSHOT, default
<repo>/build/dashboard.png). A user token sees only that user's coordinations; text from the data
never becomes markup; the page polls nothing while the tab is hidden, breaks no
Content-Security-Policy rule and asks no other host for anything.

The browser and playwright-core are set up by `make test`; when they are missing these tests fail
(they never skip) and say so.
"""

import json
import os
import queue
import shutil
import subprocess
import tempfile
import threading
import time
import unittest

import harness
from harness import Server, make_csv, make_jwt, claims_for, unique_user, wait_until

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
BROWSER_DIR = os.path.join(HERE, "browser")
SCRIPT = os.path.join(BROWSER_DIR, "dashboard.js")
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
SCREENSHOT = os.environ.get("DASHBOARD_SCREENSHOT", os.path.join(REPO, "build", "dashboard.png"))

SLOW = "slow_consumer"
FAST = ["analytics_consumer", "categorization_consumer"]
SERVER_ENV = {
    "EXPECTED_CONSUMERS": ",".join(FAST + [SLOW]),  # slow_consumer never answers
    "COORDINATION_TIMEOUT_MINUTES": "0.15",          # 9 s in flight, then timed_out
}
TIMEOUT_S = 9.0

ROWS = [
    ("2024-05-02", "Grocer weekly", "-52.10", "USD", "Grocer"),
    ("2024-05-03", "Payroll", "2400.00", "USD", "Employer Inc"),
    ("2024-05-07", "Bus pass", "-30.00", "USD", "City Transit"),
]

# What a hostile user id looks like (a token's "sub" is any string up to 128 bytes).
HOSTILE_SUB = '<img src=x onerror="window.__pwned=1" data-injected>'

SETUP_HINT = ("`make test` installs them: the Debian packages chromium and nodejs (with npm), and "
              "`npm ci` in tests/integration/browser")


def require_browser():
    """Fails (never skips) when the browser, node or playwright-core is missing."""
    problems = []
    if not os.access(CHROMIUM, os.X_OK):
        problems.append("no Chromium at %s" % CHROMIUM)
    if not shutil.which("node"):
        problems.append("no `node` on PATH")
    if not os.path.exists(os.path.join(BROWSER_DIR, "node_modules", "playwright-core", "package.json")):
        problems.append("no %s" % os.path.join(BROWSER_DIR, "node_modules", "playwright-core"))
    if problems:
        raise AssertionError("the dashboard's browser test cannot run: %s. %s."
                             % ("; ".join(problems), SETUP_HINT))


class Browser(object):
    """One dashboard.js process (one headless Chromium with one page)."""

    def __init__(self, base_url, tokens, log_dir):
        env = dict(os.environ)
        env["DASHBOARD_TOKENS"] = json.dumps(tokens)
        env["CHROMIUM"] = CHROMIUM
        self.stderr_path = os.path.join(log_dir, "dashboard-js.%d.log" % int(time.time() * 1000))
        self._stderr = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(["node", SCRIPT, base_url], cwd=BROWSER_DIR, env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self._stderr)
        self.lines = queue.Queue()
        self.next_id = 0
        threading.Thread(target=self._read, daemon=True).start()
        ready = self._line(60)
        if ready.get("event") != "ready":
            raise AssertionError("dashboard.js did not start: %r\n%s" % (ready, self.stderr_tail()))
        self.version = ready.get("browserVersion")

    def _read(self):
        for raw in self.proc.stdout:
            try:
                self.lines.put(json.loads(raw.decode()))
            except ValueError:
                self.lines.put({"event": "garbage", "line": raw.decode(errors="replace")})
        self.lines.put(None)

    def _line(self, timeout):
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError("dashboard.js said nothing for %.0f s\n%s" % (timeout, self.stderr_tail()))
        if line is None:
            raise AssertionError("dashboard.js exited (%s)\n%s" % (self.proc.poll(), self.stderr_tail()))
        return line

    def stderr_tail(self, n=30):
        self._stderr.flush()
        try:
            with open(self.stderr_path, "rb") as f:
                return "\n".join(f.read().decode(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def __call__(self, cmd, timeout=60, **args):
        """Runs one command; returns its answer, or fails the test with the script's error."""
        self.next_id += 1
        msg = dict(args, seq=self.next_id, cmd=cmd)
        msg.setdefault("failureShot", os.path.splitext(SCREENSHOT)[0] + "-failure.png")
        self.proc.stdin.write((json.dumps(msg) + "\n").encode())
        self.proc.stdin.flush()
        while True:
            line = self._line(timeout)
            if line.get("seq") == self.next_id:
                break
        if not line.get("ok"):
            raise AssertionError("browser step %s(%s) failed: %s%s\n%s"
                                 % (cmd, json.dumps(args)[:300], line.get("error"),
                                    " (screenshot: %s)" % line["failureShot"] if line.get("failureShot") else "",
                                    self.stderr_tail()))
        return line

    def close(self):
        try:
            if self.proc.poll() is None:
                try:
                    self("quit", timeout=15)
                except AssertionError:
                    pass
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        finally:
            for f in (self.proc.stdin, self.proc.stdout, self._stderr):
                try:
                    f.close()
                except (OSError, ValueError):
                    pass


def without_verification(entries):
    """The kinds of timeline entries, without the final verification step (it follows the
    deletion by about a second, so a timeline read right after may or may not have it yet)."""
    kinds = [e["kind"] for e in entries]
    return kinds[:-1] if kinds and kinds[-1] in ("verified", "residue_found") else kinds


class DashboardTest(harness.Assertions, unittest.TestCase):
    server = None

    @classmethod
    def setUpClass(cls):
        require_browser()
        cls.server = Server(SERVER_ENV)
        try:
            cls.server.start()
        except BaseException:
            cls.server.cleanup()
            raise
        cls.operator_token = cls.server.token("ops", role="operator")

    @classmethod
    def tearDownClass(cls):
        if cls.server is None:
            return
        try:
            cls.server.stop()
        finally:
            cls.server.cleanup()

    def setUp(self):
        self.tokens = {"operator": self.operator_token}
        self._browser = None

    def tearDown(self):
        if self._browser is not None:
            self._browser.close()

    def browser(self):
        self._browser = Browser("http://127.0.0.1:%d" % self.server.port, self.tokens,
                                self.server.data_dir)
        return self._browser

    # -- helpers

    def user_with_file(self, prefix, user=None, token=None, files=1):
        """A user (by name or a crafted token) with an account and uploaded files."""
        user = user or unique_user(prefix)
        client = self.server.client(user, token=token)
        account = client.create_account("Checking", "USD")["accountId"]
        file_ids = [client.upload_ok(account, "statement-%d.csv" % i, make_csv(ROWS))["fileId"]
                    for i in range(files)]
        return user, client, file_ids

    def delete(self, client, file_id):
        r = client.delete("/files/" + file_id)
        self.assertEqual(r.status, 202, "DELETE /files/%s: %r" % (file_id, r))
        self.assertUuid4(r.body["coordinationId"])
        return r.body["coordinationId"]

    def operator_view(self, coordination_id):
        return self.server.client(token=self.operator_token).coordination(coordination_id)

    def assertCleanPage(self, report, allowed_401=0):
        """No script error, no CSP violation, nothing from another host, no HTTP error but the
        expected 401s of a refused sign-in."""
        self.assertEqual(report["pageErrors"], [], "uncaught errors in the page")
        self.assertEqual(report["csp"], [], "Content-Security-Policy violations")
        self.assertEqual(report["offOrigin"], [], "requests to another origin")
        # A reload or sign-out aborts the polls under way: that is not a failure.
        failed = [f for f in report["failedRequests"] if f["failure"] != "net::ERR_ABORTED"]
        self.assertEqual(failed, [], "requests that failed")
        unexpected = [e for e in report["httpErrors"]
                      if not (e["status"] == 401 and e["url"].startswith("/coordinations"))]
        self.assertEqual(unexpected, [], "HTTP errors")
        self.assertLessEqual(len(report["httpErrors"]), allowed_401)
        console = [e for e in report["consoleErrors"] if "status of 401" not in e["text"]]
        self.assertEqual(console, [], "console errors")

    # -- the tests

    def test_operator_watches_a_deletion_wait_time_out_and_finish(self):
        user, alice, (file_id, second_file) = self.user_with_file("alice", files=2)
        b = self.browser()

        opened = b("open")
        self.assertEqual(opened["view"], "signin", "the page must ask for a token first")
        self.assertIn("lastcall", opened["title"])

        # Refused tokens keep the sign-in form up and say why.
        r = b("signin", raw="not a token")
        self.assertEqual(r["view"], "signin")
        self.assertIn("not a JWT", r["error"])
        forged = make_jwt("not-the-server-secret", claims_for("ops", role="operator"))
        r = b("signin", raw=forged)
        self.assertEqual(r["view"], "signin")
        self.assertTrue(r["error"] and r["error"].startswith("The server refused this token: "), r)
        self.assertGreater(len(r["error"]), len("The server refused this token: "))

        r = b("signin", **{"as": "operator"})
        self.assertEqual(r["view"], "board", r)
        self.assertEqual(r["who"], "ops · operator")
        self.assertIsNone(r["scopeNote"], "an operator sees every user's coordinations")
        self.assertTrue(r["stored"], "the token is kept in sessionStorage")

        # DELETE from here; the page, polling, shows the coordination in flight.
        deleted_at = time.monotonic()
        cid = self.delete(alice, file_id)
        row = b("waitRow", section="inflight", id=cid, consumer=SLOW, state="pending",
                timeoutMs=4000)["row"]
        seen_after = time.monotonic() - deleted_at
        self.assertLess(seen_after, TIMEOUT_S, "the coordination must show while in flight")
        self.assertTrue(row["visible"])
        self.assertEqual(sorted(c["consumer"] for c in row["chips"]), sorted(FAST + [SLOW]),
                         "one chip per expected consumer: %r" % row)
        self.assertIn(user, row["text"], "an operator sees whose deletion it is")
        # The fast consumers answer within a poll or two, the slow one never does.
        for name in FAST:
            b("waitRow", section="inflight", id=cid, consumer=name, state="completed", timeoutMs=4000)
        cd = b("countdown", id=cid, gapMs=1200)
        first, second = cd["first"], cd["second"]
        self.assertIsNotNone(first, "no countdown in the in-flight row")
        self.assertRegex(first["text"], r"^\d+ s$")
        self.assertTrue(0 < first["leftMs"] <= TIMEOUT_S * 1000 + 500, first)
        if second is not None and second["leftMs"] > 0:
            # Counted down in the page between polls, about as fast as time passes.
            self.assertTrue(700 <= first["leftMs"] - second["leftMs"] <= 2500, cd)
            self.assertLessEqual(int(second["text"].split()[0]), int(first["text"].split()[0]))

        # The deadline passes: it leaves the in-flight list, shows as a timeout with slow_consumer
        # missing (and only it), and among the recent outcomes as timed out.
        row = b("waitRow", section="timeouts", id=cid, consumer=SLOW, state="missing",
                timeoutMs=int((TIMEOUT_S + 15) * 1000))["row"]
        self.assertEqual([(c["consumer"], c["state"]) for c in row["chips"]], [(SLOW, "missing")])
        b("waitNoRow", section="inflight", id=cid, timeoutMs=5000)
        recent = b("waitRow", section="recent", id=cid, timeoutMs=5000)["row"]
        self.assertIn("timed out", recent["text"])
        api = self.operator_view(cid)
        self.assertEqual((api["status"], api["outcome"]), ("completed", "timed_out"))
        self.assertEqual([c["name"] for c in api["consumers"] if c["status"] == "pending"], [SLOW])

        # The charts count it.
        charts = b("waitCharts", rateTotal=1)
        self.assertGreaterEqual(charts["rateTotal"], 1)
        self.assertGreaterEqual(charts["rateBars"], 1)
        lat = {r["consumer"]: r for r in charts["latency"]}
        self.assertEqual(set(lat), set(FAST + [SLOW]))
        for name in FAST:
            self.assertGreaterEqual(lat[name]["n"], 1, lat[name])
            self.assertGreaterEqual(lat[name]["dots"], 1, lat[name])
            self.assertTrue(lat[name]["hasP50"], lat[name])
            self.assertIn("p50", lat[name]["stats"])
        self.assertEqual(lat[SLOW]["n"], 0)
        self.assertGreaterEqual(lat[SLOW]["missed"], 1)
        self.assertIn("never answered", lat[SLOW]["stats"])

        # Its timeline, opened by a click, is the API's, in order.
        tl = b("openTimeline", section="timeouts", id=cid, status="completed")
        r = self.server.client(token=self.operator_token).get("/coordinations/%s/timeline" % cid)
        self.assertEqual(r.status, 200, r)
        # The verification after the deletion may land between the two reads: compare the rest.
        self.assertEqual(without_verification(tl["entries"]), without_verification(r.body["entries"]))
        kinds = without_verification(tl["entries"])
        self.assertEqual(kinds[0], "requested")
        self.assertEqual(kinds[-1], "deleted")
        self.assertIn("timeout", kinds)
        timeout_entry = [e for e in tl["entries"] if e["kind"] == "timeout"][0]
        self.assertIn(SLOW, timeout_entry["text"])
        for name in FAST:
            self.assertTrue(any(e["kind"] == "completion" and name in e["text"] for e in tl["entries"]),
                            "no completion of %s in %r" % (name, tl["entries"]))
        self.assertIn(cid, tl["facts"])
        self.assertIn(user, tl["facts"])
        self.assertIn("missing", {c["consumer"]: c["text"] for c in tl["consumers"]}[SLOW])
        self.assertEqual(tl["focused"], "detail-close", "the panel takes the focus")
        b("screenshot", path=os.path.splitext(SCREENSHOT)[0] + "-timeline.png")
        b("closeTimeline")

        # A second deletion keeps something in flight for the screenshot.
        cid2 = self.delete(alice, second_file)
        b("waitRow", section="inflight", id=cid2, consumer=FAST[1], state="completed", timeoutMs=4000)
        os.makedirs(os.path.dirname(SCREENSHOT) or ".", exist_ok=True)
        b("screenshot", path=SCREENSHOT)
        self.assertTrue(os.path.getsize(SCREENSHOT) > 10000, "the screenshot is empty")

        # A hidden tab polls nothing; shown again, it polls on.
        hidden = b("visibility", hidden=True, ms=3000)
        self.assertEqual(hidden["apiRequests"], 0, hidden)
        self.assertEqual(hidden["live"]["mode"], "paused")
        shown = b("visibility", hidden=False, ms=2500)
        self.assertGreaterEqual(shown["apiRequests"], 2, shown)
        self.assertEqual(shown["live"]["mode"], "live")

        # The token survives a reload of the tab, and signing out forgets it.
        self.assertEqual(b("reload")["view"], "board")
        out = b("signout")
        self.assertEqual((out["view"], out["stored"]), ("signin", 0))

        self.assertCleanPage(b("report"), allowed_401=1)

    def test_user_token_sees_only_its_own_coordinations(self):
        bob, bob_client, (bob_file,) = self.user_with_file("bob")
        carol, carol_client, (carol_file,) = self.user_with_file("carol")
        self.tokens["bob"] = self.server.token(bob)
        self.tokens["carol"] = self.server.token(carol)
        b = self.browser()
        b("open")
        r = b("signin", **{"as": "bob"})
        self.assertEqual(r["view"], "board", r)
        self.assertEqual(r["who"], bob + " · user")
        self.assertIn(bob, r["scopeNote"] or "", "a user token says it sees only its own")

        bob_cid = self.delete(bob_client, bob_file)
        carol_cid = self.delete(carol_client, carol_file)
        carol_marks = [carol, carol_cid, carol_file]

        def assert_only(seen, mine, others):
            for mark in others:
                at = seen["html"].find(mark)
                if at >= 0:
                    self.fail("another user's %r is in the page: ...%s..."
                              % (mark, seen["html"][max(0, at - 300):at + 100]))
            self.assertTrue(set(seen["ids"]) <= set(mine), "ids on the page: %r" % seen["ids"])

        b("waitRow", section="inflight", id=bob_cid, consumer=SLOW, state="pending", timeoutMs=4000)
        assert_only(b("seen"), [bob_cid], carol_marks)
        b("waitRow", section="timeouts", id=bob_cid, timeoutMs=int((TIMEOUT_S + 15) * 1000))
        b("waitRow", section="recent", id=bob_cid, timeoutMs=5000)
        # Carol's has finished too by now: still nowhere on Bob's page.
        self.server.client(carol).wait_coordination(carol_cid, timeout=TIMEOUT_S + 15)
        b("row", section="recent", id=bob_cid)
        time.sleep(1.5)  # a poll or more after Carol's finished
        assert_only(b("seen"), [bob_cid], carol_marks)
        tl = b("openTimeline", section="recent", id=bob_cid, status="completed")
        self.assertEqual(without_verification(tl["entries"])[-1], "deleted")
        b("closeTimeline")
        b("signout")

        # Carol, the other way round.
        b("signin", **{"as": "carol"})
        b("waitRow", section="recent", id=carol_cid, timeoutMs=5000)
        time.sleep(1.5)
        assert_only(b("seen"), [carol_cid], [bob, bob_cid, bob_file])
        b("signout")

        # An operator sees both.
        b("signin", **{"as": "operator"})
        b("waitRow", section="recent", id=bob_cid, timeoutMs=5000)
        b("waitRow", section="recent", id=carol_cid, timeoutMs=5000)
        self.assertCleanPage(b("report"))

    def test_stopped_deletions_show_why_and_finished_ones_their_verification(self):
        user, client, (held_file, cancelled_file, vetoed_file) = self.user_with_file(
            "dora", files=3)
        op = self.server.client(token=self.operator_token)
        hold = op.post("/holds", {"fileId": held_file, "reason": "case 12: keep statements"})
        self.assertEqual(hold.status, 201, hold)
        self.addCleanup(lambda: op.delete("/holds/" + hold.body["holdId"]))
        held_cid = self.delete(client, held_file)
        cancelled_cid = self.delete(client, cancelled_file)
        self.assertEqual(client.post("/coordinations/%s/cancel" % cancelled_cid).status, 200)
        # A consumer with the right to veto (nobody listens at its URL: it reports by the API).
        name = unique_user("legal").replace("-", "_")
        reg = op.post("/consumers", {"name": name, "url": "http://127.0.0.1:9/hook",
                                     "priority": "optional", "timeoutMinutes": 1,
                                     "heartbeatSeconds": 600, "canVeto": True})
        self.assertEqual(reg.status, 201, reg)
        try:
            vetoed_cid = self.delete(client, vetoed_file)
            veto = self.server.client(token=reg.body["token"]).post(
                "/coordinations/%s/completions" % vetoed_cid,
                {"consumer": name, "status": "veto", "reason": "billing <b>dispute</b> open"})
            self.assertEqual(veto.status, 200, veto)
        finally:
            op.delete("/consumers/" + name)  # expected by no later deletion

        b = self.browser()
        b("open")
        b("signin", **{"as": "operator"})
        held = b("waitRow", section="stopped", id=held_cid, timeoutMs=5000)["row"]
        self.assertIn("held", held["text"])
        self.assertIn("legal hold: case 12: keep statements", held["text"])
        vetoed = b("waitRow", section="stopped", id=vetoed_cid, timeoutMs=5000)["row"]
        self.assertIn("vetoed", vetoed["text"])
        self.assertIn(name + " vetoed: billing <b>dispute</b> open", vetoed["text"])  # as text
        cancelled = b("waitRow", section="stopped", id=cancelled_cid, timeoutMs=5000)["row"]
        self.assertIn("cancelled by the owner", cancelled["text"])
        tl = b("openTimeline", section="stopped", id=vetoed_cid, status="vetoed")
        self.assertIn("vetoed", [e["kind"] for e in tl["entries"]])
        self.assertIn("billing <b>dispute</b> open", tl["facts"])
        b("closeTimeline")

        # The operator overrides the veto: it leaves the stopped list, and once deleted (the slow
        # consumer times out) its outcome shows the override and the verification result.
        self.assertEqual(op.post("/coordinations/%s/override" % vetoed_cid,
                                 {"reason": "cleared"}).status, 200)
        b("waitNoRow", section="stopped", id=vetoed_cid, timeoutMs=5000)
        b("waitRow", section="recent", id=vetoed_cid, timeoutMs=int((TIMEOUT_S + 15) * 1000))

        def verified():
            row = b("row", section="recent", id=vetoed_cid)["row"]
            return row if row and "verified" in row["text"] else None
        row = wait_until(verified, 10, message="the verification result on the dashboard")
        self.assertIn("veto overridden", row["text"])
        self.assertEqual([c["state"] for c in row["chips"]], ["overridden"])
        self.assertCleanPage(b("report"))

    def test_a_token_that_expires_returns_to_the_sign_in_form_with_the_reason(self):
        b = self.browser()
        b("open")
        # Valid for about 6 s more (the server allows 30 s of clock leeway past exp); minted
        # only now, so a slow browser start does not eat it.
        short = self.server.py_token("ops-short", ttl_seconds=-24, role="operator")
        r = b("signin", raw=short)
        self.assertEqual(r["view"], "board", r)
        r = b("waitSignedOut", timeoutMs=20000)
        self.assertEqual(r["view"], "signin")
        self.assertEqual(r["error"], "Signed out: token expired")
        self.assertEqual(r["stored"], 0, "a refused token is forgotten")
        self.assertEqual(r["rows"], 0, "nothing read with the old token stays on the page")
        # The polls under way when the token expired (at most one poll's requests: seven lists,
        # one of them paged, and the open detail's two) answer 401.
        self.assertCleanPage(b("report"), allowed_401=10)

    def test_text_from_the_data_never_becomes_markup(self):
        token = self.server.py_token(HOSTILE_SUB)
        _, client, (file_id,) = self.user_with_file("mallory", user=HOSTILE_SUB, token=token)
        b = self.browser()
        b("open")
        b("signin", **{"as": "operator"})
        cid = self.delete(client, file_id)
        row = b("waitRow", section="inflight", id=cid, timeoutMs=4000)["row"]
        self.assertIn(HOSTILE_SUB, row["text"], "the user id is shown as text, as it is")
        tl = b("openTimeline", section="inflight", id=cid)
        self.assertIn(HOSTILE_SUB, tl["facts"])
        b("closeTimeline")
        probe = b("probe")
        self.assertIsNone(probe["pwned"], "a user id ran as script")
        self.assertEqual((probe["imgs"], probe["injected"]), (0, 0), "a user id became markup")
        self.assertCleanPage(b("report"))

        # The hostile user, signed in with its own token, is shown its name as text as well.
        self.tokens["mallory"] = token
        b.close()
        b = self.browser()
        b("open")
        r = b("signin", **{"as": "mallory"})
        self.assertEqual(r["who"], HOSTILE_SUB + " · user")
        probe = b("probe")
        self.assertEqual((probe["pwned"], probe["imgs"], probe["injected"]), (None, 0, 0))


if __name__ == "__main__":
    unittest.main()
