#!/usr/bin/env bash
# Summary: verify a backup, then restore it without losing anything
#
# Usage: restore_database.sh --list [--json]
#        restore_database.sh --verify [--force] BACKUP|latest
#        restore_database.sh [--yes] [--force] [--to PATH] BACKUP|latest
#        restore_database.sh --drill [--force]
#        restore_database.sh --from REMOTE [--host H] (--list|--verify|--drill|restore ...)
#        restore_database.sh --help
#
# BACKUP is a path, or a file name in BACKUP_DIR (or in BACKUP_DIR/pre-restore);
# `latest` is the newest verified backup of DB_PATH's name in BACKUP_DIR, by
# the time its manifest records (never by its name; one dated in the future
# is never `latest`).
#
# A restore, step by step (it stops at the first problem, saying what changed):
#   1. verify: decompress once into a work file beside the database, hashing
#      both streams: the file's and the content's SHA-256 must be the
#      manifest's. Integrity: the manifest's integrity_check record of these
#      same bytes (made when the backup was taken, or by the drill after a
#      backup taken with INTEGRITY_CHECK=drill) is trusted, and it says
#      "integrity: recorded at backup, same bytes" (or "at drill"); without
#      one (an older backup, one made by an older SQLite, a drill-mode backup
#      not yet drilled) PRAGMA integrity_check runs now and must say exactly
#      "ok" ("integrity: checked now"); a restore or --verify never writes the
#      manifest. Then no
#      foreign-key violations but those FK_ACCEPT accepts, and row counts
#      equal to the manifest: where the record stands, the manifest's counts
#      (and its count of 0 violations) are these same bytes' and stand, "row
#      counts as recorded (same bytes)", and only the table names are read;
#      else, and always before a restore over the live database, every table
#      is counted. Nothing is touched when this fails (exit 3).
#      A backup whose schema version is newer than
#      the newest migration in MIGRATIONS_DIR, or one taken from another
#      database (a mistyped --db?), is refused (exit 2) unless --force.
#   2. show the backup's time and row counts next to the current database's,
#      with warnings (`latest` far smaller than the backup before it; a backup
#      older than a migration still in MIGRATIONS_DIR), and ask: type exactly
#      yes (on a terminal, unless --yes; with no terminal and no --yes it
#      refuses, exit 2). No lock is held while it asks; after yes it takes the
#      lock and stops (exit 1, nothing changed) if the database file or
#      `latest` changed meanwhile.
#   3. safety backup of the current database into BACKUP_DIR/pre-restore/ (the
#      backup library, under this run's lock; its pages get quick_check, and
#      it records no integrity_check, so restoring it later runs the check
#      then; when the database is too damaged for a backup, a raw copy of its
#      files into pre-restore/<name>_<time>.raw/); of one incident (copies
#      less than 24 h apart) only the first and newest two are kept.
#   4. replace: while any process has the database open, the verified work
#      file is copied INTO it with SQLite's backup API, so those processes see
#      the restored data on their next read and no old -wal/-journal is ever
#      applied. When nothing has it open (the application stopped), or the
#      database is missing or cannot be opened, the work file is renamed into
#      place after moving stale -wal/-shm/-journal files aside (its data is
#      written once, not twice through the WAL); never while a process has it
#      open (a missing or unopenable one: exit 75). WAL stays WAL. A new or
#      empty file gets the manifest's journal mode, owner, group and mode.
#   5. check exactly what was written (quick_check, row counts, in the same
#      connection; a commit by the application right after is not damage) and
#      print a receipt with the command that undoes the restore. A file
#      renamed into place (--to, --drill, a missing database) is checked
#      before the rename: proven by hash, it must still be the very file
#      hashed (else exit 1) with the verified size, page count and tables
#      (else exit 4); without a manifest, quick_check and row counts.
#   Interrupted (Ctrl-C, SIGTERM, SIGHUP), it says the state it left (exit
#   128+signal: 130, 143, 129); a
#   signal once the restored database passed its check waits for the receipt.
#   The options and settings are read here; the whole action then runs as one
#   Python process (lib/sqlite_ops/restore_flow.py), its state in memory.
#
#   --list             backups newest first (time, age, size, schema version,
#                      tables, rows, whether manifest and checksum check out,
#                      odd names and times flagged), then the pre-restore
#                      safety backups
#   --json             with --list: the same as JSON
#   --verify           verify only; changes nothing
#   --yes              do not ask; with --to, allows replacing an existing PATH
#   --force            accept a backup without a manifest (internal checks
#                      only), one with a schema newer than the migrations, one
#                      with foreign-key violations (orphaned rows), or one
#                      taken from another database; never a damaged one
#   --to PATH          restore into PATH (drills, inspecting an old state); the
#                      database itself is not touched; no safety backup
#   --drill            restore `latest` into a temp file, check it, remove it;
#                      with METRICS_DIR, record the time it took. When it ran
#                      the full integrity_check itself (INTEGRITY_CHECK=drill
#                      backups) and it passed, it records it in that local
#                      backup's manifest (against the same SHA-256) with the
#                      foreign-key count the backup left to it (also when the
#                      drill fails on orphans), under the database's lock;
#                      lock busy: a warning, no record
#   --from REMOTE      use the copies offsite_sync.sh put on an rclone remote
#                      (REMOTE/<host>/<name>/): BACKUP is a file name as
#                      --list --from shows it, `latest` the newest copy with its
#                      manifest; it is downloaded into BACKUP_DIR/.offsite-cache
#                      (TMPDIR when BACKUP_DIR does not exist), then verified and
#                      restored exactly like a local backup (the messages name
#                      the remote copy); the download is removed
#   --host H           with --from: another machine's copies (OFFSITE_HOST; the
#                      lost-machine case: restore on a new host)
#   --db PATH          the database (DB_PATH; default /dashboard/data/dashboard.db)
#   --dir DIR          where backups live (BACKUP_DIR; default /dashboard/data/backups)
#   --migrations DIR   migration files (MIGRATIONS_DIR; default <repo>/migrations)
#   --metrics-dir DIR  write sqlite_ops_restore_<name>.prom there (METRICS_DIR)
#   --lock-timeout N   wait up to N seconds for another run's lock (LOCK_TIMEOUT; 0)
#   --config FILE      KEY=value settings (SQLITE_OPS_CONFIG; /etc/sqlite-ops.conf)
#   --quiet            only warnings, errors and results (no progress line)
#
# On a terminal, decompression, a check run now and the write into the live
# database show a progress line on stderr. FK_ACCEPT (config or environment):
# child tables whose orphaned rows the application makes by design, TABLE or
# TABLE:N, comma-separated. --verify and --drill decompress into TMPDIR
# (default /tmp); --verify only hashes the content, writing no file, where
# the manifest's records stand for the bytes it names. The incident runbook
# is in docs/operations/database-management.md.
#
# Exit codes:
#   0   done
#   1   failed; the message says what changed (normally nothing)
#   2   usage error; backup or directory not found; no terminal and no --yes;
#       the database (or --to PATH) is not a regular file; a planted lock file;
#       backup schema newer than the migrations (--force to override); with
#       --from: rclone missing, an unknown remote, refused credentials, no
#       complete copy there
#   3   the backup failed verification (corrupt, truncated, tampered with, or
#       no manifest): nothing was changed
#   4   the restored database failed its check (the safety backup is kept)
#   130 interrupted (143 for SIGTERM, 129 for SIGHUP): the message says what
#       state the database was left in
#   75  busy: another run holds the lock, or processes hold the database so it
#       cannot be replaced safely (they are named); with --from, the remote
#       cannot be reached now (try again later); nothing was changed

