#!/usr/bin/env bash
# Summary: routine maintenance of an SQLite database: checks, checkpoint, statistics, vacuum
#
# Usage: maintain_database.sh [--db PATH] [--dry-run] [--force] [--quiet]
#                             [--lock-timeout N] [--metrics-dir DIR] [--config FILE]
#                             [TASK...]
#
# Tasks run in the order given (default: all):
#   check        PRAGMA integrity_check (healthy only when it prints exactly "ok")
#                and the foreign-key check (healthy only when it finds no row
#                whose parent is missing, but for the orphans FK_ACCEPT
#                accepts; the rows it finds are those PRAGMA foreign_key_check
#                lists)
#   quick-check  PRAGMA quick_check: faster, does not compare indexes with tables
#   checkpoint   PRAGMA wal_checkpoint(TRUNCATE); "busy" (exit 75) when a reader
#                holds the WAL back
#   analyze      refresh the planner's statistics under PRAGMA analysis_limit:
#                PRAGMA optimize=0x10002 on SQLite 3.46+, else ANALYZE
#   vacuum       rebuild the file to give free pages back, only when the freelist
#                is at least VACUUM_THRESHOLD of the file (or --force), and only
#                after checking there is room for a full copy in the temp
#                directory and beside the database
#   reindex      rebuild every index (not routine: after a collation change, or
#                when check reports a damaged index)
#   all          check, checkpoint, analyze, vacuum
#
# Options:
#   --db PATH          the database (DB_PATH)
#   --dry-run          say what would be done and why; change nothing, take no lock
#   --force            vacuum even when the freelist is below VACUUM_THRESHOLD
#   --lock-timeout N   seconds to wait for a backup, restore or migration (LOCK_TIMEOUT, 0)
#   --metrics-dir DIR  write sqlite_ops_maintenance_<name>.prom there (METRICS_DIR)
#   --config FILE      KEY=value settings file
#   --quiet            no progress lines on stderr
#   --help             this text
#
# Settings (flag > environment > config file > default): DB_PATH, LOCK_TIMEOUT,
# METRICS_DIR, VACUUM_THRESHOLD (0.25: freelist fraction of the file),
# ANALYSIS_LIMIT (1000: rows sampled per index by ANALYZE), FK_ACCEPT (child
# tables whose orphaned rows the application makes by design: TABLE or
# TABLE:N, comma-separated; a violation anywhere else, or more than N, fails).
#
# Output: one line per task on stdout (result, seconds, details), then one
# summary line with the size and freelist before and after. Progress and
# errors go to stderr. A task that fails, finds a problem or is busy stops
# the tasks after it. A hot rollback journal left by a writer killed
# mid-transaction is rolled back first (not with --dry-run).
#
# Exit codes:
#   0   done (a vacuum skipped below the threshold is done)
#   1   failed (a task failed, a check could not run, or not enough free
#       space to vacuum)
#   2   usage: unknown task or option, missing, non-regular or non-SQLite
#       database, a lock file that is a link (someone planted it); nothing done
#   4   check or quick-check found a problem (rows of it, or SQLite calling the
#       file damaged); the tasks after it were not run
#   75  busy: another sqlite-ops run holds the lock, or a reader held back the
#       checkpoint, or the database stayed locked; retry later

set -euo pipefail

PROG=maintain_database.sh
# shellcheck source=lib/common.sh
source "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/../lib/common.sh"

readonly ALL_TASKS=(check checkpoint analyze vacuum)
readonly KNOWN_TASKS=" check quick-check checkpoint analyze vacuum reindex all "
readonly MAX_PROBLEM_ROWS=10

# Settings (DB_PATH, METRICS_DIR, VACUUM_THRESHOLD, ANALYSIS_LIMIT, LOCK_TIMEOUT)
# are read by load_settings; their names are the environment's, so they are
# not initialised here.
DB=''
DRY_RUN=0
FORCE=0
declare -a TASKS=()
declare -A TASK_RESULT=() TASK_SECONDS=()
TASK_DETAIL=''
TASK_SKIPPED=0
PROBLEM_ROWS=
INTEGRITY=''
SQL_OUT=''
RUN_START=''
# Database figures, read by read_stats.
STAT_FILE_BYTES=0 STAT_PAGES=0 STAT_PAGE_SIZE=0 STAT_FREELIST=0

