#!/usr/bin/env bats
# Tests for scripts/backup_database.sh: each builds its own database and backup
# directory in $BATS_TEST_TMPDIR and checks what a user relies on: the rows in
# the backup, the exit code, the file modes, the files that must not exist.

# shellcheck disable=SC2030,SC2031 # every @test runs in its own subshell on purpose
load helpers

BACKUP="$SCRIPTS/backup_database.sh"

setup() {
  common_setup
  DB="$WORK/dashboard.db"
  DIR="$WORK/backups"
  NOW=$(date +%s)
}

teardown() {
  # Background helpers (writers, lock holders) started by a test.
  local pid
  for pid in ${BG_PIDS:-}; do
    kill "$pid" 2>/dev/null || true
  done
  if [[ -n ${TMPFS:-} ]] && mountpoint -q "$TMPFS"; then
    umount "$TMPFS" || true
  fi
}

# --- helpers for this file ---------------------------------------------------

# backup ARGS...: run the script against $DB and $DIR (overridable by ARGS).
backup() {
  run --separate-stderr "$BACKUP" --db "$DB" --dir "$DIR" "$@"
}

# published: the backup files in $DIR (not manifests), one per line.
published() {
  find "$DIR" -maxdepth 1 -type f -name '*.db*' ! -name '*.manifest.json' ! -name '.*' | sort
}

# backup_path: the path from the "Backup completed:" line of the last run (the
# path itself may hold a newline, so take everything after the marker).
backup_path() {
  [[ $output == *"Backup completed: "* ]] || return 1
  printf '%s\n' "${output##*Backup completed: }"
}

# manifest_field FILE KEY: a manifest value as JSON.
manifest_field() {
  python3 -c 'import json, sys; print(json.dumps(json.load(open(sys.argv[1]))[sys.argv[2]]))' \
    "$1.manifest.json" "$2"
}

# restore_to BACKUP OUT: decompress a published backup.
restore_to() {
  case $1 in
    *.zst) zstd -q -d -c -- "$1" >"$2" ;;
    *.gz) gzip -d -c -- "$1" >"$2" ;;
    *) cp -- "$1" "$2" ;;
  esac
}

# fake_backup NAME STAMP [VERIFIED]: a small backup file + manifest with the time in its name.
fake_backup() {
  local file="$DIR/$1_$2.db.gz" verified=${3:-true}
  mkdir -p "$DIR"
  printf 'x' | gzip -c >"$file"
  python3 - "$file" "$verified" <<'PY'
import json, os, sys
path, verified = sys.argv[1], sys.argv[2] == "true"
json.dump({"verified": verified, "size_bytes": os.path.getsize(path), "tables": {},
           "sha256": "0" * 64, "db_sha256": "0" * 64}, open(path + ".manifest.json", "w"))
PY
}

# stamp_days_ago N: a backup-name timestamp N days in the past.
# (From the test's start time, so calls within a test agree to the second.)
stamp_days_ago() { date -u -d "@$((NOW - $1 * 86400))" +%Y%m%d_%H%M%S; }

# make_big_db PATH MB MODE: a database of about MB MiB plus a table `w` for writers.
make_big_db() {
  python3 - "$1" "$2" "$3" <<'PY'
import sqlite3, sys
db, mb, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
c = sqlite3.connect(db, isolation_level=None)
c.execute(f"PRAGMA journal_mode={mode}")
c.execute("CREATE TABLE big(id INTEGER PRIMARY KEY, b BLOB)")
c.execute("CREATE TABLE w(id INTEGER PRIMARY KEY, v BLOB)")
c.execute("BEGIN")
c.executemany("INSERT INTO big(b) VALUES (randomblob(1000))", [()] * (mb * 1000))
c.execute("COMMIT")
PY
}

# start_writer DB: commit one row at a time (~200/s) until $WORK/stop exists.
# The writer's busy timeout lets it wait out a rollback-mode snapshot.
start_writer() {
  python3 - "$1" "$WORK/stop" "$WORK/writer.out" <<'PY' &
import os, sqlite3, sys, time
db, stop, out = sys.argv[1:4]
c = sqlite3.connect(db, timeout=60, isolation_level=None)
n, start = 0, time.time()
while not os.path.exists(stop):
    c.execute("INSERT INTO w(v) VALUES (randomblob(100))")
    n += 1
    if n == 20:
        open(out + ".ready", "w").close()
    time.sleep(0.004)
with open(out, "w") as f:
    f.write(f"{n} {n / (time.time() - start):.0f}\n")
PY
  BG_PIDS="${BG_PIDS:-} $!"
  WRITER_PID=$!
  wait_for_file "$WORK/writer.out.ready"
}

