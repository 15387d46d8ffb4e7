"""lastcall's metrics with the real Prometheus tools (Debian package `prometheus`).

- `promtool check metrics` accepts a real scrape of GET /metrics taken after a full flow, and the
  scrape holds every family of the contract with its type and labels.
- Known flows move exactly the counters they should: a full flow moves started by 1,
  finished{outcome="all_completed"} by 1, each consumer's completions{status="completed"} by 1,
  file_deletions{mode="coordinated",result="deleted"} by 1 (and the histograms' counts alike); a
  timeout flow (a consumer that never answers, a 1.2 s timeout) moves finished{timed_out} and
  coordination_timeouts{consumer="audit_consumer"} by 1 and all_completed not at all.
- LASTCALL_METRICS_LISTEN serves /metrics on its own listener; the API's port then answers 404.
- `promtool check rules` accepts deploy/prometheus/alerts.yml, `promtool check config` the example
  deploy/prometheus/prometheus.yml, and `promtool test rules` shows the main alerts firing on
  series that should fire them (and not on healthy ones).
- Every metric named in alerts.yml and in the Grafana dashboard deploy/grafana/lastcall.json is
  one the server exposes.
- A real `prometheus` server scrapes the test server every second: up{job="lastcall"} == 1 and
  lastcall_coordinations_started_total >= 1 through its HTTP API; the alert rules load and
  evaluate without error; every expression of the Grafana dashboard is accepted by its query API.

Fails (never skips) when promtool or prometheus is missing: `make test` installs them.
"""

import json
import math
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import unittest
import urllib.parse
import urllib.request

import harness
from harness import (DEFAULT_CONSUMERS, Server, free_port, http_request, make_csv, unique_user,
                     wait_until)

try:
    import yaml
except ImportError:
    yaml = None

REPO = os.path.abspath(os.path.join(harness.HERE, "..", ".."))
ALERTS = os.path.join(REPO, "deploy", "prometheus", "alerts.yml")
PROM_CONFIG = os.path.join(REPO, "deploy", "prometheus", "prometheus.yml")
GRAFANA = os.path.join(REPO, "deploy", "grafana", "lastcall.json")
INSTALL_HINT = "run `make test`, which installs the Debian package prometheus (promtool, prometheus)"
WITH_AUDIT = "analytics_consumer,categorization_consumer,audit_consumer"

ROWS = [
    ("2024-03-02", "WHOLE FOODS #10", "-61.37", "USD", "Whole Foods"),
    ("2024-03-05", "Uber ride home", "-23.19", "USD", "Uber BV"),
    ("2024-04-01", "Monthly Payroll", "3120.55", "USD", "Employer Inc"),
]

# The contract: family -> (type, label names).
FAMILIES = {
    "lastcall_coordinations_started_total": ("counter", set()),
    "lastcall_coordinations_finished_total": ("counter", {"outcome"}),
    "lastcall_coordination_timeouts_total": ("counter", {"consumer"}),
    "lastcall_consumer_completions_total": ("counter", {"consumer", "status"}),
    "lastcall_file_deletions_total": ("counter", {"mode", "result"}),
    "lastcall_coordination_duration_seconds": ("histogram", {"outcome"}),
    "lastcall_consumer_completion_seconds": ("histogram", {"consumer"}),
    "lastcall_events_published_total": ("counter", {"type"}),
    "lastcall_events_delivered_total": ("counter", {"type", "target"}),
    "lastcall_delivery_failures_total": ("counter", {"target"}),
    "lastcall_dead_letters_total": ("counter", {"target"}),
    "lastcall_coordinations_waiting": ("gauge", set()),
    "lastcall_coordinations_deleting": ("gauge", set()),
    "lastcall_oldest_waiting_coordination_age_seconds": ("gauge", set()),
    "lastcall_outbox_backlog": ("gauge", {"target"}),
    "lastcall_deletion_proceed_rules_total": ("counter", {"priority", "rule"}),
    "lastcall_webhook_deliveries_total": ("counter", {"consumer", "result"}),
    "lastcall_webhook_retries_total": ("counter", {"consumer"}),
    "lastcall_webhook_delivery_seconds": ("histogram", {"consumer"}),
    "lastcall_dead_letter_replays_total": ("counter", {"target"}),
    "lastcall_rows_pruned_total": ("counter", {"table"}),
    "lastcall_http_requests_total": ("counter", {"method", "route", "status"}),
    "lastcall_http_request_duration_seconds": ("histogram", {"route"}),
    "lastcall_coordinations_cancelled_total": ("counter", set()),
    "lastcall_vetoes_total": ("counter", {"consumer"}),
    "lastcall_vetoes_refused_total": ("counter", {"reason"}),
    "lastcall_veto_overrides_total": ("counter", {"result"}),
    "lastcall_holds_placed_total": ("counter", {"scope"}),
    "lastcall_holds_released_total": ("counter", {"scope"}),
    "lastcall_deletions_blocked_total": ("counter", set()),
    "lastcall_deletion_verifications_total": ("counter", {"result"}),
    "lastcall_receipts_issued_total": ("counter", set()),
    "lastcall_coordinations_held": ("gauge", set()),
    "lastcall_coordinations_vetoed": ("gauge", set()),
    "lastcall_holds_active": ("gauge", set()),
}
# Families that may have no series yet on a fresh server (labelled, nothing counted so far).
MAY_BE_EMPTY = {"lastcall_coordination_timeouts_total", "lastcall_delivery_failures_total",
                "lastcall_dead_letters_total", "lastcall_coordination_duration_seconds",
                "lastcall_consumer_completion_seconds", "lastcall_coordinations_finished_total",
                "lastcall_consumer_completions_total", "lastcall_file_deletions_total",
                "lastcall_events_published_total", "lastcall_events_delivered_total",
                "lastcall_outbox_backlog", "lastcall_webhook_deliveries_total",
                "lastcall_webhook_retries_total", "lastcall_webhook_delivery_seconds",
                "lastcall_dead_letter_replays_total", "lastcall_vetoes_total"}


