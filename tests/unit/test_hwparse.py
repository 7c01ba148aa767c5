"""hwparse: the parsers over every real capture in tests/fixtures, and collect() over the fake trees."""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from dlsetup.facts.hwparse import collector, common, nvidia_smi, sysfs, textfiles

REPO = Path(__file__).resolve().parents[2]
FIX = REPO / "tests" / "fixtures"
H200 = FIX / "hosts" / "h200-ubuntu2404"
DEV_VM = FIX / "hosts" / "dev-vm-debian12"
COLLECTED = FIX / "collected"
SYSFS = FIX / "sysfs"
SCENARIOS = FIX / "nvidia-smi-scenarios"
NVIDIA_PROC = FIX / "nvidia-proc"
PCI_IDS = FIX / "pci.ids" / "pci.ids.excerpt"
FAKE_SMI = REPO / "tests" / "fakes" / "nvidia-smi"


def read(path: Path) -> str:
    return path.read_text(encoding="utf-8")


# ------------------------------------------------------------------------------------------------
# nvidia-smi values


@pytest.mark.parametrize(
    "raw",
    [
        "[N/A]",
        "[Not Supported]",
        "[Unknown Error]",
        "[Requested functionality has been deprecated]",
        "[Insufficient Permissions]",
        "[GPU requires reset]",
        "N/A",
        " [N/A] ",
        "",
        None,
    ],
)
def test_sentinels_become_none(raw):
    assert nvidia_smi.smi_value(raw) is None


def test_values_are_stripped_not_dropped():
    assert nvidia_smi.smi_value(" 580.159.04 ") == "580.159.04"
    assert nvidia_smi.smi_value("Default") == "Default"
    assert common.parse_int("[N/A]") is None
    assert common.parse_int("16") == 16
    assert common.parse_int("16x") is None


def _h200_fields() -> list[str]:
    header = read(H200 / "nvidia-smi-query-gpu.csv").splitlines()[0]
    return [column.split(" [")[0] for column in header.split(", ")]


def test_h200_noheader_nounits_capture():
    fields = _h200_fields()
    rows = nvidia_smi.parse_query_gpu_csv(read(H200 / "nvidia-smi-query-gpu-noheader-nounits.csv"), fields)
    assert len(rows) == 1
    row = rows[0]
    assert row["index"] == "0"
    assert row["name"] == "NVIDIA H200"
    assert row["pci.bus_id"] == "00000000:00:06.0"
    assert row["memory.total"] == "143771"
    assert row["driver_version"] == "580.159.04"
    assert row["pcie.link.gen.gpucurrent"] == "5"
    assert row["pcie.link.gen.hostmax"] is None  # [N/A]
    assert row["pcie.link.width.max"] == "16"
    assert row["persistence_mode"] == "Enabled"
    assert row["compute_cap"] == "9.0"
    assert row["display_mode"] is None  # [Requested functionality has been deprecated]
    assert row["addressing_mode"] == "None"  # the literal word, not a sentinel


def test_h200_csv_with_header_equals_noheader_nounits():
    with_header = nvidia_smi.parse_query_gpu_csv_with_header(read(H200 / "nvidia-smi-query-gpu.csv"))
    bare = nvidia_smi.parse_query_gpu_csv(read(H200 / "nvidia-smi-query-gpu-noheader-nounits.csv"), _h200_fields())
    assert with_header == bare
    assert with_header[0]["power.limit"] == "700.00"


def test_h100_all_fields_capture():
    rows = nvidia_smi.parse_query_gpu_csv_with_header(
        read(COLLECTED / "h100-590-query-gpu-csv-all-fields" / "output.csv")
    )
    assert len(rows) == 1
    row = rows[0]
    assert len(row) == 212
    assert row["name"] == "NVIDIA H100 80GB HBM3"
    assert row["memory.total"] == "81559"
    assert common.normalize_bus_id(row["pci.bus_id"]) == "0000:00:09.0"
    assert nvidia_smi.parse_pci_device_id(row["pci.device_id"]) == "10de:2330"
    assert row["pcie.link.gen.gpumax"] == "5"
    assert row["pcie.link.gen.hostmax"] is None
    assert row["compute_cap"] == "9.0"
    assert row["display_mode"] is None
    assert nvidia_smi.parse_persistence_mode(row["persistence_mode"]) is True


def test_row_with_wrong_cell_count_is_an_error():
    with pytest.raises(ValueError, match="2 values where 3"):
        nvidia_smi.parse_query_gpu_csv("0, NVIDIA H200\n", ["index", "name", "uuid"])


def test_query_fields_exist_in_the_real_580_field_list():
    help_text = read(H200 / "nvidia-smi-help-query-gpu.txt")
    known = set()
    for line in help_text.splitlines():
        if line.startswith('"'):
            known.update(part.strip().strip('"') for part in line.split(" or "))
    assert "compute_cap" in known  # the parse found the list
    assert set(nvidia_smi.QUERY_FIELDS) <= known
    assert set(nvidia_smi.LEGACY_QUERY_FIELDS) <= known


def test_legacy_list_drops_only_the_new_fields():
    assert set(nvidia_smi.QUERY_FIELDS) - set(nvidia_smi.LEGACY_QUERY_FIELDS) == {
        "compute_cap",
        "pcie.link.gen.gpucurrent",
        "pcie.link.gen.gpumax",
    }
    assert "pcie.link.gen.current" in nvidia_smi.LEGACY_QUERY_FIELDS


