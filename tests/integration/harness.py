"""Shared helpers for lastcall's black-box integration tests.

The tests start the real `lastcall serve` binary (path in $LASTCALL_BIN) on a free loopback port
with a fresh data folder, speak HTTP to it and look at what a user or an operator can see: the
responses, the JSON log lines on stderr, and the transactional outbox in whichever database the
server uses (Server.query).

$LASTCALL_TEST_SERVICES, a comma list of `postgres`, `nats` and `s3`, runs the same tests on the
scale-out engines: for each one named, a throwaway server starts once per test process and every
lastcall server started here is pointed at it (`postgres`: a fresh database per Server object,
passed as LASTCALL_DATABASE_URL; kept across restarts like the data folder).

Python 3 standard library only (plus psql from Debian's postgresql package for `postgres`).
"""

import atexit
import base64
import csv
import datetime
import hashlib
import hmac
import http.client
import io
import json
import os
import re
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import tempfile
import time
import unittest
import uuid
from decimal import Decimal

import pg_service

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "data")

START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 10.0
HTTP_TIMEOUT_S = 15.0

UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
UUID4_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
JWT_RE = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$")

DEFAULT_CONSUMERS = ["analytics_consumer", "categorization_consumer"]


_postgres = None


def postgres():
    """This test process's throwaway PostgreSQL server (started on first use, stopped at exit)."""
    global _postgres
    if _postgres is None:
        _postgres = pg_service.ThrowawayPostgres().start(owner_pid=os.getpid())
        atexit.register(_postgres.stop)
    return _postgres


def service_env():
    """Environment for one new lastcall server (a fresh database each call) per
    $LASTCALL_TEST_SERVICES."""
    env = {}
    if "postgres" in test_services():
        env["LASTCALL_DATABASE_URL"] = postgres().create_database()
    return env


def lastcall_bin():
    path = os.environ.get("LASTCALL_BIN")
    if not path:
        raise unittest.SkipTest("LASTCALL_BIN is not set (CTest sets it to the built binary)")
    if not os.access(path, os.X_OK):
        raise AssertionError("LASTCALL_BIN=%r is not an executable file" % path)
    return path


def data_file(name):
    with open(os.path.join(DATA, name), "rb") as f:
        return f.read()


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def unique_user(prefix="user"):
    """A user id nobody else in this run uses, so tests sharing one server stay independent."""
    return "%s-%s" % (prefix, secrets.token_hex(6))


def wait_until(predicate, timeout=10.0, interval=0.03, message=None):
    """Polls predicate() until it returns something truthy; returns that value.

    Raises AssertionError (with the last value seen) when timeout seconds pass first."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        last = predicate()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError("%s: not true within %.1f s (last value: %r)"
                                 % (message or "condition", timeout, last))
        time.sleep(interval)


# ---------------------------------------------------------------------------------------------
# Money and time


def money(text):
    return Decimal(text)


def money_str(value):
    """The server's rendering of an exact amount: at least two decimals, more only when not zero."""
    value = Decimal(value)
    s = format(value.quantize(Decimal("0.0001")), "f")
    whole, _, frac = s.partition(".")
    frac = frac.rstrip("0")
    if len(frac) < 2:
        frac = frac + "0" * (2 - len(frac))
    if whole in ("-0",) and set(frac) == {"0"}:
        whole = "0"
    return "%s.%s" % (whole, frac)


def parse_time(text):
    """Parses an RFC 3339 timestamp ("2024-01-02T03:04:05.123Z") into an aware datetime."""
    if not isinstance(text, str):
        raise AssertionError("expected an RFC 3339 timestamp string, got %r" % (text,))
    m = re.match(r"^(\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2})(\.\d+)?(Z|z|[+-]\d{2}:?\d{2})$", text)
    if not m:
        raise AssertionError("not an RFC 3339 timestamp with a zone: %r" % (text,))
    base, frac, zone = m.groups()
    frac = (frac or "")[:7]  # '.' plus at most 6 digits
    if zone in ("Z", "z"):
        zone = "+00:00"
    elif ":" not in zone:
        zone = zone[:3] + ":" + zone[3:]
    return datetime.datetime.fromisoformat(base.replace(" ", "T") + frac + zone)


