"""Render a verify report for a terminal (rich): one table per host, titled with its verdict and counts, the
one-line reason under it."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table
from rich.text import Text

from dlsetup.ui.text import show
from dlsetup.verify.report import VERDICT_TEXT, HostReport, VerifyReport

STATUS_STYLE = {"pass": "green", "fail": "bold red", "warn": "yellow", "skip": "dim"}
VERDICT_STYLE = {"passed": "green", "failed": "bold red", "nothing_checked": "bold yellow"}


def counts_line(entry: HostReport) -> str:
    """``16 ran: 15 passed, 1 warned, 0 failed; 4 skipped``."""
    c = entry.counts
    warned = f", {c.warned} warned" if c.warned else ""
    return f"{c.ran} ran: {c.passed} passed{warned}, {c.failed} failed; {c.skipped} skipped"


def render_verify(console: Console, report: VerifyReport) -> None:
    for name, entry in report.hosts.items():
        style = VERDICT_STYLE.get(entry.verdict, "")
        title = Text.assemble(f"{name}: ", (VERDICT_TEXT.get(entry.verdict, entry.verdict), style))
        title.append(f" ({counts_line(entry)})")
        table = Table(title=title, show_edge=False, caption=Text(entry.reason), caption_justify="left")
        table.add_column("check", no_wrap=True)
        table.add_column("status", no_wrap=True)
        table.add_column("expected", max_width=14, overflow="fold")
        table.add_column("from", max_width=12, overflow="fold")
        table.add_column("actual", max_width=14, overflow="fold")
        table.add_column("message", overflow="fold", ratio=1)
        for check in entry.checks:
            status_style = STATUS_STYLE.get(check.status, "")
            table.add_row(
                check.id,
                f"[{status_style}]{check.status}[/{status_style}]",
                show(check.expected),
                show(check.expected_from) if check.expected_from else "",
                show(check.actual),
                show(check.message or ""),
            )
        console.print(table)
