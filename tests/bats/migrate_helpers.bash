# shellcheck shell=bash
# Helpers for tests/bats/migrate.bats (loaded after helpers.bash).

# migrate_world: a migrations directory with two migrations and the path of a
# database that does not exist yet, exported as MIGRATIONS_DIR and DB_PATH.
migrate_world() {
  export MIGRATIONS_DIR="$WORK/migrations" DB_PATH="$WORK/data/dash.db"
  mkdir -p "$MIGRATIONS_DIR" "$WORK/data"
  cat >"$MIGRATIONS_DIR/001_devices.sql" <<'SQL'
-- migrate:up
CREATE TABLE devices (id INTEGER PRIMARY KEY, device_ip TEXT NOT NULL UNIQUE);
-- migrate:down
DROP TABLE devices;
SQL
  cat >"$MIGRATIONS_DIR/002_services.sql" <<'SQL'
-- migrate:up
CREATE TABLE services (id INTEGER PRIMARY KEY,
    device_id INTEGER NOT NULL REFERENCES devices (id) ON DELETE CASCADE, port INTEGER);
-- migrate:down
DROP TABLE services;
SQL
}

# migrate_stub_backup: SQLITE_OPS_BACKUP_SCRIPT pointing at a stub that copies the
# database into BACKUP_DIR and prints "Backup completed: <path>" like the real one.
migrate_stub_backup() {
  export BACKUP_DIR="$WORK/backups" SQLITE_OPS_BACKUP_SCRIPT="$WORK/backup_stub.sh"
  cat >"$SQLITE_OPS_BACKUP_SCRIPT" <<'STUB'
#!/bin/bash
set -eu
db= dir=
while (($#)); do
  case $1 in --db) db=$2; shift 2 ;; --dir) dir=$2; shift 2 ;; *) shift ;; esac
done
mkdir -p "$dir"
sqlite3 "$db" ".backup '$dir/stub.db'"
echo "Backup completed: $dir/stub.db"
STUB
  chmod +x "$SQLITE_OPS_BACKUP_SCRIPT"
}

# migrate_tables DB: the user tables of DB, one per line, sorted.
migrate_tables() {
  sqlite3 -batch "$1" "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name;"
}

# migrate_versions DB: the recorded versions, space-separated.
migrate_versions() {
  sqlite3 -batch "$1" "SELECT group_concat(version, ' ') FROM (SELECT version FROM schema_migrations ORDER BY version);"
}
