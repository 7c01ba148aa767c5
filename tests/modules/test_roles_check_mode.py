"""The roles run for real by Ansible against localhost, in check mode (docs/roles.md).

Several plans go through ``playbooks/site.yml`` with ``--check --diff`` through ansible-runner: Debian 12 with
the distribution's driver, Debian 12 with NVIDIA's repository (placeholder URL, nothing is fetched), and the
Ubuntu paths by overriding the distribution facts. The tests read the rendered files and the package lists from
the runner events, and compare a snapshot of this machine's state before and after: check mode changes nothing.

Also here: ``ansible-playbook --syntax-check`` and ``ansible-lint --profile production``, and the repository key
check run for real (not in check mode) against a key made for the test, with every path in a temporary
directory.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from dlsetup.facts.hwparse import collector
from dlsetup.facts.model import HostFacts
from dlsetup.facts.record import HostRecord
from dlsetup.plan.load import load_compat_data

ansible_runner = pytest.importorskip("ansible_runner")

REPO = Path(__file__).resolve().parents[2]
PLAYBOOKS = REPO / "playbooks"
BIN = Path(sys.executable).parent
HOST_PYTHON = "/usr/bin/python3"
OS_RELEASE = Path("/etc/os-release")
# A placeholder: no test ever names NVIDIA's real host.
REPO_URL = "http://nvidia-repo.invalid/compute/cuda/repos/{directory}/x86_64"
KEY_FINGERPRINT = "EB693B3035CD5710E231E123A4B469963BF863CC"


def _unavailable() -> str | None:
    if os.geteuid() != 0:
        return "needs root (the roles run with become on localhost)"
    if "ID=debian" not in (OS_RELEASE.read_text() if OS_RELEASE.exists() else ""):
        return "needs a Debian machine (the check-mode runs simulate apt here)"
    probe = subprocess.run([HOST_PYTHON, "-c", "import apt"], capture_output=True, check=False)
    if probe.returncode != 0:
        return f"needs python3-apt for {HOST_PYTHON}"
    return None


pytestmark = pytest.mark.skipif(_unavailable() is not None, reason=_unavailable() or "")

# ---------------------------------------------------------------------------------------------------------------
# Plans, as dlsetup's Plan.to_extravars() would give them (host variables).


def _patterns(family: str) -> dict[str, Any]:
    """The driver package patterns the plan hands to the nvidia_driver role, from dlsetup's data."""
    row = load_compat_data().package_patterns(family)
    return {
        "nvidia_driver_pin_packages": list(row.pin_packages),
        "nvidia_driver_other_flavor_packages": row.other_flavor("proprietary"),
        "nvidia_driver_branch_named_packages": row.branch_named_packages,
    }


def _this_machine() -> HostFacts:
    """This machine's facts as dlsetup gathers them before a run (what the record is built from)."""

    def run(argv: list[str]) -> tuple[int, str, str]:
        out = subprocess.run(argv, capture_output=True, text=True, check=False)
        return out.returncode, out.stdout, out.stderr

    return HostFacts.from_dict(collector.collect(run, nvidia_smi_path=shutil.which("nvidia-smi")))


