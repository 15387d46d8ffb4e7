"""A throwaway PostgreSQL server for tests: `initdb` + `pg_ctl` in a temporary folder, listening on
a free loopback port, removed again when its owner process ends (even by SIGKILL: a watcher
process stops it).

As a module: `ThrowawayPostgres().start()`, then `.create_database()` returns the URL of a fresh,
empty database. As a command (used by the C++ tests):

    python3 pg_service.py start OWNER_PID   prints {"url": ..., "dir": ...} once the server answers
    python3 pg_service.py createdb DIR       prints the URL of a fresh database
    python3 pg_service.py stop DIR

The server belongs to an unprivileged user: when run as root (CI) everything runs as the
`postgres` system user that Debian's postgresql package creates, because initdb refuses root.
Python 3 standard library only; PostgreSQL's own programs do the work.
"""

import glob
import json
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time

SUPERUSER = "lastcall"
START_ATTEMPTS = 3


def _bindir():
    if os.environ.get("LASTCALL_PG_BINDIR"):
        return os.environ["LASTCALL_PG_BINDIR"]
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0)
    if not found:
        raise RuntimeError("no PostgreSQL server programs found (Debian package postgresql; "
                           "`make test` installs it)")
    return os.path.dirname(found[-1])


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_server_user(argv):
    """argv run as the unprivileged owner of the server (postgres when we are root)."""
    if os.geteuid() != 0:
        return argv
    return ["runuser", "-u", "postgres", "--"] + argv


def _run(argv, **kw):
    p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **kw)
    if p.returncode != 0:
        raise RuntimeError("%s failed (%d): %s" % (" ".join(argv), p.returncode,
                                                   p.stdout.decode(errors="replace")[-2000:]))
    return p.stdout.decode(errors="replace")


class ThrowawayPostgres(object):
    """One server. durable=False (tests) turns fsync off; the benchmark keeps PostgreSQL's
    defaults (fsync on, synchronous_commit on). settings: more postgresql.conf settings (name ->
    value as written in a configuration file), applied after this class's own."""

    def __init__(self, durable=False, directory=None, port=None, settings=None):
        self.durable = durable
        self.settings = dict(settings or {})
        self.dir = directory
        self.port = port
        self.bindir = _bindir()
        self.watcher = None

    @property
    def data(self):
        return os.path.join(self.dir, "data")

    def url(self, database):
        return "postgresql://%s@127.0.0.1:%d/%s" % (SUPERUSER, self.port, database)

    def start(self, owner_pid=None):
        self.dir = tempfile.mkdtemp(prefix="lastcall-pg-")
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        _run(_as_server_user([os.path.join(self.bindir, "initdb"), "-D", self.data, "-U", SUPERUSER,
                              "-A", "trust", "-E", "UTF8", "--no-locale", "--no-sync"]))
        settings = {
            "listen_addresses": "127.0.0.1",
            "unix_socket_directories": self.dir,
            "max_connections": "200",
            "fsync": "on" if self.durable else "off",
            "full_page_writes": "on" if self.durable else "off",
        }
        with open(os.path.join(self.data, "postgresql.auto.conf"), "a") as f:
            for k, v in settings.items():
                f.write("%s = '%s'\n" % (k, v))
            for k, v in self.settings.items():
                f.write("%s = %s\n" % (k, v))
        last = None
        for _ in range(START_ATTEMPTS):  # the free port may be taken between choosing and binding
            self.port = _free_port()
            try:
                _run(_as_server_user([os.path.join(self.bindir, "pg_ctl"), "-D", self.data, "-l",
                                      os.path.join(self.dir, "server.log"), "-w", "-t", "30",
                                      "-o", "-p %d" % self.port, "start"]))
                break
            except RuntimeError as e:
                last = e
        else:
            self.stop()
            raise last
        if owner_pid:
            self.watcher = subprocess.Popen([sys.executable, os.path.abspath(__file__), "watch", str(owner_pid),
                              self.dir], start_new_session=True, stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return self

    def psql(self, sql, database="postgres"):
        """Runs sql with psql; returns its unaligned, tuples-only output."""
        return _run(["psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
                     "-h", "127.0.0.1", "-p", str(self.port), "-U", SUPERUSER, "-d", database,
                     "-c", sql])

    def create_database(self):
        name = "lastcall_" + secrets.token_hex(6)
        self.psql('CREATE DATABASE "%s"' % name)
        return self.url(name)

    def stop(self):
        if not self.dir:
            return
        if os.path.exists(os.path.join(self.data, "postmaster.pid")):
            subprocess.run(_as_server_user([os.path.join(self.bindir, "pg_ctl"), "-D", self.data,
                                            "-m", "immediate", "-w", "stop"]),
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir = None
        if self.watcher is not None:  # it sees the folder gone within a second and exits
            try:
                self.watcher.wait(3)
            except subprocess.TimeoutExpired:
                self.watcher.kill()
                self.watcher.wait()
            self.watcher = None


def query_json(url, sql):
    """Rows of sql (a SELECT) on the database at url, as a list of dicts (via psql and json_agg,
    so that every value keeps its type and text may hold any character)."""
    out = _run(["psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", url, "-c",
                "SELECT COALESCE(json_agg(q), '[]'::json) FROM (%s) q" % sql])
    return json.loads(out)


def _port_of(directory):
    with open(os.path.join(directory, "data", "postmaster.pid")) as f:
        return int(f.read().splitlines()[3])


def main(argv):
    cmd = argv[1] if len(argv) > 1 else ""
    if cmd == "start":
        pg = ThrowawayPostgres().start(owner_pid=int(argv[2]) if len(argv) > 2 else None)
        print(json.dumps({"url": pg.url("postgres"), "dir": pg.dir, "port": pg.port}), flush=True)
        return 0
    if cmd == "createdb":
        pg = ThrowawayPostgres(directory=argv[2], port=_port_of(argv[2]))
        print(pg.create_database(), flush=True)
        return 0
    if cmd == "stop":
        ThrowawayPostgres(directory=argv[2]).stop()
        return 0
    if cmd == "watch":
        owner, directory = int(argv[2]), argv[3]
        while os.path.isdir(directory):
            try:
                os.kill(owner, 0)
            except ProcessLookupError:
                ThrowawayPostgres(directory=directory).stop()
                return 0
            except PermissionError:
                pass
            time.sleep(1.0)
        return 0
    sys.stderr.write(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
