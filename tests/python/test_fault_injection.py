"""kill -9 at random moments of backup, restore, migrate and maintenance.

Each trial starts the real script in its own process group, kills the whole
group with SIGKILL after a seeded random delay (as a power cut, an OOM kill
of the cgroup or a systemd timeout would), and then checks what an operator
cares about:

* the database passes integrity_check and holds exactly the before-state or
  the after-state, nothing in between;
* no partial backup is ever published under a final name;
* the next run succeeds and leaves no temp files behind.

The fast suite (``make test``) runs a few seeded trials of each; the slow
suite (``make test-slow``) runs 20 of each.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest
from opsenv import (
    SCRIPTS,
    applied_versions,
    content_digest,
    data_digest,
    default_signals,
    integrity_ok,
    make_dashboard,
    ops_env,
    run,
    wait_for_group_end,
)

from sqlite_ops.catalog import list_backups

FAST_SEEDS = [1, 2, 3]
SLOW_SEEDS = list(range(100, 120))


def _kill_at_random(cmd: list[str], env: dict[str, str], seed: int, span: float) -> int | None:
    """Start cmd, SIGKILL its process group after a seeded delay in [0, span).
    Returns the exit code if it finished first, else None."""
    delay = random.Random(seed).uniform(0, span)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, preexec_fn=default_signals)
    try:
        return proc.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return None


def _signal_at_random(cmd: list[str], env: dict[str, str], seed: int, span: float) -> int | None:
    """Start cmd, then after a seeded delay in [0, span) send SIGTERM or SIGINT
    (seeded too) to its whole process group (Ctrl-C, a systemd stop) or to the
    script alone (kill PID). Returns the exit code; the run cleans up itself."""
    rnd = random.Random(seed)
    delay = rnd.uniform(0, span)
    sig = rnd.choice([signal.SIGTERM, signal.SIGINT])
    whole_group = rnd.choice([True, False])
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, preexec_fn=default_signals)
    try:
        return proc.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        pass
    try:
        if whole_group:
            os.killpg(proc.pid, sig)
        else:
            os.kill(proc.pid, sig)
    except ProcessLookupError:
        pass
    code = proc.wait(timeout=300)
    wait_for_group_end(proc.pid)  # and every process of the run has ended
    return code


def _duration(cmd: list[str], env: dict[str, str]) -> float:
    start = time.monotonic()
    subprocess.run(cmd, env=env, check=True, capture_output=True)
    return time.monotonic() - start


def _temp_files(directory: Path) -> list[Path]:
    return [p for p in directory.rglob(".*tmp*")] if directory.exists() else []


def _world(tmp_path: Path, devices: int = 20000) -> tuple[Path, dict[str, str]]:
    db = tmp_path / "app db.db"
    env = ops_env(tmp_path, DB_PATH=str(db), BACKUP_DIR=str(tmp_path / "backups"))
    make_dashboard(db, devices=devices, env=env)
    return db, env


def _backup_trial(tmp_path: Path, seed: int, stop=_kill_at_random) -> None:
    db, env = _world(tmp_path)
    before = content_digest(db)
    cmd = [str(SCRIPTS / "backup_database.sh"), "--quiet", "--compress", "gzip"]
    span = _duration(cmd, env) * 1.2
    # Start from one good backup, which a killed run must never damage.
    first = list_backups(tmp_path / "backups", "app db")
    assert len(first) == 1
    time.sleep(1.1)  # backup names have one-second resolution
    stop(cmd, env, seed, span)
    if stop is _signal_at_random:  # an orderly exit leaves nothing for the next run to sweep
        assert _temp_files(tmp_path / "backups") == [] and _temp_files(db.parent) == []

    assert integrity_ok(db) and content_digest(db) == before, "backup changed the database"
    for backup in list_backups(tmp_path / "backups", "app db"):
        # A file under a final name is complete: it verifies against its manifest.
        proc = run("restore_database.sh", "--verify", str(backup.path), env=env)
        assert proc.returncode == 0, f"partial backup published: {backup.path.name}"
    time.sleep(1.1)
    proc = run("backup_database.sh", "--quiet", env=env)
    assert proc.returncode == 0, proc.stderr
    assert _temp_files(tmp_path / "backups") == []


def _restore_trial(tmp_path: Path, seed: int, stop=_kill_at_random) -> None:
    db, env = _world(tmp_path)
    proc = run("backup_database.sh", "--quiet", env=env)
    assert proc.returncode == 0, proc.stderr
    backup_state = content_digest(db)
    conn_cmd = ["sqlite3", str(db),
                "DELETE FROM services; UPDATE devices SET hostname = 'changed after backup';"]
    subprocess.run(conn_cmd, check=True)
    current_state = content_digest(db)
    assert current_state != backup_state
    cmd = [str(SCRIPTS / "restore_database.sh"), "--yes", "--quiet", "latest"]
    # The restore's own duration: measured on a scratch copy of the same world.
    span = _duration([str(SCRIPTS / "restore_database.sh"), "--verify", "latest"], env) * 2.5
    stop(cmd, env, seed, span)
    if stop is _signal_at_random:  # an orderly exit leaves nothing for the next run to sweep
        assert _temp_files(tmp_path / "backups") == [] and _temp_files(db.parent) == []

    assert integrity_ok(db)
    assert content_digest(db) in (current_state, backup_state), "restore left a mixed state"
    proc = run("restore_database.sh", "--yes", "--quiet", "latest", env=env)
    assert proc.returncode == 0, proc.stderr
    assert content_digest(db) == backup_state
    assert _temp_files(tmp_path / "backups") == []
    assert _temp_files(db.parent) == []


def _migrate_trial(tmp_path: Path, seed: int) -> None:
    db, env = _world(tmp_path)
    migrations = tmp_path / "migrations"
    migrations.mkdir()
    for src in (SCRIPTS.parent / "migrations").glob("0*"):
        (migrations / src.name).write_bytes(src.read_bytes())
    (migrations / "099_copy_devices.sql").write_text(
        "-- migrate:up\n"
        "CREATE TABLE device_copy(id INTEGER PRIMARY KEY, ip TEXT, host TEXT);\n"
        "INSERT INTO device_copy SELECT id, ip, hostname FROM devices;\n"
        "CREATE INDEX device_copy_ip ON device_copy(ip);\n"
        "UPDATE devices SET notes = 'migrated', updated_at = '2000-01-01T00:00:00Z';\n"
        "-- migrate:down\nDROP TABLE device_copy;\n"
    )
    env = {**env, "MIGRATIONS_DIR": str(migrations)}
    cmd = [str(SCRIPTS / "migrate"), "up", "--no-backup"]
    before = data_digest(db)
    scratch = tmp_path / "scratch.db"
    scratch.write_bytes(db.read_bytes())
    span = _duration([*cmd, "--db", str(scratch)], env) * 1.2
    after = data_digest(scratch)
    _kill_at_random(cmd, env, seed, span)

    # The data (every table but the bookkeeping one, whose applied_at differs
    # per run) is exactly before or after, and the record agrees with it.
    assert integrity_ok(db)
    state = data_digest(db)
    assert state in (before, after), "migration left a half-applied state"
    shipped = [int(p.name[:3]) for p in sorted((SCRIPTS.parent / "migrations").glob("0*"))]
    assert applied_versions(db) == (shipped if state == before else [*shipped, 99])
    proc = run("migrate", "up", "--no-backup", env=env)
    assert proc.returncode == 0, proc.stderr
    assert data_digest(db) == after and applied_versions(db) == [*shipped, 99]


def _maintain_trial(tmp_path: Path, seed: int) -> None:
    db, env = _world(tmp_path)
    subprocess.run(["sqlite3", str(db), "DELETE FROM services WHERE id % 2 = 0;"], check=True)
    before = content_digest(db)
    cmd = [str(SCRIPTS / "maintain_database.sh"), "--quiet", "--force", "check", "vacuum"]
    scratch_env = {**env, "DB_PATH": str(tmp_path / "scratch.db")}
    (tmp_path / "scratch.db").write_bytes(db.read_bytes())
    span = _duration(cmd, scratch_env) * 1.2
    _kill_at_random(cmd, env, seed, span)

    assert integrity_ok(db)
    assert content_digest(db) == before, "maintenance changed the data"
    proc = run("maintain_database.sh", "--quiet", "check", env=env)
    assert proc.returncode == 0, proc.stderr


TRIALS = {
    "backup": _backup_trial,
    "restore": _restore_trial,
    "migrate": _migrate_trial,
    "maintain": _maintain_trial,
}


@pytest.mark.parametrize("seed", FAST_SEEDS)
@pytest.mark.parametrize("operation", sorted(TRIALS))
def test_kill_9_fast(operation, seed, tmp_path):
    TRIALS[operation](tmp_path, seed)


@pytest.mark.slow
@pytest.mark.parametrize("seed", SLOW_SEEDS)
@pytest.mark.parametrize("operation", sorted(TRIALS))
def test_kill_9_seeded_trials(operation, seed, tmp_path):
    TRIALS[operation](tmp_path, seed)


# SIGTERM and SIGINT (systemd's stop, Ctrl-C): the run exits on its own, and
# must leave no temp file behind, not even for the next run to sweep. (A
# restore stopped while it writes into the database leaves SQLite's own hot
# journal there, which the next open rolls back: the before-state.)
SIGNAL_TRIALS = {"backup": _backup_trial, "restore": _restore_trial}


@pytest.mark.parametrize("seed", FAST_SEEDS[:2])
@pytest.mark.parametrize("operation", sorted(SIGNAL_TRIALS))
def test_sigterm_sigint_fast(operation, seed, tmp_path):
    SIGNAL_TRIALS[operation](tmp_path, seed, stop=_signal_at_random)


@pytest.mark.slow
@pytest.mark.parametrize("seed", SLOW_SEEDS)
@pytest.mark.parametrize("operation", sorted(SIGNAL_TRIALS))
def test_sigterm_sigint_seeded_trials(operation, seed, tmp_path):
    SIGNAL_TRIALS[operation](tmp_path, seed, stop=_signal_at_random)


# ---------------------------------------------------------------------------
# The world changing under a run: a read-only backup directory, a database
# that disappears mid-backup.
# ---------------------------------------------------------------------------


def test_read_only_backup_directory_fails_cleanly(tmp_path):
    """The backup directory mounted read-only (a bind mount in a private mount
    namespace: as root, file modes alone would not stop a write)."""
    db, env = _world(tmp_path, devices=500)
    backups = tmp_path / "backups"
    assert run("backup_database.sh", "--quiet", env=env).returncode == 0
    before_files = sorted(p.name for p in backups.iterdir())
    before_db = content_digest(db)
    time.sleep(1.1)
    script = ('mount --bind "$B" "$B" && mount -o remount,bind,ro "$B" || exit 99; '
              'exec "$S" --quiet')
    proc = subprocess.run(
        ["unshare", "--mount", "sh", "-c", script],
        env={**env, "B": str(backups), "S": str(SCRIPTS / "backup_database.sh")},
        capture_output=True, text=True, timeout=120,
    )
    if proc.returncode == 99 or "unshare failed" in proc.stderr:
        pytest.skip(f"cannot mount read-only here: {proc.stderr.strip()}")
    assert proc.returncode == 1, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("backup_database.sh: ") and str(backups) in last
    assert "Backup completed" not in proc.stdout
    assert sorted(p.name for p in backups.iterdir()) == before_files
    assert content_digest(db) == before_db


@pytest.mark.parametrize("seed", FAST_SEEDS)
def test_database_disappearing_mid_backup(tmp_path, seed):
    """The database (and its -wal/-shm) deleted at a random moment of a backup:
    whatever is published verifies, nothing is left half-done, and the next run
    says clearly that the database is gone."""
    db, env = _world(tmp_path)
    cmd = [str(SCRIPTS / "backup_database.sh"), "--quiet"]
    span = _duration(cmd, env)
    time.sleep(1.1)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    time.sleep(random.Random(seed).uniform(0, span))
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode in (0, 1, 2), err
    if proc.returncode:
        assert err.strip().splitlines()[-1].startswith("backup_database.sh: ")
    for backup in list_backups(tmp_path / "backups", "app db"):
        verify = run("restore_database.sh", "--verify", str(backup.path), env=env)
        assert verify.returncode == 0, f"{backup.path.name}: {verify.stderr}"
    again = run("backup_database.sh", "--quiet", env=env)
    assert again.returncode == 2
    assert again.stderr.strip().splitlines()[-1].startswith(
        "backup_database.sh: database not found")
    assert _temp_files(tmp_path / "backups") == []
