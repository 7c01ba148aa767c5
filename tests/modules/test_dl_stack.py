"""The dl_stack role run by Ansible against localhost, on its own (docs/roles.md "dl_stack").

Most scenarios run ``roles: [dl_stack]`` with ``--check`` through ansible-runner, with the role's variables as a
user would set them. Most point ``dl_stack_venv_path`` at a build made for the test (a symlink to a real virtual
environment with its ``dlsetup-build.json``), in which ``torch`` and ``jax`` are stand-ins installed as
distributions that report the versions and GPU counts the scenario gives: the smoke test's probes, assertions and
``pip check`` then run for real. One scenario uses the default path, which does not exist here, and nothing may
appear there. One test runs the smoke tasks alone without check mode (they are read-only).

The build lifecycle runs for real (root, no check mode except where said): two small stand-in torch wheels of the
same version, ``2.7.1+cu126`` and ``2.7.1+cu130``, and a stand-in jax, in local file:// PEP 503 indexes built with
``tests/integration/standin.py``; a variant change builds a new venv beside the current one and switches the
symlink, a re-run changes nothing, a kept build is switched back to without pip, a virtual environment of an
earlier dlsetup (a real directory at the path) is moved into the builds directory, and ``tasks_from: prune``
keeps ``dl_stack_keep_venvs`` builds and nothing else. Check mode changes nothing (a snapshot of the tree).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from dlsetup.run.runner import failure_line
from dlsetup.verify.probes import BuildRecord, JaxProbe, PlannedBuild, TorchProbe, judge_build

ansible_runner = pytest.importorskip("ansible_runner")

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "integration"))
import standin  # noqa: E402  (tests/integration is not a package)

BIN = Path(sys.executable).parent
HOST_PYTHON = "/usr/bin/python3"
DEFAULT_VENV = Path("/opt/dlsetup/venv")
DEFAULT_VENVS = Path("/opt/dlsetup/venvs")
RECORD = "dlsetup-build.json"
HOST_PYTHON_MINOR = subprocess.run(
    [HOST_PYTHON, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
    capture_output=True,
    text=True,
    check=False,
).stdout.strip()
# placeholders: no test names a real index
TORCH_INDEX = "http://torch-wheels.invalid/whl/cu126"
GENERAL_INDEX = "http://pypi-mirror.invalid/simple"
TASK_EVENTS = {"runner_on_ok", "runner_on_skipped", "runner_on_failed"}


def _unavailable() -> str | None:
    if os.geteuid() != 0:
        return "needs root (the role runs with become on localhost)"
    if "ID=debian" not in (Path("/etc/os-release").read_text() if Path("/etc/os-release").exists() else ""):
        return "needs a Debian machine (apt simulates the role's packages here)"
    if subprocess.run([HOST_PYTHON, "-c", "import apt"], capture_output=True, check=False).returncode != 0:
        return f"needs python3-apt for {HOST_PYTHON}"
    return None


pytestmark = pytest.mark.skipif(_unavailable() is not None, reason=_unavailable() or "")

# ---------------------------------------------------------------------------------------------------------------
# Stand-ins for torch and jax: what they report comes from a JSON file next to them.

TORCH_STUB = """\
import json, pathlib
_seen = json.loads((pathlib.Path(__file__).parent / "seen.json").read_text())
__version__ = _seen["version"]


class version:
    cuda = _seen["cuda"]


class cuda:
    @staticmethod
    def device_count():
        if _seen.get("warning"):
            import warnings
            warnings.warn(_seen["warning"])
        return _seen["count"]
"""
JAX_STUB = """\
import json, pathlib
_seen = json.loads((pathlib.Path(__file__).parent / "seen.json").read_text())
__version__ = _seen["version"]


def devices(backend=None):
    if backend == "gpu" and not _seen["gpus"]:
        raise RuntimeError("Unknown backend: 'gpu' requested, but no platforms that are instances of gpu are "
                           "present. Platforms present are: cpu")
    return ["gpu"] * _seen["gpus"] if backend == "gpu" else ["cpu"]


def default_backend():
    return "gpu" if _seen["gpus"] else "cpu"
"""


def _site_packages(venv: Path) -> Path:
    return next((venv / "lib").glob("python3*/site-packages"))


def _distribution(site: Path, name: str, version: str, code: str | None = None, seen: Any = None) -> None:
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (info / "INSTALLER").write_text("test\n")
    (info / "RECORD").write_text("")
    if code is not None:
        package = site / name
        package.mkdir()
        (package / "__init__.py").write_text(code)
        (package / "seen.json").write_text(json.dumps(seen))


@pytest.fixture(scope="module")
def template_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One real ``python3 -m venv`` (with pip) for the module; scenarios get copies (venv takes seconds)."""
    path = tmp_path_factory.mktemp("template") / "venv"
    subprocess.run([HOST_PYTHON, "-m", "venv", str(path)], check=True, capture_output=True)
    return path


