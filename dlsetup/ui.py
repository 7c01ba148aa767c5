"""Rendering for the terminal (rich). No logic beyond presentation."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from dlsetup.runner import RunResult

STATUS_STYLE = {"pass": "green", "fail": "bold red", "warn": "yellow", "skip": "dim"}


def _val(value: Any, suffix: str = "") -> str:
    """A value for display, escaped: hardware names and messages may contain [brackets]."""
    return "-" if value is None else escape(f"{value}{suffix}")


def render_facts(console: Console, name: str, facts: Mapping[str, Any]) -> None:
    os_ = facts.get("os") or {}
    machine = facts.get("machine") or {}
    cpu = facts.get("cpu") or {}
    console.rule(f"[bold]{name}")
    os_name = os_.get("pretty_name") or " ".join(str(os_.get(k)) for k in ("id", "version") if os_.get(k)) or None
    codename = os_.get("codename")
    if os_name and codename and str(codename) not in os_name:
        os_name = f"{os_name} ({codename})"
    console.print(f"OS       {_val(os_name)}, kernel {_val(os_.get('kernel'))}")
    virt = escape(f" [{machine['virtualization']}]") if machine.get("virtualization") else ""
    model = " ".join(str(machine[k]) for k in ("vendor", "product") if machine.get(k)) or "unknown (no DMI data)"
    console.print(f"Machine  {escape(model)}{virt}")
    console.print(
        f"CPU      {_val(cpu.get('model'))}, {_val(cpu.get('cores'))} cores / {_val(cpu.get('threads'))} threads"
    )
    console.print(f"Memory   {_val(facts.get('memory_mib'), ' MiB')}")
    for disk in facts.get("disks") or []:
        kind = "SSD" if disk.get("ssd") else ("HDD" if disk.get("ssd") is False else "?")
        holds = f" holds {', '.join(disk['holds'])}" if disk.get("holds") else ""
        console.print(
            f"Disk     {disk.get('name')} {_val(disk.get('model'))} {_val(disk.get('size_gib'), ' GiB')} "
            f"{kind} ({_val(disk.get('transport'))}){holds}"
        )
    gpus = facts.get("gpus") or []
    driver = facts.get("driver") or {}
    if not gpus:
        console.print("GPUs     [bold]no NVIDIA GPU[/bold] on PCI")
    else:
        table = Table(show_edge=False, pad_edge=False)
        for col in ("#", "bus id", "pci id", "name", "memory", "CC", "gen cur/max", "width cur/max/slot", "driver"):
            table.add_column(col)
        for gpu in gpus:
            pcie = gpu.get("pcie") or {}
            table.add_row(
                _val(gpu.get("index")),
                str(gpu.get("pci_bus_id")),
                str(gpu.get("pci_id")),
                _val(gpu.get("name") or gpu.get("pci_name")),
                _val(gpu.get("memory_mib"), " MiB"),
                _val(gpu.get("compute_capability")),
                f"{_val(pcie.get('gen_current'))}/{_val(pcie.get('gen_max'))}",
                f"x{_val(pcie.get('width_current'))}/x{_val(pcie.get('width_max'))}/x{_val(pcie.get('slot_width_max'))}",
                _val(gpu.get("kernel_driver")),
            )
        console.print(table)
    err = driver.get("error")
    if driver.get("loaded"):
        console.print(
            f"Driver   {_val(driver.get('version'))} ({_val(driver.get('kernel_module'))} kernel module), "
            f"CUDA {_val(driver.get('cuda_version'))}"
        )
    elif not err:
        console.print("Driver   not loaded")
    if err:
        # a loaded module can still fail (version_mismatch, gpu_lost): the failure goes under its version line
        label = "         " if driver.get("loaded") else "Driver   "
        console.print(f"{label}[red]{_val(err.get('kind'))}[/red]: {_val(err.get('message'))}")
        if err.get("hint"):
            console.print(f"         hint: {_val(err['hint'])}")
    for warning in facts.get("warnings") or []:
        console.print(f"[yellow]warning[/yellow]  {_val(warning)}")


def render_host_error(console: Console, name: str, reason: str) -> None:
    console.rule(f"[bold]{name}")
    console.print(f"[bold red]error[/bold red] {_val(reason)}")


def render_verify(console: Console, report: Mapping[str, Any]) -> None:
    for name, entry in report["hosts"].items():
        table = Table(title=f"{name}: {'[green]PASSED' if entry['passed'] else '[bold red]FAILED'}", show_edge=False)
        table.add_column("check", no_wrap=True)
        table.add_column("status", no_wrap=True)
        table.add_column("expected", max_width=14, overflow="fold")
        table.add_column("actual", max_width=14, overflow="fold")
        table.add_column("message", overflow="fold", ratio=1)
        for check in entry["checks"]:
            style = STATUS_STYLE.get(check["status"], "")
            table.add_row(
                check["id"],
                f"[{style}]{check['status']}[/{style}]",
                _val(check.get("expected")),
                _val(check.get("actual")),
                _val(check.get("message") or ""),
            )
        console.print(table)


class Progress:
    """Live progress lines from runner events: one per host and task that changed, failed or was unreachable,
    and a dim line for each task start."""

    def __init__(self, console: Console) -> None:
        self.console = console

    def __call__(self, event: dict[str, Any]) -> None:
        kind = event.get("event")
        data = event.get("event_data") or {}
        host, task = data.get("host"), data.get("task")
        if kind == "playbook_on_task_start":
            self.console.print(f"[dim]TASK {_val(data.get('task'))}[/dim]")
        elif kind == "runner_on_ok":
            changed = (data.get("res") or {}).get("changed")
            if changed:
                self.console.print(f"  [yellow]changed[/yellow] {_val(host)}: {_val(task)}")
        elif kind == "runner_on_failed" and not data.get("ignore_errors"):
            msg = (data.get("res") or {}).get("msg") or ""
            first = (str(msg).splitlines() or [""])[0]
            self.console.print(f"  [bold red]failed[/bold red]  {_val(host)}: {_val(task)}: {_val(first)}")
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
        for task, msg in tasks:
            console.print(f"[bold red]{_val(host)}[/bold red] failed at {_val(repr(task))}: {_val(msg)}")
    console.print(f"log and artifacts: {run.run_dir}")