# ---------------------------------------------------------------------------------------------
# Tokens crafted in Python (for expired, badly signed and alg-none tokens)


def b64url(data):
    if isinstance(data, str):
        data = data.encode()
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def make_jwt(secret, claims=None, header=None, sign=True, key=None):
    header = header if header is not None else {"alg": "HS256", "typ": "JWT"}
    claims = claims if claims is not None else {}
    signing_input = b64url(json.dumps(header, separators=(",", ":"))) + "." + \
        b64url(json.dumps(claims, separators=(",", ":")))
    if not sign:
        return signing_input + "."
    k = (key if key is not None else secret)
    if isinstance(k, str):
        k = k.encode()
    sig = hmac.new(k, signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + b64url(sig)


def claims_for(user, ttl_seconds=3600, **extra):
    now = int(time.time())
    c = {"sub": user, "iat": now, "exp": now + ttl_seconds}
    c.update(extra)
    return c


# ---------------------------------------------------------------------------------------------
# HTTP


class Response(object):
    """status, headers (lower-case names) and body (parsed JSON, else bytes). Unpacks as a
    3-tuple: `status, headers, body = resp`."""

    def __init__(self, status, headers, body, raw):
        self.status = status
        self.headers = headers
        self.body = body
        self.raw = raw

    def __iter__(self):
        return iter((self.status, self.headers, self.body))

    def __repr__(self):
        shown = self.body if not isinstance(self.body, bytes) else self.body[:300]
        return "<Response %s %r>" % (self.status, shown)


def encode_multipart(fields=(), files=(), boundary=None):
    """Encodes multipart/form-data exactly as `curl -F name=value -F file=@path` does.

    fields: [(name, value)]; files: [(name, filename, content_type, bytes)].
    Returns (content_type_header, body_bytes)."""
    boundary = boundary or ("------------------------" + secrets.token_hex(12))
    out = []
    for name, value in fields:
        if isinstance(value, str):
            value = value.encode()
        out.append(b"--" + boundary.encode() + b"\r\n")
        out.append(('Content-Disposition: form-data; name="%s"\r\n\r\n' % name).encode())
        out.append(value + b"\r\n")
    for name, filename, ctype, content in files:
        out.append(b"--" + boundary.encode() + b"\r\n")
        out.append(('Content-Disposition: form-data; name="%s"; filename="%s"\r\n'
                    % (name, filename)).encode())
        if ctype:
            out.append(("Content-Type: %s\r\n" % ctype).encode())
        out.append(b"\r\n")
        out.append(content + b"\r\n")
    out.append(b"--" + boundary.encode() + b"--\r\n")
    return "multipart/form-data; boundary=" + boundary, b"".join(out)


def http_request(port, method, path, body=None, headers=None, raw=False):
    """One HTTP request on a fresh connection. Never raises on 4xx/5xx."""
    headers = dict(headers or {})
    if body is not None and not isinstance(body, (bytes, bytearray)):
        body = json.dumps(body).encode()
        headers.setdefault("Content-Type", "application/json")
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=HTTP_TIMEOUT_S)
    try:
        try:
            conn.request(method, path, body=body, headers=headers)
        except (BrokenPipeError, ConnectionResetError):
            # The server may answer (e.g. 413) and close before reading the whole body.
            pass
        resp = conn.getresponse()
        data = resp.read()
        hdrs = {k.lower(): v for k, v in resp.getheaders()}
        parsed = data
        if not raw:
            ctype = hdrs.get("content-type", "")
            if "json" in ctype or data[:1] in (b"{", b"["):
                try:
                    parsed = json.loads(data.decode("utf-8"))
                except (ValueError, UnicodeDecodeError):
                    parsed = data
        return Response(resp.status, hdrs, parsed, data)
    finally:
        conn.close()


