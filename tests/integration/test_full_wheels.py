"""The full PyTorch install, behind the `slow_wheels` marker (CI runs the small wheelhouse variant in
test_provision.py instead). Needs what the integration layer needs plus a reachable PyTorch wheel index:

    pytest -m "integration and slow_wheels" tests/integration/test_full_wheels.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import fakegpu
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow_wheels]


def test_planned_cpu_pytorch_from_its_index(boot_host, tmp_path):
    host = boot_host("wheels12", "bookworm")
    inventory = tmp_path / "hosts.yml"
    hostvars = fakegpu.install(host, sysfs="xps13-9370")
    host_inventory = boot_host.harness.write_inventory(
        inventory, hosts=[host], host_vars={"wheels12": {**hostvars, "dlsetup_expect": {"framework": "pytorch"}}}
    )
    env = dict(os.environ, DLSETUP_STATE_DIR=str(tmp_path / "state"))
    cmd = [sys.executable, "-m", "dlsetup"]
    tags = "role::hw_facts,role::base,role::dl_stack,role::state"
    first = subprocess.run(
        [*cmd, "provision", "-i", str(host_inventory), "wheels12", "--yes", "--tags", tags],
        capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-2000:]
    verify = subprocess.run(
        [*cmd, "verify", "-i", str(host_inventory), "wheels12", "--format", "json"],
        capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip
    checks = {c["id"]: c for c in json.loads(verify.stdout)["hosts"]["wheels12"]["checks"]}
    assert checks["framework.pytorch"]["status"] == "pass"
    assert checks["framework.pytorch"]["actual"].endswith("+cpu")