# ---------------------------------------------------------------------------
# Arguments and settings
# ---------------------------------------------------------------------------

parse_args() {
  parse_options maintain_option "$@"
  [[ ${#TASKS[@]} -gt 0 ]] || add_task all
}

# maintain_option ARGS...: this script's own options and tasks (SOPS_SHIFT:
# how many used). After `--` every argument is a task.
maintain_option() {
  SOPS_SHIFT=1
  case $1 in
    --dry-run) DRY_RUN=1 ;;
    --force) FORCE=1 ;;
    --)
      local task
      for task in "${@:2}"; do add_task "$task"; done
      SOPS_SHIFT=$#
      ;;
    -*) usage_error "unknown option '$1'" ;;
    *) add_task "$1" ;;
  esac
}

# add_task NAME: validate NAME and append it (all expands; duplicates dropped).
add_task() {
  local task=$1 t
  [[ $KNOWN_TASKS == *" $task "* ]] ||
    usage_error "unknown task '$task' (tasks:${KNOWN_TASKS% })"
  if [[ $task == all ]]; then
    for t in "${ALL_TASKS[@]}"; do add_task "$t"; done
    return 0
  fi
  [[ " ${TASKS[*]} " == *" $task "* ]] || TASKS+=("$task")
}

load_settings() {
  config_init
  DB=$(cfg DB_PATH)
  METRICS_DIR=$(cfg METRICS_DIR)
  VACUUM_THRESHOLD=$(cfg VACUUM_THRESHOLD)
  ANALYSIS_LIMIT=$(cfg ANALYSIS_LIMIT)
  LOCK_TIMEOUT=$(cfg LOCK_TIMEOUT)
  FK_ACCEPT=$(cfg FK_ACCEPT)
  require_uint LOCK_TIMEOUT "$LOCK_TIMEOUT"
  require_uint ANALYSIS_LIMIT "$ANALYSIS_LIMIT"
  [[ $VACUUM_THRESHOLD =~ ^(0|1|0?\.[0-9]+|1\.0*)$ ]] ||
    usage_error "VACUUM_THRESHOLD must be a fraction between 0 and 1, not '$VACUUM_THRESHOLD'"
}

# ---------------------------------------------------------------------------
# Reading the database
# ---------------------------------------------------------------------------

# read_stats: file size, page and freelist figures into the STAT_* globals.
# Fails (error in SQL_OUT) when SQLite cannot read them: a damaged database.
read_stats() {
  STAT_FILE_BYTES=$(file_size "$DB")
  SQL_OUT=$(sqlite_ro "$DB" "SELECT page_count, page_size, freelist_count
    FROM pragma_page_count(), pragma_page_size(), pragma_freelist_count();" 2>&1) || return 1
  IFS='|' read -r STAT_PAGES STAT_PAGE_SIZE STAT_FREELIST <<<"$SQL_OUT"
}

# freelist_percent: the freelist as a percentage of the pages, one decimal.
freelist_percent() {
  awk -v f="$STAT_FREELIST" -v p="$STAT_PAGES" 'BEGIN { printf "%.1f\n", (p > 0) ? 100 * f / p : 0 }'
}

# freelist_at_threshold: true when freelist / pages >= VACUUM_THRESHOLD.
freelist_at_threshold() {
  awk -v f="$STAT_FREELIST" -v p="$STAT_PAGES" -v t="$VACUUM_THRESHOLD" \
    'BEGIN { exit !(p > 0 && f / p >= t) }'
}

# sqlite_version_number: the CLI's SQLite version as an integer (3.40.1 -> 3040001).
# Asked of the CLI itself, so no lock on the database can make it fail.
sqlite_version_number() {
  local version major minor patch
  version=$(sqlite3 --version) || return 1
  IFS=. read -r major minor patch <<<"${version%% *}"
  printf '%d\n' $((major * 1000000 + minor * 1000 + ${patch:-0}))
}

# journal_mode
journal_mode() { sqlite_ro "$DB" "PRAGMA journal_mode;"; }

# cli_error_code TEXT: print the primary SQLite result code of the sqlite3
# CLI's own error line in TEXT ("Error: ...", or "Parse error near line N:"
# for SQL it read from a pipe): the "(N)" at the line's end (an extended code
# keeps it in its low byte), or, from a CLI that prints no code, the code of
# SQLite's own message ending the line. Fails when TEXT holds no such line.
# Only that line, and only SQLite's words: a path may hold any word.
CLI_ERROR_LINE='^(Error: |(Parse|Runtime) error near line [0-9]+: )'
cli_error_code() {
  local line
  while IFS= read -r line; do
    [[ $line =~ $CLI_ERROR_LINE ]] || continue
    if [[ $line =~ \(([0-9]+)\)$ ]]; then
      echo $((BASH_REMATCH[1] & 255))
      return 0
    fi
    case $line in
      *'unable to open database "'*) echo 14 ;; # SQLITE_CANTOPEN: the rest is a path's
      *": database is locked") echo 5 ;;
      *": database table is locked" | *": database table is locked: "* | *": database schema is locked: "*) echo 6 ;;
      *": database disk image is malformed" | *": malformed database schema ("*) echo 11 ;;
      *": file is not a database") echo 26 ;;
      *": attempt to write a readonly database") echo 8 ;;
      *) echo 1 ;;
    esac
    return 0
  done <<<"$1"
  return 1
}

