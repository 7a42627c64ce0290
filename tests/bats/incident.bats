#!/usr/bin/env bats
# The incident runbook, end to end, as an operator meets it: three disasters
# (corrupt pages, a deleted database, a destructive migration) restored through
# a real terminal (script(1) from util-linux drives the prompt), asserting what
# is printed as well as the data. Plus the ways an incident goes wrong: the
# answer mistyped, Ctrl-C, a backup taken while the plan is on screen, an
# application still writing, retries piling up safety backups, a typo in --db.
# The runbook in docs/operations/database-management.md quotes these messages;
# tests/python/test_docs.py keeps its quotes and the code in step.

# shellcheck disable=SC2030,SC2031 # every @test runs in its own subshell on purpose
load helpers

RESTORE="$SCRIPTS/restore_database.sh"

setup() {
  common_setup
  command -v script >/dev/null || skip "script(1) (util-linux) is needed to drive a terminal"
  export DB_PATH="$WORK/data/app.db" BACKUP_DIR="$WORK/backups" MIGRATIONS_DIR="$WORK/migrations"
  mkdir -p "$WORK/data" "$MIGRATIONS_DIR"
}

teardown() { stop_background; }

# on_terminal ANSWER COMMAND...: run COMMAND on a pseudo-terminal (script(1)),
# typing ANSWER at its prompt; sets status and output (stdout and stderr, as a
# terminal shows them) like bats' run.
on_terminal() {
  local answer=$1
  shift
  run bash -c 'printf "%s\n" "$1" | script -qefc "$(printf "%q " "${@:2}")" /dev/null' _ "$answer" "$@"
  output=${output//$'\r'/}
}

# start_at_prompt COMMAND...: start COMMAND on a pseudo-terminal in the
# background and return once its question is on the screen ($WORK/screen);
# then type with `keys TEXT` and collect with `finish` (status, output).
start_at_prompt() {
  mkfifo "$WORK/keys"
  # A shell starts background commands with SIGINT ignored, and a program
  # cannot trap what it inherits ignored: give the terminal's Ctrl-C back.
  python3 -c 'import os, signal, sys
signal.signal(signal.SIGINT, signal.SIG_DFL)
os.execvp(sys.argv[1], sys.argv[1:])' \
    script -qefc "$(printf '%q ' "$@")" /dev/null <"$WORK/keys" >"$WORK/screen" 2>&1 &
  BG_PIDS+=($!)
  exec 7>"$WORK/keys"
  wait_for "$WORK/screen" "Type yes to continue:"
}

keys() { printf '%s' "$1" >&7; }

finish() {
  exec 7>&-
  status=0
  wait "${BG_PIDS[-1]}" || status=$?
  output=$(tr -d '\r' <"$WORK/screen")
}

# wait_until_copying: the restore's apply step has the database and the
# verified work file both open: it is at the copy (waiting on a lock, here).
wait_until_copying() {
  local _ pid
  for _ in $(seq 400); do
    for pid in $(pgrep -f 'sqlite_ops[.]start .* restore_flow restore --db='); do
      [[ $(find "/proc/$pid/fd" -lname "$DB_PATH" 2>/dev/null) &&
        $(find "/proc/$pid/fd" -lname '*/restore.db' 2>/dev/null) ]] && return 0
    done
    sleep 0.05
  done
  echo "the restore never reached its copy" >&2
  return 1
}

# corrupt_pages DB: overwrite bytes inside a b-tree page (quick_check fails,
# the header and the first pages stay readable).
corrupt_pages() {
  python3 - "$1" <<'PY'
import sys
with open(sys.argv[1], "r+b") as f:
    f.seek(4096 * 20 + 100)
    f.write(b"\xff" * 300)
PY
  [[ $(sqlite3 "$1" 'PRAGMA quick_check' 2>&1) != ok ]]
}

# big_db DB: 2000 devices over ~120 pages, WAL mode, checkpointed.
big_db() {
  sqlite3 -batch "$1" >/dev/null <<'SQL'
PRAGMA journal_mode=wal;
CREATE TABLE devices(id INTEGER PRIMARY KEY, device_ip TEXT NOT NULL, hostname TEXT, pad TEXT);
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2000)
INSERT INTO devices(device_ip, hostname, pad) SELECT '10.0.' || i, 'host-' || i, hex(zeroblob(100)) FROM n;
PRAGMA wal_checkpoint(TRUNCATE);
SQL
}

