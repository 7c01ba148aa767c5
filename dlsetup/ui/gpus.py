"""Render the GPU catalogue for a terminal (rich): one row per GPU, and what it gets on each OS."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table
from rich.text import Text

from dlsetup.commands import GpuOutcome, GpusResult


def outcome_text(outcome: GpuOutcome) -> str:
    """``R580 proprietary · NVIDIA · CUDA 12.9 · cu126`` (driver, where from, CUDA, wheel variant), or why not."""
    if outcome.plan is None:
        assert outcome.error is not None
        return f"refused ({outcome.error.kind})"
    plan = outcome.plan
    source = "archive" if plan.driver.source == "distribution" else "NVIDIA"
    return f"R{plan.driver.branch} {plan.driver.flavor} · {source} · CUDA {plan.cuda.version} · {plan.pytorch.variant}"


def render_gpus(console: Console, result: GpusResult) -> None:
    table = Table(show_edge=False, pad_edge=False, show_lines=False)
    for column in ("pci id", "name", "architecture", "CC", "open", *result.systems):
        table.add_column(column, overflow="fold")
    for gpu in result.gpus:
        opens = {True: "yes", False: "no", None: "?"}[gpu.open_modules]
        if gpu.last_branch is not None:
            opens += f" (R{gpu.last_branch})"
        table.add_row(
            gpu.pci_id,
            Text(gpu.name),
            gpu.architecture,
            gpu.compute_capability or "-",
            opens,
            *(Text(outcome_text(result.outcomes[gpu.pci_id][os_key])) for os_key in result.systems),
        )
    console.print(table)
    about = result.provenance
    console.print(
        f"{len(result.gpus)} GPU(s). From NVIDIA's supported-gpus.json of {', '.join(about['drivers'])}, "
        f"{', '.join(about['debian_id_lists'])} and pci.ids {about['pci_ids']}; "
        "open: NVIDIA flags it for the open kernel modules ((Rxxx): its last driver branch)."
    )