# is_busy_error TEXT: true when the sqlite3 CLI gave up because the database
# stayed locked: SQLITE_BUSY (5) or SQLITE_LOCKED (6).
is_busy_error() {
  local code
  code=$(cli_error_code "$1") && ((code == 5 || code == 6))
}

# is_damage_error TEXT: true when the sqlite3 CLI stopped because the file is
# damaged: SQLITE_CORRUPT (11) or SQLITE_NOTADB (26).
is_damage_error() {
  local code
  code=$(cli_error_code "$1") && ((code == 11 || code == 26))
}

# sql_run SQL...: run SQL read-write; output (or error) in SQL_OUT.
# Returns 0, EX_BUSY when the database stayed locked, or EX_FAIL.
sql_run() {
  if SQL_OUT=$(sqlite "$DB" "$@" 2>&1); then
    return 0
  fi
  if is_busy_error "$SQL_OUT"; then return "$EX_BUSY"; fi
  return "$EX_FAIL"
}

# sql_read SQL...: the same, read-only.
sql_read() {
  if SQL_OUT=$(sqlite_ro "$DB" "$@" 2>&1); then
    return 0
  fi
  if is_busy_error "$SQL_OUT"; then return "$EX_BUSY"; fi
  return "$EX_FAIL"
}

# print_problem_rows: the first rows of a failed check (PROBLEM_ROWS) on stdout.
print_problem_rows() {
  [[ -n $PROBLEM_ROWS ]] || return 0
  local total
  total=$(printf '%s\n' "$PROBLEM_ROWS" | wc -l)
  printf '%s\n' "$PROBLEM_ROWS" | head -n "$MAX_PROBLEM_ROWS" | sed 's/^/  /'
  if ((total > MAX_PROBLEM_ROWS)); then
    printf '  ... %d more rows\n' $((total - MAX_PROBLEM_ROWS))
  fi
}

# ---------------------------------------------------------------------------
# Tasks: each sets TASK_DETAIL (and TASK_SKIPPED) and returns an exit code
# ---------------------------------------------------------------------------

task_check() {
  local rows
  if ((DRY_RUN)); then
    TASK_DETAIL="would run PRAGMA integrity_check and PRAGMA foreign_key_check (read-only)"
    return 0
  fi
  if ! rows=$(pragma_ok "$DB" integrity_check); then
    check_failed integrity_check "$rows"
    return
  fi
  local rc=0
  rows=$(foreign_keys_ok "$DB" "$FK_ACCEPT") || rc=$?
  if ((rc)); then
    check_failed foreign_key_check "$rows" "$rc"
    return
  fi
  INTEGRITY=1
  TASK_DETAIL="integrity_check ok, foreign_key_check found no violations"
  [[ -z $rows ]] || TASK_DETAIL="integrity_check ok, ${rows#foreign_key_check: }"
}