# wait_for FILE TEXT: until FILE holds TEXT (an event, not a duration; gives up
# after 20 s so a broken run fails instead of hanging).
wait_for() {
  local _
  for _ in $(seq 400); do
    grep -qF -- "$2" "$1" 2>/dev/null && return 0
    sleep 0.05
  done
  echo "never saw '$2' in $1:" >&2
  cat "$1" >&2
  return 1
}

# ---------------------------------------------------------------------------
# Disaster 1: corrupt pages
# ---------------------------------------------------------------------------

@test "corrupt pages: db_metrics notices, the restore keeps a raw copy, says why once, and its undo works" {
  big_db "$DB_PATH"
  b=$(backup_now)
  corrupt_pages "$DB_PATH"
  damaged=$(sha256sum <"$DB_PATH")
  run --separate-stderr "$SCRIPTS/db_metrics" --integrity-check
  assert_status 4
  assert_contains "$output" 'sqlite_integrity_probe_ok{db="app"} 0'

  on_terminal yes "$RESTORE" latest
  assert_status 0
  assert_contains "$output" "Restore plan for $DB_PATH"
  assert_contains "$output" "A safety backup of it is taken first (a raw copy of its files if it is too damaged for one). Type yes to continue:"
  assert_contains "$output" "is too damaged for a verified backup ($DB_PATH failed PRAGMA quick_check ("
  # The safety backup's own advice is not printed on its own line mid-restore.
  [[ $output != *"run maintain_database.sh check"* ]]
  [[ $output != *"backup_database.sh: "* ]]
  assert_contains "$output" "  raw copy:        $BACKUP_DIR/pre-restore/"
  assert_contains "$output" "  undo with:       rm -f -- "
  assert_contains "$output" "  before the undo: stop the application ("
  assert_equal "$(content "$DB_PATH")" "$(backup_content "$b")"
  assert_equal "$(sqlite3 "$DB_PATH" 'PRAGMA quick_check')" ok

  # The printed undo, pasted as it is, puts the damaged file back, byte for byte.
  undo=$(sed -n 's/^  undo with:       //p' <<<"$output")
  eval "$undo"
  assert_equal "$(sha256sum <"$DB_PATH")" "$damaged"
}

@test "corrupt corpus databases: db_metrics reports sqlite_integrity_probe_ok 0 and exits 4" {
  local f name
  # What a default (cheap) scrape sees: the pages it reads.
  # (corruptN_1's damage is in pages a scrape reads: it decodes each whole.)
  for name in chef_corrupt chinook_rootswap chinook_truncated chinook_header_pagecount corruptN_1; do
    corpus_file f "corrupt/$name.sqlite"
    cp -- "$f" "$WORK/data/app.db"
    run --separate-stderr "$SCRIPTS/db_metrics" --db "$WORK/data/app.db"
    assert_status 4
    assert_contains "$output" 'sqlite_integrity_probe_ok{db="app"} 0'
    assert_contains "$stderr" "db_metrics: $WORK/data/app.db is damaged: "
  done
  # Damage only a read of every page finds (a leaf in the middle): --integrity-check.
  rm -f -- "$WORK/data/app.db"
  sqlite3 "$WORK/data/app.db" "CREATE TABLE t(id INTEGER PRIMARY KEY, pad TEXT);
    WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2000)
    INSERT INTO t(pad) SELECT printf('%.300d', i) FROM n;"
  local pages
  pages=$(sqlite3 "$WORK/data/app.db" "PRAGMA page_count")
  head -c 64 /dev/zero | tr '\0' '\377' |
    dd of="$WORK/data/app.db" bs=1 seek=$((4096 * (pages / 2) + 8)) conv=notrunc status=none
  run --separate-stderr "$SCRIPTS/db_metrics" --db "$WORK/data/app.db"
  assert_status 0
  run --separate-stderr "$SCRIPTS/db_metrics" --integrity-check --db "$WORK/data/app.db"
  assert_status 4
  assert_contains "$output" 'sqlite_integrity_probe_ok{db="app"} 0'
}

