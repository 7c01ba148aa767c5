"""dlsetup_hw_facts run for real by Ansible against localhost, with fake sysfs/proc trees and a fake nvidia-smi
replaying real captures (tests/fixtures). See conftest.py for run_module()."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import ansible_runner
import pytest

from dlsetup.facts.hwparse import nvidia_smi, textfiles
from dlsetup.facts.model import HostFacts

REPO = Path(__file__).resolve().parents[2]
COLLECTED = REPO / "tests" / "fixtures" / "collected"
SCENARIOS = REPO / "tests" / "fixtures" / "nvidia-smi-scenarios"
FAKE_NVIDIA_SMI = REPO / "tests" / "fakes" / "nvidia-smi"

pytestmark = pytest.mark.skipif(
    shutil.which("ansible", path=str(Path(sys.executable).parent)) is None, reason="no ansible"
)


def facts_of(result: dict) -> dict:
    facts = result["ansible_facts"]["dlsetup_hw"]
    # Every answer must have the documented shape (raises FactsFormatError otherwise) and round-trip.
    assert HostFacts.from_dict(facts).to_dict() == facts
    return facts


def first_line(relative: str) -> str:
    text = (COLLECTED / relative).read_text()
    return next(line.strip() for line in text.splitlines() if line.strip())


def expected_cuda_version() -> str | None:
    # The module loads libcuda on the test machine itself (none on CI; the real one on a GPU machine).
    return nvidia_smi.format_cuda_version(nvidia_smi.read_cuda_driver_version())


PCIE_KEYS = ("gen_current", "gen_max", "width_current", "width_max", "slot_gen_max", "slot_width_max")


def pcie(*values: int | None) -> dict:
    return dict(zip(PCIE_KEYS, values, strict=True))


def test_h200_vm(run_module):
    result = run_module("h200-vm", "h200", nvidia_proc="h200-580-open")
    assert result["changed"] is False
    facts = facts_of(result)
    assert facts["gpus"] == [
        {
            "index": 0,
            "pci_bus_id": "0000:00:06.0",
            "pci_id": "10de:2335",
            "subsystem_id": "10de:18bf",
            "pci_class": "0x030200",
            "name": "NVIDIA H200",
            "pci_name": None,  # not in the 2023 pci.ids excerpt
            "memory_mib": 143771,
            "compute_capability": "9.0",
            "persistence_mode": True,
            "kernel_driver": "nvidia",
            "visible_to_driver": True,
            "pcie": pcie(5, 5, 16, 16, None, None),  # directly on the root complex: no slot values
        }
    ]
    assert facts["driver"] == {
        "loaded": True,
        "version": "580.159.04",
        "cuda_version": expected_cuda_version(),
        "kernel_module": "open",
        "error": None,
    }
    assert facts["warnings"] == []
    # Exactly one nvidia-smi call, with the modern field list.
    calls = result["fake_nvidia_smi_calls"]
    assert [c["rc"] for c in calls] == [0]
    assert calls[0]["argv"][-2:] == [
        "--query-gpu=" + ",".join(nvidia_smi.QUERY_FIELDS),
        "--format=csv,noheader,nounits",
    ]
    # Disks come from the fake tree (virtio disks of the H200 VM; loop/zram skipped).
    assert [(d["name"], d["size_gib"], d["transport"], d["rotational"], d["ssd"]) for d in facts["disks"]] == [
        ("vda", 256, "virtio", True, False),
        ("vdb", 0, "virtio", True, False),
    ]
    assert facts["machine"]["vendor"] is None  # the VM has no DMI
    # CPU, memory and OS are the test machine's own, read from its /proc and /etc.
    cpu = textfiles.parse_cpuinfo(Path("/proc/cpuinfo").read_text())
    assert facts["cpu"] == {"model": cpu["model"], "cores": cpu["cores"], "threads": cpu["threads"]}
    assert facts["memory_mib"] == textfiles.parse_meminfo_total_mib(Path("/proc/meminfo").read_text())
    assert facts["os"]["id"] == textfiles.parse_os_release(Path("/etc/os-release").read_text())["ID"]
    assert facts["machine"]["virtualization"] in ("container", "vm", None)


def test_check_mode(run_module):
    normal = facts_of(run_module("h200-vm", "h200", nvidia_proc="h200-580-open"))
    checked = run_module("h200-vm", "h200", nvidia_proc="h200-580-open", check=True)
    # A module without check-mode support would come back skipped (run_module fails the test then).
    assert checked["changed"] is False
    assert facts_of(checked)["gpus"] == normal["gpus"]
    assert len(checked["fake_nvidia_smi_calls"]) == 1


def test_2x1080ti_proprietary_410_uses_the_legacy_fields_up_front(run_module):
    result = run_module("2x1080ti-rig", "2x1080ti", nvidia_proc="410.78-proprietary")
    facts = facts_of(result)
    calls = result["fake_nvidia_smi_calls"]
    assert len(calls) == 1
    assert calls[0]["argv"][-2] == "--query-gpu=" + ",".join(nvidia_smi.LEGACY_QUERY_FIELDS)
    assert calls[0]["rc"] == 0
    assert [(g["index"], g["pci_bus_id"], g["name"], g["memory_mib"]) for g in facts["gpus"]] == [
        (0, "0000:05:00.0", "GeForce GTX 1080 Ti", 11175),
        (1, "0000:06:00.0", "GeForce GTX 1080 Ti", 11178),
    ]
    for gpu in facts["gpus"]:
        assert gpu["pci_id"] == "10de:1b06"
        assert gpu["subsystem_id"] == "10de:120f"
        assert gpu["pci_name"] == "GP102 [GeForce GTX 1080 Ti]"
        assert gpu["compute_capability"] is None  # a 410 nvidia-smi has no compute_cap
        assert gpu["persistence_mode"] is False
        assert gpu["visible_to_driver"] is True
        assert gpu["pcie"] == pcie(1, 3, 16, 16, 3, 16)  # idle Gen1 of Gen3, full width, x16 Gen3 slot
    assert facts["driver"]["version"] == "410.78"
    assert facts["driver"]["kernel_module"] == "proprietary"
    assert facts["driver"]["error"] is None
    assert facts["warnings"] == []


def test_legacy_nvidia_smi_is_retried_once_with_the_old_fields(run_module):
    result = run_module("2x1080ti-rig", "legacy-470")  # no /proc/driver/nvidia: the version is unknown
    facts = facts_of(result)
    calls = result["fake_nvidia_smi_calls"]
    assert [c["rc"] for c in calls] == [2, 0]
    assert calls[0]["argv"][-2] == "--query-gpu=" + ",".join(nvidia_smi.QUERY_FIELDS)
    assert calls[1]["argv"][-2] == "--query-gpu=" + ",".join(nvidia_smi.LEGACY_QUERY_FIELDS)
    assert [g["index"] for g in facts["gpus"]] == [0, 1]
    assert all(g["visible_to_driver"] for g in facts["gpus"])
    assert facts["driver"]["error"] is None
    assert facts["driver"]["version"] == "410.78"
    assert facts["driver"]["kernel_module"] is None


ERROR_CASES = [
    # (tree, scenario, nvidia_proc, kind, exit code, real text, word in the hint)
    ("trained-down", "couldnt-communicate", None, "driver_not_loaded", 9,
     "nvidia-smi-failed-couldnt-communicate/output.txt", "lsmod"),
    ("x8-slot", "version-mismatch", None, "version_mismatch", 18,
     "nvml-driver-library-version-mismatch/output.txt", "reboot"),
    ("2x1080ti-rig", "no-devices", "410.78-proprietary", "no_devices", 6,
     "no-devices-rtx5090-open-575/output.txt", "nouveau"),
    ("2x1080ti-rig", "gpu-lost", "410.78-proprietary", "gpu_lost", 255,
     "unable-to-determine-device-handle-2015/output.txt", "Xid 79"),
    ("xps15-9570", "nvml-missing", None, "nvml_missing", 12,
     "nvml-missing-optimus-laptop-2015/output.txt", "libnvidia-ml.so"),
]  # fmt: skip


@pytest.mark.parametrize(("tree", "scenario", "proc", "kind", "rc", "text", "hint_word"), ERROR_CASES)
def test_driver_errors_are_data(run_module, tree, scenario, proc, kind, rc, text, hint_word):
    result = run_module(tree, scenario, nvidia_proc=proc)
    assert result["changed"] is False
    facts = facts_of(result)
    assert [c["rc"] for c in result["fake_nvidia_smi_calls"]] == [rc]  # the real exit code, one call
    error = facts["driver"]["error"]
    assert error["kind"] == kind
    assert error["message"] == first_line(text)
    assert hint_word in error["hint"]
    assert facts["gpus"], "every tree here has an NVIDIA GPU on PCI"
    for gpu in facts["gpus"]:
        assert gpu["visible_to_driver"] is False
        assert gpu["index"] is None
        assert gpu["name"] is None
        assert any(gpu["pci_bus_id"] in w and kind in w for w in facts["warnings"])
    assert len(facts["warnings"]) == len(facts["gpus"])


def test_gpu_lost_hint_names_the_bus_id_from_the_message(run_module):
    facts = facts_of(run_module("2x1080ti-rig", "gpu-lost"))
    assert "GPU 0000:0b:00.0" in facts["driver"]["error"]["hint"]


def test_x8_slot_is_reported_from_the_upstream_port(run_module):
    facts = facts_of(run_module("x8-slot", "version-mismatch"))
    assert [g["pci_bus_id"] for g in facts["gpus"]] == ["0000:01:00.0", "0000:03:00.0"]  # no audio, no AMD iGPU
    for gpu in facts["gpus"]:
        assert gpu["pci_name"] == "AD102 [GeForce RTX 4090]"
        assert gpu["kernel_driver"] == "nvidia"
        assert gpu["pcie"]["slot_width_max"] == 8
        assert gpu["pcie"]["width_max"] == 16
        assert gpu["pcie"]["width_current"] == 8
        assert gpu["pcie"]["slot_gen_max"] == 3
        assert gpu["pcie"]["gen_max"] == 4
    assert facts["driver"]["loaded"] is True  # nvidia is bound to the GPUs, only the libraries are newer


def test_trained_down_link_in_an_x16_slot(run_module):
    facts = facts_of(run_module("trained-down", "couldnt-communicate"))
    (gpu,) = facts["gpus"]
    assert gpu["pci_id"] == "10de:1f08"
    assert gpu["pcie"] == pcie(3, 3, 8, 16, 3, 16)
    assert gpu["pcie"]["width_current"] < gpu["pcie"]["width_max"] == gpu["pcie"]["slot_width_max"]
    assert gpu["kernel_driver"] is None
    assert facts["driver"]["loaded"] is False


def test_no_nvidia_gpu_is_not_an_error(run_module):
    # An XPS 13 with the driver's nvidia-smi installed: "No devices were found" is what it says, and that is fine.
    result = run_module("xps13-9370", "no-devices")
    facts = facts_of(result)
    assert facts["gpus"] == []
    assert facts["driver"]["error"] is None
    assert facts["driver"]["loaded"] is False
    assert facts["warnings"] == []
    assert facts["machine"]["vendor"] == "Dell Inc."
    assert facts["machine"]["product"] == "XPS 13 9370"
    assert [c["rc"] for c in result["fake_nvidia_smi_calls"]] == [6]


def real_nvidia_smi_elsewhere() -> str | None:
    """An nvidia-smi the module would find without our fake (PATH plus the sbin dirs get_bin_path adds)."""
    dirs = [*os.environ.get("PATH", "").split(os.pathsep), "/sbin", "/usr/sbin", "/usr/local/sbin"]
    return shutil.which("nvidia-smi", path=os.pathsep.join(dirs))


needs_no_real_nvidia_smi = pytest.mark.skipif(
    real_nvidia_smi_elsewhere() is not None, reason="this machine has a real nvidia-smi the module would find"
)


@needs_no_real_nvidia_smi
def test_no_nvidia_gpu_and_no_nvidia_smi(run_module):
    facts = facts_of(run_module("xps13-9370", None))
    assert facts["gpus"] == []
    assert facts["driver"]["error"] is None


@needs_no_real_nvidia_smi
def test_laptop_dgpu_before_any_driver(run_module):
    result = run_module("xps15-9570", None)
    facts = facts_of(result)
    assert result["fake_nvidia_smi_calls"] == []
    (gpu,) = facts["gpus"]
    assert gpu == {
        "index": None,
        "pci_bus_id": "0000:01:00.0",
        "pci_id": "10de:1c8c",
        "subsystem_id": "1028:087c",
        "pci_class": "0x030200",  # 3D controller, not VGA
        "name": None,
        "pci_name": "GP107M [GeForce GTX 1050 Ti Mobile]",
        "memory_mib": None,
        "compute_capability": None,
        "persistence_mode": None,
        "kernel_driver": None,
        "visible_to_driver": False,
        "pcie": pcie(None, None, None, None, None, None),
        # the CPU's x16 port above it, named from the pci.ids excerpt; the capture has no link values
        "pcie_path": [
            {
                "address": "0000:00:01.0",
                "pci_id": "8086:1901",
                "name": "6th-10th Gen Core Processor PCIe Controller (x16)",
                "kind": "root_port",
                "gen_current": None,
                "gen_max": None,
                "width_current": None,
                "width_max": None,
            }
        ],
    }
    assert facts["driver"]["error"]["kind"] == "nvidia_smi_missing"
    assert facts["driver"]["loaded"] is False
    assert facts["warnings"] == [
        "GPU 0000:01:00.0 (10de:1c8c) is on PCI but not visible to the NVIDIA driver "
        "(nvidia-smi: driver error: nvidia_smi_missing)"
    ]


def test_a_pci_gpu_the_driver_does_not_list(run_module, tmp_path):
    # Derived scenario: the 2x1080ti answer without the second GPU's row, as when a driver ignores a GPU
    # (e.g. a 595 driver skipping a Pascal card, research/compat.md section 2.1).
    scenario = tmp_path / "one-of-two"
    shutil.copytree(SCENARIOS / "2x1080ti", scenario)
    csv = scenario / "query-gpu.csv"
    csv.write_text("".join(line for line in csv.read_text().splitlines(True) if "00000000:06:00.0" not in line))
    facts = facts_of(run_module("2x1080ti-rig", scenario, nvidia_proc="410.78-proprietary"))
    listed, missing = facts["gpus"]
    assert (listed["pci_bus_id"], listed["index"], listed["visible_to_driver"]) == ("0000:05:00.0", 0, True)
    assert (missing["pci_bus_id"], missing["index"], missing["visible_to_driver"]) == ("0000:06:00.0", None, False)
    assert missing["pcie"] == pcie(1, 3, 16, 16, 3, 16)  # sysfs still knows its link
    assert facts["driver"]["error"] is None
    assert facts["warnings"] == [
        "GPU 0000:06:00.0 (10de:1b06) is on PCI but not visible to the NVIDIA driver (nvidia-smi: not listed)"
    ]


def test_gpus_on_pci_and_in_nvidia_smi_disagree(run_module):
    # The H100 capture (bus 00:09.0) against the H200 VM's PCI tree (bus 00:06.0): each side is reported.
    facts = facts_of(run_module("h200-vm", "h100-590"))
    gpu, listed = facts["gpus"]
    assert (gpu["pci_bus_id"], gpu["visible_to_driver"], gpu["index"]) == ("0000:00:06.0", False, None)
    # the GPU only nvidia-smi lists is reported too, with where it was seen
    assert (listed["pci_bus_id"], listed["source"], listed["index"]) == ("0000:00:09.0", "nvidia-smi", 0)
    assert listed["name"] == "NVIDIA H100 80GB HBM3" and listed["pci_id"] == "10de:2330"
    assert facts["driver"]["version"] == "590.48.01"
    assert len(facts["warnings"]) == 2
    assert "GPU 0000:00:06.0 (10de:2335) is on PCI but not visible" in facts["warnings"][0]
    assert facts["warnings"][1].startswith("nvidia-smi lists GPU 0000:00:09.0 (NVIDIA H100 80GB HBM3, 10de:2330)")


def test_wsl2(run_module, tmp_path):
    # WSL2 (tests/fixtures/wsl/SOURCE.md): a WSL2 kernel, /dev/dxg, only Microsoft's render device on PCI; the fake
    # nvidia-smi replays the H200 capture, so the GPU comes from nvidia-smi alone
    tree = REPO / "tests" / "fixtures" / "wsl" / "wsl2"
    facts = facts_of(
        run_module(
            tree / "sysfs",
            "h200",
            proc_root=tree / "proc",
            dev_root=tree / "dev",
            wsl_lib_dir=tree / "usr" / "lib" / "wsl" / "lib",
        )
    )
    assert facts["os"]["kernel"] == "5.4.72-microsoft-standard-WSL2"
    # the module reads the real container markers: on a test machine that is a container, that comes first
    in_container = any(os.path.exists(marker) for marker in textfiles.DEFAULT_CONTAINER_MARKERS)
    assert facts["machine"]["virtualization"] == ("container" if in_container else "wsl2")
    evidence = facts["machine"]["virtualization_evidence"]
    assert evidence[-3:] == [
        "kernel 5.4.72-microsoft-standard-WSL2 is a WSL2 kernel",
        "/dev/dxg is present (WSL2's paravirtualized GPU device)",
        "/usr/lib/wsl/lib is present (the Windows driver's libraries)",
    ]
    (gpu,) = facts["gpus"]
    assert (gpu["source"], gpu["pci_bus_id"], gpu["pci_id"], gpu["kernel_driver"]) == (
        "nvidia-smi",
        "0000:00:06.0",
        "10de:2335",
        None,
    )
    assert facts["driver"]["version"] == "580.159.04" and facts["driver"]["kernel_module"] is None
    assert facts["warnings"] == []


def test_nvidia_smi_is_found_in_the_wsl_library_directory(run_module, tmp_path):
    # sudo's secure_path leaves /usr/lib/wsl/lib off PATH: the module looks there itself. No nvidia-smi is on PATH
    # here (no scenario); the library directory holds one that replays the H200 capture.
    tree = REPO / "tests" / "fixtures" / "wsl" / "wsl2"
    lib = tmp_path / "wsl-lib"
    lib.mkdir()
    smi = lib / "nvidia-smi"
    smi.write_text(
        f'#!/bin/sh\nDLSETUP_FAKE_SMI_DIR="{SCENARIOS / "h200"}" exec "{sys.executable}" "{FAKE_NVIDIA_SMI}" "$@"\n'
    )
    smi.chmod(0o755)
    facts = facts_of(run_module(tree / "sysfs", None, proc_root=tree / "proc", dev_root=tree / "dev", wsl_lib_dir=lib))
    assert [(g["source"], g["name"]) for g in facts["gpus"]] == [("nvidia-smi", "NVIDIA H200")]
    assert facts["driver"]["error"] is None


def test_the_role_runs_the_module(tmp_path):
    """The role as the facts playbook uses it: defaults, argument specs and the task, in check mode."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "site.yml").write_text(
        "- hosts: localhost\n"
        "  gather_facts: false\n"
        "  roles:\n"
        "    - role: hw_facts\n"
        f"      hw_facts_sysfs_root: {REPO}/tests/fixtures/sysfs/2x1080ti-rig\n"
        f"      hw_facts_nvidia_proc_dir: {REPO}/tests/fixtures/nvidia-proc/410.78-proprietary\n"
        f"      hw_facts_pci_ids_path: {REPO}/tests/fixtures/pci.ids/pci.ids.excerpt\n"
    )
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "nvidia-smi").symlink_to(FAKE_NVIDIA_SMI)
    run = ansible_runner.run(
        private_data_dir=str(tmp_path),
        playbook="site.yml",
        inventory=f"localhost ansible_connection=local ansible_python_interpreter={sys.executable}",
        envvars={
            "ANSIBLE_ROLES_PATH": str(REPO / "roles"),
            "DLSETUP_FAKE_SMI_DIR": str(SCENARIOS / "2x1080ti"),
            "PATH": f"{bin_dir}:{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin",
        },
        cmdline="--check",
        quiet=True,
    )
    assert run.status == "successful", run.stdout.read()
    (res,) = [
        e["event_data"]["res"]
        for e in run.events
        if e.get("event") == "runner_on_ok" and e["event_data"].get("task") == "Gather dlsetup hardware facts"
    ]
    facts = res["ansible_facts"]["dlsetup_hw"]
    assert [g["pci_name"] for g in facts["gpus"]] == ["GP102 [GeForce GTX 1080 Ti]"] * 2
    assert facts["driver"]["kernel_module"] == "proprietary"
    assert res["changed"] is False


def test_module_documentation_is_valid():
    out = subprocess.run(
        [
            str(Path(sys.executable).parent / "ansible-doc"),
            "-M",
            str(REPO / "roles/hw_facts/library"),
            "--json",
            "dlsetup_hw_facts",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    doc = json.loads(out.stdout)["dlsetup_hw_facts"]
    assert set(doc["doc"]["options"]) == {
        "sysfs_root",
        "nvidia_proc_dir",
        "pci_ids_path",
        "proc_root",
        "dev_root",
        "wsl_lib_dir",
    }
    assert doc["doc"]["options"]["sysfs_root"]["default"] == "/sys"
    assert "dlsetup_hw" in doc["return"]["ansible_facts"]["contains"]
    assert doc["examples"]