DEB12_DISTRIBUTION = {
    "nvidia_driver_enabled": True,
    "nvidia_driver_source": "distribution",
    "nvidia_driver_branch": "535",
    "nvidia_driver_flavor": "proprietary",
    "nvidia_driver_packages": ["linux-headers-amd64", "nvidia-kernel-dkms", "nvidia-driver"],
    "cuda_enabled": True,
    "cuda_source": "distribution",
    "cuda_version": "11.8",
    "cuda_packages": ["nvidia-cuda-toolkit"],
    "dl_stack_enabled": True,
    "dl_stack_torch_version": "2.7.1",
    "dl_stack_torch_index_url": "http://wheels.invalid/whl/cu118",
    "dl_stack_jax_extra": "cuda12",
    "laptop_enabled": False,
    "laptop_prime_mode": None,
    "laptop_mem_sleep_default": None,
    "dlsetup_plan": {"os": "debian-12", "driver": {"branch": "535", "flavor": "proprietary"}, "reboot_required": True},
    **_patterns("debian"),
}
DEB12_DISTRIBUTION["dlsetup_state"] = HostRecord.of(_this_machine(), DEB12_DISTRIBUTION["dlsetup_plan"]).to_dict()
DEB12_NVIDIA = {
    "nvidia_driver_enabled": True,
    "nvidia_driver_source": "nvidia",
    "nvidia_driver_branch": "580",
    "nvidia_driver_flavor": "open",
    "nvidia_driver_packages": ["nvidia-driver-pinning-580", "linux-headers-amd64", "nvidia-open"],
    "cuda_enabled": True,
    "cuda_source": "nvidia",
    "cuda_version": "12.8",
    "cuda_packages": ["cuda-toolkit-12-8", "cudnn9-cuda-12", "libnccl2", "libnccl-dev"],
    "cuda_cudnn_version": "9.10.2",
    "dl_stack_enabled": False,
    "dl_stack_torch_version": None,
    "dl_stack_jax_extra": None,
    "laptop_enabled": False,
    "nvidia_driver_repo_url": REPO_URL.format(directory="debian12"),
    "cuda_repo_url": REPO_URL.format(directory="debian12"),
    **_patterns("debian"),
    "nvidia_driver_other_flavor_packages": load_compat_data().package_patterns("debian").other_flavor("open"),
}
UBUNTU_NOBLE = {
    "nvidia_driver_enabled": True,
    "nvidia_driver_source": "distribution",
    "nvidia_driver_branch": "580",
    "nvidia_driver_flavor": "proprietary",
    "nvidia_driver_packages": ["linux-modules-nvidia-580-generic", "nvidia-driver-580"],
    "cuda_enabled": True,
    "cuda_source": "nvidia",
    "cuda_version": "12.8",
    "cuda_packages": ["cuda-toolkit-12-8", "cudnn9-cuda-12"],
    "dl_stack_enabled": False,
    "laptop_enabled": True,
    "laptop_profile": "xps15-optimus",
    "laptop_prime_mode": "on-demand",
    "laptop_mem_sleep_default": None,
    "nvidia_driver_repo_url": REPO_URL.format(directory="ubuntu2404"),
    "cuda_repo_url": REPO_URL.format(directory="ubuntu2404"),
    **_patterns("ubuntu"),
}
# Facts that make this machine look like a VM with a kernel of its own (so the kernel module, nouveau,
# Secure Boot and reboot tasks render), and like Ubuntu 24.04.
OWN_KERNEL = {"ansible_virtualization_type": "kvm", "ansible_virtualization_role": "guest", "ansible_is_chroot": False}
UBUNTU_FACTS = {
    "ansible_distribution": "Ubuntu",
    "ansible_distribution_version": "24.04",
    "ansible_distribution_major_version": "24",
    "ansible_distribution_release": "noble",
}

# What "nothing changed on this machine" is checked against.
WATCHED_DIRS = (
    "/etc/apt/sources.list.d",
    "/etc/apt/preferences.d",
    "/etc/apt/apt.conf.d",
    "/etc/apt/keyrings",
    "/etc/modprobe.d",
    "/etc/ansible",
    "/var/lib/dlsetup",
    "/opt/dlsetup",
    "/etc/profile.d",
    "/etc/default",
)


