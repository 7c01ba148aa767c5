"""WSL2 and containers: detection, the GPUs nvidia-smi lists that PCI does not show, and their plans.

The trees under tests/fixtures/wsl hold what WSL2 differs by, each file from a public report (SOURCE.md there);
nvidia-smi answers with the H200's real capture (tests/fixtures/nvidia-smi-scenarios/h200) through the fake.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from rich.console import Console

from dlsetup.errors import UnsupportedError
from dlsetup.facts.hwparse import collector, textfiles
from dlsetup.facts.model import HostFacts
from dlsetup.plan.load import load_compat_data
from dlsetup.plan.model import PlanInputError
from dlsetup.plan.request import request_from_facts
from dlsetup.plan.resolve import resolve_stack
from dlsetup.ui.facts import render_facts

REPO = Path(__file__).resolve().parents[2]
FIX = REPO / "tests" / "fixtures"
WSL = FIX / "wsl"
FAKE_SMI = REPO / "tests" / "fakes" / "nvidia-smi"
UBUNTU_2404 = FIX / "hosts" / "h200-ubuntu2404" / "os-release"
DEBIAN_12 = FIX / "hosts" / "dev-vm-debian12" / "os-release"


def _smi(scenario: str) -> Callable[[list[str]], tuple[int, str, str]]:
    def run(argv: list[str]) -> tuple[int, str, str]:
        env = {"DLSETUP_FAKE_SMI_DIR": str(FIX / "nvidia-smi-scenarios" / scenario), "PATH": "/usr/bin:/bin"}
        out = subprocess.run([str(FAKE_SMI), *argv[1:]], capture_output=True, text=True, env=env, check=False)
        return out.returncode, out.stdout, out.stderr

    return run


def collect(
    tmp_path: Path,
    *,
    sysfs: Path,
    proc: Path | None,
    scenario: str | None = "h200",
    os_release: Path = UBUNTU_2404,
    dev: Path | None = None,
    wsl_lib: Path | None = None,
    container: Path | None = None,
) -> dict[str, Any]:
    """collect() over a tree; what is not given is absent (an empty proc, no /dev/dxg, no marker)."""
    facts = collector.collect(
        _smi(scenario) if scenario else _never,
        sysfs_root=str(sysfs),
        nvidia_proc_dir=str(tmp_path / "no-nvidia-proc"),
        pci_ids_paths=(str(FIX / "pci.ids" / "pci.ids.excerpt"),),
        nvidia_smi_path=str(FAKE_SMI) if scenario else None,
        proc_root=str(proc or tmp_path / "empty-proc"),
        os_release_paths=(str(os_release),),
        container_markers=(str(container or tmp_path / "no-marker"),),
        cuda_driver_version=lambda: 13000,
        dev_root=str(dev or tmp_path / "empty-dev"),
        wsl_lib_dir=str(wsl_lib or tmp_path / "no-wsl-lib"),
    )
    return dict(json.loads(json.dumps(facts)))


def _never(argv: list[str]) -> tuple[int, str, str]:
    raise AssertionError(f"nvidia-smi is not installed, yet {argv} ran")


def wsl2_facts(tmp_path: Path, **overrides: Any) -> dict[str, Any]:
    tree = WSL / "wsl2"
    args: dict[str, Any] = {
        "sysfs": tree / "sysfs",
        "proc": tree / "proc",
        "dev": tree / "dev",
        "wsl_lib": tree / "usr" / "lib" / "wsl" / "lib",
    }
    args.update(overrides)
    return collect(tmp_path, **args)


def container_facts(tmp_path: Path, **overrides: Any) -> dict[str, Any]:
    tree = WSL / "container-no-pci"
    args: dict[str, Any] = {"sysfs": tree / "sysfs", "proc": None, "container": tree / "run" / "systemd" / "container"}
    args.update(overrides)
    return collect(tmp_path, **args)


def with_driver(facts: dict[str, Any], version: str, cuda: str | None) -> HostFacts:
    """The facts with another driver version, as WSL2's nvidia-smi reports the Windows driver (SOURCE.md)."""
    typed = HostFacts.from_dict(facts)
    return dataclasses.replace(typed, driver=dataclasses.replace(typed.driver, version=version, cuda_version=cuda))