def tool(name):
    path = shutil.which(name)
    if path is None:
        raise AssertionError("%s is not installed: %s" % (name, INSTALL_HINT))
    return path


# ---------------------------------------------------------------------------------------------
# The text exposition format


_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)(\s+-?\d+)?$')
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*(,|$)')


def parse_labels(text):
    out = {}
    pos = 0
    text = text or ""
    while pos < len(text):
        m = _LABEL.match(text, pos)
        if not m:
            raise AssertionError("cannot parse labels %r" % text)
        value = m.group(2).replace('\\"', '"').replace("\\n", "\n").replace("\\\\", "\\")
        out[m.group(1)] = value
        pos = m.end()
    return out


class Scrape(object):
    """One scrape: types {family: type}, samples {(name, frozenset(labels)): value}."""

    def __init__(self, text):
        self.text = text
        self.types = {}
        self.helps = {}
        self.samples = {}
        for line in text.splitlines():
            if not line.strip():
                continue
            if line.startswith("# TYPE "):
                _, _, name, typ = line.split(None, 3)
                self.types[name] = typ.strip()
                continue
            if line.startswith("# HELP "):
                parts = line.split(None, 3)
                self.helps[parts[2]] = parts[3] if len(parts) > 3 else ""
                continue
            if line.startswith("#"):
                continue
            m = _SAMPLE.match(line)
            if not m:
                raise AssertionError("cannot parse metric line %r" % line)
            value = float(m.group(4))
            self.samples[(m.group(1), frozenset(parse_labels(m.group(3)).items()))] = value

    def value(self, name, **labels):
        """The sample's value; 0 when the series does not exist (a counter not moved yet)."""
        return self.samples.get((name, frozenset(labels.items())), 0.0)

    def series(self, name):
        return [(dict(k[1]), v) for k, v in self.samples.items() if k[0] == name]

    def sum(self, name, **labels):
        want = set(labels.items())
        return sum(v for k, v in self.samples.items() if k[0] == name and want <= set(k[1]))


def scrape(port, path="/metrics"):
    r = http_request(port, "GET", path, raw=True)
    if r.status != 200:
        raise AssertionError("GET %s: expected 200, got %r" % (path, r))
    ctype = r.headers.get("content-type", "")
    if not ctype.startswith("text/plain"):
        raise AssertionError("GET %s: Content-Type %r is not text/plain" % (path, ctype))
    return Scrape(r.raw.decode("utf-8"))


def metric_names_in(expr):
    """The lastcall_* metric names a PromQL expression reads, histogram suffixes stripped."""
    names = set()
    for n in re.findall(r"\b(lastcall_[a-z0-9_]+)", expr):
        for suffix in ("_bucket", "_sum", "_count"):
            base = n[:-len(suffix)]
            if n.endswith(suffix) and FAMILIES.get(base, ("",))[0] == "histogram":
                n = base
        names.add(n)
    return names


def grafana_exprs():
    with open(GRAFANA, encoding="utf-8") as f:
        dash = json.load(f)
    exprs = []

    def walk(panels):
        for p in panels:
            for t in p.get("targets", []):
                if t.get("expr"):
                    exprs.append((p.get("title"), t["expr"]))
            walk(p.get("panels", []))
    walk(dash.get("panels", []))
    for v in dash.get("templating", {}).get("list", []):
        q = v.get("query")
        if isinstance(q, dict):
            q = q.get("query")
        if v.get("type") == "query" and q:
            exprs.append(("variable " + v["name"], q))
    return dash, exprs


