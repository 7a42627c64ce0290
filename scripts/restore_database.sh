#!/usr/bin/env bash
# Summary: verify a backup, then restore it without losing anything
#
# Usage: restore_database.sh --list [--json]
#        restore_database.sh --verify [--force] BACKUP|latest
#        restore_database.sh [--yes] [--force] [--to PATH] BACKUP|latest
#        restore_database.sh --drill
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
#      same bytes (made when the backup was taken) is trusted, and it says
#      "integrity: recorded at backup, same bytes"; without one (an older
#      backup, or one made by an older SQLite) PRAGMA integrity_check runs now
#      and must say exactly "ok" ("integrity: checked now"). Then no
#      foreign-key violations but those FK_ACCEPT accepts, and row counts
#      equal to the manifest. Nothing is touched when this fails (exit 3).
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
#   3. safety backup of the current database into BACKUP_DIR/pre-restore/ (with
#      backup_database.sh; when the database is too damaged for that, a raw
#      copy of its files into pre-restore/<name>_<time>.raw/); of one incident
#      (copies less than 24 h apart) only the first and newest two are kept.
#   4. replace: the verified work file is copied INTO the live database with
#      SQLite's backup API, so processes that have it open see the restored
#      data on their next read and no old -wal/-journal is ever applied; WAL
#      stays WAL. A missing database (or one SQLite cannot open) is replaced by
#      renaming the work file into place after moving stale -wal/-shm/-journal
#      files aside, and only when no process has it open (else exit 75). A new
#      or empty file gets the manifest's journal mode, owner, group and mode.
#   5. check exactly what was written (quick_check, row counts, in the same
#      connection; a commit by the application right after is not damage) and
#      print a receipt with the command that undoes the restore.
#   Interrupted (Ctrl-C, SIGTERM), it says the state it left (exit 130).
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
#                      with METRICS_DIR, record the time it took
#   --from REMOTE      use the copies offsite_sync.sh put on an rclone remote
#                      (REMOTE/<host>/<name>/): BACKUP is a file name as
#                      --list --from shows it, `latest` the newest copy with its
#                      manifest; it is downloaded into BACKUP_DIR/.offsite-cache
#                      (TMPDIR when BACKUP_DIR does not exist), then verified and
#                      restored exactly like a local backup; the download is removed
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
# (default /tmp). The incident runbook is in docs/operations/database-management.md.
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
#   130 interrupted: the message says what state the database was left in
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

ACTION=restore YES=0 FORCE=0 JSON=0 TO='' SPEC='' NAME='' FROM=''

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
  DB=$(abs_path "$(cfg DB_PATH /dashboard/data/dashboard.db)")
  BACKUP_ROOT=$(abs_path "$(cfg BACKUP_DIR /dashboard/data/backups)")
  PRE_DIR=$BACKUP_ROOT/pre-restore
  MIGRATIONS=$(cfg MIGRATIONS_DIR "$SQLITE_OPS_ROOT/migrations")
  METRICS=$(cfg METRICS_DIR '')
  TIMEOUT=$(cfg LOCK_TIMEOUT 0)
  FK_ACCEPT=$(cfg FK_ACCEPT '')
  require_uint LOCK_TIMEOUT "$TIMEOUT"
  require_tool python3 python3
  require_regular_or_missing "$DB"
  db_name NAME "$DB" || exit
  STAMP=$(date -u +%Y%m%d_%H%M%S)
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
# Steps shared by verify, restore and drill
# ---------------------------------------------------------------------------

# resolve_backup: BACKUP becomes the absolute path SPEC names (with --from, of
# the local copy fetch_backup downloads).
resolve_backup() {
  [[ -z $FROM ]] || { fetch_backup && return 0; }
  BACKUP=$(py_ops restore resolve --dir="$BACKUP_ROOT" --db="$DB" -- "$SPEC") || exit
  BACKUP=${BACKUP%/}
}

