"""``--accept-hardware``: make a host's ``dlsetup_expect`` describe the hardware it has now.

The keys that describe hardware are rewritten from the facts: ``gpu_count`` always, and ``gpu_model``,
``gpu_memory_min_mib``, ``pcie_width_min``, ``pcie_gen_min`` and ``memory_min_mib`` where the host's expectations
already name them (which checks a user wants stays their choice). Every other key is kept as it is.

Where the host comes from a plain YAML inventory file, its entry there gets the new ``dlsetup_expect`` through a
round-trip YAML library, so comments, order and layout stay; anything else (INI, a directory, a script, an ad-hoc
host) gets the block to paste.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap
from ruamel.yaml.error import YAMLError

from dlsetup.errors import ConfigError
from dlsetup.facts.model import HostFacts

# the expectation keys that describe the hardware (dlsetup.verify.expect.Expectations)
HARDWARE_KEYS = ("gpu_count", "gpu_model", "gpu_memory_min_mib", "pcie_width_min", "pcie_gen_min", "memory_min_mib")


@dataclass(frozen=True)
class Accepted:
    """The new ``dlsetup_expect`` of a host, and where it went: ``path`` (the inventory file rewritten) or
    ``block`` (the YAML to paste, when the inventory cannot be rewritten: ``why`` says why)."""

    host: str
    expect: dict[str, Any]
    path: Path | None
    block: str
    why: str | None = None


def hardware_expectations(facts: HostFacts, current: Mapping[str, Any] | None) -> dict[str, Any]:
    """``current`` (the host's ``dlsetup_expect``) with its hardware keys following ``facts``."""
    new: dict[str, Any] = dict(current or {})
    gpus = facts.gpus
    new["gpu_count"] = len(gpus)
    models = {g.model for g in gpus}
    memories = [g.memory_mib for g in gpus]
    widths = [g.pcie.width_current for g in gpus]
    gens = [min(x for x in (g.pcie.gen_max, g.pcie.slot_gen_max) if x is not None) for g in gpus
            if g.pcie.gen_max is not None or g.pcie.slot_gen_max is not None]  # fmt: skip
    values: dict[str, Any] = {
        "gpu_model": models.pop() if len(models) == 1 else None,
        "gpu_memory_min_mib": min(memories) if gpus and None not in memories else None,  # type: ignore[type-var]
        "pcie_width_min": min(widths) if gpus and None not in widths else None,  # type: ignore[type-var]
        "pcie_gen_min": min(gens) if gpus and len(gens) == len(gpus) else None,
        "memory_min_mib": facts.memory_mib // 1024 * 1024 if facts.memory_mib else None,
    }
    for key, value in values.items():
        if key not in new:
            continue
        if value is None or (not gpus and key.startswith(("gpu_", "pcie_"))):
            new.pop(key)  # not measurable now (mixed models, no driver, no GPU): not expected
        else:
            new[key] = value
    return new


def _block(host: str, expect: Mapping[str, Any]) -> str:
    out = io.StringIO()
    yaml = YAML()
    yaml.default_flow_style = False
    yaml.dump({host: {"dlsetup_expect": dict(expect)}}, out)
    return out.getvalue()


def _find_host(node: Any, host: str) -> CommentedMap | None:
    """The mapping of ``host`` under some group's ``hosts:`` in a YAML inventory (children followed)."""
    if not isinstance(node, Mapping):
        return None
    hosts = node.get("hosts")
    if isinstance(hosts, CommentedMap) and host in hosts:
        entry = hosts[host]
        if entry is None:
            hosts[host] = entry = CommentedMap()
        return entry if isinstance(entry, CommentedMap) else None
    children = node.get("children")
    if isinstance(children, Mapping):
        for child in children.values():
            found = _find_host(child, host)
            if found is not None:
                return found
    return None


def accept(host: str, facts: HostFacts, current: Mapping[str, Any] | None, inventory: Path | None) -> Accepted:
    """Write the host's new ``dlsetup_expect`` into ``inventory`` when it is a plain YAML file naming the host,
    else return the block to paste. Raises :class:`ConfigError` when the file cannot be written back."""
    expect = hardware_expectations(facts, current)
    block = _block(host, expect)
    if inventory is None:
        return Accepted(host, expect, None, block, "the host is not from an inventory file")
    if not inventory.is_file() or inventory.suffix not in (".yml", ".yaml"):
        return Accepted(host, expect, None, block, f"{inventory} is not a plain YAML inventory file")
    yaml = YAML()  # round-trip: comments, key order and quoting stay
    yaml.preserve_quotes = True
    yaml.width = 4096
    try:
        text = inventory.read_text()
        document = yaml.load(text)
    except (OSError, YAMLError) as exc:
        raise ConfigError(f"--accept-hardware: cannot read {inventory}: {str(exc).splitlines()[0]}") from None
    entry = None
    if isinstance(document, Mapping):
        entry = next((f for g in document.values() if (f := _find_host(g, host)) is not None), None)
    if entry is None:
        return Accepted(host, expect, None, block, f"{host} has no entry of its own in {inventory}")
    existing = entry.get("dlsetup_expect")
    if isinstance(existing, CommentedMap):
        for key in [k for k in existing if k not in expect]:
            del existing[key]
        for key, value in expect.items():
            existing[key] = value
    else:
        entry["dlsetup_expect"] = CommentedMap(expect)
    out = io.StringIO()
    yaml.dump(document, out)
    tmp = inventory.with_name(f".{inventory.name}.dlsetup-{os.getpid()}")
    try:
        tmp.write_text(out.getvalue())
        os.chmod(tmp, inventory.stat().st_mode & 0o7777)
        tmp.replace(inventory)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise ConfigError(f"--accept-hardware: cannot write {inventory}: {exc.strerror or exc}") from None
    return Accepted(host, expect, inventory, block)
