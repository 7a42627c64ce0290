"""Hostile files and crashed writers, through the real commands.

Each test plays an attacker who can write to the database's directory, or an
application killed mid-transaction, or an operator whose DB_PATH names
something that is not a file, and asserts what matters: the victim file is
unchanged, the exit code is the contract's, nothing is left behind, and the
data is the last committed state. docs/reliability.md ("Hostile input and
crashed writers") lists them.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from opsenv import (
    REPO,
    SCRIPTS,
    blob_db,
    content_digest,
    default_signals,
    integrity_ok,
    kill_writer_mid_transaction,
    ops_env,
    run,
    wait_for_group_end,
)

ROOT = os.geteuid() == 0
VICTIM_TEXT = "precious: must never be truncated or written by sqlite-ops\n"


def world(tmp_path: Path, mode: str = "delete") -> tuple[Path, dict[str, str]]:
    data = tmp_path / "data"
    data.mkdir()
    db = data / "live.db"
    blob_db(db, mode=mode)
    env = ops_env(tmp_path, DB_PATH=str(db), BACKUP_DIR=str(tmp_path / "backups"))
    return db, env


def victim(tmp_path: Path) -> Path:
    path = tmp_path / "victim"
    path.write_text(VICTIM_TEXT)
    return path


def temp_leftovers(*dirs: Path) -> list[str]:
    found = []
    for d in dirs:
        if d.exists():
            found += [str(p) for p in d.rglob(".*") if ".tmp." in p.name]
    return found


# ---------------------------------------------------------------------------
# Item 1: a planted link at the lock's path
# ---------------------------------------------------------------------------

# (name, command line after the script, which database's lock the link sits on)
LOCK_COMMANDS = [
    ("backup", ["backup_database.sh"], "db"),
    ("maintain", ["maintain_database.sh", "check"], "db"),
    ("migrate up", ["migrate", "up", "--no-backup"], "db"),
    ("restore", ["restore_database.sh", "--yes", "latest"], "db"),
    ("restore --to", ["restore_database.sh", "--yes", "--to", "{to}", "latest"], "to"),
]


@pytest.mark.parametrize("link", ["symlink", "dangling symlink", "hard link"])
@pytest.mark.parametrize(("name", "command", "which"), LOCK_COMMANDS,
                         ids=[c[0] for c in LOCK_COMMANDS])
def test_planted_lock_link_is_refused_and_the_victim_untouched(tmp_path, name, command, which,
                                                                 link):
    db, env = world(tmp_path)
    assert run("backup_database.sh", "--quiet", env=env).returncode == 0
    to = db.parent / "drill.db"
    lock = Path(f"{db if which == 'db' else to}.sqlite-ops.lock")
    lock.unlink(missing_ok=True)
    target = victim(tmp_path)
    if link == "symlink":
        lock.symlink_to(target)
    elif link == "dangling symlink":
        target.unlink()
        lock.symlink_to(target)
    else:
        os.link(target, lock)
    before = content_digest(db)
    args = [a.replace("{to}", str(to)) for a in command[1:]]
    result = run(command[0], *args, env=env)
    assert result.returncode == 2, result.stderr
    assert str(lock) in result.stderr
    assert result.stderr.count("\n") == 1, result.stderr  # one line
    if link == "dangling symlink":
        assert not target.exists(), "a file was created through the link"
    else:
        assert target.read_text() == VICTIM_TEXT
    assert content_digest(db) == before
    assert not to.exists()


def test_a_fifo_at_the_lock_path_is_refused_without_hanging(tmp_path):
    db, env = world(tmp_path)
    os.mkfifo(f"{db}.sqlite-ops.lock")
    for command in (["backup_database.sh"], ["maintain_database.sh", "check"],
                    ["migrate", "up", "--no-backup"]):
        result = run(*command, env=env, timeout=60)
        assert result.returncode == 2, result.stderr
        assert "not a regular file" in result.stderr


def test_a_lock_file_owned_by_the_database_owner_is_used(tmp_path):
    """Root's cron job and the application user's `migrate` share one lock file."""
    if not ROOT:
        pytest.skip("needs root to create a file owned by another user")
    db, env = world(tmp_path)
    lock = Path(f"{db}.sqlite-ops.lock")
    lock.touch()
    os.chown(lock, 65534, 65534)
    os.chown(db, 65534, 65534)
    assert run("backup_database.sh", "--quiet", env=env).returncode == 0
    os.chown(db, 0, 0)  # now the lock file's owner is a stranger to this database
    result = run("backup_database.sh", "--quiet", env=env)
    assert result.returncode == 2
    assert "owned by uid 65534" in result.stderr


def test_planted_link_at_the_metrics_file_is_replaced_not_followed(tmp_path):
    db, env = world(tmp_path)
    metrics = tmp_path / "metrics"
    metrics.mkdir(mode=0o755)
    target = victim(tmp_path)
    prom = metrics / "sqlite_ops_backup_live.prom"
    prom.symlink_to(target)
    result = run("backup_database.sh", "--quiet", "--metrics-dir", str(metrics), env=env)
    assert result.returncode == 0, result.stderr
    assert target.read_text() == VICTIM_TEXT
    assert not prom.is_symlink() and "sqlite_backup_last_run_success" in prom.read_text()
    result = run("db_metrics", "--textfile", str(metrics), env=env)
    assert result.returncode == 0, result.stderr
    (metrics / "sqlite_ops_live.prom").unlink()
    (metrics / "sqlite_ops_live.prom").symlink_to(target)
    assert run("db_metrics", "--textfile", str(metrics), env=env).returncode == 0
    assert target.read_text() == VICTIM_TEXT


# ---------------------------------------------------------------------------
# Item 2: directories other users may write to, or own
# ---------------------------------------------------------------------------


def test_backup_refuses_a_directory_others_may_write(tmp_path):
    db, env = world(tmp_path)
    backups = tmp_path / "backups"
    for mode in (0o777, 0o770, 0o1777):
        backups.mkdir()
        backups.chmod(mode)
        result = run("backup_database.sh", env=env)
        assert result.returncode == 2, result.stderr
        assert f"refusing to write backups into {backups}: it is writable by other users" \
            in result.stderr
        assert list(backups.iterdir()) == []
        backups.rmdir()


def test_backup_warns_about_a_directory_another_user_owns(tmp_path):
    if not ROOT:
        pytest.skip("needs root to chown a directory to nobody")
    db, env = world(tmp_path)
    backups = tmp_path / "backups"
    backups.mkdir(mode=0o700)
    os.chown(backups, 65534, 65534)
    result = run("backup_database.sh", env=env)
    assert result.returncode == 0, result.stderr
    assert f"{backups} is owned by nobody, not by this user" in result.stderr
    restore = run("restore_database.sh", "--list", env=env)
    assert restore.returncode == 0
    assert f"{backups} is owned by nobody" in restore.stderr


def test_restore_warns_about_backups_others_may_have_planted(tmp_path):
    db, env = world(tmp_path)
    assert run("backup_database.sh", "--quiet", env=env).returncode == 0
    (tmp_path / "backups").chmod(0o777)
    result = run("restore_database.sh", "--verify", "latest", env=env)
    assert result.returncode == 0, result.stderr
    assert "writable by other users (mode 777): its backups could have been planted" \
        in result.stderr


def test_restore_refuses_a_safety_backup_directory_others_may_write(tmp_path):
    """The safety backup is the restore's undo: it goes nowhere a backup could not."""
    db, env = world(tmp_path)
    assert run("backup_database.sh", "--quiet", env=env).returncode == 0
    before = db.read_bytes()
    pre = tmp_path / "backups" / "pre-restore"
    pre.mkdir()
    pre.chmod(0o777)
    result = run("restore_database.sh", "--yes", "latest", env=env)
    assert result.returncode == 2, result.stderr
    assert f"refusing to write backups into {pre}: it is writable by other users" \
        in result.stderr
    assert list(pre.iterdir()) == [] and db.read_bytes() == before