class Client(object):
    """An HTTP client bound to one server and one bearer token (or none)."""

    def __init__(self, server, token=None):
        self.server = server
        self.token = token

    def _headers(self, headers):
        h = {}
        if self.token is not None:
            h["Authorization"] = "Bearer " + self.token
        h.update(headers or {})
        return h

    def request(self, method, path, body=None, headers=None, raw=False):
        return http_request(self.server.port, method, path, body=body,
                            headers=self._headers(headers), raw=raw)

    def get(self, path, raw=False, headers=None):
        return self.request("GET", path, raw=raw, headers=headers)

    def post(self, path, body=None, headers=None):
        return self.request("POST", path, body=body, headers=headers)

    def patch(self, path, body=None, headers=None):
        return self.request("PATCH", path, body=body, headers=headers)

    def put(self, path, body=None, headers=None):
        return self.request("PUT", path, body=body, headers=headers)

    def delete(self, path, headers=None):
        return self.request("DELETE", path, headers=headers)

    def upload(self, account_id, filename, content, content_type="text/csv", fields=None):
        """POST /files like `curl -F accountId=... -F file=@<filename>`."""
        if fields is None:
            fields = [("accountId", account_id)]
        ctype, body = encode_multipart(fields, [("file", filename, content_type, content)])
        return self.request("POST", "/files", body=body, headers={"Content-Type": ctype})

    # Convenience wrappers that assert success.

    def create_account(self, name="Checking", currency="USD"):
        r = self.post("/accounts", {"name": name, "currency": currency})
        if r.status != 201:
            raise AssertionError("POST /accounts: expected 201, got %r" % (r,))
        return r.body

    def upload_ok(self, account_id, filename, content, content_type="text/csv"):
        r = self.upload(account_id, filename, content, content_type)
        if r.status != 201:
            raise AssertionError("POST /files %s: expected 201, got %r" % (filename, r))
        return r.body

    def account(self, account_id):
        r = self.get("/accounts/" + account_id)
        if r.status != 200:
            raise AssertionError("GET /accounts/%s: expected 200, got %r" % (account_id, r))
        return r.body

    def file_transactions(self, file_id):
        r = self.get("/files/%s/transactions" % file_id)
        if r.status != 200:
            raise AssertionError("GET /files/%s/transactions: expected 200, got %r" % (file_id, r))
        return r.body["transactions"]

    def coordination(self, coordination_id):
        r = self.get("/coordinations/" + coordination_id)
        if r.status != 200:
            raise AssertionError("GET /coordinations/%s: expected 200, got %r"
                                 % (coordination_id, r))
        return r.body

    def wait_coordination(self, coordination_id, status="completed", timeout=15.0):
        def check():
            c = self.coordination(coordination_id)
            return c if c.get("status") == status else None
        return wait_until(check, timeout, message="coordination %s reaches %s"
                          % (coordination_id, status))

    def wait_categorized(self, file_id, timeout=10.0):
        def check():
            txns = self.file_transactions(file_id)
            return txns if txns and all(t.get("category") is not None for t in txns) else None
        return wait_until(check, timeout, message="every transaction of %s categorized" % file_id)

    def snapshot(self):
        """What a user sees of their data: used to check that an error changed nothing."""
        out = {}
        for path in ("/files", "/accounts", "/transactions"):
            r = self.get(path)
            if r.status != 200:
                raise AssertionError("GET %s: expected 200, got %r" % (path, r))
            out[path] = r.body
        return out


# ---------------------------------------------------------------------------------------------
# Scale-out services (LASTCALL_TEST_SERVICES)
#
# LASTCALL_TEST_SERVICES is a comma list of postgres, nats and s3. For each, the first server
# started in this test process starts a throwaway instance of that service (loopback, free port,
# temporary folder; stopped when the process exits), and every server started gets the variables
# that point it there. Each Server gets its own namespace inside a shared service (its own NATS
# stream and subjects, its own S3 prefix), so the tests stay independent of one another; a test
# that wants nodes to share one passes the same values in extra_env.

S3_ACCESS_KEY = "S3RVER"  # s3rver's built-in credentials
S3_SECRET_KEY = "S3RVER"
S3_BUCKET = "lastcall-test"


