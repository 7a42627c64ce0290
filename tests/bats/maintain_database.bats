#!/usr/bin/env bats
# Tests for scripts/maintain_database.sh. Each test builds its own database.

# shellcheck disable=SC2030,SC2031 # every @test runs in its own subshell on purpose
load helpers

MAINTAIN="$SCRIPTS/maintain_database.sh"

setup() {
  common_setup
  DB="$WORK/dash.db"
  export SQLITE_BUSY_TIMEOUT_MS=200
}

teardown() {
  if [[ -n ${READER_PID:-} ]]; then
    kill "$READER_PID" 2>/dev/null || true
    wait "$READER_PID" 2>/dev/null || true
  fi
}

# bytes_of FILE
bytes_of() { stat -c %s -- "$1"; }

# pragma DB NAME: the value of a pragma.
pragma() { sqlite3 -batch "$1" "PRAGMA $2;"; }

# make_fragmented_db PATH: a database whose freelist is most of the file.
make_fragmented_db() {
  make_db "$1" 5000 delete
  sqlite3 -batch "$1" "DELETE FROM services; DELETE FROM devices WHERE id > 100;"
}

# corpus_copy VAR NAME: set VAR to a writable copy of a corpus file in $WORK
# (the corpus is read-only); skips the test when the corpus is absent.
corpus_copy() {
  local src
  corpus_file src "$2"
  cp -- "$src" "$WORK/corpus.db"
  chmod u+w "$WORK/corpus.db"
  printf -v "$1" '%s' "$WORK/corpus.db"
}

# last_line TEXT
last_line() { printf '%s\n' "$1" | tail -n 1; }

@test "--help prints the header: summary, usage, tasks and exit codes" {
  run "$MAINTAIN" --help
  assert_status 0
  assert_contains "$output" "Summary: routine maintenance"
  assert_contains "$output" "Usage: maintain_database.sh [--db PATH] [--dry-run]"
  assert_contains "$output" "75  busy"
  [[ $output != *"set -euo"* ]]
}

@test "an unknown task is a usage error and nothing is done" {
  make_db "$DB"
  run --separate-stderr "$MAINTAIN" --db "$DB" check bogus
  assert_status 2
  assert_contains "$stderr" "maintain_database.sh: unknown task 'bogus'"
  assert_equal "$output" ""
  [[ ! -e $DB.sqlite-ops.lock ]]
}

@test "a missing database or a file that is not SQLite is a usage error" {
  run --separate-stderr "$MAINTAIN" --db "$WORK/nope.db" check
  assert_status 2
  assert_contains "$stderr" "database not found"
  printf 'hello\n' >"$WORK/text.db"
  run --separate-stderr "$MAINTAIN" --db "$WORK/text.db" check
  assert_status 2
  assert_contains "$stderr" "not an SQLite database"
}

@test "DB_PATH from a config file is used; a flag beats it" {
  make_db "$DB"
  printf 'DB_PATH=%s\n' "$WORK/from-config.db" >"$WORK/conf"
  run "$MAINTAIN" --config "$WORK/conf" quick-check
  assert_status 2
  run "$MAINTAIN" --config "$WORK/conf" --db "$DB" quick-check
  assert_status 0
}

@test "the default run does check, checkpoint, analyze, vacuum; results on stdout, logs on stderr" {
  make_db "$DB" 200
  run --separate-stderr "$MAINTAIN" --db "$DB"
  assert_status 0
  [[ ${lines[0]} == "check: ok in "* ]]
  [[ ${lines[1]} == "checkpoint: ok in "* ]]
  [[ ${lines[2]} == "analyze: ok in "* ]]
  [[ ${lines[3]} == "vacuum: skipped in "* ]]
  [[ $output != *reindex* && $output != *" info: "* ]]
  assert_contains "$stderr" "info: check: starting"
  [[ $(last_line "$output") == "maintenance ok: $DB: check ok, checkpoint ok, analyze ok, vacuum skipped; size "* ]]
  # analyze left statistics for the planner
  [[ $(sqlite3 "$DB" "SELECT count(*) FROM sqlite_stat1;") -gt 0 ]]
}

