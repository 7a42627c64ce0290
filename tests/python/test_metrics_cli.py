"""Tests for lib/sqlite_ops/metrics_cli.py: the db_metrics command, run as a subprocess."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from promparse import prom_samples

from sqlite_ops import metrics_cli
from sqlite_ops.common import REPO_ROOT, SOPS_DEFAULTS

DB_METRICS = REPO_ROOT / "scripts" / "db_metrics"


def order_details_db(path: Path) -> Path:
    """One table whose name holds a space (Northwind's "Order Details"), WAL."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = wal")
    conn.execute('CREATE TABLE "Order Details" (id INTEGER PRIMARY KEY, qty INTEGER)')
    conn.execute("BEGIN")
    conn.executemany('INSERT INTO "Order Details" (qty) VALUES (?)', [(i,) for i in range(12)])
    conn.execute("COMMIT")
    conn.close()
    return path


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(DB_METRICS), *args], capture_output=True, text=True, timeout=30,
                          env={**os.environ, **(env or {})})



@pytest.fixture
def db(tmp_path: Path) -> Path:
    return order_details_db(tmp_path / "shop.db")


def test_prints_prometheus_text_with_exact_counts(db: Path) -> None:
    result = run("--db", str(db), "--exact-counts")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    rows = prom_samples(result.stdout)["sqlite_table_rows"]
    assert rows == [({"db": "shop", "table": "Order Details"}, 12)]


