"""Render an Ansible run (rich): live progress from runner events, then a per-host summary.

On a terminal the progress is a live table, one row per host (its task count, its current task, its elapsed
time), above which the results worth reading are printed: what changed (with the module's message), what
failed and why, what a role reports, and with ``--diff`` the diffs themselves. Outside a terminal the same
results are plain lines, each task's start one too, with the elapsed time: a log reads the same as the screen.
"""

from __future__ import annotations

import difflib
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from dlsetup.run.runner import RunResult, failure_line
from dlsetup.ui.text import show

# the actions whose message is what a role reports to the user (the package switches, the Secure Boot steps,
# container notes, reboot reasons)
_SAYING = frozenset({"debug", "ansible.builtin.debug", "ansible.legacy.debug"})
_RESULTS = ("runner_on_ok", "runner_on_failed", "runner_on_skipped", "runner_on_unreachable")
_MAX_DIFF_LINES = 200  # per result: a diff longer than this is cut (the whole one is in the run's events)


def role_message(data: Mapping[str, Any]) -> str | None:
    """What a role reports in a debug task's ``msg``, as one line (``None`` for any other result)."""
    if data.get("task_action") not in _SAYING:
        return None
    msg = (data.get("res") or {}).get("msg")
    if isinstance(msg, list):
        msg = " ".join(str(m) for m in msg)
    text = " ".join(str(msg).split()) if msg not in (None, "") else ""
    return text or None


def _elapsed(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}:{secs:02d}"


def _side(value: Any) -> list[str]:
    """One side of an Ansible diff as lines (a file's text, or a mapping such as a file's state)."""
    if isinstance(value, Mapping):
        return [f"{k}: {v}" for k, v in value.items()]
    return str(value or "").splitlines()


def diff_lines(diff: Any) -> list[str]:
    """The lines of a result's ``diff`` (one or a list of ``{before, after, *_header}`` or ``{prepared}``), as a
    unified diff."""
    lines: list[str] = []
    for item in diff if isinstance(diff, list) else [diff]:
        if not isinstance(item, Mapping):
            continue
        if item.get("prepared"):
            lines += str(item["prepared"]).splitlines()
        elif "before" in item or "after" in item:
            lines += difflib.unified_diff(
                _side(item.get("before")),
                _side(item.get("after")),
                fromfile=str(item.get("before_header") or "before"),
                tofile=str(item.get("after_header") or "after"),
                lineterm="",
            )
    return lines


@dataclass
class _Host:
    started: float
    tasks: int = 0
    changed: int = 0
    failed: int = 0
    task: str = ""


