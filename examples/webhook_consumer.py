#!/usr/bin/env python3
"""A lastcall webhook consumer in Python, standard library only (the reference for docs/consumers.md).

It receives lastcall's CloudEvents as Standard Webhooks (https://www.standardwebhooks.com), checks
each one before trusting it, does its work, and reports completion:

  1. verify: the webhook-signature header must hold "v1,<base64 HMAC-SHA256>" of
     "<webhook-id>.<webhook-timestamp>.<raw body>" under one of our secrets (whsec_<base64>: the
     key is the decoded bytes); the timestamp must be within --tolerance seconds of our clock;
     an exact replay (the same webhook-id and timestamp again) is refused. A retry from lastcall
     carries the same webhook-id with a new timestamp and signature: it is answered 200 without
     doing the work twice.
  2. work: for file.delete_requested, the last look at the file before it goes (here: one JSON
     line in --record, if given). file.delete_cancelled and file.delete_vetoed say the deletion
     will not happen after all: undo what was done in anticipation; they ask for no completion.
  3. report: POST /coordinations/{coordinationId}/completions with our consumer token, or, with
     --complete-in-answer, the completion as the 2xx answer's body. With --veto REASON it answers
     {"status": "veto", "reason": REASON} instead (the consumer must be registered with
     "canVeto": true): the deletion stops, the file stays, and only an operator can override it.

Usage (the secret and token come from POST /consumers, once):
  LASTCALL_WEBHOOK_SECRET=whsec_... LASTCALL_CONSUMER_TOKEN=lcc_... \\
    python3 webhook_consumer.py --name billing --listen 127.0.0.1:9000 \\
      --lastcall http://127.0.0.1:8080 [--heartbeat 10]

Secrets: LASTCALL_WEBHOOK_SECRET may hold several, comma-separated (e.g. during a rotation).
"""

import argparse
import base64
import hashlib
import hmac
import http.client
import http.server
import json
import os
import sys
import threading
import time
import urllib.parse


def log(**fields):
    fields.setdefault("at", time.time())
    sys.stdout.write(json.dumps(fields, sort_keys=True) + "\n")
    sys.stdout.flush()


class Verifier(object):
    """Standard Webhooks verification with replay protection."""

    def __init__(self, secrets, tolerance_s=300):
        self.keys = []
        for s in secrets:
            if not s.startswith("whsec_"):
                raise ValueError("a webhook secret starts with whsec_")
            self.keys.append(base64.b64decode(s[len("whsec_"):]))
        self.tolerance_s = tolerance_s
        self.seen = {}  # webhook-id -> {timestamp: first seen (our clock)}
        self.lock = threading.Lock()

    def expected(self, key, msg_id, timestamp, body):
        signed = msg_id.encode() + b"." + timestamp.encode() + b"." + body
        return base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()

    def verify(self, headers, body, now=None):
        """Returns (http_status, reason, duplicate). 200 means: trust it."""
        now = time.time() if now is None else now
        msg_id = headers.get("webhook-id")
        timestamp = headers.get("webhook-timestamp")
        signature = headers.get("webhook-signature")
        if not msg_id or not timestamp or not signature:
            return 400, "missing webhook headers", False
        try:
            ts = int(timestamp)
        except ValueError:
            return 400, "bad webhook-timestamp", False
        if abs(now - ts) > self.tolerance_s:
            return 401, "timestamp outside the tolerance", False
        offered = [s.split(",", 1)[1] for s in signature.split(" ") if s.startswith("v1,")]
        ok = any(hmac.compare_digest(self.expected(k, msg_id, timestamp, body), sig)
                 for k in self.keys for sig in offered)
        if not ok:
            return 401, "no valid signature", False
        with self.lock:
            # Forget what is older than the tolerance: such a message fails the timestamp check.
            for mid in list(self.seen):
                self.seen[mid] = {t: at for t, at in self.seen[mid].items()
                                  if now - at <= 2 * self.tolerance_s}
                if not self.seen[mid]:
                    del self.seen[mid]
            stamps = self.seen.setdefault(msg_id, {})
            if timestamp in stamps:
                return 409, "replayed webhook", False
            duplicate = bool(stamps)
            stamps[timestamp] = now
        return 200, "ok", duplicate


