"""What changed in a host's hardware since the last provision: the record then against the facts now. Pure."""

from __future__ import annotations

from collections.abc import Sequence

from dlsetup.facts.model import GpuFacts
from dlsetup.facts.record import HostRecord, RecordedGpu


def _key(gpu: GpuFacts | RecordedGpu) -> tuple[str, str]:
    return (gpu.pci_bus_id, gpu.pci_id or "")


def _describe(gpu: GpuFacts | RecordedGpu) -> str:
    return f"{gpu.model} ({gpu.pci_id}) at {gpu.pci_bus_id}"


def hardware_changes(previous: HostRecord | None, current: Sequence[GpuFacts]) -> list[str]:
    """Lines such as ``"+ GPU NVIDIA GeForce RTX 4090 (10de:2684) at 0000:02:00.0"``; empty when nothing
    changed or when there is no previous record (first provision)."""
    if previous is None:
        return []
    before = {_key(g): g for g in previous.gpus}
    after = {_key(g): g for g in current}
    changes = [f"- GPU {_describe(g)}" for k, g in before.items() if k not in after]
    changes += [f"+ GPU {_describe(g)}" for k, g in after.items() if k not in before]
    return changes
