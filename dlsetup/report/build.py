"""One host's page as plain data: its verdict, the tables, the drawings (:mod:`.drawing`), drift and history. Pure.

The template (``templates/report.html.j2``) only lays this out; every number, coordinate and sentence is made
here, from the typed inputs of :mod:`.documents`, so it is unit-tested without a browser.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from dlsetup.facts.baseline import HardwareBaseline
from dlsetup.facts.drift import RAM_TOLERANCE
from dlsetup.facts.model import HostFacts
from dlsetup.report import links
from dlsetup.report.documents import AppliedPlan, HistoryEntry, HostDrift, HostInputs, PlanSource
from dlsetup.report.drawing import (
    BANDWIDTH_CHECK,
    NOT_MEASURED,
    BandwidthChart,
    PcieTree,
    bandwidth_charts,
    find_check,
    gpu_label,
    join_text,
    lanes_from,
    pcie_tree,
)
from dlsetup.report.links import STATE_TEXT, LinkState, LinkVerdict
from dlsetup.verify.report import VERDICT_TEXT, HostReport

GEN_CHECK = "gpu.pcie_gen"
Verdict = Literal["passed", "failed", "nothing_checked", "not_verified"]

_LOAD_GEN = re.compile(r"([0-9a-f]{4,8}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7])\) runs Gen(\d+) under load")


@dataclass(frozen=True)
class Row:
    label: str
    value: str
    note: str = ""


@dataclass(frozen=True)
class GpuRow:
    """A GPU in the table under the tree: its link, the link's state and why, where its lanes come from."""

    bus_id: str
    label: str
    model: str
    link: str
    state: LinkState
    state_text: str
    why: str
    lanes_from: str
    lanes_note: str
    lanes_source: str
    shared: tuple[str, ...]


@dataclass(frozen=True)
class CheckRow:
    id: str
    status: str
    expected: str
    expected_from: str
    actual: str
    message: str


@dataclass(frozen=True)
class BaselineRow:
    recorded_at: str
    run: str
    gpus: tuple[str, ...]
    machine: str
    changes: tuple[str, ...]


@dataclass(frozen=True)
class HostPage:
    """Everything one host's section of the page shows."""

    name: str
    anchor: str
    verdict: Verdict
    verdict_text: str
    reason: str
    counts: str
    machine: tuple[Row, ...]
    warnings: tuple[str, ...]
    plan: tuple[Row, ...]
    plan_note: str
    tree: PcieTree | None
    tree_note: str
    gpus: tuple[GpuRow, ...]
    bandwidth: tuple[BandwidthChart, ...]
    bandwidth_note: str
    checks: tuple[CheckRow, ...]
    drift: tuple[str, ...]
    drift_note: str
    history: tuple[BaselineRow, ...]
    history_note: str
    problems: tuple[str, ...]
    sources: tuple[Row, ...]

    @property
    def gpu_count(self) -> int:
        return len(self.gpus)


# --- values as text ----------------------------------------------------------------------------------------------


