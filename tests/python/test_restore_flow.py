"""Tests for lib/sqlite_ops/restore_flow.py: one restore as one process, its
state in memory; the safety backup a library call under the restore's lock."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from opsenv import SCRIPTS, content_digest, index_out_of_step, make_db, ops_env, python_starts

from sqlite_ops import backup, catalog, common, restore, restore_flow
from sqlite_ops.common import EX_FAIL, EX_INTEGRITY, EX_USAGE, EX_VERIFY, OpsError, lock_path_for

RESTORE = str(SCRIPTS / "restore_database.sh")


@pytest.fixture
def world(tmp_path):
    """A database (50 devices), a verified backup of it, then 7 rows more."""
    db = make_db(tmp_path / "app.db")
    backups = tmp_path / "backups"
    backups.mkdir()
    taken = backup.take_backup(str(db), str(backups), compression="zstd")
    conn = sqlite3.connect(db, isolation_level=None)
    conn.executemany("INSERT INTO devices(ip) VALUES (?)", [("later",)] * 7)
    conn.close()
    return db, Path(taken.path), tmp_path


def options(db: Path, tmp_path: Path, **extra) -> restore_flow.Options:
    values = dict(action="restore", spec="latest", db=str(db),
                  backup_dir=str(tmp_path / "backups"), yes=True, quiet=True, script=RESTORE)
    values.update(extra)
    return restore_flow.Options(**values)


def devices(db: Path) -> int:
    conn = sqlite3.connect(db)
    try:
        return conn.execute("SELECT count(*) FROM devices").fetchone()[0]
    finally:
        conn.close()


# ---------------------------------------------------------------------------
# One process per operation
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("args", [
    ["--yes", "latest"], ["--verify", "latest"], ["--list"], ["--drill"],
    ["--yes", "--to", "{to}", "latest"],
], ids=["restore", "verify", "list", "drill", "to"])
def test_each_action_starts_python_at_most_twice(world, args):
    db, _, tmp_path = world
    env = ops_env(tmp_path, DB_PATH=str(db), BACKUP_DIR=str(tmp_path / "backups"),
                  METRICS_DIR=str(tmp_path / "metrics"))
    argv = [a.replace("{to}", str(tmp_path / "copy.db")) for a in args]
    starts = python_starts([RESTORE, *argv], env)
    assert starts <= 2, f"{args}: {starts} python3 starts"


def test_a_restore_runs_in_memory_no_report_file_and_its_undo_works(world, capsys):
    db, taken, tmp_path = world
    before = content_digest(db)
    assert restore_flow.run_action(options(db, tmp_path)) == 0
    out = capsys.readouterr().out
    assert devices(db) == 50
    safety = next(line.split(": ", 1)[1].strip() for line in out.splitlines()
                  if line.startswith("  safety backup:"))
    assert Path(safety).parent == tmp_path / "backups" / "pre-restore"
    # Nothing was left beside the database: no work dir, no report between steps.
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
    undo = next(line.split(": ", 1)[1].strip() for line in out.splitlines()
                if line.startswith("  undo with:"))
    env = ops_env(tmp_path)
    proc = subprocess.run(["bash", "-c", undo], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert content_digest(db) == before


def test_the_undo_works_as_printed_in_a_shell_without_the_config_that_judged_the_restore(
        tmp_path):
    """FK_ACCEPT and MIGRATIONS_DIR came from a config file: the undo line
    carries them, so it restores the safety backup where no config is read."""
    db = tmp_path / "app.db"
    conn = sqlite3.connect(db, isolation_level=None)
    conn.executescript("CREATE TABLE parent(id INTEGER PRIMARY KEY); "
                       "CREATE TABLE child(id INTEGER PRIMARY KEY, "
                       "parent_id INTEGER REFERENCES parent(id)); "
                       "INSERT INTO parent VALUES (1); INSERT INTO child VALUES (1, 1), (2, 99);")
    conn.close()
    migrations = tmp_path / "migrations"
    migrations.mkdir()
    config = tmp_path / "ops.conf"
    config.write_text(f"DB_PATH={db}\nBACKUP_DIR={tmp_path / 'backups'}\nFK_ACCEPT=child\n"
                      f"MIGRATIONS_DIR={migrations}\n")
    env = ops_env(tmp_path, SQLITE_OPS_CONFIG=str(config))
    del env["MIGRATIONS_DIR"]
    assert subprocess.run([str(SCRIPTS / "backup_database.sh"), "--quiet"], env=env,
                          capture_output=True).returncode == 0
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("INSERT INTO parent VALUES (2)")  # after the backup: only the safety backup has it
    conn.close()
    before = content_digest(db)
    proc = subprocess.run([RESTORE, "--yes", "latest"], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    undo = next(line.split(": ", 1)[1].strip() for line in proc.stdout.splitlines()
                if line.startswith("  undo with:"))
    assert undo.startswith("FK_ACCEPT=child ") and f" --migrations {migrations} " in undo
    assert "--force" not in undo
    bare = ops_env(tmp_path)  # no config file at all
    del bare["MIGRATIONS_DIR"]
    proc = subprocess.run(["bash", "-c", undo], env=bare, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert content_digest(db) == before


# ---------------------------------------------------------------------------
# The safety backup: a library call; only damage means a raw copy
# ---------------------------------------------------------------------------


def test_retries_never_prune_the_only_copy_of_what_the_application_wrote(world, capsys):
    """Restore, the application writes, restore again and again: the safety
    copy holding that write is a middle one of the incident, and the only
    copy of it; it stays, and the undo its receipt printed still works. The
    copies that repeat a kept content go, naming where it is kept."""
    db, taken, tmp_path = world
    logged = []

    def restore_latest() -> str:
        assert restore_flow.run_action(options(db, tmp_path, quiet=False)) == 0
        out, err = capsys.readouterr()
        logged.append(err)
        return next(line.split(": ", 1)[1].strip() for line in out.splitlines()
                    if line.startswith("  undo with:"))

    restore_latest()  # the first copy: 57 devices, the state before the incident
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("INSERT INTO devices(ip) VALUES ('written between two restores')")
    conn.close()
    undo = restore_latest()  # its copy: 51 devices, in no backup
    for _ in range(3):
        restore_latest()  # copies of the backup's content: 50 devices
    err = "".join(logged)
    pre = tmp_path / "backups" / "pre-restore"
    kept = sorted(pre.glob("*.db.zst"))
    assert len(kept) == 4  # the first, the one with the write, the newest two
    assert f"the same content is kept in {pre}/" in err
    assert devices(db) == 50
    proc = subprocess.run(["bash", "-c", undo], env=ops_env(tmp_path), capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stderr
    assert devices(db) == 51
    gone = options(db, tmp_path, spec=str(pre / "app_20000101_000000.db.zst"))
    with pytest.raises(OpsError, match="a middle retry of an incident whose content"):
        restore_flow.resolve(restore_flow.Run(gone))


def _safety_fails(monkeypatch, code, message):
    def failing(*args, **kwargs):
        raise OpsError(code, message)
    monkeypatch.setattr(restore_flow, "take_backup", failing)


@pytest.mark.parametrize(("code", "message", "said"), [
    (EX_FAIL, "cannot write: No space left on device; nothing was published",
     "the safety backup of {db} failed (cannot write: No space left on device); nothing was "
     "changed"),
    (EX_USAGE, "unknown compression 'xz' (zstd, gzip or none)",
     "the safety backup of {db} was refused (unknown compression 'xz' (zstd, gzip or none)); "
     "nothing was changed"),
])
def test_a_safety_backup_failing_for_any_reason_but_damage_stops_with_nothing_changed(
        world, monkeypatch, capsys, code, message, said):
    db, _, tmp_path = world
    before = content_digest(db)
    _safety_fails(monkeypatch, code, message)
    assert restore_flow.run_action(options(db, tmp_path)) == EX_FAIL
    err = capsys.readouterr().err
    assert f"restore_database.sh: {said.format(db=db)}\n" in err
    assert content_digest(db) == before
    assert list((tmp_path / "backups" / "pre-restore").iterdir()) == []  # no raw copy


def test_damage_found_by_the_safety_backup_means_a_raw_copy_then_the_restore(
        world, monkeypatch, capsys):
    db, _, tmp_path = world
    damaged = db.read_bytes()
    _safety_fails(monkeypatch, EX_INTEGRITY, f"{db} failed PRAGMA quick_check (page 3); "
                                             "nothing was published; run maintain_database.sh")
    assert restore_flow.run_action(options(db, tmp_path)) == 0
    out, err = capsys.readouterr()
    assert f"is too damaged for a verified backup ({db} failed PRAGMA quick_check (page 3)): " \
           "its files were copied as they are into" in err
    (raw,) = (tmp_path / "backups" / "pre-restore").glob("app_*.raw")
    assert (raw / "app.db").read_bytes() == damaged
    assert "  raw copy:        " in out and devices(db) == 50


def test_what_a_restore_killed_during_its_safety_backup_left_is_swept_by_the_next(world):
    db, _, tmp_path = world
    pre = tmp_path / "backups" / "pre-restore"
    pre.mkdir(mode=0o700)
    left = [pre / ".app_20260101_000000.db.tmp.k1ll3d", pre / ".app_20260101_000000.db.zst.tmp.x",
            pre / ".app_20260101_000000.db.zst.manifest.json.tmp.y"]
    other = pre / ".other_20260101_000000.db.zst.tmp.z"  # another database's: never touched
    for path in (*left, other):
        path.write_bytes(b"half a safety backup")
    assert restore_flow.run_action(options(db, tmp_path)) == 0
    assert devices(db) == 50
    assert [p for p in left if p.exists()] == []
    assert other.exists()


def test_the_time_a_person_takes_at_the_prompt_is_not_the_restores(world, monkeypatch,
                                                                     capsys):
    """The receipt's time taken and the recovery-time metric leave it out."""
    db, _, tmp_path = world

    class Slow:
        def readline(self) -> str:
            time.sleep(3.0)  # reading the plan
            return "yes\n"

    monkeypatch.setattr(restore_flow, "can_confirm", lambda opts: None)
    monkeypatch.setattr(sys, "stdin", Slow())
    metrics = tmp_path / "metrics"
    start = time.time()
    assert restore_flow.run_action(options(db, tmp_path, yes=False,
                                           metrics_dir=str(metrics))) == 0
    elapsed = time.time() - start
    prom = next(metrics.glob("*.prom")).read_text()
    recorded = float(re.search(r"^sqlite_restore_last_duration_seconds\{[^}]*\} (\S+)$", prom,
                               re.M).group(1))
    assert recorded <= elapsed - 3.0
    assert devices(db) == 50