stop_writer() {
  touch "$WORK/stop"
  wait "$WRITER_PID"
}

# wait_for_file PATH: up to 10 s.
wait_for_file() {
  local i
  for ((i = 0; i < 200; i++)); do
    [[ -e $1 ]] && return 0
    sleep 0.05
  done
  echo "timed out waiting for $1" >&2
  return 1
}

# --- usage and input checks --------------------------------------------------

@test "--help prints the usage block from the script's header" {
  run "$BACKUP" --help
  assert_status 0
  assert_contains "$output" "Summary: take a verified"
  assert_contains "$output" "Usage: backup_database.sh"
  assert_contains "$output" "Exit codes:"
}

@test "an unknown option or a bad number is a usage error (exit 2)" {
  make_db "$DB" 10
  backup --bogus
  assert_status 2
  backup --keep seven
  assert_status 2
  backup --compress lzma
  assert_status 2
  [[ ! -e $DIR ]]
}

@test "a missing database: exit 2, nothing created" {
  backup --db "$WORK/nope.db"
  assert_status 2
  assert_contains "$stderr" "backup_database.sh: database not found"
  [[ ! -e $DIR ]]
  [[ ! -e $WORK/nope.db ]]
}

@test "a file that is not SQLite: exit 2, nothing created" {
  echo "not a database" >"$DB"
  backup
  assert_status 2
  assert_contains "$stderr" "not an SQLite database"
  [[ ! -e $DIR ]]
}

@test "settings come from the config file and the environment; flags win" {
  make_db "$DB" 5
  printf 'DB_PATH=%s\nBACKUP_DIR=%s\nCOMPRESS=gzip\n' "$DB" "$WORK/from-config" >"$WORK/ops.conf"
  run --separate-stderr "$BACKUP" --config "$WORK/ops.conf"
  assert_status 0
  [[ $(backup_path) == "$WORK/from-config/dashboard_"*.db.gz ]]
  COMPRESS=none run --separate-stderr "$BACKUP" --config "$WORK/ops.conf"
  assert_status 0
  [[ $(backup_path) == *.db ]]
  COMPRESS=none run --separate-stderr "$BACKUP" --config "$WORK/ops.conf" --compress zstd
  assert_status 0
  [[ $(backup_path) == *.db.zst ]]
}

@test "runs through a symlink; sourcing the script defines functions without running" {
  make_db "$DB" 5
  mkdir -p "$WORK/bin"
  ln -s "$BACKUP" "$WORK/bin/sqlite-backup"
  run --separate-stderr "$WORK/bin/sqlite-backup" --db "$DB" --dir "$DIR"
  assert_status 0
  run bash -c 'source "$1" && declare -F load_settings >/dev/null && echo sourced' _ "$BACKUP"
  assert_equal "$output" sourced
}

@test "an existing backup directory readable by others gets a warning" {
  make_db "$DB" 5
  mkdir -p "$DIR"
  chmod 0755 "$DIR"
  backup
  assert_status 0
  assert_contains "$stderr" "warning: $DIR is readable by other users"
}

# --- what a backup is --------------------------------------------------------

