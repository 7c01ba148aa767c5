"""What the reliability suite compares before and after each case: the host's ``/etc``, ``/opt`` and dpkg's
selections (a copy of ``host_state()`` of tests/integration/test_nvidia_path.py, which is a test module and not
imported), and the processes a dlsetup run left behind on this machine."""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


def host_state(host: Any, trees: Sequence[str] = ("/etc", "/opt")) -> dict[str, str]:
    """Every entry under ``trees`` (type, mode, owner, and the sha256 of a file's bytes or a link's target), read
    through the host's root here, plus ``dpkg --get-selections`` and every package's version and status."""
    state: dict[str, str] = {}
    for tree in trees:
        top = host.root / tree.lstrip("/")
        for dirpath, dirnames, filenames in os.walk(top):
            dirnames.sort()
            for name in [*dirnames, *sorted(filenames)]:
                path = Path(dirpath) / name
                info = path.lstat()
                key = "/" + str(path.relative_to(host.root))
                meta = f"{stat.filemode(info.st_mode)} {info.st_uid}:{info.st_gid}"
                if stat.S_ISLNK(info.st_mode):
                    state[key] = f"{meta} -> {os.readlink(path)}"
                elif stat.S_ISREG(info.st_mode):
                    state[key] = f"{meta} {hashlib.sha256(path.read_bytes()).hexdigest()}"
                else:
                    state[key] = meta
    for label, cmd in (
        ("dpkg --get-selections", "dpkg --get-selections '*'"),
        ("dpkg-query", "dpkg-query -W -f='${Package} ${Version} ${Status}\\n'"),
    ):
        result = host.run(cmd)
        assert result.returncode == 0, result.stderr
        state[label] = result.stdout
    return state


def differences(before: Mapping[str, str], after: Mapping[str, str]) -> list[str]:
    changed = [f"changed {k}" for k in sorted(before.keys() & after.keys()) if before[k] != after[k]]
    return [
        *(f"removed {k}" for k in sorted(before.keys() - after.keys())),
        *(f"added {k}" for k in sorted(after.keys() - before.keys())),
        *changed,
    ]


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
