"""Checks the compatibility data's rows against each other: ranges that must not contradict, references that must
resolve. :func:`consistency_problems` lists every contradiction; the loader refuses data that has any."""

from __future__ import annotations

import itertools
from collections.abc import Iterable

from packaging.version import Version

from dlsetup.plan.schema import PLACEHOLDERS, CompatData, Origin, sm_to_cc


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
    problems += _unique("package patterns of family", (p.family for p in data.driver_package_patterns))
    for family in sorted({s.family for s in data.systems} - {p.family for p in data.driver_package_patterns}):
        problems.append(f"no driver_package_patterns for the {family} family")
    problems += _unique("codename", (c for a in data.architectures for c in a.codenames))
    problems += _unique("chip prefix", (c.prefix for c in data.chips))
    for chip in data.chips:
        arch = data.architecture_for_codename(chip.prefix)
        if arch is None or chip.compute_capability not in arch.compute_capabilities:
            problems.append(f"chip {chip.prefix}: CC {chip.compute_capability} is not a CC of its architecture")
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
            first = min(covering, key=lambda t: Version(t.version), default=None)
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
        if arch.compute_capabilities and gpu.compute_capability not in arch.compute_capabilities:
            problems.append(f"{gpu.pci_id}: CC {gpu.compute_capability} is not a {arch.name} CC")
        if arch.dl_supported and (gpu.chip is None or gpu.chip[:2] not in arch.codenames):
            problems.append(f"{gpu.pci_id}: chip {gpu.chip} does not carry a {arch.name} codename")
        if gpu.open_modules and "open" not in arch.flavors:
            problems.append(f"{gpu.pci_id}: open modules flagged on a {arch.name} GPU, which needs the GSP of Turing+")
        if "proprietary" not in arch.flavors and gpu.open_modules is False:
            problems.append(f"{gpu.pci_id}: a {arch.name} GPU without open modules has no driver at all")

    ordered = sorted(data.toolkits, key=lambda t: Version(t.version))
    for older, newer in itertools.pairwise(ordered):
        if Version(newer.min_driver) < Version(older.min_driver):
            problems.append(f"CUDA {newer.version} needs an older driver than CUDA {older.version}")
        if Version(newer.cc_min) < Version(older.cc_min) or Version(newer.cc_max) < Version(older.cc_max):
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
    return sorted(set(names))
