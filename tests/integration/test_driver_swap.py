"""A provisioned host whose GPUs are swapped converges to the new plan (issue 9, item 5), on Debian 12 and 13.

Each release gets a host of its own (``swap12``, ``swap13``), dressed as the 2x GTX 1080 Ti rig (Pascal: R580
proprietary, ``cuda-drivers-580``) as test_nvidia_path.py dresses it, provisioned through the stand-in NVIDIA
repository with `dlsetup provision HOST --yes` and the stand-ins' source options, and verified. Then its GPUs are
swapped for an H200 (Hopper: R580 open, ``nvidia-open``) by dressing it again with the H200's captures, and:

1. the switch is made to fail half-way: the .deb files the H200's plan adds vanish from the stand-in repository
   after the preflight and the package lists (the preflight reads the lists, apt's download then gets 404). The
   run fails, and the host keeps what it had: the same packages at the same versions, the same holds, the same
   pin file, the same record of what dlsetup installed;
2. with the files back, the same command converges: the open driver installed and held, the proprietary
   ``cuda-drivers-580`` gone (dlsetup installed it), a package the user installed kept, the framework rebuilt
   for the new GPUs (cu126 → cu130: a new venv build the venv path now points to), verify passes, and a second
   run changes nothing;
3. swapped back to the rig (open → proprietary), it converges again and a second run changes nothing.

The stand-in repository of each release holds the packages of both plans (each planned live on that host, once
as the H200 and once as the rig). The helpers come from test_nvidia_path.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fakegpu
import harness as h
import pytest
import standin as s
from provisioning import changed_on_rerun
from test_nvidia_path import (
    JAX_VERSION,
    as_args,
    held_packages,
    runs_r580,
    source_flags,
    standin_packages,
    tail,
)

from dlsetup.plan.load import load_compat_data

pytestmark = pytest.mark.integration

HOSTS = {"swap12": "bookworm", "swap13": "trixie"}  # names no other test uses
DLSETUP = Path(sys.executable).parent / "dlsetup"  # the console script a user runs
DLSETUP_TIMEOUT_S = 1800
EXIT_RUN_FAILED = 5
CHECK_ROW = re.compile(r"(?m)^\s*([a-z][a-z0-9_.]+)\s+│\s+(pass|fail|warn|skip)\s+│")
PREFERENCES = "/etc/apt/preferences.d/dlsetup-nvidia-driver"
RECORD = "/var/lib/dlsetup/nvidia-driver-packages.json"
# A package of the driver's families that the user installed: no plan names it, a switch must keep it.
USER_PACKAGE = "nvidia-user-tool"


def dlsetup(*args: str, env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(DLSETUP), *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=DLSETUP_TIMEOUT_S,
        check=False,
    )


def rig(host: h.Host) -> dict[str, Any]:
    """Dress ``host`` as the 2x GTX 1080 Ti rig running R580 (see test_nvidia_path.runs_r580)."""
    hostvars: dict[str, Any] = fakegpu.install(
        host, sysfs="2x1080ti-rig", scenario="2x1080ti", nvidia_proc="410.78-proprietary"
    )
    runs_r580(host)
    return {**hostvars, "dlsetup_expect": {"gpu_count": 2, "framework": "pytorch"}}


def h200(host: h.Host) -> dict[str, Any]:
    hostvars: dict[str, Any] = fakegpu.install(host, sysfs="h200-vm", scenario="h200", nvidia_proc="h200-580-open")
    return {**hostvars, "dlsetup_expect": {"gpu_count": 1, "framework": "pytorch"}}


@dataclass
class World:
    root: Path
    key: s.SigningKey
    server: s.StandinServer
    hosts: h.HostGroup
    work: Path
    env: dict[str, str]
    urls: dict[str, str] = field(default_factory=dict)
    plans: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)  # (host, "rig"|"h200") → plan
    host_vars: dict[str, dict[str, Any]] = field(default_factory=dict)

    def flags(self, host: str) -> dict[str, str]:
        return source_flags(self.urls[host], self.key.fingerprint)

    def dress(self, host: h.Host, as_: str) -> Path:
        """Dress ``host`` as the rig or the H200 and write the inventory; returns its path."""
        self.host_vars[host.name] = rig(host) if as_ == "rig" else h200(host)
        return self.inventory()

    def inventory(self) -> Path:
        return self.hosts.write_inventory(self.work / "hosts.yml", host_vars=self.host_vars)

    def plan(self, host: h.Host) -> dict[str, Any]:
        result = dlsetup(
            "plan", "-i", str(self.inventory()), host.name, "--format", "json", *as_args(self.flags(host.name)),
            env=self.env,
        )  # fmt: skip
        assert result.returncode == 0, tail(result)
        return dict(json.loads(result.stdout)["hosts"][host.name])

    def provision(self, host: h.Host) -> subprocess.CompletedProcess[str]:
        return dlsetup(
            "provision", host.name, "-i", str(self.inventory()), "--yes", *as_args(self.flags(host.name)),
            env=self.env,
        )  # fmt: skip

    def repo_dir(self, host: h.Host) -> Path:
        return self.root / f"compute/cuda/repos/debian{host.version_id}/x86_64"


def build_tree(world: World) -> None:
    """For each release the packages of both plans (the same name may come at two versions: NCCL for CUDA 12.9
    and 13.0), a user's tool of the driver's families, torch for both variants, jax with both extras."""
    data = load_compat_data()
    by_directory: dict[str, dict[tuple[str, str], s.DebPackage]] = {}
    variants: dict[str, tuple[str, str | None, tuple[str, ...]]] = {}
    extras: set[str] = set()
    for (name, _), plan in world.plans.items():
        directory = f"debian{world.hosts[name].version_id}"
        packages = by_directory.setdefault(directory, {})
        for package in standin_packages(plan):
            packages[(package.name, package.version)] = package
        user_tool = s.DebPackage(USER_PACKAGE, "1.0-1", files={f"/usr/share/doc/{USER_PACKAGE}/README": "user\n"})
        packages[(user_tool.name, user_tool.version)] = user_tool
        torch = plan["pytorch"]
        build = next(b for b in data.pytorch if (b.version, b.variant) == (torch["version"], torch["variant"]))
        variants[build.variant] = (build.version, build.cuda, build.archs)
        extras.add(plan["jax"]["extra"])
    for directory, packages in by_directory.items():
        s.StandinAptRepo(world.root, directory).build(packages.values(), world.key)
    numpy = s.numpy_wheels()
    built = world.root / "built-wheels"
    for variant, (version, cuda, archs) in variants.items():
        wheel = s.torch_wheel(built / variant, f"{version}+{variant}", cuda, archs)
        s.add_to_index(world.root / "whl" / variant, [wheel, *numpy])
    s.add_to_index(world.root / "simple", [s.jax_wheel(built, JAX_VERSION, extras=sorted(extras)), *numpy])


@pytest.fixture(scope="module")
def world(harness: h.Harness) -> Iterator[World]:
    missing = s.missing_tools()
    if missing:
        reason = f"the stand-ins need these Debian packages here: {', '.join(missing)}"
        if os.environ.get("DLSETUP_REQUIRE_INTEGRATION") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    work = Path(tempfile.mkdtemp(prefix="dlst-swap-"))
    root, state, tmp = work / "srv", work / "state", work / "tmp"
    for directory in (root, state, tmp):
        directory.mkdir()
    with contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, work, ignore_errors=True)
        key = stack.enter_context(s.SigningKey())
        server = stack.enter_context(s.served(root))
        hosts = harness.boot([h.HostSpec(name, release) for name, release in HOSTS.items()])
        stack.callback(harness.stop, list(hosts))
        world = World(root, key, server, hosts, work, {"DLSETUP_STATE_DIR": str(state), "TMPDIR": str(tmp)})
        for host in hosts:
            world.urls[host.name] = server.listen(host.gateway)
            stack.callback(server.unlisten, host.gateway)
            s.reach_directly(host, world.urls[host.name])
        for as_ in ("h200", "rig"):  # the rig last: the hosts start as rigs
            for host in hosts:
                world.dress(host, as_)
            for host, plan in zip(hosts, h.run_parallel(list(hosts), world.plan), strict=True):
                world.plans[(host.name, as_)] = plan
        build_tree(world)
        yield world


def ok(host: h.Host, cmd: str | list[str]) -> str:
    result = host.run(cmd, timeout=300)
    assert result.returncode == 0, f"{host.name}: {cmd} -> {result.returncode}\n{result.stdout}{result.stderr}"
    return result.stdout


def driver_state(host: h.Host) -> dict[str, Any]:
    """What the host's driver is: every installed package with its version and selection, the pin file, the
    record of what dlsetup installed."""
    listed = ok(host, ["dpkg-query", "-W", "-f=${Package} ${Version} ${Status}\n"])
    packages = {}
    for line in listed.splitlines():
        name, version, selection, *_, status = line.split()
        if status == "installed":
            packages[name] = f"{version} {selection}"
    files = {}
    for path in (PREFERENCES, RECORD):
        target = host.root / path.lstrip("/")
        files[path] = target.read_text() if target.exists() else None
    return {"packages": packages, "files": files}


def converged(world: World, host: h.Host, as_: str, result: subprocess.CompletedProcess[str]) -> None:
    """The run succeeded and its verify passed (the framework build the plan chose included), the plan's driver is
    installed and held, no other plan's driver is left, the user's tool stays, and dlsetup's record lists what it
    installed."""
    assert result.returncode == 0, tail(result)
    checks = dict(CHECK_ROW.findall(result.stdout))  # the verify that follows the provision, as its table shows it
    failed = sorted(check for check, status in checks.items() if status == "fail")
    assert checks and not failed, (host.name, failed, tail(result))
    passed = {check for check, status in checks.items() if status == "pass"}
    wanted = {"driver.loaded", "driver.branch", "driver.flavor", "gpu.count", "framework.pytorch.devices"}
    assert wanted | {"framework.build"} <= passed, (sorted(passed), tail(result))
    plan = world.plans[(host.name, as_)]
    other = world.plans[(host.name, "rig" if as_ == "h200" else "h200")]
    state = driver_state(host)["packages"]
    for package in held_packages(plan):
        assert state.get(package, "").endswith(" hold"), (package, state.get(package))
    gone = set(held_packages(other)) - set(held_packages(plan))
    assert gone and not gone & state.keys(), (gone, sorted(state))
    assert state.get(USER_PACKAGE, "").startswith("1.0-1 "), state.get(USER_PACKAGE)
    record = json.loads((host.root / RECORD.lstrip("/")).read_text())
    assert set(held_packages(plan)) <= set(record["installed"]), record
    assert USER_PACKAGE not in record["installed"], record


def rerun_changes_nothing(world: World, host: h.Host, monkeypatch: pytest.MonkeyPatch) -> None:
    flags = {k.replace("-", "_"): v for k, v in world.flags(host.name).items()}
    failures, changed = changed_on_rerun(world.inventory(), host.name, [], flags)
    assert (failures, changed) == (0, {host.name: 0})


@pytest.fixture(scope="module")
def provisioned_rigs(world: World) -> dict[str, subprocess.CompletedProcess[str]]:
    """Both rigs provisioned and verified, with a package of the driver's families the user installed."""

    def first(host: h.Host) -> subprocess.CompletedProcess[str]:
        return world.provision(host)

    hosts = list(world.hosts)
    results = {host.name: result for host, result in zip(hosts, h.run_parallel(hosts, first), strict=True)}
    for host in world.hosts:
        assert results[host.name].returncode == 0, f"{host.name}\n{tail(results[host.name])}"
        assert "PASSED" in results[host.name].stdout, tail(results[host.name])
        ok(host, f"DEBIAN_FRONTEND=noninteractive apt-get install -y -q {USER_PACKAGE}")
    return results


