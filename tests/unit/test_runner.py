"""The runner boundary's own logic: inventory listing (real ansible-inventory), stats, run directories, and the
one-line cause of a failed task (from real captured results)."""

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from dlsetup.config.targets import resolve_targets
from dlsetup.run import runner
from dlsetup.run.skips import skip_reason
from dlsetup.ui.run import Progress, render_run_summary, skipped_summary


def test_stats_from_runner():
    stats = runner._stats(
        {"ok": {"a": 5, "b": 1}, "changed": {"a": 2}, "failures": {"b": 1}, "dark": {"c": 1}, "skipped": {}}
    )
    assert stats["a"] == runner.HostStats(ok=5, changed=2)
    assert stats["b"].failures == 1 and not stats["b"].unreachable
    assert stats["c"].unreachable


def test_run_dirs_are_private_and_rotated(tmp_path, monkeypatch):
    monkeypatch.setenv("DLSETUP_STATE_DIR", str(tmp_path))
    made = []
    for i in range(runner.KEEP_RUNS + 5):
        made.append(runner.new_run_dir(f"k{i}"))
        runner.release_run_dir(made[-1])  # an ended run
    left = sorted(p for p in (tmp_path / "runs").iterdir() if p.is_dir())
    assert left == sorted(made[-runner.KEEP_RUNS :])
    assert (tmp_path / "runs").stat().st_mode & 0o777 == 0o700
    assert (made[-1].stat().st_mode & 0o777) == 0o700
    assert (made[-1] / ".lock").stat().st_mode & 0o777 == 0o600


def test_a_live_run_survives_rotation(tmp_path, monkeypatch):
    """Another dlsetup holds its run directory (its lock) while KEEP_RUNS + 5 runs start: it is never removed,
    and it can still write there; once that process ended, the directory rotates like any other."""
    monkeypatch.setenv("DLSETUP_STATE_DIR", str(tmp_path))
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_A_RUN],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        live = Path(holder.stdout.readline().strip())
        assert live.is_dir()
        for i in range(runner.KEEP_RUNS + 5):
            runner.release_run_dir(runner.new_run_dir(f"k{i}"))
        assert live.is_dir()
        assert len([p for p in (tmp_path / "runs").iterdir() if p.is_dir()]) == runner.KEEP_RUNS
        out, _ = holder.communicate("go on\n", timeout=60)
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
    assert holder.returncode == 0 and out.strip() == "wrote"
    assert (live / "events" / "late.json").read_text() == "{}"
    runner.release_run_dir(runner.new_run_dir("after"))
    assert not live.exists()  # the oldest, and no longer live


# makes a run directory, says where, waits, then writes into it (a run still going while others start)
HOLD_A_RUN = """
import sys
from dlsetup.run import rundir
path = rundir.new_run_dir("live")
print(path, flush=True)
sys.stdin.readline()
(path / "events").mkdir()
(path / "events" / "late.json").write_text("{}")
print("wrote", flush=True)
"""


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return True
    return state in ("Z", "X")


def _wait_for(path: Path, timeout_s: float, proc: subprocess.Popen[str]) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip():
            return path.read_text().strip()
        if proc.poll() is not None:
            raise AssertionError(f"ended ({proc.returncode}) before {path} appeared: {proc.communicate()[0]}")
        time.sleep(0.1)
    raise AssertionError(f"{path} did not appear within {timeout_s}s")


