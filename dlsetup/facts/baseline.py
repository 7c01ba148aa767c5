"""The hardware baseline: what a host was the last time it verified (``docs/architecture.md``, "Hardware baseline").

A provision whose verify passed records the host's hardware: each GPU by bus id with its model, PCI ids, memory and
PCIe link (generation and width, maximum and current, and the slot's), the CPU, the RAM and the disks. It is kept
on the host (:data:`BASELINE_PATH`, written by the ``base`` role's ``baseline`` entry point) and on the controller
beside the run logs (:func:`dlsetup.run.runner.state_dir` ``/hosts/NAME/``, with a history of every baseline).
Until a later run verifies, the last good baseline stays: every re-run compares against it
(:mod:`dlsetup.facts.drift`), so a change is shown until it is resolved.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

from pydantic import ConfigDict, Strict, TypeAdapter, ValidationError
from pydantic.dataclasses import dataclass

from dlsetup.facts.model import BusId, HostFacts, PciId
from dlsetup.facts.record import HostRecord

BASELINE_PATH = "/etc/ansible/facts.d/dlsetup_baseline.fact"
BASELINE_FORMAT = 1

Text = Annotated[str, Strict()]
Count = Annotated[int, Strict()]


@dataclass(frozen=True, config=ConfigDict(extra="ignore"))
class BaselineGpu:
    """One GPU as it verified: where it sits, what it is, its memory and its link."""

    pci_bus_id: BusId
    pci_id: PciId | None = None
    subsystem_id: PciId | None = None
    model: Text | None = None
    memory_mib: Count | None = None
    gen_max: Count | None = None
    gen_current: Count | None = None
    width_max: Count | None = None
    width_current: Count | None = None
    slot_gen_max: Count | None = None
    slot_width_max: Count | None = None

    @property
    def label(self) -> str:
        return f"{self.model or self.pci_id or 'GPU'} at {self.pci_bus_id}"

    @property
    def best_gen(self) -> int | None:
        """The generation the link can reach: the lower of the GPU's and the slot's maximum."""
        gens = [g for g in (self.gen_max, self.slot_gen_max) if g is not None]
        return min(gens) if gens else None


@dataclass(frozen=True, config=ConfigDict(extra="ignore"))
class BaselineDisk:
    name: Text
    model: Text | None = None
    size_gib: Count | None = None


@dataclass(frozen=True, config=ConfigDict(extra="ignore"))
class HardwareBaseline:
    """The hardware of a host that verified. ``complete`` is False for a baseline made from an older dlsetup's
    record, which knew only where each GPU sat and what it was."""

    gpus: tuple[BaselineGpu, ...] = ()
    cpu_model: Text | None = None
    cpu_threads: Count | None = None
    memory_mib: Count | None = None
    disks: tuple[BaselineDisk, ...] = ()
    recorded_at: Text | None = None
    complete: bool = True
    format: Count = BASELINE_FORMAT

    @classmethod
    def of(cls, facts: HostFacts, *, now: datetime | None = None) -> HardwareBaseline:
        """The baseline of a host that ``facts`` describe, recorded at ``now`` (UTC)."""
        stamp = (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
        gpus = tuple(
            BaselineGpu(
                g.pci_bus_id,
                g.pci_id,
                g.subsystem_id,
                g.model if g.model != "GPU" else None,
                g.memory_mib,
                g.pcie.gen_max,
                g.pcie.gen_current,
                g.pcie.width_max,
                g.pcie.width_current,
                g.pcie.slot_gen_max,
                g.pcie.slot_width_max,
            )
            for g in facts.gpus
        )
        disks = tuple(BaselineDisk(d.name, d.model, d.size_gib) for d in facts.disks)
        return cls(gpus, facts.cpu.model, facts.cpu.threads, facts.memory_mib, disks, stamp)

    @classmethod
    def from_record(cls, record: HostRecord) -> HardwareBaseline:
        """What an older provision's record says of the GPUs (identity only): the baseline of a host provisioned
        before baselines existed."""
        gpus = tuple(BaselineGpu(g.pci_bus_id, g.pci_id, g.subsystem_id, g.pci_name) for g in record.gpus)
        return cls(gpus, complete=False)

    def _essence(self) -> dict[str, Any]:
        """What makes the hardware this hardware: not when it was recorded, not the link generation read at the
        moment (GPUs lower it at idle), RAM to the GiB."""
        data = self.to_dict()
        data.pop("recorded_at", None)
        for gpu in data["gpus"]:
            gpu.pop("gen_current", None)
        data["memory_mib"] = (self.memory_mib or 0) // 1024
        return data

    def same(self, other: HardwareBaseline) -> bool:
        """Whether ``other`` records the same hardware (then the host's baseline is not rewritten)."""
        return self._essence() == other._essence()

    def gpu(self, bus_id: str) -> BaselineGpu | None:
        return next((g for g in self.gpus if g.pci_bus_id == bus_id), None)

    def to_dict(self) -> dict[str, Any]:
        dumped: dict[str, Any] = _BASELINE.dump_python(self, mode="json")
        return dumped

    @classmethod
    def parse(cls, data: object) -> HardwareBaseline | None:
        """A baseline read back, or ``None`` when ``data`` is not one (then there is no baseline)."""
        try:
            return _BASELINE.validate_python(data)
        except ValidationError:
            return None


_BASELINE: TypeAdapter[HardwareBaseline] = TypeAdapter(HardwareBaseline)


def baseline_json_schema() -> dict[str, Any]:
    return _BASELINE.json_schema(mode="serialization")


# --- the controller's copy ---------------------------------------------------------------------------------------


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in name) or "_"


def controller_dir(state_dir: Path, host: str) -> Path:
    """Where the controller keeps a host's baselines: ``STATE_DIR/hosts/NAME/``."""
    return state_dir / "hosts" / _safe(host)


def save_on_controller(state_dir: Path, host: str, baseline: HardwareBaseline, *, run_dir: Path | None) -> Path:
    """Write ``baseline.json`` (replaced atomically, mode 0600) and append it to ``history.jsonl``."""
    where = controller_dir(state_dir, host)
    where.mkdir(parents=True, exist_ok=True, mode=0o700)
    data = baseline.to_dict()
    path = where / "baseline.json"
    tmp = where / f".baseline.json.{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)
    entry = {"recorded_at": baseline.recorded_at, "run": str(run_dir) if run_dir else None, "baseline": data}
    fd = os.open(where / "history.jsonl", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "a") as handle:
        handle.write(json.dumps(entry) + "\n")
    return path


def load_from_controller(state_dir: Path, host: str) -> HardwareBaseline | None:
    path = controller_dir(state_dir, host) / "baseline.json"
    try:
        return HardwareBaseline.parse(json.loads(path.read_text()))
    except (OSError, ValueError):
        return None


def history(state_dir: Path, host: str) -> list[dict[str, Any]]:
    """Every baseline the controller recorded for ``host``, oldest first (unreadable lines are skipped)."""
    path = controller_dir(state_dir, host) / "history.jsonl"
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return []
    entries = []
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict):
            entries.append(entry)
    return entries
