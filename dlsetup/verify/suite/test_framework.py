"""Framework checks: PyTorch imports (its version and wheel variant), sees every GPU, runs on each, has code for
each, moves data at link speed; JAX; the venv holds the build the plan chose (``framework.build``)."""

import pytest

from dlsetup.verify.checks import CheckResult
from dlsetup.verify.expect import FROM_RECORD
from dlsetup.verify.probes import PlannedBuild, judge_build

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


def test_build(check, venv_path, host_record, build_record, expectations, torch_probe, jax_probe):
    """The torch and jax builds in the venv (and its dlsetup-build.json) are the ones the recorded plan chose."""
    plan = host_record.plan if host_record is not None and host_record.applied("dl_stack") else None
    planned = PlannedBuild.of_plan(plan)
    explicit = expectations.origin("framework") not in (None, FROM_RECORD)
    if explicit and not expectations.wants("pytorch"):
        planned = None  # the user said which frameworks, and PyTorch is not among them
    verdict = judge_build(planned, build_record, torch_probe, jax_probe, venv=venv_path)
    origin = FROM_RECORD if verdict.expected is not None else None
    check(CheckResult("framework.build", verdict.status, verdict.expected, verdict.actual, verdict.message, origin))
