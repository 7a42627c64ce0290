"""Tests for lib/sqlite_ops/metrics.py: what a scrape reports, checked against the database."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from opsenv import in_a_pid_namespace_of_its_own, seen_as_from_a_pid_namespace_of_its_own
from promparse import prom_samples

from sqlite_ops import metrics
from sqlite_ops.common import REPO_ROOT, OpsError

CORPUS = Path(os.environ.get("SQLITE_OPS_CORPUS", REPO_ROOT.parent / "shared" / "data"))

ODD_NAMES = ["Order Details", 'we"ird\\name', "two\nlines", "naïve tablé"]


def corpus_file(name: str) -> Path:
    path = CORPUS / name
    if not path.is_file():
        pytest.skip(f"real-world corpus not found at {CORPUS} (set SQLITE_OPS_CORPUS)")
    return path


def q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def odd_names_db(path: Path, rows: int = 50, journal_mode: str = "wal") -> Path:
    """``rows`` devices with two indexes, and a table with an index for every
    name in ODD_NAMES: what a scrape must label and escape."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(f"PRAGMA journal_mode = {journal_mode}")
    conn.execute("PRAGMA synchronous = off")
    conn.execute("BEGIN")
    conn.execute("CREATE TABLE devices (id INTEGER PRIMARY KEY, ip TEXT NOT NULL, kind TEXT)")
    conn.execute("CREATE INDEX idx_devices_ip ON devices (ip)")
    conn.execute("CREATE INDEX idx_devices_kind ON devices (kind)")
    conn.executemany("INSERT INTO devices (ip, kind) VALUES (?, ?)",
                     [(f"10.0.0.{i}", "router" if i % 2 else "server") for i in range(rows)])
    for n, name in enumerate(ODD_NAMES, 1):
        conn.execute(f"CREATE TABLE {q(name)} (a INTEGER, b TEXT)")
        conn.execute(f"CREATE INDEX {q('ix ' + name)} ON {q(name)} (a)")
        conn.executemany(f"INSERT INTO {q(name)} VALUES (?, ?)", [(i, "x") for i in range(n * 7)])
    conn.execute("COMMIT")
    conn.close()
    return path



def by_label(parsed: dict[str, list], metric: str, label: str) -> dict[str, float]:
    return {labels[label]: value for labels, value in parsed.get(metric, [])}


def scrape(db: Path, **options) -> dict[str, list]:
    report = metrics.collect(str(db), metrics.Options(**options))
    return prom_samples(metrics.render_prometheus(report))


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return odd_names_db(tmp_path / "dash.db")


def test_file_figures_match_the_database(db: Path) -> None:
    parsed = scrape(db)
    conn = sqlite3.connect(db)
    page_count, page_size, freelist = conn.execute(
        "SELECT * FROM pragma_page_count(), pragma_page_size(), pragma_freelist_count()"
    ).fetchone()
    assert parsed["sqlite_pages"] == [({"db": "dash"}, page_count)]
    assert parsed["sqlite_page_size_bytes"][0][1] == page_size
    assert parsed["sqlite_freelist_pages"][0][1] == freelist
    assert parsed["sqlite_file_size_bytes"][0][1] == db.stat().st_size
    assert parsed["sqlite_wal_size_bytes"][0][1] == os.stat(f"{db}-wal").st_size
    info = parsed["sqlite_info"][0][0]
    assert info["journal_mode"] == "wal" and info["path"] == str(db)
    conn.close()


def test_exact_counts_match_count_star_and_odd_names_survive_escaping(db: Path) -> None:
    rows = by_label(scrape(db, exact_counts=True), "sqlite_table_rows", "table")
    conn = sqlite3.connect(db)
    for name in ["devices", *ODD_NAMES]:
        assert rows[name] == conn.execute(f"SELECT count(*) FROM {q(name)}").fetchone()[0]
    assert set(rows) == {"devices", *ODD_NAMES}


def test_estimates_come_from_sqlite_stat1_and_no_counting_by_default(db: Path) -> None:
    parsed = scrape(db)
    assert "sqlite_table_rows" not in parsed
    assert "sqlite_table_rows_estimate" not in parsed  # never analysed yet
    sqlite3.connect(db).execute("ANALYZE").connection.close()
    estimates = by_label(scrape(db), "sqlite_table_rows_estimate", "table")
    assert estimates["devices"] == 50
    assert estimates["Order Details"] == 7 and estimates["two\nlines"] == 21


