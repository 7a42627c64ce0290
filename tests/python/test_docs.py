"""The docs cannot drift from the code.

* Every shell block marked ``<!-- runnable -->`` in the README and docs/ runs,
  in order per document, against a temp database built by the migrations.
  ``<!-- runnable: exit=N -->`` expects exit code N.
* The ready-made examples in docs/examples/ name only scripts, flags,
  configuration keys and metrics that exist, so a rename breaks this test, not
  an operator's cron job or alert.
"""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
from pathlib import Path

import pytest

from sqlite_ops.common import REPO_ROOT

DOCS = sorted((REPO_ROOT / "docs").rglob("*.md")) + [REPO_ROOT / "README.md"]
EXAMPLES = sorted(p for p in (REPO_ROOT / "docs" / "examples").rglob("*") if p.is_file())
SCRIPTS = REPO_ROOT / "scripts"

_BLOCK = re.compile(
    r"<!-- runnable(?::\s*exit=(?P<exit>\d+))? -->\s*\n```(?:sh|bash|console)\n(?P<body>.*?)```",
    re.S,
)


def runnable_blocks(doc: Path) -> list[tuple[int, str]]:
    return [(int(m["exit"] or 0), m["body"]) for m in _BLOCK.finditer(doc.read_text())]


def _world(tmp_path: Path) -> dict[str, str]:
    """Environment for running doc commands: a migrated database with a few rows."""
    db = tmp_path / "data" / "dashboard.db"
    db.parent.mkdir()
    (tmp_path / "scratch").mkdir()
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "TZ": "UTC",
        "DB_PATH": str(db),
        "BACKUP_DIR": str(tmp_path / "data" / "backups"),
        "METRICS_DIR": str(tmp_path / "metrics"),
        "MIGRATIONS_DIR": str(REPO_ROOT / "migrations"),
        "SQLITE_OPS_CONFIG": "/dev/null",
        "SCRATCH": str(tmp_path / "scratch"),
    }
    subprocess.run([str(SCRIPTS / "migrate"), "up", "--no-backup"], env=env, check=True,
                   capture_output=True)
    subprocess.run(
        ["sqlite3", str(db),
         "INSERT INTO devices(ip, last_seen) VALUES ('10.0.0.1', '2026-01-01'),"
         " ('10.0.0.2', '2026-01-02');"],
        check=True,
    )
    return env


@pytest.mark.parametrize("doc", [d for d in DOCS if runnable_blocks(d)],
                         ids=lambda d: str(d.relative_to(REPO_ROOT)))
