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

A host whose driver is served from outside (WSL2: the Windows driver; a container that sees its GPUs only through
nvidia-smi: the host's) gets no driver, no kernel modules and no reboot: CUDA (NVIDIA's cuda-toolkit-X-Y, from the
WSL-Ubuntu repository on WSL2) and the frameworks are fitted to the driver nvidia-smi reports. WSL2 on Debian is
refused: NVIDIA documents CUDA on WSL for WSL-Ubuntu only.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

from dlsetup.errors import UnsupportedError
from dlsetup.plan.cuda import choose_cuda, choose_cuda_outside, libraries
from dlsetup.plan.driver import choose_driver, choose_flavor, driver_plan, outside_driver_plan
from dlsetup.plan.frameworks import check_torch_pins, choose_jax, choose_torch
from dlsetup.plan.load import load_compat_data
from dlsetup.plan.machine import cpu_plan, laptop_plan, reboot_needed, repository_plan
from dlsetup.plan.model import (
    CudaPlan,
    DriverPlan,
    JaxPlan,
    LaptopPlan,
    LibraryPlan,
    MachinePlan,
    NvidiaRepositoryPlan,
    Plan,
    PlannedGpu,
    PytorchPlan,
    SecureBootPlan,
    StackRequest,
)
from dlsetup.plan.request import match_machine
from dlsetup.plan.schema import CompatData, Machine, TorchBuild
from dlsetup.plan.sources import pytorch_index_url
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

    if request.outside_driver is not None:
        return outside_plan(work, gpus, machine_plan, profile)

    pins = request.pins
    flavor = choose_flavor(work, gpus, pins)
    origin, branch = choose_driver(work, gpus, flavor, pins)
    driver, secure_boot = driver_plan(work, gpus, origin, branch, flavor)
    if request.virtualization == "container":
        work.why(
            "driver.packages",
            "in a container the nvidia_driver role installs the user-space packages only and leaves out the kernel "
            "packages and the reboot: the host's kernel module drives the GPUs and must be of the same branch",
            data.containers.source,
        )
    if pins.pytorch_variant not in (None, "cpu") or (pins.pytorch_version and pins.pytorch_variant is None):
        check_torch_pins(work, gpus, branch, pins)  # before CUDA: a framework pin steers the toolkit's major
    toolkit, cuda_plan = choose_cuda(work, gpus, origin, branch, pins)
    cudnn, nccl = libraries(work, gpus, toolkit, cuda_plan)
    build = choose_torch(work, gpus, branch, toolkit, pins)
    jax = choose_jax(work, gpus, branch, build)
    laptop = laptop_plan(work, gpus, profile)
    reboot = reboot_needed(work, branch, flavor, laptop)
    repository = repository_plan(work, driver, cuda_plan, (*cudnn.packages, *nccl.packages))

    return _gpu_plan(
        work, gpus, machine_plan, driver, secure_boot, cuda_plan, (cudnn, nccl), build, jax, laptop, reboot, repository
    )


def _gpu_plan(
    work: Work,
    gpus: Sequence[PlanGpu],
    machine_plan: MachinePlan | None,
    driver: DriverPlan,
    secure_boot: SecureBootPlan,
    cuda_plan: CudaPlan,
    libs: tuple[LibraryPlan, LibraryPlan],
    build: TorchBuild,
    jax: JaxPlan,
    laptop: LaptopPlan,
    reboot: bool,
    repository: NvidiaRepositoryPlan | None,
) -> Plan:
    """The Plan of a host with NVIDIA GPUs, from the decisions made for it (and the reasons ``work`` gathered)."""
    cudnn, nccl = libs
    sources = work.request.sources
    return Plan(
        os=work.system.key,
        gpus=tuple(
            PlannedGpu(g.spec.pci_id, g.spec.name, g.arch.name, g.spec.compute_capability, g.spec.identified_by)
            for g in gpus
        ),
        machine=machine_plan,
        driver=driver,
        cuda=cuda_plan,
        cudnn=cudnn,
        nccl=nccl,
        pytorch=PytorchPlan(build.version, build.variant, pytorch_index_url(work.data, build, sources), build.cuda),
        jax=jax,
        laptop=laptop,
        reboot_required=reboot,
        secure_boot=secure_boot,
        nvidia_repository=repository,
        wheelhouse=sources.wheelhouse,
        reasons=tuple(work.reasons),
        warnings=tuple(work.warnings),
    )