def test_an_empty_table_is_an_estimate_of_zero_not_a_missing_statistic(db: Path) -> None:
    """ANALYZE writes nothing for an empty table: "run analyze" would never go away."""
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE scans (id INTEGER PRIMARY KEY, at TEXT)")
    conn.execute("CREATE INDEX idx_scans_at ON scans (at)")
    conn.execute("ANALYZE")
    conn.commit()
    conn.close()
    report = metrics.collect(str(db), metrics.Options())
    estimates = by_label(prom_samples(metrics.render_prometheus(report)),
                         "sqlite_table_rows_estimate", "table")
    assert estimates["scans"] == 0 and estimates["devices"] == 50
    assert not [note for note in report.notes if "no statistics" in note]


def test_index_statistics_before_and_after_analyze(db: Path) -> None:
    stats = by_label(scrape(db), "sqlite_index_has_stats", "index")
    assert stats == {"idx_devices_ip": 0, "idx_devices_kind": 0,
                     **{"ix " + n: 0 for n in ODD_NAMES}}
    sqlite3.connect(db).execute("ANALYZE").connection.close()
    stats = by_label(scrape(db), "sqlite_index_has_stats", "index")
    assert set(stats.values()) == {1}


def test_index_usage_from_query_plans(db: Path, tmp_path: Path) -> None:
    queries = tmp_path / "queries.sql"
    queries.write_text(textwrap.dedent("""\
        -- a comment line, then a blank one

        SELECT id FROM devices WHERE ip = '10.0.0.7';
        SELECT b FROM "Order Details" WHERE a = 3;
        SELECT * FROM devices WHERE ip > '10.0.0.1' ORDER BY ip;
        SELECT nonsense FROM nowhere;
        """))
    parsed = scrape(db, queries_file=str(queries))
    used = by_label(parsed, "sqlite_index_used_by_queries", "index")
    assert used["idx_devices_ip"] == 2
    assert used["ix Order Details"] == 1
    assert used["idx_devices_kind"] == 0
    assert parsed["sqlite_queries_checked"][0][1] == 3
    assert "sqlite_query_duration_seconds" not in parsed  # timing is opt-in


def test_plan_uses_matches_whole_index_names_only() -> None:
    detail = "SEARCH t USING INDEX idx_ab (a=?)"
    assert metrics.plan_uses(detail, "idx_ab")
    assert not metrics.plan_uses(detail, "idx_a")
    assert metrics.plan_uses("SCAN t USING COVERING INDEX my (odd) idx", "my (odd) idx")


def test_query_timing_reports_a_median_and_cuts_slow_queries(db: Path, tmp_path: Path) -> None:
    queries = tmp_path / "queries.sql"
    slow = ("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) "
            "SELECT count(*) FROM n;")
    queries.write_text(f"SELECT count(*) FROM devices;\n{slow}\n")
    report = metrics.collect(str(db), metrics.Options(
        queries_file=str(queries), time_queries=True, query_runs=3, query_time_limit=0.2))
    parsed = prom_samples(metrics.render_prometheus(report))
    times = by_label(parsed, "sqlite_query_duration_seconds", "query")
    assert list(times) == ["SELECT count(*) FROM devices;"]
    assert 0 < times["SELECT count(*) FROM devices;"] < 1
    assert any("cut short" in note for note in report.notes)


