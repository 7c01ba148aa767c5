"""dlsetup_framework_probe run for real by Ansible (local connection): started in the background, collected later,
the way playbooks/verify.yml uses it; what dlsetup makes of its result (dlsetup.verify.probes.collected)."""

from __future__ import annotations

import base64
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import ansible_runner
import pytest
import yaml

from dlsetup.verify.probes import BUILD_RECORD_NAME, JAX_PROBE, TORCH_PROBE, collected, probe_extravars

LIBRARY = Path(__file__).resolve().parents[2] / "roles" / "hw_facts" / "library"

pytestmark = pytest.mark.skipif(
    shutil.which("ansible", path=str(Path(sys.executable).parent)) is None, reason="no ansible"
)

PROBES = {
    # prints what it ran with, as a probe prints its one JSON line (after some noise)
    "torch": "import json, os, sys\nprint('noise')\n"
    "print(json.dumps({'torch': '2.5.1+cu124', 'python': sys.executable, 'load': os.environ['DLSETUP_PROBE_LOAD']}))",
    "jax": "import sys\nsys.stderr.write('first\\nboom: no jaxlib\\n')\nsys.exit(3)",
    "slow": "import time\ntime.sleep(30)",
}


def b64(source: str) -> str:
    return base64.b64encode(source.encode()).decode()


def play(work: Path, tasks: list[dict[str, Any]], env: dict[str, str] | None = None) -> dict[str, dict[str, Any]]:
    """Run ``tasks`` on localhost; each task's result by name (failed ones too)."""
    (work / "pd").mkdir(parents=True, exist_ok=True)
    playbook = work / "play.yml"
    playbook.write_text(yaml.safe_dump([{"hosts": "localhost", "gather_facts": False, "tasks": tasks}]))
    result = ansible_runner.run(
        private_data_dir=str(work / "pd"),
        playbook=str(playbook),
        inventory=f"localhost ansible_connection=local ansible_python_interpreter={sys.executable}",
        envvars={
            "ANSIBLE_LIBRARY": str(LIBRARY),
            "ANSIBLE_LOCAL_TEMP": str(work / "ansible-tmp"),
            "ANSIBLE_REMOTE_TEMP": str(work / "ansible-tmp"),
            "ANSIBLE_NOCOLOR": "1",
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
            **(env or {}),
        },
        quiet=True,
    )
    found: dict[str, dict[str, Any]] = {}
    for event in result.events:
        if event.get("event") in ("runner_on_ok", "runner_on_failed"):
            data = event["event_data"]
            found[data["task"]] = {**(data.get("res") or {}), "_event": event["event"]}
    assert found, f"ansible-runner ran nothing: {result.status}, {result.stdout.read()[-2000:]}"
    return found


