"""The PCIe tree of the facts (issue 13): the bridges above each GPU, read from recorded sysfs trees
(tests/fixtures/sysfs, SOURCE.md says where each value comes from), where each GPU's lanes come from, which GPUs
share a switch, and how verify explains a narrow link with the CPU's lane budget."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest

from dlsetup.facts.hwparse import collector, sysfs
from dlsetup.facts.model import HostFacts, PcieHop
from dlsetup.facts.pcie import attach, explain_pcie, load_rules
from dlsetup.plan.lanes import load_cpus
from dlsetup.verify import checks
from dlsetup.verify.expect import Expectations, parse_expectations

FIX = Path(__file__).resolve().parents[1] / "fixtures"
SYSFS = FIX / "sysfs"
PCI_IDS = FIX / "pci.ids" / "pci.ids.excerpt"

# /proc/cpuinfo "model name" lines as the kernel prints them for the build's CPUs (the same strings appear in
# public logs of those machines, e.g. "Intel(R) Core(TM) i7-6700K CPU @ 4.00GHz" in benchmark write-ups and
# "AMD Ryzen Threadripper 1950X 16-Core Processor" in cluster job logs); the rest of each block is left out.
CPU_MODELS = {
    "i7-6700k": "Intel(R) Core(TM) i7-6700K CPU @ 4.00GHz",
    "1950x": "AMD Ryzen Threadripper 1950X 16-Core Processor",
    "7950x": "AMD Ryzen 9 7950X 16-Core Processor",
    "xeon": "Intel(R) Xeon(R) CPU E5-2680 v4 @ 2.40GHz",
}


def facts_of(tree: str, tmp_path: Path, cpu: str | None = None, *, pci_ids: bool = True) -> HostFacts:
    """What dlsetup makes of a recorded tree: the module's facts (no driver), explained."""
    proc = tmp_path / "proc"
    proc.mkdir(exist_ok=True)
    if cpu:
        blocks = [
            f"processor\t: {n}\nmodel name\t: {CPU_MODELS[cpu]}\nphysical id\t: 0\ncore id\t\t: {n}\n" for n in range(4)
        ]
        (proc / "cpuinfo").write_text("\n".join(blocks))
    data = collector.collect(
        lambda argv: (127, "", "not found"),
        sysfs_root=str(SYSFS / tree),
        nvidia_proc_dir=str(tmp_path / "no-driver"),
        pci_ids_paths=(str(PCI_IDS),) if pci_ids else (str(tmp_path / "no-pci.ids"),),
        proc_root=str(proc),
        cuda_driver_version=lambda: None,
    )
    return explain_pcie(HostFacts.from_dict(data))


def gpu(facts: HostFacts, bus: str) -> Any:
    (found,) = [g for g in facts.gpus if g.pci_bus_id == bus]
    return found


# --- the chain of bridges ---------------------------------------------------------------------------------------


def test_a_gpu_behind_a_plx_switch_has_root_port_switch_upstream_and_downstream(tmp_path):
    path = gpu(facts_of("4x1080ti-plx", tmp_path), "0000:0a:00.0").pcie_path
    assert [(h.address, h.kind, h.pci_id) for h in path] == [
        ("0000:00:03.0", "root_port", "8086:6f08"),
        ("0000:07:00.0", "switch_upstream", "10b5:8747"),
        ("0000:08:10.0", "switch_downstream", "10b5:8747"),
    ]
    assert path[0].name == "Xeon E7 v4/Xeon E5 v4/Xeon E3 v4/Xeon D PCI Express Root Port 3"
    assert path[1].name == "PEX 8747 48-Lane, 5-Port PCI Express Gen 3 (8.0 GT/s) Switch"
    assert (path[2].gen_current, path[2].gen_max, path[2].width_current, path[2].width_max) == (3, 3, 16, 16)


