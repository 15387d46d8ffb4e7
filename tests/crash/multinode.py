#!/usr/bin/env python3
"""Multi-node test: three `lastcall serve` nodes on one PostgreSQL database, a three-server NATS
JetStream cluster (the stream and its consumers replicated three times) and one S3-compatible
server, all throwaway processes on loopback. Users import files and ask for deletions through
random nodes while consumers complete, fail and stay silent (LASTCALL_TEST_CONSUMER_FAULTS, as the
crash harness); during the run lastcall nodes are killed with SIGKILL and restarted, and NATS
servers are killed with SIGKILL and restarted on their store.

The NATS servers run the configuration of deploy/nats (nats-1.conf .. nats-3.conf and
accounts.conf, with its accounts and subject permissions; the nodes connect as user `lastcall`),
with only the addresses, ports and store folders rewritten for loopback, and PostgreSQL runs the
settings of deploy/postgresql/lastcall.conf but memory, address and disk durability: the example
deployment is what this test proves works.

At the end the checks of tests/crash/workload.py (shared with the crash harness) must find no
violation: every deletion that got a 202 finished exactly once, nothing else was touched, every
derived value is exact, no blob is left without its file, no coordination waits past its deadline
and no deadline fired twice. It prints its figures and exits 1 on any violation.

Usage: multinode.py [--kills N] [--nats-kills N] ... (see --help). CTest runs the defaults
(`scaleout.multinode`, labels integration and scaleout). Python 3 standard library only, plus
PostgreSQL's server programs, nats-server and s3rver (installed by `make test-deps` and
`make node-tools`).
"""

import http.client
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time

import workload
from workload import harness, pg_service

ROOT = os.path.abspath(os.path.join(workload.HERE, "..", ".."))
DEPLOY_NATS = os.path.join(ROOT, "deploy", "nats")
DEPLOY_POSTGRES_CONF = os.path.join(ROOT, "deploy", "postgresql", "lastcall.conf")
# Settings of deploy/postgresql/lastcall.conf a throwaway server on a test machine replaces: its
# own loopback address, and memory and disk durability sized for a real server (the test server
# runs with fsync off, as every test server here).
POSTGRES_TEST_OVERRIDES = {"listen_addresses", "shared_buffers", "effective_cache_size", "fsync",
                           "full_page_writes"}


def deploy_postgres_settings():
    """The settings of deploy/postgresql/lastcall.conf, but POSTGRES_TEST_OVERRIDES."""
    out = {}
    with open(DEPLOY_POSTGRES_CONF) as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            name, sep, value = line.partition("=")
            if not sep:
                raise AssertionError("%s: cannot read %r" % (DEPLOY_POSTGRES_CONF, line))
            if name.strip() not in POSTGRES_TEST_OVERRIDES:
                out[name.strip()] = value.strip()
    return out
STREAM = "LASTCALL_EVENTS"  # the names deploy/nats/accounts.conf grants
SUBJECT_PREFIX = "lastcall.events"