def _snapshot() -> dict[str, str]:
    state: dict[str, str] = {}
    for top in WATCHED_DIRS:
        root = Path(top)
        if not root.exists():
            state[top] = "missing"
            continue
        for path in sorted(root.rglob("*")):
            if path.is_file():
                state[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
            elif path.is_dir():
                state[str(path)] = "dir"
    for name, argv in {
        "dpkg-selections": ["dpkg", "--get-selections"],
        "dpkg-versions": ["dpkg-query", "-W", "-f", "${Package} ${Version} ${Status}\n"],
    }.items():
        state[name] = hashlib.sha256(subprocess.run(argv, capture_output=True, check=True).stdout).hexdigest()
    return state


@dataclass
class Run:
    """One playbook run: status, per-host stats and the task events in order."""

    name: str
    status: str
    rc: int
    stats: dict[str, Any]
    events: list[dict[str, Any]] = field(default_factory=list)
    stdout: str = ""

    def tasks(self, name: str, role: str | None = None) -> list[dict[str, Any]]:
        """Event data of every result (ok, changed, skipped, failed) of the tasks with this name."""
        return [e for e in self.events if e.get("task") == name and (role is None or e.get("role") == role)]

    def one(self, name: str, role: str | None = None) -> dict[str, Any]:
        found = self.tasks(name, role)
        assert found, f"{self.name}: no task {name!r}"
        return found[0]

    def after(self, name: str, role: str | None = None) -> str:
        """The file content a template/copy task renders (its --diff 'after'; the first run that rendered)."""
        rendered = [e["res"]["diff"] for e in self.tasks(name, role) if e.get("res", {}).get("diff")]
        assert rendered, f"{self.name}: task {name!r} rendered nothing"
        diff = rendered[0][0] if isinstance(rendered[0], list) else rendered[0]
        return str(diff["after"])

    def index(self, name: str, role: str | None = None) -> int:
        return next(i for i, e in enumerate(self.events) if e.get("task") == name and e.get("role") == role)

    def planned_packages(self, install_task: str, role: str) -> list[str]:
        """The packages a real run installs: those apt simulated in the install task plus those the apt probe
        (check mode) lists as coming from a source this same run adds."""
        at = self.index(install_task, role)
        install = self.events[at]
        simulated = list(install.get("res", {}).get("invocation", {}).get("module_args", {}).get("name") or [])
        probe = [
            e
            for e in self.events[:at]
            if e.get("task") == PROBE_DEBUG and e.get("role") == "base" and e["event"] == "runner_on_ok"
        ]
        later = probe[-1]["res"]["msg"]["packages"] if probe else []
        return simulated + list(later)

    def driver_packages(self) -> list[str]:
        """The driver packages a real run installs: what the nvidia_driver role's one apt transaction (simulated, or
        listed where apt does not know them yet) installs."""
        return list(self.one(DRIVER_TASK, "nvidia_driver")["res"]["install"])


DRIVER_TASK = "Install, switch and hold the driver packages in one apt transaction"
PROBE_DEBUG = "Show the packages a real run installs once their source is in place (check mode)"
TASK_EVENTS = {"runner_on_ok", "runner_on_skipped", "runner_on_failed"}


def _run(
    name: str,
    playbook: Path,
    tmp: Path,
    host_vars: Mapping[str, Any],
    extravars: Mapping[str, Any] | None = None,
    *,
    check: bool = True,
    skip_tags: str | None = None,
    tags: str | None = None,
) -> Run:
    private = tmp / name
    private.mkdir(parents=True)
    inventory = private / "hosts.yml"
    host = {"ansible_connection": "local", "ansible_python_interpreter": HOST_PYTHON, **host_vars}
    inventory.write_text(yaml.safe_dump({"all": {"hosts": {"localhost": host}}}))
    runner = ansible_runner.run(
        private_data_dir=str(private),
        playbook=str(playbook),
        inventory=str(inventory),
        extravars=dict(extravars or {}),
        envvars={
            "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
            "ANSIBLE_ROLES_PATH": str(REPO / "roles"),
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_LOCALHOST_WARNING": "False",
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
        },
        cmdline="--check --diff" if check else "--diff",
        skip_tags=skip_tags,
        tags=tags,
        quiet=True,
        suppress_env_files=True,
    )
    events = []
    for event in runner.events:
        if event.get("event") in TASK_EVENTS:
            data = dict(event["event_data"])
            data["event"] = event["event"]
            events.append(data)
    stdout = runner.stdout.read() if runner.stdout else ""
    return Run(name, str(runner.status), int(runner.rc), dict(runner.stats or {}), events, stdout)


@pytest.fixture(scope="module")
def check_runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Run]]:
    """Every check-mode scenario, run in parallel (apt in check mode only reads), with a snapshot around them."""
    tmp = tmp_path_factory.mktemp("check")
    site = PLAYBOOKS / "site.yml"
    scenarios = {
        # The real site.yml as dlsetup runs it: hw_facts first, this machine's own facts.
        "site": (site, DEB12_DISTRIBUTION, {}, None, None),
        "deb12-distribution": (site, DEB12_DISTRIBUTION, OWN_KERNEL, "role::hw_facts", None),
        "deb12-nvidia": (site, DEB12_NVIDIA, OWN_KERNEL, "role::hw_facts", None),
        "ubuntu-noble": (site, UBUNTU_NOBLE, {**OWN_KERNEL, **UBUNTU_FACTS}, "role::hw_facts", None),
        # source nvidia without a repository URL: the role refuses with a clear message
        "no-repo-url": (
            PLAYBOOKS / "driver.yml",
            {**DEB12_NVIDIA, "nvidia_driver_repo_url": ""},
            {},
            None,
            "role::nvidia_driver",
        ),
    }
    before = _snapshot()
    with ThreadPoolExecutor(max_workers=len(scenarios)) as pool:
        futures = {
            name: pool.submit(_run, name, playbook, tmp, host_vars, extra, skip_tags=skip, tags=tags)
            for name, (playbook, host_vars, extra, skip, tags) in scenarios.items()
        }
        runs = {name: future.result() for name, future in futures.items()}
    after = _snapshot()
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    runs["_changed_paths"] = changed  # type: ignore[assignment]
    yield runs


