#!/usr/bin/env bats
# Tests for scripts/db_metrics as a command: output, files and exit codes.
# (The metric values themselves are checked in tests/python/test_metrics.py.)

# shellcheck disable=SC2030,SC2031 # every @test runs in its own subshell on purpose
load helpers

DB_METRICS="$SCRIPTS/db_metrics"

setup() {
  common_setup
  DB="$WORK/dash.db"
}

# sample TEXT LINE-PREFIX: the value of the first sample line starting with LINE-PREFIX.
sample() {
  local line
  line=$(grep -F -- "$2" <<<"$1" | head -n 1)
  printf '%s\n' "${line##* }"
}

@test "--help describes the command and exits 0" {
  run "$DB_METRICS" --help
  assert_status 0
  assert_contains "$output" "usage: db_metrics"
  assert_contains "$output" "--exact-counts"
}

@test "a scrape prints Prometheus text on stdout and nothing on stderr" {
  make_db "$DB" 40
  run --separate-stderr "$DB_METRICS" --db "$DB" --migrations "$WORK"
  assert_status 0
  assert_equal "$stderr" ""
  assert_contains "$output" "# TYPE sqlite_file_size_bytes gauge"
  assert_equal "$(sample "$output" 'sqlite_file_size_bytes{db="dash"}')" "$(stat -c %s "$DB")"
  assert_equal "$(sample "$output" 'sqlite_page_size_bytes{db="dash"}')" 4096
}

@test "row counts: estimates by default, exact with --exact-counts" {
  make_db "$DB" 40
  run "$DB_METRICS" --db "$DB" --migrations "$WORK"
  [[ $output != *"sqlite_table_rows{"* ]]
  sqlite3 "$DB" "ANALYZE;"
  run "$DB_METRICS" --db "$DB" --migrations "$WORK"
  assert_equal "$(sample "$output" 'sqlite_table_rows_estimate{db="dash",table="devices"}')" 40
  run "$DB_METRICS" --db "$DB" --migrations "$WORK" --exact-counts
  assert_equal "$(sample "$output" 'sqlite_table_rows{db="dash",table="services"}')" "$(count_rows "$DB" services)"
}

@test "northwind: the table named Order Details is labelled as is" {
  local src
  corpus_file src northwind.sqlite
  cp "$src" "$WORK/northwind.sqlite"
  chmod u+w "$WORK/northwind.sqlite"
  run "$DB_METRICS" --db "$WORK/northwind.sqlite" --migrations "$WORK" --exact-counts
  assert_status 0
  assert_equal "$(sample "$output" 'sqlite_table_rows{db="northwind",table="Order Details"}')" \
    "$(count_rows "$WORK/northwind.sqlite" "Order Details")"
}

@test "--format json is valid JSON with the database name" {
  make_db "$DB"
  run --separate-stderr "$DB_METRICS" --db "$DB" --format json --migrations "$WORK"
  assert_status 0
  assert_equal "$(python3 -c 'import json, sys; print(json.load(sys.stdin)["db"])' <<<"$output")" dash
}

@test "--textfile writes sqlite_ops_<name>.prom atomically and prints its path" {
  make_db "$DB"
  run "$DB_METRICS" --db "$DB" --textfile "$WORK/textfile" --migrations "$WORK"
  assert_status 0
  assert_equal "$output" "$WORK/textfile/sqlite_ops_dash.prom"
  assert_contains "$(cat "$WORK/textfile/sqlite_ops_dash.prom")" 'sqlite_pages{db="dash"}'
  assert_equal "$(file_mode "$WORK/textfile/sqlite_ops_dash.prom")" 644
  assert_equal "$(find "$WORK/textfile" -name '.*' | wc -l)" 0 "temp files left"
}

@test "a scrape does not modify the database" {
  make_db "$DB" 20 delete
  local sum
  sum=$(sha256sum <"$DB")
  run "$DB_METRICS" --db "$DB" --exact-counts --table-sizes
  assert_status 0
  assert_equal "$(sha256sum <"$DB")" "$sum" "database content"
}

@test "DB_PATH from the environment; a flag beats it" {
  make_db "$DB"
  DB_PATH=$DB run "$DB_METRICS" --migrations "$WORK"
  assert_status 0
  DB_PATH=$DB run "$DB_METRICS" --db "$WORK/other.db"
  assert_status 2
}

@test "a missing database: exit 2, one line naming the problem" {
  run --separate-stderr "$DB_METRICS" --db "$WORK/nope.db"
  assert_status 2
  assert_equal "$stderr" "db_metrics: database not found: $WORK/nope.db (set --db or DB_PATH)"
  assert_equal "$output" ""
}

@test "a file that is not SQLite: exit 2" {
  printf 'just text\n' >"$WORK/text.db"
  run --separate-stderr "$DB_METRICS" --db "$WORK/text.db"
  assert_status 2
  assert_equal "$stderr" "db_metrics: not an SQLite database: $WORK/text.db (a wrong --db, or the database's first page is destroyed: if it held the data, see the incident runbook)"
}

@test "an unknown option or format: exit 2 without a traceback" {
  make_db "$DB"
  run --separate-stderr "$DB_METRICS" --db "$DB" --format xml
  assert_status 2
  [[ $stderr == "db_metrics: "* && $stderr != *Traceback* ]]
  run --separate-stderr "$DB_METRICS" --db "$DB" --nope
  assert_status 2
}

@test "a damaged database (corpus): exit 4, one line" {
  local src
  corpus_file src corrupt/chinook_rootswap.sqlite
  cp "$src" "$WORK/broken.db"
  run --separate-stderr "$DB_METRICS" --db "$WORK/broken.db"
  assert_status 4
  assert_contains "$stderr" "malformed database schema"
  [[ $stderr != *Traceback* ]]
}

@test "the maintenance and metrics .prom files sit side by side without clashing" {
  make_db "$DB"
  run "$SCRIPTS/maintain_database.sh" --db "$DB" --metrics-dir "$WORK/textfile" check
  assert_status 0
  run "$DB_METRICS" --db "$DB" --textfile "$WORK/textfile" --migrations "$WORK"
  assert_status 0
  [[ -f $WORK/textfile/sqlite_ops_dash.prom && -f $WORK/textfile/sqlite_ops_maintenance_dash.prom ]]
  # no metric name is written by both
  local dup
  dup=$(cat "$WORK"/textfile/*.prom | grep -v '^#' | sed 's/[{ ].*//' | sort -u |
    comm -12 - <(grep -v '^#' "$WORK/textfile/sqlite_ops_dash.prom" | sed 's/[{ ].*//' | sort -u) |
    comm -12 - <(grep -v '^#' "$WORK/textfile/sqlite_ops_maintenance_dash.prom" | sed 's/[{ ].*//' | sort -u))
  assert_equal "$dup" "" "metric names written by both"
}
