"""Progress a person can watch: one line on stderr, redrawn in place.

Only on a terminal: under cron, in a pipe or with ``--quiet`` nothing is
written (the usual log lines are all there is). A step that knows its size
shows bytes done, rate and time left; one that does not (PRAGMA
integrity_check) shows the time it has taken so far.

    with Progress("compressing", total=size, prog=PROG) as bar:
        for block in ...:
            bar.advance(len(block))

``probe`` is for a step that cannot report (SQLite's backup API copies in one
call): a function returning the bytes done so far, such as the size of the
file being written, polled by the redraw thread.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import IO, Callable

INTERVAL = 0.25  # seconds between redraws


def human_bytes(size: float) -> str:
    """1536 -> '1.5 KiB': the one size format of messages, tables and progress."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


def _duration(seconds: float) -> str:
    seconds = max(int(seconds + 0.5), 0)
    return f"{seconds} s" if seconds < 120 else f"{seconds // 60} min {seconds % 60:02d} s"


def wanted(stream: IO[str] | None = None, quiet: bool = False) -> bool:
    """True when progress should be drawn: not quiet, and ``stream`` is a terminal."""
    stream = stream or sys.stderr
    if quiet:
        return False
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class Progress:
    """One progress line for one step; a no-op off a terminal or when quiet."""

    def __init__(self, label: str, total: int | None = None, *, prog: str = "sqlite-ops",
                 quiet: bool = False, stream: IO[str] | None = None,
                 probe: Callable[[], int] | None = None) -> None:
        self.label, self.total, self.prog, self.probe = label, total, prog, probe
        self.stream = stream or sys.stderr
        self.enabled = wanted(self.stream, quiet)
        self.done = 0
        self._start = time.monotonic()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # The step reports -------------------------------------------------------

    def advance(self, count: int) -> None:
        with self._lock:
            self.done += count

    def complete(self) -> None:
        """The step is done: the last line shows all of it."""
        self.probe = None
        self.done = self.total or self.done

    # Drawing -------------------------------------------------------------------

    def line(self) -> str:
        """The text of the progress line as it stands now."""
        elapsed = time.monotonic() - self._start
        probe = self.probe  # once: complete() may clear it from the step's thread meanwhile
        if probe is not None:
            try:
                self.done = probe()
            except OSError:
                pass
        done = self.done
        if not self.total:
            if done:
                return f"{self.prog}: {self.label}: {human_bytes(done)}, {_duration(elapsed)}"
            return f"{self.prog}: {self.label}: {_duration(elapsed)}"
        done = min(done, self.total)
        rate = done / elapsed if elapsed > 0 else 0.0
        text = (f"{self.prog}: {self.label}: {human_bytes(done)} of {human_bytes(self.total)} "
                f"({100 * done // self.total}%)")
        if rate > 0 and elapsed >= 0.5:
            left = (self.total - done) / rate
            text += f", {human_bytes(rate)}/s, {_duration(left)} left"
        return text

    def _draw(self) -> None:
        try:
            self.stream.write("\r\x1b[K" + self.line())
            self.stream.flush()
        except (OSError, ValueError):
            self.enabled = False

    def _run(self) -> None:
        while not self._stop.wait(INTERVAL):
            self._draw()

    def __enter__(self) -> Progress:
        if self.enabled:
            self._draw()
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._draw()  # the last state, then make room for the log lines
            try:
                self.stream.write("\r\x1b[K")
                self.stream.flush()
            except (OSError, ValueError):
                pass


def file_size_probe(path: str | os.PathLike[str]) -> Callable[[], int]:
    """A probe reporting the current size of ``path`` (0 while it is missing)."""

    def probe() -> int:
        try:
            return os.path.getsize(path)
        except OSError:
            return 0

    return probe


# ---------------------------------------------------------------------------
# CLI: a progress line for a step another process runs (maintain's VACUUM)
# ---------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """``watch --label L --total N [--prog P] FILE...``: draw the summed size of
    FILEs against N until standard input ends (the caller closes the pipe, or
    dies), then clear the line. Draws nothing off a terminal."""
    import argparse

    parser = argparse.ArgumentParser(prog="python3 -m sqlite_ops.progress")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("watch")
    p.add_argument("--label", required=True)
    p.add_argument("--total", type=int, default=0)
    p.add_argument("--prog", default="sqlite-ops")
    p.add_argument("files", nargs="+")
    args = parser.parse_args(argv)
    probes = [file_size_probe(f) for f in args.files]
    with Progress(args.label, args.total or None, prog=args.prog,
                  probe=lambda: sum(probe() for probe in probes)):
        sys.stdin.buffer.read()
    return 0


if __name__ == "__main__":
    from sqlite_ops.common import run_interruptible  # Ctrl-C: exit 130, no traceback

    sys.exit(run_interruptible(main))
