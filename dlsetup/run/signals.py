"""SIGINT and SIGTERM while dlsetup waits on a child: the child is stopped too, then dlsetup exits 128 + N.

:func:`deferred_signals` records the signals instead of acting on them at once (ansible-runner's cancel
callback reads the list and kills ansible-playbook's process group); :func:`run_child` starts any other child
(the verify suite's pytest, ``ansible-inventory``) in a process group of its own, forwards each signal to that
whole group (testinfra's ``ansible`` and ``ssh`` included), kills the group if it has not ended after a grace
period, and raises :class:`~dlsetup.errors.InterruptedRunError`, which the CLI turns into exit 130 or 143.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import IO, Any

from dlsetup.errors import InterruptedRunError

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
GRACE_S = 10.0


@contextlib.contextmanager
def deferred_signals(on_signal: Callable[[int], None] | None = None) -> Iterator[list[int]]:
    """While the block runs, SIGINT and SIGTERM are appended to the list yielded (and passed to ``on_signal``)
    instead of acted on at once; the previous handlers come back after it.

    Without handlers of ours, ansible-runner installs its own for both signals and never restores them (an
    interrupted run surfaced as an internal error, a later Ctrl-C was ignored), and a SIGTERM during verify
    killed dlsetup but left pytest running.
    """
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield received
        return

    def record(signum: int, frame: object) -> None:
        received.append(signum)
        if on_signal is not None:
            on_signal(signum)

    previous = {signum: signal.signal(signum, record) for signum in STOP_SIGNALS}
    try:
        yield received
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)


def interrupted(signum: int, what: str, *, hint: str | None = None) -> InterruptedRunError:
    return InterruptedRunError(signum, f"{signal.Signals(signum).name} stopped {what}", hint=hint)


def _kill_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def run_child(
    cmd: Sequence[str],
    *,
    what: str,
    env: Mapping[str, str] | None = None,
    stdout: int | IO[Any] | None = None,
    stderr: int | IO[Any] | None = None,
    grace_s: float = GRACE_S,
    stdin_text: str | None = None,
) -> tuple[int, str | None, str | None]:
    """Run ``cmd`` to its end and return its exit code and, for ``subprocess.PIPE``, its output (text).

    A SIGINT or SIGTERM meanwhile is forwarded to the child's process group; once the child ended (or was
    killed ``grace_s`` later), whatever is left of its group is killed and :class:`InterruptedRunError` for
    ``what`` (e.g. ``"the verification suite on rig-1"``) is raised. ``stdin_text`` is the child's stdin (a pipe,
    never a file: it may carry a password); without it, stdin is ``/dev/null``.
    """
    proc: subprocess.Popen[str] | None = None
    deadline: list[float] = []

    def forward(signum: int) -> None:
        if proc is not None:
            _kill_group(proc.pid, signum)
            deadline.append(time.monotonic() + grace_s)

    with deferred_signals(forward) as received:
        proc = subprocess.Popen(
            list(cmd),
            env=dict(env) if env is not None else None,
            stdin=subprocess.PIPE if stdin_text is not None else subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            text=True,
            start_new_session=True,  # its own group: a signal reaches all of it, a terminal's Ctrl-C only us
        )
        for signum in received:  # arrived between the handlers and Popen
            forward(signum)
        while True:
            try:
                # again after a timeout: the output so far is kept; the input is given on the first call only
                out, err = proc.communicate(stdin_text, timeout=0.2)
            except subprocess.TimeoutExpired:
                stdin_text = None
                if deadline and time.monotonic() > deadline[0]:
                    _kill_group(proc.pid, signal.SIGKILL)
                continue
            break
        if received:
            _kill_group(proc.pid, signal.SIGKILL)  # what the child left in its group (testinfra's ansible, ssh)
    if received:
        raise interrupted(received[0], what)
    return proc.returncode, out, err
