"""The inventory as Ansible reads it (dlsetup.run.inventory): real ansible-core in a child process, real files of
each kind Ansible takes, vaulted values made with the real ``ansible-vault``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from dlsetup.commands import load_targets
from dlsetup.config.targets import HostArgs, VaultOptions
from dlsetup.errors import ConfigError
from dlsetup.run.inventory import select

INI = """\
[rigs]
rig-1 ansible_host=192.0.2.1
rig-2 ansible_host=192.0.2.2
rig-3 ansible_host=192.0.2.3

[laptops]
xps15 ansible_host=192.0.2.15

[empty]

[lab:children]
rigs
laptops
"""
PASSWORD = "vault-pw-for-tests"
SECRET = "S3cr3t-become-0b1"


def _write(path: Path, text: str, mode: int = 0o644) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)
    return path


@pytest.fixture
def ini(tmp_path: Path) -> Path:
    return _write(tmp_path / "hosts.ini", INI)


@pytest.mark.parametrize(
    ("pattern", "hosts"),
    [
        ("rigs:!rig-2", ["rig-1", "rig-3"]),
        ("rig-*", ["rig-1", "rig-2", "rig-3"]),
        ("rigs[0]", ["rig-1"]),
        ("rigs[1:]", ["rig-2", "rig-3"]),
        ("~rig-[13]", ["rig-1", "rig-3"]),
        ("lab:&laptops", ["xps15"]),
        ("rigs,xps15", ["rig-1", "rig-2", "rig-3", "xps15"]),
        ("nothing-like-it", []),
        ("localhost", []),  # Ansible's implicit localhost is not the inventory's
    ],
)
def test_host_patterns_are_ansibles(ini: Path, pattern: str, hosts: list[str]) -> None:
    assert list(select(ini, [pattern]).matched[0]) == hosts


def test_limit_narrows_and_the_unlimited_match_is_kept(ini: Path) -> None:
    selection = select(ini, ["rigs", "xps15"], limit="rig-1")
    assert selection.matched == (("rig-1",), ())
    assert selection.matched_all == (("rig-1", "rig-2", "rig-3"), ("xps15",))
    assert set(selection.hostvars) == {"rig-1"}  # only the selected hosts' variables come back


def test_commands_resolve_patterns_and_limit(ini: Path) -> None:
    targets = load_targets(HostArgs(("lab",), ini, limit="lab:!rig-2"))
    assert targets.names == ["rig-1", "rig-3", "xps15"]
    assert targets.hostvars("xps15")["ansible_host"] == "192.0.2.15"


def test_empty_group_and_bad_subscript(ini: Path) -> None:
    assert "empty" in select(ini, ["all"]).empty_groups
    with pytest.raises(ConfigError, match=r"group 'empty' in \S+ has no hosts"):
        load_targets(HostArgs(("empty",), ini))
    with pytest.raises(ConfigError, match=r"^host pattern of 'rigs\[7\]': No hosts matched the subscripted pattern"):
        select(ini, ["rigs[7]"])


def test_directory_with_group_vars_and_host_vars(tmp_path: Path) -> None:
    _write(tmp_path / "inv" / "hosts.ini", INI)
    _write(tmp_path / "inv" / "group_vars" / "rigs.yml", "dlsetup_expect: {gpu_count: 2}\nlab_note: from-rigs\n")
    _write(tmp_path / "inv" / "host_vars" / "rig-3.yml", "dlsetup_expect: {gpu_count: 1}\n")
    selection = select(tmp_path / "inv", ["rigs"])
    assert selection.hostvars["rig-1"]["dlsetup_expect"] == {"gpu_count": 2}
    assert selection.hostvars["rig-3"]["dlsetup_expect"] == {"gpu_count": 1}  # host_vars over group_vars
    assert selection.hostvars["rig-1"]["lab_note"] == "from-rigs"


def test_script_inventory(tmp_path: Path) -> None:
    script = _write(
        tmp_path / "inventory.py",
        "#!" + sys.executable + "\n"
        "import json, sys\n"
        "if '--host' in sys.argv:\n    print('{}')\nelse:\n"
        "    print(json.dumps({'rigs': {'hosts': ['s1', 's2'], 'vars': {'ansible_user': 'lab'}},"
        " '_meta': {'hostvars': {'s1': {'ansible_host': '192.0.2.41'}}}}))\n",
        mode=0o755,
    )
    selection = select(script, ["rigs"])
    assert selection.matched == (("s1", "s2"),)
    assert selection.hostvars["s1"] == {"ansible_host": "192.0.2.41", "ansible_user": "lab"}
    assert selection.hostvars["s2"] == {"ansible_user": "lab"}  # a host without variables of its own


def test_plugin_inventories_constructed_and_generator(tmp_path: Path) -> None:
    _write(tmp_path / "inv" / "10-hosts.ini", INI)
    _write(
        tmp_path / "inv" / "20-constructed.yml",
        "plugin: ansible.builtin.constructed\nstrict: true\ngroups:\n  two_gpu_rigs: \"'rig' in inventory_hostname\"\n",
    )
    assert select(tmp_path / "inv", ["two_gpu_rigs"]).matched == (("rig-1", "rig-2", "rig-3"),)
    generator = _write(
        tmp_path / "gen.yml",
        'plugin: ansible.builtin.generator\nhosts:\n  name: "{{ room }}-rig"\nlayers:\n  room: [lab, office]\n',
    )
    assert select(generator, ["*-rig"]).matched == (("lab-rig", "office-rig"),)


@pytest.mark.parametrize(
    ("name", "text", "cause"),
    [
        (
            "broken.yml",
            "all:\n  hosts:\n    a: {ansible_host: 192.0.2.1\n    b:\n",
            r"YAML parsing failed: .* \(line 4, column 6\)$",
        ),
        ("broken.yml", "all:\n  hosts:\n    a: [\n", r"YAML parsing failed: .*\(line \d+, column \d+\)$"),
        ("broken.ini", "[rigs\nfoo\n", r"invalid inventory \S+broken\.ini: "),
    ],
)
def test_broken_inventory_is_one_line_with_its_place(tmp_path: Path, name: str, text: str, cause: str) -> None:
    inventory = _write(tmp_path / name, text)
    with pytest.raises(ConfigError, match=cause) as info:
        select(inventory, ["all"])
    assert str(info.value).startswith(f"invalid inventory {inventory}: ")
    assert "\n" not in str(info.value)


def _vaulted_inventory(tmp_path: Path) -> Path:
    password_file = _write(tmp_path / "vault-pass", PASSWORD + "\n", mode=0o600)
    encrypted = subprocess.run(
        [str(Path(sys.executable).parent / "ansible-vault"), "encrypt_string", "--vault-password-file",
         str(password_file), SECRET, "--name", "ansible_become_password"],
        capture_output=True, text=True, check=True, env={**os.environ, "ANSIBLE_NOCOLOR": "1"},
    ).stdout  # fmt: skip
    block = "".join(f"      {line}\n" for line in encrypted.splitlines())
    return _write(tmp_path / "vaulted.yml", f"all:\n  hosts:\n    h1:\n      ansible_host: 192.0.2.9\n{block}")


def test_vaulted_values_open_with_a_password_or_a_file(tmp_path: Path) -> None:
    inventory = _vaulted_inventory(tmp_path)
    for vault in (VaultOptions(password=PASSWORD), VaultOptions(password_files=(tmp_path / "vault-pass",))):
        selection = select(inventory, ["h1"], vault=vault)
        assert selection.hostvars["h1"]["ansible_become_password"] == SECRET
        assert selection.vaulted == (SECRET,)  # a secret for redaction, whatever its name
    assert list(tmp_path.iterdir()) == [tmp_path / "vault-pass", inventory]  # nothing decrypted into a file


def test_vaulted_values_without_or_with_a_wrong_password(tmp_path: Path) -> None:
    inventory = _vaulted_inventory(tmp_path)
    with pytest.raises(ConfigError, match=r"host h1 has vaulted variables and no vault password was given"):
        select(inventory, ["h1"])
    with pytest.raises(ConfigError, match=r"^inventory \S+: host h1: Decryption failed"):
        select(inventory, ["h1"], vault=VaultOptions(password="wrong"))
    with pytest.raises(ConfigError, match=r"--vault-password-file \S+nope: no such file"):
        select(inventory, ["h1"], vault=VaultOptions(password_files=(tmp_path / "nope",)))


def test_vault_options_need_an_inventory() -> None:
    with pytest.raises(ConfigError, match="give -i"):
        load_targets(HostArgs(("localhost",), vault=VaultOptions(password="x")))


def test_vault_options_reach_ansible_playbook(tmp_path: Path) -> None:
    vault = VaultOptions(password="pw", password_files=(tmp_path / "f",))
    assert vault.cmdline() == ["--vault-password-file", str(tmp_path / "f"), "--ask-vault-pass"]
    assert list(vault.prompts().values()) == ["pw"]
    assert not VaultOptions()


def test_reading_an_inventory_leaves_nothing_in_the_temp_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setenv("TMPDIR", str(temp))
    inventory = _write(tmp_path / "hosts.yml", "all:\n  hosts:\n    h1:\n      ansible_host: 192.0.2.1\n")
    assert "h1" in select(inventory, ["all"]).hostvars
    assert list(temp.iterdir()) == []


def test_a_group_vars_file_that_does_not_parse_is_named_with_its_place(tmp_path: Path) -> None:
    _write(tmp_path / "inv" / "hosts.ini", INI)
    bad = _write(tmp_path / "inv" / "group_vars" / "rigs.yml", "dlsetup_expect: [\n")
    with pytest.raises(ConfigError, match=rf"YAML parsing failed: .* \({bad} line 2, column 1\)$"):
        select(tmp_path / "inv", ["rigs"])


def test_an_empty_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="the directory holds no inventory file Ansible can read"):
        select(tmp_path, ["all"])


def test_a_wholly_encrypted_vars_file_opens_and_its_values_are_secrets(tmp_path: Path) -> None:
    """``ansible-vault encrypt group_vars/rigs.yml``: the loader decrypts the file before any vaulted value exists,
    so every value in it is reported as a secret, whatever its name."""
    _write(tmp_path / "inv" / "hosts.ini", INI)
    password_file = _write(tmp_path / "vault-pass", PASSWORD + "\n", mode=0o600)
    secret_vars = _write(tmp_path / "inv" / "group_vars" / "rigs.yml", "lab_wifi_psk: plain-named-secret-77\n")
    subprocess.run(
        [str(Path(sys.executable).parent / "ansible-vault"), "encrypt", "--vault-password-file", str(password_file),
         str(secret_vars)],
        capture_output=True, check=True,
    )  # fmt: skip
    assert b"plain-named-secret-77" not in secret_vars.read_bytes()
    with pytest.raises(ConfigError, match=r"vault.*use --ask-vault-pass or --vault-password-file"):
        select(tmp_path / "inv", ["rigs"])
    selection = select(tmp_path / "inv", ["rigs"], vault=VaultOptions(password_files=(password_file,)))
    assert selection.hostvars["rig-1"]["lab_wifi_psk"] == "plain-named-secret-77"
    assert "plain-named-secret-77" in selection.vaulted


def test_ansibles_own_vault_password_file_setting_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    inventory = _vaulted_inventory(tmp_path)
    monkeypatch.setenv("ANSIBLE_VAULT_PASSWORD_FILE", str(tmp_path / "vault-pass"))
    assert select(inventory, ["h1"]).hostvars["h1"]["ansible_become_password"] == SECRET


def test_a_comma_list_keeps_the_names_the_inventory_does_not_know(ini: Path) -> None:
    targets = load_targets(HostArgs(("rig-1,localhost",), ini))
    assert targets.names == ["rig-1", "localhost"]
    with pytest.raises(ConfigError, match="unknown host or group 'typo'"):
        load_targets(HostArgs(("rig-1,typo",), ini))
