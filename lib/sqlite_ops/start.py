"""The first code every entry point runs: until its own handlers are in
place, Ctrl-C, SIGTERM and SIGHUP end the run with one line saying that it
had not started (never a Python traceback, never Python's "Fatal error" and
exit 1), and exit 128 + the signal.

The bash scripts start Python with these signals blocked (``env
--block-signal``) and with ``-S`` (no site-packages: the runtime is the
standard library only). A signal that arrives while the interpreter starts
is held, not lost and not fatal: :func:`guard` sets the handlers, then
unblocks, and a held signal is acted on right there. Up to their ``exec``
the scripts' own traps say the same line (lib/common.sh,
``interrupt_before_start``).

A SIGHUP the process was started with ignored (``nohup``: "keep running when
my session closes") stays ignored for the whole run: that is what the
operator asked for. SIGINT and SIGTERM are always acted on (a script's
background job starts with SIGINT ignored, and so do some test runners'
children; an interrupted restore must still say what it left).
:func:`stop_signals` is the list every handler is set for.

    python3 -S -c 'from sqlite_ops.start import main; main()' PROG NOTE MODULE [ARG...]

runs ``sqlite_ops.MODULE``'s ``main`` with ``ARG...`` as its command line;
PROG and NOTE are what the early line says ("PROG: interrupted by SIGINT
before it started; NOTE"). An empty NOTE says nothing: a helper whose
calling script speaks for it.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_ignored_at_start: frozenset[int] | None = None


def stop_signals() -> tuple[int, ...]:
    """INT, TERM and HUP, but HUP when this process was started with it
    ignored (found out at the first call, before any handler of ours is set)."""
    global _ignored_at_start
    if _ignored_at_start is None:
        _ignored_at_start = frozenset(
            [signal.SIGHUP] if signal.getsignal(signal.SIGHUP) == signal.SIG_IGN else [])
    return tuple(sig for sig in SIGNALS if sig not in _ignored_at_start)


def on_stop_signals(handler: Callable[[int, object], None] | int) -> None:
    """``handler`` for every one of :func:`stop_signals`."""
    for sig in stop_signals():
        signal.signal(sig, handler)


def guard(prog: str, note: str) -> None:
    """Until the entry point sets its own handlers (or :func:`release`), a
    stop signal ends the process at once with one line on stderr (none for
    an empty ``note``). Then the signals the start blocked are let through."""
    def early(signum: int, frame: object) -> None:
        if note:
            name = signal.Signals(signum).name
            os.write(2, f"{prog}: interrupted by {name} before it started; {note}\n".encode())
        os._exit(128 + signum)
    on_stop_signals(early)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNALS)


def release() -> None:
    """Python's defaults again (SIGINT raises KeyboardInterrupt; TERM and HUP
    end the process), for an entry point that relies on them."""
    for sig in stop_signals():
        signal.signal(sig, signal.default_int_handler if sig == signal.SIGINT
                      else signal.SIG_DFL)


def main() -> None:
    prog, note, module, *args = sys.argv[1:]
    guard(prog, note)
    import importlib

    entry = importlib.import_module(f"sqlite_ops.{module}")
    sys.argv = [entry.__file__ or module, *args]
    if note:
        # A script's own step (backup, restore) sets its handlers as it
        # starts; until then the guard's line stays the true answer.
        try:
            code = entry.main()
        except KeyboardInterrupt as exc:  # set by its handlers, before its own try
            code = 128 + getattr(exc, "signum", signal.SIGINT)
        sys.exit(code)
    from sqlite_ops.common import run_interruptible  # a helper: its caller speaks

    sys.exit(run_interruptible(entry.main))
