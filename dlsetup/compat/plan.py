"""What goes into the resolver (:class:`StackRequest`) and what comes out (:class:`Plan`): plain dataclasses.

``Plan.to_dict()`` is the Plan JSON of docs/architecture.md (documented field by field in docs/plan.md);
``Plan.to_extravars()`` the role variables of the same document.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Any, Literal

from dlsetup.errors import ConfigError, DlsetupError, UnsupportedError

IdentifiedBy = Literal["catalogue", "compute_capability", "pci_ids", "unknown"]
MokEnrollment = Literal["if_secure_boot", "no"]


class PlanInputError(ConfigError):
    """Bad planning input (exit 2) with a machine-readable ``kind``.

    Kinds: ``bad_pin`` (unknown key, wrong type, unknown value), ``pin_conflict`` (a pin the hardware/OS cannot
    honour), ``bad_os`` (not ``<id>-<version>``), ``unknown_model`` / ``ambiguous_model`` (a ``--gpu`` name),
    ``bad_facts`` (a facts object without what planning needs).
    """

    def __init__(self, message: str, *, kind: str, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.kind = kind


def error_payload(exc: DlsetupError) -> dict[str, dict[str, str]]:
    """``{"error": {"kind", "message"}}`` for ``--format json`` (kinds listed in docs/plan.md)."""
    if isinstance(exc, UnsupportedError | PlanInputError):
        kind = exc.kind
    elif isinstance(exc, ConfigError):
        kind = "bad_input"
    else:
        kind = "internal"
    return {"error": {"kind": kind, "message": exc.message}}


# --- request ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GpuSpec:
    """One GPU as identified before planning. ``architecture`` is None when it could not be identified."""

    pci_id: str | None
    name: str
    architecture: str | None
    compute_capability: str | None
    identified_by: IdentifiedBy
    chip: str | None = None
    segment: str | None = None

    def label(self) -> str:
        return f"{self.name} ({self.pci_id})" if self.pci_id and self.pci_id != self.name else self.name


@dataclass(frozen=True)
class MachineSpec:
    vendor: str | None
    product: str | None


@dataclass(frozen=True)
class CurrentDriver:
    """The driver a live host runs now (from facts), to tell whether the plan changes it."""

    branch: int | None
    flavor: str | None


@dataclass(frozen=True)
class Pins:
    """Validated user pins; None means "not pinned"."""

    driver_branch: int | None = None
    driver_flavor: Literal["open", "proprietary"] | None = None
    driver_source: Literal["distribution", "nvidia"] | None = None
    cuda_version: str | None = None
    pytorch_variant: str | None = None
    pytorch_version: str | None = None

    def driver_pins(self) -> dict[str, object]:
        return {
            k: v
            for k, v in (
                ("driver_branch", self.driver_branch),
                ("driver_flavor", self.driver_flavor),
                ("driver_source", self.driver_source),
                ("cuda_version", self.cuda_version),
            )
            if v is not None
        }


@dataclass(frozen=True)
class Reason:
    """One line of reasoning: which choice, why, and where the fact comes from."""

    topic: str
    text: str
    source: str = ""

    def to_dict(self) -> dict[str, str]:
        return {"topic": self.topic, "text": self.text, "source": self.source}


@dataclass(frozen=True)
class StackRequest:
    """Everything the resolver needs: OS key (``ubuntu-24.04``), GPUs, machine, pins, and what a live host runs."""

    os: str
    gpus: tuple[GpuSpec, ...]
    machine: MachineSpec | None = None
    pins: Pins = field(default_factory=Pins)
    current_driver: CurrentDriver | None = None
    kernel_release: str | None = None
    as_of: date | None = None
    reasons: tuple[Reason, ...] = ()
    warnings: tuple[str, ...] = ()


# --- plan ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlannedGpu:
    pci_id: str | None
    name: str
    architecture: str
    compute_capability: str | None
    identified_by: IdentifiedBy

    def to_dict(self) -> dict[str, Any]:
        return {
            "pci_id": self.pci_id,
            "name": self.name,
            "architecture": self.architecture,
            "compute_capability": self.compute_capability,
            "identified_by": self.identified_by,
        }


@dataclass(frozen=True)
class MachinePlan:
    vendor: str | None
    product: str | None
    profile: str | None

    def to_dict(self) -> dict[str, Any]:
        return {"vendor": self.vendor, "product": self.product, "profile": self.profile}


@dataclass(frozen=True)
class DriverPlan:
    source: Literal["distribution", "nvidia"] | None = None
    branch: str | None = None
    flavor: Literal["open", "proprietary"] | None = None
    packages: tuple[str, ...] = ()
    support: str | None = None
    end_of_life: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "branch": self.branch,
            "flavor": self.flavor,
            "packages": list(self.packages),
            "support": self.support,
            "end_of_life": self.end_of_life,
        }


@dataclass(frozen=True)
class CudaPlan:
    version: str | None = None
    source: Literal["distribution", "nvidia"] | None = None
    packages: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, "source": self.source, "packages": list(self.packages)}


@dataclass(frozen=True)
class LibraryPlan:
    version: str | None = None
    packages: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, "packages": list(self.packages)}


@dataclass(frozen=True)
class PytorchPlan:
    version: str | None
    variant: str | None
    index_url: str | None
    cuda: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, "variant": self.variant, "index_url": self.index_url, "cuda": self.cuda}


@dataclass(frozen=True)
class JaxPlan:
    extra: str | None

    def to_dict(self) -> dict[str, Any]:
        return {"extra": self.extra}


@dataclass(frozen=True)
class LaptopPlan:
    prime: Literal["on-demand"] | None = None
    mem_sleep_default: Literal["deep"] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"prime": self.prime, "mem_sleep_default": self.mem_sleep_default}


@dataclass(frozen=True)
class SecureBootPlan:
    signed_modules: bool
    mok_enrollment: MokEnrollment
    note: str

    def to_dict(self) -> dict[str, Any]:
        return {"signed_modules": self.signed_modules, "mok_enrollment": self.mok_enrollment, "note": self.note}


@dataclass(frozen=True)
class NvidiaRepositoryPlan:
    """NVIDIA's CUDA apt repository, by path only: the host comes from user configuration."""

    path: str
    keyring_package: str
    used_for: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "keyring_package": self.keyring_package, "used_for": list(self.used_for)}