set -euo pipefail

PROG=restore_database.sh
SELF=$(readlink -f -- "${BASH_SOURCE[0]}")
# shellcheck source=lib/common.sh
source "$(dirname -- "$SELF")/../lib/common.sh"

# ---------------------------------------------------------------------------
# Settings
# ---------------------------------------------------------------------------

ACTION=restore YES=0 FORCE=0 JSON=0 TO='' SPEC='' FROM=''

# set_action NAME: --list, --verify and --drill exclude each other.
set_action() {
  [[ $ACTION == restore || $ACTION == "$1" ]] || usage_error "--$ACTION and --$1 do not go together"
  ACTION=$1
}

parse_args() {
  POSITIONAL=()
  parse_options restore_option "$@"
  [[ ${#POSITIONAL[@]} -le 1 ]] || usage_error "one backup at a time, got: ${POSITIONAL[*]}"
  SPEC=${POSITIONAL[0]:-}
  check_args
}

# restore_option ARGS...: this script's own options (SOPS_SHIFT: how many used).
restore_option() {
  SOPS_SHIFT=1
  case $1 in
    --list) set_action list ;;
    --verify) set_action verify ;;
    --drill) set_action drill ;;
    --json) JSON=1 ;;
    --yes | -y) YES=1 ;;
    --force) FORCE=1 ;;
    --to) set_flag TO "$@" && TO=${SOPS_FLAGS[TO]} && SOPS_SHIFT=2 ;;
    --from) set_flag FROM "$@" && FROM=${SOPS_FLAGS[FROM]} && SOPS_SHIFT=2 ;;
    --host) set_flag OFFSITE_HOST "$@" && SOPS_SHIFT=2 ;;
    --) POSITIONAL+=("${@:2}") && SOPS_SHIFT=$# ;;
    -*) usage_error "unknown option '$1'" ;;
    *) POSITIONAL+=("$1") ;;
  esac
}

