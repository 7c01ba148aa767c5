"""`dlsetup facts` and `dlsetup verify localhost`, as a user runs them, on recorded rigs whose GPUs run narrow
(tests/fixtures/sysfs): the facts show each GPU's PCIe tree and where its lanes come from, and verify says where
the lanes went. Ansible runs for real against localhost; the hardware is the recorded tree's (no driver: the
driver checks fail, the PCIe checks do not need one). The CPU is this machine's, which dlsetup's CPU catalogue
does not list: the messages say so (tests/unit/test_pcie_tree.py covers the listed CPUs)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures"


def dlsetup(tmp_path: Path, tree: str, *args: str) -> tuple[int, Any]:
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(
        "all:\n  hosts:\n    localhost:\n"
        "      ansible_connection: local\n"
        f"      ansible_python_interpreter: {sys.executable}\n"
        f"      hw_facts_sysfs_root: {FIXTURES}/sysfs/{tree}\n"
        f"      hw_facts_nvidia_proc_dir: {tmp_path}/no-driver\n"
        f"      hw_facts_pci_ids_path: {FIXTURES}/pci.ids/pci.ids.excerpt\n"
    )
    env = {
        **os.environ,
        # no nvidia-smi: the recorded rig has no driver loaded
        "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
        "DLSETUP_STATE_DIR": str(tmp_path / "state"),
    }
    done = subprocess.run(
        [sys.executable, "-m", "dlsetup", *args, "localhost", "-i", str(inventory), "--format", "json"],
        capture_output=True, text=True, env=env, timeout=600, check=False,
    )  # fmt: skip
    assert "Traceback" not in done.stderr, done.stderr[-2000:]
    return done.returncode, json.loads(done.stdout)


def checks_of(document: Any) -> dict[str, Any]:
    return {c["id"]: c for c in document["hosts"]["localhost"]["checks"]}


def test_a_gpu_in_a_chipset_slot(tmp_path: Path) -> None:
    rc, facts = dlsetup(tmp_path, "z170-chipset-slot", "facts")
    assert rc == 0
    gpus = {g["pci_bus_id"]: g for g in facts["hosts"]["localhost"]["gpus"]}
    assert gpus["0000:01:00.0"]["pcie_attach"]["to"] == "cpu"
    chipset = gpus["0000:03:00.0"]
    assert chipset["pcie_attach"] == {
        "to": "chipset",
        "root_port": "0000:00:1b.0",
        "rule": "chipset_by_name",
        "source": chipset["pcie_attach"]["source"],
    }
    assert chipset["pcie_path"][0]["name"] == "100 Series/C230 Series Chipset Family PCI Express Root Port #17"

    rc, report = dlsetup(tmp_path, "z170-chipset-slot", "verify", "--expect", "pcie_lane_source=cpu")
    assert rc == 6
    found = checks_of(report)
    width = found["gpu.pcie_width"]
    assert width["status"] == "warn"
    assert (
        "0000:03:00.0) runs x4: the slot gives only x4 while the GPU can do x16: it hangs off the chipset"
        in (width["message"])
    )
    assert "move it to a CPU slot" in width["message"]
    source = found["gpu.pcie_lane_source"]
    assert (source["status"], source["expected"], source["expected_from"]) == ("fail", "cpu", "--expect")
    assert source["actual"] == ["cpu", "chipset"]


def test_two_gpus_on_an_x8_x8_split(tmp_path: Path) -> None:
    rc, report = dlsetup(tmp_path, "x8-slot", "verify")
    assert rc == 6  # no driver on the recorded rig
    found = checks_of(report)
    width = found["gpu.pcie_width"]
    assert width["status"] == "warn"
    for bus, port in (("0000:01:00.0", "0000:00:01.1"), ("0000:03:00.0", "0000:00:01.3")):
        assert f"{bus}) runs x8: the slot gives only x8 while the GPU can do x16: its lanes come from the CPU " \
            f"(root port {port}), but" in width["message"]  # fmt: skip
    assert "is not in dlsetup's CPU catalogue, so its lane budget is not known" in width["message"]
    assert found["gpu.pcie_lane_source"]["status"] == "pass"


def test_a_trained_down_link_is_told_from_a_narrow_slot(tmp_path: Path) -> None:
    rc, report = dlsetup(tmp_path, "trained-down", "verify")
    assert rc == 6  # no driver on the recorded rig
    width = checks_of(report)["gpu.pcie_width"]
    assert width["status"] == "warn" and "link trained down to x8" in width["message"]
    assert "lane budget" not in width["message"]