def _ok(run: Run) -> None:
    failed = [(e.get("task"), e["res"].get("msg")) for e in run.events if e["event"] == "runner_on_failed"]
    assert run.status == "successful" and run.rc == 0, f"{run.name}: {failed}\n{run.stdout[-3000:]}"


def _sources_module() -> Any:
    spec = importlib.util.spec_from_file_location(
        "dlsetup_apt_sources", REPO / "roles/base/library/dlsetup_apt_sources.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------------------------------------------------------


def test_check_mode_changes_nothing_on_this_machine(check_runs: dict[str, Any]) -> None:
    assert check_runs["_changed_paths"] == []


def test_site_yml_as_dlsetup_runs_it(check_runs: dict[str, Run]) -> None:
    run = check_runs["site"]
    _ok(run)
    facts = run.one("Gather dlsetup hardware facts", "hw_facts")["res"]["ansible_facts"]["dlsetup_hw"]
    state = yaml.safe_load(run.after("Record the applied plan and the GPUs on PCI"))
    assert state["plan"] == {k: v for k, v in DEB12_DISTRIBUTION["dlsetup_plan"].items() if k != "reboot_required"}
    assert [g["pci_bus_id"] for g in state["gpus"]] == [g["pci_bus_id"] for g in facts["gpus"]]
    # a container (as this machine may be) gets no kernel packages; otherwise it gets all of them
    wanted = run.driver_packages()
    kernel = [p for p in DEB12_DISTRIBUTION["nvidia_driver_packages"] if p.startswith("linux-")]
    skipped_kernel = run.one("Leave the kernel packages out in a container", "nvidia_driver")["event"] == "runner_on_ok"
    expected = [p for p in DEB12_DISTRIBUTION["nvidia_driver_packages"] if not (skipped_kernel and p in kernel)]
    assert sorted(wanted) == sorted(expected)


def test_debian_components_are_added_from_the_hosts_own_sources(check_runs: dict[str, Run]) -> None:
    run = check_runs["deb12-distribution"]
    _ok(run)
    src = _sources_module()
    exclude = "/etc/apt/sources.list.d/dlsetup-debian.sources"
    codename = next(
        line.split("=", 1)[1].strip()
        for line in OS_RELEASE.read_text().splitlines()
        if line.startswith("VERSION_CODENAME=")
    )
    suites = [codename, f"{codename}-updates", f"{codename}-security"]
    components = ["contrib", "non-free", "non-free-firmware"]
    expected = src.missing_stanzas(
        src.read_entries("/", exclude), suites, components, "/usr/share/keyrings/debian-archive-keyring.gpg"
    )
    task = "Add the missing components in dlsetup's own sources file (the host's own files stay untouched)"
    if not expected:
        assert run.one(task, "base")["event"] == "runner_on_skipped"
        return
    text = run.after(task, "base")
    stanzas = [s for s in text.split("\n\n") if "Types:" in s]
    assert len(stanzas) == len(expected)
    for rendered, want in zip(stanzas, expected, strict=True):
        assert f"URIs: {' '.join(want['uris'])}\n" in rendered
        assert f"Suites: {' '.join(want['suites'])}\n" in rendered
        assert f"Components: {' '.join(want['components'])}\n" in rendered
        assert f"Signed-By: {want['signed_by']}" in rendered
        assert "Types: deb\n" in rendered


def test_debian_distribution_driver(check_runs: dict[str, Run]) -> None:
    run = check_runs["deb12-distribution"]
    pin = run.after("Pin the driver packages to the planned branch (apt preferences)", "nvidia_driver")
    assert "Pin: version 535.*\nPin-Priority: 1001\n" in pin
    assert "Package: nvidia-* libnvidia-* " in pin
    assert sorted(run.driver_packages()) == sorted(DEB12_DISTRIBUTION["nvidia_driver_packages"])
    assert "blacklist nouveau\n" in run.after("Blacklist nouveau", "nvidia_driver")
    # not in check mode's way: no NVIDIA repository for a distribution driver
    assert run.one("Add NVIDIA's repository, signed by the verified key only", "nvidia_driver")["event"] == (
        "runner_on_skipped"
    )
    # the machine running dlsetup is never rebooted: a marker and the fact instead
    assert run.one("Reboot to load the new NVIDIA driver", "nvidia_driver")["event"] == "runner_on_skipped"
    marker = run.one("Record that a reboot is required (this boot's id, so a later run sees when it happened)")
    assert marker["res"]["changed"] is True
    assert marker["res"]["diff"][0]["after_header"] == "/var/lib/dlsetup/reboot-required"
    fact = run.one("Tell dlsetup that a reboot is required", "base")
    assert fact["res"]["ansible_facts"] == {"dlsetup_reboot_required": True}
    record = yaml.safe_load(run.after("Record the applied plan and the GPUs on PCI"))
    assert record["plan"]["driver"]["branch"] == "535" and record["plan"]["driver"]["flavor"] == "proprietary"


def test_debian_distribution_cuda_and_frameworks(check_runs: dict[str, Run]) -> None:
    run = check_runs["deb12-distribution"]
    assert run.planned_packages("Install the CUDA toolkit, cuDNN and NCCL", "base") == ["nvidia-cuda-toolkit"]
    assert run.one("Put the CUDA toolkit on PATH and LD_LIBRARY_PATH for login shells", "cuda")["event"] == (
        "runner_on_skipped"
    )
    # a new build beside /opt/dlsetup/venv (commands do not run in check mode: the role says what a real run does)
    said = run.one("Say what a real run installs into the build (check mode)", "dl_stack")["res"]["msg"]
    python = said["torch"][0]
    assert python.startswith("/opt/dlsetup/venvs/torch2.7.1-") and python.endswith("/bin/python")
    assert said["torch"][1:] == ["-m", "pip", "install", "torch==2.7.1"]
    # torch named again so that JAX's CUDA libraries must fit the installed torch's pins
    assert said["other"] == [python, "-m", "pip", "install", "jax[cuda12]", "torch==2.7.1"]


def test_nvidia_repository_with_a_pinned_key(check_runs: dict[str, Run]) -> None:
    run = check_runs["deb12-nvidia"]
    _ok(run)
    url = REPO_URL.format(directory="debian12")
    sources = run.after("Add NVIDIA's repository, signed by the verified key only", "nvidia_driver")
    assert f"Types: deb\nURIs: {url}/\nSuites: /\nSigned-By: /etc/apt/keyrings/dlsetup-nvidia-cuda.asc\n" in sources
    assert "Components:" not in sources
    # the key tasks are there; check mode downloads nothing and says what a real run checks
    for task in (
        "Download the repository signing key to a staging file",
        "Read the downloaded key's fingerprints (read-only)",
        "Refuse the key unless it is exactly the pinned one",
        "Install the verified key as the repository's keyring",
    ):
        assert run.tasks(task, "nvidia_driver"), task
    note = run.one("Say what a real run does with the key (check mode downloads nothing)", "nvidia_driver")
    assert f"{url}/3bf863cc.pub" in note["res"]["msg"] and KEY_FINGERPRINT in note["res"]["msg"]
    pin = run.after("Pin the driver packages to the planned branch (apt preferences)", "nvidia_driver")
    assert "Pin: version 580.*\n" in pin
    assert sorted(run.driver_packages()) == sorted(DEB12_NVIDIA["nvidia_driver_packages"])
    # cuda uses the same repository tasks (and so the same keyring and sources file)
    assert len(run.tasks("Add NVIDIA's repository, signed by the verified key only", "nvidia_driver")) == 2
    assert sorted(run.planned_packages("Install the CUDA toolkit, cuDNN and NCCL", "base")) == sorted(
        DEB12_NVIDIA["cuda_packages"]
    )
    # the planned cuDNN is kept: NVIDIA's repository carries newer ones that may drop older GPUs
    cudnn_pin = run.after("Keep cuDNN at the planned version (apt preferences)", "cuda")
    assert "Package: cudnn* libcudnn*\nPin: version 9.10.2*\nPin-Priority: 1001\n" in cudnn_pin
    profile = run.after("Put the CUDA toolkit on PATH and LD_LIBRARY_PATH for login shells", "cuda")
    assert 'PATH="/usr/local/cuda-12.8/bin${PATH:+:${PATH}}"' in profile
    assert "/usr/local/cuda-12.8/lib64" in profile


def test_ubuntu_paths_render(check_runs: dict[str, Run]) -> None:
    run = check_runs["ubuntu-noble"]
    _ok(run)
    assert (
        run.one("Find the Debian archive entries that lack contrib, non-free, non-free-firmware", "base")["event"]
        == "runner_on_skipped"
    )
    pin = run.after("Pin the driver packages to the planned branch (apt preferences)", "nvidia_driver")
    assert "Package: nvidia-* libnvidia-* xserver-xorg-video-nvidia-*\nPin: version 580.*\n" in pin
    assert sorted(run.driver_packages()) == sorted(UBUNTU_NOBLE["nvidia_driver_packages"])
    secure_boot = run.one("Report the Secure Boot state", "nvidia_driver")["res"]["msg"]
    assert "signed by Canonical" in secure_boot
    sources = run.after("Add NVIDIA's repository, signed by the verified key only", "nvidia_driver")
    assert f"URIs: {REPO_URL.format(directory='ubuntu2404')}/\n" in sources
    profile = run.one("Report the laptop profile", "laptop")["res"]["msg"]
    assert "profile xps15-optimus" in profile and "PRIME on-demand" in profile
    assert run.planned_packages("Install the PRIME tools", "base") == ["nvidia-prime"]
    prime = run.one("Say what a real run selects (check mode, prime-select not installed yet)", "laptop")
    assert "prime-select on-demand" in prime["res"]["msg"]


def test_nvidia_source_without_repository_url_fails_clearly(check_runs: dict[str, Run]) -> None:
    run = check_runs["no-repo-url"]
    assert run.status == "failed"
    failed = [e for e in run.events if e["event"] == "runner_on_failed"]
    assert [e["task"] for e in failed] == ["Check that NVIDIA's repository address is set"]
    message = failed[0]["res"]["msg"]
    assert message.startswith("nvidia_driver_repo_url is empty: the plan installs from NVIDIA's CUDA repository")
    assert "--nvidia-repo" in message


# ---------------------------------------------------------------------------------------------------------------
# The repository key check, for real, with a key made here and every path in a temporary directory.


def _make_key(home: Path, out: Path) -> str:
    home.mkdir(mode=0o700)
    gpg = ["gpg", "--batch", "--homedir", str(home), "--pinentry-mode", "loopback", "--passphrase", ""]
    subprocess.run(
        [*gpg, "--quick-gen-key", "dlsetup test <test@example.invalid>", "ed25519", "sign", "never"],
        check=True,
        capture_output=True,
    )
    out.write_bytes(subprocess.run([*gpg, "--armor", "--export"], check=True, capture_output=True).stdout)
    listing = subprocess.run([*gpg, "--with-colons", "--list-keys"], check=True, capture_output=True, text=True)
    return next(line.split(":")[9] for line in listing.stdout.splitlines() if line.startswith("fpr:"))


@pytest.fixture(scope="module")
def key_repo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    if shutil.which("gpg") is None:
        pytest.skip("needs gpg")
    tmp = tmp_path_factory.mktemp("keyrepo")
    (tmp / "repo").mkdir()
    fingerprint = _make_key(tmp / "gnupg", tmp / "repo" / "test-key.pub")
    playbook = tmp / "key.yml"
    playbook.write_text(
        yaml.safe_dump(
            [
                {
                    "name": "Repository key check",
                    "hosts": "all",
                    "gather_facts": False,
                    "tasks": [
                        {
                            "name": "Fetch and check the key",
                            "ansible.builtin.include_role": {"name": "nvidia_driver", "tasks_from": "repo_key.yml"},
                        }
                    ],
                }
            ]
        )
    )
    return tmp, fingerprint


def _key_vars(tmp: Path, fingerprint: str, out: str) -> dict[str, Any]:
    return {
        "nvidia_driver_repo_url": f"file://{tmp}/repo",
        "nvidia_driver_repo_key_file": "test-key.pub",
        "nvidia_driver_repo_key_fingerprint": fingerprint,
        "__nvidia_driver_key_download": f"{tmp}/{out}/staging/key.asc",
        "__nvidia_driver_keyring": f"{tmp}/{out}/keyrings/dlsetup-nvidia-cuda.asc",
    }


def test_a_key_with_another_fingerprint_is_refused(key_repo: tuple[Path, str]) -> None:
    tmp, _fingerprint = key_repo
    run = _run("wrong", tmp / "key.yml", tmp, {}, _key_vars(tmp, KEY_FINGERPRINT, "wrong"), check=False)
    assert run.status == "failed"
    failed = [e for e in run.events if e["event"] == "runner_on_failed"]
    assert [e["task"] for e in failed] == ["Refuse the key unless it is exactly the pinned one"]
    assert f"not the pinned {KEY_FINGERPRINT}" in failed[0]["res"]["msg"]
    assert not (tmp / "wrong/keyrings/dlsetup-nvidia-cuda.asc").exists()


def test_the_pinned_key_is_installed_and_a_second_run_changes_nothing(key_repo: tuple[Path, str]) -> None:
    tmp, fingerprint = key_repo
    extravars = _key_vars(tmp, fingerprint, "right")
    first = _run("right1", tmp / "key.yml", tmp, {}, extravars, check=False)
    _ok(first)
    keyring = tmp / "right/keyrings/dlsetup-nvidia-cuda.asc"
    assert keyring.read_bytes() == (tmp / "repo/test-key.pub").read_bytes()
    assert oct(keyring.stat().st_mode & 0o777) == "0o644"
    second = _run("right2", tmp / "key.yml", tmp, {}, extravars, check=False)
    _ok(second)
    assert second.stats["changed"].get("localhost", 0) == 0


# ---------------------------------------------------------------------------------------------------------------


def test_site_yml_syntax_check() -> None:
    result = subprocess.run(
        [str(BIN / "ansible-playbook"), "--syntax-check", "-i", "localhost,", str(PLAYBOOKS / "site.yml")],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg")},
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_ansible_lint_production_profile() -> None:
    lint = BIN / "ansible-lint"
    if not lint.exists():
        pytest.skip("ansible-lint is not installed (pip install -e '.[dev]')")
    result = subprocess.run(
        [str(lint), "--profile", "production", "--nocolor"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg")},
    )
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-5000:]
