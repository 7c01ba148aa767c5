"""Framework checks: PyTorch sees every GPU, runs on each, has code for each, moves data at link speed; JAX."""

import pytest

from dlsetup.verify import checks
from dlsetup.verify.checks import CheckResult

PYTORCH_CHECKS = [
    "framework.pytorch",
    "framework.pytorch.devices",
    "framework.pytorch.arch",
    "framework.pytorch.matmul",
    "framework.pytorch.bandwidth",
]


@pytest.mark.parametrize("check_id", PYTORCH_CHECKS)
def test_pytorch(hw_facts, expectations, torch_probe, check, check_id):
    results = {r.id: r for r in checks.check_pytorch(hw_facts, expectations, torch_probe)}
    if check_id not in results:
        # an earlier step decided it: PyTorch missing, no GPU, or CUDA unavailable
        decided = [r for r in results.values() if r.status in ("fail", "skip")]
        why = decided[-1].message if decided else "not applicable"
        check(CheckResult(check_id, "skip", None, None, f"cannot run: {why}"))
        return
    check(results[check_id])


def test_jax(hw_facts, expectations, jax_probe, check):
    check(checks.check_jax(expectations, jax_probe, len(hw_facts.visible_gpus)))