@test "db_metrics keeps the last --integrity-check verdict and its age between cheap scrapes" {
  big_db "$DB_PATH"
  run --separate-stderr "$SCRIPTS/db_metrics" --integrity-check --textfile "$WORK/prom"
  assert_status 0
  corrupt_pages "$DB_PATH" # in the middle of the table: the cheap probe cannot see it
  run --separate-stderr "$SCRIPTS/db_metrics" --textfile "$WORK/prom"
  assert_status 0
  prom=$(cat "$WORK/prom/sqlite_ops_app.prom")
  assert_contains "$prom" 'sqlite_integrity_probe_ok{db="app"} 1'
  assert_contains "$prom" 'sqlite_integrity_check_age_seconds{db="app"} '
  assert_contains "$prom" 'sqlite_integrity_quick_check_ok{db="app"} 1'
  run --separate-stderr "$SCRIPTS/db_metrics" --integrity-check --textfile "$WORK/prom"
  assert_status 4
  run --separate-stderr "$SCRIPTS/db_metrics" --textfile "$WORK/prom" # cheap again
  prom=$(cat "$WORK/prom/sqlite_ops_app.prom")
  assert_contains "$prom" 'sqlite_integrity_probe_ok{db="app"} 0'
  # maintain_database.sh's failed check (METRICS_DIR) counts too, without a quick_check here.
  rm -rf "$WORK/prom"
  run "$SCRIPTS/maintain_database.sh" --metrics-dir "$WORK/prom" check
  assert_status 4
  run --separate-stderr "$SCRIPTS/db_metrics" --metrics-dir "$WORK/prom"
  assert_contains "$output" 'sqlite_integrity_probe_ok{db="app"} 0'
}

# ---------------------------------------------------------------------------
# Disaster 2: a deleted database
# ---------------------------------------------------------------------------

@test "deleted database: the prompt says there is nothing to keep; WAL mode, owner and mode come back" {
  big_db "$DB_PATH"
  chmod 0644 "$DB_PATH"
  chown nobody:nogroup "$DB_PATH" 2>/dev/null || skip "needs root to give the database to another user"
  b=$(backup_now)
  rm -f "$DB_PATH" "$DB_PATH-wal" "$DB_PATH-shm"
  on_terminal yes "$RESTORE" latest
  assert_status 0
  assert_contains "$output" "Restore this backup into $DB_PATH? It does not exist, so there is nothing to keep. Type yes to continue:"
  [[ $output != *"A safety backup of it is taken first"* ]]
  assert_contains "$output" "  safety backup:   none (there was no database to keep)"
  assert_contains "$output" "  journal mode:    wal"
  assert_contains "$output" "  owner, mode:     nobody:nogroup 0644 (as recorded in the backup's manifest)"
  assert_equal "$(stat -c '%U:%G %a' -- "$DB_PATH")" "nobody:nogroup 644"
  assert_equal "$(sqlite3 "$DB_PATH" 'PRAGMA journal_mode')" wal
  assert_equal "$(content "$DB_PATH")" "$(backup_content "$b")"
  # The -wal/-shm SQLite creates next are the application's too.
  sqlite3 "$DB_PATH" 'SELECT count(*) FROM devices' >/dev/null
  [[ ! -e $DB_PATH-shm ]] || assert_equal "$(stat -c '%U %a' -- "$DB_PATH-shm")" "nobody 644"
}