def test_a_failed_switch_leaves_the_previous_driver(world: World, provisioned_rigs: Any) -> None:
    """Rig → H200 with the H200's new .deb files gone after the preflight: the run fails, the host keeps the
    rig's packages, versions, holds, pin file and record."""
    hosts = list(world.hosts)
    before = {host.name: driver_state(host) for host in hosts}
    for host in hosts:
        world.dress(host, "h200")
    rig_debs = {(p.name, p.version) for name in HOSTS for p in standin_packages(world.plans[(name, "rig")])}
    hidden: list[tuple[Path, Path]] = []
    for host in hosts:
        new = [p for p in standin_packages(world.plans[(host.name, "h200")]) if (p.name, p.version) not in rig_debs]
        assert any(p.name == "nvidia-open" for p in new), [p.name for p in new]
        for package in new:
            deb = world.repo_dir(host) / package.filename
            if deb.exists():
                hidden.append((deb, world.work / f"hidden-{host.name}-{package.filename}"))
    for deb, away in hidden:
        deb.rename(away)
    try:
        results = dict(zip([x.name for x in hosts], h.run_parallel(hosts, world.provision), strict=True))
    finally:
        for deb, away in hidden:
            away.rename(deb)
    for host in hosts:
        result = results[host.name]
        assert result.returncode == EXIT_RUN_FAILED, f"{host.name}\n{tail(result)}"
        text = " ".join((result.stdout + result.stderr).split())  # the summary wraps lines
        assert "The driver change to R580 open failed at" in text, tail(result)
        assert "E: Unable to fetch some archives" in text, tail(result)  # apt's cause: the download broke
        assert "are back, with their holds and the previous pin" in text, tail(result)
        after = driver_state(host)
        assert after == before[host.name], (host.name, after, before[host.name])


def test_pascal_to_hopper_converges(world: World, provisioned_rigs: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same command again, with the repository whole: proprietary → open on both releases."""
    hosts = list(world.hosts)
    for host in hosts:
        world.dress(host, "h200")
    results = h.run_parallel(hosts, world.provision)
    for host, result in zip(hosts, results, strict=True):
        converged(world, host, "h200", result)
    for var, value in world.env.items():
        monkeypatch.setenv(var, value)
    monkeypatch.setattr(tempfile, "tempdir", world.env["TMPDIR"])
    for host in hosts:
        rerun_changes_nothing(world, host, monkeypatch)


def test_hopper_back_to_pascal_converges(world: World, provisioned_rigs: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    hosts = list(world.hosts)
    for host in hosts:
        world.dress(host, "rig")
    results = h.run_parallel(hosts, world.provision)
    for host, result in zip(hosts, results, strict=True):
        converged(world, host, "rig", result)
    for var, value in world.env.items():
        monkeypatch.setenv(var, value)
    monkeypatch.setattr(tempfile, "tempdir", world.env["TMPDIR"])
    for host in hosts:
        rerun_changes_nothing(world, host, monkeypatch)
