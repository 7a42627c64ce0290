"""Tests for sqlite_ops.catalog: backup names, listing, manifests, retention."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sqlite_ops import catalog
from sqlite_ops.common import REPO_ROOT

DAY = 86400
NOW = 1_800_000_000.0


def stamp(epoch: float) -> str:
    return time.strftime("%Y%m%d_%H%M%S", time.gmtime(epoch))


def fake_backup(directory: Path, name: str, epoch: float, verified: bool = True,
                ext: str = ".gz", manifest: bool = True, source: str | None = None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}_{stamp(epoch)}.db{ext}"
    path.write_bytes(b"backup")
    if manifest:
        fields: dict = {"verified": verified, "size_bytes": 6, "sha256": catalog.sha256_file(path),
                        "db_sha256": "0" * 64, "tables": {}}
        if source is not None:
            fields["source"] = source
        (directory / (path.name + catalog.MANIFEST_SUFFIX)).write_text(json.dumps(fields))
    return path


# --- names ---------------------------------------------------------------------


@pytest.mark.parametrize(("path", "name"), [
    ("/data/dashboard.db", "dashboard"),
    ("dashboard.sqlite3", "dashboard"),
    ("/x/archive.2024.db", "archive.2024"),
    ("/x/noext", "noext"),
    ("/x/.hidden", ".hidden"),
    ("/x/it's a\nname.db", "it's a\nname"),
])
def test_db_name(path, name):
    assert catalog.db_name(path) == name


def test_backup_file_name_round_trips_through_parse():
    for codec in ("zstd", "gzip", "none"):
        file_name = catalog.backup_file_name("dash_old", NOW, codec)
        assert catalog.parse_backup_name(file_name) == ("dash_old", NOW, codec)


@pytest.mark.parametrize("file_name", [
    "dashboard_20240101_000000.db.bak",
    "dashboard_20240101_000000.sql",
    "dashboard_2024010_000000.db",
    "dashboard_20241301_000000.db",  # month 13
    ".dashboard_20240101_000000.db.gz.tmp.abc",
    "dashboard_20240101_000000.db.gz.manifest.json",
    "README.txt",
])
def test_parse_backup_name_refuses_what_is_not_ours(file_name):
    assert catalog.parse_backup_name(file_name) is None


def test_parse_backup_name_separates_similar_databases():
    assert catalog.parse_backup_name("dashboard_old_20240101_000000.db.zst")[0] == "dashboard_old"
    assert catalog.parse_backup_name("dashboard_20240101_000000.db.zst")[0] == "dashboard"


# --- listing -------------------------------------------------------------------


def test_list_backups_newest_first_only_this_database(tmp_path):
    old = fake_backup(tmp_path, "dashboard", NOW - 2 * DAY)
    new = fake_backup(tmp_path, "dashboard", NOW - DAY, ext=".zst")
    fake_backup(tmp_path, "dashboard_old", NOW)
    (tmp_path / "notes.txt").write_text("x")
    found = catalog.list_backups(tmp_path, "dashboard")
    assert [b.path for b in found] == [new, old]
    assert all(b.verified for b in found)
    assert found[0].compression == "zstd" and found[0].created_at == NOW - DAY
    assert len(catalog.list_backups(tmp_path)) == 3
    assert catalog.list_backups(tmp_path / "missing", "dashboard") == []


def test_verified_needs_a_manifest_that_matches_the_size(tmp_path):
    no_manifest = fake_backup(tmp_path, "d", NOW - 3 * DAY, manifest=False)
    unverified = fake_backup(tmp_path, "d", NOW - 2 * DAY, verified=False)
    resized = fake_backup(tmp_path, "d", NOW - DAY)
    resized.write_bytes(b"truncated!")
    states = {b.path: b.verified for b in catalog.list_backups(tmp_path, "d")}
    assert states == {no_manifest: False, unverified: False, resized: False}


def test_age_comes_from_the_name_not_mtime(tmp_path):
    path = fake_backup(tmp_path, "d", NOW - 40 * DAY)
    os.utime(path, (NOW, NOW))
    assert catalog.list_backups(tmp_path, "d")[0].created_at == NOW - 40 * DAY


def test_write_json_atomic_is_private_and_leaves_no_temp(tmp_path):
    target = tmp_path / "m.json"
    catalog.write_json_atomic(target, {"a": 1})
    assert json.loads(target.read_text()) == {"a": 1}
    assert (target.stat().st_mode & 0o777) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]


def test_checksum_ok(tmp_path):
    path = fake_backup(tmp_path, "d", NOW)
    manifest = path.with_name(path.name + catalog.MANIFEST_SUFFIX)
    manifest.write_text(json.dumps({"verified": True, "size_bytes": 6, "tables": {},
                                    "db_sha256": "0" * 64,
                                    "sha256": catalog.sha256_file(path)}))
    assert catalog.list_backups(tmp_path, "d")[0].checksum_ok()
    path.write_bytes(b"BACKUP")
    assert not catalog.list_backups(tmp_path, "d")[0].checksum_ok()


# --- retention -----------------------------------------------------------------


def plan(tmp_path: Path, retention: int = 30, keep: int = 2, **kw) -> catalog.PrunePlan:
    return catalog.plan_prune(catalog.list_backups(tmp_path, "d"), NOW, retention, keep, **kw)


def test_prunes_only_older_than_retention_beyond_keep_min(tmp_path):
    paths = {d: fake_backup(tmp_path, "d", NOW - d * DAY) for d in (1, 10, 40, 50, 60)}
    result = plan(tmp_path, keep=2)
    assert sorted(b.path for b in result.prune) == sorted([paths[40], paths[50], paths[60]])


def test_keep_min_protects_old_verified_backups(tmp_path):
    paths = {d: fake_backup(tmp_path, "d", NOW - d * DAY) for d in (1, 40, 50, 60)}
    result = plan(tmp_path, keep=3)
    assert [b.path for b in result.prune] == [paths[60]]


def test_unverified_backups_do_not_count_towards_keep_min(tmp_path):
    fake_backup(tmp_path, "d", NOW - DAY)
    unverified = fake_backup(tmp_path, "d", NOW - 35 * DAY, verified=False)
    kept = fake_backup(tmp_path, "d", NOW - 40 * DAY)
    result = plan(tmp_path, keep=2)
    assert [b.path for b in result.prune] == [unverified]
    assert kept in [b.path for b in result.keep]


def test_nothing_is_pruned_when_the_newest_verified_backup_is_stale(tmp_path):
    fake_backup(tmp_path, "d", NOW - 31 * DAY)
    fake_backup(tmp_path, "d", NOW - 90 * DAY)
    fake_backup(tmp_path, "d", NOW - DAY, verified=False)
    result = plan(tmp_path, keep=0)
    assert result.prune == [] and "keeping everything" in result.reason


def test_nothing_is_pruned_without_any_verified_backup(tmp_path):
    fake_backup(tmp_path, "d", NOW - 90 * DAY, verified=False)
    assert plan(tmp_path, keep=0).prune == []


def test_dry_run_assumes_the_new_backup(tmp_path):
    old = fake_backup(tmp_path, "d", NOW - 60 * DAY)
    # Alone it is the newest verified (and stale): kept. With this run's backup: pruned.
    assert plan(tmp_path, keep=1).prune == []
    assert [b.path for b in plan(tmp_path, keep=1, assume_new_verified=True).prune] == [old]


def test_future_dated_backups_are_never_pruned_and_do_not_vouch(tmp_path):
    future = fake_backup(tmp_path, "d", NOW + 5 * DAY)
    recent = fake_backup(tmp_path, "d", NOW - DAY)
    stale = fake_backup(tmp_path, "d", NOW - 40 * DAY)
    assert [b.path for b in plan(tmp_path, retention=30, keep=0).prune] == [stale]
    recent.unlink()
    # The newest believable verified backup is 40 days old: keep everything.
    assert plan(tmp_path, retention=30, keep=0).prune == []
    assert future.exists() and stale.exists()


def test_orphan_manifests(tmp_path):
    gone = fake_backup(tmp_path, "d", NOW - 40 * DAY)
    gone.unlink()
    fake_backup(tmp_path, "d", NOW - 50 * DAY)
    other = fake_backup(tmp_path, "d_old", NOW - 40 * DAY)
    other.unlink()
    found = catalog.orphan_manifests(tmp_path, "d", NOW - 30 * DAY)
    assert found == [gone.with_name(gone.name + catalog.MANIFEST_SUFFIX)]


# --- CLI -----------------------------------------------------------------------


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT / "lib"))
    return subprocess.run([sys.executable, "-m", "sqlite_ops.catalog", *args],
                          capture_output=True, text=True, env=env, check=True)


def test_cli_prune_removes_file_and_manifest(tmp_path):
    now = time.time()
    fake_backup(tmp_path, "d", now - DAY)
    old = fake_backup(tmp_path, "d", now - 40 * DAY)
    notes = tmp_path / "notes.txt"
    notes.write_text("x")
    dry = cli("prune", "--retention-days", "30", "--keep", "1", "--dry-run",
              "--source", str(tmp_path / "d.db"), "--", str(tmp_path))
    assert f"Would prune: {old}" in dry.stdout and old.exists()
    real = cli("prune", "--retention-days", "30", "--keep", "1",
               "--source", str(tmp_path / "d.db"), "--", str(tmp_path))
    assert f"Pruned: {old}" in real.stdout
    assert not old.exists() and not old.with_name(old.name + catalog.MANIFEST_SUFFIX).exists()
    assert notes.exists()


def test_cli_name_survives_a_trailing_newline():
    assert cli("name", "--", "/x/odd\n.db").stdout == "odd\n/\n"


def test_cli_stats(tmp_path):
    now = time.time()
    fake_backup(tmp_path, "d", now - 10 * DAY)
    newest = fake_backup(tmp_path, "d", now - DAY)
    fake_backup(tmp_path, "d", now - 100, verified=False)
    lines = cli("stats", "--source", str(tmp_path / "d.db"), "--",
                str(tmp_path)).stdout.splitlines()
    stats = dict(line.split() for line in lines)
    assert stats["count"] == "3" and stats["verified_count"] == "2"
    assert abs(float(stats["oldest_age_seconds"]) - 10 * DAY) < 5
    assert stats["newest_verified_created"] == str(int(catalog.parse_backup_name(newest.name)[1]))


# --- two databases with one name --------------------------------------------------


def test_another_databases_backups_are_neither_listed_nor_pruned(tmp_path):
    now = time.time()
    backups = tmp_path / "backups"
    mine = fake_backup(backups, "app", now - 40 * DAY, source=str(tmp_path / "a" / "app.db"))
    theirs = fake_backup(backups, "app", now - 41 * DAY, source=str(tmp_path / "b" / "app.db"))
    fake_backup(backups, "app", now - DAY, source=str(tmp_path / "b" / "app.db"))
    listed = catalog.list_backups(backups, "app", tmp_path / "a" / "app.db")
    assert [b.path for b in listed] == [mine]
    assert [b.path for b in catalog.foreign_backups(backups, "app", tmp_path / "a" / "app.db")][
        -1] == theirs
    # b's retention sees only b's backups: a's old one is not b's to prune.
    plan = catalog.plan_prune(catalog.list_backups(backups, "app", tmp_path / "b" / "app.db"),
                              now, 30, 1)
    assert mine not in [b.path for b in plan.prune]
    assert [b.path for b in plan.prune] == [theirs]


def test_a_symlinked_path_to_the_same_database_is_the_same_source(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    now = time.time()
    fake_backup(tmp_path / "bk", "app", now, source=str(tmp_path / "link" / "app.db"))
    assert len(catalog.list_backups(tmp_path / "bk", "app", tmp_path / "real" / "app.db")) == 1


def test_a_file_without_a_manifest_is_never_pruned(tmp_path):
    now = time.time()
    fake_backup(tmp_path, "d", now - DAY)
    orphan_file = fake_backup(tmp_path, "d", now - 90 * DAY, manifest=False)
    plan = catalog.plan_prune(catalog.list_backups(tmp_path, "d"), now, 30, 1)
    assert orphan_file not in [b.path for b in plan.prune]


# --- hostile manifests: one schema, that backup's problem alone --------------------


def good_manifest(path: Path, **fields) -> dict:
    """A manifest that matches ``path`` and the schema, with ``fields`` changed."""
    manifest = {
        "format": 1, "name": "d", "file": path.name, "source": "/data/d.db",
        "created_at": catalog.iso_utc(catalog.parse_backup_name(path.name)[1]),
        "sha256": catalog.sha256_file(path), "db_sha256": "0" * 64,
        "size_bytes": path.stat().st_size, "db_size_bytes": 4096, "page_size": 4096,
        "journal_mode": "wal", "sqlite_version": "3.40.1", "schema_version": 3,
        "tables": {"t": 1}, "compression": "gzip", "duration_seconds": 0.5,
        "verified": True, "foreign_key_violations": 0,
    }
    manifest.update(fields)
    path.with_name(path.name + catalog.MANIFEST_SUFFIX).write_text(json.dumps(manifest))
    return manifest


HOSTILE = {
    "deeply nested": "[" * 100000,
    "deeply nested object": '{"a":' * 50000,
    "not JSON": "{not json",
    "not UTF-8": b"\xff\xfe{}",
    "a list": "[]",
    "empty": "",
    "a huge integer": '{"size_bytes": ' + "9" * 5000 + "}",
}

BAD_TYPES = [
    ("db_size_bytes", "garbage"), ("created_at", 12345), ("created_at", "yesterday"),
    ("tables", {"t": "many"}), ("tables", []), ("schema_version", {}), ("size_bytes", -1),
    ("size_bytes", True), ("verified", "yes"), ("sha256", 7), ("compression", ["zstd"]),
    ("foreign_key_violations", "3"), ("format", 99),
    ("integrity_check_deferred", "yes"), ("integrity_check_deferred", 1),
    ("integrity_check", {"result": "ok", "sqlite_version": "3.40.1", "db_sha256": "0" * 64,
                         "checked_by": "someone"}),
    ("integrity_check", {"result": "ok", "sqlite_version": "3.40.1", "db_sha256": "0" * 64,
                         "checked_by": ["drill"]}),
    ("integrity_check", {"result": "ok", "sqlite_version": "3.40.1", "db_sha256": "0" * 64,
                         "checked_by": "drill", "checked_at": "yesterday"}),
]


@pytest.mark.parametrize("text", HOSTILE.values(), ids=HOSTILE.keys())
def test_a_hostile_manifest_is_unreadable_never_a_traceback(tmp_path, text):
    path = tmp_path / "m.json"
    (path.write_bytes if isinstance(text, bytes) else path.write_text)(text)
    manifest, why = catalog.read_manifest(path)
    assert manifest is None and why.startswith("manifest unreadable: ")
    assert "\n" not in why


@pytest.mark.parametrize(("key", "value"), BAD_TYPES, ids=[f"{k}={v!r}" for k, v in BAD_TYPES])
def test_a_field_of_the_wrong_type_makes_the_manifest_unreadable(tmp_path, key, value):
    path = fake_backup(tmp_path, "d", NOW)
    good_manifest(path, **{key: value})
    manifest, why = catalog.read_manifest(path.with_name(path.name + catalog.MANIFEST_SUFFIX))
    assert manifest is None and why.startswith(f"manifest unreadable: {key} ")


def test_a_good_manifest_reads_and_unknown_fields_are_allowed(tmp_path):
    path = fake_backup(tmp_path, "d", NOW)
    written = good_manifest(path, host="web-1", integrity={"ok": True}, future_field=[1])
    manifest, why = catalog.read_manifest(path.with_name(path.name + catalog.MANIFEST_SUFFIX))
    assert why is None and manifest == written
    # Older manifests lack newer fields: still readable.
    del written["foreign_key_violations"], written["format"]
    path.with_name(path.name + catalog.MANIFEST_SUFFIX).write_text(json.dumps(written))
    assert catalog.read_manifest(path.with_name(path.name + catalog.MANIFEST_SUFFIX))[1] is None


def test_the_schema_knows_a_deferred_check_and_the_drills_record(tmp_path):
    path = fake_backup(tmp_path, "d", NOW)
    record = {"result": "ok", "sqlite_version": "3.40.1", "db_sha256": "0" * 64,
              "checked_by": "drill", "checked_at": "2026-05-09T03:15:00Z"}
    written = good_manifest(path, integrity_check_deferred=True, integrity_check=record)
    manifest, why = catalog.read_manifest(path.with_name(path.name + catalog.MANIFEST_SUFFIX))
    assert why is None and manifest == written
    assert catalog.manifest_problem(written, catalog.NEEDED) is None


def test_add_drill_records_writes_only_over_what_was_verified(tmp_path):
    path = fake_backup(tmp_path, "d", NOW)
    manifest_path = path.with_name(path.name + catalog.MANIFEST_SUFFIX)
    seen = good_manifest(path, integrity_check_deferred=True)
    identity = catalog.file_identity(path)
    record = {"integrity_check": {"result": "ok", "sqlite_version": "3.40.1",
                                  "db_sha256": "1" * 64}}
    assert "other content" in catalog.add_drill_records(path, seen, identity, record)
    record["integrity_check"]["db_sha256"] = "0" * 64
    assert "changed" in catalog.add_drill_records(path, {**seen, "host": "x"}, identity, record)
    assert "replaced" in catalog.add_drill_records(path, seen, (0, 0, 0, 0), record)
    # The count was the backup's: a drill never writes over it.
    with pytest.raises(ValueError):
        catalog.add_drill_records(path, seen, identity, {**record, "foreign_key_violations": 3})
    assert catalog.read_manifest(manifest_path)[0] == seen  # none of those wrote
    assert catalog.add_drill_records(path, seen, identity, record) is None
    assert catalog.read_manifest(manifest_path)[0] == {**seen, **record}
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name, manifest_path.name]


def test_a_drill_adds_the_foreign_key_count_a_drill_mode_backup_left_to_it(tmp_path):
    path = fake_backup(tmp_path, "d", NOW)
    manifest_path = path.with_name(path.name + catalog.MANIFEST_SUFFIX)
    seen = good_manifest(path, integrity_check_deferred=True, foreign_key_check_deferred=True)
    del seen["foreign_key_violations"]
    catalog.write_json_atomic(manifest_path, seen)
    assert catalog.read_manifest(manifest_path) == (seen, None)
    assert not catalog.records_fk_problems(seen)  # not counted yet: nothing said
    records = {"integrity_check": {"result": "ok", "sqlite_version": "3.40.1",
                                   "db_sha256": "0" * 64},
               "foreign_key_violations": 2, "foreign_key_violations_by_table": {"c": 2},
               "foreign_key_violations_accepted": 0}
    assert catalog.add_drill_records(path, seen, catalog.file_identity(path), records) is None
    written = catalog.read_manifest(manifest_path)[0]
    assert written == {**seen, **records} and catalog.records_fk_problems(written)
    assert set(catalog.drill_fields(written)) == {"integrity_check", *catalog.FK_FIELDS}
    # Counted once, the count is the first drill's: never written over.
    with pytest.raises(ValueError):
        catalog.add_drill_records(path, written, catalog.file_identity(path),
                                  {**records, "foreign_key_violations": 0})
    assert catalog.read_manifest(manifest_path)[0] == written


def test_a_foreign_key_check_that_could_not_run_puts_force_in_the_printed_restore(tmp_path):
    # The backup warned that restoring it needs --force (foreign_key_violations
    # null, no accepted count): the command printed for it must carry --force.
    path = fake_backup(tmp_path, "n", NOW)
    manifest = good_manifest(path, foreign_key_violations=None,
                             foreign_key_check_error="foreign key mismatch")
    assert catalog.records_fk_problems(manifest)
    assert "--force" in catalog.restore_command(str(tmp_path / "x.db"), str(tmp_path), str(path),
                                                manifest=manifest).split()
    assert "--force" not in catalog.restore_command(str(tmp_path / "x.db"), str(tmp_path),
                                                    str(path), manifest=good_manifest(path)).split()


def test_a_manifest_that_is_a_fifo_or_a_symlink_is_unreadable_and_never_blocks(tmp_path):
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    assert catalog.read_manifest(fifo) == (None, "manifest unreadable: not a regular file")
    link = tmp_path / "link.json"
    link.symlink_to(tmp_path / "elsewhere.json")
    assert catalog.read_manifest(link)[1].startswith("manifest unreadable")


def test_one_hostile_manifest_spoils_only_its_own_backup(tmp_path):
    """The newest good backup stays latest-worthy, pruning still works, and the
    hostile one is neither verified nor pruned."""
    now = time.time()
    hostile = fake_backup(tmp_path, "d", now - 60 * DAY)
    (tmp_path / (hostile.name + catalog.MANIFEST_SUFFIX)).write_text("[" * 100000)
    old = fake_backup(tmp_path, "d", now - 50 * DAY)
    good_manifest(old)
    new = fake_backup(tmp_path, "d", now - DAY)
    good_manifest(new)
    backups = catalog.list_backups(tmp_path, "d", "/data/d.db")
    assert [b.path for b in backups] == [new, old, hostile]
    assert [b.usable(now) for b in backups] == [True, True, False]
    assert backups[2].manifest_error == "manifest unreadable: nested too deeply"
    plan = catalog.plan_prune(backups, now, 30, 1)
    assert [b.path for b in plan.prune] == [old]
    result = cli("prune", "--retention-days", "30", "--keep", "1", "--source", "/data/d.db",
                 "--", str(tmp_path))
    assert f"Pruned: {old}" in result.stdout and hostile.exists() and not old.exists()


def test_cli_field_reads_through_the_schema(tmp_path):
    path = fake_backup(tmp_path, "d", NOW)
    good_manifest(path, foreign_key_violations=None)
    manifest = str(path) + catalog.MANIFEST_SUFFIX
    assert cli("field", "--", manifest, "foreign_key_violations").stdout == "null\n"
    assert cli("field", "--default", "0", "--", manifest, "absent").stdout == "0\n"
    Path(manifest).write_text("[" * 100000)
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT / "lib"))
    proc = subprocess.run([sys.executable, "-m", "sqlite_ops.catalog", "field", "--", manifest,
                           "foreign_key_violations"], capture_output=True, text=True, env=env)
    assert proc.returncode == 3 and proc.stdout == ""
    assert proc.stderr == f"{manifest}: manifest unreadable: nested too deeply\n"


def test_the_writer_and_the_readers_share_the_schema():
    """What build_manifest must write is the table's WRITTEN and NEEDED fields."""
    levels = {level for _, level in catalog.MANIFEST_SCHEMA.values()}
    assert levels == {catalog.OPTIONAL, catalog.WRITTEN, catalog.NEEDED}
    needed = {k for k, (_, level) in catalog.MANIFEST_SCHEMA.items() if level == catalog.NEEDED}
    assert needed == {"sha256", "db_sha256", "size_bytes", "tables", "verified"}
    assert catalog.manifest_problem({}, catalog.NEEDED) == "it has no sha256"