@test "check passes a healthy database" {
  make_db "$DB"
  run "$MAINTAIN" --db "$DB" check
  assert_status 0
  assert_contains "$output" "integrity_check ok, foreign_key_check found no violations"
}

@test "check: integrity_check rows with sqlite3 exit 0 still mean corrupt (exit 4, rows shown)" {
  local db
  corpus_copy db corrupt/corruptN_1.sqlite
  # The pitfall: the CLI prints error rows and exits 0.
  run sqlite3 "$db" "PRAGMA integrity_check;"
  assert_status 0
  [[ $output != ok ]]
  run "$MAINTAIN" --db "$db" check
  assert_status 4
  assert_contains "$output" "check: problem"
  assert_contains "$output" "  max rootpage (7) disagrees with header"
  assert_contains "$(last_line "$output")" "maintenance PROBLEM FOUND"
}

@test "check: every damaged corpus file is exit 4" {
  local name db
  for name in chef_corrupt chinook_truncated chinook_rootswap chinook_header_pagecount corruptN_1; do
    corpus_copy db "corrupt/$name.sqlite"
    run "$MAINTAIN" --db "$db" check
    assert_status 4 || {
      echo "corpus file $name" >&2
      return 1
    }
  done
}

@test "check: a corpus file whose header is gone is not an SQLite database (exit 2)" {
  local db
  corpus_copy db corrupt/chinook_badmagic.sqlite
  run "$MAINTAIN" --db "$db" check
  assert_status 2
}

@test "check: a foreign-key violation is exit 4 although integrity_check is ok (corpus)" {
  local db
  corpus_copy db corrupt/chef_badforeignkey.sqlite
  run "$MAINTAIN" --db "$db" check
  assert_status 4
  assert_contains "$output" "foreign_key_check found a problem"
  assert_contains "$output" "  notes|3|users|0"
}

@test "check: a foreign-key violation we make is exit 4 and later tasks are not run" {
  make_fragmented_db "$DB"
  sqlite3 "$DB" "PRAGMA foreign_keys=OFF; INSERT INTO services(device_id, port) VALUES (99999, 443);"
  local free_before
  free_before=$(pragma "$DB" freelist_count)
  run "$MAINTAIN" --db "$DB" check vacuum
  assert_status 4
  assert_contains "$output" "  services|"
  assert_contains "$output" "vacuum: not run"
  assert_equal "$(pragma "$DB" freelist_count)" "$free_before" "freelist (vacuum must not run)"
}

@test "check: a damaged index page we overwrite is exit 4" {
  make_db "$DB" 3000 delete
  local root size
  root=$(sqlite3 "$DB" "SELECT rootpage FROM sqlite_schema WHERE name='sqlite_autoindex_devices_1';")
  size=$(pragma "$DB" page_size)
  # Zero the index's root page, as a failed disk write would.
  dd if=/dev/zero of="$DB" bs="$size" seek=$((root - 1)) count=1 conv=notrunc status=none
  run "$MAINTAIN" --db "$DB" check
  assert_status 4
  assert_contains "$output" "integrity_check found a problem"
}

@test "check: SQLite stopping the check with an error is said, not counted as one of its rows" {
  sqlite3 "$DB" "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT); CREATE INDEX ti ON t(v);
    WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20000)
    INSERT INTO t(v) SELECT printf('%.40d', i) FROM n;"
  # Five pages of 0xff in the middle: integrity_check reports rows, then the CLI
  # prints its own "Error: stepping, ..." line.
  head -c 20480 /dev/zero | tr '\0' '\377' | dd of="$DB" bs=4096 seek=200 count=5 conv=notrunc status=none
  run "$MAINTAIN" --db "$DB" check
  assert_status 4
  assert_contains "$output" "then SQLite stopped it with an error; the first follow)"
  local rows
  rows=$(printf '%s\n' "$output" | grep -o 'found a problem ([0-9]* rows' | grep -o '[0-9]*')
  [[ $rows -ge 1 ]]
}