# --- detection -------------------------------------------------------------------------------------------------


def _kernel(tree: str) -> tuple[str, str]:
    proc = WSL / tree / "proc"
    return (proc / "sys" / "kernel" / "osrelease").read_text().strip(), (proc / "version").read_text()


@pytest.mark.parametrize("tree", ["wsl2", "wsl2-5.15", "wsl2-4.19"])
def test_wsl2_kernels_are_recognised(tree: str) -> None:
    release, version = _kernel(tree)
    assert textfiles.wsl2_evidence(release, version, False, False) == [f"kernel {release} is a WSL2 kernel"]
    # /proc/version alone (a kernel release that does not say) is enough too
    (line,) = textfiles.wsl2_evidence("6.6.0-custom", version, False, False)
    assert line.startswith("/proc/version names a WSL2 kernel: Linux version ") and release in line


def test_wsl1_and_ordinary_kernels_are_not_wsl2() -> None:
    release, version = _kernel("wsl1")
    assert textfiles.wsl2_evidence(release, version, False, True) == []
    dev_vm = "6.18.44-fc-v782"  # tests/fixtures/hosts/dev-vm-debian12/SOURCE.txt
    assert textfiles.wsl2_evidence(dev_vm, f"Linux version {dev_vm} (gcc)", False, True) == []


def test_dev_dxg_alone_means_wsl2_and_the_library_mount_is_reported_beside_it() -> None:
    assert textfiles.wsl2_evidence("6.6.0-custom", None, True, False) == [
        "/dev/dxg is present (WSL2's paravirtualized GPU device)"
    ]
    assert textfiles.wsl2_evidence("6.6.0-custom", None, True, True)[1].startswith("/usr/lib/wsl/lib is present")


# --- facts ---------------------------------------------------------------------------------------------------


def test_wsl2_facts_report_the_gpu_nvidia_smi_lists_with_its_source(tmp_path: Path) -> None:
    facts = wsl2_facts(tmp_path)
    assert facts["machine"] == {
        "vendor": None,
        "product": None,
        "virtualization": "wsl2",
        "virtualization_evidence": [
            "kernel 5.4.72-microsoft-standard-WSL2 is a WSL2 kernel",
            "/dev/dxg is present (WSL2's paravirtualized GPU device)",
            "/usr/lib/wsl/lib is present (the Windows driver's libraries)",
        ],
    }
    # the Microsoft "Basic Render Driver" on fe50:00:00.0 is no NVIDIA GPU; the H200 comes from nvidia-smi alone
    (gpu,) = facts["gpus"]
    assert gpu["source"] == "nvidia-smi"
    assert (gpu["pci_bus_id"], gpu["pci_id"], gpu["name"]) == ("0000:00:06.0", "10de:2335", "NVIDIA H200")
    assert (gpu["pci_class"], gpu["subsystem_id"], gpu["kernel_driver"]) == (None, None, None)
    assert (gpu["memory_mib"], gpu["compute_capability"], gpu["visible_to_driver"]) == (143771, "9.0", True)
    assert gpu["pcie"]["width_current"] == 16  # nvidia-smi's value: sysfs has no link for it
    assert facts["driver"]["loaded"] is True and facts["driver"]["version"] == "580.159.04"
    assert facts["warnings"] == []  # expected on WSL2, and the facts say why


def test_wsl2_facts_validate_against_the_schema_and_round_trip(tmp_path: Path) -> None:
    facts = wsl2_facts(tmp_path)
    schema = json.loads((REPO / "docs" / "schemas" / "facts.schema.json").read_text())
    assert [e.message for e in Draft202012Validator(schema).iter_errors({"hosts": {"wsl": facts}})] == []
    typed = HostFacts.from_dict(facts)
    assert typed.to_dict() == facts
    assert [g.pci_bus_id for g in typed.gpus_off_pci] == ["0000:00:06.0"]