@pytest.mark.parametrize(
    ("version", "legacy"),
    [("410.78", True), ("470.256.02", True), ("535.309.01", False), ("580.159.04", False), (None, False)],
)
def test_field_list_by_driver_generation(version, legacy):
    expected = nvidia_smi.LEGACY_QUERY_FIELDS if legacy else nvidia_smi.QUERY_FIELDS
    assert nvidia_smi.choose_query_fields(version) == expected


def test_query_command():
    argv = nvidia_smi.query_gpu_command("/usr/bin/nvidia-smi", ["index", "name"])
    assert argv == ["/usr/bin/nvidia-smi", "--query-gpu=index,name", "--format=csv,noheader,nounits"]


# ------------------------------------------------------------------------------------------------
# bus ids, device ids


def _bus_ids_in_table(path: Path) -> list[str]:
    ids = []
    for line in read(path).splitlines():
        for cell in line.split("|"):
            token = cell.strip().split(" ")[0] if cell.strip() else ""
            if token.count(":") == 2 and "." in token:
                ids.append(token)
    return ids


def test_bus_ids_from_real_tables():
    assert _bus_ids_in_table(COLLECTED / "4x1080ti-410-nvidia-smi" / "output.txt") == [
        "00000000:05:00.0",
        "00000000:06:00.0",
        "00000000:09:00.0",
        "00000000:0A:00.0",
    ]
    normalized = [
        common.normalize_bus_id(b) for b in _bus_ids_in_table(COLLECTED / "4x1080ti-410-nvidia-smi" / "output.txt")
    ]
    assert normalized == ["0000:05:00.0", "0000:06:00.0", "0000:09:00.0", "0000:0a:00.0"]
    # Hyper-V (Azure) domain: 8 hex digits that do not start with zeros.
    (azure,) = _bus_ids_in_table(COLLECTED / "v100-azure-err-power-nvidia-smi-snippet" / "output.txt")
    assert azure == "00008ED0:00:00.0"
    assert common.normalize_bus_id(azure) == "8ed0:00:00.0"
    # 2014 driver: 4-digit domain already.
    titan = _bus_ids_in_table(COLLECTED / "3xgtxtitan-325-lost-gpu-nvidia-smi-TRUNCATED" / "output.txt")
    assert [common.normalize_bus_id(b) for b in titan] == ["0000:03:00.0", "0000:04:00.0", "0000:84:00.0"]


@pytest.mark.parametrize("bad", ["", "[N/A]", "00:06.0", "0000:00:06", "GPU-d53dfef5", None])
def test_bad_bus_ids(bad):
    assert common.normalize_bus_id(bad) is None


def test_device_ids():
    assert nvidia_smi.parse_pci_device_id("0x233510DE") == "10de:2335"
    assert nvidia_smi.parse_pci_device_id("0x18BF10DE") == "10de:18bf"
    # The `nvidia-smi -q -x` form has no 0x (real GTX 1660 Ti capture).
    xml = ET.parse(COLLECTED / "gtx1660ti-418-graphics-device-nvidia-smi-q-x" / "output.xml").getroot()
    device_id = xml.findtext("gpu/pci/pci_device_id")
    assert device_id == "218410DE"
    assert nvidia_smi.parse_pci_device_id(device_id) == "10de:2184"
    assert common.normalize_bus_id(xml.findtext("gpu/pci/pci_bus_id")) == "0000:43:00.0"
    assert nvidia_smi.parse_persistence_mode(xml.findtext("gpu/persistence_mode")) is False
    assert nvidia_smi.parse_pci_device_id("[N/A]") is None
    assert nvidia_smi.parse_pci_device_id("0x2335") is None


def test_persistence_mode():
    assert nvidia_smi.parse_persistence_mode("Enabled") is True
    assert nvidia_smi.parse_persistence_mode("Disabled") is False
    assert nvidia_smi.parse_persistence_mode("[N/A]") is None


# ------------------------------------------------------------------------------------------------
# failures


def _first_line(path: Path) -> str:
    return next(line.strip() for line in read(path).splitlines() if line.strip())


@pytest.mark.parametrize(
    ("fixture", "rc", "kind", "hint_word"),
    [
        ("nvidia-smi-failed-couldnt-communicate/output.txt", 9, "driver_not_loaded", "lsmod"),
        ("nvml-driver-library-version-mismatch/output.txt", 18, "version_mismatch", "reboot"),
        ("ubuntu-drivers-devices-gt640-with-nvml-mismatch/nvidia-smi.txt", 18, "version_mismatch", "reboot"),
        ("no-devices-rtx5090-open-575/output.txt", 6, "no_devices", "nouveau"),
        ("unable-to-determine-device-handle-2015/output.txt", 255, "gpu_lost", "Xid 79"),
        ("unable-to-determine-device-handle-2015/output.txt", 15, "gpu_lost", "reseat"),
        ("nvml-missing-optimus-laptop-2015/output.txt", 12, "nvml_missing", "ldconfig"),
    ],
)
def test_real_failures_are_classified(fixture, rc, kind, hint_word):
    text = read(COLLECTED / fixture)
    error = nvidia_smi.classify_nvidia_smi_failure(rc, text)
    assert set(error) == {"kind", "message", "hint"}
    assert error["kind"] == kind
    assert error["message"] == _first_line(COLLECTED / fixture)
    assert hint_word in error["hint"]


