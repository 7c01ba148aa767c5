from dlsetup.drift import hardware_changes, plan_changes

TI = {"pci_bus_id": "0000:01:00.0", "pci_id": "10de:1b06", "name": "NVIDIA GeForce GTX 1080 Ti"}
TI2 = {"pci_bus_id": "0000:02:00.0", "pci_id": "10de:1b06", "name": "NVIDIA GeForce GTX 1080 Ti"}
RTX4090 = {"pci_bus_id": "0000:02:00.0", "pci_id": "10de:2684", "name": "NVIDIA GeForce RTX 4090"}


def test_first_provision_has_no_changes():
    assert hardware_changes(None, [TI, TI2]) == []


def test_swap_is_reported_both_ways():
    changes = hardware_changes({"gpus": [TI, TI2]}, [TI, RTX4090])
    assert changes == [
        "- GPU NVIDIA GeForce GTX 1080 Ti (10de:1b06) at 0000:02:00.0",
        "+ GPU NVIDIA GeForce RTX 4090 (10de:2684) at 0000:02:00.0",
    ]


def test_same_hardware_no_changes():
    assert hardware_changes({"gpus": [TI, TI2]}, [TI2, TI]) == []


def test_plan_changes():
    old = {"driver": {"branch": "580", "flavor": "proprietary"}, "pytorch": {"variant": "cu126"}}
    new = {"driver": {"branch": "580", "flavor": "open"}, "pytorch": {"variant": "cu130"}}
    assert plan_changes(old, new) == ["driver flavor: proprietary -> open", "pytorch variant: cu126 -> cu130"]
    assert plan_changes(None, new) == []