@test "quick-check passes a healthy database and fails a corrupt one" {
  make_db "$DB"
  run "$MAINTAIN" --db "$DB" quick-check
  assert_status 0
  assert_contains "$output" "quick_check ok"
  local db
  corpus_copy db corrupt/corruptN_1.sqlite
  run "$MAINTAIN" --db "$db" quick-check
  assert_status 4
}

@test "vacuum above the threshold returns the free pages and shrinks the file" {
  make_fragmented_db "$DB"
  local size_before
  size_before=$(bytes_of "$DB")
  [[ $(pragma "$DB" freelist_count) -gt 50 ]]
  run "$MAINTAIN" --db "$DB" vacuum
  assert_status 0
  assert_contains "$output" "vacuum: ok"
  assert_equal "$(pragma "$DB" freelist_count)" 0 "freelist after vacuum"
  [[ $(bytes_of "$DB") -lt $((size_before / 4)) ]]
  assert_equal "$(count_rows "$DB" devices)" 100 "rows kept"
}

@test "vacuum below VACUUM_THRESHOLD is skipped; --force runs it" {
  make_db "$DB" 5000 delete
  sqlite3 "$DB" "DELETE FROM services;"
  local free_before
  free_before=$(pragma "$DB" freelist_count)
  [[ $free_before -gt 0 && $free_before -lt $(($(pragma "$DB" page_count) / 4)) ]]
  run "$MAINTAIN" --db "$DB" vacuum
  assert_status 0
  assert_contains "$output" "vacuum: skipped"
  assert_contains "$output" "below VACUUM_THRESHOLD 0.25"
  assert_equal "$(pragma "$DB" freelist_count)" "$free_before" "freelist"
  run "$MAINTAIN" --db "$DB" --force vacuum
  assert_status 0
  assert_equal "$(pragma "$DB" freelist_count)" 0 "freelist after --force"
}

@test "VACUUM_THRESHOLD comes from the environment or the config file" {
  make_fragmented_db "$DB"
  printf 'VACUUM_THRESHOLD=0.99\n' >"$WORK/conf"
  run "$MAINTAIN" --config "$WORK/conf" --db "$DB" vacuum
  assert_status 0
  assert_contains "$output" "vacuum: skipped"
  VACUUM_THRESHOLD=0.5 run "$MAINTAIN" --config "$WORK/conf" --db "$DB" vacuum
  assert_status 0
  assert_contains "$output" "vacuum: ok"
  VACUUM_THRESHOLD=lots run "$MAINTAIN" --db "$DB" vacuum
  assert_status 2
}

@test "vacuum refuses when the temp directory lacks room for a copy; nothing changes" {
  make_fragmented_db "$DB"
  local sum
  sum=$(sha256sum <"$DB")
  SQLITE_OPS_TEST_FREE_TMP=4096 run --separate-stderr "$MAINTAIN" --db "$DB" vacuum
  assert_status 1
  assert_contains "$output" "not enough free space for VACUUM in the temp directory"
  assert_contains "$output" "nothing was changed"
  assert_equal "$(sha256sum <"$DB")" "$sum" "database content"
}

@test "vacuum refuses when the database's own file system lacks room" {
  make_fragmented_db "$DB"
  local free_before
  free_before=$(pragma "$DB" freelist_count)
  SQLITE_OPS_TEST_FREE_DB=4096 run "$MAINTAIN" --db "$DB" vacuum
  assert_status 1
  assert_contains "$output" "not enough free space for VACUUM beside the database"
  assert_equal "$(pragma "$DB" freelist_count)" "$free_before" "freelist"
}

@test "vacuum refuses on a real full temp file system (tiny tmpfs, private mount namespace)" {
  make_fragmented_db "$DB"
  mkdir "$WORK/tiny"
  unshare -m true 2>/dev/null || skip "cannot create a mount namespace here (needs root or user namespaces)"
  # shellcheck disable=SC2016 # expanded by the inner shell, from its arguments
  run unshare -m bash -c 'mount -t tmpfs -o size=64k tmpfs "$1" || exit 99
    SQLITE_TMPDIR=$1 "$2" --db "$3" vacuum' _ "$WORK/tiny" "$MAINTAIN" "$DB"
  [[ $status -ne 99 ]] || skip "cannot mount a tmpfs here"
  assert_status 1
  assert_contains "$output" "in the temp directory $WORK/tiny"
}

