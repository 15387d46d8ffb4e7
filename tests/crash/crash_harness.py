#!/usr/bin/env python3
"""Crash harness: SIGKILL the real `lastcall serve` at random moments while users import files and
ask for deletions, restart it on the same data folder each time, then check that nothing was lost
and nothing was done twice.

Consumers complete, fail and stay silent in the same run: LASTCALL_TEST_CONSUMER_FAULTS makes
analytics_consumer fail and categorization_consumer never answer for deterministic shares of the
files (FNV-1a-64 of the file id, modulo 100, as src/consumers/faults.cc), and a short
COORDINATION_TIMEOUT_MINUTES lets the coordinations of silent consumers reach their deadline.

After the last restart the harness waits for the work to settle and checks, through the API and by
reading the SQLite database and the blob folder directly, the invariants listed in
tests/crash/workload.py (shared with the multi-node test tests/crash/multinode.py): every deletion
that got a 202 finished exactly once, everything else is untouched, every derived value equals a
recomputation, nothing waits past its deadline and no deadline fired twice.
It prints the figures and exits 1 when a violation was found (0 otherwise).

Usage: crash_harness.py [--files-per-user N] [--kills N] ... (see --help). CTest runs the short
defaults (label "crash"); `make crash` runs a longer one. Python 3 standard library only.
"""

import sys
import time

import workload


class CrashRun(workload.Workload):
    """One node on the embedded default (SQLite, in-process bus, blob folder), SIGKILLed at random
    moments and restarted on the same data folder."""

    name = "crash"

    @classmethod
    def add_arguments(cls, p):
        pass

    def start_services(self):
        self.server = workload.harness.Server(self.server_env())
        self.nodes = [self.server]
        self.store = workload.SqliteStore(self.server.db_path)
        self.blobs = workload.FolderBlobs(self.server.blob_dir)
        self.server.start()

    def chaos(self):
        """Kills the server at random moments until the work is done and enough kills happened."""
        while not (self.work_done.is_set() and self.kills >= self.args.kills):
            time.sleep(self.rng.uniform(self.args.kill_min_s, self.args.kill_max_s))
            self.server.kill()
            self.kills += 1
            self.server.start()

    def final_recovery(self):
        # The last restart: one more crash, so the final state is a recovery.
        self.server.kill()
        self.kills += 1
        self.server.start()

    def summary(self, figures):
        print("deletions requested: %d, kills survived: %d, violations found: %d"
              % (figures["deletionsRequested"], self.kills, len(self.violations)))

    def cleanup(self):
        self.server.cleanup()


if __name__ == "__main__":
    sys.exit(workload.main(CrashRun, __doc__.split("\n\n")[0], kills=20))
