#!/usr/bin/env bats
# Tests for lib/common.sh: each helper the scripts share.

# shellcheck disable=SC2030,SC2031 # every @test runs in its own subshell on purpose
load helpers

setup() {
  common_setup
  PROG=testprog
  # shellcheck source=lib/common.sh
  source "$REPO_ROOT/lib/common.sh"
}

@test "umask is 077 after sourcing: new files are private" {
  touch "$WORK/f"
  assert_equal "$(file_mode "$WORK/f")" 600 "mode"
}

@test "die prints one line prefixed with the program name and exits with the code" {
  run --separate-stderr die 3 "checksum mismatch"
  assert_status 3
  assert_equal "$stderr" "testprog: checksum mismatch"
  assert_equal "$output" ""
}

@test "die keeps the error on one line even when the message holds a newline" {
  run --separate-stderr die 2 $'database not found: /data/odd\nname.db'
  assert_status 2
  assert_equal "$stderr" 'testprog: database not found: /data/odd\nname.db'
}

@test "log_info is silenced by QUIET=1; warnings are not" {
  run --separate-stderr bash -c "QUIET=1; PROG=p; source '$REPO_ROOT/lib/common.sh'; log_info hello; log_warn careful"
  assert_status 0
  [[ $stderr != *hello* ]]
  assert_contains "$stderr" "p: warning: careful"
}

@test "log lines are timestamped UTC" {
  run --separate-stderr log_info "started"
  [[ $stderr =~ ^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:]{8}Z\ testprog:\ info:\ started$ ]]
}

@test "show_help prints the header comment block of a script" {
  printf '%s\n' '#!/usr/bin/env bash' '# Summary: does a thing' '#' '# Usage: thing [--x]' '' 'echo body' >"$WORK/s"
  run show_help "$WORK/s"
  assert_equal "$output" $'Summary: does a thing\n\nUsage: thing [--x]'
}

@test "config precedence: flag > environment > config file > default" {
  printf 'DB_PATH=/from/file\nKEEP_MIN="9"\nRETENTION_DAYS=12\n' >"$WORK/conf"
  SOPS_FLAGS[CONFIG]="$WORK/conf"
  SOPS_FLAGS[DB_PATH]=/from/flag
  export KEEP_MIN=5
  config_init
  assert_equal "$(cfg DB_PATH /default)" /from/flag
  assert_equal "$(cfg KEEP_MIN 7)" 5
  assert_equal "$(cfg RETENTION_DAYS 30)" 12
  assert_equal "$(cfg COMPRESS gzip)" gzip
}

@test "the config file is read as data, never executed" {
  # shellcheck disable=SC2016 # the command substitutions must stay unexpanded
  printf 'DB_PATH=$(touch %s/pwned)\nBACKUP_DIR=`touch %s/pwned2`\n' "$WORK" "$WORK" >"$WORK/conf"
  config_load "$WORK/conf"
  [[ ! -e $WORK/pwned && ! -e $WORK/pwned2 ]]
  assert_equal "${SOPS_FILE[DB_PATH]}" "\$(touch $WORK/pwned)"
}

@test "a malformed config line is a usage error naming the line" {
  printf 'KEEP_MIN=3\nthis is not a setting\n' >"$WORK/conf"
  run --separate-stderr config_load "$WORK/conf"
  assert_status 2
  assert_contains "$stderr" "line 2"
}

@test "an unknown setting in the config file (a typo) is warned about with its line, not silently defaulted" {
  printf 'DB_PATH=/d\nBACKUPDIR=/typo\n' >"$WORK/conf"
  run --separate-stderr config_load "$WORK/conf"
  assert_status 0
  assert_contains "$stderr" "config file $WORK/conf line 2: unknown setting BACKUPDIR, ignored (known: DB_PATH BACKUP_DIR"
  printf 'DB_PATH=/d\n' >"$WORK/conf"
  run --separate-stderr config_load "$WORK/conf"
  assert_equal "$stderr" ""
  # A child run (a restore's safety backup) reads the same file: said once.
  printf 'BACKUPDIR=/typo\n' >"$WORK/conf"
  SQLITE_OPS_CONFIG_WARNED="$WORK/conf" run --separate-stderr config_load "$WORK/conf"
  assert_equal "$stderr" ""
}

