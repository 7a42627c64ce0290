#!/usr/bin/env bats
# Tests for scripts/restore_database.sh: each test builds its own database and
# backups (with the real backup_database.sh) in $BATS_TEST_TMPDIR.

# shellcheck disable=SC2030,SC2031 # every @test runs in its own subshell on purpose
load helpers

RESTORE="$SCRIPTS/restore_database.sh"

setup() {
  common_setup
  export DB_PATH="$WORK/app.db" BACKUP_DIR="$WORK/backups" MIGRATIONS_DIR="$WORK/migrations"
  mkdir -p "$MIGRATIONS_DIR"
}

teardown() { stop_background; }

# add_rows DB N: N more devices (and services) committed normally.
add_rows() {
  sqlite3 "$1" "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $2)
    INSERT INTO devices(ip) SELECT 'new-' || i || '-' || random() FROM n;"
}

# crash_with_wal DB N: commit N rows and a new table into the WAL, then die
# without checkpointing, leaving a -wal file holding them (a crashed writer).
crash_with_wal() {
  python3 - "$1" "$2" <<'PY'
import os, sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("PRAGMA wal_autocheckpoint=0")
conn.execute("BEGIN")
for i in range(int(sys.argv[2])):
    conn.execute("INSERT INTO devices(ip) VALUES (?)", (f"after-backup-{i}",))
conn.execute("CREATE TABLE written_after_backup(x)")
conn.execute("COMMIT")
os._exit(0)
PY
  [[ -s $1-wal ]]
}

# write_manifest FILE: a manifest that matches FILE (a plain database) exactly,
# as backup_database.sh would write it; for wrapping corpus files as backups.
write_manifest() {
  python3 - "$1" <<'PY'
import hashlib, json, os, sqlite3, sys
path = sys.argv[1]
digest = hashlib.sha256(open(path, "rb").read()).hexdigest()
size = os.path.getsize(path)
# The row counts the file holds where it can be read (a damaged file: none),
# so the verification reaches the checks after the counts.
try:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    names = [r[0] for r in conn.execute("SELECT name FROM sqlite_schema WHERE type = 'table' "
                                        "AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'")]
    tables = {n: conn.execute(f'SELECT count(*) FROM "{n}"').fetchone()[0] for n in names}
except sqlite3.DatabaseError:
    tables = {}
json.dump({"format": 1, "file": os.path.basename(path), "created_at": "2026-01-01T00:00:00Z",
           "sha256": digest, "db_sha256": digest, "size_bytes": size, "db_size_bytes": size,
           "compression": "none", "journal_mode": "delete", "page_size": 4096,
           "schema_version": None, "tables": tables, "verified": True},
          open(path + ".manifest.json", "w"))
PY
}

# ---------------------------------------------------------------------------
# Interface
# ---------------------------------------------------------------------------

@test "--help prints the header: summary, usage and exit codes" {
  run "$RESTORE" --help
  assert_status 0
  assert_contains "$output" "Summary: verify a backup, then restore it"
  assert_contains "$output" "restore_database.sh --verify [--force] BACKUP|latest"
  assert_contains "$output" "75  busy"
}

@test "usage errors exit 2 with one line naming the problem" {
  run --separate-stderr "$RESTORE"
  assert_status 2
  assert_contains "$stderr" "restore_database.sh: name a backup"
  run --separate-stderr "$RESTORE" --json latest
  assert_status 2
  run --separate-stderr "$RESTORE" --list --verify latest
  assert_status 2
  run --separate-stderr "$RESTORE" --bogus latest
  assert_status 2
  assert_contains "$stderr" "unknown option '--bogus'"
  run --separate-stderr "$RESTORE" --verify no_such_backup.db.zst
  assert_status 2
  assert_contains "$stderr" "backup not found"
}

# ---------------------------------------------------------------------------
# --list
# ---------------------------------------------------------------------------

@test "--list: newest first, manifest-less files listed as unverified, tampered flagged, pre-restore apart" {
  make_db "$DB_PATH" 10
  old=$(backup_now)
  add_rows "$DB_PATH" 5
  new=$(backup_now)
  cp "$new" "$BACKUP_DIR/app_20200101_000000.db.zst" # no manifest
  printf 'x' >>"$old"                                # tampered: checksum and size
  mkdir -p "$BACKUP_DIR/pre-restore"
  DB_PATH="$DB_PATH" "$SCRIPTS/backup_database.sh" --dir "$BACKUP_DIR/pre-restore" --quiet >/dev/null

  run --separate-stderr "$RESTORE" --list
  assert_status 0
  # The sections: main backups first, newest first, then the pre-restore ones.
  main_part=${output%%Pre-restore*}
  pre_part=${output#*Pre-restore}
  [[ ${main_part%%"${old##*/}"*} == *"${new##*/}"* ]] # new listed before old
  assert_contains "$main_part" "* ${new##*/}"
  assert_contains "$main_part" "app_20200101_000000.db.zst"
  assert_contains "$main_part" "no manifest (unverified)"
  assert_contains "$main_part" "size differs from manifest"
  assert_contains "$pre_part" "app_"
  [[ $pre_part != *"(none)"* ]]

  run --separate-stderr "$RESTORE" --list --json
  assert_status 0
  kinds=$(python3 -c 'import json,sys; print(",".join(b["kind"] for b in json.load(sys.stdin)["backups"]))' <<<"$output")
  assert_equal "$kinds" "backup,backup,backup,pre-restore"
  latest=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["latest"])' <<<"$output")
  assert_equal "$latest" "$new"
}

# ---------------------------------------------------------------------------
# --verify, and pitfall 3: bad backups are rejected before anything is touched
# ---------------------------------------------------------------------------

@test "a mistyped backup directory: --list and latest exit 2 saying so, never an empty list" {
  make_db "$DB_PATH" 5
  backup_now >/dev/null
  run --separate-stderr "$RESTORE" --dir "$BACKUP_DIR-typo" --list
  assert_status 2
  assert_equal "$stderr" "restore_database.sh: backup directory not found: $BACKUP_DIR-typo (check --dir or BACKUP_DIR)"
  run --separate-stderr "$RESTORE" --dir "$BACKUP_DIR-typo" --verify latest
  assert_status 2
  assert_contains "$stderr" "backup directory not found"
}

