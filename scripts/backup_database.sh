#!/usr/bin/env bash
# Summary: take a verified, compressed online backup of an SQLite database
#
# Usage: backup_database.sh [--db PATH] [--dir DIR] [--retention-days N] [--keep N]
#                           [--compress zstd|gzip|none] [--dry-run] [--quiet]
#                           [--lock-timeout N] [--metrics-dir DIR] [--config FILE]
#        backup_database.sh --help
#
# Takes a consistent snapshot of the live database while other processes keep
# writing (SQLite's online backup API in one step), checks it with the full
# PRAGMA integrity_check (exactly "ok"; it runs beside the compression, on the
# second core), counts the rows of every table, compresses it, and publishes
# DIR/<name>_<YYYYmmdd_HHMMSS>.db[.zst|.gz] with a sidecar
# <same>.manifest.json (checksums, sizes, row counts, schema version, the
# integrity_check result recorded against the content's SHA-256, so that a
# restore of these same bytes need not run the check again, and foreign-key
# violations: copied as they are, with a warning, since a restore of them will
# need --force unless FK_ACCEPT lists their tables). Nothing appears under a
# final name unless it is complete, verified and fsynced. Then prunes old
# backups of this database and prints "Backup completed: <path>" as the last
# line on stdout. On a terminal, the long steps (snapshot, compression,
# integrity_check) show their progress on stderr; --quiet silences it.
#
# Retention: only this database's own backup files are ever removed; the
# newest KEEP_MIN verified backups are always kept; a backup is pruned when
# the time in its name is more than RETENTION_DAYS ago; and nothing at all is
# pruned when the newest verified backup is itself older than RETENTION_DAYS.
# With OFFSITE_REMOTES set, a backup not yet verified on every remote (see
# offsite_sync.sh) is kept until it is.
#
#   --db PATH            the database (DB_PATH; default /dashboard/data/dashboard.db)
#   --dir DIR            where backups live, created 0700 if its parent exists (BACKUP_DIR)
#   --retention-days N   prune backups older than N days (RETENTION_DAYS; 30)
#   --keep N             never prune the newest N verified backups (KEEP_MIN; 7)
#   --compress CODEC     zstd, gzip or none (COMPRESS; zstd when installed, else gzip)
#   --dry-run            take no backup and remove nothing: list what pruning
#                        would remove if this run's backup succeeded
#   --lock-timeout N     wait up to N seconds for another run's lock (LOCK_TIMEOUT; 0)
#   --metrics-dir DIR    write sqlite_ops_backup_<name>.prom there (METRICS_DIR)
#   --config FILE        KEY=value settings file (SQLITE_OPS_CONFIG; /etc/sqlite-ops.conf)
#   --quiet              only warnings and errors on stderr (no progress line)
#
# FK_ACCEPT (config or environment): child tables whose orphaned rows the
# application makes by design, comma-separated, each TABLE or TABLE:N (at most
# N rows); their orphans are recorded as accepted, not warned about.
#
# Exit codes:
#   0   backup published (and pruned)
#   1   failed: nothing was published, earlier backups are untouched
#   2   usage error, missing database, not an SQLite database
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
NAME='' # this database's backup name, set by load_settings

parse_args() { parse_options backup_option "$@"; }

# backup_option ARGS...: this script's own options (SOPS_SHIFT: how many used).
backup_option() {
  SOPS_SHIFT=1
  case $1 in
    --retention-days) set_flag RETENTION_DAYS "$@" && SOPS_SHIFT=2 ;;
    --keep) set_flag KEEP_MIN "$@" && SOPS_SHIFT=2 ;;
    --compress) set_flag COMPRESS "$@" && SOPS_SHIFT=2 ;;
    --dry-run) DRY_RUN=1 ;;
    -*) usage_error "unknown option '$1'" ;;
    *) usage_error "unexpected argument '$1' (a path with spaces needs quotes)" ;;
  esac
}

