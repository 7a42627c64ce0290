#!/usr/bin/env bats
# Tests for scripts/migrate: command-line behaviour and exit codes. The logic is
# tested in tests/python/test_migration_manager.py; here, what an operator sees.

# shellcheck disable=SC2030,SC2031 # every @test runs in its own subshell on purpose
load helpers
load migrate_helpers

setup() {
  common_setup
  export BACKUP_DIR="$WORK/backups"
  migrate_world
  MIGRATE="$SCRIPTS/migrate"
}

@test "--help and COMMAND --help print usage on stdout and exit 0" {
  run --separate-stderr "$MIGRATE" --help
  assert_status 0
  assert_contains "$output" "usage: migrate"
  assert_equal "$stderr" ""
  for command in status up down validate new baseline schema; do
    run --separate-stderr "$MIGRATE" "$command" --help
    assert_status 0
    assert_contains "$output" "usage: migrate $command"
  done
}

@test "works through a symlink (lib/ is found from the real location)" {
  ln -s "$MIGRATE" "$WORK/migrate-link"
  run --separate-stderr "$WORK/migrate-link" status
  assert_status 0
  assert_contains "$output" "001  001_devices.sql"
}

@test "up creates the database, applies everything and records it; again is a no-op" {
  run --separate-stderr "$MIGRATE" up
  assert_status 0
  assert_equal "${lines[0]%% (*}" "applied 001_devices.sql"
  assert_equal "${lines[1]%% (*}" "applied 002_services.sql"
  assert_equal "$(migrate_versions "$DB_PATH")" "1 2"
  assert_equal "$(migrate_tables "$DB_PATH" | tr '\n' ' ')" "devices schema_migrations services "
  run --separate-stderr "$MIGRATE" up
  assert_status 0
  assert_equal "$output" "up to date"
  assert_equal "$stderr" ""
}

@test "global options are accepted before and after the command" {
  other="$WORK/other.db"
  run "$MIGRATE" up --no-backup --db "$other"
  assert_status 0
  run "$MIGRATE" --db="$other" status
  assert_status 0
  assert_contains "$output" "applied"
  [[ ! -e $DB_PATH ]]
}