task_quick_check() {
  local rows
  if ((DRY_RUN)); then
    TASK_DETAIL="would run PRAGMA quick_check (read-only)"
    return 0
  fi
  if ! rows=$(pragma_ok "$DB" quick_check); then
    check_failed quick_check "$rows"
    return
  fi
  INTEGRITY=1
  TASK_DETAIL="quick_check ok"
}

# check_failed PRAGMA ROWS [RC]: report a check that did not say "ok". RC is
# the exit code of a check that gives one (fkcheck: 4 problem, 75 locked);
# the sqlite3 CLI's is read from its words. Returns 4 when it found a problem
# (rows of it, or SQLite calling the file damaged), 75 when the database
# stayed locked, 1 when it could not run for another reason (a hot journal a
# read-only open may not roll back, an I/O error): nothing was found then,
# and nothing ruled out.
check_failed() {
  local what=$1 rows=$2 rc=${3:-}
  # The CLI's own "Error: ..." line (SQLite stopped the check) is no row of it.
  local found stopped=""
  found=$(printf '%s\n' "$rows" | grep -vcE "$CLI_ERROR_LINE") || true
  if [[ -z $rc ]]; then # the sqlite3 CLI: its words say which
    # Rows of damage stand whatever error then stopped the check (a lock too).
    if ((found > 0)) || is_damage_error "$rows"; then
      rc=$EX_INTEGRITY
    elif is_busy_error "$rows"; then
      rc=$EX_BUSY
    else
      rc=$EX_FAIL
    fi
  fi
  case $rc in
    "$EX_BUSY")
      TASK_DETAIL="$what could not read the database: it stayed locked"
      ;;
    "$EX_USAGE") # fkcheck refused its arguments (FK_ACCEPT)
      TASK_DETAIL="$what: $(printf '%s' "$rows" | tr '\n' ' ')"
      ;;
    "$EX_INTEGRITY")
      INTEGRITY=0
      PROBLEM_ROWS=$rows
      if ((found == 0)); then
        TASK_DETAIL="$what: SQLite calls the file damaged (${rows#Error: })"
      else
        cli_error_code "$rows" >/dev/null && stopped=", then SQLite stopped it with an error"
        TASK_DETAIL="$what found a problem ($found rows$stopped; the first follow)"
      fi
      ;;
    *)
      TASK_DETAIL="$what could not run, so it neither found nor ruled out a problem: $(printf '%s' "${rows#Error: }" | tr '\n' ' ')"
      if [[ $(cli_error_code "$rows") == 8 && -s $DB-journal ]]; then # SQLITE_READONLY
        TASK_DETAIL+=" (a writer was killed mid-transaction after this run rolled back its journal: the next run rolls this one back)"
      fi
      rc=$EX_FAIL
      ;;
  esac
  return "$rc"
}

task_checkpoint() {
  local mode wal_bytes busy rc=0
  sql_read "PRAGMA journal_mode;" || {
    rc=$?
    TASK_DETAIL="cannot read journal_mode: $SQL_OUT"
    return "$rc"
  }
  mode=$SQL_OUT
  if [[ $mode != wal ]]; then
    TASK_SKIPPED=1
    TASK_DETAIL="journal_mode is $mode, not wal: nothing to checkpoint"
    return 0
  fi
  wal_bytes=0
  [[ ! -f $DB-wal ]] || wal_bytes=$(file_size "$DB-wal")
  if ((DRY_RUN)); then
    TASK_DETAIL="would run PRAGMA wal_checkpoint(TRUNCATE): WAL is $(human_bytes "$wal_bytes")"
    return 0
  fi
  sql_run "PRAGMA wal_checkpoint(TRUNCATE);" || rc=$?
  if ((rc != 0)); then
    TASK_DETAIL="wal_checkpoint failed: $SQL_OUT"
    return "$rc"
  fi
  # Row: busy|frames in the WAL|frames copied (both 0 once TRUNCATE succeeded).
  busy=${SQL_OUT%%|*}
  if [[ $busy != 0 ]]; then
    TASK_DETAIL="busy: a reader or writer held the checkpoint back (wal_checkpoint returned $SQL_OUT); the WAL ($(human_bytes "$wal_bytes")) was not truncated"
    return "$EX_BUSY"
  fi
  TASK_DETAIL="WAL of $(human_bytes "$wal_bytes") copied into the database and truncated"
}

