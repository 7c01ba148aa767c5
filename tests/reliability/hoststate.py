"""What the reliability suite compares before and after each case: the host's ``/etc``, ``/opt`` and dpkg's
selections (``host_state``/``differences`` of tests/integration/provisioning.py, the ones the integration tests
use), and the processes a dlsetup run left behind on this machine."""

from __future__ import annotations

import os
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from provisioning import differences, host_state

__all__ = ["TIMINGS", "Rig", "differences", "host_state", "processes_of"]

# (case id, seconds) of every case run, printed at the end of the pytest output
TIMINGS: list[tuple[str, float]] = []


@dataclass
class Rig:
    """The suite's host, the harness that booted it, and the inventory variables of its GPU fakes."""

    harness: Any
    host: Any
    fakes: dict[str, str]

    @property
    def host_vars(self) -> dict[str, Any]:
        """Every variable an inventory needs to reach the host and read its fakes."""
        return {**self.harness.inventory_vars(self.host), **self.fakes}

    def ssh_common_args(self, known_hosts: Path) -> str:
        """The connection arguments with another known_hosts file (its own SSH control path)."""
        return str(self.harness.ssh_common_args(known_hosts))


def processes_of(state_dir: Path) -> dict[int, str]:
    """The live processes (pid → command line) started by a dlsetup run whose ``DLSETUP_STATE_DIR`` is
    ``state_dir``: every child inherits that variable (ansible-playbook, its workers, the verify suite's pytest,
    testinfra's ansible). SSH control masters (``ControlPersist``) are left out: they outlive runs by design."""
    needle = f"DLSETUP_STATE_DIR={state_dir}\0".encode()
    found: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with suppress(OSError):
            if (entry / "comm").read_text().strip() == "ssh":
                continue
            if needle in (entry / "environ").read_bytes():
                found[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    return found