# fetch_backup: download SPEC and its manifest from the remote into a private
# temp directory (removed on exit); from here on it is a local backup like any.
fetch_backup() {
  local root=${TMPDIR:-/tmp} into
  if [[ -d $BACKUP_ROOT ]]; then
    root=$BACKUP_ROOT/.offsite-cache
    ensure_private_dir "$root"
  fi
  temp_dir_in into "$root"
  BACKUP=$(SQLITE_OPS_PROG=$PROG py_ops offsite fetch --db="$DB" "${OFFSITE_ARGS[@]}" \
    --into="$into" -- "$SPEC") || exit
  BACKUP=${BACKUP%/}
  log_info "fetched ${BACKUP##*/} from $FROM; verifying it like a local backup"
}

# work_dir_beside TARGET: WORK_DIR becomes a private temp directory beside
# TARGET (same file system, so the verified file can be renamed into place),
# after sweeping what a killed run left there. Call with the lock held.
work_dir_beside() {
  local dir
  dir=$(dirname -- "$1")
  require_dir_of "$1"
  sweep_temps_matching "$dir" ".$(glob_escape "$(basename -- "$1")").tmp.*"
  temp_dir_beside WORK_DIR "$1"
  REPORT=$WORK_DIR/report.json
}

# require_dir_of PATH: PATH's directory exists; a missing one is most often a
# typo in --db, so the error names the nearest existing path and DB_PATH's
# configured value (exit 2).
require_dir_of() {
  [[ ! -d $(dirname -- "$1") ]] || return 0
  local configured='' message
  [[ -n ${SOPS_FLAGS[DB_PATH]+x} ]] && configured=${DB_PATH:-${SOPS_FILE[DB_PATH]:-}}
  message=$(py_ops restore missing-dir --configured="$configured" -- "$1") || exit
  die "$EX_USAGE" "$message"
}

# work_dir_in_tmp: WORK_DIR in TMPDIR, for --verify and --drill.
work_dir_in_tmp() {
  temp_dir_in WORK_DIR "${TMPDIR:-/tmp}"
  REPORT=$WORK_DIR/report.json
}

# verify_backup [OPTION...]: decompress BACKUP into the work dir and prove it
# sound; the report it writes is what the later steps restore. Exit 3 if not.
verify_backup() {
  local -a extra=("$@")
  [[ $FORCE == 1 ]] && extra+=(--force)
  [[ $SPEC == latest ]] && extra+=(--latest)
  log_info "verifying $BACKUP"
  py_ops restore verify --work="$WORK_DIR/restore.db" --report="$REPORT" \
    --migrations="$MIGRATIONS" --dir="$BACKUP_ROOT" --db="$DB" --fk-accept="$FK_ACCEPT" \
    "${QUIET_ARGS[@]}" "${extra[@]}" -- "$BACKUP" || exit
}

# replace_database TARGET ASIDE_DIR: put the verified content into TARGET and
# check it: quick_check and row counts of exactly what was written (exit 4 when
# wrong). Interrupted, the Python step finds out and says what state TARGET is
# in (exit 130); a signal only this shell got waits for it to finish.
replace_database() {
  local rc=0
  local -a scratch=()
  [[ $ACTION != drill ]] || scratch=(--scratch)
  log_info "restoring into $1"
  TARGET=$1
  STEP=replace
  py_ops restore apply --report="$REPORT" --target="$1" --aside="$2" \
    --busy-timeout-ms="$SQLITE_BUSY_TIMEOUT_MS" "${QUIET_ARGS[@]}" "${scratch[@]}" || rc=$?
  STEP=finished
  [[ $rc == 0 ]] || exit "$rc"
}

# ---------------------------------------------------------------------------
# Restore: confirmation and the safety backup
# ---------------------------------------------------------------------------

# can_confirm: refuse at once when nobody can be asked and --yes is missing.
can_confirm() {
  [[ $YES == 1 || -t 0 ]] ||
    die "$EX_USAGE" "refusing to restore over $DB without confirmation: no terminal to ask on; check the backup with --verify, then pass --yes"
}

