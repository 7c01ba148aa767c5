"""Check rules over facts shaped like the module's output. Values are those of real captures: the H200 host
(../shared/fixtures/hosts/h200-ubuntu2404), the 2x RTX 4090 x8/x8 board and the RTX 2060 trained down to x8
(../shared/fixtures/collected)."""

import copy
from typing import Any

import pytest

from dlsetup.facts.baseline import HardwareBaseline
from dlsetup.facts.model import HostFacts
from dlsetup.verify import checks
from dlsetup.verify.defaults import with_defaults
from dlsetup.verify.expect import FROM_BASELINE, Expectations
from dlsetup.verify.probes import JaxProbe, TorchProbe

# What the checks do not look at, filled in so that the facts are complete (the model wants every key).
UNUSED_GPU = {
    "subsystem_id": None,
    "pci_class": "0x030200",
    "pci_name": None,
    "persistence_mode": True,
    "kernel_driver": "nvidia",
}
UNUSED_HOST = {
    "machine": {"vendor": None, "product": None, "virtualization": "vm"},
    "cpu": {"model": None, "cores": None, "threads": None},
    "warnings": [],
}
UNUSED_OS = {"codename": None, "kernel": None, "pretty_name": None}
UNUSED_DISK = {"model": None, "size_gib": None, "transport": None}