@test "up backs up an existing database first and prints the backup's path" {
  migrate_backups_uncompressed
  "$MIGRATE" up --to 1 >/dev/null
  run --separate-stderr "$MIGRATE" up
  assert_status 0
  local backup=${lines[0]#backup: }
  [[ ${lines[0]} == "backup: $BACKUP_DIR/dash_"*.db && -f $backup && -f $backup.manifest.json ]]
  # The backup holds the state before the migration.
  assert_equal "$(migrate_versions "$backup")" "1"
  assert_equal "$(migrate_versions "$DB_PATH")" "1 2"
}

@test "a failing backup: exit 1, nothing applied" {
  "$MIGRATE" up --to 1 >/dev/null
  export BACKUP_DIR="$WORK/no/such/backups" # refused: its parent does not exist
  run --separate-stderr "$MIGRATE" up
  assert_status 1
  assert_contains "$stderr" "migrate: the backup before migrating failed (cannot create $BACKUP_DIR"
  assert_equal "$(migrate_versions "$DB_PATH")" "1"
  [[ ! -e $WORK/no ]]
}

@test "a --db that is not an SQLite database: exit 2, file untouched" {
  printf 'not a database\n' >"$DB_PATH"
  run --separate-stderr "$MIGRATE" up --no-backup
  assert_status 2
  assert_equal "$stderr" "migrate: $DB_PATH is not an SQLite database; check --db / DB_PATH"
  assert_equal "$output" ""
  assert_equal "$(cat "$DB_PATH")" "not a database"
}

@test "usage errors: exit 2 with one line naming the problem" {
  run --separate-stderr "$MIGRATE" frobnicate
  assert_status 2
  assert_equal "$stderr" "migrate: unknown command 'frobnicate'; see 'migrate --help'"
  run --separate-stderr "$MIGRATE" down
  assert_status 2
  assert_contains "$stderr" "--steps N or --to V"
  run --separate-stderr "$MIGRATE" up --to three
  assert_status 2
  run --separate-stderr "$MIGRATE" --migrations "$WORK/nowhere" status
  assert_status 2
  assert_contains "$stderr" "does not exist"
  [[ ! -e $DB_PATH ]]
}

@test "an edited applied migration: validate and up exit 3 naming the file" {
  "$MIGRATE" up --to 1 >/dev/null
  echo "CREATE INDEX sneaky ON devices (ip);" >>"$MIGRATIONS_DIR/001_devices.sql"
  run --separate-stderr "$MIGRATE" validate
  assert_status 3
  assert_contains "$stderr" "001_devices.sql"
  run --separate-stderr "$MIGRATE" up --no-backup
  assert_status 3
  assert_equal "$(migrate_versions "$DB_PATH")" "1"
}

@test "a failing migration: exit 1, rolled back, the error names file and statement" {
  "$MIGRATE" up >/dev/null
  printf 'CREATE TABLE notes (x);\nINSERT INTO nope VALUES (1);\n' >"$MIGRATIONS_DIR/003_notes.sql"
  run --separate-stderr "$MIGRATE" up --no-backup
  assert_status 1
  assert_contains "$stderr" "migrate: 003_notes.sql failed at statement 2 of its up section"
  assert_contains "$stderr" "no such table: nope"
  [[ $(migrate_tables "$DB_PATH") != *notes* ]]
}

@test "another run holding the lock: exit 75 at once, or wait with --lock-timeout" {
  "$MIGRATE" up --to 1 >/dev/null
  exec {fd}>"$DB_PATH.sqlite-ops.lock"
  flock "$fd"
  run --separate-stderr "$MIGRATE" up --no-backup
  assert_status 75
  assert_contains "$stderr" "migrate: another sqlite-ops run holds the lock"
  (sleep 1; flock -u "$fd") &
  run --separate-stderr "$MIGRATE" --lock-timeout 10 up --no-backup
  assert_status 0
  exec {fd}>&-
  assert_equal "$(migrate_versions "$DB_PATH")" "1 2"
}

@test "down reverts the newest first and refuses a migration without a down section" {
  "$MIGRATE" up >/dev/null
  run --separate-stderr "$MIGRATE" down --steps 1 --no-backup
  assert_status 0
  assert_equal "${output%% (*}" "reverted 002_services.sql"
  printf 'CREATE TABLE notes (x);\n' >"$MIGRATIONS_DIR/003_notes.sql"
  "$MIGRATE" up --no-backup >/dev/null
  run --separate-stderr "$MIGRATE" down --to 0 --no-backup
  assert_status 1
  assert_contains "$stderr" "003_notes.sql has no down section"
  assert_equal "$(migrate_versions "$DB_PATH")" "1 2 3"
}

@test "status --json is valid JSON with the documented keys" {
  "$MIGRATE" up --to 1 >/dev/null
  run --separate-stderr "$MIGRATE" status --json
  assert_status 0
  run python3 -c 'import json, sys; d = json.loads(sys.argv[1]); print(d["current_version"], d["pending"], [m["state"] for m in d["migrations"]])' "$output"
  assert_equal "$output" "1 [2] ['applied', 'pending']"
}

@test "baseline adopts a database made without migrations, after checking its schema" {
  sqlite3 "$DB_PATH" "CREATE TABLE devices (id INTEGER PRIMARY KEY, ip TEXT NOT NULL UNIQUE, extra);"
  run --separate-stderr "$MIGRATE" baseline 1
  assert_status 3
  assert_contains "$stderr" "table devices: column extra not in the migrations through 001_devices.sql"
  assert_equal "$(migrate_tables "$DB_PATH")" "devices"
  sqlite3 "$DB_PATH" "ALTER TABLE devices DROP COLUMN extra;"
  run --separate-stderr "$MIGRATE" baseline 1
  assert_status 0
  assert_equal "$output" "recorded 001_devices.sql as applied (not run)"
  run "$MIGRATE" up --no-backup
  assert_status 0
  assert_equal "$(migrate_versions "$DB_PATH")" "1 2"
  run --separate-stderr "$MIGRATE" baseline 1
  assert_status 2
}

@test "new creates the next numbered file" {
  run --separate-stderr "$MIGRATE" new add-notes
  assert_status 0
  assert_equal "$output" "$MIGRATIONS_DIR/003_add_notes.sql"
  grep -qx -- '-- migrate:up' "$MIGRATIONS_DIR/003_add_notes.sql"
}

@test "schema writes schema.sql; schema --check exits 3 on drift, 0 when it matches" {
  run "$MIGRATE" schema
  assert_status 0
  assert_contains "$(cat "$MIGRATIONS_DIR/schema.sql")" "CREATE TABLE services"
  "$MIGRATE" up >/dev/null
  run --separate-stderr "$MIGRATE" schema --check
  assert_status 0
  sqlite3 "$DB_PATH" "ALTER TABLE devices ADD COLUMN hand_made TEXT;"
  run --separate-stderr "$MIGRATE" schema --check
  assert_status 3
  assert_equal "$output" "table devices: column hand_made not in schema.sql"
}

@test "the shipped migrations apply, match schema.sql and roll back to the application's own tables" {
  export MIGRATIONS_DIR="$REPO_ROOT/migrations"
  run "$MIGRATE" up --no-backup
  assert_status 0
  run "$MIGRATE" schema --check
  assert_status 0
  run "$MIGRATE" down --to 2 --no-backup
  assert_status 0
  assert_equal "$(migrate_tables "$DB_PATH")" $'devices\nnetwork_changes\nscans\nschema_migrations'
  run --separate-stderr "$MIGRATE" down --to 0 --no-backup
  assert_status 1
  assert_contains "$stderr" "002_installer_schema.sql has no down section"
  assert_equal "$(migrate_versions "$DB_PATH")" "1 2"
}

@test "nMapping+'s own statements work at every shipped migration version" {
  needs_nmapping
  export MIGRATIONS_DIR="$REPO_ROOT/migrations"
  local file version
  for file in "$MIGRATIONS_DIR"/[0-9]*_*; do
    version=${file##*/}
    version=$((10#${version%%_*}))
    rm -f "$DB_PATH"
    run --separate-stderr "$MIGRATE" up --to "$version" --no-backup
    assert_status 0
    # The dashboard's start-up (CREATE ... IF NOT EXISTS), then its writes and page views.
    sqlite3 -batch -bail "$DB_PATH" <"$NMAPPING_DIR/app_schema.sql"
    run app_statements "$DB_PATH"
    assert_status 0
    assert_equal "$output" "192.0.2.10 online"
  done
}

@test "up adopts the dashboard's own database and the installer's, and says so" {
  needs_nmapping
  export MIGRATIONS_DIR="$REPO_ROOT/migrations"
  sqlite3 -batch -bail "$DB_PATH" <"$NMAPPING_DIR/app_schema.sql"
  app_statements "$DB_PATH" >/dev/null
  run --separate-stderr "$MIGRATE" up --no-backup
  assert_status 0
  assert_contains "$output" "adopting the database: its schema is the one migrations 1..1 build"
  assert_contains "$output" "applied 002_installer_schema.sql"
  assert_equal "$(migrate_versions "$DB_PATH")" "1 2 3 4"
  assert_equal "$(sqlite3 "$DB_PATH" "SELECT device_ip, port FROM services;")" "192.0.2.10|22"
  run "$MIGRATE" schema --check
  assert_status 0

  rm -f "$DB_PATH"
  sqlite3 -batch -bail "$DB_PATH" <"$NMAPPING_DIR/installer_schema.sql" >/dev/null
  run --separate-stderr "$MIGRATE" up --no-backup
  assert_status 0
  assert_contains "$output" "migrations 1..2 build"
  assert_equal "$(migrate_versions "$DB_PATH")" "1 2 3 4"
  run app_statements "$DB_PATH"
  assert_status 0
}

@test "a database no version builds is refused: differences listed, nothing written, no backup" {
  migrate_backups_uncompressed
  sqlite3 "$DB_PATH" "CREATE TABLE devices (id INTEGER PRIMARY KEY, device_ip TEXT NOT NULL UNIQUE);"
  local before
  before=$(sha256sum <"$DB_PATH")
  run --separate-stderr "$MIGRATE" up
  assert_status 3
  assert_contains "$stderr" "has tables but no migration history"
  assert_contains "$stderr" "table devices: column ip missing"
  assert_contains "$stderr" "nothing was written"
  assert_equal "$(sha256sum <"$DB_PATH")" "$before"
  [[ -z $(ls -A "$BACKUP_DIR" 2>/dev/null) ]]
}

@test "a PiWardrive-shaped database keeps schema_version and migrations through a failed and a successful up" {
  sqlite3 -batch -bail "$DB_PATH" <<'SQL'
CREATE TABLE schema_version (version INTEGER);
INSERT INTO schema_version VALUES (1);
CREATE TABLE migrations (version INTEGER PRIMARY KEY, applied_at TEXT);
INSERT INTO migrations VALUES (1, '2024-01-01'), (2, '2024-02-01');
CREATE TABLE devices (id INTEGER PRIMARY KEY, ip TEXT NOT NULL UNIQUE);
SQL
  local kept
  kept=$(sqlite3 "$DB_PATH" ".dump schema_version migrations")
  run --separate-stderr "$MIGRATE" status
  assert_equal "${lines[0]}" "001  001_devices.sql                          pending"
  assert_contains "$output" "note: table schema_version (1 row(s), highest version 1) is another tool's migration history"
  printf 'CREATE TABLE broken (x);\nINSERT INTO nope VALUES (1);\n' >"$MIGRATIONS_DIR/002_services.sql"
  run --separate-stderr "$MIGRATE" up --no-backup   # adopts 001, then 002 fails
  assert_status 1
  assert_contains "$stderr" "the database is as it was before this run"
  [[ $stderr != *restore_database.sh* ]]
  assert_equal "$(sqlite3 "$DB_PATH" ".dump schema_version migrations")" "$kept"
  assert_equal "$(migrate_tables "$DB_PATH")" $'devices\nmigrations\nschema_version'
  printf 'CREATE TABLE services (id INTEGER PRIMARY KEY);\n' >"$MIGRATIONS_DIR/002_services.sql"
  run --separate-stderr "$MIGRATE" up --no-backup
  assert_status 0
  assert_equal "$(migrate_versions "$DB_PATH")" "1 2"
  assert_equal "$(sqlite3 "$DB_PATH" ".dump schema_version migrations")" "$kept"
}

@test "up on a lost database refuses while backups of it exist; --create makes a new one" {
  mkdir -p "$BACKUP_DIR"
  : >"$BACKUP_DIR/dash_20260101_000000.db"
  run --separate-stderr "$MIGRATE" up
  assert_status 2
  assert_contains "$stderr" "$DB_PATH does not exist, but $BACKUP_DIR holds 1 backup(s) of it"
  assert_contains "$stderr" "restore_database.sh --db $DB_PATH --dir $BACKUP_DIR --migrations $MIGRATIONS_DIR $BACKUP_DIR/dash_20260101_000000.db"
  assert_contains "$stderr" "migrate up --create"
  [[ ! -e $DB_PATH ]]
  run --separate-stderr "$MIGRATE" up --create
  assert_status 0
  assert_equal "$(migrate_versions "$DB_PATH")" "1 2"
}