@dataclass
class Progress:
    """The live view of a run, fed ``runner`` events; a context manager (the live table lives within it)."""

    console: Console
    diff: bool = False
    what: str = "run"  # said in the first line: "gathering facts", "provision"
    # only the live table (a terminal), no lines: for a phase whose failures the command reports itself
    quiet: bool = False
    started: float = field(default_factory=time.monotonic)
    hosts: dict[str, _Host] = field(default_factory=dict)
    _live: Live | None = None
    _opened: bool = False

    def __enter__(self) -> Progress:
        return self

    def _open(self) -> None:
        """At the first event (a run refused before it starts shows nothing): the live table, or a first line."""
        self._opened = True
        if self.console.is_terminal:
            self._live = Live(self._table(), console=self.console, refresh_per_second=4, transient=True)
            self._live.__enter__()
        else:
            self.say(self.what)

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._live is not None:
            self._live.__exit__(kind, exc, tb)
            self._live = None

    def _stamp(self) -> str:
        return f"[dim]\\[{_elapsed(time.monotonic() - self.started)}][/dim]"

    def _table(self) -> Table:
        table = Table(box=None, show_header=True, header_style="bold", pad_edge=False)
        for column in ("host", "tasks", "changed", "failed", "now", "elapsed"):
            table.add_column(column, no_wrap=column != "now", overflow="ellipsis")
        now = time.monotonic()
        for name, host in self.hosts.items():
            table.add_row(show(name), str(host.tasks), str(host.changed), str(host.failed), show(host.task),
                          _elapsed(now - host.started))  # fmt: skip
        table.caption = f"{self.what}: {_elapsed(now - self.started)}"
        return table

    def _host(self, name: str) -> _Host:
        return self.hosts.setdefault(name, _Host(time.monotonic()))

    def say(self, line: str) -> None:
        if not self.quiet:
            self.console.print(f"{self._stamp()} {line}", soft_wrap=True)

    def __call__(self, event: dict[str, Any]) -> None:
        if not self._opened:
            self._open()
        kind = event.get("event")
        data = event.get("event_data") or {}
        host, task = data.get("host"), data.get("task")
        if kind == "playbook_on_task_start" and self._live is None:
            self.say(f"[dim]TASK {show(task)}[/dim]")
        elif kind == "runner_on_start" and host:
            self._host(host).task = str(task or "")
        elif kind in _RESULTS and host:
            self._result(kind, host, str(task or ""), data)
        if self._live is not None:
            self._live.update(self._table())

    def _result(self, kind: str, host: str, task: str, data: Mapping[str, Any]) -> None:
        state = self._host(host)
        state.tasks += 1
        res = data.get("res") or {}
        if kind == "runner_on_ok":
            said = role_message(data)
            if said is not None:
                self.say(f"  [cyan]note[/cyan]    {show(host)}: {show(said)}")
            elif res.get("changed"):
                state.changed += 1
                msg = " ".join(str(res.get("msg") or "").split())
                self.say(f"  [yellow]changed[/yellow] {show(host)}: {show(task)}" + (f": {show(msg)}" if msg else ""))
            if self.diff and not self.quiet:
                # a loop's diffs are per item, under its results
                for item in [res, *(r for r in res.get("results") or [] if isinstance(r, Mapping))]:
                    if item.get("diff"):
                        self._show_diff(item["diff"])
        elif kind == "runner_on_failed" and not data.get("ignore_errors"):
            state.failed += 1
            self.say(f"  [bold red]failed[/bold red]  {show(host)}: {show(task)}: {show(failure_line(res))}")
        elif kind == "runner_on_unreachable":
            state.failed += 1
            self.say(f"  [bold red]unreachable[/bold red] {show(host)}: {show(failure_line(res))}")

    def _show_diff(self, diff: Any) -> None:
        lines = diff_lines(diff)
        for line in lines[:_MAX_DIFF_LINES]:
            style = "green" if line.startswith("+") else "red" if line.startswith("-") else "dim"
            self.console.print(f"    [{style}]{show(line)}[/{style}]", soft_wrap=True)
        if len(lines) > _MAX_DIFF_LINES:
            self.console.print(f"    [dim]... {len(lines) - _MAX_DIFF_LINES} more lines in the run's events[/dim]")


def skipped_summary(skipped: Iterable[tuple[str, str]], limit: int = 4) -> str:
    """``"34 tasks: nvidia_driver 20 (nvidia_driver_enabled), laptop 8 (laptop_enabled, ...)"``: what was skipped
    per role, with the condition that was false for most of its tasks (``...`` when others were too)."""
    by_role: dict[str, Counter[str]] = {}
    for role, why in skipped:
        by_role.setdefault(role or "play", Counter())[why] += 1
    ranked = sorted(by_role.items(), key=lambda item: -sum(item[1].values()))
    parts = []
    for role, reasons in ranked[:limit]:
        more = ", ..." if len(reasons) > 1 else ""
        parts.append(f"{role} {sum(reasons.values())} ({reasons.most_common(1)[0][0]}{more})")
    rest = len(ranked) - limit
    total = sum(sum(r.values()) for r in by_role.values())
    return f"{total} tasks: {', '.join(parts)}" + (f", and {rest} other roles" if rest > 0 else "")


def render_run_summary(
    console: Console, run: RunResult, *, not_run: Sequence[str] = (), converged: Sequence[str] = ()
) -> None:
    """The counts per host, what failed and where its output is, what was skipped and why, the hosts left out
    as converged, the log."""
    if run.stats:
        table = Table(title="summary", show_edge=False)
        for col in ("host", "ok", "changed", "failed", "skipped", "unreachable"):
            table.add_column(col)
        for host, stats in sorted(run.stats.items()):
            table.add_row(host, str(stats.ok), str(stats.changed), str(stats.failures), str(stats.skipped),
                          "yes" if stats.unreachable else "no")  # fmt: skip
        console.print(table)
    if converged:
        console.print(f"not run, converged (--full runs them): {show(', '.join(converged))}", soft_wrap=True)
    for host, tasks in run.failed_tasks.items():
        for failed in tasks:
            console.print(
                f"[bold red]{show(host)}[/bold red] failed at {show(repr(failed.task))}: {show(failed.message)}"
            )
            # the cause is one line; the task's whole output (stdout, stderr, the command) is in its event file
            console.print(f"  whole output: {show(str(failed.details or run.log_path))}", soft_wrap=True)
    for host, skipped in sorted(run.skipped.items()):
        console.print(f"skipped on {show(host)}: {show(skipped_summary(skipped))}", soft_wrap=True)
    if not_run:
        console.print(f"not run (--tags/--skip-tags): {show(', '.join(not_run))}")
    console.print(f"log and artifacts: {show(str(run.run_dir))}", soft_wrap=True)
