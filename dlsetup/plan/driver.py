"""Driver decisions: the kernel-module flavour, the archive and branch, the packages and Secure Boot."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from datetime import date

from dlsetup.errors import UnsupportedError
from dlsetup.facts.hwparse.common import driver_major
from dlsetup.plan.frameworks import torch_candidates
from dlsetup.plan.model import DriverPlan, Pins, PlanInputError, SecureBootPlan
from dlsetup.plan.schema import Branch, Flavor, Origin
from dlsetup.plan.work import ORIGIN_NAMES, PlanGpu, Work, by_arch, names, repo_url

_KERNEL = re.compile(r"^(\d+)\.(\d+)\.\d+-\d+-([a-z0-9][a-z0-9-]*)$")

SECURE_BOOT_SOURCE = (
    "[URL github.com/canonical/ubuntu-server-documentation docs/how-to/graphics/install-nvidia-drivers.md]; "
    "DKMS signs the modules it builds with its own key (docs/sources.md)"
)
DEFAULT_KINDS = ("LTSB", "PB")


def choose_flavor(work: Work, gpus: Sequence[PlanGpu], pins: Pins) -> Flavor:
    allowed: set[Flavor] = {"open", "proprietary"}
    for gpu in gpus:
        allowed &= set(gpu.flavors)
    open_only = [g for g in gpus if g.flavors == ("open",)]
    proprietary_only = [g for g in gpus if "open" not in g.flavors]
    unflagged = [g for g in proprietary_only if "open" in g.arch.flavors]
    if not allowed:
        raise UnsupportedError(
            f"no single NVIDIA driver serves this set: {by_arch(open_only)} need the open kernel modules (the "
            f"proprietary ones do not support them), while {by_arch(proprietary_only)} cannot use the open modules "
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
                f"pin driver_flavor: {pins.driver_flavor} cannot drive {by_arch(blockers)}: they {why}",
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
            text = f"open: required by {by_arch(open_only)} (NVIDIA supports only the open modules there)"
        else:
            text = (
                f"open: NVIDIA's default and recommended flavour since the 560 series for Turing and newer "
                f"({by_arch(gpus)})"
            )
        work.why("driver.flavor", text, arch_source)
        return "open"
    pre_turing = [g for g in proprietary_only if g not in unflagged]
    parts = []
    if pre_turing:
        parts.append(f"{by_arch(pre_turing)} cannot use the open modules (they need the GSP, Turing or newer)")
    if unflagged:
        parts.append(
            f"NVIDIA's data does not list {names(unflagged)} for the open modules (no kernelopen flag in its "
            "supported-gpus.json)"
        )
    text = "proprietary: " + "; ".join(parts)
    if len(proprietary_only) < len(gpus):
        text += f"; the whole set, {by_arch(gpus)}, shares one driver and so stays on proprietary"
    work.why("driver.flavor", text, arch_source)
    return "proprietary"


def _branch_problem(work: Work, gpus: Sequence[PlanGpu], branch: int, flavor: Flavor) -> str | None:
    """Why ``branch`` cannot serve the set with ``flavor`` (None when it can)."""
    row = work.data.branch(branch)
    if flavor not in row.flavors:
        return f"R{branch} ships {' and '.join(row.flavors)} modules only"
    too_new = [g for g in gpus if g.arch.max_branch is not None and branch > g.arch.max_branch]
    if too_new:
        ceiling = min(g.arch.max_branch or 0 for g in too_new)
        return f"R{branch} does not drive {by_arch(too_new)}: their last branch is R{ceiling}"
    too_old = [g for g in gpus if g.arch.min_branch is not None and branch < g.arch.min_branch]
    if too_old:
        floor = max(g.arch.min_branch or 0 for g in too_old)
        return f"R{branch} does not drive {by_arch(too_old)}: they need R{floor} or newer"
    if not torch_candidates(work, gpus, branch):
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


def _archive_problem(work: Work, gpus: Sequence[PlanGpu], origin: Origin) -> str | None:
    """Why the OS's own archive cannot drive these GPUs, whatever the branch: Debian's nvidia-driver drives the GPUs
    its id list names (nvidia-detect's nvidia.ids) and no other."""
    system = work.system
    if origin != "distribution" or system.family != "debian":
        return None
    missing = [g for g in gpus if system.version not in g.spec.debian_driver]
    if not missing:
        return None
    return f"{system.pretty_name}'s nvidia-driver does not list {names(missing)} (nvidia-detect's nvidia.ids)"


def choose_driver(work: Work, gpus: Sequence[PlanGpu], flavor: Flavor, pins: Pins) -> tuple[Origin, int]:
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
        archive_problem = _archive_problem(work, gpus, origin)
        for number in offered:
            problem = _branch_problem(work, gpus, number, flavor) or _lifecycle_problem(
                work.data.branch(number), work.today
            )
            if problem is None and archive_problem is None:
                good.append(number)
            elif problem is not None:
                notes.append(problem)
        if archive_problem is not None:
            notes.append(archive_problem)
        if good:
            rank = {b: i for i, b in enumerate(preferred.branches)}
            chosen = min(good, key=lambda b: (rank.get(b, len(rank)), -b))
            _explain_driver(work, gpus, flavor, origin, chosen, skipped, pinned_source=pins.driver_source is not None)
            return origin, chosen
        skipped.append(f"{system.pretty_name}'s {_archive(origin)} offers {_branch_list(offered)}: " + "; ".join(notes))

    # Nothing current fits: take a branch that at least drives every GPU, and say what is wrong with it.
    for origin in origins:
        if _archive_problem(work, gpus, origin) is not None:
            continue
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
        f"no driver branch offered on {system.pretty_name} serves {by_arch(gpus)}: " + "; ".join(skipped),
        kind="no_supported_stack",
    )


