# shellcheck shell=bash
# Helpers for tests/bats/migrate.bats (loaded after helpers.bash).

# migrate_world: a migrations directory with two migrations and the path of a
# database that does not exist yet, exported as MIGRATIONS_DIR and DB_PATH.
migrate_world() {
  export MIGRATIONS_DIR="$WORK/migrations" DB_PATH="$WORK/data/dash.db"
  mkdir -p "$MIGRATIONS_DIR" "$WORK/data"
  cat >"$MIGRATIONS_DIR/001_devices.sql" <<'SQL'
-- migrate:up
CREATE TABLE devices (id INTEGER PRIMARY KEY, ip TEXT NOT NULL UNIQUE);
-- migrate:down
DROP TABLE devices;
SQL
  cat >"$MIGRATIONS_DIR/002_services.sql" <<'SQL'
-- migrate:up
CREATE TABLE services (id INTEGER PRIMARY KEY,
    device_ip TEXT NOT NULL REFERENCES devices (ip), port INTEGER);
-- migrate:down
DROP TABLE services;
SQL
}

# migrate_backups_uncompressed: the real pre-migration backup into
# $WORK/backups, uncompressed so a test can open it with sqlite3.
migrate_backups_uncompressed() {
  export BACKUP_DIR="$WORK/backups" COMPRESS=none
}

# migrate_tables DB: the user tables of DB, one per line, sorted.
migrate_tables() {
  sqlite3 -batch "$1" "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name;"
}

# migrate_versions DB: the recorded versions, space-separated.
migrate_versions() {
  sqlite3 -batch "$1" "SELECT group_concat(version, ' ') FROM (SELECT version FROM schema_migrations ORDER BY version);"
}

# nMapping+'s own SQL (the dashboard's CREATE statements, its installer's, and
# the statements it issues), read from beside the repository, never copied in.
NMAPPING_DIR=${SQLITE_OPS_CLIENTS:-$REPO_ROOT/../shared/clients}/nmapping-plus

# needs_nmapping: skip the test, with the reason, when that SQL is absent.
needs_nmapping() {
  [[ -f $NMAPPING_DIR/app_statements.sql ]] || skip "nMapping+'s SQL is not at $NMAPPING_DIR (set SQLITE_OPS_CLIENTS)"
}

# app_statements DB: run every statement of app_statements.sql on DB, twice (a
# re-import replaces rows), with its parameters bound as the dashboard binds
# them, foreign keys off as the dashboard runs; prints the page view's devices.
app_statements() {
  python3 - "$1" "$NMAPPING_DIR/app_statements.sql" <<'PY'
import sqlite3, sys
values = {"ip": "192.0.2.10", "mac": "00:11:22:33:44:55", "vendor": "Acme",
          "hostname": "nas.lan", "first_seen": "2024-05-01", "last_seen": "2024-05-02",
          "status": "online", "os_info": "Linux", "services": "22/tcp open ssh OpenSSH 8.9p1",
          "vulnerabilities": "", "scan_type": "discovery", "scan_date": "2024-05-02",
          "devices_found": 3, "new_devices": 1, "scan_file": "discovery_2024-05-02.md"}
conn = sqlite3.connect(sys.argv[1])
text = open(sys.argv[2]).read()
statements, chunk = [], ""
for line in text.splitlines(keepends=True):
    if not chunk and line.startswith("--"):
        continue
    chunk += line
    if sqlite3.complete_statement(chunk):
        statements.append(chunk.strip())
        chunk = ""
for _ in range(2):
    for sql in statements:
        params = ()
        if "?" in sql:
            names = [c.strip() for c in sql[sql.index("(") + 1:sql.index(")")].split(",")]
            params = tuple(values[n] for n in names[:sql.count("?")])
        conn.execute(sql, params)
        conn.commit()
for row in conn.execute("SELECT ip, status FROM devices ORDER BY last_seen DESC, ip ASC"):
    print(*row)
PY
}