def alert_rules():
    if yaml is None:
        raise AssertionError("PyYAML is missing (Debian: python3-yaml): " + INSTALL_HINT)
    with open(ALERTS, encoding="utf-8") as f:
        doc = yaml.safe_load(f)
    return [r for g in doc["groups"] for r in g["rules"]]


def instant_query_form(expr):
    """A Grafana expression as Prometheus takes it: template variables replaced."""
    expr = expr.replace("$__rate_interval", "1m").replace("$__interval", "15s")
    expr = expr.replace("$__range", "1h")
    expr = re.sub(r"\$\{?(job|instance)\}?", ".*", expr)
    m = re.match(r"^label_values\((.*),\s*(\w+)\)$", expr.strip())
    if m:  # a Grafana variable query: the series selector is what Prometheus sees
        expr = m.group(1)
    return expr


# ---------------------------------------------------------------------------------------------


class Flows(object):
    """The known flows, over a harness Server."""

    def full_flow(self, server, user=None):
        c = server.client(user or unique_user("alice"))
        acct = c.create_account("Checking", "USD")
        f = c.upload_ok(acct["accountId"], "statement.csv", make_csv(ROWS))
        c.wait_categorized(f["fileId"])
        r = c.delete("/files/" + f["fileId"])
        if r.status != 202:
            raise AssertionError("DELETE: expected 202, got %r" % (r,))
        done = c.wait_coordination(r.body["coordinationId"], "completed")
        return c, done

    def start_timeout_flow(self, server):
        c = server.client(unique_user("carol"))
        acct = c.create_account("Savings", "USD")
        f = c.upload_ok(acct["accountId"], "statement.csv", make_csv(ROWS))
        c.wait_categorized(f["fileId"])
        r = c.delete("/files/" + f["fileId"])
        if r.status != 202:
            raise AssertionError("DELETE: expected 202, got %r" % (r,))
        return c, r.body["coordinationId"]


