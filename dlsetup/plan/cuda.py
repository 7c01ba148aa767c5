"""CUDA decisions: the toolkit (and its archive), and the cuDNN and NCCL that go with it."""

from __future__ import annotations

from collections.abc import Sequence

from packaging.version import Version

from dlsetup.errors import UnsupportedError
from dlsetup.plan.model import CudaPlan, LibraryPlan, Pins, PlanInputError
from dlsetup.plan.schema import Branch, Library, Origin, Toolkit
from dlsetup.plan.work import PlanGpu, Work, by_arch, ccs_of


def _toolkit_ok(toolkit: Toolkit, ccs: Sequence[str], branch: Branch) -> bool:
    return all(toolkit.covers(cc) for cc in ccs) and toolkit.major <= branch.max_cuda_major


def choose_cuda(
    work: Work, gpus: Sequence[PlanGpu], origin: Origin, number: int, pins: Pins
) -> tuple[Toolkit, CudaPlan]:
    data = work.data
    ccs = ccs_of(gpus)
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
                f"no CUDA toolkit compiles for {by_arch(gpus)} with driver R{number}", kind="no_supported_stack"
            )
        toolkit = max(candidates, key=lambda t: Version(t.version))
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


def _pinned_toolkit(work: Work, gpus: Sequence[PlanGpu], number: int, version: str) -> Toolkit:
    data = work.data
    toolkit = data.toolkit(version)
    missing = [g for g in gpus if not all(toolkit.covers(cc) for cc in g.ccs)]
    if missing:
        raise PlanInputError(
            f"pin cuda_version: CUDA {toolkit.version} compiles for CC {toolkit.cc_min} to {toolkit.cc_max}, "
            f"which leaves out {by_arch(missing)}",
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


def _dist_cuda_fits(work: Work, version: str, ccs: Sequence[str], branch: Branch, variant_major: int | None) -> bool:
    toolkit = work.data.toolkit(version)
    return (
        _toolkit_ok(toolkit, ccs, branch)
        and toolkit.min_branch <= branch.branch
        and (variant_major is None or toolkit.major == variant_major)
    )


def _cuda_why(work: Work, gpus: Sequence[PlanGpu], toolkit: Toolkit, number: int) -> str:
    ccs = ccs_of(gpus)
    text = (
        f"the newest toolkit that compiles for every GPU here (CC {', '.join(ccs)}) and whose driver requirement "
        f"({toolkit.min_driver}) R{number} meets"
    )
    newer = sorted(
        (t for t in work.data.toolkits if Version(t.version) > Version(toolkit.version)),
        key=lambda t: Version(t.version),
    )
    if newer:
        nxt = newer[0]
        left_out = [g for g in gpus if not all(nxt.covers(cc) for cc in g.ccs)]
        if left_out:
            text += f"; CUDA {nxt.version} dropped {by_arch(left_out)} (its minimum is CC {nxt.cc_min})"
        elif nxt.min_branch > number:
            text += f"; CUDA {nxt.version} needs driver {nxt.min_driver}"
    return text


def libraries(
    work: Work, gpus: Sequence[PlanGpu], toolkit: Toolkit, cuda_plan: CudaPlan
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
    ccs = ccs_of(gpus)
    cudnn_rows = [r for r in work.data.cudnn if r.cuda_major == toolkit.major and all(r.covers(cc) for cc in ccs)]
    nccl_rows = [r for r in work.data.nccl if r.cuda_major == toolkit.major]
    cudnn = _library(work, "cudnn", "cuDNN", cudnn_rows, toolkit)
    nccl = _library(work, "nccl", "NCCL", nccl_rows, toolkit)
    return cudnn, nccl


def _library(work: Work, topic: str, label: str, rows: list[Library], toolkit: Toolkit) -> LibraryPlan:
    if not rows:
        work.warn(f"no {label} for CUDA {toolkit.major} in dlsetup's data serves these GPUs")
        return LibraryPlan()
    row = max(rows, key=lambda r: Version(r.version or "0"))
    version = f"{label} {row.version}" if row.version else f"the newest {label} build for CUDA {toolkit.version}"
    text = f"{version} from NVIDIA's repository ({', '.join(row.packages)})"
    if row.note:
        text += f": {row.note}"
    work.why(topic, text, row.source)
    return LibraryPlan(row.version, row.packages)


def _outside_fits(toolkit: Toolkit, ccs: Sequence[str], number: int, driver_cuda: str | None) -> bool:
    """A toolkit the outside driver runs: it compiles for every GPU, the driver meets its requirement, and it is
    no newer than the CUDA the driver itself reports (when known)."""
    return (
        all(toolkit.covers(cc) for cc in ccs)
        and toolkit.min_branch <= number
        and (driver_cuda is None or Version(toolkit.version) <= Version(driver_cuda))
    )


def _outside_next(
    toolkits: Sequence[Toolkit], toolkit: Toolkit, ccs: Sequence[str], number: int, driver_cuda: str | None
) -> str:
    """Why the next newer toolkit was not taken."""
    newer = sorted(
        (t for t in toolkits if Version(t.version) > Version(toolkit.version)), key=lambda t: Version(t.version)
    )
    if not newer:
        return ""
    nxt = newer[0]
    if not all(nxt.covers(cc) for cc in ccs):
        return f"; CUDA {nxt.version} compiles for CC {nxt.cc_min} to {nxt.cc_max} only"
    if nxt.min_branch > number:
        return f"; CUDA {nxt.version} needs driver {nxt.min_driver}"
    if driver_cuda is not None and Version(nxt.version) > Version(driver_cuda):
        return f"; CUDA {nxt.version} is newer than the CUDA {driver_cuda} the driver runs"
    return ""


def choose_cuda_outside(work: Work, gpus: Sequence[PlanGpu], number: int, pins: Pins) -> tuple[Toolkit, CudaPlan]:
    """The toolkit under a driver dlsetup does not install (WSL2's Windows driver, a container's host driver):
    NVIDIA's versioned cuda-toolkit-X-Y, which carries no driver, bounded by the driver nvidia-smi reports.

    On WSL2 it comes from NVIDIA's WSL-Ubuntu repository, in a container from NVIDIA's repository for the OS.
    """
    outside = work.request.outside_driver
    assert outside is not None
    data = work.data
    ccs = ccs_of(gpus)
    driver_cuda = outside.cuda_version
    serving = (
        f"the Windows driver {outside.version}" if outside.kind == "wsl2" else f"the host's driver {outside.version}"
    )
    bound = f"{serving} (R{number}" + (f", CUDA {driver_cuda} by its own report)" if driver_cuda else ")")
    if pins.cuda_version is not None:
        toolkit = data.toolkit(pins.cuda_version)
        if not _outside_fits(toolkit, ccs, number, driver_cuda):
            raise PlanInputError(
                f"pin cuda_version: CUDA {toolkit.version} (CC {toolkit.cc_min} to {toolkit.cc_max}, driver "
                f"{toolkit.min_driver}+) does not fit {by_arch(gpus)} under {bound}",
                kind="pin_conflict",
            )
        why = "pinned"
    else:
        variant_major = next(
            (b.cuda_major for b in data.pytorch if b.variant == pins.pytorch_variant and b.cuda_major), None
        )
        fitting = [t for t in data.toolkits if _outside_fits(t, ccs, number, driver_cuda)]
        candidates = [t for t in fitting if variant_major is None or t.major == variant_major] or fitting
        if not candidates:
            oldest = min(data.toolkits, key=lambda t: Version(t.version))
            raise UnsupportedError(
                f"no CUDA toolkit in dlsetup's data compiles for {by_arch(gpus)} and runs under {bound}; the oldest, "
                f"CUDA {oldest.version}, needs driver {oldest.min_driver}",
                kind="no_supported_stack",
                hint="update the Windows NVIDIA driver" if outside.kind == "wsl2" else "update the host's driver",
            )
        toolkit = max(candidates, key=lambda t: Version(t.version))
        why = (
            f"the newest toolkit that compiles for every GPU here (CC {', '.join(ccs)}) and runs under {bound}: "
            f"it needs driver {toolkit.min_driver}"
        )
        why += _outside_next(data.toolkits, toolkit, ccs, number, driver_cuda)
    if outside.kind == "wsl2":
        where, source = "NVIDIA's WSL-Ubuntu repository", f"{data.wsl.source}; {toolkit.source}"
    else:
        where, source = "NVIDIA's repository", f"{data.containers.source}; {toolkit.source}"
    work.why(
        "cuda",
        f"CUDA {toolkit.version} from {where} ({', '.join(toolkit.packages)}, the toolkit alone, no driver): {why}",
        source,
    )
    return toolkit, CudaPlan(toolkit.version, "nvidia", toolkit.packages)