def _die_with_parent():
    """In the child before exec: SIGKILL when the test process dies, even without cleanup
    (a CTest timeout), so no throwaway server outlives its tests."""
    try:
        import ctypes
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _wait_port(port, proc, what, log_path, timeout=60.0):
    # Generous: a process that exits ends the wait at once, and on a machine starved by other
    # work (a niced fresh-machine run beside builds and benchmarks) s3rver did not come up in 15 s.
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    with open(log_path, "rb") as f:
        tail = f.read().decode(errors="replace")[-3000:]
    proc.kill()
    raise AssertionError("%s did not start on port %d:\n%s" % (what, port, tail))


class NatsService(object):
    """`nats-server -js` on a free loopback port with its store in a temporary folder."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="lastcall-nats-")
        self.port = free_port()
        self.log_path = os.path.join(self.dir, "server.log")
        self.proc = None
        self.start()

    def start(self):
        exe = shutil.which("nats-server")
        if not exe:
            raise AssertionError("nats-server is not installed (make test-deps installs it)")
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [exe, "-js", "-a", "127.0.0.1", "-p", str(self.port),
                 "-sd", os.path.join(self.dir, "store")],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, preexec_fn=_die_with_parent)
        _wait_port(self.port, self.proc, "nats-server", self.log_path)

    def kill(self, wipe=False):
        """SIGKILL; with wipe the JetStream store goes too (a server that lost its disk)."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None
        if wipe:
            shutil.rmtree(os.path.join(self.dir, "store"), ignore_errors=True)

    def close(self):
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)

    def env(self, namespace):
        return {"LASTCALL_NATS_URL": "nats://127.0.0.1:%d" % self.port,
                "LASTCALL_NATS_STREAM": "LASTCALL_%s" % namespace,
                "LASTCALL_NATS_SUBJECT_PREFIX": "lastcall.%s.events" % namespace,
                # Short enough that a test which kills a server sees redelivery and republishing
                # within its waits.
                "LASTCALL_NATS_ACK_WAIT_MS": "2000",
                "LASTCALL_NATS_REPUBLISH_AFTER_MS": "3000"}


class S3Service(object):
    """s3rver (npm, pinned in tests/integration/s3server) on a free loopback port; one bucket."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="lastcall-s3-")
        self.port = free_port()
        self.log_path = os.path.join(self.dir, "server.log")
        exe = os.path.join(HERE, "s3server", "node_modules", ".bin", "s3rver")
        if not os.path.exists(exe):
            raise AssertionError("%s is missing (make node-tools installs it)" % exe)
        env = dict(os.environ)
        # s3rver makes continuation tokens with DES, which Node 17+ (OpenSSL 3) only has in its
        # legacy provider.
        env["NODE_OPTIONS"] = "--openssl-legacy-provider"
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [exe, "-d", os.path.join(self.dir, "data"), "-a", "127.0.0.1", "-p", str(self.port),
                 "--silent", "--no-vhost-buckets", "--configure-bucket", S3_BUCKET],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env,
                preexec_fn=_die_with_parent)
        _wait_port(self.port, self.proc, "s3rver", self.log_path)

    def close(self):
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None
        shutil.rmtree(self.dir, ignore_errors=True)

    def env(self, namespace):
        return {"LASTCALL_BLOB_URL": "s3://%s?endpoint=http://127.0.0.1:%d&region=us-east-1&prefix=%s/blobs/"
                                     % (S3_BUCKET, self.port, namespace),
                "AWS_ACCESS_KEY_ID": S3_ACCESS_KEY,
                "AWS_SECRET_ACCESS_KEY": S3_SECRET_KEY}

    def objects_holding(self, namespace, content):
        """Stored objects under the namespace's prefix whose bytes are exactly content."""
        found = []
        root = os.path.join(self.dir, "data", S3_BUCKET, namespace)
        for dirpath, _, names in os.walk(root):
            for n in names:
                if not n.endswith("._S3rver_object"):
                    continue
                p = os.path.join(dirpath, n)
                try:
                    if os.path.getsize(p) == len(content):
                        with open(p, "rb") as f:
                            if f.read() == content:
                                found.append(p)
                except OSError:
                    pass
        return found


