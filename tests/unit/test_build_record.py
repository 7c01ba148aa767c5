"""The ``framework.build`` check's pure parts (dlsetup/verify/probes.py): the plan's build, the venv's build record
(``dlsetup-build.json``, written by the dl_stack role) and how they compare; the JAX probe's plugin list."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from dlsetup.verify.checks import torch_variant
from dlsetup.verify.probes import (
    JAX_PROBE,
    BuildRecord,
    JaxProbe,
    PlannedBuild,
    TorchProbe,
    judge_build,
    last_json_line,
)

INDEX_130 = "https://download.pytorch.org/whl/cu130"
PLAN: dict[str, Any] = {
    "pytorch": {"version": "2.9.0", "variant": "cu130", "index_url": INDEX_130, "cuda": "13.0"},
    "jax": {"extra": "cuda13", "index_url": None},
}
PLANNED = PlannedBuild("2.9.0", "cu130", INDEX_130, "jax[cuda13]")
TORCH_130 = TorchProbe(torch="2.9.0+cu130", cuda_build="13.0")
TORCH_126 = TorchProbe(torch="2.9.0+cu126", cuda_build="12.6")
JAX_13 = JaxProbe(jax="0.7.2", gpu_devices=1, plugins=("jax-cuda13-plugin",))
VENV = "/opt/dlsetup/venv"


def _record(**identity: Any) -> BuildRecord:
    base = {
        "torch_version": "2.9.0",
        "torch_variant": "cu130",
        "torch_index_url": INDEX_130,
        "jax_requirement": "jax[cuda13]",
        "extra_packages": [],
        "jupyter": False,
        "python": "3.11",
    }
    data = {
        "format": 1,
        "build_id": "torch2.9.0-cu130-0123456789",
        "complete": True,
        "identity": {**base, **identity},
        "installed": {"torch": "2.9.0+cu130", "jax": "0.7.2", "jax-cuda13-plugin": "0.7.2"},
    }
    return BuildRecord.parse(json.dumps(data))


def test_the_planned_build_is_what_the_role_gets_from_the_plan() -> None:
    assert PlannedBuild.of_plan(PLAN) == PLANNED
    cpu = {"pytorch": {"version": "2.9.0", "variant": "cpu", "index_url": None}, "jax": {"extra": None}}
    assert PlannedBuild.of_plan(cpu) == PlannedBuild("2.9.0", "cpu", "", "jax[cpu]")  # to_extravars: jax[cpu]
    assert PlannedBuild.of_plan({"pytorch": {"version": None}}) is None
    assert PlannedBuild.of_plan({"pytorch": "odd"}) is None
    assert PlannedBuild.of_plan(None) is None
    assert PLANNED.describe() == "torch 2.9.0 cu130 with jax[cuda13]"


def test_a_record_is_read_leniently_and_a_bad_one_says_so() -> None:
    record = _record()
    assert record.complete and record.identity is not None and record.identity.torch_variant == "cu130"
    assert record.installed["torch"] == "2.9.0+cu130"
    legacy = BuildRecord.parse(json.dumps({"format": 1, "build_id": "legacy-x", "complete": True, "legacy": True}))
    assert legacy.legacy and legacy.identity is None and legacy.error is None
    assert BuildRecord.parse("{not json").error == "not a build record (JSONDecodeError)"
    assert BuildRecord.parse("[1]").error is not None


def test_the_planned_build_passes() -> None:
    verdict = judge_build(PLANNED, _record(), TORCH_130, JAX_13, venv=VENV)
    assert verdict.status == "pass", verdict.message
    assert verdict.expected == "torch 2.9.0 cu130 with jax[cuda13]"
    assert verdict.actual == (
        "torch 2.9.0+cu130 (CUDA 13.0), jax 0.7.2 + jax-cuda13-plugin; "
        "build torch2.9.0-cu130-0123456789: torch 2.9.0 cu130 with jax[cuda13]"
    )


def test_the_same_torch_version_of_another_variant_fails_naming_both_builds() -> None:
    """The tester's case: cu126 → cu130 with the same torch version, the venv kept the old build."""
    old = _record(torch_variant="cu126", torch_index_url="https://download.pytorch.org/whl/cu126")
    verdict = judge_build(PLANNED, old, TORCH_126, JAX_13, venv=VENV)
    assert verdict.status == "fail"
    assert verdict.message.startswith(
        "/opt/dlsetup/venv does not hold the planned build (torch 2.9.0 cu130 with jax[cuda13]): "
        "torch is the cu126 wheel, the plan chose cu130; build torch2.9.0-cu130-0123456789 is torch 2.9.0 cu126, "
        "the plan chose 2.9.0 cu130; build torch2.9.0-cu130-0123456789 took torch from "
        "https://download.pytorch.org/whl/cu126"
    ), verdict.message
    assert "Installed: torch 2.9.0+cu126 (CUDA 12.6)" in verdict.message


