"""The integration harness itself: real Debian 12/13 hosts, their proxies, SSH host-key checking, Ansible."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import ansible_runner
import pytest
import yaml
from harness import Host, HostGroup, machine_mirrors, machine_pip_index, run_parallel

pytestmark = pytest.mark.integration

APT_INSTALL = "DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends"


def _ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"rc {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    return result.stdout


def _os_release(host: Host) -> dict[str, str]:
    lines = _ok(host.run("cat /etc/os-release")).splitlines()
    return {k: v.strip('"') for k, _, v in (line.partition("=") for line in lines) if k}


def test_hosts_are_debian_12_and_13(debian_hosts: HostGroup) -> None:
    assert debian_hosts.names == ["deb12", "deb13"]
    for host, version in zip(debian_hosts, ("12", "13"), strict=True):
        assert _os_release(host)["VERSION_ID"] == version == host.version_id
        assert _ok(host.run("hostname")).strip() == host.name
        assert host.address.startswith("10.200.") and host.root.is_dir()


def test_systemd_is_running(debian_hosts: HostGroup) -> None:
    for host in debian_hosts:
        assert host.mode == "nspawn"
        state = host.run("systemctl is-system-running").stdout.strip()
        assert state in ("running", "degraded"), host.run("systemctl --failed").stdout
        assert _ok(host.run("systemctl is-active ssh")).strip() == "active"


def test_only_main_is_enabled(debian_hosts: HostGroup) -> None:
    # The product's base role adds contrib/non-free/non-free-firmware; the roots must not.
    for host in debian_hosts:
        sources = _ok(host.run("cat /etc/apt/sources.list /etc/apt/sources.list.d/*.sources 2>/dev/null; true"))
        assert "main" in sources
        assert "contrib" not in sources and "non-free" not in sources


def test_apt_through_proxy(debian_hosts: HostGroup) -> None:
    def install_tree(host: Host) -> str:
        _ok(host.run(f"apt-get update -q && {APT_INSTALL} tree", timeout=600))
        return _ok(host.run("tree --version"))

    for out in run_parallel(debian_hosts, install_tree):
        assert out.startswith("tree v")


def test_pip_through_connect_proxy(debian_hosts: HostGroup) -> None:
    def pip_download(host: Host) -> str:
        _ok(host.run(f"apt-get update -q && {APT_INSTALL} python3-pip", timeout=600))
        _ok(host.run("rm -rf /tmp/pipdl && python3 -m pip download --no-deps -d /tmp/pipdl six", timeout=300))
        return _ok(host.run("ls /tmp/pipdl"))

    for out in run_parallel(debian_hosts, pip_download):
        assert out.startswith("six-") and out.strip().endswith(".whl")


PROBE = """
import http.client, sys
kind, target = sys.argv[1], sys.argv[2]
gateway = open("/etc/apt/apt.conf.d/01dlsetup-test-proxy").read().split("//")[1].split(":")[0]
conn = http.client.HTTPConnection(gateway, 3142 if kind == "http" else 3128, timeout=10)
conn.request("GET" if kind == "http" else "CONNECT", target)
print(conn.getresponse().status)
"""


def _denied_targets() -> list[tuple[str, str]]:
    mirror = sorted(machine_mirrors().hosts)[0]
    index = sorted(machine_pip_index().hosts)[0]
    return [
        ("http", "http://example.org/"),  # not a mirror
        ("http", "http://127.0.0.1:22/"),  # this machine's own services
        ("http", f"http://{mirror}:8080/"),  # a mirror host, but not port 80
        ("http", f"https://{mirror}/"),  # not plain http
        ("connect", "example.org:443"),  # not a package index
        ("connect", f"{index}:22"),  # the index host, but not port 443
        ("connect", f"{mirror}:443"),  # apt's hosts are not reachable through CONNECT
    ]


def test_proxies_refuse_other_destinations(debian_hosts: HostGroup) -> None:
    host = debian_hosts["deb12"]
    for kind, target in _denied_targets():
        status = _ok(host.run(["python3", "-c", PROBE, kind, target])).strip()
        assert status == "403", f"{kind} {target}: {status}"


def _runner_env() -> dict[str, str]:
    return {
        "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "ANSIBLE_HOST_KEY_CHECKING": "True",
        "ANSIBLE_PIPELINING": "True",
    }


def _ping(inventory: Path, private_data_dir: Path) -> ansible_runner.Runner:
    private_data_dir.mkdir(exist_ok=True)
    return ansible_runner.run(
        private_data_dir=str(private_data_dir),
        inventory=str(inventory),
        host_pattern="all",
        module="ansible.builtin.ping",
        envvars=_runner_env(),
        quiet=True,
        timeout=180,
    )


def test_ansible_ping_with_host_keys_checked(debian_inventory: Path, tmp_path: Path) -> None:
    runner = _ping(debian_inventory, tmp_path)
    assert runner.status == "successful", runner.stdout.read()
    assert set(runner.stats["ok"]) == {"deb12", "deb13"}


def test_ansible_fails_with_wrong_known_hosts(debian_hosts: HostGroup, tmp_path: Path) -> None:
    impostor = tmp_path / "impostor"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(impostor)], check=True)
    key = " ".join(impostor.with_suffix(".pub").read_text().split()[:2])
    wrong = tmp_path / "known_hosts"
    wrong.write_text("".join(f"{host.address} {key}\n" for host in debian_hosts))
    inventory = debian_hosts.write_inventory(tmp_path / "inventory.yml", known_hosts=wrong)

    runner = _ping(inventory, tmp_path / "runner")
    assert runner.status == "failed"
    assert set(runner.stats["dark"]) == {"deb12", "deb13"}
    messages = [e["event_data"]["res"].get("msg", "") for e in runner.events if e["event"] == "runner_on_unreachable"]
    assert messages and all("Host key verification failed" in m or "IDENTIFICATION HAS CHANGED" in m for m in messages)


def test_inventory_carries_host_vars(debian_hosts: HostGroup, tmp_path: Path) -> None:
    path = debian_hosts.write_inventory(
        tmp_path / "inv.yml",
        host_vars={"deb12": {"dlsetup_expect": {"gpus": 0}}},
        common_vars={"dlsetup_test": True},
        groups={"dl_hosts": ["deb12", "deb13"]},
    )
    inventory = yaml.safe_load(path.read_text())["all"]
    deb12 = inventory["hosts"]["deb12"]
    assert deb12["ansible_user"] == "root" and deb12["dlsetup_expect"] == {"gpus": 0}
    assert "UserKnownHostsFile=" in deb12["ansible_ssh_common_args"]
    assert "StrictHostKeyChecking=no" not in deb12["ansible_ssh_common_args"]
    assert inventory["vars"] == {"dlsetup_test": True}
    assert set(inventory["children"]["dl_hosts"]["hosts"]) == {"deb12", "deb13"}


def test_ssh_config_works_with_ssh_F(ssh_config: Path, debian_hosts: HostGroup) -> None:
    for host in debian_hosts:
        for alias in (host.name, host.address):
            argv = ["ssh", "-F", str(ssh_config), alias, "hostname"]
            result = subprocess.run(argv, capture_output=True, text=True, check=False)
            assert _ok(result).strip() == host.name


def test_boot_host_factory(boot_host) -> None:
    host = boot_host("fakedmi", "trixie", files={"/etc/dlsetup-test/marker": "hello\n"})
    assert _ok(host.run("hostname")).strip() == "fakedmi"
    assert _ok(host.run("cat /etc/dlsetup-test/marker")) == "hello\n"
    host.write_file("/root/late.txt", "written after boot\n")
    assert _ok(host.run("cat /root/late.txt")) == "written after boot\n"
    assert _os_release(host)["VERSION_ID"] == "13"