class Consumer(object):
    def __init__(self, args):
        secrets = [s.strip() for s in (args.secret or os.environ.get("LASTCALL_WEBHOOK_SECRET", "")).split(",")
                   if s.strip()]
        if not secrets:
            raise SystemExit("no webhook secret (LASTCALL_WEBHOOK_SECRET or --secret)")
        self.verifier = Verifier(secrets, args.tolerance)
        self.name = args.name
        self.token = args.token or os.environ.get("LASTCALL_CONSUMER_TOKEN", "")
        self.lastcall = urllib.parse.urlparse(args.lastcall)
        self.complete_in_answer = args.complete_in_answer
        self.fail_first = args.fail_first
        self.status = args.status
        self.veto = args.veto
        self.record = args.record
        self.lock = threading.Lock()
        self.received = 0

    def note(self, **fields):
        fields["at"] = time.time()
        log(**fields)
        if self.record:
            with self.lock, open(self.record, "a") as f:
                f.write(json.dumps(fields, sort_keys=True) + "\n")

    def call(self, method, path, body=None):
        conn = http.client.HTTPConnection(self.lastcall.hostname, self.lastcall.port or 80, timeout=10)
        try:
            conn.request(method, path, body=json.dumps(body) if body is not None else None,
                         headers={"Authorization": "Bearer " + self.token,
                                  "Content-Type": "application/json"})
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def answer_body(self, detail):
        """What this consumer says about a deletion: its completion, or its veto with a reason."""
        if self.veto:
            return {"status": "veto", "reason": self.veto, "detail": detail}
        return {"status": self.status, "detail": detail}

    def report(self, coordination_id, detail):
        body = dict(self.answer_body(detail), consumer=self.name)
        for attempt in range(5):
            try:
                status, answer = self.call("POST", "/coordinations/%s/completions" % coordination_id, body)
            except OSError as e:
                status, answer = 0, str(e).encode()
            self.note(event="completion_reported", coordinationId=coordination_id, status=status,
                      answer=answer.decode("utf-8", "replace")[:300])
            if 200 <= status < 300 or 400 <= status < 500:
                return  # done, or refused for good: retrying changes nothing
            time.sleep(0.2 * (2 ** attempt))

    def work(self, event):
        """The consumer's last look at the file: here, only counting it."""
        data = event.get("data", {})
        return {"fileId": data.get("fileId"), "transactionsSeen": data.get("transactionCount", 0)}

    def heartbeats(self, every_s):
        while True:
            try:
                status, _ = self.call("POST", "/consumers/%s/heartbeat" % self.name, {})
                if status != 200:
                    log(event="heartbeat_refused", status=status)
            except OSError as e:
                log(event="heartbeat_failed", error=str(e))
            time.sleep(every_s)


def make_handler(consumer):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *args):  # keep stdout JSON lines only
            pass

        def answer(self, status, body):
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            headers = {k.lower(): v for k, v in self.headers.items()}
            status, reason, duplicate = consumer.verifier.verify(headers, body)
            if status != 200:
                consumer.note(event="refused", status=status, reason=reason,
                              webhookId=headers.get("webhook-id"))
                return self.answer(status, {"error": reason})
            with consumer.lock:
                consumer.received += 1
                n = consumer.received
            if n <= consumer.fail_first:
                # Simulated outage (tests): lastcall retries with backoff. Not remembered as seen,
                # so the retry is processed.
                consumer.note(event="failing_on_purpose", attempt=n, webhookId=headers["webhook-id"])
                with consumer.verifier.lock:
                    consumer.verifier.seen.get(headers["webhook-id"], {}).pop(
                        headers["webhook-timestamp"], None)
                return self.answer(503, {"error": "simulated outage"})
            try:
                event = json.loads(body)
            except ValueError:
                return self.answer(400, {"error": "the body is not JSON"})
            consumer.note(event="received", webhookId=headers["webhook-id"], type=event.get("type"),
                          eventId=event.get("id"), duplicate=duplicate,
                          contentType=headers.get("content-type"),
                          signatures=len(headers["webhook-signature"].split(" ")))
            if duplicate:
                return self.answer(200, {})
            if event.get("type") in ("file.delete_cancelled", "file.delete_vetoed"):
                # The deletion will not happen (its owner cancelled it, or a consumer vetoed it):
                # undo what was done in anticipation (here: note it). No completion is asked for.
                consumer.note(event="undone", type=event.get("type"),
                              coordinationId=event.get("data", {}).get("coordinationId"))
                return self.answer(200, {})
            if event.get("type") != "file.delete_requested":
                return self.answer(200, {})
            coordination_id = event.get("data", {}).get("coordinationId")
            detail = consumer.work(event)
            if consumer.complete_in_answer:
                return self.answer(200, consumer.answer_body(detail))
            self.answer(200, {})
            threading.Thread(target=consumer.report, args=(coordination_id, detail), daemon=True).start()

    return Handler


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--name", required=True, help="the consumer's registered name")
    p.add_argument("--listen", default="127.0.0.1:9000", help="host:port to listen on")
    p.add_argument("--lastcall", default="http://127.0.0.1:8080", help="lastcall's base URL")
    p.add_argument("--secret", help="whsec_... (else LASTCALL_WEBHOOK_SECRET); several: comma-separated")
    p.add_argument("--token", help="lcc_... (else LASTCALL_CONSUMER_TOKEN)")
    p.add_argument("--tolerance", type=int, default=300, help="accepted clock skew, seconds")
    p.add_argument("--complete-in-answer", action="store_true",
                   help="report the completion in the 2xx answer instead of the API")
    p.add_argument("--status", default="completed", choices=["completed", "failed"],
                   help="what to report (failed: the work could not be done)")
    p.add_argument("--veto", metavar="REASON",
                   help="veto every deletion with this reason (needs \"canVeto\": true)")
    p.add_argument("--heartbeat", type=float, default=0, help="heartbeat every N seconds (0: never)")
    p.add_argument("--fail-first", type=int, default=0, help="answer 503 to the first N webhooks (tests)")
    p.add_argument("--record", help="append what happened to this file, as JSON lines (tests)")
    args = p.parse_args(argv)
    consumer = Consumer(args)
    host, _, port = args.listen.rpartition(":")
    server = http.server.ThreadingHTTPServer((host, int(port)), make_handler(consumer))
    if args.heartbeat > 0:
        threading.Thread(target=consumer.heartbeats, args=(args.heartbeat,), daemon=True).start()
    log(event="listening", address="%s:%d" % server.server_address[:2], name=args.name)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