@test "deleted, then an empty file in its place: nothing to keep, no raw copy of nothing" {
  big_db "$DB_PATH"
  b=$(backup_now)
  rm -f "$DB_PATH" "$DB_PATH-wal" "$DB_PATH-shm"
  touch "$DB_PATH"
  on_terminal yes "$RESTORE" latest
  assert_status 0
  assert_contains "$output" "Restore this backup into $DB_PATH? It is empty (0 bytes), so there is nothing to keep. Type yes to continue:"
  assert_contains "$output" "$DB_PATH is empty (0 bytes): there is nothing to keep; restoring into it"
  [[ $output != *"too damaged"* && ! -e $BACKUP_DIR/pre-restore ]]
  assert_contains "$output" "  safety backup:   none (there was no database to keep)"
  assert_equal "$(sqlite3 "$DB_PATH" 'PRAGMA journal_mode')" wal
  assert_equal "$(content "$DB_PATH")" "$(backup_content "$b")"
}

@test "deleted, then recreated empty (sqlite3 or the application): the backup's journal mode and owner win" {
  big_db "$DB_PATH"
  chmod 0644 "$DB_PATH"
  chown nobody:nogroup "$DB_PATH" 2>/dev/null || skip "needs root to give the database to another user"
  b=$(backup_now)
  rm -f "$DB_PATH" "$DB_PATH-wal" "$DB_PATH-shm"
  sqlite3 "$DB_PATH" 'CREATE TABLE t(x); DROP TABLE t;' # an empty rollback-journal file, root 0600
  chmod 0600 "$DB_PATH"
  run --separate-stderr "$RESTORE" --yes latest
  assert_status 0
  assert_equal "$(sqlite3 "$DB_PATH" 'PRAGMA journal_mode')" wal
  assert_equal "$(stat -c '%U:%G %a' -- "$DB_PATH")" "nobody:nogroup 644"
  for f in "$DB_PATH-wal" "$DB_PATH-shm"; do
    [[ ! -e $f ]] || assert_equal "$(stat -c '%U %a' -- "$f")" "nobody 644"
  done
  assert_equal "$(content "$DB_PATH")" "$(backup_content "$b")"
}

@test "a mistyped directory in --db: says it does not exist and shows the nearest path, not 'create it'" {
  big_db "$DB_PATH"
  backup_now >/dev/null
  run --separate-stderr "$RESTORE" --yes --db "$WORK/dtaa/app.db" latest
  assert_status 2
  assert_contains "$stderr" "directory $WORK/dtaa does not exist (the nearest existing one is $WORK; did you mean $WORK/data/app.db?)"
  assert_contains "$stderr" "the configured DB_PATH is $DB_PATH"
  [[ $stderr != *"create it (owned"* ]]
  [[ ! -e $WORK/dtaa ]]
}

# ---------------------------------------------------------------------------
# Disaster 3: a destructive migration
# ---------------------------------------------------------------------------

@test "destructive migration: restoring the backup migrate took says not to run make migrate until the file is fixed" {
  cat >"$MIGRATIONS_DIR/001_devices.sql" <<'SQL'
-- migrate:up
CREATE TABLE devices(id INTEGER PRIMARY KEY, device_ip TEXT NOT NULL, hostname TEXT);
-- migrate:down
DROP TABLE devices;
SQL
  "$SCRIPTS/migrate" up >/dev/null 2>&1
  sqlite3 "$DB_PATH" "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 50)
    INSERT INTO devices(device_ip, hostname) SELECT '10.0.0.' || i, 'host-' || i FROM n;"
  cat >"$MIGRATIONS_DIR/002_drop_hostnames.sql" <<'SQL'
-- migrate:up
UPDATE devices SET hostname = NULL;
-- migrate:down
SELECT 1;
SQL
  run --separate-stderr "$SCRIPTS/migrate" up
  assert_status 0
  assert_equal "$(sqlite3 "$DB_PATH" 'SELECT count(hostname) FROM devices')" 0
  pre=$(find "$BACKUP_DIR" -maxdepth 1 -name 'app_*.db.zst' | sort | tail -n 1)

  on_terminal yes "$RESTORE" "$(basename -- "$pre")"
  assert_status 0
  note="this backup predates migration 002_drop_hostnames.sql, which the database being replaced had applied and MIGRATIONS_DIR still holds: do not run \`make migrate\` yet, it would apply it again; if it caused the damage, revert or fix that file first"
  assert_contains "$output" "  warning: $note"
  assert_contains "$output" "  note: $note"
  [[ $output != *"to bring it forward"* ]]
  assert_equal "$(sqlite3 "$DB_PATH" 'SELECT count(hostname) FROM devices')" 50
  run "$SCRIPTS/migrate" status
  assert_contains "$output" "002"
}