SERVICE_TYPES = {"nats": NatsService, "s3": S3Service}
_services = {}


def test_services():
    """The names in LASTCALL_TEST_SERVICES (validated). `postgres` gives each Server a database of
    its own (service_env); the others are shared and namespaced per Server (services_env)."""
    names = [n.strip() for n in os.environ.get("LASTCALL_TEST_SERVICES", "").split(",") if n.strip()]
    known = set(SERVICE_TYPES) | {"postgres"}
    for n in names:
        if n not in known:
            raise AssertionError("LASTCALL_TEST_SERVICES: unknown service %r (known: %s)"
                                 % (n, ", ".join(sorted(known))))
    return names


def service(name):
    """The running instance of a service of LASTCALL_TEST_SERVICES, started on first use."""
    if name not in _services:
        _services[name] = SERVICE_TYPES[name]()
    return _services[name]


def services_env(namespace):
    env = {}
    for name in test_services():
        if name in SERVICE_TYPES:
            env.update(service(name).env(namespace))
    return env


def _close_services():
    for svc in _services.values():
        try:
            svc.close()
        except Exception:  # noqa: BLE001 - best effort at exit
            pass


import atexit  # noqa: E402
atexit.register(_close_services)


# ---------------------------------------------------------------------------------------------
# The server process


