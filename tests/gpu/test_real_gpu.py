"""Layer 4: the real GPU path on a machine with an NVIDIA GPU (`pytest -m gpu tests/gpu`).

Set DLSETUP_REAL_RUN_DIR to keep the outputs (docs/real-runs/ holds the last ones). Expectations for the
device can be given as DLSETUP_GPU_EXPECT, e.g. "gpu_count=1,gpu_memory_min_mib=81920,pcie_width_min=16".
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.gpu


def _gpu_answers() -> bool:
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return False
    return subprocess.run([smi, "-L"], capture_output=True, check=False).returncode == 0


requires_gpu = pytest.mark.skipif(not _gpu_answers(), reason="no working NVIDIA GPU on this machine")


def dlsetup(*args: str) -> subprocess.CompletedProcess[str]:
    res = subprocess.run([sys.executable, "-m", "dlsetup", *args], capture_output=True, text=True, check=False)
    keep = os.environ.get("DLSETUP_REAL_RUN_DIR")
    if keep:
        name = "-".join(a.strip("-").replace("=", "_").replace(",", "_") for a in args if "/" not in a)
        Path(keep).mkdir(parents=True, exist_ok=True)
        (Path(keep) / f"{name}.txt").write_text(
            f"$ dlsetup {' '.join(args)}\n(exit {res.returncode})\n{res.stdout}{res.stderr}"
        )
    return res


@requires_gpu
def test_facts_on_a_real_gpu():
    res = dlsetup("facts", "localhost", "--format", "json")
    assert res.returncode == 0, res.stderr
    host = json.loads(res.stdout)["hosts"]["localhost"]
    assert host["gpus"], "nvidia-smi answers but no GPU was found on PCI"
    assert host["driver"]["loaded"] and host["driver"]["error"] is None
    for gpu in host["gpus"]:
        assert gpu["visible_to_driver"] and gpu["memory_mib"] > 0 and gpu["compute_capability"]
        assert gpu["pcie"]["width_current"] and gpu["pcie"]["gen_current"]
    dlsetup("facts", "localhost")  # the table, kept for the record


@requires_gpu
def test_verify_and_plan_on_a_real_gpu():
    expect = [f"--expect={e}" for e in os.environ.get("DLSETUP_GPU_EXPECT", "").split(",") if e]
    res = dlsetup("verify", "localhost", "--format", "json", *expect)
    report = json.loads(res.stdout)["hosts"]["localhost"]
    assert res.returncode == 0, json.dumps(report, indent=1)
    dlsetup("verify", "localhost", *expect)
    plan = dlsetup("plan", "localhost", "--format", "json")
    assert plan.returncode == 0, plan.stderr
    dlsetup("plan", "localhost")
