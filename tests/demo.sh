#!/usr/bin/env bash
# Summary: walk through the whole toolkit on a demo dashboard database.
#
# Usage: make demo    (or: bash tests/demo.sh)
#
# Migrates a fresh dashboard database, adds a little sample data, backs it up,
# verifies and lists the backups, copies them to an offsite remote (a
# directory under data/, through rclone when it is installed) and verifies the
# copy, restores the newest into a scratch file and compares it with the live
# database, runs maintenance and prints metrics.
# Everything lives under data/ in the checkout (DB_PATH and BACKUP_DIR
# override it). Safe to run again: each run adds one backup.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
S="$ROOT/scripts"
export DB_PATH=${DB_PATH:-$ROOT/data/dashboard.db}
export BACKUP_DIR=${BACKUP_DIR:-$ROOT/data/backups}
export MIGRATIONS_DIR=${MIGRATIONS_DIR:-$ROOT/migrations}
export METRICS_DIR=${METRICS_DIR:-$ROOT/data/metrics}
SCRATCH=${SCRATCH:-$(dirname -- "$DB_PATH")/scratch}
OFFSITE=${OFFSITE:-$(dirname -- "$DB_PATH")/offsite}
export SQLITE_OPS_CONFIG=${SQLITE_OPS_CONFIG:-/dev/null}

step() { printf '\n==> %s\n' "$*"; }

mkdir -p -- "$(dirname -- "$DB_PATH")" "$SCRATCH"

step "1/9 migrate: bring $DB_PATH to the newest schema"
"$S/migrate" up
"$S/migrate" status

step "2/9 sample data: a few devices, their services and one scan"
sqlite3 -batch -bail -init /dev/null "$DB_PATH" <<'SQL'
INSERT INTO devices(device_ip, hostname, vendor, device_type, status, last_seen)
VALUES ('192.168.1.1', 'gateway', 'Ubiquiti', 'router', 'up', datetime('now')),
       ('192.168.1.10', 'nas', 'Synology', 'server', 'up', datetime('now')),
       ('192.168.1.23', 'printer', 'HP', 'printer', 'down', datetime('now', '-2 days'))
ON CONFLICT(device_ip) DO UPDATE SET last_seen = excluded.last_seen;
INSERT OR IGNORE INTO services(device_id, port, protocol, service, state)
SELECT id, 22, 'tcp', 'ssh', 'open' FROM devices WHERE device_ip IN ('192.168.1.1', '192.168.1.10');
INSERT OR IGNORE INTO services(device_id, port, protocol, service, state)
SELECT id, 631, 'tcp', 'ipp', 'open' FROM devices WHERE device_ip = '192.168.1.23';
INSERT OR IGNORE INTO scan_history(scan_id, scan_type, start_time, subnet, devices_found)
VALUES ('demo-scan-1', 'ping', datetime('now'), '192.168.1.0/24', 3);
SQL
echo "devices: $(sqlite3 -init /dev/null "$DB_PATH" 'SELECT count(*) FROM devices;')," \
  "services: $(sqlite3 -init /dev/null "$DB_PATH" 'SELECT count(*) FROM services;')"

step "3/9 backup: a consistent, verified, compressed snapshot with a manifest"
"$S/backup_database.sh"

step "4/9 verify: checksum, integrity, foreign keys and row counts of the newest backup"
"$S/restore_database.sh" --verify latest

step "5/9 list: every backup, newest first"
"$S/restore_database.sh" --list

step "6/9 offsite: copy the backups to a remote (a local directory here), then verify from there"
if command -v rclone >/dev/null 2>&1; then
  "$S/offsite_sync.sh" --remote "$OFFSITE"
  "$S/restore_database.sh" --from "$OFFSITE" --verify latest
else
  echo "(rclone is not installed: apt-get install rclone to try offsite copies)"
fi

step "7/9 restore --to: the newest backup into a scratch file, compared with the live database"
restored="$SCRATCH/restored.db"
"$S/restore_database.sh" --yes --to "$restored" latest
live_sum=$(sqlite3 -init /dev/null -readonly "$DB_PATH" .sha3sum)
restored_sum=$(sqlite3 -init /dev/null -readonly "$restored" .sha3sum)
if [[ $live_sum == "$restored_sum" ]]; then
  echo "restored copy matches the live database (content digest ${live_sum:0:16}...)"
else
  echo "demo: the restored copy differs from the live database" >&2
  exit 1
fi

step "8/9 maintain: integrity check, checkpoint, statistics, vacuum if worth it"
"$S/maintain_database.sh"

step "9/9 metrics: what Prometheus would scrape (first lines)"
"$S/db_metrics" | grep -v '^#' | head -n 20

printf '\nDone. Database: %s\nBackups: %s\nMetrics files: %s\n' "$DB_PATH" "$BACKUP_DIR" "$METRICS_DIR"
printf '\nTo try the runbook (docs/operations/database-management.md) on this demo database:\n'
settings=$(printf '%q ' "DB_PATH=$DB_PATH" "BACKUP_DIR=$BACKUP_DIR" "METRICS_DIR=$METRICS_DIR")
printf '  export %s\n' "${settings% }"
printf '  scripts/restore_database.sh --list\n'

