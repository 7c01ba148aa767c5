"""GPU checks: count, visibility, model, memory, PCIe width and generation."""

from dlsetup import checks
from dlsetup.checks import CheckResult


def test_gpu_count(hw_facts, expectations, check):
    check(checks.check_gpu_count(hw_facts, expectations))


def test_gpu_visible(hw_facts, check):
    check(checks.check_gpu_visible(hw_facts))


def test_gpu_model(hw_facts, expectations, check):
    check(checks.check_gpu_model(hw_facts, expectations))


def test_gpu_memory(hw_facts, expectations, check):
    check(checks.check_gpu_memory(hw_facts, expectations))


def test_gpu_pcie_width(hw_facts, expectations, check):
    check(checks.check_pcie_width(hw_facts, expectations))


def test_gpu_pcie_gen(hw_facts, expectations, check, torch_probe, load_required):
    loaded = {
        str(d.get("pci_bus_id")): (d.get("load_link") or {}).get("gen")
        for d in torch_probe.get("devices") or []
        if d.get("pci_bus_id")
    }
    loaded = {bus: gen for bus, gen in loaded.items() if gen is not None}
    if load_required and not loaded and hw_facts.get("gpus"):
        check(
            CheckResult(
                "gpu.pcie_gen", "skip", expectations.pcie_gen_min, None,
                "--load needs PyTorch with CUDA on the host to generate load; "
                + (torch_probe.get("error") or "no GPU load could be generated"),
            )
        )
    check(checks.check_pcie_gen(hw_facts, expectations, loaded or None))