def outside_plan(
    work: Work, gpus: Sequence[PlanGpu], machine_plan: MachinePlan | None, profile: Machine | None
) -> Plan:
    """The plan of a host whose driver is served from outside (``StackRequest.outside_driver``): no driver, no kernel
    modules, no reboot; CUDA and the frameworks fitted to the driver nvidia-smi reports."""
    request, data = work.request, work.data
    outside = request.outside_driver
    assert outside is not None
    pins = request.pins
    number, driver, secure_boot = outside_driver_plan(work, pins)
    if outside.kind == "wsl2":
        # NVIDIA's WSL-Ubuntu repository: the same base, layout and key, its own directory
        repo = work.system.nvidia_repository.model_copy(update={"directory": data.wsl.directory})
        work.system = work.system.model_copy(update={"nvidia_repository": repo})
    if pins.pytorch_variant not in (None, "cpu") or (pins.pytorch_version and pins.pytorch_variant is None):
        check_torch_pins(work, gpus, number, pins)
    toolkit, cuda_plan = choose_cuda_outside(work, gpus, number, pins)
    if outside.kind == "wsl2":
        cudnn, nccl = LibraryPlan(), LibraryPlan()
        work.why(
            "cudnn",
            "no cuDNN or NCCL packages on WSL2: dlsetup's sources list only the CUDA toolkit in NVIDIA's WSL-Ubuntu "
            "repository; the PyTorch and JAX wheels bring their own cuDNN and NCCL",
            data.wsl.source,
        )
    else:
        cudnn, nccl = libraries(work, gpus, toolkit, cuda_plan)
    build = choose_torch(work, gpus, number, toolkit, pins)
    jax = choose_jax(work, gpus, number, build)
    where = "WSL2" if outside.kind == "wsl2" else "a container"
    if profile is not None and (profile.prime or profile.mem_sleep_default):
        owner = "Windows" if outside.kind == "wsl2" else "the host"
        work.why(
            "laptop",
            f"{profile.product}: no laptop profile in {where}: PRIME offload and suspend belong to {owner}",
            profile.source,
        )
    work.why("reboot", f"nothing to reboot for in {where}: no kernel driver, module or command line changes")
    if outside.kind == "wsl2":
        note = "NVIDIA's WSL-Ubuntu repository, for the CUDA toolkit only: WSL2 takes no driver package from it"
        note_source = data.wsl.source
    else:
        note = "for CUDA, cuDNN and NCCL only: the container gets no driver package"
        note_source = data.containers.source
    repository = repository_plan(
        work, driver, cuda_plan, (*cudnn.packages, *nccl.packages), note=note, note_source=note_source
    )
    return _gpu_plan(
        work,
        gpus,
        machine_plan,
        driver,
        secure_boot,
        cuda_plan,
        (cudnn, nccl),
        build,
        jax,
        LaptopPlan(),
        False,
        repository,
    )


def refuse_unsupported(gpus: Sequence[PlanGpu]) -> None:
    """GPUs no current stack serves: an architecture without one, or a GPU NVIDIA drives only with a legacy
    branch (its supported-gpus.json names that branch)."""
    unsupported = [g for g in gpus if not g.arch.dl_supported or g.spec.last_branch is not None]
    if not unsupported:
        return
    lines = []
    for key in dict.fromkeys((g.arch.name, g.spec.last_branch) for g in unsupported):
        members = [g for g in unsupported if (g.arch.name, g.spec.last_branch) == key]
        arch, last = members[0].arch, members[0].spec.last_branch
        if last is not None:
            why = f"NVIDIA's last driver for it is the {last}.xx legacy branch" + (
                f"; {arch.unsupported_reason}"
                if arch.unsupported_reason
                else ", which no CUDA 12/13 toolkit or current PyTorch/JAX build supports"
            )
            lines.append(f"{names(members)} ({arch.name}, R{last} at most): {why}")
        else:
            ceiling = f", R{arch.max_branch} at most" if arch.max_branch else ""
            lines.append(f"{names(members)} ({arch.name}{ceiling}): {arch.unsupported_reason}")
    others = [g for g in gpus if g not in unsupported]
    tail = f"; a driver for the other GPUs ({names(others)}) would not drive it" if others else ""
    raise UnsupportedError(
        "no supported deep-learning stack exists for " + "; ".join(lines) + tail + ". dlsetup will not install a "
        "driver for it",
        kind="no_supported_stack",
        hint="remove the GPU, or provision it by hand with its legacy driver (no current framework build)",
    )
