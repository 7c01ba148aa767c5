"""Framework checks: PyTorch imports (its version and wheel variant), sees every GPU, runs on each, has code for
each, moves data at link speed; JAX."""

import pytest

PYTORCH_CHECKS = [
    "framework.pytorch",
    "framework.pytorch.version",
    "framework.pytorch.variant",
    "framework.pytorch.devices",
    "framework.pytorch.arch",
    "framework.pytorch.matmul",
    "framework.pytorch.bandwidth",
]


@pytest.mark.parametrize("check_id", PYTORCH_CHECKS)
def test_pytorch(check, check_id):
    check(check_id)


def test_jax(check):
    check("framework.jax")
