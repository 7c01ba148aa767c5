"""The compatibility data: pydantic models for ``data/*.yaml``, validated (rows and cross-references) when loaded.

Every row carries a ``source``. :func:`load_compat_data` reads the files shipped in the package once and caches the
result; :func:`load_compat_data_from` reads another folder (tests use it to prove that bad data is refused).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Mapping
from datetime import date
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from dlsetup.errors import DlsetupError

_YAML_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
DATA_FILES = ("architectures", "branches", "gpus", "cuda", "frameworks", "systems", "machines")

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


def version_tuple(version: str) -> tuple[int, ...]:
    """``"2.14.0"`` → ``(2, 14, 0)``."""
    return tuple(int(part) for part in version.split("."))


def sm_to_cc(sm: str) -> tuple[int, int]:
    """``"sm_120"`` → ``(12, 0)``; ``"sm_61"`` → ``(6, 1)``."""
    match = _SM.match(sm)
    if not match:
        raise ValueError(f"not an sm_XY architecture: {sm!r}")
    return int(match.group(1)), int(match.group(2))


def driver_branch_of(version: str) -> int:
    """``"575.51.03"`` → ``575``."""
    return int(version.split(".", maxsplit=1)[0])


class _Row(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    source: str = Field(min_length=10, description="where the row's facts come from (compat.md tags)")


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
    pci_id: str
    name: str
    chip: str
    architecture: str
    compute_capability: str
    segment: Segment
    aliases: tuple[str, ...] = ()

    @field_validator("pci_id")
    @classmethod
    def _pci(cls, value: str) -> str:
        if not _PCI_ID.match(value) or not value.startswith("10de:"):
            raise ValueError(f"pci_id {value!r} is not a lower-case NVIDIA id 10de:xxxx")
        return value

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
        return driver_branch_of(self.min_driver)

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
    index_url: str

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
        if not self.index_url.startswith("https://"):
            raise ValueError(f"torch {self.version} {self.variant}: index_url must be https")
        return self

    @property
    def cuda_major(self) -> int | None:
        return int(self.cuda.split(".")[0]) if self.cuda else None

    def runs_on(self, cc: str) -> bool:
        """SASS for sm_XY runs on a GPU of the same major with minor >= Y (compat.md §4.2)."""
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


class DistributionArchive(_Row):
    driver_branches: tuple[int, ...]
    verified: bool
    components: tuple[str, ...]
    cuda: DistributionCuda | None
    cudnn: DistributionCuda | None
    nccl: DistributionCuda | None


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


class NvidiaRepository(_Row):
    path_template: str
    keyring_package: str


class Machine(_Row):
    vendor: str
    product: str
    profile: str
    gpus: tuple[str, ...]
    prime: Literal["on-demand"] | None
    mem_sleep_default: Literal["deep"] | None


class CompatData(BaseModel):
    """All compatibility data, checked for internal consistency."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    architectures: tuple[Architecture, ...]
    branches: tuple[Branch, ...]
    preferred_branches: PreferredBranches
    gpus: tuple[Gpu, ...]
    minor_version_floors: tuple[MinorVersionFloor, ...]
    toolkits: tuple[Toolkit, ...]
    cudnn: tuple[Library, ...]
    nccl: tuple[Library, ...]
    pytorch: tuple[TorchBuild, ...]
    jax: tuple[JaxExtra, ...]
    systems: tuple[OperatingSystem, ...]
    driver_packages: tuple[DriverPackages, ...]
    nvidia_repository: NvidiaRepository
    machines: tuple[Machine, ...]

    # --- lookups (the data is small: linear scans keep the model plain) -------------------------------------

    def architecture(self, name: str) -> Architecture:
        for arch in self.architectures:
            if arch.name == name:
                return arch
        raise KeyError(name)

    def architecture_for_codename(self, chip: str) -> Architecture | None:
        prefix = chip[:2].upper()
        for arch in self.architectures:
            if prefix in arch.codenames:
                return arch
        return None

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

    def torch_variants(self) -> list[str]:
        return sorted({b.variant for b in self.pytorch})

    def torch_versions(self) -> list[str]:
        return sorted({b.version for b in self.pytorch}, key=version_tuple)

    # --- consistency: ranges that must not contradict each other ------------------------------------------

    @model_validator(mode="after")
    def _cross_check(self) -> CompatData:
        problems = list(consistency_problems(self))
        if problems:
            raise ValueError("; ".join(problems))
        return self


