"""Render an Ansible run for a terminal (rich): live progress from runner events, then a per-host summary."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from dlsetup.run.runner import RunResult, failure_line
from dlsetup.ui.text import show

# the actions whose message is what a role reports to the user (the package switches, the Secure Boot steps,
# container notes, reboot reasons)
_SAYING = frozenset({"debug", "ansible.builtin.debug", "ansible.legacy.debug"})


def role_message(data: dict[str, Any]) -> str | None:
    """What a role reports in a debug task's ``msg``, as one line (``None`` for any other result)."""
    if data.get("task_action") not in _SAYING:
        return None
    msg = (data.get("res") or {}).get("msg")
    if isinstance(msg, list):
        msg = " ".join(str(m) for m in msg)
    text = " ".join(str(msg).split()) if msg not in (None, "") else ""
    return text or None


class Progress:
    """Live progress lines from runner events: one per host and task that changed, failed or was unreachable,
    what the roles report (their debug messages), and a dim line for each task start."""

    def __init__(self, console: Console) -> None:
        self.console = console

    def __call__(self, event: dict[str, Any]) -> None:
        kind = event.get("event")
        data = event.get("event_data") or {}
        host, task = data.get("host"), data.get("task")
        if kind == "playbook_on_task_start":
            self.console.print(f"[dim]TASK {show(data.get('task'))}[/dim]")
        elif kind == "runner_on_ok":
            changed = (data.get("res") or {}).get("changed")
            said = role_message(data)
            if said is not None:
                self.console.print(f"  [cyan]note[/cyan]    {show(host)}: {show(said)}")
            elif changed:
                self.console.print(f"  [yellow]changed[/yellow] {show(host)}: {show(task)}")
        elif kind == "runner_on_failed" and not data.get("ignore_errors"):
            cause = failure_line(data.get("res") or {})
            self.console.print(f"  [bold red]failed[/bold red]  {show(host)}: {show(task)}: {show(cause)}")
        elif kind == "runner_on_unreachable":
            self.console.print(f"  [bold red]unreachable[/bold red] {host}")


def render_run_summary(console: Console, run: RunResult) -> None:
    table = Table(title="summary", show_edge=False)
    for col in ("host", "ok", "changed", "failed", "unreachable"):
        table.add_column(col)
    for host, stats in sorted(run.stats.items()):
        table.add_row(
            host,
            str(stats.ok),
            str(stats.changed),
            str(stats.failures),
            "yes" if stats.unreachable else "no",
        )
    console.print(table)
    for host, tasks in run.failed_tasks.items():
        for failed in tasks:
            console.print(
                f"[bold red]{show(host)}[/bold red] failed at {show(repr(failed.task))}: {show(failed.message)}"
            )
            # the cause is one line; the task's whole output (stdout, stderr, the command) is in its event file
            console.print(f"  whole output: {show(str(failed.details or run.log_path))}")
    console.print(f"log and artifacts: {show(str(run.run_dir))}")
