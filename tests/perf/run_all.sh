#!/usr/bin/env bash
# Summary: run every benchmark in tests/perf and print their tables.
#
# Usage: make bench                  (BENCH_MB=100 make bench for a quick run)
#
# Each benchmark measures its baselines (cp of the same file, the naive
# `.backup` + gzip pipeline, bare python3 start-up) in the same run and prints
# Markdown tables of ratios, ready for docs/performance.md. Nothing here
# asserts on time. Databases are cached in $SQLITE_OPS_BENCH_DIR (default: a
# folder in the system temp directory).
set -euo pipefail
cd "$(dirname "$0")/../.."
py=.venv/bin/python
[[ -x $py ]] || py=python3
for bench in tests/perf/bench_*.py; do
  printf '\n## %s\n' "$(basename "$bench" .py)"
  "$py" "$bench"
done
