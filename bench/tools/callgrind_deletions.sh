#!/bin/sh
# Instructions per coordinated deletion, counted by callgrind: a measure that does not move with
# the machine's load, for comparing two builds of the server (bench/profile.md).
#
#   bench/tools/callgrind_deletions.sh BINARY [FILES] [OUT_DIR]
#
# Runs lastcall_bench's full-load deletion phase (FILES files, 300 by default; nothing else) with the
# server under `valgrind --tool=callgrind`. The counters are zeroed when the full load starts and
# dumped when it ends, so seeding is not counted. Prints the server's instructions per deletion; the
# profile stays in OUT_DIR (default: a new folder under /tmp) for callgrind_annotate. The server
# runs some 50 times slower under callgrind, so its group commits are larger than at full speed:
# compare builds with each other, not with wall-clock runs.
set -eu
if [ "${LASTCALL_CALLGRIND_WRAPPED:-}" = 1 ]; then
  # Started by lastcall_bench in place of the server: run the real one under callgrind.
  exec valgrind --tool=callgrind --callgrind-out-file="$CG_OUT/callgrind.%p" --dump-instr=no \
    "$CG_BIN" "$@" 2>>"$CG_OUT/valgrind.log"
fi
[ $# -ge 1 ] || { echo "usage: $0 BINARY [FILES] [OUT_DIR]" >&2; exit 2; }
command -v valgrind >/dev/null || { echo "valgrind is not installed" >&2; exit 2; }
bin=$(readlink -f "$1")
files=${2:-300}
out=${3:-$(mktemp -d /tmp/lastcall-callgrind.XXXXXX)}
mkdir -p "$out"
out=$(readlink -f "$out")
self=$(readlink -f "$0")
root=$(cd "$(dirname "$self")/../.." && pwd)
"$root/build/bench/lastcall_bench" --lastcall "$self" --server-env LASTCALL_CALLGRIND_WRAPPED=1 \
  --server-env CG_BIN="$bin" --server-env CG_OUT="$out" --files "$files" --modes NORMAL \
  --skip-sweep --skip-get --skip-half --skip-raw --out "" --json "$out/bench.json" --svg "" \
  --attach 'sh -c "callgrind_control -z {pid} >/dev/null; trap \"callgrind_control -d full-load {pid} >/dev/null; exit 0\" INT; while true; do sleep 0.2; done"' \
  >"$out/bench.log" 2>&1 || { tail -5 "$out/bench.log" >&2; exit 1; }
sleep 1
dump=$(ls "$out"/callgrind.*.1 2>/dev/null | head -1)
[ -n "$dump" ] || { echo "no callgrind dump in $out (see bench.log, valgrind.log)" >&2; exit 1; }
ir=$(callgrind_annotate "$dump" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1; exit}')
echo "instructions per deletion: $((ir / files)) ($ir for $files deletions; profile: $dump)"