# --- the time of a backup: the manifest's created_at, never a name alone -------------


def test_a_backup_renamed_into_the_future_is_not_latest_and_is_flagged(tmp_path):
    now = time.time()
    real_new = fake_backup(tmp_path, "d", now - 3600)
    good_manifest(real_new)
    taken = fake_backup(tmp_path, "d", now - 2 * DAY)
    good_manifest(taken)
    renamed = tmp_path / f"d_{stamp(now + 30 * DAY)}.db.gz"
    taken.rename(renamed)
    Path(f"{taken}{catalog.MANIFEST_SUFFIX}").rename(f"{renamed}{catalog.MANIFEST_SUFFIX}")
    backups = catalog.list_backups(tmp_path, "d")
    assert [b.path for b in backups] == [real_new, renamed]  # by created_at
    odd = backups[1]
    assert odd.created_at == catalog.parse_backup_name(taken.name)[1]
    assert odd.usable(now) and not odd.in_future(now)
    assert odd.oddities(now) == ["name in the future", f"renamed (published as {taken.name!r})"]
    assert backups[0].oddities(now) == []


def test_a_backup_dated_in_the_future_is_never_latest_nor_pruned(tmp_path):
    now = time.time()
    recent = fake_backup(tmp_path, "d", now - DAY)
    good_manifest(recent)
    wrong_clock = fake_backup(tmp_path, "d", now - 40 * DAY)
    good_manifest(wrong_clock, created_at=catalog.iso_utc(now + 30 * DAY))
    backups = catalog.list_backups(tmp_path, "d")
    assert backups[0].path == wrong_clock and backups[0].in_future(now)
    assert not backups[0].usable(now) and backups[1].usable(now)
    assert "dated in the future" in backups[0].oddities(now)[0]
    assert catalog.plan_prune(backups, now, 30, 0).prune == []