def _unique(kind: str, keys: Iterable[object]) -> list[str]:
    seen: set[object] = set()
    dupes = []
    for key in keys:
        if key in seen:
            dupes.append(f"duplicate {kind} {key}")
        seen.add(key)
    return dupes


def consistency_problems(data: CompatData) -> Iterable[str]:
    """Every contradiction between rows, as one line each (empty when the data is consistent)."""
    problems: list[str] = []
    arch_names = {a.name for a in data.architectures}
    branch_numbers = {b.branch for b in data.branches}
    problems += _unique("architecture", (a.name for a in data.architectures))
    problems += _unique("branch", (b.branch for b in data.branches))
    problems += _unique("pci id", (g.pci_id for g in data.gpus))
    problems += _unique("toolkit", (t.version for t in data.toolkits))
    problems += _unique("torch build", ((b.version, b.variant) for b in data.pytorch))
    problems += _unique("system", (s.key for s in data.systems))
    problems += _unique("codename", (c for a in data.architectures for c in a.codenames))
    problems += _unique("compute capability", (c for a in data.architectures for c in a.compute_capabilities))

    for arch in data.architectures:
        for bound in (arch.min_branch, arch.max_branch):
            if bound is not None and bound not in branch_numbers:
                problems.append(f"{arch.name}: branch bound {bound} is not in branches")
        covering = [t for t in data.toolkits if any(t.covers(cc) for cc in arch.compute_capabilities)]
        if arch.last_cuda_major is not None:
            too_new = [t.version for t in covering if t.major > arch.last_cuda_major]
            if too_new:
                problems.append(f"{arch.name}: last CUDA is {arch.last_cuda_major}.x but {too_new} cover it")
            if not any(t.major == arch.last_cuda_major for t in covering):
                problems.append(f"{arch.name}: no CUDA {arch.last_cuda_major}.x toolkit covers it")
        if arch.dl_supported:
            if not covering:
                problems.append(f"{arch.name}: supported but no toolkit covers it")
            first = min(covering, key=lambda t: version_tuple(t.version), default=None)
            if first and arch.min_branch is not None and arch.min_branch < first.min_branch:
                problems.append(
                    f"{arch.name}: min_branch {arch.min_branch} is below the driver of the first toolkit that "
                    f"covers it (CUDA {first.version}: {first.min_driver})"
                )
            if arch.max_branch is not None and not any(
                b.branch == arch.max_branch and set(b.flavors) & set(arch.flavors) for b in data.branches
            ):
                problems.append(f"{arch.name}: its last branch {arch.max_branch} offers none of its flavours")
    for number in data.preferred_branches.branches:
        if number not in branch_numbers:
            problems.append(f"preferred branch {number} is not in branches")

    for gpu in data.gpus:
        if gpu.architecture not in arch_names:
            problems.append(f"{gpu.pci_id}: unknown architecture {gpu.architecture}")
            continue
        arch = data.architecture(gpu.architecture)
        if gpu.compute_capability not in arch.compute_capabilities:
            problems.append(f"{gpu.pci_id}: CC {gpu.compute_capability} is not a {arch.name} CC")
        if gpu.chip[:2] not in arch.codenames:
            problems.append(f"{gpu.pci_id}: chip {gpu.chip} does not carry a {arch.name} codename")

    ordered = sorted(data.toolkits, key=lambda t: version_tuple(t.version))
    for older, newer in itertools.pairwise(ordered):
        if version_tuple(newer.min_driver) < version_tuple(older.min_driver):
            problems.append(f"CUDA {newer.version} needs an older driver than CUDA {older.version}")
        if cc_tuple(newer.cc_min) < cc_tuple(older.cc_min) or cc_tuple(newer.cc_max) < cc_tuple(older.cc_max):
            problems.append(f"CUDA {newer.version} CC range goes backwards from {older.version}")
    floors = {f.cuda_major: f.min_branch for f in data.minor_version_floors}
    for toolkit in data.toolkits:
        if toolkit.major not in floors:
            problems.append(f"CUDA {toolkit.version}: no minor-version floor for CUDA {toolkit.major}")
        elif toolkit.min_branch < floors[toolkit.major]:
            problems.append(f"CUDA {toolkit.version} min driver is below the CUDA {toolkit.major} floor")
        if not any(b.max_cuda_major >= toolkit.major and b.branch >= toolkit.min_branch for b in data.branches):
            problems.append(f"CUDA {toolkit.version}: no branch runs it")

    toolkit_versions = {t.version for t in data.toolkits}
    for build in data.pytorch:
        if build.cuda is None:
            continue
        if build.cuda not in toolkit_versions:
            problems.append(f"torch {build.version} {build.variant}: CUDA {build.cuda} is not in toolkits")
            continue
        toolkit = data.toolkit(build.cuda)
        for sm in build.archs:
            major, minor = sm_to_cc(sm)
            if not toolkit.covers(f"{major}.{minor}"):
                problems.append(f"torch {build.version} {build.variant}: {sm} is outside CUDA {build.cuda}")
    for jax in data.jax:
        if jax.cuda_major not in floors:
            problems.append(f"jax[{jax.extra}]: no CUDA {jax.cuda_major} floor")
        elif jax.min_branch < floors[jax.cuda_major]:
            problems.append(f"jax[{jax.extra}]: min_branch below the CUDA {jax.cuda_major} floor")
    for lib in (*data.cudnn, *data.nccl):
        if lib.cuda_major not in floors:
            problems.append(f"{lib.packages[0]}: no CUDA {lib.cuda_major}")

    for system in data.systems:
        origins: tuple[Origin, ...] = ("distribution", "nvidia")
        for origin in origins:
            for number in system.branches_from(origin):
                if number not in branch_numbers:
                    problems.append(f"{system.key} {origin}: branch {number} is not in branches")
        cuda = system.distribution.cuda
        if cuda is not None and cuda.version not in toolkit_versions:
            problems.append(f"{system.key}: distribution CUDA {cuda.version} is not in toolkits")
        for origin in system.source_order:
            for number in system.branches_from(origin):
                for flavor in data.branch(number).flavors if number in branch_numbers else ():
                    if data.driver_packages_for(system.family, origin, flavor, number) is None:
                        problems.append(f"{system.key}: no {origin} {flavor} packages for branch {number}")

    for row in data.driver_packages:
        for name in row.packages:
            probe = name
            for placeholder in PLACEHOLDERS:
                probe = probe.replace(placeholder, "x")
            if "{" in probe or "}" in probe:
                problems.append(f"package template {name!r} has an unknown placeholder")
    catalogued = {g.pci_id for g in data.gpus}
    for machine in data.machines:
        for pci_id in machine.gpus:
            if pci_id not in catalogued:
                problems.append(f"machine {machine.product}: GPU {pci_id} is not in the catalogue")
    return problems