@test "the shared lock: a run while a backup holds it exits 75 and changes nothing" {
  make_fragmented_db "$DB"
  local fd free_before
  free_before=$(pragma "$DB" freelist_count)
  exec {fd}>"$DB.sqlite-ops.lock"
  flock "$fd"
  run --separate-stderr "$MAINTAIN" --db "$DB" vacuum
  assert_status 75
  assert_contains "$stderr" "holds the lock"
  assert_equal "$(pragma "$DB" freelist_count)" "$free_before" "freelist"
  # --lock-timeout waits, then gives up the same way
  run "$MAINTAIN" --db "$DB" --lock-timeout 1 quick-check
  assert_status 75
  exec {fd}>&-
  run "$MAINTAIN" --db "$DB" quick-check
  assert_status 0
}

@test "checkpoint copies the WAL into the database and truncates it" {
  make_db "$DB" 10
  # A writer that exits without closing leaves its WAL behind.
  python3 -c 'import os, sqlite3, sys
c = sqlite3.connect(sys.argv[1]); c.execute("INSERT INTO devices(ip) VALUES (?)", ("10.9.9.9",)); c.commit(); os._exit(0)' "$DB"
  [[ $(bytes_of "$DB-wal") -gt 0 ]]
  run "$MAINTAIN" --db "$DB" checkpoint
  assert_status 0
  assert_contains "$output" "WAL of 8.1 KiB copied into the database and truncated"
  [[ ! -s $DB-wal ]]
  assert_equal "$(count_rows "$DB" devices)" 11 "rows"
}

@test "checkpoint held back by a reader reports busy (75), not success" {
  make_db "$DB" 10
  mkfifo "$WORK/ready"
  python3 -c 'import sqlite3, sys, time
c = sqlite3.connect(sys.argv[1], isolation_level=None)
c.execute("INSERT INTO devices(ip) VALUES (?)", ("10.9.9.9",))
c.execute("BEGIN"); c.execute("SELECT count(*) FROM devices").fetchall()
open(sys.argv[2], "w").write("ready\n"); time.sleep(20)' "$DB" "$WORK/ready" &
  READER_PID=$!
  read -r _ <"$WORK/ready"
  run "$MAINTAIN" --db "$DB" --metrics-dir "$WORK/m" checkpoint
  assert_status 75
  assert_contains "$output" "checkpoint: busy"
  assert_contains "$(last_line "$output")" "maintenance busy"
  [[ -s $DB-wal ]]
  assert_contains "$(cat "$WORK/m/sqlite_ops_maintenance_dash.prom")" 'sqlite_maintenance_last_exit_code{db="dash"} 75'
  [[ $(cat "$WORK/m/sqlite_ops_maintenance_dash.prom") != *'task="checkpoint"'* ]]
}

@test "checkpoint on a rollback-journal database is skipped, not an error" {
  make_db "$DB" 10 delete
  run "$MAINTAIN" --db "$DB" checkpoint
  assert_status 0
  assert_contains "$output" "checkpoint: skipped"
  assert_contains "$output" "journal_mode is delete"
}

@test "check: a check that cannot run is a failure, not a problem found" {
  # A writer killed mid-transaction after the run's own rollback leaves a hot
  # journal that a read-only open may not roll back: SQLite says "attempt to
  # write a readonly database", which says nothing about the database's health.
  make_db "$DB" 5000 delete
  python3 - "$DB" <<'PY' || true # it kills itself
import os, sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("PRAGMA cache_size=1")  # the change spills into the file: the journal is needed
conn.execute("BEGIN")
conn.execute("UPDATE devices SET hostname = hostname || '-changed'")
os._exit(9)
PY
  [[ -s $DB-journal ]]
  local db=$DB rc
  # shellcheck source=scripts/maintain_database.sh
  source "$MAINTAIN" || true
  DB=$db FK_ACCEPT=""
  rc=0
  task_check || rc=$? # as run_tasks calls it
  assert_equal "$rc" 1
  assert_contains "$TASK_DETAIL" "integrity_check could not run, so it neither found nor ruled out a problem: "
  assert_contains "$TASK_DETAIL" "readonly"
  assert_equal "$PROBLEM_ROWS" ""
  rc=0
  task_quick_check || rc=$?
  assert_equal "$rc" 1
  assert_contains "$TASK_DETAIL" "quick_check could not run"
  pragma_ok() { return 0; } # the integrity check passes; the foreign-key check cannot open it
  rc=0
  task_check || rc=$?
  assert_equal "$rc" 1
  assert_contains "$TASK_DETAIL" "foreign_key_check could not run"
}

