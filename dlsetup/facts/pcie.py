"""Where each GPU's PCIe lanes come from, and which GPUs share a root port or a switch (pure, on the facts).

The facts module reads the bridges above every GPU (``gpus[].pcie_path``: root port first, each with its address,
PCI id, pci.ids name and link); :func:`explain_pcie` adds, from the rules of ``data/pcie_ports.yaml`` (the first
that matches wins, each with its source), whether the lanes are the CPU's or the chipset's (``pcie_attach``), and
the root ports and switches more than one GPU sits behind (``pcie_shared``). A GPU no rule places is ``unknown``:
never guessed. Applied once, where the module's facts become :class:`~dlsetup.facts.model.HostFacts`
(:mod:`dlsetup.facts.gather`, the verify suite); applying it again changes nothing.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from functools import cache
from importlib import resources
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

from dlsetup.facts.model import GpuFacts, HostFacts, PcieAttach, PcieHop, PcieShared


class AttachRule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    rule: str
    to: Literal["cpu", "chipset", "unknown"]
    hop: Literal["root_port", "switch_upstream", "any", "none"]
    vendors: tuple[str, ...] = ()
    name: str | None = None
    when: str = Field(min_length=1)
    source: str = Field(min_length=1)

    def matches(self, path: Sequence[PcieHop]) -> bool:
        if self.hop == "none":
            return not path
        if self.hop == "root_port":
            hops: Sequence[PcieHop] = path[:1]
        elif self.hop == "switch_upstream":
            hops = [h for h in path if h.kind == "switch_upstream"]
        else:
            hops = path
        return any(self._fits(hop) for hop in hops)

    def _fits(self, hop: PcieHop) -> bool:
        vendor = (hop.pci_id or "").partition(":")[0]
        if self.vendors and vendor not in self.vendors:
            return False
        return self.name is None or (hop.name is not None and re.search(self.name, hop.name) is not None)


class AttachRules(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    rules: tuple[AttachRule, ...] = Field(min_length=1)


UNMATCHED = "no_rule"
UNMATCHED_WHEN = (
    "no rule places the root port (its pci.ids name is missing or not a known CPU's or chipset's): not guessed"
)


@cache
def load_rules() -> AttachRules:
    text = (resources.files("dlsetup.facts") / "data" / "pcie_ports.yaml").read_text(encoding="utf-8")
    return AttachRules.model_validate(yaml.safe_load(text))


def attach(gpu: GpuFacts, rules: AttachRules | None = None) -> PcieAttach | None:
    """Where ``gpu``'s lanes come from; ``None`` for a GPU PCI does not show (only nvidia-smi lists it)."""
    if not gpu.on_pci:
        return None
    path = gpu.pcie_path
    root = path[0].address if path else None
    for rule in (rules or load_rules()).rules:
        if rule.matches(path):
            return PcieAttach(to=rule.to, root_port=root, rule=rule.rule, source=rule.source)
    return PcieAttach(to="unknown", root_port=root, rule=UNMATCHED, source=UNMATCHED_WHEN)


def shared(gpus: Sequence[GpuFacts]) -> tuple[PcieShared, ...]:
    """The switches (by their upstream port) and root ports that more than one GPU sits behind, in address order;
    a root port only when its GPUs are not all behind one switch of it."""
    behind: dict[tuple[str, str], list[str]] = {}
    for gpu in gpus:
        for hop in gpu.pcie_path:
            if hop.kind in ("root_port", "switch_upstream"):
                kind = "root_port" if hop.kind == "root_port" else "switch"
                behind.setdefault((hop.address, kind), []).append(gpu.pci_bus_id)
    groups = {key: tuple(sorted(set(buses))) for key, buses in sorted(behind.items()) if len(set(buses)) > 1}
    switches = {gpus for (_, kind), gpus in groups.items() if kind == "switch"}
    # a root port whose GPUs all sit behind one switch below it says nothing the switch does not
    return tuple(
        PcieShared(via=address, kind=kind, gpus=gpus)  # type: ignore[arg-type]
        for (address, kind), gpus in groups.items()
        if kind == "switch" or gpus not in switches
    )


def explain_pcie(facts: HostFacts) -> HostFacts:
    """``facts`` with every GPU's ``pcie_attach`` and the host's ``pcie_shared`` filled in (idempotent)."""
    rules = load_rules()
    gpus = tuple(dataclasses.replace(gpu, pcie_attach=attach(gpu, rules)) for gpu in facts.gpus)
    return dataclasses.replace(facts, gpus=gpus, pcie_shared=shared(gpus))


def rule_of(name: str) -> AttachRule | None:
    """The rule ``name`` (``pcie_attach.rule``), for its ``when``."""
    return next((rule for rule in load_rules().rules if rule.rule == name), None)


def shared_with(facts: HostFacts, gpu: GpuFacts) -> list[tuple[PcieShared, list[GpuFacts]]]:
    """The switches and root ports ``gpu`` shares, each with the other GPUs behind it."""
    others = {g.pci_bus_id: g for g in facts.gpus}
    return [
        (group, [others[bus] for bus in group.gpus if bus != gpu.pci_bus_id and bus in others])
        for group in facts.pcie_shared
        if gpu.pci_bus_id in group.gpus
    ]
