"""What changed in a host's hardware since its baseline (the last verified hardware) against the facts now. Pure.

A GPU is identified by its bus id: one that is gone from its slot is *removed*, one in a slot that was empty is
*added*, and another device id in the same slot is *replaced*. For a GPU in the same slot, its memory and its link
are compared: the maximum width or generation falling, the slot's width changing, or the current width falling
(a link that trained down). The current generation is not compared: GPUs lower it at idle. RAM that changed by more
than :data:`RAM_TOLERANCE` and disks added or removed are changes too; a value unknown on either side is not.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from dlsetup.facts.baseline import BaselineGpu, HardwareBaseline
from dlsetup.facts.model import GpuFacts, HostFacts

ChangeKind = Literal[
    "gpu_added",
    "gpu_removed",
    "gpu_replaced",
    "gpu_memory",
    "link_width",
    "link_width_max",
    "link_gen_max",
    "slot_width",
    "ram",
    "cpu",
    "disk_added",
    "disk_removed",
]
# RAM reads vary a little with firmware and kernel reservations: a change below this share is not one
RAM_TOLERANCE = 0.03


@dataclass(frozen=True)
class Change:
    """One difference: its kind, the bus id or disk it is about, and the values before and after."""

    kind: ChangeKind
    subject: str
    before: Any
    after: Any
    text: str

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "subject": self.subject, "before": self.before, "after": self.after,
                "text": self.text}  # fmt: skip


@dataclass(frozen=True)
class Drift:
    """Every change of one host against its baseline (``baseline`` None: none recorded, nothing to compare)."""

    baseline: HardwareBaseline | None
    changes: tuple[Change, ...] = ()

    @property
    def drifted(self) -> bool:
        return bool(self.changes)

    @property
    def removed_gpus(self) -> tuple[Change, ...]:
        return tuple(c for c in self.changes if c.kind == "gpu_removed")

    @property
    def lines(self) -> list[str]:
        return [c.text for c in self.changes]

    def to_dict(self) -> dict[str, Any]:
        return {
            "baseline_recorded_at": self.baseline.recorded_at if self.baseline else None,
            "drifted": self.drifted,
            "changes": [c.to_dict() for c in self.changes],
        }


def _name(gpu: GpuFacts | BaselineGpu) -> str:
    model = gpu.model if isinstance(gpu, GpuFacts) else gpu.model or gpu.pci_id or "GPU"
    return f"{model} ({gpu.pci_id})" if gpu.pci_id and gpu.pci_id not in model else model


def _link_changes(before: BaselineGpu, gpu: GpuFacts) -> list[Change]:
    """Width or generation maximum that fell, a slot width that changed, a current width that fell."""
    now = gpu.pcie
    compared: list[tuple[ChangeKind, str, str, int | None, int | None]] = [
        ("link_width_max", "maximum link width", "x{}", before.width_max, now.width_max),
        ("link_gen_max", "maximum link generation", "Gen{}", before.gen_max, now.gen_max),
        ("slot_width", "slot width", "x{}", before.slot_width_max, now.slot_width_max),
        ("link_width", "link width", "x{}", before.width_current, now.width_current),
    ]
    changes = []
    for kind, what, unit, old, new in compared:
        # a slot's width is a change either way; the others only when they fell (a wider link is no problem)
        if old is None or new is None or new == old or (new > old and kind != "slot_width"):
            continue
        text = f"~ GPU {_name(gpu)} at {gpu.pci_bus_id}: {what} {unit.format(new)}, was {unit.format(old)}"
        changes.append(Change(kind, gpu.pci_bus_id, old, new, text))
    return changes


def gpu_changes(baseline: HardwareBaseline, current: Sequence[GpuFacts]) -> list[Change]:
    before = {g.pci_bus_id: g for g in baseline.gpus}
    after = {g.pci_bus_id: g for g in current}
    changes: list[Change] = []
    for bus in sorted(before.keys() | after.keys()):
        old, new = before.get(bus), after.get(bus)
        if new is None:
            assert old is not None
            changes.append(Change("gpu_removed", bus, old.label, None, f"- GPU {_name(old)} at {bus}"))
        elif old is None:
            changes.append(Change("gpu_added", bus, None, new.model, f"+ GPU {_name(new)} at {bus}"))
        elif old.pci_id and new.pci_id and old.pci_id != new.pci_id:
            changes.append(Change("gpu_replaced", bus, _name(old), _name(new),
                                  f"~ GPU at {bus}: {_name(old)} -> {_name(new)}"))  # fmt: skip
        else:
            if old.memory_mib is not None and new.memory_mib is not None and old.memory_mib != new.memory_mib:
                text = f"~ GPU {_name(new)} at {bus}: memory {new.memory_mib} MiB, was {old.memory_mib} MiB"
                changes.append(Change("gpu_memory", bus, old.memory_mib, new.memory_mib, text))
            changes += _link_changes(old, new)
    return changes


def host_changes(baseline: HardwareBaseline, facts: HostFacts) -> list[Change]:
    if not baseline.complete:
        return []
    changes: list[Change] = []
    if baseline.cpu_model and facts.cpu.model and baseline.cpu_model != facts.cpu.model:
        changes.append(Change("cpu", "cpu", baseline.cpu_model, facts.cpu.model,
                              f"~ CPU {baseline.cpu_model} -> {facts.cpu.model}"))  # fmt: skip
    old_ram, new_ram = baseline.memory_mib, facts.memory_mib
    if old_ram and new_ram and abs(new_ram - old_ram) > RAM_TOLERANCE * old_ram:
        changes.append(Change("ram", "memory", old_ram, new_ram,
                              f"~ RAM {old_ram / 1024:.1f} -> {new_ram / 1024:.1f} GiB"))  # fmt: skip
    before = {d.name: d for d in baseline.disks}
    after = {d.name: d for d in facts.disks}
    for name in sorted(before.keys() - after.keys()):
        disk = before[name]
        changes.append(Change("disk_removed", name, disk.size_gib, None,
                              f"- disk {name} ({disk.model or 'unknown model'}, {disk.size_gib} GiB)"))  # fmt: skip
    for name in sorted(after.keys() - before.keys()):
        new = after[name]
        changes.append(Change("disk_added", name, None, new.size_gib,
                              f"+ disk {name} ({new.model or 'unknown model'}, {new.size_gib} GiB)"))  # fmt: skip
    return changes


def hardware_drift(baseline: HardwareBaseline | None, facts: HostFacts) -> Drift:
    """Every change of ``facts`` against ``baseline``; none without a baseline (a first provision)."""
    if baseline is None:
        return Drift(None)
    return Drift(baseline, tuple(gpu_changes(baseline, facts.gpus) + host_changes(baseline, facts)))