@test "--verify latest: exit 0, says what it checked, changes nothing" {
  make_db "$DB_PATH" 50
  backup_now >/dev/null
  before=$(sha256sum <"$DB_PATH")
  listing=$(ls -A "$BACKUP_DIR")
  run --separate-stderr "$RESTORE" --verify latest
  assert_status 0
  assert_contains "$output" "Backup verified:"
  assert_contains "$output" "integrity: recorded at backup, same bytes (integrity_check ok under SQLite"
  assert_contains "$output" "foreign_key_check clean as recorded (same bytes), row counts as recorded (same bytes))"
  assert_equal "$(sha256sum <"$DB_PATH")" "$before"
  assert_equal "$(ls -A "$BACKUP_DIR")" "$listing"
}

# refused_without_change BACKUP WHY: a restore of BACKUP exits 3 saying WHY,
# and the live database, its directory and the backup directory are untouched.
refused_without_change() {
  local before
  before=$(sha256sum <"$DB_PATH")
  run --separate-stderr "$RESTORE" --yes "$1"
  assert_status 3
  assert_contains "$stderr" "$2"
  assert_contains "$stderr" "nothing was changed"
  assert_equal "$(sha256sum <"$DB_PATH")" "$before" "live database"
  [[ ! -e $BACKUP_DIR/pre-restore ]]
  assert_equal "$(find "$WORK" -maxdepth 1 -name '.*tmp*' | wc -l)" 0 "temp files left"
}

@test "a truncated backup is rejected with exit 3; the live database is untouched" {
  make_db "$DB_PATH" 2000
  b=$(backup_now)
  truncate -s $(($(stat -c %s "$b") / 2)) "$b"
  refused_without_change "$b" "truncated or replaced"
}

@test "a bit-flipped backup is rejected with exit 3 (checksum mismatch)" {
  make_db "$DB_PATH" 2000
  b=$(backup_now)
  printf '\xff' | dd of="$b" bs=1 seek=200 conv=notrunc status=none
  refused_without_change "$b" "checksum mismatch"
}

@test "a tampered backup (rows changed, re-compressed, same size) is rejected with exit 3" {
  make_db "$DB_PATH" 100 delete
  b=$(backup_now --compress none)
  sqlite3 "$b" "UPDATE devices SET hostname = 'evil' WHERE id = 1;"
  refused_without_change "$b" "checksum mismatch"
}

@test "a manifest with edited row counts is rejected with exit 3" {
  make_db "$DB_PATH" 100
  b=$(backup_now)
  sed -i 's/"devices": 100/"devices": 101/' "$b.manifest.json"
  grep -q '"devices": 101' "$b.manifest.json"
  refused_without_change "$b" "row counts differ from its manifest: devices has 100 rows, manifest says 101"
}

@test "a backup without a manifest: exit 3 'no manifest' unless --force" {
  make_db "$DB_PATH" 100
  b=$(backup_now)
  rm "$b.manifest.json"
  refused_without_change "$b" "no manifest"
  run --separate-stderr "$RESTORE" --verify --force "$b"
  assert_status 0
  assert_contains "$stderr" "completeness unproven"
}

@test "corrupt corpus files: --verify --force exits 3 naming the damage; orphaned rows alone pass" {
  local f name
  corpus_file f corrupt/chef_corrupt.sqlite
  run --separate-stderr "$RESTORE" --verify "$f"
  assert_status 3
  assert_contains "$stderr" "no manifest"
  for name in chef_corrupt corruptN_1 chinook_truncated chinook_badmagic \
    chinook_rootswap chinook_header_pagecount; do
    corpus_file f "corrupt/$name.sqlite"
    run --separate-stderr "$RESTORE" --verify --force "$f"
    assert_status 3
    [[ $stderr == *"integrity_check failed"* || $stderr == *"not an SQLite database"* ||
      $stderr == *"neither an SQLite"* ]]
  done
  # Sound pages, orphaned rows: --force accepts it, and says what it accepted.
  corpus_file f corrupt/chef_badforeignkey.sqlite
  run --separate-stderr "$RESTORE" --verify --force "$f"
  assert_status 0
  assert_contains "$stderr" "foreign_key_check failed"
  assert_contains "$stderr" "accepted as it is (--force)"
}

@test "corrupt corpus files wrapped as backups with a matching manifest: restore refused, exit 3" {
  local name i=0 b
  make_db "$DB_PATH" 100
  mkdir -p "$BACKUP_DIR"
  for name in chef_corrupt chef_badforeignkey chinook_rootswap chinook_truncated; do
    b="$BACKUP_DIR/app_20260101_00000$((i++)).db"
    corpus_file f "corrupt/$name.sqlite"
    cp "$f" "$b"
    chmod 600 "$b"
    write_manifest "$b"
    refused_without_change "$b" "check failed"
  done
}

@test "integrity: a backup's record is trusted for the same bytes; without one it is checked now" {
  make_db "$DB_PATH" 50
  b=$(backup_now)
  run --separate-stderr "$RESTORE" --yes --to "$WORK/r1.db" "$b"
  assert_status 0
  assert_contains "$stderr" "integrity: recorded at backup, same bytes"
  # An older backup, made before the record existed: the check runs here.
  python3 -c 'import json, sys; p = sys.argv[1]; m = json.load(open(p)); del m["integrity_check"]; json.dump(m, open(p, "w"), indent=2)' "$b.manifest.json"
  run --separate-stderr "$RESTORE" --verify "$b"
  assert_status 0
  assert_contains "$output" "integrity: checked now (integrity_check ok; the manifest has no integrity_check record"
  run --separate-stderr "$RESTORE" --quiet --yes --to "$WORK/r2.db" "$b"
  assert_status 0
  assert_equal "$stderr" "" "stderr with --quiet"
}

