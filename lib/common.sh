# shellcheck shell=bash
# lib/common.sh: what every sqlite-ops bash script shares.
#
# Sourced, never executed. A script sets PROG, sources this file, and gets:
# exit codes, logging, die, configuration with the contract's precedence,
# the shared lock, temp files cleaned up on every exit path, safe sqlite3
# invocation and .prom writing.
#
# Nothing here runs at source time except `umask 077` and variable defaults,
# so tests can source it and call one function.

umask 077

# ---------------------------------------------------------------------------
# Exit codes (the contract)
# ---------------------------------------------------------------------------

# shellcheck disable=SC2034 # used by the scripts that source this file
readonly EX_OK=0 EX_VERIFY=3 EX_INTEGRITY=4
readonly EX_FAIL=1 EX_USAGE=2 EX_BUSY=75

SQLITE_OPS_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PROG=${PROG:-sqlite-ops}
QUIET=${QUIET:-0}
# What to pass a Python step so it draws no progress line either (--quiet).
QUIET_ARGS=()
[[ $QUIET == 0 ]] || QUIET_ARGS=(--quiet)

# ---------------------------------------------------------------------------
# Logging: timestamped lines on stderr; stdout is for results only
# ---------------------------------------------------------------------------

_log() {
  local level=$1
  shift
  local line
  line="$(date -u +%Y-%m-%dT%H:%M:%SZ) $PROG: $level: $*"
  printf '%s\n' "$line" >&2
  if [[ ${LOG_SYSLOG:-0} == 1 ]] && command -v logger >/dev/null 2>&1; then
    logger -t "$PROG" -- "$level: $*" || true
  fi
}

log_info() { [[ $QUIET == 1 ]] || _log info "$@"; }
log_warn() { _log warning "$@"; }

# die CODE MESSAGE: one line on stderr, starting with the script's name
# (a newline inside MESSAGE, say from a path, is shown as \n).
die() {
  local code=$1
  shift
  local message=$*
  printf '%s: %s\n' "$PROG" "${message//$'\n'/\\n}" >&2
  if [[ ${LOG_SYSLOG:-0} == 1 ]] && command -v logger >/dev/null 2>&1; then
    logger -t "$PROG" -- "error: $*" || true
  fi
  exit "$code"
}

usage_error() { die "$EX_USAGE" "$* (see --help)"; }

# ---------------------------------------------------------------------------
# Help, printed from the script's own header comment block
# ---------------------------------------------------------------------------

