"""Helpers for driving the real CLI (``dlsetup.cli.app``) with the runner boundary replaced.

* ``captured_facts`` (session): the Facts JSON host object of each fake host below, produced once by
  ``dlsetup.collector.collect()`` over the committed trees (``tests/fixtures/sysfs``, ``nvidia-proc``) with the fake
  ``tests/fakes/nvidia-smi`` replaying a scenario of ``tests/fixtures/nvidia-smi-scenarios``. Nothing is typed in by
  hand: what the CLI renders is what our module would have returned on that host.
* ``fake_runner``: replaces ``dlsetup.runner.run_playbook``. ``facts.yml`` answers with the ``dlsetup_hw_facts``
  task result (and the slurp of ``/etc/ansible/facts.d/dlsetup.fact`` when a previous state is set); ``site.yml``
  answers with the stats, task results and failures a test sets. Every call is recorded.
* ``stub_verify``: replaces ``dlsetup.verify.suite_runner.run_suite`` with a canned report; every call is recorded.
* ``cli``: ``CliRunner().invoke(app, ...)`` on a wide terminal, with the state dir in the test's tmp_path.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import subprocess
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result
from typer.testing import CliRunner

from dlsetup import cli as cli_module
from dlsetup.cli import app
from dlsetup.config.targets import TargetSet
from dlsetup.facts.hwparse import collector
from dlsetup.facts.model import HostFacts
from dlsetup.facts.pcie import explain_pcie
from dlsetup.run import runner
from dlsetup.run.runner import FailedTask, HostStats, RunResult
from dlsetup.verify import suite_runner
from dlsetup.verify.report import VerifyReport

REPO = Path(__file__).resolve().parents[2]
FIX = REPO / "tests" / "fixtures"
FAKE_SMI = REPO / "tests" / "fakes" / "nvidia-smi"
H200_HOST = FIX / "hosts" / "h200-ubuntu2404"
DEV_VM = FIX / "hosts" / "dev-vm-debian12"

# The H200's root mount (/dev/vda, 254:0, from its ansible facts), as test_hwparse.py writes it.
H200_MOUNTINFO = "25 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw,discard\n"
# ansible_kernel of the H200 capture (tests/fixtures/hosts/h200-ubuntu2404/ansible-setup-facts.json).
H200_KERNEL = "6.18.44-fc-v657-gpu"
# The dev VM's kernel (tests/fixtures/hosts/dev-vm-debian12/SOURCE.txt).
DEV_VM_KERNEL = "6.18.44-fc-v782"


@dataclass(frozen=True)
class FakeHost:
    """Which committed fixtures make up one fake host for ``collector.collect()``."""

    sysfs: str  # tests/fixtures/sysfs/<tree>
    scenario: str | None  # tests/fixtures/nvidia-smi-scenarios/<name>; None: no nvidia-smi installed
    nvidia_proc: str | None  # tests/fixtures/nvidia-proc/<name>; None: no /proc/driver/nvidia
    os_release: Path
    kernel: str
    cuda_driver_version: int | None  # what libcuda's cuDriverGetVersion would answer
    mountinfo: str = ""


# CPU and memory come from the dev VM's /proc for every host (the only real cpuinfo/meminfo capture); the OS of
# the rigs and laptops (no os-release captured there) is the H200's Ubuntu 24.04 or the dev VM's Debian 12.
FAKE_HOSTS: dict[str, FakeHost] = {
    # real H200 VM: driver 580.159.04 open, CUDA 13.0
    "h200": FakeHost("h200-vm", "h200", "h200-580-open", H200_HOST / "os-release", H200_KERNEL, 13000, H200_MOUNTINFO),
    # 2x GTX 1080 Ti, driver 410.78 proprietary (CUDA 10.0)
    "2x1080ti": FakeHost(
        "2x1080ti-rig", "2x1080ti", "410.78-proprietary", H200_HOST / "os-release", H200_KERNEL, 10000
    ),
    # the same rig after a driver upgrade without a reboot: NVML says the library and the module disagree
    "2x1080ti-mismatch": FakeHost(
        "2x1080ti-rig", "version-mismatch", "410.78-proprietary", H200_HOST / "os-release", H200_KERNEL, None
    ),
    # XPS 13 9370: no NVIDIA GPU at all, no nvidia-smi
    "xps13": FakeHost("xps13-9370", None, None, DEV_VM / "os-release", DEV_VM_KERNEL, None),
    # XPS 15 9570: a GTX 1050 Ti Mobile on PCI, nvidia-smi installed but no driver loaded
    "xps15": FakeHost("xps15-9570", "couldnt-communicate", None, DEV_VM / "os-release", DEV_VM_KERNEL, None),
}


def _fake_smi(scenario: str) -> Callable[[list[str]], tuple[int, str, str]]:
    def run(argv: list[str]) -> tuple[int, str, str]:
        env = dict(os.environ, DLSETUP_FAKE_SMI_DIR=str(FIX / "nvidia-smi-scenarios" / scenario))
        env.pop("DLSETUP_FAKE_SMI_LOG", None)
        out = subprocess.run([str(FAKE_SMI), *argv[1:]], capture_output=True, text=True, env=env, check=False)
        return out.returncode, out.stdout, out.stderr

    return run


def _never_called(argv: list[str]) -> tuple[int, str, str]:
    raise AssertionError(f"nvidia-smi is not installed on this fake host, yet {argv} ran")


def collect_fake_host(host: FakeHost, work: Path) -> dict[str, Any]:
    """Run ``collector.collect()`` (what the facts module runs) over one fake host's fixtures."""
    proc = work / "proc"
    (proc / "self").mkdir(parents=True)
    (proc / "sys" / "kernel").mkdir(parents=True)
    (proc / "cpuinfo").write_text((DEV_VM / "cpuinfo").read_text())
    (proc / "meminfo").write_text((DEV_VM / "meminfo").read_text())
    (proc / "self" / "mountinfo").write_text(host.mountinfo)
    (proc / "sys" / "kernel" / "osrelease").write_text(host.kernel + "\n")
    facts = collector.collect(
        _fake_smi(host.scenario) if host.scenario else _never_called,
        sysfs_root=str(FIX / "sysfs" / host.sysfs),
        nvidia_proc_dir=str(FIX / "nvidia-proc" / host.nvidia_proc) if host.nvidia_proc else str(work / "no-proc"),
        pci_ids_paths=(str(FIX / "pci.ids" / "pci.ids.excerpt"),),
        nvidia_smi_path=str(FAKE_SMI) if host.scenario else None,
        proc_root=str(proc),
        os_release_paths=(str(host.os_release),),
        container_markers=(str(work / "no-container-marker"),),
        cuda_driver_version=lambda: host.cuda_driver_version,
    )
    # what travels through Ansible is JSON
    return dict(json.loads(json.dumps(facts)))