@test "LOG_SYSLOG and SQLITE_BUSY_TIMEOUT_MS come from the config file too (the environment wins)" {
  printf 'LOG_SYSLOG=1\nSQLITE_BUSY_TIMEOUT_MS=1234\n' >"$WORK/conf"
  SQLITE_OPS_CONFIG="$WORK/conf"
  unset SQLITE_BUSY_TIMEOUT_MS
  config_init
  assert_equal "$LOG_SYSLOG" 1
  assert_equal "$SQLITE_BUSY_TIMEOUT_MS" 1234
  SQLITE_BUSY_TIMEOUT_MS=99 LOG_SYSLOG=0
  config_init
  assert_equal "$SQLITE_BUSY_TIMEOUT_MS" 99
  assert_equal "$LOG_SYSLOG" 0
}

@test "SQLITE_OPS_CONFIG names the config file when no --config is given" {
  printf 'BACKUP_DIR=/b\n' >"$WORK/conf"
  SQLITE_OPS_CONFIG="$WORK/conf"
  config_init
  assert_equal "$(cfg BACKUP_DIR /d)" /b
}

@test "set_flag refuses an option without a value" {
  run --separate-stderr set_flag DB_PATH --db
  assert_status 2
  assert_contains "$stderr" "--db needs a value"
}

@test "parse_common_option consumes shared options and leaves others" {
  parse_common_option --db /x/y.db
  assert_equal "$SOPS_SHIFT" 2
  assert_equal "${SOPS_FLAGS[DB_PATH]}" /x/y.db
  parse_common_option --quiet
  assert_equal "$SOPS_SHIFT" 1
  assert_equal "$QUIET" 1
  parse_common_option --bogus
  assert_equal "$SOPS_SHIFT" 0
}

@test "parse_options: shared options here, the rest to the script's handler" {
  seen=()
  handler() {
    SOPS_SHIFT=1
    case $1 in
      --keep) seen+=("keep=$2") && SOPS_SHIFT=2 ;;
      --) seen+=("rest:${*:2}") && SOPS_SHIFT=$# ;;
      *) seen+=("$1") ;;
    esac
  }
  parse_options handler --db "/a b.db" --keep 3 task1 --quiet -- --not-an-option x
  assert_equal "${SOPS_FLAGS[DB_PATH]}" "/a b.db"
  assert_equal "$QUIET" 1
  assert_equal "${seen[*]}" "keep=3 task1 rest:--not-an-option x"
  printf '%s\n' '#!/usr/bin/env bash' '# Usage: x [--help]' >"$WORK/x"
  run bash -c "source '$REPO_ROOT/lib/common.sh'; parse_options true --help" "$WORK/x"
  assert_status 0
  assert_equal "$output" "Usage: x [--help]"
}

@test "sqlite ignores the user's ~/.sqliterc" {
  make_db "$WORK/t.db" 2
  printf '.mode json\n.headers on\n' >"$WORK/.sqliterc"
  HOME=$WORK run sqlite "$WORK/t.db" "SELECT count(*) FROM devices;"
  assert_equal "$output" 2
}

@test "sqlite opens a relative path that looks like an option or a URI as a file" {
  cd "$WORK"
  make_db "./-x.db" 1
  make_db "./file:y.db" 1
  run sqlite "-x.db" "SELECT count(*) FROM devices;"
  assert_equal "$output" 1
  run sqlite "file:y.db" "SELECT count(*) FROM devices;"
  assert_equal "$output" 1
}

@test "sqlite stops at the first failing statement (-bail)" {
  make_db "$WORK/t.db" 1
  run sqlite "$WORK/t.db" "INSERT INTO nope VALUES (1);" "INSERT INTO devices(ip) VALUES ('x');"
  [[ $status -ne 0 ]]
  assert_equal "$(count_rows "$WORK/t.db" devices)" 1
}

@test "is_sqlite_file: accepts a database, refuses text, empty and missing files" {
  make_db "$WORK/t.db" 1
  printf 'hello\n' >"$WORK/text"
  : >"$WORK/empty"
  is_sqlite_file "$WORK/t.db"
  run ! is_sqlite_file "$WORK/text"
  run ! is_sqlite_file "$WORK/empty"
  run ! is_sqlite_file "$WORK/missing"
}

@test "require_database: exit 2 for a missing or non-SQLite file" {
  printf 'hello\n' >"$WORK/text"
  run --separate-stderr require_database "$WORK/missing"
  assert_status 2
  assert_contains "$stderr" "database not found"
  run --separate-stderr require_database "$WORK/text"
  assert_status 2
  assert_contains "$stderr" "not an SQLite database"
}

