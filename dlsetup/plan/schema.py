"""The compatibility data's schema: one pydantic model per kind of row of ``data/*.yaml``, and :class:`CompatData`,
all of it with the lookups the resolver uses.

Every row carries a ``source``. Reading the files and checking the rows against each other is :mod:`.load` and
:mod:`.consistency`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import date
from functools import cached_property
from typing import Literal

from packaging.version import Version
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from dlsetup.facts.hwparse.common import driver_major

Flavor = Literal["open", "proprietary"]
Origin = Literal["distribution", "nvidia"]
BranchKind = Literal["LTSB", "PB", "NFB", "legacy", "unlisted"]
Segment = Literal["geforce", "workstation", "datacenter", "mobile"]

# Debian policy §5.6.1: package names are lower case letters, digits, + - . ; at least two characters, starting
# with an alphanumeric.
PACKAGE_NAME = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")
PLACEHOLDERS = ("{branch}", "{server}", "{kernel_flavor}")
_PCI_ID = re.compile(r"^[0-9a-f]{4}:[0-9a-f]{4}$")
_CC = re.compile(r"^\d{1,2}\.\d$")
_VERSION = re.compile(r"^\d+\.\d+(\.\d+)?$")
_DRIVER_VERSION = re.compile(r"^\d{3}\.\d+(\.\d+)?$")
_SM = re.compile(r"^sm_(\d{1,2})(\d)$")
_EOL = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")


def cc_tuple(cc: str) -> tuple[int, int]:
    """``"12.0"`` → ``(12, 0)``, for ordering compute capabilities."""
    major, _, minor = cc.partition(".")
    return int(major), int(minor)


def sm_to_cc(sm: str) -> tuple[int, int]:
    """``"sm_120"`` → ``(12, 0)``; ``"sm_61"`` → ``(6, 1)``."""
    match = _SM.match(sm)
    if not match:
        raise ValueError(f"not an sm_XY architecture: {sm!r}")
    return int(match.group(1)), int(match.group(2))


def branch_of(version: str) -> int:
    """The branch of a validated driver version: ``"575.51.03"`` → ``575``."""
    major = driver_major(version)
    if major is None:
        raise ValueError(f"not a driver version: {version!r}")
    return major


class _Row(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    source: str = Field(
        min_length=10, description="where the row's facts come from: an address, or a tag of docs/sources.md"
    )


class Architecture(_Row):
    name: str
    codenames: tuple[str, ...]
    compute_capabilities: tuple[str, ...]
    min_branch: int | None
    max_branch: int | None
    flavors: tuple[Flavor, ...] = Field(min_length=1)
    preferred_flavor: Flavor
    last_cuda_major: int | None
    dl_supported: bool
    unsupported_reason: str | None

    @field_validator("compute_capabilities")
    @classmethod
    def _ccs(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for cc in value:
            if not _CC.match(cc):
                raise ValueError(f"compute capability {cc!r} is not MAJOR.MINOR")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Architecture:
        if self.preferred_flavor not in self.flavors:
            raise ValueError(f"{self.name}: preferred_flavor {self.preferred_flavor} is not among its flavors")
        if not self.dl_supported and not self.unsupported_reason:
            raise ValueError(f"{self.name}: dl_supported is false but unsupported_reason is missing")
        if self.min_branch and self.max_branch and self.min_branch > self.max_branch:
            raise ValueError(f"{self.name}: min_branch {self.min_branch} > max_branch {self.max_branch}")
        return self

    def drives(self, branch: int) -> bool:
        """Whether driver ``branch`` drives GPUs of this architecture."""
        return (self.min_branch is None or branch >= self.min_branch) and (
            self.max_branch is None or branch <= self.max_branch
        )


class Branch(_Row):
    branch: int = Field(ge=100, le=999)
    kind: BranchKind
    end_of_life: str | None
    max_cuda_major: int
    flavors: tuple[Flavor, ...] = Field(min_length=1)
    note: str

    @field_validator("end_of_life")
    @classmethod
    def _eol(cls, value: str | None) -> str | None:
        if value is not None and not _EOL.match(value):
            raise ValueError(f"end_of_life {value!r} is not YYYY-MM")
        return value

    def past_end_of_life(self, today: date) -> bool:
        """True once the month NVIDIA names as end of life is over."""
        if self.end_of_life is None:
            return False
        year, month = (int(p) for p in self.end_of_life.split("-"))
        return (today.year, today.month) > (year, month)

    def eol_text(self) -> str:
        if self.end_of_life is None:
            return "no published end of life"
        year, month = self.end_of_life.split("-")
        return f"end of life {date(int(year), int(month), 1):%B %Y}"


class PreferredBranches(_Row):
    branches: tuple[int, ...] = Field(min_length=1)
    reason: str


class Gpu(_Row):
    """One GPU of the catalogue (generated from NVIDIA's data by nvidia_data.py, see gpus.yaml's header)."""

    pci_id: str
    name: str
    chip: str | None
    architecture: str
    compute_capability: str | None
    segment: Segment
    aliases: tuple[str, ...] = ()
    # NVIDIA's kernelopen flag: the open kernel modules drive it (None: NVIDIA's data does not say)
    open_modules: bool | None = None
    # NVIDIA's legacybranch: the last driver branch that drives it (None: current drivers do)
    last_branch: int | None = None
    # the Debian releases ("12", "13") whose nvidia-driver package lists it
    debian_driver: tuple[str, ...] = ()

    @field_validator("pci_id")
    @classmethod
    def _pci(cls, value: str) -> str:
        if not _PCI_ID.match(value) or not value.startswith("10de:"):
            raise ValueError(f"pci_id {value!r} is not a lower-case NVIDIA id 10de:xxxx")
        return value

    @field_validator("compute_capability")
    @classmethod
    def _cc(cls, value: str | None) -> str | None:
        if value is not None and not _CC.match(value):
            raise ValueError(f"compute capability {value!r} is not MAJOR.MINOR")
        return value

    @property
    def names(self) -> tuple[str, ...]:
        return (self.name, *self.aliases)


class CatalogueProvenance(_Row):
    """What the generated GPU catalogue was made from (gpus.json)."""

    generated_by: str
    drivers: tuple[str, ...]
    debian_id_lists: tuple[str, ...]
    pci_ids: str
    gpus: int
    left_out: tuple[str, ...]


class Chip(_Row):
    """A chip codename prefix and the compute capability of the chips it names."""

    prefix: str = Field(pattern=r"^[A-Z]{1,2}\d{0,3}[A-Z]?$")
    compute_capability: str

    @field_validator("compute_capability")
    @classmethod
    def _cc(cls, value: str) -> str:
        if not _CC.match(value):
            raise ValueError(f"compute capability {value!r} is not MAJOR.MINOR")
        return value


class MinorVersionFloor(_Row):
    cuda_major: int
    min_branch: int


class Toolkit(_Row):
    version: str
    min_driver: str
    cc_min: str
    cc_max: str
    packages: tuple[str, ...] = Field(min_length=1)

    @field_validator("version")
    @classmethod
    def _version(cls, value: str) -> str:
        if not re.match(r"^\d+\.\d+$", value):
            raise ValueError(f"CUDA version {value!r} is not MAJOR.MINOR")
        return value

    @field_validator("min_driver")
    @classmethod
    def _driver(cls, value: str) -> str:
        if not _DRIVER_VERSION.match(value):
            raise ValueError(f"driver version {value!r} is not BRANCH.MINOR[.PATCH]")
        return value

    @property
    def major(self) -> int:
        return int(self.version.split(".")[0])

    @property
    def min_branch(self) -> int:
        return branch_of(self.min_driver)

    def covers(self, cc: str) -> bool:
        return cc_tuple(self.cc_min) <= cc_tuple(cc) <= cc_tuple(self.cc_max)


class Library(_Row):
    """A cuDNN row (NCCL rows leave version null and cover every CC of the CUDA major)."""

    cuda_major: int
    version: str | None
    cc_min: str | None = None
    cc_max: str | None = None
    packages: tuple[str, ...] = Field(min_length=1)
    note: str | None = None

    def covers(self, cc: str) -> bool:
        low = cc_tuple(self.cc_min) if self.cc_min else (0, 0)
        high = cc_tuple(self.cc_max) if self.cc_max else (99, 9)
        return low <= cc_tuple(cc) <= high


class TorchBuild(_Row):
    version: str
    variant: str
    cuda: str | None
    archs: tuple[str, ...]
    # where pip finds it: its variant's index on PyTorch's server, or the general index (PyPI or a mirror)
    index: Literal["pytorch", "default"] = "pytorch"

    @model_validator(mode="after")
    def _consistent(self) -> TorchBuild:
        if not _VERSION.match(self.version):
            raise ValueError(f"torch version {self.version!r} is not X.Y.Z")
        if self.variant == "cpu":
            if self.cuda is not None or self.archs:
                raise ValueError(f"torch {self.version} cpu: a CPU build has no CUDA version and no archs")
        else:
            if self.cuda is None or self.variant != "cu" + self.cuda.replace(".", ""):
                raise ValueError(f"torch {self.version}: variant {self.variant} does not match CUDA {self.cuda}")
            if not self.archs:
                raise ValueError(f"torch {self.version} {self.variant}: archs is empty")
            for sm in self.archs:
                sm_to_cc(sm)
        return self

    @property
    def cuda_major(self) -> int | None:
        return int(self.cuda.split(".")[0]) if self.cuda else None

    def runs_on(self, cc: str) -> bool:
        """SASS for sm_XY runs on a GPU of the same major with minor >= Y (binary compatibility within a major)."""
        major, minor = cc_tuple(cc)
        return any(arch[0] == major and arch[1] <= minor for arch in map(sm_to_cc, self.archs))


class JaxExtra(_Row):
    extra: str
    cuda_major: int
    cc_min: str
    min_branch: int


class DistributionCuda(_Row):
    version: str
    packages: tuple[str, ...] = Field(min_length=1)


class DriverVersionPin(_Row):
    """An exact driver version a distribution's package set installs only at: the archive's updates carry
    newer versions of some of its packages than of the others (Debian 12: the open kernel module stays at
    535.261.03 in contrib while bookworm-security moves nvidia-driver on), so apt refuses the set unless every
    driver package is held to the one version they share."""

    flavor: Literal["open", "proprietary"]
    version: str = Field(pattern=r"^\d+\.\d+(\.\d+)?$")
    reason: str
    source: str


class DistributionArchive(_Row):
    driver_branches: tuple[int, ...]
    verified: bool
    components: tuple[str, ...]
    cuda: DistributionCuda | None
    cudnn: DistributionCuda | None
    nccl: DistributionCuda | None
    driver_version_pins: tuple[DriverVersionPin, ...] = ()

    def version_pin(self, flavor: str) -> DriverVersionPin | None:
        return next((p for p in self.driver_version_pins if p.flavor == flavor), None)


class NvidiaRepositoryForOs(_Row):
    directory: str
    driver_branches: tuple[int, ...]
    verified: bool


class OperatingSystem(_Row):
    key: str
    id: str
    version: str
    codename: str
    family: Literal["ubuntu", "debian"]
    pretty_name: str
    ga_kernel: str | None
    source_order: tuple[Origin, ...] = Field(min_length=1)
    distribution: DistributionArchive
    nvidia_repository: NvidiaRepositoryForOs

    @model_validator(mode="after")
    def _key(self) -> OperatingSystem:
        if self.key != f"{self.id}-{self.version}":
            raise ValueError(f"system key {self.key!r} is not <id>-<version>")
        return self

    def branches_from(self, origin: Origin) -> tuple[int, ...]:
        if origin == "distribution":
            return self.distribution.driver_branches
        return self.nvidia_repository.driver_branches

    def verified(self, origin: Origin) -> bool:
        return self.distribution.verified if origin == "distribution" else self.nvidia_repository.verified


class DriverPackages(_Row):
    family: Literal["ubuntu", "debian"]
    origin: Origin
    flavor: Flavor
    branch_min: int | None
    branch_max: int | None
    packages: tuple[str, ...] = Field(min_length=1)
    signed_modules: bool
    verified: bool

    def applies(self, family: str, origin: str, flavor: str, branch: int) -> bool:
        return (
            (self.family, self.origin, self.flavor) == (family, origin, flavor)
            and (self.branch_min is None or branch >= self.branch_min)
            and (self.branch_max is None or branch <= self.branch_max)
        )

    def expand(self, *, branch: int, server: bool, kernel_flavor: str) -> tuple[str, ...]:
        return tuple(
            name.replace("{branch}", str(branch))
            .replace("{server}", "-server" if server else "")
            .replace("{kernel_flavor}", kernel_flavor)
            for name in self.packages
        )


class DriverPackagePatterns(_Row):
    """Which installed packages belong to the driver, per OS family (for the nvidia_driver role)."""

    family: Literal["ubuntu", "debian"]
    pin_packages: tuple[str, ...] = Field(min_length=1)
    proprietary_packages: str
    open_packages: str
    branch_named_packages: str

    @model_validator(mode="after")
    def _regexes(self) -> DriverPackagePatterns:
        for pattern in (self.proprietary_packages, self.open_packages, self.branch_named_packages):
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"{self.family}: {pattern!r} is not a regular expression: {exc}") from None
        return self

    def other_flavor(self, flavor: Flavor) -> str:
        """The pattern of the kernel-module packages of the flavour that is not ``flavor``."""
        return self.proprietary_packages if flavor == "open" else self.open_packages


class NvidiaRepository(_Row):
    base_url: str = Field(pattern=r"^https://")
    path_template: str
    key_file: str
    key_fingerprint: str = Field(pattern=r"^[0-9A-F]{40}$")


class WslSupport(_Row):
    """CUDA on WSL2: the OS families NVIDIA has a WSL repository for, its directory (same base and key as
    ``nvidia_repository``), why no Linux driver is installed, and why other families are refused."""

    families: tuple[Literal["ubuntu", "debian"], ...] = Field(min_length=1)
    directory: str = Field(pattern=r"^[a-z0-9-]+$")
    driver_note: str
    refusal: str


class ContainerSupport(_Row):
    """A container that sees its GPUs only through nvidia-smi: why no driver is installed in it."""

    driver_note: str


class PytorchIndex(_Row):
    base_url: str = Field(pattern=r"^https://")


class Machine(_Row):
    vendor: str
    product: str
    profile: str
    gpus: tuple[str, ...]
    prime: Literal["on-demand"] | None
    mem_sleep_default: Literal["deep"] | None


def architecture_for_codename(architectures: Iterable[Architecture], chip: str) -> Architecture | None:
    """The architecture a chip codename's prefix names (``GP102`` → Pascal), or None."""
    prefix = chip[:2].upper()
    return next((arch for arch in architectures if prefix in arch.codenames), None)