def test_a_backup_renamed_into_the_past_is_not_pruned_early(tmp_path):
    now = time.time()
    fresh = fake_backup(tmp_path, "d", now - DAY)
    good_manifest(fresh)
    fake = tmp_path / f"d_{stamp(now - 90 * DAY)}.db.gz"
    fresh.rename(fake)
    Path(f"{fresh}{catalog.MANIFEST_SUFFIX}").rename(f"{fake}{catalog.MANIFEST_SUFFIX}")
    newer = fake_backup(tmp_path, "d", now - 3600)
    good_manifest(newer)
    backups = catalog.list_backups(tmp_path, "d")
    assert catalog.plan_prune(backups, now, 30, 0).prune == []
    assert "name differs from its manifest's created_at" in backups[1].oddities(now)


def test_cli_stats_leave_out_a_backup_dated_in_the_future(tmp_path):
    now = time.time()
    real = fake_backup(tmp_path, "d", now - DAY)
    good_manifest(real)
    fake_backup(tmp_path, "d", now + 30 * DAY)  # name only: no created_at to go by
    stats = dict(line.split() for line in cli("stats", "--source", "/data/d.db", "--",
                                               str(tmp_path)).stdout.splitlines())
    assert stats["count"] == "2" and stats["verified_count"] == "1"
    assert stats["newest_verified_created"] == str(int(now - DAY))