@pytest.mark.parametrize("name", ["-lead.db", "--.db", "new\nline.db"], ids=repr)
def test_a_database_named_like_an_option_is_the_value_of_db(tmp_path: Path, name: str) -> None:
    order_details_db(tmp_path / name)
    result = subprocess.run([str(DB_METRICS), "--db", name, "--exact-counts"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    label = name[:-3].replace("\n", "\\n")
    assert f'sqlite_table_rows{{db="{label}",table="Order Details"}} 12' in result.stdout


def test_json_format(db: Path) -> None:
    result = run("--db", str(db), "--format", "json")
    assert result.returncode == 0
    data = json.loads(result.stdout)
    assert data["db"] == "shop" and data["schema_version"] is None
    assert data["metrics"]["sqlite_file_size_bytes"][0]["value"] == db.stat().st_size


def test_db_path_from_config_file_and_flag_precedence(db: Path, tmp_path: Path) -> None:
    config = tmp_path / "ops.conf"
    config.write_text(f"DB_PATH={db}\n")
    assert run("--config", str(config)).returncode == 0
    result = run("--config", str(config), "--db", str(tmp_path / "other.db"))
    assert result.returncode == 2
    env_result = run("--config", str(config), env={"DB_PATH": str(tmp_path / "env.db")})
    assert env_result.returncode == 2 and "env.db" in env_result.stderr


@pytest.mark.parametrize("args, message", [
    (["--db", "{tmp}/missing.db"], "database not found"),
    (["--db", "{tmp}/text.db"], "not an SQLite database"),
    (["--db", "{db}", "--format", "xml"], "invalid choice"),
    (["--db", "{db}", "--bogus"], "unrecognized arguments"),
    # an abbreviation would be a guess: --text is not --textfile
    (["--db", "{db}", "--text={tmp}"], "unrecognized arguments"),
    (["--db", "{db}", "--queries", "{tmp}/none.sql"], "queries file not found"),
    (["serve", "--db", "{db}", "--listen", "nowhere"], "--listen needs HOST:PORT"),
])
def test_usage_errors_are_one_line_and_exit_2(db: Path, tmp_path: Path, args: list[str],
                                              message: str) -> None:
    (tmp_path / "text.db").write_text("not a database")
    result = run(*[a.format(tmp=tmp_path, db=db) for a in args])
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith("db_metrics: ") and message in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_textfile_writes_the_prom_file_and_prints_its_path(db: Path, tmp_path: Path) -> None:
    out = tmp_path / "textfile"
    result = run("--db", str(db), "--textfile", str(out))
    assert result.returncode == 0
    assert result.stdout == f"{out / 'sqlite_ops_shop.prom'}\n"
    assert prom_samples((out / "sqlite_ops_shop.prom").read_text())["sqlite_pages"][0][1] > 0


def test_a_failed_scrape_replaces_the_last_good_textfile(db: Path, tmp_path: Path) -> None:
    """The previous run's values must not go on saying all is well: a header
    destroyed is damage (probe 0, exit 2 as for any non-SQLite file); a
    database gone is only a failed scrape. The last --integrity-check stays."""
    out = tmp_path / "textfile"
    prom = out / "sqlite_ops_shop.prom"
    assert run("--db", str(db), "--textfile", str(out), "--integrity-check").returncode == 0
    good = prom_samples(prom.read_text())
    assert good["sqlite_integrity_probe_ok"][0][1] == 1
    assert good["sqlite_metrics_scrape_success"][0][1] == 1
    with open(db, "r+b") as handle:
        handle.write(b"\0" * 100)  # page 1's header, destroyed
    result = run("--db", str(db), "--textfile", str(out))
    assert result.returncode == 2 and "not an SQLite database" in result.stderr
    after = prom_samples(prom.read_text())
    assert after["sqlite_metrics_scrape_success"][0][1] == 0
    assert after["sqlite_integrity_probe_ok"][0][1] == 0
    assert "sqlite_pages" not in after
    assert after["sqlite_integrity_check_timestamp_seconds"] == \
        good["sqlite_integrity_check_timestamp_seconds"]
    db.unlink()
    Path(f"{db}-wal").unlink(missing_ok=True)
    order_details_db(db)  # restored: a good scrape clears the verdict; then the file goes
    assert run("--db", str(db), "--textfile", str(out)).returncode == 0
    db.unlink()
    Path(f"{db}-wal").unlink(missing_ok=True)
    assert run("--db", str(db), "--textfile", str(out)).returncode == 2
    gone = prom_samples(prom.read_text())
    assert gone["sqlite_metrics_scrape_success"][0][1] == 0
    assert "sqlite_integrity_probe_ok" not in gone


def test_a_locked_scrape_keeps_a_damage_verdict_and_its_own_exit_code(tmp_path: Path) -> None:
    """A scrape that finds the database locked exits 75 (busy), whatever
    happens to its textfile, and does not clear the last scrape's damage."""
    db = tmp_path / "shop.db"
    out = tmp_path / "textfile"
    out.mkdir()
    prom = out / "sqlite_ops_shop.prom"
    prom.write_text('# TYPE sqlite_integrity_probe_ok gauge\n'
                    'sqlite_integrity_probe_ok{db="shop"} 0\n')  # an earlier scrape's verdict
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY)")
    conn.execute("BEGIN EXCLUSIVE")  # rollback mode: no reader gets in
    try:
        result = run("--db", str(db), "--textfile", str(out))
        assert result.returncode == 75, result.stderr
        after = prom_samples(prom.read_text())
        assert after["sqlite_metrics_scrape_success"][0][1] == 0
        assert after["sqlite_integrity_probe_ok"][0][1] == 0
        os.chmod(out, 0o777)  # a directory it refuses to write into
        result = run("--db", str(db), "--textfile", str(out))
        assert result.returncode == 75 and "is locked" in result.stderr
        assert "warning: not writing metrics into" in result.stderr
    finally:
        conn.execute("ROLLBACK")
        conn.close()
        os.chmod(out, 0o700)


def test_listen_address_parsing() -> None:
    assert metrics_cli.parse_listen(SOPS_DEFAULTS["METRICS_LISTEN"]) == ("127.0.0.1", 9560)
    assert metrics_cli.parse_listen(":9999") == ("127.0.0.1", 9999)
    assert metrics_cli.parse_listen("[::1]:80") == ("::1", 80)


def test_serve_command_prints_its_address_and_answers(db: Path) -> None:
    proc = subprocess.Popen([sys.executable, str(DB_METRICS), "serve", "--db", str(db),
                             "--listen", "127.0.0.1:0"], stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("Listening on http://127.0.0.1:")
        url = line.split()[-1].replace("/metrics", "/health")
        with urllib.request.urlopen(url, timeout=10) as response:
            assert json.loads(response.read())["status"] == "ok"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