class MetricsTest(harness.ServerPool, Flows, unittest.TestCase):
    servers = []

    def wait_scrape(self, port, predicate, message, timeout=10.0):
        """Scrapes until predicate(scrape) holds (counters move right after their commit)."""
        last = {}

        def check():
            last["s"] = scrape(port)
            return predicate(last["s"])
        try:
            wait_until(check, timeout, interval=0.1, message=message)
        except AssertionError as e:
            raise AssertionError("%s\n--- last scrape:\n%s" % (e, last.get("s").text if last else ""))
        return last["s"]

    def assertDelta(self, before, after, name, expected, **labels):
        got = after.value(name, **labels) - before.value(name, **labels)
        self.assertEqual(got, expected, "%s%s moved by %s, expected %s"
                         % (name, labels or "", got, expected))

    def test_full_flow_moves_exactly_its_counters(self):
        server = self.start()
        before = scrape(server.port)
        self.full_flow(server)

        def settled(s):
            return (s.value("lastcall_coordinations_finished_total", outcome="all_completed")
                    - before.value("lastcall_coordinations_finished_total", outcome="all_completed") >= 1
                    and s.sum("lastcall_outbox_backlog") == 0
                    and s.value("lastcall_events_delivered_total", type="consumer.completion",
                                target="file_deletion_consumer") >= 2)
        after = self.wait_scrape(server.port, settled, "the full flow's metrics")
        time.sleep(0.3)  # nothing else may move afterwards
        after = scrape(server.port)

        d = lambda name, n, **kw: self.assertDelta(before, after, name, n, **kw)
        d("lastcall_coordinations_started_total", 1)
        d("lastcall_coordinations_finished_total", 1, outcome="all_completed")
        d("lastcall_coordinations_finished_total", 0, outcome="timed_out")
        for consumer in DEFAULT_CONSUMERS:
            d("lastcall_consumer_completions_total", 1, consumer=consumer, status="completed")
            d("lastcall_consumer_completions_total", 0, consumer=consumer, status="failed")
            d("lastcall_consumer_completion_seconds_count", 1, consumer=consumer)
        d("lastcall_file_deletions_total", 1, mode="coordinated", result="deleted")
        d("lastcall_file_deletions_total", 0, mode="coordinated", result="failed")
        d("lastcall_file_deletions_total", 0, mode="synchronous", result="deleted")
        d("lastcall_coordination_duration_seconds_count", 1, outcome="all_completed")
        self.assertEqual(after.sum("lastcall_coordination_timeouts_total")
                         - before.sum("lastcall_coordination_timeouts_total"), 0)
        d("lastcall_events_published_total", 1, type="file.uploaded")
        d("lastcall_events_published_total", 1, type="file.delete_requested")
        d("lastcall_events_published_total", 2, type="consumer.completion")
        d("lastcall_events_published_total", 1, type="file.deleted")
        for target in DEFAULT_CONSUMERS:
            d("lastcall_events_delivered_total", 1, type="file.uploaded", target=target)
        for target in DEFAULT_CONSUMERS + ["file_deletion_consumer"]:
            d("lastcall_events_delivered_total", 1, type="file.delete_requested", target=target)
        d("lastcall_events_delivered_total", 2, type="consumer.completion",
          target="file_deletion_consumer")
        self.assertEqual(after.sum("lastcall_delivery_failures_total"), 0)
        self.assertEqual(after.sum("lastcall_dead_letters_total"), 0)
        # Both expected consumers (critical) let the deletion proceed by reporting.
        d("lastcall_deletion_proceed_rules_total", 2, priority="critical", rule="reported")
        self.assertEqual(after.sum("lastcall_deletion_proceed_rules_total")
                         - before.sum("lastcall_deletion_proceed_rules_total"), 2)
        self.assertEqual(after.value("lastcall_coordinations_waiting"), 0)
        self.assertEqual(after.value("lastcall_coordinations_deleting"), 0)
        self.assertEqual(after.value("lastcall_oldest_waiting_coordination_age_seconds"), 0)
        for labels, v in after.series("lastcall_outbox_backlog"):
            self.assertEqual(v, 0, "outbox backlog %s" % labels)
        # The duration histogram: one observation, in a bucket no later than the wall time.
        buckets = [(float(l["le"]) if l["le"] != "+Inf" else math.inf, v)
                   for l, v in after.series("lastcall_coordination_duration_seconds_bucket")
                   if l.get("outcome") == "all_completed"]
        self.assertTrue(buckets, "no buckets for outcome all_completed")
        self.assertEqual(max(v for _, v in buckets), 1)
        self.assertEqual(dict(buckets)[math.inf], 1)
        # HTTP requests were counted with their route templates, never raw ids.
        routes = {l["route"] for l, _ in after.series("lastcall_http_requests_total")}
        self.assertIn("/files/{id}", routes)
        for r in routes:
            self.assertIsNone(harness.UUID_RE.search(r.strip("/").split("/")[-1]), r)
            self.assertNotRegex(r, r"[0-9a-f]{8}-[0-9a-f]{4}-")
        self.assertGreaterEqual(after.value("lastcall_http_requests_total", method="DELETE",
                                            route="/files/{id}", status="202"), 1)
        # promtool accepts the scrape, and every family of the contract is in it.
        self.check_with_promtool(after.text)
        self.check_families(after)

    def check_with_promtool(self, text):
        p = subprocess.run([tool("promtool"), "check", "metrics"], input=text.encode(),
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
        out = p.stdout.decode(errors="replace")
        self.assertEqual(p.returncode, 0, "promtool check metrics failed:\n%s" % out)
        self.assertEqual(out.strip(), "", "promtool check metrics complained:\n%s" % out)

    def check_families(self, s):
        for name, (typ, labels) in FAMILIES.items():
            self.assertEqual(s.types.get(name), typ, "# TYPE of %s" % name)
            self.assertTrue(s.helps.get(name), "# HELP of %s" % name)
            sample_name = name + "_count" if typ == "histogram" else name
            series = s.series(sample_name)
            if not series:
                self.assertIn(name, MAY_BE_EMPTY, "%s has no series" % name)
            for l, _ in series:
                self.assertEqual(set(l) - {"le"}, labels, "labels of %s" % name)
        extra = {n for n in s.types if n.startswith("lastcall_")} - set(FAMILIES)
        self.assertEqual(extra, set(), "families not in the contract")

    def test_timeout_flow_moves_exactly_its_counters(self):
        server = self.start({"EXPECTED_CONSUMERS": WITH_AUDIT,
                             "COORDINATION_TIMEOUT_MINUTES": "0.02"})
        before = scrape(server.port)
        c, cid = self.start_timeout_flow(server)
        during = scrape(server.port)
        if c.coordination(cid)["status"] == "waiting":
            # It was waiting before this scrape and still is: the gauges must show it.
            self.assertGreaterEqual(during.value("lastcall_coordinations_waiting"), 1)
            age = during.value("lastcall_oldest_waiting_coordination_age_seconds")
            self.assertGreater(age, 0)
            self.assertLess(age, 60)
        else:
            print("note: the coordination stopped waiting before the scrape; gauges not checked")
        done = c.wait_coordination(cid, "completed", timeout=20)
        self.assertEqual(done["outcome"], "timed_out")

        after = self.wait_scrape(
            server.port,
            lambda s: s.value("lastcall_coordinations_finished_total", outcome="timed_out")
            - before.value("lastcall_coordinations_finished_total", outcome="timed_out") >= 1,
            "the timeout flow's metrics")
        time.sleep(0.3)
        after = scrape(server.port)
        d = lambda name, n, **kw: self.assertDelta(before, after, name, n, **kw)
        d("lastcall_coordinations_started_total", 1)
        d("lastcall_coordinations_finished_total", 1, outcome="timed_out")
        d("lastcall_coordinations_finished_total", 0, outcome="all_completed")
        d("lastcall_coordination_timeouts_total", 1, consumer="audit_consumer")
        for consumer in DEFAULT_CONSUMERS:
            d("lastcall_coordination_timeouts_total", 0, consumer=consumer)
            d("lastcall_consumer_completions_total", 1, consumer=consumer, status="completed")
        self.assertEqual(after.sum("lastcall_consumer_completions_total", consumer="audit_consumer"), 0)
        d("lastcall_file_deletions_total", 1, mode="coordinated", result="deleted")
        d("lastcall_coordination_duration_seconds_count", 1, outcome="timed_out")
        d("lastcall_coordination_duration_seconds_count", 0, outcome="all_completed")
        # Request to deletion took at least the timeout (1.2 s).
        took = (after.value("lastcall_coordination_duration_seconds_sum", outcome="timed_out")
                - before.value("lastcall_coordination_duration_seconds_sum", outcome="timed_out"))
        self.assertGreaterEqual(took, 1.1)
        self.assertLess(took, 30)
        self.assertEqual(after.value("lastcall_coordinations_waiting"), 0)
        self.assertEqual(after.value("lastcall_oldest_waiting_coordination_age_seconds"), 0)
        self.check_with_promtool(after.text)

    def test_synchronous_deletion_is_counted(self):
        server = self.start({"ENABLE_EVENT_PUBLISHING": "false"})
        before = scrape(server.port)
        c = server.client(unique_user("dave"))
        acct = c.create_account("Cash", "USD")
        f = c.upload_ok(acct["accountId"], "s.csv", make_csv(ROWS))
        self.assertEqual(c.delete("/files/" + f["fileId"]).status, 200)
        after = self.wait_scrape(
            server.port,
            lambda s: s.value("lastcall_file_deletions_total", mode="synchronous", result="deleted") >= 1,
            "the synchronous deletion's metric")
        self.assertDelta(before, after, "lastcall_file_deletions_total", 1, mode="synchronous",
                         result="deleted")
        self.assertDelta(before, after, "lastcall_coordinations_started_total", 0)

    def test_metrics_on_their_own_listener(self):
        mport = free_port()
        server = self.start({"LASTCALL_METRICS_LISTEN": "127.0.0.1:%d" % mport})
        s = scrape(mport)
        self.assertIn("lastcall_coordinations_started_total", s.types)
        r = http_request(server.port, "GET", "/metrics")
        self.assertEqual(r.status, 404, "/metrics on the API's port with LASTCALL_METRICS_LISTEN: %r" % r)
        self.assertEqual(r.body.get("error") if isinstance(r.body, dict) else None, "not_found")
        r = http_request(mport, "GET", "/accounts")
        self.assertEqual(r.status, 404, "the metrics listener serves only /metrics: %r" % r)
        # The API still works, and its requests are counted on the metrics listener.
        self.full_flow(server)
        s = self.wait_scrape(mport, lambda s: s.value("lastcall_coordinations_started_total") >= 1,
                             "started on the metrics listener")
        self.assertEqual(s.value("lastcall_coordinations_started_total"), 1)

    def test_alerted_series_exist_from_the_start(self):
        """increase() and rate() cannot see a series' first sample: a counter that appears at 1
        hides its first event from every alert (the first timeout, the first dead letter). So the
        series the alerts read exist at 0 from the start, for the known label values."""
        self.maxDiff = None
        server = self.start({"EXPECTED_CONSUMERS": WITH_AUDIT})
        s = scrape(server.port)
        want = [("lastcall_coordinations_started_total", {})]
        want += [("lastcall_coordinations_finished_total", {"outcome": o})
                 for o in ("all_completed", "timed_out")]
        for consumer in WITH_AUDIT.split(","):
            want.append(("lastcall_coordination_timeouts_total", {"consumer": consumer}))
            want += [("lastcall_consumer_completions_total", {"consumer": consumer, "status": st})
                     for st in ("completed", "failed")]
        want += [("lastcall_file_deletions_total", {"mode": m, "result": r})
                 for m in ("coordinated", "synchronous") for r in ("deleted", "failed")]
        for target in DEFAULT_CONSUMERS + ["file_deletion_consumer"]:
            want.append(("lastcall_dead_letters_total", {"target": target}))
            want.append(("lastcall_delivery_failures_total", {"target": target}))
            want.append(("lastcall_outbox_backlog", {"target": target}))
        missing = ["%s%s" % (name, json.dumps(labels, sort_keys=True)) for name, labels in want
                   if (name, frozenset(labels.items())) not in s.samples]
        self.assertEqual(missing, [], "series missing from a fresh server's /metrics")

    def test_metrics_need_no_token(self):
        server = self.start()
        r = http_request(server.port, "GET", "/metrics", raw=True)
        self.assertEqual(r.status, 200)
        r = http_request(server.port, "GET", "/metrics", headers={"Authorization": "Bearer junk"},
                         raw=True)
        self.assertEqual(r.status, 200, "a bad token must not matter on /metrics")


class RulesTest(unittest.TestCase):
    def test_promtool_checks_rules_and_config(self):
        p = subprocess.run([tool("promtool"), "check", "rules", ALERTS], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=60)
        out = p.stdout.decode(errors="replace")
        self.assertEqual(p.returncode, 0, out)
        self.assertIn("SUCCESS", out)
        p = subprocess.run([tool("promtool"), "check", "config", PROM_CONFIG],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
        self.assertEqual(p.returncode, 0, p.stdout.decode(errors="replace"))

    def test_alerts_cover_the_questions(self):
        names = {r.get("alert") for r in alert_rules()}
        for required in ("LastcallCoordinationsTimingOut", "LastcallConsumerNotCompleting",
                         "LastcallOutboxBacklogGrowing", "LastcallDeadLetters",
                         "LastcallWaitingCoordinationOverdue", "LastcallDeletionResidue"):
            self.assertIn(required, names)
        for r in alert_rules():
            self.assertIn(r["labels"]["severity"], ("warning", "critical"), r["alert"])
            self.assertTrue(r["annotations"].get("summary"), r["alert"])
            self.assertTrue(r["annotations"].get("description"), r["alert"])

    def test_alerts_fire_on_the_series_they_watch(self):
        """`promtool test rules` over synthetic series: each alert fires when it should and not
        on healthy series."""
        lab = 'job="lastcall", instance="127.0.0.1:8080"'
        tests = {
            "rule_files": ["alerts_no_annotations.yml"],
            "evaluation_interval": "1m",
            "tests": [
                {
                    "interval": "1m",
                    "input_series": [
                        # Two timeouts of audit_consumer, which never completes; analytics fine.
                        {"series": 'lastcall_coordinations_finished_total{%s, outcome="timed_out"}' % lab,
                         "values": "0 0 1 2 2 2 2 2 2 2"},
                        {"series": 'lastcall_coordination_timeouts_total{%s, consumer="audit_consumer"}' % lab,
                         "values": "0 0 1 2 2 2 2 2 2 2"},
                        {"series": 'lastcall_coordination_timeouts_total{%s, consumer="analytics_consumer"}' % lab,
                         "values": "0 0 1 1 1 1 1 1 1 1"},
                        {"series": 'lastcall_consumer_completions_total{%s, consumer="analytics_consumer", status="completed"}' % lab,
                         "values": "0 1 2 3 4 5 6 7 8 9"},
                        # A backlog that grows past 100 for a target.
                        {"series": 'lastcall_outbox_backlog{%s, target="analytics_consumer"}' % lab,
                         "values": "0+20x40"},
                        {"series": 'lastcall_outbox_backlog{%s, target="categorization_consumer"}' % lab,
                         "values": "0x40"},
                        # A dead letter.
                        {"series": 'lastcall_dead_letters_total{%s, target="categorization_consumer"}' % lab,
                         "values": "0 0 0 1 1 1 1 1 1 1"},
                        # A coordination waiting for 10 minutes and counting.
                        {"series": 'lastcall_oldest_waiting_coordination_age_seconds{%s}' % lab,
                         "values": "0+60x20"},
                        {"series": 'up{%s}' % lab, "values": "1x40"},
                        # One deletion whose verification found residue, many verified.
                        {"series": 'lastcall_deletion_verifications_total{%s, result="residue"}' % lab,
                         "values": "0 0 0 1 1 1 1 1 1 1"},
                        {"series": 'lastcall_deletion_verifications_total{%s, result="verified"}' % lab,
                         "values": "0+3x40"},
                    ],
                    "alert_rule_test": [
                        {"eval_time": "5m", "alertname": "LastcallCoordinationsTimingOut",
                         "exp_alerts": [{"exp_labels": {"severity": "warning", "job": "lastcall",
                                                        "instance": "127.0.0.1:8080"}}]},
                        {"eval_time": "5m", "alertname": "LastcallConsumerNotCompleting",
                         "exp_alerts": [{"exp_labels": {"severity": "critical", "job": "lastcall",
                                                        "instance": "127.0.0.1:8080",
                                                        "consumer": "audit_consumer"}}]},
                        {"eval_time": "5m", "alertname": "LastcallDeadLetters",
                         "exp_alerts": [{"exp_labels": {"severity": "critical", "job": "lastcall",
                                                        "instance": "127.0.0.1:8080",
                                                        "target": "categorization_consumer"}}]},
                        {"eval_time": "9m", "alertname": "LastcallWaitingCoordinationOverdue",
                         "exp_alerts": [{"exp_labels": {"severity": "critical", "job": "lastcall",
                                                        "instance": "127.0.0.1:8080"}}]},
                        {"eval_time": "5m", "alertname": "LastcallWaitingCoordinationOverdue",
                         "exp_alerts": []},
                        {"eval_time": "30m", "alertname": "LastcallOutboxBacklogGrowing",
                         "exp_alerts": [{"exp_labels": {"severity": "warning", "job": "lastcall",
                                                        "instance": "127.0.0.1:8080",
                                                        "target": "analytics_consumer"}}]},
                        {"eval_time": "30m", "alertname": "LastcallDown", "exp_alerts": []},
                        {"eval_time": "2m", "alertname": "LastcallDeletionResidue", "exp_alerts": []},
                        {"eval_time": "5m", "alertname": "LastcallDeletionResidue",
                         "exp_alerts": [{"exp_labels": {"severity": "critical", "job": "lastcall",
                                                        "instance": "127.0.0.1:8080"}}]},
                    ],
                },
            ],
        }
        with tempfile.TemporaryDirectory(prefix="lastcall-rules-") as d:
            # The expressions are under test here; annotations (templates) are left out so that
            # the expected alerts need not repeat their text (`promtool check rules` checks them).
            with open(ALERTS, encoding="utf-8") as f:
                doc = yaml.safe_load(f)
            for g in doc["groups"]:
                for r in g["rules"]:
                    r.pop("annotations", None)
            with open(os.path.join(d, "alerts_no_annotations.yml"), "w") as f:
                json.dump(doc, f)
            path = os.path.join(d, "alerts_test.yml")
            with open(path, "w") as f:
                json.dump(tests, f)  # JSON is YAML
            p = subprocess.run([tool("promtool"), "test", "rules", path], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, timeout=120)
        self.assertEqual(p.returncode, 0, "promtool test rules:\n" + p.stdout.decode(errors="replace"))

    def test_dashboard_and_alerts_read_real_metrics(self):
        dash, exprs = grafana_exprs()
        self.assertEqual(dash["uid"], "lastcall-overview")
        ids = [p["id"] for p in dash["panels"]]
        self.assertEqual(len(ids), len(set(ids)), "panel ids must be unique")
        for p in dash["panels"]:
            self.assertIn("gridPos", p)
        used = set()
        for title, e in exprs:
            names = metric_names_in(e)
            self.assertTrue(names, "panel %r reads no lastcall metric: %s" % (title, e))
            used |= names
        for r in alert_rules():
            used |= metric_names_in(r["expr"])
        unknown = used - set(FAMILIES)
        self.assertEqual(unknown, set(), "metrics the server does not expose")
        # The dashboard shows the questions of the brief.
        for needed in ("lastcall_coordinations_waiting", "lastcall_oldest_waiting_coordination_age_seconds",
                       "lastcall_consumer_completions_total", "lastcall_coordination_timeouts_total",
                       "lastcall_file_deletions_total", "lastcall_coordination_duration_seconds",
                       "lastcall_consumer_completion_seconds", "lastcall_outbox_backlog",
                       "lastcall_events_published_total", "lastcall_events_delivered_total",
                       "lastcall_delivery_failures_total"):
            self.assertIn(needed, {n for _, e in exprs for n in metric_names_in(e)})


class RealPrometheusTest(Flows, unittest.TestCase):
    """A real Prometheus server scrapes a real lastcall every second."""

    def setUp(self):
        self.server = None
        self.prom = None
        self.tmp = tempfile.mkdtemp(prefix="lastcall-prom-")

    def tearDown(self):
        if self.prom is not None and self.prom.poll() is None:
            self.prom.send_signal(signal.SIGTERM)
            try:
                self.prom.wait(15)
            except subprocess.TimeoutExpired:
                self.prom.kill()
                self.prom.wait()
        if self.server is not None:
            try:
                self.server.stop()
            finally:
                self.server.cleanup()
        if not os.environ.get("LASTCALL_KEEP_DATA"):
            shutil.rmtree(self.tmp, ignore_errors=True)

    def prom_log(self):
        try:
            with open(os.path.join(self.tmp, "prometheus.log"), errors="replace") as f:
                return "".join(f.readlines()[-40:])
        except OSError:
            return ""

    def api(self, path, **params):
        url = "http://127.0.0.1:%d%s" % (self.prom_port, path)
        if params:
            url += "?" + urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                return json.loads(r.read().decode())
        except urllib.error.HTTPError as e:
            return json.loads(e.read().decode() or "{}")

    def query(self, expr):
        r = self.api("/api/v1/query", query=expr)
        if r.get("status") != "success":
            raise AssertionError("query %r failed: %r" % (expr, r))
        return r["data"]["result"]

    def test_prometheus_scrapes_lastcall(self):
        binary = tool("prometheus")
        self.server = Server({})
        self.server.start()
        self.full_flow(self.server)

        self.prom_port = free_port()
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s",
                       "scrape_timeout": "1s"},
            "rule_files": [ALERTS],
            "scrape_configs": [{
                "job_name": "lastcall",
                "metrics_path": "/metrics",
                "static_configs": [{"targets": ["127.0.0.1:%d" % self.server.port]}],
            }],
        }
        cfg = os.path.join(self.tmp, "prometheus.yml")
        with open(cfg, "w") as f:
            json.dump(config, f)
        with open(os.path.join(self.tmp, "prometheus.log"), "wb") as log:
            self.prom = subprocess.Popen(
                [binary, "--config.file=" + cfg,
                 "--storage.tsdb.path=" + os.path.join(self.tmp, "data"),
                 "--web.listen-address=127.0.0.1:%d" % self.prom_port,
                 "--web.console.templates=" + os.path.join(self.tmp, "consoles"),
                 "--web.console.libraries=" + os.path.join(self.tmp, "console_libraries"),
                 "--storage.tsdb.retention.time=1h"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=self.tmp)

        def ready():
            if self.prom.poll() is not None:
                raise AssertionError("prometheus exited with %s:\n%s" % (self.prom.returncode,
                                                                         self.prom_log()))
            try:
                with urllib.request.urlopen("http://127.0.0.1:%d/-/ready" % self.prom_port,
                                            timeout=2) as r:
                    return r.status == 200
            except OSError:
                return False
        wait_until(ready, 60, interval=0.2, message="prometheus ready")

        def scraped():
            up = self.query('up{job="lastcall"} == 1')
            started = self.query('lastcall_coordinations_started_total{job="lastcall"} >= 1')
            return up and started
        try:
            wait_until(scraped, 60, interval=0.5,
                       message='up{job="lastcall"} == 1 and lastcall_coordinations_started_total >= 1')
        except AssertionError as e:
            raise AssertionError("%s\ntargets: %r\n%s" % (e, self.api("/api/v1/targets"),
                                                          self.prom_log()))
        up = self.query('up{job="lastcall"}')
        self.assertEqual([float(x["value"][1]) for x in up], [1.0])
        started = self.query("lastcall_coordinations_started_total")
        self.assertEqual(float(started[0]["value"][1]), 1.0)
        finished = self.query('lastcall_coordinations_finished_total{outcome="all_completed"}')
        self.assertEqual(float(finished[0]["value"][1]), 1.0)
        targets = self.api("/api/v1/targets")["data"]["activeTargets"]
        self.assertEqual([t["health"] for t in targets], ["up"], targets)
        self.assertEqual(targets[0].get("lastError", ""), "")

        # The alert rules load and evaluate cleanly against the real series.
        def evaluated():
            groups = self.api("/api/v1/rules")["data"]["groups"]
            rules = [r for g in groups for r in g["rules"]]
            if len(rules) != len(alert_rules()):
                return None
            return rules if all(r.get("health") == "ok" for r in rules) else None
        try:
            rules = wait_until(evaluated, 30, interval=0.5, message="every alert rule evaluated ok")
        except AssertionError as e:
            raise AssertionError("%s\n%r" % (e, self.api("/api/v1/rules")))
        firing = [r["name"] for r in rules if r.get("state") == "firing"]
        self.assertEqual(firing, [], "alerts firing on a healthy server")

        # Every expression of the Grafana dashboard is valid PromQL over these series.
        _, exprs = grafana_exprs()
        bad = []
        for title, e in exprs:
            r = self.api("/api/v1/query", query=instant_query_form(e))
            if r.get("status") != "success":
                bad.append("%s: %s -> %s" % (title, e, r.get("error")))
        self.assertEqual(bad, [], "dashboard expressions Prometheus refuses")
        # And the main panels have data after the flow.
        for e in ('sum(lastcall_coordinations_waiting{job=~".*", instance=~".*"})',
                  'sum by (consumer, status) (lastcall_consumer_completions_total)'):
            self.assertTrue(self.query(e), "no data for %s" % e)


if __name__ == "__main__":
    unittest.main()
