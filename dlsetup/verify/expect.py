"""Verification expectations: the ``dlsetup_expect`` inventory variable and ``--expect KEY=VALUE`` flags.

Values are validated before anything runs; any problem is one ConfigError line naming the host (or flag), the key
and what is wrong. A key the user does not give may still be expected by default (:mod:`.defaults`: the GPUs on
PCI, the record of the applied plan); every value carries where it came from (:attr:`Expectations.origins`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from dlsetup.config.flags import parse_key_values
from dlsetup.errors import ConfigError

FRAMEWORKS = ("pytorch", "jax", "none")
FLAVORS = ("open", "proprietary")
LANE_SOURCES = ("cpu", "chipset")
PCIE_WIDTHS = (1, 2, 4, 8, 12, 16, 32)
_VERSION = re.compile(r"^\d+\.\d+$")
_BRANCH = re.compile(r"^\d{3}$")
_RELEASE = re.compile(r"^\d+\.\d+(\.\d+)?$")
_VARIANT = re.compile(r"^(cpu|cu\d{3,}|rocm\d+(\.\d+)*)$")

# where an expected value came from, as the report names it ("expected from: ...")
FROM_FLAG = "--expect"
FROM_INVENTORY = "inventory"
FROM_RECORD = "plan record"
FROM_PCI = "PCI"
FROM_BASELINE = "hardware baseline"


@dataclass(frozen=True)
class Expectations:
    """What a host should be. ``None`` means "do not check". ``origins`` maps each key set to where its value came
    from (``--expect``, ``inventory``, ``plan record``, ``PCI``); it is not part of what is expected (equality)."""

    gpu_count: int | None = None
    gpu_model: str | None = None
    gpu_memory_min_mib: int | None = None
    pcie_width_min: int | None = None
    pcie_gen_min: int | None = None
    # where every GPU's lanes come from: "cpu" (a chipset-wired GPU fails) or "chipset"
    pcie_lane_source: str | None = None
    memory_min_mib: int | None = None
    root_disk_ssd: bool | None = None
    driver_branch: str | None = None
    driver_flavor: str | None = None
    cuda_version: str | None = None
    # "pytorch", "jax", "none", or both frameworks as "pytorch,jax"
    framework: str | None = None
    # torch's release (torch.__version__ without its local label), e.g. "2.11.0"; "2.11" matches any 2.11.x
    pytorch_version: str | None = None
    # the wheel variant: "cu130" (built with CUDA 13.0: torch.version.cuda) or "cpu" (no CUDA)
    pytorch_variant: str | None = None
    # share of the theoretical gen x width bandwidth a pinned host-to-device copy must reach
    pcie_bandwidth_min_ratio: float | None = None
    origins: Mapping[str, str] = field(default_factory=dict, compare=False, hash=False, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """The keys set, with their values (``origins`` apart)."""
        return {k: getattr(self, k) for k in KNOWN_KEYS if getattr(self, k) is not None}

    def origin(self, key: str) -> str | None:
        """Where the value of ``key`` came from; ``None`` when it is not set."""
        if getattr(self, key) is None:
            return None
        return self.origins.get(key)

    def wants(self, framework: str) -> bool:
        """Whether ``framework`` (``pytorch``/``jax``) must be importable: named in ``framework``, or, for PyTorch,
        a version or variant expected."""
        named = framework in (self.framework or "").split(",")
        return named or (framework == "pytorch" and (self.pytorch_version or self.pytorch_variant) is not None)


KNOWN_KEYS = tuple(f.name for f in fields(Expectations) if f.name != "origins")


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
        names = [n.strip() for n in str(value).strip().lower().split(",")]
        if not names or any(n not in FRAMEWORKS for n in names) or ("none" in names and len(names) > 1):
            raise ValueError(f"{key} must be one of {', '.join(FRAMEWORKS)}, got {value!r}")
        return ",".join(n for n in FRAMEWORKS if n in names)
    if key == "pytorch_version":
        text = str(value).strip()
        if isinstance(value, bool) or not _RELEASE.match(text):
            raise ValueError(f"{key} must look like 2.11.0 (or 2.11), got {value!r}")
        return text
    if key == "pytorch_variant":
        text = str(value).strip().lower()
        if isinstance(value, bool) or not _VARIANT.match(text):
            raise ValueError(f"{key} must be a wheel variant such as cu130 or cpu, got {value!r}")
        return text
    if key == "pcie_lane_source":
        text = str(value).strip().lower()
        if isinstance(value, bool) or text not in LANE_SOURCES:
            raise ValueError(f"{key} must be one of {', '.join(LANE_SOURCES)}, got {value!r}")
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


def parse_expectations(raw: Any, *, where: str, origin: str | Mapping[str, str] = FROM_INVENTORY) -> Expectations:
    """Validate a ``dlsetup_expect`` mapping; ``where`` names its origin in error messages, ``origin`` is where the
    values came from (one for all, or per key; a key missing there is from the inventory)."""
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
    origins = {k: (origin if isinstance(origin, str) else origin.get(k, FROM_INVENTORY)) for k in values}
    return Expectations(**values, origins=origins)


def coerce(key: str, value: Any) -> Any:
    """One value of ``key`` validated and normalised (``ValueError`` says what is wrong)."""
    if key not in KNOWN_KEYS:
        raise ValueError(f"unknown expectation {key!r}")
    return _coerce(key, value)


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
    origins = {k: FROM_FLAG if k in flags else FROM_INVENTORY for k in merged}
    return parse_expectations(merged, where=f"host {host}", origin=origins)
