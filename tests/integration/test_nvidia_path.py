"""`dlsetup provision` through NVIDIA's CUDA repository path for real, on Debian 12 and 13 hosts that reach only this
machine: the repository, PyTorch's index and the general index are the local stand-ins of standin.py (a signed flat
apt repository in NVIDIA's layout, stand-in torch/jax wheels), and dlsetup is given nothing but their addresses on
the command line (--nvidia-repo, --nvidia-repo-key with the test key's fingerprint, --pytorch-index, --pip-index).

* a 2x GTX 1080 Ti rig on Debian 12 (Pascal: R580 proprietary, CUDA 12.x, torch cu126),
* an H200 on Debian 13 (Hopper: R580 open, CUDA 13, torch cu130).

The stand-in packages are generated from each host's own plan (``dlsetup plan HOST --format json``): every package
the plan takes from NVIDIA's repository, at a version on the planned branch / toolkit, tiny real .deb files. The
run must fetch the key, check its fingerprint, write the keyring and a deb822 source signed by it, pin and install
the driver and hold it, install the toolkit, cuDNN and NCCL, and put torch and jax into /opt/dlsetup/venv; a second
identical run must change nothing and `dlsetup verify` must pass.

A wrong key (the fingerprint of a second test key) and an unreachable repository (a closed port) must be refused
before anything on the host changes: exit 8, one line naming the address, /etc, /opt and dpkg's selections
byte-for-byte as before.

The rig's fake driver replays the assembled 2x1080ti capture, whose 410.78 driver cannot tell a CUDA 12 runtime the
GPUs' compute capability (nvidia-smi of that age rejects ``compute_cap``), so no torch could use the GPUs and the
verify after the run would fail. In a container the kernel module belongs to the outer host, so the rig is shown as
an outer host that runs R580: the same captures (nvidia-smi, the proprietary module's /proc header), with the driver
version of the real R580 capture (the H200's) and the compute capability from dlsetup's GPU catalogue, which is what
that driver answers. See :func:`runs_r580`. The never-provisioned rig keeps the 410.78 driver as captured.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import fakegpu
import harness as h
import pytest
import standin as s
from provisioning import changed_on_rerun, differences, host_state

from dlsetup.plan.load import load_compat_data

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SCENARIOS = REPO / "tests/fixtures/nvidia-smi-scenarios"
H200_CSV = SCENARIOS / "h200/nvidia-smi-query-gpu.csv"
FAKE_SMI_DIR = "/etc/dlsetup-fake-nvidia-smi"  # where fakegpu puts the scenario the fake nvidia-smi replays
VENV = "/opt/dlsetup/venv"
EXIT_REFUSED = 8  # the preflight's exit code: a source is unreachable or its key is not the pinned one
# Kernel packages in a plan come from Debian's archive (and a container leaves them out): not NVIDIA's repository.
KERNEL_PACKAGE = re.compile(r"^linux-(headers|image|modules|objects|signatures)-")
NCCL_RELEASE = "2.27.7"  # a real NCCL release, for plans that name no NCCL version
DLSETUP_TIMEOUT_S = 1800
JAX_VERSION = "0.7.2"  # the stand-in jax (plans name only its extra)

RIG = "nvrig12"  # 2x GTX 1080 Ti, Debian 12
H200 = "nvh200"  # 1x H200, Debian 13
FRESH = "nvfresh12"  # 2x GTX 1080 Ti, Debian 12, never provisioned: the refusals


# -- dlsetup as a user runs it ---------------------------------------------------------------------------------
def dlsetup(*args: str, env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dlsetup", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=DLSETUP_TIMEOUT_S,
        check=False,
    )


def source_flags(base_url: str, key: str) -> dict[str, str]:
    """The stand-ins' addresses as dlsetup's options (the CLI's names, without the dashes)."""
    return {
        "nvidia-repo": base_url,
        "nvidia-repo-key": key,
        "pytorch-index": f"{base_url}/whl",
        "pip-index": f"{base_url}/simple",
    }


def as_args(flags: Mapping[str, str]) -> list[str]:
    return [arg for name, value in flags.items() for arg in (f"--{name}", value)]


def tail(result: subprocess.CompletedProcess[str]) -> str:
    return f"rc {result.returncode}\nstdout:\n{result.stdout[-6000:]}\nstderr:\n{result.stderr[-3000:]}"


def test_host_state_sees_every_kind_of_change(boot_host: Any) -> None:
    """The helper the refusals rely on: it notices a new file, changed bytes, a mode, a link and a dpkg selection."""
    host = boot_host("nvstate12", "bookworm")
    before = host_state(host)
    assert before == host_state(host), differences(before, host_state(host))  # nothing moves on its own
    host.write_file("/etc/dlsetup-state-probe", "x\n")
    host.write_file("/opt/probe/file", "x\n")
    after = host_state(host)
    assert differences(before, after) == ["added /etc/dlsetup-state-probe", "added /opt/probe", "added /opt/probe/file"]
    steps = [
        ("echo y > /etc/dlsetup-state-probe", "changed /etc/dlsetup-state-probe"),
        ("chmod 600 /etc/dlsetup-state-probe", "changed /etc/dlsetup-state-probe"),
        ("ln -s /nowhere /etc/dlsetup-state-link", "added /etc/dlsetup-state-link"),
        ("echo procps hold | dpkg --set-selections", "changed dpkg --get-selections"),
    ]
    for cmd, expected in steps:
        previous = host_state(host)
        assert host.run(cmd).returncode == 0
        assert expected in differences(previous, host_state(host)), cmd


# -- stand-in packages from a plan -----------------------------------------------------------------------------
def captured_r580() -> str:
    """The driver version of the real R580 capture (the H200's nvidia-smi)."""
    lines = [ln for ln in H200_CSV.read_text().splitlines() if ln.strip()]
    header = [c.split(" [")[0] for c in lines[0].split(", ")]
    return dict(zip(header, lines[1].split(", "), strict=True))["driver_version"]


def driver_release(branch: str) -> str:
    """An upstream driver version on ``branch``: the real captured one when it is on that branch."""
    captured = captured_r580()
    return captured if captured.split(".")[0] == branch else f"{branch}.0.0"


def nvidia_packages(plan: Mapping[str, Any]) -> list[str]:
    """Every package ``plan`` takes from NVIDIA's repository."""
    names = [*plan["driver"]["packages"], *plan["cuda"]["packages"], *plan["cudnn"]["packages"]]
    names += [*plan["nccl"]["packages"], *((plan.get("nvidia_repository") or {}).get("packages") or [])]
    return [n for n in dict.fromkeys(names) if not KERNEL_PACKAGE.match(n)]


def held_packages(plan: Mapping[str, Any]) -> list[str]:
    """The driver packages the nvidia_driver role holds (a container leaves the kernel packages out)."""
    return [n.split("=")[0] for n in plan["driver"]["packages"] if not KERNEL_PACKAGE.match(n)]


def standin_packages(plan: Mapping[str, Any]) -> list[s.DebPackage]:
    """A tiny real .deb for every package ``plan`` takes from NVIDIA's repository, at a version of the planned
    driver branch, toolkit, cuDNN and NCCL; the toolkit ships an ``nvcc`` that prints its release."""
    driver, cuda, cudnn, nccl = plan["driver"], plan["cuda"], plan["cudnn"], plan["nccl"]
    assert driver["source"] == "nvidia" and cuda["source"] == "nvidia", (driver["source"], cuda["source"])
    cuda_version = cuda["version"]
    nccl_version = f"{nccl['version'] or NCCL_RELEASE}-1+cuda{cuda_version}"
    versions = {
        **{n: f"{driver_release(driver['branch'])}-1" for n in driver["packages"]},
        **{n: f"{cuda_version}.0-1" for n in cuda["packages"]},
        **{n: f"{cudnn['version']}.0-1" for n in cudnn["packages"]},
        **{n: nccl_version for n in nccl["packages"]},
    }
    packages = []
    for name in nvidia_packages(plan):
        files: dict[str, s.DebFile | bytes | str] = {
            f"/usr/share/doc/{name}/README.standin": f"{name}: a dlsetup test stand-in, not NVIDIA software\n"
        }
        if name in cuda["packages"]:
            nvcc = (
                "#!/bin/sh\necho 'nvcc: NVIDIA (R) Cuda compiler driver (dlsetup test stand-in)'\n"
                f"echo 'Cuda compilation tools, release {cuda_version}, V{cuda_version}.0'\n"
            )
            files[f"/usr/local/cuda-{cuda_version}/bin/nvcc"] = s.DebFile(nvcc, 0o755)
        depends = [f"{n} (= {nccl_version})" for n in nccl["packages"] if n != name] if name.endswith("-dev") else []
        packages.append(s.DebPackage(name, versions[name], depends=depends, files=files))
    return packages


# -- the rig as an outer host running R580 ---------------------------------------------------------------------
def runs_r580(host: h.Host) -> None:
    """Let the rig's fake driver answer as R580 does (see the module docstring): nvidia-smi replays the 2x1080ti
    capture with the real R580 capture's driver version, and ``compute_cap`` (which drivers before R510 reject)
    from dlsetup's GPU catalogue by each row's PCI device id; /proc/driver/nvidia/version is the real proprietary
    header with that version. Everything else is the capture as it is."""
    scenario_dir = host.root / FAKE_SMI_DIR.lstrip("/")
    scenario = json.loads((scenario_dir / "scenario.json").read_text())
    spec = scenario["query_gpu"]
    csv = scenario_dir / spec["csv"]
    lines = [ln for ln in csv.read_text().splitlines() if ln.strip()]
    header = [c.split(" [")[0] for c in lines[0].split(", ")]
    data = load_compat_data()
    rows = []
    for line in lines[1:]:
        row = dict(zip(header, line.split(", "), strict=True))
        device = row["pci.device_id"].lower()  # 0x1B0610DE: device, then vendor
        gpu = data.gpu(f"{device[6:10]}:{device[2:6]}")
        assert gpu is not None and gpu.compute_capability, row["pci.device_id"]
        row["driver_version"] = captured_r580()
        row["compute_cap"] = gpu.compute_capability
        rows.append(", ".join(row[c] for c in header))
    csv.write_text("\n".join([lines[0], *rows]) + "\n")
    spec["invalid_fields"] = [f for f in spec["invalid_fields"] if f != "compute_cap"]
    scenario["description"] += " (dlsetup test: as the outer host running R580 answers, see test_nvidia_path.py)"
    (scenario_dir / "scenario.json").write_text(json.dumps(scenario, indent=2) + "\n")
    # the proprietary module's /proc/driver/nvidia/version header, with the same driver version
    version = host.root / fakegpu.FAKE_ROOT.lstrip("/") / "nvidia-proc" / "version"
    old = re.search(r"Kernel Module  (\S+)  ", version.read_text())
    assert old is not None, version.read_text()
    version.write_text(version.read_text().replace(old.group(1), captured_r580(), 1))


# -- fixtures --------------------------------------------------------------------------------------------------
@dataclass
class Standins:
    """The stand-in tree, its server on every host's gateway, and the hosts pointed at it."""

    root: Path
    key: s.SigningKey
    other_key: s.SigningKey
    server: s.StandinServer
    hosts: h.HostGroup
    inventory: Path
    env: dict[str, str]  # DLSETUP_STATE_DIR and TMPDIR for dlsetup
    urls: dict[str, str] = field(default_factory=dict)  # host → the server's base URL on its gateway
    plans: dict[str, dict[str, Any]] = field(default_factory=dict)  # host → its plan with these sources

    def flags(self, host: str, **overrides: str) -> dict[str, str]:
        return {**source_flags(self.urls[host], self.key.fingerprint), **overrides}


def _require_tools() -> None:
    missing = s.missing_tools()
    if missing:
        reason = f"the stand-ins need these Debian packages here: {', '.join(missing)}"
        if os.environ.get("DLSETUP_REQUIRE_INTEGRATION") == "1":
            pytest.fail(reason)
        pytest.skip(reason)


@pytest.fixture(scope="module")
def standins(harness: h.Harness) -> Iterator[Standins]:
    """Boot the rig, the H200 and a fresh rig; plan each with the stand-ins' addresses; build the stand-in
    repository (per Debian release, from its plans) and indexes, served on each host's gateway."""
    _require_tools()
    work = Path(tempfile.mkdtemp(prefix="dlst-nvpath-"))
    root, state, tmp = work / "srv", work / "state", work / "tmp"
    for directory in (root, state, tmp):
        directory.mkdir()
    env = {"DLSETUP_STATE_DIR": str(state), "TMPDIR": str(tmp)}
    with contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, work, ignore_errors=True)
        key = stack.enter_context(s.SigningKey())
        other_key = stack.enter_context(s.SigningKey(uid="dlsetup test: not the repository's key <other@invalid>"))
        server = stack.enter_context(s.served(root))
        hosts = harness.boot([h.HostSpec(RIG, "bookworm"), h.HostSpec(H200, "trixie"), h.HostSpec(FRESH, "bookworm")])
        stack.callback(harness.stop, list(hosts))
        host_vars: dict[str, dict[str, Any]] = {}
        for name in (RIG, FRESH):
            host_vars[name] = fakegpu.install(
                hosts[name], sysfs="2x1080ti-rig", scenario="2x1080ti", nvidia_proc="410.78-proprietary"
            )
            host_vars[name]["dlsetup_expect"] = {"gpu_count": 2, "framework": "pytorch"}
        runs_r580(hosts[RIG])
        host_vars[H200] = fakegpu.install(hosts[H200], sysfs="h200-vm", scenario="h200", nvidia_proc="h200-580-open")
        host_vars[H200]["dlsetup_expect"] = {"gpu_count": 1, "framework": "pytorch"}
        inventory = hosts.write_inventory(work / "hosts.yml", host_vars=host_vars)
        world = Standins(root, key, other_key, server, hosts, inventory, env)
        for host in hosts:
            world.urls[host.name] = server.listen(host.gateway)
            stack.callback(server.unlisten, host.gateway)  # before the veth (and its address) goes away
            s.reach_directly(host, world.urls[host.name])

        def plan(host: h.Host) -> dict[str, Any]:
            flags = as_args(world.flags(host.name))
            result = dlsetup("plan", "-i", str(inventory), host.name, "--format", "json", *flags, env=env)
            assert result.returncode == 0, tail(result)
            return dict(json.loads(result.stdout)["hosts"][host.name])

        planned = [hosts[RIG], hosts[H200]]  # the fresh rig is only refused: its plan builds nothing
        world.plans = {host.name: p for host, p in zip(planned, h.run_parallel(planned, plan), strict=True)}
        build_tree(world)
        yield world


