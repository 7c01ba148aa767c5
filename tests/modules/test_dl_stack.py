"""The dl_stack role run by Ansible against localhost, on its own (docs/roles.md "dl_stack").

Every scenario runs ``roles: [dl_stack]`` with ``--check`` through ansible-runner, with the role's variables as a
user would set them. Most point ``dl_stack_venv_path`` at a real virtual environment made for the test, in which
``torch`` and ``jax`` are stand-ins installed as distributions (so pip, in check mode, finds them) that report the
versions and GPU counts the scenario gives: the smoke test's probes, assertions and ``pip check`` then run for
real. One scenario uses the default path, which does not exist here, and nothing may appear there. The last test
runs the smoke tasks alone without check mode (they are read-only).
"""

from __future__ import annotations

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

ansible_runner = pytest.importorskip("ansible_runner")

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
HOST_PYTHON = "/usr/bin/python3"
DEFAULT_VENV = Path("/opt/dlsetup/venv")
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


@dataclass
class Run:
    """What one host (one scenario) of a run did: its task events in order, and the run's log."""

    name: str
    failures: int
    events: list[dict[str, Any]] = field(default_factory=list)
    stdout: str = ""

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
    runs = {host: Run(host, int(failures.get(host, 0)), [], stdout) for host in hosts}
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
    venvs = tmp / "venvs"
    wheels = tmp / "wheels"
    wheels.mkdir()
    plugin = ("jax-cuda12-plugin",)
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
        "cpu": {
            "dl_stack_venv_path": str(
                _venv(
                    template_venv,
                    venvs / "cpu",
                    {"version": "2.7.1+cpu", "cuda": None, "count": 0},
                    {"version": "0.7.1", "gpus": 0},
                )
            ),
            "dl_stack_torch_version": "2.7.1",
            "dl_stack_torch_variant": "cpu",
            "dl_stack_jax_extra": "cpu",
            "dl_stack_expected_gpus": 2,
        },
        "cuda-ok": {
            **CUDA_PLAN,
            "dl_stack_venv_path": str(_venv(template_venv, venvs / "ok", TORCH_CU126, JAX_2_GPUS, plugin)),
        },
        "torch-sees-one": {
            **CUDA_PLAN,
            "dl_stack_venv_path": str(
                _venv(
                    template_venv,
                    venvs / "one",
                    {**TORCH_CU126, "count": 1, "warning": "CUDA initialization: found no NVIDIA driver"},
                    JAX_2_GPUS,
                    plugin,
                )
            ),
        },
        "torch-cpu-build": {
            **CUDA_PLAN,
            "dl_stack_venv_path": str(
                _venv(
                    template_venv,
                    venvs / "cpubuild",
                    {"version": "2.7.1", "cuda": None, "count": 0},
                    JAX_2_GPUS,
                    plugin,
                )
            ),
        },
        "jax-on-cpu": {
            **CUDA_PLAN,
            "dl_stack_venv_path": str(
                _venv(template_venv, venvs / "jaxcpu", TORCH_CU126, {"version": "0.7.1", "gpus": 0}, plugin)
            ),
        },
        # the CUDA plugin is missing: pip's check mode sees jax and says unchanged; the real run installs it
        "jax-plugin-missing": {
            **CUDA_PLAN,
            "dl_stack_venv_path": str(
                _venv(template_venv, venvs / "noplugin", TORCH_CU126, {"version": "0.7.1", "gpus": 0})
            ),
        },
        # jax is not installed yet: pip would change the environment, the smoke test waits for the real run
        "jax-pending": {**CUDA_PLAN, "dl_stack_venv_path": str(_venv(template_venv, venvs / "pending", TORCH_CU126))},
        "refused": {
            "dl_stack_torch_index_url": TORCH_INDEX,
            "dl_stack_jax_version": "0.7.1",
            "dl_stack_expected_gpus": -1,
        },
        "refused-extra": {"dl_stack_jax_extra": "jax[cuda12]==0.7.1", "dl_stack_jax_version": "0.7.1"},
        "no-wheelhouse": {"dl_stack_torch_version": "2.7.1", "dl_stack_wheelhouse": str(tmp / "no-such-dir")},
    }
    existed = DEFAULT_VENV.exists()
    result = _run("check", tmp, scenarios)
    assert DEFAULT_VENV.exists() == existed, "check mode created the default environment"
    yield result