task_analyze() {
  local version sql
  version=$(sqlite_version_number) || {
    TASK_DETAIL="cannot tell the SQLite version (sqlite3 --version failed)"
    return "$EX_FAIL"
  }
  if ((version >= 3046000)); then
    sql="PRAGMA analysis_limit=$ANALYSIS_LIMIT; PRAGMA optimize=0x10002;"
  elif ((version >= 3032000)); then
    # Before 3.46, a fresh connection's PRAGMA optimize analyses nothing.
    sql="PRAGMA analysis_limit=$ANALYSIS_LIMIT; ANALYZE;"
  else
    sql="ANALYZE;"
  fi
  sql_task "$sql" analyze "ran: $sql"
}

task_reindex() {
  sql_task "REINDEX;" REINDEX "every index rebuilt"
}

# sql_task SQL WHAT DONE: a task that is one statement. Under --dry-run it
# says what it would run; otherwise it runs SQL and sets TASK_DETAIL to DONE,
# or to why WHAT failed (returning EX_BUSY or EX_FAIL).
sql_task() {
  local sql=$1 what=$2 done=$3 rc=0
  if ((DRY_RUN)); then
    TASK_DETAIL="would run: $sql"
    return 0
  fi
  sql_run "$sql" || rc=$?
  if ((rc != 0)); then
    TASK_DETAIL="$what failed: $SQL_OUT"
    return "$rc"
  fi
  TASK_DETAIL=$done
}

PROGRESS_FD='' PROGRESS_PID=''

# vacuum_progress_start: on a terminal (not --quiet), a line on stderr showing
# the rebuilt pages arriving in the WAL (or the old ones in the rollback
# journal) while VACUUM runs. It lasts until vacuum_progress_stop closes its pipe.
vacuum_progress_start() {
  [[ $QUIET == 0 && -t 2 ]] || return 0
  local content=$(((STAT_PAGES - STAT_FREELIST) * STAT_PAGE_SIZE))
  exec {PROGRESS_FD}> >(py_ops progress watch --prog "$PROG" --label VACUUM --total "$content" -- "$DB-wal" "$DB-journal")
  PROGRESS_PID=$!
}

# vacuum_progress_stop: end the line vacuum_progress_start drew (it clears it).
vacuum_progress_stop() {
  [[ -n $PROGRESS_FD ]] || return 0
  exec {PROGRESS_FD}>&-
  wait "$PROGRESS_PID" 2>/dev/null || true
  PROGRESS_FD='' PROGRESS_PID=''
}

task_vacuum() {
  local percent before_bytes before_free rc=0
  if ! read_stats; then
    TASK_DETAIL="cannot read the page counts: $SQL_OUT"
    is_busy_error "$SQL_OUT" && return "$EX_BUSY"
    return "$EX_FAIL"
  fi
  percent=$(freelist_percent)
  if ! freelist_at_threshold && ((!FORCE)); then
    TASK_SKIPPED=1
    TASK_DETAIL="freelist $STAT_FREELIST of $STAT_PAGES pages ($percent%) is below VACUUM_THRESHOLD $VACUUM_THRESHOLD; --force to vacuum anyway"
    return 0
  fi
  vacuum_space_ok || return "$EX_FAIL"
  if ((DRY_RUN)); then
    local why="at least VACUUM_THRESHOLD $VACUUM_THRESHOLD"
    freelist_at_threshold || why="below VACUUM_THRESHOLD $VACUUM_THRESHOLD but --force"
    TASK_DETAIL="would run VACUUM: freelist $STAT_FREELIST of $STAT_PAGES pages ($percent%) is $why; $TASK_DETAIL"
    return 0
  fi
  before_bytes=$STAT_FILE_BYTES
  before_free=$STAT_FREELIST
  vacuum_progress_start
  sql_run "VACUUM;" || rc=$?
  vacuum_progress_stop
  if ((rc != 0)); then
    TASK_DETAIL="VACUUM failed (the database is unchanged): $SQL_OUT"
    return "$rc"
  fi
  # In WAL mode the rebuilt pages sit in the WAL until a checkpoint.
  if [[ $(journal_mode) == wal ]] && sql_run "PRAGMA wal_checkpoint(TRUNCATE);" && [[ $SQL_OUT != 0\|* ]]; then
    log_warn "vacuum: a reader held back the checkpoint after VACUUM; the file shrinks at the next checkpoint"
  fi
  read_stats || true
  TASK_DETAIL="size $(human_bytes "$before_bytes") -> $(human_bytes "$STAT_FILE_BYTES"), freelist $before_free -> $STAT_FREELIST pages"
}