@test "latest with under half the rows of the backup before it: the plan names both" {
  big_db "$DB_PATH"
  first=$(backup_now)
  older="$BACKUP_DIR/app_20200101_000000.db.zst"
  mv -- "$first" "$older" && mv -- "$first.manifest.json" "$older.manifest.json"
  sqlite3 "$DB_PATH" 'DELETE FROM devices WHERE id > 100'
  newest=$(backup_now)
  run --separate-stderr "$RESTORE" --verify latest
  assert_status 0
  assert_contains "$stderr" "\`latest\` ($(basename -- "$newest"), 100 rows) has under half the rows of the backup before it (app_20200101_000000.db.zst, 2000 rows)"
  on_terminal no "$RESTORE" latest
  assert_contains "$output" "restore app_20200101_000000.db.zst instead"
}

# ---------------------------------------------------------------------------
# The prompt
# ---------------------------------------------------------------------------

@test "the prompt accepts exactly 'yes': y and Yes change nothing" {
  big_db "$DB_PATH"
  backup_now >/dev/null
  sqlite3 "$DB_PATH" 'DELETE FROM devices WHERE id > 10'
  before=$(sha256sum <"$DB_PATH")
  for answer in y Yes YES; do
    on_terminal "$answer" "$RESTORE" latest
    assert_status 1
    assert_contains "$output" "restore cancelled: type yes in full to restore (you typed '$answer'); nothing was changed"
  done
  assert_equal "$(sha256sum <"$DB_PATH")" "$before"
  [[ ! -e $BACKUP_DIR/pre-restore ]]
}

@test "no lock while the plan is on screen: a backup runs meanwhile; 'latest' moving refuses, nothing changed" {
  big_db "$DB_PATH"
  backup_now >/dev/null
  sqlite3 "$DB_PATH" 'DELETE FROM devices WHERE id > 1500'
  before=$(sha256sum <"$DB_PATH")
  start_at_prompt "$RESTORE" latest
  run --separate-stderr "$SCRIPTS/backup_database.sh" --quiet # a cron backup, not refused with 75
  assert_status 0
  keys $'yes\n'
  finish
  assert_status 1
  assert_contains "$output" "'latest' is now $BACKUP_DIR/app_"
  assert_contains "$output" "nothing was changed; run the restore again, naming the backup you mean"
  assert_equal "$(sha256sum <"$DB_PATH")" "$before"
}

@test "after yes, a backup holding the lock is waited for, not a 75 for the person who said yes" {
  big_db "$DB_PATH"
  b=$(backup_now)
  sqlite3 "$DB_PATH" 'DELETE FROM devices WHERE id > 10'
  start_at_prompt "$RESTORE" "$(basename -- "$b")"
  hold_lock "$(realpath -- "$DB_PATH").sqlite-ops.lock" 2 # a cron run, mid-way
  keys $'yes\n'
  finish
  assert_status 0
  assert_contains "$output" "holds the lock on $DB_PATH; waiting up to 300 s for it"
  assert_equal "$(content "$DB_PATH")" "$(backup_content "$b")"
}

@test "Ctrl-C at the prompt: cancelled, nothing changed" {
  big_db "$DB_PATH"
  backup_now >/dev/null
  before=$(sha256sum <"$DB_PATH")
  start_at_prompt "$RESTORE" latest
  keys $'\003' # the terminal turns it into SIGINT for the foreground processes
  finish
  assert_status 130
  assert_contains "$output" "restore cancelled; nothing was changed"
  assert_equal "$(sha256sum <"$DB_PATH")" "$before"
}