class NatsCluster(object):
    """Three nats-server processes running deploy/nats/nats-N.conf rewritten for loopback: client,
    route and monitoring ports chosen free, the store in a temporary folder. Passwords are random,
    passed in the environment as accounts.conf expects."""

    def __init__(self, size=3):
        self.dir = tempfile.mkdtemp(prefix="lastcall-natscluster-")
        self.size = size
        self.client_ports = [harness.free_port() for _ in range(size)]
        self.route_ports = [harness.free_port() for _ in range(size)]
        self.http_ports = [harness.free_port() for _ in range(size)]
        # nats-server parses a variable's value as a configuration value: one that starts with a
        # digit would be read as a number, so each password starts with letters.
        password = lambda: "pw" + secrets.token_hex(16)  # noqa: E731
        self.password = password()
        self.env = dict(os.environ)
        self.env.update({"LASTCALL_NATS_PASSWORD": self.password,
                         "ANALYTICS_NATS_PASSWORD": password(),
                         "CATEGORIZATION_NATS_PASSWORD": password(),
                         "NATS_ADMIN_PASSWORD": password()})
        shutil.copy(os.path.join(DEPLOY_NATS, "accounts.conf"), self.dir)
        self.configs = [self._write_config(i) for i in range(size)]
        self.procs = [None] * size

    def _write_config(self, i):
        with open(os.path.join(DEPLOY_NATS, "nats-%d.conf" % (i + 1))) as f:
            text = f.read()

        def sub(pattern, repl, count):
            nonlocal text
            text, n = re.subn(pattern, repl, text, flags=re.M)
            if n != count:
                raise AssertionError("deploy/nats/nats-%d.conf: expected %d line(s) matching %r, "
                                     "found %d (the test rewrites them for loopback)"
                                     % (i + 1, count, pattern, n))
        store = os.path.join(self.dir, "store-%d" % (i + 1))
        sub(r"^listen: 0\.0\.0\.0:4222$", "listen: 127.0.0.1:%d" % self.client_ports[i], 1)
        sub(r"^http: 127\.0\.0\.1:8222$", "http: 127.0.0.1:%d" % self.http_ports[i], 1)
        sub(r"^(\s*)store_dir: /var/lib/nats/jetstream$", r'\1store_dir: "%s"' % store, 1)
        sub(r"^(\s*)listen: 0\.0\.0\.0:6222$", r"\1listen: 127.0.0.1:%d" % self.route_ports[i], 1)
        sub(r"nats-route://nats-(\d):6222",
            lambda m: "nats-route://127.0.0.1:%d" % self.route_ports[int(m.group(1)) - 1], self.size)
        path = os.path.join(self.dir, "nats-%d.conf" % (i + 1))
        with open(path, "w") as f:
            f.write(text)
        return path

    def log_path(self, i):
        return os.path.join(self.dir, "nats-%d.log" % (i + 1))

    def start(self, i):
        exe = shutil.which("nats-server")
        if not exe:
            raise AssertionError("nats-server is not installed (make test-deps installs it)")
        with open(self.log_path(i), "ab") as log:
            self.procs[i] = subprocess.Popen([exe, "-c", self.configs[i]], env=self.env,
                                             stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                             preexec_fn=harness._die_with_parent)
        harness._wait_port(self.client_ports[i], self.procs[i], "nats-server %d" % (i + 1),
                           self.log_path(i))

    def start_all(self):
        for i in range(self.size):
            self.start(i)
        for i in range(self.size):
            self.wait_healthy(i)

    def wait_healthy(self, i, timeout=30.0):
        """Until the server's /healthz says its JetStream is current (the cluster has a meta
        leader and the server caught up)."""
        def healthy():
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.http_ports[i], timeout=2)
                conn.request("GET", "/healthz")
                return conn.getresponse().status == 200
            except (OSError, http.client.HTTPException):
                return False
        harness.wait_until(healthy, timeout, 0.1, message="nats-server %d healthy" % (i + 1))

    def kill(self, i):
        if self.procs[i] is not None:
            self.procs[i].kill()
            self.procs[i].wait()
            self.procs[i] = None

    def url(self):
        """LASTCALL_NATS_URL: every server, comma-separated, each with the node's credentials."""
        return ",".join("nats://lastcall:%s@127.0.0.1:%d" % (self.password, p)
                        for p in self.client_ports)

    def close(self, keep=False):
        for i in range(self.size):
            self.kill(i)
        if not keep:
            shutil.rmtree(self.dir, ignore_errors=True)