# a dlsetup-like process waiting on a child through run_child; exits as the CLI does (128 + N)
WAIT_ON_A_CHILD = """
import sys
from dlsetup.errors import InterruptedRunError
from dlsetup.run import signals
child = "import os, sys, time; open(sys.argv[1], 'w').write(str(os.getpid())); time.sleep(300)"
try:
    signals.run_child([sys.executable, "-c", child, sys.argv[1]], what="the test child", grace_s=5)
except InterruptedRunError as exc:
    print(exc.message, flush=True)
    sys.exit(exc.exit_code)
sys.exit(0)
"""


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_stops_the_child_too(tmp_path: Path, signum: int, code: int) -> None:
    pid_file = tmp_path / "child.pid"
    parent = subprocess.Popen([sys.executable, "-c", WAIT_ON_A_CHILD, str(pid_file)], stdout=subprocess.PIPE, text=True)
    try:
        child = int(_wait_for(pid_file, 30, parent))
        parent.send_signal(signum)
        out, _ = parent.communicate(timeout=30)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
    assert parent.returncode == code
    assert out.strip() == f"{signal.Signals(signum).name} stopped the test child"
    deadline = time.monotonic() + 10
    while not _gone(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _gone(child)


# `dlsetup verify localhost` with a suite that blocks (paths.verify_suite_dir pointed at it)
VERIFY_WITH_A_SLOW_SUITE = """
import sys
from pathlib import Path
from dlsetup import cli, paths
suite = Path(sys.argv[1])
paths.verify_suite_dir = lambda: suite
sys.argv = ["dlsetup", "verify", "localhost"]
cli.main()
"""
SLOW_TEST = """
import os, time
def test_block():
    with open(os.environ["BLOCK_PID_FILE"], "w") as out:
        out.write(str(os.getpid()))
    time.sleep(300)
"""


def test_sigterm_during_verify_stops_pytest(tmp_path: Path) -> None:
    """SIGTERM to dlsetup while the suite runs: pytest (a real child) ends too, dlsetup exits 143."""
    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "pytest.ini").write_text("[pytest]\n")
    (suite / "test_block.py").write_text(SLOW_TEST)
    pid_file = tmp_path / "pytest.pid"
    env = dict(os.environ, DLSETUP_STATE_DIR=str(tmp_path / "state"), BLOCK_PID_FILE=str(pid_file))
    dlsetup = subprocess.Popen(
        [sys.executable, "-c", VERIFY_WITH_A_SLOW_SUITE, str(suite)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    pytest_pid = None
    try:
        pytest_pid = int(_wait_for(pid_file, 180, dlsetup))
        dlsetup.send_signal(signal.SIGTERM)
        out, _ = dlsetup.communicate(timeout=60)
        deadline = time.monotonic() + 10
        while not _gone(pytest_pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _gone(pytest_pid)
    finally:
        if dlsetup.poll() is None:
            dlsetup.kill()
            dlsetup.wait()
        if pytest_pid is not None and not _gone(pytest_pid):
            os.kill(pytest_pid, signal.SIGKILL)  # what the bug left running
    assert dlsetup.returncode == 143, out
    assert "SIGTERM stopped the verification suite on localhost" in out
    assert not list((tmp_path / "state" / "runs").glob("*/tmp"))  # the scratch folder went with the run


def test_become_password_goes_to_the_prompt_not_to_disk(tmp_path, monkeypatch):
    """-K: the password answers ansible-playbook's BECOME prompt through ansible-runner and is written nowhere."""
    monkeypatch.setenv("DLSETUP_STATE_DIR", str(tmp_path))
    seen = {}

    class FakeRunner:
        status, rc, stats = "successful", 0, {}

    def fake_run(**kwargs):
        seen.update(kwargs)
        return FakeRunner()

    monkeypatch.setattr(runner.ansible_runner, "run", fake_run)
    runner.run_playbook("site.yml", resolve_targets(["localhost"]), become_password="s3cret-pw", kind="provision")
    assert "--ask-become-pass" in seen["cmdline"]
    assert seen["passwords"] == {runner.BECOME_PROMPT: "s3cret-pw"}
    assert "s3cret-pw" not in repr(seen["extravars"]) + repr(seen["envvars"])
    written = [p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()]
    assert written and not any(b"s3cret-pw" in data for data in written)
    runner.run_playbook("site.yml", resolve_targets(["localhost"]), kind="provision")
    assert seen["passwords"] is None and seen["cmdline"] is None


# ---------------------------------------------------------------------------------------------------------------
# The cause of a failed task, from real results: tests/fixtures/run/*.json are runner_on_failed payloads captured
# from ansible-runner on localhost (tests/fixtures/run/capture.py and capture.yml say how).

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "run"
REFUSED = "the index was unreachable: Failed to establish a new connection: [Errno 111] Connection refused"


def _fixture(name: str) -> dict[str, Any]:
    payload: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text())
    assert payload["event"] == "runner_on_failed" and payload["task"] == name
    return payload


@pytest.mark.parametrize(
    ("name", "cause"),
    [
        # ansible.builtin.pip has pip's output in msg only ("stdout: Looking in indexes: ...\n:stderr: ...")
        ("pip-index-refused", f"ERROR: No matching distribution found for torch==2.7.1 ({REFUSED})"),
        ("pip-wheelhouse-no-match", "ERROR: No matching distribution found for jax[cuda12]"),
        ("command-pip-index-refused", f"ERROR: No matching distribution found for torch==2.7.1 ({REFUSED})"),
        # pip's "[notice]" lines come after its error
        ("command-pip-notice-after-error", "ERROR: No matching distribution found for dlsetup-no-such-package"),
        ("command-apt-get-missing-package", "E: Unable to locate package dlsetup-no-such-package"),
        # a traceback: the exception, not its frames
        ("command-python-traceback", "ModuleNotFoundError: No module named 'torch'"),
        # nothing on stderr: stdout's last line, not Ansible's "non-zero return code"
        ("shell-stdout-only", "torch sees 1 GPU, the plan has 2"),
        # a module's own message
        ("apt-missing-package-check-mode", "No package matching 'dlsetup-no-such-package' is available"),
    ],
)
def test_a_failed_task_shows_its_real_cause(name: str, cause: str) -> None:
    payload = _fixture(name)
    line = runner.failure_line(payload["res"])
    assert line == cause
    assert "\n" not in line
    assert not line.startswith(("Looking in", "stdout:", "non-zero return code"))


def test_the_captured_pip_failure_starts_with_the_line_that_used_to_be_shown() -> None:
    """The issue's case: pip's first line says nothing; the cause is at the end of its stderr."""
    msg = _fixture("pip-index-refused")["res"]["msg"]
    assert msg.splitlines()[0] == "stdout: Looking in indexes: http://127.0.0.1:9/simple"
    assert "Connection refused" in msg and "No matching distribution found for torch==2.7.1" in msg


@pytest.mark.parametrize(
    ("res", "cause"),
    [
        # no error line: the last line that is not pip's notice
        (
            {"stderr": "oops: disk full\n\n[notice] A new release of pip is available: 23.0.1 -> 26.2\n"},
            "oops: disk full",
        ),
        # warnings on stderr, the failure on stdout
        (
            {
                "msg": "non-zero return code",
                "rc": 2,
                "stderr": "WARNING: Running pip as the 'root' user",
                "stdout": "a\nb fails",
            },
            "b fails",
        ),
        # only a warning was printed: better than Ansible's generic message
        (
            {"msg": "non-zero return code", "rc": 1, "stderr": "W: Some index files failed to download"},
            "W: Some index files failed to download",
        ),
        # nothing printed at all: the message and the exit status
        ({"msg": "non-zero return code", "rc": 3, "stdout": "", "stderr": ""}, "non-zero return code (rc 3)"),
        # assert/fail: the message's headline
        ({"msg": "dl_stack needs Debian 12/13\nmore text", "failed": True}, "dl_stack needs Debian 12/13"),
        # a module's message that quotes a command's output
        (
            {"msg": "'/usr/bin/apt-get -y install x' failed: E: Unable to correct problems\nE: held broken packages"},
            "E: held broken packages",
        ),
        # a module that crashed: the exception at the end of module_stderr
        (
            {
                "msg": "MODULE FAILURE\nSee stdout/stderr for the exact error",
                "module_stderr": 'Traceback (most recent call last):\n  File "x.py", line 1\nImportError: no apt\n',
                "module_stdout": "",
                "rc": 1,
            },
            "ImportError: no apt",
        ),
        ({}, "failed"),
    ],
)
def test_cause_rules(res: dict[str, Any], cause: str) -> None:
    assert runner.failure_line(res) == cause


def test_a_long_cause_is_cut() -> None:
    line = runner.failure_line({"stderr": "ERROR: " + "x" * 1000})
    assert len(line) == 400 and line.endswith("…")


def _event(payload: dict[str, Any], **data: Any) -> dict[str, Any]:
    return {
        "event": payload["event"],
        "uuid": "0f6546a2-690c-4674-a855-665f80730b82",
        "counter": 11,
        "runner_ident": "65a87b54",
        "event_data": {
            "host": "rig-1",
            "task": payload["task"],
            "task_action": payload["task_action"],
            "res": payload["res"],
            **data,
        },
    }


def test_failed_tasks_carry_the_cause_and_where_the_whole_output_is(tmp_path: Path) -> None:
    result = runner.RunResult(status="failed", rc=2, run_dir=tmp_path)
    payload = _fixture("pip-index-refused")
    runner._collect(result, _event(payload))
    runner._collect(result, _event(_fixture("shell-stdout-only"), ignore_errors=True))
    [failed] = result.failed_tasks["rig-1"]
    assert failed.task == "pip-index-refused" and failed.action == "ansible.builtin.pip"
    assert failed.message == f"ERROR: No matching distribution found for torch==2.7.1 ({REFUSED})"
    assert failed.details == tmp_path / "artifacts/65a87b54/job_events/11-0f6546a2-690c-4674-a855-665f80730b82.json"
    assert failed[1] == failed.message  # facts/gather.py reads failed[0][1]

    console = Console(record=True, width=400)
    render_run_summary(console, result)
    text = console.export_text()
    assert "rig-1 failed at 'pip-index-refused': ERROR: No matching distribution found for torch==2.7.1" in text
    assert f"whole output: {failed.details}" in text
    assert "Looking in indexes" not in text


def test_progress_shows_the_cause() -> None:
    console = Console(record=True, width=400)
    Progress(console)(_event(_fixture("command-python-traceback")))
    assert "rig-1: command-python-traceback: ModuleNotFoundError: No module named 'torch'" in console.export_text()


def test_a_real_failed_run_points_at_an_event_file_with_the_whole_output(tmp_path, monkeypatch):
    """run_playbook against localhost with a task that fails: the event file named in the result exists and
    holds every line the one-line cause left out."""
    monkeypatch.setenv("DLSETUP_STATE_DIR", str(tmp_path / "state"))
    playbook = tmp_path / "fail.yml"
    playbook.write_text(
        "- hosts: all\n  gather_facts: false\n  tasks:\n    - name: Fail like pip\n"
        "      ansible.builtin.shell: 'echo Looking in indexes: nowhere; echo ERROR: no luck >&2; exit 1'\n"
        "      changed_when: false\n"
    )
    monkeypatch.setattr(runner.paths, "playbook", lambda name: playbook)
    result = runner.run_playbook("fail.yml", resolve_targets(["localhost"]), kind="test")
    assert result.status == "failed" and result.stats["localhost"].failures == 1
    [failed] = result.failed_tasks["localhost"]
    assert failed.message == "ERROR: no luck"
    assert failed.details is not None and failed.details.is_relative_to(result.run_dir)
    whole = json.loads(failed.details.read_text())
    assert whole["event_data"]["res"]["stdout"] == "Looking in indexes: nowhere"


def test_a_run_leaves_nothing_in_the_temp_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A real run on localhost: no ``.ansible-runner-*`` (nor anything else) in the temp dir of this process or of
    its children; what the run's processes need (a module's temp file here) is in the run's ``tmp/``, removed
    with the run."""
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    monkeypatch.setenv("TMPDIR", str(temp))
    monkeypatch.setenv("DLSETUP_STATE_DIR", str(tmp_path / "state"))
    playbook = tmp_path / "temp.yml"
    playbook.write_text(
        "- hosts: all\n  gather_facts: false\n  tasks:\n    - name: A temp file\n"
        "      ansible.builtin.tempfile: {state: file}\n"
    )
    monkeypatch.setattr(runner.paths, "playbook", lambda name: playbook)
    runner_dirs = len(list(Path(tempfile.gettempdir()).glob(".ansible-runner-*")))
    result = runner.run_playbook("temp.yml", resolve_targets(["localhost"]), kind="test")
    assert result.status == "successful"
    [made] = result.task_results("localhost", "ansible.builtin.tempfile")
    assert Path(made["path"]).is_relative_to(result.run_dir / "tmp")
    assert not (result.run_dir / "tmp").exists()
    assert len(list(Path(tempfile.gettempdir()).glob(".ansible-runner-*"))) == runner_dirs == 0
    assert list(temp.iterdir()) == []


def test_what_a_role_reports_reaches_the_console(tmp_path, monkeypatch):
    """A real run against localhost: a debug task's message (how the roles report package switches, Secure Boot
    steps, container notes and reboot reasons) is one console line; other ok results make none."""
    monkeypatch.setenv("DLSETUP_STATE_DIR", str(tmp_path / "state"))
    playbook = tmp_path / "say.yml"
    playbook.write_text(
        "- hosts: all\n  gather_facts: false\n  tasks:\n    - name: Say why\n      ansible.builtin.debug:\n"
        "        msg: >-\n          Switching to the open 580 driver:\n          removing nvidia-kernel-dkms first.\n"
        "    - name: Quiet\n      ansible.builtin.command: 'true'\n      changed_when: false\n"
    )
    monkeypatch.setattr(runner.paths, "playbook", lambda name: playbook)
    console = Console(record=True, width=400)
    result = runner.run_playbook("say.yml", resolve_targets(["localhost"]), kind="test", on_event=Progress(console))
    assert result.status == "successful"
    text = console.export_text()
    assert "  note    localhost: Switching to the open 580 driver: removing nvidia-kernel-dkms first." in text
    assert "Quiet" in text and "localhost: Quiet" not in text


HOST_KEYS = Path(__file__).resolve().parents[1] / "fixtures" / "collected" / "openssh-host-key-failures"


def test_a_changed_host_key_is_said_as_such() -> None:
    """ssh opens with a banner of '@' lines; the cause is the key that changed and where the old one is."""
    msg = "Failed to connect to the host via ssh: " + (HOST_KEYS / "ssh-changed-host-key.stderr").read_text()
    line = runner.unreachable_line({"msg": msg, "unreachable": True})
    assert line.startswith(
        "the host key of 10.200.1.2 has CHANGED since it was recorded (known_hosts holds another key at "
        "/tmp/dlst-gfm8ahbv/wrong_known_hosts:1): Host key verification failed"
    )
    assert "@" not in line and "\n" not in line


def test_an_unknown_host_key_keeps_both_of_ssh_s_lines() -> None:
    msg = "Failed to connect to the host via ssh: " + (HOST_KEYS / "ssh-unknown-host-key.stderr").read_text()
    assert runner.unreachable_line({"msg": msg}) == (
        "Failed to connect to the host via ssh: No ED25519 host key is known for 10.200.1.2 and you have requested "
        "strict checking. Host key verification failed."
    )


def test_other_unreachable_causes_are_the_failure_line() -> None:
    msg = "Failed to connect to the host via ssh: ssh: connect to host 192.0.2.1 port 1: Connection refused"
    assert runner.unreachable_line({"msg": msg}) == msg


def test_a_skipped_task_is_said_with_the_condition_that_was_false() -> None:
    """ansible-runner's skipped events carry no result: the condition is read from the shipped role files."""
    roles = Path(runner.paths.roles_dir())
    main = roles / "nvidia_driver" / "tasks" / "main.yml"
    lines = main.read_text().splitlines()
    own = next(i for i, line in enumerate(lines, 1) if line.startswith("- name: Check the OS and the plan"))
    assert skip_reason(f"{main}:{own}") == "nvidia_driver_enabled"  # its own when
    # a task of repo.yml without a when of its own: the import_tasks of main.yml that brought it in
    repo = roles / "nvidia_driver" / "tasks" / "repo.yml"
    first = next(i for i, line in enumerate(repo.read_text().splitlines(), 1) if line.startswith("- name:"))
    assert skip_reason(f"{repo}:{first}") == "nvidia_driver_enabled and nvidia_driver_source == 'nvidia'"
    assert skip_reason("/nonexistent/tasks/main.yml:3") == ""
    assert skip_reason("garbage") == ""


def test_the_skipped_summary_groups_by_role() -> None:
    skipped = [("laptop", "laptop_enabled")] * 3 + [("cuda", "cuda_enabled"), ("cuda", "x")] + [("", "y")]
    assert skipped_summary(skipped) == "6 tasks: laptop 3 (laptop_enabled), cuda 2 (cuda_enabled, ...), play 1 (y)"


def test_a_block_condition_and_a_task_condition_are_both_said(tmp_path: Path) -> None:
    tasks = tmp_path / "tasks.yml"
    tasks.write_text("- name: Outer\n  when: a_enabled\n  block:\n    - name: Inner\n      ansible.builtin.debug:\n"
                     "      when: b_wanted\n")  # fmt: skip
    assert skip_reason(f"{tasks}:4") == "a_enabled and b_wanted"
