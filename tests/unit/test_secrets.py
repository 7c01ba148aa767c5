"""No password, token or vaulted value reaches the disk: real runs on localhost (ansible-runner, the verify suite)
with secrets planted in the inventory, the environment and -K, and then every file they wrote is read; and the
redaction rules themselves."""

import json
import os
import stat
import tempfile
from pathlib import Path

import pytest

from dlsetup.commands import load_targets
from dlsetup.config.targets import HostArgs
from dlsetup.facts.model import HostFacts
from dlsetup.run import redact, runner
from dlsetup.verify import suite_runner
from dlsetup.verify.expect import Expectations

REPO = Path(__file__).resolve().parents[2]
PLANTED = b"PLANTED-"
INVENTORY = """\
all:
  hosts:
    localhost:
      ansible_connection: local
      ansible_python_interpreter: "{{ ansible_playbook_python }}"
      ansible_become_password: PLANTED-inventory-become
      ansible_ssh_pass: PLANTED-inventory-ssh
      vault_db_password: PLANTED-inventory-vault
      mirror_url: https://lab:PLANTED-url-token@mirror.example/simple
"""
# prints every secret it can reach, in results, stdout and stderr, and fails with one
PLAYBOOK = """\
- hosts: all
  gather_facts: false
  tasks:
    - name: Say the token
      ansible.builtin.debug:
        msg: "token {{ lookup('ansible.builtin.env', 'MY_API_TOKEN') }}"
    - name: Show the become password
      ansible.builtin.debug:
        var: ansible_become_password
    - name: Echo the environment's secrets
      ansible.builtin.shell: 'echo "MY_API_TOKEN=$MY_API_TOKEN become=$ANSIBLE_BECOME_PASS {{ mirror_url }}"'
      changed_when: false
    - name: Fail with a secret on stderr
      ansible.builtin.shell: 'echo "no luck with {{ vault_db_password }}" >&2; exit 1'
      changed_when: false
"""


@pytest.fixture
def planted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A state dir, a temp dir for this process and its children, an inventory and an environment with secrets."""
    monkeypatch.setenv("DLSETUP_STATE_DIR", str(tmp_path / "state"))
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    monkeypatch.setenv("TMPDIR", str(temp))
    monkeypatch.setenv("ANSIBLE_BECOME_PASS", "PLANTED-env-become")
    monkeypatch.setenv("MY_API_TOKEN", "PLANTED-env-token")
    (tmp_path / "hosts.yml").write_text(INVENTORY)
    return tmp_path


def _targets(where: Path):
    inventory = where / "hosts.yml"
    return load_targets(HostArgs(("localhost",), inventory))


def _written(where: Path) -> list[Path]:
    """Every file a run wrote: the state dir, and the temp dir (where ``.ansible-runner-*`` would be)."""
    return [p for root in (where / "state", where / "tmp") for p in root.rglob("*") if p.is_file()]


def _holding_secrets(files: list[Path]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for path in files:
        data = path.read_bytes()
        if PLANTED in data:
            found[str(path)] = [line for line in data.decode(errors="replace").splitlines() if "PLANTED-" in line][:3]
    return found


def _assert_private(state: Path) -> None:
    for path in (state / "runs").rglob("*"):
        mode = stat.S_IMODE(path.lstat().st_mode)
        if path.is_dir():
            assert mode == 0o700, path
        else:
            assert mode in (0o600, 0o700) and not mode & 0o077, (path, oct(mode))


def test_a_run_writes_no_secret(planted: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The run dir (ansible-runner's command, its events, our log), the temp dir: no planted value anywhere,
    every file 0600, every folder 0700; the results in memory keep the values, and the run works."""
    playbook = planted / "secrets.yml"
    playbook.write_text(PLAYBOOK)
    monkeypatch.setattr(runner.paths, "playbook", lambda name: playbook)
    result = runner.run_playbook(
        "secrets.yml",
        _targets(planted),
        kind="secrets",
        become_password="PLANTED-ask-become",
        extravars={"lab_api_token": "PLANTED-extravar-token"},
    )
    assert result.status == "failed"
    assert result.task_results("localhost", "ansible.builtin.debug")[0]["msg"] == "token PLANTED-env-token"
    [failed] = result.failed_tasks["localhost"]
    assert failed.message == "no luck with <redacted>"  # the cause shown is read from the redacted event
    files = _written(planted)
    assert any(p.name == "command" for p in files) and any(p.parent.name == "job_events" for p in files)
    log = result.log_path.read_text()
    assert "TASK [Echo the environment's secrets]" in log and "MY_API_TOKEN=<redacted>" in log
    assert _holding_secrets(files) == {}
    assert not [p for p in (planted / "tmp").iterdir()]  # no /tmp/.ansible-runner-* (nor anything else)
    _assert_private(planted / "state")


