"""The Facts JSON host object (``docs/architecture.md``, ``docs/schemas/facts.schema.json``) as typed, frozen models.

The ``dlsetup_hw_facts`` module (``roles/hw_facts``) returns plain JSON; :meth:`HostFacts.from_dict` validates it
(every key present, nothing else, the right types, ids in their documented formats) and raises
:class:`FactsFormatError` naming the offending path; :meth:`HostFacts.to_dict` gives the same JSON back. Every later
stage (plan, drift, verify, rendering) reads these models, never the raw dict. Pure: no I/O.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, Strict, TypeAdapter, ValidationError
from pydantic.dataclasses import dataclass
from pydantic_core import ErrorDetails

from dlsetup.errors import EXIT_INTERNAL, DlsetupError

Virtualization = Literal["container", "vm", "wsl2"]
# Where a GPU was seen: on PCI (sysfs; the default, and then the key is left out of the JSON), or only in
# nvidia-smi's list (WSL2 passes GPUs through /dev/dxg, a container may not see /sys/bus/pci).
GpuSource = Literal["pci", "nvidia-smi"]
KernelModule = Literal["open", "proprietary"]
# The same list as hwparse.nvidia_smi.ERROR_KINDS (stdlib-only there, so written twice; a test keeps them equal).
ErrorKind = Literal[
    "nvidia_smi_missing",
    "driver_not_loaded",
    "version_mismatch",
    "no_devices",
    "gpu_lost",
    "nvml_missing",
    "query_failed",
]

_STRICT = ConfigDict(extra="forbid")
Count = Annotated[int, Strict(), Field(ge=0)]
Text = Annotated[str, Strict()]
Flag = Annotated[bool, Strict()]
# sysfs prints the domain as %04x: four digits, more only for domains above 0xffff (never zero-padded to 8).
_BUS_ID = r"^(?:[0-9a-f]{4}|[1-9a-f][0-9a-f]{4,7}):[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$"
BusId = Annotated[str, Strict(), Field(pattern=_BUS_ID)]
PciId = Annotated[str, Strict(), Field(pattern=r"^[0-9a-f]{4}:[0-9a-f]{4}$")]
PciClass = Annotated[str, Strict(), Field(pattern=r"^0x[0-9a-f]{6}$")]
MajorMinor = Annotated[str, Strict(), Field(pattern=r"^\d+\.\d+$")]


class FactsFormatError(DlsetupError):
    """The facts module returned data without the Facts JSON shape (a dlsetup bug or a role/CLI mismatch)."""

    exit_code = EXIT_INTERNAL


@dataclass(frozen=True, config=_STRICT)
class OsFacts:
    id: Text | None
    version: Text | None
    codename: Text | None
    kernel: Text | None
    pretty_name: Text | None


@dataclass(frozen=True, config=_STRICT)
class MachineFacts:
    vendor: Text | None
    product: Text | None
    virtualization: Virtualization | None
    # what shows a container or WSL2 (kernel release, /dev/dxg, marker files); absent from the JSON when empty
    virtualization_evidence: tuple[Text, ...] = ()


@dataclass(frozen=True, config=_STRICT)
class CpuFacts:
    model: Text | None
    cores: Count | None
    threads: Count | None


@dataclass(frozen=True, config=_STRICT)
class Disk:
    name: Text
    model: Text | None
    size_gib: Count | None
    rotational: Flag | None
    transport: Text | None
    ssd: Flag | None
    holds: tuple[Text, ...]


@dataclass(frozen=True, config=_STRICT)
class PcieLink:
    gen_current: Count | None
    gen_max: Count | None
    width_current: Count | None
    width_max: Count | None
    slot_gen_max: Count | None
    slot_width_max: Count | None


HopKind = Literal["root_port", "switch_upstream", "switch_downstream"]
AttachedTo = Literal["cpu", "chipset", "unknown"]


@dataclass(frozen=True, config=_STRICT)
class PcieHop:
    """One bridge between the root complex and a GPU: the root port, a switch's upstream or downstream port."""

    address: BusId
    pci_id: PciId | None
    name: Text | None
    kind: HopKind
    gen_current: Count | None
    gen_max: Count | None
    width_current: Count | None
    width_max: Count | None


