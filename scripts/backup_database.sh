#!/usr/bin/env bash
# Summary: take a verified, compressed online backup of an SQLite database
#
# Usage: backup_database.sh [--db PATH] [--dir DIR] [--retention-days N] [--keep N]
#                           [--compress zstd|gzip|none] [--dry-run] [--quiet]
#                           [--lock-timeout N] [--metrics-dir DIR] [--config FILE]
#                           [--integrity-check backup|drill]
#        backup_database.sh --help
#
# Takes a consistent snapshot of the live database while other processes keep
# writing (one read transaction: a WAL database's own file, checkpointed
# first, goes straight into the compressor; else SQLite's online backup API
# in one step, into a temp copy), checks it with the full
# PRAGMA integrity_check (exactly "ok"; it runs beside the compression, on the
# second core), counts the rows of every table, compresses it, and publishes
# DIR/<name>_<YYYYmmdd_HHMMSS>.db[.zst|.gz] with a sidecar
# <same>.manifest.json (checksums, sizes, row counts, schema version, the
# integrity_check result recorded against the content's SHA-256, so that a
# restore of these same bytes need not run the check again, and foreign-key
# violations: copied as they are, with a warning, since a restore of them will
# need --force unless FK_ACCEPT lists their tables). Nothing appears under a
# final name unless it is complete, verified and fsynced. A hot rollback
# journal left by a writer killed mid-transaction is rolled back first. Then prunes old
# backups of this database and prints "Backup completed: <path>" as the last
# line on stdout. On a terminal, the long steps (snapshot, compression,
# integrity_check) show their progress on stderr; --quiet silences it.
#
# Where the full integrity_check runs (INTEGRITY_CHECK): "backup" (the
# default) runs it here, as above. "drill", for a database too large for the
# check to fit beside the compression: the backup runs only PRAGMA
# quick_check (a damaged database is still refused, exit 4) and counts no
# foreign keys, marks the manifest "integrity_check_deferred" and
# "foreign_key_check_deferred", and the drill run right after it
# (backup_database.sh && restore_database.sh --drill) runs the full check and
# the count, and records both in that manifest, against the same SHA-256.
# This script settles the settings below; the run itself is one Python
# process (lib/sqlite_ops/backup.py), which replaces it: a signal to this
# script's PID reaches the run.
#
# Retention: only this database's own backup files are ever removed; the
# newest KEEP_MIN verified backups are always kept; a backup is pruned when
# it was taken more than RETENTION_DAYS ago (its manifest's created_at; the
# time in its name only when it has no manifest); and nothing at all is
# pruned when the newest verified backup is itself older than RETENTION_DAYS.
# With OFFSITE_REMOTES set, a backup not yet verified on every remote (see
# offsite_sync.sh) is kept until it is.
#
#   --db PATH            the database (DB_PATH; default /dashboard/data/dashboard.db)
#   --dir DIR            where backups live, created 0700 if its parent exists (BACKUP_DIR);
#                        refused when others may write to it
#   --retention-days N   prune backups older than N days (RETENTION_DAYS; 30)
#   --keep N             never prune the newest N verified backups (KEEP_MIN; 7)
#   --compress CODEC     zstd, gzip or none (COMPRESS; zstd when installed, else gzip)
#   --dry-run            take no backup and remove nothing: list what pruning
#                        would remove if this run's backup succeeded
#   --lock-timeout N     wait up to N seconds for another run's lock (LOCK_TIMEOUT; 0)
#   --metrics-dir DIR    write sqlite_ops_backup_<name>.prom there (METRICS_DIR)
#   --config FILE        KEY=value settings file (SQLITE_OPS_CONFIG; /etc/sqlite-ops.conf)
#   --quiet              only warnings and errors on stderr (no progress line)
#   --integrity-check WHERE
#                        backup or drill: where the full integrity_check and
#                        the foreign-key count run (INTEGRITY_CHECK; backup)
#
# FK_ACCEPT (config or environment): child tables whose orphaned rows the
# application makes by design, comma-separated, each TABLE or TABLE:N (at most
# N rows); their orphans are recorded as accepted, not warned about.
#
# Exit codes:
#   0   backup published (and pruned)
#   1   failed: nothing was published, earlier backups are untouched
#   2   usage error, missing database, not a regular file, not an SQLite
#       database, a lock file that is a link (someone planted it), or a backup
#       directory others may write to (chmod go-w it)
#   4   the database failed its integrity check: nothing was published
#   75  another backup, restore, migration or maintenance run holds the lock

