"""`dlsetup provision` for real on Debian hosts: a CPU-only laptop (XPS 13 9370 facts) on Debian 12 and a
2x GTX 1080 Ti-class rig (fake nvidia-smi replaying a real capture, recorded sysfs) on Debian 13.

Packages come for real from Debian's archive: the rig gets Debian's own `nvidia-driver` (pinned to the
distribution source, since NVIDIA's repository is not reachable from here); the laptop gets a real PyTorch
2.13.0 CPU build from a local wheelhouse. The second run must change nothing, and `dlsetup verify` must pass.
CUDA's toolkit (1.6 GB from Debian, or NVIDIA's repository) is left out of the rig's run here with --tags; the
cuda role's tasks are covered in check mode in tests/modules.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import fakegpu
import harness as h
import pytest
from provisioning import TORCH_WHEEL, changed_on_rerun, cpu_wheelhouse, install_wheelhouse

pytestmark = pytest.mark.integration

RIG_TAGS = "role::hw_facts,role::base,role::nvidia_driver,role::laptop,role::state"


@pytest.fixture(scope="module")
def wheelhouse() -> Path:
    found = cpu_wheelhouse()
    if found is None:
        pytest.skip(f"{TORCH_WHEEL} is not on this machine: no CPU PyTorch wheel for the laptop host")
    return found


@pytest.fixture(scope="module")
def fleet(harness, wheelhouse, tmp_path_factory):
    hosts = harness.boot([h.HostSpec("xps13", "bookworm"), h.HostSpec("rig", "trixie")])
    try:
        laptop, rig = hosts["xps13"], hosts["rig"]
        laptop_vars = {**fakegpu.install(laptop, sysfs="xps13-9370"), **install_wheelhouse(laptop, wheelhouse)}
        rig_vars = fakegpu.install(rig, sysfs="2x1080ti-rig", scenario="2x1080ti", nvidia_proc="410.78-proprietary")
        inventory = hosts.write_inventory(
            tmp_path_factory.mktemp("prov") / "hosts.yml",
            host_vars={
                "xps13": {
                    **laptop_vars,
                    "dlsetup_expect": {"gpu_count": 0, "framework": "pytorch,jax"},
                },
                "rig": {
                    **rig_vars,
                    # NVIDIA's repository is not reachable from the test network: Debian's own driver
                    "dlsetup_pins": {"driver_source": "distribution"},
                    # the fake nvidia-smi replays a capture of driver 410.78, not the R550 package installed here:
                    # the branch the record implies (550) is overridden by the one the fake reports
                    "dlsetup_expect": {
                        "gpu_count": 2,
                        "gpu_model": "GTX 1080 Ti",
                        "pcie_width_min": 16,
                        "driver_branch": "410",
                    },
                },
            },
        )
        yield hosts, inventory
    finally:
        harness.stop(list(hosts))


def dlsetup(*args, state_dir):
    env = dict(os.environ, DLSETUP_STATE_DIR=str(state_dir))
    return subprocess.run(
        [sys.executable, "-m", "dlsetup", *args], capture_output=True, text=True, env=env, timeout=3000, check=False
    )


def test_cpu_only_laptop(fleet, tmp_path, monkeypatch):
    hosts, inventory = fleet
    monkeypatch.setenv("DLSETUP_STATE_DIR", str(tmp_path))
    first = dlsetup("provision", "-i", str(inventory), "xps13", "--yes", state_dir=tmp_path)
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-2000:]
    assert "PASSED" in first.stdout  # the verify that follows a provision
    laptop = hosts["xps13"]
    version = laptop.run("/opt/dlsetup/venv/bin/python -c 'import torch; print(torch.__version__)'")
    assert version.stdout.strip() == "2.13.0+cpu", version.stderr
    sources = laptop.run("cat /etc/apt/sources.list.d/*.sources").stdout
    assert "non-free-firmware" in sources
    failures, changed = changed_on_rerun(inventory, "xps13", [])
    assert failures == 0
    assert changed == {"xps13": 0}
    verify = dlsetup("verify", "-i", str(inventory), "xps13", "--format", "json", state_dir=tmp_path)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    checks = {c["id"]: c for c in json.loads(verify.stdout)["hosts"]["xps13"]["checks"]}
    assert checks["framework.pytorch"]["status"] == "pass"
    assert checks["framework.pytorch"]["actual"] == "2.13.0+cpu"
    assert checks["framework.jax"]["status"] == "pass"  # the plan's CPU JAX, in the same venv
    assert checks["gpu.count"]["status"] == "pass"


def test_gpu_rig_gets_debians_driver(fleet, tmp_path, monkeypatch):
    hosts, inventory = fleet
    monkeypatch.setenv("DLSETUP_STATE_DIR", str(tmp_path))
    plan = dlsetup("plan", "-i", str(inventory), "rig", "--format", "json", state_dir=tmp_path)
    assert plan.returncode == 0, plan.stderr
    driver = json.loads(plan.stdout)["hosts"]["rig"]["driver"]
    assert (driver["source"], driver["flavor"]) == ("distribution", "proprietary")
    first = dlsetup("provision", "-i", str(inventory), "rig", "--yes", "--tags", RIG_TAGS, state_dir=tmp_path)
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-2000:]
    rig = hosts["rig"]
    installed = rig.run("dpkg-query -W -f='${Status} ${Version}\\n' nvidia-driver")
    assert " ok installed " in installed.stdout, installed.stdout + installed.stderr
    held = rig.run("apt-mark showhold").stdout.split()
    assert "nvidia-driver" in held
    # the branch is pinned for apt as well as held
    pin = rig.run("cat /etc/apt/preferences.d/dlsetup-nvidia-driver").stdout
    assert "Pin: version 550." in pin, pin
    # a container has no kernel of its own: nouveau, initramfs and reboot steps are skipped, not faked
    assert rig.run("test -e /etc/modprobe.d/dlsetup-blacklist-nouveau.conf").returncode == 1
    state = json.loads(rig.run("cat /etc/ansible/facts.d/dlsetup.fact").stdout)
    assert [g["pci_id"] for g in state["gpus"]] == ["10de:1b06", "10de:1b06"]
    failures, changed = changed_on_rerun(inventory, "rig", RIG_TAGS.split(","))
    assert failures == 0
    assert changed == {"rig": 0}
    verify = dlsetup("verify", "-i", str(inventory), "rig", "--format", "json", state_dir=tmp_path)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    report = json.loads(verify.stdout)["hosts"]["rig"]
    checks = {c["id"]: c for c in report["checks"]}
    # the run had --tags without cuda and dl_stack: the record says so, and verify expects no toolkit or framework
    assert state["roles"] == ["hw_facts", "base", "nvidia_driver", "laptop"]
    assert checks["driver.flavor"]["status"] == "pass" and checks["driver.flavor"]["expected_from"] == "plan record"
    assert checks["framework.pytorch"]["status"] == "skip"


def test_bad_input_changes_nothing(fleet, tmp_path):
    hosts, inventory = fleet
    before = hosts["rig"].run("dpkg -l | md5sum").stdout
    res = dlsetup("provision", "-i", str(inventory), "rig", "--yes", "--pin", "driver_branch=590", state_dir=tmp_path)
    assert res.returncode == 2, res.stdout + res.stderr
    assert "590" in res.stderr
    res = dlsetup("provision", "-i", str(inventory), "nope", "--yes", state_dir=tmp_path)
    assert res.returncode == 2 and "unknown host or group 'nope'" in res.stderr
    # a closed port on this machine: the connection is refused at once
    res = dlsetup("provision", "root@127.0.0.1:9", "--yes", state_dir=tmp_path)
    assert res.returncode == 3, res.stdout + res.stderr
    assert hosts["rig"].run("dpkg -l | md5sum").stdout == before