@test "check: only SQLite's own words on its Error line call the file damaged, never a path" {
  # shellcheck source=scripts/maintain_database.sh
  source "$MAINTAIN" || true
  is_damage_error 'Error: in prepare, database disk image is malformed (11)'
  is_damage_error 'Error: in prepare, file is not a database (26)'
  is_damage_error 'Error: stepping, database disk image is malformed (779)' # SQLITE_CORRUPT_INDEX
  is_damage_error 'Error: in prepare, malformed database schema (ix) - invalid rootpage (11)'
  is_damage_error 'Error: database disk image is malformed' # a CLI that prints no code
  not_damage() { if is_damage_error "$1"; then echo "called damage: $1" >&2; return 1; fi; }
  not_damage 'Error: unable to open database "/srv/corrupt malformed.db": unable to open database file (14)'
  not_damage 'Error: in prepare, attempt to write a readonly database (8)'
  not_damage 'database disk image is malformed' # a row of the check, not its error line
  not_damage 'Parse error near line 2: database is locked (5)'
  is_damage_error 'Runtime error near line 1: database disk image is malformed (11)' # SQL from a pipe
}

@test "check: only SQLite's own code or words on its Error line call the database locked, never a path" {
  # shellcheck source=scripts/maintain_database.sh
  source "$MAINTAIN" || true
  is_busy_error 'Error: in prepare, database is locked (5)'
  is_busy_error 'Error: stepping, database is locked (517)' # SQLITE_BUSY_SNAPSHOT
  is_busy_error 'Error: in prepare, database table is locked (6)'
  is_busy_error 'Error: database is locked' # a CLI that prints no code
  is_busy_error 'Parse error near line 2: database is locked (5)'
  not_busy() { if is_busy_error "$1"; then echo "called locked: $1" >&2; return 1; fi; }
  not_busy 'Error: unable to open database "/srv/database is locked": unable to open database file (14)'
  not_busy 'Error: unable to open database "/srv/SQLITE_BUSY database is locked": unable to open database file'
  not_busy 'Error: in prepare, database disk image is malformed (11)'
  not_busy 'database is locked' # a value the statement printed, not its error line
  not_busy 'Error: unable to open database "/srv/x: database table is locked: t": unable to open database file'
  not_damage() { if is_damage_error "$1"; then echo "called damage: $1" >&2; return 1; fi; }
  not_damage 'Error: unable to open database "/srv/x: malformed database schema (y": disk I/O error'
}

@test "check: a sqlite3 killed without a word is no finding (1, not 4)" {
  make_db "$DB"
  # shellcheck source=scripts/maintain_database.sh
  source "$MAINTAIN" || true
  sqlite_ro() { return 137; } # killed by the OOM killer: no output at all
  local rc=0
  task_quick_check || rc=$?
  assert_equal "$rc" 1
  assert_contains "$TASK_DETAIL" "quick_check could not run"
  assert_equal "$PROBLEM_ROWS" ""
}

@test "check: rows of damage stand when a lock then stops the check (4, not 75)" {
  # shellcheck source=scripts/maintain_database.sh
  source "$MAINTAIN" || true
  local rc=0
  check_failed integrity_check $'row 3 missing from index t_v\nError: stepping, database is locked (5)' || rc=$?
  assert_equal "$rc" 4
  assert_contains "$TASK_DETAIL" "integrity_check found a problem (1 rows, then SQLite stopped it with an error"
}