@pytest.fixture(scope="session")
def captured_facts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """name in FAKE_HOSTS → Facts JSON host object (read-only: take ``host_facts(name)`` for a copy)."""
    work = tmp_path_factory.mktemp("fake-hosts")
    return {name: collect_fake_host(host, work / name) for name, host in FAKE_HOSTS.items()}


@pytest.fixture
def host_facts(captured_facts: dict[str, dict[str, Any]]) -> Callable[[str], dict[str, Any]]:
    """``host_facts("h200")``: a private deep copy of a fake host's facts."""
    return lambda name: copy.deepcopy(captured_facts[name])


@pytest.fixture
def shown_facts(captured_facts: dict[str, dict[str, Any]]) -> Callable[[str], dict[str, Any]]:
    """``shown_facts("h200")``: a fake host's facts as dlsetup shows and hands them on: the module's, with where
    each GPU's lanes come from (``dlsetup.facts.pcie``)."""
    return lambda name: explain_pcie(HostFacts.from_dict(copy.deepcopy(captured_facts[name]))).to_dict()


# ------------------------------------------------------------------------------------------------
# the runner boundary


@dataclass
class PlaybookCall:
    playbook: str
    hosts: list[str]
    kwargs: dict[str, Any]
    result: RunResult
    targets: TargetSet


