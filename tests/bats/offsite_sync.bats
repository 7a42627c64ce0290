#!/usr/bin/env bats
# Tests for scripts/offsite_sync.sh (the bash layer: options, settings, the
# lock, exit codes) and restore_database.sh --from, against a local-path rclone
# remote in $BATS_TEST_TMPDIR. The real SFTP and crypt servers, the failure
# cases and the lost-machine drill are in tests/python/test_offsite.py.

# shellcheck disable=SC2030,SC2031 # every @test runs in its own subshell on purpose
load helpers

SYNC="$SCRIPTS/offsite_sync.sh"
RESTORE="$SCRIPTS/restore_database.sh"

setup() {
  common_setup
  if ! command -v rclone >/dev/null 2>&1; then
    [[ ${SQLITE_OPS_ALLOW_SKIP_OFFSITE:-} == 1 ]] || {
      echo "rclone is not installed: run tests/install_test_tools.sh (or set SQLITE_OPS_ALLOW_SKIP_OFFSITE=1)" >&2
      return 1
    }
    skip "rclone is not installed (SQLITE_OPS_ALLOW_SKIP_OFFSITE=1)"
  fi
  export DB_PATH="$WORK/dashboard.db" BACKUP_DIR="$WORK/backups" OFFSITE_HOST=testhost
  REMOTE="$WORK/offsite remote"
  make_db "$DB_PATH" 20
  "$SCRIPTS/backup_database.sh" --quiet >/dev/null
}

teardown() {
  [[ -z ${HOLDER_PID:-} ]] || kill "$HOLDER_PID" 2>/dev/null || true
}

sync() { run --separate-stderr "$SYNC" "$@"; }

@test "--help prints the header: usage, settings and exit codes" {
  sync --help
  assert_status 0
  assert_contains "$output" "Usage: offsite_sync.sh [--db PATH] [--dir DIR] [--remote REMOTE]..."
  assert_contains "$output" "OFFSITE_KEEP_MIN"
  assert_contains "$output" "75  a remote cannot be reached now"
}

@test "bad usage is exit 2 with one line naming the problem" {
  sync --bogus
  assert_status 2
  assert_contains "$stderr" "offsite_sync.sh: unknown option '--bogus'"
  sync
  assert_status 2
  assert_contains "$stderr" "no remote: set OFFSITE_REMOTES"
  OFFSITE_KEEP_MIN=many sync --remote "$REMOTE"
  assert_status 2
  assert_contains "$stderr" "OFFSITE_KEEP_MIN must be a whole number"
  sync --remote "$REMOTE" --dir "$WORK/nowhere"
  assert_status 2
  assert_contains "$stderr" "backup directory not found"
}

@test "a remote path with spaces: copies every backup, then the next run has nothing to do" {
  sync --remote "$REMOTE"
  assert_status 0
  assert_contains "$output" "Uploaded: $REMOTE/testhost/dashboard/dashboard_"
  [[ -n $(find "$REMOTE/testhost/dashboard" -name '*.manifest.json') ]]
  sync --remote "$REMOTE"
  assert_status 0
  assert_contains "$output" "(0 uploaded, 1 already there, 0 pruned, 0 pending)"
}

@test "OFFSITE_REMOTES holds several remotes, separated by spaces" {
  OFFSITE_REMOTES="$WORK/a $WORK/b" sync
  assert_status 0
  [[ -d $WORK/a/testhost/dashboard && -d $WORK/b/testhost/dashboard ]]
}

@test "two syncs never overlap: the second exits 75 while the first holds the offsite lock" {
  mkdir -p "$BACKUP_DIR/.offsite"
  hold_lock "$BACKUP_DIR/.offsite/dashboard.sqlite-ops.lock" 5
  sync --remote "$REMOTE"
  assert_status 75
  assert_contains "$stderr" "holds the lock"
  [[ ! -e $REMOTE ]]
}

@test "a sync never blocks a backup: the database's lock is not the offsite lock" {
  mkdir -p "$BACKUP_DIR/.offsite"
  hold_lock "$BACKUP_DIR/.offsite/dashboard.sqlite-ops.lock" 5
  run "$SCRIPTS/backup_database.sh" --quiet
  assert_status 0
}

@test "restore --from lists, verifies and restores a copy; --host needs --from" {
  sync --remote "$REMOTE"
  assert_status 0
  run --separate-stderr "$RESTORE" --from "$REMOTE" --list
  assert_status 0
  assert_contains "$output" "complete"
  run --separate-stderr "$RESTORE" --from "$REMOTE" --verify latest
  assert_status 0
  assert_contains "$output" "Backup verified:"
  run --separate-stderr "$RESTORE" --from "$REMOTE" --yes --to "$WORK/copy.db" latest
  assert_status 0
  assert_equal "$(count_rows "$WORK/copy.db" devices)" 20 "rows"
  run --separate-stderr "$RESTORE" --host testhost --list
  assert_status 2
  assert_contains "$stderr" "--host goes with --from"
}