# vacuum_temp_dir: the directory SQLite's unix VFS uses for the VACUUM copy.
vacuum_temp_dir() {
  local dir
  for dir in "${SQLITE_TMPDIR:-}" "${TMPDIR:-}" /var/tmp /usr/tmp /tmp .; do
    if [[ -n $dir && -d $dir && -w $dir ]]; then
      printf '%s\n' "$dir"
      return 0
    fi
  done
  printf '.\n'
}

# vacuum_space_ok: true when there is room for a full copy of the database in
# the temp directory and for the rewritten pages (journal or WAL) beside it;
# twice that when both are one file system. Sets TASK_DETAIL either way.
# SQLITE_OPS_TEST_FREE_TMP / SQLITE_OPS_TEST_FREE_DB replace the measured free
# bytes (tests only: a full disk cannot be arranged portably).
vacuum_space_ok() {
  local need tmp db_dir tmp_free db_free tmp_need db_need
  need=$((STAT_PAGES * STAT_PAGE_SIZE))
  tmp=$(vacuum_temp_dir)
  db_dir=$(dirname -- "$DB")
  tmp_free=${SQLITE_OPS_TEST_FREE_TMP:-$(free_bytes "$tmp")}
  db_free=${SQLITE_OPS_TEST_FREE_DB:-$(free_bytes "$db_dir")}
  tmp_need=$need db_need=$need
  if [[ $(stat -c %d -- "$tmp") == "$(stat -c %d -- "$db_dir")" ]]; then
    tmp_need=$((2 * need)) db_need=$((2 * need))
  fi
  if ((tmp_free < tmp_need)); then
    TASK_DETAIL="not enough free space for VACUUM in the temp directory $tmp: needs $(human_bytes "$tmp_need"), $(human_bytes "$tmp_free") free; set SQLITE_TMPDIR to a larger file system; nothing was changed"
    return 1
  fi
  if ((db_free < db_need)); then
    TASK_DETAIL="not enough free space for VACUUM beside the database in $db_dir: needs $(human_bytes "$db_need"), $(human_bytes "$db_free") free; nothing was changed"
    return 1
  fi
  TASK_DETAIL="free space ok: $(human_bytes "$tmp_free") in $tmp, $(human_bytes "$db_free") beside the database, $(human_bytes "$need") needed"
}

# ---------------------------------------------------------------------------
# Running the tasks and reporting
# ---------------------------------------------------------------------------

# run_task TASK: run one task, print its line; returns the task's exit code.
run_task() {
  local task=$1 start rc=0 result
  TASK_DETAIL='' TASK_SKIPPED=0
  log_info "$task: starting"
  start=$(now_epoch)
  "task_${task//-/_}" || rc=$?
  TASK_SECONDS[$task]=$(elapsed_since "$start")
  case $rc in
    0) result=ok ;;
    "$EX_INTEGRITY") result=problem ;;
    "$EX_BUSY") result=busy ;;
    *) result=failed ;;
  esac
  ((TASK_SKIPPED)) && result=skipped
  ((DRY_RUN && rc == 0 && !TASK_SKIPPED)) && result=dry-run
  TASK_RESULT[$task]=$result
  printf '%s: %s in %ss: %s\n' "$task" "$result" "${TASK_SECONDS[$task]}" "$TASK_DETAIL"
  print_problem_rows
  return "$rc"
}

# run_tasks: every task in order; the first failure stops the rest.
# Returns the exit code of the run.
run_tasks() {
  local task rc=0
  for task in "${TASKS[@]}"; do
    if ((rc != 0)); then
      TASK_RESULT[$task]=not-run
      printf '%s: not run: an earlier task did not succeed\n' "$task"
      continue
    fi
    run_task "$task" || rc=$?
  done
  return "$rc"
}