class MultiNodeRun(workload.Workload):
    name = "multinode"

    @classmethod
    def add_arguments(cls, p):
        p.add_argument("--nodes", type=int, default=3)
        p.add_argument("--nats-kills", type=int, default=3,
                       help="at least this many NATS servers SIGKILLed and restarted")
        p.add_argument("--down-max-s", type=float, default=2.0,
                       help="a killed process stays down up to this long")

    def __init__(self, args):
        workload.Workload.__init__(self, args)
        self.pg = None
        self.nats = None
        self.s3 = None
        self.nats_kills = 0

    def start_services(self):
        self.started = time.monotonic()
        self.pg = pg_service.ThrowawayPostgres(settings=deploy_postgres_settings()).start(
            owner_pid=os.getpid())
        url = self.pg.create_database()
        self.nats = NatsCluster()
        self.nats.start_all()
        self.s3 = harness.S3Service()
        secret = secrets.token_hex(32)
        env = self.server_env()
        env.update(self.s3.env("cluster"))
        env.update({
            "LASTCALL_NATS_URL": self.nats.url(),
            "LASTCALL_NATS_REPLICAS": "3",
            "LASTCALL_NATS_STREAM": STREAM,
            "LASTCALL_NATS_SUBJECT_PREFIX": SUBJECT_PREFIX,
            # Short, so that a message a killed node held is redelivered, and one a killed NATS
            # server lost is republished, within the run.
            "LASTCALL_NATS_ACK_WAIT_MS": "2000",
            "LASTCALL_NATS_REPUBLISH_AFTER_MS": "4000",
        })
        for _ in range(self.args.nodes):
            node = harness.Server(env, secret=secret)
            node.service_env = {"LASTCALL_DATABASE_URL": url}
            self.nodes.append(node)
        self.store = workload.PostgresStore(url)
        self.blobs = workload.S3rverBlobs(
            os.path.join(self.s3.dir, "data", harness.S3_BUCKET, "cluster", "blobs"))
        for node in self.nodes:
            node.start()

    def chaos(self):
        """Alternately SIGKILLs a random lastcall node and a random NATS server, each down for a
        moment, until the work is done and enough of both happened."""
        turn = 0
        while not (self.work_done.is_set() and self.kills >= self.args.kills and
                   self.nats_kills >= self.args.nats_kills):
            time.sleep(self.rng.uniform(self.args.kill_min_s, self.args.kill_max_s))
            node_turn = (turn % 2 == 0 and self.kills < self.args.kills) or \
                self.nats_kills >= self.args.nats_kills
            turn += 1
            if node_turn:
                n = self.rng.randrange(len(self.nodes))
                self.log("SIGKILL lastcall node %d" % (n + 1))
                self.nodes[n].kill()
                self.kills += 1
                time.sleep(self.rng.uniform(0, self.args.down_max_s))
                self.nodes[n].start()
                self.log("lastcall node %d restarted" % (n + 1))
            else:
                i = self.rng.randrange(self.nats.size)
                self.log("SIGKILL nats-server %d" % (i + 1))
                self.nats.kill(i)
                self.nats_kills += 1
                time.sleep(self.rng.uniform(0, self.args.down_max_s))
                self.nats.start(i)
                self.nats.wait_healthy(i)
                self.log("nats-server %d restarted and healthy" % (i + 1))

    def final_recovery(self):
        # The final state is a recovery: one more node crash while the last work settles.
        n = self.rng.randrange(len(self.nodes))
        self.log("SIGKILL lastcall node %d (the last)" % (n + 1))
        self.nodes[n].kill()
        self.kills += 1
        self.nodes[n].start()
        self.log("lastcall node %d restarted" % (n + 1))

    def log(self, text):
        print("%7.2f s  %s" % (time.monotonic() - self.started, text), flush=True)

    def summary(self, figures):
        print("deletions requested: %d, lastcall nodes killed: %d, NATS servers killed: %d, "
              "deadlines fired: %d, violations found: %d"
              % (figures["deletionsRequested"], self.kills, self.nats_kills,
                 figures["deadlinesFired"], len(self.violations)))

    def run(self):
        ok, figures = workload.Workload.run(self)
        figures["natsServersKilled"] = self.nats_kills
        figures["nodes"] = len(self.nodes)
        return ok, figures

    def cleanup(self):
        keep = bool(os.environ.get("LASTCALL_KEEP_DATA"))
        for node in self.nodes:
            node.cleanup()
        if self.nats:
            self.nats.close(keep)
            if keep:
                print("kept NATS cluster folder %s" % self.nats.dir)
        if self.s3:
            self.s3.close()
        if self.pg:
            self.pg.stop()


if __name__ == "__main__":
    os.environ.pop("LASTCALL_TEST_SERVICES", None)  # this test starts its own engines
    sys.exit(workload.main(MultiNodeRun, __doc__.split("\n\n")[0], kills=4, users=5,
                           kill_min_s=2.0, kill_max_s=4.0, timeout_minutes=0.1))
