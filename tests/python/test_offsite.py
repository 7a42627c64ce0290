"""Offsite copies (scripts/offsite_sync.sh, restore_database.sh --from, sqlite_ops.offsite)
against real servers: an OpenSSH sshd on loopback reached through rclone's sftp
backend, a crypt remote layered over it, and local-path remotes for the fast cases.

The tools are installed by tests/install_test_tools.sh (make test runs it); when
they are missing these tests fail, unless SQLITE_OPS_ALLOW_SKIP_OFFSITE=1.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import stat
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from opsenv import SCRIPTS, content_digest, ops_env, run, run_on_a_pty
from promparse import prom_samples
from sftpserver import (
    SSHServer,
    descendants,
    free_port,
    keygen,
    obscure,
    require_tools,
    write_rclone_config,
)

from sqlite_ops import catalog, offsite

SECRET_TABLE = "zebra_ledger_entries"
SECRET_ROW = "Quixotic-Walrus-7731"
DB_NAME = "bluefinch"  # the database's file name, hence every backup's


@pytest.fixture(autouse=True)
def _tools():
    require_tools()


def secret_db(path: Path, rows: int = 50, blob_bytes: int = 0) -> Path:
    """A table and rows named SECRET_TABLE and SECRET_ROW (what a crypt remote's
    stored bytes must not show), each row padded with ``blob_bytes`` random bytes."""
    conn = sqlite3.connect(path)
    conn.execute(f"CREATE TABLE {SECRET_TABLE}(id INTEGER PRIMARY KEY, note TEXT, pad BLOB)")
    conn.executemany(f"INSERT INTO {SECRET_TABLE}(note, pad) VALUES (?, ?)",
                     [(f"{SECRET_ROW} #{i}", os.urandom(blob_bytes) if blob_bytes else None)
                      for i in range(rows)])
    conn.commit()
    conn.close()
    return path


@dataclass
class World:
    """One machine: a database, its backups, settings, and the rclone config."""

    tmp: Path
    host: str = "pi-kitchen"
    extra_env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.db = self.tmp / "data" / f"{DB_NAME}.db"
        self.db.parent.mkdir(parents=True, exist_ok=True)
        self.backups = self.tmp / "data" / "backups"
        self.metrics = self.tmp / "metrics"
        self.rclone_config = write_rclone_config(self.tmp / "rclone.conf", {
            "vault": {"type": "local"}})

    @property
    def env(self) -> dict[str, str]:
        return ops_env(self.tmp, DB_PATH=str(self.db), BACKUP_DIR=str(self.backups),
                       OFFSITE_HOST=self.host, RCLONE_CONFIG=str(self.rclone_config),
                       METRICS_DIR=str(self.metrics), COMPRESS="gzip", **self.extra_env)

    def backup(self, **env: str) -> Path:
        proc = run("backup_database.sh", "--quiet", env={**self.env, **env})
        assert proc.returncode == 0, proc.stderr
        return Path(proc.stdout.strip().rsplit("Backup completed: ", 1)[1])

    def sync(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return run("offsite_sync.sh", *args, env={**self.env, **env}, timeout=300)

    def restore(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return run("restore_database.sh", *args, env={**self.env, **env}, timeout=300)

    def local_state(self) -> dict[str, bytes]:
        """Every file under BACKUP_DIR except the offsite bookkeeping, with its bytes."""
        return {str(p.relative_to(self.backups)): p.read_bytes()
                for p in sorted(self.backups.rglob("*"))
                if p.is_file() and ".offsite" not in p.parts}


def age_backup(backup: Path, days: float) -> Path:
    """Rename a backup (and its manifest) as if taken ``days`` ago."""
    name, created, _ = catalog.parse_backup_name(backup.name)
    new = backup.with_name(catalog.backup_file_name(name, created - days * 86400, "gzip"))
    manifest = json.loads((backup.parent / (backup.name + ".manifest.json")).read_text())
    manifest["file"] = new.name
    manifest["created_at"] = catalog.iso_utc(created - days * 86400)  # the time of a backup
    backup.rename(new)
    (backup.parent / (backup.name + ".manifest.json")).unlink()
    (new.parent / (new.name + ".manifest.json")).write_text(json.dumps(manifest, indent=2))
    return new


def gauge(path: Path, name: str, **labels: str) -> float:
    """The value of one series in a .prom file, read with Prometheus' parser."""
    for found, value in prom_samples(path.read_text()).get(name, []):
        if found == labels:
            return value
    raise KeyError(f"{name}{labels} not in {path}")


def remote_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


@pytest.fixture
def world(tmp_path) -> World:
    w = World(tmp_path)
    secret_db(w.db)
    return w


@pytest.fixture
def sshd(tmp_path):
    server = SSHServer(tmp_path / "sshd").start()
    yield server
    server.stop()


def sftp_world(tmp_path: Path, server: SSHServer, **kw) -> World:
    w = World(tmp_path, extra_env=server.rclone_env("nas"), **kw)
    secret_db(w.db)
    return w


# ---------------------------------------------------------------------------
# The basics, on a local-path remote
# ---------------------------------------------------------------------------


def test_sync_copies_every_verified_backup_newest_first_then_is_a_no_op(world, tmp_path):
    old = age_backup(world.backup(), 2)
    older = age_backup(world.backup(), 3)
    new = world.backup()
    remote = tmp_path / "remote"
    proc = world.sync("--remote", f"vault:{remote}")
    assert proc.returncode == 0, proc.stderr
    uploaded = [line.split()[1] for line in proc.stdout.splitlines()
                if line.startswith("Uploaded:")]
    assert [Path(u).name for u in uploaded] == [new.name, old.name, older.name]
    assert "verified by sha256" in proc.stdout  # the local backend computes it
    here = remote / world.host / DB_NAME
    for b in (new, old, older):
        assert (here / b.name).read_bytes() == b.read_bytes()
        manifest = json.loads((here / (b.name + ".manifest.json")).read_text())
        assert manifest["host"] == world.host and manifest["sha256"] == catalog.sha256_file(b)
    before = remote_files(remote)
    again = world.sync("--remote", f"vault:{remote}")
    assert again.returncode == 0, again.stderr
    assert "0 uploaded, 3 already there" in again.stdout
    assert remote_files(remote) == before