def _pinned_branch(
    work: Work,
    gpus: Sequence[PlanGpu],
    flavor: Flavor,
    number: int,
    origins: tuple[Origin, ...],
    *,
    pinned_source: bool,
) -> tuple[Origin, int]:
    problem = _branch_problem(work, gpus, number, flavor)
    if problem is not None:
        raise PlanInputError(f"pin driver_branch: {problem}", kind="pin_conflict")
    refusals = []
    for origin in origins:
        archive_problem = _archive_problem(work, gpus, origin)
        if archive_problem is not None:
            refusals.append(archive_problem)
            continue
        if number in work.system.branches_from(origin):
            _explain_driver(work, gpus, flavor, origin, number, [], pinned_source=pinned_source, pinned_branch=True)
            return origin, number
    if refusals and len(refusals) == len(origins):
        raise PlanInputError(f"pin driver_branch: {'; '.join(refusals)}", kind="pin_conflict")
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
    work: Work,
    gpus: Sequence[PlanGpu],
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
        text = f"NVIDIA's CUDA repository ({repo_url(work)})"
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
            f"R{number} is the last driver branch for {archs} ({names(last_for)}): {row.eol_text()}; {row.note}. "
            f"No newer driver branch, CUDA 13 or default-PyPI PyTorch supports {archs}"
        )
    problem = _lifecycle_problem(row, work.today)
    if problem is not None:
        work.warn(problem)
    if not system.verified(origin):
        work.warn(
            f"UNVERIFIED: dlsetup's sources do not confirm that {ORIGIN_NAMES[origin]} for {system.pretty_name} "
            f"offers R{number}"
        )


def _kernel_flavor(work: Work) -> tuple[str, str | None]:
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


def driver_plan(
    work: Work, gpus: Sequence[PlanGpu], origin: Origin, number: int, flavor: Flavor
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
        work.warn(f"the {system.family} package names in {ORIGIN_NAMES[origin]} are UNVERIFIED (docs/sources.md)")
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
    work.why("secure_boot", secure_boot.note, SECURE_BOOT_SOURCE)
    pin = system.distribution.version_pin(flavor) if origin == "distribution" else None
    if pin is not None:
        work.why("driver.version", f"held at {pin.version}: {pin.reason}", pin.source)
    row_branch = work.data.branch(number)
    patterns = work.data.package_patterns(system.family)
    return (
        DriverPlan(
            origin,
            str(number),
            flavor,
            packages,
            row_branch.kind,
            row_branch.end_of_life,
            patterns.pin_packages,
            patterns.other_flavor(flavor),
            patterns.branch_named_packages,
            pin.version if pin is not None else None,
        ),
        secure_boot,
    )


def outside_driver_plan(work: Work, pins: Pins) -> tuple[int, DriverPlan, SecureBootPlan]:
    """No driver to install: the Windows driver serves WSL2, the host's driver a container that sees its GPUs only
    through nvidia-smi. Returns the branch number of the driver that serves them (what CUDA and the frameworks
    must fit), an empty driver plan, and a Secure Boot plan with nothing to sign.

    WSL2 on an OS family NVIDIA has no WSL repository for (Debian) is refused (``unsupported_os``); a driver pin
    cannot be honoured (``pin_conflict``); a driver of unknown version leaves nothing to fit
    (``no_supported_stack``).
    """
    outside = work.request.outside_driver
    assert outside is not None
    data, system = work.data, work.system
    where = "WSL2" if outside.kind == "wsl2" else "this container"
    if outside.kind == "wsl2" and system.family not in data.wsl.families:
        raise UnsupportedError(
            f"{system.pretty_name} on WSL2: {data.wsl.refusal}",
            kind="unsupported_os",
            hint="run Ubuntu under WSL2 (wsl --install -d Ubuntu-24.04)",
        )
    driver_pins = [k for k in ("driver_branch", "driver_flavor", "driver_source") if getattr(pins, k) is not None]
    if driver_pins:
        raise PlanInputError(
            f"pin {driver_pins[0]}: dlsetup installs no driver in {where} ("
            + ("the Windows driver serves it" if outside.kind == "wsl2" else "the host's driver serves it")
            + "), so there is no driver to pin",
            kind="pin_conflict",
        )
    number = driver_major(outside.version)
    serving = "the Windows driver" if outside.kind == "wsl2" else "the host's driver"
    if number is None:
        raise UnsupportedError(
            f"{where}: nvidia-smi reports no driver version, so no CUDA can be fitted to {serving}",
            kind="no_supported_stack",
            hint="check that nvidia-smi runs"
            + (" (/usr/lib/wsl/lib/nvidia-smi) and update the Windows NVIDIA driver" if outside.kind == "wsl2" else ""),
        )
    note = data.wsl.driver_note if outside.kind == "wsl2" else data.containers.driver_note
    source = data.wsl.source if outside.kind == "wsl2" else data.containers.source
    evidence = f" (seen by: {'; '.join(outside.evidence)})" if outside.evidence else ""
    work.why(
        "driver.source",
        f"none: {note}. {serving[0].upper()}{serving[1:]} is {outside.version} (R{number}, as nvidia-smi reports it), "
        f"and CUDA and the frameworks are fitted to it{evidence}",
        source,
    )
    kernel_less = "no kernel modules are installed" + (
        ": the Windows driver serves WSL2" if outside.kind == "wsl2" else ": a container has no kernel of its own"
    )
    secure_boot = SecureBootPlan(False, "no", kernel_less)
    work.why("secure_boot", secure_boot.note, source)
    return number, DriverPlan(), secure_boot
