"""Typed view of the Facts JSON host object (``docs/architecture.md``), validated on the way in.

The ``dlsetup_hw_facts`` module (``roles/hw_facts``) returns plain JSON; :meth:`HostFacts.from_dict` checks
its shape (every key present, the right types, ids in the documented formats) and raises
:class:`FactsFormatError` otherwise; :meth:`HostFacts.to_dict` gives the same JSON back. Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, cast

from dlsetup.errors import EXIT_INTERNAL, DlsetupError
from dlsetup.hwparse import ERROR_KINDS

Virtualization = Literal["container", "vm"]
KernelModule = Literal["open", "proprietary"]
ErrorKind = Literal[
    "nvidia_smi_missing",
    "driver_not_loaded",
    "version_mismatch",
    "no_devices",
    "gpu_lost",
    "nvml_missing",
    "query_failed",
]

# sysfs prints the domain as %04x: four digits, more only for domains above 0xffff (never zero-padded to 8).
_BUS_ID_RE = re.compile(r"^(?:[0-9a-f]{4}|[1-9a-f][0-9a-f]{4,7}):[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$")
_PCI_ID_RE = re.compile(r"^[0-9a-f]{4}:[0-9a-f]{4}$")
_PCI_CLASS_RE = re.compile(r"^0x[0-9a-f]{6}$")


class FactsFormatError(DlsetupError):
    """The facts module returned data without the Facts JSON shape (a dlsetup bug or a role/CLI mismatch)."""

    exit_code = EXIT_INTERNAL


class _Fields:
    """One JSON object being read: typed getters that name the offending path in their errors."""

    def __init__(self, data: object, path: str, keys: tuple[str, ...]) -> None:
        if not isinstance(data, Mapping):
            raise FactsFormatError(f"{path}: expected an object, got {_kind(data)}")
        missing = [key for key in keys if key not in data]
        if missing:
            raise FactsFormatError(f"{path}: missing {', '.join(missing)}")
        unknown = sorted(str(key) for key in data if key not in keys)
        if unknown:
            raise FactsFormatError(f"{path}: unexpected {', '.join(unknown)}")
        self.data = data
        self.path = path

    def _fail(self, key: str, expected: str) -> FactsFormatError:
        return FactsFormatError(f"{self.path}.{key}: expected {expected}, got {_kind(self.data[key])}")

    def opt_str(self, key: str, pattern: re.Pattern[str] | None = None) -> str | None:
        value = self.data[key]
        if value is None:
            return None
        if not isinstance(value, str) or (pattern is not None and not pattern.match(value)):
            raise self._fail(key, "a string" if pattern is None else f"a string like {pattern.pattern}")
        return value

    def req_str(self, key: str, pattern: re.Pattern[str] | None = None) -> str:
        value = self.opt_str(key, pattern)
        if value is None:
            raise self._fail(key, "a string")
        return value

    def opt_int(self, key: str) -> int | None:
        value = self.data[key]
        if value is None:
            return None
        if type(value) is not int or value < 0:  # bool is an int subclass: reject it explicitly
            raise self._fail(key, "a non-negative integer or null")
        return value

    def opt_bool(self, key: str) -> bool | None:
        value = self.data[key]
        if value is None:
            return None
        if not isinstance(value, bool):
            raise self._fail(key, "true, false or null")
        return value

    def req_bool(self, key: str) -> bool:
        value = self.opt_bool(key)
        if value is None:
            raise self._fail(key, "true or false")
        return value

    def choice(self, key: str, choices: tuple[str, ...]) -> str | None:
        value = self.data[key]
        if value is None:
            return None
        if value not in choices:
            raise self._fail(key, "one of " + ", ".join(choices) + " or null")
        return cast(str, value)

    def str_list(self, key: str) -> tuple[str, ...]:
        value = self.data[key]
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise self._fail(key, "a list of strings")
        return tuple(value)

    def obj_list(self, key: str) -> list[object]:
        value = self.data[key]
        if not isinstance(value, list):
            raise self._fail(key, "a list")
        return list(value)


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {value}"
    if isinstance(value, str):
        return f"string {value!r}"
    if isinstance(value, (int, float)):
        return f"number {value}"
    return type(value).__name__


@dataclass(frozen=True)
class OsFacts:
    id: str | None
    version: str | None
    codename: str | None
    kernel: str | None
    pretty_name: str | None

    @classmethod
    def from_dict(cls, data: object, path: str = "os") -> OsFacts:
        f = _Fields(data, path, ("id", "version", "codename", "kernel", "pretty_name"))
        return cls(
            f.opt_str("id"), f.opt_str("version"), f.opt_str("codename"), f.opt_str("kernel"), f.opt_str("pretty_name")
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "version": self.version,
            "codename": self.codename,
            "kernel": self.kernel,
            "pretty_name": self.pretty_name,
        }


@dataclass(frozen=True)
class MachineFacts:
    vendor: str | None
    product: str | None
    virtualization: Virtualization | None

    @classmethod
    def from_dict(cls, data: object, path: str = "machine") -> MachineFacts:
        f = _Fields(data, path, ("vendor", "product", "virtualization"))
        virt = cast("Virtualization | None", f.choice("virtualization", ("container", "vm")))
        return cls(f.opt_str("vendor"), f.opt_str("product"), virt)

    def to_dict(self) -> dict[str, Any]:
        return {"vendor": self.vendor, "product": self.product, "virtualization": self.virtualization}


@dataclass(frozen=True)
class CpuFacts:
    model: str | None
    cores: int | None
    threads: int | None

    @classmethod
    def from_dict(cls, data: object, path: str = "cpu") -> CpuFacts:
        f = _Fields(data, path, ("model", "cores", "threads"))
        return cls(f.opt_str("model"), f.opt_int("cores"), f.opt_int("threads"))

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "cores": self.cores, "threads": self.threads}


@dataclass(frozen=True)
class Disk:
    name: str
    model: str | None
    size_gib: int | None
    rotational: bool | None
    transport: str | None
    ssd: bool | None
    holds: tuple[str, ...]

    @classmethod
    def from_dict(cls, data: object, path: str = "disk") -> Disk:
        f = _Fields(data, path, ("name", "model", "size_gib", "rotational", "transport", "ssd", "holds"))
        return cls(
            f.req_str("name"),
            f.opt_str("model"),
            f.opt_int("size_gib"),
            f.opt_bool("rotational"),
            f.opt_str("transport"),
            f.opt_bool("ssd"),
            f.str_list("holds"),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "model": self.model,
            "size_gib": self.size_gib,
            "rotational": self.rotational,
            "transport": self.transport,
            "ssd": self.ssd,
            "holds": list(self.holds),
        }


@dataclass(frozen=True)
class PcieLink:
    gen_current: int | None
    gen_max: int | None
    width_current: int | None
    width_max: int | None
    slot_gen_max: int | None
    slot_width_max: int | None

    _KEYS = ("gen_current", "gen_max", "width_current", "width_max", "slot_gen_max", "slot_width_max")

    @classmethod
    def from_dict(cls, data: object, path: str = "pcie") -> PcieLink:
        f = _Fields(data, path, cls._KEYS)
        return cls(*(f.opt_int(key) for key in cls._KEYS))

    def to_dict(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in self._KEYS}


@dataclass(frozen=True)
class GpuFacts:
    index: int | None
    pci_bus_id: str
    pci_id: str | None
    subsystem_id: str | None
    pci_class: str | None
    name: str | None
    pci_name: str | None
    memory_mib: int | None
    compute_capability: str | None
    persistence_mode: bool | None
    kernel_driver: str | None
    visible_to_driver: bool
    pcie: PcieLink

    @classmethod
    def from_dict(cls, data: object, path: str = "gpu") -> GpuFacts:
        f = _Fields(
            data,
            path,
            (
                "index",
                "pci_bus_id",
                "pci_id",
                "subsystem_id",
                "pci_class",
                "name",
                "pci_name",
                "memory_mib",
                "compute_capability",
                "persistence_mode",
                "kernel_driver",
                "visible_to_driver",
                "pcie",
            ),
        )
        return cls(
            index=f.opt_int("index"),
            pci_bus_id=f.req_str("pci_bus_id", _BUS_ID_RE),
            pci_id=f.opt_str("pci_id", _PCI_ID_RE),
            subsystem_id=f.opt_str("subsystem_id", _PCI_ID_RE),
            pci_class=f.opt_str("pci_class", _PCI_CLASS_RE),
            name=f.opt_str("name"),
            pci_name=f.opt_str("pci_name"),
            memory_mib=f.opt_int("memory_mib"),
            compute_capability=f.opt_str("compute_capability", re.compile(r"^\d+\.\d+$")),
            persistence_mode=f.opt_bool("persistence_mode"),
            kernel_driver=f.opt_str("kernel_driver"),
            visible_to_driver=f.req_bool("visible_to_driver"),
            pcie=PcieLink.from_dict(f.data["pcie"], f"{path}.pcie"),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "pci_bus_id": self.pci_bus_id,
            "pci_id": self.pci_id,
            "subsystem_id": self.subsystem_id,
            "pci_class": self.pci_class,
            "name": self.name,
            "pci_name": self.pci_name,
            "memory_mib": self.memory_mib,
            "compute_capability": self.compute_capability,
            "persistence_mode": self.persistence_mode,
            "kernel_driver": self.kernel_driver,
            "visible_to_driver": self.visible_to_driver,
            "pcie": self.pcie.to_dict(),
        }


@dataclass(frozen=True)
class DriverError:
    kind: ErrorKind
    message: str
    hint: str

    @classmethod
    def from_dict(cls, data: object, path: str = "driver.error") -> DriverError:
        f = _Fields(data, path, ("kind", "message", "hint"))
        kind = f.choice("kind", ERROR_KINDS)
        if kind is None:
            raise f._fail("kind", "an error kind")
        return cls(cast(ErrorKind, kind), f.req_str("message"), f.req_str("hint"))

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "message": self.message, "hint": self.hint}


@dataclass(frozen=True)
class DriverState:
    loaded: bool
    version: str | None
    cuda_version: str | None
    kernel_module: KernelModule | None
    error: DriverError | None

    @classmethod
    def from_dict(cls, data: object, path: str = "driver") -> DriverState:
        f = _Fields(data, path, ("loaded", "version", "cuda_version", "kernel_module", "error"))
        error = f.data["error"]
        return cls(
            loaded=f.req_bool("loaded"),
            version=f.opt_str("version"),
            cuda_version=f.opt_str("cuda_version", re.compile(r"^\d+\.\d+$")),
            kernel_module=cast("KernelModule | None", f.choice("kernel_module", ("open", "proprietary"))),
            error=None if error is None else DriverError.from_dict(error, f"{path}.error"),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "loaded": self.loaded,
            "version": self.version,
            "cuda_version": self.cuda_version,
            "kernel_module": self.kernel_module,
            "error": None if self.error is None else self.error.to_dict(),
        }


@dataclass(frozen=True)
class HostFacts:
    """What one host is: the ``hosts.NAME`` object of ``dlsetup facts --format json``."""

    os: OsFacts
    machine: MachineFacts
    cpu: CpuFacts
    memory_mib: int | None
    disks: tuple[Disk, ...]
    gpus: tuple[GpuFacts, ...]
    driver: DriverState
    warnings: tuple[str, ...]

    @classmethod
    def from_dict(cls, data: object) -> HostFacts:
        """Validate the facts module's ``dlsetup_hw`` object; raise :class:`FactsFormatError` if malformed."""
        f = _Fields(data, "facts", ("os", "machine", "cpu", "memory_mib", "disks", "gpus", "driver", "warnings"))
        return cls(
            os=OsFacts.from_dict(f.data["os"]),
            machine=MachineFacts.from_dict(f.data["machine"]),
            cpu=CpuFacts.from_dict(f.data["cpu"]),
            memory_mib=f.opt_int("memory_mib"),
            disks=tuple(Disk.from_dict(d, f"disks[{i}]") for i, d in enumerate(f.obj_list("disks"))),
            gpus=tuple(GpuFacts.from_dict(g, f"gpus[{i}]") for i, g in enumerate(f.obj_list("gpus"))),
            driver=DriverState.from_dict(f.data["driver"]),
            warnings=f.str_list("warnings"),
        )

    def to_dict(self) -> dict[str, Any]:
        """The stable Facts JSON host object (key order as documented)."""
        return {
            "os": self.os.to_dict(),
            "machine": self.machine.to_dict(),
            "cpu": self.cpu.to_dict(),
            "memory_mib": self.memory_mib,
            "disks": [disk.to_dict() for disk in self.disks],
            "gpus": [gpu.to_dict() for gpu in self.gpus],
            "driver": self.driver.to_dict(),
            "warnings": list(self.warnings),
        }

    @property
    def visible_gpus(self) -> tuple[GpuFacts, ...]:
        """GPUs the NVIDIA driver lists (``visible_to_driver``)."""
        return tuple(gpu for gpu in self.gpus if gpu.visible_to_driver)


def hosts_from_dict(data: object) -> dict[str, HostFacts]:
    """Parse a whole ``{"hosts": {NAME: host object}}`` document."""
    f = _Fields(data, "document", ("hosts",))
    hosts = f.data["hosts"]
    if not isinstance(hosts, Mapping):
        raise f._fail("hosts", "an object")
    return {str(name): HostFacts.from_dict(host) for name, host in hosts.items()}


def hosts_to_dict(hosts: Mapping[str, HostFacts]) -> dict[str, Any]:
    """The ``{"hosts": {...}}`` document of ``dlsetup facts --format json``."""
    return {"hosts": {name: host.to_dict() for name, host in hosts.items()}}