def test_an_upload_and_a_download_show_progress_on_a_terminal_only(tmp_path):
    """The transfer's bytes come from rclone itself (its job's stats; the
    size of what it has written so far): the last line says 100%."""
    w = World(tmp_path)
    secret_db(w.db, rows=200, blob_bytes=20000)  # a few MiB: the zstd-less gzip backup
    backup = w.backup()
    remote = tmp_path / "remote"
    script = str(SCRIPTS / "offsite_sync.sh")
    code, out, err = run_on_a_pty([script, "--remote", str(remote)], w.env)
    assert code == 0, err
    assert f"\r\x1b[Koffsite_sync.sh: uploading {backup.name}: " in err, err
    size = backup.stat().st_size
    assert re.search(rf"uploading {re.escape(backup.name)}: [^\r]* of [^\r]*\(100%\)", err), err
    assert "Uploaded:" in out and size > 1 << 20
    code, out, err = run_on_a_pty([str(SCRIPTS / "restore_database.sh"), "--from", str(remote),
                                   "--to", str(tmp_path / "back.db"), "latest"], w.env)
    assert code == 0, err
    assert re.search(rf"\r\x1b\[Krestore_database.sh: downloading {re.escape(backup.name)}: "
                     r"[^\r]*\(100%\)", err), err
    # Quiet, or off a terminal: not a byte of it.
    shutil.rmtree(remote)
    code, _, err = run_on_a_pty([script, "--quiet", "--remote", str(remote)], w.env)
    assert code == 0 and "\r" not in err, err
    shutil.rmtree(remote)
    off = w.sync("--remote", str(remote))
    assert off.returncode == 0 and "\r" not in off.stderr and "\x1b" not in off.stderr


def test_manifests_record_the_host(world):
    backup = world.backup()
    manifest = json.loads((backup.parent / (backup.name + ".manifest.json")).read_text())
    assert manifest["host"] == world.host


def test_a_half_uploaded_file_never_counts_and_is_uploaded_again(world, tmp_path):
    first = world.backup()
    remote = tmp_path / "remote"
    assert world.sync("--remote", str(remote)).returncode == 0
    second = world.backup()
    here = remote / world.host / DB_NAME
    # What a killed upload leaves: part of the data file, no manifest.
    (here / second.name).write_bytes(second.read_bytes()[:100])
    listing = world.restore("--from", str(remote), "--list")
    assert listing.returncode == 0, listing.stderr
    assert "incomplete: no manifest" in listing.stdout
    latest = [line for line in listing.stdout.splitlines() if line.startswith("*")]
    assert first.name in latest[0]  # latest is the newest COMPLETE copy
    refused = world.restore("--from", str(remote), "--verify", second.name)
    assert refused.returncode == 3 and "never restored" in refused.stderr
    # A copy with a manifest but the wrong size (a tampered or cut file) is replaced too.
    (here / first.name).write_bytes(first.read_bytes()[:-10])
    proc = world.sync("--remote", str(remote))
    assert proc.returncode == 0, proc.stderr
    assert "2 uploaded" in proc.stdout
    for b in (first, second):
        assert (here / b.name).read_bytes() == b.read_bytes()
        assert (here / (b.name + ".manifest.json")).exists()


def test_verify_from_names_the_remote_copy_not_the_temporary_download(world, tmp_path):
    backup = world.backup()
    remote = tmp_path / "remote"
    assert world.sync("--remote", str(remote)).returncode == 0
    proc = world.restore("--from", str(remote), "--verify", "latest")
    assert proc.returncode == 0, proc.stderr
    assert f"Backup verified: {remote}/{world.host}/{DB_NAME}/{backup.name} (" in proc.stdout
    assert ".offsite-cache" not in proc.stdout + proc.stderr