def test_the_chain_is_read_from_the_nesting_of_sysfs(tmp_path):
    device = next(d for d in sysfs.read_pci_devices(str(SYSFS / "z170-chipset-slot")) if d["address"] == "0000:03:00.0")
    hops = sysfs.read_pcie_path(device["path"])
    assert [(h["address"], h["kind"], h["pci_id"], h["width_max"]) for h in hops] == [
        ("0000:00:1b.0", "root_port", "8086:a167", 4)
    ]
    assert hops[0]["name"] is None  # names come from pci.ids, in the collector


def test_a_gpu_on_the_root_complex_has_no_chain_and_its_facts_leave_the_key_out(tmp_path):
    facts = facts_of("h200-vm", tmp_path)
    assert facts.gpus[0].pcie_path == ()
    assert "pcie_path" not in facts.to_dict()["gpus"][0]
    assert facts.gpus[0].pcie_attach is not None and facts.gpus[0].pcie_attach.rule == "no_root_port"


# --- where the lanes come from ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tree", "bus", "to", "rule"),
    [
        ("4x1080ti-plx", "0000:05:00.0", "cpu", "cpu_by_name"),  # Xeon root port, behind a PLX switch
        ("z170-chipset-slot", "0000:01:00.0", "cpu", "cpu_by_name"),  # "Core Processor PCIe Controller (x16)"
        ("z170-chipset-slot", "0000:03:00.0", "chipset", "chipset_by_name"),  # "100 Series ... Chipset ... Root Port"
        ("mx130-laptop", "0000:02:00.0", "chipset", "chipset_by_name"),  # "Cannon Lake PCH ... Root Port #6"
        ("x8-slot", "0000:01:00.0", "cpu", "amd_root_port"),  # 1022:14db, not in the 2023 pci.ids
        ("trained-down", "0000:01:00.0", "cpu", "cpu_by_name"),
        ("xps15-9570", "0000:01:00.0", "cpu", "cpu_by_name"),
        ("h200-vm", "0000:00:06.0", "unknown", "no_root_port"),
    ],
)
def test_where_the_lanes_come_from(tmp_path, tree, bus, to, rule):
    found = gpu(facts_of(tree, tmp_path), bus).pcie_attach
    assert (found.to, found.rule) == (to, rule)
    assert found.source == next(r.source for r in load_rules().rules if r.rule == rule)


def test_an_intel_root_port_without_a_name_is_unknown_not_guessed(tmp_path):
    found = gpu(facts_of("z170-chipset-slot", tmp_path, pci_ids=False), "0000:03:00.0").pcie_attach
    assert (found.to, found.rule, found.root_port) == ("unknown", "no_rule", "0000:00:1b.0")


def hop(address: str, pci_id: str, name: str | None, kind: str) -> PcieHop:
    return PcieHop(address, pci_id, name, kind, 3, 4, 4, 4)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("path", "to", "rule"),
    [
        # X570: the chipset is a switch (1022:57ad "Matisse Switch Upstream") under a CPU GPP bridge
        (
            [
                hop("0000:00:01.2", "1022:1483", "Starship/Matisse GPP Bridge", "root_port"),
                hop("0000:02:00.0", "1022:57ad", "Matisse Switch Upstream", "switch_upstream"),
                hop("0000:03:04.0", "1022:57a3", "Matisse PCIe GPP Bridge", "switch_downstream"),
            ],
            "chipset",
            "amd_chipset_switch",
        ),
        # B550: pci.ids names the chipset's switch
        (
            [
                hop("0000:00:01.2", "1022:1483", "Starship/Matisse GPP Bridge", "root_port"),
                hop("0000:02:00.0", "1022:43e9", "500 Series Chipset Switch Upstream Port", "switch_upstream"),
            ],
            "chipset",
            "chipset_by_name",
        ),
        # a Threadripper's own port with a PLX switch below it: the CPU's lanes
        (
            [
                hop("0000:00:01.1", "1022:1453", "Family 17h (Models 00h-0fh) PCIe GPP Bridge", "root_port"),
                hop("0000:01:00.0", "10b5:8747", "PEX 8747 48-Lane", "switch_upstream"),
            ],
            "cpu",
            "cpu_by_name",
        ),
        (
            [hop("0000:00:1c.0", "8086:a290", "200 Series PCH PCI Express Root Port #1", "root_port")],
            "chipset",
            "chipset_by_name",
        ),
        ([hop("0000:00:1c.0", "8086:a290", None, "root_port")], "unknown", "no_rule"),
    ],
)
def test_rules_on_bridges_of_other_boards(tmp_path, path, to, rule):
    base = gpu(facts_of("trained-down", tmp_path), "0000:01:00.0")
    found = attach(dataclasses.replace(base, pcie_path=tuple(path)))
    assert found is not None and (found.to, found.rule, found.root_port) == (to, rule, path[0].address)


