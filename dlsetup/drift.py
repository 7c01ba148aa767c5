"""What changed on a host since the last provision: pure comparison of two hardware reports."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def _gpu_key(gpu: Mapping[str, Any]) -> tuple[str, str]:
    return (str(gpu.get("pci_bus_id") or ""), str(gpu.get("pci_id") or ""))


def _describe(gpu: Mapping[str, Any]) -> str:
    name = gpu.get("name") or gpu.get("pci_name") or gpu.get("pci_id")
    return f"{name} ({gpu.get('pci_id')}) at {gpu.get('pci_bus_id')}"


def hardware_changes(previous: Mapping[str, Any] | None, current_gpus: Sequence[Mapping[str, Any]]) -> list[str]:
    """Lines such as ``"+ GPU NVIDIA GeForce RTX 4090 (10de:2684) at 0000:02:00.0"``; empty when nothing
    changed or when there is no previous state (first provision)."""
    if not previous:
        return []
    before = {_gpu_key(g): g for g in previous.get("gpus") or []}
    after = {_gpu_key(g): g for g in current_gpus}
    changes = [f"- GPU {_describe(g)}" for k, g in before.items() if k not in after]
    changes += [f"+ GPU {_describe(g)}" for k, g in after.items() if k not in before]
    return changes


def plan_changes(previous_plan: Mapping[str, Any] | None, plan: Mapping[str, Any]) -> list[str]:
    """Which stack choices differ from the last applied plan."""
    if not previous_plan:
        return []
    fields = (
        ("driver", "branch"),
        ("driver", "flavor"),
        ("driver", "source"),
        ("cuda", "version"),
        ("pytorch", "variant"),
        ("pytorch", "version"),
        ("jax", "extra"),
    )
    changes = []
    for section, key in fields:
        old = (previous_plan.get(section) or {}).get(key)
        new = (plan.get(section) or {}).get(key)
        if old != new:
            changes.append(f"{section} {key}: {old} -> {new}")
    return changes
