"""Where the packages and wheels of a plan come from: NVIDIA's CUDA repository, PyTorch's wheel index, the general
package index, or a local wheelhouse. The public addresses are data (``systems.yaml``, ``frameworks.yaml``); a user
may replace each, per host or group (inventory) or per run (command line), with a mirror of the same layout.

Overrides are validated here, before anything runs; the resolver turns them into the plan's addresses.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from dlsetup.plan.model import PlanInputError, SourceOverrides
from dlsetup.plan.schema import CompatData, OperatingSystem, TorchBuild

# inventory variable → override field
INVENTORY_KEYS = {
    "dlsetup_nvidia_repo": "nvidia_repo",
    "dlsetup_nvidia_repo_key": "nvidia_repo_key",
    "dlsetup_pytorch_index": "pytorch_index",
    "dlsetup_pip_index": "pip_index",
    "dlsetup_wheelhouse": "wheelhouse",
}
_SCHEMES = ("http", "https", "file")
_FINGERPRINT = re.compile(r"^[0-9A-F]{40}$")
# Machine architecture → NVIDIA's repository directory (sbsa on aarch64 servers).
REPO_ARCH = {"x86_64": "x86_64", "aarch64": "sbsa"}


def _url(value: object, what: str, where: str) -> str:
    text = str(value).strip() if isinstance(value, str) else ""
    parts = urlsplit(text)
    if parts.scheme not in _SCHEMES or (parts.scheme != "file" and not parts.netloc):
        raise PlanInputError(f"{where}: {what} {value!r} is not an http(s):// or file:// address", kind="bad_source")
    return text.rstrip("/")


def validate_sources(raw: Mapping[str, Any], *, where: str) -> SourceOverrides:
    """Sources given as ``{field: value}`` (fields of :class:`SourceOverrides`); every problem is one line."""
    values: dict[str, str] = {}
    for key, value in raw.items():
        if value in (None, ""):
            continue
        if key in ("nvidia_repo", "pytorch_index", "pip_index"):
            values[key] = _url(value, key.replace("_", " "), where)
        elif key == "nvidia_repo_key":
            text = re.sub(r"\s+", "", str(value)).upper()
            if not isinstance(value, str) or not _FINGERPRINT.match(text):
                raise PlanInputError(
                    f"{where}: nvidia repo key {value!r} is not an OpenPGP fingerprint (40 hex digits)",
                    kind="bad_source",
                )
            values[key] = text
        elif key == "wheelhouse":
            if not isinstance(value, str) or not value.startswith("/"):
                raise PlanInputError(
                    f"{where}: wheelhouse {value!r} is not an absolute directory on the host", kind="bad_source"
                )
            values[key] = value.rstrip("/") or "/"
        else:
            raise PlanInputError(f"{where}: unknown source {key!r}", kind="bad_source")
    return SourceOverrides(**values)


# Role variables the plan sets for every run (Plan.to_extravars): an inventory value would be overridden
# silently, so it is refused, naming what the user sets instead.
_SOURCE_HINT = "set {key} (or --{flag}) instead: the plan derives the role variable from it"
PLAN_OWNED: Mapping[str, str] = {
    "nvidia_driver_repo_url": _SOURCE_HINT.format(key="dlsetup_nvidia_repo", flag="nvidia-repo"),
    "cuda_repo_url": _SOURCE_HINT.format(key="dlsetup_nvidia_repo", flag="nvidia-repo"),
    "nvidia_driver_repo_key_fingerprint": _SOURCE_HINT.format(key="dlsetup_nvidia_repo_key", flag="nvidia-repo-key"),
    "nvidia_driver_repo_key_file": "the key file is NVIDIA's (3bf863cc.pub); a mirror serves it under the same name",
    "dl_stack_torch_index_url": _SOURCE_HINT.format(key="dlsetup_pytorch_index", flag="pytorch-index"),
    "dl_stack_index_url": _SOURCE_HINT.format(key="dlsetup_pip_index", flag="pip-index"),
    "dl_stack_wheelhouse": _SOURCE_HINT.format(key="dlsetup_wheelhouse", flag="wheelhouse"),
    **{
        name: "use --tags to run only some roles; the plan decides which roles have work to do"
        for name in ("nvidia_driver_enabled", "cuda_enabled", "dl_stack_enabled", "laptop_enabled")
    },
    **{
        name: "pin the choice instead (dlsetup_pins or --pin, e.g. driver_branch=580, cuda_version=12.9, "
        "pytorch_version=2.7.1; docs/plan.md)"
        for name in (
            "nvidia_driver_source",
            "nvidia_driver_branch",
            "nvidia_driver_flavor",
            "nvidia_driver_packages",
            "nvidia_driver_pin_packages",
            "nvidia_driver_other_flavor_packages",
            "nvidia_driver_branch_named_packages",
            "cuda_source",
            "cuda_version",
            "nvidia_driver_version",
            "cuda_packages",
            "cuda_cudnn_version",
            "dl_stack_torch_version",
            "dl_stack_jax_extra",
            "dl_stack_torch_variant",
            "dl_stack_expected_gpus",
            "laptop_profile",
            "laptop_prime_mode",
            "laptop_mem_sleep_default",
        )
    },
}


def refuse_plan_owned(hostvars: Mapping[str, Any], *, where: str) -> None:
    """A role variable the plan sets, given in the inventory, would be overridden: refuse it with a reason."""
    for name, hint in PLAN_OWNED.items():
        if name in hostvars:
            raise PlanInputError(
                f"{where}: {name} is set by dlsetup's plan and would override the inventory's value; {hint}",
                kind="bad_input",
            )


def sources_from_inventory(hostvars: Mapping[str, Any], *, where: str) -> SourceOverrides:
    """The ``dlsetup_nvidia_repo`` ... variables of one host; a plan-owned role variable there is refused."""
    refuse_plan_owned(hostvars, where=where)
    if "dlsetup_nvidia_repo_url" in hostvars:
        raise PlanInputError(
            f"{where}: dlsetup_nvidia_repo_url is not read any more: set dlsetup_nvidia_repo to the base of the "
            "mirror (the part before compute/cuda/repos/), dlsetup adds the OS's directory",
            kind="bad_source",
        )
    return validate_sources({field: hostvars.get(key) for key, field in INVENTORY_KEYS.items()}, where=where)


def nvidia_repository_url(data: CompatData, system: OperatingSystem, sources: SourceOverrides, arch: str) -> str:
    """``https://developer.download.nvidia.com/compute/cuda/repos/debian12/x86_64/``, or the same on a mirror."""
    repo = data.nvidia_repository
    base = sources.nvidia_repo or repo.base_url
    path = repo.path_template.format(directory=system.nvidia_repository.directory, arch=REPO_ARCH.get(arch, arch))
    return f"{base.rstrip('/')}/{path}"


def nvidia_repository_key(data: CompatData, sources: SourceOverrides) -> str:
    return sources.nvidia_repo_key or data.nvidia_repository.key_fingerprint


def pytorch_index_url(data: CompatData, build: TorchBuild, sources: SourceOverrides) -> str | None:
    """The index of ``build``'s variant (``<base>/cu126``), or None for a build from the general index."""
    if build.index == "default":
        return sources.pip_index
    return f"{(sources.pytorch_index or data.pytorch_index.base_url).rstrip('/')}/{build.variant}"