def test_classification_is_by_text_not_only_exit_code():
    text = read(COLLECTED / "nvml-driver-library-version-mismatch" / "output.txt")
    assert nvidia_smi.classify_nvidia_smi_failure(255, text)["kind"] == "version_mismatch"
    lost = read(COLLECTED / "unable-to-determine-device-handle-2015" / "output.txt")
    error = nvidia_smi.classify_nvidia_smi_failure(255, lost)
    assert "GPU 0000:0b:00.0" in error["hint"]


def test_exit_codes_without_known_text():
    assert nvidia_smi.classify_nvidia_smi_failure(9, "")["kind"] == "driver_not_loaded"
    assert nvidia_smi.classify_nvidia_smi_failure(12, "")["kind"] == "nvml_missing"
    assert nvidia_smi.classify_nvidia_smi_failure(15, "")["kind"] == "gpu_lost"
    assert nvidia_smi.classify_nvidia_smi_failure(18, "")["kind"] == "version_mismatch"
    assert nvidia_smi.classify_nvidia_smi_failure(6, "")["kind"] == "no_devices"
    other = nvidia_smi.classify_nvidia_smi_failure(3, "Some new failure\nsecond line\n")
    assert other == {
        "kind": "query_failed",
        "message": "Some new failure",
        "hint": "nvidia-smi exited with code 3: run `nvidia-smi` by hand for the full message.",
    }
    timed_out = nvidia_smi.classify_nvidia_smi_failure(124, "")
    assert timed_out["kind"] == "query_failed"
    assert "did not answer in time" in timed_out["hint"]
    assert "code 124" in timed_out["message"]


def test_invalid_field_answer_from_the_real_capture():
    line = next(line for line in read(H200 / "nvidia-smi-query-each-field.txt").splitlines() if "bogus" in line)
    message = line.split(" => ", 1)[1].split("|")[0]
    assert message == 'Field "bogus.field" is not a valid field to query.'
    assert line.endswith("rc=2")
    assert nvidia_smi.is_invalid_field_error(2, message)
    assert not nvidia_smi.is_invalid_field_error(0, message)
    assert not nvidia_smi.is_invalid_field_error(2, "No devices were found")
    error = nvidia_smi.classify_nvidia_smi_failure(2, message + "\n\n")
    assert error["kind"] == "query_failed"
    assert "older" in error["hint"]


def test_no_devices_hint_names_the_cause_seen_on_the_host():
    text = read(COLLECTED / "no-devices-rtx5090-open-575" / "output.txt")
    plain = nvidia_smi.classify_nvidia_smi_failure(6, text)["hint"]
    assert "Here" not in plain
    nouveau = nvidia_smi.classify_nvidia_smi_failure(6, text, kernel_drivers=["nouveau", None])["hint"]
    assert "Here nouveau is bound" in nouveau
    opened = nvidia_smi.classify_nvidia_smi_failure(6, text, kernel_module="open")["hint"]
    assert "Here the open kernel module is loaded" in opened


def test_missing_nvidia_smi_error():
    error = nvidia_smi.nvidia_smi_missing_error()
    assert error["kind"] == "nvidia_smi_missing"
    assert set(error) == {"kind", "message", "hint"}
    assert set(nvidia_smi.ERROR_KINDS) >= {error["kind"], "query_failed"}


# ------------------------------------------------------------------------------------------------
# sysfs strings, /proc, os-release, DMI, pci.ids


@pytest.mark.parametrize(
    ("speed", "gen"),
    [
        ("2.5 GT/s PCIe", 1),
        ("5.0 GT/s PCIe", 2),
        ("8.0 GT/s PCIe", 3),
        ("16.0 GT/s PCIe", 4),
        ("32.0 GT/s PCIe", 5),
        ("64.0 GT/s PCIe", 6),
        ("2.5 GT/s", 1),
        ("5 GT/s", 2),
        ("8 GT/s", 3),
        ("Unknown", None),
        ("Unknown speed", None),
        ("", None),
        (None, None),
    ],
)
def test_link_speeds(speed, gen):
    assert sysfs.link_speed_to_gen(speed) == gen


def test_link_attributes_of_the_real_h200_capture():
    lines = read(H200 / "sysfs-pci.txt").splitlines()
    start, parent = lines.index("====") + 2, lines.index("-- parent /sys/devices/pci0000:00")
    gpu = dict(line.split("=", 1) for line in lines[start:parent])
    assert sysfs.link_speed_to_gen(gpu["current_link_speed"]) == 5
    assert sysfs.link_speed_to_gen(gpu["max_link_speed"]) == 5
    assert sysfs.parse_link_width(gpu["current_link_width"]) == 16
    assert sysfs.parse_link_width(gpu["max_link_width"]) == 16
    assert sysfs.is_nvidia_gpu(gpu["vendor"], gpu["class"])
    # The root-complex parent has no link files: what the capture shows there parses as "unknown".
    root = dict(line.split("=", 1) for line in lines[parent + 1 :])
    assert root["max_link_width"].startswith("cat: ")
    assert sysfs.link_speed_to_gen(root["max_link_speed"]) is None
    assert sysfs.parse_link_width(root["max_link_width"]) is None


