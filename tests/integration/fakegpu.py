"""Dress a booted test host as a GPU machine: the replaying fake nvidia-smi, a recorded sysfs tree and
/proc/driver/nvidia from real captures (tests/fixtures). Nothing here invents output."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures"
FAKE_ROOT = "/opt/dlsetup-fake"


def _copy_tree(src: Path, dest: Path) -> None:
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(src, dest, symlinks=True)


def install(host: Any, *, sysfs: str, scenario: str | None = None, nvidia_proc: str | None = None) -> dict[str, str]:
    """Install the fakes into ``host`` (through its root on this machine) and return the inventory host vars
    that point our facts module at them."""
    root = Path(host.root)
    _copy_tree(FIXTURES / "sysfs" / sysfs, root / FAKE_ROOT.lstrip("/") / "sysfs")
    hostvars = {"hw_facts_sysfs_root": f"{FAKE_ROOT}/sysfs"}
    if scenario is not None:
        host.write_file("/usr/local/bin/nvidia-smi", (REPO / "tests" / "fakes" / "nvidia-smi").read_bytes(), 0o755)
        _copy_tree(FIXTURES / "nvidia-smi-scenarios" / scenario, root / "etc" / "dlsetup-fake-nvidia-smi")
    if nvidia_proc is not None:
        _copy_tree(FIXTURES / "nvidia-proc" / nvidia_proc, root / FAKE_ROOT.lstrip("/") / "nvidia-proc")
        hostvars["hw_facts_nvidia_proc_dir"] = f"{FAKE_ROOT}/nvidia-proc"
    return hostvars