@test "check: a database that cannot be opened, at a path holding SQLite's lock words, is exit 1, not 75" {
  # The CLI's real words: Error: unable to open database "<path>": unable to open database file
  # shellcheck source=scripts/maintain_database.sh
  source "$MAINTAIN" || true
  DB="$BATS_TEST_TMPDIR/gone/database is locked" rc=0
  task_quick_check || rc=$?
  assert_equal "$rc" 1
  assert_contains "$TASK_DETAIL" "quick_check could not run"
}

@test "check: a malformed FK_ACCEPT is a usage error (2), not a check that could not run" {
  make_db "$DB"
  FK_ACCEPT='services:many' run --separate-stderr "$MAINTAIN" --db "$DB" check
  assert_status 2
  assert_contains "$output" "FK_ACCEPT"
}

@test "analyze picks the statement by SQLite version (optimize 0x10002 on 3.46+)" {
  make_db "$DB"
  # shellcheck source=scripts/maintain_database.sh
  source "$MAINTAIN" || true # the main guard is false when sourced
  DRY_RUN=1 ANALYSIS_LIMIT=500
  sqlite_version_number() { echo 3046000; }
  task_analyze
  assert_equal "$TASK_DETAIL" "would run: PRAGMA analysis_limit=500; PRAGMA optimize=0x10002;"
  sqlite_version_number() { echo 3040001; }
  task_analyze
  assert_equal "$TASK_DETAIL" "would run: PRAGMA analysis_limit=500; ANALYZE;"
  sqlite_version_number() { echo 3031001; }
  task_analyze
  assert_equal "$TASK_DETAIL" "would run: ANALYZE;"
}

@test "sqlite_version_number reads the running SQLite's version" {
  make_db "$DB"
  local db=$DB v
  # shellcheck source=scripts/maintain_database.sh
  source "$MAINTAIN" || true
  DB=$db
  v=$(sqlite3 -version)
  v=${v%% *}
  IFS=. read -r a b c <<<"$v"
  assert_equal "$(sqlite_version_number)" $((a * 1000000 + b * 1000 + c))
}

@test "reindex runs only when asked" {
  make_db "$DB"
  run "$MAINTAIN" --db "$DB" all
  [[ $output != *reindex* ]]
  run "$MAINTAIN" --db "$DB" reindex
  assert_status 0
  assert_contains "$output" "reindex: ok"
}

@test "--dry-run says what and why, changes nothing and takes no lock" {
  make_fragmented_db "$DB"
  local sum
  sum=$(sha256sum <"$DB")
  run "$MAINTAIN" --db "$DB" --dry-run --metrics-dir "$WORK/m"
  assert_status 0
  assert_contains "$output" "check: dry-run"
  assert_contains "$output" "would run PRAGMA integrity_check"
  assert_contains "$output" "would run VACUUM: freelist"
  assert_contains "$output" "is at least VACUUM_THRESHOLD 0.25"
  assert_contains "$output" "maintenance dry run, nothing changed"
  assert_equal "$(sha256sum <"$DB")" "$sum" "database content"
  [[ ! -e $DB.sqlite-ops.lock && ! -e $WORK/m ]]
}