class Server(object):
    """One `lastcall serve` process on a free port with its own data folder.

    start() waits for GET /healthz to answer 200; stop() sends SIGTERM and expects exit 0 within
    10 s; kill() sends SIGKILL; restart() starts again on the same data folder and port."""

    def __init__(self, extra_env=None, secret=None, secret_in_env=True):
        self.bin = lastcall_bin()
        self.secret_in_env = secret_in_env
        self.data_dir = tempfile.mkdtemp(prefix="lastcall-it-")
        self.port = free_port()
        self.secret = secret or secrets.token_hex(32)
        self.extra_env = dict(extra_env or {})
        # The scale-out services' settings (e.g. LASTCALL_DATABASE_URL): the database belongs to
        # this Server like its data folder, so a restart finds its data again.
        self.service_env = service_env()
        # This server's own stream, subjects and blob prefix in shared scale-out services.
        self.namespace = "n" + secrets.token_hex(5)
        self.proc = None
        self.generation = 0
        self.log_path = None
        self.out_path = None
        self._tokens = {}

    # -- environment and paths

    @property
    def db_path(self):
        return os.path.join(self.data_dir, "lastcall.db")

    @property
    def blob_dir(self):
        return os.path.join(self.data_dir, "blobs")

    def env(self, extra_env=None):
        env = dict(os.environ)
        for k in ("ENABLE_EVENT_PUBLISHING", "COORDINATION_TIMEOUT_MINUTES", "EXPECTED_CONSUMERS",
                  "LASTCALL_MAX_UPLOAD_BYTES", "LASTCALL_TEST_DELETION_DELAY_MS",
                  "DELETION_GRACE_MINUTES", "LASTCALL_RECEIPT_KEY_FILE", "LASTCALL_DATABASE_URL"):
            env.pop(k, None)
        env.update(self.service_env)
        env["LASTCALL_DATA_DIR"] = self.data_dir
        env["LASTCALL_LISTEN"] = "127.0.0.1:%d" % self.port
        env.pop("LASTCALL_JWT_SECRET", None)
        if self.secret_in_env:
            env["LASTCALL_JWT_SECRET"] = self.secret
        env.update(services_env(self.namespace))
        # Tests read the outbox and processed records after the fact: keep them for a day unless a
        # test (or the caller's environment) chooses the retention (test_retention, the soak).
        env.setdefault("LASTCALL_OUTBOX_RETENTION_SECONDS", "86400")
        env.update(self.extra_env if extra_env is None else extra_env)
        return env

    # -- lifecycle

    def start(self, extra_env=None):
        """Starts serve (extra_env replaces the constructor's extra env when given)."""
        if extra_env is not None:
            self.extra_env = dict(extra_env)
        assert self.proc is None, "server already running"
        self.generation += 1
        self.log_path = os.path.join(self.data_dir, "stderr.%d.log" % self.generation)
        self.out_path = os.path.join(self.data_dir, "stdout.%d.log" % self.generation)
        with open(self.log_path, "wb") as err, open(self.out_path, "wb") as out:
            self.proc = subprocess.Popen([self.bin, "serve"], env=self.env(), stdin=subprocess.DEVNULL,
                                         stdout=out, stderr=err, cwd=self.data_dir)
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            rc = self.proc.poll()
            if rc is not None:
                self.proc = None
                raise AssertionError("lastcall serve exited with %s before answering /healthz:\n%s"
                                     % (rc, self.output_tail()))
            try:
                r = http_request(self.port, "GET", "/healthz")
                if r.status == 200:
                    return self
            except (OSError, http.client.HTTPException):
                pass
            if time.monotonic() >= deadline:
                self.kill()
                raise AssertionError("GET /healthz did not answer 200 within %.0f s:\n%s"
                                     % (START_TIMEOUT_S, self.output_tail()))
            time.sleep(0.03)

    def stop(self):
        """SIGTERM; asserts a clean exit (status 0) within 10 s."""
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise AssertionError("lastcall serve did not exit within %.0f s of SIGTERM:\n%s"
                                 % (STOP_TIMEOUT_S, self.output_tail()))
        if rc != 0:
            raise AssertionError("lastcall serve exited with %s after SIGTERM (expected 0):\n%s"
                                 % (rc, self.output_tail()))

    def kill(self):
        """SIGKILL: a crash, nothing gets to clean up."""
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    def restart(self, extra_env=None):
        self.stop()
        return self.start(extra_env)

    def cleanup(self):
        """Kills a still-running server and removes the data folder (unless LASTCALL_KEEP_DATA)."""
        self.kill()
        if os.environ.get("LASTCALL_KEEP_DATA"):
            print("kept data folder %s" % self.data_dir)
            return
        shutil.rmtree(self.data_dir, ignore_errors=True)

    @property
    def running(self):
        return self.proc is not None and self.proc.poll() is None

    # -- tokens and clients

    def run_cli(self, *args, extra_env=None, timeout=10):
        return subprocess.run([self.bin] + list(args), env=self.env(extra_env),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)

    def token_output(self, user, ttl="1h", role=None):
        args = ["token", "--user", user, "--ttl", ttl]
        if role:
            args += ["--role", role]
        p = self.run_cli(*args)
        if p.returncode != 0:
            raise AssertionError("lastcall %s exited %d: %s" % (" ".join(args), p.returncode,
                                                              p.stderr.decode(errors="replace")))
        return p.stdout.decode()

    def token(self, user, ttl="1h", role=None):
        key = (user, ttl, role)
        if key not in self._tokens:
            out = self.token_output(user, ttl, role)
            tok = out.strip()
            if not JWT_RE.match(tok):
                raise AssertionError("lastcall token printed %r, not a JWT" % out)
            self._tokens[key] = tok
        return self._tokens[key]

    def client(self, user=None, token=None):
        if token is None and user is not None:
            token = self.token(user)
        return Client(self, token)

    def py_token(self, user, ttl_seconds=3600, **extra):
        """A valid HS256 token crafted here with the server's secret."""
        return make_jwt(self.secret, claims_for(user, ttl_seconds, **extra))

    # -- logs

    def output_tail(self, n=40):
        text = []
        for p in (self.out_path, self.log_path):
            if p and os.path.exists(p):
                with open(p, "rb") as f:
                    lines = f.read().decode(errors="replace").splitlines()
                text.append("--- %s (last %d lines)\n%s" % (os.path.basename(p), n,
                                                             "\n".join(lines[-n:])))
        return "\n".join(text)

    def log_text(self, all_generations=True):
        parts = []
        gens = range(1, self.generation + 1) if all_generations else [self.generation]
        for g in gens:
            for name in ("stderr.%d.log" % g, "stdout.%d.log" % g):
                p = os.path.join(self.data_dir, name)
                if os.path.exists(p):
                    with open(p, "rb") as f:
                        parts.append(f.read().decode(errors="replace"))
        return "\n".join(parts)

    def log_lines(self, generation=None):
        """The stderr lines of one run (default: current), as (raw, parsed-or-None)."""
        g = generation or self.generation
        p = os.path.join(self.data_dir, "stderr.%d.log" % g)
        out = []
        if os.path.exists(p):
            with open(p, "rb") as f:
                for line in f.read().decode(errors="replace").splitlines():
                    if not line.strip():
                        continue
                    try:
                        obj = json.loads(line)
                    except ValueError:
                        obj = None
                    out.append((line, obj if isinstance(obj, dict) else None))
        return out

    def logs(self):
        """Every JSON log object of every run of this server, in order."""
        out = []
        for g in range(1, self.generation + 1):
            out.extend(obj for _, obj in self.log_lines(g) if obj is not None)
        return out

    # -- blobs

    def blobs_holding(self, content):
        """Paths of the stored blobs whose bytes are exactly content: files under
        $LASTCALL_DATA_DIR/blobs, or the S3 server's objects under this server's prefix."""
        if "s3" in test_services():
            return service("s3").objects_holding(self.namespace, content)
        found = []
        for root, _, names in os.walk(self.blob_dir):
            for n in names:
                p = os.path.join(root, n)
                try:
                    if os.path.getsize(p) != len(content):
                        continue
                    with open(p, "rb") as f:
                        if f.read() == content:
                            found.append(p)
                except OSError:
                    pass
        return found

    # -- outbox

    @property
    def database_url(self):
        """The PostgreSQL database of this server, or None when it uses its SQLite file."""
        return self.service_env.get("LASTCALL_DATABASE_URL")

    def query(self, sql):
        """Rows of a read-only query (portable SQL, no parameters) on whichever database this
        server uses, as dicts; [] before the SQLite file exists."""
        if self.database_url:
            return pg_service.query_json(self.database_url, sql)
        if not os.path.exists(self.db_path):
            return []
        conn = sqlite3.connect("file:%s?mode=ro" % self.db_path, uri=True, timeout=5)
        try:
            conn.row_factory = sqlite3.Row
            return [dict(r) for r in conn.execute(sql).fetchall()]
        finally:
            conn.close()

    def outbox(self):
        """Rows of the outbox in delivery order, data parsed: [{seq,id,type,source,subject,time,data}]."""
        rows = self.query("SELECT seq, id, type, source, subject, time, data FROM outbox ORDER BY seq")
        out = []
        for r in rows:
            d = dict(r)
            raw = d["data"]
            if isinstance(raw, bytes):
                raw = raw.decode()
            d["raw_data"] = raw
            d["data"] = json.loads(raw) if raw else None
            out.append(d)
        return out

    def events_for(self, coordination_id=None, file_id=None):
        out = []
        for e in self.outbox():
            data = e["data"] or {}
            if coordination_id is not None and data.get("coordinationId") == coordination_id:
                out.append(e)
            elif file_id is not None and data.get("fileId") == file_id:
                out.append(e)
        return out

    def file_deleted_events(self, coordination_id):
        return [e for e in self.events_for(coordination_id) if e["type"] == "file.deleted"]


