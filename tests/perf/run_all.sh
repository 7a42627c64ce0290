#!/usr/bin/env bash
# Summary: run every benchmark in tests/perf and print their tables.
#
# Usage: make bench                  (BENCH_MB=100 make bench for a quick run)
#
# First bench_targets.py: the one table of the recovery-time targets (backup,
# --verify, restore --to, restore over the live database, the drill's
# recorded time, peak memory), each as a ratio against the compression floor
# `zstd -1 -T0 -c db > out; sync` measured in the same run, for both database
# shapes. Then every other benchmark, each measuring its own baselines (cp of
# the same file, the naive `.backup` + gzip pipeline, bare python3 start-up)
# in the same run. Markdown tables, ready for docs/performance.md. Nothing
# here asserts on time. Databases are cached in $SQLITE_OPS_BENCH_DIR
# (default: a folder in the system temp directory).
set -euo pipefail
cd "$(dirname "$0")/../.."
printed_targets=0
py=.venv/bin/python
[[ -x $py ]] || py=python3
for bench in tests/perf/bench_targets.py tests/perf/bench_*.py; do
  [[ $bench != tests/perf/bench_targets.py || $printed_targets != 1 ]] || continue
  [[ $bench != tests/perf/bench_targets.py ]] || printed_targets=1
  printf '\n## %s\n' "$(basename "$bench" .py)"
  "$py" "$bench"
done
