from dlsetup.facts.drift import hardware_changes
from dlsetup.facts.model import GpuFacts, PcieLink
from dlsetup.facts.record import HostRecord, RecordedGpu
from dlsetup.plan.drift import plan_changes

TI = {"pci_bus_id": "0000:01:00.0", "pci_id": "10de:1b06", "name": "NVIDIA GeForce GTX 1080 Ti"}
TI2 = {"pci_bus_id": "0000:02:00.0", "pci_id": "10de:1b06", "name": "NVIDIA GeForce GTX 1080 Ti"}
RTX4090 = {"pci_bus_id": "0000:02:00.0", "pci_id": "10de:2684", "name": "NVIDIA GeForce RTX 4090"}
NO_LINK = PcieLink(None, None, None, None, None, None)


def now(gpu: dict[str, str]) -> GpuFacts:
    """A GPU as the facts show it now (what drift does not read left empty)."""
    return GpuFacts(
        0, gpu["pci_bus_id"], gpu["pci_id"], None, None, gpu["name"], None, None, None, None, None, True, NO_LINK
    )


def recorded(*gpus: dict[str, str]) -> HostRecord:
    """The record of the last provision, the GPU's name being the one it was recorded under."""
    return HostRecord(tuple(RecordedGpu(g["pci_bus_id"], g["pci_id"], None, g["name"]) for g in gpus))


def test_first_provision_has_no_changes():
    assert hardware_changes(None, [now(TI), now(TI2)]) == []


def test_swap_is_reported_both_ways():
    changes = hardware_changes(recorded(TI, TI2), [now(TI), now(RTX4090)])
    assert changes == [
        "- GPU NVIDIA GeForce GTX 1080 Ti (10de:1b06) at 0000:02:00.0",
        "+ GPU NVIDIA GeForce RTX 4090 (10de:2684) at 0000:02:00.0",
    ]


def test_same_hardware_no_changes():
    assert hardware_changes(recorded(TI, TI2), [now(TI2), now(TI)]) == []


def test_plan_changes():
    old = {"driver": {"branch": "580", "flavor": "proprietary"}, "pytorch": {"variant": "cu126"}}
    new = {"driver": {"branch": "580", "flavor": "open"}, "pytorch": {"variant": "cu130"}}
    assert plan_changes(old, new) == ["driver flavor: proprietary -> open", "pytorch variant: cu126 -> cu130"]
    assert plan_changes(None, new) == []