# confirm: on a terminal, the operator types yes (exactly that). No lock is
# held meanwhile, so backups and maintenance keep running while a person reads.
confirm() {
  [[ $YES == 1 ]] && return 0
  local answer='' question
  if db_is_empty; then
    question="Restore this backup into $DB? It is empty (0 bytes), so there is nothing to keep. Type yes to continue: "
  elif [[ -e $DB ]]; then
    question="Replace $DB with this backup? A safety backup of it is taken first (a raw copy of its files if it is too damaged for one). Type yes to continue: "
  else
    question="Restore this backup into $DB? It does not exist, so there is nothing to keep. Type yes to continue: "
  fi
  STEP=prompt
  printf '\n%s' "$question" >&2
  read -r answer || true
  [[ $answer == yes ]] || {
    [[ ${answer,,} != y && ${answer,,} != yes ]] ||
      die "$EX_FAIL" "restore cancelled: type yes in full to restore (you typed '$answer'); nothing was changed"
    die "$EX_FAIL" "restore cancelled; nothing was changed"
  }
  STEP=plan
}

# db_is_empty: DB exists with no content at all (0 bytes, no -wal with frames):
# what `sqlite3 DB` or an application starting leaves after the database was lost.
db_is_empty() {
  [[ -f $DB && ! -s $DB && ! -s $DB-wal ]]
}

# db_identity: "missing", or the device and inode of DB (a file put in its place
# is another file, even with the same rows).
db_identity() {
  if [[ -e $DB ]]; then stat -L -c '%d:%i' -- "$DB"; else echo missing; fi
}

# lock_after_confirm: take the lock again after the question, then make sure
# the plan the operator agreed to still holds: the same database file and the
# same backup. Anything else changed while they read: exit 1, nothing changed.
lock_after_confirm() {
  [[ -z ${SQLITE_OPS_LOCK_HELD:-} ]] || return 0
  local wait=$TIMEOUT planned_backup=$BACKUP
  ((wait >= CONFIRMED_LOCK_WAIT)) || wait=$CONFIRMED_LOCK_WAIT
  flock -n "$(lock_path_for "$DB")" true 2>/dev/null ||
    log_info "another run (a backup, maintenance?) holds the lock on $DB; waiting up to $wait s for it"
  lock_acquire "$DB" "$wait" restore
  [[ $(db_identity) == "$PLANNED_DB" ]] ||
    die "$EX_FAIL" "$DB was created, removed or replaced while the plan was shown; nothing was changed; run the restore again to see a new plan"
  [[ -f $WORK_DIR/restore.db ]] ||
    die "$EX_FAIL" "the verified copy in $WORK_DIR was removed while the plan was shown (another restore?); nothing was changed; run the restore again"
  # (--from: the copy shown was fetched and verified; the remote is not asked again.)
  if [[ $SPEC == latest && -z $FROM ]]; then
    resolve_backup
    [[ $BACKUP == "$planned_backup" ]] ||
      die "$EX_FAIL" "'latest' is now $BACKUP, taken while the plan was shown; nothing was changed; run the restore again, naming the backup you mean ($(basename -- "$planned_backup") is the one you were shown)"
  fi
}

SAFETY='' RAW_COPY=''