# load_settings: resolve every setting once (flag > env > config > default).
load_settings() {
  config_init
  SRC_DB=$(abs_path "$(cfg DB_PATH /dashboard/data/dashboard.db)")
  DEST_DIR=$(abs_path "$(cfg BACKUP_DIR /dashboard/data/backups)")
  RETENTION=$(cfg RETENTION_DAYS 30)
  KEEP=$(cfg KEEP_MIN 7)
  TIMEOUT=$(cfg LOCK_TIMEOUT 0)
  METRICS=$(cfg METRICS_DIR '')
  COMPRESSION=$(cfg COMPRESS "$(default_compression)")
  FK_ACCEPT=$(cfg FK_ACCEPT '')
  require_uint RETENTION_DAYS "$RETENTION"
  require_uint KEEP_MIN "$KEEP"
  require_uint LOCK_TIMEOUT "$TIMEOUT"
  case $COMPRESSION in
    zstd) require_tool zstd zstd ;;
    gzip) require_tool gzip gzip ;;
    none) ;;
    *) usage_error "COMPRESS must be zstd, gzip or none, not '$COMPRESSION'" ;;
  esac
  db_name NAME "$SRC_DB" || exit
  offsite_settings "$RETENTION" "$KEEP"
}

# ---------------------------------------------------------------------------
# The backup, step by step
# ---------------------------------------------------------------------------

# The <YYYYmmdd_HHMMSS> of a backup name, as a glob: exactly 8 + 6 digits, so
# the sweep for `dashboard` never matches `dashboard_2_...` files.
STAMP_GLOB='[0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9]_[0-9][0-9][0-9][0-9][0-9][0-9]'

# stamp_taken STAMP: true when any backup of this database already uses STAMP.
stamp_taken() {
  local base="$DEST_DIR/${NAME}_$1.db" ext
  for ext in '' .zst .gz; do
    [[ -e $base$ext || -e $base$ext.manifest.json ]] && return 0
  done
  return 1
}

# choose_stamp: set CREATED (epoch) and STAMP, waiting for the next second when
# a backup already has this one (two runs in one second never overwrite).
choose_stamp() {
  local tries=0
  while :; do
    CREATED=$(date -u +%s)
    STAMP=$(date -u -d "@$CREATED" +%Y%m%d_%H%M%S)
    stamp_taken "$STAMP" || return 0
    ((++tries < 30)) || die "$EX_FAIL" "a backup named ${NAME}_$STAMP already exists in $DEST_DIR"
    sleep 0.1
  done
}

