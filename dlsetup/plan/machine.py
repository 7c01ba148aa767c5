"""Machine decisions: a host with no NVIDIA GPU, the laptop profile, whether a reboot is needed, and NVIDIA's
repository."""

from __future__ import annotations

from collections.abc import Sequence

from packaging.version import Version

from dlsetup.plan.model import (
    CudaPlan,
    DriverPlan,
    JaxPlan,
    LaptopPlan,
    LibraryPlan,
    MachinePlan,
    NvidiaRepositoryPlan,
    Plan,
    PlanInputError,
    PytorchPlan,
    SecureBootPlan,
)
from dlsetup.plan.schema import Flavor, Machine
from dlsetup.plan.sources import nvidia_repository_key, pytorch_index_url
from dlsetup.plan.work import PlanGpu, Work, names, repo_url


def cpu_plan(work: Work, machine_plan: MachinePlan | None, profile: Machine | None) -> Plan:
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
    build = max(builds, key=lambda b: Version(b.version))
    product = machine_plan.product if machine_plan and machine_plan.product else "this machine"
    work.why(
        "gpus",
        f"no NVIDIA GPU on {product}: no driver, CUDA, cuDNN or NCCL; CPU-only frameworks",
        '[DEB-DETECT12] nvidia-detect: "No NVIDIA GPU detected."',
    )
    index = pytorch_index_url(work.data, build, work.request.sources)
    work.why("pytorch", f"torch {build.version} from the CPU-only index ({index})", build.source)
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
        pytorch=PytorchPlan(build.version, build.variant, index, None),
        jax=JaxPlan(None, work.request.sources.pip_index),
        laptop=laptop,
        reboot_required=reboot,
        secure_boot=SecureBootPlan(False, "no", "no NVIDIA kernel modules are installed"),
        nvidia_repository=None,
        wheelhouse=work.request.sources.wheelhouse,
        reasons=tuple(work.reasons),
        warnings=tuple(work.warnings),
    )


def laptop_plan(work: Work, gpus: Sequence[PlanGpu], profile: Machine | None) -> LaptopPlan:
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
                f"{names(gpus)}: runtime D3 power-off needs a Turing or newer GPU, so the dGPU keeps drawing power "
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


def reboot_needed(work: Work, number: int, flavor: Flavor, laptop: LaptopPlan) -> bool:
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


def repository_plan(
    work: Work,
    driver: DriverPlan,
    cuda_plan: CudaPlan,
    libraries: tuple[str, ...],
    *,
    note: str | None = None,
    note_source: str = "",
) -> NvidiaRepositoryPlan | None:
    """NVIDIA's repository, when the driver or CUDA comes from it. ``note`` replaces the usual account of what it
    is added for (WSL2, containers: no driver packages at all)."""
    used_for = tuple(
        name for name, source in (("driver", driver.source), ("cuda", cuda_plan.source)) if source == "nvidia"
    )
    if not used_for:
        return None
    repo = work.data.nvidia_repository
    url = repo_url(work)
    fingerprint = nvidia_repository_key(work.data, work.request.sources)
    mirror = " (a mirror of NVIDIA's, given by the user)" if work.request.sources.nvidia_repo else ""
    key = f"signed by {repo.key_file}, accepted only with the fingerprint {fingerprint}"
    if work.request.sources.nvidia_repo_key:
        key += " (the user's)"
    if note is not None:
        work.why("nvidia_repository", f"{url}{mirror}, {key}, {note}", f"{repo.source}; {note_source}")
    elif "driver" not in used_for:
        work.why(
            "nvidia_repository",
            f"{url}{mirror}, {key}, is added for CUDA, cuDNN and NCCL only: the driver packages stay pinned to "
            f"{work.system.pretty_name}'s archive",
            repo.source,
        )
    else:
        work.why("nvidia_repository", f"{url}{mirror}, {key}", repo.source)
    # what comes from it: the kernel headers a DKMS build needs are the distribution's own metapackage
    packages: list[str] = []
    if "driver" in used_for:
        packages += [p for p in driver.packages if not p.startswith("linux-headers-")]
    if "cuda" in used_for:
        packages += [*cuda_plan.packages, *libraries]
    return NvidiaRepositoryPlan(url, f"{url}{repo.key_file}", fingerprint, used_for, tuple(packages))
