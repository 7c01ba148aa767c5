"""What changed in a host's plan since the last provision. Pure.

The previous plan is the Plan JSON a host's record holds, which an older dlsetup may have written: it is compared
field by field as a document, so a record of another shape shows every field as changed rather than failing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# The choices that make a host different, in the order they are reported.
COMPARED = (
    ("driver", "branch"),
    ("driver", "flavor"),
    ("driver", "source"),
    ("cuda", "version"),
    ("pytorch", "variant"),
    ("pytorch", "version"),
    ("jax", "extra"),
)


def _field(plan: Mapping[str, Any], section: str, key: str) -> Any:
    part = plan.get(section)
    return part.get(key) if isinstance(part, Mapping) else None


def plan_changes(previous_plan: Mapping[str, Any] | None, plan: Mapping[str, Any]) -> list[str]:
    """Lines such as ``"driver flavor: proprietary -> open"``; empty without a previous plan (first provision)."""
    if not previous_plan:
        return []
    changes = []
    for section, key in COMPARED:
        old, new = _field(previous_plan, section, key), _field(plan, section, key)
        if old != new:
            changes.append(f"{section} {key}: {old} -> {new}")
    return changes