@test "pragma_ok is true only for the single line 'ok'" {
  make_db "$WORK/t.db" 50
  pragma_ok "$WORK/t.db" integrity_check
  # Break an index: make it claim another column, so table and index disagree.
  sqlite3 "$WORK/t.db" "CREATE INDEX by_host ON devices(hostname);"
  sqlite3 "$WORK/t.db" "PRAGMA writable_schema=ON; UPDATE sqlite_schema SET sql='CREATE INDEX by_host ON devices(ip)' WHERE name='by_host';" >/dev/null
  run sqlite3 "$WORK/t.db" "PRAGMA integrity_check;"
  assert_status 0 # the CLI exits 0 while printing error rows
  run pragma_ok "$WORK/t.db" integrity_check
  assert_status 1
  [[ -n $output && $output != ok ]]
}

@test "foreign_keys_ok reports orphan rows" {
  make_db "$WORK/t.db" 5
  foreign_keys_ok "$WORK/t.db"
  sqlite3 "$WORK/t.db" "PRAGMA foreign_keys=OFF; DELETE FROM devices WHERE id=2;"
  run foreign_keys_ok "$WORK/t.db"
  assert_status 4 # a problem, not "could not run" (1)
  assert_contains "$output" "services"
}

@test "temp_dir_in creates a private directory inside DIR, removed on exit" {
  run bash -c "source '$REPO_ROOT/lib/common.sh'; install_traps; temp_dir_in t '$WORK'; echo \"\$t\"; stat -c %a \"\$t\""
  assert_status 0
  [[ ${lines[0]} == "$WORK/.sqlite-ops.tmp."* ]]
  assert_equal "${lines[1]}" 700 "mode"
  [[ ! -e ${lines[0]} ]]
}

@test "temps are removed when the script is killed by TERM" {
  bash -c "source '$REPO_ROOT/lib/common.sh'; install_traps; temp_dir_in t '$WORK'; echo \"\$t\" >'$WORK/name'; sleep 30 & wait" &
  local pid=$!
  for _ in $(seq 50); do [[ -s $WORK/name ]] && break; sleep 0.1; done
  kill -TERM "$pid"
  wait "$pid" || true
  [[ ! -e $(cat "$WORK/name") ]]
}

@test "ensure_private_dir creates 0700 whatever the caller's umask" {
  umask 000
  ensure_private_dir "$WORK/backups"
  assert_equal "$(file_mode "$WORK/backups")" 700
  # Only the directory itself: a missing parent is a wrong setting, refused.
  run --separate-stderr ensure_private_dir "$WORK/missing/backups"
  assert_status 2
  [[ ! -e $WORK/missing ]]
}

@test "lock_acquire: a second holder gets exit 75 at once" {
  make_db "$WORK/t.db" 1
  hold_lock "$WORK/t.db.sqlite-ops.lock" 5
  run --separate-stderr lock_acquire "$WORK/t.db" 0 test
  kill "$HOLDER_PID"
  assert_status 75
  assert_contains "$stderr" "holds the lock"
}

@test "lock_acquire waits up to the timeout, then takes the freed lock" {
  make_db "$WORK/t.db" 1
  hold_lock "$WORK/t.db.sqlite-ops.lock" 1
  run lock_acquire "$WORK/t.db" 10 test
  assert_status 0
}

@test "lock_acquire is skipped when the parent already holds this lock" {
  make_db "$WORK/t.db" 1
  hold_lock "$WORK/t.db.sqlite-ops.lock" 3
  SQLITE_OPS_LOCK_HELD="$WORK/t.db.sqlite-ops.lock" run lock_acquire "$WORK/t.db" 0 test
  kill "$HOLDER_PID"
  assert_status 0
}

@test "the lock file is the same one the Python side takes" {
  run python3 -c "import sys; sys.path.insert(0, '$REPO_ROOT/lib'); from sqlite_ops.common import lock_path_for; print(lock_path_for('$WORK/t.db'))"
  assert_equal "$output" "$(lock_path_for "$WORK/t.db")"
}

@test "a database reached through a symlink shares its lock (bash and Python agree)" {
  make_db "$WORK/real.db" 1
  mkdir "$WORK/links"
  ln -s "$WORK/real.db" "$WORK/links/alias.db"
  assert_equal "$(lock_path_for "$WORK/links/alias.db")" "$WORK/real.db.sqlite-ops.lock"
  run python3 -c "import sys; sys.path.insert(0, '$REPO_ROOT/lib'); from sqlite_ops.common import lock_path_for; print(lock_path_for('$WORK/links/alias.db'))"
  assert_equal "$output" "$WORK/real.db.sqlite-ops.lock"
  hold_lock "$WORK/real.db.sqlite-ops.lock" 3
  run --separate-stderr lock_acquire "$WORK/links/alias.db" 0 test
  kill "$HOLDER_PID"
  assert_status 75
}