H200 = {
    "os": {"id": "ubuntu", "version": "24.04"},
    "memory_mib": 257000,
    "disks": [{"name": "vda", "ssd": True, "rotational": False, "holds": ["/"]}],
    "gpus": [
        {
            "index": 0,
            "pci_bus_id": "0000:00:06.0",
            "pci_id": "10de:2335",
            "name": "NVIDIA H200",
            "memory_mib": 143771,
            "compute_capability": "9.0",
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
    "driver": {"loaded": True, "version": "580.159.04", "cuda_version": "13.0", "kernel_module": "open", "error": None},
}


def typed(facts: dict[str, Any]) -> HostFacts:
    """The partial facts above as the model of a whole host object."""
    whole = {**UNUSED_HOST, **copy.deepcopy(facts)}
    whole["os"] = {**UNUSED_OS, **whole["os"]}
    whole["disks"] = [{**UNUSED_DISK, **d} for d in whole["disks"]]
    whole["gpus"] = [{**UNUSED_GPU, **g} for g in whole["gpus"]]
    return HostFacts.from_dict(whole)


H200_RAW = H200
H200 = typed(H200_RAW)


def gpu(bus, pcie, **extra):
    base = copy.deepcopy(H200_RAW["gpus"][0])
    base.update({"pci_bus_id": bus, "name": "NVIDIA GeForce RTX 4090", "pci_id": "10de:2684", "pcie": pcie})
    base.update(extra)
    return base


def with_gpus(*gpus, error=None, **driver):
    facts = copy.deepcopy(H200_RAW)
    facts["gpus"] = list(gpus)
    facts["driver"].update(driver)
    if error is not None:
        facts["driver"]["error"] = error
    return typed(facts)


def test_h200_passes_the_device_check_expectations():
    exp = Expectations(
        gpu_count=1,
        gpu_memory_min_mib=80 * 1024,
        pcie_width_min=16,
        pcie_gen_min=5,
        driver_branch="580",
        cuda_version="12.6",
        driver_flavor="open",
        root_disk_ssd=True,
    )
    results = [
        checks.check_gpu_count(H200, exp),
        checks.check_gpu_visible(H200),
        checks.check_gpu_memory(H200, exp),
        checks.check_pcie_width(H200, exp),
        checks.check_pcie_gen(H200, exp),
        checks.check_driver_loaded(H200),
        checks.check_driver_branch(H200, exp),
        checks.check_driver_cuda(H200, exp),
        checks.check_driver_flavor(H200, exp),
        checks.check_root_disk(H200, exp),
    ]
    assert [r.status for r in results] == ["pass"] * len(results), [r.message for r in results]


def test_count_mismatch_fails_naming_what_is_there():
    r = checks.check_gpu_count(H200, Expectations(gpu_count=2))
    assert r.status == "fail"
    assert "0000:00:06.0" in r.message and r.actual == 1


def test_gpu_on_pci_not_listed_by_driver_is_named():
    lost = gpu("0000:84:00.0", H200_RAW["gpus"][0]["pcie"], visible_to_driver=False, index=None)
    facts = with_gpus(H200_RAW["gpus"][0], lost)
    assert checks.check_gpu_count(facts, Expectations(gpu_count=2)).status == "fail"
    r = checks.check_gpu_visible(facts)
    assert r.status == "fail" and "0000:84:00.0" in r.message


def test_slot_gives_x8_versus_trained_down():
    # 2x RTX 4090 on a board that bifurcates x16 into x8/x8: the upstream ports are x8
    x8_slot = gpu(
        "0000:01:00.0",
        {"gen_current": 4, "gen_max": 4, "width_current": 8, "width_max": 16, "slot_gen_max": 4, "slot_width_max": 8},
    )
    # RTX 2060 whose x16 link trained down to x8 in an x16 slot
    trained = gpu(
        "0000:02:00.0",
        {"gen_current": 3, "gen_max": 3, "width_current": 8, "width_max": 16, "slot_gen_max": 3, "slot_width_max": 16},
    )
    strict = checks.check_pcie_width(with_gpus(x8_slot, trained), Expectations(pcie_width_min=16))
    assert strict.status == "fail"
    first, second = strict.message.split("; ")
    assert "0000:01:00.0" in first and "slot gives only x8" in first and "lane budget" in first
    assert "0000:02:00.0" in second and "trained down" in second and "reseat" in second
    relaxed = checks.check_pcie_width(with_gpus(x8_slot), Expectations(pcie_width_min=8))
    assert relaxed.status == "warn"  # meets x8, but says why it is not x16
    no_expect = checks.check_pcie_width(with_gpus(trained), Expectations())
    assert no_expect.status == "warn" and "trained down" in no_expect.message


def test_idle_gen_is_a_warning_and_under_load_a_failure():
    idle = gpu(
        "0000:01:00.0",
        {"gen_current": 1, "gen_max": 3, "width_current": 16, "width_max": 16, "slot_gen_max": 3, "slot_width_max": 16},
    )
    facts = with_gpus(idle)
    assert checks.check_pcie_gen(facts, Expectations(pcie_gen_min=3)).status == "warn"
    loaded_ok = checks.check_pcie_gen(facts, Expectations(pcie_gen_min=3), {"0000:01:00.0": 3})
    assert loaded_ok.status == "pass"
    loaded_bad = checks.check_pcie_gen(facts, Expectations(pcie_gen_min=3), {"0000:01:00.0": 2})
    assert loaded_bad.status == "fail" and "under load" in loaded_bad.message
    slot_gen2 = gpu(
        "0000:01:00.0",
        {"gen_current": 2, "gen_max": 3, "width_current": 16, "width_max": 16, "slot_gen_max": 2, "slot_width_max": 16},
    )
    assert checks.check_pcie_gen(with_gpus(slot_gen2), Expectations(pcie_gen_min=3)).status == "fail"


def test_driver_errors_carry_kind_and_hint():
    error = {
        "kind": "version_mismatch",
        "message": "Failed to initialize NVML: Driver/library version mismatch",
        "hint": "reboot",
    }
    facts = with_gpus(H200_RAW["gpus"][0], loaded=False, error=error)
    r = checks.check_driver_loaded(facts)
    assert r.status == "fail" and "version_mismatch" in r.message and "reboot" in r.message


def test_no_gpu_host_is_a_clear_result_not_a_failure():
    facts = with_gpus(loaded=False, version=None, cuda_version=None, kernel_module=None)
    assert checks.check_gpu_count(facts, Expectations()).message.startswith("no NVIDIA GPU")
    assert checks.check_driver_loaded(facts).status == "skip"
    assert checks.check_gpu_count(facts, Expectations(gpu_count=0)).status == "pass"
    assert checks.check_gpu_model(facts, Expectations(gpu_model="1080")).status == "fail"


def test_model_matches_name_or_pci_id():
    assert checks.check_gpu_model(H200, Expectations(gpu_model="H200")).status == "pass"
    assert checks.check_gpu_model(H200, Expectations(gpu_model="10de:2335")).status == "pass"
    assert checks.check_gpu_model(H200, Expectations(gpu_model="H100")).status == "fail"


def test_memory_below_minimum():
    r = checks.check_gpu_memory(H200, Expectations(gpu_memory_min_mib=150000))
    assert r.status == "fail" and "143771" in r.message


# torch 2.11.0+cu130 on the H200, as captured (torch-pcie-bandwidth.json)
H200_PROBE = {
    "torch": "2.11.0+cu130",
    "cuda_build": "13.0",  # the capture's "cuda": torch.version.cuda
    "cuda_available": True,
    "arch_list": ["sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120"],
    "devices": [
        {
            "index": 0,
            "name": "NVIDIA H200",
            "cc": [9, 0],
            "pci_bus_id": "0000:00:06.0",
            "matmul_ok": True,
            "h2d_gbps": 55.13,
            "load_link": {"gen": 5, "width": 16},
        }
    ],
}


def torch(probe: dict[str, Any]) -> TorchProbe:
    return TorchProbe.parse(probe)


def test_pytorch_on_h200_passes():
    exp = Expectations(framework="pytorch", pytorch_version="2.11.0", pytorch_variant="cu130")
    results = {r.id: r for r in checks.check_pytorch(H200, exp, torch(H200_PROBE))}
    assert {k: v.status for k, v in results.items()} == {
        "framework.pytorch": "pass",
        "framework.pytorch.version": "pass",
        "framework.pytorch.variant": "pass",
        "framework.pytorch.devices": "pass",
        "framework.pytorch.arch": "pass",
        "framework.pytorch.matmul": "pass",
        "framework.pytorch.bandwidth": "pass",
    }


ARCH = "framework.pytorch.arch"


def test_default_wheel_has_no_code_for_a_1080ti():
    ti = gpu("0000:01:00.0", H200_RAW["gpus"][0]["pcie"], name="NVIDIA GeForce GTX 1080 Ti")
    probe = copy.deepcopy(H200_PROBE)
    probe["devices"][0].update({"name": "NVIDIA GeForce GTX 1080 Ti", "cc": [6, 1], "pci_bus_id": "0000:01:00.0"})
    arch = {r.id: r for r in checks.check_pytorch(with_gpus(ti), Expectations(), torch(probe))}[ARCH]
    assert arch.status == "fail" and "sm_61" in arch.message
    # the cu126 build carries sm_60, which runs on 6.1 (same major)
    probe["arch_list"] = ["sm_50", "sm_60", "sm_70", "sm_75", "sm_80", "sm_86", "sm_90"]
    arch = {r.id: r for r in checks.check_pytorch(with_gpus(ti), Expectations(), torch(probe))}[ARCH]
    assert arch.status == "pass"


def test_slow_copy_fails_bandwidth():
    probe = copy.deepcopy(H200_PROBE)
    probe["devices"][0]["h2d_gbps"] = 19.3  # pageable-memory speed on Gen5 x16
    bw = {r.id: r for r in checks.check_pytorch(H200, Expectations(), torch(probe))}["framework.pytorch.bandwidth"]
    assert bw.status == "fail" and "Gen5 x16" in bw.message
    lenient = Expectations(pcie_bandwidth_min_ratio=0.3)
    bw = {r.id: r for r in checks.check_pytorch(H200, lenient, torch(probe))}["framework.pytorch.bandwidth"]
    assert bw.status == "pass"


@pytest.mark.parametrize(("wanted", "status"), [("pytorch", "fail"), (None, "skip")])
def test_missing_pytorch(wanted, status):
    res = checks.check_pytorch(H200, Expectations(framework=wanted), torch({"torch": None, "error": "No module"}))
    assert [r.status for r in res] == [status]


def test_jax():
    assert checks.check_jax(Expectations(framework="jax"), JaxProbe.parse({"jax": None}), 1).status == "fail"
    assert checks.check_jax(Expectations(), JaxProbe.parse({"jax": "0.11.2", "gpu_devices": 1}), 1).status == "pass"
    assert checks.check_jax(Expectations(), JaxProbe.parse({"jax": "0.11.2", "gpu_devices": 0}), 2).status == "fail"


def test_summarize():
    assert checks.summarize([checks.CheckResult("a", "warn", None, None, "")])
    assert not checks.summarize([checks.CheckResult("a", "fail", None, None, "")])


def test_pytorch_version_and_variant_mismatches():
    probe = torch(H200_PROBE)  # 2.11.0+cu130, torch.version.cuda 13.0
    found = {
        r.id: r
        for r in checks.check_pytorch(H200, Expectations(pytorch_version="2.11", pytorch_variant="cu126"), probe)
    }
    assert found["framework.pytorch"].status == "pass"  # a PyTorch build expected: PyTorch is
    assert found["framework.pytorch.version"].status == "pass"  # 2.11 matches any 2.11.x
    variant = found["framework.pytorch.variant"]
    assert (variant.status, variant.expected, variant.actual) == ("fail", "cu126", "cu130")
    older = {r.id: r for r in checks.check_pytorch(H200, Expectations(pytorch_version="2.10.0"), probe)}
    assert (
        older["framework.pytorch.version"].status == "fail"
        and "expected 2.10.0" in older["framework.pytorch.version"].message
    )
    # a wheel without a local label (PyPI's): the variant comes from torch.version.cuda
    pypi = torch({**H200_PROBE, "torch": "2.11.0"})
    assert checks.torch_variant(pypi) == "cu130"
    assert checks.torch_variant(torch({**H200_PROBE, "torch": "2.11.0", "cuda_build": None})) == "cpu"
    # a label that torch.version.cuda contradicts is not the wheel it claims to be
    odd = torch({**H200_PROBE, "cuda_build": "12.6"})
    bad = {r.id: r for r in checks.check_pytorch(H200, Expectations(pytorch_variant="cu130"), odd)}
    assert bad["framework.pytorch.variant"].status == "fail"


def test_expected_from_names_the_origin():
    exp = Expectations(gpu_count=1, driver_branch="580", origins={"gpu_count": "PCI", "driver_branch": "--expect"})
    found = {r.id: r for r in checks.evaluate(H200, exp, torch(H200_PROBE), None)}
    assert found["gpu.count"].expected_from == "PCI"
    assert found["driver.branch"].expected_from == "--expect"
    assert found["gpu.visible"].expected_from == "PCI"
    assert found["framework.pytorch.bandwidth"].expected_from == "default"
    assert found["driver.flavor"].expected_from is None  # nothing expected
    assert found["framework.pytorch"].expected is None and found["framework.pytorch"].expected_from is None


# -- against the hardware baseline (the hardware of the last verified run) -------------------------------------
def test_count_names_the_gpus_missing_since_the_baseline():
    second = gpu("0000:84:00.0", H200_RAW["gpus"][0]["pcie"], index=1)
    baseline = HardwareBaseline.of(with_gpus(H200_RAW["gpus"][0], second))
    # no expectation given: the baseline's count is expected
    expect = with_defaults(Expectations(), H200, None, baseline)
    assert expect.gpu_count == 2 and expect.origin("gpu_count") == FROM_BASELINE
    r = checks.check_gpu_count(H200, expect, baseline)
    assert r.status == "fail" and r.expected == 2 and r.actual == 1
    assert "missing since the baseline" in r.message and "NVIDIA GeForce RTX 4090 at 0000:84:00.0" in r.message
    assert "--accept-hardware" in r.message
    # without a baseline, PCI's own count is expected (and met)
    assert checks.check_gpu_count(H200, with_defaults(Expectations(), H200, None, None)).status == "pass"


def test_a_link_narrower_than_the_baseline_fails_and_says_why():
    full = {"gen_current": 3, "gen_max": 3, "width_current": 16, "width_max": 16}
    full |= {"slot_gen_max": 3, "slot_width_max": 16}
    trained = {**full, "width_current": 8}
    baseline = HardwareBaseline.of(with_gpus(gpu("0000:02:00.0", full)))
    now = with_gpus(gpu("0000:02:00.0", trained))
    assert checks.check_pcie_width(now, Expectations()).status == "warn"  # without a baseline: a warning
    r = checks.check_pcie_width(now, Expectations(), baseline)
    assert r.status == "fail"
    assert "runs x8, narrower than x16 (the baseline had x16)" in r.message and "trained down" in r.message
    # the generation the link can reach fell (a BIOS setting): a failure that names the baseline's
    slower = with_gpus(gpu("0000:02:00.0", {**full, "slot_gen_max": 2, "gen_current": 2}))
    g = checks.check_pcie_gen(slower, Expectations(), None, baseline)
    assert g.status == "fail" and "Gen2 at most" in g.message and "the baseline had Gen3" in g.message
    # another GPU in that slot is not compared with the one that was there
    other = with_gpus(gpu("0000:02:00.0", trained, pci_id="10de:1f08"))
    assert checks.check_pcie_width(other, Expectations(), baseline).status == "warn"