# warn_if_shared DIR: backups hold the same data as the database.
warn_if_shared() {
  local mode
  mode=$(stat -c %a -- "$1") || return 0
  ((8#$mode & 8#077)) || return 0
  log_warn "$1 is readable by other users (mode $mode); consider chmod 700"
}

# check_free_space: fail early, with a clear message, when the snapshot cannot fit.
check_free_space() {
  local need=0 wal=0 have
  need=$(file_size "$SRC_DB") ||
    die "$EX_USAGE" "database not found: $SRC_DB (it disappeared during the run); nothing was changed"
  wal=$(file_size "$SRC_DB-wal") || wal=0
  need=$((need + wal))
  have=$(free_bytes "$DEST_DIR") || return 0
  [[ -z $have || $have -ge $need ]] ||
    die "$EX_FAIL" "not enough free space in $DEST_DIR: need about $(human_bytes "$need"), have $(human_bytes "$have"); nothing was changed"
}

# take_snapshot DEST: the consistent online copy; prints the source's facts (JSON).
# A copy killed by a signal (OOM killer, SIGBUS on an I/O error) is exit 1.
take_snapshot() {
  local rc=0
  py_ops snapshot copy --busy-timeout-ms="$SQLITE_BUSY_TIMEOUT_MS" "${QUIET_ARGS[@]}" -- "$SRC_DB" "$1" || rc=$?
  ((rc <= 128)) || die "$EX_FAIL" "the snapshot process was killed by signal $((rc - 128)); nothing was published"
  return "$rc"
}

# pack_snapshot SNAPSHOT OUT: compress and hash in one pass while the full
# PRAGMA integrity_check runs on the snapshot; prints JSON (with the check's
# record). Exit 4 unless the check said exactly "ok".
pack_snapshot() {
  py_ops snapshot pack --compression="$COMPRESSION" --source="$SRC_DB" "${QUIET_ARGS[@]}" -- "$1" "$2"
}

# write_manifest SNAPSHOT FILE_NAME OUT FACTS...: the manifest JSON into OUT.
write_manifest() {
  local snapshot=$1 file=$2 out=$3 fact
  shift 3
  local -a facts=()
  for fact in "$@"; do facts+=(--facts="$fact"); done
  # (The name is the source's: snapshot derives it with the catalog's one rule.)
  py_ops snapshot manifest --source="$SRC_DB" --created="$CREATED" --file="$file" \
    --compression="$COMPRESSION" --duration="$(elapsed_since "$START")" \
    --fk-accept="$FK_ACCEPT" --host="$(cfg OFFSITE_HOST '')" "${facts[@]}" -- "$snapshot" >"$out"
}

# warn_foreign_keys MANIFEST: foreign-key violations are copied as they are
# (a backup never edits data); say so now, not first during an incident.
warn_foreign_keys() {
  local count accepted rows=rows
  count=$(manifest_fk_violations "$1")
  accepted=$(manifest_number "$1" foreign_key_violations_accepted)
  if [[ $count != null && $count != 0 && $count == "${accepted:-0}" ]]; then
    log_info "$SRC_DB has $count orphaned rows in tables FK_ACCEPT lists; recorded as accepted"
    return 0
  fi
  case $count in
    0) return 0 ;;
    unreadable) die "$EX_FAIL" "the manifest just written cannot be read back ($1); nothing was published" ;;
    null) log_warn "PRAGMA foreign_key_check cannot run on $SRC_DB (a foreign key names parent columns without a unique index; see foreign_key_check_error in the manifest); restoring this backup will need --force" ;;
    *)
      [[ $count != 1 ]] || rows=row
      log_warn "$SRC_DB fails PRAGMA foreign_key_check ($count $rows with a missing parent row); the backup keeps them as they are, so restoring it will need --force (or, for orphans the application makes by design, FK_ACCEPT listing their tables); maintain_database.sh check lists them"
      ;;
  esac
}

# backup: snapshot, verify, pack, manifest, publish. Sets PUBLISHED.
backup() {
  local ext='' snapshot packed manifest final source_facts pack_facts
  case $COMPRESSION in zstd) ext=.zst ;; gzip) ext=.gz ;; esac
  choose_stamp
  final="$DEST_DIR/${NAME}_$STAMP.db$ext"

  if [[ $COMPRESSION == none ]]; then
    temp_beside snapshot "$final"
    packed=$snapshot
  else
    temp_beside snapshot "$DEST_DIR/${NAME}_$STAMP.db"
    temp_beside packed "$final"
  fi
  temp_beside manifest "$final.manifest.json"

  log_info "snapshot of $SRC_DB"
  source_facts=$(take_snapshot "$snapshot") || exit
  log_info "snapshot taken ($(human_bytes "$(file_size "$snapshot")")); PRAGMA integrity_check and packing with $COMPRESSION"
  pack_facts=$(pack_snapshot "$snapshot" "$packed") || exit
  write_manifest "$snapshot" "${final##*/}" "$manifest" "$source_facts" "$pack_facts" || exit
  warn_foreign_keys "$manifest"
  [[ $snapshot == "$packed" ]] || rm -f -- "$snapshot"

  publish_atomic "$packed" "$final" no-clobber
  publish_atomic "$manifest" "$final.manifest.json"
  PUBLISHED=$final
  log_info "published $final ($(human_bytes "$(file_size "$final")")) in $(elapsed_since "$START") s"
}

