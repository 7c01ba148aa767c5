"""Framework decisions: the PyTorch build (version and wheel variant) and the JAX extra."""

from __future__ import annotations

from collections.abc import Sequence

from packaging.version import Version

from dlsetup.errors import UnsupportedError
from dlsetup.plan.model import JaxPlan, Pins, PlanInputError
from dlsetup.plan.schema import Toolkit, TorchBuild, cc_tuple, sm_to_cc
from dlsetup.plan.sources import pytorch_index_url
from dlsetup.plan.work import PlanGpu, Work, by_arch, ccs_of


def torch_candidates(work: Work, gpus: Sequence[PlanGpu], number: int) -> list[TorchBuild]:
    ccs = ccs_of(gpus)
    return [
        b
        for b in work.data.pytorch
        if b.cuda_major is not None and all(b.runs_on(cc) for cc in ccs) and work.data.floor_for(b.cuda_major) <= number
    ]


def choose_torch(work: Work, gpus: Sequence[PlanGpu], number: int, toolkit: Toolkit, pins: Pins) -> TorchBuild:
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
        build = max(builds, key=lambda b: Version(b.version))
        work.why("pytorch", f"torch {build.version} CPU-only: pinned (pytorch_variant: cpu)", build.source)
        return build

    candidates = torch_candidates(work, gpus, number)
    if pins.pytorch_variant is not None or pins.pytorch_version is not None:
        check_torch_pins(work, gpus, number, pins)
        candidates = [
            b
            for b in candidates
            if pins.pytorch_variant in (None, b.variant) and pins.pytorch_version in (None, b.version)
        ]
    if not candidates:
        raise UnsupportedError(
            f"no PyTorch build in dlsetup's data runs on {by_arch(gpus)} with driver R{number}",
            kind="no_supported_stack",
        )

    def rank(build: TorchBuild) -> tuple[bool, bool, Version, Version]:
        cuda = Version(build.cuda or "0")
        return (
            build.cuda_major == toolkit.major,
            cuda <= Version(toolkit.version),
            Version(build.version),
            cuda,
        )

    build = max(candidates, key=rank)
    pinned = pins.pytorch_variant is not None or pins.pytorch_version is not None
    archs = " ".join(build.archs)
    floor = data.floor_for(build.cuda_major or 0)
    text = (
        f"torch {build.version} ({build.variant}, CUDA {build.cuda}) from "
        f"{pytorch_index_url(work.data, build, work.request.sources) or 'the general package index'}: "
        + ("pinned; " if pinned else "the newest build ")
        + f"whose compiled architectures ({archs}) cover every GPU here, and a CUDA {build.cuda_major}.x wheel "
        f"needs only driver R{floor}+"
    )
    forward = [f"{cc} runs {sm}" for cc in ccs_of(gpus) if (sm := _sass_for(build, cc)) != _sm_name(cc)]
    if forward:
        text += f" (CC {', '.join(forward)}: same-major SASS is forward compatible)"
    work.why("pytorch", text, build.source)

    newest = max(data.torch_versions(), key=Version)
    if Version(build.version) < Version(newest) and not pinned:
        newer = [b for b in data.pytorch if b.version == newest and b.variant != "cpu"]
        left_out = [g for g in gpus if not any(all(b.runs_on(cc) for cc in g.ccs) for b in newer)]
        if left_out:
            work.warn(
                f"torch {newest} has no build for {by_arch(left_out)}: torch {build.version} ({build.variant}) is "
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


def check_torch_pins(work: Work, gpus: Sequence[PlanGpu], number: int, pins: Pins) -> None:
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
    running = [b for b in builds if all(b.runs_on(cc) for cc in ccs_of(gpus))]
    if not running:
        left_out = [g for g in gpus if not any(all(b.runs_on(cc) for cc in g.ccs) for b in builds)]
        archs = sorted({a for b in builds for a in b.archs}, key=lambda a: int(a[3:]))
        raise PlanInputError(
            f"pin {key}: {what} has no code for {by_arch(left_out or gpus)} (its builds carry {' '.join(archs)})",
            kind="pin_conflict",
        )
    if not any(data.floor_for(b.cuda_major or 0) <= number for b in running):
        floor = min(data.floor_for(b.cuda_major or 0) for b in running)
        raise PlanInputError(
            f"pin {key}: {what} needs driver R{floor} or newer; the plan's driver is R{number}", kind="pin_conflict"
        )


def choose_jax(work: Work, gpus: Sequence[PlanGpu], number: int, build: TorchBuild) -> JaxPlan:
    ccs = ccs_of(gpus)
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
        return JaxPlan(None, work.request.sources.pip_index)
    chosen = max(fits, key=lambda j: (j.cuda_major == build.cuda_major, j.cuda_major))
    text = f"jax[{chosen.extra}]: supports SM {chosen.cc_min}+ with driver R{chosen.min_branch}+"
    if chosen.cuda_major == build.cuda_major:
        text += f", and shares CUDA {chosen.cuda_major} libraries with the torch wheel"
    if chosen.cuda_major < max(j.cuda_major for j in work.data.jax):
        text += "; the CUDA 13 wheels need SM 7.5+ and R580+"
    work.why("jax", text, chosen.source)
    if chosen.cuda_major == 12 and any(cc_tuple(cc) < (7, 5) for cc in ccs):
        work.warn("jax[cuda12] on pre-Turing GPUs needs cuDNN <= 9.10 (later cuDNN dropped them; UNVERIFIED)")
    return JaxPlan(chosen.extra, work.request.sources.pip_index)