@pytest.mark.parametrize(
    ("width", "lanes"), [("16", 16), ("8", 8), ("1", 1), ("0", None), ("255", None), ("x16", None)]
)
def test_link_widths(width, lanes):
    assert sysfs.parse_link_width(width) == lanes


def test_proc_version_open_module_real_h200():
    parsed = textfiles.parse_nvidia_proc_version(read(NVIDIA_PROC / "h200-580-open" / "version"))
    assert parsed == {"version": "580.159.04", "kernel_module": "open"}
    assert textfiles.parse_nvidia_proc_version(read(H200 / "proc-driver-nvidia.txt")) == parsed


def test_proc_version_proprietary_module_real_410():
    text = read(COLLECTED / "proc-driver-nvidia-version-410.78" / "version")
    assert textfiles.parse_nvidia_proc_version(text) == {"version": "410.78", "kernel_module": "proprietary"}


def test_proc_version_other_real_lines():
    # From public posts found while collecting (search tool): an open 595 build and the README's proprietary form.
    open_595 = (
        "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  595.91.07  Release Build  "
        "(eduardopessin@aisandbox)  Sat Sep 12 17:31:32 BST 2026\n"
    )
    assert textfiles.parse_nvidia_proc_version(open_595) == {"version": "595.91.07", "kernel_module": "open"}
    assert textfiles.parse_nvidia_proc_version("GCC version: gcc 12\n") is None
    assert textfiles.parse_nvidia_proc_version("") is None
    assert textfiles.parse_nvidia_proc_version(None) is None
    assert common.driver_major("580.159.04") == 580
    assert common.driver_major(None) is None


def test_os_release_ubuntu_h200():
    parsed = textfiles.parse_os_release(read(H200 / "os-release"))
    assert parsed["ID"] == "ubuntu"
    assert parsed["PRETTY_NAME"] == "Ubuntu 24.04.3 LTS"
    assert textfiles.os_facts(parsed, "6.18.44-fc-v657-gpu") == {
        "id": "ubuntu",
        "version": "24.04",
        "codename": "noble",
        "kernel": "6.18.44-fc-v657-gpu",
        "pretty_name": "Ubuntu 24.04.3 LTS",
    }


def test_os_release_debian_12():
    parsed = textfiles.parse_os_release(read(DEV_VM / "os-release"))
    assert textfiles.os_facts(parsed, "6.1.0-26-amd64") == {
        "id": "debian",
        "version": "12",
        "codename": "bookworm",
        "kernel": "6.1.0-26-amd64",
        "pretty_name": "Debian GNU/Linux 12 (bookworm)",
    }


def test_os_release_codename_from_version_and_missing_fields():
    facts = textfiles.os_facts(textfiles.parse_os_release('ID=debian\nVERSION="12 (bookworm)"\n'), None)
    assert facts == {"id": "debian", "version": None, "codename": "bookworm", "kernel": None, "pretty_name": None}


def test_cpuinfo_real_dev_vm():
    cpu = textfiles.parse_cpuinfo(read(DEV_VM / "cpuinfo"))
    assert cpu == {"model": "AMD EPYC", "cores": 2, "threads": 2, "hypervisor": True}


def test_cpuinfo_without_core_ids_counts_threads():
    text = "processor\t: 0\nmodel name\t: X\n\nprocessor\t: 1\nmodel name\t: X\n"
    assert textfiles.parse_cpuinfo(text) == {"model": "X", "cores": 2, "threads": 2, "hypervisor": False}
    assert textfiles.parse_cpuinfo("") == {"model": None, "cores": None, "threads": None, "hypervisor": False}


def test_meminfo_real_dev_vm():
    assert textfiles.parse_meminfo_total_mib(read(DEV_VM / "meminfo")) == 24683656 // 1024
    assert textfiles.parse_meminfo_total_mib("MemFree: 1 kB\n") is None


def test_dmi_values_and_virtualization():
    assert textfiles.clean_dmi_value("Dell Inc.\n") == "Dell Inc."
    for placeholder in ("To Be Filled By O.E.M.", "Default string", "System Product Name", "", "  "):
        assert textfiles.clean_dmi_value(placeholder) is None
    assert textfiles.detect_virtualization(True, "QEMU", None, True) == "container"
    assert textfiles.detect_virtualization(False, "QEMU", "Standard PC (Q35 + ICH9, 2009)", False) == "vm"
    assert textfiles.detect_virtualization(False, "Microsoft Corporation", "Virtual Machine", False) == "vm"
    assert textfiles.detect_virtualization(False, "Dell Inc.", "XPS 13 9370", False) is None
    assert textfiles.detect_virtualization(False, None, None, True) == "vm"
    assert textfiles.detect_virtualization(False, None, None, False, "xen") == "vm"


def test_pci_ids_lookup_on_the_real_excerpt():
    text = read(PCI_IDS)
    names = textfiles.lookup_pci_names(
        text, ["10de:1b06", "10de:1c8c", "10de:2684", "10de:1f08", "10de:2330", "10de:2335", "8086:2335", "10de:147d"]
    )
    assert names == {
        "10de:1b06": "GP102 [GeForce GTX 1080 Ti]",
        "10de:1c8c": "GP107M [GeForce GTX 1050 Ti Mobile]",
        "10de:2684": "AD102 [GeForce RTX 4090]",
        "10de:1f08": "TU106 [GeForce RTX 2060 Rev. A]",
        "10de:2330": "GH100[H100 SXM5 80GB]",
        # the H200 (10de:2335) is not in this 2023 database; Intel's 2335 must not stand in for it
        "8086:2335": "DH89xxCC USB2 Enhanced Host Controller #1",
    }
    assert textfiles.lookup_pci_name(text, "10DE:1B06") == "GP102 [GeForce GTX 1080 Ti]"
    assert textfiles.lookup_pci_name(text, "10de:2335") is None


