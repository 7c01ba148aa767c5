"""The record a provision leaves on the host (``/etc/ansible/facts.d/dlsetup.fact``), read back by the next run.

It holds what identifies each GPU on PCI and the plan that was applied (``docs/architecture.md``, "State record").
The record is built once, in Python, from the facts the plan was made for (:meth:`HostRecord.of`), handed to the
run as the ``dlsetup_state`` host variable and written by one task (the ``base`` role's ``state`` entry point).
The applied plan stays opaque JSON here: the plan stage reads it back with its own model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Any

from pydantic import ConfigDict, Field, JsonValue, Strict, TypeAdapter, ValidationError
from pydantic.dataclasses import dataclass

from dlsetup.facts.model import BusId, HostFacts, PciId

RECORD_PATH = "/etc/ansible/facts.d/dlsetup.fact"


@dataclass(frozen=True, config=ConfigDict(extra="ignore"))
class RecordedGpu:
    """A GPU as the record identifies it: where it sits and what it is (names that fill in late are left out)."""

    pci_bus_id: BusId
    pci_id: PciId | None = None
    subsystem_id: PciId | None = None
    pci_name: Annotated[str, Strict()] | None = None

    @property
    def model(self) -> str:
        return self.pci_name or self.pci_id or "GPU"


@dataclass(frozen=True, config=ConfigDict(extra="ignore"))
class HostRecord:
    """What the last provision recorded: the GPUs on PCI then, and the applied plan (Plan JSON, without
    ``reboot_required``, which is a state of the host rather than a choice)."""

    gpus: tuple[RecordedGpu, ...] = ()
    plan: dict[str, JsonValue] | None = Field(default=None)
    # the roles the provision ran (``--tags role::nvidia_driver,...``); empty: every role of site.yml. Verify
    # expects only the parts of the plan these roles applied.
    roles: tuple[str, ...] = ()
    # what the run was asked to do and what to read back ({fingerprint, spec}), and, added on the host at the end
    # of the run, what it read ({probe}): dlsetup.run.converged
    converged: dict[str, JsonValue] | None = Field(default=None)

    @classmethod
    def of(
        cls,
        facts: HostFacts,
        plan: Mapping[str, Any] | None,
        roles: Sequence[str] = (),
        converged: Mapping[str, Any] | None = None,
    ) -> HostRecord:
        """The record of applying ``plan`` (by ``roles``, or all of them) to the host ``facts`` describe."""
        applied = {k: v for k, v in plan.items() if k != "reboot_required"} if plan is not None else None
        return cls(
            # no name: pci.ids' names fill in once the base role installed pciutils, and the driver's once it
            # loads, so a name recorded by the first run would make the second one rewrite the record (changed=1)
            gpus=tuple(RecordedGpu(g.pci_bus_id, g.pci_id, g.subsystem_id) for g in facts.gpus),
            plan=applied,
            roles=tuple(roles),
            converged=dict(converged) if converged is not None else None,
        )

    def applied(self, role: str) -> bool:
        """Whether the provision ran ``role`` (nvidia_driver, cuda, dl_stack, ...)."""
        return not self.roles or role in self.roles

    def to_dict(self) -> dict[str, Any]:
        dumped: dict[str, Any] = _RECORD.dump_python(self, mode="json")
        return dumped

    @classmethod
    def parse(cls, data: object) -> HostRecord | None:
        """A record read from a host, or ``None`` when it is not one (unreadable state is treated as no state: the
        next provision rewrites it)."""
        try:
            return _RECORD.validate_python(data)
        except ValidationError:
            return None


_RECORD: TypeAdapter[HostRecord] = TypeAdapter(HostRecord)


def record_json_schema() -> dict[str, Any]:
    """The JSON Schema of the record (``docs/schemas/record.schema.json`` is generated from it)."""
    return _RECORD.json_schema(mode="serialization")
