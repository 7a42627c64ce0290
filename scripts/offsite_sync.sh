#!/usr/bin/env bash
# Summary: copy verified backups offsite with rclone, check every copy, prune old copies
#
# Usage: offsite_sync.sh [--db PATH] [--dir DIR] [--remote REMOTE]... [--dry-run]
#                        [--lock-timeout N] [--metrics-dir DIR] [--config FILE] [--quiet]
#        offsite_sync.sh --help
#
# Run it after each backup (cron: backup_database.sh && offsite_sync.sh). For
# each remote, newest first so the freshest data leaves soonest, every verified
# local backup of this database that the remote does not yet hold is copied to
# REMOTE/<host>/<name>/: the data file, then a check of the copy (the strongest
# hash the backend computes against the local file's, else a download of the
# copy against the manifest's SHA-256; the output says which), then the
# manifest, last: a copy without its manifest never counts and is never
# restored. What each remote holds is recorded in DIR/.offsite/<name>.json
# after each verified copy; the local prune (backup_database.sh) never removes
# a backup still pending upload. Idempotent and resumable: after an outage the
# next run catches up everything missed, re-sending half-uploaded files.
# When the drill (INTEGRITY_CHECK=drill) has added its integrity_check record
# and foreign-key count to a local manifest since the copy went offsite, the
# manifest alone is sent again and read back ("Updated manifest: ..."); any
# other change to an uploaded manifest is a warning, never sent.
#
# Remote retention follows the local rules with OFFSITE_RETENTION_DAYS and
# OFFSITE_KEEP_MIN: never the newest OFFSITE_KEEP_MIN verified copies, nothing
# when the newest copy is older than the retention, and only files whose
# manifest names this host, this database's name and its path. Backups the
# remote retention would prune at once are not sent.
#
# rclone (Debian package rclone) does the transfers with the user's own
# configuration (RCLONE_CONFIG, else rclone's default file): no credential is
# ever put on a command line or in a log, manifest or metric. One rclone
# serves the whole run (rclone rcd on 127.0.0.1, random credentials passed in
# its environment), so the remote is connected to once per sync, and it is
# killed with the sync. A crypt remote over the real one encrypts content and
# file names.
#
#   --db PATH            the database (DB_PATH; default /dashboard/data/dashboard.db)
#   --dir DIR            where its backups live (BACKUP_DIR; default /dashboard/data/backups)
#   --remote REMOTE      an rclone remote path, e.g. nas:sqlite-ops (repeatable;
#                        replaces OFFSITE_REMOTES, a space-separated list)
#   --dry-run            list what would be uploaded and pruned; change nothing
#   --lock-timeout N     wait up to N seconds for another sync (LOCK_TIMEOUT; 0)
#   --metrics-dir DIR    write sqlite_ops_offsite_<name>.prom there (METRICS_DIR)
#   --config FILE        KEY=value settings (SQLITE_OPS_CONFIG; /etc/sqlite-ops.conf)
#   --quiet              only warnings, errors and results (no progress line on a
#                        terminal)
#
# Settings: OFFSITE_REMOTES, OFFSITE_RETENTION_DAYS and OFFSITE_KEEP_MIN
# (default RETENTION_DAYS and KEEP_MIN), OFFSITE_HOST (the <host> directory;
# default the short host name), RCLONE_CONFIG (passed to rclone).
# The sync takes its own lock (DIR/.offsite/<name>.sqlite-ops.lock), not the
# database's: a long upload never blocks a backup, and two syncs never overlap.
#
# Exit codes:
#   0   every remote holds every wanted backup, verified
#   1   failed (a remote is full, a copy did not verify); nothing local changed
#   2   usage or configuration error: no remote, unknown remote, refused
#       credentials, a changed server host key, rclone not installed
#   75  a remote cannot be reached now, or another sync holds the lock; the
#       next run catches up; local backups are never touched

set -euo pipefail

PROG=offsite_sync.sh
SELF=$(readlink -f -- "${BASH_SOURCE[0]}")
# shellcheck source=lib/common.sh
source "$(dirname -- "$SELF")/../lib/common.sh"