@test "a forged record for damaged content: the rows verify reads still expose it (exit 3)" {
  # What the record proves: these bytes passed integrity_check when the backup
  # was made. It is not signed: whoever can rewrite a backup can rewrite its
  # manifest. Verify still reads every table (row counts, foreign keys), and a
  # restore runs quick_check on its result.
  make_db "$DB_PATH" 3000 delete
  b=$(backup_now --compress none)
  dd if=/dev/urandom of="$b" bs=4096 seek=5 count=2 conv=notrunc status=none
  python3 - "$b" <<'PY'
import hashlib, json, os, sys
path = sys.argv[1]
digest = hashlib.sha256(open(path, "rb").read()).hexdigest()
m = json.load(open(path + ".manifest.json"))
m.update(sha256=digest, db_sha256=digest, size_bytes=os.path.getsize(path))
m["integrity_check"]["db_sha256"] = digest
json.dump(m, open(path + ".manifest.json", "w"), indent=2)
PY
  before=$(sha256sum <"$DB_PATH")
  run --separate-stderr "$RESTORE" --yes "$b"
  assert_status 3
  assert_contains "$stderr" "cannot be read: database disk image is malformed"
  assert_equal "$(sha256sum <"$DB_PATH")" "$before" "live database"
}

@test "a database with foreign-key violations: backed up as it is; restore needs --force and says why" {
  make_db "$DB_PATH" 100
  sqlite3 "$DB_PATH" 'DELETE FROM devices WHERE id <= 3' # foreign keys off: 3 orphaned services
  run --separate-stderr "$SCRIPTS/backup_database.sh"
  assert_status 0
  assert_contains "$stderr" "fails PRAGMA foreign_key_check (3 rows with a missing parent row)"
  b=${output##*Backup completed: }
  grep -q '"foreign_key_violations": 3' "$b.manifest.json"
  run --separate-stderr "$RESTORE" --list
  assert_contains "$output" "ok, foreign-key violations (restore needs --force)"
  add_rows "$DB_PATH" 5
  refused_without_change latest '3 rows point to missing parent rows (first: row 1 of "services" -> "devices"); the database already had this when the backup was taken'
  assert_contains "$stderr" "pass --force"
  # Older backups hold the same rows (and fewer): no "next older backup" there.
  [[ $stderr != *"next older backup"* ]]
  run --separate-stderr "$RESTORE" --drill
  assert_status 3
  run --separate-stderr "$RESTORE" --drill --force
  assert_status 0
  assert_contains "$stderr" "accepted as it is (--force)" # in the cron log, not hidden
  run --separate-stderr "$RESTORE" --yes --force latest
  assert_status 0
  assert_contains "$output" "accepted as it is (--force)"
  assert_equal "$(count_rows "$DB_PATH" devices)" 97
  assert_equal "$(content "$DB_PATH")" "$(backup_content "$b")"
  # The safety backup holds the violations too: the printed undo must pass --force.
  undo=$(sed -n 's/^  undo with: *//p' <<<"$output")
  assert_contains "$undo" " --force "
  run --separate-stderr bash -c "$undo"
  assert_status 0
  assert_equal "$(count_rows "$DB_PATH" devices)" 102
}

@test "a table named foreign_key_violations is not mistaken for the manifest's field" {
  make_db "$DB_PATH" 10
  sqlite3 "$DB_PATH" 'CREATE TABLE foreign_key_violations(x); INSERT INTO foreign_key_violations VALUES (1), (2);'
  run --separate-stderr "$SCRIPTS/backup_database.sh"
  assert_status 0
  [[ $stderr != *"foreign_key_check"* ]]
  run --separate-stderr "$RESTORE" --yes latest
  assert_status 0
  [[ $(sed -n 's/^  undo with: *//p' <<<"$output") != *--force* ]]
}

@test "a foreign key to a non-unique column (foreign_key_check cannot run): backed up; restore needs --force" {
  sqlite3 "$DB_PATH" 'CREATE TABLE p(a, b); CREATE TABLE c(x REFERENCES p(b)); INSERT INTO p VALUES (1, 2); INSERT INTO c VALUES (2);'
  run --separate-stderr "$SCRIPTS/backup_database.sh"
  assert_status 0
  assert_contains "$stderr" "PRAGMA foreign_key_check cannot run"
  refused_without_change latest "foreign key mismatch"
  run --separate-stderr "$RESTORE" --yes --force latest
  assert_status 0
  assert_contains "$output" "accepted as it is (--force)"
}

@test "a damaged backup's refusal names the next older backup to try" {
  make_db "$DB_PATH" 100
  older=$(backup_now)
  add_rows "$DB_PATH" 5
  sleep 1 # a distinct second in the file name
  newer=$(backup_now)
  printf '\xff' | dd of="$newer" bs=1 seek=200 conv=notrunc status=none
  refused_without_change latest "checksum mismatch"
  assert_contains "$stderr" "the next older backup is ${older##*/} (--verify ${older##*/})"
  run --separate-stderr "$RESTORE" --verify "${older##*/}"
  assert_status 0
}

@test "a mistyped --db with a named backup: refused (exit 2), nothing created; --force creates it" {
  make_db "$DB_PATH" 100
  b=$(backup_now)
  run --separate-stderr "$RESTORE" --db "$WORK/ap.db" --yes "$b"
  assert_status 2
  assert_contains "$stderr" "$b was taken from $DB_PATH, not from $WORK/ap.db (which does not exist): is --db (DB_PATH) mistyped?"
  [[ ! -e $WORK/ap.db ]]
  run --separate-stderr "$RESTORE" --db "$WORK/ap.db" --yes --force "$b"
  assert_status 0
  assert_contains "$output" "note: a backup of another database, $DB_PATH, accepted with --force"
  assert_equal "$(count_rows "$WORK/ap.db" devices)" 100
}

@test "a --db naming another existing database: refused (exit 2), that database untouched" {
  make_db "$DB_PATH" 100
  b=$(backup_now)
  sqlite3 "$WORK/invoices.db" 'CREATE TABLE invoices(id INTEGER PRIMARY KEY); INSERT INTO invoices VALUES (1);'
  before=$(sha256sum <"$WORK/invoices.db")
  run --separate-stderr "$RESTORE" --db "$WORK/invoices.db" --yes "$b"
  assert_status 2
  assert_contains "$stderr" "(which exists): is --db (DB_PATH) mistyped?"
  assert_equal "$(sha256sum <"$WORK/invoices.db")" "$before"
}

# ---------------------------------------------------------------------------
# Restore
# ---------------------------------------------------------------------------

@test "restore latest: rows restored, safety backup in pre-restore/, receipt; its undo command works" {
  make_db "$DB_PATH" 100
  b=$(backup_now)
  add_rows "$DB_PATH" 50
  before=$(content "$DB_PATH")

  run --separate-stderr "$RESTORE" --yes latest
  assert_status 0
  assert_equal "$(count_rows "$DB_PATH" devices)" 100
  assert_equal "$(content "$DB_PATH")" "$(backup_content "$b")"
  assert_contains "$output" "Restore completed: $DB_PATH"
  assert_contains "$output" "backup restored: $b"
  assert_contains "$output" "time taken:"
  safety=$(sed -n 's/^  safety backup: *//p' <<<"$output")
  [[ $safety == "$BACKUP_DIR/pre-restore/app_"*.db.* && -f $safety ]]

  # Undo: the printed command, as printed (the safety backup lives outside
  # BACKUP_DIR's root and is accepted by path).
  undo=$(sed -n 's/^  undo with: *//p' <<<"$output")
  assert_contains "$undo" "--yes"
  assert_contains "$undo" "--dir"
  # ...in a shell that has none of the settings: every path is in the command.
  eval "run --separate-stderr env -u DB_PATH -u BACKUP_DIR $undo"
  assert_status 0
  assert_equal "$(content "$DB_PATH")" "$before"
  assert_equal "$(count_rows "$DB_PATH" devices)" 150
  # The undo's own safety backup went beside the first, not to a default dir.
  assert_equal "$(find "$BACKUP_DIR/pre-restore" -name 'app_*.db.*' ! -name '*.manifest.json' | wc -l)" 2
  # `latest` still means the real backup, never a pre-restore state.
  run --separate-stderr "$RESTORE" --verify latest
  assert_contains "$output" "Backup verified: $b"
}

@test "without a terminal and without --yes: exit 2, nothing touched, no safety backup" {
  make_db "$DB_PATH" 100
  backup_now >/dev/null
  add_rows "$DB_PATH" 5
  before=$(sha256sum <"$DB_PATH")
  run --separate-stderr "$RESTORE" latest </dev/null
  assert_status 2
  assert_contains "$stderr" "pass --yes"
  assert_equal "$(sha256sum <"$DB_PATH")" "$before"
  [[ ! -e $BACKUP_DIR/pre-restore ]]
}

@test "on a terminal it shows the plan and asks: 'no' changes nothing, 'yes' restores" {
  command -v script >/dev/null || skip "script(1) (util-linux) is needed to fake a terminal"
  make_db "$DB_PATH" 100
  backup_now >/dev/null
  add_rows "$DB_PATH" 5
  before=$(sha256sum <"$DB_PATH")
  run bash -c 'printf "no\n" | script -qec "$1 latest" /dev/null' _ "$RESTORE"
  assert_status 1
  assert_contains "$output" "Restore plan for $DB_PATH"
  assert_contains "$output" "Type yes to continue"
  assert_contains "$output" "restore cancelled; nothing was changed"
  assert_equal "$(sha256sum <"$DB_PATH")" "$before"
  [[ ! -e $BACKUP_DIR/pre-restore ]]
  run bash -c 'printf "yes\n" | script -qec "$1 latest" /dev/null' _ "$RESTORE"
  assert_status 0
  assert_equal "$(count_rows "$DB_PATH" devices)" 100
}

@test "pitfall 1: a leftover -wal of the old database is never applied (backup API path)" {
  make_db "$DB_PATH" 100 wal
  b=$(backup_now)
  crash_with_wal "$DB_PATH" 40
  run --separate-stderr "$RESTORE" --yes latest
  assert_status 0
  assert_equal "$(count_rows "$DB_PATH" devices)" 100
  assert_equal "$(sqlite3 "$DB_PATH" "SELECT count(*) FROM sqlite_schema WHERE name = 'written_after_backup'")" 0
  assert_equal "$(content "$DB_PATH")" "$(backup_content "$b")"
  # ...and nothing was lost: the safety backup holds the rows from the -wal.
  safety=$(sed -n 's/^  safety backup: *//p' <<<"$output")
  zstd -q -d -c "$safety" >"$WORK/safety.db"
  assert_equal "$(count_rows "$WORK/safety.db" devices)" 140
}

@test "pitfall 1: database file lost but its -wal/-shm left: they are moved aside, never applied" {
  make_db "$DB_PATH" 100 wal
  b=$(backup_now)
  crash_with_wal "$DB_PATH" 40
  rm "$DB_PATH"
  run --separate-stderr "$RESTORE" --yes latest
  assert_status 0
  assert_equal "$(content "$DB_PATH")" "$(backup_content "$b")"
  assert_equal "$(count_rows "$DB_PATH" devices)" 100
  assert_equal "$(sqlite3 "$DB_PATH" 'PRAGMA journal_mode')" wal
  [[ ! -e $DB_PATH-journal ]]
  aside=$(find "$BACKUP_DIR/pre-restore" -name 'app.db-wal')
  [[ -s $aside ]]
  assert_contains "$output" "moved aside:"
}

@test "pitfall 2: an app with an open connection (rollback journal) sees the restored rows on its next read" {
  make_db "$DB_PATH" 100 delete
  backup_now >/dev/null
  add_rows "$DB_PATH" 50
  python3 - "$DB_PATH" "$WORK" <<'PY' &
import os, sqlite3, sys, time
db, work = sys.argv[1:]
conn = sqlite3.connect(db, isolation_level=None)
before = conn.execute("SELECT count(*) FROM devices").fetchone()[0]
open(os.path.join(work, "ready"), "w").close()
while not os.path.exists(os.path.join(work, "go")):
    time.sleep(0.02)
after = conn.execute("SELECT count(*) FROM devices").fetchone()[0]
check = conn.execute("PRAGMA integrity_check").fetchone()[0]
open(os.path.join(work, "seen"), "w").write(f"{before} {after} {check}\n")
PY
  BG_PIDS+=($!)
  for _ in $(seq 100); do [[ -e $WORK/ready ]] && break; sleep 0.05; done
  run --separate-stderr "$RESTORE" --yes latest
  assert_status 0
  touch "$WORK/go"
  wait "${BG_PIDS[0]}"
  assert_equal "$(cat "$WORK/seen")" "150 100 ok"
  assert_equal "$(sqlite3 "$DB_PATH" 'PRAGMA journal_mode')" delete
}

@test "pitfall 2: an app keeping a WAL database open while the restore runs sees the restored rows" {
  make_db "$DB_PATH" 100 wal
  b=$(backup_now)
  add_rows "$DB_PATH" 50
  python3 - "$DB_PATH" "$WORK" <<'PY' &
import os, sqlite3, sys, time
db, work = sys.argv[1:]
conn = sqlite3.connect(db, isolation_level=None)
seen = [conn.execute("SELECT count(*) FROM devices").fetchone()[0]]
open(os.path.join(work, "ready"), "w").close()
while not os.path.exists(os.path.join(work, "go")):
    conn.execute("SELECT count(*) FROM devices").fetchone()  # keeps reading during the restore
    time.sleep(0.01)
seen.append(conn.execute("SELECT count(*) FROM devices").fetchone()[0])
seen.append(conn.execute("PRAGMA integrity_check").fetchone()[0])
conn.execute("INSERT INTO devices(ip) VALUES ('written-after-restore')")
open(os.path.join(work, "seen"), "w").write(" ".join(map(str, seen)) + "\n")
PY
  BG_PIDS+=($!)
  for _ in $(seq 100); do [[ -e $WORK/ready ]] && break; sleep 0.05; done
  run --separate-stderr "$RESTORE" --yes latest
  assert_status 0
  # The plan names the process, and warns that its writes from now on are lost.
  # (python3 may be shown by its full path when a version manager runs it)
  [[ $stderr == *"open in:  pid ${BG_PIDS[0]} ("*python3* ]] || { echo "$stderr" >&2; false; }
  assert_contains "$stderr" "stop writers first"
  touch "$WORK/go"
  wait "${BG_PIDS[0]}"
  assert_equal "$(cat "$WORK/seen")" "150 100 ok"
  assert_equal "$(count_rows "$DB_PATH" devices)" 101
  assert_equal "$(sqlite3 "$DB_PATH" 'PRAGMA integrity_check')" ok
  assert_equal "$(sqlite3 "$DB_PATH" 'PRAGMA journal_mode')" wal
}

@test "pitfall 2: a damaged database held open by a process: exit 75 naming it, nothing replaced" {
  make_db "$DB_PATH" 100 delete
  backup_now >/dev/null
  printf 'this is not a database header' | dd of="$DB_PATH" bs=1 conv=notrunc status=none
  before=$(sha256sum <"$DB_PATH")
  # A process holding the file open (fd 3), doing nothing with it.
  bash -c 'exec 3<"$1"; exec sleep 60' holder "$DB_PATH" &
  BG_PIDS+=($!)
  run --separate-stderr "$RESTORE" --yes latest
  assert_status 75
  assert_contains "$stderr" "pid ${BG_PIDS[0]} (sleep 60)"
  assert_equal "$(sha256sum <"$DB_PATH")" "$before"
  # The damaged file was kept as a raw copy before anything else happened.
  assert_equal "$(sha256sum <"$(find "$BACKUP_DIR/pre-restore" -path '*.raw/app.db')")" "$before"
}

@test "a damaged database (backup_database.sh refuses it) is kept as a raw copy, then restored" {
  make_db "$DB_PATH" 100 delete
  b=$(backup_now)
  printf 'this is not a database header' | dd of="$DB_PATH" bs=1 conv=notrunc status=none
  damaged=$(sha256sum <"$DB_PATH")
  run --separate-stderr "$RESTORE" --yes latest
  assert_status 0
  assert_contains "$stderr" "too damaged for a verified backup"
  assert_contains "$output" "raw copy:"
  assert_equal "$(content "$DB_PATH")" "$(backup_content "$b")"
  raw=$(find "$BACKUP_DIR/pre-restore" -path '*.raw/app.db')
  assert_equal "$(sha256sum <"$raw")" "$damaged"
  run --separate-stderr "$RESTORE" --list
  assert_contains "$output" "raw copy of a damaged database"
}

@test "pitfall 4: journal mode is preserved (WAL stays WAL, rollback stays rollback)" {
  make_db "$DB_PATH" 20 wal
  backup_now >/dev/null
  "$RESTORE" --yes latest >/dev/null 2>&1
  assert_equal "$(sqlite3 "$DB_PATH" 'PRAGMA journal_mode')" wal

  export DB_PATH="$WORK/rollback.db"
  make_db "$DB_PATH" 20 delete
  backup_now >/dev/null
  "$RESTORE" --yes latest >/dev/null 2>&1
  assert_equal "$(sqlite3 "$DB_PATH" 'PRAGMA journal_mode')" delete
}

@test "pitfall 5: another run holds the lock: exit 75, nothing touched" {
  make_db "$DB_PATH" 100
  backup_now >/dev/null
  add_rows "$DB_PATH" 5
  before=$(sha256sum <"$DB_PATH")
  flock "$DB_PATH.sqlite-ops.lock" sleep 30 &
  BG_PIDS+=($!)
  for _ in $(seq 50); do
    flock -n "$DB_PATH.sqlite-ops.lock" true || break
    sleep 0.05
  done
  run --separate-stderr "$RESTORE" --yes latest
  assert_status 75
  assert_contains "$stderr" "holds the lock"
  assert_equal "$(sha256sum <"$DB_PATH")" "$before"
  [[ ! -e $BACKUP_DIR/pre-restore ]]
}

@test "a backup with a different page size is restored into a WAL database" {
  sqlite3 "$DB_PATH" "PRAGMA page_size=8192; VACUUM;"
  make_db "$DB_PATH" 100 wal
  b=$(backup_now)
  rm -f "$DB_PATH" "$DB_PATH-wal" "$DB_PATH-shm"
  make_db "$DB_PATH" 30 wal # the same database, rebuilt with the default page size
  assert_equal "$(sqlite3 "$DB_PATH" 'PRAGMA page_size')" 4096
  run --separate-stderr "$RESTORE" --yes "$b"
  assert_status 0
  assert_equal "$(sqlite3 "$DB_PATH" 'PRAGMA page_size')" 8192
  assert_equal "$(sqlite3 "$DB_PATH" 'PRAGMA journal_mode')" wal
  assert_equal "$(content "$DB_PATH")" "$(backup_content "$b")"
}

@test "schema newer than the newest migration: refused (exit 2) unless --force; older: says make migrate" {
  make_db "$DB_PATH" 10
  sqlite3 "$DB_PATH" "CREATE TABLE schema_migrations(version INTEGER PRIMARY KEY, description TEXT NOT NULL,
    checksum TEXT NOT NULL, applied_at TEXT NOT NULL, execution_ms INTEGER);
    INSERT INTO schema_migrations VALUES (1, 'a', 'x', 'now', 1), (2, 'b', 'y', 'now', 1);"
  backup_now >/dev/null
  touch "$MIGRATIONS_DIR/001_a.sql"
  before=$(sha256sum <"$DB_PATH")
  run --separate-stderr "$RESTORE" --yes latest
  assert_status 2
  assert_contains "$stderr" "schema version 2, newer than the newest migration (1)"
  assert_equal "$(sha256sum <"$DB_PATH")" "$before"
  run --separate-stderr "$RESTORE" --yes --force latest
  assert_status 0

  touch "$MIGRATIONS_DIR/002_b.sql" "$MIGRATIONS_DIR/010_c.py"
  run --separate-stderr "$RESTORE" --yes latest
  assert_status 0
  assert_contains "$output" "older than the newest migration (10): run \`make migrate\`"
}