class Assertions(object):
    """Assertions about responses, mixed into unittest.TestCase subclasses."""

    def assertError(self, resp, status, code, message_contains=()):
        """An error response: the status, body exactly {"error": code, "message": text}, and an
        X-Request-Id header."""
        self.assertEqual(resp.status, status, "expected %d %s, got %r" % (status, code, resp))
        self.assertIsInstance(resp.body, dict, "error body is not JSON: %r" % (resp,))
        self.assertEqual(set(resp.body.keys()), {"error", "message"},
                         "error body must be exactly {error, message}: %r" % (resp.body,))
        self.assertEqual(resp.body["error"], code, "wrong error code in %r" % (resp.body,))
        self.assertIsInstance(resp.body["message"], str)
        self.assertTrue(resp.body["message"].strip(), "empty error message")
        for part in ([message_contains] if isinstance(message_contains, str) else message_contains):
            self.assertIn(part, resp.body["message"])
        self.assertTrue(resp.headers.get("x-request-id"), "no X-Request-Id on %r" % (resp,))

    def assertStatus(self, resp, status):
        self.assertEqual(resp.status, status, "expected %d, got %r" % (status, resp))
        self.assertTrue(resp.headers.get("x-request-id"), "no X-Request-Id on %r" % (resp,))

    def assertUuid4(self, value):
        self.assertIsInstance(value, str)
        self.assertRegex(value, UUID4_RE)

    def assertAccountDerived(self, client, account_id, balance, count, last_date):
        acc = client.account(account_id)
        self.assertEqual(acc["balance"], balance, "balance of %s" % acc)
        self.assertEqual(acc["transactionCount"], count, "transactionCount of %s" % acc)
        self.assertEqual(acc["lastTransactionDate"], last_date, "lastTransactionDate of %s" % acc)
        return acc