def test_metrics_are_not_written_into_a_directory_others_may_write(tmp_path):
    db, env = world(tmp_path)
    metrics = tmp_path / "metrics"
    metrics.mkdir()
    metrics.chmod(0o777)
    result = run("backup_database.sh", "--metrics-dir", str(metrics), env=env)
    assert result.returncode == 0, result.stderr  # metrics never fail the backup
    assert f"not writing metrics into {metrics}: it is writable by other users" in result.stderr
    assert list(metrics.iterdir()) == []
    result = run("db_metrics", "--textfile", str(metrics), env=env)
    assert result.returncode == 1
    assert "writable by other users" in result.stderr
    assert list(metrics.iterdir()) == []


def test_metrics_directory_owned_by_another_user_is_warned_about(tmp_path):
    if not ROOT:
        pytest.skip("needs root to chown a directory to nobody")
    db, env = world(tmp_path)
    metrics = tmp_path / "metrics"
    metrics.mkdir(mode=0o755)
    os.chown(metrics, 65534, 65534)
    result = run("backup_database.sh", "--metrics-dir", str(metrics), env=env)
    assert result.returncode == 0, result.stderr
    assert f"metrics directory {metrics} is owned by nobody" in result.stderr
    assert (metrics / "sqlite_ops_backup_live.prom").exists()