@test "a backup holds the database's rows; the manifest has every contract field" {
  make_db "$DB" 250
  backup
  assert_status 0
  local file
  file=$(backup_path)
  [[ -f $file && -f $file.manifest.json ]]
  assert_equal "$(published)" "$file" "the only backup"
  [[ ${file##*/} =~ ^dashboard_[0-9]{8}_[0-9]{6}\.db(\.zst|\.gz)$ ]]

  restore_to "$file" "$WORK/restored.db"
  assert_equal "$(count_rows "$WORK/restored.db" devices)" 250 "devices rows"
  assert_equal "$(count_rows "$WORK/restored.db" services)" 250 "services rows"
  assert_equal "$(sqlite3 "$WORK/restored.db" 'PRAGMA integrity_check')" ok

  python3 - "$file" "$DB" "$WORK/restored.db" <<'PY'
import hashlib, json, os, sys, time
path, db, restored = sys.argv[1:4]
m = json.load(open(path + ".manifest.json"))
for key in ("source", "created_at", "sha256", "db_sha256", "size_bytes", "db_size_bytes",
            "page_size", "journal_mode", "sqlite_version", "schema_version", "tables",
            "compression", "duration_seconds", "verified", "format", "file", "name"):
    assert key in m, key
sha = lambda p: hashlib.sha256(open(p, "rb").read()).hexdigest()
assert m["sha256"] == sha(path) and m["size_bytes"] == os.path.getsize(path)
assert m["db_sha256"] == sha(restored) and m["db_size_bytes"] == os.path.getsize(restored)
assert m["source"] == db and m["verified"] is True and m["format"] == 1
assert m["file"] == os.path.basename(path) and m["name"] == "dashboard"
assert m["tables"] == {"devices": 250, "services": 250}, m["tables"]
assert m["journal_mode"] == "wal" and m["page_size"] == 4096 and m["schema_version"] is None
stamp = os.path.basename(path)[len("dashboard_"):][:15]
assert m["created_at"] == time.strftime("%Y-%m-%dT%H:%M:%SZ", time.strptime(stamp, "%Y%m%d_%H%M%S"))
assert m["compression"] in ("zstd", "gzip")
import sqlite3
# The full integrity_check ran on these very bytes, under this SQLite.
assert m["integrity_check"] == {"result": "ok", "db_sha256": m["db_sha256"],
                                "sqlite_version": sqlite3.sqlite_version}, m["integrity_check"]
PY
}

@test "stdout carries results only: 'Backup completed' is its last line; logs go to stderr" {
  make_db "$DB" 10
  backup
  assert_status 0
  assert_equal "$(printf '%s\n' "$output" | wc -l)" 1 "stdout lines"
  [[ $output == "Backup completed: $DIR/dashboard_"* ]]
  assert_contains "$stderr" "backup_database.sh: info:"
  backup --quiet
  assert_status 0
  assert_equal "$stderr" "" "stderr with --quiet"
}

@test "--compress zstd, gzip and none each round-trip to the same database" {
  make_db "$DB" 40
  local codec file
  for codec in zstd gzip none; do
    backup --compress "$codec"
    assert_status 0
    file=$(backup_path)
    assert_equal "$(manifest_field "$file" compression)" "\"$codec\""
    rm -f "$WORK/r.db"
    restore_to "$file" "$WORK/r.db"
    assert_equal "$(count_rows "$WORK/r.db" devices)" 40 "$codec rows"
  done
  [[ $(published | grep -c '\.zst$') -eq 1 && $(published | grep -c '\.gz$') -eq 1 ]]
  [[ $(published | grep -c '\.db$') -eq 1 ]]
}

@test "the backup is one self-contained file: rollback-journal header, no -wal needed" {
  make_db "$DB" 30 wal
  backup --compress none
  assert_status 0
  local file
  file=$(backup_path)
  # Bytes 18-19 of the header are 1 (rollback journal), not 2 (WAL).
  assert_equal "$(od -An -tu1 -j18 -N2 "$file" | tr -s ' ')" " 1 1"
  assert_equal "$(manifest_field "$file" journal_mode)" '"wal"' "the source's mode"
}

@test "files are 0600 and a new directory 0700, whatever the caller's umask" {
  make_db "$DB" 10
  local file
  umask 000
  backup --dir "$WORK/new-backups"
  assert_status 0
  file=$(backup_path)
  assert_equal "$(file_mode "$WORK/new-backups")" 700 "directory"
  assert_equal "$(file_mode "$file")" 600 "backup"
  assert_equal "$(file_mode "$file.manifest.json")" 600 "manifest"
}

@test "row counts cover tables whose names hold spaces and quotes" {
  sqlite3 "$DB" "CREATE TABLE \"Order Details\"(x); INSERT INTO \"Order Details\" VALUES (1),(2);
    CREATE TABLE \"it's \"\"q\"\"\"(y); INSERT INTO \"it's \"\"q\"\"\" VALUES (1);"
  backup
  assert_status 0
  assert_equal "$(manifest_field "$(backup_path)" tables)" '{"Order Details": 2, "it'"'"'s \"q\"": 1}'
}

@test "schema_version: max(version) of an integer schema_migrations, else null" {
  make_db "$DB" 5
  sqlite3 "$DB" "CREATE TABLE schema_migrations(version INTEGER PRIMARY KEY, description TEXT);
    INSERT INTO schema_migrations VALUES (9, 'a'), (10, 'b'), (2, 'c');"
  backup
  assert_status 0
  assert_equal "$(manifest_field "$(backup_path)" schema_version)" 10

  make_db "$WORK/old.db" 5
  sqlite3 "$WORK/old.db" "CREATE TABLE schema_migrations(id INTEGER PRIMARY KEY, version TEXT, applied_at TEXT, description TEXT);
    INSERT INTO schema_migrations(version) VALUES ('9'), ('10');"
  backup --db "$WORK/old.db"
  assert_status 0
  assert_equal "$(manifest_field "$(backup_path)" schema_version)" null
}

# --- SQLite and shell pitfalls -----------------------------------------------

@test "pitfall 2: a WAL database's un-checkpointed commits are in the backup" {
  make_db "$DB" 10 wal
  # A connection stays open with autocheckpoint off, so the -wal is never folded
  # into the main file: a plain cp of the .db would miss these rows.
  python3 - "$DB" "$WORK/held" <<'PY' &
import sqlite3, sys, time
c = sqlite3.connect(sys.argv[1], isolation_level=None)
c.execute("PRAGMA wal_autocheckpoint=0")
c.execute("CREATE TABLE late(x)")
c.execute("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 500) "
          "INSERT INTO late SELECT i FROM n")
open(sys.argv[2], "w").close()
time.sleep(60)
PY
  BG_PIDS="$!"
  wait_for_file "$WORK/held"
  [[ -s $DB-wal ]]
  cp "$DB" "$WORK/naive.db"
  run sqlite3 "$WORK/naive.db" "SELECT count(*) FROM late"
  [[ $status -ne 0 || $output != 500 ]] # the naive copy really misses them

  backup
  assert_status 0
  restore_to "$(backup_path)" "$WORK/r.db"
  assert_equal "$(count_rows "$WORK/r.db" late)" 500 "un-checkpointed rows"
}

@test "pitfall 3: hostile db path and backup dir (quote, space, newline, SQL) work and run no SQL" {
  local weird="$WORK/it's a "$'\n'"'; DROP TABLE devices; --"
  mkdir -p "$weird"
  DB="$weird/dash'; DROP TABLE services; --.db"
  DIR="$weird/back'ups"$'\n'"; DROP TABLE devices; --"
  make_db "$DB" 20
  backup
  assert_status 0
  local file
  file=$(backup_path)
  [[ -f $file && -f $file.manifest.json ]]
  [[ $(dirname -- "$file") == "$DIR" ]]
  assert_equal "$(count_rows "$DB" devices)" 20 "live devices"
  assert_equal "$(count_rows "$DB" services)" 20 "live services"
  restore_to "$file" "$WORK/r.db"
  assert_equal "$(count_rows "$WORK/r.db" services)" 20 "backup services"
  assert_equal "$(manifest_field "$file" name)" "\"dash'; DROP TABLE services; --\""
}

# How long these take, and the writer's commit rate and latency meanwhile, are
# measured by tests/perf/bench_writer.py (tests assert no wall-clock time).
@test "pitfall 1: completes while a writer keeps committing (WAL)" {
  make_big_db "$DB" 25 wal
  start_writer "$DB"
  run --separate-stderr timeout 120 "$BACKUP" --db "$DB" --dir "$DIR"
  stop_writer
  assert_status 0
  read -r commits _ <"$WORK/writer.out"
  ((commits > 20)) # the writer went on committing beside the backup
  local file
  file=$(backup_path)
  restore_to "$file" "$WORK/r.db"
  assert_equal "$(sqlite3 "$WORK/r.db" 'PRAGMA integrity_check')" ok
  # The manifest's counts are the snapshot's, taken at one instant.
  assert_equal "$(count_rows "$WORK/r.db" w)" "$(manifest_field "$file" tables | python3 -c 'import json,sys; print(json.load(sys.stdin)["w"])')"
}

@test "pitfall 1: completes while a writer commits in rollback-journal mode" {
  make_big_db "$DB" 25 delete
  start_writer "$DB"
  run --separate-stderr timeout 120 "$BACKUP" --db "$DB" --dir "$DIR"
  stop_writer
  assert_status 0
  read -r commits _ <"$WORK/writer.out"
  ((commits > 20))
  restore_to "$(backup_path)" "$WORK/r.db"
  assert_equal "$(count_rows "$WORK/r.db" big)" 25000 "rows"
  assert_equal "$(manifest_field "$(backup_path)" journal_mode)" '"delete"'
}

@test "a corrupt database from the corpus: exit 4, nothing published" {
  local src
  corpus_file src corrupt/chinook_rootswap.sqlite
  cp "$src" "$DB"
  backup
  assert_status 4
  assert_contains "$stderr" "backup_database.sh:"
  assert_equal "$(published)" "" "published files"
  assert_equal "$(find "$DIR" -mindepth 1 | wc -l)" 0 "files in the backup dir"
}

@test "a database this test corrupts: exit 4, one clear line, nothing published" {
  make_db "$DB" 3000 delete
  # Overwrite a page in the middle of the file with garbage.
  dd if=/dev/urandom of="$DB" bs=4096 seek=5 count=2 conv=notrunc status=none
  backup
  assert_status 4
  assert_equal "$(printf '%s\n' "$stderr" | grep -vc ': info: ')" 1 "error lines"
  assert_contains "$stderr" "failed PRAGMA integrity_check"
  assert_equal "$(find "$DIR" -mindepth 1 | wc -l)" 0 "files in the backup dir"
}

# --- retention ---------------------------------------------------------------

@test "retention prunes old backups by the time in their name, keeping KEEP_MIN verified" {
  make_db "$DB" 5
  local d
  local -A at=()
  for d in 2 40 50 60 70; do
    at[$d]=$(stamp_days_ago "$d")
    fake_backup dashboard "${at[$d]}"
  done
  backup --retention-days 30 --keep 3
  assert_status 0
  # Kept: the new one, 2 days, 40 days (3 newest verified); pruned: 50, 60, 70.
  assert_equal "$(published | wc -l)" 3 "backups left"
  [[ -f $DIR/dashboard_${at[40]}.db.gz && -f $DIR/dashboard_${at[2]}.db.gz ]]
  [[ ! -e $DIR/dashboard_${at[50]}.db.gz ]]
  [[ ! -e $DIR/dashboard_${at[50]}.db.gz.manifest.json ]] # with its file
  assert_contains "$stderr" "Pruned: $DIR/dashboard_${at[70]}.db.gz"
}

@test "retention never touches other databases' backups, notes or anything else" {
  make_db "$DB" 5
  fake_backup dashboard_old "$(stamp_days_ago 90)"
  fake_backup dash "$(stamp_days_ago 90)"
  fake_backup dashboard "$(stamp_days_ago 90)"
  echo notes >"$DIR/README.txt"
  touch -d '100 days ago' "$DIR/README.txt"
  echo x >"$DIR/dashboard_$(stamp_days_ago 90).db.bak"
  echo x >"$DIR/dashboard_20200101_000000.sql"
  backup --retention-days 30 --keep 1
  assert_status 0
  [[ -f $DIR/dashboard_old_$(stamp_days_ago 90).db.gz && -f $DIR/dash_$(stamp_days_ago 90).db.gz ]]
  [[ -f $DIR/README.txt && -f $DIR/dashboard_$(stamp_days_ago 90).db.bak && -f $DIR/dashboard_20200101_000000.sql ]]
  [[ ! -e $DIR/dashboard_$(stamp_days_ago 90).db.gz ]] # its own old one goes
}

@test "retention uses the name's time, not mtime" {
  make_db "$DB" 5
  local old new
  old=$(stamp_days_ago 60)
  new=$(stamp_days_ago 1)
  fake_backup dashboard "$old" # old name, fresh mtime
  fake_backup dashboard "$new"
  touch -d '90 days ago' "$DIR/dashboard_$new.db.gz" # fresh name, old mtime
  backup --retention-days 30 --keep 1
  assert_status 0
  [[ ! -e $DIR/dashboard_$old.db.gz ]]
  [[ -f $DIR/dashboard_$new.db.gz ]]
}

@test "retention keeps everything when the newest verified backup is older than RETENTION_DAYS" {
  make_db "$DB" 5
  fake_backup dashboard "$(stamp_days_ago 40)"
  fake_backup dashboard "$(stamp_days_ago 50)"
  fake_backup dashboard "$(stamp_days_ago 1)" false # recent but unverified
  # The rule itself, through --dry-run (a real run would add a fresh backup):
  run --separate-stderr env PYTHONPATH="$REPO_ROOT/lib" python3 -m sqlite_ops.catalog prune \
    --retention-days 30 --keep 0 --source "$DB" -- "$DIR"
  assert_status 0
  [[ $output != *Pruned* ]]
  assert_contains "$output" "keeping everything"
  assert_equal "$(published | wc -l)" 3 "backups left"
}

@test "unverified backups do not count towards KEEP_MIN" {
  make_db "$DB" 5
  fake_backup dashboard "$(stamp_days_ago 40)"
  fake_backup dashboard "$(stamp_days_ago 35)" false
  backup --retention-days 30 --keep 2
  assert_status 0
  [[ -f $DIR/dashboard_$(stamp_days_ago 40).db.gz ]]   # 2nd newest verified: kept
  [[ ! -e $DIR/dashboard_$(stamp_days_ago 35).db.gz ]] # unverified and old: pruned
}

@test "--dry-run lists what would be pruned, takes no backup, removes nothing" {
  make_db "$DB" 5
  fake_backup dashboard "$(stamp_days_ago 60)"
  fake_backup dashboard "$(stamp_days_ago 1)"
  backup --dry-run --retention-days 30 --keep 1
  assert_status 0
  assert_contains "$output" "Would prune: $DIR/dashboard_$(stamp_days_ago 60).db.gz"
  [[ $output != *"Backup completed"* ]]
  assert_equal "$(published | wc -l)" 2 "backups left"
  [[ -f $DIR/dashboard_$(stamp_days_ago 60).db.gz.manifest.json ]]
}

# --- failures leave nothing behind --------------------------------------------

@test "pitfall 5: a compressor failing with ENOSPC: exit 1, one line, nothing published, no temps" {
  make_db "$DB" 200
  backup --compress gzip
  assert_status 0
  local before
  before=$(published)
  sqlite3 "$DB" .dump >"$WORK/live.before"
  mkdir -p "$WORK/bin"
  printf '#!/bin/sh\ncat >/dev/null\necho "gzip: stdout: No space left on device" >&2\nexit 1\n' >"$WORK/bin/gzip"
  chmod +x "$WORK/bin/gzip"
  sleep 1
  PATH="$WORK/bin:$PATH" backup --compress gzip
  assert_status 1
  assert_equal "$(printf '%s\n' "$stderr" | grep -vc ': info: ')" 1 "error lines"
  assert_contains "$stderr" "No space left on device"
  assert_equal "$(published)" "$before" "backups"
  assert_equal "$(find "$DIR" -name '.*' | wc -l)" 0 "temp files"
  sqlite3 "$DB" .dump | cmp - "$WORK/live.before"
}

@test "pitfall 5: a really full file system (small tmpfs): exit 1, no partial file, old backups intact" {
  [[ $(id -u) == 0 ]] || skip "needs root to mount a tmpfs"
  TMPFS="$WORK/small"
  mkdir -p "$TMPFS"
  mount -t tmpfs -o size=6m tmpfs "$TMPFS" 2>/dev/null || skip "mounting a tmpfs is not allowed here"
  DIR="$TMPFS/backups"
  make_db "$DB" 200
  backup --compress none
  assert_status 0
  local before
  before=$(published)
  # Grow the database past what is left: the early space check says so clearly.
  make_big_db "$WORK/big.db" 8 wal
  backup --db "$WORK/big.db" --compress none
  assert_status 1
  assert_contains "$stderr" "not enough free space"
  # A WAL database's backup writes no copy of it, only the packed file: with
  # room for the early check, a compressor that writes more than is left
  # makes the backup's own write of the packed file hit ENOSPC.
  make_big_db "$WORK/mid.db" 3 wal
  fill_to_leave $(($(stat -c %s "$WORK/mid.db") + 300000))
  mkdir -p "$WORK/bin"
  printf '#!/bin/sh\ncat >/dev/null\nexec head -c 20000000 /dev/zero\n' >"$WORK/bin/gzip"
  chmod +x "$WORK/bin/gzip"
  PATH="$WORK/bin:$PATH" backup --db "$WORK/mid.db" --compress gzip
  assert_status 1
  assert_contains "$stderr" "No space left on device"
  assert_no_trace
  # A rollback-journal database's backup copies it first (beside the backup):
  # leave room for that copy but not for the packed file too.
  rm -f "$TMPFS/filler"
  make_big_db "$WORK/mid2.db" 3 delete
  fill_to_leave $(($(stat -c %s "$WORK/mid2.db") + 300000))
  backup --db "$WORK/mid2.db" --compress gzip
  assert_status 1
  assert_no_trace
}

# fill_to_leave BYTES: a filler file in $TMPFS leaves about BYTES free.
fill_to_leave() {
  local free
  free=$(df -P -B1 "$TMPFS" | awk 'NR==2 {print $4}')
  fallocate -l $((free - $1)) "$TMPFS/filler"
}

# assert_no_trace: one error line, the earlier backups as they were, no temps.
assert_no_trace() {
  assert_equal "$(printf '%s\n' "$stderr" | grep -vc ': info: ')" 1 "error lines"
  assert_equal "$(published)" "$before" "backups"
  assert_equal "$(find "$DIR" -name '.*' | wc -l)" 0 "temp files"
}

@test "pitfall 5: kill -9 mid-backup leaves no final file; the next run sweeps its temps" {
  make_db "$DB" 200
  mkdir -p "$WORK/bin"
  # A compressor that hangs, so the kill lands while the backup is half done.
  printf '#!/bin/sh\ntouch "%s"\nsleep 30\n' "$WORK/compressing" >"$WORK/bin/gzip"
  chmod +x "$WORK/bin/gzip"
  PATH="$WORK/bin:$PATH" setsid "$BACKUP" --db "$DB" --dir "$DIR" --compress gzip 2>/dev/null &
  local pid=$!
  BG_PIDS="$pid"
  wait_for_file "$WORK/compressing"
  kill -9 -- "-$pid"
  wait "$pid" || true
  assert_equal "$(published)" "" "published"
  [[ $(find "$DIR" -name '.*.tmp.*' | wc -l) -gt 0 ]] # it did leave temps
  assert_equal "$(count_rows "$DB" devices)" 200 "live rows"

  backup --compress gzip
  assert_status 0
  assert_equal "$(find "$DIR" -name '.*' | wc -l)" 0 "temp files after the next run"
  assert_equal "$(published | wc -l)" 1 "backups"
}

@test "the sweep leaves another database's in-progress temp files alone" {
  make_db "$DB" 5
  mkdir -p "$DIR"
  touch "$DIR/.dashboard_old_20260101_000000.db.gz.tmp.AbC123" \
    "$DIR/.dashboard_2_20260101_000000.db.zst.tmp.AbC123" \
    "$DIR/.dashboard_20260101_000000.db.gz.tmp.XyZ789" \
    "$DIR/.dashboard_20260101_000000.db.tmp.XyZ789-journal"
  backup
  assert_status 0
  [[ -e $DIR/.dashboard_old_20260101_000000.db.gz.tmp.AbC123 ]]
  [[ -e $DIR/.dashboard_2_20260101_000000.db.zst.tmp.AbC123 ]]
  [[ ! -e $DIR/.dashboard_20260101_000000.db.gz.tmp.XyZ789 ]]
  [[ ! -e $DIR/.dashboard_20260101_000000.db.tmp.XyZ789-journal ]]
}

# --- concurrency ---------------------------------------------------------------

@test "pitfall 6: a lock held from another PID namespace says its pid is not one of ours" {
  make_db "$DB" 5
  # What a run in a container beside this one records: its pid, its task, its PID namespace.
  printf '4242 backup pid:[1]\n' >"$DB.sqlite-ops.lock"
  chmod 600 "$DB.sqlite-ops.lock"
  hold_lock "$DB.sqlite-ops.lock" 3
  BG_PIDS="$HOLDER_PID"
  backup
  assert_status 75
  assert_contains "$stderr" "(pid 4242 backup, in another PID namespace: a container or the host, where that number is not this one's process)"
  printf '4242 backup %s\n' "$(readlink /proc/self/ns/pid)" >"$DB.sqlite-ops.lock"
  backup
  assert_status 75
  assert_contains "$stderr" "(pid 4242 backup);"
}

@test "pitfall 6: while another run holds the lock: exit 75 at once, or wait with LOCK_TIMEOUT" {
  make_db "$DB" 5
  hold_lock "$DB.sqlite-ops.lock" 3
  BG_PIDS="$HOLDER_PID"
  backup
  assert_status 75
  assert_contains "$stderr" "holds the lock on $DB;" # the database, as every command says it
  [[ ! -e $DIR || -z $(published) ]]
  LOCK_TIMEOUT=10 backup
  assert_status 0
  [[ -n $(published) ]]
}

@test "two backups started at once: one publishes, the other exits 75" {
  make_db "$DB" 3000
  "$BACKUP" --db "$DB" --dir "$DIR" >"$WORK/a.out" 2>&1 &
  local a=$!
  "$BACKUP" --db "$DB" --dir "$DIR" >"$WORK/b.out" 2>&1 &
  local b=$!
  local ra=0 rb=0
  wait "$a" || ra=$?
  wait "$b" || rb=$?
  echo "exit codes: $ra $rb" >&3
  [[ "$ra $rb" == "0 75" || "$ra $rb" == "75 0" || "$ra $rb" == "0 0" ]]
  # (0 0 only if the first finished before the second started: then two distinct files.)
  assert_equal "$(published | wc -l)" $(( (ra == 0) + (rb == 0) )) "backups"
}

@test "a run whose parent holds the lock (migrate up, restore) does not wait for it" {
  make_db "$DB" 5
  exec {fd}>"$DB.sqlite-ops.lock"
  flock "$fd"
  SQLITE_OPS_LOCK_HELD="$DB.sqlite-ops.lock" backup
  assert_status 0
  exec {fd}>&-
}

@test "two backups in the same second get distinct names; neither overwrites" {
  make_db "$DB" 5
  backup
  assert_status 0
  local first
  first=$(backup_path)
  backup
  assert_status 0
  [[ $(backup_path) != "$first" ]]
  assert_equal "$(published | wc -l)" 2 "backups"
}

# --- metrics -------------------------------------------------------------------

@test "metrics: every gauge with a db label after success; last_run_success 0 after a failure" {
  make_db "$DB" 5
  backup --metrics-dir "$WORK/metrics"
  assert_status 0
  local prom="$WORK/metrics/sqlite_ops_backup_dashboard.prom" name
  for name in last_success_timestamp_seconds last_duration_seconds last_size_bytes count \
    oldest_age_seconds last_run_success; do
    grep -q "^sqlite_backup_${name}{db=\"dashboard\"} [0-9.]*$" "$prom"
  done
  grep -q '^sqlite_backup_last_run_success{db="dashboard"} 1$' "$prom"
  local success
  success=$(grep '^sqlite_backup_last_success_timestamp_seconds' "$prom")
  [[ ${success##* } -gt $(($(date +%s) - 60)) ]]

  echo "garbage" >"$DB.tmp" && dd if="$DB.tmp" of="$DB" conv=notrunc status=none
  backup --metrics-dir "$WORK/metrics"
  assert_status 2
  grep -q '^sqlite_backup_last_run_success{db="dashboard"} 0$' "$prom"
  assert_equal "$(grep '^sqlite_backup_last_success_timestamp_seconds' "$prom")" "$success" "kept"
  grep -q '^sqlite_backup_count{db="dashboard"} 1$' "$prom"
  assert_equal "$(find "$WORK/metrics" -name '.*' | wc -l)" 0 "temp files"
}

@test "two databases with the same name share a backup directory: neither prunes the other's" {
  mkdir -p "$WORK/a" "$WORK/b"
  make_db "$WORK/a/app.db" 5
  make_db "$WORK/b/app.db" 7
  # a's backups: old, and they are all a has (its backups have been failing).
  run --separate-stderr "$BACKUP" --db "$WORK/a/app.db" --dir "$DIR" --quiet
  assert_status 0
  a_backup=${output##*Backup completed: }
  old=$DIR/app_$(stamp_days_ago 40).db.zst
  mv "$a_backup" "$old"
  mv "$a_backup.manifest.json" "$old.manifest.json"
  python3 - "$old.manifest.json" "$old" <<'PY'
import json, os, sys
m = json.load(open(sys.argv[1])); m["file"] = os.path.basename(sys.argv[2])
json.dump(m, open(sys.argv[1], "w"))
PY
  # b backs up with keep 1 and retention 30 days: a's backup is not b's to prune.
  for _ in 1 2; do
    run --separate-stderr "$BACKUP" --db "$WORK/b/app.db" --dir "$DIR" --keep 1 --retention-days 30
    assert_status 0
    sleep 1
  done
  [[ -f $old && -f $old.manifest.json ]]
  [[ $stderr != *"Pruned: $old"* ]]
}

@test "a --dir whose parent does not exist is refused, not created as a whole tree (a config typo)" {
  make_db "$DB" 10
  run --separate-stderr "$BACKUP" --db "$DB" --dir "$WORK/no/such/backups"
  assert_status 2
  assert_contains "$stderr" "cannot create $WORK/no/such/backups: $WORK/no/such does not exist"
  [[ ! -e $WORK/no ]]
}
