"""Hardware swaps on real Debian 12 and 13 hosts (issue 9): a 2x GTX 1080 Ti rig (the recorded sysfs tree and the
fake nvidia-smi replaying the real capture, tests/integration/fakegpu.py), provisioned and verified, then

* one GPU taken out (its functions removed from the recorded tree and its row from the capture, as when the card is
  pulled): the drift names it by bus id, it persists across re-runs while verify fails naming the missing GPU, and
  ``--accept-hardware`` rewrites the inventory (comments kept) and makes it pass;
* the link of the remaining GPU trained down from x16 to x8 (its ``current_link_width`` in the recorded tree):
  ``dlsetup diff`` exits 9 naming the link, and verify fails saying why and what the baseline had.

The runs use the roles that need no package from outside Debian's archive (hw_facts, base, state): what is under test
is dlsetup's baseline, drift and verify, on hosts that really run the playbooks. Driver swaps: test_driver_swap.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import fakegpu
import harness as h
import pytest

pytestmark = pytest.mark.integration

TAGS = "role::hw_facts,role::base,role::state"
GONE = "0000:06:00.0"
KEPT = "0000:05:00.0"
BASELINE = "/etc/ansible/facts.d/dlsetup_baseline.fact"
SYSFS = f"{fakegpu.FAKE_ROOT}/sysfs"
SCENARIO = "/etc/dlsetup-fake-nvidia-smi"
HOSTS = {"hwswap12": "bookworm", "hwswap13": "trixie"}


@dataclass
class Rig:
    name: str
    host: h.Host
    inventory: Path
    state: Path

    def dlsetup(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ, DLSETUP_STATE_DIR=str(self.state), COLUMNS="200")
        return subprocess.run(
            [sys.executable, "-m", "dlsetup", *args], capture_output=True, text=True, env=env, timeout=1800, check=False
        )

    def provision(self, *extra: str) -> subprocess.CompletedProcess[str]:
        return self.dlsetup("provision", "-i", str(self.inventory), self.name, "--yes", "--tags", TAGS, *extra)


def pull_gpu(host: h.Host, bus: str) -> None:
    """Take the GPU at ``bus`` out: its functions leave the recorded tree, its row the nvidia-smi capture."""
    root = host.root / SYSFS.lstrip("/")
    for link in (root / "bus/pci/devices").iterdir():
        if link.name.startswith(bus[:-1]):
            target = (link.parent / os.readlink(link)).resolve()
            subprocess.run(["rm", "-rf", str(target)], check=True)
            link.unlink()
    csv = host.root / SCENARIO.lstrip("/") / "query-gpu.csv"
    lines = csv.read_text().splitlines()
    kept = [ln for ln in lines if bus[5:].upper() not in ln.upper()]
    assert len(kept) == len(lines) - 1, lines
    csv.write_text("\n".join(kept) + "\n")


def train_down(host: h.Host, bus: str, width: int) -> None:
    device = next((host.root / SYSFS.lstrip("/")).glob(f"devices/**/{bus}"))
    (device / "current_link_width").write_text(f"{width}\n")


INVENTORY = """\
# the lab's rigs (a comment --accept-hardware keeps)
all:
  hosts:
    {name}:  # under the desk
      ansible_host: {address}
      ansible_user: root
{extra}      dlsetup_pins:
        driver_source: distribution
      dlsetup_expect:
        pcie_width_min: 16  # full width for both cards