@dataclass
class FakeRunner:
    """Stands in for ``dlsetup.runner.run_playbook``: answers from what the test put here, records each call."""

    work: Path
    # facts.yml: host → Facts JSON host object; a host that is neither here nor unreachable gets no facts task result
    facts: dict[str, dict[str, Any]] = field(default_factory=dict)
    unreachable: dict[str, str] = field(default_factory=dict)
    # facts.yml (or verify.yml) runs after a site.yml run (provision's final verify) also find these hosts unreachable
    unreachable_after_site: dict[str, str] = field(default_factory=dict)
    # host → content of /etc/ansible/facts.d/dlsetup.fact (slurped by facts.yml)
    previous_state: dict[str, dict[str, Any]] = field(default_factory=dict)
    # host → content of /etc/ansible/facts.d/dlsetup_baseline.fact (slurped by facts.yml; baseline.yml writes it)
    baselines: dict[str, dict[str, Any]] = field(default_factory=dict)
    # verify.yml (facts.yml and the framework probes): host → the job its collect call returns
    framework_jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    # site.yml
    site_status: str = "successful"
    site_stats: dict[str, HostStats] = field(default_factory=dict)
    site_results: dict[str, list[tuple[str, str, dict[str, Any]]]] = field(default_factory=dict)
    site_failed_tasks: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    site_unreachable: dict[str, str] = field(default_factory=dict)
    # preflight.yml: host → the one-line failure of its source check (hosts not named pass)
    preflight_failed: dict[str, str] = field(default_factory=dict)
    # runner events site.yml sends to on_event while it runs (the CLI's live progress lines)
    site_events: list[dict[str, Any]] = field(default_factory=list)
    calls: list[PlaybookCall] = field(default_factory=list)

    @property
    def playbooks(self) -> list[str]:
        return [c.playbook for c in self.calls]

    def call(self, playbook: str) -> PlaybookCall:
        """The first call of ``playbook``."""
        return next(c for c in self.calls if c.playbook == playbook)

    def __call__(self, playbook: str, targets: TargetSet, **kwargs: Any) -> RunResult:
        run_dir = self.work / f"run{len(self.calls)}-{kwargs.get('kind', 'run')}"
        run_dir.mkdir(parents=True)
        if playbook in ("facts.yml", "verify.yml"):
            result = self._facts_run(targets, run_dir)
            if playbook == "verify.yml":
                for name, job in self.framework_jobs.items():
                    if name in result.results:
                        result.results[name].append(
                            ("Collect the framework probes", "dlsetup_framework_probe", {"job": copy.deepcopy(job)})
                        )
        elif playbook == "preflight.yml":
            result = self._preflight_run(targets, run_dir)
        elif playbook == "site.yml":
            result = self._site_run(targets, run_dir, kwargs.get("on_event"))
        elif playbook == "baseline.yml":
            result = self._baseline_run(targets, run_dir, kwargs.get("host_extravars") or {})
        else:
            raise AssertionError(f"unexpected playbook {playbook}")
        self.calls.append(PlaybookCall(playbook, list(targets.names), dict(kwargs), result, targets))
        return result

    def _facts_run(self, targets: TargetSet, run_dir: Path) -> RunResult:
        result = RunResult(status="successful", rc=0, run_dir=run_dir)
        unreachable = dict(self.unreachable)
        if "site.yml" in self.playbooks:
            unreachable.update(self.unreachable_after_site)
        for name in targets.names:
            if name in unreachable:
                result.unreachable[name] = unreachable[name]
                result.stats[name] = HostStats(unreachable=True)
                result.status, result.rc = "failed", 4
                continue
            if name not in self.facts:
                continue
            tasks: list[tuple[str, str, dict[str, Any]]] = [
                (
                    "Gather dlsetup hardware facts",
                    "dlsetup_hw_facts",
                    {"changed": False, "ansible_facts": {"dlsetup_hw": copy.deepcopy(self.facts[name])}},
                ),
                (
                    "Look for the state of the last provision",
                    "ansible.builtin.stat",
                    {"changed": False, "stat": {"exists": name in self.previous_state, "readable": True}},
                ),
            ]
            if name in self.previous_state:
                content = base64.b64encode(json.dumps(self.previous_state[name]).encode()).decode()
                tasks.append(
                    (
                        "Read the state of the last provision (hardware and plan then)",
                        "ansible.builtin.slurp",
                        {"changed": False, "content": content, "encoding": "base64"},
                    )
                )
            if name in self.baselines:
                content = base64.b64encode(json.dumps(self.baselines[name]).encode()).decode()
                tasks.append(
                    (
                        "Read the hardware baseline",
                        "ansible.builtin.slurp",
                        {"changed": False, "content": content, "encoding": "base64"},
                    )
                )
            result.results[name] = tasks
            result.stats[name] = HostStats(ok=len(tasks))
        return result

    def _baseline_run(self, targets: TargetSet, run_dir: Path, host_vars: dict[str, Any]) -> RunResult:
        result = RunResult(status="successful", rc=0, run_dir=run_dir)
        for name in targets.names:
            if "dlsetup_baseline" in host_vars.get(name, {}):
                self.baselines[name] = copy.deepcopy(host_vars[name]["dlsetup_baseline"])
                result.stats[name] = HostStats(ok=2, changed=1)
        return result

    def _preflight_run(self, targets: TargetSet, run_dir: Path) -> RunResult:
        failed = {n: m for n, m in self.preflight_failed.items() if n in targets.names}
        result = RunResult(status="failed" if failed else "successful", rc=2 if failed else 0, run_dir=run_dir)
        for name in targets.names:
            if name in failed:
                result.failed_tasks[name] = [FailedTask("Check that the plan's sources are reachable", failed[name])]
                result.stats[name] = HostStats(ok=1, failures=1)
            else:
                result.stats[name] = HostStats(ok=2)
        return result

    def _site_run(self, targets: TargetSet, run_dir: Path, on_event: Any) -> RunResult:
        for event in self.site_events:
            if on_event is not None:
                on_event(copy.deepcopy(event))
        result = RunResult(status=self.site_status, rc=0 if self.site_status == "successful" else 2, run_dir=run_dir)
        for name in targets.names:
            result.stats[name] = self.site_stats.get(name, HostStats(ok=42, changed=7))
        result.results = copy.deepcopy(self.site_results)
        result.failed_tasks = {
            host: [FailedTask(*t) for t in tasks] for host, tasks in copy.deepcopy(self.site_failed_tasks).items()
        }
        result.unreachable = dict(self.site_unreachable)
        for event in self.site_events:  # what the real runner keeps of them (the skipped tasks)
            if event.get("event") == "runner_on_skipped":
                runner._collect(result, event)
        return result