@pytest.mark.parametrize(
    ("version", "text"), [(13000, "13.0"), (12040, "12.4"), (12080, "12.8"), (11060, "11.6"), (0, None), (None, None)]
)
def test_cuda_version_format(version, text):
    assert nvidia_smi.format_cuda_version(version) == text


def test_cuda_version_without_libcuda():
    assert nvidia_smi.read_cuda_driver_version(("libdlsetup-does-not-exist.so.1",)) is None


def test_pci_classes():
    assert sysfs.is_nvidia_gpu("0x10de", "0x030200")  # H200, laptop dGPUs: 3D controller
    assert sysfs.is_nvidia_gpu("0x10de", "0x030000")  # VGA
    assert not sysfs.is_nvidia_gpu("0x10de", "0x040300")  # the GPU's HDMI audio function
    assert not sysfs.is_nvidia_gpu("0x10de", "0x068000")  # NVSwitch
    assert not sysfs.is_nvidia_gpu("0x10de", "0x030100")  # XGA: not in the contract
    assert not sysfs.is_nvidia_gpu("0x8086", "0x030000")
    assert not sysfs.is_nvidia_gpu(None, None)


# ------------------------------------------------------------------------------------------------
# sysfs trees


def test_committed_trees_match_their_builder(tmp_path):
    spec = importlib.util.spec_from_file_location("make_trees", SYSFS / "make_trees.py")
    assert spec and spec.loader
    make_trees = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_trees)
    assert make_trees.main(["make_trees.py", str(tmp_path)]) == 0

    def listing(root: Path) -> dict[str, str]:
        out = {}
        for path in sorted(root.rglob("*")):
            rel = str(path.relative_to(root))
            if path.is_symlink():
                out[rel] = "-> " + os.readlink(path)
            elif path.is_file():
                out[rel] = path.read_text()
        return out

    for name in make_trees.TREES:
        assert listing(tmp_path / name) == listing(SYSFS / name), name
    assert set(make_trees.TREES) == {
        "h200-vm",
        "x8-slot",
        "trained-down",
        "2x1080ti-rig",
        "4x1080ti-plx",
        "z170-chipset-slot",
        "mx130-laptop",
        "xps13-9370",
        "xps15-9570",
    }


def test_pci_devices_of_the_h200_tree_match_the_capture():
    devices = sysfs.read_pci_devices(str(SYSFS / "h200-vm"))
    captured = [line for line in read(H200 / "sysfs-pci.txt").splitlines() if line.startswith("/sys/bus/pci/devices/")]
    assert [
        f"/sys/bus/pci/devices/{d['address']} vendor=0x{d['vendor']} device=0x{d['device']} class={d['class']}"
        for d in devices
    ] == captured


@pytest.mark.parametrize(
    ("tree", "address", "link"),
    [
        ("h200-vm", "0000:00:06.0", (5, 5, 16, 16, None, None)),  # root complex parent: no slot values
        ("x8-slot", "0000:01:00.0", (1, 4, 8, 16, 3, 8)),
        ("x8-slot", "0000:03:00.0", (1, 4, 8, 16, 3, 8)),
        ("trained-down", "0000:01:00.0", (3, 3, 8, 16, 3, 16)),
        ("2x1080ti-rig", "0000:05:00.0", (1, 3, 16, 16, 3, 16)),
        ("xps15-9570", "0000:01:00.0", (None,) * 6),  # no link attributes captured
    ],
)
def test_links_from_trees(tree, address, link):
    (device,) = [d for d in sysfs.read_pci_devices(str(SYSFS / tree)) if d["address"] == address]
    keys = ("gen_current", "gen_max", "width_current", "width_max", "slot_gen_max", "slot_width_max")
    assert sysfs.read_pci_link(device["path"]) == dict(zip(keys, link, strict=True))


@pytest.mark.parametrize(
    ("tree", "gpus"),
    [
        ("h200-vm", ["0000:00:06.0"]),
        ("x8-slot", ["0000:01:00.0", "0000:03:00.0"]),  # not the .1 audio functions, not the AMD iGPU
        ("trained-down", ["0000:01:00.0"]),
        ("2x1080ti-rig", ["0000:05:00.0", "0000:06:00.0"]),
        ("xps13-9370", []),
        ("xps15-9570", ["0000:01:00.0"]),
    ],
)
def test_gpu_selection_from_trees(tree, gpus):
    devices = sysfs.read_pci_devices(str(SYSFS / tree))
    assert [d["address"] for d in devices if sysfs.is_nvidia_gpu(d["vendor"], d["class"])] == gpus


H200_MOUNTINFO = (
    # proc(5)'s example line, then a root mount of /dev/vda (the H200's, from its ansible facts).
    "36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue\n"
    "25 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw,discard\n"
)


