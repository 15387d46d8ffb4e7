"""Raw-socket HTTP for the hostile-input and security tests: what http.client cannot send
(broken request lines, conflicting lengths, trickled bytes, bytes that are not UTF-8), and the
route table of src/http/api.cc that those tests cover.

Python 3 standard library only.
"""

import os
import re
import socket
import time

HERE = os.path.dirname(os.path.abspath(__file__))
API_CC = os.path.join(HERE, "..", "..", "src", "http", "api.cc")


class RawResponse(object):
    """One response read off a raw socket: status (int), headers (lower-case names), body (bytes)."""

    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    def __repr__(self):
        return "<RawResponse %s %r>" % (self.status, self.body[:200])


class RawConnection(object):
    """A TCP connection to the server on which the test writes exact bytes."""

    def __init__(self, port, timeout=10.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""

    def send(self, data):
        """Writes data; False when the server already closed (EPIPE/ECONNRESET)."""
        try:
            self.sock.sendall(data)
            return True
        except (BrokenPipeError, ConnectionResetError):
            return False

    def _fill(self):
        try:
            chunk = self.sock.recv(65536)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            return False
        self.buf += chunk
        return True

    def read_response(self):
        """The next response, or None when the server closed without (another) one."""
        while b"\r\n\r\n" not in self.buf:
            if not self._fill():
                return None
        head, _, rest = self.buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        m = re.match(r"^HTTP/1\.[01] (\d{3})", lines[0])
        if not m:
            raise AssertionError("not an HTTP status line: %r" % lines[0])
        headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        length = int(headers.get("content-length", "0"))
        self.buf = rest
        while len(self.buf) < length:
            if not self._fill():
                raise AssertionError("connection closed inside a response body")
        body, self.buf = self.buf[:length], self.buf[length:]
        return RawResponse(int(m.group(1)), headers, body)

    def closed_by_server(self, wait=5.0):
        """True when the server closes the connection (EOF or reset) within wait seconds with no
        further bytes; False when it is still open at the end."""
        self.sock.settimeout(wait)
        try:
            chunk = self.sock.recv(65536)
        except socket.timeout:
            return False
        except ConnectionResetError:
            return True
        if chunk:
            raise AssertionError("expected the server to close, got more bytes: %r" % chunk[:200])
        return True

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def exchange(port, data, timeout=10.0):
    """Sends data on a fresh connection; returns (first response or None, closed_after).

    closed_after is True when the server closed the connection after its answer (checked for a
    short while: a kept-alive connection stays open)."""
    c = RawConnection(port, timeout)
    try:
        c.send(data)
        r = c.read_response()
        closed = True if r is None else c.closed_by_server(wait=0.5)
        return r, closed
    finally:
        c.close()


def request_bytes(method, path, headers=None, body=b"", version=b"HTTP/1.1"):
    """An HTTP/1.1 request as bytes; path and header values may be bytes (sent as they are)."""
    def b(x):
        return x if isinstance(x, bytes) else x.encode()
    out = [b(method) + b" " + b(path) + b" " + version + b"\r\n", b"Host: 127.0.0.1\r\n"]
    hdrs = dict(headers or {})
    if body and not any(k.lower() in ("content-length", "transfer-encoding") for k in hdrs):
        hdrs["Content-Length"] = str(len(body))
    for k, v in hdrs.items():
        out.append(b(k) + b": " + b(v) + b"\r\n")
    out.append(b"\r\n")
    return b"".join(out) + b(body)


def timed(fn):
    start = time.monotonic()
    value = fn()
    return value, time.monotonic() - start


# ---------------------------------------------------------------------------------------------
# The routes of src/http/api.cc


# Every (method, path template) the API serves; {id} is an id segment, {asset} a dashboard file.
ROUTES = [
    ("GET", "/healthz"),
    ("GET", "/metrics"),
    ("GET", "/dashboard"),
    ("GET", "/dashboard/{asset}"),
    ("GET", "/accounts"),
    ("POST", "/accounts"),
    ("GET", "/accounts/{id}"),
    ("GET", "/files"),
    ("POST", "/files"),
    ("GET", "/files/{id}"),
    ("DELETE", "/files/{id}"),
    ("GET", "/files/{id}/content"),
    ("GET", "/files/{id}/transactions"),
    ("GET", "/transactions"),
    ("GET", "/transactions/{id}"),
    ("PATCH", "/transactions/{id}"),
    ("GET", "/coordinations"),
    ("GET", "/coordinations/{id}"),
    ("GET", "/coordinations/{id}/timeline"),
    ("GET", "/coordinations/{id}/receipt"),
    ("POST", "/coordinations/{id}/cancel"),
    ("POST", "/coordinations/{id}/override"),
    ("GET", "/holds"),
    ("POST", "/holds"),
    ("DELETE", "/holds/{id}"),
    ("POST", "/coordinations/{id}/completions"),
    ("GET", "/consumers"),
    ("POST", "/consumers"),
    ("DELETE", "/consumers/{name}"),
    ("POST", "/consumers/{name}/heartbeat"),
    ("POST", "/consumers/{name}/rotate-secret"),
    ("GET", "/dlq"),
    ("POST", "/dlq/{id}/replay"),
    ("GET", "/.well-known/jwks.json"),
    ("GET", "/analytics/monthly"),
    ("GET", "/analytics/archive"),
    ("GET", "/categorization/mappings"),
]

PUBLIC_ROUTES = {("GET", "/healthz"), ("GET", "/metrics"), ("GET", "/dashboard"),
                 ("GET", "/dashboard/{asset}"), ("GET", "/.well-known/jwks.json")}

# Routes only an operator may use (403 for anyone else).
OPERATOR_ROUTES = {("GET", "/holds"), ("POST", "/holds"), ("DELETE", "/holds/{id}"),
                   ("GET", "/consumers"), ("POST", "/consumers"), ("DELETE", "/consumers/{name}"),
                   ("POST", "/consumers/{name}/rotate-secret"), ("GET", "/dlq"),
                   ("POST", "/dlq/{id}/replay"), ("POST", "/coordinations/{id}/override")}

# Routes that take a registered consumer's own token (lcc_...): a user's JWT there is 403.
CONSUMER_ROUTES = {("POST", "/coordinations/{id}/completions"), ("POST", "/consumers/{name}/heartbeat")}


def routes_in_api_cc(path=API_CC):
    """The (method, template) pairs that AllowedMethods() in src/http/api.cc answers, read from
    its source, so a route added there without a hostile/security case fails the tests."""
    with open(path, encoding="utf-8") as f:
        src = f.read()
    start = src.index("std::vector<std::string> AllowedMethods(")
    end = src.index("\n  }\n", start)
    body = src[start:end]
    out = set()
    for cond, result in re.findall(r"if \((.*?)\)\s*\{?\s*return\s*(.*?);", body, re.S):
        first = re.search(r'a == "([\w.-]+)"', cond)
        if not first:
            continue
        methods = re.findall(r'"([A-Z]+)"', re.search(r"\{([^{}]*)\}", result).group(1))
        sizes = [int(n) for n in re.findall(r"p\.size\(\) == (\d)", cond)]
        le = re.search(r"p\.size\(\) <= (\d)", cond)
        if le:
            sizes = list(range(1, int(le.group(1)) + 1))
        for size in sizes:
            segments = [[first.group(1)]]
            for i in range(1, size):
                named = re.findall(r'p\[%d\] == "([\w.-]+)"' % i, cond)
                placeholder = ("{asset}" if first.group(1) == "dashboard" else
                               "{name}" if first.group(1) == "consumers" else "{id}")
                segments.append(named or [placeholder])
            paths = [""]
            for seg in segments:
                paths = [p + "/" + s for p in paths for s in seg]
            for p in paths:
                for m in methods:
                    out.add((m, p))
    return out