def test_verify_writes_no_secret_and_the_suite_still_gets_them(planted: Path, monkeypatch: pytest.MonkeyPatch):
    """The verify inventory, context, log and report hold no planted value; pytest's hosts still have the
    inventory's passwords (testinfra reads them to connect), through its environment."""
    suite = planted / "suite"
    suite.mkdir()
    (suite / "pytest.ini").write_text("[pytest]\n")
    (suite / "test_probe.py").write_text(
        "import json, os\n"
        "def test_probe(host):\n"
        "    hostvars = host.ansible.get_variables()\n"
        "    seen = {k: hostvars.get(k) for k in ('ansible_become_password', 'ansible_ssh_pass')}\n"
        "    ok = seen == {'ansible_become_password': 'PLANTED-inventory-become',\n"
        "                  'ansible_ssh_pass': 'PLANTED-inventory-ssh'}\n"
        "    with open(os.environ['PROBE_OUT'], 'w') as out:\n"
        "        out.write('match' if ok else 'mismatch')\n"
        "    with open(os.environ['DLSETUP_VERIFY_REPORT'], 'w') as out:\n"
        "        out.write(json.dumps({'hosts': {}}))\n"
        "    print('the suite saw', seen, os.environ['MY_API_TOKEN'])\n"
        "    assert False, 'shown in the log with what it printed'\n"
    )
    monkeypatch.setattr(suite_runner.paths, "verify_suite_dir", lambda: suite)
    monkeypatch.setenv("PROBE_OUT", str(planted / "probe.txt"))
    targets = _targets(planted)
    example = json.loads((REPO / "docs" / "examples" / "facts-2x1080ti.json").read_text())
    facts = HostFacts.from_dict(next(iter(example["hosts"].values())))
    work_dir = runner.new_run_dir("verify")
    report = suite_runner.run_suite(targets, {"localhost": facts}, {"localhost": Expectations()}, work_dir=work_dir)
    assert (planted / "probe.txt").read_text() == "match"
    assert report.log_path is not None and "the suite saw" in report.log_path.read_text()
    assert {p.name for p in work_dir.iterdir()} >= {"verify-inventory", "verify-context.json", "verify.log"}
    assert not (work_dir / "tmp").exists()
    assert _holding_secrets(_written(planted)) == {}
    assert not [p for p in (planted / "tmp").iterdir()]
    _assert_private(planted / "state")


@pytest.mark.parametrize(
    ("key", "value", "secret"),
    [
        ("ansible_become_password", "x1234", True),
        ("ansible_become_pass", "x1234", True),
        ("ansible_ssh_pass", "x1234", True),
        ("ansible_password", "x1234", True),
        ("ANSIBLE_BECOME_PASS", "x1234", True),
        ("MY_API_TOKEN", "x1234", True),
        ("GITHUB_TOKEN", "x1234", True),
        ("AWS_SECRET_ACCESS_KEY", "x1234", True),
        ("vault_db", "x1234", True),
        ("dlsetup_signing_key", "x1234", True),
        ("dlsetup_signing_key", "/etc/keys/signing.pem", False),  # a *_key naming a file
        ("ansible_ssh_private_key_file", "~/.ssh/id_ed25519", False),
        ("dlsetup_nvidia_repo_key", "EB693B3035CD5710E231E123A4B469963BF863CC", False),  # a public fingerprint
        ("passed", 3, False),  # the verify report's counts
        ("changed", False, False),
        ("anything", {"__ansible_vault": "$ANSIBLE_VAULT;1.1;AES256\n6162"}, True),
        ("anything", "$ANSIBLE_VAULT;1.1;AES256\n6162", True),
        ("ansible_become_password", "", False),
    ],
)
def test_what_is_a_secret(key: str, value: object, secret: bool) -> None:
    assert redact.is_secret(key, value) is secret


def test_known_values_are_scrubbed_wherever_they_appear() -> None:
    secrets = redact.Secrets.collect(
        {"MY_API_TOKEN": "tok-123456", "HOME": "/root"},
        {"h1": {"ansible_become_password": 'pa"ss'}},
        values=["from-K-prompt", None],
    )
    data = {
        "cmd": ["ansible-playbook", '-e {"x": "tok-123456"}'],
        "env": {"MY_API_TOKEN": "tok-123456", "HOME": "/root"},
        "stdout": 'echo pa\\"ss from-K-prompt',
        "vaulted": {"__ansible_vault": "$ANSIBLE_VAULT;1.1;AES256\n6162"},
        "url": "https://me:s3cr3t@mirror.example/simple",
    }
    redacted = secrets.redact(data)
    assert redacted == {
        "cmd": ["ansible-playbook", '-e {"x": "<redacted>"}'],
        "env": {"MY_API_TOKEN": "<redacted>", "HOME": "/root"},
        "stdout": "echo <redacted> <redacted>",
        "vaulted": "<redacted>",
        "url": "https://me:<redacted>@mirror.example/simple",
    }
    assert data["env"]["MY_API_TOKEN"] == "tok-123456"  # a copy: the original is left as it was
    text = (
        "GITHUB_TOKEN=abcd1234 ok: 3 passed\nansible_ssh_pass: hunter22\n"
        "pw: !vault |\n  $ANSIBLE_VAULT;1.1;AES256\n  6162\n"
    )
    assert secrets.scrub_text(text) == (
        "GITHUB_TOKEN=<redacted> ok: 3 passed\nansible_ssh_pass: <redacted>\npw: !vault |\n  <redacted>\n"
    )


def test_redact_tree_makes_a_folder_private(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir(mode=0o755)
    (tmp_path / "sub" / "log").write_text("token=abcd1234\n")
    os.chmod(tmp_path / "sub" / "log", 0o644)
    (tmp_path / "event.json").write_text(json.dumps({"res": {"api_token": "abcd1234", "rc": 0}}))
    redact.redact_tree(tmp_path, redact.Secrets())
    assert (tmp_path / "sub" / "log").read_text() == "token=<redacted>\n"
    assert json.loads((tmp_path / "event.json").read_text()) == {"res": {"api_token": "<redacted>", "rc": 0}}
    assert stat.S_IMODE((tmp_path / "sub").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "sub" / "log").stat().st_mode) == 0o600