@pytest.fixture
def fake_runner(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> FakeRunner:
    fake = FakeRunner(tmp_path / "fake-runs")
    monkeypatch.setattr(runner, "run_playbook", fake)
    return fake


@dataclass
class StubVerify:
    """Stands in for ``dlsetup.verify.suite_runner.run_suite``: answers ``hosts`` (host → report entry) for every
    host it gets."""

    hosts: dict[str, dict[str, Any]] = field(default_factory=dict)
    calls: list[dict[str, Any]] = field(default_factory=list)

    def __call__(
        self,
        targets: TargetSet,
        facts: Mapping[str, HostFacts],
        expectations: Mapping[str, Any],
        **kwargs: Any,
    ) -> VerifyReport:
        # recorded as the Facts JSON the suite receives
        as_json = {name: host.to_dict() for name, host in facts.items()}
        self.calls.append({"targets": targets, "facts": as_json, "expectations": dict(expectations), **kwargs})
        work_dir: Path = kwargs["work_dir"]
        work_dir.mkdir(parents=True, exist_ok=True)
        log = work_dir / "verify.log"
        log.write_text("stub\n")
        return VerifyReport.from_dict({"hosts": {n: copy.deepcopy(self.hosts[n]) for n in facts}}, log)


@pytest.fixture
def stub_verify(monkeypatch: pytest.MonkeyPatch) -> StubVerify:
    stub = StubVerify()
    monkeypatch.setattr(suite_runner, "run_suite", stub)
    return stub


# ------------------------------------------------------------------------------------------------
# the CLI


@pytest.fixture
def state_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """Run logs and artifacts of this test under tmp_path, never in the user's ~/.local/state."""
    path = tmp_path / "state"
    monkeypatch.setenv("DLSETUP_STATE_DIR", str(path))
    yield path


Invoke = Callable[..., Result]


@pytest.fixture
def cli(state_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Invoke:
    """``cli("facts", "localhost", "--format", "json")`` → click's Result (stdout and stderr apart)."""
    runner_ = CliRunner()
    # Plain text on a wide terminal, so rich neither colours nor wraps the lines the tests look for, whatever
    # $COLUMNS / $FORCE_COLOR were when the consoles were created at import.
    for console in (cli_module.out, cli_module.err):
        monkeypatch.setattr(console, "_width", 250)
        monkeypatch.setattr(console, "_force_terminal", False)
        monkeypatch.setattr(console, "_color_system", None)

    def invoke(*args: str, input: str | None = None) -> Result:
        return runner_.invoke(
            app, list(args), input=input, env={"COLUMNS": "250", "FORCE_COLOR": None, "TTY_COMPATIBLE": None}
        )

    return invoke
