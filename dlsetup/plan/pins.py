"""User pins (inventory ``dlsetup_pins`` or ``--pin KEY=VALUE``): keys, types and values checked against the data.

Whether a pin suits the host's GPUs and OS is decided by the resolver (``pin_conflict``); this module only refuses
pins that cannot mean anything (``bad_pin``): an unknown key, a wrong type, a branch or version dlsetup has no
data for.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from packaging.version import Version

from dlsetup.plan.load import load_compat_data
from dlsetup.plan.model import Pins, PlanInputError
from dlsetup.plan.schema import CompatData

PIN_KEYS = (
    "driver_branch",
    "driver_flavor",
    "driver_source",
    "cuda_version",
    "pytorch_variant",
    "pytorch_version",
)
FLAVORS = ("open", "proprietary")
SOURCES = ("distribution", "nvidia")
_BRANCH = re.compile(r"^\d{3}$")
_CUDA = re.compile(r"^\d+\.\d+$")
_VARIANT = re.compile(r"^(cpu|cu\d{3})$")
_TORCH = re.compile(r"^\d+\.\d+(\.\d+)?$")


def _bad(where: str | None, key: str, problem: str, hint: str | None = None) -> PlanInputError:
    prefix = f"{where}: " if where else ""
    return PlanInputError(f"{prefix}pin {key}: {problem}", kind="bad_pin", hint=hint)


def _as_text(key: str, value: object, where: str | None, example: str) -> str:
    if isinstance(value, bool) or not isinstance(value, str):
        hint = f"quote it in YAML: {key}: '{value}'" if isinstance(value, float) else None
        raise _bad(where, key, f"expected a string such as {example!r}, got {type(value).__name__} {value!r}", hint)
    return value.strip()


def validate_pins(
    raw: Mapping[str, Any] | None, *, where: str | None = None, data: CompatData | None = None
) -> dict[str, Any]:
    """Check a pins mapping and return it normalised (branch as int, the rest as strings; unset keys dropped).

    Raises :class:`PlanInputError` (kind ``bad_pin``, exit 2) naming ``where`` and the key. Idempotent: the
    result validates again to itself.
    """
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise PlanInputError(
            f"{where + ': ' if where else ''}pins must be a mapping, got {type(raw).__name__}", kind="bad_pin"
        )
    data = data or load_compat_data()
    result: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in PIN_KEYS:
            raise _bad(where, str(key), "unknown key", hint="known pins: " + ", ".join(PIN_KEYS))
        if value is None:
            continue
        if key == "driver_branch":
            result[key] = _branch(value, where, data)
        elif key == "driver_flavor":
            result[key] = _choice(key, _as_text(key, value, where, "proprietary"), FLAVORS, where)
        elif key == "driver_source":
            result[key] = _choice(key, _as_text(key, value, where, "nvidia"), SOURCES, where)
        elif key == "cuda_version":
            result[key] = _cuda(_as_text(key, value, where, "12.9"), where, data)
        elif key == "pytorch_variant":
            result[key] = _variant(_as_text(key, value, where, "cu126"), where, data)
        else:
            result[key] = _torch_version(_as_text(key, value, where, "2.14.0"), where, data)
    return result


def pins_from_mapping(raw: Mapping[str, Any] | None, *, where: str | None = None) -> Pins:
    """Validate ``raw`` and build :class:`Pins`."""
    valid = validate_pins(raw, where=where)
    return Pins(
        driver_branch=valid.get("driver_branch"),
        driver_flavor=valid.get("driver_flavor"),
        driver_source=valid.get("driver_source"),
        cuda_version=valid.get("cuda_version"),
        pytorch_variant=valid.get("pytorch_variant"),
        pytorch_version=valid.get("pytorch_version"),
    )


def _branch(value: object, where: str | None, data: CompatData) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise _bad(where, "driver_branch", f"expected a branch number such as 580, got {type(value).__name__}")
    text = str(value).strip().upper().removeprefix("R")
    if not _BRANCH.match(text):
        raise _bad(where, "driver_branch", f"{value!r} is not a driver branch (three digits, e.g. 580)")
    known = [b.branch for b in data.branches]
    if int(text) not in known:
        raise _bad(where, "driver_branch", f"no data for branch {text}", hint=f"known: {', '.join(map(str, known))}")
    return int(text)


def _choice(key: str, text: str, choices: tuple[str, ...], where: str | None) -> str:
    if text.lower() not in choices:
        raise _bad(where, key, f"{text!r} is not one of {', '.join(choices)}")
    return text.lower()


def _cuda(text: str, where: str | None, data: CompatData) -> str:
    if not _CUDA.match(text):
        raise _bad(where, "cuda_version", f"{text!r} is not MAJOR.MINOR (e.g. 12.9)")
    known = [t.version for t in data.toolkits]
    if text not in known:
        raise _bad(where, "cuda_version", f"no data for CUDA {text}", hint=f"known: {', '.join(known)}")
    return text


def _variant(text: str, where: str | None, data: CompatData) -> str:
    text = text.lower()
    if not _VARIANT.match(text):
        raise _bad(where, "pytorch_variant", f"{text!r} is not cpu or cuXYZ (e.g. cu126)")
    known = data.torch_variants()
    if text not in known:
        raise _bad(where, "pytorch_variant", f"no data for {text}", hint=f"known: {', '.join(known)}")
    return text


def _torch_version(text: str, where: str | None, data: CompatData) -> str:
    if not _TORCH.match(text):
        raise _bad(where, "pytorch_version", f"{text!r} is not a version such as 2.14.0")
    known = data.torch_versions()
    if text in known:
        return text
    # "2.14" means the one 2.14.x release dlsetup knows.
    wanted = Version(text).release
    matches = [v for v in known if Version(v).release[: len(wanted)] == wanted]
    if len(matches) == 1:
        return matches[0]
    raise _bad(where, "pytorch_version", f"no data for torch {text}", hint=f"known: {', '.join(known)}")
