"""Build the resolver's input: a :class:`~dlsetup.plan.model.StackRequest` from a host's facts, or offline from an
OS name, GPU names or PCI ids, and a machine model (for parts not bought yet)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import date
from typing import Any, Literal

from dlsetup.errors import UnsupportedError
from dlsetup.facts.hwparse.common import driver_major
from dlsetup.facts.model import HostFacts
from dlsetup.plan.catalogue import identify, identify_text
from dlsetup.plan.load import load_compat_data
from dlsetup.plan.model import (
    CurrentDriver,
    GpuSpec,
    MachineSpec,
    OutsideDriver,
    PlanInputError,
    Reason,
    SourceOverrides,
    StackRequest,
)
from dlsetup.plan.pins import pins_from_mapping
from dlsetup.plan.schema import CompatData, Machine

_OS = re.compile(r"^([a-z][a-z0-9]*)-(\d+(?:\.\d+)?)$")


def parse_os(text: str, data: CompatData | None = None) -> str:
    """``"Ubuntu-24.04"`` → ``"ubuntu-24.04"``; a codename (``"debian-bookworm"``) maps to its version.

    Only the shape is checked here (``bad_os``); whether dlsetup supports it is the resolver's question.
    """
    data = data or load_compat_data()
    key = text.strip().lower()
    for system in data.systems:
        if key in (f"{system.id}-{system.codename}", system.codename):
            return system.key
    if not _OS.match(key):
        raise PlanInputError(
            f"OS {text!r} is not <id>-<version>",
            kind="bad_os",
            hint="e.g. " + ", ".join(s.key for s in data.systems),
        )
    return key


def request_offline(
    os: str,
    gpus: Sequence[str],
    machine: str | None = None,
    pins: Mapping[str, Any] | None = None,
    *,
    pci_ids_text: str | None = None,
    as_of: date | None = None,
    sources: SourceOverrides | None = None,
) -> StackRequest:
    """A request with no host: ``os`` like ``"ubuntu-24.04"``, GPUs as PCI ids or model names, a machine model.

    With a machine profile that lists its GPUs and no ``gpus``, the profile's GPUs are planned for.
    ``pci_ids_text`` (a pci.ids file's text) lets uncatalogued PCI ids fall back to their chip codename.
    """
    data = load_compat_data()
    os_key = parse_os(os, data)
    specs: list[GpuSpec] = []
    warnings: list[str] = []
    reasons: list[Reason] = []
    for text in gpus:
        spec, warning = identify_text(text, pci_ids_text=pci_ids_text, data=data)
        specs.append(spec)
        if warning:
            warnings.append(warning)
    machine_spec = MachineSpec(None, machine.strip()) if machine and machine.strip() else None
    profile = match_machine(machine_spec, data)
    if not gpus and profile is not None and profile.gpus:
        for pci_id in profile.gpus:
            spec, _ = identify(pci_id, data=data)
            specs.append(spec)
        names = ", ".join(s.label() for s in specs)
        reasons.append(
            Reason("gpus", f"no --gpu given: planning for the {profile.product}'s GPU, {names}", profile.source)
        )
    return StackRequest(
        os=os_key,
        gpus=tuple(specs),
        machine=machine_spec,
        pins=pins_from_mapping(pins),
        as_of=as_of,
        reasons=tuple(reasons),
        warnings=tuple(warnings),
        sources=sources or SourceOverrides(),
    )


def request_from_facts(
    host_facts: HostFacts,
    pins: Mapping[str, Any] | None = None,
    *,
    as_of: date | None = None,
    sources: SourceOverrides | None = None,
) -> StackRequest:
    """A request from one host's facts."""
    data = load_compat_data()
    os_id = (host_facts.os.id or "").strip().lower()
    version = (host_facts.os.version or "").strip()
    if os_id == "debian":
        version = version.split(".")[0]  # VERSION_ID is "12"; a point release never changes the archive
    if not os_id or not version:
        pretty = host_facts.os.pretty_name or os_id or "unknown"
        raise UnsupportedError(
            f"cannot tell the OS version of {pretty!r}: dlsetup supports " + ", ".join(s.key for s in data.systems),
            kind="unsupported_os",
        )
    specs: list[GpuSpec] = []
    warnings: list[str] = []
    for gpu in host_facts.gpus:
        spec, warning = identify(
            gpu.pci_id,
            pci_name=gpu.pci_name,
            reported_cc=gpu.compute_capability,
            reported_name=gpu.name,
            data=data,
        )
        specs.append(spec)
        if warning:
            warnings.append(warning)
    machine_facts = host_facts.machine
    machine = (
        MachineSpec(machine_facts.vendor, machine_facts.product)
        if machine_facts.vendor or machine_facts.product
        else None
    )
    driver = host_facts.driver
    outside = outside_driver(host_facts)
    if outside is not None and outside.kind == "wsl2" and not host_facts.gpus:
        why = f" ({driver.error.kind}: {driver.error.message})" if driver.error else ""
        warnings.append(
            f"WSL2, but nvidia-smi lists no GPU{why}: WSL2 takes its GPUs from the Windows NVIDIA driver; install or "
            "update it on Windows (no Linux driver belongs in WSL2)"
        )
    current = (
        CurrentDriver(driver_major(driver.version), driver.kernel_module) if driver.loaded and outside is None else None
    )
    return StackRequest(
        os=f"{os_id}-{version}",
        gpus=tuple(specs),
        machine=machine,
        pins=pins_from_mapping(pins),
        current_driver=current,
        kernel_release=host_facts.os.kernel,
        as_of=as_of,
        warnings=tuple(warnings),
        sources=sources or SourceOverrides(),
        virtualization=host_facts.machine.virtualization,
        outside_driver=outside,
    )


def outside_driver(host_facts: HostFacts) -> OutsideDriver | None:
    """The driver that serves this host from outside, or None when dlsetup installs it: WSL2 always (the Windows
    driver), a container when it sees its GPUs only through nvidia-smi (the host's driver, through the container
    runtime). A container that sees its GPUs on PCI keeps the usual plan (the roles leave the kernel packages out)."""
    machine, driver = host_facts.machine, host_facts.driver
    if machine.virtualization == "wsl2":
        kind: Literal["wsl2", "container"] = "wsl2"
    elif machine.virtualization == "container" and host_facts.gpus and not any(g.on_pci for g in host_facts.gpus):
        kind = "container"
    else:
        return None
    return OutsideDriver(kind, driver.version, driver.cuda_version, machine.virtualization_evidence)


def match_machine(machine: MachineSpec | None, data: CompatData | None = None) -> Machine | None:
    """The machine profile whose product the DMI product (or ``--machine``) names, e.g. ``"XPS 15 9570"``."""
    if machine is None or not machine.product:
        return None
    data = data or load_compat_data()
    product = re.sub(r"\s+", " ", machine.product).strip().lower()
    for row in data.machines:
        if row.product.lower() in product and (
            machine.vendor is None or row.vendor.split()[0].lower() in machine.vendor.lower()
        ):
            return row
    return None
