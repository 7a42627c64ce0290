"""The text exposition format: one metric family rendered, and this run's gauges
merged into a node_exporter textfile that earlier runs wrote.

Every .prom file the Python side writes (db_metrics, the backup, the restore,
the offsite sync) renders its families with :func:`family`.

Maintenance and restore write files whose series are not all produced on every
run: a nightly check must not erase the timestamp of the weekly vacuum, nor a
drill the time of the last real restore. The rule, for both:

* the new text declares its metric families (``# HELP`` and ``# TYPE`` lines,
  samples optional);
* a series (name and labels) in the new text replaces the same series in the
  old file; series of a declared family that this run did not produce keep
  their old values;
* families the new text does not declare are dropped (renamed or retired).

    python3 -m sqlite_ops.promfile merge OLD_FILE < new.prom > merged.prom

A missing or unreadable OLD_FILE counts as empty; lines in it that are not
samples are ignored.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable

_SAMPLE = re.compile(r"^(?P<name>[A-Za-z_:][A-Za-z0-9_:]*)(?P<labels>\{.*\})?\s+(?P<value>\S+)$")


def escape_label(value: str) -> str:
    """A label value in the text exposition format: \\, " and newline escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def family(name: str, help_text: str, samples: Iterable[tuple[str, object]] = (),
           kind: str = "gauge") -> list[str]:
    """The lines of one metric family: its ``# HELP`` and ``# TYPE`` lines, then
    ``name{labels} value`` for each ``(labels, value)`` of ``samples`` (the
    labels already rendered, ``db="x"``; the value as the caller formats it)."""
    return [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}",
            *(f"{name}{{{labels}}} {value}" for labels, value in samples)]


def _samples(text: str) -> list[tuple[str, str, str]]:
    """(family, series, value) of every sample line, in order."""
    found = []
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match and not line.startswith("#"):
            series = match["name"] + (match["labels"] or "")
            found.append((match["name"], series, match["value"]))
    return found


def read_values(path: str, family: str) -> dict[str, float]:
    """``{series: value}`` of one family's samples in a .prom file (the series
    is the name with its labels: ``x{db="a"}``); {} when it cannot be read."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError):
        return {}
    found = {}
    for name, series, value in _samples(text):
        if name == family:
            try:
                found[series] = float(value)
            except ValueError:
                continue
    return found


def merge(old: str, new: str) -> str:
    """``new`` with the series of its declared families that only ``old`` has."""
    families: dict[str, list[str]] = {}  # name -> its HELP and TYPE lines, in order
    for line in new.splitlines():
        words = line.split(" ", 3)
        if len(words) >= 3 and words[0] == "#" and words[1] in ("HELP", "TYPE"):
            families.setdefault(words[2], []).append(line)
    values: dict[str, dict[str, str]] = {name: {} for name in families}
    for family, series, value in _samples(old):
        if family in values:
            values[family][series] = value
    for family, series, value in _samples(new):
        values.setdefault(family, {})[series] = value
    out: list[str] = []
    for family, series_values in values.items():
        out += families.get(family, [])
        out += [f"{series} {value}" for series, value in series_values.items()]
    return "\n".join(out) + "\n" if out else ""


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    files = args[2:] if args[1:2] == ["--"] else args[1:]
    if args[:1] != ["merge"] or len(files) != 1:
        print("usage: python3 -m sqlite_ops.promfile merge [--] OLD_FILE < NEW", file=sys.stderr)
        return 2
    try:
        with open(files[0], encoding="utf-8") as handle:
            old = handle.read()
    except (OSError, UnicodeDecodeError):
        old = ""
    sys.stdout.write(merge(old, sys.stdin.read()))
    return 0


if __name__ == "__main__":
    from sqlite_ops.common import run_interruptible  # Ctrl-C: exit 130, no traceback

    sys.exit(run_interruptible(main))