set -euo pipefail

PROG=backup_database.sh
SELF=$(readlink -f -- "${BASH_SOURCE[0]}")
# shellcheck source=lib/common.sh
source "$(dirname -- "$SELF")/../lib/common.sh"

# ---------------------------------------------------------------------------
# Settings
# ---------------------------------------------------------------------------

DRY_RUN=0

parse_args() { parse_options backup_option "$@"; }

# backup_option ARGS...: this script's own options (SOPS_SHIFT: how many used).
backup_option() {
  SOPS_SHIFT=1
  case $1 in
    --retention-days) set_flag RETENTION_DAYS "$@" && SOPS_SHIFT=2 ;;
    --keep) set_flag KEEP_MIN "$@" && SOPS_SHIFT=2 ;;
    --compress) set_flag COMPRESS "$@" && SOPS_SHIFT=2 ;;
    --integrity-check) set_flag INTEGRITY_CHECK "$@" && SOPS_SHIFT=2 ;;
    --dry-run) DRY_RUN=1 ;;
    -*) usage_error "unknown option '$1'" ;;
    *) usage_error "unexpected argument '$1' (a path with spaces needs quotes)" ;;
  esac
}

# load_settings: resolve every setting once (flag > env > config > default).
load_settings() {
  config_init
  SRC_DB=$(abs_path "$(cfg DB_PATH)")
  DEST_DIR=$(abs_path "$(cfg BACKUP_DIR)")
  RETENTION=$(cfg RETENTION_DAYS)
  KEEP=$(cfg KEEP_MIN)
  TIMEOUT=$(cfg LOCK_TIMEOUT)
  METRICS=$(cfg METRICS_DIR)
  COMPRESSION=$(cfg COMPRESS "$(default_compression)")
  FK_ACCEPT=$(cfg FK_ACCEPT)
  INTEGRITY=$(cfg INTEGRITY_CHECK)
  require_uint RETENTION_DAYS "$RETENTION"
  require_uint KEEP_MIN "$KEEP"
  require_uint LOCK_TIMEOUT "$TIMEOUT"
  case $COMPRESSION in
    zstd) require_tool zstd zstd ;;
    gzip) require_tool gzip gzip ;;
    none) ;;
    *) usage_error "COMPRESS must be zstd, gzip or none, not '$COMPRESSION'" ;;
  esac
  case $INTEGRITY in
    backup | drill) ;;
    *) usage_error "INTEGRITY_CHECK must be backup or drill, not '$INTEGRITY'" ;;
  esac
  offsite_settings "$RETENTION" "$KEEP"
}

# ---------------------------------------------------------------------------

# main: the settings here, then the whole run in one Python process
# (lib/sqlite_ops/backup.py reads it top to bottom: lock, checks, snapshot,
# pack, manifest, publish, prune, metrics). It replaces this shell, so a
# signal sent to this script's PID reaches the run itself.
main() {
  local start
  interrupt_before_start "nothing was published"
  start=$(now_epoch)
  parse_args "$@"
  load_settings
  local -a run=(--db="$SRC_DB" --dir="$DEST_DIR" --retention-days="$RETENTION" --keep="$KEEP"
    --compress="$COMPRESSION" --lock-timeout="$TIMEOUT" --metrics-dir="$METRICS"
    --fk-accept="$FK_ACCEPT" --integrity-check="$INTEGRITY"
    --busy-timeout-ms="$SQLITE_BUSY_TIMEOUT_MS" --prog="$PROG"
    --start="$start" --offsite-retention-days="$OFFSITE_RETENTION" --offsite-keep="$OFFSITE_KEEP"
    "${OFFSITE_ARGS[@]}" "${QUIET_ARGS[@]}")
  [[ $DRY_RUN == 0 ]] || run+=(--dry-run)
  [[ $LOG_SYSLOG != 1 ]] || run+=(--syslog)
  exec_py_ops backup "${run[@]}"
}

# Run unless sourced (tests source the script to call one function); the if
# form keeps `source` returning 0 under set -e.
if [[ ${BASH_SOURCE[0]} == "$0" ]]; then main "$@"; fi