def test_gpus_on_pci_keep_no_source_key(tmp_path: Path) -> None:
    facts = collect(tmp_path, sysfs=FIX / "sysfs" / "h200-vm", proc=None)
    (gpu,) = facts["gpus"]
    assert "source" not in gpu and gpu["kernel_driver"] == "nvidia"
    assert HostFacts.from_dict(facts).gpus[0].on_pci
    assert "virtualization_evidence" not in facts["machine"]


def test_a_container_without_pci_reports_the_gpu_with_its_evidence(tmp_path: Path) -> None:
    marker = WSL / "container-no-pci" / "run" / "systemd" / "container"
    facts = container_facts(tmp_path)
    assert facts["machine"]["virtualization"] == "container"
    assert facts["machine"]["virtualization_evidence"] == [f"{marker} is present"]
    (gpu,) = facts["gpus"]
    assert (gpu["source"], gpu["pci_bus_id"]) == ("nvidia-smi", "0000:00:06.0")
    assert facts["warnings"] == []


def test_a_container_on_wsl2_is_a_container_with_the_wsl2_signs(tmp_path: Path) -> None:
    tree = WSL / "wsl2"
    facts = container_facts(tmp_path, proc=tree / "proc", dev=tree / "dev")
    assert facts["machine"]["virtualization"] == "container"
    assert facts["machine"]["virtualization_evidence"][1:] == [
        "kernel 5.4.72-microsoft-standard-WSL2 is a WSL2 kernel",
        "/dev/dxg is present (WSL2's paravirtualized GPU device)",
    ]


def test_off_pci_gpus_elsewhere_still_warn(tmp_path: Path) -> None:
    # the same empty PCI bus with no container marker and no WSL2 sign: nothing explains it
    facts = container_facts(tmp_path, container=tmp_path / "no-marker")
    assert facts["machine"]["virtualization"] is None
    assert facts["gpus"][0]["source"] == "nvidia-smi"
    (warning,) = facts["warnings"]
    assert warning.startswith("nvidia-smi lists GPU 0000:00:06.0 (NVIDIA H200, 10de:2335) that PCI does not show")


def test_a_failing_nvidia_smi_is_reported_on_wsl2_only(tmp_path: Path) -> None:
    # without a GPU on PCI a failing nvidia-smi is normally expected; on WSL2 it is the Windows driver failing
    wsl = wsl2_facts(tmp_path, scenario="couldnt-communicate")
    assert wsl["gpus"] == []
    assert wsl["driver"]["error"] is not None and wsl["driver"]["error"]["kind"] == "driver_not_loaded"
    plain = collect(tmp_path, sysfs=WSL / "wsl2" / "sysfs", proc=None, scenario="couldnt-communicate")
    assert plain["driver"]["error"] is None


def _rendered(facts: dict[str, Any]) -> str:
    console = Console(width=200, record=True, color_system=None)
    render_facts(console, "host", HostFacts.from_dict(facts))
    return console.export_text()


def test_facts_rendering_marks_the_gpus_not_on_pci(tmp_path: Path) -> None:
    text = _rendered(wsl2_facts(tmp_path))
    assert "[wsl2]" in text
    assert "kernel 5.4.72-microsoft-standard-WSL2 is a WSL2 kernel" in text
    assert "0000:00:06.0 *" in text
    assert "* listed by nvidia-smi, not on PCI: WSL2 passes GPUs through /dev/dxg, not PCI" in text
    assert "Driver   580.159.04 (the Windows driver, through /dev/dxg), CUDA 13.0" in text

    text = _rendered(container_facts(tmp_path))
    assert "* listed by nvidia-smi, not on PCI: the container does not see the PCI devices" in text

    on_pci = _rendered(collect(tmp_path, sysfs=FIX / "sysfs" / "h200-vm", proc=None))
    assert "0000:00:06.0 *" not in on_pci and "not on PCI" not in on_pci