def test_every_rule_names_its_source_as_an_address():
    rules = load_rules().rules
    assert [r.rule for r in rules] == [
        "chipset_by_name",
        "amd_chipset_switch",
        "cpu_by_name",
        "amd_root_port",
        "no_root_port",
    ]
    for rule in rules:
        assert re.search(r"https://\S+", rule.source), rule.rule
        assert rule.when


def test_gpus_behind_one_switch_share_it(tmp_path):
    facts = facts_of("4x1080ti-plx", tmp_path)
    assert [(s.via, s.kind, s.gpus) for s in facts.pcie_shared] == [
        ("0000:03:00.0", "switch", ("0000:05:00.0", "0000:06:00.0")),
        ("0000:07:00.0", "switch", ("0000:09:00.0", "0000:0a:00.0")),
    ]
    assert facts_of("z170-chipset-slot", tmp_path).pcie_shared == ()


def test_explaining_twice_and_the_json_round_trip_change_nothing(tmp_path):
    facts = facts_of("4x1080ti-plx", tmp_path)
    assert explain_pcie(facts) == facts
    again = HostFacts.from_dict(facts.to_dict())
    assert again == facts
    assert list(facts.to_dict())[-1] == "pcie_shared"


# --- the CPU catalogue reads cpuinfo ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "name"),
    [
        ("Intel(R) Core(TM) i7-6700K CPU @ 4.00GHz", "Core i7-6700K"),
        ("AMD Ryzen Threadripper 1950X 16-Core Processor", "Threadripper 1950X"),
        ("AMD Ryzen 9 7950X 16-Core Processor", "Ryzen 9 7950X"),
        ("AMD Ryzen 9 7950X3D 16-Core Processor", None),  # another CPU: not guessed
        ("Intel(R) Xeon(R) CPU E5-2680 v4 @ 2.40GHz", None),
        ("AMD EPYC", None),
        (None, None),
    ],
)
def test_the_catalogue_matches_a_cpuinfo_model(model, name):
    found = load_cpus().match_model(model)
    assert (found.name if found else None) == name


# --- verify explains a narrow link with the lane budget -----------------------------------------------------------


def test_two_gpus_on_16_cpu_lanes_run_x8_because_the_lanes_are_split(tmp_path):
    facts = facts_of("x8-slot", tmp_path, "7950x")
    result = checks.check_pcie_width(facts, Expectations())
    assert result.status == "warn"
    assert "RTX 4090], 0000:01:00.0) runs x8: the slot gives only x8 while the GPU can do x16" in result.message
    assert "the Ryzen 9 7950X's 16 lanes are split between 2 slots" in result.message
    strict = checks.check_pcie_width(facts, Expectations(pcie_width_min=16))
    assert strict.status == "fail" and "split between 2 slots" in strict.message


def test_a_cpu_with_lanes_to_spare_blames_the_board_wiring(tmp_path):
    facts = facts_of("x8-slot", tmp_path, "1950x")
    message = checks.check_pcie_width(facts, Expectations()).message
    assert "the Threadripper 1950X has 60 lanes, enough for x16 in each of the 2 slots in use" in message
    assert "a slot wired x16 gives the GPU more" in message