# ---------------------------------------------------------------------------
# Item 3: a hot rollback journal left by a writer killed mid-transaction
# ---------------------------------------------------------------------------

def test_backup_rolls_back_a_hot_journal_and_holds_the_last_committed_state(tmp_path):
    db, env = world(tmp_path)
    committed = content_digest(db)
    kill_writer_mid_transaction(db)
    result = run("backup_database.sh", env=env)
    assert result.returncode == 0, result.stderr
    assert "rolled back the hot journal" in result.stderr
    assert not Path(f"{db}-journal").exists()
    assert content_digest(db) == committed
    backup = result.stdout.strip().splitlines()[-1].removeprefix("Backup completed: ")
    assert run("restore_database.sh", "--verify", backup, env=env).returncode == 0
    drill = tmp_path / "drill.db"
    assert run("restore_database.sh", "--yes", "--to", str(drill), backup, env=env).returncode == 0
    assert content_digest(drill) == committed


def test_maintain_check_reports_ok_after_rolling_back_a_hot_journal(tmp_path):
    db, env = world(tmp_path)
    committed = content_digest(db)
    kill_writer_mid_transaction(db)
    result = run("maintain_database.sh", "check", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "integrity_check ok" in result.stdout
    assert content_digest(db) == committed


def test_restore_latest_works_over_a_database_with_a_hot_journal(tmp_path):
    db, env = world(tmp_path)
    assert run("backup_database.sh", "--quiet", env=env).returncode == 0
    committed = content_digest(db)
    kill_writer_mid_transaction(db)
    result = run("restore_database.sh", "--yes", "latest", env=env)
    assert result.returncode == 0, result.stderr
    assert content_digest(db) == committed
    safety = next((tmp_path / "backups" / "pre-restore").glob("live_*.db.zst"))
    assert run("restore_database.sh", "--verify", str(safety), env=env).returncode == 0
    assert integrity_ok(db)


LIVE_WRITER = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("PRAGMA cache_size=10")  # spills: it holds the exclusive lock until COMMIT
conn.execute("BEGIN")
conn.execute("UPDATE t SET v = randomblob(500)")
print("ready", flush=True)
time.sleep(float(sys.argv[2]))
conn.execute("COMMIT")
print("committed", flush=True)
time.sleep(600)
"""


def live_writer(db: Path, hold: float) -> subprocess.Popen[str]:
    """A writer alive mid-transaction, its journal beside the file, that commits
    after ``hold`` seconds."""
    proc = subprocess.Popen([sys.executable, "-c", LIVE_WRITER, str(db), str(hold)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    assert Path(f"{db}-journal").stat().st_size > 0
    return proc


def test_a_live_writers_commit_is_not_called_a_killed_writers_rollback(tmp_path):
    """The journal of a writer that is alive is not hot: the backup waits for
    it (busy timeout) like any reader, and its commit, which removes the
    journal, is no rollback of anything."""
    db, env = world(tmp_path)
    writer = live_writer(db, hold=1.5)
    try:
        result = run("backup_database.sh", env=env)
        assert writer.stdout.readline() == "committed\n"
    finally:
        writer.kill()
        writer.wait()
    assert result.returncode == 0, result.stderr
    assert "rolled back" not in result.stderr
    assert "killed" not in result.stderr
    conn = sqlite3.connect(db)  # the writer's transaction is there, committed
    assert conn.execute("SELECT count(*) FROM t WHERE length(v) = 500").fetchone() == (2000,)
    conn.close()


def test_a_live_writer_holding_the_database_past_the_busy_timeout_is_not_a_killed_one(tmp_path):
    db, env = world(tmp_path)
    env["SQLITE_BUSY_TIMEOUT_MS"] = "300"
    writer = live_writer(db, hold=600)
    try:
        backup = run("backup_database.sh", env=env)
        check = run("maintain_database.sh", "quick-check", env=env)
    finally:
        writer.kill()
        writer.wait()
    for result in (backup, check):
        assert result.returncode != 0
        assert "killed" not in result.stdout + result.stderr
        assert "owner" not in result.stdout + result.stderr
    assert "busy timeout" in backup.stderr


def test_a_cancelled_restore_leaves_a_hot_journal_as_it_found_it(tmp_path):
    """Showing the plan only looks: the file and its hot journal are untouched
    when the operator says no (the plan says the safety backup would roll it
    back); with yes, the restore says it rolled it back, under its own name."""
    if shutil.which("script") is None:
        pytest.fail("script(1) (util-linux) is needed to fake a terminal")
    db, env = world(tmp_path)
    assert run("backup_database.sh", "--quiet", env=env).returncode == 0
    kill_writer_mid_transaction(db)
    journal = Path(f"{db}-journal")
    before = (db.read_bytes(), journal.read_bytes())
    restore = shlex.quote(str(SCRIPTS / "restore_database.sh"))
    asked = subprocess.run(["script", "-qec", f"{restore} latest", "/dev/null"], input="no\n",
                           env=env, capture_output=True, text=True, timeout=120)
    assert asked.returncode == 1, asked.stdout
    assert "has a hot rollback journal (a writer was killed mid-transaction)" in asked.stdout
    assert "restore cancelled; nothing was changed" in asked.stdout
    assert (db.read_bytes(), journal.read_bytes()) == before
    result = run("restore_database.sh", "--yes", "latest", env=env)
    assert result.returncode == 0, result.stderr
    assert "restore_database.sh: warning: rolled back the hot journal" in result.stderr
    assert "backup_database.sh" not in result.stderr


def test_migrate_reads_a_database_with_a_hot_journal(tmp_path):
    db, env = world(tmp_path)
    committed = content_digest(db)
    kill_writer_mid_transaction(db)
    status = run("migrate", "status", env=env)
    assert status.returncode == 0, status.stderr
    assert "pending" in status.stdout
    assert "migrate: warning: rolled back the hot journal" in status.stderr  # never silently
    assert content_digest(db) == committed
    kill_writer_mid_transaction(db)
    # The journal is rolled back before migrate reads the schema; this
    # database's tables are not the migrations' (table t), so `up` refuses
    # the adoption and writes nothing, instead of failing on a read-only open.
    up = run("migrate", "up", env=env)
    assert up.returncode == 3, up.stderr
    assert "nothing was written" in up.stderr
    assert not Path(f"{db}-journal").exists()
    assert content_digest(db) == committed
    assert integrity_ok(db)


def test_db_metrics_stays_read_only_and_says_what_to_do(tmp_path):
    db, env = world(tmp_path)
    kill_writer_mid_transaction(db)
    result = run("db_metrics", "--format", "json", env=env)
    assert result.returncode == 1
    assert "hot rollback journal" in result.stderr and "maintain_database.sh" in result.stderr
    assert Path(f"{db}-journal").exists()  # metrics never write


# ---------------------------------------------------------------------------
# Item 7: a FIFO or a directory as DB_PATH
# ---------------------------------------------------------------------------

NOT_A_FILE_COMMANDS = [
    ["backup_database.sh"],
    ["restore_database.sh", "--yes", "latest"],
    ["restore_database.sh", "--verify", "latest"],
    ["restore_database.sh", "--list"],
    ["maintain_database.sh", "check"],
    ["maintain_database.sh", "--dry-run", "all"],
    ["migrate", "status"],
    ["migrate", "up"],
    ["migrate", "down", "--steps", "1"],
    ["migrate", "validate"],
    ["migrate", "baseline", "1"],
    ["migrate", "schema", "--check"],
    ["db_metrics"],
    ["db_metrics", "--format", "json"],
]


@pytest.mark.parametrize("kind", ["fifo", "directory"])
@pytest.mark.parametrize("command", NOT_A_FILE_COMMANDS, ids=" ".join)
def test_db_path_that_is_not_a_regular_file_is_exit_2_and_creates_nothing(tmp_path, kind,
                                                                            command):
    db, env = world(tmp_path)
    assert run("backup_database.sh", "--quiet", env=env).returncode == 0
    db.unlink()
    os.mkfifo(db) if kind == "fifo" else db.mkdir()
    Path(f"{db}.sqlite-ops.lock").unlink()
    before = sorted(p.name for p in db.parent.iterdir())
    backups_before = sorted(str(p) for p in (tmp_path / "backups").rglob("*"))
    result = run(command[0], *command[1:], env=env, timeout=60)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr == f"{command[0]}: not a regular file: {db}\n"
    assert sorted(p.name for p in db.parent.iterdir()) == before
    assert sorted(str(p) for p in (tmp_path / "backups").rglob("*")) == backups_before


@pytest.mark.parametrize("kind", ["fifo", "directory"])
def test_restore_to_a_target_that_is_not_a_regular_file_is_exit_2(tmp_path, kind):
    db, env = world(tmp_path)
    assert run("backup_database.sh", "--quiet", env=env).returncode == 0
    target = tmp_path / "target.db"
    os.mkfifo(target) if kind == "fifo" else target.mkdir()
    result = run("restore_database.sh", "--yes", "--to", str(target), "latest", env=env,
                 timeout=60)
    assert result.returncode == 2
    assert result.stderr == f"restore_database.sh: not a regular file: {target}\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["backups", "data", "target.db"]


# ---------------------------------------------------------------------------
# Item 9: SIGTERM and SIGINT leave nothing behind
# ---------------------------------------------------------------------------

# A stand-in for a tool that stops at a known point: it says so (a file),
# waits to be released (another file), then runs the real tool. The signal is
# sent while it waits, so each trial interrupts exactly that step.
PAUSING_TOOL = """#!/bin/bash
if [[ "$*" == *"$PAUSE_MATCH"* ]]; then
  echo $$ >>"$PAUSE_DIR/paused"
  while [[ ! -e $PAUSE_DIR/release ]]; do sleep 0.02; done
fi
exec {real} "$@"
"""


def pausing(tmp_path: Path, tool: str, match: str, env: dict[str, str]) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    real = shutil.which(tool)
    assert real, f"{tool} is not installed"
    fake = bin_dir / tool
    fake.write_text(PAUSING_TOOL.replace("{real}", real))
    fake.chmod(0o755)
    pause = tmp_path / "pause"
    pause.mkdir()
    env.update(PATH=f"{bin_dir}:{env['PATH']}", PAUSE_DIR=str(pause), PAUSE_MATCH=match)
    return pause


def wait_for(path: Path, proc: subprocess.Popen[bytes], what: str) -> None:
    for _ in range(3000):  # polling for an event, not timing one
        if path.exists():
            return
        if proc.poll() is not None:
            raise AssertionError(f"the run ended (exit {proc.returncode}) before {what}")
        time.sleep(0.02)
    raise AssertionError(f"never reached {what}")


def interrupt(cmd: list[str], env: dict[str, str], pause: Path, sig: signal.Signals,
              whole_group: bool) -> int:
    """Run cmd until the pausing tool stops it, send sig (to the whole process
    group, as Ctrl-C and systemd do, or to the script alone), release the
    tool, and return the exit code once every process of the run is gone."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, preexec_fn=default_signals)
    try:
        wait_for(pause / "paused", proc, "the paused step")
        if whole_group:
            os.killpg(proc.pid, sig)
        else:
            os.kill(proc.pid, sig)
        (pause / "release").touch()
        code = proc.wait(timeout=120)
        wait_for_group_end(proc.pid)  # orphans of the group (a tool released above) end too
        return code
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


SIGNALS = [signal.SIGTERM, signal.SIGINT]
TARGETS = {"group": True, "script": False}
# (The backup's integrity_check runs inside the packing step, in Python: the
# pause in zstd interrupts it too.)
BACKUP_PAUSES = {"snapshot packing": ("zstd", "-T0")}


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("sig", SIGNALS, ids=lambda s: s.name)
@pytest.mark.parametrize("step", BACKUP_PAUSES)
def test_signal_during_backup_leaves_nothing_behind(tmp_path, step, sig, target):
    db, env = world(tmp_path, mode="wal")
    backups = tmp_path / "backups"
    pause = pausing(tmp_path, *BACKUP_PAUSES[step], env)
    code = interrupt([str(SCRIPTS / "backup_database.sh"), "--compress", "zstd"], env, pause, sig,
                     TARGETS[target])
    assert code == 128 + sig.value
    assert [p for p in backups.iterdir() if not p.name.startswith(".")] == []  # none published
    assert temp_leftovers(backups, db.parent) == []
    assert not list(db.parent.glob("*-journal"))
    assert run("backup_database.sh", "--quiet", env=env).returncode == 0


RESTORE_PAUSES = {"verify's decompression": ("zstd", "-d -q -c"),
                  "the safety backup's packing": ("zstd", "-T0")}


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("sig", SIGNALS, ids=lambda s: s.name)
@pytest.mark.parametrize("step", RESTORE_PAUSES)
def test_signal_during_restore_leaves_nothing_behind(tmp_path, step, sig, target):
    db, env = world(tmp_path, mode="wal")
    backups = tmp_path / "backups"
    assert run("backup_database.sh", "--quiet", env=env).returncode == 0
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("DELETE FROM t WHERE id > 1000")
    conn.close()
    before = content_digest(db)
    pause = pausing(tmp_path, *RESTORE_PAUSES[step], env)
    code = interrupt([str(SCRIPTS / "restore_database.sh"), "--yes", "latest"], env, pause, sig,
                     TARGETS[target])
    assert code in (128 + sig.value, 1), code
    assert content_digest(db) == before  # stopped before the replace: nothing changed
    assert temp_leftovers(backups, db.parent) == []
    assert not list(db.parent.glob("*-journal"))
    assert run("restore_database.sh", "--yes", "latest", env=env).returncode == 0


# The backup run (python3 -m sqlite_ops.backup, what backup_database.sh hands
# over to) with its publication stopped just after the first file of the pair
# is linked into place, until released: the moment a signal could split them.
PAUSING_RUN = """
import os, sys, time
from sqlite_ops import backup
real = backup.publish
def publish(temp, dest):
    real(temp, dest)
    if dest.endswith(".manifest.json"):
        open(os.path.join(os.environ["PAUSE_DIR"], "paused"), "w").close()
        while not os.path.exists(os.path.join(os.environ["PAUSE_DIR"], "release")):
            time.sleep(0.02)
backup.publish = publish
sys.exit(backup.main(sys.argv[1:]))
"""


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("sig", SIGNALS, ids=lambda s: s.name)
def test_a_signal_never_splits_a_backup_from_its_manifest(tmp_path, sig, target):
    db, env = world(tmp_path, mode="wal")
    backups = tmp_path / "backups"
    pause = tmp_path / "pause"
    pause.mkdir()
    env.update(PAUSE_DIR=str(pause), PYTHONPATH=str(REPO / "lib"))
    cmd = [sys.executable, "-c", PAUSING_RUN, "--db", str(db), "--dir", str(backups),
           "--retention-days", "30", "--keep", "7", "--compress", "gzip"]
    code = interrupt(cmd, env, pause, sig, TARGETS[target])
    assert code == 128 + sig.value
    published = sorted(p for p in backups.iterdir() if not p.name.startswith("."))
    assert [p.name for p in published if p.name.endswith(".manifest.json")] != [], published
    assert len(published) == 2, published  # the pair, complete
    backup = next(p for p in published if not p.name.endswith(".manifest.json"))
    assert run("restore_database.sh", "--verify", str(backup), env=env).returncode == 0
    assert temp_leftovers(backups, db.parent) == []