"""


@pytest.fixture(scope="module")
def rigs(harness: h.Harness, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Rig]]:
    hosts = harness.boot([h.HostSpec(name, release) for name, release in HOSTS.items()])
    try:
        rigs = {}
        for name in HOSTS:
            work = tmp_path_factory.mktemp(name)
            host_vars = fakegpu.install(
                hosts[name], sysfs="2x1080ti-rig", scenario="2x1080ti", nvidia_proc="410.78-proprietary"
            )
            # the harness's connection settings (key, known_hosts, port) and the fakes, then ours as a user writes them
            entry = {**harness.inventory_vars(hosts[name], None), **host_vars}
            extra = "".join(
                f"      {k}: {json.dumps(v)}\n" for k, v in entry.items() if k not in ("ansible_host", "ansible_user")
            )
            inventory = work / "hosts.yml"
            inventory.write_text(INVENTORY.format(name=name, address=entry["ansible_host"], extra=extra))
            rigs[name] = Rig(name, hosts[name], inventory, work / "state")
        yield rigs
    finally:
        harness.stop(list(hosts))


@pytest.mark.parametrize("name", list(HOSTS))
def test_a_pulled_gpu_is_remembered_until_it_is_accepted(rigs: dict[str, Rig], name: str) -> None:
    rig = rigs[name]
    first = rig.provision()
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-2000:]
    assert f"{name}: hardware recorded as the new baseline" in first.stdout
    baseline = json.loads(rig.host.run(f"cat {BASELINE}").stdout)
    assert [g["pci_bus_id"] for g in baseline["gpus"]] == [KEPT, GONE]
    assert baseline["gpus"][0]["width_current"] == 16
    assert json.loads((rig.state / "hosts" / name / "baseline.json").read_text()) == baseline
    clean = rig.dlsetup("diff", "-i", str(rig.inventory), name)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "no change since the last verified run" in clean.stdout

    pull_gpu(rig.host, GONE)
    for _ in range(2):  # verify fails, so the baseline stays and the next run shows the same drift
        again = rig.provision()
        assert again.returncode == 6, again.stdout[-4000:] + again.stderr[-2000:]
        assert f"- GPU GeForce GTX 1080 Ti (10de:1b06) at {GONE}" in again.stdout
        assert "missing since the baseline" in again.stdout and f"at {GONE}" in again.stdout
        assert json.loads(rig.host.run(f"cat {BASELINE}").stdout) == baseline
    diff = rig.dlsetup("diff", "-i", str(rig.inventory), name, "--format", "json")
    assert diff.returncode == 9, diff.stdout + diff.stderr
    changes = json.loads(diff.stdout)["hosts"][name]["changes"]
    assert [(c["kind"], c["subject"]) for c in changes] == [("gpu_removed", GONE)]

    accepted = rig.provision("--accept-hardware")
    assert accepted.returncode == 0, accepted.stdout[-4000:] + accepted.stderr[-2000:]
    text = rig.inventory.read_text()
    assert text.startswith("# the lab's rigs") and "# under the desk" in text and "# full width" in text
    assert "gpu_count: 1" in text and "pcie_width_min: 16" in text
    assert [g["pci_bus_id"] for g in json.loads(rig.host.run(f"cat {BASELINE}").stdout)["gpus"]] == [KEPT]
    history = (rig.state / "hosts" / name / "history.jsonl").read_text().splitlines()
    assert len(history) == 2
    settled = rig.dlsetup("diff", "-i", str(rig.inventory), name)
    assert settled.returncode == 0, settled.stdout + settled.stderr


@pytest.mark.parametrize("name", list(HOSTS))
def test_a_link_that_trained_down_is_drift_and_a_verify_failure(rigs: dict[str, Rig], name: str) -> None:
    rig = rigs[name]
    if "gpu_count: 1" not in rig.inventory.read_text():
        pytest.skip("needs the state the previous test leaves (one GPU, accepted)")
    train_down(rig.host, KEPT, 8)
    diff = rig.dlsetup("diff", "-i", str(rig.inventory), name, "--format", "json")
    assert diff.returncode == 9, diff.stdout + diff.stderr
    changes = json.loads(diff.stdout)["hosts"][name]["changes"]
    assert [(c["kind"], c["before"], c["after"]) for c in changes] == [("link_width", 16, 8)]
    verify = rig.dlsetup("verify", "-i", str(rig.inventory), name, "--format", "json")
    assert verify.returncode == 6, verify.stdout + verify.stderr
    width = next(c for c in json.loads(verify.stdout)["hosts"][name]["checks"] if c["id"] == "gpu.pcie_width")
    assert width["status"] == "fail"
    assert "runs x8" in width["message"] and "(the baseline had x16)" in width["message"]
    assert "trained down" in width["message"]