# print_summary RC BEFORE_BYTES BEFORE_FREELIST: the last stdout line.
print_summary() {
  local rc=$1 before_bytes=$2 before_free=$3 task list='' outcome=ok
  for task in "${TASKS[@]}"; do list+="${list:+, }$task ${TASK_RESULT[$task]:-not-run}"; done
  case $rc in
    0) ((DRY_RUN)) && outcome="dry run, nothing changed" ;;
    "$EX_INTEGRITY") outcome="PROBLEM FOUND" ;;
    "$EX_BUSY") outcome=busy ;;
    *) outcome=FAILED ;;
  esac
  read_stats || true
  printf 'maintenance %s: %s: %s; size %s -> %s, freelist %s -> %s pages; %ss\n' \
    "$outcome" "$DB" "$list" "$(human_bytes "$before_bytes")" \
    "$(human_bytes "$STAT_FILE_BYTES")" "$before_free" "$STAT_FREELIST" "$(elapsed_since "$RUN_START")"
}

# ---------------------------------------------------------------------------
# Metrics for the node_exporter textfile collector
# ---------------------------------------------------------------------------

# write_metrics RC: on exit, publish this run's figures; tasks not run this time
# keep their previous values from the file (prom_merge).
write_metrics() {
  local rc=$1 name label task now
  [[ -n $METRICS_DIR && -n $RUN_START ]] || return 0
  db_name name "$DB" || {
    log_warn "cannot name the database for its metrics; metrics not written"
    return 0
  }
  label="db=\"$(prom_label_escape "$name")\""
  now=$(date +%s)
  local -a done_tasks=()
  for task in "${!TASK_RESULT[@]}"; do
    # skipped means done: nothing was needed (no WAL, freelist below threshold)
    [[ ${TASK_RESULT[$task]} == ok || ${TASK_RESULT[$task]} == skipped ]] && done_tasks+=("$task")
  done
  {
    prom_family sqlite_maintenance_last_success_timestamp_seconds "When each maintenance task last succeeded (or found nothing to do)."
    for task in "${done_tasks[@]}"; do
      printf 'sqlite_maintenance_last_success_timestamp_seconds{%s,task="%s"} %s\n' "$label" "$task" "$now"
    done
    prom_family sqlite_maintenance_duration_seconds "How long each task took when it last succeeded."
    for task in "${done_tasks[@]}"; do
      printf 'sqlite_maintenance_duration_seconds{%s,task="%s"} %s\n' "$label" "$task" "${TASK_SECONDS[$task]}"
    done
    prom_family sqlite_integrity_ok "1 when the last check or quick-check passed, 0 when it found a problem."
    [[ -z $INTEGRITY ]] || printf 'sqlite_integrity_ok{%s} %s\n' "$label" "$INTEGRITY"
    prom_gauge sqlite_maintenance_last_exit_code "$label" "$rc" "Exit code of the last maintenance run."
  } | prom_merge "$METRICS_DIR" "$(prom_file maintenance "$name")"
}

# ---------------------------------------------------------------------------

main() {
  parse_args "$@"
  load_settings
  require_tool sqlite3 sqlite3
  require_database "$DB"
  install_traps
  if ((DRY_RUN)); then
    log_info "dry run: nothing is changed and no lock is taken"
  else
    lock_acquire "$DB" "$LOCK_TIMEOUT" maintenance
    on_exit write_metrics
    roll_back_hot_journal "$DB"
  fi
  RUN_START=$(now_epoch)
  read_stats || log_warn "cannot read the page counts of $DB: $SQL_OUT"
  local before_bytes=$STAT_FILE_BYTES before_free=$STAT_FREELIST rc=0
  log_info "$DB: $(human_bytes "$before_bytes"), freelist $before_free of $STAT_PAGES pages ($(freelist_percent)%); tasks: ${TASKS[*]}"
  run_tasks || rc=$?
  print_summary "$rc" "$before_bytes" "$before_free"
  return "$rc"
}

# Run unless sourced (tests source the script to call one function); the if
# form keeps `source` returning 0 under set -e.
if [[ ${BASH_SOURCE[0]} == "$0" ]]; then main "$@"; fi
