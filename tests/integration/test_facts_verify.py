"""`dlsetup facts` and `dlsetup verify` over SSH against real Debian 12 and 13 hosts.

deb12 is dressed as a 2x GTX 1080 Ti rig (fake nvidia-smi replaying a real capture, recorded sysfs tree);
deb13 as a Dell XPS 13 9370 (DMI from a recorded tree, no NVIDIA GPU)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import fakegpu
import pytest
import yaml

pytestmark = pytest.mark.integration

RIG_EXPECT = {
    "gpu_count": 2,
    "gpu_model": "GTX 1080 Ti",
    "gpu_memory_min_mib": 11000,
    "pcie_width_min": 16,
    "pcie_gen_min": 3,
    "driver_branch": "410",
    "driver_flavor": "proprietary",
}
XPS13_EXPECT = {"gpu_count": 0}


@pytest.fixture(scope="module")
def dressed(harness, debian_hosts, tmp_path_factory):
    rig, laptop = debian_hosts["deb12"], debian_hosts["deb13"]
    rig_vars = fakegpu.install(rig, sysfs="2x1080ti-rig", scenario="2x1080ti", nvidia_proc="410.78-proprietary")
    laptop_vars = fakegpu.install(laptop, sysfs="xps13-9370")
    inventory = debian_hosts.write_inventory(
        tmp_path_factory.mktemp("inv") / "hosts.yml",
        host_vars={
            "deb12": {**rig_vars, "dlsetup_expect": RIG_EXPECT},
            "deb13": {**laptop_vars, "dlsetup_expect": XPS13_EXPECT},
        },
        groups={"rigs": ["deb12"], "laptops": ["deb13"]},
    )
    yield inventory
    for host in (rig, laptop):
        host.run("rm -rf /usr/local/bin/nvidia-smi /etc/dlsetup-fake-nvidia-smi /opt/dlsetup-fake")


def dlsetup(*args, state_dir):
    env = dict(os.environ, DLSETUP_STATE_DIR=str(state_dir))
    return subprocess.run(
        [sys.executable, "-m", "dlsetup", *args], capture_output=True, text=True, env=env, timeout=600, check=False
    )


def test_facts_over_ssh(dressed, tmp_path):
    res = dlsetup("facts", "-i", str(dressed), "all", "--format", "json", state_dir=tmp_path)
    assert res.returncode == 0, res.stderr + res.stdout
    hosts = json.loads(res.stdout)["hosts"]
    rig, laptop = hosts["deb12"], hosts["deb13"]
    assert (rig["os"]["id"], rig["os"]["version"], rig["os"]["codename"]) == ("debian", "12", "bookworm")
    assert (laptop["os"]["version"], laptop["os"]["codename"]) == ("13", "trixie")
    assert [g["pci_id"] for g in rig["gpus"]] == ["10de:1b06", "10de:1b06"]
    assert [g["pci_bus_id"] for g in rig["gpus"]] == ["0000:05:00.0", "0000:06:00.0"]
    assert all(g["visible_to_driver"] and g["memory_mib"] >= 11000 for g in rig["gpus"])
    assert [g["pcie"]["width_current"] for g in rig["gpus"]] == [16, 16]
    assert rig["driver"]["loaded"] is True
    assert rig["driver"]["version"] == "410.78"
    assert rig["driver"]["kernel_module"] == "proprietary"
    assert laptop["gpus"] == []
    assert (laptop["machine"]["vendor"], laptop["machine"]["product"]) == ("Dell Inc.", "XPS 13 9370")
    # the table form names the missing GPU plainly
    table = dlsetup("facts", "-i", str(dressed), "laptops", state_dir=tmp_path)
    assert table.returncode == 0 and "no NVIDIA GPU" in table.stdout


def test_verify_passes_with_matching_expectations(dressed, debian_hosts, tmp_path):
    junit = tmp_path / "junit.xml"
    res = dlsetup(
        "verify", "-i", str(dressed), "all", "--format", "json", "--junit-xml", str(junit), state_dir=tmp_path
    )
    assert res.returncode == 0, res.stdout + res.stderr
    report = json.loads(res.stdout)["hosts"]
    assert report["deb12"]["passed"] and report["deb13"]["passed"]
    statuses = {c["id"]: c["status"] for c in report["deb12"]["checks"]}
    for check_id in (
        "gpu.count",
        "gpu.visible",
        "gpu.model",
        "gpu.memory",
        "gpu.pcie_width",
        "driver.loaded",
        "driver.branch",
        "driver.flavor",
    ):
        assert statuses[check_id] == "pass", (check_id, report["deb12"]["checks"])
    # recorded idle at Gen1 of Gen3: a warning, not a failure
    assert statuses["gpu.pcie_gen"] == "warn"
    assert statuses["framework.pytorch"] == "skip"
    laptop = {c["id"]: c for c in report["deb13"]["checks"]}
    assert laptop["gpu.count"]["status"] == "pass" and laptop["driver.loaded"]["status"] == "skip"
    suites = ET.parse(junit).getroot()
    assert int(suites.find("testsuite").get("tests")) >= 2 * len(statuses) - 2
    # the framework probes ran on each host in the facts run (verify.yml) and the suite got their output: no venv
    # there, so python3 ran them, and torch does not import
    (context_file,) = tmp_path.glob("runs/*-verify-*/verify-context.json")
    context = json.loads(context_file.read_text())["hosts"]
    for name in ("deb12", "deb13"):
        probes = context[name]["frameworks"]
        assert probes["venv_python"] is False and probes["build_record"] is None, probes
        assert probes["torch"]["error"].startswith("PyTorch does not import"), probes
        assert probes["jax"]["error"].startswith("JAX does not import"), probes
    assert "PyTorch does not import" in statuses_message(report["deb12"], "framework.pytorch")
    # and left nothing behind on the hosts
    for host in (debian_hosts["deb12"], debian_hosts["deb13"]):
        left = host.run("ls -a /tmp ~/.ansible_async 2>/dev/null | grep -c dlsetup-probes- || true", check=True)
        assert left.stdout.strip() == "0", left.stdout


def statuses_message(host_report: dict, check_id: str) -> str:
    return next(c["message"] for c in host_report["checks"] if c["id"] == check_id)


def test_verify_fails_naming_the_gpu(dressed, tmp_path):
    res = dlsetup(
        "verify",
        "-i",
        str(dressed),
        "deb12",
        "--expect",
        "gpu_memory_min_mib=12000",
        "--expect",
        "gpu_count=2",
        "--format",
        "json",
        state_dir=tmp_path,
    )
    assert res.returncode == 6, res.stdout + res.stderr
    checks = {c["id"]: c for c in json.loads(res.stdout)["hosts"]["deb12"]["checks"]}
    memory = checks["gpu.memory"]
    assert memory["status"] == "fail"
    assert "0000:05:00.0" in memory["message"] and "GTX 1080 Ti" in memory["message"]
    table = dlsetup("verify", "-i", str(dressed), "deb12", "--expect", "gpu_count=3", state_dir=tmp_path)
    assert table.returncode == 6 and "verification failed" in table.stderr


def test_bad_input_is_one_line_before_anything_runs(dressed, tmp_path):
    res = dlsetup("verify", "-i", str(dressed), "deb12", "--expect", "gpu_cnt=2", state_dir=tmp_path)
    assert res.returncode == 2
    assert res.stderr.strip().count("\n") == 0 and "unknown expectation 'gpu_cnt'" in res.stderr
    res = dlsetup("facts", "-i", str(dressed), "no-such-host", state_dir=tmp_path)
    assert res.returncode == 2 and "unknown host or group 'no-such-host'" in res.stderr
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def standalone_suite(hosts: str, inventory: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The verification suite run on its own, as the README shows (no dlsetup context file)."""
    env = dict(os.environ)
    env.pop("DLSETUP_VERIFY_CONTEXT", None)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return subprocess.run(
        [sys.executable, "-m", "pytest", "--pyargs", "dlsetup.verify.suite", "-p", "no:cacheprovider",
         f"--hosts={hosts}", f"--ansible-inventory={inventory}", "-q", "-rs"],
        capture_output=True, text=True, env=env, cwd=cwd, timeout=600, check=False,
    )  # fmt: skip


def test_standalone_pytest_suite(dressed, tmp_path):
    res = standalone_suite("ansible://rigs", dressed, tmp_path)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    assert "passed" in res.stdout
    # and it fails when the inventory expects something else
    broken = tmp_path / "hosts.yml"
    inv = yaml.safe_load(dressed.read_text())
    inv["all"]["hosts"]["deb12"]["dlsetup_expect"] = {**RIG_EXPECT, "gpu_count": 4}
    broken.write_text(yaml.safe_dump(inv))
    res = standalone_suite("ansible://deb12", broken, tmp_path)
    assert res.returncode == 1 and "gpu.count" in res.stdout