def _venv(
    template: Path,
    path: Path,
    torch: Mapping[str, Any] | None = None,
    jax: Mapping[str, Any] | None = None,
    plugins: tuple[str, ...] = (),
) -> Path:
    """A virtual environment at ``path`` with stand-ins for torch, jax and the CUDA plugins as given."""
    shutil.copytree(template, path, symlinks=True)
    for script in (path / "bin").iterdir():  # pip's scripts name their interpreter by its absolute path
        if script.is_file() and not script.is_symlink() and script.read_bytes().startswith(b"#!"):
            script.write_text(script.read_text().replace(str(template), str(path)))
    site = _site_packages(path)
    if torch is not None:
        _distribution(site, "torch", torch["version"], TORCH_STUB, torch)
    if jax is not None:
        _distribution(site, "jax", jax["version"], JAX_STUB, jax)
    for plugin in plugins:
        _distribution(site, plugin, jax["version"] if jax else "0.7.1")
    return path


def _identity(role_vars: Mapping[str, Any]) -> dict[str, Any]:
    """What the role records as the identity of the build ``role_vars`` ask for (docs/roles.md "dl_stack")."""
    extra = role_vars.get("dl_stack_jax_extra") or ""
    jax = extra if extra.startswith("jax") else (f"jax[{extra}]" if extra else "")
    if jax and role_vars.get("dl_stack_jax_version"):
        jax += "==" + role_vars["dl_stack_jax_version"]
    return {
        "torch_version": role_vars.get("dl_stack_torch_version") or "",
        "torch_variant": role_vars.get("dl_stack_torch_variant") or "",
        "torch_index_url": role_vars.get("dl_stack_torch_index_url") or "",
        "jax_requirement": jax,
        "extra_packages": list(role_vars.get("dl_stack_extra_packages") or []),
        "jupyter": bool(role_vars.get("dl_stack_jupyter")),
        "python": HOST_PYTHON_MINOR,
    }


def _build(
    template: Path,
    root: Path,
    role_vars: Mapping[str, Any],
    torch: Mapping[str, Any] | None = None,
    jax: Mapping[str, Any] | None = None,
    plugins: tuple[str, ...] = (),
) -> dict[str, Any]:
    """A current build as the role leaves it: ``root/venvs/current`` (stand-ins as given, a complete record of the
    build ``role_vars`` ask for) and the symlink ``root/venv`` to it. Returns ``role_vars`` with that path."""
    build = _venv(template, root / "venvs" / "current", torch, jax, plugins)
    record = {"format": 1, "build_id": "current", "complete": True, "created": "2025-01-01T00:00:00Z"}
    (build / RECORD).write_text(json.dumps({**record, "identity": _identity(role_vars)}))
    (root / "venv").symlink_to(build)
    return {**role_vars, "dl_stack_python": HOST_PYTHON, "dl_stack_venv_path": str(root / "venv")}