def test_a_restore_waiting_at_its_prompt_keeps_its_verified_copy_through_another_run(world):
    """It lets go of the lock while the operator reads the plan; a second
    restore meanwhile sweeps only what a killed run left, never the waiting
    one's work dir. Once that run is gone (its descriptors closed, as when it
    is killed), the next run sweeps it."""
    db, _, tmp_path = world
    waiting = restore_flow.Run(options(db, tmp_path, yes=False))
    restore_flow.take_lock(waiting, str(db), 0)
    work = Path(restore_flow.work_dir_beside(waiting, str(db)))
    (work / "restore.db").write_bytes(b"the verified copy")
    restore_flow.release_lock(waiting)  # as at the prompt
    killed = tmp_path / ".app.db.tmp.k1ll3d"
    killed.mkdir()
    assert restore_flow.run_action(options(db, tmp_path)) == 0
    assert (work / "restore.db").read_bytes() == b"the verified copy"
    assert not killed.exists()
    for fd in waiting.held:
        os.close(fd)
    assert restore_flow.run_action(options(db, tmp_path)) == 0
    assert not work.exists()


def test_the_safety_backup_is_quick_checked_under_the_restores_lock(world, monkeypatch):
    db, _, tmp_path = world
    seen = {}
    real = restore_flow.take_backup

    def watching(*args, **kwargs):
        seen.update(kwargs)
        seen["lock"] = os.environ.get("SQLITE_OPS_LOCK_HELD")
        return real(*args, **kwargs)
    monkeypatch.setattr(restore_flow, "take_backup", watching)
    assert restore_flow.run_action(options(db, tmp_path, compression="gzip")) == 0
    assert seen["integrity"] == "quick" and seen["compression"] == "gzip"
    assert seen["lock"] == f"{os.path.realpath(db)}.sqlite-ops.lock"
    (safety,) = (tmp_path / "backups" / "pre-restore").glob("app_*.db.gz")
    # No integrity record: restoring the safety backup runs integrity_check then.
    report = restore.verify_backup(safety, tmp_path / "work.db")
    assert report.integrity.startswith("checked now (integrity_check ok; ")