def test_runnable_blocks_in_docs_run(doc, tmp_path):
    env = _world(tmp_path)
    for expected, body in runnable_blocks(doc):
        proc = subprocess.run(["bash", "-eo", "pipefail", "-c", body], cwd=REPO_ROOT, env=env,
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == expected, (
            f"{doc.name}: block exited {proc.returncode}, expected {expected}:\n{body}\n"
            f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
        )


def test_the_operations_guide_has_runnable_blocks():
    guide = REPO_ROOT / "docs" / "operations" / "database-management.md"
    assert len(runnable_blocks(guide)) >= 5


def _help(script: str) -> str:
    proc = subprocess.run([str(SCRIPTS / script), "--help"], capture_output=True, text=True,
                          env={**os.environ, "SQLITE_OPS_CONFIG": "/dev/null"})
    assert proc.returncode == 0, f"{script} --help failed: {proc.stderr}"
    return proc.stdout


_INVOCATION = re.compile(r"scripts/(?P<script>[A-Za-z_.]+)(?P<args>[^\n>|;&]*)")


def example_invocations() -> list[tuple[str, str, str]]:
    found = []
    for path in EXAMPLES:
        for m in _INVOCATION.finditer(path.read_text()):
            found.append((path.name, m["script"], m["args"]))
    return found


def test_examples_invoke_only_existing_scripts_and_flags():
    invocations = example_invocations()
    assert invocations, "docs/examples should invoke the scripts"
    helps: dict[str, str] = {}
    for example, script, args in invocations:
        assert (SCRIPTS / script).is_file() and os.access(SCRIPTS / script, os.X_OK), (
            f"{example} runs scripts/{script}, which does not exist"
        )
        text = helps.setdefault(script, _help(script))
        for flag in re.findall(r"(?<!\S)(--[a-z][a-z-]*)", args):
            assert flag in text, f"{example}: scripts/{script} has no {flag} option"
        for word in re.findall(r"(?<!\S)([a-z][a-z-]+)(?!\S)", args):
            # bare words are sub-commands or tasks: they must appear in the help too
            assert word in text, f"{example}: scripts/{script} does not know '{word}'"


def _source_text() -> str:
    parts = [p.read_text() for p in SCRIPTS.iterdir() if p.is_file()]
    parts += [p.read_text() for p in (REPO_ROOT / "lib").rglob("*") if p.suffix in {".py", ".sh"}]
    return "\n".join(parts)


def test_every_docs_path_named_in_code_and_docs_exists():
    """A comment or help text pointing at a moved document sends the reader nowhere."""
    texts = {p: p.read_text() for p in DOCS + EXAMPLES}
    texts.update({p: p.read_text() for p in SCRIPTS.iterdir() if p.is_file()})
    texts.update({p: p.read_text() for p in (REPO_ROOT / "lib").rglob("*")
                  if p.suffix in {".py", ".sh"}})
    texts[REPO_ROOT / "Makefile"] = (REPO_ROOT / "Makefile").read_text()
    named = 0
    for path, text in texts.items():
        for ref in re.findall(r"\bdocs/[\w./-]*\w", text):
            named += 1
            where = path.relative_to(REPO_ROOT)
            assert (REPO_ROOT / ref).exists(), f"{where} names {ref}, which does not exist"
    assert named, "the code should point readers at docs/"


def test_example_configuration_keys_are_read_by_the_code():
    source = _source_text()
    conf = (REPO_ROOT / "docs" / "examples" / "sqlite-ops.conf").read_text()
    keys = re.findall(r"^([A-Z_]+)=", conf, re.M)
    assert keys
    for key in keys:
        assert re.search(rf"\b{key}\b", source), f"sqlite-ops.conf sets {key}, which no code reads"


def test_example_environment_variables_are_read_by_the_code():
    source = _source_text()
    for path in EXAMPLES:
        for key in re.findall(r"^Environment=([A-Z_]+)=", path.read_text(), re.M):
            assert re.search(rf"\b{key}\b", source), f"{path.name} sets {key}, which nothing reads"


def test_alert_rules_use_metrics_the_code_exports():
    source = _source_text()
    rules = [p for p in EXAMPLES if "alert" in p.name]
    assert rules, "docs/examples should hold Prometheus alert rules"
    for path in rules:
        names = set(re.findall(r"\b(sqlite_[a-z_]+)\b", path.read_text()))
        assert names
        for name in names:
            assert name in source, f"{path.name} uses {name}, which nothing exports"


def test_the_demo_runs_end_to_end_twice(tmp_path):
    """The README's first command: `make demo` (tests/demo.sh), on paths of its
    own, and again (it must be safe to re-run)."""
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "TZ": "UTC",
           "DB_PATH": str(tmp_path / "data" / "dashboard.db"),
           "BACKUP_DIR": str(tmp_path / "data" / "backups"),
           "METRICS_DIR": str(tmp_path / "data" / "metrics")}
    for run_number in (1, 2):
        proc = subprocess.run(["bash", str(REPO_ROOT / "tests" / "demo.sh")], env=env,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, f"run {run_number}:\n{proc.stdout}\n{proc.stderr}"
        assert "restored copy matches the live database" in proc.stdout
        assert "9/9 metrics" in proc.stdout
        assert "Offsite sync completed" in proc.stdout
    backups = list((tmp_path / "data" / "backups").glob("dashboard_*.db.*"))
    assert len([b for b in backups if not b.name.endswith(".manifest.json")]) == 2
    # The demo database has the dashboard's real schema (nMapping+'s devices/scans).
    assert "no drift" in proc.stdout
    conn = sqlite3.connect(tmp_path / "data" / "dashboard.db")
    try:
        assert [r[1] for r in conn.execute("PRAGMA table_info(devices)")] == [
            "id", "ip", "mac", "vendor", "hostname", "first_seen", "last_seen", "status",
            "os_info", "services", "vulnerabilities", "notes", "created_at", "updated_at"]
        assert conn.execute("SELECT count(*) FROM devices").fetchone() == (3,)
    finally:
        conn.close()


_EXAMPLE = re.compile(r"```(?:sql|python)\n(?:--|#) (?P<path>migrations/[\w.]+)\n(?P<body>.*?)```",
                      re.S)


def test_every_example_migration_in_the_guide_runs_up_and_down(tmp_path):
    """Each migration the guide shows (first line: its file name) is applied on
    top of the shipped ones to a database holding the dashboard's rows, then
    reverted: examples cannot rot into code that no longer runs."""
    import shutil

    guide = (REPO_ROOT / "docs" / "operations" / "database-management.md").read_text()
    examples = {m["path"]: m["body"] for m in _EXAMPLE.finditer(guide)}
    assert {"migrations/005_add_scan_host.sql", "migrations/006_backfill_vendor.py",
            "migrations/base.py", "migrations/007_device_groups.py",
            "migrations/008_scan_notes.py", "migrations/009_change_type_check.sql"
            } <= set(examples)
    migrations = tmp_path / "migrations"
    shutil.copytree(REPO_ROOT / "migrations", migrations)
    for path, body in examples.items():
        (tmp_path / path).write_text(body)
    db = tmp_path / "dashboard.db"
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "SQLITE_OPS_CONFIG": "/dev/null",
           "DB_PATH": str(db), "MIGRATIONS_DIR": str(migrations)}

    def migrate(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(SCRIPTS / "migrate"), *args], env=env, capture_output=True,
                              text=True, timeout=60)

    assert migrate("up", "--no-backup", "--to", "4").returncode == 0
    with sqlite3.connect(db) as conn:
        conn.execute("INSERT INTO devices (ip, mac) VALUES ('10.0.0.1', '00:1A:2B:00:00:01'), "
                     "('10.0.0.2', '3c:5a:b4:00:00:02'), ('10.0.0.3', NULL)")
        conn.execute("INSERT INTO scans (scan_type, scan_date) VALUES ('discovery', '2024-05-01')")
        conn.execute("INSERT INTO network_changes (device_ip, change_type, scan_id) "
                     "VALUES ('10.0.0.1', 'new', 1)")
    proc = migrate("up", "--no-backup")
    assert proc.returncode == 0, proc.stderr
    assert [line.split()[1] for line in proc.stdout.splitlines() if line.startswith("applied")] \
        == ["005_add_scan_host.sql", "006_backfill_vendor.py", "007_device_groups.py",
            "008_scan_notes.py", "009_change_type_check.sql"]
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT vendor FROM devices ORDER BY ip").fetchall() == [
            ("Ayecom",), ("Google",), (None,)]
        assert "notes" in [r[1] for r in conn.execute("PRAGMA table_info(scans)")]
        assert conn.execute("SELECT device_ip, scan_id FROM network_changes").fetchall() == [
            ("10.0.0.1", 1)]
        with pytest.raises(sqlite3.IntegrityError):  # 009's CHECK is in force
            conn.execute("INSERT INTO network_changes (device_ip, change_type) VALUES ('x', 'y')")
    proc = migrate("down", "--to", "4", "--no-backup")
    assert proc.returncode == 0, proc.stderr
    assert migrate("schema", "--check").returncode == 0