def test_an_unknown_cpu_is_said_to_be_unknown(tmp_path):
    message = checks.check_pcie_width(facts_of("x8-slot", tmp_path, "xeon"), Expectations()).message
    assert "its lanes come from the CPU (root port 0000:00:01.1)" in message
    assert "Intel(R) Xeon(R) CPU E5-2680 v4 @ 2.40GHz is not in dlsetup's CPU catalogue" in message


def test_a_gpu_in_a_chipset_slot_hangs_off_the_chipset(tmp_path):
    facts = facts_of("z170-chipset-slot", tmp_path, "i7-6700k")
    width = checks.check_pcie_width(facts, Expectations())
    assert width.status == "warn"
    assert (
        "GTX 1080 Ti], 0000:03:00.0) runs x4: the slot gives only x4 while the GPU can do x16: it hangs off the "
        "chipset (x4 behind DMI 3.0, about 3.9 GB/s shared with every disk and NIC; root port 0000:00:1b.0): "
        "move it to a CPU slot"
    ) in width.message
    assert "0000:01:00.0" not in width.message  # the CPU slot's GPU runs x16
    source = checks.check_pcie_lane_source(facts, Expectations())
    assert source.status == "warn" and source.actual == ["cpu", "chipset"]
    assert "hangs off the chipset" in source.message and "named as a chipset's port in pci.ids" in source.message
    wanted = checks.check_pcie_lane_source(facts, parse_expectations({"pcie_lane_source": "cpu"}, where="test"))
    assert wanted.status == "fail" and wanted.expected == "cpu" and "0000:03:00.0" in wanted.message


def test_a_laptop_gpu_wired_to_the_chipset_at_its_own_width_passes(tmp_path):
    facts = facts_of("mx130-laptop", tmp_path)
    result = checks.check_pcie_lane_source(facts, Expectations())
    assert result.status == "pass" and "on the chipset's lanes" in result.message
    assert checks.check_pcie_lane_source(facts, Expectations(pcie_lane_source="cpu")).status == "fail"


def test_a_trained_down_link_is_not_blamed_on_the_lane_budget(tmp_path):
    facts = facts_of("trained-down", tmp_path, "i7-6700k")
    message = checks.check_pcie_width(facts, Expectations()).message
    assert "trained down to x8" in message and "reseat" in message and "lanes are split" not in message
    source = checks.check_pcie_lane_source(facts, Expectations())
    assert source.status == "pass" and "on the CPU's lanes (root port 0000:00:01.0)" in source.message


def test_gpus_behind_a_switch_say_what_they_share(tmp_path):
    facts = facts_of("4x1080ti-plx", tmp_path, "xeon")
    result = checks.check_pcie_lane_source(facts, Expectations())
    assert result.status == "pass"
    shares = "shares switch 0000:03:00.0 with GPU (GP102 [GeForce GTX 1080 Ti], 0000:06:00.0)"
    assert f"1080 Ti], 0000:05:00.0) on the CPU's lanes (root port 0000:00:02.0) ({shares})" in result.message
    assert checks.check_pcie_lane_source(facts, Expectations(pcie_lane_source="chipset")).status == "fail"
    width = checks.check_pcie_width(facts, Expectations())
    assert width.status == "warn" and "0000:0a:00.0" in width.message and "trained down to x8" in width.message


def test_unknown_lane_sources_are_skipped(tmp_path):
    vm = checks.check_pcie_lane_source(facts_of("h200-vm", tmp_path), Expectations(pcie_lane_source="cpu"))
    assert vm.status == "skip" and "no root port above the GPUs" in vm.message
    unnamed = facts_of("z170-chipset-slot", tmp_path, pci_ids=False)
    assert checks.check_pcie_lane_source(unnamed, Expectations()).status == "skip"


def test_the_expectation_takes_cpu_or_chipset():
    assert parse_expectations({"pcie_lane_source": "CPU"}, where="x").pcie_lane_source == "cpu"
    with pytest.raises(Exception, match="pcie_lane_source must be one of cpu, chipset, got 'pch'"):
        parse_expectations({"pcie_lane_source": "pch"}, where="x")
