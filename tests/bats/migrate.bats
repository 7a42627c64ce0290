#!/usr/bin/env bats
# Tests for scripts/migrate: command-line behaviour and exit codes. The logic is
# tested in tests/python/test_migration_manager.py; here, what an operator sees.

# shellcheck disable=SC2030,SC2031 # every @test runs in its own subshell on purpose
load helpers
load migrate_helpers

setup() {
  common_setup
  unset SQLITE_OPS_BACKUP_SCRIPT
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
  migrate_stub_backup
  "$MIGRATE" up --to 1 >/dev/null
  run --separate-stderr "$MIGRATE" up
  assert_status 0
  assert_equal "${lines[0]}" "backup: $BACKUP_DIR/stub.db"
  # The backup holds the state before the migration.
  assert_equal "$(migrate_versions "$BACKUP_DIR/stub.db")" "1"
  assert_equal "$(migrate_versions "$DB_PATH")" "1 2"
}

@test "a failing backup script: exit 1, nothing applied" {
  "$MIGRATE" up --to 1 >/dev/null
  export SQLITE_OPS_BACKUP_SCRIPT=/bin/false
  run --separate-stderr "$MIGRATE" up
  assert_status 1
  assert_contains "$stderr" "migrate: the backup before migrating failed"
  assert_equal "$(migrate_versions "$DB_PATH")" "1"
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
  echo "CREATE INDEX sneaky ON devices (device_ip);" >>"$MIGRATIONS_DIR/001_devices.sql"
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

@test "baseline adopts a database made without migrations" {
  sqlite3 "$DB_PATH" "CREATE TABLE devices (id INTEGER PRIMARY KEY, device_ip TEXT NOT NULL UNIQUE);"
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

@test "the shipped migrations apply, match schema.sql and roll all the way back" {
  export MIGRATIONS_DIR="$REPO_ROOT/migrations"
  run "$MIGRATE" up --no-backup
  assert_status 0
  run "$MIGRATE" schema --check
  assert_status 0
  run "$MIGRATE" down --to 0 --no-backup
  assert_status 0
  assert_equal "$(migrate_tables "$DB_PATH")" "schema_migrations"
}