_QUOTED = re.compile(r"<!-- quoted -->\s*\n\s*```text\n(?P<body>.*?)```", re.S)


def _code_strings() -> str:
    """The scripts' and library's text with string literals split over lines
    (Python's implicit concatenation) joined back, so a message reads whole."""
    files = [p for p in SCRIPTS.iterdir() if p.is_file()]
    files += sorted((REPO_ROOT / "lib").rglob("*.py")) + [REPO_ROOT / "lib" / "common.sh"]
    text = "\n".join(p.read_text() for p in files)
    return re.sub(r'"\s*\n\s*(?:rf|f|r)?"', "", text)


def test_messages_the_runbook_quotes_are_printed_by_the_code():
    """Each `<!-- quoted -->` block of the guide holds messages word for word,
    with <placeholders> for paths and numbers: every literal piece of them
    must be in the code, so the runbook cannot promise a line nobody prints."""
    guide = (REPO_ROOT / "docs" / "operations" / "database-management.md").read_text()
    blocks = [m["body"] for m in _QUOTED.finditer(guide)]
    assert len(blocks) >= 8
    code = _code_strings()
    for block in blocks:
        for line in block.splitlines():
            line = re.sub(r"^(restore_database\.sh|db_metrics): (info: |warning: )?", "",
                          line.strip())
            for piece in re.split(r"<[^<>]+>", line):
                piece = piece.strip()
                if len(piece) >= 8:
                    assert piece in code, f"the guide quotes {piece!r}, which no code prints"


def test_every_manifest_field_is_in_the_guides_field_table():
    from sqlite_ops import catalog

    guide = (REPO_ROOT / "docs" / "operations" / "database-management.md").read_text()
    rows = [line for line in guide.splitlines() if line.startswith("| `")]
    for field in catalog.MANIFEST_SCHEMA:
        assert any(f"`{field}`" in row.split(" | ")[0] for row in rows), field