@test "metrics: last success, duration and integrity in the textfile, atomically named" {
  make_fragmented_db "$DB"
  run "$MAINTAIN" --db "$DB" --metrics-dir "$WORK/m"
  assert_status 0
  local prom="$WORK/m/sqlite_ops_maintenance_dash.prom"
  [[ -f $prom ]]
  assert_equal "$(file_mode "$prom")" 644 "mode"
  local text task now stamp
  text=$(cat "$prom")
  now=$(date +%s)
  for task in check checkpoint analyze vacuum; do
    stamp=$(grep -F "sqlite_maintenance_last_success_timestamp_seconds{db=\"dash\",task=\"$task\"} " "$prom")
    ((now - ${stamp##* } < 60))
    assert_contains "$text" "sqlite_maintenance_duration_seconds{db=\"dash\",task=\"$task\"} "
  done
  assert_contains "$text" 'sqlite_integrity_ok{db="dash"} 1'
  assert_contains "$text" '# TYPE sqlite_integrity_ok gauge'
  [[ -z $(find "$WORK/m" -name '.*') ]]
}

@test "metrics: a partial run keeps the other tasks' last success from the previous file" {
  make_db "$DB"
  run "$MAINTAIN" --db "$DB" --metrics-dir "$WORK/m" check analyze
  assert_status 0
  local prom="$WORK/m/sqlite_ops_maintenance_dash.prom"
  sed -i 's/\(task="check"} \)[0-9.]*$/\11000/' "$prom"
  sed -i 's/\(task="analyze"} \)[0-9]*$/\11000/' "$prom"
  run "$MAINTAIN" --db "$DB" --metrics-dir "$WORK/m" analyze
  assert_status 0
  local text
  text=$(cat "$prom")
  assert_contains "$text" 'sqlite_maintenance_last_success_timestamp_seconds{db="dash",task="check"} 1000'
  assert_contains "$text" 'sqlite_maintenance_duration_seconds{db="dash",task="check"} 1000'
  [[ $text != *'task="analyze"} 1000'* ]]
  assert_contains "$text" 'sqlite_integrity_ok{db="dash"} 1'
}

@test "metrics: a failed check sets sqlite_integrity_ok 0 and keeps the last success" {
  make_db "$DB"
  run "$MAINTAIN" --db "$DB" --metrics-dir "$WORK/m" check
  assert_status 0
  sqlite3 "$DB" "PRAGMA foreign_keys=OFF; INSERT INTO services(device_id, port) VALUES (99999, 1);"
  run "$MAINTAIN" --db "$DB" --metrics-dir "$WORK/m" check
  assert_status 4
  local text
  text=$(cat "$WORK/m/sqlite_ops_maintenance_dash.prom")
  assert_contains "$text" 'sqlite_integrity_ok{db="dash"} 0'
  assert_contains "$text" 'sqlite_maintenance_last_success_timestamp_seconds{db="dash",task="check"}'
  assert_contains "$text" 'sqlite_maintenance_last_exit_code{db="dash"} 4'
}

@test "metrics: a database name with quotes, a backslash and spaces is escaped in the label" {
  local db="$WORK/my \"odd\\ db.sqlite"
  make_db "$db"
  run "$MAINTAIN" --db "$db" --metrics-dir "$WORK/m" quick-check
  assert_status 0
  local prom="$WORK/m/sqlite_ops_maintenance_my__odd__db.prom"
  [[ -f $prom ]]
  assert_contains "$(cat "$prom")" 'sqlite_integrity_ok{db="my \"odd\\ db"} 1'
}

@test "the summary line reports size and freelist before and after" {
  make_fragmented_db "$DB"
  local free
  free=$(pragma "$DB" freelist_count)
  run "$MAINTAIN" --db "$DB" vacuum
  assert_status 0
  [[ $(last_line "$output") =~ ^maintenance\ ok:\ .*:\ vacuum\ ok\;\ size\ [0-9.]+\ KiB\ -\>\ [0-9.]+\ KiB,\ freelist\ $free\ -\>\ 0\ pages\;\ [0-9.]+s$ ]]
}

@test "a database locked by the application: checkpoint and vacuum say busy (75), never 'ok' or 'skipped'" {
  make_db "$DB" 50 delete
  python3 - "$DB" "$WORK/locked" <<'PY' &
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN EXCLUSIVE")
open(sys.argv[2], "w").close()
time.sleep(20)
PY
  local holder=$!
  for _ in $(seq 100); do [[ -e $WORK/locked ]] && break; sleep 0.05; done
  export SQLITE_BUSY_TIMEOUT_MS=200
  run --separate-stderr "$MAINTAIN" --db "$DB" --metrics-dir "$WORK/m" checkpoint
  assert_status 75
  [[ $output != *skipped* ]]
  if grep -qs 'last_success_timestamp_seconds{.*task="checkpoint"' "$WORK/m"/*.prom; then
    echo "a busy checkpoint was recorded as a success" >&2
    return 1
  fi
  run --separate-stderr "$MAINTAIN" --db "$DB" --force vacuum
  assert_status 75
  kill "$holder"
}