# pending_at_start SIG COMMAND...: run COMMAND with SIG already sent and held
# (blocked) through the bash step and the interpreter's start; its default
# disposition first, since a test runner may start the suite with SIGINT ignored.
pending_at_start() {
  local sig=$1
  shift
  # shellcheck disable=SC2016 # $$ and "$@" are the inner shell's
  run --separate-stderr env --default-signal="$sig" --block-signal="$sig" \
    bash -c 'kill -"$1" $$; shift; exec "$@"' _ "$sig" "$@"
}

@test "a signal while a script starts is held, never lost and never a traceback: one line, exit 128+n" {
  local sig code b before
  make_db "$DB_PATH" 20
  b=$(backup_now)
  sqlite3 "$DB_PATH" 'DELETE FROM devices WHERE id > 10'
  before=$(sha256sum <"$DB_PATH")
  for sig in INT TERM; do
    code=$((128 + $(kill -l "$sig")))
    pending_at_start "$sig" "$RESTORE" --yes latest
    assert_status "$code"
    assert_equal "$stderr" "restore_database.sh: interrupted by SIG$sig before it started; nothing was changed"
    assert_equal "$(sha256sum <"$DB_PATH")" "$before" "live database"
    [[ ! -e $BACKUP_DIR/pre-restore ]]
    pending_at_start "$sig" "$SCRIPTS/backup_database.sh"
    assert_status "$code"
    assert_equal "$stderr" "backup_database.sh: interrupted by SIG$sig before it started; nothing was published"
    assert_equal "$(ls "$BACKUP_DIR")" "$(basename "$b")"$'\n'"$(basename "$b").manifest.json"
  done
}

@test "Ctrl-C during the safety backup: says the database was not touched, no traceback" {
  big_db "$DB_PATH"
  backup_now >/dev/null
  sqlite3 "$DB_PATH" 'DELETE FROM devices WHERE id > 10'
  before=$(sha256sum <"$DB_PATH")
  # The operator presses Ctrl-C while the safety backup runs: SIGINT to the
  # whole foreground process group, as the terminal sends it.
  # Here it comes as the safety backup's compressor starts (zstd -T0; the
  # verify's decompression passes).
  fake_tool zstd '[[ " $* " != *" -T0 "* ]] || { kill -INT 0; sleep 5; }'
  PATH="$WORK/bin:$PATH" on_terminal yes "$RESTORE" latest
  assert_status 130
  assert_contains "$output" "interrupted during the safety backup of $DB_PATH: the database was not touched and nothing was restored"
  [[ $output != *Traceback* && $output != *"nothing was published"* ]]
  assert_equal "$(sha256sum <"$DB_PATH")" "$before"
}

@test "Ctrl-C during the copy (waiting on the application's lock): says the database is restored, not 'as it was'" {
  big_db "$DB_PATH"
  b=$(backup_now)
  sqlite3 "$DB_PATH" 'DELETE FROM devices WHERE id > 10'
  # The application holds a write transaction: the restore's copy waits for it.
  python3 - "$DB_PATH" "$WORK" <<'PY' &
import os, sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
open(os.path.join(sys.argv[2], "holding"), "w").close()
while not os.path.exists(os.path.join(sys.argv[2], "release")):
    time.sleep(0.02)
conn.execute("ROLLBACK")
PY
  BG_PIDS+=($!)
  for _ in $(seq 200); do [[ -e $WORK/holding ]] && break; sleep 0.05; done
  SQLITE_BUSY_TIMEOUT_MS=60000 start_at_prompt "$RESTORE" latest
  keys $'yes\n'
  wait_until_copying
  keys $'\003'                      # Ctrl-C while the copy waits...
  wait_for "$WORK/screen" "^C"      # ...delivered (the terminal echoed it)
  touch "$WORK/release"             # then the application lets go
  finish
  assert_status 130
  assert_contains "$output" "restore_database.sh: interrupted during the copy, after its commit: $DB_PATH holds the backup's content ($(basename -- "$b"), 2000 rows); it was not checked: check it with: "
  [[ $output != *"as it was"* && $output != *"nothing was published"* && $output != *Traceback* ]]
  assert_contains "$output" "the safety backup taken before this attempt is kept:"
  assert_equal "$(content "$DB_PATH")" "$(backup_content "$b")"
}

