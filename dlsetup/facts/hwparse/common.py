"""Values every source shares: integers, PCI bus ids, driver versions, and reading a file that may be missing.

Stdlib-only, Python 3.8-compatible (shipped as Ansible module_utils; see the package docstring).
"""

# ruff: noqa: UP006, UP031, UP035, UP045, RUF100

from __future__ import annotations

import re
from typing import Optional

_PCI_ADDRESS_RE = re.compile(r"^([0-9a-fA-F]{4,8}):([0-9a-fA-F]{2}):([0-9a-fA-F]{2})\.([0-7])$")
_DRIVER_MAJOR_RE = re.compile(r"^\s*(\d+)")


def parse_int(value: Optional[str]) -> Optional[int]:
    """An integer cell or file content; ``None`` for sentinels (``[N/A]``) and anything that is not an integer."""
    if value is None:
        return None
    try:
        return int(value.strip())
    except ValueError:
        return None


def normalize_bus_id(bus_id: Optional[str]) -> Optional[str]:
    """The one form of a PCI bus id: ``DDDD:BB:DD.F``, lower-case hex, a 4-digit domain (more only above 0xffff).

    ``00000000:00:06.0`` (nvidia-smi, 8-digit domain) and ``0000:00:06.0`` (sysfs) give the same id; ``None`` for
    sentinels and anything that is not a bus id. Every comparison of bus ids goes through this function.
    """
    if bus_id is None:
        return None
    match = _PCI_ADDRESS_RE.match(bus_id.strip())
    if not match:
        return None
    domain, bus, device, function = match.groups()
    return "%04x:%s:%s.%s" % (int(domain, 16), bus.lower(), device.lower(), function)


def driver_major(version: Optional[str]) -> Optional[int]:
    """The branch of a driver version: ``580.159.04`` → 580; ``None`` when it does not start with a number."""
    if not version:
        return None
    match = _DRIVER_MAJOR_RE.match(version)
    return int(match.group(1)) if match else None


def read_text(path: str) -> Optional[str]:
    """A file's text, or ``None`` when it cannot be read (missing, unreadable, a directory)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read()
    except (OSError, ValueError):
        return None


def read_value(path: str) -> Optional[str]:
    """A one-value file (sysfs attribute), stripped; ``None`` when it cannot be read."""
    text = read_text(path)
    return text.strip() if text is not None else None
