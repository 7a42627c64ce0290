"""Everything at once: backup + migrate + maintain + metrics while an
application writes 100 commits per second.

Nothing may deadlock, every command ends with 0 (did its work) or 75 (another
run held the lock; cron retries), and no acknowledged write is lost.
The fast suite runs a few rounds; ``make test-slow`` runs many more.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from opsenv import SCRIPTS, Writer, integrity_ok, make_dashboard, ops_env, run

from sqlite_ops.catalog import list_backups


def _start(cmd: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def _rounds(tmp_path: Path, rounds: int) -> None:
    db = tmp_path / "dash board.db"
    migrations = tmp_path / "migrations"
    shutil.copytree(SCRIPTS.parent / "migrations", migrations)
    env = ops_env(tmp_path, DB_PATH=str(db), BACKUP_DIR=str(tmp_path / "backups"),
                  MIGRATIONS_DIR=str(migrations), METRICS_DIR=str(tmp_path / "metrics"),
                  KEEP_MIN="3")
    make_dashboard(db, devices=2000, env=env)
    outcomes: dict[str, list[int]] = {}
    with Writer(db, rate=100) as writer:
        for n in range(rounds):
            # A new pending migration each round, so `migrate up` has real work.
            version = 100 + n
            (migrations / f"{version}_round_{n}.sql").write_text(
                f"-- migrate:up\nCREATE TABLE round_{n}(id INTEGER PRIMARY KEY);\n"
                f"INSERT INTO round_{n} SELECT id FROM devices;\n"
                f"-- migrate:down\nDROP TABLE round_{n};\n"
            )
            procs = {
                "backup": _start([str(SCRIPTS / "backup_database.sh"), "--quiet"], env),
                "migrate": _start([str(SCRIPTS / "migrate"), "up"], env),
                "maintain": _start([str(SCRIPTS / "maintain_database.sh"), "--quiet",
                                    "check", "checkpoint", "analyze"], env),
                "metrics": _start([str(SCRIPTS / "db_metrics")], env),
            }
            for name, proc in procs.items():
                try:
                    _, err = proc.communicate(timeout=120)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    pytest.fail(f"{name} did not finish in 120 s: deadlock?")
                outcomes.setdefault(name, []).append(proc.returncode)
                code = proc.returncode
                assert code in (0, 75), f"round {n}: {name} exited {code}: {err}"
    assert writer.committed, "the writer should have committed rows"
    assert writer.missing() == [], "acknowledged writes were lost"
    assert integrity_ok(db)
    # Metrics never take the lock, so they always succeed.
    assert set(outcomes["metrics"]) == {0}
    # Every backup that was published is complete and verifies.
    for backup in list_backups(tmp_path / "backups", "dash board"):
        proc = run("restore_database.sh", "--verify", str(backup.path), env=env)
        assert proc.returncode == 0, f"{backup.path.name}: {proc.stderr}"
    # Once the dust settles, every migration applies exactly once.
    proc = run("migrate", "up", "--no-backup", env=env)
    assert proc.returncode == 0, proc.stderr
    status = run("migrate", "status", "--json", env=env)
    assert status.returncode == 0
    assert '"pending": []' in status.stdout.replace("\n", "").replace("  ", "") or \
        '"pending":[]' in status.stdout.replace(" ", "").replace("\n", "")


def test_everything_at_once_fast(tmp_path):
    _rounds(tmp_path, rounds=3)


@pytest.mark.slow
def test_everything_at_once_many_rounds(tmp_path):
    _rounds(tmp_path, rounds=25)
