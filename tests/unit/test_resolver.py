"""The resolver: table-driven cases (every architecture, every OS, the seed's machines, pins, errors), then the
Plan JSON / extravars contracts, live facts, and the rendering."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import date
from typing import Any

import pytest
from rich.console import Console

from dlsetup.errors import EXIT_CONFIG, EXIT_UNSUPPORTED, ConfigError, UnsupportedError
from dlsetup.facts.model import HostFacts
from dlsetup.plan.load import load_compat_data
from dlsetup.plan.model import PlanInputError
from dlsetup.plan.request import request_from_facts, request_offline
from dlsetup.plan.resolve import resolve_stack
from dlsetup.ui.plan import render_plan

AS_OF = date(2026, 11, 26)  # the date compat.md was compiled; lifecycle answers depend on it


@dataclass(frozen=True)
class Stack:
    source: str | None
    branch: str | None
    flavor: str | None
    cuda: str | None
    variant: str


@dataclass(frozen=True)
class Fails:
    error: type[Exception]
    kind: str


PASCAL_UBUNTU = Stack("distribution", "580", "proprietary", "12.9", "cu126")
PASCAL_NVIDIA = Stack("nvidia", "580", "proprietary", "12.9", "cu126")
OPEN_UBUNTU = Stack("distribution", "580", "open", "13.0", "cu130")
OPEN_NVIDIA = Stack("nvidia", "580", "open", "13.0", "cu130")
CPU_ONLY = Stack(None, None, None, None, "cpu")

# id, os, gpus, machine, pins, expected (kept one case per line or two: a table reads better unformatted)
# fmt: off
CASES: list[tuple[str, str, list[str], str | None, dict[str, Any] | None, Stack | Fails]] = [
    # the seed's machines
    ("seed-2x1080ti-ubuntu2404", "ubuntu-24.04", ["10de:1b06", "10de:1b06"], None, None, PASCAL_UBUNTU),
    ("seed-2x1080ti-names-ubuntu2204", "ubuntu-22.04", ["GTX 1080 Ti", "GTX 1080 Ti"], None, None, PASCAL_UBUNTU),
    ("seed-2x1080ti-debian12", "debian-12", ["10de:1b06", "10de:1b06"], None, None, PASCAL_NVIDIA),
    ("seed-2xtitanx-pascal-debian13", "debian-13", ["10de:1b00", "TITAN X Pascal"], None, None, PASCAL_NVIDIA),
    ("seed-titanx-maxwell-ubuntu2404", "ubuntu-24.04", ["GTX TITAN X"], None, None, PASCAL_UBUNTU),
    ("seed-titanx-maxwell-debian12", "debian-12", ["10de:17c2"], None, None, PASCAL_NVIDIA),
    ("seed-xps13-9370-ubuntu2404", "ubuntu-24.04", [], "XPS 13 9370", None, CPU_ONLY),
    ("seed-xps13-9370-debian12", "debian-12", [], "XPS 13 9370", None, CPU_ONLY),
    ("seed-xps15-9570-ubuntu2404", "ubuntu-24.04", ["10de:1c8c"], "XPS 15 9570", None, PASCAL_UBUNTU),
    ("seed-xps15-9560-machine-only-debian13", "debian-13", [], "XPS 15 9560", None, PASCAL_NVIDIA),
    ("laptop-1050-no-profile-debian12", "debian-12", ["GTX 1050 Mobile"], None, None, PASCAL_NVIDIA),
    # one architecture at a time
    ("volta-v100-ubuntu2204", "ubuntu-22.04", ["V100"], None, None, PASCAL_UBUNTU),
    ("volta-titan-v-debian13", "debian-13", ["10de:1d81"], None, None, PASCAL_NVIDIA),
    ("turing-2080ti-ubuntu2404", "ubuntu-24.04", ["RTX 2080 Ti"], None, None, OPEN_UBUNTU),
    ("turing-t4-debian12", "debian-12", ["T4"], None, None, OPEN_NVIDIA),
    ("ampere-3090-ubuntu2404", "ubuntu-24.04", ["RTX 3090"], None, None, OPEN_UBUNTU),
    ("ampere-a100-debian13", "debian-13", ["10de:20b2"], None, None, OPEN_NVIDIA),
    ("ada-4090-ubuntu2204", "ubuntu-22.04", ["RTX 4090"], None, None, OPEN_UBUNTU),
    ("ada-4090-debian13", "debian-13", ["10de:2684"], None, None, OPEN_NVIDIA),
    ("hopper-h100-ubuntu2404", "ubuntu-24.04", ["H100"], None, None, OPEN_UBUNTU),
    ("hopper-h200-ubuntu2204", "ubuntu-22.04", ["10de:2335"], None, None, OPEN_UBUNTU),
    ("hopper-h200-debian12", "debian-12", ["H200"], None, None, OPEN_NVIDIA),
    ("blackwell-5090-debian12", "debian-12", ["RTX 5090"], None, None, OPEN_NVIDIA),
    ("blackwell-5090-debian13", "debian-13", ["10de:2b85"], None, None, OPEN_NVIDIA),
    ("blackwell-5090-ubuntu2404", "ubuntu-24.04", ["RTX 5090"], None, None, OPEN_UBUNTU),
    ("kepler-780-ubuntu2404", "ubuntu-24.04", ["GTX 780"], None, None, Fails(UnsupportedError, "no_supported_stack")),
    ("kepler-k40c-debian12", "debian-12", ["10de:1024"], None, None, Fails(UnsupportedError, "no_supported_stack")),
    # mixed sets: the common denominator
    ("mixed-1080ti-4090", "ubuntu-24.04", ["GTX 1080 Ti", "RTX 4090"], None, None, PASCAL_UBUNTU),
    ("mixed-v100-a100", "ubuntu-24.04", ["V100", "A100"], None, None, PASCAL_UBUNTU),
    ("mixed-3090-h100-debian12", "debian-12", ["RTX 3090", "H100"], None, None, OPEN_NVIDIA),
    ("mixed-4090-5090-debian13", "debian-13", ["RTX 4090", "RTX 5090"], None, None, OPEN_NVIDIA),
    ("mixed-1080ti-5090", "ubuntu-24.04", ["GTX 1080 Ti", "RTX 5090"], None, None,
     Fails(UnsupportedError, "incompatible_gpus")),
    ("mixed-780-1080ti", "ubuntu-24.04", ["GTX 780", "GTX 1080 Ti"], None, None,
     Fails(UnsupportedError, "no_supported_stack")),
    # pins that the hardware or OS cannot honour
    ("pin-590-on-pascal", "ubuntu-24.04", ["GTX 1080 Ti"], None, {"driver_branch": 590},
     Fails(ConfigError, "pin_conflict")),
    ("pin-595-on-maxwell", "debian-12", ["GTX TITAN X"], None, {"driver_branch": "595"},
     Fails(ConfigError, "pin_conflict")),
    ("pin-proprietary-on-blackwell", "ubuntu-24.04", ["RTX 5090"], None, {"driver_flavor": "proprietary"},
     Fails(ConfigError, "pin_conflict")),
    ("pin-open-on-pascal", "ubuntu-24.04", ["GTX 1080 Ti"], None, {"driver_flavor": "open"},
     Fails(ConfigError, "pin_conflict")),
    ("pin-cuda13-on-pascal", "ubuntu-24.04", ["GTX 1080 Ti"], None, {"cuda_version": "13.0"},
     Fails(ConfigError, "pin_conflict")),
    ("pin-cu128-on-pascal", "ubuntu-24.04", ["GTX 1080 Ti"], None, {"pytorch_variant": "cu128"},
     Fails(ConfigError, "pin_conflict")),
    ("pin-torch-2.15-on-pascal", "ubuntu-24.04", ["GTX 1080 Ti"], None, {"pytorch_version": "2.15.0"},
     Fails(ConfigError, "pin_conflict")),
    ("pin-cu126-on-blackwell", "ubuntu-24.04", ["RTX 5090"], None, {"pytorch_variant": "cu126"},
     Fails(ConfigError, "pin_conflict")),
    ("pin-distribution-blackwell-debian13", "debian-13", ["RTX 5090"], None, {"driver_source": "distribution"},
     Fails(ConfigError, "pin_conflict")),
    ("pin-620-not-offered-ubuntu2404", "ubuntu-24.04", ["RTX 4090"], None, {"driver_branch": 620},
     Fails(ConfigError, "pin_conflict")),
    ("pin-driver-without-gpu", "ubuntu-24.04", [], "XPS 13 9370", {"driver_branch": 580},
     Fails(ConfigError, "pin_conflict")),
    ("pin-cu130-on-debian13-550", "debian-13", ["RTX 4090"], None,
     {"driver_source": "distribution", "pytorch_variant": "cu130"}, Fails(ConfigError, "pin_conflict")),
    # pins that are honoured
    ("pin-595-on-ada", "ubuntu-24.04", ["RTX 4090"], None, {"driver_branch": 595},
     Stack("distribution", "595", "open", "13.2", "cu132")),
    ("pin-proprietary-on-ada", "ubuntu-24.04", ["RTX 4090"], None, {"driver_flavor": "proprietary"},
     Stack("distribution", "580", "proprietary", "13.0", "cu130")),
    ("pin-nvidia-source-ubuntu", "ubuntu-24.04", ["RTX 3090"], None, {"driver_source": "nvidia"}, OPEN_NVIDIA),
    ("pin-debian12-archive-pascal", "debian-12", ["GTX 1080 Ti"], None, {"driver_source": "distribution"},
     Stack("distribution", "535", "proprietary", "11.8", "cu126")),
    ("pin-debian13-archive-pascal", "debian-13", ["GTX 1080 Ti"], None, {"driver_source": "distribution"},
     Stack("distribution", "550", "proprietary", "12.4", "cu126")),
    ("pin-debian13-archive-ada", "debian-13", ["RTX 4090"], None, {"driver_source": "distribution"},
     Stack("distribution", "550", "open", "12.4", "cu126")),
    ("pin-cu126-on-ada", "ubuntu-24.04", ["RTX 4090"], None, {"pytorch_variant": "cu126"},
     Stack("distribution", "580", "open", "12.9", "cu126")),
    ("pin-cpu-torch-on-pascal", "ubuntu-24.04", ["GTX 1080 Ti"], None, {"pytorch_variant": "cpu"},
     Stack("distribution", "580", "proprietary", "12.9", "cpu")),
    ("pin-cuda-12.8-on-ada", "ubuntu-24.04", ["RTX 4090"], None, {"cuda_version": "12.8"},
     Stack("distribution", "580", "open", "12.8", "cu126")),
    # identification and OS
    ("pci-ids-name-turing", "ubuntu-24.04", ["TU104 [GeForce RTX 2070 SUPER]"], None, None, OPEN_UBUNTU),
    ("pci-ids-name-catalogued", "debian-12", ["GP102 [GeForce GTX 1080 Ti]"], None, None, PASCAL_NVIDIA),
    ("unknown-pci-id", "ubuntu-24.04", ["10de:ffff"], None, None, Fails(UnsupportedError, "unknown_gpu")),
    ("non-nvidia-pci-id", "ubuntu-24.04", ["1002:73bf"], None, None, Fails(UnsupportedError, "unknown_gpu")),
    ("unknown-model-name", "ubuntu-24.04", ["RTX 9999"], None, None, Fails(ConfigError, "unknown_model")),
    ("ambiguous-model-name", "ubuntu-24.04", ["TITAN X"], None, None, Fails(ConfigError, "ambiguous_model")),
    ("unsupported-os-ubuntu2004", "ubuntu-20.04", ["RTX 4090"], None, None, Fails(UnsupportedError, "unsupported_os")),
    ("unsupported-os-fedora40", "fedora-40", ["RTX 4090"], None, None, Fails(UnsupportedError, "unsupported_os")),
    ("malformed-os", "ubuntu24", ["RTX 4090"], None, None, Fails(ConfigError, "bad_os")),
    ("os-by-codename", "debian-bookworm", ["RTX 4090"], None, None, OPEN_NVIDIA),
]
# fmt: on


def plan_for(os_name: str, gpus: list[str], machine: str | None = None, pins: dict[str, Any] | None = None):
    return resolve_stack(request_offline(os_name, gpus, machine, pins, as_of=AS_OF))


@pytest.mark.parametrize(
    ("os_name", "gpus", "machine", "pins", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_resolver_table(os_name, gpus, machine, pins, expected) -> None:
    if isinstance(expected, Fails):
        with pytest.raises(expected.error) as caught:
            plan_for(os_name, gpus, machine, pins)
        assert caught.value.kind == expected.kind, caught.value.message
        assert caught.value.exit_code == (EXIT_UNSUPPORTED if expected.error is UnsupportedError else EXIT_CONFIG)
        return
    plan = plan_for(os_name, gpus, machine, pins)
    got = Stack(plan.driver.source, plan.driver.branch, plan.driver.flavor, plan.cuda.version, plan.pytorch.variant)
    assert got == expected
    # every plan explains itself
    assert plan.reasons and all(r.text for r in plan.reasons)
    if expected.branch is not None:
        topics = {r.topic for r in plan.reasons}
        assert {"driver.flavor", "driver.branch", "driver.source", "cuda", "pytorch", "jax"} <= topics


def test_table_covers_every_architecture_and_os() -> None:
    """The table is not allowed to shrink silently: each architecture and each supported OS appears."""
    data = load_compat_data()
    seen_arch: set[str] = set()
    seen_os = {c[1] for c in CASES}
    for _, _os_name, gpus, *_ in CASES:
        for gpu in gpus:
            try:
                request = request_offline("ubuntu-24.04", [gpu], as_of=AS_OF)
            except ConfigError:
                continue
            seen_arch |= {g.architecture for g in request.gpus if g.architecture}
    expected_arch = {a.name for a in data.architectures} - {"pre-Kepler"}
    assert expected_arch <= seen_arch
    assert {s.key for s in data.systems} <= seen_os
    assert len(CASES) >= 30


# --- the "done when" ---------------------------------------------------------------------------------


def test_done_two_1080ti_on_ubuntu_2404() -> None:
    plan = plan_for("ubuntu-24.04", ["GTX 1080 Ti", "GTX 1080 Ti"])
    assert (plan.driver.branch, plan.driver.flavor) == ("580", "proprietary")
    assert plan.cuda.version is not None and plan.cuda.version.startswith("12.")
    assert plan.pytorch.variant == "cu126"
    assert plan.pytorch.index_url == "https://download.pytorch.org/whl/cu126"
    assert plan.pytorch.version == "2.14.0"
    assert plan.jax.extra == "cuda12"
    why = {r.topic: r.text for r in plan.reasons}
    assert "Pascal" in why["driver.flavor"] and "open modules" in why["driver.flavor"]
    assert "CUDA 13.0 dropped Pascal" in why["cuda"]
    assert "sm_60" in why["pytorch"]
    assert any("last driver branch for Pascal" in w and "2028" in w for w in plan.warnings)
    assert any("torch 2.15.0 has no build for Pascal" in w for w in plan.warnings)
    assert len(plan.gpus) == 2 and {g.compute_capability for g in plan.gpus} == {"6.1"}


def test_done_rtx5090_on_debian12_open_from_nvidia_with_reason() -> None:
    plan = plan_for("debian-12", ["RTX 5090"])
    assert (plan.driver.source, plan.driver.flavor) == ("nvidia", "open")
    assert int(plan.driver.branch or 0) >= 570
    assert "nvidia-open" in plan.driver.packages and "nvidia-driver-pinning-580" in plan.driver.packages
    why = {r.topic: r.text for r in plan.reasons}
    assert "required by Blackwell" in why["driver.flavor"]
    assert "R535" in why["driver.source"] and "R570 or newer" in why["driver.source"]
    assert "pin driver_source" not in why["driver.source"]  # Debian's archive has nothing for Blackwell
    assert plan.secure_boot.mok_enrollment == "if_secure_boot"
    assert plan.nvidia_repository is not None
    assert plan.nvidia_repository.url == "https://developer.download.nvidia.com/compute/cuda/repos/debian12/x86_64/"
    assert plan.nvidia_repository.key_url.endswith("/debian12/x86_64/3bf863cc.pub")
    assert plan.nvidia_repository.key_fingerprint == "EB693B3035CD5710E231E123A4B469963BF863CC"
    # what the preflight checks the repository offers: the driver and CUDA packages, not Debian's kernel headers
    offered = plan.nvidia_repository.packages
    assert "nvidia-open" in offered and "linux-headers-amd64" not in offered
    assert set(plan.cuda.packages) <= set(offered) and set(plan.nccl.packages) <= set(offered)


def test_done_kepler_gets_a_clear_no_and_no_r580() -> None:
    with pytest.raises(UnsupportedError) as caught:
        plan_for("ubuntu-24.04", ["GTX 780"])
    message = caught.value.message
    assert caught.value.kind == "no_supported_stack"
    assert "R470" in message and "Kepler" in message and "PyTorch" in message
    assert "580" not in message


# --- decisions in detail ---------------------------------------------------------------------------------------


def test_mixed_pascal_and_ada_stays_proprietary_and_says_why() -> None:
    plan = plan_for("ubuntu-24.04", ["GTX 1080 Ti", "RTX 4090"])
    flavor_reason = next(r.text for r in plan.reasons if r.topic == "driver.flavor")
    assert "stays on proprietary" in flavor_reason and "Ada" in flavor_reason


def test_incompatible_mix_names_both_sides() -> None:
    with pytest.raises(UnsupportedError) as caught:
        plan_for("debian-13", ["GTX 1080 Ti", "RTX 5090"])
    assert "Blackwell" in caught.value.message and "Pascal" in caught.value.message


def test_debian_archive_skipped_with_reason_and_escape_hatch() -> None:
    for os_name, why in (("debian-12", "past its end of life June 2026"), ("debian-13", "not a supported branch")):
        plan = plan_for(os_name, ["GTX 1080 Ti"])
        source_reason = next(r.text for r in plan.reasons if r.topic == "driver.source")
        assert why in source_reason
        assert "pin driver_source: distribution" in source_reason


def test_debian12_archive_pin_warns_about_end_of_life_and_toolkit_major() -> None:
    plan = plan_for("debian-12", ["GTX 1080 Ti"], pins={"driver_source": "distribution"})
    assert plan.driver.packages == ("linux-headers-amd64", "nvidia-kernel-dkms", "nvidia-driver")
    assert plan.cuda.packages == ("nvidia-cuda-toolkit",)
    assert any("past its end of life" in w for w in plan.warnings)
    assert any("differ in major version" in w for w in plan.warnings)
    assert plan.nccl.packages == ()


def test_debian_open_modules_from_archive_bring_gsp_firmware() -> None:
    plan = plan_for("debian-13", ["RTX 4090"], pins={"driver_source": "distribution"})
    assert "firmware-nvidia-gsp" in plan.driver.packages and "nvidia-open-kernel-dkms" in plan.driver.packages
    assert plan.jax.extra == "cuda12"  # R550 is below the CUDA 13 floor (580)


def test_ubuntu_datacenter_parts_take_server_packages_and_signed_modules() -> None:
    plan = plan_for("ubuntu-24.04", ["H100", "H100"])
    assert plan.driver.packages == ("linux-modules-nvidia-580-server-open-generic", "nvidia-driver-580-server-open")
    assert plan.secure_boot.signed_modules and plan.secure_boot.mok_enrollment == "no"


def test_ubuntu_geforce_takes_desktop_packages() -> None:
    plan = plan_for("ubuntu-24.04", ["RTX 4090"])
    assert plan.driver.packages == ("linux-modules-nvidia-580-open-generic", "nvidia-driver-580-open")
    assert plan.cudnn.packages == ("cudnn9-cuda-13",)
    assert plan.nccl.packages == ("libnccl2", "libnccl-dev")
    assert plan.nvidia_repository is not None and plan.nvidia_repository.used_for == ("cuda",)


def test_pinned_595_uses_renamed_packages_from_nvidia_repo_on_debian() -> None:
    plan = plan_for("debian-12", ["RTX 4090"], pins={"driver_branch": 595, "driver_flavor": "proprietary"})
    assert plan.driver.packages == ("nvidia-driver-pinning-595", "linux-headers-amd64", "cuda-drivers")


def test_xps15_gets_pascal_answer_and_prime_on_demand() -> None:
    plan = plan_for("ubuntu-24.04", ["10de:1c8c"], machine="XPS 15 9570")
    assert plan.machine is not None and plan.machine.profile == "xps15-optimus"
    assert plan.laptop.prime == "on-demand"
    assert plan.driver.flavor == "proprietary" and plan.driver.branch == "580"
    assert any("runtime D3" in w for w in plan.warnings)


def test_xps13_cpu_only_stack() -> None:
    plan = plan_for("ubuntu-24.04", [], machine="XPS 13 9370")
    assert plan.driver.branch is None and plan.cuda.version is None and plan.jax.extra is None
    assert plan.pytorch.variant == "cpu" and plan.pytorch.index_url == "https://download.pytorch.org/whl/cpu"
    assert plan.laptop.mem_sleep_default == "deep" and plan.laptop.prime is None
    assert plan.secure_boot.mok_enrollment == "no"
    assert plan.reboot_required  # the kernel command line changes
    extravars = plan.to_extravars()
    assert extravars["nvidia_driver_enabled"] is False and extravars["cuda_enabled"] is False
    assert extravars["laptop_enabled"] is True and extravars["dl_stack_enabled"] is True


def test_no_gpu_and_no_machine_is_cpu_only_without_reboot() -> None:
    plan = plan_for("debian-13", [])
    assert plan.pytorch.variant == "cpu" and not plan.reboot_required and plan.machine is None


def test_end_of_life_in_the_future_falls_back_with_a_warning() -> None:
    """In 2029 R580 is past end of life, yet still the only branch for Pascal: keep it, say so."""
    request = request_offline("ubuntu-24.04", ["GTX 1080 Ti"], as_of=date(2029, 1, 15))
    plan = resolve_stack(request)
    assert plan.driver.branch == "580"
    assert any("R580 is past its end of life June 2028" in w for w in plan.warnings)


def test_uncatalogued_gpu_from_codename_is_planned_with_a_warning() -> None:
    # an engineering sample: pci.ids names it, NVIDIA's data does not list it
    plan = plan_for("ubuntu-24.04", ["TU102 [GeForce RTX 2080 Ti Engineering Sample]"])
    assert plan.gpus[0].identified_by == "pci_ids" and plan.gpus[0].architecture == "Turing"
    assert plan.gpus[0].compute_capability == "7.5"  # every Turing chip is 7.5 (architectures.yaml, chips)
    assert any("not in dlsetup's catalogue" in w and "TU102" in w for w in plan.warnings)


def test_codename_with_two_compute_capabilities_serves_both() -> None:
    # GB110 (B300) is Blackwell, but dlsetup's data gives no compute capability for that chip
    plan = plan_for("ubuntu-24.04", ["GB110 [B300 SXM6 AC]"])
    assert plan.gpus[0].compute_capability is None
    assert plan.pytorch.variant == "cu130"  # has sm_100 and sm_120


def test_unknown_gpu_names_the_id() -> None:
    with pytest.raises(UnsupportedError) as caught:
        plan_for("ubuntu-24.04", ["RTX 4090", "10de:ffff"])
    assert "10de:ffff" in caught.value.message and caught.value.kind == "unknown_gpu"


# --- live facts --------------------------------------------------------------------------------------------------


def host_facts(os_id: str, version: str, gpus: list[dict[str, Any]], **extra: Any) -> HostFacts:
    facts: dict[str, Any] = {
        "os": {
            "id": os_id,
            "version": version,
            "codename": None,
            "kernel": extra.pop("kernel", None),
            "pretty_name": f"{os_id} {version}",
        },
        "machine": {"vendor": None, "product": None, "virtualization": None, **extra.pop("machine", {})},
        "gpus": gpus,
        "driver": extra.pop(
            "driver", {"loaded": False, "version": None, "cuda_version": None, "kernel_module": None, "error": None}
        ),
        "warnings": [],
        "cpu": {"model": None, "cores": None, "threads": None},
        "memory_mib": None,
        "disks": [],
    }
    facts.update(extra)
    return HostFacts.from_dict(facts)


def gpu_fact(pci_id: str, name: str | None = None, cc: str | None = None, pci_name: str | None = None):
    return {
        "index": 0,
        "pci_bus_id": "0000:01:00.0",
        "pci_id": pci_id,
        "name": name,
        "compute_capability": cc,
        "pci_name": pci_name,
        "visible_to_driver": cc is not None,
        # what planning does not read
        "subsystem_id": None,
        "pci_class": "0x030000",
        "memory_mib": None,
        "persistence_mode": None,
        "kernel_driver": None,
        "pcie": dict.fromkeys(
            ("gen_current", "gen_max", "width_current", "width_max", "slot_gen_max", "slot_width_max")
        ),
    }


def test_facts_debian12_two_1080ti() -> None:
    facts = host_facts(
        "debian", "12", [gpu_fact("10de:1b06", "NVIDIA GeForce GTX 1080 Ti", "6.1")] * 2, kernel="6.1.0-26-amd64"
    )
    plan = resolve_stack(request_from_facts(facts, {}, as_of=AS_OF))
    assert (plan.driver.source, plan.driver.branch, plan.driver.flavor) == ("nvidia", "580", "proprietary")
    assert plan.reboot_required


def test_facts_same_driver_loaded_needs_no_reboot() -> None:
    driver = {"loaded": True, "version": "580.159.04", "cuda_version": "13.0", "kernel_module": "open", "error": None}
    facts = host_facts(
        "ubuntu", "24.04", [gpu_fact("10de:2335", "NVIDIA H200", "9.0")], driver=driver, kernel="6.8.0-45-generic"
    )
    plan = resolve_stack(request_from_facts(facts, None, as_of=AS_OF))
    assert (plan.driver.branch, plan.driver.flavor) == ("580", "open")
    assert not plan.reboot_required


def test_facts_hwe_kernel_selects_hwe_metapackage() -> None:
    facts = host_facts("ubuntu", "24.04", [gpu_fact("10de:2684")], kernel="6.11.0-29-generic")
    plan = resolve_stack(request_from_facts(facts, None, as_of=AS_OF))
    assert plan.driver.packages[0] == "linux-modules-nvidia-580-open-generic-hwe-24.04"


def test_facts_cloud_kernel_flavour() -> None:
    facts = host_facts("ubuntu", "24.04", [gpu_fact("10de:2335")], kernel="6.8.0-1015-aws")
    plan = resolve_stack(request_from_facts(facts, None, as_of=AS_OF))
    assert plan.driver.packages[0] == "linux-modules-nvidia-580-server-open-aws"


def test_facts_uncatalogued_id_uses_reported_cc_then_codename() -> None:
    # 10de:1e2e: an RTX 2080 Ti engineering sample pci.ids lists and NVIDIA's data does not
    by_cc = host_facts("ubuntu", "24.04", [gpu_fact("10de:1e2e", "NVIDIA GeForce RTX 2080 Ti", "7.5")])
    plan = resolve_stack(request_from_facts(by_cc, None, as_of=AS_OF))
    assert plan.gpus[0].identified_by == "compute_capability" and plan.driver.flavor == "open"
    pci_name = "TU102 [GeForce RTX 2080 Ti Engineering Sample]"
    by_name = host_facts("ubuntu", "24.04", [gpu_fact("10de:1e2e", pci_name=pci_name)])
    plan = resolve_stack(request_from_facts(by_name, None, as_of=AS_OF))
    assert plan.gpus[0].identified_by == "pci_ids" and plan.gpus[0].name == "GeForce RTX 2080 Ti Engineering Sample"
    assert any("TU102" in w for w in plan.warnings)


def test_facts_unknown_id_without_codename_is_reported() -> None:
    facts = host_facts("debian", "13", [gpu_fact("10de:2f00")])
    with pytest.raises(UnsupportedError) as caught:
        resolve_stack(request_from_facts(facts, None, as_of=AS_OF))
    assert caught.value.kind == "unknown_gpu" and "10de:2f00" in caught.value.message


def test_facts_xps13_machine_profile_and_point_release() -> None:
    facts = host_facts("debian", "12.7", [], machine={"vendor": "Dell Inc.", "product": "XPS 13 9370"})
    plan = resolve_stack(request_from_facts(facts, None, as_of=AS_OF))
    assert plan.os == "debian-12" and plan.machine is not None and plan.machine.profile == "xps13-9370"
    assert plan.laptop.mem_sleep_default == "deep"


def test_facts_xps15_with_gpu_hidden_warns() -> None:
    facts = host_facts("ubuntu", "24.04", [], machine={"vendor": "Dell Inc.", "product": "XPS 15 9570"})
    plan = resolve_stack(request_from_facts(facts, None, as_of=AS_OF))
    assert plan.pytorch.variant == "cpu" and plan.laptop.prime is None
    assert any("none is on PCI" in w for w in plan.warnings)


def test_facts_unsupported_os() -> None:
    facts = host_facts("fedora", "40", [gpu_fact("10de:2684")])
    with pytest.raises(UnsupportedError) as caught:
        resolve_stack(request_from_facts(facts, None, as_of=AS_OF))
    assert caught.value.kind == "unsupported_os"
    with pytest.raises(UnsupportedError):
        request_from_facts(host_facts("debian", "", []), None)


def test_facts_pins_are_validated() -> None:
    facts = host_facts("ubuntu", "24.04", [gpu_fact("10de:1b06")])
    with pytest.raises(PlanInputError) as caught:
        request_from_facts(facts, {"driver_brnach": 580})
    assert caught.value.kind == "bad_pin" and "driver_brnach" in caught.value.message


# --- contracts -------------------------------------------------------------------------------------------------

PLAN_KEYS = {
    "os",
    "gpus",
    "machine",
    "driver",
    "cuda",
    "cudnn",
    "nccl",
    "pytorch",
    "jax",
    "laptop",
    "reboot_required",
    "secure_boot",
    "nvidia_repository",
    "reasons",
    "wheelhouse",
    "warnings",
}
EXTRAVARS = {
    "nvidia_driver_enabled",
    "nvidia_driver_source",
    "nvidia_driver_branch",
    "nvidia_driver_flavor",
    "nvidia_driver_packages",
    "nvidia_driver_pin_packages",
    "nvidia_driver_other_flavor_packages",
    "nvidia_driver_branch_named_packages",
    "nvidia_driver_version",
    "cuda_enabled",
    "cuda_source",
    "cuda_version",
    "cuda_packages",
    "cuda_cudnn_version",
    "dl_stack_enabled",
    "dl_stack_torch_version",
    "dl_stack_torch_index_url",
    "laptop_profile",
    "dl_stack_jax_extra",
    "dl_stack_torch_variant",
    "dl_stack_expected_gpus",
    "dl_stack_index_url",
    "dl_stack_wheelhouse",
    "nvidia_driver_repo_url",
    "nvidia_driver_repo_key_file",
    "nvidia_driver_repo_key_fingerprint",
    "cuda_repo_url",
    "laptop_enabled",
    "laptop_prime_mode",
    "laptop_mem_sleep_default",
    "dlsetup_plan",
}


def test_plan_json_shape() -> None:
    plan = plan_for("ubuntu-24.04", ["10de:1c8c"], machine="XPS 15 9570").to_dict()
    assert set(plan) == PLAN_KEYS
    assert json.loads(json.dumps(plan)) == plan
    assert set(plan["gpus"][0]) >= {"pci_id", "name", "architecture", "compute_capability"}
    assert set(plan["machine"]) == {"vendor", "product", "profile"}
    assert set(plan["driver"]) >= {"source", "branch", "flavor", "packages"}
    assert isinstance(plan["driver"]["branch"], str)
    assert set(plan["cuda"]) >= {"version", "source", "packages"}
    assert set(plan["cudnn"]) >= {"version", "packages"} and set(plan["nccl"]) >= {"version", "packages"}
    assert set(plan["pytorch"]) >= {"version", "variant", "index_url"}
    assert set(plan["jax"]) == {"extra", "index_url"} and set(plan["laptop"]) == {"prime", "mem_sleep_default"}
    assert set(plan["secure_boot"]) == {"signed_modules", "mok_enrollment", "note"}
    assert plan["secure_boot"]["mok_enrollment"] in ("if_secure_boot", "no")
    assert all(set(r) == {"topic", "text", "source"} for r in plan["reasons"])
    assert all(isinstance(w, str) for w in plan["warnings"])


def test_extravars_match_the_role_variable_table() -> None:
    plan = plan_for("debian-12", ["RTX 4090"])
    extravars = plan.to_extravars()
    assert set(extravars) == EXTRAVARS
    assert extravars["nvidia_driver_enabled"] is True
    assert extravars["nvidia_driver_branch"] == "580" and extravars["nvidia_driver_source"] == "nvidia"
    assert extravars["cuda_packages"] == ["cuda-toolkit-13-0", "cudnn9-cuda-13", "libnccl2", "libnccl-dev"]
    # the planned cuDNN is kept (the one PyTorch's CUDA 13 wheels pin); a pre-Turing rig keeps 9.10.2
    assert extravars["cuda_cudnn_version"] == "9.24.0"
    assert plan_for("debian-12", ["GTX 1080 Ti"]).to_extravars()["cuda_cudnn_version"] == "9.10.2"
    assert extravars["dl_stack_torch_index_url"] == "https://download.pytorch.org/whl/cu130"
    assert extravars["dl_stack_jax_extra"] == "cuda13" and extravars["dl_stack_torch_variant"] == "cu130"
    assert extravars["dl_stack_expected_gpus"] == 1
    assert extravars["laptop_enabled"] is False
    assert extravars["dlsetup_plan"] == plan.to_dict()


def test_extravars_of_a_cpu_only_laptop_are_explicit() -> None:
    """Nothing is left for a role to decide again: no null, no missing laptop choice."""
    plan = plan_for("debian-12", [], machine="XPS 13 9370")
    extravars = plan.to_extravars()
    assert extravars["nvidia_driver_enabled"] is False and "nvidia_driver_branch" not in extravars
    assert extravars["cuda_enabled"] is False and "cuda_packages" not in extravars
    assert extravars["laptop_profile"] == "xps13-9370" and extravars["laptop_mem_sleep_default"] == "deep"
    assert extravars["laptop_prime_mode"] == ""
    # the plan's CPU JAX is installed too (plain jax), and there is no GPU for the smoke test to count
    assert extravars["dl_stack_jax_extra"] == "cpu" and extravars["dl_stack_torch_variant"] == "cpu"
    assert extravars["dl_stack_expected_gpus"] == 0
    assert None not in [v for k, v in extravars.items() if k != "dlsetup_plan"]


def test_error_payload_kinds() -> None:
    with pytest.raises(UnsupportedError) as unsupported:
        plan_for("ubuntu-24.04", ["GTX 780"])
    assert unsupported.value.payload()["error"]["kind"] == "no_supported_stack"
    with pytest.raises(ConfigError) as conflict:
        plan_for("ubuntu-24.04", ["GTX 1080 Ti"], pins={"driver_branch": 590})
    assert conflict.value.payload() == {
        "error": {"kind": "pin_conflict", "message": conflict.value.message, "hint": conflict.value.hint}
    }
    assert ConfigError("x").payload()["error"]["kind"] == "bad_input"


def test_no_package_archive_host_in_any_plan() -> None:
    for _, os_name, gpus, machine, pins, expected in CASES:
        if isinstance(expected, Fails):
            continue
        plan = plan_for(os_name, gpus, machine, pins).to_dict()
        plan.pop("reasons")  # where the facts come from (docs), not where the plan installs from
        text = json.dumps(plan)
        urls = {u.split("/")[2] for u in text.split('"') if u.startswith("https://")}
        # the public defaults only: NVIDIA's CUDA repository and PyTorch's index; the distribution's archive and the
        # general package index are the host's own configuration
        assert urls <= {"download.pytorch.org", "developer.download.nvidia.com"}, urls


def test_render_shows_choices_reasons_and_warnings() -> None:
    console = Console(record=True, width=200)
    render_plan(console, plan_for("ubuntu-24.04", ["GTX 1080 Ti", "GTX 1080 Ti"]))
    text = console.export_text()
    assert "2x NVIDIA GeForce GTX 1080 Ti [10de:1b06]" in text
    assert "R580 proprietary from distribution" in text
    assert "torch==2.14.0 (cu126)" in text
    assert "driver.flavor:" not in text and "(--explain: why each choice, and its sources)" in text  # short
    assert "warnings" in text and "last driver branch for Pascal" in text


def test_explain_adds_the_reasons_and_sources_a_user_can_open() -> None:
    console = Console(record=True, width=400)
    render_plan(console, plan_for("ubuntu-24.04", ["GTX 1080 Ti", "GTX 1080 Ti"]), explain=True)
    text = console.export_text()
    assert "why" in text and "driver.flavor:" in text
    sources = [line.strip() for line in text.splitlines() if line.strip().startswith("source: ")]
    assert len([line for line in sources if "https://" in line]) >= len(sources) * 0.7, sources
    assert not re.search(r"\[(URL|MIRROR|PYPI|DEV|DEB-)", text), "a source tag, not an address"
    assert "research" not in text and "reference machine" not in text
