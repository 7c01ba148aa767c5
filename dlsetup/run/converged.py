"""Whether a host is still in the state its last provision converged to, so that a re-run can skip its roles.

A provision records, last in site.yml, a *fingerprint* of what it was asked to do (the plan's role variables, the
GPUs it was planned for, the roles, the user's role variables and dlsetup's version), a *spec* of what to read
back (the planned packages, the files the roles manage, the framework venv) and the *probe* of that spec (module
``dlsetup_converged``: versions and holds, SHA-256 of each file, the venv's link, interpreter and distributions).
The next run's facts step probes the same spec; a host whose fingerprint and probe are both unchanged, and that
has no pending reboot or apt update, is converged: its roles are not run. ``provision --full`` runs them anyway.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

import yaml

from dlsetup import __version__, paths

# role variables naming the files a role writes (their values are absolute paths in the roles' vars files)
_MANAGED_KEY = re.compile(r"^__\w+_(file|keyring|dropin|download|marker)$")
# written after the probe (the record itself, the baseline after verify): never part of what is compared
_NOT_PROBED = ("__base_state_file", "__base_baseline_file")
# files whose presence means the roles still have work to do (a reboot to finish, an apt update to make)
_PENDING = ("__base_apt_update_marker", "__base_reboot_marker")
# the prefixes of the variables the roles read: those of them the inventory sets are part of the fingerprint
_ROLE_PREFIXES = ("base_", "nvidia_driver_", "cuda_", "dl_stack_", "laptop_", "hw_facts_", "dlsetup_")
DEFAULT_VENV = "/opt/dlsetup/venv"


@cache
def _role_paths() -> dict[str, str]:
    """Every ``__*_file``/``_keyring``/``_dropin``/``_download``/``_marker`` of the shipped roles' vars files."""
    found: dict[str, str] = {}
    for vars_file in sorted(paths.roles_dir().glob("*/vars/*.yml")):
        data = yaml.safe_load(vars_file.read_text()) or {}
        for key, value in data.items():
            if _MANAGED_KEY.match(key) and isinstance(value, str) and value.startswith("/") and "{{" not in value:
                found[key] = value
    return found


def managed_files() -> list[str]:
    return sorted({v for k, v in _role_paths().items() if k not in _NOT_PROBED})


def pending_markers() -> list[str]:
    return sorted(v for k, v in _role_paths().items() if k in _PENDING)


@cache
def _base_packages() -> tuple[str, ...]:
    defaults = yaml.safe_load((paths.roles_dir() / "base" / "defaults" / "main.yml").read_text())
    return tuple(defaults.get("base_packages") or ())


def spec(host_vars: Mapping[str, Any], inventory_vars: Mapping[str, Any]) -> dict[str, list[str]]:
    """What to probe on a host given these role variables: its planned packages (the plan's driver and CUDA
    packages, the base role's), every file the roles manage, and the framework venv."""
    merged = {**inventory_vars, **host_vars}
    wanted = [
        *(merged.get("base_packages") or _base_packages()),
        *(merged.get("base_extra_packages") or ()),
        *(merged.get("nvidia_driver_packages") or ()),
        *(merged.get("cuda_packages") or ()),
    ]
    packages = sorted({str(p).split("=", 1)[0] for p in wanted if p and not any(c in str(p) for c in "*?[")})
    venv = str(merged.get("dl_stack_venv_path") or DEFAULT_VENV)
    return {"packages": packages, "files": managed_files(), "venvs": [venv] if merged.get("dl_stack_enabled") else []}


def fingerprint(
    host_vars: Mapping[str, Any],
    gpus: Sequence[Any],
    roles: Sequence[str],
    extravars: Mapping[str, Any] | None,
    inventory_vars: Mapping[str, Any],
) -> str:
    """SHA-256 of everything a run of site.yml was asked to do on a host."""
    asked = {
        "dlsetup": __version__,
        # the plan without reboot_required, a state of the host rather than a choice (as in the record)
        "host_vars": {k: _without_reboot(k, v) for k, v in host_vars.items() if k != "dlsetup_state"},
        "gpus": list(gpus),
        "roles": sorted(roles),
        "extravars": dict(extravars or {}),
        "inventory": {k: v for k, v in inventory_vars.items() if k.startswith(_ROLE_PREFIXES)},
    }
    return hashlib.sha256(json.dumps(asked, sort_keys=True, default=str).encode()).hexdigest()


def _without_reboot(key: str, value: Any) -> Any:
    if key == "dlsetup_plan" and isinstance(value, Mapping):
        return {k: v for k, v in value.items() if k != "reboot_required"}
    return value


@dataclass(frozen=True)
class Convergence:
    """A host's comparison: ``converged`` or not, and in one line why (what differs, or what was compared)."""

    converged: bool
    reason: str


def _differences(recorded: Mapping[str, Any], now: Mapping[str, Any]) -> list[str]:
    found: list[str] = []
    for section, what in (("packages", "package"), ("files", "file"), ("venvs", "venv")):
        before, after = recorded.get(section) or {}, now.get(section) or {}
        for key in sorted(set(before) | set(after)):
            if before.get(key) != after.get(key):
                found.append(f"{what} {key}{_change(section, before.get(key), after.get(key))}")
    return found


def _change(section: str, before: Any, after: Any) -> str:
    if section == "packages" and isinstance(before, dict) and isinstance(after, dict):
        parts = []
        if before.get("version") != after.get("version"):
            parts.append(f"{before.get('version') or 'absent'} -> {after.get('version') or 'absent'}")
        if before.get("hold") != after.get("hold"):
            parts.append("hold released" if before.get("hold") else "now held")
        return f" ({', '.join(parts)})" if parts else ""
    if section == "files":
        return " (removed)" if after is None else " (created)" if before is None else " (changed)"
    return " (removed)" if after is None else " (changed)"


def compare(
    recorded: Mapping[str, Any] | None, wanted_fingerprint: str, probe_now: Mapping[str, Any] | None
) -> Convergence:
    """Whether the host is converged: the recorded fingerprint is the one of this run, and the probe now reads
    what the record read at the end of the last provision."""
    if not recorded or not isinstance(recorded.get("probe"), dict):
        return Convergence(False, "no record of a completed provision with this dlsetup")
    if recorded.get("fingerprint") != wanted_fingerprint:
        return Convergence(False, "the plan, the GPUs, the roles or their variables changed since the last provision")
    if probe_now is None:
        return Convergence(False, "the converged state could not be read")
    pending = [p for p in pending_markers() if (probe_now.get("files") or {}).get(p) is not None]
    if pending:
        return Convergence(False, f"work is pending ({', '.join(pending)})")
    differences = _differences(recorded["probe"], probe_now)
    if differences:
        more = f" and {len(differences) - 3} more" if len(differences) > 3 else ""
        return Convergence(False, f"changed since the last provision: {'; '.join(differences[:3])}{more}")
    counts = {k: len(probe_now.get(k) or {}) for k in ("packages", "files", "venvs")}
    return Convergence(
        True,
        f"converged: plan unchanged, {counts['packages']} package(s), {counts['files']} file(s) and "
        f"{counts['venvs']} venv(s) as the last provision left them",
    )
