"""GPU checks: count, visibility, model, memory, PCIe width and generation."""

from dlsetup.verify import checks
from dlsetup.verify.checks import CheckResult


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
    loaded = torch_probe.loaded_gens()
    if load_required and not loaded and hw_facts.gpus:
        check(
            CheckResult(
                "gpu.pcie_gen",
                "skip",
                expectations.pcie_gen_min,
                None,
                "--load needs PyTorch with CUDA on the host to generate load; "
                + (torch_probe.error or "no GPU load could be generated"),
            )
        )
    check(checks.check_pcie_gen(hw_facts, expectations, loaded or None))