@dataclass(frozen=True)
class Plan:
    """The resolved stack for one host (or one offline request)."""

    os: str
    gpus: tuple[PlannedGpu, ...]
    machine: MachinePlan | None
    driver: DriverPlan
    cuda: CudaPlan
    cudnn: LibraryPlan
    nccl: LibraryPlan
    pytorch: PytorchPlan
    jax: JaxPlan
    laptop: LaptopPlan
    reboot_required: bool
    secure_boot: SecureBootPlan
    nvidia_repository: NvidiaRepositoryPlan | None
    reasons: tuple[Reason, ...]
    warnings: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        """The Plan JSON (docs/plan.md)."""
        return {
            "os": self.os,
            "gpus": [g.to_dict() for g in self.gpus],
            "machine": self.machine.to_dict() if self.machine else None,
            "driver": self.driver.to_dict(),
            "cuda": self.cuda.to_dict(),
            "cudnn": self.cudnn.to_dict(),
            "nccl": self.nccl.to_dict(),
            "pytorch": self.pytorch.to_dict(),
            "jax": self.jax.to_dict(),
            "laptop": self.laptop.to_dict(),
            "reboot_required": self.reboot_required,
            "secure_boot": self.secure_boot.to_dict(),
            "nvidia_repository": self.nvidia_repository.to_dict() if self.nvidia_repository else None,
            "reasons": [r.to_dict() for r in self.reasons],
            "warnings": list(self.warnings),
        }

    def to_extravars(self) -> dict[str, Any]:
        """The role variables of docs/architecture.md ("Role variables set from the plan").

        Every choice is explicit: "nothing" is an empty string or list, never a missing key that would let a
        role fall back to its own default (e.g. detecting a laptop profile again); a disabled role gets only
        its ``*_enabled: false``.
        """
        has_driver = self.driver.branch is not None
        has_cuda = self.cuda.version is not None
        laptop_enabled = self.laptop.prime is not None or self.laptop.mem_sleep_default is not None
        extravars: dict[str, Any] = {"nvidia_driver_enabled": has_driver, "cuda_enabled": has_cuda}
        if has_driver:
            extravars.update(
                {
                    "nvidia_driver_source": self.driver.source,
                    "nvidia_driver_branch": self.driver.branch,
                    "nvidia_driver_flavor": self.driver.flavor,
                    "nvidia_driver_packages": list(self.driver.packages),
                }
            )
        if has_cuda:
            extravars.update(
                {
                    "cuda_source": self.cuda.source,
                    "cuda_version": self.cuda.version,
                    "cuda_packages": [*self.cuda.packages, *self.cudnn.packages, *self.nccl.packages],
                }
            )
        extravars.update(
            {
                "dl_stack_enabled": self.pytorch.version is not None,
                "dl_stack_torch_version": self.pytorch.version or "",
                "dl_stack_torch_index_url": self.pytorch.index_url or "",
                "dl_stack_jax_extra": self.jax.extra or "",
                "laptop_enabled": laptop_enabled,
                "laptop_profile": (self.machine.profile if self.machine else None) or "",
                "laptop_prime_mode": self.laptop.prime or "",
                "laptop_mem_sleep_default": self.laptop.mem_sleep_default or "",
                "dlsetup_plan": self.to_dict(),
            }
        )
        return extravars