@test "--to PATH restores into another file; the live database is untouched; an existing PATH needs --yes" {
  make_db "$DB_PATH" 100 wal
  b=$(backup_now)
  add_rows "$DB_PATH" 5
  before=$(sha256sum <"$DB_PATH")
  run --separate-stderr "$RESTORE" --to "$WORK/copy.db" latest </dev/null
  assert_status 0
  assert_equal "$(content "$WORK/copy.db")" "$(backup_content "$b")"
  assert_equal "$(sqlite3 "$WORK/copy.db" 'PRAGMA journal_mode')" wal
  assert_equal "$(sha256sum <"$DB_PATH")" "$before"
  [[ ! -e $BACKUP_DIR/pre-restore ]]

  echo precious >"$WORK/other.db"
  run --separate-stderr "$RESTORE" --to "$WORK/other.db" latest
  assert_status 2
  assert_contains "$stderr" "refusing to overwrite existing $WORK/other.db"
  assert_equal "$(cat "$WORK/other.db")" precious
  run --separate-stderr "$RESTORE" --yes --to "$WORK/copy.db" latest
  assert_status 0
  # The receipt says plainly that the file it overwrote was not backed up.
  assert_contains "$output" "safety backup:   none (--to never backs up its target)"
  [[ $output != *"open connections see"* ]]
}

