"""Hardware drift against the baseline, and plan drift against the record, on the facts of the fake hosts (real
captures: tests/unit/conftest.py FAKE_HOSTS)."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

from dlsetup.facts.baseline import HardwareBaseline, history, load_from_controller, save_on_controller
from dlsetup.facts.drift import hardware_drift
from dlsetup.facts.model import HostFacts
from dlsetup.facts.record import HostRecord, RecordedGpu
from dlsetup.plan.drift import plan_changes

WHEN = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def facts(data: dict[str, Any]) -> HostFacts:
    return HostFacts.from_dict(data)


def test_first_provision_has_no_drift(host_facts) -> None:
    drift = hardware_drift(None, facts(host_facts("2x1080ti")))
    assert not drift.drifted and drift.lines == [] and drift.to_dict()["baseline_recorded_at"] is None


def test_same_hardware_has_no_drift_even_with_the_gpus_listed_in_another_order(host_facts) -> None:
    rig = host_facts("2x1080ti")
    baseline = HardwareBaseline.of(facts(rig), now=WHEN)
    rig["gpus"].reverse()
    assert hardware_drift(baseline, facts(rig)).changes == ()


def test_a_removed_gpu_is_named_by_bus_id_and_model(host_facts) -> None:
    rig = host_facts("2x1080ti")
    baseline = HardwareBaseline.of(facts(rig), now=WHEN)
    gone = rig["gpus"].pop(1)
    drift = hardware_drift(baseline, facts(rig))
    assert [c.kind for c in drift.changes] == ["gpu_removed"]
    assert drift.removed_gpus[0].subject == gone["pci_bus_id"] == "0000:06:00.0"
    assert drift.lines == ["- GPU GeForce GTX 1080 Ti (10de:1b06) at 0000:06:00.0"]
    assert drift.to_dict()["baseline_recorded_at"] == "2026-12-01T12:00:00Z"


def test_a_replaced_gpu_and_an_added_one(host_facts) -> None:
    rig = host_facts("2x1080ti")
    baseline = HardwareBaseline.of(facts(rig), now=WHEN)
    h200 = host_facts("h200")["gpus"][0]
    rig["gpus"][1] = {**h200, "pci_bus_id": rig["gpus"][1]["pci_bus_id"], "index": 1}
    rig["gpus"].append({**h200, "pci_bus_id": "0000:07:00.0", "index": 2})
    drift = hardware_drift(baseline, facts(rig))
    kinds = [(c.kind, c.subject) for c in drift.changes]
    assert kinds == [("gpu_replaced", "0000:06:00.0"), ("gpu_added", "0000:07:00.0")]
    assert drift.lines[0] == ("~ GPU at 0000:06:00.0: GeForce GTX 1080 Ti (10de:1b06) -> NVIDIA H200 (10de:2335)")
    assert drift.removed_gpus == ()


def test_a_link_that_trained_down_and_a_slot_that_changed(host_facts) -> None:
    rig = host_facts("2x1080ti")
    assert rig["gpus"][0]["pcie"]["width_current"] == 16
    baseline = HardwareBaseline.of(facts(rig), now=WHEN)
    after = copy.deepcopy(rig)
    after["gpus"][0]["pcie"]["width_current"] = 8
    after["gpus"][1]["pcie"]["slot_width_max"] = 8
    after["gpus"][1]["pcie"]["gen_current"] = 3  # idle vs busy: not a change
    drift = hardware_drift(baseline, facts(after))
    assert [(c.kind, c.before, c.after) for c in drift.changes] == [("link_width", 16, 8), ("slot_width", 16, 8)]
    assert drift.lines[0] == "~ GPU GeForce GTX 1080 Ti (10de:1b06) at 0000:05:00.0: link width x8, was x16"
    # a link that came back wider is not drift
    assert hardware_drift(HardwareBaseline.of(facts(after)), facts(rig)).lines == [
        "~ GPU GeForce GTX 1080 Ti (10de:1b06) at 0000:06:00.0: slot width x16, was x8"
    ]


def test_ram_and_disks(host_facts) -> None:
    host = host_facts("h200")
    baseline = HardwareBaseline.of(facts(host), now=WHEN)
    assert host["disks"], "the H200 capture has disks"
    wobble = copy.deepcopy(host)
    wobble["memory_mib"] = int(host["memory_mib"] * 1.01)  # firmware reservations: no change
    assert hardware_drift(baseline, facts(wobble)).changes == ()
    changed = copy.deepcopy(host)
    changed["memory_mib"] = host["memory_mib"] // 2
    removed = changed["disks"].pop(0)
    kinds = [(c.kind, c.subject) for c in hardware_drift(baseline, facts(changed)).changes]
    assert kinds == [("ram", "memory"), ("disk_removed", removed["name"])]


def test_unknown_values_are_not_changes(host_facts) -> None:
    rig = host_facts("2x1080ti")
    baseline = HardwareBaseline.of(facts(rig), now=WHEN)
    no_driver = copy.deepcopy(rig)
    for gpu in no_driver["gpus"]:
        gpu["memory_mib"] = None
        gpu["pcie"]["width_current"] = None
    assert hardware_drift(baseline, facts(no_driver)).changes == ()


def test_an_older_record_is_a_baseline_of_gpus_only(host_facts) -> None:
    rig = host_facts("2x1080ti")
    record = HostRecord((RecordedGpu("0000:05:00.0", "10de:1b06"), RecordedGpu("0000:06:00.0", "10de:1b00")))
    drift = hardware_drift(HardwareBaseline.from_record(record), facts(rig))
    assert [(c.kind, c.subject) for c in drift.changes] == [("gpu_replaced", "0000:06:00.0")]


def test_baseline_round_trip_and_sameness(host_facts) -> None:
    rig = host_facts("2x1080ti")
    baseline = HardwareBaseline.of(facts(rig), now=WHEN)
    assert HardwareBaseline.parse(baseline.to_dict()) == baseline
    assert HardwareBaseline.parse({"gpus": "not a list"}) is None
    later = copy.deepcopy(rig)
    later["gpus"][0]["pcie"]["gen_current"] = 3
    assert baseline.same(HardwareBaseline.of(facts(later)))  # another time, another idle generation
    later["gpus"][0]["memory_mib"] = 1
    assert not baseline.same(HardwareBaseline.of(facts(later)))


def test_the_controller_keeps_the_baseline_and_its_history(tmp_path, host_facts) -> None:
    first = HardwareBaseline.of(facts(host_facts("2x1080ti")), now=WHEN)
    second = HardwareBaseline.of(facts(host_facts("h200")))
    assert load_from_controller(tmp_path, "rig/1") is None
    save_on_controller(tmp_path, "rig/1", first, run_dir=tmp_path / "run1")
    path = save_on_controller(tmp_path, "rig/1", second, run_dir=None)
    assert path == tmp_path / "hosts" / "rig_1" / "baseline.json"
    assert path.stat().st_mode & 0o777 == 0o600
    assert load_from_controller(tmp_path, "rig/1") == second
    assert [e["recorded_at"] for e in history(tmp_path, "rig/1")] == [first.recorded_at, second.recorded_at]
    assert [e["run"] for e in history(tmp_path, "rig/1")] == [str(tmp_path / "run1"), None]


def test_plan_changes():
    old = {"driver": {"branch": "580", "flavor": "proprietary"}, "pytorch": {"variant": "cu126"}}
    new = {"driver": {"branch": "580", "flavor": "open"}, "pytorch": {"variant": "cu130"}}
    assert plan_changes(old, new) == ["driver flavor: proprietary -> open", "pytorch variant: cu126 -> cu130"]
    assert plan_changes(None, new) == []