@pytest.fixture
def host(tmp_path: Path) -> dict[str, Path]:
    """A venv with an interpreter and a build record, and the host's temp folder (TMPDIR) under tmp_path."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").symlink_to(sys.executable)
    # dlsetup's name of the record: the module, which runs on the host without dlsetup, keeps its own copy
    (venv / BUILD_RECORD_NAME).write_text('{"build_id": "b1", "complete": true}\n')
    tmp = tmp_path / "host-tmp"
    tmp.mkdir()
    return {"venv": venv, "tmp": tmp, "work": tmp_path / "work"}


def test_started_in_the_background_then_collected(host):
    stale = host["tmp"] / "dlsetup-probes-stale"  # an interrupted verify's, two days old
    stale.mkdir()
    os.utime(stale, (time.time() - 2 * 86400,) * 2)
    fresh = host["tmp"] / "dlsetup-probes-other"  # another run's, still going
    fresh.mkdir()
    args = {"venv": str(host["venv"]), "probes": {k: b64(v) for k, v in PROBES.items()}, "timeout": 5}
    results = play(
        host["work"],
        [
            {"name": "start", "dlsetup_framework_probe": args, "register": "started"},
            # the start returned while the slow probe still runs (it takes the whole 5 s time limit)
            {"name": "running", "ansible.builtin.stat": {"path": "{{ started.job }}/result.json"}},
            {"name": "collect", "dlsetup_framework_probe": {"collect": "{{ started.job }}", "timeout": 5}},
        ],
        env={"TMPDIR": str(host["tmp"])},
    )
    assert results["start"]["_event"] == "runner_on_ok", results
    job_dir = results["start"]["job"]
    assert Path(job_dir).parent == host["tmp"] and Path(job_dir).name.startswith("dlsetup-probes-")
    assert results["running"]["stat"]["exists"] is False
    job = results["collect"]["job"]
    assert job["python"] == str(host["venv"] / "bin" / "python") and job["venv_python"] is True
    assert job["build_record"] == '{"build_id": "b1", "complete": true}\n'
    torch, jax, slow = (job["outputs"][k] for k in ("torch", "jax", "slow"))
    assert torch["rc"] == 0 and not torch["timed_out"]
    assert json.loads(torch["stdout"].splitlines()[-1]) == {
        "torch": "2.5.1+cu124",
        "python": str(host["venv"] / "bin" / "python"),
        "load": "1",
    }
    assert jax["rc"] == 3 and jax["stderr"].endswith("boom: no jaxlib\n")
    assert slow["timed_out"] is True and "stopped after 5 s" in slow["stderr"]
    # collected: the job's folder and the stale one are gone, the other run's stays
    assert sorted(p.name for p in host["tmp"].iterdir()) == ["dlsetup-probes-other"]
    # what the suite gets of it: each probe's JSON, or why it printed none
    got = collected(job)
    assert got is not None
    assert got["torch"]["torch"] == "2.5.1+cu124"
    assert got["jax"] == {"error": f"probe with {host['venv']}/bin/python failed: boom: no jaxlib"}
    assert (got["venv_python"], got["build_record"]) == (True, job["build_record"])


def test_without_a_venv_python3_runs_the_probes(host, tmp_path):
    shutil.rmtree(host["venv"])
    args = {"venv": str(host["venv"]), "probes": {"torch": b64(PROBES["torch"])}, "load": False}
    results = play(
        host["work"],
        [
            {"name": "start", "dlsetup_framework_probe": args, "register": "started"},
            {"name": "collect", "dlsetup_framework_probe": {"collect": "{{ started.job }}"}},
        ],
        env={"TMPDIR": str(host["tmp"])},
    )
    job = results["collect"]["job"]
    assert (job["python"], job["venv_python"], job["build_record"]) == ("python3", False, None)
    assert json.loads(job["outputs"]["torch"]["stdout"].splitlines()[-1])["load"] == "0"
    assert list(host["tmp"].iterdir()) == []


def test_bad_arguments_fail_with_their_cause(host):
    results = play(
        host["work"],
        [
            {
                "name": "not base64",
                "dlsetup_framework_probe": {"venv": "/x", "probes": {"t": "%%%"}},
                "ignore_errors": True,
            },
            {"name": "not a job", "dlsetup_framework_probe": {"collect": str(host["tmp"])}, "ignore_errors": True},
        ],
        env={"TMPDIR": str(host["tmp"])},
    )
    assert results["not base64"]["_event"] == "runner_on_failed"
    assert "probe t is not base64-encoded Python source" in results["not base64"]["msg"]
    assert results["not a job"]["_event"] == "runner_on_failed"
    assert "is not a job of dlsetup_framework_probe" in results["not a job"]["msg"]
    assert host["tmp"].exists()  # a folder that is not a job is never removed


def test_the_probes_travel_intact_and_a_failed_job_is_not_collected():
    sent = probe_extravars()["dlsetup_verify_probes"]
    assert {k: base64.b64decode(v).decode() for k, v in sent.items()} == {"torch": TORCH_PROBE, "jax": JAX_PROBE}
    assert collected({"failed": True, "msg": "the probes did not end within 600 s"}) is None
    assert collected({"outputs": {"torch": {"stdout": "{}", "rc": 0}}}) is None  # no jax output: not usable
    printed_nothing = collected(
        {"python": "python3", "outputs": {"torch": {"stdout": "", "stderr": "", "rc": -9}, "jax": {"rc": 0}}}
    )
    assert printed_nothing is not None
    assert printed_nothing["torch"] == {"error": "probe with python3 failed: exit code -9"}