def build_tree(world: Standins) -> None:
    """The repository for each release from its hosts' plans; torch for each planned variant (with the
    architectures dlsetup's data lists for that build), jax with the planned extras, numpy for both."""
    data = load_compat_data()
    by_directory: dict[str, dict[str, s.DebPackage]] = {}
    variants: dict[str, tuple[str, str | None, tuple[str, ...]]] = {}
    extras: set[str] = set()
    for plan in world.plans.values():
        directory = plan["nvidia_repository"]["url"].rstrip("/").split("/")[-2]  # .../repos/<directory>/x86_64
        for package in standin_packages(plan):
            by_directory.setdefault(directory, {})[package.name] = package
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


@dataclass(frozen=True)
class FirstRun:
    result: subprocess.CompletedProcess[str]
    state_before: dict[str, str]


@pytest.fixture(scope="module")
def provisioned(standins: Standins) -> dict[str, FirstRun]:
    """The first `dlsetup provision HOST --yes` of the rig and the H200, in parallel."""

    def first(host: h.Host) -> FirstRun:
        before = host_state(host)
        flags = as_args(standins.flags(host.name))
        result = dlsetup("provision", "-i", str(standins.inventory), host.name, "--yes", *flags, env=standins.env)
        return FirstRun(result, before)

    hosts = [standins.hosts[RIG], standins.hosts[H200]]
    return {host.name: run for host, run in zip(hosts, h.run_parallel(hosts, first), strict=True)}