def show(value: Any) -> str:
    """A value of a check or a document as text: ``-`` when unknown, lists comma-separated."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return ", ".join(show(v) for v in value) if value else "none"
    if isinstance(value, Mapping):
        return json.dumps(value, sort_keys=True)
    return str(value)


def _gib(mib: int | None) -> str:
    return "unknown" if mib is None else f"{mib / 1024:.1f} GiB"


# --- the machine --------------------------------------------------------------------------------------------------


def machine_rows(facts: HostFacts) -> tuple[Row, ...]:
    os_ = facts.os
    machine = facts.machine
    cpu = facts.cpu
    rows = [
        Row(
            "OS",
            os_.pretty_name or join_text(os_.id, os_.version) or "unknown",
            f"kernel {os_.kernel}" if os_.kernel else "",
        ),
        Row(
            "machine",
            join_text(machine.vendor, machine.product) or "unknown",
            f"virtualization: {machine.virtualization}" if machine.virtualization else "",
        ),
        Row(
            "CPU",
            cpu.model or "unknown",
            join_text(
                f"{cpu.cores} cores" if cpu.cores is not None else None,
                f"{cpu.threads} threads" if cpu.threads is not None else None,
                sep=", ",
            ),
        ),
        Row("RAM", _gib(facts.memory_mib), f"{facts.memory_mib} MiB" if facts.memory_mib is not None else ""),
    ]
    for disk in facts.disks:
        kind = "SSD" if disk.ssd else ("rotational" if disk.ssd is False else None)
        size = f"{disk.size_gib} GiB" if disk.size_gib is not None else None
        rows.append(
            Row(
                f"disk {disk.name}",
                join_text(disk.model, size, sep=", ") or disk.name,
                join_text(kind, disk.transport, "holds /" if "/" in disk.holds else None, sep=", "),
            )
        )
    driver = facts.driver
    if driver.error is not None:
        rows.append(Row("driver", f"{driver.error.kind}: {driver.error.message}", driver.error.hint))
    elif driver.loaded:
        rows.append(
            Row(
                "driver",
                join_text(driver.version, f"({driver.kernel_module} kernel module)" if driver.kernel_module else None)
                or "loaded",
                f"CUDA up to {driver.cuda_version}" if driver.cuda_version else "",
            )
        )
    else:
        rows.append(Row("driver", "not loaded"))
    models: dict[str, int] = {}
    for gpu in facts.gpus:
        models[gpu.model] = models.get(gpu.model, 0) + 1
    rows.append(Row("GPUs", ", ".join(f"{n} \u00d7 {m}" for m, n in models.items()) or "no NVIDIA GPU on PCI"))
    return tuple(rows)


# --- the plan -----------------------------------------------------------------------------------------------------

PLAN_NOTES: dict[PlanSource, str] = {
    "record": "the plan the last provision applied (the host's record)",
    "plan": "the plan dlsetup plan resolved: what a provision would apply now",
    "provision": "the plan this provision applied",
}


SOURCE_TEXT = {"distribution": "the distribution's archive", "nvidia": "NVIDIA's CUDA repository"}


def _source(source: str) -> str:
    return SOURCE_TEXT.get(source, source)


def plan_rows(plan: AppliedPlan) -> tuple[Row, ...]:
    driver, cuda, torch, jax = plan.driver, plan.cuda, plan.pytorch, plan.jax
    if driver.branch is None and driver.flavor is None:
        driver_text = "none (no NVIDIA GPU to drive)"
    else:
        driver_text = join_text(driver.branch, driver.flavor) + (
            f", from {_source(driver.source)}" if driver.source else ""
        )
    driver_note = join_text(
        f"held at {driver.version}" if driver.version else None,
        f"packages: {', '.join(driver.packages)}" if driver.packages else None,
        sep="; ",
    )
    if plan.wheelhouse:
        torch_from = f"from the wheelhouse {plan.wheelhouse}"
    else:
        torch_from = f"from {torch.index_url}" if torch.index_url else ""
    rows = [
        Row("OS", plan.os or "unknown"),
        Row("GPUs", ", ".join(g.name or g.pci_id or "GPU" for g in plan.gpus) or "none"),
        Row("driver", driver_text, driver_note),
        Row(
            "CUDA",
            join_text(cuda.version, f"from {_source(cuda.source)}" if cuda.source else None) or "none",
            f"packages: {', '.join(cuda.packages)}" if cuda.packages else "",
        ),
        Row("cuDNN", plan.cudnn.version or "none"),
        Row("NCCL", plan.nccl.version or "none"),
        Row("PyTorch", join_text(torch.version, torch.variant) or "none", torch_from),
        Row(
            "JAX",
            f"jax[{jax.extra}]" if jax.extra else "none",
            (f"from {jax.index_url}" if jax.index_url else "from the host's pip index") if jax.extra else "",
        ),
    ]
    return tuple(rows)


# --- PCIe ---------------------------------------------------------------------------------------------------------


def loaded_gens(facts: HostFacts, report: HostReport | None) -> dict[str, int]:
    """Bus id → the link generation verify read under load (its ``gpu.pcie_gen`` check, ``actual`` in the order
    of the facts' GPUs): every GPU's when the check passed under load (each at its best generation), the GPUs a
    failure names (``runs GenN under load``) when it failed. The only generation readings a link is judged by."""
    check = find_check(report, GEN_CHECK)
    if check is None or "under load" not in check.message:
        return {}
    if check.status == "fail":
        known = {g.pci_bus_id for g in facts.gpus}
        return {bus: int(gen) for bus, gen in _LOAD_GEN.findall(check.message) if bus in known}
    readings = check.actual if isinstance(check.actual, list | tuple) else []
    if check.status != "pass" or len(readings) != len(facts.gpus):
        return {}
    return {
        gpu.pci_bus_id: gen
        for gpu, gen in zip(facts.gpus, readings, strict=True)
        if isinstance(gen, int) and not isinstance(gen, bool)
    }


def gpu_verdicts(facts: HostFacts, report: HostReport | None) -> dict[str, LinkVerdict]:
    under_load = loaded_gens(facts, report)
    return {g.pci_bus_id: links.verdict(g.pcie, gen_under_load=under_load.get(g.pci_bus_id)) for g in facts.gpus}


def gpu_rows(facts: HostFacts, verdicts: Mapping[str, LinkVerdict]) -> tuple[GpuRow, ...]:
    by_bus = {g.pci_bus_id: g for g in facts.gpus}
    rows = []
    for gpu in facts.gpus:
        found = verdicts[gpu.pci_bus_id]
        link = gpu.pcie
        slot = join_text(
            f"x{link.slot_width_max}" if link.slot_width_max is not None else None,
            f"Gen{link.slot_gen_max}" if link.slot_gen_max is not None else None,
        )
        lanes, lanes_note = lanes_from(gpu)
        shared = tuple(
            f"shares {'root port' if group.kind == 'root_port' else 'the switch'} {group.via} with "
            + ", ".join(
                f"{gpu_label(by_bus[b])} ({b})" if b in by_bus else b for b in group.gpus if b != gpu.pci_bus_id
            )
            for group in facts.pcie_shared
            if gpu.pci_bus_id in group.gpus
        )
        rows.append(
            GpuRow(
                gpu.pci_bus_id,
                gpu_label(gpu),
                gpu.model,
                f"{found.width_text}, {found.gen_text}" + (f" (slot {slot})" if slot else " (slot unknown)"),
                found.state,
                STATE_TEXT[found.state],
                found.why,
                lanes,
                lanes_note,
                gpu.pcie_attach.source if gpu.pcie_attach is not None else "",
                shared,
            )
        )
    return tuple(rows)


# --- verify, drift and history ------------------------------------------------------------------------------------


def check_rows(report: HostReport) -> tuple[CheckRow, ...]:
    return tuple(
        CheckRow(c.id, c.status, show(c.expected), c.expected_from or "", show(c.actual), c.message)
        for c in report.checks
    )


def drift_lines(drift: HostDrift) -> tuple[str, ...]:
    return tuple(c.text for c in drift.changes) + tuple(f"plan: {line}" for line in drift.plan_changes)


def drift_note(drift: HostDrift | None, live: bool) -> str:
    if drift is None:
        return "no drift in these documents (dlsetup diff --format json has it)"
    if not drift.has_baseline:
        return "no baseline yet: the host has not verified after a provision"
    since = f"the baseline of {drift.baseline_recorded_at}" if drift.baseline_recorded_at else "the baseline"
    if not drift.drifted:
        return f"no change since {since}" + (" (read now)" if live else "")
    return f"changed since {since}:"


def _baseline_gpus(baseline: HardwareBaseline) -> tuple[str, ...]:
    return tuple(
        f"{g.pci_bus_id} {g.model or g.pci_id or 'GPU'}"
        + (f", x{g.width_current}" if g.width_current is not None else "")
        + (f" of x{g.width_max}" if g.width_max is not None and g.width_max != g.width_current else "")
        for g in baseline.gpus
    )


def baseline_changes(before: HardwareBaseline, after: HardwareBaseline) -> tuple[str, ...]:
    """What differs from one recorded baseline to the next (GPUs by bus id, their model, memory and link; CPU,
    RAM beyond the drift tolerance, disks)."""
    changes: list[str] = []
    old = {g.pci_bus_id: g for g in before.gpus}
    new = {g.pci_bus_id: g for g in after.gpus}
    for bus in old.keys() - new.keys():
        changes.append(f"GPU removed: {old[bus].label}")
    for bus in new.keys() - old.keys():
        changes.append(f"GPU added: {new[bus].label}")
    for bus in sorted(old.keys() & new.keys()):
        was, now = old[bus], new[bus]
        if was.pci_id != now.pci_id:
            changes.append(f"GPU replaced at {bus}: {was.model or was.pci_id} -> {now.model or now.pci_id}")
            continue
        for key in ("memory_mib", "width_current", "width_max", "slot_width_max", "gen_max"):
            a, b = getattr(was, key), getattr(now, key)
            if a != b and a is not None and b is not None:
                changes.append(f"{now.label}: {key} {a} -> {b}")
    if before.cpu_model != after.cpu_model and before.cpu_model and after.cpu_model:
        changes.append(f"CPU: {before.cpu_model} -> {after.cpu_model}")
    if (
        before.memory_mib
        and after.memory_mib
        and abs(after.memory_mib - before.memory_mib) > (RAM_TOLERANCE * before.memory_mib)
    ):
        changes.append(f"RAM: {_gib(before.memory_mib)} -> {_gib(after.memory_mib)}")
    disks_before = {d.name for d in before.disks}
    disks_after = {d.name for d in after.disks}
    changes += [f"disk removed: {d}" for d in sorted(disks_before - disks_after)]
    changes += [f"disk added: {d}" for d in sorted(disks_after - disks_before)]
    return tuple(changes)


def history_rows(history: Sequence[HistoryEntry]) -> tuple[BaselineRow, ...]:
    rows = []
    previous: HardwareBaseline | None = None
    for entry in history:
        baseline = entry.baseline
        machine = join_text(
            baseline.cpu_model,
            _gib(baseline.memory_mib) if baseline.memory_mib else None,
            f"{len(baseline.disks)} disk(s)" if baseline.disks else None,
            sep=", ",
        )
        if previous is None:
            changes: tuple[str, ...] = ("the first baseline",)
        else:
            changes = baseline_changes(previous, baseline) or ("no hardware change (a re-verified run)",)
        rows.append(
            BaselineRow(entry.recorded_at or "unknown", entry.run or "", _baseline_gpus(baseline), machine, changes)
        )
        previous = baseline
    return tuple(reversed(rows))  # newest first


# --- the host ----------------------------------------------------------------------------------------------------


def _verdict(report: HostReport | None, problems: Sequence[str]) -> tuple[Verdict, str, str]:
    if report is None:
        reason = "; ".join(problems) if problems else "no verify report among the inputs"
        return "not_verified", "NOT VERIFIED", reason
    return report.verdict, VERDICT_TEXT[report.verdict], report.reason


def _counts(report: HostReport | None) -> str:
    if report is None:
        return ""
    c = report.counts
    warned = f", {c.warned} warned" if c.warned else ""
    return f"{c.ran} ran: {c.passed} passed{warned}, {c.failed} failed; {c.skipped} skipped"


def build_host(inputs: HostInputs, index: int, *, live: bool = False) -> HostPage:
    """The page of one host (the ``index``-th), from everything known of it; ``live``: gathered by this run (then
    the drift and history are the controller's, read now), else read from documents."""
    facts, report = inputs.facts, inputs.verify
    verdict, verdict_text, reason = _verdict(report, inputs.problems)
    verdicts = gpu_verdicts(facts, report) if facts is not None else {}
    tree = pcie_tree(facts, verdicts) if facts is not None else None
    if facts is None:
        tree_note = "no facts for this host among the inputs (dlsetup facts --format json has them)"
    elif tree is None:
        tree_note = "no NVIDIA GPU on PCI"
    elif not any(g.pcie_path for g in facts.gpus):
        tree_note = "no bridges in these facts: each GPU is drawn on its root complex"
    else:
        tree_note = ""
    if report is None:
        bandwidth_note = "no verify report: " + NOT_MEASURED
    elif find_check(report, BANDWIDTH_CHECK) is None:
        bandwidth_note = "verify did not report a bandwidth check: " + NOT_MEASURED
    else:
        bandwidth_note = ""
    plan_from = inputs.plan_from
    if inputs.plan is None:
        plan_note = "no record of a provision on the host" if live else "no plan among the inputs"
    else:
        plan_note = PLAN_NOTES[plan_from] if plan_from is not None else ""
    if live:
        history_note = "" if inputs.history else "no baseline recorded on this controller yet"
    else:
        history_note = (
            ""
            if inputs.history
            else (
                "no baseline history among the inputs (the controller keeps it in STATE_DIR/hosts/NAME/history.jsonl)"
            )
        )
    sources = tuple(Row(part, where) for part, where in inputs.sources)
    return HostPage(
        name=inputs.name,
        anchor=f"host-{index}",
        verdict=verdict,
        verdict_text=verdict_text,
        reason=reason,
        counts=_counts(report),
        machine=machine_rows(facts) if facts is not None else (),
        warnings=facts.warnings if facts is not None else (),
        plan=plan_rows(inputs.plan) if inputs.plan is not None else (),
        plan_note=plan_note,
        tree=tree,
        tree_note=tree_note,
        gpus=gpu_rows(facts, verdicts) if facts is not None else (),
        bandwidth=bandwidth_charts(facts, report),
        bandwidth_note=bandwidth_note,
        checks=check_rows(report) if report is not None else (),
        drift=drift_lines(inputs.drift) if inputs.drift is not None else (),
        drift_note=drift_note(inputs.drift, live),
        history=history_rows(inputs.history),
        history_note=history_note,
        problems=inputs.problems,
        sources=sources,
    )
