"""What a host is expected to be when nobody said: the defaults of ``dlsetup verify``.

Without ``--expect`` / ``dlsetup_expect`` a verify still checks what the host itself says it should be:

- **the hardware baseline** (:class:`~dlsetup.facts.baseline.HardwareBaseline`, the hardware of the last verified
  run): as many GPUs as it had (``gpu_count``), so a GPU that disappeared fails until it is back or accepted
  (``--accept-hardware``); its links are compared in the checks themselves (:mod:`dlsetup.verify.checks`);
- **PCI** (the facts), without a baseline: every NVIDIA GPU on PCI is expected, and listed by the driver
  (``gpu_count``);
- **the plan record** (:class:`~dlsetup.facts.record.HostRecord`, written by the last provision): the driver branch
  and kernel module flavour, the CUDA version the driver must support (the toolkit's and the PyTorch wheel's), and
  the frameworks installed into the venv: PyTorch (its version and wheel variant) and JAX.

Explicit expectations win, key by key; every value keeps where it came from (``Expectations.origins``). The
recorded plan is read as plain JSON, leniently: a record from another dlsetup version that lacks a field (or has
a value that would not pass as an expectation) just gives no default for it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from packaging.version import InvalidVersion, Version

from dlsetup.facts.baseline import HardwareBaseline
from dlsetup.facts.model import HostFacts
from dlsetup.facts.record import RECORD_PATH, HostRecord
from dlsetup.verify.expect import FROM_BASELINE, FROM_INVENTORY, FROM_PCI, FROM_RECORD, Expectations, coerce


def _part(plan: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = plan.get(name)
    return value if isinstance(value, Mapping) else {}


def _text(value: Any) -> str | None:
    return str(value) if isinstance(value, str | int) and not isinstance(value, bool) and str(value) else None


def _highest(versions: list[str]) -> str | None:
    parsed: list[tuple[Version, str]] = []
    for text in versions:
        try:
            parsed.append((Version(text), text))
        except InvalidVersion:
            continue
    return max(parsed)[1] if parsed else None


def from_record(record: HostRecord | None) -> dict[str, Any]:
    """The expectations the applied plan of ``record`` implies (raw values, validated by :func:`with_defaults`)."""
    if record is None or record.plan is None:
        return {}
    plan: Mapping[str, Any] = record.plan
    values: dict[str, Any] = {}
    # only what the recorded run applied: a provision with --tags ran some roles
    driver = _part(plan, "driver") if record.applied("nvidia_driver") else {}
    if branch := _text(driver.get("branch")):
        values["driver_branch"] = branch
    if flavor := _text(driver.get("flavor")):
        values["driver_flavor"] = flavor
    pytorch = _part(plan, "pytorch") if record.applied("dl_stack") else {}
    toolkit = _text(_part(plan, "cuda").get("version")) if record.applied("cuda") else None
    cuda = _highest([v for v in (toolkit, _text(pytorch.get("cuda"))) if v])
    if cuda and driver:
        values["cuda_version"] = cuda
    frameworks = []
    if not record.applied("dl_stack"):
        return values
    if version := _text(pytorch.get("version")):
        frameworks.append("pytorch")
        values["pytorch_version"] = version
        if variant := _text(pytorch.get("variant")):
            values["pytorch_variant"] = variant
        # the dl_stack role installs JAX into the same venv, and only with PyTorch (Plan.to_extravars)
        if _text(_part(plan, "jax").get("extra")):
            frameworks.append("jax")
    values["framework"] = ",".join(frameworks) or "none"
    return values


def with_defaults(
    explicit: Expectations,
    facts: HostFacts,
    record: HostRecord | None,
    baseline: HardwareBaseline | None = None,
) -> Expectations:
    """``explicit`` completed with the defaults of the host's hardware baseline (its GPU count), PCI devices and
    plan record (explicit keys win)."""
    values = explicit.to_dict()
    origins = {k: explicit.origins.get(k, FROM_INVENTORY) for k in values}
    defaults: dict[str, tuple[Any, str]] = {}
    if baseline is not None and baseline.gpus:
        # the GPUs of the last verified run: one that disappeared fails until it is back or accepted
        defaults["gpu_count"] = (len(baseline.gpus), FROM_BASELINE)
    elif facts.gpus:
        defaults["gpu_count"] = (len(facts.gpus), FROM_PCI)
    recorded = from_record(record)
    if "framework" in values:
        # the user said which frameworks: the record's PyTorch build applies only when PyTorch is among them
        recorded.pop("framework", None)
        if "pytorch" not in str(values["framework"]).split(","):
            recorded.pop("pytorch_version", None)
            recorded.pop("pytorch_variant", None)
    for key, value in recorded.items():
        defaults[key] = (value, FROM_RECORD)
    for key, (value, origin) in defaults.items():
        if key in values:
            continue
        try:
            values[key] = coerce(key, value)
        except ValueError:
            continue  # a record of another dlsetup version: no default for this key
        origins[key] = origin
    return Expectations(**values, origins=origins)


def nothing_checked_reason(facts: HostFacts, record: HostRecord | None, explicit: Expectations) -> str:
    """Why a host on which every check was skipped had nothing to check, in one line."""
    missing = []
    if not facts.gpus:
        missing.append("no NVIDIA GPU on PCI")
    if record is None:
        missing.append(f"no record of a provision ({RECORD_PATH})")
    elif record.plan is None:
        missing.append("the provision record holds no plan")
    if not explicit.to_dict():
        missing.append("no expectation given")
    what = ", ".join(missing) or "every check was skipped"
    return f"{what}: provision the host, or give expectations (--expect KEY=VALUE, dlsetup_expect)"