@test "--drill restores latest into a temp file, removes it, and writes the drill metrics" {
  make_db "$DB_PATH" 100
  backup_now >/dev/null
  export TMPDIR="$WORK/tmp"
  mkdir -p "$TMPDIR"
  run --separate-stderr "$RESTORE" --drill --metrics-dir "$WORK/metrics"
  assert_status 0
  assert_contains "$output" "Drill passed:"
  prom="$WORK/metrics/sqlite_ops_restore_app.prom"
  grep -Eq '^sqlite_restore_drill_last_success_timestamp_seconds\{db="app"\} [0-9]+$' "$prom"
  grep -Eq '^sqlite_restore_drill_duration_seconds\{db="app"\} [0-9.]+$' "$prom"
  grep -q '^sqlite_restore_drill_last_run_success{db="app"} 1$' "$prom"
  assert_equal "$(ls -A "$TMPDIR")" ""

  # A failing drill keeps the last success time and reports the failure.
  stamp=$(grep '^sqlite_restore_drill_last_success' "$prom")
  b=$(ls "$BACKUP_DIR"/app_*.db.zst)
  printf 'x' | dd of="$b" bs=1 seek=100 conv=notrunc status=none
  run --separate-stderr "$RESTORE" --drill --metrics-dir "$WORK/metrics"
  assert_status 3
  grep -q '^sqlite_restore_drill_last_run_success{db="app"} 0$' "$prom"
  assert_equal "$(grep '^sqlite_restore_drill_last_success' "$prom")" "$stamp"
}

