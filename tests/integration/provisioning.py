"""Provisioning helpers the integration tests (and tests/reliability, benchmarks/) share: a re-run through
dlsetup's own API, the wheelhouse of a CPU-only host (a real PyTorch CPU build and JAX, offline on the host), and
the host's state byte for byte (what a run must leave unchanged)."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import harness as h

from dlsetup import commands
from dlsetup.config.targets import HostArgs

TORCH_WHEEL = "torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl"
WHEEL_DIRS = (Path("/opt/wheels"),)
WHEELHOUSE = "/opt/dlsetup-wheelhouse"  # where a host finds it (dlsetup_wheelhouse)


def cpu_wheelhouse() -> Path | None:
    """A real CPU PyTorch wheel (shipped on this kind of machine) and JAX (the plan's CPU JAX: jax, jaxlib), with
    their requirements from the machine's package index, cached; ``None`` without the torch wheel."""
    torch = next((d / TORCH_WHEEL for d in WHEEL_DIRS if (d / TORCH_WHEEL).exists()), None)
    if torch is None:
        return None
    dest = h.cache_dir() / "wheelhouse-torch-2.13.0-cpu-jaxcpu-cp311"
    marker = dest / ".complete"
    if not marker.exists():
        dest.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--dest", str(dest), "--only-binary=:all:",
             "--python-version", "3.11", "--platform", "manylinux_2_28_x86_64", "--platform", "manylinux_2_27_x86_64",
             str(torch), "jax[cpu]"],
            check=True,
        )  # fmt: skip
        marker.touch()
    return dest


def install_wheelhouse(host: h.Host, wheelhouse: Path) -> dict[str, object]:
    """Put the wheels on the host (hard links where the file system allows) and return the host variables of a
    CPU-only host that installs from them: torch 2.13.0 (the wheel's version), offline."""
    for wheel in wheelhouse.glob("*.whl"):
        target = host.root / WHEELHOUSE.lstrip("/") / wheel.name
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(wheel, target)  # the cache and the hosts usually share a file system
        except OSError:
            shutil.copyfile(wheel, target)
    return {"dlsetup_pins": {"pytorch_version": "2.13.0"}, "dlsetup_wheelhouse": WHEELHOUSE}


def changed_on_rerun(
    inventory: Path, host: str, tags: Sequence[str], source_flags: Mapping[str, str | None] | None = None
) -> tuple[int, dict[str, int]]:
    """Run the same provision again through dlsetup's own API and return (failures, changed per host), read from
    the runner's stats; the tasks that changed are printed (pytest shows them when an assertion fails). The
    sources are the inventory's (``dlsetup_wheelhouse`` ...) and ``source_flags`` (as ``--pytorch-index`` ...)."""
    targets = commands.load_targets(HostArgs((host,), inventory))
    gathered = commands.gather_facts(targets)
    commands.require_reachable(gathered)
    sources = commands.sources_for(targets, commands.parse_source_flags(source_flags))
    plans, errors = commands.plan_hosts(gathered, commands.pins_for(targets, []), sources)
    assert not errors, errors
    # the record the run writes is the one a provision writes (with what it converged to); full: the roles run
    # even where the probe finds the host converged, since what is measured here is the roles' own idempotence
    commands.compare_converged(targets, gathered, plans, list(tags), None)
    outcome = commands.provision(
        targets, plans, commands.expectations_for(targets, []), check=False, diff=False, tags=list(tags),
        run_verify=False, junit_xml=None, full=True,
    )  # fmt: skip
    changed_tasks = [task for results in outcome.run.results.values() for task, _, res in results if res.get("changed")]
    print("changed on the re-run:", changed_tasks)
    failures = sum(s.failures for s in outcome.run.stats.values())
    return failures, {name: s.changed for name, s in outcome.run.stats.items()}


def host_state(host: h.Host, trees: Sequence[str] = ("/etc", "/opt")) -> dict[str, str]:
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
