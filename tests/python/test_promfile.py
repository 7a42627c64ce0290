"""Tests for lib/sqlite_ops/promfile.py: merging a run's gauges into a textfile."""

from __future__ import annotations

import subprocess
import sys

from promparse import prom_samples

from sqlite_ops import promfile
from sqlite_ops.common import REPO_ROOT

HELP = "# HELP {0} help of {0}\n# TYPE {0} gauge\n"


def family(name: str, *samples: str) -> str:
    return HELP.format(name) + "".join(f"{s}\n" for s in samples)


def test_a_series_this_run_did_not_produce_keeps_its_old_value():
    old = family("m_seconds", 'm_seconds{db="a",task="vacuum"} 100',
                 'm_seconds{db="a",task="check"} 200')
    new = family("m_seconds", 'm_seconds{db="a",task="check"} 300')
    merged = prom_samples(promfile.merge(old, new))
    assert sorted((s[0]["task"], s[1]) for s in merged["m_seconds"]) == [
        ("check", 300.0), ("vacuum", 100.0)]


def test_a_declared_family_without_samples_keeps_its_old_series():
    old = family("drill_ok", 'drill_ok{db="a"} 1') + family("restored_at", 'restored_at{db="a"} 5')
    new = family("drill_ok", 'drill_ok{db="a"} 0') + family("restored_at")
    merged = prom_samples(promfile.merge(old, new))
    assert merged == {"drill_ok": [({"db": "a"}, 0.0)], "restored_at": [({"db": "a"}, 5.0)]}


def test_families_the_new_text_does_not_declare_are_dropped():
    old = family("retired", 'retired{db="a"} 1') + family("kept", 'kept{db="a"} 1')
    merged = promfile.merge(old, family("kept"))
    assert "retired" not in merged and 'kept{db="a"} 1' in merged


def test_label_values_with_spaces_quotes_and_newlines_survive():
    label = 'db="my \\"odd\\" db\\nname"'
    old = family("x", f"x{{{label}}} 7")
    merged = promfile.merge(old, family("x"))
    assert prom_samples(merged)["x"] == [({"db": 'my "odd" db\nname'}, 7.0)]


def test_each_family_has_one_help_and_type_and_garbage_is_ignored():
    old = "garbage line\n" + family("x", 'x{db="a"} 1') + "# HELP x duplicate\n"
    merged = promfile.merge(old, family("x", 'x{db="b"} 2'))
    assert merged.count("# HELP x") == 1 and merged.count("# TYPE x") == 1
    assert len(prom_samples(merged)["x"]) == 2


def test_cli_merges_with_a_missing_file_as_empty(tmp_path):
    env = {"PYTHONPATH": str(REPO_ROOT / "lib")}
    proc = subprocess.run([sys.executable, "-m", "sqlite_ops.promfile", "merge", "--",
                           str(tmp_path / "absent.prom")], input=family("x", "x 1"),
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == family("x", "x 1")
    proc = subprocess.run([sys.executable, "-m", "sqlite_ops.promfile"], env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "usage" in proc.stderr



def test_family_renders_help_type_and_one_line_per_sample():
    name = 'a "b"\\c\nd'
    label = 'db="' + promfile.escape_label(name) + '"'
    assert label == 'db="a \\"b\\"\\\\c\\nd"'
    lines = promfile.family("x_bytes", "Size of x.", [(label, 5), ('db="e"', "1.5")])
    assert lines == ["# HELP x_bytes Size of x.", "# TYPE x_bytes gauge",
                     "x_bytes{" + label + "} 5", 'x_bytes{db="e"} 1.5']
    parsed = prom_samples("\n".join(lines) + "\n")
    assert [(s[0]["db"], s[1]) for s in parsed["x_bytes"]] == [(name, 5.0), ("e", 1.5)]
    assert promfile.family("y", "Y.", kind="counter") == ["# HELP y Y.", "# TYPE y counter"]