@test "paths with spaces, quotes and newlines" {
  dir="$WORK/it's a \"dir\""$'\n'"x"
  mkdir -p "$dir"
  export DB_PATH="$dir/my db's.db" BACKUP_DIR="$dir/back ups"
  make_db "$DB_PATH" 100
  b=$(backup_now)
  add_rows "$DB_PATH" 3
  run --separate-stderr "$RESTORE" --yes latest
  assert_status 0
  assert_equal "$(count_rows "$DB_PATH" devices)" 100
  assert_equal "$(content "$DB_PATH")" "$(backup_content "$b")"
  run --separate-stderr "$RESTORE" --verify "${b##*/}"
  assert_status 0
}

@test "a failing safety backup stops the restore: exit 1, nothing changed" {
  make_db "$DB_PATH" 100
  backup_now >/dev/null
  add_rows "$DB_PATH" 5
  before=$(sha256sum <"$DB_PATH")
  # The safety backup's compressor fails (zstd -T0; the verify's decompression passes).
  fake_tool zstd '[[ " $* " != *" -T0 "* ]] || { echo "zstd: error 70 : Write error : No space left on device" >&2; exit 1; }'
  PATH="$WORK/bin:$PATH" run --separate-stderr "$RESTORE" --yes latest
  assert_status 1
  assert_contains "$stderr" "safety backup of $DB_PATH failed"
  assert_contains "$stderr" "No space left on device"
  [[ -z $(find "$BACKUP_DIR/pre-restore" -name '*.raw') ]]
  assert_equal "$(sha256sum <"$DB_PATH")" "$before"
}