# ---------------------------------------------------------------------------
# Signals: what each step says
# ---------------------------------------------------------------------------


def _signal_in(monkeypatch, module, name, sig):
    real = getattr(module, name)

    def signalled(*args, **kwargs):
        os.kill(os.getpid(), sig)
        return real(*args, **kwargs)
    monkeypatch.setattr(module, name, signalled)


def test_a_signal_during_the_safety_backup_says_the_database_was_not_touched(
        world, monkeypatch, capsys):
    db, _, tmp_path = world
    before = content_digest(db)
    _signal_in(monkeypatch, restore_flow, "take_backup", signal.SIGTERM)
    assert restore_flow.run_action(options(db, tmp_path)) == 128 + signal.SIGTERM
    err = capsys.readouterr().err
    assert (f"restore_database.sh: interrupted during the safety backup of {db}: the database "
            "was not touched and nothing was restored\n") in err
    assert content_digest(db) == before
    assert list((tmp_path / "backups" / "pre-restore").iterdir()) == []


def test_a_signal_once_the_restore_was_checked_waits_for_the_receipt(world, monkeypatch, capsys):
    db, taken, tmp_path = world
    _signal_in(monkeypatch, restore, "settle_ownership", signal.SIGTERM)
    assert restore_flow.run_action(options(db, tmp_path)) == 128 + signal.SIGTERM
    out, err = capsys.readouterr()
    assert f"Restore completed: {db}" in out and devices(db) == 50
    assert err.endswith("restore_database.sh: SIGTERM arrived while the restore was being "
                        "written; it was finished and checked first (receipt above)\n")


