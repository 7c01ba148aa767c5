"""dlsetup.facts: the Facts JSON host object, validated on the way in and unchanged on the way out."""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import re
import subprocess
import typing
from pathlib import Path
from typing import Any

import pytest

from dlsetup.errors import EXIT_INTERNAL, DlsetupError
from dlsetup.facts import model as facts_module
from dlsetup.facts.hwparse import collector, common, nvidia_smi
from dlsetup.facts.model import (
    DriverError,
    FactsFormatError,
    GpuFacts,
    HostFacts,
    PcieLink,
    hosts_from_dict,
    hosts_to_dict,
)

REPO = Path(__file__).resolve().parents[2]
FIX = REPO / "tests" / "fixtures"
FAKE_SMI = REPO / "tests" / "fakes" / "nvidia-smi"


def doc_example() -> dict[str, Any]:
    """The Facts JSON example in docs/architecture.md: the model must accept the documented shape."""
    text = (REPO / "docs" / "architecture.md").read_text()
    section = text[text.index("## Facts JSON") :]
    block = re.search(r"```json\n(.*?)```", section, re.DOTALL)
    assert block
    return json.loads(block.group(1))


def collected(tree: str, scenario: str | None, proc: str | None = None) -> dict[str, Any]:
    """What the module returns for a fixture tree (collect() in-process, fake nvidia-smi through subprocess)."""

    def run(argv: list[str]) -> tuple[int, str, str]:
        env = dict(os.environ, DLSETUP_FAKE_SMI_DIR=str(FIX / "nvidia-smi-scenarios" / str(scenario)))
        out = subprocess.run([str(FAKE_SMI), *argv[1:]], capture_output=True, text=True, env=env, check=False)
        return out.returncode, out.stdout, out.stderr

    return collector.collect(
        run,
        sysfs_root=str(FIX / "sysfs" / tree),
        nvidia_proc_dir=str(FIX / "nvidia-proc" / proc) if proc else "/nonexistent/dlsetup",
        pci_ids_paths=(str(FIX / "pci.ids" / "pci.ids.excerpt"),),
        nvidia_smi_path=str(FAKE_SMI) if scenario else None,
        cuda_driver_version=lambda: 13000,
    )


CASES = [
    ("h200-vm", "h200", "h200-580-open"),
    ("2x1080ti-rig", "2x1080ti", "410.78-proprietary"),
    ("2x1080ti-rig", "legacy-470", None),
    ("x8-slot", "version-mismatch", None),
    ("trained-down", "couldnt-communicate", None),
    ("xps13-9370", "no-devices", None),
    ("xps15-9570", None, None),
    ("h200-vm", "h100-590", None),
]


@pytest.mark.parametrize(("tree", "scenario", "proc"), CASES)
def test_collected_facts_round_trip(tree, scenario, proc):
    data = collected(tree, scenario, proc)
    facts = HostFacts.from_dict(data)
    assert facts.to_dict() == data
    assert list(facts.to_dict()) == ["os", "machine", "cpu", "memory_mib", "disks", "gpus", "driver", "warnings"]
    # and through JSON text, as `dlsetup facts --format json` prints it
    assert HostFacts.from_dict(json.loads(json.dumps(facts.to_dict()))) == facts


def test_typed_access():
    facts = HostFacts.from_dict(collected("2x1080ti-rig", "2x1080ti", "410.78-proprietary"))
    assert isinstance(facts.gpus[0], GpuFacts)
    assert isinstance(facts.gpus[0].pcie, PcieLink)
    assert facts.gpus[1].pci_bus_id == "0000:06:00.0"
    assert facts.gpus[1].pcie.slot_width_max == 16
    assert facts.driver.kernel_module == "proprietary"
    assert facts.driver.error is None
    assert [g.index for g in facts.visible_gpus] == [0, 1]

    broken = HostFacts.from_dict(collected("x8-slot", "version-mismatch"))
    assert isinstance(broken.driver.error, DriverError)
    assert broken.driver.error.kind == "version_mismatch"
    assert broken.visible_gpus == ()
    assert broken.gpus[0].pcie.slot_width_max == 8


def test_documented_example_is_valid():
    document = doc_example()
    hosts = hosts_from_dict(document)
    assert list(hosts) == ["NAME"]
    assert hosts["NAME"].gpus[0].pci_name == "GP102 [GeForce GTX 1080 Ti]"
    assert hosts["NAME"].gpus[0].pcie_attach is not None and hosts["NAME"].gpus[0].pcie_attach.to == "cpu"
    errors = document.pop("errors")  # why a host gave no facts: the document's, beside the hosts
    assert list(errors) == ["NAME"]
    assert hosts_to_dict(hosts) == document


def test_frozen():
    facts = HostFacts.from_dict(doc_example()["hosts"]["NAME"])
    with pytest.raises(dataclasses.FrozenInstanceError):
        facts.memory_mib = 1  # type: ignore[misc]
    assert isinstance(facts.gpus, tuple)
    assert isinstance(facts.warnings, tuple)