def test_mountinfo_root():
    assert textfiles.parse_mountinfo_root(H200_MOUNTINFO) == ("254:0", "/dev/vda")
    overlay = "500 400 0:52 / / rw,relatime - overlay overlay rw,lowerdir=/a,upperdir=/b,workdir=/c\n"
    assert textfiles.parse_mountinfo_root(overlay) == ("0:52", "overlay")
    assert textfiles.parse_mountinfo_root("") == (None, None)


def test_disks_of_the_h200_tree():
    tree = str(SYSFS / "h200-vm")
    roots = sysfs.find_root_disks(tree, H200_MOUNTINFO)
    assert roots == ["vda"]
    assert sysfs.read_disks(tree, roots) == [
        {
            "name": "vda",
            "model": None,
            "size_gib": 256,
            "rotational": True,
            "transport": "virtio",
            "ssd": False,
            "holds": ["/"],
        },
        {
            "name": "vdb",
            "model": None,
            "size_gib": 0,
            "rotational": True,
            "transport": "virtio",
            "ssd": False,
            "holds": [],
        },
    ]
    # By source device when the major:minor is anonymous (btrfs) or unknown.
    assert sysfs.find_root_disks(tree, "1 1 0:33 / / rw - btrfs /dev/vda rw\n") == ["vda"]
    assert sysfs.find_root_disks(tree, "1 1 0:52 / / rw - overlay overlay rw\n") == []
    assert sysfs.find_root_disks(tree, None) == []


def _lvm_tree(root: Path) -> None:
    """nvme0n1 with partition p3 under LVM dm-0 (vg-root): the layout of a default Debian LVM install."""
    disk = root / "devices" / "pci0000:00" / "0000:00:1d.0" / "0000:3d:00.0" / "nvme" / "nvme0" / "nvme0n1"
    (disk / "nvme0n1p3").mkdir(parents=True)
    (disk / "nvme0n1p3" / "partition").write_text("3\n")
    (disk / "size").write_text("1000215216\n")
    (disk / "queue").mkdir()
    (disk / "queue" / "rotational").write_text("0\n")
    (disk.parent / "model").write_text("PM981 NVMe SAMSUNG 512GB                \n")
    (disk / "device").symlink_to("../../nvme0")
    dm = root / "devices" / "virtual" / "block" / "dm-0"
    (dm / "slaves").mkdir(parents=True)
    (dm / "dm").mkdir()
    (dm / "dm" / "name").write_text("vg-root\n")
    (dm / "slaves" / "nvme0n1p3").symlink_to(os.path.relpath(disk / "nvme0n1p3", dm / "slaves"))
    for name, target in (("nvme0n1", disk), ("nvme0n1p3", disk / "nvme0n1p3"), ("dm-0", dm)):
        for folder in (root / "class" / "block", root / "block"):
            if folder.name == "block" and folder.parent == root and name == "nvme0n1p3":
                continue  # /sys/block lists whole devices only
            folder.mkdir(parents=True, exist_ok=True)
            (folder / name).symlink_to(os.path.relpath(target, folder))
    (root / "dev" / "block").mkdir(parents=True)
    (root / "dev" / "block" / "253:0").symlink_to(os.path.relpath(dm, root / "dev" / "block"))


def test_root_on_lvm_is_followed_to_the_disk(tmp_path):
    _lvm_tree(tmp_path)
    tree = str(tmp_path)
    assert sysfs.find_root_disks(tree, "1 1 253:0 / / rw - ext4 /dev/mapper/vg-root rw\n") == ["nvme0n1"]
    assert sysfs.find_root_disks(tree, "1 1 0:1 / / rw - ext4 /dev/mapper/vg-root rw\n") == ["nvme0n1"]
    assert sysfs.read_disks(tree, ["nvme0n1"]) == [
        {
            "name": "nvme0n1",
            "model": "PM981 NVMe SAMSUNG 512GB",
            "size_gib": 477,
            "rotational": False,
            "transport": "nvme",
            "ssd": True,
            "holds": ["/"],
        }
    ]


# ------------------------------------------------------------------------------------------------
# the fake nvidia-smi replays the real captures faithfully


def _fake(scenario: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, DLSETUP_FAKE_SMI_DIR=str(SCENARIOS / scenario))
    env.pop("DLSETUP_FAKE_SMI_LOG", None)
    return subprocess.run([str(FAKE_SMI), *args], capture_output=True, text=True, env=env, check=False)


def test_fake_replays_the_h200_query_byte_for_byte():
    query = "--query-gpu=" + ",".join(_h200_fields())
    bare = _fake("h200", query, "--format=csv,noheader,nounits")
    assert bare.returncode == 0
    assert bare.stdout == read(H200 / "nvidia-smi-query-gpu-noheader-nounits.csv")
    with_header = _fake("h200", query, "--format=csv")
    assert with_header.stdout == read(H200 / "nvidia-smi-query-gpu.csv")
    assert _fake("h200", "-L").stdout == read(H200 / "nvidia-smi-L.txt")


def test_fake_answers_only_the_requested_columns_in_order():
    out = _fake("h100-590", "--query-gpu=pci.bus_id,memory.total,name", "--format=csv,noheader,nounits")
    assert out.stdout == "00000000:00:09.0, 81559, NVIDIA H100 80GB HBM3\n"