# check_args: the combinations the usage allows.
check_args() {
  [[ $JSON == 0 || $ACTION == list ]] || usage_error "--json goes with --list"
  [[ -z $TO || $ACTION == restore ]] || usage_error "--to goes with a restore, not --$ACTION"
  [[ -n $FROM || -z ${SOPS_FLAGS[OFFSITE_HOST]:-} ]] || usage_error "--host goes with --from REMOTE"
  case $ACTION in
    list | drill) [[ -z $SPEC ]] || usage_error "--$ACTION takes no backup argument" ;;
    *) [[ -n $SPEC ]] || usage_error "name a backup (a file, or 'latest'); see --list" ;;
  esac
}

# load_settings: resolve every setting once (flag > env > config > default).
load_settings() {
  config_init
  DB=$(abs_path "$(cfg DB_PATH)")
  BACKUP_ROOT=$(abs_path "$(cfg BACKUP_DIR)")
  MIGRATIONS=$(cfg MIGRATIONS_DIR)
  METRICS=$(cfg METRICS_DIR)
  TIMEOUT=$(cfg LOCK_TIMEOUT)
  FK_ACCEPT=$(cfg FK_ACCEPT)
  COMPRESSION=$(cfg COMPRESS "$(default_compression)") # the safety backup's
  HOST=$(cfg OFFSITE_HOST)
  require_uint LOCK_TIMEOUT "$TIMEOUT"
  require_tool python3 python3
  require_regular_or_missing "$DB"
  [[ -z $FROM ]] || { offsite_settings 0 0 "$FROM" && require_rclone; }
}

# warn_untrusted_backups: backups in a directory others may write to (or
# another user owns) could have been planted or replaced, manifest and all.
# Said, not refused: in an incident they may be all there is.
warn_untrusted_backups() {
  local problem
  [[ -d $BACKUP_ROOT ]] || return 0
  problem=$(dir_problem "$BACKUP_ROOT")
  [[ -z $problem ]] ||
    log_warn "$BACKUP_ROOT is $problem: its backups could have been planted or replaced; fix it (chmod go-w, chown) once this is over"
}

# ---------------------------------------------------------------------------
# The action, handed whole to Python
# ---------------------------------------------------------------------------

# check_to: --to PATH names another file than the database, not a FIFO or a
# directory, and an existing one only with --yes. Sets TO to its absolute path.
check_to() {
  [[ -n $TO ]] || return 0
  TO=$(abs_path "$TO")
  # Any spelling of the same file (./db, a//db, a symlinked directory) counts.
  [[ $TO != "$DB" && ! $TO -ef $DB && $(realpath -m -- "$TO") != "$(realpath -m -- "$DB")" ]] ||
    usage_error "--to names the database itself; leave --to out to restore it"
  require_regular_or_missing "$TO"
  [[ ! -e $TO || $YES == 1 ]] ||
    usage_error "refusing to overwrite existing $TO; pass --yes to replace it"
}

# run_action: the whole action, one Python process (sqlite_ops.restore_flow)
# with every setting as an argument; it replaces this shell, so its exit code
# and its handling of Ctrl-C and SIGTERM are the script's.
run_action() {
  local action=$ACTION configured=''
  local -a args=()
  [[ -z $TO ]] || action=to
  [[ -n ${SOPS_FLAGS[DB_PATH]+x} ]] && configured=${DB_PATH:-${SOPS_FILE[DB_PATH]:-}}
  [[ $YES == 0 ]] || args+=(--yes)
  [[ $FORCE == 0 ]] || args+=(--force)
  [[ $JSON == 0 ]] || args+=(--json)
  [[ $QUIET == 0 ]] || args+=(--quiet)
  [[ $LOG_SYSLOG != 1 ]] || args+=(--syslog)
  exec_py_ops restore_flow "$action" --db="$DB" --dir="$BACKUP_ROOT" \
    --migrations="$MIGRATIONS" --metrics-dir="$METRICS" --lock-timeout="$TIMEOUT" \
    --fk-accept="$FK_ACCEPT" --busy-timeout-ms="$SQLITE_BUSY_TIMEOUT_MS" \
    --compression="$COMPRESSION" --host="$HOST" --from="$FROM" --to="$TO" \
    --configured-db="$configured" --script="$SELF" --started="$STARTED" "${args[@]}" -- "$SPEC"
}

main() {
  interrupt_before_start "nothing was changed"
  STARTED=$(now_epoch) # the time taken (receipt, drill metrics) counts from here
  parse_args "$@"
  load_settings
  check_to
  warn_untrusted_backups
  run_action
}

# Run unless sourced (tests source the script to call one function); the if
# form keeps `source` returning 0 under set -e.
if [[ ${BASH_SOURCE[0]} == "$0" ]]; then main "$@"; fi
