"""What goes into the resolver (:class:`StackRequest`) and what comes out (:class:`Plan`).

The request side is plain dataclasses (built and read only inside dlsetup). The plan side is the Plan JSON of
``docs/architecture.md`` (``docs/schemas/plan.schema.json`` is generated from these models; field by field in
``docs/plan.md``): frozen pydantic dataclasses, so a plan read back from a host's record is validated like any other.
``Plan.to_extravars()`` gives the role variables of the same document.
"""

from __future__ import annotations

import dataclasses
from datetime import date
from typing import Any, Literal

from pydantic import ConfigDict, TypeAdapter, field_validator
from pydantic.dataclasses import dataclass

from dlsetup.errors import ConfigError
from dlsetup.plan.addresses import openable

IdentifiedBy = Literal["catalogue", "compute_capability", "pci_ids", "unknown"]
MokEnrollment = Literal["if_secure_boot", "no"]


# every field is always in the JSON, defaults included: the schema says so (serialization mode)
_PLAN_CONFIG = ConfigDict(extra="forbid", json_schema_serialization_defaults_required=True)


class PlanInputError(ConfigError):
    """Bad planning input (exit 2) with a machine-readable ``kind``.

    Kinds: ``bad_pin`` (unknown key, wrong type, unknown value), ``pin_conflict`` (a pin the hardware/OS cannot
    honour), ``bad_os`` (not ``<id>-<version>``), ``unknown_model`` / ``ambiguous_model`` (a ``--gpu`` name),
    ``bad_facts`` (a facts object without what planning needs), ``bad_source`` (a source override),
    ``bad_input`` (a role variable the plan sets, given in the inventory).
    """

    def __init__(self, message: str, *, kind: str, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.kind = kind


# --- request ------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class GpuSpec:
    """One GPU as identified before planning. ``architecture`` is None when it could not be identified."""

    pci_id: str | None
    name: str
    architecture: str | None
    compute_capability: str | None
    identified_by: IdentifiedBy
    chip: str | None = None
    segment: str | None = None
    # from the catalogue (NVIDIA's data); None/() for a GPU placed otherwise
    open_modules: bool | None = None
    last_branch: int | None = None
    debian_driver: tuple[str, ...] = ()

    def label(self) -> str:
        return f"{self.name} ({self.pci_id})" if self.pci_id and self.pci_id != self.name else self.name


@dataclasses.dataclass(frozen=True)
class MachineSpec:
    vendor: str | None
    product: str | None


@dataclasses.dataclass(frozen=True)
class CurrentDriver:
    """The driver a live host runs now (from facts), to tell whether the plan changes it."""

    branch: int | None
    flavor: str | None


@dataclasses.dataclass(frozen=True)
class OutsideDriver:
    """The driver that serves a host from outside it, which dlsetup does not install: the Windows driver under
    WSL2, the host's driver under a container that sees its GPUs only through nvidia-smi."""

    kind: Literal["wsl2", "container"]
    version: str | None  # as nvidia-smi reports it (WSL2: the Windows driver's, e.g. 573.24)
    cuda_version: str | None = None  # the newest CUDA the driver runs (cuDriverGetVersion), if known
    evidence: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
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


@dataclass(frozen=True, config=_PLAN_CONFIG)
class Reason:
    """One line of reasoning: which choice, why, and where the fact comes from (part of the Plan JSON): addresses
    a user can open, the data's source tags turned into them (:mod:`dlsetup.plan.addresses`)."""

    topic: str
    text: str
    source: str = ""

    @field_validator("source")
    @classmethod
    def _openable(cls, source: str) -> str:
        return openable(source)


@dataclasses.dataclass(frozen=True)
class SourceOverrides:
    """What a user replaces of the default sources (None: the default)."""

    nvidia_repo: str | None = None  # base of a mirror with NVIDIA's layout (the part before compute/cuda/repos/)
    nvidia_repo_key: str | None = None  # the fingerprint the repository's key must have
    pytorch_index: str | None = None  # base of a mirror with PyTorch's layout (<base>/<variant>)
    pip_index: str | None = None  # the general package index (PEP 503) for everything else pip installs
    wheelhouse: str | None = None  # a directory of wheels on the host: pip installs from it only, offline

    def merged(self, override: SourceOverrides) -> SourceOverrides:
        """These sources, with what ``override`` sets replacing them."""
        changes = {f.name: getattr(override, f.name) for f in dataclasses.fields(self) if getattr(override, f.name)}
        return dataclasses.replace(self, **changes)


@dataclasses.dataclass(frozen=True)
class StackRequest:
    """Everything the resolver needs: OS key (``ubuntu-24.04``), GPUs, machine, pins, and what a live host runs."""

    os: str
    gpus: tuple[GpuSpec, ...]
    machine: MachineSpec | None = None
    pins: Pins = dataclasses.field(default_factory=Pins)
    current_driver: CurrentDriver | None = None
    kernel_release: str | None = None
    as_of: date | None = None
    reasons: tuple[Reason, ...] = ()
    warnings: tuple[str, ...] = ()
    sources: SourceOverrides = dataclasses.field(default_factory=SourceOverrides)
    arch: str = "x86_64"
    # the machine's virtualization from facts (container, vm, wsl2), and the driver that serves it from outside
    virtualization: str | None = None
    outside_driver: OutsideDriver | None = None


# --- plan ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True, config=_PLAN_CONFIG)
class PlannedGpu:
    pci_id: str | None
    name: str
    architecture: str
    compute_capability: str | None
    identified_by: IdentifiedBy


@dataclass(frozen=True, config=_PLAN_CONFIG)
class MachinePlan:
    vendor: str | None
    product: str | None
    profile: str | None


@dataclass(frozen=True, config=_PLAN_CONFIG)
class DriverPlan:
    source: Literal["distribution", "nvidia"] | None = None
    branch: str | None = None
    flavor: Literal["open", "proprietary"] | None = None
    packages: tuple[str, ...] = ()
    support: str | None = None
    end_of_life: str | None = None
    # which installed packages belong to the driver (patterns from the data, for the nvidia_driver role)
    pin_packages: tuple[str, ...] = ()
    other_flavor_packages: str | None = None
    branch_named_packages: str | None = None
    # an exact version every driver package is held at (apt preferences), where the archive installs the set
    # only at that version; None: the newest of the branch
    version: str | None = None


@dataclass(frozen=True, config=_PLAN_CONFIG)
class CudaPlan:
    version: str | None = None
    source: Literal["distribution", "nvidia"] | None = None
    packages: tuple[str, ...] = ()


@dataclass(frozen=True, config=_PLAN_CONFIG)
class LibraryPlan:
    version: str | None = None
    packages: tuple[str, ...] = ()


@dataclass(frozen=True, config=_PLAN_CONFIG)
class PytorchPlan:
    version: str | None
    variant: str | None
    index_url: str | None
    cuda: str | None = None


@dataclass(frozen=True, config=_PLAN_CONFIG)
class JaxPlan:
    extra: str | None
    # the general package index it comes from (None: the host's own pip configuration)
    index_url: str | None = None


@dataclass(frozen=True, config=_PLAN_CONFIG)
class LaptopPlan:
    prime: Literal["on-demand"] | None = None
    mem_sleep_default: Literal["deep"] | None = None


@dataclass(frozen=True, config=_PLAN_CONFIG)
class SecureBootPlan:
    signed_modules: bool
    mok_enrollment: MokEnrollment
    note: str


@dataclass(frozen=True, config=_PLAN_CONFIG)
class NvidiaRepositoryPlan:
    """NVIDIA's CUDA apt repository for this OS (or a mirror of it), and the only key accepted for it."""

    url: str
    key_url: str
    key_fingerprint: str
    used_for: tuple[str, ...]
    # the packages the plan takes from it (the preflight checks that the repository offers each one)
    packages: tuple[str, ...] = ()


@dataclass(frozen=True, config=_PLAN_CONFIG)
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
    # a directory of wheels on the host: every pip install comes from it alone (offline), whatever the indexes
    wheelhouse: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The Plan JSON (docs/plan.md)."""
        dumped: dict[str, Any] = _PLAN.dump_python(self, mode="json")
        return dumped

    @classmethod
    def from_dict(cls, data: object) -> Plan:
        """A Plan JSON document (from ``dlsetup plan --format json`` or a host's record), validated."""
        return _PLAN.validate_python(data)

    def preflight_sources(self) -> dict[str, Any]:
        """What the preflight checks from the host before anything is changed (roles/base/tasks/preflight.yml):
        NVIDIA's repository with its pinned key and the packages taken from it; the wheel indexes with the planned
        versions (an empty url: the host's own pip configuration), or the wheelhouse that replaces them."""
        repo = self.nvidia_repository
        apt = (
            {
                "url": repo.url,
                "key_url": repo.key_url,
                "fingerprint": repo.key_fingerprint,
                "packages": list(repo.packages),
            }
            if repo is not None
            else {}
        )
        indexes: list[dict[str, str]] = []
        if self.pytorch.version is not None:
            indexes.append({"url": self.pytorch.index_url or self.jax.index_url or "", "project": "torch",
                            "version": self.pytorch.version})  # fmt: skip
        if self.pytorch.version is not None:  # JAX goes into the same environment
            indexes.append({"url": self.jax.index_url or "", "project": "jax", "version": ""})
        return {"apt_repository": apt, "indexes": indexes, "wheelhouse": self.wheelhouse or ""}

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
                    "nvidia_driver_pin_packages": list(self.driver.pin_packages),
                    "nvidia_driver_other_flavor_packages": self.driver.other_flavor_packages,
                    "nvidia_driver_branch_named_packages": self.driver.branch_named_packages,
                    "nvidia_driver_version": self.driver.version or "",
                }
            )
        if self.nvidia_repository is not None:
            repo = self.nvidia_repository
            extravars.update(
                {
                    "nvidia_driver_repo_url": repo.url,
                    "nvidia_driver_repo_key_file": repo.key_url.rsplit("/", 1)[-1],
                    "nvidia_driver_repo_key_fingerprint": repo.key_fingerprint,
                    "cuda_repo_url": repo.url,
                }
            )
        if has_cuda:
            extravars.update(
                {
                    "cuda_source": self.cuda.source,
                    "cuda_version": self.cuda.version,
                    "cuda_packages": [*self.cuda.packages, *self.cudnn.packages, *self.nccl.packages],
                    # NVIDIA's repository carries many cuDNN releases: the planned one is pinned (distribution: one)
                    "cuda_cudnn_version": (self.cudnn.version or "") if self.cuda.source == "nvidia" else "",
                }
            )
        extravars.update(
            {
                "dl_stack_enabled": self.pytorch.version is not None,
                "dl_stack_torch_version": self.pytorch.version or "",
                "dl_stack_torch_index_url": self.pytorch.index_url or "",
                "dl_stack_torch_variant": self.pytorch.variant or "",
                # "cpu": jax[cpu] (the plan's CPU JAX has no CUDA extra)
                "dl_stack_jax_extra": (self.jax.extra or "cpu") if self.pytorch.version is not None else "",
                # the smoke test checks that torch and JAX see every planned GPU
                "dl_stack_expected_gpus": len(self.gpus),
                "dl_stack_index_url": self.jax.index_url or "",
                "dl_stack_wheelhouse": self.wheelhouse or "",
                "laptop_enabled": laptop_enabled,
                "laptop_profile": (self.machine.profile if self.machine else None) or "",
                "laptop_prime_mode": self.laptop.prime or "",
                "laptop_mem_sleep_default": self.laptop.mem_sleep_default or "",
                "dlsetup_plan": self.to_dict(),
            }
        )
        return extravars


_PLAN: TypeAdapter[Plan] = TypeAdapter(Plan)


def plan_json_schema() -> dict[str, Any]:
    """The JSON Schema of the Plan JSON (``docs/schemas/plan.schema.json`` is generated from it)."""
    return _PLAN.json_schema(mode="serialization")