# take_safety_backup: a verified backup of the current database into PRE_DIR
# (outside BACKUP_DIR's root, so `latest` never picks it); a raw copy of its
# files when it is too damaged for that. Sets SAFETY or RAW_COPY. The backup's
# own messages are held back and shown where they belong: its "failed
# quick_check" only as the reason for the raw copy.
take_safety_backup() {
  if [[ ! -e $DB ]]; then
    log_warn "$DB does not exist: there is nothing to keep; restoring into a new file"
    return 0
  fi
  if db_is_empty; then
    log_warn "$DB is empty (0 bytes): there is nothing to keep; restoring into it"
    return 0
  fi
  ensure_private_dir "$PRE_DIR"
  local script=${SQLITE_OPS_BACKUP_SCRIPT:-$SQLITE_OPS_ROOT/scripts/backup_database.sh} out rc=0
  local errors=$WORK_DIR/safety-backup.err
  log_info "safety backup of $DB into $PRE_DIR"
  STEP=safety
  # Its metrics go to the work dir: they would describe pre-restore/, not BACKUP_DIR.
  out=$("$script" --db "$DB" --dir "$PRE_DIR" --metrics-dir "$WORK_DIR/metrics" --quiet 2>"$errors") || rc=$?
  STEP=plan
  case $rc in
    0)
      cat -- "$errors" >&2 # its warnings (foreign-key violations, say) still count
      out=${out##*Backup completed: } # the last line; the path may hold newlines
      [[ $out == /* && -f $out ]] || die "$EX_FAIL" "the safety backup did not report its file; nothing was changed"
      SAFETY=$out
      log_info "safety backup: $SAFETY"
      ;;
    # Only damage justifies a raw copy: quick_check failed (4), or the file is
    # no longer recognisable as SQLite (2). Any other refusal (a configuration
    # error, say) stops here: a raw cp of a healthy live database is no backup.
    4) raw_copy "$errors" ;;
    2)
      if is_sqlite_file "$DB"; then
        cat -- "$errors" >&2
        die "$EX_FAIL" "the safety backup of $DB was refused (backup_database.sh exit 2, see above); nothing was changed"
      fi
      raw_copy "$errors"
      ;;
    *)
      cat -- "$errors" >&2
      die "$EX_FAIL" "the safety backup of $DB failed (backup_database.sh exit $rc, see above); nothing was changed"
      ;;
  esac
}

# raw_copy ERRORS: copy the damaged database and its -wal/-journal as they are;
# ERRORS holds the safety backup's complaint, given as the reason.
raw_copy() {
  local file why
  why=$(grep -v ': info: ' -- "$1" | tail -n 1) || true
  why=${why#*backup_database.sh: }
  why=${why%%; nothing was published*} # its advice is for a backup run, not this one
  RAW_COPY=$PRE_DIR/${NAME}_$STAMP.raw
  mkdir -m 700 -- "$RAW_COPY" || die "$EX_FAIL" "cannot create $RAW_COPY; nothing was changed"
  for file in "$DB" "$DB-wal" "$DB-journal"; do
    [[ -e $file ]] || continue
    cp -p -- "$file" "$RAW_COPY/" || die "$EX_FAIL" "cannot copy $file into $RAW_COPY; nothing was changed"
  done
  sync -- "$RAW_COPY" "$RAW_COPY"/* || die "$EX_FAIL" "cannot fsync $RAW_COPY; nothing was changed"
  log_warn "$DB is too damaged for a verified backup (${why:-the backup refused it}): its files were copied as they are into $RAW_COPY"
}

# prune_safety_copies: of one incident's safety copies in pre-restore/, keep the
# first and the newest ones (sqlite_ops.restore.plan_incident_prune).
prune_safety_copies() {
  local removed line
  removed=$(py_ops restore prune-incident --dir="$BACKUP_ROOT" --db="$DB") || {
    log_warn "could not prune older safety copies in $PRE_DIR (see above); continuing"
    return 0
  }
  while IFS= read -r line; do
    [[ -z $line ]] || log_info "pruned ${line%/} (a middle retry of this incident; the first and the newest are kept)"
  done <<<"$removed"
}

# undo_command: the command that restores the safety backup, every path given
# explicitly so it works as printed even in a shell without the config file.
# With --force when the old database had foreign-key violations beyond those
# FK_ACCEPT accepts: the safety backup keeps them, and undoing must not stop on them.
undo_command() {
  local line count
  local -a force=()
  [[ -n $SAFETY ]] || {
    raw_undo_command
    return
  }
  count=$(manifest_fk_violations "$SAFETY.manifest.json")
  [[ $count == 0 || $count == "$(manifest_number "$SAFETY.manifest.json" foreign_key_violations_accepted)" ]] || force=(--force)
  line=$(printf '%q ' "$SELF" --db "$DB" --dir "$BACKUP_ROOT" --yes "${force[@]}" "$SAFETY")
  printf '%s\n' "${line% }"
}

# raw_undo_command: how to put a raw copy back (it cannot pass verification, so
# not by a restore): the restored -wal/-shm/-journal go first, or SQLite would
# apply them to the old file.
raw_undo_command() {
  local file rm_part cp_part
  local -a files=()
  for file in "$RAW_COPY/$(basename -- "$DB")" "$RAW_COPY/$(basename -- "$DB")-wal" \
    "$RAW_COPY/$(basename -- "$DB")-journal"; do
    [[ -e $file ]] && files+=("$file")
  done
  rm_part=$(printf '%q ' rm -f -- "$DB-wal" "$DB-shm" "$DB-journal")
  cp_part=$(printf '%q ' cp -p -- "${files[@]}" "$(dirname -- "$DB")/")
  printf 'stop the application, then: %s&& %s\n' "$rm_part" "${cp_part% }"
}

# print_receipt TARGET: what was restored, the safety backup, how to undo.
print_receipt() {
  local undo=''
  local -a to=()
  [[ -z $SAFETY && -z $RAW_COPY ]] || undo=$(undo_command)
  [[ -z $TO ]] || to=(--to)
  py_ops restore receipt --report="$REPORT" --target="$1" --safety="$SAFETY" \
    --raw-copy="$RAW_COPY" --undo="$undo" --seconds="$(elapsed_since "$START")" \
    --migrations="$MIGRATIONS" "${to[@]}"
}

# keep_safety_note EXIT_CODE: after a failure, say where the safety backup is.
keep_safety_note() {
  [[ $1 != 0 ]] || return 0
  [[ -z $SAFETY ]] || log_warn "the safety backup taken before this attempt is kept: $SAFETY (restore it with: $(undo_command))"
  [[ -z $RAW_COPY ]] || log_warn "the raw copy of the old database is kept in $RAW_COPY (to put it back: $(undo_command))"
}

# ---------------------------------------------------------------------------
# Metrics (node_exporter textfile collector)
# ---------------------------------------------------------------------------

# The restore's gauges, name then help, in file order.
RESTORE_METRICS=(
  sqlite_restore_last_success_timestamp_seconds "Time of the last successful restore of this database."
  sqlite_restore_last_duration_seconds "Duration of the last successful restore (verify, safety backup, replace, check)."
  sqlite_restore_drill_last_success_timestamp_seconds "Time of the last successful restore drill."
  sqlite_restore_drill_duration_seconds "Recovery time measured by the last successful drill (verify, restore, check)."
  sqlite_restore_drill_last_run_success "1 when the last restore drill succeeded, else 0."
)

# write_metrics METRIC=VALUE...: set these in METRICS_DIR/sqlite_ops_restore_<name>.prom;
# the others keep their values from earlier runs (prom_merge).
write_metrics() {
  [[ -n $METRICS ]] || return 0
  local item name i label
  local -A value=()
  for item in "$@"; do value[${item%%=*}]=${item#*=}; done
  label="db=\"$(prom_label_escape "$NAME")\""
  [[ -z $FROM ]] || label+=",remote=\"$(prom_label_escape "$FROM")\""
  for ((i = 0; i < ${#RESTORE_METRICS[@]}; i += 2)); do
    name=${RESTORE_METRICS[i]}
    prom_family "$name" "${RESTORE_METRICS[i + 1]}"
    [[ -z ${value[$name]+x} ]] || printf '%s{%s} %s\n' "$name" "$label" "${value[$name]}"
  done | prom_merge "$METRICS" "$(prom_file restore "$NAME")"
}

# drill_metrics EXIT_CODE: on exit of --drill, success or not.
drill_metrics() {
  if [[ $1 == 0 ]]; then
    write_metrics "sqlite_restore_drill_last_success_timestamp_seconds=$(date +%s)" \
      "sqlite_restore_drill_duration_seconds=$(elapsed_since "$START")" \
      sqlite_restore_drill_last_run_success=1
  else
    write_metrics sqlite_restore_drill_last_run_success=0
  fi
}

# ---------------------------------------------------------------------------
# The actions
# ---------------------------------------------------------------------------

action_list() {
  local -a json=()
  [[ $JSON == 0 ]] || json=(--json)
  if [[ -n $FROM ]]; then
    SQLITE_OPS_PROG=$PROG py_ops offsite list --db="$DB" "${OFFSITE_ARGS[@]}" "${json[@]}"
    return
  fi
  py_ops restore list --dir="$BACKUP_ROOT" --db="$DB" "${json[@]}"
}

action_verify() {
  resolve_backup
  work_dir_in_tmp
  verify_backup --announce
}

action_drill() {
  on_exit drill_metrics
  SPEC=latest
  resolve_backup
  work_dir_in_tmp
  verify_backup --show-warnings # what --force accepted must reach the cron log
  replace_database "$WORK_DIR/drill.db" "$WORK_DIR/aside"
  printf 'Drill passed: %s verified, restored into a temp file and checked in %s s (removed)\n' \
    "$BACKUP" "$(elapsed_since "$START")"
}

action_restore_to() {
  local target
  target=$(abs_path "$TO")
  # Any spelling of the same file (./db, a//db, a symlinked directory) counts.
  [[ $target != "$DB" && ! $target -ef $DB && $(realpath -m -- "$target") != "$(realpath -m -- "$DB")" ]] ||
    usage_error "--to names the database itself; leave --to out to restore it"
  require_regular_or_missing "$target"
  [[ ! -e $target || $YES == 1 ]] ||
    usage_error "refusing to overwrite existing $target; pass --yes to replace it"
  require_dir_of "$target"
  lock_acquire "$target" "$TIMEOUT" restore
  work_dir_beside "$target"
  resolve_backup
  verify_backup
  replace_database "$target" "$target.stale.$STAMP"
  print_receipt "$target"
}

action_restore() {
  local -a PLAN=(--plan="$DB") # which backup, its time, its rows against the current ones
  [[ $QUIET == 1 && $YES == 1 ]] && PLAN=()
  can_confirm
  require_dir_of "$DB"
  lock_acquire "$DB" "$TIMEOUT" restore
  work_dir_beside "$DB"
  [[ $YES == 1 ]] || lock_release # nobody waits on a person reading the plan
  resolve_backup
  PLANNED_DB=$(db_identity)
  verify_backup --enforce-schema --target="$DB" "${PLAN[@]}"
  confirm
  lock_after_confirm
  on_exit keep_safety_note
  take_safety_backup
  prune_safety_copies
  replace_database "$DB" "${RAW_COPY:-$PRE_DIR/${NAME}_$STAMP.raw}"
  print_receipt "$DB"
  write_metrics "sqlite_restore_last_success_timestamp_seconds=$(date +%s)" \
    "sqlite_restore_last_duration_seconds=$(elapsed_since "$START")"
  [[ -z $PENDING_SIGNAL ]] || die $((128 + $(kill -l "$PENDING_SIGNAL"))) \
    "SIG$PENDING_SIGNAL arrived while the restore was being written; it was finished and checked first (receipt above)"
}

# ---------------------------------------------------------------------------
# Interruptions (Ctrl-C, SIGTERM, SIGHUP): say what they left, never guess
# ---------------------------------------------------------------------------

STEP=plan PENDING_SIGNAL='' PLANNED_DB='' TARGET=''
CONFIRMED_LOCK_WAIT=300 # seconds to wait for the lock once a person said yes

# on_restore_signal SIG: what each step leaves when it is interrupted. During
# the replace, the Python step reports the database's actual state itself; a
# signal only this shell received waits for that step to finish.
on_restore_signal() {
  local sig=$1 what
  if [[ $STEP == replace ]]; then
    PENDING_SIGNAL=$sig
    return 0
  fi
  trap - "$sig"
  case $STEP in
    prompt) what="restore cancelled; nothing was changed" ;;
    safety) what="interrupted during the safety backup of $DB: the database was not touched and nothing was restored" ;;
    finished) what="interrupted after the restore was written and checked: $TARGET holds the backup's content" ;;
    *) what="interrupted before the database was touched; nothing was changed" ;;
  esac
  die $((128 + $(kill -l "$sig"))) "$what"
}

# restore_traps: the shared cleanup traps, with this flow's own signal messages.
restore_traps() {
  SOPS_SIGNAL_HANDLER=on_restore_signal
  install_traps
}

main() {
  START=$(now_epoch)
  parse_args "$@"
  load_settings
  case $ACTION in
    restore) restore_traps ;;
    *) install_traps ;;
  esac
  warn_untrusted_backups
  case $ACTION in
    list) action_list ;;
    verify) action_verify ;;
    drill) action_drill ;;
    restore) if [[ -n $TO ]]; then action_restore_to; else action_restore; fi ;;
  esac
}

# Run unless sourced (tests source the script to call one function); the if
# form keeps `source` returning 0 under set -e.
if [[ ${BASH_SOURCE[0]} == "$0" ]]; then main "$@"; fi