def test_table_and_index_sizes_from_dbstat(db: Path) -> None:
    parsed = scrape(db, table_sizes=True)
    tables = by_label(parsed, "sqlite_table_size_bytes", "table")
    indexes = by_label(parsed, "sqlite_index_size_bytes", "index")
    conn = sqlite3.connect(db)
    expected = dict(conn.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name"))
    assert tables == {name: expected[name] for name in ["devices", *ODD_NAMES]}
    assert indexes["ix Order Details"] == expected["ix Order Details"]
    assert "sqlite_table_size_bytes" not in scrape(db)  # opt-in


def test_a_scrape_changes_nothing(tmp_path: Path) -> None:
    db = odd_names_db(tmp_path / "dash.db", journal_mode="delete")
    before = hashlib.sha256(db.read_bytes()).hexdigest(), db.stat().st_mtime_ns
    scrape(db, exact_counts=True, table_sizes=True)
    assert (hashlib.sha256(db.read_bytes()).hexdigest(), db.stat().st_mtime_ns) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dash.db"]


@pytest.mark.parametrize("name", ["with space.db", "what?mode=rw.db", "hash#tag.db",
                                  "it's \"quoted\".db", "100%.db", "ünï.db"])
def test_paths_with_uri_characters_open_the_right_file_read_only(tmp_path: Path,
                                                                 name: str) -> None:
    db = odd_names_db(tmp_path / name, rows=3, journal_mode="delete")
    conn = metrics.connect_readonly(str(db))
    assert conn.execute("SELECT count(*) FROM devices").fetchone()[0] == 3
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        conn.execute("CREATE TABLE t (x)")
    conn.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]


def test_schema_version_is_the_highest_applied_migration(db: Path) -> None:
    report = metrics.collect(str(db))
    assert report.schema_version is None
    assert json.loads(metrics.render_json(report))["schema_version"] is None
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, description TEXT)")
    conn.executemany("INSERT INTO schema_migrations VALUES (?, 'x')", [(1,), (2,), (10,)])
    conn.close()
    parsed = scrape(db)
    assert parsed["sqlite_schema_migration_version"][0][1] == 10


def test_schema_drift_against_the_shipped_migrations(tmp_path: Path) -> None:
    db = tmp_path / "dash.db"
    migrations = REPO_ROOT / "migrations"
    subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "migrate"), "--db", str(db),
                    "--migrations", str(migrations), "up", "--no-backup"],
                   check=True, capture_output=True)
    parsed = scrape(db, migrations_dir=str(migrations))
    assert parsed["sqlite_schema_drift"][0][1] == 0
    sqlite3.connect(db).execute("CREATE INDEX hotfix ON devices (hostname)").connection.close()
    report = metrics.collect(str(db), metrics.Options(migrations_dir=str(migrations)))
    assert report.value("sqlite_schema_drift") == 1
    assert any("hotfix" in line for line in report.drift or [])


def test_no_schema_file_means_no_drift_metric(db: Path, tmp_path: Path) -> None:
    report = metrics.collect(str(db), metrics.Options(migrations_dir=str(tmp_path)))
    assert report.value("sqlite_schema_drift") is None
    assert any("schema drift not checked" in n for n in report.notes)


def test_backup_freshness_from_the_catalog(db: Path, tmp_path: Path) -> None:
    backups = tmp_path / "backups"
    backups.mkdir()
    for stamp, verified in [("20240101_000000", True), ("20240102_000000", False)]:
        path = backups / f"dash_{stamp}.db"
        path.write_bytes(b"x" * 10)
        manifest = {"verified": verified, "size_bytes": 10, "sha256": "0" * 64,
                    "db_sha256": "0" * 64, "tables": {}}
        (backups / f"{path.name}.manifest.json").write_text(json.dumps(manifest))
    (backups / "other_20250101_000000.db").write_bytes(b"x")
    parsed = scrape(db, backup_dir=str(backups))
    assert parsed["sqlite_backup_catalog_files"][0][1] == 2
    assert parsed["sqlite_backup_catalog_verified_files"][0][1] == 1
    assert parsed["sqlite_backup_latest_timestamp_seconds"][0][1] == 1704153600
    assert parsed["sqlite_backup_latest_verified_timestamp_seconds"][0][1] == 1704067200


def test_backup_metrics_survive_a_hostile_manifest_and_ignore_the_future(db: Path,
                                                                         tmp_path: Path) -> None:
    backups = tmp_path / "backups"
    backups.mkdir()
    good = {"verified": True, "size_bytes": 10, "sha256": "0" * 64, "db_sha256": "0" * 64,
            "tables": {}}
    for stamp, text in [
        ("20240101_000000", json.dumps(good)),
        ("20240102_000000", "[" * 100000),  # newer, hostile
        ("20240103_000000", json.dumps(dict(good, tables={"t": "many"}))),
        ("20990101_000000", json.dumps(good)),  # a wrong clock
    ]:
        path = backups / f"dash_{stamp}.db"
        path.write_bytes(b"x" * 10)
        (backups / f"{path.name}.manifest.json").write_text(text)
    parsed = scrape(db, backup_dir=str(backups))
    assert parsed["sqlite_backup_catalog_files"][0][1] == 4
    assert parsed["sqlite_backup_catalog_verified_files"][0][1] == 2
    assert parsed["sqlite_backup_catalog_suspect_files"][0][1] == 3
    assert parsed["sqlite_backup_latest_timestamp_seconds"][0][1] == 1704240000
    assert parsed["sqlite_backup_latest_verified_timestamp_seconds"][0][1] == 1704067200