def all_package_names(data: CompatData) -> list[str]:
    """Every package name the data can produce, templates expanded for each branch and sample kernel flavours."""
    names: list[str] = []
    for row in data.driver_packages:
        for branch in data.branches:
            if not row.applies(row.family, row.origin, row.flavor, branch.branch):
                continue
            for server in (False, True):
                for kernel_flavor in ("generic", "generic-hwe-24.04", "aws"):
                    names += row.expand(branch=branch.branch, server=server, kernel_flavor=kernel_flavor)
    for toolkit in data.toolkits:
        names += toolkit.packages
    for lib in (*data.cudnn, *data.nccl):
        names += lib.packages
    for system in data.systems:
        for extra in (system.distribution.cuda, system.distribution.cudnn, system.distribution.nccl):
            if extra is not None:
                names += extra.packages
    names.append(data.nvidia_repository.keyring_package)
    return sorted(set(names))


def _read_folder(folder: Path | Any) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for name in DATA_FILES:
        text = (folder / f"{name}.yaml").read_text(encoding="utf-8")
        loaded = yaml.load(text, Loader=_YAML_LOADER)  # a safe loader: the C one when PyYAML has it
        if not isinstance(loaded, Mapping):
            raise DlsetupError(f"compatibility data {name}.yaml is not a mapping")
        for key, value in loaded.items():
            if key in merged:
                raise DlsetupError(f"compatibility data: key {key!r} appears in more than one file")
            merged[key] = value
    return merged


def _validate(raw: Mapping[str, Any], where: str) -> CompatData:
    try:
        return CompatData.model_validate(raw)
    except ValidationError as exc:
        lines = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
        raise DlsetupError(f"compatibility data in {where} is invalid: " + "; ".join(lines)) from exc


def load_compat_data_from(folder: Path) -> CompatData:
    """Read and validate the data files in ``folder`` (same names as the shipped ones)."""
    return _validate(_read_folder(folder), str(folder))


@cache
def load_compat_data() -> CompatData:
    """The shipped compatibility data, validated once per process."""
    folder = resources.files("dlsetup.compat") / "data"
    return _validate(_read_folder(folder), "dlsetup/compat/data")


def raw_rows() -> dict[str, Any]:
    """The shipped data as plain YAML structures (for data tests that walk every row)."""
    return _read_folder(resources.files("dlsetup.compat") / "data")