def test_a_torch_changed_by_hand_under_a_recorded_build_fails() -> None:
    verdict = judge_build(PLANNED, _record(), TorchProbe(torch="2.9.0+cu126", cuda_build="12.6"), JAX_13, venv=VENV)
    assert verdict.status == "fail"
    assert "build torch2.9.0-cu130-0123456789 installed torch 2.9.0+cu130, 2.9.0+cu126 imports now" in verdict.message


@pytest.mark.parametrize(
    ("torch", "jax", "record", "cause"),
    [
        (
            TorchProbe(torch="2.8.0+cu130", cuda_build="13.0"),
            JAX_13,
            None,
            "torch is 2.8.0+cu130, the plan chose 2.9.0",
        ),
        # a label that says cu130 on a build whose torch.version.cuda says otherwise
        (
            TorchProbe(torch="2.9.0+cu130", cuda_build="12.8"),
            JAX_13,
            None,
            "torch.version.cuda is 12.8, not what a cu130 wheel is",
        ),
        (
            TorchProbe(error="PyTorch does not import: boom"),
            JAX_13,
            None,
            "torch does not import from /opt/dlsetup/venv",
        ),
        (
            TORCH_130,
            JaxProbe(jax="0.7.2", plugins=()),
            None,
            "jax-cuda13-plugin is not installed, which jax[cuda13] brings (jax sees no GPU)",
        ),
        (
            TORCH_130,
            JaxProbe(jax="0.7.2", plugins=("jax-cuda12-plugin", "jax-cuda13-plugin")),
            None,
            "jax-cuda12-plugin installed, not part of jax[cuda13]",
        ),
        (TORCH_130, JaxProbe(error="JAX does not import: x"), None, "jax does not import (JAX does not import: x)"),
        (TORCH_130, JAX_13, _record(jax_requirement="jax[cuda12]"), "has jax[cuda12]"),
    ],
)
def test_what_is_not_the_planned_build_fails_with_the_reason(
    torch: TorchProbe, jax: JaxProbe, record: BuildRecord | None, cause: str
) -> None:
    verdict = judge_build(PLANNED, record, torch, jax, venv=VENV)
    assert verdict.status == "fail" and cause in verdict.message, verdict.message


def test_an_unfinished_build_fails() -> None:
    data = json.loads(json.dumps({"build_id": "b", "complete": False, "identity": {"torch_version": "2.9.0"}}))
    record = BuildRecord.parse(json.dumps(data))
    verdict = judge_build(PlannedBuild("2.9.0"), record, TorchProbe(torch="2.9.0"), JaxProbe(), venv=VENV)
    assert verdict.status == "fail" and "build b did not finish installing" in verdict.message


def test_a_pinned_jax_version_is_the_same_requirement() -> None:
    verdict = judge_build(PLANNED, _record(jax_requirement="jax[cuda13]==0.7.2"), TORCH_130, JAX_13, venv=VENV)
    assert verdict.status == "pass", verdict.message


def test_a_matching_venv_without_a_record_is_a_warning() -> None:
    for record in (None, BuildRecord.parse(json.dumps({"build_id": "legacy-1", "legacy": True, "complete": True}))):
        verdict = judge_build(PLANNED, record, TORCH_130, JAX_13, venv=VENV)
        assert verdict.status == "warn", verdict.message
        assert "the next dlsetup provision builds a recorded venv" in verdict.message
    # a probe of an earlier dlsetup that says nothing of the plugins is not held against the build, nor a jax that
    # sees the GPUs without the plugin's distribution
    assert (
        judge_build(PLANNED, _record(), TORCH_130, JaxProbe(jax="0.7.2", gpu_devices=1, plugins=()), venv=VENV).status
        == "pass"
    )
    assert judge_build(PLANNED, _record(), TORCH_130, JaxProbe(jax="0.7.2"), venv=VENV).status == "pass"


def test_nothing_planned_is_a_skip() -> None:
    verdict = judge_build(None, _record(), TORCH_130, JAX_13, venv=VENV)
    assert (verdict.status, verdict.expected) == ("skip", None)


@pytest.mark.parametrize(
    ("version", "cuda"), [("2.9.0+cu130", "13.0"), ("2.9.0", "12.8"), ("2.9.0", None), ("2.9.0+CPU", None)]
)
def test_the_probe_variant_is_the_check_variant(version: str, cuda: str | None) -> None:
    probe = TorchProbe(torch=version, cuda_build=cuda)
    assert probe.variant == torch_variant(probe)
    assert TorchProbe(error="x").variant is None


def test_the_jax_probe_lists_the_cuda_plugins(tmp_path: Path) -> None:
    for name, code in (("jax", "__version__ = '0.7.2'\ndef devices(backend=None):\n    return ['gpu']\n"),):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text(code)
    for dist in ("jax", "jax_cuda13_plugin", "jax_cuda12_pjrt"):
        info = tmp_path / f"{dist}-0.7.2.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.7.2\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", JAX_PROBE], capture_output=True, text=True, env=env, check=True)
    probe = JaxProbe.parse(last_json_line(out.stdout))
    assert probe == JaxProbe(jax="0.7.2", gpu_devices=1, plugins=("jax-cuda13-plugin",))