def hold(db: Path, sql: str) -> subprocess.Popen:
    """Another process that runs ``sql`` on ``db``, says 'ready' and waits (at most 20 s)."""
    code = textwrap.dedent("""\
        import sqlite3, sys, time
        conn = sqlite3.connect(sys.argv[1], isolation_level=None)
        for statement in sys.argv[2].split(";"):
            if statement.strip():
                conn.execute(statement)
        print("ready", flush=True)
        sys.stdin.readline()
        """)
    proc = subprocess.Popen([sys.executable, "-c", code, str(db), sql], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    return proc


def release(proc: subprocess.Popen) -> None:
    proc.communicate("\n", timeout=20)


@pytest.mark.parametrize("journal_mode", ["wal", "delete"])
def test_write_lock_held_is_seen_without_taking_it(tmp_path: Path, journal_mode: str) -> None:
    db = odd_names_db(tmp_path / "dash.db", journal_mode=journal_mode)
    assert scrape(db)["sqlite_write_lock_held"][0][1] == 0
    writer = hold(db, "BEGIN IMMEDIATE; INSERT INTO devices (ip) VALUES ('x')")
    try:
        assert scrape(db)["sqlite_write_lock_held"][0][1] == 1
    finally:
        release(writer)
    assert scrape(db)["sqlite_write_lock_held"][0][1] == 0


def test_a_wal_write_lock_that_cannot_be_asked_is_not_probed_never_not_held(
        db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """In WAL mode a writer locks only the -shm: with that answer unknown, the
    database file's "no" must not become sqlite_write_lock_held 0."""
    asked = metrics.locks_held
    monkeypatch.setattr(metrics, "locks_held", lambda path, spans: None
                        if path.endswith("-shm") else asked(path, spans))
    report = metrics.collect(str(db))
    assert report.value("sqlite_write_lock_held") is None
    assert any(note.startswith("write lock not probed") for note in report.notes)


def test_open_processes_are_counted(db: Path) -> None:
    assert scrape(db)["sqlite_open_processes"][0][1] == 0
    readers = [hold(db, "SELECT count(*) FROM devices") for _ in range(2)]
    try:
        assert scrape(db)["sqlite_open_processes"][0][1] == 2
    finally:
        for reader in readers:
            release(reader)


SCRAPE_HERE = """
import json, sys
from sqlite_ops import metrics
report = metrics.collect(sys.argv[1])
print(json.dumps([report.value("sqlite_open_processes"), report.value("sqlite_write_lock_held"),
                  report.notes]))
"""


def test_a_scrape_from_a_container_of_its_own_still_sees_the_applications_locks(
        tmp_path: Path) -> None:
    """A scrape in a PID namespace of its own counts none of the application's
    processes (/proc shows none of them) but sees its write lock, and says why
    the count is 0."""
    db = odd_names_db(tmp_path / "dash.db")
    writer = hold(db, "BEGIN IMMEDIATE; INSERT INTO devices (ip) VALUES ('x')")
    try:
        proc = in_a_pid_namespace_of_its_own(
            [sys.executable, "-c", SCRAPE_HERE, str(db)],
            dict(os.environ, PYTHONPATH=str(REPO_ROOT / "lib")))
    finally:
        release(writer)
    assert proc.returncode == 0, proc.stderr
    processes, write_lock, notes = json.loads(proc.stdout)
    assert (processes, write_lock) == (0, 1)
    assert any("another PID namespace" in note for note in notes), notes


def test_a_scrape_that_sees_only_the_applications_locks_says_so(tmp_path: Path,
                                                                monkeypatch) -> None:
    """The same without making a namespace (a container may forbid it)."""
    db = odd_names_db(tmp_path / "dash.db")
    seen_as_from_a_pid_namespace_of_its_own(monkeypatch, metrics)
    writer = hold(db, "BEGIN IMMEDIATE; INSERT INTO devices (ip) VALUES ('x')")
    try:
        report = metrics.collect(str(db))
    finally:
        release(writer)
    assert report.value("sqlite_open_processes") == 0
    assert report.value("sqlite_write_lock_held") == 1
    assert any("in another PID namespace" in note for note in report.notes), report.notes


def test_missing_and_non_sqlite_files_are_usage_errors(tmp_path: Path) -> None:
    with pytest.raises(OpsError) as missing:
        metrics.collect(str(tmp_path / "nope.db"))
    assert missing.value.code == 2 and "database not found" in missing.value.message
    (tmp_path / "text.db").write_text("hello")
    with pytest.raises(OpsError) as text:
        metrics.collect(str(tmp_path / "text.db"))
    assert text.value.code == 2 and "not an SQLite database" in text.value.message


def test_a_damaged_database_is_reported_not_hidden(tmp_path: Path) -> None:
    """Damage is a metric (sqlite_integrity_probe_ok 0) Prometheus can page on; the
    CLI then exits 4 (tests/bats/incident.bats)."""
    db = tmp_path / "broken.db"
    shutil.copyfile(corpus_file("corrupt/chinook_rootswap.sqlite"), db)
    report = metrics.collect(str(db))
    assert "malformed" in report.damage
    assert report.value("sqlite_integrity_probe_ok") == 0


def test_the_cheap_probe_sees_a_damaged_first_or_last_leaf_and_nothing_else(tmp_path: Path):
    db = tmp_path / "app.db"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, pad TEXT)")
    conn.executemany("INSERT INTO t(pad) VALUES (?)", [("x" * 300,)] * 2000)
    conn.commit()
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.close()
    healthy = metrics.collect(str(db))
    assert healthy.value("sqlite_integrity_probe_ok") == 1 and healthy.damage is None
    with open(db, "r+b") as handle:  # a leaf in the middle: only quick_check sees it
        handle.seek(4096 * (pages // 2) + 8)
        handle.write(b"\xff" * 64)
    assert metrics.collect(str(db)).value("sqlite_integrity_probe_ok") == 1
    checked = metrics.collect(str(db), metrics.Options(integrity_check=True))
    assert checked.value("sqlite_integrity_probe_ok") == 0
    assert checked.value("sqlite_integrity_quick_check_ok") == 0
    with open(db, "r+b") as handle:  # the last leaf: the probe reads it
        handle.seek(4096 * (pages - 1) + 8)
        handle.write(b"\xff" * 64)
    assert metrics.collect(str(db)).value("sqlite_integrity_probe_ok") == 0


def test_a_scrape_never_opens_the_database_file_beside_its_connection(tmp_path: Path,
                                                                        monkeypatch) -> None:
    """Closing a second descriptor of the file would drop the POSIX locks the
    connection holds (they belong to the process): the header is read first."""
    db = tmp_path / "app.db"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY)")
    conn.close()
    connected, opened_after = [], []
    real_connect = metrics.connect_readonly

    def connect(*args, **kwargs):
        connected.append(True)
        return real_connect(*args, **kwargs)

    def guarded_open(path, *args, **kwargs):
        if connected and os.path.realpath(path) == os.path.realpath(db):
            opened_after.append(path)
        return open(path, *args, **kwargs)

    monkeypatch.setattr(metrics, "connect_readonly", connect)
    monkeypatch.setattr(metrics, "open", guarded_open, raising=False)
    report = metrics.collect(str(db))
    assert connected and not opened_after
    assert report.value("sqlite_integrity_probe_ok") == 1


def test_northwind_order_details(tmp_path: Path) -> None:
    db = tmp_path / "northwind.sqlite"
    shutil.copyfile(corpus_file("northwind.sqlite"), db)
    rows = by_label(scrape(db, exact_counts=True), "sqlite_table_rows", "table")
    conn = sqlite3.connect(db)
    assert rows["Order Details"] == conn.execute(
        'SELECT count(*) FROM "Order Details"').fetchone()[0] > 0
    assert len(rows) == conn.execute(
        "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite%'"
    ).fetchone()[0]


def test_textfile_is_published_atomically(db: Path, tmp_path: Path) -> None:
    out = tmp_path / "textfile"
    text = metrics.render_prometheus(metrics.collect(str(db)))
    path = metrics.write_textfile(str(out), "dash", text)
    assert path == str(out / "sqlite_ops_dash.prom")
    assert Path(path).read_text() == text
    assert oct(os.stat(path).st_mode & 0o777) == "0o644"
    assert [p.name for p in out.iterdir()] == ["sqlite_ops_dash.prom"]
    assert metrics.textfile_name('we"ird/..\nname') == "sqlite_ops_we_ird_.._name.prom"


def test_json_carries_the_same_samples(db: Path) -> None:
    data = json.loads(metrics.render_json(metrics.collect(str(db), metrics.Options(
        exact_counts=True))))
    assert data["db"] == "dash"
    rows = {s["labels"]["table"]: s["value"] for s in data["metrics"]["sqlite_table_rows"]}
    assert rows["two\nlines"] == 21


def test_health(db: Path, tmp_path: Path) -> None:
    ok, info = metrics.health(str(db), quick_check=True)
    assert ok and info["status"] == "ok" and info["quick_check"] == ["ok"]
    ok, info = metrics.health(str(tmp_path / "nope.db"))
    assert not ok and info["status"] == "error" and "not found" in info["error"]
    broken = tmp_path / "broken.db"
    shutil.copyfile(corpus_file("corrupt/corruptN_1.sqlite"), broken)
    ok, info = metrics.health(str(broken), quick_check=True)
    assert not ok and info["status"] == "error"


def test_the_last_maintenance_check_is_read_back(tmp_path: Path) -> None:
    """maintain_database.sh's verdict and time (METRICS_DIR) reach every cheap
    scrape: a failed check keeps sqlite_integrity_probe_ok at 0, and the age
    of the newest full check is exported."""
    db = tmp_path / "app.db"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE t(x)")
    conn.close()
    records = tmp_path / "metrics"
    records.mkdir()
    then = time.time() - 3 * 86400
    prom = records / "sqlite_ops_maintenance_app.prom"
    for ok in (1, 0):
        prom.write_text(
            "# TYPE sqlite_maintenance_last_success_timestamp_seconds gauge\n"
            f'sqlite_maintenance_last_success_timestamp_seconds{{db="app",task="check"}} {then}\n'
            "# TYPE sqlite_integrity_ok gauge\n"
            f'sqlite_integrity_ok{{db="app"}} {ok}\n')
        report = metrics.collect(str(db), metrics.Options(records_dir=str(records)))
        assert report.value("sqlite_integrity_probe_ok") == ok
        assert abs(report.value("sqlite_integrity_check_age_seconds") - 3 * 86400) < 60
    none = metrics.collect(str(db))
    assert none.value("sqlite_integrity_check_age_seconds") is None
    assert any("no full integrity check on record" in note for note in none.notes)


def test_a_quick_check_that_cannot_run_is_no_verdict_of_damage(tmp_path: Path,
                                                               monkeypatch) -> None:
    """A writer that takes the rollback-journal database between the scrape's
    probe and its quick_check, past the busy timeout: "database is locked" says
    nothing about the pages. No damage, no quick_check_ok 0 (an alert that
    pages someone for a lock), and a note that says why there is no verdict."""
    db = odd_names_db(tmp_path / "app.db", journal_mode="delete")
    writer = sqlite3.connect(db, isolation_level=None)
    real = metrics.collect_integrity

    def locked_first(*args, **kwargs):
        writer.execute("BEGIN EXCLUSIVE")
        return real(*args, **kwargs)

    monkeypatch.setattr(metrics, "collect_integrity", locked_first)
    try:
        report = metrics.collect(str(db), metrics.Options(integrity_check=True, busy_timeout=0.1))
    finally:
        writer.execute("ROLLBACK")
        writer.close()
    assert report.damage is None
    assert report.value("sqlite_integrity_probe_ok") == 1
    assert report.value("sqlite_integrity_quick_check_ok") is None
    assert any("PRAGMA quick_check could not run (database is locked)" in note
               for note in report.notes), report.notes