@test "restore and metrics: sqlite_restore_last_success_timestamp_seconds is written beside the drill's" {
  make_db "$DB_PATH" 10
  backup_now >/dev/null
  export METRICS_DIR="$WORK/metrics"
  "$RESTORE" --drill >/dev/null 2>&1
  "$RESTORE" --yes latest >/dev/null 2>&1
  prom="$METRICS_DIR/sqlite_ops_restore_app.prom"
  grep -q '^sqlite_restore_last_success_timestamp_seconds{db="app"} ' "$prom"
  grep -q '^sqlite_restore_drill_last_run_success{db="app"} 1$' "$prom"
  # The safety backup did not overwrite the main backup metrics with pre-restore/ ones.
  [[ ! -e $METRICS_DIR/sqlite_ops_backup_app.prom ]]
}

@test "--to naming the live database under another spelling is refused; nothing changes" {
  make_db "$DB_PATH" 10
  backup_now >/dev/null
  add_rows "$DB_PATH" 5
  before=$(content "$DB_PATH")
  mkdir "$WORK/alias"
  ln -s "$(dirname "$DB_PATH")" "$WORK/alias/dir"
  for spelling in "$(dirname "$DB_PATH")/./$(basename "$DB_PATH")" \
    "$(dirname "$DB_PATH")//$(basename "$DB_PATH")" "$WORK/alias/dir/$(basename "$DB_PATH")"; do
    run --separate-stderr "$RESTORE" --yes --to "$spelling" latest
    assert_status 2
    assert_contains "$stderr" "--to names the database itself"
  done
  assert_equal "$(content "$DB_PATH")" "$before"
}

@test "the safety backup uses the same --config as the restore; a config error is not 'damage'" {
  make_db "$DB_PATH" 10
  backup_now >/dev/null
  add_rows "$DB_PATH" 5
  before=$(content "$DB_PATH")
  printf 'COMPRESS=xz\n' >"$WORK/stale.conf"
  printf 'COMPRESS=gzip\n' >"$WORK/good.conf"
  # The environment names a broken config; the command line names a good one.
  SQLITE_OPS_CONFIG="$WORK/stale.conf" run --separate-stderr "$RESTORE" --config "$WORK/good.conf" --yes latest
  assert_status 0
  safety=$(sed -n 's/^  safety backup: *//p' <<<"$output")
  [[ $safety == *.db.gz && -f $safety ]]
  [[ -z $(find "$BACKUP_DIR/pre-restore" -name '*.raw') ]]
  # With only the broken config, the restore stops before touching anything.
  run --separate-stderr "$RESTORE" --yes latest  # restore again to have something to compare
  add_rows "$DB_PATH" 3
  before=$(content "$DB_PATH")
  SQLITE_OPS_CONFIG="$WORK/stale.conf" run --separate-stderr "$RESTORE" --yes latest
  [[ $status -ne 0 ]]
  assert_equal "$(content "$DB_PATH")" "$before"
  [[ -z $(find "$BACKUP_DIR/pre-restore" -name '*.raw') ]]
}

@test "two databases with the same name: 'latest' is always this database's own backup" {
  mkdir -p "$WORK/other"
  make_db "$DB_PATH" 10
  mine=$(backup_now)
  sleep 1
  make_db "$WORK/other/app.db" 3
  theirs=$(backup_now --db "$WORK/other/app.db")
  [[ $theirs != "$mine" ]]
  run --separate-stderr "$RESTORE" --verify latest
  assert_status 0
  assert_contains "$output" "Backup verified: $mine"
  run --separate-stderr "$RESTORE" --list
  assert_contains "$output" "Not listed: 1 backup(s) named 'app'"
  [[ $output != *"$(basename "$theirs")"* ]]
  # A database whose only backups are another's: refused, saying so.
  mkdir -p "$WORK/third"
  make_db "$WORK/third/app.db" 1
  rm -f "$mine" "$mine.manifest.json"
  run --separate-stderr "$RESTORE" --db "$WORK/third/app.db" --verify latest
  assert_status 2
  assert_contains "$stderr" "taken from another database"
}

@test "verifying a file that is not a backup says so; a manifest given by mistake means its backup" {
  make_db "$DB_PATH" 5
  b=$(backup_now)
  printf 'meeting notes\n' >"$WORK/notes.txt"
  run --separate-stderr "$RESTORE" --verify "$WORK/notes.txt"
  assert_status 3
  assert_contains "$stderr" "not a backup: neither an SQLite database nor a zstd or gzip file"
  [[ $stderr != *--force* ]]
  run --separate-stderr "$RESTORE" --verify "$b.manifest.json"
  assert_status 0
  assert_contains "$output" "Backup verified: $b"
}

# ---------------------------------------------------------------------------
# Hostile manifests, backups named in the future, odd database names
# ---------------------------------------------------------------------------

# spoil_manifest BACKUP KIND: replace its manifest with something hostile.
spoil_manifest() {
  python3 - "$1.manifest.json" "$2" <<'PY'
import json, sys
path, kind = sys.argv[1], sys.argv[2]
if kind == "nested":
    text = "[" * 100000
else:
    key, value = kind.split("=", 1)
    manifest = json.load(open(path))
    manifest[key] = json.loads(value)
    text = json.dumps(manifest, indent=2)
open(path, "w").write(text)
PY
}

