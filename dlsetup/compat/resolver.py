"""The resolver: OS + GPUs (+ machine, + pins) → :class:`Plan`. Pure: data in, dataclasses out, no I/O.

The rules, in order (docs/plan.md has them with their sources):

1. Every GPU must be identified (``unknown_gpu``) and have a supported deep-learning stack (``no_supported_stack``:
   Kepler and older).
2. Kernel-module flavour: the intersection of what every architecture supports; open when all prefer it
   (Turing and newer), proprietary when any GPU predates Turing; Blackwell with a pre-Turing GPU has none
   (``incompatible_gpus``).
3. Driver archive and branch: the OS's archives in order (distribution first), the first branch on the preferred
   list (580, 595, 620) that drives every GPU, is offered there and is an LTSB/PB branch not past end of life.
   An archive whose branches fail is skipped with the reason (Debian 12: 535 past end of life; Debian 13: 550
   unlisted; Blackwell on Debian: needs ≥570).
4. CUDA toolkit: the newest that compiles for every GPU and whose driver requirement the branch meets.
5. cuDNN/NCCL for that CUDA major; PyTorch: the newest build whose architectures cover every GPU, preferring the
   toolkit's CUDA major and full driver support; JAX: the extra whose SM and driver floor fit.
6. Laptop profile, Secure Boot (signed modules vs MOK), reboot.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from dlsetup.compat.catalogue import identify, identify_text
from dlsetup.compat.models import (
    Architecture,
    Branch,
    CompatData,
    Flavor,
    Library,
    Machine,
    OperatingSystem,
    Origin,
    Toolkit,
    TorchBuild,
    cc_tuple,
    load_compat_data,
    sm_to_cc,
    version_tuple,
)
from dlsetup.compat.pins import pins_from_mapping
from dlsetup.compat.plan import (
    CudaPlan,
    CurrentDriver,
    DriverPlan,
    GpuSpec,
    JaxPlan,
    LaptopPlan,
    LibraryPlan,
    MachinePlan,
    MachineSpec,
    NvidiaRepositoryPlan,
    Pins,
    Plan,
    PlanInputError,
    PlannedGpu,
    PytorchPlan,
    Reason,
    SecureBootPlan,
    StackRequest,
)
from dlsetup.errors import UnsupportedError

__all__ = [
    "Plan",
    "StackRequest",
    "match_machine",
    "parse_os",
    "request_from_facts",
    "request_offline",
    "resolve_stack",
]

_OS = re.compile(r"^([a-z][a-z0-9]*)-(\d+(?:\.\d+)?)$")
_KERNEL = re.compile(r"^(\d+)\.(\d+)\.\d+-\d+-([a-z0-9][a-z0-9-]*)$")
_DRIVER_VERSION = re.compile(r"^(\d{3})\.")
ORIGIN_NAMES = {"distribution": "the distribution's archive", "nvidia": "NVIDIA's CUDA repository"}
DEFAULT_KINDS = ("LTSB", "PB")


# --- building requests --------------------------------------------------------------------------------------


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
    )


def _text(value: object) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


def request_from_facts(
    host_facts: Mapping[str, Any], pins: Mapping[str, Any] | None = None, *, as_of: date | None = None
) -> StackRequest:
    """A request from one host object of the Facts JSON (docs/architecture.md)."""
    data = load_compat_data()
    os_facts = host_facts.get("os")
    if not isinstance(os_facts, Mapping):
        raise PlanInputError("facts have no os object", kind="bad_facts")
    os_id = (_text(os_facts.get("id")) or "").lower()
    version = _text(os_facts.get("version")) or ""
    if os_id == "debian":
        version = version.split(".")[0]  # VERSION_ID is "12"; a point release never changes the archive
    if not os_id or not version:
        pretty = _text(os_facts.get("pretty_name")) or os_id or "unknown"
        raise UnsupportedError(
            f"cannot tell the OS version of {pretty!r}: dlsetup supports " + ", ".join(s.key for s in data.systems),
            kind="unsupported_os",
        )
    specs: list[GpuSpec] = []
    warnings: list[str] = []
    for gpu in host_facts.get("gpus") or []:
        if not isinstance(gpu, Mapping):
            raise PlanInputError("facts: a gpus entry is not an object", kind="bad_facts")
        spec, warning = identify(
            _text(gpu.get("pci_id")),
            pci_name=_text(gpu.get("pci_name")),
            reported_cc=_text(gpu.get("compute_capability")),
            reported_name=_text(gpu.get("name")),
            data=data,
        )
        specs.append(spec)
        if warning:
            warnings.append(warning)
    machine_facts = host_facts.get("machine")
    machine = None
    if isinstance(machine_facts, Mapping) and (machine_facts.get("vendor") or machine_facts.get("product")):
        machine = MachineSpec(_text(machine_facts.get("vendor")), _text(machine_facts.get("product")))
    current = None
    driver = host_facts.get("driver")
    if isinstance(driver, Mapping) and driver.get("loaded"):
        match = _DRIVER_VERSION.match(_text(driver.get("version")) or "")
        current = CurrentDriver(int(match.group(1)) if match else None, _text(driver.get("kernel_module")))
    return StackRequest(
        os=f"{os_id}-{version}",
        gpus=tuple(specs),
        machine=machine,
        pins=pins_from_mapping(pins),
        current_driver=current,
        kernel_release=_text(os_facts.get("kernel")),
        as_of=as_of,
        warnings=tuple(warnings),
    )


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


# --- resolving ----------------------------------------------------------------------------------------------


@dataclass
class _Work:
    """Reasons and warnings gathered while resolving one request."""

    data: CompatData
    system: OperatingSystem
    request: StackRequest
    today: date
    reasons: list[Reason] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def why(self, topic: str, text: str, source: str = "") -> None:
        self.reasons.append(Reason(topic, text, source))

    def warn(self, text: str) -> None:
        if text not in self.warnings:
            self.warnings.append(text)


@dataclass(frozen=True)
class _Gpu:
    spec: GpuSpec
    arch: Architecture

    @property
    def ccs(self) -> tuple[str, ...]:
        """The compute capabilities the stack must serve: the GPU's, or every one of its architecture's."""
        return (self.spec.compute_capability,) if self.spec.compute_capability else self.arch.compute_capabilities


def _names(gpus: Iterable[_Gpu]) -> str:
    labels: list[str] = []
    for gpu in gpus:
        if gpu.spec.name not in labels:
            labels.append(gpu.spec.name)
    return ", ".join(labels)


def _by_arch(gpus: Iterable[_Gpu]) -> str:
    groups: dict[str, list[_Gpu]] = {}
    for gpu in gpus:
        groups.setdefault(gpu.arch.name, []).append(gpu)
    return "; ".join(f"{arch} ({_names(members)})" for arch, members in groups.items())


def _ccs(gpus: Sequence[_Gpu]) -> list[str]:
    return sorted({cc for g in gpus for cc in g.ccs}, key=cc_tuple)


def resolve_stack(request: StackRequest, *, data: CompatData | None = None) -> Plan:
    """Resolve the stack for ``request``.

    Raises :class:`~dlsetup.errors.UnsupportedError` (exit 4; kinds ``unsupported_os``, ``unknown_gpu``,
    ``no_supported_stack``, ``incompatible_gpus``) when no stack serves the set, and
    :class:`~dlsetup.compat.plan.PlanInputError` (a ConfigError, exit 2; kind ``pin_conflict``) when a pin
    cannot be honoured.
    """
    data = data or load_compat_data()
    system = data.system(request.os)
    if system is None:
        raise UnsupportedError(
            f"unsupported OS {request.os}: dlsetup plans for " + ", ".join(s.key for s in data.systems),
            kind="unsupported_os",
        )
    work = _Work(data, system, request, request.as_of or date.today())
    work.reasons.extend(request.reasons)
    for line in request.warnings:
        work.warn(line)

    unknown = [g for g in request.gpus if g.architecture is None]
    if unknown:
        ids = ", ".join(g.label() for g in unknown)
        raise UnsupportedError(
            f"unknown GPU {ids}: not in dlsetup's catalogue and no pci.ids chip codename or driver-reported compute "
            "capability places it; dlsetup does not guess",
            kind="unknown_gpu",
            hint="add the GPU to dlsetup/compat/data/gpus.yaml with a source, or update the host's pci.ids",
        )
    gpus = [_Gpu(g, data.architecture(g.architecture)) for g in request.gpus if g.architecture]
    _refuse_unsupported(gpus)

    profile = match_machine(request.machine, data)
    machine_plan = (
        MachinePlan(request.machine.vendor, request.machine.product, profile.profile if profile else None)
        if request.machine
        else None
    )
    if not gpus:
        return _cpu_plan(work, machine_plan, profile)

    pins = request.pins
    flavor = _choose_flavor(work, gpus, pins)
    origin, branch = _choose_driver(work, gpus, flavor, pins)
    driver, secure_boot = _driver_plan(work, gpus, origin, branch, flavor)
    if pins.pytorch_variant not in (None, "cpu") or (pins.pytorch_version and pins.pytorch_variant is None):
        _check_torch_pins(work, gpus, branch, pins)  # before CUDA: a framework pin steers the toolkit's major
    toolkit, cuda_plan = _choose_cuda(work, gpus, origin, branch, pins)
    cudnn, nccl = _libraries(work, gpus, toolkit, cuda_plan)
    build = _choose_torch(work, gpus, branch, toolkit, pins)
    jax = _choose_jax(work, gpus, branch, build)
    laptop = _laptop(work, gpus, profile)
    reboot = _reboot(work, branch, flavor, laptop)
    repository = _repository(work, driver, cuda_plan)

    return Plan(
        os=system.key,
        gpus=tuple(
            PlannedGpu(g.spec.pci_id, g.spec.name, g.arch.name, g.spec.compute_capability, g.spec.identified_by)
            for g in gpus
        ),
        machine=machine_plan,
        driver=driver,
        cuda=cuda_plan,
        cudnn=cudnn,
        nccl=nccl,
        pytorch=PytorchPlan(build.version, build.variant, build.index_url, build.cuda),
        jax=jax,
        laptop=laptop,
        reboot_required=reboot,
        secure_boot=secure_boot,
        nvidia_repository=repository,
        reasons=tuple(work.reasons),
        warnings=tuple(work.warnings),
    )


def _refuse_unsupported(gpus: Sequence[_Gpu]) -> None:
    unsupported = [g for g in gpus if not g.arch.dl_supported]
    if not unsupported:
        return
    lines = []
    for arch_name in dict.fromkeys(g.arch.name for g in unsupported):
        members = [g for g in unsupported if g.arch.name == arch_name]
        arch = members[0].arch
        ceiling = f", R{arch.max_branch} at most" if arch.max_branch else ""
        lines.append(f"{_names(members)} ({arch.name}{ceiling}): {arch.unsupported_reason}")
    others = [g for g in gpus if g.arch.dl_supported]
    tail = f"; a driver for the other GPUs ({_names(others)}) would not drive it" if others else ""
    raise UnsupportedError(
        "no supported deep-learning stack exists for " + "; ".join(lines) + tail + ". dlsetup will not install a "
        "driver for it",
        kind="no_supported_stack",
        hint="remove the GPU, or provision it by hand with its legacy driver (no current framework build)",
    )


def _cpu_plan(work: _Work, machine_plan: MachinePlan | None, profile: Machine | None) -> Plan:
    pins = work.request.pins
    gpu_pins = pins.driver_pins()
    if gpu_pins:
        raise PlanInputError(
            f"pin {next(iter(gpu_pins))}: no NVIDIA GPU on this machine, so there is no driver or CUDA to pin",
            kind="pin_conflict",
        )
    if pins.pytorch_variant not in (None, "cpu"):
        raise PlanInputError(
            f"pin pytorch_variant: {pins.pytorch_variant} needs an NVIDIA GPU; this machine has none (use cpu)",
            kind="pin_conflict",
        )
    builds = [b for b in work.data.pytorch if b.variant == "cpu"]
    if pins.pytorch_version:
        builds = [b for b in builds if b.version == pins.pytorch_version]
        if not builds:
            raise PlanInputError(
                f"pin pytorch_version: dlsetup has no CPU build of torch {pins.pytorch_version}", kind="pin_conflict"
            )
    build = max(builds, key=lambda b: version_tuple(b.version))
    product = machine_plan.product if machine_plan and machine_plan.product else "this machine"
    work.why(
        "gpus",
        f"no NVIDIA GPU on {product}: no driver, CUDA, cuDNN or NCCL; CPU-only frameworks",
        'compat.md §8.1 (nvidia-detect: "No NVIDIA GPU detected.")',
    )
    work.why("pytorch", f"torch {build.version} from the CPU-only index ({build.index_url})", build.source)
    work.why("jax", "plain jax (CPU): no CUDA extra without an NVIDIA GPU", work.data.jax[0].source)
    if profile is not None and profile.gpus:
        work.warn(
            f"the {profile.product} ships with an NVIDIA GPU ({', '.join(profile.gpus)}) but none is on PCI: "
            "is it disabled in the firmware setup?"
        )
    laptop = LaptopPlan(None, profile.mem_sleep_default if profile else None)
    if laptop.mem_sleep_default:
        work.why(
            "laptop",
            f"{profile.product if profile else product}: kernel parameter mem_sleep_default={laptop.mem_sleep_default} "
            "(S3 instead of the battery-draining s2idle default)",
            profile.source if profile else "",
        )
    reboot = laptop.mem_sleep_default is not None
    if reboot:
        work.why("reboot", "a kernel command-line change (mem_sleep_default) takes effect at the next boot")
    return Plan(
        os=work.system.key,
        gpus=(),
        machine=machine_plan,
        driver=DriverPlan(),
        cuda=CudaPlan(),
        cudnn=LibraryPlan(),
        nccl=LibraryPlan(),
        pytorch=PytorchPlan(build.version, build.variant, build.index_url, None),
        jax=JaxPlan(None),
        laptop=laptop,
        reboot_required=reboot,
        secure_boot=SecureBootPlan(False, "no", "no NVIDIA kernel modules are installed"),
        nvidia_repository=None,
        reasons=tuple(work.reasons),
        warnings=tuple(work.warnings),
    )


# --- driver -------------------------------------------------------------------------------------------------


def _choose_flavor(work: _Work, gpus: Sequence[_Gpu], pins: Pins) -> Flavor:
    allowed: set[Flavor] = {"open", "proprietary"}
    for gpu in gpus:
        allowed &= set(gpu.arch.flavors)
    open_only = [g for g in gpus if g.arch.flavors == ("open",)]
    proprietary_only = [g for g in gpus if "open" not in g.arch.flavors]
    if not allowed:
        raise UnsupportedError(
            f"no single NVIDIA driver serves this set: {_by_arch(open_only)} need the open kernel modules (the "
            f"proprietary ones do not support them), while {_by_arch(proprietary_only)} cannot use the open modules "
            "(they need the GSP of Turing or newer) and stop at R580",
            kind="incompatible_gpus",
            hint="plan the GPUs in separate machines",
        )
    arch_source = "; ".join(dict.fromkeys(g.arch.source for g in gpus))
    if pins.driver_flavor is not None:
        if pins.driver_flavor not in allowed:
            blockers = open_only if pins.driver_flavor == "proprietary" else proprietary_only
            why = (
                "need the open kernel modules (proprietary is unsupported on them)"
                if pins.driver_flavor == "proprietary"
                else "cannot use the open kernel modules (they need the GSP of Turing or newer)"
            )
            raise PlanInputError(
                f"pin driver_flavor: {pins.driver_flavor} cannot drive {_by_arch(blockers)}: they {why}",
                kind="pin_conflict",
            )
        work.why("driver.flavor", f"{pins.driver_flavor}: pinned", arch_source)
        if pins.driver_flavor == "proprietary" and "open" in allowed:
            work.warn(
                "driver_flavor is pinned to proprietary although every GPU here supports the open modules, which "
                "NVIDIA recommends since 560 (GPUDirect Storage, HMM and Confidential Computing need them)"
            )
        return pins.driver_flavor
    if "open" in allowed and all(g.arch.preferred_flavor == "open" for g in gpus):
        if open_only:
            text = f"open: required by {_by_arch(open_only)} (NVIDIA supports only the open modules there)"
        else:
            text = (
                f"open: NVIDIA's default and recommended flavour since the 560 series for Turing and newer "
                f"({_by_arch(gpus)})"
            )
        work.why("driver.flavor", text, arch_source)
        return "open"
    text = f"proprietary: {_by_arch(proprietary_only)} cannot use the open modules (they need the GSP, Turing or newer)"
    if len(proprietary_only) < len(gpus):
        text += f"; the whole set, {_by_arch(gpus)}, shares one driver and so stays on proprietary"
    work.why("driver.flavor", text, arch_source)
    return "proprietary"


def _branch_problem(work: _Work, gpus: Sequence[_Gpu], branch: int, flavor: Flavor) -> str | None:
    """Why ``branch`` cannot serve the set with ``flavor`` (None when it can)."""
    row = work.data.branch(branch)
    if flavor not in row.flavors:
        return f"R{branch} ships {' and '.join(row.flavors)} modules only"
    too_new = [g for g in gpus if g.arch.max_branch is not None and branch > g.arch.max_branch]
    if too_new:
        ceiling = min(g.arch.max_branch or 0 for g in too_new)
        return f"R{branch} does not drive {_by_arch(too_new)}: their last branch is R{ceiling}"
    too_old = [g for g in gpus if g.arch.min_branch is not None and branch < g.arch.min_branch]
    if too_old:
        floor = max(g.arch.min_branch or 0 for g in too_old)
        return f"R{branch} does not drive {_by_arch(too_old)}: they need R{floor} or newer"
    if not _torch_candidates(work, gpus, branch):
        return f"R{branch} is too old for every PyTorch build that runs on these GPUs"
    return None


def _lifecycle_problem(row: Branch, today: date) -> str | None:
    if row.past_end_of_life(today):
        return f"R{row.branch} is past its {row.eol_text()}"
    if row.kind not in DEFAULT_KINDS:
        kinds = {
            "NFB": "a short-lived New Feature Branch",
            "legacy": "a legacy branch",
            "unlisted": "not a supported branch",
        }
        return f"R{row.branch} is {kinds[row.kind]}: {row.note}"
    return None


def _choose_driver(work: _Work, gpus: Sequence[_Gpu], flavor: Flavor, pins: Pins) -> tuple[Origin, int]:
    system = work.system
    origins: tuple[Origin, ...] = (pins.driver_source,) if pins.driver_source else system.source_order
    if pins.driver_branch is not None:
        return _pinned_branch(work, gpus, flavor, pins.driver_branch, origins, pinned_source=bool(pins.driver_source))

    preferred = work.data.preferred_branches
    skipped: list[str] = []
    for origin in origins:
        offered = system.branches_from(origin)
        good: list[int] = []
        notes: list[str] = []
        for number in offered:
            problem = _branch_problem(work, gpus, number, flavor) or _lifecycle_problem(
                work.data.branch(number), work.today
            )
            if problem is None:
                good.append(number)
            else:
                notes.append(problem)
        if good:
            rank = {b: i for i, b in enumerate(preferred.branches)}
            chosen = min(good, key=lambda b: (rank.get(b, len(rank)), -b))
            _explain_driver(work, gpus, flavor, origin, chosen, skipped, pinned_source=pins.driver_source is not None)
            return origin, chosen
        skipped.append(f"{system.pretty_name}'s {_archive(origin)} offers {_branch_list(offered)}: " + "; ".join(notes))

    # Nothing current fits: take a branch that at least drives every GPU, and say what is wrong with it.
    for origin in origins:
        usable = [b for b in system.branches_from(origin) if _branch_problem(work, gpus, b, flavor) is None]
        if usable:
            chosen = max(usable)
            _explain_driver(work, gpus, flavor, origin, chosen, skipped, pinned_source=pins.driver_source is not None)
            return origin, chosen
    if pins.driver_source is not None:
        raise PlanInputError(
            f"pin driver_source: {skipped[0] if skipped else 'nothing offered'}",
            kind="pin_conflict",
            hint="remove the driver_source pin to let dlsetup take the driver from NVIDIA's repository",
        )
    raise UnsupportedError(
        f"no driver branch offered on {system.pretty_name} serves {_by_arch(gpus)}: " + "; ".join(skipped),
        kind="no_supported_stack",
    )


def _pinned_branch(
    work: _Work,
    gpus: Sequence[_Gpu],
    flavor: Flavor,
    number: int,
    origins: tuple[Origin, ...],
    *,
    pinned_source: bool,
) -> tuple[Origin, int]:
    problem = _branch_problem(work, gpus, number, flavor)
    if problem is not None:
        raise PlanInputError(f"pin driver_branch: {problem}", kind="pin_conflict")
    for origin in origins:
        if number in work.system.branches_from(origin):
            _explain_driver(work, gpus, flavor, origin, number, [], pinned_source=pinned_source, pinned_branch=True)
            return origin, number
    offered = "; ".join(f"{_archive(o)}: {_branch_list(work.system.branches_from(o))}" for o in origins)
    raise PlanInputError(
        f"pin driver_branch: R{number} is not offered on {work.system.pretty_name} ({offered})", kind="pin_conflict"
    )


def _archive(origin: Origin) -> str:
    return "archive" if origin == "distribution" else "NVIDIA repository"


def _branch_list(branches: Iterable[int]) -> str:
    listed = [f"R{b}" for b in branches]
    return ", ".join(listed) if listed else "no driver"


def _explain_driver(
    work: _Work,
    gpus: Sequence[_Gpu],
    flavor: Flavor,
    origin: Origin,
    number: int,
    skipped: list[str],
    *,
    pinned_source: bool,
    pinned_branch: bool = False,
) -> None:
    system = work.system
    row = work.data.branch(number)
    archive_row = system.distribution if origin == "distribution" else system.nvidia_repository
    if pinned_source:
        text = f"{ORIGIN_NAMES[origin]}: pinned"
    elif origin == "distribution" and system.family == "ubuntu":
        text = (
            "Ubuntu's archive: Canonical builds and signs precompiled modules (linux-modules-nvidia-*) for its own "
            "kernels, so they load under Secure Boot with no key enrollment"
        )
    elif origin == "distribution":
        text = f"{system.pretty_name}'s archive offers R{number}, which drives every GPU here"
    else:
        text = f"NVIDIA's CUDA repository ({_repo_path(work)})"
    if skipped:
        text += " — " + "; ".join(skipped)
        usable_at_home = [
            b for b in system.distribution.driver_branches if _branch_problem(work, gpus, b, flavor) is None
        ]
        if origin == "nvidia" and usable_at_home:
            text += f" (pin driver_source: distribution to keep R{max(usable_at_home)} from the archive anyway)"
    work.why("driver.source", text, archive_row.source)

    if pinned_branch:
        work.why("driver.branch", f"R{number} ({row.kind}, {row.eol_text()}): pinned", row.source)
    else:
        preferred = work.data.preferred_branches
        if number == preferred.branches[0]:
            text = f"R{number} ({row.kind}): {preferred.reason}"
        else:
            text = f"R{number} ({row.kind}, {row.eol_text()}): {row.note}"
        work.why("driver.branch", text, f"{row.source}; {preferred.source}")

    last_for = [g for g in gpus if g.arch.max_branch == number]
    if last_for:
        archs = ", ".join(dict.fromkeys(g.arch.name for g in last_for))
        work.warn(
            f"R{number} is the last driver branch for {archs} ({_names(last_for)}): {row.eol_text()}; {row.note}. "
            f"No newer driver branch, CUDA 13 or default-PyPI PyTorch supports {archs}"
        )
    problem = _lifecycle_problem(row, work.today)
    if problem is not None:
        work.warn(problem)
    if not system.verified(origin):
        work.warn(
            f"UNVERIFIED: dlsetup's sources do not confirm that {ORIGIN_NAMES[origin]} for {system.pretty_name} "
            f"offers R{number} (compat.md §5)"
        )


def _repo_path(work: _Work) -> str:
    return work.data.nvidia_repository.path_template.format(
        directory=work.system.nvidia_repository.directory, arch="x86_64"
    )


def _kernel_flavor(work: _Work) -> tuple[str, str | None]:
    """Ubuntu kernel flavour for linux-modules-nvidia-*/linux-headers-*, and a note when assumed."""
    system = work.system
    release = work.request.kernel_release
    match = _KERNEL.match(release) if release else None
    if match is None:
        return "generic", "kernel flavour assumed generic (no running kernel known)"
    flavor = match.group(3)
    if flavor == "generic" and system.ga_kernel and f"{match.group(1)}.{match.group(2)}" != system.ga_kernel:
        return f"generic-hwe-{system.version}", (
            f"running kernel {release} is a hardware-enablement kernel (the GA kernel of {system.pretty_name} is "
            f"{system.ga_kernel}), so the -generic-hwe-{system.version} metapackages track it"
        )
    return flavor, None


def _driver_plan(
    work: _Work, gpus: Sequence[_Gpu], origin: Origin, number: int, flavor: Flavor
) -> tuple[DriverPlan, SecureBootPlan]:
    system = work.system
    row = work.data.driver_packages_for(system.family, origin, flavor, number)
    if row is None:  # the data check guarantees a row for every offered branch and flavour
        raise UnsupportedError(f"no {flavor} R{number} packages known for {system.key}", kind="no_supported_stack")
    server = (
        system.family == "ubuntu" and origin == "distribution" and all(g.spec.segment == "datacenter" for g in gpus)
    )
    kernel_flavor, kernel_note = _kernel_flavor(work) if system.family == "ubuntu" else ("amd64", None)
    packages = row.expand(branch=number, server=server, kernel_flavor=kernel_flavor)
    text = ", ".join(packages)
    if server:
        text += " (every GPU is a datacenter part: Ubuntu's -server (ERD) packages, the only ones with Fabric Manager)"
    if kernel_note and any("{kernel_flavor}" in p for p in row.packages):
        text += f"; {kernel_note}"
    if system.family == "debian" and origin == "distribution":
        text += f"; needs the {', '.join(system.distribution.components)} components enabled"
    if system.family == "debian" and origin == "nvidia":
        text += "; Debian needs contrib enabled for NVIDIA's repository"
    work.why("driver.packages", text, row.source)
    if not row.verified:
        work.warn(f"the {system.family} package names in {ORIGIN_NAMES[origin]} are UNVERIFIED (compat.md §5.3)")
    if any(g.spec.segment == "datacenter" and "SXM" in g.spec.name for g in gpus):
        work.warn(
            f"SXM boards with NVSwitch also need nvidia-fabricmanager-{number} and libnvidia-nscq-{number} "
            "(NVSwitch is not a display device, so facts cannot see it)"
        )

    if row.signed_modules:
        secure_boot = SecureBootPlan(
            True,
            "no",
            f"Canonical-signed precompiled modules ({packages[0]}) load with Secure Boot on; only a kernel with no "
            "signed package would fall back to DKMS and need a Machine Owner Key",
        )
    else:
        secure_boot = SecureBootPlan(
            False,
            "if_secure_boot",
            "DKMS builds the modules on the host and signs them with a local Machine Owner Key: with Secure Boot on, "
            "the key must be enrolled at the next boot (MokManager prompt, console access needed)",
        )
    work.why("secure_boot", secure_boot.note, "compat.md §5.1 (install-nvidia-drivers.md); anchors.md §0.4")
    row_branch = work.data.branch(number)
    return (
        DriverPlan(origin, str(number), flavor, packages, row_branch.kind, row_branch.end_of_life),
        secure_boot,
    )


# --- CUDA, cuDNN, NCCL --------------------------------------------------------------------------------------


def _toolkit_ok(toolkit: Toolkit, ccs: Sequence[str], branch: Branch) -> bool:
    return all(toolkit.covers(cc) for cc in ccs) and toolkit.major <= branch.max_cuda_major


def _choose_cuda(
    work: _Work, gpus: Sequence[_Gpu], origin: Origin, number: int, pins: Pins
) -> tuple[Toolkit, CudaPlan]:
    data = work.data
    ccs = _ccs(gpus)
    branch = data.branch(number)
    dist = work.system.distribution.cuda if origin == "distribution" else None
    variant_major = next(
        (b.cuda_major for b in data.pytorch if b.variant == pins.pytorch_variant and b.cuda_major), None
    )
    if pins.cuda_version is not None:
        toolkit = _pinned_toolkit(work, gpus, number, pins.cuda_version)
        why = "pinned"
        use_distribution = dist is not None and dist.version == toolkit.version
    elif dist is not None and _dist_cuda_fits(work, dist.version, ccs, branch, variant_major):
        toolkit = data.toolkit(dist.version)
        why = ""
        use_distribution = True
    else:
        fitting = [t for t in data.toolkits if _toolkit_ok(t, ccs, branch) and t.min_branch <= number]
        candidates = [t for t in fitting if variant_major is None or t.major == variant_major] or fitting
        if not candidates:
            raise UnsupportedError(
                f"no CUDA toolkit compiles for {_by_arch(gpus)} with driver R{number}", kind="no_supported_stack"
            )
        toolkit = max(candidates, key=lambda t: version_tuple(t.version))
        why = _cuda_why(work, gpus, toolkit, number)
        use_distribution = False

    if use_distribution and dist is not None:
        work.why(
            "cuda",
            f"CUDA {toolkit.version} from {work.system.pretty_name}'s archive ({', '.join(dist.packages)}): "
            + (why + "; " if why else "")
            + "the toolkit comes from the same archive as the driver, and it compiles for every GPU here",
            dist.source,
        )
        return toolkit, CudaPlan(toolkit.version, "distribution", dist.packages)

    text = f"CUDA {toolkit.version} from NVIDIA's repository ({', '.join(toolkit.packages)}): {why}"
    own = work.system.distribution.cuda
    if own is not None and origin == "nvidia":
        text += (
            f"; {work.system.pretty_name}'s own nvidia-cuda-toolkit is {own.version}, and the toolkit comes from "
            "the same archive as the driver"
        )
    elif work.system.family == "ubuntu":
        text += "; versioned cuda-toolkit-X-Y packages let the toolkit match the driver and the GPUs"
    work.why("cuda", text, toolkit.source)
    return toolkit, CudaPlan(toolkit.version, "nvidia", toolkit.packages)


def _pinned_toolkit(work: _Work, gpus: Sequence[_Gpu], number: int, version: str) -> Toolkit:
    data = work.data
    toolkit = data.toolkit(version)
    missing = [g for g in gpus if not all(toolkit.covers(cc) for cc in g.ccs)]
    if missing:
        raise PlanInputError(
            f"pin cuda_version: CUDA {toolkit.version} compiles for CC {toolkit.cc_min} to {toolkit.cc_max}, "
            f"which leaves out {_by_arch(missing)}",
            kind="pin_conflict",
        )
    floor = data.floor_for(toolkit.major)
    if number < floor or toolkit.major > data.branch(number).max_cuda_major:
        raise PlanInputError(
            f"pin cuda_version: CUDA {toolkit.major}.x needs driver R{floor} or newer; the plan's driver is R{number}",
            kind="pin_conflict",
        )
    if toolkit.min_branch > number:
        work.warn(
            f"CUDA {toolkit.version} wants driver {toolkit.min_driver}; R{number} runs it only through CUDA "
            "minor-version compatibility (no PTX JIT of newer code)"
        )
    return toolkit


def _dist_cuda_fits(work: _Work, version: str, ccs: Sequence[str], branch: Branch, variant_major: int | None) -> bool:
    toolkit = work.data.toolkit(version)
    return (
        _toolkit_ok(toolkit, ccs, branch)
        and toolkit.min_branch <= branch.branch
        and (variant_major is None or toolkit.major == variant_major)
    )


def _cuda_why(work: _Work, gpus: Sequence[_Gpu], toolkit: Toolkit, number: int) -> str:
    ccs = _ccs(gpus)
    text = (
        f"the newest toolkit that compiles for every GPU here (CC {', '.join(ccs)}) and whose driver requirement "
        f"({toolkit.min_driver}) R{number} meets"
    )
    newer = sorted(
        (t for t in work.data.toolkits if version_tuple(t.version) > version_tuple(toolkit.version)),
        key=lambda t: version_tuple(t.version),
    )
    if newer:
        nxt = newer[0]
        left_out = [g for g in gpus if not all(nxt.covers(cc) for cc in g.ccs)]
        if left_out:
            text += f"; CUDA {nxt.version} dropped {_by_arch(left_out)} (its minimum is CC {nxt.cc_min})"
        elif nxt.min_branch > number:
            text += f"; CUDA {nxt.version} needs driver {nxt.min_driver}"
    return text


def _libraries(
    work: _Work, gpus: Sequence[_Gpu], toolkit: Toolkit, cuda_plan: CudaPlan
) -> tuple[LibraryPlan, LibraryPlan]:
    system = work.system
    if cuda_plan.source == "distribution":
        dist = system.distribution
        cudnn = LibraryPlan(dist.cudnn.version, dist.cudnn.packages) if dist.cudnn else LibraryPlan()
        nccl = LibraryPlan(dist.nccl.version, dist.nccl.packages) if dist.nccl else LibraryPlan()
        if dist.cudnn:
            work.why(
                "cudnn",
                f"cuDNN {dist.cudnn.version} from {system.pretty_name}'s archive "
                f"({', '.join(dist.cudnn.packages)}, an installer script)",
                dist.cudnn.source,
            )
        if not dist.nccl:
            work.warn(f"{system.pretty_name}'s archive has no NCCL (libnccl2); the framework wheels bring their own")
        return cudnn, nccl
    ccs = _ccs(gpus)
    cudnn_rows = [r for r in work.data.cudnn if r.cuda_major == toolkit.major and all(r.covers(cc) for cc in ccs)]
    nccl_rows = [r for r in work.data.nccl if r.cuda_major == toolkit.major]
    cudnn = _library(work, "cudnn", "cuDNN", cudnn_rows, toolkit)
    nccl = _library(work, "nccl", "NCCL", nccl_rows, toolkit)
    return cudnn, nccl


def _library(work: _Work, topic: str, label: str, rows: list[Library], toolkit: Toolkit) -> LibraryPlan:
    if not rows:
        work.warn(f"no {label} for CUDA {toolkit.major} in dlsetup's data serves these GPUs")
        return LibraryPlan()
    row = max(rows, key=lambda r: version_tuple(r.version) if r.version else (0,))
    version = f"{label} {row.version}" if row.version else f"the newest {label} build for CUDA {toolkit.version}"
    text = f"{version} from NVIDIA's repository ({', '.join(row.packages)})"
    if row.note:
        text += f": {row.note}"
    work.why(topic, text, row.source)
    return LibraryPlan(row.version, row.packages)


# --- frameworks ---------------------------------------------------------------------------------------------


def _torch_candidates(work: _Work, gpus: Sequence[_Gpu], number: int) -> list[TorchBuild]:
    ccs = _ccs(gpus)
    return [
        b
        for b in work.data.pytorch
        if b.cuda_major is not None and all(b.runs_on(cc) for cc in ccs) and work.data.floor_for(b.cuda_major) <= number
    ]


def _choose_torch(work: _Work, gpus: Sequence[_Gpu], number: int, toolkit: Toolkit, pins: Pins) -> TorchBuild:
    data = work.data
    if pins.pytorch_variant == "cpu":
        builds = [
            b
            for b in data.pytorch
            if b.variant == "cpu" and (pins.pytorch_version is None or b.version == pins.pytorch_version)
        ]
        if not builds:
            raise PlanInputError(
                f"pin pytorch_version: dlsetup has no CPU build of torch {pins.pytorch_version}", kind="pin_conflict"
            )
        build = max(builds, key=lambda b: version_tuple(b.version))
        work.why("pytorch", f"torch {build.version} CPU-only: pinned (pytorch_variant: cpu)", build.source)
        return build

    candidates = _torch_candidates(work, gpus, number)
    if pins.pytorch_variant is not None or pins.pytorch_version is not None:
        _check_torch_pins(work, gpus, number, pins)
        candidates = [
            b
            for b in candidates
            if pins.pytorch_variant in (None, b.variant) and pins.pytorch_version in (None, b.version)
        ]
    if not candidates:
        raise UnsupportedError(
            f"no PyTorch build in dlsetup's data runs on {_by_arch(gpus)} with driver R{number}",
            kind="no_supported_stack",
        )

    def rank(build: TorchBuild) -> tuple[bool, bool, tuple[int, ...], tuple[int, ...]]:
        cuda = version_tuple(build.cuda or "0")
        return (
            build.cuda_major == toolkit.major,
            cuda <= version_tuple(toolkit.version),
            version_tuple(build.version),
            cuda,
        )

    build = max(candidates, key=rank)
    pinned = pins.pytorch_variant is not None or pins.pytorch_version is not None
    archs = " ".join(build.archs)
    floor = data.floor_for(build.cuda_major or 0)
    text = (
        f"torch {build.version} ({build.variant}, CUDA {build.cuda}) from {build.index_url}: "
        + ("pinned; " if pinned else "the newest build ")
        + f"whose compiled architectures ({archs}) cover every GPU here, and a CUDA {build.cuda_major}.x wheel "
        f"needs only driver R{floor}+"
    )
    forward = [f"{cc} runs {sm}" for cc in _ccs(gpus) if (sm := _sass_for(build, cc)) != _sm_name(cc)]
    if forward:
        text += f" (CC {', '.join(forward)}: same-major SASS is forward compatible)"
    work.why("pytorch", text, build.source)

    newest = max(data.torch_versions(), key=version_tuple)
    if version_tuple(build.version) < version_tuple(newest) and not pinned:
        newer = [b for b in data.pytorch if b.version == newest and b.variant != "cpu"]
        left_out = [g for g in gpus if not any(all(b.runs_on(cc) for cc in g.ccs) for b in newer)]
        if left_out:
            work.warn(
                f"torch {newest} has no build for {_by_arch(left_out)}: torch {build.version} ({build.variant}) is "
                "the newest that runs here, and PyTorch plans to drop the cu126 build (RFC pytorch#190385)"
            )
    if build.cuda_major != toolkit.major:
        work.warn(
            f"the system CUDA {toolkit.version} and the wheel's CUDA {build.cuda} differ in major version: building "
            "CUDA extensions against torch needs a toolkit of the wheel's major"
        )
    return build


def _sm_name(cc: str) -> str:
    return "sm_" + cc.replace(".", "")


def _sass_for(build: TorchBuild, cc: str) -> str:
    """The sm_XY of ``build`` that runs on ``cc``: exact, else the newest same-major one below it."""
    major, minor = cc_tuple(cc)
    usable = [a for a in build.archs if sm_to_cc(a)[0] == major and sm_to_cc(a)[1] <= minor]
    return max(usable, key=sm_to_cc) if usable else _sm_name(cc)


def _check_torch_pins(work: _Work, gpus: Sequence[_Gpu], number: int, pins: Pins) -> None:
    data = work.data
    builds = [
        b
        for b in data.pytorch
        if b.variant != "cpu"
        and pins.pytorch_variant in (None, b.variant)
        and pins.pytorch_version in (None, b.version)
    ]
    what = " ".join(x for x in (pins.pytorch_version and f"torch {pins.pytorch_version}", pins.pytorch_variant) if x)
    key = "pytorch_variant" if pins.pytorch_variant else "pytorch_version"
    if not builds:
        raise PlanInputError(f"pin {key}: dlsetup has no {what} build", kind="pin_conflict")
    running = [b for b in builds if all(b.runs_on(cc) for cc in _ccs(gpus))]
    if not running:
        left_out = [g for g in gpus if not any(all(b.runs_on(cc) for cc in g.ccs) for b in builds)]
        archs = sorted({a for b in builds for a in b.archs}, key=lambda a: int(a[3:]))
        raise PlanInputError(
            f"pin {key}: {what} has no code for {_by_arch(left_out or gpus)} (its builds carry {' '.join(archs)})",
            kind="pin_conflict",
        )
    if not any(data.floor_for(b.cuda_major or 0) <= number for b in running):
        floor = min(data.floor_for(b.cuda_major or 0) for b in running)
        raise PlanInputError(
            f"pin {key}: {what} needs driver R{floor} or newer; the plan's driver is R{number}", kind="pin_conflict"
        )


def _choose_jax(work: _Work, gpus: Sequence[_Gpu], number: int, build: TorchBuild) -> JaxPlan:
    ccs = _ccs(gpus)
    fits = [
        j for j in work.data.jax if all(cc_tuple(cc) >= cc_tuple(j.cc_min) for cc in ccs) and j.min_branch <= number
    ]
    if not fits:
        low = min(ccs, key=cc_tuple)
        work.warn(
            f"no JAX CUDA wheel supports CC {low} with R{number} (jax[cuda12] needs SM 5.2+, jax[cuda13] SM 7.5+ and "
            "R580+): JAX stays CPU-only"
        )
        work.why("jax", "plain jax (CPU): no CUDA extra fits these GPUs", work.data.jax[0].source)
        return JaxPlan(None)
    chosen = max(fits, key=lambda j: (j.cuda_major == build.cuda_major, j.cuda_major))
    text = f"jax[{chosen.extra}]: supports SM {chosen.cc_min}+ with driver R{chosen.min_branch}+"
    if chosen.cuda_major == build.cuda_major:
        text += f", and shares CUDA {chosen.cuda_major} libraries with the torch wheel"
    if chosen.cuda_major < max(j.cuda_major for j in work.data.jax):
        text += "; the CUDA 13 wheels need SM 7.5+ and R580+"
    work.why("jax", text, chosen.source)
    if chosen.cuda_major == 12 and any(cc_tuple(cc) < (7, 5) for cc in ccs):
        work.warn(
            "jax[cuda12] on pre-Turing GPUs needs cuDNN <= 9.10 (later cuDNN dropped them; compat.md §4.3, UNVERIFIED)"
        )
    return JaxPlan(chosen.extra)


# --- laptop, reboot, repository -----------------------------------------------------------------------------


def _laptop(work: _Work, gpus: Sequence[_Gpu], profile: Machine | None) -> LaptopPlan:
    if profile is None:
        return LaptopPlan()
    laptop = LaptopPlan(profile.prime, profile.mem_sleep_default)
    if laptop.prime:
        work.why(
            "laptop",
            f"{profile.product} (Optimus): PRIME render offload '{laptop.prime}' keeps the Intel GPU on the display "
            "and the NVIDIA GPU available for CUDA ('intel' mode would blacklist the NVIDIA modules)",
            profile.source,
        )
        if any("open" not in g.arch.flavors for g in gpus):
            work.warn(
                f"{_names(gpus)}: runtime D3 power-off needs a Turing or newer GPU, so the dGPU keeps drawing power "
                "while its modules are loaded; switch to Intel-only mode to save battery"
            )
    if laptop.mem_sleep_default:
        work.why(
            "laptop",
            f"{profile.product}: kernel parameter mem_sleep_default={laptop.mem_sleep_default} (S3 instead of the "
            "battery-draining s2idle default)",
            profile.source,
        )
    return laptop


def _reboot(work: _Work, number: int, flavor: Flavor, laptop: LaptopPlan) -> bool:
    current = work.request.current_driver
    if current is not None and current.branch == number and current.flavor == flavor:
        work.why("reboot", f"R{number} {flavor} is already loaded: the kernel driver does not change")
        driver_change = False
    else:
        driver_change = True
        work.why(
            "reboot",
            f"installing or changing the kernel driver (to R{number} {flavor}) needs a reboot to load it "
            "(nouveau must be gone first)",
        )
    if laptop.mem_sleep_default:
        work.why("reboot", "a kernel command-line change (mem_sleep_default) takes effect at the next boot")
    return driver_change or laptop.mem_sleep_default is not None


def _repository(work: _Work, driver: DriverPlan, cuda_plan: CudaPlan) -> NvidiaRepositoryPlan | None:
    used_for = tuple(
        name for name, source in (("driver", driver.source), ("cuda", cuda_plan.source)) if source == "nvidia"
    )
    if not used_for:
        return None
    repo = work.data.nvidia_repository
    if "driver" not in used_for:
        work.why(
            "nvidia_repository",
            f"{_repo_path(work)} is added for CUDA, cuDNN and NCCL only: its pin file ranks it above "
            f"{work.system.pretty_name}'s archive for every package it carries, drivers included, so the driver "
            "packages must stay pinned to the distribution",
            repo.source,
        )
    else:
        work.why("nvidia_repository", f"{_repo_path(work)} with {repo.keyring_package}", repo.source)
    return NvidiaRepositoryPlan(_repo_path(work), repo.keyring_package, used_for)