# ---------------------------------------------------------------------------
# While the application writes; retries
# ---------------------------------------------------------------------------

@test "a restore while the application keeps writing ends in exit 0, never a false 'does not match'" {
  big_db "$DB_PATH"
  b=$(backup_now)
  python3 - "$DB_PATH" "$WORK" <<'PY' &
import os, sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], timeout=30, isolation_level=None)
open(os.path.join(sys.argv[2], "writing"), "w").close()
i = 0
while not os.path.exists(os.path.join(sys.argv[2], "stop")):
    conn.execute("INSERT INTO devices(device_ip) VALUES (?)", (f"app-{i}",))
    i += 1
    time.sleep(0.002)  # a busy application, not one that never lets go of the lock
PY
  BG_PIDS+=($!)
  for _ in $(seq 200); do [[ -e $WORK/writing ]] && break; sleep 0.05; done
  run --separate-stderr "$RESTORE" --yes latest
  touch "$WORK/stop"
  wait "${BG_PIDS[0]}"
  assert_status 0
  [[ $stderr != *"does not match the backup"* ]]
  assert_equal "$(sqlite3 "$DB_PATH" 'PRAGMA quick_check')" ok
  # Everything in the database is the backup's rows plus the application's.
  assert_equal "$(sqlite3 "$DB_PATH" "SELECT count(*) FROM devices WHERE device_ip NOT LIKE 'app-%'")" 2000
}

@test "retries of one incident keep the first safety backup, the newest two, and only repeated content goes" {
  big_db "$DB_PATH"
  backup_now >/dev/null
  safety=$(backup_now --dir "$BACKUP_DIR/pre-restore")
  # Four earlier tries in the last hour (one incident), plus this restore's.
  local -a stamps=()
  for minutes in 50 40 30 20; do
    stamps+=("$(date -u -d "-$minutes min" +%Y%m%d_%H%M%S)")
    cp -- "$safety" "$BACKUP_DIR/pre-restore/app_${stamps[-1]}.db.zst"
    # A backup's time is its manifest's created_at: each copy's says when it was taken.
    sed -e "s/\"created_at\": \"[^\"]*\"/\"created_at\": \"$(date -u -d "-$minutes min" +%Y-%m-%dT%H:%M:%SZ)\"/" \
      -e "s/\"file\": \"[^\"]*\"/\"file\": \"app_${stamps[-1]}.db.zst\"/" \
      -- "$safety.manifest.json" >"$BACKUP_DIR/pre-restore/app_${stamps[-1]}.db.zst.manifest.json"
  done
  rm -f -- "$safety" "$safety.manifest.json"
  run --separate-stderr "$RESTORE" --yes latest
  assert_status 0
  # All hold the same content: the middle ones go, naming the first, which is kept.
  assert_contains "$stderr" "pruned $BACKUP_DIR/pre-restore/app_${stamps[1]}.db.zst (a middle retry of this incident; the same content is kept in $BACKUP_DIR/pre-restore/app_${stamps[0]}.db.zst)"
  run ls "$BACKUP_DIR/pre-restore"
  assert_contains "$output" "app_${stamps[0]}.db.zst" # the state before the incident began
  [[ $output != *"app_${stamps[1]}"* && $output != *"app_${stamps[2]}"* ]]
  assert_contains "$output" "app_${stamps[3]}.db.zst"
  assert_equal "$(find "$BACKUP_DIR/pre-restore" -name '*.db.zst' | wc -l)" 3
}
