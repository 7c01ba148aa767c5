"""Render a verify report for a terminal (rich): one table per host."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from dlsetup.ui.text import show
from dlsetup.verify.report import VerifyReport

STATUS_STYLE = {"pass": "green", "fail": "bold red", "warn": "yellow", "skip": "dim"}


def render_verify(console: Console, report: VerifyReport) -> None:
    for name, entry in report.hosts.items():
        table = Table(title=f"{name}: {'[green]PASSED' if entry.passed else '[bold red]FAILED'}", show_edge=False)
        table.add_column("check", no_wrap=True)
        table.add_column("status", no_wrap=True)
        table.add_column("expected", max_width=14, overflow="fold")
        table.add_column("actual", max_width=14, overflow="fold")
        table.add_column("message", overflow="fold", ratio=1)
        for check in entry.checks:
            style = STATUS_STYLE.get(check.status, "")
            table.add_row(
                check.id,
                f"[{style}]{check.status}[/{style}]",
                show(check.expected),
                show(check.actual),
                show(check.message or ""),
            )
        console.print(table)