def test_wsl2_without_a_gpu_points_at_the_windows_driver(tmp_path: Path) -> None:
    facts = wsl2_facts(tmp_path, scenario=None)
    assert "nvidia-smi lists none (WSL2 takes its GPUs from the Windows NVIDIA driver" in _rendered(facts)
    plan = resolve_stack(request_from_facts(HostFacts.from_dict(facts)))
    assert plan.gpus == () and plan.driver.branch is None
    assert any("install or update it on Windows" in w for w in plan.warnings)


# --- plans ---------------------------------------------------------------------------------------------------


def _reason(plan: Any, topic: str) -> str:
    texts = [r.text for r in plan.reasons if r.topic == topic]
    assert texts, f"no {topic} reason"
    return texts[0]


def test_wsl2_plan_installs_no_driver_and_cuda_from_the_wsl_repository(tmp_path: Path) -> None:
    facts = HostFacts.from_dict(wsl2_facts(tmp_path))
    plan = resolve_stack(request_from_facts(facts))
    data = load_compat_data()
    assert plan.os == "ubuntu-24.04"
    assert plan.driver.branch is None and plan.driver.packages == ()
    assert _reason(plan, "driver.source").startswith("none: the Windows driver serves WSL2")
    assert "580.159.04 (R580, as nvidia-smi reports it)" in _reason(plan, "driver.source")
    # the Windows driver 580 runs CUDA 13.0; 13.1 needs 590
    assert plan.cuda.version == "13.0" and plan.cuda.source == "nvidia"
    assert plan.cuda.packages == data.toolkit("13.0").packages == ("cuda-toolkit-13-0",)
    assert "NVIDIA's WSL-Ubuntu repository (cuda-toolkit-13-0, the toolkit alone, no driver)" in _reason(plan, "cuda")
    repo = plan.nvidia_repository
    assert repo is not None
    assert repo.url == "https://developer.download.nvidia.com/compute/cuda/repos/wsl-ubuntu/x86_64/"
    assert repo.key_url == repo.url + "3bf863cc.pub"
    assert repo.key_fingerprint == data.nvidia_repository.key_fingerprint
    assert repo.used_for == ("cuda",) and repo.packages == ("cuda-toolkit-13-0",)
    assert (plan.cudnn.packages, plan.nccl.packages) == ((), ())
    assert plan.reboot_required is False and plan.secure_boot.mok_enrollment == "no"
    assert plan.pytorch.variant is not None and plan.pytorch.variant.startswith("cu13")
    extravars = plan.to_extravars()
    assert extravars["nvidia_driver_enabled"] is False and "nvidia_driver_packages" not in extravars
    assert extravars["cuda_repo_url"] == repo.url and extravars["cuda_packages"] == ["cuda-toolkit-13-0"]


def test_wsl2_cuda_is_bounded_by_the_windows_driver(tmp_path: Path) -> None:
    # WSL2's nvidia-smi gives the Windows driver as 573.24 (dmlc/xgboost#11471); an R570 driver runs CUDA 12.8
    data = load_compat_data()
    assert data.toolkit("12.9").min_branch > 573 >= data.toolkit("12.8").min_branch
    plan = resolve_stack(request_from_facts(with_driver(wsl2_facts(tmp_path), "573.24", "12.8")))
    assert plan.cuda.version == "12.8" and plan.cuda.packages == ("cuda-toolkit-12-8",)
    assert "CUDA 12.9 needs driver" in _reason(plan, "cuda")
    assert plan.pytorch.cuda is not None and plan.pytorch.cuda.startswith("12.")
    assert plan.jax.extra == "cuda12"
    # the CUDA the driver reports bounds the toolkit too: an R580 driver that says CUDA 12.9 gets 12.9
    plan = resolve_stack(request_from_facts(with_driver(wsl2_facts(tmp_path), "581.15", "12.9")))
    assert plan.cuda.version == "12.9"
    assert "is newer than the CUDA 12.9 the driver runs" in _reason(plan, "cuda")