# ---------------------------------------------------------------------------
# Settings
# ---------------------------------------------------------------------------

DRY_RUN=0
REMOTES=()
NAME='' # this database's backup name, set by load_settings

parse_args() { parse_options sync_option "$@"; }

# sync_option ARGS...: this script's own options (SOPS_SHIFT: how many used).
sync_option() {
  SOPS_SHIFT=1
  case $1 in
    --remote) [[ $# -ge 2 && -n $2 ]] || usage_error "--remote needs a value"
      REMOTES+=("$2") && SOPS_SHIFT=2 ;;
    --dry-run) DRY_RUN=1 ;;
    -*) usage_error "unknown option '$1'" ;;
    *) usage_error "unexpected argument '$1'" ;;
  esac
}

# load_settings: resolve every setting once (flag > env > config > default).
load_settings() {
  config_init
  DB=$(abs_path "$(cfg DB_PATH)")
  BACKUP_ROOT=$(abs_path "$(cfg BACKUP_DIR)")
  METRICS=$(cfg METRICS_DIR)
  TIMEOUT=$(cfg LOCK_TIMEOUT)
  require_uint LOCK_TIMEOUT "$TIMEOUT"
  local retention keep
  retention=$(cfg RETENTION_DAYS)
  keep=$(cfg KEEP_MIN)
  require_uint RETENTION_DAYS "$retention"
  require_uint KEEP_MIN "$keep"
  offsite_settings "$retention" "$keep" ${REMOTES[@]+"${REMOTES[@]}"}
  [[ ${#OFFSITE_LIST[@]} -gt 0 ]] ||
    usage_error "no remote: set OFFSITE_REMOTES (e.g. OFFSITE_REMOTES=nas:sqlite-ops) or pass --remote"
  require_rclone
  db_name NAME "$DB" || exit
}

# ---------------------------------------------------------------------------
# The sync
# ---------------------------------------------------------------------------

# take_lock: the offsite lock beside the record of what each remote holds.
take_lock() {
  [[ -d $BACKUP_ROOT ]] || die "$EX_USAGE" "backup directory not found: $BACKUP_ROOT (check --dir or BACKUP_DIR)"
  ensure_private_dir "$BACKUP_ROOT/.offsite"
  lock_acquire "$BACKUP_ROOT/.offsite/$NAME" "$TIMEOUT" offsite-sync
}

# sync_remotes: upload, check, record, prune (lib/sqlite_ops/offsite.py);
# results on stdout, this run's gauges into WORK_DIR/offsite.prom.
sync_remotes() {
  local -a dry=()
  [[ $DRY_RUN == 0 ]] || dry=(--dry-run)
  log_info "syncing backups of '$NAME' to ${#OFFSITE_LIST[@]} remote(s)"
  SQLITE_OPS_PROG=$PROG py_ops offsite sync --db="$DB" --dir="$BACKUP_ROOT" \
    "${OFFSITE_ARGS[@]}" --retention-days="$OFFSITE_RETENTION" --keep="$OFFSITE_KEEP" \
    --metrics-out="$WORK_DIR/offsite.prom" "${dry[@]}" "${QUIET_ARGS[@]}"
}

# write_metrics: merged into METRICS_DIR/sqlite_ops_offsite_<name>.prom, so a
# remote that failed this time keeps its last success time.
write_metrics() {
  [[ -n $METRICS && -s $WORK_DIR/offsite.prom ]] || return 0
  prom_merge "$METRICS" "$(prom_file offsite "$NAME")" <"$WORK_DIR/offsite.prom"
}

main() {
  parse_args "$@"
  load_settings
  install_traps
  take_lock
  temp_dir_in WORK_DIR "$BACKUP_ROOT/.offsite"
  local rc=0
  sync_remotes || rc=$?
  write_metrics
  return "$rc"
}

# Run unless sourced (tests source the script to call one function); the if
# form keeps `source` returning 0 under set -e.
if [[ ${BASH_SOURCE[0]} == "$0" ]]; then main "$@"; fi