def ok(host: h.Host, cmd: str | list[str]) -> str:
    result = host.run(cmd, timeout=120)
    assert result.returncode == 0, f"{host.name}: {cmd} -> {result.returncode}\n{result.stdout}{result.stderr}"
    return result.stdout


def deb822(text: str) -> list[dict[str, str]]:
    stanzas, current = [], {}
    for line in [*text.splitlines(), ""]:
        if line.startswith("#"):
            continue
        if not line.strip():
            if current:
                stanzas.append(current)
            current = {}
        elif ":" in line and not line[0].isspace():
            name, _, value = line.partition(":")
            current[name.strip().lower()] = value.strip()
    return stanzas


def primary_fingerprints(key_file: Path) -> list[str]:
    with tempfile.TemporaryDirectory(prefix="dlst-gpg-") as home:
        shown = subprocess.run(
            ["gpg", "--homedir", home, "--batch", "--with-colons", "--fixed-list-mode", "--show-keys", str(key_file)],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        subprocess.run(["gpgconf", "--homedir", home, "--kill", "all"], capture_output=True, check=False)
    return re.findall(r"(?m)^pub:.*\nfpr:+([0-9A-F]{40}):", shown)


# -- the NVIDIA repository path, for real ----------------------------------------------------------------------
@pytest.mark.parametrize("name", [RIG, H200])
def test_provision_through_nvidia_repository(standins: Standins, provisioned: dict[str, FirstRun], name: str) -> None:
    first = provisioned[name].result
    assert first.returncode == 0, tail(first)
    assert "PASSED" in first.stdout, tail(first)  # the verify that follows a provision
    host, plan = standins.hosts[name], standins.plans[name]
    repo_url = plan["nvidia_repository"]["url"].rstrip("/")
    assert repo_url.startswith(standins.urls[name] + "/compute/cuda/repos/debian"), repo_url

    # a deb822 source for the repository, signed by a keyring that holds exactly the test key
    sources = host.root / "etc/apt/sources.list.d"
    stanzas = [st for f in sorted(sources.glob("*.sources")) for st in deb822(f.read_text())]
    ours = [st for st in stanzas if st.get("uris", "").rstrip("/") == repo_url]
    assert len(ours) == 1, stanzas
    assert ours[0].get("suites") == "/" and ours[0].get("types") == "deb", ours
    keyring = ours[0].get("signed-by", "")
    assert keyring.startswith("/etc/apt/keyrings/"), ours
    assert primary_fingerprints(host.root / keyring.lstrip("/")) == [standins.key.fingerprint]
    now, before = host_state(host), provisioned[name].state_before
    trusted = sorted(k for k in before.keys() | now.keys() if "/trusted.gpg" in k)
    assert [now.get(k) for k in trusted] == [before.get(k) for k in trusted], "apt's global keyrings changed"
    policy = ok(host, "apt-cache policy")
    assert f"{repo_url}  Packages\n     release o=NVIDIA,l=NVIDIA CUDA," in policy, policy

    # every planned package installed at the stand-in's version, from the stand-in repository
    wanted = {p.name: p.version for p in standin_packages(plan)}
    listed = ok(host, ["dpkg-query", "-W", "-f=${Package} ${Version} ${Status}\n", *wanted])
    for package, version in wanted.items():
        assert re.search(rf"(?m)^{re.escape(package)} {re.escape(version)} \w+ ok installed$", listed), listed
    fetched = {
        unquote(r.path).rsplit("/", 1)[-1] for r in standins.server.requests_from(host.address) if r.status == 200
    }
    debs = {p.filename for p in standin_packages(plan)}
    assert {"InRelease", s.NVIDIA_KEY_FILE} | debs <= fetched, sorted(fetched)

    # the driver packages held, and pinned to the planned branch where the plan's patterns cover them
    held = set(ok(host, "apt-mark showhold").split())
    assert set(held_packages(plan)) <= held, (held_packages(plan), held)
    pinned = [p for p in held_packages(plan) if any(fnmatch.fnmatch(p, pat) for pat in plan["driver"]["pin_packages"])]
    assert pinned, plan["driver"]
    for package in pinned:
        shown = ok(host, ["apt-cache", "policy", package])
        assert re.search(rf"\*\*\* {re.escape(wanted[package])} 1001\n", shown), shown

    # the toolkit on a login shell's PATH; torch and jax from the stand-in indexes in dlsetup's venv
    cuda = plan["cuda"]["version"]
    nvcc = ok(host, ["bash", "-lc", "command -v nvcc && nvcc --version"])
    assert nvcc.startswith(f"/usr/local/cuda-{cuda}/bin/nvcc\n") and f"release {cuda}," in nvcc, nvcc
    torch = plan["pytorch"]
    probe = "import torch, jax; print(torch.__version__, torch.version.cuda, torch.cuda.device_count(), jax.STANDIN)"
    gpus = len(plan["gpus"])
    assert ok(host, [f"{VENV}/bin/python", "-c", probe]).split() == [
        f"{torch['version']}+{torch['variant']}",
        torch["cuda"],
        str(gpus),
        "True",
    ]
    pip_list = ok(host, [f"{VENV}/bin/python", "-m", "pip", "list", "--format=freeze"])
    assert f"torch=={torch['version']}+{torch['variant']}" in pip_list.split(), pip_list
    assert any(r.path == f"/whl/{torch['variant']}/torch/" for r in standins.server.requests_from(host.address))
    assert f"jax=={JAX_VERSION}" in pip_list.split(), pip_list  # installed as jax[<the plan's extra>]
    assert any(r.path == "/simple/jax/" for r in standins.server.requests_from(host.address))


@pytest.mark.parametrize("name", [RIG, H200])
def test_rerun_changes_nothing_and_verify_passes(
    standins: Standins, provisioned: dict[str, FirstRun], name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = provisioned[name].result
    assert first.returncode == 0, tail(first)
    for var, value in standins.env.items():
        monkeypatch.setenv(var, value)
    monkeypatch.setattr(tempfile, "tempdir", standins.env["TMPDIR"])
    # the same sources as the first run (given as on the command line: nvidia-repo -> nvidia_repo)
    flags = {k.replace("-", "_"): v for k, v in standins.flags(name).items()}
    failures, changed = changed_on_rerun(standins.inventory, name, [], flags)
    assert failures == 0
    assert changed == {name: 0}
    verify = dlsetup("verify", "-i", str(standins.inventory), name, "--format", "json", env=standins.env)
    assert verify.returncode == 0, tail(verify)
    checks = {c["id"]: c for c in json.loads(verify.stdout)["hosts"][name]["checks"]}
    plan = standins.plans[name]
    assert checks["framework.pytorch"]["status"] == "pass"
    assert checks["framework.pytorch"]["actual"] == f"{plan['pytorch']['version']}+{plan['pytorch']['variant']}"
    for check in ("driver.loaded", "gpu.count", "framework.pytorch.devices", "framework.pytorch.arch",
                  "framework.pytorch.matmul"):  # fmt: skip
        assert checks[check]["status"] == "pass", checks[check]
    assert checks["framework.jax"]["status"] == "pass", checks["framework.jax"]


# -- refusals before anything changes --------------------------------------------------------------------------
def closed_port(address: str) -> int:
    with socket.socket() as sock:
        sock.bind((address, 0))
        return int(sock.getsockname()[1])  # closed again when the socket is: nothing listens there


def refused(standins: Standins, flags: Mapping[str, str]) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """`dlsetup provision FRESH --yes` with ``flags``: the result and what changed on the host meanwhile."""
    host = standins.hosts[FRESH]
    before = host_state(host)
    result = dlsetup("provision", "-i", str(standins.inventory), FRESH, "--yes", *as_args(flags), env=standins.env)
    print(result.stderr)  # the refusal, shown with -s
    return result, differences(before, host_state(host))


def refusal_line(result: subprocess.CompletedProcess[str], address: str) -> str:
    pattern = re.compile(rf"^(error: )?host {FRESH}: (\S*{re.escape(address)}\S*): .+; nothing was changed$")
    lines = [ln for ln in result.stderr.splitlines() if pattern.match(ln)]
    assert len(lines) == 1, tail(result)
    return lines[0]


def test_wrong_key_is_refused_before_anything_changes(standins: Standins) -> None:
    base = standins.urls[FRESH]
    result, changes = refused(standins, standins.flags(FRESH, **{"nvidia-repo-key": standins.other_key.fingerprint}))
    assert result.returncode == EXIT_REFUSED, tail(result)
    refusal_line(result, base)
    assert not changes, changes
    # the key was fetched from the host, and nothing else from the repository
    fetched = [r.path for r in standins.server.requests_from(standins.hosts[FRESH].address)]
    assert any(p.endswith(f"/{s.NVIDIA_KEY_FILE}") for p in fetched), fetched
    assert not any(p.endswith(".deb") for p in fetched), fetched


def test_unreachable_repository_is_refused_before_anything_changes(standins: Standins) -> None:
    host = standins.hosts[FRESH]
    unreachable = f"http://{host.gateway}:{closed_port(host.gateway)}"
    result, changes = refused(standins, standins.flags(FRESH, **{"nvidia-repo": unreachable}))
    assert result.returncode == EXIT_REFUSED, tail(result)
    refusal_line(result, unreachable)
    assert not changes, changes