@test "a hostile manifest on an older backup spoils only that backup: list, verify, restore, prune, metrics" {
  make_db "$DB_PATH" 20
  local old new kind
  old=$(backup_now)
  sleep 1
  new=$(backup_now)
  for kind in nested 'db_size_bytes="garbage"' 'created_at=12345' 'tables={"devices": "many"}' 'schema_version={}'; do
    cp -- "$new.manifest.json" "$WORK/good.json"
    cp -- "$WORK/good.json" "$old.manifest.json"
    spoil_manifest "$old" "$kind"
    run --separate-stderr "$RESTORE" --list
    assert_status 0
    assert_equal "$stderr" "" "stderr of --list ($kind)"
    assert_contains "$output" "* ${new##*/}"
    assert_contains "$output" "${old##*/}"
    assert_contains "$output" "manifest unreadable"
    run --separate-stderr "$RESTORE" --list --json
    assert_status 0
    run --separate-stderr "$RESTORE" --verify "$old"
    assert_status 3
    assert_equal "$(printf '%s\n' "$stderr" | grep -vc ': info: ')" 1 "error lines ($kind)"
    assert_contains "$stderr" "manifest unreadable"
    run --separate-stderr "$RESTORE" --verify latest
    assert_status 0
    assert_contains "$output" "Backup verified: $new"
  done
  spoil_manifest "$old" nested
  run --separate-stderr "$RESTORE" --yes --to "$WORK/drill.db" latest
  assert_status 0
  assert_equal "$(count_rows "$WORK/drill.db" devices)" 20
  # Pruning still works: a good backup 40 days old goes, the unreadable one
  # (named 50 days old) stays: it cannot be proven ours.
  local aged hostile
  aged="$BACKUP_DIR/app_$(date -u -d '-40 days' +%Y%m%d_%H%M%S).db.zst"
  hostile="$BACKUP_DIR/app_$(date -u -d '-50 days' +%Y%m%d_%H%M%S).db.zst"
  cp -- "$new" "$aged"
  python3 - "$new.manifest.json" "$aged" <<'PY'
import json, os, sys, time
m = json.load(open(sys.argv[1]))
m["created_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 40 * 86400))
m["file"] = os.path.basename(sys.argv[2])
json.dump(m, open(sys.argv[2] + ".manifest.json", "w"))
PY
  mv -- "$old" "$hostile"
  mv -- "$old.manifest.json" "$hostile.manifest.json"
  run --separate-stderr "$SCRIPTS/backup_database.sh" --retention-days 30 --keep 1
  assert_status 0
  [[ $stderr != *"pruning failed"* && $stderr != *Traceback* ]]
  assert_contains "$stderr" "Pruned: $aged"
  [[ -f $hostile && -f $new && ! -e $aged ]]
  run --separate-stderr "$SCRIPTS/db_metrics" --dir "$BACKUP_DIR"
  assert_status 0
  assert_contains "$output" 'sqlite_backup_catalog_suspect_files{db="app"} 1'
  assert_contains "$output" 'sqlite_backup_catalog_verified_files{db="app"} 2' # new and this run's
}

@test "latest never goes by a name: a backup renamed 30 days ahead is not chosen, and --list flags it" {
  make_db "$DB_PATH" 10
  local renamed future
  renamed=$(backup_now)
  sleep 1
  add_rows "$DB_PATH" 5
  local real
  real=$(backup_now)
  future="$BACKUP_DIR/app_$(date -u -d '+30 days' +%Y%m%d_%H%M%S).db.zst"
  mv -- "$renamed" "$future"
  mv -- "$renamed.manifest.json" "$future.manifest.json"
  run --separate-stderr "$RESTORE" --verify latest
  assert_status 0
  assert_contains "$output" "Backup verified: $real"
  run --separate-stderr "$RESTORE" --yes --to "$WORK/r.db" latest
  assert_status 0
  assert_equal "$(count_rows "$WORK/r.db" devices)" 15
  run --separate-stderr "$RESTORE" --list
  assert_contains "$output" "* ${real##*/}"
  assert_contains "$(grep -F -- "${future##*/}" <<<"$output")" "name in the future"
  # A manifest that says the future too (a wrong clock): never latest.
  python3 - "$real.manifest.json" <<'PY'
import json, sys
m = json.load(open(sys.argv[1])); m["created_at"] = "2099-01-01T00:00:00Z"
json.dump(m, open(sys.argv[1], "w"))
PY
  run --separate-stderr "$RESTORE" --verify latest
  assert_status 0
  assert_contains "$output" "Backup verified: $future"
  run --separate-stderr "$RESTORE" --list
  assert_contains "$(grep -F -- "${real##*/}" <<<"$output")" "dated in the future"
}

@test "odd database names and a directory with spaces: backup, list, verify latest, restore --to, prune, metrics" {
  local dir="$WORK/dir with spaces" name db out backup
  mkdir -p "$dir"
  for name in -lead.db --.db "a b'c\".db" $'new\nline.db'; do
    db="$dir/$name"
    make_db "$db" 7
    out=$("$SCRIPTS/backup_database.sh" --quiet --db "$db" --dir "$dir/backups") ||
      { echo "backup of $name failed" >&2; return 1; }
    backup=${out##*Backup completed: }
    [[ -f $backup && -f $backup.manifest.json ]]
    run --separate-stderr "$RESTORE" --db "$db" --dir "$dir/backups" --list
    assert_status 0
    assert_contains "$output" "* $(printf '%s' "${backup##*/}" | sed -z 's/\n/\\n/g')"
    run --separate-stderr "$RESTORE" --db "$db" --dir "$dir/backups" --verify latest
    assert_status 0
    run --separate-stderr "$RESTORE" --db "$db" --dir "$dir/backups" --yes --to "$dir/restored $name" latest
    assert_status 0
    assert_equal "$(count_rows "$dir/restored $name" devices)" 7 "rows restored from $name"
    run --separate-stderr "$SCRIPTS/db_metrics" --db "$db" --dir "$dir/backups"
    assert_status 0
    assert_contains "$output" "sqlite_backup_catalog_verified_files{db=\"$(printf '%s' "${name%.db}" | sed -z 's/\\/\\\\/g; s/"/\\"/g; s/\n/\\n/g')\"} 1"
    # Pruning sees it (keep 0, retention 0: a dry run would remove it).
    run --separate-stderr "$SCRIPTS/backup_database.sh" --db "$db" --dir "$dir/backups" --dry-run --retention-days 0 --keep 0
    assert_status 0
    assert_contains "$output" "Would prune: $backup"
  done
}