def test_fake_rejects_unknown_fields_like_nvidia_smi():
    out = _fake("legacy-470", "--query-gpu=index,compute_cap", "--format=csv,noheader,nounits")
    assert (out.returncode, out.stdout) == (2, 'Field "compute_cap" is not a valid field to query.\n\n')
    out = _fake("h200", "--query-gpu=bogus.field", "--format=csv")
    assert (out.returncode, out.stdout) == (2, 'Field "bogus.field" is not a valid field to query.\n\n')


@pytest.mark.parametrize(
    ("scenario", "rc", "fixture"),
    [
        ("couldnt-communicate", 9, "nvidia-smi-failed-couldnt-communicate/output.txt"),
        ("version-mismatch", 18, "nvml-driver-library-version-mismatch/output.txt"),
        ("no-devices", 6, "no-devices-rtx5090-open-575/output.txt"),
        ("gpu-lost", 255, "unable-to-determine-device-handle-2015/output.txt"),
        ("nvml-missing", 12, "nvml-missing-optimus-laptop-2015/output.txt"),
    ],
)
def test_fake_error_scenarios(scenario, rc, fixture):
    out = _fake(scenario, "--query-gpu=index", "--format=csv,noheader,nounits")
    assert (out.returncode, out.stdout) == (rc, read(COLLECTED / fixture))


# ------------------------------------------------------------------------------------------------
# collect() in-process


class Recorder:
    """run_command for collect(): replays a scenario through the fake nvidia-smi and records each call."""

    def __init__(self, scenario: str | None) -> None:
        self.scenario = scenario
        self.calls: list[list[str]] = []

    def __call__(self, argv: list[str]) -> tuple[int, str, str]:
        self.calls.append(argv)
        assert self.scenario is not None, "nvidia-smi must not be called"
        out = _fake(self.scenario, *argv[1:])
        return out.returncode, out.stdout, out.stderr


def _proc_root(tmp_path: Path) -> Path:
    proc = tmp_path / "proc"
    (proc / "self").mkdir(parents=True)
    (proc / "sys" / "kernel").mkdir(parents=True)
    shutil.copy(DEV_VM / "cpuinfo", proc / "cpuinfo")
    shutil.copy(DEV_VM / "meminfo", proc / "meminfo")
    (proc / "self" / "mountinfo").write_text(H200_MOUNTINFO)
    (proc / "sys" / "kernel" / "osrelease").write_text("6.18.44-fc-v657-gpu\n")
    return proc


def test_collect_h200_in_process(tmp_path):
    recorder = Recorder("h200")
    facts = collector.collect(
        recorder,
        sysfs_root=str(SYSFS / "h200-vm"),
        nvidia_proc_dir=str(NVIDIA_PROC / "h200-580-open"),
        pci_ids_paths=(str(PCI_IDS),),
        nvidia_smi_path=str(FAKE_SMI),
        proc_root=str(_proc_root(tmp_path)),
        os_release_paths=(str(H200 / "os-release"),),
        container_markers=(str(tmp_path / "no-marker"),),
        cuda_driver_version=lambda: 13000,
    )
    assert recorder.calls == [nvidia_smi.query_gpu_command(str(FAKE_SMI), nvidia_smi.QUERY_FIELDS)]
    assert facts == {
        "os": {
            "id": "ubuntu",
            "version": "24.04",
            "codename": "noble",
            "kernel": "6.18.44-fc-v657-gpu",
            "pretty_name": "Ubuntu 24.04.3 LTS",
        },
        "machine": {"vendor": None, "product": None, "virtualization": "vm"},  # cpuinfo hypervisor flag
        "cpu": {"model": "AMD EPYC", "cores": 2, "threads": 2},
        "memory_mib": 24105,
        "disks": [
            {
                "name": "vda",
                "model": None,
                "size_gib": 256,
                "rotational": True,
                "transport": "virtio",
                "ssd": False,
                "holds": ["/"],
            },
            {
                "name": "vdb",
                "model": None,
                "size_gib": 0,
                "rotational": True,
                "transport": "virtio",
                "ssd": False,
                "holds": [],
            },
        ],
        "gpus": [
            {
                "index": 0,
                "pci_bus_id": "0000:00:06.0",
                "pci_id": "10de:2335",
                "subsystem_id": "10de:18bf",
                "pci_class": "0x030200",
                "name": "NVIDIA H200",
                "pci_name": None,
                "memory_mib": 143771,
                "compute_capability": "9.0",
                "persistence_mode": True,
                "kernel_driver": "nvidia",
                "visible_to_driver": True,
                "pcie": {
                    "gen_current": 5,
                    "gen_max": 5,
                    "width_current": 16,
                    "width_max": 16,
                    "slot_gen_max": None,
                    "slot_width_max": None,
                },
            }
        ],
        "driver": {
            "loaded": True,
            "version": "580.159.04",
            "cuda_version": "13.0",
            "kernel_module": "open",
            "error": None,
        },
        "warnings": [],
    }
    json.dumps(facts)  # plain JSON