@dataclass(frozen=True, config=_STRICT)
class PcieAttach:
    """Where a GPU's lanes come from: the CPU's root ports or the chipset's, by which rule of
    ``hwparse.pcie.ATTACH_RULES`` and its source."""

    to: AttachedTo
    root_port: BusId | None
    rule: Text
    source: Text


@dataclass(frozen=True, config=_STRICT)
class PcieShared:
    """A root port or switch that more than one GPU sits behind (their traffic shares its uplink; peer-to-peer
    between them stays below it)."""

    via: BusId
    kind: Literal["root_port", "switch"]
    gpus: tuple[BusId, ...]


@dataclass(frozen=True, config=_STRICT)
class GpuFacts:
    index: Count | None
    pci_bus_id: BusId
    pci_id: PciId | None
    subsystem_id: PciId | None
    pci_class: PciClass | None
    name: Text | None
    pci_name: Text | None
    memory_mib: Count | None
    compute_capability: MajorMinor | None
    persistence_mode: Flag | None
    kernel_driver: Text | None
    visible_to_driver: Flag
    pcie: PcieLink
    source: GpuSource = "pci"
    # the bridges above the GPU, root port first, and where its lanes come from; absent from the JSON when
    # unknown (a GPU only nvidia-smi lists, facts from before dlsetup read them)
    pcie_path: tuple[PcieHop, ...] = ()
    pcie_attach: PcieAttach | None = None

    @property
    def on_pci(self) -> bool:
        """Whether PCI (sysfs) shows the GPU; False for one only nvidia-smi lists (WSL2, some containers)."""
        return self.source == "pci"

    @property
    def model(self) -> str:
        """The best name there is: the driver's, else pci.ids', else the PCI id."""
        return self.name or self.pci_name or self.pci_id or "GPU"

    @property
    def label(self) -> str:
        """``GPU 0 (NVIDIA GeForce GTX 1080 Ti, 0000:05:00.0)``: which GPU, for messages."""
        prefix = f"GPU {self.index} " if self.index is not None else "GPU "
        return f"{prefix}({self.model}, {self.pci_bus_id})"


@dataclass(frozen=True, config=_STRICT)
class DriverError:
    kind: ErrorKind
    message: Text
    hint: Text


@dataclass(frozen=True, config=_STRICT)
class DriverState:
    loaded: Flag
    version: Text | None
    cuda_version: MajorMinor | None
    kernel_module: KernelModule | None
    error: DriverError | None


@dataclass(frozen=True, config=_STRICT)
class HostFacts:
    """What one host is: the ``hosts.NAME`` object of ``dlsetup facts --format json``."""

    os: OsFacts
    machine: MachineFacts
    cpu: CpuFacts
    memory_mib: Count | None
    disks: tuple[Disk, ...]
    gpus: tuple[GpuFacts, ...]
    driver: DriverState
    warnings: tuple[Text, ...]
    # the root ports and switches that more than one GPU sits behind; absent from the JSON when none
    pcie_shared: tuple[PcieShared, ...] = ()

    @classmethod
    def from_dict(cls, data: object) -> HostFacts:
        """Validate the facts module's ``dlsetup_hw`` object; raise :class:`FactsFormatError` if malformed."""
        try:
            return _HOST.validate_python(data)
        except ValidationError as exc:
            raise FactsFormatError(_describe(exc.errors()[0], "facts")) from None

    def to_dict(self) -> dict[str, Any]:
        """The stable Facts JSON host object (key order as documented).

        The keys with defaults (a GPU's ``source``, ``pcie_path`` and ``pcie_attach``,
        ``machine.virtualization_evidence``, ``pcie_shared``) are left out when they hold them, as the facts module
        leaves them out: documents from before they existed read back unchanged.
        """
        dumped: dict[str, Any] = _HOST.dump_python(self, mode="json", exclude_defaults=True)
        return dumped

    @property
    def gpus_off_pci(self) -> tuple[GpuFacts, ...]:
        """GPUs nvidia-smi lists that PCI does not show."""
        return tuple(gpu for gpu in self.gpus if not gpu.on_pci)

    @property
    def visible_gpus(self) -> tuple[GpuFacts, ...]:
        """GPUs the NVIDIA driver lists (``visible_to_driver``)."""
        return tuple(gpu for gpu in self.gpus if gpu.visible_to_driver)

    def root_disks(self) -> tuple[Disk, ...]:
        """The disks that hold ``/``."""
        return tuple(disk for disk in self.disks if "/" in disk.holds)


