"""The converged-state probe for real on a Debian 12 host (a CPU-only laptop: real PyTorch 2.13.0 CPU build and
JAX from a local wheelhouse): a re-run of a converged host runs no role, and each thing the probe reads, changed
one at a time on the host, makes the next run run the roles, which put it back; the run after that is converged
again. ``--full`` runs the roles on a converged host."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import fakegpu
import harness as h
import pytest
from provisioning import TORCH_WHEEL, cpu_wheelhouse, install_wheelhouse

pytestmark = pytest.mark.integration

SOURCES = "/etc/apt/sources.list.d/dlsetup-debian.sources"
VENV = "/opt/dlsetup/venv"


@pytest.fixture(scope="module")
def laptop(harness, tmp_path_factory):
    wheelhouse = cpu_wheelhouse()
    if wheelhouse is None:
        pytest.skip(f"{TORCH_WHEEL} is not on this machine: no CPU PyTorch wheel")
    hosts = harness.boot([h.HostSpec("conv", "bookworm")])
    try:
        host = hosts["conv"]
        host_vars = {**fakegpu.install(host, sysfs="xps13-9370"), **install_wheelhouse(host, wheelhouse)}
        work = tmp_path_factory.mktemp("converged")
        inventory = hosts.write_inventory(work / "hosts.yml", host_vars={"conv": host_vars})
        yield host, inventory, work / "state"
    finally:
        harness.stop(list(hosts))


def provision(inventory: Path, state: Path, *extra: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-m", "dlsetup", "provision", "-i", str(inventory), "conv", "--yes", "--format", "json",
         *extra],
        capture_output=True, text=True, timeout=1800, check=False,
        env=dict(os.environ, DLSETUP_STATE_DIR=str(state)),
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads(done.stdout)


def playbook_runs(state: Path) -> int:
    """How many site.yml runs (provision) the state directory has seen."""
    return sum(1 for p in (state / "runs").iterdir() if p.is_dir() and p.name.split("-")[2] == "provision")


def test_a_converged_host_runs_no_role_and_each_change_is_repaired(laptop):
    host, inventory, state = laptop
    first = provision(inventory, state)
    assert first["hosts"]["conv"]["converged"] is False
    assert first["hosts"]["conv"]["verify"]["passed"] is True
    record = json.loads(host.run("cat /etc/ansible/facts.d/dlsetup.fact", check=True).stdout)
    probe = record["converged"]["probe"]
    assert probe["packages"]["pciutils"]["version"], probe["packages"]
    assert probe["files"][SOURCES] and probe["venvs"][VENV]["python_runs"] is True
    runs = playbook_runs(state)

    # nothing changed: no preflight, no playbook, and verify still runs and passes
    again = provision(inventory, state)
    conv = again["hosts"]["conv"]
    assert conv["converged"] is True, conv["convergence"]
    assert conv["convergence"].startswith("converged: plan unchanged"), conv["convergence"]
    assert conv["verify"]["passed"] is True
    assert playbook_runs(state) == runs

    sources = host.run(f"cat {SOURCES}", check=True).stdout
    changes = [
        # (what the user does, what the reason names, how to tell it was put back)
        (f"echo '# edited' >> {SOURCES}", f"file {SOURCES} (changed)", f"cat {SOURCES}", sources),
        (f"rm {SOURCES}", f"file {SOURCES} (removed)", f"cat {SOURCES}", sources),
        ("DEBIAN_FRONTEND=noninteractive apt-get remove -y -q pciutils", "package pciutils (",
         "dpkg-query -W -f='${Status}' pciutils", "install ok installed"),
        (f"rm {VENV}", f"venv {VENV} (removed)", f"{VENV}/bin/python -c 'import torch, jax; print(torch.__version__)'",
         "2.13.0+cpu\n"),
    ]  # fmt: skip
    for change, named, check, wanted in changes:
        host.run(change, check=True)
        repaired = provision(inventory, state, "--no-verify")["hosts"]["conv"]
        assert repaired["converged"] is False, (change, repaired["convergence"])
        assert named in repaired["convergence"], (change, repaired["convergence"])
        assert repaired["stats"]["changed"] > 0, change
        assert host.run(check).stdout == wanted, change
        after = provision(inventory, state, "--no-verify")["hosts"]["conv"]
        assert after["converged"] is True, (change, after["convergence"])

    # a hold the user put on a planned package: the roles run (a hold is part of the converged state) and, since
    # none of them holds or releases base packages, it stays; the run after that is converged again
    host.run("apt-mark hold pciutils", check=True)
    held = provision(inventory, state, "--no-verify")["hosts"]["conv"]
    assert held["converged"] is False and "package pciutils (now held)" in held["convergence"], held["convergence"]
    assert provision(inventory, state, "--no-verify")["hosts"]["conv"]["converged"] is True
    host.run("apt-mark unhold pciutils", check=True)
    assert provision(inventory, state, "--no-verify")["hosts"]["conv"]["converged"] is False

    # --full runs the roles on a converged host (and they change nothing)
    before = playbook_runs(state)
    full = provision(inventory, state, "--no-verify", "--full")["hosts"]["conv"]
    assert full["converged"] is False and full["stats"]["changed"] == 0, full
    assert playbook_runs(state) == before + 1


def test_what_the_run_is_asked_changes_the_fingerprint(laptop):
    """A role variable given with -e is part of what the run was asked: the roles run with it."""
    host, inventory, state = laptop
    provision(inventory, state, "--no-verify")  # converged, or made so
    asked = provision(inventory, state, "--no-verify", "-e", '{"base_extra_packages": ["less"]}')["hosts"]["conv"]
    assert asked["converged"] is False, asked["convergence"]
    assert "changed since the last provision" in asked["convergence"]
    assert host.run("dpkg-query -W -f='${Status}' less").stdout == "install ok installed"
    again = provision(inventory, state, "--no-verify", "-e", '{"base_extra_packages": ["less"]}')["hosts"]["conv"]
    assert again["converged"] is True, again["convergence"]