def test_a_tampered_copy_is_refused_by_verify_from_with_exit_3(world, tmp_path):
    backup = world.backup()
    remote = tmp_path / "remote"
    assert world.sync("--remote", str(remote)).returncode == 0
    copy = remote / world.host / DB_NAME / backup.name
    data = bytearray(copy.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size: only the hash can tell
    copy.write_bytes(bytes(data))
    local_before = world.local_state()
    proc = world.restore("--from", str(remote), "--verify", "latest")
    assert proc.returncode == 3, proc.stderr
    assert "SHA-256" in proc.stderr or "checksum" in proc.stderr.lower()
    restore = world.restore("--from", str(remote), "--yes", "latest")
    assert restore.returncode == 3
    assert world.local_state() == local_before  # nothing local touched
    assert content_digest(world.db) == content_digest(world.db)  # still opens


def test_dry_run_changes_nothing(world, tmp_path):
    world.backup()
    remote = tmp_path / "remote"
    proc = world.sync("--remote", str(remote), "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert "Would upload:" in proc.stdout
    assert not remote.exists() or remote_files(remote) == []
    assert not (world.backups / ".offsite" / f"{DB_NAME}.json").exists()


def test_without_a_remote_or_with_credentials_in_the_remote_it_is_a_usage_error(world):
    world.backup()
    proc = world.sync()
    assert proc.returncode == 2 and "OFFSITE_REMOTES" in proc.stderr
    proc = world.sync("--remote", ":sftp,host=x,pass=hunter2:/backups")
    assert proc.returncode == 2 and "credentials belong in rclone's config" in proc.stderr
    assert "hunter2" not in proc.stderr
    proc = world.sync("--remote", "nosuchremote:x")
    assert proc.returncode == 2 and "nosuchremote" in proc.stderr


def test_without_rclone_it_names_the_package(world, tmp_path):
    world.backup()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for directory in os.environ["PATH"].split(os.pathsep):  # every tool but rclone
        for tool in Path(directory).glob("*") if Path(directory).is_dir() else []:
            if tool.name != "rclone" and not (bin_dir / tool.name).exists():
                (bin_dir / tool.name).symlink_to(tool)
    proc = world.sync("--remote", "vault:x", PATH=str(bin_dir))
    assert proc.returncode == 2
    assert "install the 'rclone' package" in proc.stderr
    proc = world.restore("--from", "vault:x", "--list", PATH=str(bin_dir))
    assert proc.returncode == 2 and "'rclone'" in proc.stderr


def test_offsite_settings_come_from_the_config_file(world, tmp_path):
    world.backup()
    remote = tmp_path / "from-config"
    config = tmp_path / "sqlite-ops.conf"
    config.write_text(f"OFFSITE_REMOTES='vault:{remote}'\nOFFSITE_HOST=cfg-host\n"
                      f"RCLONE_CONFIG={world.rclone_config}\n")
    env = {**world.env, "SQLITE_OPS_CONFIG": str(config)}
    for key in ("OFFSITE_HOST", "RCLONE_CONFIG"):
        env.pop(key)
    proc = run("offsite_sync.sh", env=env)
    assert proc.returncode == 0, proc.stderr
    assert "warning" not in proc.stderr  # the keys are known settings
    assert (remote / "cfg-host" / DB_NAME).is_dir()


def test_metrics_per_remote(world, tmp_path):
    world.backup()
    good = tmp_path / "good"
    dead = {"RCLONE_CONFIG_DEAD_TYPE": "sftp", "RCLONE_CONFIG_DEAD_HOST": "127.0.0.1",
            "RCLONE_CONFIG_DEAD_PORT": str(free_port()),  # nobody listens there
            "RCLONE_CONFIG_DEAD_PASS": obscure("not-used")}
    proc = world.sync("--remote", str(good), "--remote", "dead:x", **dead)
    assert proc.returncode == 75, proc.stderr  # the good remote was still synced
    assert "1 uploaded" in proc.stdout
    proc = world.sync("--remote", str(good))  # the dead remote's series keep their values
    assert proc.returncode == 0, proc.stderr
    prom = world.metrics / f"sqlite_ops_offsite_{DB_NAME}.prom"
    label = {"db": DB_NAME, "remote": str(good)}
    assert gauge(prom, "sqlite_offsite_pending_backups", **label) == 0
    assert gauge(prom, "sqlite_offsite_last_run_success", **label) == 1
    newest = catalog.list_backups(world.backups, DB_NAME)[0].created_at
    assert gauge(prom, "sqlite_offsite_newest_backup_timestamp_seconds", **label) == newest
    assert gauge(prom, "sqlite_offsite_last_success_timestamp_seconds", **label) >= newest
    bad = {"db": DB_NAME, "remote": "dead:x"}
    assert gauge(prom, "sqlite_offsite_last_run_success", **bad) == 0
    assert gauge(prom, "sqlite_offsite_pending_backups", **bad) == 1


# ---------------------------------------------------------------------------
# Retention: remote, and the local prune that waits for the upload
# ---------------------------------------------------------------------------


def test_remote_retention_follows_the_local_rules_on_own_files_only(world, tmp_path):
    remote = tmp_path / "remote"
    backups = [age_backup(world.backup(), days) for days in (40, 35, 20, 12)]
    newest = world.backup()
    assert world.sync("--remote", str(remote), OFFSITE_RETENTION_DAYS="100").returncode == 0
    here = remote / world.host / DB_NAME
    # Files that are not ours, in our directory and beside it, all old.
    stranger = catalog.backup_file_name(DB_NAME, time.time() - 50 * 86400, "gzip")
    (here / stranger).write_bytes(b"x" * 10)
    (here / (stranger + ".manifest.json")).write_text(json.dumps(
        {"verified": True, "size_bytes": 10, "host": world.host, "name": DB_NAME,
         "source": "/elsewhere/bluefinch.db"}))
    other_host = remote / "pi-garage" / DB_NAME
    other_host.mkdir(parents=True)
    for f in here.iterdir():
        shutil.copy(f, other_host / f.name)
    proc = world.sync("--remote", str(remote), OFFSITE_RETENTION_DAYS="30", OFFSITE_KEEP_MIN="2")
    assert proc.returncode == 0, proc.stderr
    kept = {p.name for p in here.iterdir() if not p.name.endswith(".manifest.json")}
    # Older than 30 days: pruned (40, 35); within: kept; another database's: kept.
    assert kept == {backups[2].name, backups[3].name, newest.name, stranger}
    assert len(list(other_host.iterdir())) == 2 * 5 + 2  # another host's: untouched
    # KEEP_MIN: with 5 days' retention only the newest 2 verified copies survive.
    proc = world.sync("--remote", str(remote), OFFSITE_RETENTION_DAYS="5", OFFSITE_KEEP_MIN="2")
    assert proc.returncode == 0, proc.stderr
    kept = {p.name for p in here.iterdir() if not p.name.endswith(".manifest.json")}
    assert kept == {backups[3].name, newest.name, stranger}


def test_a_lost_record_is_rebuilt_from_the_remote_and_retention_still_applies(world, tmp_path):
    """A new machine taking over (same OFFSITE_HOST) or a deleted .offsite/: the
    copies are checked, recorded, and old ones pruned by their manifests."""
    remote = tmp_path / "remote"
    old = [age_backup(world.backup(), days) for days in (45, 40)]
    newest = world.backup()
    assert world.sync("--remote", str(remote), OFFSITE_RETENTION_DAYS="100").returncode == 0
    here = remote / world.host / DB_NAME
    (here / old[1].name).unlink()  # a prune killed between data file and manifest
    shutil.rmtree(world.backups / ".offsite")
    proc = world.sync("--remote", str(remote), OFFSITE_RETENTION_DAYS="30",
                      OFFSITE_KEEP_MIN="1")
    assert proc.returncode == 0, proc.stderr
    assert "0 uploaded, 1 already there, 1 pruned" in proc.stdout
    assert remote_files(here) == sorted([newest.name, newest.name + ".manifest.json"])
    record = json.loads((world.backups / ".offsite" / f"{DB_NAME}.json").read_text())
    assert list(record["remotes"][str(here)]) == [newest.name]


def touched(path: Path) -> tuple[int, int]:
    """Inode and ctime: a file written again (in place or renamed over) changes them;
    the mtime does not tell, rclone sets it to the source's."""
    st = path.stat()
    return st.st_ino, st.st_ctime_ns


def remote_dir(world: World, remote: str) -> str:
    return offsite.remote_dir(remote, world.host, DB_NAME)


def record_entry(world: World, directory: str, file: str) -> dict:
    record = json.loads((world.backups / ".offsite" / f"{DB_NAME}.json").read_text())
    return record["remotes"][directory][file]


@pytest.fixture(params=["local", "sftp"])
def drill_world(request, tmp_path) -> tuple[World, str, Path]:
    """(world, remote, the directory the remote stores in), on a local-path remote
    and on real SFTP."""
    store = tmp_path / "store"
    store.mkdir()
    if request.param == "local":
        return World(tmp_path), f"vault:{store}", store
    sshd = request.getfixturevalue("sshd")
    return World(tmp_path, extra_env=sshd.rclone_env("nas")), f"nas:{store}", store


def test_the_drills_record_reaches_the_remote_manifest_without_sending_the_data_again(
        drill_world):
    """INTEGRITY_CHECK=drill: the drill adds its record to the local manifest
    after the backup went offsite. The next sync uploads that manifest again, and
    only it; a restore from the remote copy then trusts the check instead of
    running it in the incident; the sync after that sends nothing."""
    world, remote, store = drill_world
    secret_db(world.db)
    backup = world.backup(INTEGRITY_CHECK="drill")
    first = world.sync("--remote", remote)
    assert first.returncode == 0, first.stderr
    here = store / world.host / DB_NAME
    data, manifest = here / backup.name, here / (backup.name + ".manifest.json")
    sent = json.loads(manifest.read_text())
    assert "integrity_check" not in sent and "foreign_key_violations" not in sent
    data_before = touched(data)
    drill = world.restore("--drill")
    assert drill.returncode == 0, drill.stderr
    local = json.loads((backup.parent / (backup.name + ".manifest.json")).read_text())
    assert local["integrity_check"]["checked_by"] == "drill"
    assert local["foreign_key_violations"] == 0  # the count the backup left to the drill
    proc = world.sync("--remote", remote)
    assert proc.returncode == 0, proc.stderr
    assert (f"Updated manifest: {remote_dir(world, remote)}/{backup.name}.manifest.json "
            "(integrity_check recorded by the drill)") in proc.stdout
    assert "0 uploaded, 1 already there" in proc.stdout and "Uploaded:" not in proc.stdout
    assert json.loads(manifest.read_text()) == local  # the record, and nothing else new
    assert touched(data) == data_before  # the data file was not sent again
    entry = record_entry(world, remote_dir(world, remote), backup.name)
    assert entry["manifest_sha256"] == catalog.sha256_file(manifest)
    # Nothing changed: nothing is sent.
    files_before = {f: touched(here / f) for f in remote_files(here)}
    again = world.sync("--remote", remote)
    assert again.returncode == 0, again.stderr
    assert "Updated manifest" not in again.stdout and "0 uploaded, 1 already there" in again.stdout
    assert {f: touched(here / f) for f in remote_files(here)} == files_before
    verify = world.restore("--from", remote, "--verify", "latest")
    assert verify.returncode == 0, verify.stderr
    assert "integrity: recorded at drill, same bytes" in verify.stdout
    assert "foreign_key_check clean as recorded (same bytes)" in verify.stdout
    assert "checked now" not in verify.stdout


def test_an_entry_without_a_manifest_hash_sends_the_drills_record_once(world, tmp_path):
    """Entries recorded by an older version, and copies found on the remote
    without a record, say nothing of the remote manifest: with a drill record
    locally, the manifest is sent once; without one, nothing is."""
    remote = tmp_path / "remote"
    backup = world.backup(INTEGRITY_CHECK="drill")
    assert world.sync("--remote", str(remote)).returncode == 0
    state = world.backups / ".offsite" / f"{DB_NAME}.json"
    directory = remote_dir(world, str(remote))

    def forget_manifest_hashes() -> None:
        record = json.loads(state.read_text())
        entry = record["remotes"][directory][backup.name]
        for key in [k for k in entry if k.startswith("manifest_")]:
            del entry[key]
        state.write_text(json.dumps(record))

    forget_manifest_hashes()
    proc = world.sync("--remote", str(remote))
    assert proc.returncode == 0, proc.stderr
    assert "Updated manifest" not in proc.stdout  # no drill record: nothing to add
    assert world.restore("--drill").returncode == 0
    here = remote / world.host / DB_NAME
    data_before = touched(here / backup.name)
    for lose in (forget_manifest_hashes, lambda: shutil.rmtree(world.backups / ".offsite")):
        lose()
        proc = world.sync("--remote", str(remote))
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.count("Updated manifest:") == 1, proc.stdout
        assert "0 uploaded, 1 already there" in proc.stdout
        again = world.sync("--remote", str(remote))
        assert again.returncode == 0 and "Updated manifest" not in again.stdout
    remote_manifest = json.loads((here / (backup.name + ".manifest.json")).read_text())
    assert remote_manifest["integrity_check"]["checked_by"] == "drill"
    assert touched(here / backup.name) == data_before


def test_a_manifest_changed_beyond_the_drills_record_is_not_sent_again(world, tmp_path):
    """The copy was verified against the manifest it has; a local manifest that
    now names other content (db_sha256, with a record to match) is not uploaded
    over it: a warning, the remote manifest as it was."""
    remote = tmp_path / "remote"
    backup = world.backup(INTEGRITY_CHECK="drill")
    assert world.sync("--remote", str(remote)).returncode == 0
    assert world.restore("--drill").returncode == 0
    local_path = backup.parent / (backup.name + ".manifest.json")
    local = json.loads(local_path.read_text())
    local["db_sha256"] = local["integrity_check"]["db_sha256"] = "ab" * 32
    local_path.write_text(json.dumps(local))
    remote_manifest = remote / world.host / DB_NAME / (backup.name + ".manifest.json")
    before = remote_manifest.read_bytes()
    dry = world.sync("--remote", str(remote), "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "Would update manifest" not in dry.stdout
    proc = world.sync("--remote", str(remote))
    assert proc.returncode == 0, proc.stderr
    assert "Updated manifest" not in proc.stdout
    assert f"{local_path} changed since it was uploaded" in proc.stderr
    assert remote_manifest.read_bytes() == before


def test_dry_run_names_the_manifest_it_would_update_and_sends_nothing(world, tmp_path):
    remote = tmp_path / "remote"
    backup = world.backup(INTEGRITY_CHECK="drill")
    assert world.sync("--remote", str(remote)).returncode == 0
    assert world.restore("--drill").returncode == 0
    remote_manifest = remote / world.host / DB_NAME / (backup.name + ".manifest.json")
    before = remote_manifest.read_bytes()
    proc = world.sync("--remote", str(remote), "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert f"Would update manifest: {remote_manifest} (integrity_check" in proc.stdout
    assert remote_manifest.read_bytes() == before


class CountingDaemon(offsite.RcloneDaemon):
    """The sync's rclone, with every remote-control call and file read logged."""

    def __init__(self, fail_puts: bool = False) -> None:
        super().__init__()
        self.calls: list[str] = []
        self.fail_puts = fail_puts

    def call(self, remote, what, method, params, missing_ok=False):
        self.calls.append(f"{method} {params.get('dstRemote') or ''}".strip())
        return super().call(remote, what, method, params, missing_ok)

    def _get(self, remote, what, path):
        self.calls.append(f"read {os.path.basename(path)}")
        return super()._get(remote, what, path)

    def put(self, remote, data, dest, work):
        if self.fail_puts:
            raise offsite.OpsError(1, f"{remote}: upload of {os.path.basename(dest)}: refused")
        super().put(remote, data, dest, work)


def library_sync(world: World, remote: Path, daemon: CountingDaemon) -> offsite.RemoteResult:
    opts = offsite.Options(db=str(world.db), backup_dir=str(world.backups), remotes=[str(remote)],
                           host=world.host, retention_days=30, keep_min=3)
    with daemon:
        return offsite.Syncer(opts, daemon).run()[0]


def test_the_manifest_update_is_one_upload_and_its_read_back_and_a_no_op_one_listing(
        world, tmp_path):
    remote = tmp_path / "remote"
    backup = world.backup(INTEGRITY_CHECK="drill")
    assert world.sync("--remote", str(remote)).returncode == 0
    assert world.restore("--drill").returncode == 0
    daemon = CountingDaemon()
    result = library_sync(world, remote, daemon)
    assert result.error is None and result.manifests_updated == [backup.name]
    manifest = backup.name + ".manifest.json"
    assert daemon.calls == ["operations/list", f"operations/copyfile {manifest}",
                            f"read {manifest}"]
    daemon = CountingDaemon()
    result = library_sync(world, remote, daemon)
    assert result.error is None and not result.manifests_updated and not result.uploaded
    assert daemon.calls == ["operations/list"]


def test_a_failed_manifest_update_leaves_the_copy_pending_until_a_sync_checks_it(world,
                                                                                 tmp_path):
    remote = tmp_path / "remote"
    backup = world.backup(INTEGRITY_CHECK="drill")
    assert world.sync("--remote", str(remote)).returncode == 0
    assert world.restore("--drill").returncode == 0
    result = library_sync(world, remote, CountingDaemon(fail_puts=True))
    assert result.error is not None and result.error.code == 1
    assert result.pending == 1  # the local prune keeps it
    assert offsite.pending_backups(world.backups, DB_NAME, str(world.db), [str(remote)],
                                   world.host, 30, 3)[str(remote)][0].path == backup
    proc = world.sync("--remote", str(remote))
    assert proc.returncode == 0, proc.stderr
    assert "Updated manifest:" in proc.stdout and "0 uploaded, 1 already there" in proc.stdout
    assert "0 pending" in proc.stdout


def test_a_local_backup_damaged_on_disk_is_not_copied(world, tmp_path):
    backup = world.backup()
    data = bytearray(backup.read_bytes())
    data[-20] ^= 0x01
    backup.write_bytes(bytes(data))
    remote = tmp_path / "remote"
    proc = world.sync("--remote", str(remote))
    assert "does not match its manifest's SHA-256" in proc.stderr
    assert "0 uploaded" in proc.stdout and "1 pending" in proc.stdout
    assert not list(remote.rglob("*.manifest.json"))
    assert not list(remote.rglob(backup.name))


def test_remote_retention_keeps_everything_when_the_newest_copy_is_too_old(world, tmp_path):
    remote = tmp_path / "remote"
    for days in (60, 50, 45):
        age_backup(world.backup(), days)
    assert world.sync("--remote", str(remote), OFFSITE_RETENTION_DAYS="100").returncode == 0
    here = remote / world.host / DB_NAME
    before = remote_files(here)
    proc = world.sync("--remote", str(remote), OFFSITE_RETENTION_DAYS="30", OFFSITE_KEEP_MIN="1")
    assert proc.returncode == 0, proc.stderr
    assert remote_files(here) == before


def test_a_local_prune_never_deletes_a_backup_pending_upload(world, tmp_path):
    remote = tmp_path / "remote"
    old = [age_backup(world.backup(), days) for days in (40, 35)]
    env = {"OFFSITE_REMOTES": str(remote), "RETENTION_DAYS": "30", "KEEP_MIN": "1",
           "OFFSITE_RETENTION_DAYS": "60"}
    world.backup(**env)
    assert all(b.exists() for b in old), "pruned before its offsite copy was verified"
    proc = world.sync(**env)
    assert proc.returncode == 0, proc.stderr
    world.backup(**env)
    assert not any(b.exists() for b in old), "uploaded backups are pruned as usual"
    assert all((remote / world.host / DB_NAME / b.name).exists() for b in old)


# ---------------------------------------------------------------------------
# One rclone per sync (its connections reused), and what that rclone exposes
# ---------------------------------------------------------------------------


def rclone_shim(tmp_path: Path) -> tuple[str, Path]:
    """A PATH whose rclone logs every command line (as the process list shows it)."""
    shim_dir = tmp_path / "shim"
    shim_dir.mkdir(exist_ok=True)
    argv_log = tmp_path / "argv.log"
    shim = shim_dir / "rclone"
    shim.write_text(f"#!/bin/sh\nprintf '%s\\n' \"$*\" >> {argv_log}\n"
                    f"exec {shutil.which('rclone')} \"$@\"\n")
    shim.chmod(shim.stat().st_mode | stat.S_IXUSR)
    return f"{shim_dir}:{os.environ['PATH']}", argv_log


def test_a_sync_of_many_backups_starts_rclone_once_and_still_checks_every_copy(tmp_path,
                                                                               sshd):
    """Catch-up: every upload, check and manifest goes through one rclone (one SSH
    connection), not three rclone processes per backup."""
    w = sftp_world(tmp_path, sshd)
    backups = [age_backup(w.backup(), days) for days in (3, 2, 1)] + [w.backup()]
    store = tmp_path / "nas-store"
    store.mkdir()
    path, argv_log = rclone_shim(tmp_path)
    proc = w.sync("--remote", f"nas:{store}", PATH=path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("verified by sha1") == 4
    assert argv_log.read_text().splitlines() == [
        "--contimeout 15s --timeout 60s --retries 1 --low-level-retries 3 rcd "
        "--rc-addr 127.0.0.1:0 --rc-serve"]
    here = store / w.host / DB_NAME
    for b in backups:
        assert (here / b.name).read_bytes() == b.read_bytes()
        assert (here / (b.name + ".manifest.json")).exists()
    assert not [p for p in descendants(os.getpid()) if "rclone" in _cmdline(p)]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def test_the_sync_rclone_answers_only_its_own_credentials_which_are_not_on_its_command_line(
        monkeypatch):
    # Whatever the user's environment says about rclone's remote control.
    monkeypatch.setenv("RCLONE_RC_NO_AUTH", "true")
    monkeypatch.setenv("RCLONE_RC_USER", "")
    with offsite.RcloneDaemon() as daemon:
        assert daemon._url.startswith("http://127.0.0.1:")
        environ = Path(f"/proc/{daemon._proc.pid}/environ").read_bytes().split(b"\0")
        password = next(e for e in environ if e.startswith(b"RCLONE_RC_PASS="))
        password = password.split(b"=", 1)[1].decode()
        assert len(password) >= 24 and password not in _cmdline(daemon._proc.pid)
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with pytest.raises(urllib.error.HTTPError) as refused:
            opener.open(urllib.request.Request(daemon._url + "core/pid", data=b"{}"))
        assert refused.value.code == 401
        assert daemon.call("x", "a call", "rc/noopauth", {"n": 1}) == {"n": 1}
        pid = daemon._proc.pid
    assert not Path(f"/proc/{pid}").exists() or "rclone" not in _cmdline(pid)


def throttled_sync_under_way(tmp_path, sshd):
    """A ~6.5 MB incompressible backup, and a sync of it to real SFTP throttled
    to 1 MB/s, returned once its upload has begun: (world, backup, store,
    remote target, the running sync)."""
    w = sftp_world(tmp_path, sshd)
    secret_db(w.db.with_name("big.db"), rows=400, blob_bytes=16384)  # ~6.5 MB, incompressible
    w.db.unlink()
    w.db.with_name("big.db").rename(w.db)
    backup = w.backup()
    store = tmp_path / "nas-store"
    store.mkdir()
    target = store / w.host / DB_NAME / backup.name
    sync = subprocess.Popen([str(Path(__file__).parents[2] / "scripts" / "offsite_sync.sh"),
                             "--remote", f"nas:{store}"],
                            env={**w.env, "RCLONE_BWLIMIT": "1M"}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (target.exists() and target.stat().st_size > 0):
        assert sync.poll() is None, sync.communicate()
        assert time.monotonic() < deadline, "the upload never started"
        time.sleep(0.05)
    return w, backup, store, target, sync


def test_a_sync_killed_with_sigkill_leaves_no_rclone_writing(tmp_path, sshd):
    w, backup, store, target, sync = throttled_sync_under_way(tmp_path, sshd)
    rclone = [p for p in descendants(sync.pid) if " rcd " in _cmdline(p)]
    assert len(rclone) == 1
    python = int(Path(f"/proc/{rclone[0]}/stat").read_text().rsplit(")", 1)[1].split()[1])
    assert "sqlite_ops" in _cmdline(python)
    os.kill(python, 9)  # no handler runs: only the kernel can stop its rclone
    sync.communicate(timeout=120)
    deadline = time.monotonic() + 60
    while Path(f"/proc/{rclone[0]}").exists() and "rclone" in _cmdline(rclone[0]):
        assert time.monotonic() < deadline, "rclone went on after the sync was killed"
        time.sleep(0.05)
    assert not Path(str(target) + ".manifest.json").exists()
    proc = w.sync("--remote", f"nas:{store}")
    assert proc.returncode == 0, proc.stderr
    assert target.read_bytes() == backup.read_bytes()


def test_split_path_gives_rclone_a_directory_and_a_name():
    assert offsite.split_path("nas:a/b/file") == ("nas:a/b", "file")
    assert offsite.split_path("nas:file") == ("nas:", "file")
    assert offsite.split_path("nas:/file") == ("nas:/", "file")
    assert offsite.split_path("/srv/off/pi/d/f.gz") == ("/srv/off/pi/d", "f.gz")


# ---------------------------------------------------------------------------
# Real SFTP: failures
# ---------------------------------------------------------------------------


def test_sftp_copy_is_checked_with_the_backends_strongest_hash(tmp_path, sshd):
    w = sftp_world(tmp_path, sshd)
    backup = w.backup()
    store = tmp_path / "nas-store"
    store.mkdir()
    proc = w.sync("--remote", f"nas:{store}")
    assert proc.returncode == 0, proc.stderr
    assert "verified by sha1" in proc.stdout  # sftp offers md5 and sha1
    assert (store / w.host / DB_NAME / backup.name).read_bytes() == backup.read_bytes()


LOGGED = "2026/12/03 10:00:00 ERROR : "


@pytest.mark.parametrize("stderr, code, said", [
    # A name holding a word of rclone's never decides: the files are the user's.
    (LOGGED + "geofence_20261203_100000.db.zst: Failed to copy: permission denied", 1,
     "rclone exit 1"),
    (LOGGED + "dash_20260507_101010.db.zst: Failed to copy: ssh: unexpected packet", 1,
     "rclone exit 1"),
    ('Failed to create file system for "nas:backups/failure": bad', 1, "rclone exit 1"),
    (LOGGED + "timeout quota.db.zst: Failed to copy: object not writable", 1, "rclone exit 1"),
    # rclone's own words do.
    (LOGGED + "Attempt 1/1 failed with 1 errors and: dial tcp: lookup nas.example: "
     "Temporary failure in name resolution", 75, "cannot reach the remote"),
    (LOGGED + "dash.db.zst: Failed to copy: unexpected EOF", 75, "cannot reach the remote"),
    (LOGGED + 'dash.db.zst: Failed to copy: sftp: "Failure" (SSH_FX_FAILURE)', 1,
     "is the remote full?"),
    (LOGGED + "dash.db.zst: Failed to copy: 507 Insufficient Storage", 1, "is the remote full?"),
    (LOGGED + "dash.db.zst: Failed to copy: api error QuotaExceeded: bucket over quota", 1,
     "is the remote full?"),
    (LOGGED + "error listing: dial tcp: lookup quota-nas.example on 10.0.0.1:53: no such host",
     75, "cannot reach the remote"),
])
def test_an_rclone_failure_is_told_by_rclones_words_never_by_a_name(stderr, code, said):
    """An unreachable remote is exit 75, which the units count as success (the
    next run catches up): a backup named for a word of rclone's ("geofence"
    holds "eof") must not turn a refused upload into one, nor a date holding
    "507" into "is the remote full?"."""
    error = offsite.classify("nas", "upload", stderr, 1)
    assert (error.code, said in error.message) == (code, True), error.message


def test_a_failed_listing_is_never_read_as_an_empty_remote(tmp_path, monkeypatch):
    """rclone says 'Config file "..." not found - using defaults' whenever the
    remotes come from RCLONE_CONFIG_* variables: that is no missing directory,
    and a listing that then failed must fail, not read as a remote holding
    nothing (the sync would send every backup again, and count deletions of
    files it never reached as done)."""
    fake = tmp_path / "rclone"
    fake.write_text("#!/bin/sh\n"
                    "echo '2026/12/03 10:00:00 NOTICE: Config file \"/root/.config/rclone/"
                    "rclone.conf\" not found - using defaults' >&2\n"
                    "echo '2026/12/03 10:00:01 ERROR : : error listing: ssh: handshake failed: "
                    "knownhosts: key mismatch' >&2\nexit \"${FAKE_EXIT:-1}\"\n")
    fake.chmod(0o755)
    with pytest.raises(offsite.OpsError) as caught:
        offsite.Rclone(str(fake)).listing("nas", "sqlite-ops/host")
    assert "host key" in caught.value.message
    monkeypatch.setenv("FAKE_EXIT", "3")  # rclone's own "directory not found"
    assert offsite.Rclone(str(fake)).listing("nas", "sqlite-ops/host") == {}


def test_an_unreachable_remote_is_exit_75_and_touches_nothing_local(tmp_path, sshd):
    w = sftp_world(tmp_path, sshd)
    w.backup()
    store = tmp_path / "nas-store"
    store.mkdir()
    sshd.stop()
    before = w.local_state()
    proc = w.sync("--remote", f"nas:{store}")
    assert proc.returncode == 75, proc.stderr
    assert "cannot reach the remote" in proc.stderr and "nothing local was changed" in proc.stderr
    assert w.local_state() == before
    listing = w.restore("--from", f"nas:{store}", "--list")
    assert listing.returncode == 75 and "cannot reach the remote" in listing.stderr
    prom = w.metrics / f"sqlite_ops_offsite_{DB_NAME}.prom"
    label = {"db": DB_NAME, "remote": f"nas:{store}"}
    assert gauge(prom, "sqlite_offsite_last_run_success", **label) == 0
    assert gauge(prom, "sqlite_offsite_pending_backups", **label) == 1


def test_refused_credentials_are_a_configuration_error(tmp_path, sshd):
    w = sftp_world(tmp_path, sshd)
    w.backup()
    sshd.refuse_key()
    before = w.local_state()
    proc = w.sync("--remote", f"nas:{tmp_path}")
    assert proc.returncode == 2, proc.stderr
    assert "refused the credentials" in proc.stderr
    assert w.local_state() == before


def test_a_server_with_another_host_key_gets_nothing(tmp_path, sshd):
    w = sftp_world(tmp_path, sshd)
    w.backup()
    key = keygen(tmp_path / "impostor").with_suffix(".pub").read_text().split()
    sshd.known_hosts().write_text(f"[127.0.0.1]:{sshd.port} {key[0]} {key[1]}\n")
    store = tmp_path / "nas-store"
    store.mkdir()
    proc = w.sync("--remote", f"nas:{store}")
    assert proc.returncode == 2, proc.stderr
    assert "host key" in proc.stderr
    assert remote_files(store) == []


def test_a_server_that_dies_mid_upload_loses_nothing_and_the_next_run_catches_up(tmp_path,
                                                                                 sshd):
    w, backup, store, target, sync = throttled_sync_under_way(tmp_path, sshd)
    before = w.local_state()
    sshd.kill()  # the server dies mid-upload
    out, err = sync.communicate(timeout=120)
    assert sync.returncode == 75, err
    # Part of it (rclone's sftp writes chunks concurrently: holes, not just a short file).
    assert target.read_bytes() != backup.read_bytes()
    assert not Path(str(target) + ".manifest.json").exists()
    assert w.local_state() == before
    # The half-uploaded file is never restored: no complete copy exists yet.
    sshd.start()
    proc = w.restore("--from", f"nas:{store}", "--verify", "latest")
    assert proc.returncode == 2 and "no complete copy" in proc.stderr
    proc = w.sync("--remote", f"nas:{store}")
    assert proc.returncode == 0, proc.stderr
    assert "1 uploaded" in proc.stdout
    assert target.read_bytes() == backup.read_bytes()
    proc = w.restore("--from", f"nas:{store}", "--verify", "latest")
    assert proc.returncode == 0, proc.stderr


def _mount_tmpfs(path: Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True)
    return proc.returncode == 0


def test_a_full_remote_is_a_clear_failure_and_the_copy_never_counts(tmp_path, sshd):
    store = tmp_path / "small-disk"
    if not _mount_tmpfs(store, "1m"):
        pytest.skip("mounting a small tmpfs is not permitted here (needs root and "
                    "CAP_SYS_ADMIN); only the full-disk case is skipped")
    try:
        w = sftp_world(tmp_path, sshd)
        secret_db(w.db.with_name("big.db"), rows=200, blob_bytes=16384)  # ~3 MB > 1 MB
        w.db.unlink()
        w.db.with_name("big.db").rename(w.db)
        backup = w.backup()
        before = w.local_state()
        proc = w.sync("--remote", f"nas:{store}")
        assert proc.returncode == 1, proc.stderr
        assert "full" in proc.stderr and "nothing local was changed" in proc.stderr
        assert w.local_state() == before
        assert not list(store.rglob("*.manifest.json"))
        listing = w.restore("--from", f"nas:{store}", "--list")
        assert backup.name not in [line.split()[1] for line in listing.stdout.splitlines()
                                   if line.startswith("*")]
    finally:
        subprocess.run(["umount", "-l", str(store)], check=False)


# ---------------------------------------------------------------------------
# Encryption and credentials
# ---------------------------------------------------------------------------


def crypt_world(tmp_path: Path, server: SSHServer, store: Path, password: str) -> World:
    w = sftp_world(tmp_path, server)
    write_rclone_config(w.rclone_config, {
        "vault": {"type": "local"},
        "secret": {"type": "crypt", "remote": f"nas:{store}", "filename_encryption": "standard",
                   "directory_name_encryption": "true", "password": obscure(password)}})
    return w


def test_crypt_the_storage_never_sees_a_table_name_a_row_or_a_file_name(tmp_path, sshd):
    store = tmp_path / "nas-store"
    store.mkdir()
    w = crypt_world(tmp_path, sshd, store, "correct horse battery staple")
    secret_db(w.db.with_name("plain.db"))
    shutil.copyfile(w.db.with_name("plain.db"), w.db)
    w.backup(COMPRESS="none")  # uncompressed: the plaintext would show if stored as is
    proc = w.sync("--remote", "secret:")
    assert proc.returncode == 0, proc.stderr
    assert "verified by download check" in proc.stdout  # crypt offers no hash
    stored = [p for p in store.rglob("*")]
    assert any(p.is_file() for p in stored)
    blob = b"".join(p.read_bytes() for p in stored if p.is_file())
    names = "\n".join(str(p.relative_to(store)) for p in stored)
    for secret in (SECRET_TABLE, SECRET_ROW, DB_NAME, w.host, "manifest", "sha256"):
        assert secret.encode() not in blob, f"{secret!r} stored in clear"
        assert secret not in names, f"{secret!r} in a stored file name"
    proc = w.restore("--from", "secret:", "--verify", "latest")
    assert proc.returncode == 0, proc.stderr


def test_credentials_never_reach_command_lines_logs_manifests_or_metrics(tmp_path, sshd):
    store = tmp_path / "nas-store"
    store.mkdir()
    password = "Tr0ub4dor-and-3"
    w = crypt_world(tmp_path, sshd, store, password)
    # A second crypt remote configured through the environment, as some operators do.
    obscured = obscure(password + "-env")
    w.extra_env.update({"RCLONE_CONFIG_ENVSECRET_TYPE": "crypt",
                        "RCLONE_CONFIG_ENVSECRET_REMOTE": f"nas:{store}/env",
                        "RCLONE_CONFIG_ENVSECRET_PASSWORD": obscured})
    path, argv_log = rclone_shim(tmp_path)  # every rclone command line
    w.backup()
    outputs = []
    for remote in ("secret:", "envsecret:"):
        proc = w.sync("--remote", remote, PATH=path)
        assert proc.returncode == 0, proc.stderr
        outputs += [proc.stdout, proc.stderr]
        proc = w.restore("--from", remote, "--drill", PATH=path)
        assert proc.returncode == 0, proc.stderr
        outputs += [proc.stdout, proc.stderr]
    sshd.stop()  # failures print rclone's messages: they must not carry secrets either
    proc = w.sync("--remote", "envsecret:", PATH=path)
    assert proc.returncode == 75
    outputs += [proc.stdout, proc.stderr]
    assert argv_log.read_text().count("\n") > 4
    written = [argv_log.read_text(), *outputs]
    written += [p.read_text(errors="replace") for p in [*w.backups.rglob("*.json"),
                                                        *w.metrics.rglob("*")] if p.is_file()]
    in_file = [line.split(" = ", 1)[1] for line in w.rclone_config.read_text().splitlines()
               if line.startswith("password = ")]
    assert in_file
    for secret in (password, obscured, password + "-env", *in_file):
        for text in written:
            assert secret not in text


def test_remote_names_and_layout():
    assert offsite.remote_dir("nas:", "pi", "dashboard") == "nas:pi/dashboard"
    assert offsite.remote_dir("nas:backups/", "pi", "dashboard") == "nas:backups/pi/dashboard"
    assert offsite.remote_dir("/srv/offsite", "pi", "d") == "/srv/offsite/pi/d"
    for bad in (":s3,secret_access_key=x:bucket", "no-colon-relative", "a,b:x", ""):
        with pytest.raises(offsite.OpsError) as caught:
            offsite.check_remote(bad)
        assert caught.value.code == 2 and "secret_access_key=x" not in caught.value.message
    for bad_host in ("../x", "a/b", "", ".."):
        with pytest.raises(offsite.OpsError):
            offsite.check_host(bad_host)


def test_pending_means_wanted_and_not_recorded_on_every_remote(world):
    backups = [age_backup(world.backup(), days) for days in (50, 3)]
    newest = world.backup()
    remotes = ["a:x", "b:y"]
    pending = offsite.pending_backups(world.backups, DB_NAME, str(world.db), remotes,
                                      world.host, retention_days=30, keep_min=1)
    # The 50-day-old one is beyond the offsite retention: never sent, never pending.
    assert [b.path.name for b in pending["a:x"]] == [newest.name, backups[1].name]
    record = offsite.Record.load(world.backups, DB_NAME)
    local = catalog.list_backups(world.backups, DB_NAME)
    entry = {"sha256": local[0].manifest["sha256"], "size_bytes": local[0].size_bytes}
    record.copies(offsite.remote_dir("a:x", world.host, DB_NAME))[newest.name] = entry
    record.save()
    pending = offsite.pending_backups(world.backups, DB_NAME, str(world.db), remotes,
                                      world.host, retention_days=30, keep_min=1)
    assert [b.path.name for b in pending["a:x"]] == [backups[1].name]
    assert len(pending["b:y"]) == 2
    plan = catalog.plan_prune(local, time.time(), 1, 0,
                              pending=frozenset(b.path.name for b in pending["b:y"]))
    assert {b.path.name for b in plan.prune} == {backups[0].name}


def test_rclone_messages_are_scrubbed_of_secrets_from_the_environment():
    env = {"RCLONE_CONFIG_S3_SECRET_ACCESS_KEY": "AKIAsupersecret", "RCLONE_CONFIG_X_TYPE": "s3"}
    assert offsite.scrub("failed: AKIAsupersecret rejected", env) == "failed: *** rejected"


# ---------------------------------------------------------------------------
# The lost machine, end to end
# ---------------------------------------------------------------------------


def test_lost_machine_drill_restores_on_another_host_from_the_remote(tmp_path, sshd):
    store = tmp_path / "nas-store"
    store.mkdir()
    old = sftp_world(tmp_path / "old", sshd, host="pi-attic")
    old.backup()
    with sqlite3.connect(old.db) as conn:
        conn.execute(f"INSERT INTO {SECRET_TABLE}(note) VALUES ('the last row before the fire')")
    old.backup()
    expected = content_digest(old.db)
    assert old.sync("--remote", f"nas:{store}").returncode == 0
    # The machine is gone: the database, every local backup, the whole data directory.
    shutil.rmtree(old.db.parent)
    assert not old.db.exists()
    # A new host, same application layout, empty BACKUP_DIR, its own host name.
    new = World(tmp_path / "new", host="pi-new", extra_env=sshd.rclone_env("nas"))
    new.db = old.db
    new.db.parent.mkdir(parents=True)
    new.backups.mkdir()
    listing = new.restore("--from", f"nas:{store}", "--host", "pi-attic", "--list")
    assert listing.returncode == 0, listing.stderr
    assert listing.stdout.count("complete") == 2
    drill = new.restore("--from", f"nas:{store}", "--host", "pi-attic", "--drill")
    assert drill.returncode == 0, drill.stderr
    prom = new.metrics / f"sqlite_ops_restore_{DB_NAME}.prom"
    assert gauge(prom, "sqlite_restore_drill_last_run_success", db=DB_NAME,
                 remote=f"nas:{store}") == 1
    proc = new.restore("--from", f"nas:{store}", "--host", "pi-attic", "--yes", "latest")
    assert proc.returncode == 0, proc.stderr
    assert content_digest(new.db) == expected
    rows = sqlite3.connect(new.db).execute(
        f"SELECT count(*) FROM {SECRET_TABLE} WHERE note = 'the last row before the fire'")
    assert rows.fetchone()[0] == 1
    # Nothing of the download is left behind.
    assert not [p for p in new.backups.rglob("*.db*") if p.is_file()
                and "pre-restore" not in p.parts]


def test_a_local_manifest_gone_bad_never_costs_the_remote_its_sound_copy(world, tmp_path):
    """The local manifest's SHA-256 is edited after the copy went up: the sync
    warns once and leaves the remote's copy and manifest exactly as they were
    (uploading over it and removing it when the check failed lost it)."""
    backup = world.backup()
    remote = tmp_path / "remote"
    assert world.sync("--remote", str(remote)).returncode == 0
    before = {p: p.read_bytes() for p in sorted(remote.rglob("*")) if p.is_file()}
    manifest = backup.with_name(backup.name + ".manifest.json")
    fields = json.loads(manifest.read_text())
    fields["sha256"] = "0" * 64
    manifest.write_text(json.dumps(fields))
    proc = world.sync("--remote", str(remote))
    assert proc.stderr.count("does not match its manifest's SHA-256") == 1, proc.stderr
    assert "0 uploaded" in proc.stdout and "1 pending" in proc.stdout
    assert {p: p.read_bytes() for p in sorted(remote.rglob("*")) if p.is_file()} == before