class ServerPool(object):
    """Mixed into a TestCase class whose tests start servers of their own (self.start(env));
    every one of them is stopped (asserting a clean exit) and removed after the class."""

    servers = []

    @classmethod
    def tearDownClass(cls):
        try:
            for s in cls.servers:
                try:
                    s.stop()
                finally:
                    s.cleanup()
        finally:
            cls.servers = []

    def start(self, env=None):
        server = Server(env or {})
        type(self).servers.append(server)
        server.start()
        return server


class ServerTestCase(Assertions, unittest.TestCase):
    """A test case class with one server for the whole class (SERVER_ENV configures it)."""

    SERVER_ENV = {}
    server = None

    @classmethod
    def setUpClass(cls):
        cls.server = Server(cls.SERVER_ENV)
        try:
            cls.server.start()
        except BaseException:
            cls.server.cleanup()
            raise

    @classmethod
    def tearDownClass(cls):
        try:
            cls.server.stop()
        finally:
            cls.server.cleanup()


FILE_FIELDS = {"fileId", "accountId", "name", "contentType", "sizeBytes", "sha256",
               "transactionCount", "status", "uploadedAt"}
TRANSACTION_FIELDS = {"transactionId", "accountId", "fileId", "date", "description", "amount",
                      "currency", "merchant", "category"}
ACCOUNT_FIELDS = {"accountId", "name", "currency", "balance", "transactionCount",
                  "lastTransactionDate"}
COORDINATION_FIELDS = {"coordinationId", "fileId", "status", "outcome", "expectedConsumers",
                       "consumers", "startedAt", "deadlineAt", "completedAt", "notBefore",
                       "holdReason", "cancelledAt", "veto", "override", "verification"}


def random_uuid():
    return str(uuid.uuid4())


def make_csv(rows, header=("date", "description", "amount", "currency", "merchant")):
    """CSV bytes (RFC 4180 quoting, LF line ends) from rows of field values."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    for row in rows:
        w.writerow(row)
    return buf.getvalue().encode()


def many_rows(n, currency="USD", start=(2023, 1, 1), prefix="Row"):
    """n distinct rows (date, description, amount, currency, merchant) spread over dates."""
    base = datetime.date(*start)
    rows = []
    for i in range(n):
        d = base + datetime.timedelta(days=i % 365)
        amount = "%s%d.%02d" % ("-" if i % 3 else "", (i * 7) % 500, i % 100)
        rows.append((d.isoformat(), "%s %d" % (prefix, i), amount, currency, "Shop %d" % (i % 17)))
    return rows


def expected_from_rows(rows):
    """rows: [(date, amount_str)] -> (balance_str, count, last_date_or_None)."""
    total = sum((Decimal(a) for _, a in rows), Decimal(0))
    last = max((d for d, _ in rows), default=None)
    return money_str(total), len(rows), last