def _args(run: Run, task: str) -> dict[str, Any]:
    args: dict[str, Any] = run.task(task)["res"]["invocation"]["module_args"]
    return args


TORCH_TASK = "Install the planned PyTorch build"
OTHER_TASK = "Install JAX and the other requirements"
TORCH_CHECK = "Check that torch sees the planned GPUs"
JAX_CHECK = "Check that jax sees the planned GPUs"


def test_a_fresh_host_gets_jax_with_the_planned_extra_in_the_same_venv(runs: dict[str, Run]) -> None:
    run = runs["fresh"]
    run.ok()
    assert _args(run, TORCH_TASK)["name"] == ["torch==2.7.1"]
    other = _args(run, OTHER_TASK)
    # torch named again: JAX's CUDA libraries must fit the installed torch's pins
    assert other["name"] == ["jax[cuda13]==0.7.1", "torch==2.7.1"]
    assert other["virtualenv"] == _args(run, TORCH_TASK)["virtualenv"] == str(DEFAULT_VENV)
    assert run.task(OTHER_TASK)["res"]["changed"] is True
    # no environment yet: nothing to import in check mode
    assert not run.ran("Import torch in the virtual environment (read-only)")
    assert not run.ran("Import jax in the virtual environment (read-only)")


def test_a_cpu_plan_installs_cpu_jax_and_counts_no_gpus(runs: dict[str, Run]) -> None:
    run = runs["cpu"]
    run.ok()
    # jax[cpu]: jax with its CPU jaxlib (plain jax names no jaxlib in older releases)
    assert _args(run, OTHER_TASK)["name"][0] == "jax[cpu]"
    assert run.task(OTHER_TASK)["res"]["changed"] is False  # the stand-in jax is there
    assert run.ran("Import torch in the virtual environment (read-only)")
    assert run.ran("Import jax in the virtual environment (read-only)")
    # a cpu variant and a CPU jax are not counted, though dl_stack_expected_gpus is 2
    assert not run.ran(TORCH_CHECK) and not run.ran(JAX_CHECK)
    assert run.ran("Check the environment's requirements (pip check, read-only)")
    report = run.task("Report the framework versions")["res"]["msg"]
    assert '"version": "2.7.1+cpu"' in report and '"backend": "cpu"' in report


def test_cuda_builds_that_see_the_planned_gpus_pass(runs: dict[str, Run]) -> None:
    run = runs["cuda-ok"]
    run.ok()
    assert _args(run, OTHER_TASK)["name"][0] == "jax[cuda12]"
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
    ],
)
def test_a_wrong_gpu_count_fails_with_its_reason(runs: dict[str, Run], scenario: str, task: str, cause: str) -> None:
    run = runs[scenario]
    assert run.failures == 1
    [(failed_task, line)] = run.failed
    assert failed_task == task
    assert line.startswith(cause), line


def test_a_missing_cuda_plugin_is_left_to_the_real_run_in_check_mode(runs: dict[str, Run]) -> None:
    run = runs["jax-plugin-missing"]
    run.ok()
    assert run.ran("Say that the real run installs JAX's CUDA plugin (check mode)")
    assert (
        "jax-cuda12-plugin is not installed"
        in run.task("Say that the real run installs JAX's CUDA plugin (check mode)")["res"]["msg"]
    )
    assert not run.ran(JAX_CHECK)
    assert run.ran(TORCH_CHECK)


def test_check_mode_leaves_the_smoke_test_to_the_real_run_when_pip_would_change_something(
    runs: dict[str, Run],
) -> None:
    run = runs["jax-pending"]
    run.ok()
    assert run.task(OTHER_TASK)["res"]["changed"] is True
    assert run.ran("Say that the real run does the smoke test (check mode)")
    assert not run.ran("Import torch in the virtual environment (read-only)")
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
