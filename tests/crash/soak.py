#!/usr/bin/env python3
"""Soak: a steady load of imports and deletions on the real `lastcall serve` at half its measured
maximum, for --minutes (10 by default). Not part of `make test`; run with `make soak`.

1. Measures the maximum: --workers closed-loop clients (each: import a file, delete it) for
   --measure-s seconds; the maximum is the operations per second they completed (an import and a
   deletion are one operation each). --rate skips this and takes the given rate instead.
2. Offers half of it (open loop: operations are scheduled at fixed intervals and their latency is
   measured from the scheduled moment, so a stalled server is not hidden), half imports and half
   deletions of earlier imports.
3. Every minute prints the server's resident memory (VmRSS), the operations and errors of that
   minute and its latency percentiles.
   A coordination waiting more than --grace-s past its deadline at a sample is a failure; with
   --silent-percent some consumers never answer, so deadlines must fire under the load.
4. At the end it waits for the coordinations to finish and checks: no error (any answer other
   than 201/202, or no answer), resident memory after the warm-up (--warmup-minutes, 1 by
   default) stays within 10% ((max - min) / min <= 0.10), nothing left unfinished. Exit status 1
   if a check fails. The size of lastcall.db (with its WAL) and the rows of outbox and processed
   are printed beside the memory: retention prunes the bus's bookkeeping
   (LASTCALL_OUTBOX_RETENTION_SECONDS, --retention-seconds, the service's default 60), while
   tombstones, coordinations and their timelines are kept; at the end the pages of each table
   (SQLite's dbstat) show what the database holds.

Python 3 standard library only; reuses tests/integration/harness.py.
"""

import argparse
import json
import os
import queue
import random
import sqlite3
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
import harness  # noqa: E402


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS for pid %d" % pid)


def percentile(sorted_values, p):
    if not sorted_values:
        return None
    k = min(len(sorted_values) - 1, max(0, int(round(p / 100.0 * len(sorted_values) + 0.5)) - 1))
    return sorted_values[k]


class Load(object):
    def __init__(self, server, args):
        self.server = server
        self.args = args
        self.clients = []
        self.accounts = []
        for i in range(args.users):
            c = harness.Client(server, server.py_token("soak-user-%d" % i, ttl_seconds=7 * 86400))
            self.clients.append(c)
            self.accounts.append(c.create_account()["accountId"])
        self.to_delete = queue.Queue()
        self.lock = threading.Lock()
        self.counter = 0
        rows = harness.many_rows(args.rows)
        self.content = harness.make_csv(rows)

    def import_one(self):
        with self.lock:
            self.counter += 1
            n = self.counter
        i = n % len(self.clients)
        r = self.clients[i].upload(self.accounts[i], "soak-%d.csv" % n, self.content)
        if r.status != 201:
            return "POST /files answered %d %r" % (r.status, r.body)
        self.to_delete.put((i, r.body["fileId"]))
        return None

    def delete_one(self):
        try:
            i, fid = self.to_delete.get_nowait()
        except queue.Empty:
            return self.import_one()
        r = self.clients[i].delete("/files/" + fid)
        if r.status != 202:
            return "DELETE /files answered %d %r" % (r.status, r.body)
        return None

    def op(self, kind):
        """Runs one operation; returns (error text or None)."""
        try:
            return self.import_one() if kind == "import" else self.delete_one()
        except Exception as e:  # no answer: an error like any other
            return "%s: %s" % (kind, e)


