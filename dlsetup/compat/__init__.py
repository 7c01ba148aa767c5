"""Compatibility knowledge and the stack resolver.

- ``data/*.yaml``: the facts, a source on every row, validated at load (:mod:`dlsetup.compat.models`).
- :mod:`dlsetup.compat.catalogue`: GPU lookup by PCI id or model name, pci.ids codename fallback.
- :mod:`dlsetup.compat.pins`: user pins, checked before anything runs.
- :mod:`dlsetup.compat.resolver`: ``resolve_stack(request) -> Plan`` (pure).
- :mod:`dlsetup.compat.render`: the plan for a terminal.
"""

from __future__ import annotations

from dlsetup.compat import catalogue, pins, render, resolver
from dlsetup.compat.models import CompatData, load_compat_data
from dlsetup.compat.pins import validate_pins
from dlsetup.compat.plan import Plan, PlanInputError, StackRequest, error_payload
from dlsetup.compat.resolver import request_from_facts, request_offline, resolve_stack

__all__ = [
    "CompatData",
    "Plan",
    "PlanInputError",
    "StackRequest",
    "catalogue",
    "error_payload",
    "load_compat_data",
    "pins",
    "render",
    "request_from_facts",
    "request_offline",
    "resolve_stack",
    "resolver",
    "validate_pins",
]