# show_help FILE: print the comment block after the shebang, without '# '.
show_help() {
  local line
  while IFS= read -r line; do
    [[ $line == '#!'* ]] && continue
    [[ $line == '#'* ]] || break
    line=${line#\#}
    printf '%s\n' "${line# }"
  done <"$1"
}

# ---------------------------------------------------------------------------
# Tools
# ---------------------------------------------------------------------------

# require_tool COMMAND PACKAGE
require_tool() {
  command -v "$1" >/dev/null 2>&1 ||
    die "$EX_FAIL" "'$1' is not installed; install the '$2' package (apt-get install $2)"
}

# ---------------------------------------------------------------------------
# Configuration: flag > environment > config file (read as data) > default
# ---------------------------------------------------------------------------

declare -gA SOPS_FLAGS=()
declare -gA SOPS_FILE=()

# set_flag KEY OPTION VALUE: record a command-line value; usage error if missing.
set_flag() {
  [[ $# -ge 3 && -n $3 ]] || usage_error "$2 needs a value"
  SOPS_FLAGS[$1]=$3
}

# config_file_path: the file the contract says to read, or nothing.
config_file_path() {
  if [[ -n ${SOPS_FLAGS[CONFIG]:-} ]]; then
    printf '%s\n' "${SOPS_FLAGS[CONFIG]}"
  elif [[ -n ${SQLITE_OPS_CONFIG:-} ]]; then
    printf '%s\n' "$SQLITE_OPS_CONFIG"
  elif [[ -f /etc/sqlite-ops.conf ]]; then
    printf '%s\n' /etc/sqlite-ops.conf
  fi
}

# Every setting a config file may hold (sqlite_ops.common.CONFIG_KEYS is the
# same list; a test keeps them equal). Anything else is a typo, and a typo
# must not quietly fall back to a default path.
SOPS_CONFIG_KEYS=" DB_PATH BACKUP_DIR RETENTION_DAYS KEEP_MIN COMPRESS MIGRATIONS_DIR METRICS_DIR LOCK_TIMEOUT VACUUM_THRESHOLD ANALYSIS_LIMIT METRICS_LISTEN LOG_SYSLOG SQLITE_BUSY_TIMEOUT_MS OFFSITE_REMOTES OFFSITE_RETENTION_DAYS OFFSITE_KEEP_MIN OFFSITE_HOST RCLONE_CONFIG FK_ACCEPT INTEGRITY_CHECK "

# The contract's defaults, cfg's fallback (sqlite_ops.common.SOPS_DEFAULTS holds
# the same values; a test keeps them equal). An empty value is "unset": off,
# none, or the tool's own default. COMPRESS follows what is installed
# (default_compression); OFFSITE_RETENTION_DAYS and OFFSITE_KEEP_MIN follow the
# local settings (offsite_settings).
declare -gA SOPS_DEFAULTS=(
  [DB_PATH]=/dashboard/data/dashboard.db
  [BACKUP_DIR]=/dashboard/data/backups
  [RETENTION_DAYS]=30
  [KEEP_MIN]=7
  [MIGRATIONS_DIR]=$SQLITE_OPS_ROOT/migrations
  [METRICS_DIR]=''
  [LOCK_TIMEOUT]=0
  [VACUUM_THRESHOLD]=0.25
  [ANALYSIS_LIMIT]=1000
  [METRICS_LISTEN]=127.0.0.1:9560
  [LOG_SYSLOG]=0
  [SQLITE_BUSY_TIMEOUT_MS]=5000
  [OFFSITE_REMOTES]=''
  [OFFSITE_HOST]='' # the short host name
  [RCLONE_CONFIG]=''
  [FK_ACCEPT]=''
  [INTEGRITY_CHECK]=backup
)

# config_load FILE: parse KEY=value lines into SOPS_FILE; never sources it.
config_load() {
  local file=$1 raw line key value n=0 warned=0
  [[ -r $file ]] || usage_error "cannot read config file $file"
  # Unknown settings are reported once per file: a child run (migrate's
  # backup) reads the same file again.
  [[ ${SQLITE_OPS_CONFIG_WARNED:-} != "$file" ]] || warned=1
  while IFS= read -r raw || [[ -n $raw ]]; do
    n=$((n + 1))
    line=${raw#"${raw%%[![:space:]]*}"}
    line=${line%"${line##*[![:space:]]}"}
    [[ -z $line || $line == '#'* ]] && continue
    line=${line#export }
    [[ $line =~ ^([A-Za-z_][A-Za-z0-9_]*)[[:space:]]*=[[:space:]]*(.*)$ ]] ||
      usage_error "config file $file line $n: expected KEY=value"
    key=${BASH_REMATCH[1]}
    value=${BASH_REMATCH[2]}
    [[ $SOPS_CONFIG_KEYS == *" $key "* || $warned == 1 ]] ||
      log_warn "config file $file line $n: unknown setting $key, ignored (known:${SOPS_CONFIG_KEYS% })"
    if [[ ${#value} -ge 2 && ${value:0:1} == "${value: -1}" && ${value:0:1} == [\"\'] ]]; then
      value=${value:1:${#value}-2}
    fi
    SOPS_FILE[$key]=$value
  done <"$file"
}

# config_init: load the config file once flags are parsed, and hand the same
# file to every child run (migrate's pre-migration backup) so a --config given
# here is not lost on the way.
config_init() {
  local file
  file=$(config_file_path)
  [[ -z $file ]] || {
    config_load "$file"
    export SQLITE_OPS_CONFIG=$file SQLITE_OPS_CONFIG_WARNED=$file
  }
  # Read by this library itself, so settled here for every script.
  LOG_SYSLOG=$(cfg LOG_SYSLOG)
  SQLITE_BUSY_TIMEOUT_MS=$(cfg SQLITE_BUSY_TIMEOUT_MS)
  require_uint SQLITE_BUSY_TIMEOUT_MS "$SQLITE_BUSY_TIMEOUT_MS"
}

# cfg KEY [DEFAULT]: print the setting with the contract's precedence; without
# DEFAULT, the default is SOPS_DEFAULTS's.
cfg() {
  local key=$1 default=${2-${SOPS_DEFAULTS[$1]-}}
  if [[ -n ${SOPS_FLAGS[$key]+x} ]]; then
    printf '%s\n' "${SOPS_FLAGS[$key]}"
  elif [[ -n ${!key:-} ]]; then
    printf '%s\n' "${!key}"
  elif [[ -n ${SOPS_FILE[$key]+x} ]]; then
    printf '%s\n' "${SOPS_FILE[$key]}"
  else
    printf '%s\n' "$default"
  fi
}

# offsite_settings RETENTION KEEP [REMOTE...]: the offsite settings, for the sync
# and for the local prune (which keeps backups still pending upload). Sets
# OFFSITE_LIST (the REMOTEs given, from --remote flags, else OFFSITE_REMOTES split
# on spaces), OFFSITE_RETENTION and OFFSITE_KEEP (default: the local RETENTION
# and KEEP given), OFFSITE_ARGS (all of it as sqlite_ops.offsite arguments; an
# empty OFFSITE_HOST lets it use the short host name), and exports RCLONE_CONFIG
# when a setting names rclone's config file (rclone reads it from there).
offsite_settings() {
  local retention=$1 keep=$2 remote rclone_config
  shift 2
  OFFSITE_LIST=("$@")
  [[ $# -gt 0 ]] || read -r -a OFFSITE_LIST <<<"$(cfg OFFSITE_REMOTES)" || true
  OFFSITE_RETENTION=$(cfg OFFSITE_RETENTION_DAYS "$retention")
  OFFSITE_KEEP=$(cfg OFFSITE_KEEP_MIN "$keep")
  require_uint OFFSITE_RETENTION_DAYS "$OFFSITE_RETENTION"
  require_uint OFFSITE_KEEP_MIN "$OFFSITE_KEEP"
  OFFSITE_ARGS=(--host="$(cfg OFFSITE_HOST)")
  for remote in "${OFFSITE_LIST[@]}"; do OFFSITE_ARGS+=(--remote="$remote"); done
  rclone_config=$(cfg RCLONE_CONFIG)
  [[ -z $rclone_config ]] || export RCLONE_CONFIG=$rclone_config
}

# require_rclone: offsite copies need rclone (exit 2 naming the package).
require_rclone() {
  command -v rclone >/dev/null 2>&1 ||
    die "$EX_USAGE" "'rclone' is not installed; install the 'rclone' package (apt-get install rclone): offsite copies need it"
}

# require_uint NAME VALUE
require_uint() {
  [[ $2 =~ ^[0-9]+$ ]] || usage_error "$1 must be a whole number, not '$2'"
}

# default_compression: zstd when installed, else gzip.
default_compression() {
  if command -v zstd >/dev/null 2>&1; then echo zstd; else echo gzip; fi
}

# parse_common_option ARGS...: handles the options every script shares.
# Sets SOPS_SHIFT to the number of arguments consumed (0: not ours).
# shellcheck disable=SC2034 # SOPS_SHIFT is read by the caller
parse_common_option() {
  SOPS_SHIFT=2
  case $1 in
    --db) set_flag DB_PATH "$@" ;;
    --dir) set_flag BACKUP_DIR "$@" ;;
    --config) set_flag CONFIG "$@" ;;
    --metrics-dir) set_flag METRICS_DIR "$@" ;;
    --migrations) set_flag MIGRATIONS_DIR "$@" ;;
    --lock-timeout) set_flag LOCK_TIMEOUT "$@" ;;
    --quiet | -q) QUIET=1 QUIET_ARGS=(--quiet) SOPS_SHIFT=1 ;;
    -h | --help) show_help "$0" && exit "$EX_OK" ;;
    *) SOPS_SHIFT=0 ;;
  esac
}

# parse_options HANDLER ARGS...: the option loop every script shares. The
# options all scripts take (above, and --help) are handled here; any other
# argument goes to HANDLER ARGS..., which sets SOPS_SHIFT to how many it used.
parse_options() {
  local handler=$1
  shift
  while [[ $# -gt 0 ]]; do
    parse_common_option "$@"
    [[ $SOPS_SHIFT -gt 0 ]] || "$handler" "$@"
    shift "$SOPS_SHIFT"
  done
}

# ---------------------------------------------------------------------------
# Paths and files
# ---------------------------------------------------------------------------

# abs_path PATH: absolute form without resolving symlinks; never starts with '-'.
abs_path() {
  case $1 in
    /*) printf '%s\n' "$1" ;;
    *) printf '%s/%s\n' "$PWD" "$1" ;;
  esac
}

# is_sqlite_file PATH: true when the file starts with the SQLite 3 header.
is_sqlite_file() {
  [[ -f $1 && -r $1 ]] || return 1
  local magic
  magic=$(head -c 15 -- "$1" 2>/dev/null | tr -d '\0') || return 1
  [[ $magic == "SQLite format 3" ]]
}

# require_regular_or_missing PATH: exit 2 when PATH exists but is not a
# regular file (a FIFO would hang the first open, a directory fail half-way).
# Called before anything is opened or created. A symlink to a file is fine.
require_regular_or_missing() {
  [[ ! -e $1 || -f $1 ]] || die "$EX_USAGE" "not a regular file: $1"
}

# require_database PATH: exit 2 unless PATH is a readable SQLite file.
require_database() {
  require_regular_or_missing "$1"
  [[ -e $1 ]] || die "$EX_USAGE" "database not found: $1 (set --db or DB_PATH)"
  [[ -r $1 ]] || die "$EX_USAGE" "cannot read $1: permission denied"
  is_sqlite_file "$1" || die "$EX_USAGE" "not an SQLite database: $1 (a wrong --db, or the database's first page is destroyed: if it held the data, see the incident runbook)"
}

# file_size PATH: bytes; fails quietly (the caller says what it means).
file_size() { stat -c %s -- "$1" 2>/dev/null; }

# free_bytes DIR: bytes available to an unprivileged writer in DIR's file system.
free_bytes() {
  df -P -B1 -- "$1" | awk 'NR==2 {print $4}'
}

# ---------------------------------------------------------------------------
# Temp files: created next to their destination, removed on every exit path
# ---------------------------------------------------------------------------

declare -ga SOPS_TEMPS=()
declare -ga SOPS_EXIT_HOOKS=()

# On every exit: stop background jobs, run the exit hooks, remove the temps.
# Jobs go first: one interrupted as it starts could otherwise create its
# output file (a quick_check result) just after the temps were removed.
_sops_on_exit() {
  local rc=$? hook path
  _sops_stop_jobs
  for hook in "${SOPS_EXIT_HOOKS[@]}"; do
    "$hook" "$rc" || true
  done
  for path in "${SOPS_TEMPS[@]}"; do
    [[ -n $path ]] && rm -rf -- "$path"
  done
  return "$rc"
}

# _sops_stop_jobs: SIGTERM this shell's background jobs (they ignore SIGINT:
# bash starts them so) and wait until they are gone.
_sops_stop_jobs() {
  local -a pids=()
  mapfile -t pids < <(jobs -p)
  [[ ${#pids[@]} -gt 0 ]] || return 0
  kill -TERM "${pids[@]}" 2>/dev/null || true
  wait "${pids[@]}" 2>/dev/null || true
}

# What an interrupted run says it left (a script changes it once it has
# published something).
SOPS_INTERRUPTED_NOTE="nothing was published"

_sops_on_signal() {
  local sig=$1
  trap - "$sig"
  log_warn "interrupted by SIG$sig; $SOPS_INTERRUPTED_NOTE"
  exit $((128 + $(kill -l "$sig")))
}

SOPS_TRAPS=0

# The function called with the signal's name on INT, TERM or HUP. A script
# whose interruption needs its own words (a restore knows which step it was
# in) sets its own before install_traps; hold_signals/release_signals keep it.
SOPS_SIGNAL_HANDLER=_sops_on_signal

# install_traps: call once from main(); cleanup runs on exit, INT, TERM, HUP.
install_traps() {
  trap _sops_on_exit EXIT
  _sops_signal_traps
  SOPS_TRAPS=1
}

_sops_signal_traps() {
  local sig
  for sig in INT TERM HUP; do
    # shellcheck disable=SC2064 # the signal name is fixed now, on purpose
    trap "$SOPS_SIGNAL_HANDLER $sig" "$sig"
  done
}

# hold_signals / release_signals: around a step that must not be cut in two
# (a backup and its manifest are published together or not at all). INT,
# TERM and HUP arriving in between are held, and acted on at release_signals.
# Without install_traps (a test sourcing this file) both do nothing.
SOPS_HELD_SIGNAL=''
hold_signals() {
  [[ $SOPS_TRAPS == 1 ]] || return 0
  local sig
  for sig in INT TERM HUP; do
    # shellcheck disable=SC2064 # the signal name is fixed now, on purpose
    trap "SOPS_HELD_SIGNAL=$sig" "$sig"
  done
}

release_signals() {
  [[ $SOPS_TRAPS == 1 ]] || return 0
  _sops_signal_traps
  [[ -z $SOPS_HELD_SIGNAL ]] || "$SOPS_SIGNAL_HANDLER" "$SOPS_HELD_SIGNAL"
}

# _sops_mktemp MKTEMP_ARGS...: mktemp, its path registered for removal on exit
# (SOPS_TEMPS) and left in SOPS_MADE. A signal arriving meanwhile is held and
# acted on once the path is registered: bash runs a trap only after the $(...)
# ends, and exiting then would leave the file just made, unregistered, behind.
_sops_mktemp() {
  local rc=0
  hold_signals
  SOPS_MADE=$(mktemp "$@" 2>/dev/null) || rc=$?
  [[ $rc != 0 ]] || SOPS_TEMPS+=("$SOPS_MADE")
  release_signals
  return "$rc"
}

# on_exit FUNCTION: run FUNCTION EXIT_CODE when the script exits.
on_exit() { SOPS_EXIT_HOOKS+=("$1"); }

# temp_dir_in VAR DIR: set VAR to a private temp directory inside DIR, removed on exit.
temp_dir_in() {
  local -n _temp_var=$1
  _sops_mktemp -d -- "$2/.sqlite-ops.tmp.XXXXXX" ||
    die "$EX_FAIL" "cannot create a temp directory in $2"
  _temp_var=$SOPS_MADE
}

# forget_temp PATH: it was published; do not remove it on exit.
forget_temp() {
  local i
  for i in "${!SOPS_TEMPS[@]}"; do
    [[ ${SOPS_TEMPS[$i]} == "$1" ]] && SOPS_TEMPS[i]=''
  done
  return 0
}

# ensure_private_dir DIR: create DIR (0700) if missing; refuse a non-directory.
# Only DIR itself is created: a missing parent means a wrong setting (a typo
# in the config file leaves the default /dashboard/data/backups), and making
# the whole tree would hide it.
ensure_private_dir() {
  if [[ -e $1 && ! -d $1 ]]; then
    die "$EX_USAGE" "not a directory: $1"
  fi
  if [[ ! -d $1 ]]; then
    [[ -d $(dirname -- "$1") ]] ||
      die "$EX_USAGE" "cannot create $1: $(dirname -- "$1") does not exist; check the setting that names it (--dir or BACKUP_DIR), or create it; nothing was changed"
    # A run started at the same moment may create it first: that is fine.
    (umask 077 && mkdir -- "$1" 2>/dev/null) || [[ -d $1 ]] ||
      die "$EX_FAIL" "cannot create directory $1"
  fi
  [[ -w $1 ]] || die "$EX_FAIL" "cannot write to $1: permission denied"
}

# dir_problem DIR: prints why files in DIR could be planted or swapped by
# someone else ("writable by other users (mode 777)", "owned by NAME, not by
# this user (NAME)"), or nothing. Root-owned directories are trusted.
dir_problem() {
  local mode uid user
  read -r mode uid < <(stat -L -c '%a %u' -- "$1" 2>/dev/null) || return 0
  if ((8#$mode & 8#022)); then
    printf 'writable by other users (mode %s)\n' "$mode"
  elif [[ $uid != "$EUID" && $uid != 0 ]]; then
    user=$(id -nu "$uid" 2>/dev/null) || user="uid $uid"
    printf 'owned by %s, not by this user (%s)\n' "$user" "$(id -nu 2>/dev/null || echo "uid $EUID")"
  fi
}

# ---------------------------------------------------------------------------
# The lock: one per database, shared by backup, restore, maintenance and migrate
# ---------------------------------------------------------------------------

# lock_path_for DB: the lock file beside the database (sqlite_ops.common's
# formula, the only one). Symlinks are resolved, so every path to one
# database finds the same lock.
lock_path_for() {
  local path
  path=$(py_ops common lock-file -- "$1") || return 1
  printf '%s\n' "${path%/}"
}

# lock_acquire DB TIMEOUT WHAT: exit 75 when another run holds it past TIMEOUT.
# A run started by a parent that holds this lock (SQLITE_OPS_LOCK_HELD) skips it.
# Anyone who can write to the database's directory can plant a symlink (or a
# hard link) at the lock's path; the lock file is therefore never created,
# opened for writing or truncated through one: it is created with O_EXCL and
# O_NOFOLLOW (by the one python3 call that also says where it is), opened
# read-only without O_CREAT (flock needs no more), and used only when the
# open file is the regular, singly linked file at PATH, owned by us or by the
# database's owner. Anything else is exit 2 naming the path.
lock_acquire() {
  local db=$1 timeout=${2:-0} what=${3:-$PROG} path holder fd created=0
  path=$(py_ops common lock-file --create -- "$db") || created=$?
  path=${path%/}
  [[ -n $path ]] || die "$EX_FAIL" "cannot find the lock file of $db"
  [[ ${SQLITE_OPS_LOCK_HELD:-} == "$path" ]] && return 0
  require_tool flock util-linux
  lock_refuse_unsafe "$path"
  [[ $created == 0 ]] || die "$EX_FAIL" "cannot create lock file $path (is its directory writable?)"
  { exec {fd}<"$path"; } 2>/dev/null || die "$EX_FAIL" "cannot open lock file $path: permission denied?"
  local problem
  if ! problem=$(lock_problem "$path" "$fd" "$db") || [[ -n $problem ]]; then
    exec {fd}<&-
    lock_refuse_unsafe "$path"
    die "$EX_USAGE" "refusing to use lock file $path: ${problem:-it changed while being opened}; remove it and retry; nothing was changed"
  fi
  SOPS_LOCK_FD=$fd
  if ! flock -w "$timeout" "$SOPS_LOCK_FD"; then
    holder=$(head -c 200 <&"$SOPS_LOCK_FD" 2>/dev/null | tr -d '\n')
    die "$EX_BUSY" "another sqlite-ops run holds the lock on $db$(holder_text "$holder"); retry later or set LOCK_TIMEOUT to wait"
  fi
  # Written through the descriptor just checked (reopened by the kernel, not
  # by name), so a link swapped in since then is never followed. Informative
  # only: a lock file we may read but not write still locks.
  { printf '%s %s %s\n' "$$" "$what" "$(readlink /proc/self/ns/pid)" >"/proc/self/fd/$SOPS_LOCK_FD"; } 2>/dev/null || true
  export SQLITE_OPS_LOCK_HELD=$path
}

# holder_text RECORDED: " (pid N WHAT)" from a lock file's "N WHAT [pid:[NS]]",
# saying when N is a PID of another PID namespace (a container, or the host),
# which is not the process of that number here. As common.py's holder_text.
holder_text() {
  local text=$1 namespace head ours
  [[ -n $text ]] || return 0
  namespace=${text##* } head=${text% *}
  # (readlink runs in this shell's PID namespace: /proc/self is its own)
  ours=$(readlink /proc/self/ns/pid 2>/dev/null) || ours=''
  if [[ $namespace != pid:\[*\] || $head == "$text" ]]; then
    printf ' (pid %s)' "$text"
  elif [[ -z $ours || $namespace == "$ours" ]]; then
    printf ' (pid %s)' "$head"
  else
    printf ' (pid %s, in another PID namespace: a container or the host, where that number is not this one'"'"'s process)' "$head"
  fi
}

# lock_refuse_unsafe PATH: exit 2 when PATH is a symlink or not a regular file.
lock_refuse_unsafe() {
  if [[ -L $1 ]]; then
    die "$EX_USAGE" "refusing to use lock file $1: it is a symbolic link (a link planted there would make this run overwrite its target); remove it and retry; nothing was changed"
  fi
  if [[ -e $1 && ! -f $1 ]]; then
    die "$EX_USAGE" "refusing to use lock file $1: not a regular file; remove it and retry; nothing was changed"
  fi
}

# lock_problem PATH FD DB: prints what is wrong with the open file FD, or
# nothing when it is the regular file at PATH (not reached through a link),
# with one link, owned by us or by DB's owner.
lock_problem() {
  local path=$1 fd=$2 db=$3 uid links db_uid
  if [[ -L $path || ! -f /dev/fd/$fd || ! $path -ef /dev/fd/$fd ]]; then
    echo "it changed while being opened (a link swapped in?)"
    return 0
  fi
  read -r uid links < <(stat -L -c '%u %h' -- "/dev/fd/$fd") || return 1
  if [[ $links != 1 ]]; then
    echo "it has $links hard links (a link planted there would make this run overwrite another file)"
  elif [[ $uid != "$EUID" ]] && { ! db_uid=$(stat -L -c %u -- "$db" 2>/dev/null) || [[ $uid != "$db_uid" ]]; }; then
    echo "owned by uid $uid, neither this user nor the database's owner"
  fi
}

# ---------------------------------------------------------------------------
# sqlite3, safely
# ---------------------------------------------------------------------------

# SQLITE_BUSY_TIMEOUT_MS (environment or config file, default 5000) is settled
# by config_init; the fallbacks below serve calls made before it.

# db_arg PATH: a path the sqlite3 CLI cannot mistake for an option or a URI.
db_arg() {
  case $1 in
    /*) printf '%s\n' "$1" ;;
    *) printf './%s\n' "$1" ;;
  esac
}

# sqlite DB [SQL...]: the sqlite3 CLI with no rc file, stopping at the first
# error, with a busy timeout. SQL comes as arguments or on stdin; the database
# path is an argument, never spliced into SQL.
sqlite() {
  local db
  db=$(db_arg "$1")
  shift
  sqlite3 -batch -bail -noheader -init /dev/null -cmd ".timeout ${SQLITE_BUSY_TIMEOUT_MS:-5000}" "$db" "$@"
}

# sqlite_ro DB [SQL...]: the same, read-only.
sqlite_ro() {
  local db
  db=$(db_arg "$1")
  shift
  sqlite3 -batch -bail -noheader -readonly -init /dev/null -cmd ".timeout ${SQLITE_BUSY_TIMEOUT_MS:-5000}" "$db" "$@"
}

# roll_back_hot_journal DB: when a writer killed mid-transaction left a hot
# -journal, roll it back (a read-write open, as SQLite does for any writer),
# so the read-only opens that follow can read the database at all. Only with
# the lock held. Exit 1 when it cannot be (lib/sqlite_ops/common.py says why).
roll_back_hot_journal() {
  [[ -s $1-journal ]] || return 0
  local said
  said=$(py_ops common roll-back-journal --prog="$PROG" --busy-timeout-ms="${SQLITE_BUSY_TIMEOUT_MS:-5000}" -- "$1") || exit
  [[ -z $said ]] || log_warn "$said"
}

# pragma_ok DB PRAGMA: run an integrity pragma; true only for the single line
# 'ok' (the CLI can print error rows and still exit 0). Rows go to stdout.
pragma_ok() {
  local out
  local rc=0
  out=$(sqlite_ro "$1" "PRAGMA $2;" 2>&1) || rc=$?
  if ((rc)); then
    # sqlite3 killed (out of memory, a signal) says nothing: an error line of
    # its own, never a row of the check, so it is no finding.
    printf '%s\n' "${out:-Error: sqlite3 stopped with exit status $rc and no message}"
    return 1
  fi
  [[ $out == ok ]] && return 0
  printf '%s\n' "$out"
  return 1
}

# foreign_keys_ok DB [FK_ACCEPT]: true when the database has no foreign-key
# violations but the orphans FK_ACCEPT accepts (sqlite_ops.fkcheck: one
# anti-join per foreign key, the same answer as PRAGMA foreign_key_check).
# Else the violating rows (table|rowid|parent|fkid), or the error, on stdout.
# On success, stdout holds the line on the accepted orphans, if any. Exit
# status: 4 a problem, 75 the database stayed locked, 1 the check could not run.
foreign_keys_ok() {
  py_ops fkcheck --prog "$PROG" --accept "${2:-}" --busy-timeout-ms "${SQLITE_BUSY_TIMEOUT_MS:-5000}" -- "$1" 2>&1
}

# ---------------------------------------------------------------------------
# Python helpers in lib/sqlite_ops
# ---------------------------------------------------------------------------

# interrupt_before_start NOTE: from here to the script's exec_py_ops, INT,
# TERM and HUP end the script with one line, "PROG: interrupted by SIGINT
# before it started; NOTE", and 128 + the signal. exec_py_ops hands the same
# words to the Python step, which says them until its own handlers are set
# (lib/sqlite_ops/start.py). A signal ignored on entry (nohup's HUP) stays
# ignored: bash cannot trap it, and the Python step leaves it so.
SOPS_START_NOTE="nothing was changed"
interrupt_before_start() {
  SOPS_START_NOTE=$1
  SOPS_SIGNAL_HANDLER=_sops_before_start
  _sops_signal_traps
}

_sops_before_start() {
  die $((128 + $(kill -l "$1"))) "interrupted by SIG$1 before it started; $SOPS_START_NOTE"
}

# py_ops MODULE ARGS...: run a module of lib/sqlite_ops with the standard library only
# (python3 -S: no site-packages), through sqlite_ops.start: a signal while it
# starts ends it quietly (exit 128 + the signal; the calling script speaks).
py_ops() {
  SOPS_START_NOTE='' _sops_python_argv "$@"
  "${SOPS_PY[@]}"
}

# exec_py_ops MODULE ARGS...: the same in place of this shell, as a script's
# last step (its exit code and its signal handling become the script's); a
# signal while it starts says "interrupted by SIG... before it started;
# SOPS_START_NOTE" (see interrupt_before_start).
exec_py_ops() {
  _sops_python_argv "$@"
  exec "${SOPS_PY[@]}"
}

# The stop signals are blocked until sqlite_ops.start has its handlers (held,
# not lost, while the interpreter starts) where env can block them
# (coreutils 8.31 on; older ones start Python with them unblocked).
SOPS_BLOCK=''
if env --block-signal=INT true 2>/dev/null; then
  SOPS_BLOCK=--block-signal=INT,TERM,HUP
fi

# _sops_python_argv MODULE ARGS...: SOPS_PY, the command line.
_sops_python_argv() {
  local module=$1
  shift
  SOPS_PY=(env ${SOPS_BLOCK:+"$SOPS_BLOCK"}
    "PYTHONPATH=$SQLITE_OPS_ROOT/lib${PYTHONPATH:+:$PYTHONPATH}"
    python3 -S -c 'from sqlite_ops.start import main; main()'
    "$PROG" "$SOPS_START_NOTE" "$module" "$@")
}

# ---------------------------------------------------------------------------
# Prometheus textfile output
# ---------------------------------------------------------------------------

# db_name VAR DB: set VAR to the name this database's backups and metrics carry:
# its file name without the extension (the catalog's rule, implemented once).
db_name() {
  local -n _name_var=$1
  _name_var=$(py_ops catalog name -- "$2") || return 1
  _name_var=${_name_var%/} # the catalog ends it with "/" so a trailing newline survives $(...)
}

# prom_file KIND NAME: sqlite_ops_<KIND>_<NAME>.prom, with characters a file
# name should not hold replaced by "_" (the same file names db_metrics uses).
prom_file() {
  local LC_ALL=C
  printf 'sqlite_ops_%s_%s.prom\n' "$1" "${2//[^A-Za-z0-9_.-]/_}"
}

# prom_family NAME HELP: the HELP and TYPE lines of a gauge family.
prom_family() {
  printf '# HELP %s %s\n# TYPE %s gauge\n' "$1" "$2" "$1"
}

# prom_gauge NAME LABELS VALUE HELP: one gauge in the text exposition format.
prom_gauge() {
  prom_family "$1" "$4"
  printf '%s{%s} %s\n' "$1" "$2" "$3"
}

# prom_label_escape VALUE: escape \, " and newline for a label value.
prom_label_escape() {
  local s=${1//\\/\\\\}
  s=${s//\"/\\\"}
  s=${s//$'\n'/\\n}
  printf '%s\n' "$s"
}

# prom_write DIR FILE_NAME: write stdin to DIR/FILE_NAME atomically (the
# node_exporter textfile collector must never read a half-written file).
# A failure here is reported but never fails the operation itself. A DIR
# others may write to gets nothing (see dir_problem). The temp file is made
# by the one open that writes it (O_EXCL, an unpredictable name, mode 0644
# from the start), so nothing planted there is followed, truncated or chmod'ed.
# Called at the end of a pipeline, so in a subshell with no cleanup traps of
# its own: it removes its temp itself on every exit.
prom_write() {
  local dir=$1 name=$2 tmp problem
  if ! mkdir -p -- "$dir" 2>/dev/null; then
    log_warn "cannot create metrics directory $dir; metrics not written"
    cat >/dev/null
    return 0
  fi
  problem=$(dir_problem "$dir")
  if [[ $problem == writable* ]]; then
    log_warn "not writing metrics into $dir: it is $problem, so anyone could replace them or plant files there; chmod go-w it"
    cat >/dev/null
    return 0
  fi
  [[ -z $problem ]] || log_warn "metrics directory $dir is $problem; chown it"
  tmp=$(mktemp -u -- "$dir/.$name.tmp.XXXXXX") || {
    log_warn "cannot write metrics to $dir"
    cat >/dev/null
    return 0
  }
  if [[ $BASHPID != "$$" ]]; then
    # shellcheck disable=SC2064 # the temp's name is fixed now, on purpose
    trap "rm -f -- $(printf '%q' "$tmp")" EXIT
    trap 'exit 129' HUP
    trap 'exit 130' INT
    trap 'exit 143' TERM
  fi
  SOPS_TEMPS+=("$tmp")
  if ! (umask 022 && set -o noclobber && cat >"$tmp") 2>/dev/null; then
    log_warn "cannot write metrics to $dir"
    return 0
  fi
  mv -f -T -- "$tmp" "$dir/$name" || log_warn "cannot publish metrics file $dir/$name"
  forget_temp "$tmp"
}

# prom_merge DIR FILE_NAME: publish stdin (this run's gauges; every family the
# file holds declared with prom_family, samples optional) merged with the file
# earlier runs left there: series this run did not produce keep their values
# (lib/sqlite_ops/promfile.py). Like prom_write, it never fails the operation.
prom_merge() {
  local text
  if ! text=$(py_ops promfile merge -- "$1/$2"); then
    log_warn "cannot merge metrics into $1/$2; metrics not written"
    return 0
  fi
  printf '%s\n' "$text" | prom_write "$1" "$2"
}

# ---------------------------------------------------------------------------
# Small formatting helpers
# ---------------------------------------------------------------------------

# human_bytes N
human_bytes() {
  awk -v b="$1" 'BEGIN {
    split("B KiB MiB GiB TiB", u, " "); i = 1
    while (b >= 1024 && i < 5) { b /= 1024; i++ }
    printf (i == 1 ? "%d %s\n" : "%.1f %s\n"), b, u[i]
  }'
}

# now_epoch: seconds since the epoch, with fractions.
now_epoch() { date +%s.%N; }

# elapsed_since START: seconds (3 decimals) since START from now_epoch.
elapsed_since() {
  awk -v a="$1" -v b="$(now_epoch)" 'BEGIN { printf "%.3f\n", b - a }'
}