def measure_max(load, args):
    stop = time.monotonic() + args.measure_s
    done = [0]
    errors = []
    lock = threading.Lock()

    def worker():
        while time.monotonic() < stop:
            for kind in ("import", "delete"):
                err = load.op(kind)
                with lock:
                    done[0] += 1
                    if err:
                        errors.append(err)

    threads = [threading.Thread(target=worker) for _ in range(args.workers)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return done[0] / (time.monotonic() - t0), errors


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--rate", type=float, default=None,
                   help="operations per second to offer (default: half the measured maximum)")
    p.add_argument("--measure-s", type=float, default=30.0)
    p.add_argument("--workers", type=int, default=4, help="closed-loop clients when measuring")
    p.add_argument("--senders", type=int, default=16, help="threads sending the open-loop load")
    p.add_argument("--users", type=int, default=8)
    p.add_argument("--rows", type=int, default=20, help="transactions per imported file")
    p.add_argument("--sample-s", type=float, default=60.0, help="seconds between memory samples")
    p.add_argument("--max-growth", type=float, default=0.10)
    p.add_argument("--warmup-minutes", type=int, default=1,
                   help="memory samples not checked (the first N minutes)")
    p.add_argument("--silent-percent", type=int, default=0,
                   help="share of files whose categorization never answers "
                        "(LASTCALL_TEST_CONSUMER_FAULTS): their deadlines must fire under load")
    p.add_argument("--timeout-minutes", type=float, default=None, help="COORDINATION_TIMEOUT_MINUTES")
    p.add_argument("--grace-s", type=float, default=10.0,
                   help="a coordination waiting this long past its deadline is a failure")
    p.add_argument("--retention-seconds", type=int, default=60,
                   help="LASTCALL_OUTBOX_RETENTION_SECONDS (the service's default)")
    p.add_argument("--json", default=None, help="also write the figures to this file")
    args = p.parse_args(argv)

    env = {"LASTCALL_LOG_LEVEL": "warn",
           "LASTCALL_OUTBOX_RETENTION_SECONDS": str(args.retention_seconds)}
    if args.silent_percent:
        env["LASTCALL_TEST_CONSUMER_FAULTS"] = "categorization_consumer=silent:%d" % args.silent_percent
    if args.timeout_minutes:
        env["COORDINATION_TIMEOUT_MINUTES"] = str(args.timeout_minutes)
    server = harness.Server(env)
    server.start()
    failures = []
    try:
        load = Load(server, args)
        if args.rate:
            maximum, rate = None, args.rate
        else:
            maximum, errs = measure_max(load, args)
            if errs:
                failures.append("%d errors while measuring the maximum, first: %s" % (len(errs), errs[0]))
            rate = maximum / 2.0
            print("measured maximum: %.1f operations/s with %d closed-loop clients; offering %.1f/s"
                  % (maximum, args.workers, rate), flush=True)
        # Let the measuring phase's deletions finish before the clock starts.
        harness.wait_until(lambda: unfinished(server) == 0, timeout=120, message="measuring phase settles")

        tasks = queue.Queue()
        results = []  # (minute index, latency s, error)
        rlock = threading.Lock()
        t_start = time.monotonic()

        def sender():
            while True:
                item = tasks.get()
                if item is None:
                    return
                scheduled, kind = item
                delay = scheduled - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                err = load.op(kind)
                lat = time.monotonic() - scheduled
                with rlock:
                    results.append((int((scheduled - t_start) // args.sample_s), lat, err))

        senders = [threading.Thread(target=sender, daemon=True) for _ in range(args.senders)]
        for t in senders:
            t.start()
        duration = args.minutes * 60.0
        interval = 1.0 / rate
        samples = []
        next_sample = t_start + args.sample_s
        k = 0
        print("minute  rss_MiB  db_MiB  outbox  processed   ops  errors  p50_ms  p95_ms  p99_ms  max_ms",
              flush=True)
        while True:
            scheduled = t_start + k * interval
            if scheduled - t_start >= duration:
                break
            now = time.monotonic()
            if now >= next_sample:
                idx = len(samples)
                rss = rss_kib(server.proc.pid)
                late = overdue(server, args.grace_s)
                if late:
                    failures.append("minute %d: %d coordinations waiting more than %.0f s past their "
                                    "deadline" % (len(samples) + 1, late, args.grace_s))
                with rlock:
                    minute = [r for r in results if r[0] == idx]
                lats = sorted(r[1] for r in minute)
                errs = sum(1 for r in minute if r[2])
                rows = bookkeeping_rows(server)
                samples.append({"minute": idx + 1, "rssKiB": rss, "dbMiB": round(db_mib(server), 1),
                                "outboxRows": rows[0], "processedRows": rows[1],
                                "ops": len(minute), "errors": errs,
                                "p50ms": ms(percentile(lats, 50)), "p95ms": ms(percentile(lats, 95)),
                                "p99ms": ms(percentile(lats, 99)), "maxms": ms(lats[-1] if lats else None)})
                s = samples[-1]
                print("%6d  %7.1f  %6.1f  %6d  %9d  %4d  %6d  %6s  %6s  %6s  %6s" % (
                    s["minute"], rss / 1024.0, s["dbMiB"], rows[0], rows[1], s["ops"], errs, s["p50ms"],
                    s["p95ms"], s["p99ms"], s["maxms"]), flush=True)
                next_sample += args.sample_s
            if scheduled > now:
                time.sleep(min(scheduled - now, max(0.0, next_sample - now)))
                continue
            tasks.put((scheduled, "import" if k % 2 == 0 else "delete"))
            k += 1
        for _ in senders:
            tasks.put(None)
        for t in senders:
            t.join()
        # The final sample, after the load.
        harness.wait_until(lambda: unfinished(server) == 0, timeout=120, message="soak settles")
        final_rss = rss_kib(server.proc.pid)
        with rlock:
            all_lats = sorted(r[1] for r in results)
            all_errs = [r[2] for r in results if r[2]]
        after_warmup = [s["rssKiB"] for s in samples[args.warmup_minutes:]] + [final_rss]
        growth = (max(after_warmup) - min(after_warmup)) / float(min(after_warmup))
        lagged = sum(1 for r in results if r[1] > 1.0)
        summary = {
            "measuredMaxOpsPerSecond": round(maximum, 1) if maximum else None,
            "offeredOpsPerSecond": round(rate, 1),
            "minutes": args.minutes,
            "operations": len(results),
            "errors": len(all_errs),
            "latencyMs": {"p50": ms(percentile(all_lats, 50)), "p95": ms(percentile(all_lats, 95)),
                          "p99": ms(percentile(all_lats, 99)), "max": ms(all_lats[-1] if all_lats else None)},
            "operationsOver1s": lagged,
            "rssKiBPerMinute": [s["rssKiB"] for s in samples],
            "rssKiBAfterLoad": final_rss,
            "warmupMinutes": args.warmup_minutes,
            "rssGrowthAfterWarmup": round(growth, 4),
            "perMinute": samples,
            "tableKiB": table_kib(server),
        }
        if all_errs:
            failures.append("%d errors, first: %s" % (len(all_errs), all_errs[0]))
        if growth > args.max_growth:
            failures.append("resident memory moved %.1f%% after warm-up (limit %.0f%%)"
                            % (growth * 100, args.max_growth * 100))
        if len(results) < 0.95 * duration * rate:
            failures.append("offered %d operations, expected about %d: the client could not keep the rate"
                            % (len(results), duration * rate))
        summary["failures"] = failures
        print(json.dumps(summary, indent=2))
        if args.json:
            with open(args.json, "w") as f:
                json.dump(summary, f, indent=2)
        server.stop()
    finally:
        server.cleanup()
    print("soak %s" % ("PASSED" if not failures else "FAILED: " + "; ".join(failures)))
    return 0 if not failures else 1


def ms(seconds):
    return None if seconds is None else round(seconds * 1000.0, 1)


def overdue(server, grace_s):
    conn = sqlite3.connect("file:%s?mode=ro" % server.db_path, uri=True, timeout=10)
    try:
        return conn.execute("SELECT COUNT(*) FROM coordinations WHERE status = 'waiting' AND "
                            "deadline_at < ?", (int((time.time() - grace_s) * 1000),)).fetchone()[0]
    finally:
        conn.close()


def bookkeeping_rows(server):
    conn = sqlite3.connect("file:%s?mode=ro" % server.db_path, uri=True, timeout=10)
    try:
        return tuple(conn.execute("SELECT COUNT(*) FROM %s" % t).fetchone()[0]
                     for t in ("outbox", "processed"))
    finally:
        conn.close()


def table_kib(server):
    """KiB of pages per table and index (SQLite's dbstat), largest first; free pages as 'free'."""
    conn = sqlite3.connect("file:%s?mode=ro" % server.db_path, uri=True, timeout=10)
    try:
        rows = conn.execute("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name "
                            "ORDER BY SUM(pgsize) DESC").fetchall()
        out = {name: round(size / 1024.0) for name, size in rows}
        out["free"] = round(conn.execute("PRAGMA freelist_count").fetchone()[0] *
                            conn.execute("PRAGMA page_size").fetchone()[0] / 1024.0)
        return out
    finally:
        conn.close()


def db_mib(server):
    total = 0
    for suffix in ("", "-wal"):
        try:
            total += os.path.getsize(server.db_path + suffix)
        except OSError:
            pass
    return total / 1048576.0


def unfinished(server):
    conn = sqlite3.connect("file:%s?mode=ro" % server.db_path, uri=True, timeout=10)
    try:
        return conn.execute("SELECT COUNT(*) FROM coordinations WHERE status != 'completed'").fetchone()[0]
    finally:
        conn.close()


if __name__ == "__main__":
    sys.exit(main())