def _snapshot(root: Path) -> dict[str, str]:
    """Every path under ``root``: a symlink's target, a file's sha256, or "dir" (what check mode must not change)."""
    found: dict[str, str] = {}
    for base, dirs, files in os.walk(root):
        for name in [*dirs, *files]:
            path = Path(base) / name
            if path.is_symlink():
                found[str(path)] = "-> " + os.readlink(path)
            elif path.is_dir():
                found[str(path)] = "dir"
            else:
                found[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


@dataclass
class Run:
    """What one host (one scenario) of a run did: its task events in order, and the run's log."""

    name: str
    failures: int
    events: list[dict[str, Any]] = field(default_factory=list)
    stdout: str = ""
    changed: int = 0

    def task(self, name: str) -> dict[str, Any]:
        found = [e for e in self.events if e.get("task") == name and e.get("role") == "dl_stack"]
        assert found, f"{self.name}: no task {name!r}\n{self.summary()}"
        return found[0]

    def ran(self, name: str) -> bool:
        return bool(self.task(name)["event"] == "runner_on_ok")

    def summary(self) -> str:
        """Each dl_stack task: its event and, when it changed, that (for assertion messages)."""
        return "\n".join(
            f"{e['event']} {e['task']}{' (changed)' if e.get('res', {}).get('changed') else ''}"
            for e in self.events
            if e.get("role") == "dl_stack"
        )

    @property
    def failed(self) -> list[tuple[str, str]]:
        return [(e["task"], failure_line(e["res"])) for e in self.events if e["event"] == "runner_on_failed"]

    def ok(self) -> None:
        assert self.events and self.failures == 0 and not self.failed, f"{self.name}: {self.failed}\n{self.summary()}"


def _run(
    name: str, tmp: Path, hosts: Mapping[str, Mapping[str, Any]], *, check: bool = True, tasks_from: str = ""
) -> dict[str, Run]:
    """One playbook run of the role on localhost, once per scenario: each scenario is a host of the inventory
    (local connection) whose host variables are the role variables, as dlsetup passes them."""
    private = tmp / name
    private.mkdir(parents=True)
    local = {"ansible_connection": "local", "ansible_python_interpreter": HOST_PYTHON}
    inventory = {"all": {"hosts": {host: {**local, **role_vars} for host, role_vars in hosts.items()}}}
    (private / "hosts.yml").write_text(yaml.safe_dump(inventory))
    role: dict[str, Any] = {"name": "dl_stack", **({"tasks_from": tasks_from} if tasks_from else {})}
    play = {
        "name": "dl_stack on its own",
        "hosts": "all",
        "become": True,
        "gather_facts": True,
        "gather_subset": ["!all", "min"],  # the OS facts the role asserts on
        "tasks": [{"name": "The role", "ansible.builtin.include_role": role}],
    }
    playbook = private / "play.yml"
    playbook.write_text(yaml.safe_dump([play], sort_keys=False))
    runner = ansible_runner.run(
        private_data_dir=str(private),
        playbook=str(playbook),
        inventory=str(private / "hosts.yml"),
        envvars={
            "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
            "ANSIBLE_ROLES_PATH": str(REPO / "roles"),
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_LOCALHOST_WARNING": "False",
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
        },
        cmdline="--check --diff" if check else None,
        forks=6,
        quiet=True,
        suppress_env_files=True,
    )
    stdout = runner.stdout.read() if runner.stdout else ""
    failures = (runner.stats or {}).get("failures") or {}
    changed = (runner.stats or {}).get("changed") or {}
    runs = {host: Run(host, int(failures.get(host, 0)), [], stdout, int(changed.get(host, 0))) for host in hosts}
    for event in runner.events:
        data = event.get("event_data") or {}
        if event.get("event") in TASK_EVENTS and data.get("host") in runs:
            runs[data["host"]].events.append({**data, "event": event["event"]})
    return runs


TORCH_CU126 = {"version": "2.7.1+cu126", "cuda": "12.6", "count": 2}
JAX_2_GPUS = {"version": "0.7.1", "gpus": 2}
CUDA_PLAN = {
    "dl_stack_torch_version": "2.7.1",
    "dl_stack_torch_index_url": TORCH_INDEX,
    "dl_stack_torch_variant": "cu126",
    "dl_stack_jax_extra": "cuda12",
    "dl_stack_expected_gpus": 2,
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, template_venv: Path) -> Iterator[dict[str, Run]]:
    tmp = tmp_path_factory.mktemp("dl_stack")
    builds = tmp / "builds"
    wheels = tmp / "wheels"
    wheels.mkdir()
    plugin = ("jax-cuda12-plugin",)
    cpu_plan = {
        "dl_stack_torch_version": "2.7.1",
        "dl_stack_torch_variant": "cpu",
        "dl_stack_jax_extra": "cpu",
        "dl_stack_expected_gpus": 2,
    }
    scenarios: dict[str, dict[str, Any]] = {
        # the default path, absent here: nothing is created, the smoke test waits for a real run
        "fresh": {
            "dl_stack_torch_version": "2.7.1",
            "dl_stack_jax_extra": "cuda13",
            "dl_stack_jax_version": "0.7.1",
            "dl_stack_index_url": GENERAL_INDEX,
            "dl_stack_wheelhouse": str(wheels),
            "dl_stack_expected_gpus": 2,
        },
        "cpu": _build(
            template_venv,
            builds / "cpu",
            cpu_plan,
            {"version": "2.7.1+cpu", "cuda": None, "count": 0},
            {"version": "0.7.1", "gpus": 0},
        ),
        "cuda-ok": _build(template_venv, builds / "ok", CUDA_PLAN, TORCH_CU126, JAX_2_GPUS, plugin),
        "torch-sees-one": _build(
            template_venv,
            builds / "one",
            CUDA_PLAN,
            {**TORCH_CU126, "count": 1, "warning": "CUDA initialization: found no NVIDIA driver"},
            JAX_2_GPUS,
            plugin,
        ),
        "torch-cpu-build": _build(
            template_venv, builds / "cpubuild", CUDA_PLAN, {"version": "2.7.1", "cuda": None, "count": 0}, JAX_2_GPUS
        ),
        "jax-on-cpu": _build(
            template_venv, builds / "jaxcpu", CUDA_PLAN, TORCH_CU126, {"version": "0.7.1", "gpus": 0}, plugin
        ),
        # the current build lost its CUDA plugin: no pip runs for the same build, so check mode fails as a real run
        "jax-plugin-missing": _build(
            template_venv, builds / "noplugin", CUDA_PLAN, TORCH_CU126, {"version": "0.7.1", "gpus": 0}
        ),
        # the current build is another one (cu118): a real run makes the planned build first, then tests it
        "build-pending": {
            **_build(
                template_venv,
                builds / "pending",
                {**CUDA_PLAN, "dl_stack_torch_variant": "cu118"},
                {"version": "2.7.1+cu118", "cuda": "11.8", "count": 2},
                JAX_2_GPUS,
                plugin,
            ),
            "dl_stack_torch_variant": "cu126",
        },
        "refused": {
            "dl_stack_torch_index_url": TORCH_INDEX,
            "dl_stack_jax_version": "0.7.1",
            "dl_stack_expected_gpus": -1,
        },
        "refused-extra": {"dl_stack_jax_extra": "jax[cuda12]==0.7.1", "dl_stack_jax_version": "0.7.1"},
        "no-wheelhouse": {"dl_stack_torch_version": "2.7.1", "dl_stack_wheelhouse": str(tmp / "no-such-dir")},
    }
    existed = DEFAULT_VENV.exists(), DEFAULT_VENVS.exists()
    before = _snapshot(builds)
    result = _run("check", tmp, scenarios)
    assert (DEFAULT_VENV.exists(), DEFAULT_VENVS.exists()) == existed, "check mode created the default environment"
    assert _snapshot(builds) == before, "check mode changed a build"
    yield result


def _installs(run: Run) -> dict[str, Any]:
    """What check mode says a real run installs into the new build (commands do not run in check mode)."""
    said: dict[str, Any] = run.task(INSTALLS)["res"]["msg"]
    return said


TORCH_TASK = "Install the planned PyTorch build"
OTHER_TASK = "Install JAX and the other requirements"
VENV_TASK = "Create the build's virtual environment"
TORCH_CHECK = "Check that torch sees the planned GPUs"
JAX_CHECK = "Check that jax sees the planned GPUs"
TORCH_IMPORT = "Import torch in the virtual environment (read-only)"
JAX_IMPORT = "Import jax in the virtual environment (read-only)"
PENDING = "Say that the real run does the smoke test (check mode)"
WHICH = "Say which build this run uses"
SWITCH = "Switch the virtual environment's path to the build"
INSTALLS = "Say what a real run installs into the build (check mode)"


def test_a_fresh_host_gets_jax_with_the_planned_extra_in_the_same_new_build(runs: dict[str, Run]) -> None:
    run = runs["fresh"]
    run.ok()
    said = _installs(run)
    torch = said["torch"]
    assert torch[1:] == ["-m", "pip", "install", "torch==2.7.1"]
    build = Path(torch[0]).parent.parent
    assert (
        build.parent == DEFAULT_VENVS and build.name == said["build"] and build.name.startswith("torch2.7.1-default-")
    )
    # torch named again: JAX's CUDA libraries must fit the installed torch's pins
    assert said["other"] == [torch[0], "-m", "pip", "install", "jax[cuda13]==0.7.1", "torch==2.7.1"]
    assert said["venv"] == ["python3", "-m", "venv", str(build)]
    # the wheel directory only, no index
    assert said["torch_pip_env"]["PIP_NO_INDEX"] == "1" and said["torch_pip_env"]["PIP_FIND_LINKS"].endswith("wheels")
    for task in (VENV_TASK, TORCH_TASK, OTHER_TASK):
        assert run.task(task)["event"] == "runner_on_skipped", task
    assert "Check mode: a real run builds torch2.7.1-default-" in run.task(WHICH)["res"]["msg"]
    # no build yet: nothing to import in check mode
    assert run.ran(PENDING)
    assert not run.ran(TORCH_IMPORT) and not run.ran(JAX_IMPORT)
    assert run.task(SWITCH)["res"]["changed"] is True


def test_a_cpu_plan_counts_no_gpus_and_installs_nothing_into_the_current_build(runs: dict[str, Run]) -> None:
    run = runs["cpu"]
    run.ok()
    assert "is the current one" in run.task(WHICH)["res"]["msg"]
    for task in (VENV_TASK, TORCH_TASK, OTHER_TASK):
        assert run.task(task)["event"] == "runner_on_skipped", task
    assert run.ran(TORCH_IMPORT) and run.ran(JAX_IMPORT)
    # a cpu variant and a CPU jax are not counted, though dl_stack_expected_gpus is 2
    assert not run.ran(TORCH_CHECK) and not run.ran(JAX_CHECK)
    assert run.ran("Check the environment's requirements (pip check, read-only)")
    report = run.task("Report the framework versions")["res"]["msg"]
    assert '"version": "2.7.1+cpu"' in report and '"backend": "cpu"' in report
    assert run.task(SWITCH)["res"]["changed"] is False


def test_cuda_builds_that_see_the_planned_gpus_pass(runs: dict[str, Run]) -> None:
    run = runs["cuda-ok"]
    run.ok()
    assert run.ran(TORCH_CHECK) and run.ran(JAX_CHECK), run.summary()


@pytest.mark.parametrize(
    ("scenario", "task", "cause"),
    [
        (
            "torch-sees-one",
            TORCH_CHECK,
            "torch 2.7.1+cu126 (CUDA 12.6) sees 1 GPU(s), the plan has 2: CUDA initialization: found no NVIDIA "
            "driver (is the NVIDIA driver loaded",
        ),
        (
            "torch-cpu-build",
            TORCH_CHECK,
            f"torch 2.7.1 is a CPU-only build, but the plan wants the cu126 variant ({TORCH_INDEX}) (is the",
        ),
        (
            "jax-on-cpu",
            JAX_CHECK,
            "jax 0.7.1 (jax[cuda12]) sees 0 GPU(s), the plan has 2; its backend is cpu: Unknown backend: 'gpu' "
            "requested, but no platforms that are instances of gpu are present. Platforms present are: cpu (CUDA "
            "plugins installed: jax-cuda12-plugin;",
        ),
        # the same build is not installed again, so check mode says what the real run would: the plugin is gone
        ("jax-plugin-missing", JAX_CHECK, "jax 0.7.1 (jax[cuda12]) sees 0 GPU(s), the plan has 2;"),
    ],
)
def test_a_wrong_gpu_count_fails_with_its_reason(runs: dict[str, Run], scenario: str, task: str, cause: str) -> None:
    run = runs[scenario]
    assert run.failures == 1
    [(failed_task, line)] = run.failed
    assert failed_task == task
    assert line.startswith(cause), line
    assert not any(e["task"] == SWITCH for e in run.events)  # a build that fails its smoke test is not switched to


def test_check_mode_leaves_the_smoke_test_to_the_real_run_when_it_makes_a_build(runs: dict[str, Run]) -> None:
    run = runs["build-pending"]
    run.ok()
    assert "Check mode: a real run builds torch2.7.1-cu126-" in run.task(WHICH)["res"]["msg"]
    assert "the current build (current) stays" in run.task(WHICH)["res"]["msg"]
    assert run.task(TORCH_TASK)["event"] == "runner_on_skipped"  # a command: check mode runs nothing, says it
    assert _installs(run)["torch_pip_env"]["PIP_INDEX_URL"] == TORCH_INDEX
    assert run.ran(PENDING)
    assert not run.ran(TORCH_IMPORT)
    assert not run.ran("Check the environment's requirements (pip check, read-only)")


def test_settings_that_cannot_work_are_refused_with_their_reasons(runs: dict[str, Run]) -> None:
    [(task, line)] = runs["refused"].failed
    assert task == "Refuse framework settings that cannot work as asked"
    assert line.startswith('dl_stack: dl_stack_jax_version "0.7.1" needs dl_stack_jax_extra')
    assert "dl_stack_torch_index_url is set but dl_stack_torch_version is empty" in line
    assert "dl_stack_expected_gpus must be 0 (no count) or more, not -1" in line
    [(task, line)] = runs["refused-extra"].failed
    assert (
        line
        == 'dl_stack: dl_stack_jax_extra "jax[cuda12]==0.7.1" already has a version: leave dl_stack_jax_version empty'
    )
    assert not any(e["task"] == TORCH_TASK for e in runs["refused"].events)


def test_a_missing_wheel_directory_is_refused(runs: dict[str, Run]) -> None:
    [(task, line)] = runs["no-wheelhouse"].failed
    assert task == "Refuse a wheel directory that is not there"
    assert "no-such-dir is not a directory on no-wheelhouse: every pip install comes from it alone" in line


def test_the_smoke_test_fails_in_a_real_run_when_the_cuda_plugin_is_missing(
    tmp_path: Path, template_venv: Path
) -> None:
    """Without check mode (the smoke tasks alone: they only read), the same environment as "jax-plugin-missing"
    fails: jax sees no GPU."""
    venv = _venv(template_venv, tmp_path / "venv", TORCH_CU126, {"version": "0.7.1", "gpus": 0})
    runs = _run(
        "real", tmp_path, {"real": {**CUDA_PLAN, "dl_stack_venv_path": str(venv)}}, check=False, tasks_from="smoke"
    )
    [(task, line)] = runs["real"].failed
    assert task == JAX_CHECK
    assert "sees 0 GPU(s), the plan has 2" in line and "CUDA plugins installed: none" in line


# ---------------------------------------------------------------------------------------------------------------
# The build lifecycle, for real: stand-in wheels from local indexes, venvs made by the role.

STANDIN_TORCH = '''\
"""dlsetup test stand-in for PyTorch (NOT PyTorch): a build that reports its version, its CUDA and two GPUs."""
__version__ = @VERSION@


class version:
    cuda = @CUDA@


class cuda:
    @staticmethod
    def device_count():
        return 2
'''
STANDIN_JAX = '''\
"""dlsetup test stand-in for JAX (NOT JAX): sees two GPUs."""
__version__ = "0.7.1"


def devices(backend=None):
    return ["gpu", "gpu"] if backend == "gpu" else ["cpu"]


def default_backend():
    return "gpu"
'''


@dataclass
class Lifecycle:
    """The runs of the lifecycle, by step, and what the tree looked like around the check-mode ones."""

    root: Path
    steps: dict[str, dict[str, Run]] = field(default_factory=dict)
    unchanged_by_check: dict[str, bool] = field(default_factory=dict)
    links: dict[str, dict[str, str]] = field(default_factory=dict)  # step → host → the symlink's target after it
    builds: dict[str, dict[str, list[str]]] = field(default_factory=dict)  # step → host → the venvs/ entries
    legacy_after_first: dict[str, Any] = field(default_factory=dict)  # the moved venv of an earlier dlsetup
    records: dict[str, dict[str, Any]] = field(default_factory=dict)  # step → host → the current build's record

    def venv(self, host: str) -> Path:
        return self.root / host / "venv"

    def venvs(self, host: str) -> Path:
        return self.root / host / "venvs"


@pytest.fixture(scope="module")
def lifecycle(tmp_path_factory: pytest.TempPathFactory, template_venv: Path) -> Lifecycle:
    root = tmp_path_factory.mktemp("lifecycle")
    index = root / "index"
    for variant, cuda in (("cu126", "12.6"), ("cu130", "13.0")):
        version = f"2.7.1+{variant}"
        code = STANDIN_TORCH.replace("@VERSION@", repr(version)).replace("@CUDA@", repr(cuda))
        wheel = standin.build_wheel(
            root / "wheels" / variant, "torch", version, {"torch/__init__.py": code}, summary="stand-in (not torch)"
        )
        standin.add_to_index(index / "whl" / variant, [wheel])
    jax = standin.build_wheel(
        root / "wheels",
        "jax",
        "0.7.1",
        {"jax/__init__.py": STANDIN_JAX},
        summary="stand-in (not JAX)",
        extras=("cpu", "cuda12", "cuda13"),
    )
    standin.add_to_index(index / "simple", [jax])
    hosts = root / "hosts"

    def plan(host: str, variant: str) -> dict[str, Any]:
        return {
            "dl_stack_python": HOST_PYTHON,
            "dl_stack_venv_path": str(hosts / host / "venv"),
            "dl_stack_torch_version": "2.7.1",
            "dl_stack_torch_variant": variant,
            "dl_stack_torch_index_url": (index / "whl" / variant).as_uri(),
            "dl_stack_jax_extra": "cuda12",
            "dl_stack_index_url": (index / "simple").as_uri(),
            "dl_stack_expected_gpus": 2,
        }

    def prune(host: str, keep: int) -> dict[str, Any]:
        return {"dl_stack_venv_path": str(hosts / host / "venv"), "dl_stack_keep_venvs": keep}

    # a host provisioned by an earlier dlsetup: a real virtual environment at the path, with a file of the user's
    (hosts / "legacy").mkdir(parents=True)
    legacy = _venv(template_venv, hosts / "legacy" / "venv", TORCH_CU126, JAX_2_GPUS)
    (legacy / "notes.txt").write_text("mine\n")
    # what prune must leave alone: a directory without a record, and one whose record names another directory
    (hosts / "variant" / "venvs" / "mine").mkdir(parents=True)
    (hosts / "variant" / "venvs" / "other").mkdir()
    (hosts / "variant" / "venvs" / "other" / RECORD).write_text(json.dumps({"format": 1, "build_id": "x"}))

    life = Lifecycle(hosts)
    sequence: list[tuple[str, bool, str, dict[str, dict[str, Any]]]] = [
        ("check-first", True, "", {"variant": plan("variant", "cu126"), "legacy": plan("legacy", "cu126")}),
        ("first", False, "", {"variant": plan("variant", "cu126"), "legacy": plan("legacy", "cu126")}),
        ("again", False, "", {"variant": plan("variant", "cu126"), "legacy": plan("legacy", "cu126")}),
        ("check-cu130", True, "", {"variant": plan("variant", "cu130")}),
        ("cu130", False, "", {"variant": plan("variant", "cu130")}),
        ("cu130-again", False, "", {"variant": plan("variant", "cu130")}),
        ("back-to-cu126", False, "", {"variant": plan("variant", "cu126")}),
        ("check-prune", True, "prune", {"variant": prune("variant", 1), "legacy": prune("legacy", 1)}),
        ("prune", False, "prune", {"variant": prune("variant", 2), "legacy": prune("legacy", 1)}),
        ("prune-one", False, "prune", {"variant": prune("variant", 1), "legacy": prune("legacy", 1)}),
    ]
    for step, check, tasks_from, scenario in sequence:
        before = _snapshot(hosts)
        life.steps[step] = _run(step, root / "runs", scenario, check=check, tasks_from=tasks_from)
        if check:
            life.unchanged_by_check[step] = _snapshot(hosts) == before
        life.links[step] = {
            host: os.readlink(life.venv(host)) if life.venv(host).is_symlink() else "" for host in ("variant", "legacy")
        }
        life.builds[step] = {
            host: sorted(p.name for p in life.venvs(host).iterdir()) if life.venvs(host).is_dir() else []
            for host in ("variant", "legacy")
        }
        life.records[step] = {
            host: _record(life.venv(host)) if (life.venv(host) / RECORD).exists() else {}
            for host in ("variant", "legacy")
        }
        if step == "first":
            moved = [p for p in life.venvs("legacy").glob("legacy-*")]
            life.legacy_after_first = {
                "moved": [p.name for p in moved],
                "notes": [(p / "notes.txt").read_text() for p in moved],
                "record": [_record(p) for p in moved],
                "torch": [_torch_in(p) for p in moved],
            }
    return life


def _record(path: Path) -> dict[str, Any]:
    record: dict[str, Any] = json.loads((path / RECORD).read_text())
    return record


def _torch_in(venv: str | Path) -> str:
    probe = "import json, torch; print(json.dumps([torch.__version__, torch.version.cuda]))"
    out = subprocess.run([f"{venv}/bin/python", "-c", probe], capture_output=True, text=True, check=True).stdout
    return " ".join(json.loads(out))


def test_check_mode_changes_nothing_in_the_lifecycle(lifecycle: Lifecycle) -> None:
    for step in ("check-first", "check-cu130", "check-prune"):
        for run in lifecycle.steps[step].values():
            run.ok()
    assert lifecycle.unchanged_by_check == {"check-first": True, "check-cu130": True, "check-prune": True}
    legacy = lifecycle.steps["check-first"]["legacy"]
    note = legacy.task("Say how a real run moves the earlier virtual environment (check mode)")["res"]["msg"]
    assert "a real run moves it, unchanged, to " in note and "/legacy/venvs/legacy-" in note
    assert legacy.task(SWITCH)["event"] == "runner_on_skipped"
    # check mode said what the real prune removes
    removed = lifecycle.steps["check-prune"]["legacy"].task("Remove the builds beyond dl_stack_keep_venvs")
    assert removed["res"]["changed"] is True


def test_the_first_build_is_a_venv_beside_the_path_which_becomes_a_symlink_to_it(lifecycle: Lifecycle) -> None:
    run = lifecycle.steps["first"]["variant"]
    run.ok()
    target = Path(lifecycle.links["first"]["variant"])
    assert target.parent == lifecycle.venvs("variant") and target.name.startswith("torch2.7.1-cu126-")
    record = lifecycle.records["first"]["variant"]
    assert record["build_id"] == target.name and record["complete"] is True and record["format"] == 1
    assert record["identity"] == {
        "torch_version": "2.7.1",
        "torch_variant": "cu126",
        "torch_index_url": (lifecycle.root.parent / "index" / "whl" / "cu126").as_uri(),
        "jax_requirement": "jax[cuda12]",
        "extra_packages": [],
        "jupyter": False,
        "python": HOST_PYTHON_MINOR,
    }
    assert record["installed"] == {"jax": "0.7.1", "torch": "2.7.1+cu126"}
    assert _torch_in(lifecycle.venv("variant")) == "2.7.1+cu126 12.6"
    assert run.ran(TORCH_CHECK) and run.ran(JAX_CHECK)  # the smoke test ran on the new build


def test_a_venv_of_an_earlier_dlsetup_is_moved_into_the_builds_and_kept(lifecycle: Lifecycle) -> None:
    lifecycle.steps["first"]["legacy"].ok()
    moved = lifecycle.legacy_after_first
    [legacy] = moved["moved"]
    # moved unchanged (the user's file, its torch), and described by a record that says what it is
    assert moved["notes"] == ["mine\n"] and moved["torch"] == ["2.7.1+cu126 12.6"]
    [record] = moved["record"]
    assert record["build_id"] == legacy and record["legacy"] is True and record["complete"] is True
    assert record["identity"] is None
    # the path names the new build (made and smoke-tested beside it); the earlier venv stays until pruned
    new = Path(lifecycle.links["first"]["legacy"]).name
    assert new.startswith("torch2.7.1-cu126-")
    assert lifecycle.builds["first"]["legacy"] == sorted([legacy, new])


def test_a_second_run_changes_nothing(lifecycle: Lifecycle) -> None:
    for step in ("again", "cu130-again"):
        for host, run in lifecycle.steps[step].items():
            run.ok()
            assert run.changed == 0, f"{step} {host}: {run.summary()}"
            assert "is the current one" in run.task(WHICH)["res"]["msg"]
            assert run.task(VENV_TASK)["event"] == "runner_on_skipped"


def test_a_variant_change_with_the_same_torch_version_builds_and_switches(lifecycle: Lifecycle) -> None:
    run = lifecycle.steps["cu130"]["variant"]
    run.ok()
    old, new = Path(lifecycle.links["again"]["variant"]), Path(lifecycle.links["cu130"]["variant"])
    assert new.name.startswith("torch2.7.1-cu130-") and new.parent == old.parent
    assert run.task(VENV_TASK)["res"]["changed"] is True
    assert run.task(SWITCH)["res"]["changed"] is True
    assert {old.name, new.name} <= set(lifecycle.builds["cu130"]["variant"])  # the old build stays
    assert lifecycle.records["cu130"]["variant"]["installed"]["torch"] == "2.7.1+cu130"
    check = lifecycle.steps["check-cu130"]["variant"]
    assert "Check mode: a real run builds torch2.7.1-cu130-" in check.task(WHICH)["res"]["msg"]
    # what verify makes of the role's record: the planned cu130 build passes, the earlier cu126 plan fails
    record = BuildRecord.parse(json.dumps(lifecycle.records["cu130"]["variant"]))
    torch, jax = TorchProbe(torch="2.7.1+cu130", cuda_build="13.0"), JaxProbe(jax="0.7.1")
    index = (lifecycle.root.parent / "index" / "whl").as_uri()
    cu130 = PlannedBuild("2.7.1", "cu130", f"{index}/cu130", "jax[cuda12]")
    assert judge_build(cu130, record, torch, jax, venv="v").status == "pass"
    cu126 = judge_build(PlannedBuild("2.7.1", "cu126", f"{index}/cu126", "jax[cuda12]"), record, torch, jax, venv="v")
    assert cu126.status == "fail" and "torch is the cu130 wheel, the plan chose cu126" in cu126.message


def test_a_kept_build_is_switched_back_to_without_pip(lifecycle: Lifecycle) -> None:
    run = lifecycle.steps["back-to-cu126"]["variant"]
    run.ok()
    assert lifecycle.links["back-to-cu126"]["variant"] == lifecycle.links["first"]["variant"]
    assert "is kept in" in run.task(WHICH)["res"]["msg"]
    for task in (VENV_TASK, TORCH_TASK, OTHER_TASK):
        assert run.task(task)["event"] == "runner_on_skipped", task
    assert run.ran(TORCH_CHECK)  # its smoke test ran again before the switch
    assert run.changed == 1 and run.task(SWITCH)["res"]["changed"] is True
    assert _torch_in(lifecycle.venv("variant")) == "2.7.1+cu126 12.6"


def test_prune_keeps_the_current_build_and_the_newest_others_and_nothing_else(lifecycle: Lifecycle) -> None:
    current = Path(lifecycle.links["back-to-cu126"]["variant"]).name
    cu130 = Path(lifecycle.links["cu130"]["variant"]).name
    for step in ("prune", "prune-one"):
        for run in lifecycle.steps[step].values():
            run.ok()
    # keep 2: both builds stay; the directories dlsetup did not make are never touched
    assert lifecycle.builds["prune"]["variant"] == sorted([current, cu130, "mine", "other"])
    assert lifecycle.steps["prune"]["variant"].changed == 0
    # keep 1: only the current one (and what is not a build)
    assert lifecycle.builds["prune-one"]["variant"] == sorted([current, "mine", "other"])
    assert lifecycle.links["prune-one"]["variant"] == lifecycle.links["back-to-cu126"]["variant"]
    # the legacy host: the earlier venv went with keep 1, the current build stayed; pruning again changes nothing
    assert lifecycle.steps["prune"]["legacy"].changed == 1
    assert lifecycle.steps["prune-one"]["legacy"].changed == 0
    assert lifecycle.builds["prune-one"]["legacy"] == [Path(lifecycle.links["first"]["legacy"]).name]
    assert _torch_in(lifecycle.venv("variant")) == "2.7.1+cu126 12.6"