def test_collect_without_nvidia_smi_never_runs_a_command():
    recorder = Recorder(None)
    facts = collector.collect(
        recorder,
        sysfs_root=str(SYSFS / "xps15-9570"),
        nvidia_proc_dir="/nonexistent/dlsetup",
        pci_ids_paths=(str(PCI_IDS),),
        nvidia_smi_path=None,
        container_markers=(),
        cuda_driver_version=lambda: None,
    )
    assert recorder.calls == []
    assert facts["driver"]["error"]["kind"] == "nvidia_smi_missing"
    assert facts["driver"]["loaded"] is False
    assert facts["machine"]["vendor"] == "Dell Inc."
    assert facts["machine"]["product"] == "XPS 15 9570"
    (gpu,) = facts["gpus"]
    assert gpu["pci_class"] == "0x030200"
    assert gpu["subsystem_id"] == "1028:087c"
    assert gpu["pci_name"] == "GP107M [GeForce GTX 1050 Ti Mobile]"
    assert gpu["kernel_driver"] is None
    assert facts["warnings"] == [
        "GPU 0000:01:00.0 (10de:1c8c) is on PCI but not visible to the NVIDIA driver "
        "(nvidia-smi: driver error: nvidia_smi_missing)"
    ]


def test_collect_on_a_host_without_sysfs_reports_it(tmp_path):
    facts = collector.collect(
        Recorder(None),
        sysfs_root=str(tmp_path / "no-sys"),
        nvidia_proc_dir=str(tmp_path / "no-proc"),
        nvidia_smi_path=None,
        container_markers=(),
        cuda_driver_version=lambda: None,
    )
    assert facts["gpus"] == []
    assert facts["disks"] == []
    assert facts["driver"]["error"]["kind"] == "nvidia_smi_missing"  # cannot tell there is no GPU
    assert any("cannot list PCI devices" in w for w in facts["warnings"])


def test_collect_survives_a_broken_cuda_probe():
    def broken() -> int:
        raise OSError("boom")

    facts = collector.collect(
        Recorder("no-devices"),
        sysfs_root=str(SYSFS / "xps13-9370"),
        nvidia_proc_dir="/nonexistent/dlsetup",
        nvidia_smi_path=str(FAKE_SMI),
        container_markers=(),
        cuda_driver_version=broken,
    )
    assert facts["driver"]["cuda_version"] is None
    assert facts["driver"]["error"] is None  # no NVIDIA GPU on PCI: "No devices were found" is expected
    assert facts["gpus"] == []


def test_collect_reports_unparseable_output_as_query_failed(tmp_path):
    def garbage(argv: list[str]) -> tuple[int, str, str]:
        return 0, "this, is, not, the, requested, layout\n", ""

    facts = collector.collect(
        garbage,
        sysfs_root=str(SYSFS / "h200-vm"),
        nvidia_proc_dir=str(tmp_path),
        nvidia_smi_path="/usr/bin/nvidia-smi",
        container_markers=(),
        cuda_driver_version=lambda: None,
    )
    assert facts["driver"]["error"]["kind"] == "query_failed"
    assert facts["gpus"][0]["visible_to_driver"] is False


# ------------------------------------------------------------------------------------------------
# shipped to managed hosts: Python 3.8 syntax, stdlib only


HWPARSE = REPO / "dlsetup" / "facts" / "hwparse"
HWPARSE_FILES = sorted(HWPARSE.glob("*.py"))


@pytest.mark.parametrize("path", [*HWPARSE_FILES, REPO / "roles" / "hw_facts" / "library" / "dlsetup_hw_facts.py"])
def test_python_38_syntax(path):
    ast.parse(read(path), feature_version=(3, 8))


@pytest.mark.parametrize("path", HWPARSE_FILES, ids=[p.name for p in HWPARSE_FILES])
def test_hwparse_imports_only_the_stdlib(path):
    tree = ast.parse(read(path))
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            imported.add(node.module.split(".")[0])
        elif isinstance(node, ast.ImportFrom):  # relative: only siblings inside the package
            assert node.level == 1, f"{path.name}: import from outside the package"
    assert imported <= set(sys.stdlib_module_names) | {"__future__"}
    assert len(HWPARSE_FILES) == 6  # __init__, common, nvidia_smi, sysfs, textfiles, collector


def test_module_utils_symlink_points_at_hwparse():
    link = REPO / "roles" / "hw_facts" / "module_utils" / "dlsetup_hwparse"
    assert link.is_symlink()
    assert link.resolve() == HWPARSE.resolve()


def _python38() -> str | None:
    """A working Python 3.8 (managed hosts may have nothing newer), if this machine has one."""
    candidates = [shutil.which("python3.8"), *map(str, Path.home().glob(".pyenv/versions/3.8*/bin/python3.8"))]
    for candidate in filter(None, candidates):
        probe = subprocess.run([candidate, "-c", "import sys; assert sys.version_info[:2] == (3, 8)"], check=False)
        if probe.returncode == 0:
            return candidate
    return None


def test_hwparse_runs_on_python_38(tmp_path):
    python38 = _python38()
    if python38 is None:
        pytest.skip("no Python 3.8 interpreter on this machine (the syntax check above still ran)")
    code = (
        "import sys; sys.path.insert(0, 'dlsetup/facts'); from hwparse import collector, sysfs, textfiles; "
        "print(sysfs.link_speed_to_gen('8 GT/s'), textfiles.parse_nvidia_proc_version(open(sys.argv[1]).read()))"
    )
    version = str(NVIDIA_PROC / "h200-580-open" / "version")
    out = subprocess.run([python38, "-c", code, version], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "3 {'version': '580.159.04', 'kernel_module': 'open'}"