def _interrupted_while_open(db: Path, tmp_path: Path, capsys) -> str:
    """A restore of ``db`` while the application has it open (so written
    through SQLite), interrupted: its exit is 130; returns its stderr."""
    app = sqlite3.connect(db)
    try:
        assert restore_flow.run_action(options(db, tmp_path)) == 130
    finally:
        app.close()
    return capsys.readouterr().err


def test_a_signal_during_the_copy_into_an_open_database_stops_it_and_rolls_it_back(
        world, monkeypatch, capsys):
    """Ctrl-C while the backup API writes into the live database (the
    application has it open) stops the copy between two steps: SQLite rolls
    the one transaction back, and the database is as it was."""
    db, taken, tmp_path = world
    before = content_digest(db)
    monkeypatch.setattr(restore, "COPY_STEP_PAGES", 1)  # a step per page: many steps
    _signal_in(monkeypatch, restore, "abort_when_busy", signal.SIGINT)
    err = _interrupted_while_open(db, tmp_path, capsys)
    assert f"interrupted during the copy: SQLite rolled it back, so {db} is as it was" in err
    assert content_digest(db) == before and devices(db) == 57


def test_a_signal_during_the_write_says_what_it_left(world, monkeypatch, capsys):
    db, taken, tmp_path = world
    _signal_in(monkeypatch, restore, "_check_own_copy", signal.SIGINT)
    err = _interrupted_while_open(db, tmp_path, capsys)
    assert f"interrupted after the copy was committed: {db} holds the backup's content" in err
    assert "the safety backup taken before this attempt is kept:" in err
    assert devices(db) == 50


# ---------------------------------------------------------------------------
# INTEGRITY_CHECK=drill: the drill runs the full check and records it
# ---------------------------------------------------------------------------


