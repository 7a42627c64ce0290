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

step "1/9 migrate: bring $DB_PATH to the newest schema (nMapping+'s own tables first)"
"$S/migrate" up
"$S/migrate" status
"$S/migrate" schema --check

step "2/9 sample data: devices and a scan, written as the dashboard writes them"
# The dashboard's own statements (INSERT OR REPLACE on every scan import); the
# services table is the toolkit's normalised copy of devices.services.
sqlite3 -batch -bail -init /dev/null "$DB_PATH" <<'SQL'
INSERT OR REPLACE INTO devices
    (ip, mac, vendor, hostname, first_seen, last_seen, status, os_info, services, vulnerabilities, updated_at)
VALUES ('192.168.1.1', 'f0:9f:c2:00:00:01', 'Ubiquiti', 'gateway', '2024-05-01', date('now'), 'online',
        'Linux', '22/tcp open ssh OpenSSH 8.4' || char(10) || '443/tcp open https nginx', '', CURRENT_TIMESTAMP),
       ('192.168.1.10', '00:11:32:00:00:02', 'Synology', 'nas', '2024-05-01', date('now'), 'online',
        'Linux', '22/tcp open ssh OpenSSH 8.2', '', CURRENT_TIMESTAMP),
       ('192.168.1.23', '3c:52:82:00:00:03', 'HP', 'printer', '2024-05-01', date('now', '-2 days'), 'inactive',
        '', '631/tcp open ipp CUPS 2.3', '', CURRENT_TIMESTAMP);
INSERT OR IGNORE INTO services (device_ip, port, protocol, state, service)
VALUES ('192.168.1.1', 22, 'tcp', 'open', 'ssh'), ('192.168.1.1', 443, 'tcp', 'open', 'https'),
       ('192.168.1.10', 22, 'tcp', 'open', 'ssh'), ('192.168.1.23', 631, 'tcp', 'open', 'ipp');
INSERT OR REPLACE INTO scans (scan_type, scan_date, devices_found, new_devices, scan_file)
VALUES ('discovery', date('now'), 3, 0, 'discovery_' || date('now') || '.md');
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