def _host() -> dict[str, Any]:
    return copy.deepcopy(doc_example()["hosts"]["NAME"])


def _broken(change) -> dict[str, Any]:
    data = _host()
    change(data)
    return data


@pytest.mark.parametrize(
    ("change", "where"),
    [
        (lambda d: d.pop("gpus"), "facts: missing gpus"),
        (lambda d: d.update(extra=1), "facts: unexpected extra"),
        (lambda d: d["gpus"][0].pop("pci_name"), "gpus[0]: missing pci_name"),
        (lambda d: d["gpus"][0]["pcie"].update(width_max="16"), "gpus[0].pcie.width_max"),
        (lambda d: d["gpus"][0]["pcie"].update(width_max=True), "gpus[0].pcie.width_max"),
        (lambda d: d["gpus"][0]["pcie"].update(width_max=-1), "gpus[0].pcie.width_max"),
        (lambda d: d["gpus"][0].update(visible_to_driver=1), "gpus[0].visible_to_driver"),
        (lambda d: d["gpus"][0].update(visible_to_driver=None), "gpus[0].visible_to_driver"),
        (lambda d: d["gpus"][0].update(pci_bus_id="00000000:01:00.0"), "gpus[0].pci_bus_id"),
        (lambda d: d["gpus"][0].update(pci_bus_id="0000:0A:00.0"), "gpus[0].pci_bus_id"),
        (lambda d: d["gpus"][0].update(pci_id="10DE:1B06"), "gpus[0].pci_id"),
        (lambda d: d["gpus"][0].update(pci_class="0x0300"), "gpus[0].pci_class"),
        (lambda d: d["gpus"][0].update(compute_capability=6.1), "gpus[0].compute_capability"),
        (lambda d: d.update(gpus={}), "facts.gpus"),
        (lambda d: d.update(gpus=[None]), "gpus[0]: expected an object"),
        (lambda d: d["disks"][0].update(holds="/"), "disks[0].holds"),
        (lambda d: d["disks"][0].update(name=None), "disks[0].name"),
        (lambda d: d["machine"].update(virtualization="kvm"), "machine.virtualization"),
        (lambda d: d["machine"].update(virtualization_evidence="/dev/dxg"), "machine.virtualization_evidence"),
        (lambda d: d["gpus"][0].update(source="sysfs"), "gpus[0].source"),
        (lambda d: d["driver"].update(kernel_module="closed"), "driver.kernel_module"),
        (lambda d: d["driver"].update(loaded="yes"), "driver.loaded"),
        (lambda d: d["driver"].update(cuda_version="13"), "driver.cuda_version"),
        (lambda d: d["driver"].update(error={"kind": "bad", "message": "m", "hint": "h"}), "driver.error.kind"),
        (lambda d: d["driver"].update(error={"kind": "gpu_lost", "message": "m"}), "driver.error: missing hint"),
        (lambda d: d["driver"].update(error="boom"), "driver.error: expected an object"),
        (lambda d: d.update(warnings=[1]), "facts.warnings"),
        (lambda d: d.update(memory_mib=15872.0), "facts.memory_mib"),
    ],
)
def test_malformed_facts_are_rejected_with_their_path(change, where):
    with pytest.raises(FactsFormatError) as info:
        HostFacts.from_dict(_broken(change))
    assert str(info.value).startswith(where), str(info.value)


def test_bus_id_domains():
    data = _host()
    data["gpus"][0]["pci_bus_id"] = common.normalize_bus_id("00008ED0:00:00.0")  # Azure/Hyper-V, real capture
    assert HostFacts.from_dict(data).gpus[0].pci_bus_id == "8ed0:00:00.0"
    data["gpus"][0]["pci_bus_id"] = common.normalize_bus_id("00010000:00:00.0")
    assert HostFacts.from_dict(data).gpus[0].pci_bus_id == "10000:00:00.0"


def test_the_error_is_a_dlsetup_error():
    with pytest.raises(DlsetupError) as info:
        HostFacts.from_dict(None)
    assert info.value.exit_code == EXIT_INTERNAL
    assert str(info.value) == "facts: expected an object, got null"
    with pytest.raises(FactsFormatError, match=r"^document\.hosts: expected an object"):
        hosts_from_dict({"hosts": []})


def test_every_error_kind_is_accepted():
    for kind in nvidia_smi.ERROR_KINDS:
        data = _host()
        data["driver"]["error"] = {"kind": kind, "message": "m", "hint": "h"}
        assert HostFacts.from_dict(data).driver.error == DriverError(kind, "m", "h")


def test_error_kind_type_matches_the_module_list():
    """facts.ErrorKind (for type checking) and nvidia_smi.ERROR_KINDS (what the module emits and facts validates
    against) are one list written twice, since hwparse must stay stdlib-only: keep them from drifting."""
    assert typing.get_args(facts_module.ErrorKind) == nvidia_smi.ERROR_KINDS
