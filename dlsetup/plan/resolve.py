"""The resolver: OS + GPUs (+ machine, + pins) → :class:`~dlsetup.plan.model.Plan`. Pure: data in, dataclasses out.

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

from collections.abc import Sequence
from datetime import date

from dlsetup.errors import UnsupportedError
from dlsetup.plan.cuda import choose_cuda, libraries
from dlsetup.plan.driver import choose_driver, choose_flavor, driver_plan
from dlsetup.plan.frameworks import check_torch_pins, choose_jax, choose_torch
from dlsetup.plan.load import load_compat_data
from dlsetup.plan.machine import cpu_plan, laptop_plan, reboot_needed, repository_plan
from dlsetup.plan.model import MachinePlan, Plan, PlannedGpu, PytorchPlan, StackRequest
from dlsetup.plan.request import match_machine
from dlsetup.plan.schema import CompatData
from dlsetup.plan.work import PlanGpu, Work, names


def resolve_stack(request: StackRequest, *, data: CompatData | None = None) -> Plan:
    """Resolve the stack for ``request``.

    Raises :class:`~dlsetup.errors.UnsupportedError` (exit 4; kinds ``unsupported_os``, ``unknown_gpu``,
    ``no_supported_stack``, ``incompatible_gpus``) when no stack serves the set, and
    :class:`~dlsetup.plan.model.PlanInputError` (a ConfigError, exit 2; kind ``pin_conflict``) when a pin
    cannot be honoured.
    """
    data = data or load_compat_data()
    system = data.system(request.os)
    if system is None:
        raise UnsupportedError(
            f"unsupported OS {request.os}: dlsetup plans for " + ", ".join(s.key for s in data.systems),
            kind="unsupported_os",
        )
    work = Work(data, system, request, request.as_of or date.today())
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
            hint="add the GPU to dlsetup/plan/data/gpus.yaml with a source, or update the host's pci.ids",
        )
    gpus = [PlanGpu(g, data.architecture(g.architecture)) for g in request.gpus if g.architecture]
    refuse_unsupported(gpus)

    profile = match_machine(request.machine, data)
    machine_plan = (
        MachinePlan(request.machine.vendor, request.machine.product, profile.profile if profile else None)
        if request.machine
        else None
    )
    if not gpus:
        return cpu_plan(work, machine_plan, profile)

    pins = request.pins
    flavor = choose_flavor(work, gpus, pins)
    origin, branch = choose_driver(work, gpus, flavor, pins)
    driver, secure_boot = driver_plan(work, gpus, origin, branch, flavor)
    if pins.pytorch_variant not in (None, "cpu") or (pins.pytorch_version and pins.pytorch_variant is None):
        check_torch_pins(work, gpus, branch, pins)  # before CUDA: a framework pin steers the toolkit's major
    toolkit, cuda_plan = choose_cuda(work, gpus, origin, branch, pins)
    cudnn, nccl = libraries(work, gpus, toolkit, cuda_plan)
    build = choose_torch(work, gpus, branch, toolkit, pins)
    jax = choose_jax(work, gpus, branch, build)
    laptop = laptop_plan(work, gpus, profile)
    reboot = reboot_needed(work, branch, flavor, laptop)
    repository = repository_plan(work, driver, cuda_plan)

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


def refuse_unsupported(gpus: Sequence[PlanGpu]) -> None:
    unsupported = [g for g in gpus if not g.arch.dl_supported]
    if not unsupported:
        return
    lines = []
    for arch_name in dict.fromkeys(g.arch.name for g in unsupported):
        members = [g for g in unsupported if g.arch.name == arch_name]
        arch = members[0].arch
        ceiling = f", R{arch.max_branch} at most" if arch.max_branch else ""
        lines.append(f"{names(members)} ({arch.name}{ceiling}): {arch.unsupported_reason}")
    others = [g for g in gpus if g.arch.dl_supported]
    tail = f"; a driver for the other GPUs ({names(others)}) would not drive it" if others else ""
    raise UnsupportedError(
        "no supported deep-learning stack exists for " + "; ".join(lines) + tail + ". dlsetup will not install a "
        "driver for it",
        kind="no_supported_stack",
        hint="remove the GPU, or provision it by hand with its legacy driver (no current framework build)",
    )
