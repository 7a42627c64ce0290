# shellcheck shell=bash
# Shared helpers for the bats suites. Each test builds its own world in
# $BATS_TEST_TMPDIR; nothing here depends on another test's leftovers.

bats_require_minimum_version 1.5.0

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
SCRIPTS="$REPO_ROOT/scripts"
export REPO_ROOT SCRIPTS

# The code's own list of config keys (read from lib/common.sh in a subshell,
# so this shell does not get its readonly exit codes).
SOPS_CONFIG_KEYS=$(bash -c 'source "$1/lib/common.sh" && printf "%s" "$SOPS_CONFIG_KEYS"' _ "$REPO_ROOT")

# The real-world corpus lives beside the repository, never inside it.
CORPUS_DIR=${SQLITE_OPS_CORPUS:-$REPO_ROOT/../shared/data}

# common_setup: an isolated environment for one test.
common_setup() {
  export WORK="$BATS_TEST_TMPDIR/w"
  mkdir -p "$WORK"
  # No settings leak in from the machine running the tests: every key the code
  # knows (lib/common.sh's SOPS_CONFIG_KEYS), and what passes state to child runs.
  # shellcheck disable=SC2086 # the list is space-separated on purpose
  unset $SOPS_CONFIG_KEYS QUIET SQLITE_OPS_LOCK_HELD SQLITE_OPS_CONFIG_WARNED
  export SQLITE_OPS_CONFIG=/dev/null
  export TZ=UTC
}

# make_db PATH [ROWS] [JOURNAL_MODE]: a small database with two related tables.
make_db() {
  local db=$1 rows=${2:-100} mode=${3:-wal}
  sqlite3 -batch -bail "$db" >/dev/null <<SQL
PRAGMA journal_mode=$mode;
CREATE TABLE devices(id INTEGER PRIMARY KEY, ip TEXT NOT NULL UNIQUE, hostname TEXT);
CREATE TABLE services(id INTEGER PRIMARY KEY,
  device_id INTEGER NOT NULL REFERENCES devices(id) ON DELETE CASCADE, port INTEGER);
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $rows)
INSERT INTO devices(id, ip, hostname) SELECT i, '10.0.' || (i / 256) || '.' || (i % 256), 'host-' || i FROM n;
INSERT INTO services(device_id, port) SELECT id, 22 FROM devices;
SQL
}

# count_rows DB TABLE
count_rows() {
  sqlite3 -batch "$1" "SELECT count(*) FROM \"$2\";"
}

# corpus_file VAR FILE: set VAR to the path of a corpus file, or skip the test
# saying why. Call it directly, never inside $(...): skip must run in the
# test's own shell, or a machine without the corpus fails instead of skipping.
corpus_file() {
  local path="$CORPUS_DIR/$2"
  [[ -f $path ]] || skip "real-world corpus not found at $CORPUS_DIR (set SQLITE_OPS_CORPUS)"
  printf -v "$1" '%s' "$path"
}

# assert_equal ACTUAL EXPECTED [WHAT]
assert_equal() {
  if [[ $1 != "$2" ]]; then
    printf 'expected %s: %q\n     got: %q\n' "${3:-value}" "$2" "$1" >&2
    return 1
  fi
}

# assert_contains HAYSTACK NEEDLE
assert_contains() {
  if [[ $1 != *"$2"* ]]; then
    printf 'expected to find: %q\n in: %q\n' "$2" "$1" >&2
    return 1
  fi
}

# assert_status EXPECTED: check bats' $status, showing $output on failure.
# shellcheck disable=SC2154 # status and output are set by bats' run
assert_status() {
  if [[ $status -ne $1 ]]; then
    printf 'expected exit %s, got %s; output:\n%s\n' "$1" "$status" "$output" >&2
    return 1
  fi
}

# file_mode PATH: octal permission bits.
file_mode() { stat -c %a -- "$1"; }

# hold_lock LOCK_FILE SECONDS: another "run" holds the lock for SECONDS, in the
# background (its pid in HOLDER_PID). Returns once the lock is really held, so
# a test never races the holder's start.
# shellcheck disable=SC2034 # HOLDER_PID is read by the calling test
hold_lock() {
  flock "$1" sleep "$2" &
  HOLDER_PID=$!
  local _
  for _ in $(seq 200); do
    flock --nonblock "$1" true || return 0
    sleep 0.05
  done
  echo "hold_lock: the lock on $1 was never taken" >&2
  return 1
}

# Background processes a test starts (writers, holders); stop_background kills
# them, from the teardown of the files that use it.
BG_PIDS=()
stop_background() {
  local pid
  for pid in "${BG_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
}

# fake_tool NAME CODE: $WORK/bin/NAME runs the bash CODE (with the tool's
# arguments in "$@"), then the real NAME; put $WORK/bin first on PATH to use it.
fake_tool() {
  local real
  real=$(command -v "$1")
  mkdir -p "$WORK/bin"
  printf '#!/bin/bash\n%s\nexec %q "$@"\n' "$2" "$real" >"$WORK/bin/$1"
  chmod +x "$WORK/bin/$1"
}

# backup_now: a verified backup of DB_PATH with the real script; prints its path.
backup_now() {
  local out
  out=$("$SCRIPTS/backup_database.sh" --quiet "$@") || return
  printf '%s\n' "${out##*Backup completed: }"
}

# content DB: a digest of the database's content (ignores header bookkeeping).
content() { sqlite3 -readonly "$1" .sha3sum; }

# backup_content BACKUP: the content digest of a (compressed) backup file.
backup_content() {
  local tmp="$BATS_TEST_TMPDIR/decompressed.db"
  rm -f "$tmp"
  case $1 in
    *.zst) zstd -q -d -c -- "$1" >"$tmp" ;;
    *.gz) gzip -d -c -- "$1" >"$tmp" ;;
    *) cp -- "$1" "$tmp" ;;
  esac
  content "$tmp"
}