_HOST: TypeAdapter[HostFacts] = TypeAdapter(HostFacts)


@dataclass(frozen=True, config=_STRICT)
class FactsDocument:
    """The whole ``dlsetup facts --format json`` document: ``{"hosts": {NAME: host object}}``."""

    hosts: dict[str, HostFacts]
    # why a host gave no facts (unreachable, the module failed); absent when every host did
    errors: dict[str, Text] = dataclasses.field(default_factory=dict)


_DOCUMENT: TypeAdapter[FactsDocument] = TypeAdapter(FactsDocument)


def hosts_from_dict(data: object) -> dict[str, HostFacts]:
    """Parse a whole ``{"hosts": {NAME: host object}}`` document."""
    try:
        return dict(_DOCUMENT.validate_python(data).hosts)
    except ValidationError as exc:
        raise FactsFormatError(_describe(exc.errors()[0], "document", nested_root=False)) from None


def hosts_to_dict(hosts: Mapping[str, HostFacts]) -> dict[str, Any]:
    """The ``{"hosts": {...}}`` document of ``dlsetup facts --format json``."""
    return {"hosts": {name: host.to_dict() for name, host in hosts.items()}}


def facts_json_schema() -> dict[str, Any]:
    """The JSON Schema of the facts document (``docs/schemas/facts.schema.json`` is generated from it)."""
    return _DOCUMENT.json_schema(mode="serialization")


# --- error messages: the path of the offending value, as the Facts JSON names it ------------------------------

_OBJECT_ERRORS = frozenset(("dataclass_type", "model_type", "dict_type", "model_attributes_type"))
_EXPECTED = {
    "int_type": "a non-negative integer or null",
    "greater_than_equal": "a non-negative integer or null",
    "bool_type": "true, false or null",
    "string_type": "a string",
    "string_pattern_mismatch": "a string in the documented format",
    "literal_error": "one of the documented values",
    "tuple_type": "a list",
    "list_type": "a list",
}


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {value}"
    if isinstance(value, str):
        return f"string {value!r}"
    if isinstance(value, int | float):
        return f"number {value}"
    return type(value).__name__


def _path(loc: Sequence[int | str], root: str, *, value: bool, nested_root: bool) -> str:
    """Where an error is, as the documented JSON names it: an object by its own path (``os``, ``driver.error``,
    ``gpus[0]``; the whole document is ``root``), a value by its object's path and key (``gpus[0].pcie.width_max``),
    where a key of the top-level object is ``root.key`` (``facts.memory_mib``)."""
    if not loc:
        return root
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    if not nested_root or (value and len(loc) == 1):
        return f"{root}.{text}"
    return text


def _describe(error: ErrorDetails, root: str, *, nested_root: bool = True) -> str:
    loc = list(error["loc"])
    kind = error["type"]
    if kind == "missing":
        return f"{_path(loc[:-1], root, value=False, nested_root=nested_root)}: missing {loc[-1]}"
    if kind in ("unexpected_keyword_argument", "extra_forbidden"):
        return f"{_path(loc[:-1], root, value=False, nested_root=nested_root)}: unexpected {loc[-1]}"
    if kind in _OBJECT_ERRORS:
        where = _path(loc, root, value=False, nested_root=nested_root)
        return f"{where}: expected an object, got {_kind(error.get('input'))}"
    while loc and isinstance(loc[-1], int):  # an item of a list of scalars: name the list
        loc.pop()
    expected = _EXPECTED.get(kind, error["msg"].lower())
    where = _path(loc, root, value=True, nested_root=nested_root)
    return f"{where}: expected {expected}, got {_kind(error.get('input'))}"