def test_wsl2_with_a_windows_driver_too_old_for_any_toolkit_is_refused(tmp_path: Path) -> None:
    # 510.06 as WSL2's nvidia-smi -a reported it (NVIDIA/nvidia-container-toolkit#271); CUDA 11.8 needs 520
    with pytest.raises(UnsupportedError) as info:
        resolve_stack(request_from_facts(with_driver(wsl2_facts(tmp_path), "510.06", "11.6")))
    assert info.value.kind == "no_supported_stack"
    assert "the Windows driver 510.06" in str(info.value)
    assert info.value.hint == "update the Windows NVIDIA driver"


def test_debian_on_wsl2_is_refused(tmp_path: Path) -> None:
    facts = HostFacts.from_dict(wsl2_facts(tmp_path, os_release=DEBIAN_12))
    with pytest.raises(UnsupportedError) as info:
        resolve_stack(request_from_facts(facts))
    assert info.value.kind == "unsupported_os"
    assert str(info.value).startswith("Debian 12 (bookworm) on WSL2: NVIDIA documents CUDA on WSL 2 for its WSL-Ubuntu")


@pytest.mark.parametrize("pin", [{"driver_branch": 580}, {"driver_flavor": "open"}, {"driver_source": "nvidia"}])
def test_driver_pins_on_wsl2_conflict(tmp_path: Path, pin: dict[str, Any]) -> None:
    facts = HostFacts.from_dict(wsl2_facts(tmp_path))
    with pytest.raises(PlanInputError) as info:
        resolve_stack(request_from_facts(facts, pin))
    assert info.value.kind == "pin_conflict" and "the Windows driver serves it" in str(info.value)


def test_cuda_pins_on_wsl2_must_fit_the_windows_driver(tmp_path: Path) -> None:
    facts = with_driver(wsl2_facts(tmp_path), "573.24", "12.8")
    assert resolve_stack(request_from_facts(facts, {"cuda_version": "12.6"})).cuda.version == "12.6"
    with pytest.raises(PlanInputError) as info:
        resolve_stack(request_from_facts(facts, {"cuda_version": "13.0"}))
    assert info.value.kind == "pin_conflict" and "under the Windows driver 573.24" in str(info.value)


def test_a_container_without_pci_gets_no_driver_and_cuda_from_the_os_repository(tmp_path: Path) -> None:
    plan = resolve_stack(request_from_facts(HostFacts.from_dict(container_facts(tmp_path))))
    assert plan.driver.branch is None and plan.to_extravars()["nvidia_driver_enabled"] is False
    assert _reason(plan, "driver.source").startswith("none: the host's driver serves the container")
    assert plan.cuda.version == "13.0" and plan.cuda.packages == ("cuda-toolkit-13-0",)
    repo = plan.nvidia_repository
    assert repo is not None and repo.url.endswith("/compute/cuda/repos/ubuntu2404/x86_64/")
    assert plan.cudnn.packages and plan.nccl.packages  # from NVIDIA's repository for the OS, as on any host
    assert "the container gets no driver package" in _reason(plan, "nvidia_repository")
    assert plan.reboot_required is False
    assert plan.secure_boot.note == "no kernel modules are installed: a container has no kernel of its own"


def test_a_container_that_sees_its_gpus_on_pci_keeps_the_driver_plan(tmp_path: Path) -> None:
    marker = WSL / "container-no-pci" / "run" / "systemd" / "container"
    facts = collect(tmp_path, sysfs=FIX / "sysfs" / "h200-vm", proc=None, container=marker)
    plan = resolve_stack(request_from_facts(HostFacts.from_dict(facts)))
    assert plan.driver.branch is not None and plan.driver.packages
    texts = [r.text for r in plan.reasons if r.topic == "driver.packages"]
    assert any(t.startswith("in a container the nvidia_driver role installs the user-space packages") for t in texts)
