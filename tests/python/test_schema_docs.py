"""docs/schema.md is generated from the migrations and cannot drift from them."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sqlite_ops import schema_docs
from sqlite_ops.common import EX_VERIFY, REPO_ROOT, OpsError

MIGRATIONS = REPO_ROOT / "migrations"


def test_committed_schema_reference_is_what_make_docs_generates():
    committed = (REPO_ROOT / "docs" / "schema.md").read_text(encoding="utf-8")
    assert committed == schema_docs.generate(MIGRATIONS), "run make docs, commit docs/schema.md"


def test_every_table_and_column_is_described():
    conn = schema_docs.load_schema(MIGRATIONS / "schema.sql")
    described = schema_docs.load_descriptions(MIGRATIONS / "schema_docs.json")
    assert schema_docs.missing_descriptions(conn, described) == []


def _copy_migrations(tmp_path: Path) -> Path:
    target = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS, target)
    return target


def test_a_new_column_without_a_description_fails_generation(tmp_path):
    migrations = _copy_migrations(tmp_path)
    schema = migrations / "schema.sql"
    schema.write_text(schema.read_text() + "\nCREATE TABLE extra (id INTEGER PRIMARY KEY);\n")
    with pytest.raises(OpsError) as raised:
        schema_docs.generate(migrations)
    assert raised.value.code == EX_VERIFY
    assert "table extra" in raised.value.message

    docs = json.loads((migrations / "schema_docs.json").read_text())
    docs["tables"]["extra"] = {"description": "An extra table.", "columns": {}}
    (migrations / "schema_docs.json").write_text(json.dumps(docs))
    with pytest.raises(OpsError) as raised:
        schema_docs.generate(migrations)
    assert "column extra.id" in raised.value.message


def test_reference_shows_types_keys_and_indexes():
    text = schema_docs.generate(MIGRATIONS)
    assert "| `device_ip` | TEXT | no |  | references devices(ip) |" in text
    assert "| `ip` | TEXT | no |  | unique |" in text
    assert "* `idx_devices_last_seen_ip` on (last_seen DESC, ip)" in text
    assert "CHECK (port BETWEEN 1 AND 65535)" in text


def test_check_mode_exits_3_when_the_file_is_stale(tmp_path):
    stale = tmp_path / "schema.md"
    stale.write_text("# old\n")
    env_path = str(REPO_ROOT / "lib")
    proc = subprocess.run(
        [sys.executable, "-m", "sqlite_ops.schema_docs", "--output", str(stale), "--check"],
        env={"PYTHONPATH": env_path, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
    )
    assert proc.returncode == EX_VERIFY
    assert proc.stderr.startswith("schema_docs: ") and "make docs" in proc.stderr
    assert stale.read_text() == "# old\n"