# prune [--dry-run]: apply the retention rules to this database's backups;
# prints one line per file pruned (or, with --dry-run, that would be). With
# OFFSITE_REMOTES set, a backup not yet verified on every remote is kept.
prune() {
  local -a offsite=()
  [[ ${#OFFSITE_LIST[@]} -eq 0 ]] || offsite=("${OFFSITE_ARGS[@]}"
    --offsite-retention-days="$OFFSITE_RETENTION" --offsite-keep="$OFFSITE_KEEP")
  py_ops catalog prune --retention-days="$RETENTION" --keep="$KEEP" --source="$SRC_DB" \
    "${offsite[@]}" "$@" -- "$DEST_DIR"
}

# prune_and_log: prune after a published backup; results go to the log.
prune_and_log() {
  local lines line
  if ! lines=$(prune); then
    log_warn "pruning failed; the backup itself was published"
    return 0
  fi
  while IFS= read -r line; do
    log_info "$line"
  done <<<"$lines"
}

# ---------------------------------------------------------------------------
# Metrics (node_exporter textfile collector), written on success and failure
# ---------------------------------------------------------------------------

METRICS_ARMED=0

# write_metrics EXIT_CODE: called on exit once the settings are known.
write_metrics() {
  local rc=$1 label key value
  [[ $METRICS_ARMED == 1 && -n $METRICS && $rc != "$EX_BUSY" ]] || return 0
  local -A stat=([count]=0 [oldest_age_seconds]=0 [newest_verified_created]=0 [newest_verified_size_bytes]=0)
  if [[ -d $DEST_DIR ]]; then
    while read -r key value; do
      stat[$key]=$value
    done < <(py_ops catalog stats --source="$SRC_DB" -- "$DEST_DIR" 2>/dev/null || true)
  fi
  label="db=\"$(prom_label_escape "$NAME")\""
  {
    prom_gauge sqlite_backup_last_success_timestamp_seconds "$label" "${stat[newest_verified_created]}" \
      "Time (from its name) of the newest verified backup."
    prom_gauge sqlite_backup_last_duration_seconds "$label" "$(elapsed_since "$START")" \
      "Duration of the last backup run, successful or not."
    prom_gauge sqlite_backup_last_size_bytes "$label" "${stat[newest_verified_size_bytes]}" \
      "Size of the newest verified backup file."
    prom_gauge sqlite_backup_count "$label" "${stat[count]}" "Backup files of this database in the backup directory."
    prom_gauge sqlite_backup_oldest_age_seconds "$label" "${stat[oldest_age_seconds]}" "Age of the oldest backup file."
    prom_gauge sqlite_backup_last_run_success "$label" "$([[ $rc == 0 ]] && echo 1 || echo 0)" \
      "1 when the last backup run succeeded, else 0."
  } | prom_write "$METRICS" "$(prom_file backup "$NAME")"
}

# ---------------------------------------------------------------------------

main() {
  START=$(now_epoch)
  parse_args "$@"
  load_settings
  install_traps
  if [[ $DRY_RUN == 1 ]]; then
    require_database "$SRC_DB"
    prune --dry-run
    return 0
  fi
  METRICS_ARMED=1
  on_exit write_metrics
  require_database "$SRC_DB"
  ensure_private_dir "$DEST_DIR"
  warn_if_shared "$DEST_DIR"
  lock_acquire "$SRC_DB" "$TIMEOUT" backup
  sweep_temps_matching "$DEST_DIR" ".$(glob_escape "$NAME")_$STAMP_GLOB.db*.tmp.*"
  check_free_space
  backup
  prune_and_log
  printf 'Backup completed: %s\n' "$PUBLISHED"
}

# Run unless sourced (tests source the script to call one function); the if
# form keeps `source` returning 0 under set -e.
if [[ ${BASH_SOURCE[0]} == "$0" ]]; then main "$@"; fi