# --- odd names ------------------------------------------------------------------------


ODD = ["-lead", "--", "a b'c\"", "new\nline", "trailing\n", " ", "x_20240101_000000"]


@pytest.mark.parametrize("name", ODD, ids=repr)
def test_odd_names_round_trip_through_the_file_name(name, tmp_path):
    for codec in ("zstd", "gzip", "none"):
        file_name = catalog.backup_file_name(name, NOW, codec)
        assert catalog.parse_backup_name(file_name) == (name, NOW, codec)
    path = fake_backup(tmp_path, name, NOW - DAY)
    assert [b.path for b in catalog.list_backups(tmp_path, name)] == [path]
    assert catalog.db_name(f"/x/{name}.db") == name


def test_a_trailing_newline_is_not_one_of_our_names():
    assert catalog.parse_backup_name("d_20240101_000000.db\n") is None
    assert catalog.parse_backup_name("d_20240101_000000.db.gz\n") is None


@pytest.mark.parametrize("name", ["-lead", "--", "new\nline"], ids=repr)
def test_cli_prune_and_stats_of_odd_names(name, tmp_path):
    now = time.time()
    fake_backup(tmp_path, name, now - DAY)
    old = fake_backup(tmp_path, name, now - 40 * DAY)
    source = str(tmp_path / f"{name}.db")
    stats = cli("stats", f"--source={source}", "--", str(tmp_path)).stdout
    assert "count 2\n" in stats
    out = cli("prune", "--retention-days=30", "--keep=1", f"--source={source}", "--",
              str(tmp_path)).stdout
    assert f"Pruned: {old}" in out and not old.exists()


def test_a_manifest_that_cannot_prove_its_backup_is_not_verified(tmp_path):
    """Planted or truncated: {"verified": true, "size_bytes": N} alone is never
    latest and never holds a KEEP_MIN place."""
    path = fake_backup(tmp_path, "d", NOW - DAY)
    path.with_name(path.name + catalog.MANIFEST_SUFFIX).write_text(
        json.dumps({"verified": True, "size_bytes": 6}))
    (backup,) = catalog.list_backups(tmp_path, "d")
    assert backup.manifest is not None and not backup.verified