def cc_for_chip(chips: Iterable[Chip], chip: str) -> str | None:
    """The compute capability of a chip codename (``GP102`` → ``6.1``; the longest prefix wins), or None."""
    rows = [row for row in chips if chip.upper().startswith(row.prefix)]
    return max(rows, key=lambda r: len(r.prefix)).compute_capability if rows else None


class CompatData(BaseModel):
    """All compatibility data, checked for internal consistency."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    architectures: tuple[Architecture, ...]
    branches: tuple[Branch, ...]
    preferred_branches: PreferredBranches
    chips: tuple[Chip, ...]
    catalogue: CatalogueProvenance
    gpus: tuple[Gpu, ...]
    minor_version_floors: tuple[MinorVersionFloor, ...]
    toolkits: tuple[Toolkit, ...]
    cudnn: tuple[Library, ...]
    nccl: tuple[Library, ...]
    pytorch_index: PytorchIndex
    pytorch: tuple[TorchBuild, ...]
    jax: tuple[JaxExtra, ...]
    systems: tuple[OperatingSystem, ...]
    driver_packages: tuple[DriverPackages, ...]
    driver_package_patterns: tuple[DriverPackagePatterns, ...]
    nvidia_repository: NvidiaRepository
    machines: tuple[Machine, ...]
    wsl: WslSupport
    containers: ContainerSupport

    # --- lookups (the data is small: linear scans keep the model plain) -------------------------------------

    def architecture(self, name: str) -> Architecture:
        for arch in self.architectures:
            if arch.name == name:
                return arch
        raise KeyError(name)

    def architecture_for_codename(self, chip: str) -> Architecture | None:
        return architecture_for_codename(self.architectures, chip)

    @cached_property
    def _gpus_by_id(self) -> dict[str, Gpu]:
        return {gpu.pci_id: gpu for gpu in self.gpus}

    def gpu(self, pci_id: str) -> Gpu | None:
        """The catalogue row of a (normalised) PCI id."""
        return self._gpus_by_id.get(pci_id)

    def cc_for_chip(self, chip: str) -> str | None:
        return cc_for_chip(self.chips, chip)

    def architecture_for_cc(self, cc: str) -> Architecture | None:
        for arch in self.architectures:
            if cc in arch.compute_capabilities:
                return arch
        return None

    def branch(self, number: int) -> Branch:
        for row in self.branches:
            if row.branch == number:
                return row
        raise KeyError(number)

    def toolkit(self, version: str) -> Toolkit:
        for row in self.toolkits:
            if row.version == version:
                return row
        raise KeyError(version)

    def floor_for(self, cuda_major: int) -> int:
        for row in self.minor_version_floors:
            if row.cuda_major == cuda_major:
                return row.min_branch
        raise KeyError(cuda_major)

    def system(self, key: str) -> OperatingSystem | None:
        for row in self.systems:
            if row.key == key:
                return row
        return None

    def driver_packages_for(self, family: str, origin: str, flavor: str, branch: int) -> DriverPackages | None:
        for row in self.driver_packages:
            if row.applies(family, origin, flavor, branch):
                return row
        return None

    def package_patterns(self, family: str) -> DriverPackagePatterns:
        for row in self.driver_package_patterns:
            if row.family == family:
                return row
        raise KeyError(family)

    def torch_variants(self) -> list[str]:
        return sorted({b.variant for b in self.pytorch})

    def torch_versions(self) -> list[str]:
        return sorted({b.version for b in self.pytorch}, key=Version)