def _drill_world(tmp_path: Path, db: Path) -> tuple[Path, Path, dict[str, str]]:
    """A drill-mode backup of ``db`` taken by the script: (backup, manifest, env)."""
    env = ops_env(tmp_path, DB_PATH=str(db), BACKUP_DIR=str(tmp_path / "backups"),
                  COMPRESS="gzip", INTEGRITY_CHECK="drill")
    proc = subprocess.run([str(SCRIPTS / "backup_database.sh"), "--quiet"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    taken = Path(proc.stdout.strip().rsplit("Backup completed: ", 1)[1])
    return taken, Path(str(taken) + catalog.MANIFEST_SUFFIX), env


def _restore(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([RESTORE, *args], env=env, capture_output=True, text=True, timeout=120)


def test_the_drill_refuses_index_damage_the_backups_quick_check_let_through(tmp_path):
    db = index_out_of_step(tmp_path / "live.db")
    taken, manifest, env = _drill_world(tmp_path, db)
    before = manifest.read_bytes()
    proc = _restore(env, "--drill")
    assert proc.returncode == EX_VERIFY, proc.stderr
    assert "PRAGMA integrity_check failed" in proc.stderr and "t_v" in proc.stderr
    assert manifest.read_bytes() == before  # a failed check records nothing
    assert _restore(env, "--verify", "latest").returncode == EX_VERIFY


def test_a_sound_drill_mode_backup_gets_its_record_from_the_drill_and_verify_trusts_it(
        tmp_path):
    db = make_db(tmp_path / "app.db", 40)
    taken, manifest_path, env = _drill_world(tmp_path, db)
    before, _ = catalog.read_manifest(manifest_path)
    assert "integrity_check" not in before and "foreign_key_violations" not in before
    assert before["foreign_key_check_deferred"] is True
    # --verify and a restore --to check it themselves, and never write.
    checked = _restore(env, "--verify", "latest")
    assert checked.returncode == 0, checked.stderr
    assert "integrity: checked now (integrity_check ok; the backup ran quick_check only" in \
        checked.stdout
    copy = _restore(env, "--yes", "--to", str(tmp_path / "copy.db"), "latest")
    assert copy.returncode == 0, copy.stderr
    assert catalog.read_manifest(manifest_path)[0] == before
    drill = _restore(env, "--drill")
    assert drill.returncode == 0, drill.stderr
    assert (f"integrity_check and the foreign-key count recorded in {manifest_path}"
            in drill.stderr)
    after, why = catalog.read_manifest(manifest_path)
    assert why is None
    record = after.pop("integrity_check")
    assert after.pop("foreign_key_violations") == 0
    assert after == before  # nothing else in the manifest changed
    assert record["checked_by"] == "drill" and record["result"] == "ok"
    assert record["db_sha256"] == before["db_sha256"]
    assert stat_mode(manifest_path) == 0o600
    trusted = _restore(env, "--verify", "latest")
    assert trusted.returncode == 0, trusted.stderr
    assert "integrity: recorded at drill, same bytes" in trusted.stdout
    assert "foreign_key_check clean as recorded (same bytes)" in trusted.stdout
    again = _restore(env, "--drill")  # a record that stands is not written again
    assert again.returncode == 0 and "recorded in" not in again.stderr
    assert catalog.read_manifest(manifest_path)[0]["integrity_check"] == record


def stat_mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_a_forged_record_for_other_bytes_is_not_trusted(tmp_path):
    db = index_out_of_step(tmp_path / "live.db")
    taken, manifest_path, env = _drill_world(tmp_path, db)
    manifest, _ = catalog.read_manifest(manifest_path)
    forged = {"result": "ok", "sqlite_version": "9.9.9", "db_sha256": "0" * 64,
              "checked_by": "drill", "checked_at": manifest["created_at"]}
    catalog.write_json_atomic(manifest_path, {**manifest, "integrity_check": forged})
    proc = _restore(env, "--verify", "latest")
    assert proc.returncode == EX_VERIFY, proc.stderr
    assert "PRAGMA integrity_check failed" in proc.stderr


def _drill_options(db: Path, tmp_path: Path) -> restore_flow.Options:
    return options(db, tmp_path, action="drill", yes=False, quiet=False)


def test_a_busy_lock_means_a_warning_and_no_record_never_a_failed_drill(
        tmp_path, monkeypatch, capsys):
    db = make_db(tmp_path / "app.db", 20)
    taken, manifest_path, _ = _drill_world(tmp_path, db)
    before = manifest_path.read_bytes()
    monkeypatch.setattr(restore_flow, "RECORD_LOCK_WAIT", 0)
    holder = subprocess.Popen(["flock", lock_path_for(db), "sleep", "30"])
    try:
        probe = ["flock", "--nonblock", lock_path_for(db), "true"]
        while subprocess.run(probe).returncode == 0:  # until the holder has it
            assert holder.poll() is None
        assert restore_flow.run_action(_drill_options(db, tmp_path)) == 0
    finally:
        holder.kill()
        holder.wait()
    out, err = capsys.readouterr()
    assert "Drill passed:" in out
    assert (f"the integrity_check and the foreign-key count this drill ran are not recorded in "
            f"{manifest_path} (another run held the lock") in err
    assert manifest_path.read_bytes() == before


@pytest.mark.parametrize("change", ["manifest", "backup"])
def test_a_backup_or_manifest_changed_since_the_drill_verified_it_gets_no_record(
        tmp_path, monkeypatch, capsys, change):
    db = make_db(tmp_path / "app.db", 20)
    taken, manifest_path, _ = _drill_world(tmp_path, db)
    real = restore_flow.replace

    def meanwhile(*args, **kwargs):
        """Another run rewrites the pair while the drill restores its copy."""
        if change == "manifest":
            manifest, _ = catalog.read_manifest(manifest_path)
            catalog.write_json_atomic(manifest_path, {**manifest, "host": "elsewhere"})
        else:
            replacement = taken.with_name(taken.name + ".new")
            replacement.write_bytes(taken.read_bytes())
            os.replace(replacement, taken)
        return real(*args, **kwargs)
    monkeypatch.setattr(restore_flow, "replace", meanwhile)
    assert restore_flow.run_action(_drill_options(db, tmp_path)) == 0
    err = capsys.readouterr().err
    assert "are not recorded in" in err and "since the drill" in err
    assert "integrity_check" not in catalog.read_manifest(manifest_path)[0]


def test_list_shows_where_the_full_check_stands(tmp_path):
    db = make_db(tmp_path / "app.db", 20)
    taken, _, env = _drill_world(tmp_path, db)

    def state() -> str:
        proc = _restore(env, "--list", "--json")
        assert proc.returncode == 0, proc.stderr
        import json
        [entry] = [e for e in json.loads(proc.stdout)["backups"] if e["kind"] == "backup"]
        return entry["integrity_check"]
    assert state() == "left to the drill"
    assert ("the full integrity_check and the foreign-key count are left to the drill"
            in _restore(env, "--list").stdout)
    assert _restore(env, "--drill").returncode == 0
    assert state() == "drill"


def fk_fields(manifest: dict) -> dict:
    return {k: manifest[k] for k in catalog.FK_FIELDS if k in manifest}


def test_a_drill_mode_backup_leaves_the_foreign_key_count_to_the_drill_which_refuses_orphans(
        tmp_path):
    """INTEGRITY_CHECK=drill leaves the foreign-key count to the drill too:
    the backup counts nothing and warns of nothing, yet an orphan is never out
    of sight (--verify and the drill refuse it, exit 3). The drill records
    what it found even so (the orphans are the bytes' own state, not a verdict
    on them): exactly what a default backup of the same bytes records, so the
    listing says the restore needs --force and no restore runs the check again."""
    db = make_db(tmp_path / "app.db", 20)
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("INSERT INTO services(device_id, port) VALUES (999, 80)")
    conn.close()
    env = ops_env(tmp_path, DB_PATH=str(db), BACKUP_DIR=str(tmp_path / "backups"),
                  COMPRESS="gzip", INTEGRITY_CHECK="drill")

    def drill_mode_backup() -> tuple[Path, dict]:
        proc = subprocess.run([str(SCRIPTS / "backup_database.sh")], env=env,
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        assert "foreign_key_check" not in proc.stderr and "orphaned" not in proc.stderr
        assert "the foreign-key count are left to the drill" in proc.stderr
        path = Path(proc.stdout.strip().rsplit("Backup completed: ", 1)[1]
                    + catalog.MANIFEST_SUFFIX)
        manifest, _ = catalog.read_manifest(path)
        assert manifest["foreign_key_check_deferred"] is True and fk_fields(manifest) == {}
        return path, manifest

    def default_backup(name: str, fk_accept: str = "") -> dict:
        (tmp_path / name).mkdir()
        return backup.take_backup(str(db), str(tmp_path / name), compression="gzip",
                                  fk_accept=fk_accept).manifest

    manifest_path, before = drill_mode_backup()
    refused = _restore(env, "--verify", "latest")
    assert refused.returncode == EX_VERIFY, refused.stderr
    assert catalog.read_manifest(manifest_path)[0] == before  # --verify never writes
    for attempt in (1, 2):
        refused = _restore(env, "--drill")
        assert refused.returncode == EX_VERIFY, refused.stderr  # every drill, until accepted
        assert "PRAGMA foreign_key_check failed: 1 row points to a missing parent row" in \
            refused.stderr
        assert ("integrity_check and the foreign-key count recorded in" in refused.stderr) \
            == (attempt == 1)  # the second drill trusts the first's check
        assert ("trust the integrity_check and count the foreign-key violations again"
                in refused.stderr) == (attempt == 1)
    after, _ = catalog.read_manifest(manifest_path)
    assert after["integrity_check"]["checked_by"] == "drill"
    assert {k: v for k, v in after.items() if k not in catalog.drill_fields(after)} == before
    default = default_backup("default")
    assert fk_fields(after) == fk_fields(default) == {
        "foreign_key_violations": 1, "foreign_key_violations_by_table": {"services": 1},
        "foreign_key_violations_accepted": 0}
    assert default["db_sha256"] == after["db_sha256"]  # of the same bytes
    assert "restore needs --force" in _restore(env, "--list").stdout

    # Orphans FK_ACCEPT lists: the drill passes and records them as accepted.
    manifest_path, before = drill_mode_backup()
    accepting = {**env, "FK_ACCEPT": "services"}
    drill = _restore(accepting, "--drill")
    assert drill.returncode == 0, drill.stderr
    assert "integrity_check and the foreign-key count recorded in" in drill.stderr
    after, _ = catalog.read_manifest(manifest_path)
    assert fk_fields(after) == fk_fields(default_backup("accepted", "services")) == {
        "foreign_key_violations": 1, "foreign_key_violations_by_table": {"services": 1},
        "foreign_key_violations_accepted": 1}


@pytest.mark.parametrize("at_backup, now", [("", "services"), ("services", "")])
def test_whether_a_restore_needs_force_is_judged_by_fk_accept_now_as_the_restore_judges_it(
        tmp_path, at_backup, now):
    """The listing and a printed restore command say "--force" exactly when
    the restore will ask for it: by the FK_ACCEPT in force now, not the one
    of the backup's day (orphans accepted since, or no longer accepted)."""
    db = make_db(tmp_path / "app.db", 20)
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("INSERT INTO services(device_id, port) VALUES (999, 80)")
    conn.close()
    backups = tmp_path / "backups"
    backups.mkdir()
    taken = backup.take_backup(str(db), str(backups), compression="gzip", fk_accept=at_backup)
    env = ops_env(tmp_path, DB_PATH=str(db), BACKUP_DIR=str(backups), FK_ACCEPT=now)
    listed = _restore(env, "--list")
    assert listed.returncode == 0, listed.stderr
    needs_force = not now
    assert ("restore needs --force" in listed.stdout) == needs_force
    printed = catalog.restore_command(str(db), str(backups), taken.path, fk_accept=now)
    assert (" --force " in printed) == needs_force
    restored = _restore(env, "--yes", "latest")
    assert restored.returncode == (EX_VERIFY if needs_force else 0), restored.stderr
    if needs_force:
        assert "pass --force" in restored.stderr
        assert _restore(env, "--yes", "--force", "latest").returncode == 0


def _opened(pid: int, path: str) -> bool:
    """Whether process ``pid`` holds ``path`` open (its /proc/PID/fd links)."""
    fds = Path(f"/proc/{pid}/fd")
    try:
        return any(os.path.realpath(fd) == path for fd in fds.iterdir())
    except FileNotFoundError:  # an fd closed while it was read
        return False


def test_an_interrupt_while_a_refused_drill_waits_to_record_ends_the_wait_not_the_refusal(
        tmp_path):
    """A drill refused on orphans waits (RECORD_LOCK_WAIT) for the lock to
    record what it found. Ctrl-C in that wait ends the wait: the answer is
    still the refusal (exit 3, the violation named), and the message says the
    record was not written, which the manifest bears out."""
    db = make_db(tmp_path / "app.db", 20)
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("INSERT INTO services(device_id, port) VALUES (999, 80)")
    conn.close()
    env = ops_env(tmp_path, DB_PATH=str(db), BACKUP_DIR=str(tmp_path / "backups"),
                  INTEGRITY_CHECK="drill")
    taken = subprocess.run([str(SCRIPTS / "backup_database.sh")], env=env,
                           capture_output=True, text=True, timeout=120)
    assert taken.returncode == 0, taken.stderr
    manifest = Path(taken.stdout.strip().rsplit("Backup completed: ", 1)[1]
                    + catalog.MANIFEST_SUFFIX)
    before = manifest.read_bytes()
    lock = lock_path_for(db)
    holder = subprocess.Popen(["flock", lock, "sleep", "120"])
    try:
        while subprocess.run(["flock", "--nonblock", lock, "true"]).returncode == 0:
            assert holder.poll() is None  # until the holder has the lock
        drill = subprocess.Popen([RESTORE, "--drill"], env=env, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
        while not _opened(drill.pid, lock):  # it waits for the lock only to record
            assert drill.poll() is None, drill.communicate()
        drill.send_signal(signal.SIGINT)
        out, err = drill.communicate(timeout=120)
    finally:
        holder.kill()
        holder.wait()
    assert drill.returncode == EX_VERIFY, err
    assert "PRAGMA foreign_key_check failed: 1 row points to a missing parent row" in err
    assert f"interrupted while recording the check this drill ran: not recorded in {manifest}" \
        in err
    assert manifest.read_bytes() == before


@pytest.mark.parametrize("nohup", [False, True])
def test_a_closed_session_interrupts_a_restore_unless_it_runs_under_nohup(tmp_path, nohup):
    """SIGHUP (the ssh session closed) interrupts a restore and says what it
    left; under nohup, which starts it with SIGHUP ignored, the restore keeps
    running to its end, as the operator asked."""
    db = make_db(tmp_path / "app.db", 20)
    env = ops_env(tmp_path, DB_PATH=str(db), BACKUP_DIR=str(tmp_path / "backups"),
                  LOCK_TIMEOUT="60")
    taken = subprocess.run([str(SCRIPTS / "backup_database.sh"), "--quiet"], env=env,
                           capture_output=True, text=True, timeout=120)
    assert taken.returncode == 0, taken.stderr
    target = tmp_path / "restored.db"
    lock = lock_path_for(target)
    common.create_lock_file(lock)
    # (--close: the lock is flock's own, so killing it frees the lock)
    holder = subprocess.Popen(["flock", "--close", lock, "sleep", "120"], start_new_session=True)
    try:
        while subprocess.run(["flock", "--nonblock", lock, "true"]).returncode == 0:
            assert holder.poll() is None  # until the holder has the lock
        command = [RESTORE, "--to", str(target), "latest"]
        restore_run = subprocess.Popen(["nohup", *command] if nohup else command, env=env,
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        while not _opened(restore_run.pid, lock):  # it waits for the target's lock
            assert restore_run.poll() is None, restore_run.communicate()
        restore_run.send_signal(signal.SIGHUP)
        if nohup:
            holder.kill()  # flock's lock is gone: the restore goes on
        out, err = restore_run.communicate(timeout=120)
    finally:
        os.killpg(holder.pid, signal.SIGKILL)
        holder.wait()
    if nohup:
        assert restore_run.returncode == 0, err
        assert devices(target) == 20
    else:
        assert restore_run.returncode == 128 + signal.SIGHUP, err
        assert "nothing was changed" in err and "Traceback" not in err
        assert not target.exists()


# ---------------------------------------------------------------------------
# The undo command
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("word", ["plain", "it's a \"dir\"", "new\nline", "tab\there", "é-ü"])
def test_shell_quote_stays_on_one_line_and_means_the_word(word):
    quoted = common.shell_quote(word)
    assert "\n" not in quoted
    proc = subprocess.run(["bash", "-c", f"printf %s {quoted}"], capture_output=True, text=True)
    assert proc.stdout == word


# ---------------------------------------------------------------------------
# What each action reads of the content
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("action, written, counted", [
    ("verify", False, False),  # only hashed: nothing is restored
    ("drill", True, False),  # restored into a temp file, the manifest's counts stand
    ("restore", True, True),  # over the live database: every table read first
])
def test_each_action_reads_what_it_needs_of_the_content(world, monkeypatch, action, written,
                                                        counted):
    db, _, tmp_path = world
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    outs, counts = [], []
    real_decompress, real_counts = restore.decompress, restore.table_counts
    monkeypatch.setattr(restore, "decompress", lambda b, c, out, q, **kw:
                        outs.append(out) or real_decompress(b, c, out, q, **kw))
    monkeypatch.setattr(restore, "table_counts",
                        lambda conn: counts.append(1) or real_counts(conn))
    assert restore_flow.run_action(options(db, tmp_path, action=action)) == 0
    assert (outs[0] is not None) == written
    assert bool(counts) == counted


def test_an_error_no_step_foresaw_says_what_it_left(world, monkeypatch, capsys):
    """An OSError no step turned into its own message (a full disk where none
    was expected): the error, the file if known, and what the run left, not
    the action's name as if it were a file."""
    import errno

    db, _, tmp_path = world
    before = content_digest(db)

    def full(run):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(restore_flow, "resolve", full)
    assert restore_flow.run_action(options(db, tmp_path)) == EX_FAIL
    err = capsys.readouterr().err
    assert err == "restore_database.sh: No space left on device; nothing was changed\n"
    assert content_digest(db) == before
