"""Verification expectations: the ``dlsetup_expect`` inventory variable and ``--expect KEY=VALUE`` flags.

A key that is absent is not checked. Values are validated before anything runs; any problem is one
ConfigError line naming the host (or flag), the key and what is wrong.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

from dlsetup.config.flags import parse_key_values
from dlsetup.errors import ConfigError

FRAMEWORKS = ("pytorch", "jax", "none")
FLAVORS = ("open", "proprietary")
PCIE_WIDTHS = (1, 2, 4, 8, 12, 16, 32)
_VERSION = re.compile(r"^\d+\.\d+$")
_BRANCH = re.compile(r"^\d{3}$")


@dataclass(frozen=True)
class Expectations:
    """What a host should be. ``None`` means "do not check"."""

    gpu_count: int | None = None
    gpu_model: str | None = None
    gpu_memory_min_mib: int | None = None
    pcie_width_min: int | None = None
    pcie_gen_min: int | None = None
    memory_min_mib: int | None = None
    root_disk_ssd: bool | None = None
    driver_branch: str | None = None
    driver_flavor: str | None = None
    cuda_version: str | None = None
    framework: str | None = None
    # share of the theoretical gen x width bandwidth a pinned host-to-device copy must reach
    pcie_bandwidth_min_ratio: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


KNOWN_KEYS = tuple(f.name for f in fields(Expectations))


def _int(key: str, value: Any, *, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"{key} must be an integer, got {value!r}")
    try:
        number = int(value)
    except ValueError:
        raise ValueError(f"{key} must be an integer, got {value!r}") from None
    if number < minimum:
        raise ValueError(f"{key} must be >= {minimum}, got {number}")
    return number


def _bool(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in {"true", "yes", "1", "false", "no", "0"}:
        return value.lower() in {"true", "yes", "1"}
    raise ValueError(f"{key} must be true or false, got {value!r}")


def _coerce(key: str, value: Any) -> Any:
    if key in {"gpu_count", "gpu_memory_min_mib", "memory_min_mib"}:
        return _int(key, value)
    if key == "pcie_width_min":
        width = _int(key, value, minimum=1)
        if width not in PCIE_WIDTHS:
            raise ValueError(f"{key} must be one of {', '.join(map(str, PCIE_WIDTHS))}, got {width}")
        return width
    if key == "pcie_gen_min":
        gen = _int(key, value, minimum=1)
        if gen > 6:
            raise ValueError(f"{key} must be between 1 and 6, got {gen}")
        return gen
    if key == "root_disk_ssd":
        return _bool(key, value)
    if key == "gpu_model":
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"{key} must be a non-empty string (name substring or PCI id), got {value!r}")
        return value.strip()
    if key == "driver_branch":
        text = str(value).strip()
        if isinstance(value, bool) or not _BRANCH.match(text):
            raise ValueError(f"{key} must be a 3-digit driver branch such as 580, got {value!r}")
        return text
    if key == "cuda_version":
        text = str(value).strip()
        if isinstance(value, bool) or not _VERSION.match(text):
            raise ValueError(f"{key} must look like 12.4, got {value!r}")
        return text
    if key == "framework":
        text = str(value).strip().lower()
        if text not in FRAMEWORKS:
            raise ValueError(f"{key} must be one of {', '.join(FRAMEWORKS)}, got {value!r}")
        return text
    if key == "driver_flavor":
        text = str(value).strip().lower()
        if text not in FLAVORS:
            raise ValueError(f"{key} must be one of {', '.join(FLAVORS)}, got {value!r}")
        return text
    if key == "pcie_bandwidth_min_ratio":
        if isinstance(value, bool):
            raise ValueError(f"{key} must be a number between 0 and 1, got {value!r}")
        try:
            ratio = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{key} must be a number between 0 and 1, got {value!r}") from None
        if not 0 < ratio <= 1:
            raise ValueError(f"{key} must be a number between 0 and 1, got {value!r}")
        return ratio
    raise AssertionError(key)  # pragma: no cover - guarded by KNOWN_KEYS


def parse_expectations(raw: Any, *, where: str) -> Expectations:
    """Validate a ``dlsetup_expect`` mapping; ``where`` names its origin in error messages."""
    if raw is None:
        return Expectations()
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: dlsetup_expect must be a mapping of key: value, got {type(raw).__name__}")
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in KNOWN_KEYS:
            raise ConfigError(f"{where}: unknown expectation {key!r} (known: {', '.join(KNOWN_KEYS)})")
        if value is None:
            continue
        try:
            values[key] = _coerce(key, value)
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}") from None
    return Expectations(**values)


def parse_expect_flags(flags: Sequence[str]) -> dict[str, Any]:
    """``["gpu_count=2", ...]`` → a validated mapping (values coerced)."""
    values: dict[str, Any] = parse_key_values(flags, option="--expect", example="gpu_count=2")
    # validate once, so a bad flag fails even before any host is known
    parse_expectations(values, where="--expect")
    return values


def merge(inventory_value: Any, flags: Mapping[str, Any], *, host: str) -> Expectations:
    """Inventory expectations for ``host`` overridden by ``--expect`` flags."""
    base = parse_expectations(inventory_value, where=f"host {host}")
    merged = base.to_dict()
    merged.update(flags)
    return parse_expectations(merged, where=f"host {host}")