@test "every script can be sourced without running, even under set -e" {
  local script
  for script in "$REPO_ROOT"/scripts/*.sh; do
    run bash -c "set -euo pipefail; source '$script'; echo sourced"
    assert_status 0
    assert_equal "${lines[-1]}" sourced
  done
}

@test "require_tool names the package to install" {
  run --separate-stderr require_tool no-such-tool-xyz some-package
  assert_status 1
  assert_contains "$stderr" "install the 'some-package' package"
}

@test "prom_label_escape escapes backslash, quote and newline" {
  run prom_label_escape $'a"b\\c\nd'
  assert_equal "$output" 'a\"b\\c\nd'
}

@test "prom_write publishes a complete, readable file and leaves no temp" {
  printf 'sqlite_x 1\n' | prom_write "$WORK/m" test.prom
  assert_equal "$(cat "$WORK/m/test.prom")" "sqlite_x 1"
  assert_equal "$(file_mode "$WORK/m/test.prom")" 644
  assert_equal "$(find "$WORK/m" -name '.*tmp*' | wc -l)" 0
}

@test "human_bytes" {
  assert_equal "$(human_bytes 512)" "512 B"
  assert_equal "$(human_bytes 1572864)" "1.5 MiB"
}

@test "db_name and prom_file: one rule for every script's backup and metrics file names" {
  db_name n "/data/my db.sqlite"
  assert_equal "$n" "my db"
  db_name n "/data/dashboard.db"
  assert_equal "$n" dashboard
  assert_equal "$(prom_file backup "my db")" "sqlite_ops_backup_my_db.prom"
  assert_equal "$(prom_file maintenance 'a"b/c')" "sqlite_ops_maintenance_a_b_c.prom"
}

@test "no test looks up the corpus inside \$(...), where skip fails instead of skipping" {
  run grep -nE '\$\((corpus_file|corpus_copy)' "$REPO_ROOT"/tests/bats/*.bats
  assert_status 1
}

# --- Hostile files (issue: a planted link at the lock's path) ---------------

@test "lock_acquire never writes through a symlink planted at the lock's path (exit 2, victim unchanged)" {
  make_db "$WORK/t.db" 1
  printf 'precious\n' >"$WORK/victim"
  ln -s "$WORK/victim" "$WORK/t.db.sqlite-ops.lock"
  run --separate-stderr lock_acquire "$WORK/t.db" 0 test
  assert_status 2
  assert_equal "$stderr" "testprog: refusing to use lock file $WORK/t.db.sqlite-ops.lock: it is a symbolic link (a link planted there would make this run overwrite its target); remove it and retry; nothing was changed"
  assert_equal "$(cat "$WORK/victim")" precious
  # Dangling: nothing is created through it either.
  rm "$WORK/victim"
  run --separate-stderr lock_acquire "$WORK/t.db" 0 test
  assert_status 2
  [[ ! -e $WORK/victim ]]
}

@test "lock_acquire refuses a hard link, a FIFO and a stranger's file at the lock's path" {
  make_db "$WORK/t.db" 1
  printf 'precious\n' >"$WORK/victim"
  ln "$WORK/victim" "$WORK/t.db.sqlite-ops.lock"
  run --separate-stderr lock_acquire "$WORK/t.db" 0 test
  assert_status 2
  assert_contains "$stderr" "it has 2 hard links"
  assert_equal "$(cat "$WORK/victim")" precious
  rm "$WORK/t.db.sqlite-ops.lock"
  mkfifo "$WORK/t.db.sqlite-ops.lock"
  run --separate-stderr timeout 20 bash -c "source '$REPO_ROOT/lib/common.sh'; lock_acquire '$WORK/t.db' 0 test"
  assert_status 2
  assert_contains "$stderr" "not a regular file"
  rm "$WORK/t.db.sqlite-ops.lock"
  [[ $EUID == 0 ]] || skip "needs root to make a file owned by another user"
  touch "$WORK/t.db.sqlite-ops.lock"
  chown nobody "$WORK/t.db.sqlite-ops.lock"
  run --separate-stderr lock_acquire "$WORK/t.db" 0 test
  assert_status 2
  assert_contains "$stderr" "owned by uid $(id -u nobody), neither this user nor the database's owner"
}

@test "lock_acquire creates a private lock file and records the holder through its descriptor" {
  make_db "$WORK/t.db" 1
  lock_acquire "$WORK/t.db" 0 test
  assert_equal "$(file_mode "$WORK/t.db.sqlite-ops.lock")" 600
  assert_equal "$(cat "$WORK/t.db.sqlite-ops.lock")" "$$ test $(readlink /proc/self/ns/pid)"
  [[ ! -L $WORK/t.db.sqlite-ops.lock ]]
}

@test "dir_problem: writable by others or owned by another user; root-owned and private are fine" {
  mkdir -m 700 "$WORK/private" && mkdir -m 777 "$WORK/open" && mkdir -m 1777 "$WORK/sticky" && mkdir -m 770 "$WORK/group"
  assert_equal "$(dir_problem "$WORK/private")" ""
  assert_equal "$(dir_problem "$WORK/open")" "writable by other users (mode 777)"
  assert_equal "$(dir_problem "$WORK/sticky")" "writable by other users (mode 1777)"
  assert_equal "$(dir_problem "$WORK/group")" "writable by other users (mode 770)"
  [[ $EUID == 0 ]] || skip "needs root to chown a directory to nobody"
  chown nobody "$WORK/private"
  assert_equal "$(dir_problem "$WORK/private")" "owned by nobody, not by this user (root)"
  assert_equal "$(dir_problem /)" ""
}

@test "prom_write writes nothing into a directory others may write to" {
  mkdir -m 777 "$WORK/metrics"
  run --separate-stderr bash -c "source '$REPO_ROOT/lib/common.sh'; PROG=t; echo 'x 1' | prom_write '$WORK/metrics' a.prom"
  assert_status 0
  assert_contains "$stderr" "not writing metrics into $WORK/metrics: it is writable by other users (mode 777)"
  assert_equal "$(ls -A "$WORK/metrics")" ""
}

@test "require_regular_or_missing: a FIFO or a directory is exit 2, a missing path or a symlinked file passes" {
  mkfifo "$WORK/fifo"
  mkdir "$WORK/dir"
  run --separate-stderr require_regular_or_missing "$WORK/fifo"
  assert_status 2
  assert_equal "$stderr" "testprog: not a regular file: $WORK/fifo"
  run --separate-stderr require_regular_or_missing "$WORK/dir"
  assert_status 2
  touch "$WORK/file" && ln -s "$WORK/file" "$WORK/link"
  require_regular_or_missing "$WORK/missing"
  require_regular_or_missing "$WORK/link"
}

# --- Temp files after SIGTERM/SIGINT -------------------------------------------

# wait_gone PID: until the process has ended (an event, not a timing).
wait_gone() {
  while kill -0 "$1" 2>/dev/null; do sleep 0.02; done
}

@test "a background job cannot recreate its output after the exit cleanup: jobs are stopped first" {
  # The job waits (as one just forked would, before opening its output) and
  # then writes its output into a registered temp; the script is killed meanwhile.
  bash -c "source '$REPO_ROOT/lib/common.sh'; install_traps; temp_dir_in t '$WORK'
    ( echo \$BASHPID >'$WORK/job'; while [[ ! -e '$WORK/release' ]]; do sleep 0.02; done; mkdir -p \"\$t\" && : >\"\$t/out\" ) &
    echo \"\$t\" >'$WORK/name'; wait" &
  local pid=$!
  until [[ -s $WORK/name && -s $WORK/job ]]; do sleep 0.02; done
  kill -TERM "$pid"
  wait "$pid" || true
  touch "$WORK/release"
  wait_gone "$(cat "$WORK/job")"
  [[ ! -e $(cat "$WORK/name") ]]
  assert_equal "$(find "$WORK" -name '.sqlite-ops.tmp.*')" ""
}

@test "a signal while mktemp runs is held until its file is registered, then acted on" {
  # A mktemp that makes its file, then stops before printing the name.
  mkdir "$WORK/bin"
  cat >"$WORK/bin/mktemp" <<SH
#!/bin/bash
name=\$($(command -v mktemp) "\$@")
touch '$WORK/made'
while [[ ! -e '$WORK/release' ]]; do sleep 0.02; done
echo "\$name"
SH
  chmod +x "$WORK/bin/mktemp"
  # (SIGINT too, in tests/python/test_hostile_input.py: a job started with &
  # here would ignore it, as bash starts background jobs.)
  for sig in TERM HUP; do
    rm -f "$WORK/made" "$WORK/release"
    PATH="$WORK/bin:$PATH" bash -c "source '$REPO_ROOT/lib/common.sh'; install_traps; temp_dir_in t '$WORK'; echo published >'$WORK/out'" &
    local pid=$!
    until [[ -e $WORK/made ]]; do sleep 0.02; done
    kill -"$sig" "$pid"
    touch "$WORK/release"
    local rc=0
    wait "$pid" || rc=$?
    assert_equal "$rc" $((128 + $(kill -l "$sig")))
    assert_equal "$(find "$WORK" -name '.sqlite-ops.tmp.*')" ""
    [[ ! -e $WORK/out ]]
  done
}
