"""A failed driver change leaves the driver the host had (issue 8, item 4; issue 9, item 5): on a real Debian 12 host.

The host has a proprietary driver set installed and held, and an earlier pin file. The nvidia_driver role (used
on its own, through ansible-playbook) is asked to switch it to the open flavour, in one apt transaction that removes
the proprietary module and installs the open one:

* the open kernel-module package depends on a package the archive does not have: apt refuses the whole set, nothing
  is removed, the holds stay, the pin file is put back, and the role fails with apt's cause;
* the open kernel-module package installs but its postinst fails (as a DKMS build can): dpkg has already removed
  the proprietary module by then, so the role must put it back at its version, remove the half-installed open
  module, hold the driver again and restore the pin file, then fail with the cause.

The packages are tiny real .deb files (dpkg-deb) under Debian's names, in a local repository on the host; being
a container, the host has no kernel of its own, so no module is built.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import harness as h
import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
VERSION = "550.90.07-1"
OLD_PIN = "Package: nvidia-*\nPin: version 550.*\nPin-Priority: 1001\n"
PREFERENCES = "/etc/apt/preferences.d/dlsetup-nvidia-driver"
# name → Depends
PACKAGES = {
    "nvidia-kernel-dkms": "",
    "nvidia-driver": "nvidia-kernel-dkms (= 550.90.07-1) | nvidia-open-kernel-dkms (= 550.90.07-1)",
    # the open module needs firmware no repository here has: apt refuses the planned set
    "nvidia-open-kernel-dkms": "firmware-nvidia-gsp (= 550.90.07-1)",
}
# the other failure: the open module installs, but its postinst fails (the two modules cannot be installed together)
BROKEN_POSTINST = {**PACKAGES, "nvidia-open-kernel-dkms": ""}
CONFLICTS = {"nvidia-open-kernel-dkms": "nvidia-kernel-dkms"}
POSTINST = {"nvidia-open-kernel-dkms": "#!/bin/sh\necho 'dkms: building the module failed (test)' >&2\nexit 1\n"}


def build_repository(work: Path, packages: dict[str, str] = PACKAGES, postinst: dict[str, str] | None = None) -> Path:
    repo = work / "repo"
    repo.mkdir()
    stanzas = []
    for name, depends in packages.items():
        tree = work / name
        (tree / "DEBIAN").mkdir(parents=True)
        (tree / "usr/share/doc" / name).mkdir(parents=True)
        (tree / "usr/share/doc" / name / "README").write_text(f"test stand-in for Debian's {name}\n")
        control = (
            f"Package: {name}\nVersion: {VERSION}\nArchitecture: all\nMaintainer: dlsetup tests <t@dlsetup.invalid>\n"
            + (f"Depends: {depends}\n" if depends else "")
            + (f"Conflicts: {CONFLICTS[name]}\n" if name in CONFLICTS else "")
            + f"Description: test stand-in for {name}\n"
        )
        (tree / "DEBIAN" / "control").write_text(control)
        if name in (postinst or {}):
            script = tree / "DEBIAN" / "postinst"
            script.write_text((postinst or {})[name])
            script.chmod(0o755)
        deb = repo / f"{name}_{VERSION}_all.deb"
        subprocess.run(["dpkg-deb", "--root-owner-group", "--build", str(tree), str(deb)], check=True,
                       capture_output=True)  # fmt: skip
        data = deb.read_bytes()
        stanzas.append(
            control.rstrip("\n")
            + f"\nFilename: ./{deb.name}\nSize: {len(data)}\nSHA256: {hashlib.sha256(data).hexdigest()}\n"
        )
    (repo / "Packages").write_text("\n".join(stanzas))
    return repo


def ok(host: h.Host, cmd: str) -> str:
    done = host.run(cmd, timeout=600)
    assert done.returncode == 0, f"{cmd}: {done.stdout}{done.stderr}"
    return done.stdout


def selections(host: h.Host) -> dict[str, str]:
    out = ok(host, "dpkg-query -W -f='${Package} ${Version} ${Status}\\n' 'nvidia-*'")
    rows = [line.split() for line in out.splitlines()]
    return {r[0]: f"{r[1]} {r[2]}" for r in rows if r[-1] == "installed"}


@pytest.mark.parametrize(
    ("failure", "packages", "postinst"),
    [("unmet", PACKAGES, None), ("postinst", BROKEN_POSTINST, POSTINST)],
)
def test_a_failed_flavour_switch_restores_the_driver_its_holds_and_the_pin(
    boot_host, tmp_path, failure, packages, postinst
) -> None:
    name = f"restore12{failure[0]}"
    group = boot_host.many([h.HostSpec(name, "bookworm")])
    host = group[name]
    repo = build_repository(tmp_path, packages, postinst)
    for deb in repo.iterdir():
        host.write_file(f"/srv/dlsetup-test-repo/{deb.name}", deb.read_bytes())
    # a local fixture repository, trusted for this test only (the product never writes trusted=yes)
    host.write_file("/etc/apt/sources.list.d/test-local.list", "deb [trusted=yes] file:/srv/dlsetup-test-repo ./\n")
    ok(host, "apt-get -q update")
    ok(host, "DEBIAN_FRONTEND=noninteractive apt-get install -y -q nvidia-driver nvidia-kernel-dkms")
    ok(host, "apt-mark hold nvidia-driver nvidia-kernel-dkms")
    host.write_file(PREFERENCES, OLD_PIN)
    before = selections(host)
    assert before == {"nvidia-driver": f"{VERSION} hold", "nvidia-kernel-dkms": f"{VERSION} hold"}

    playbook = tmp_path / "driver-only.yml"
    playbook.write_text("- hosts: all\n  become: true\n  gather_facts: true\n  roles:\n    - role: nvidia_driver\n")
    role_vars = {
        "nvidia_driver_source": "distribution",
        "nvidia_driver_branch": "550",
        "nvidia_driver_flavor": "open",
        "nvidia_driver_packages": ["nvidia-open-kernel-dkms", "nvidia-driver"],
        "nvidia_driver_pin_packages": ["nvidia-*"],
        "nvidia_driver_other_flavor_packages": "^(nvidia-kernel-dkms|nvidia-kernel-source)$",
        "nvidia_driver_branch_named_packages": "^$",
    }
    inventory = group.write_inventory(tmp_path / "hosts.yml")
    env = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "ANSIBLE_ROLES_PATH": str(REPO / "roles"),
           "ANSIBLE_LIBRARY": str(REPO / "roles" / "hw_facts" / "library"), "ANSIBLE_NOCOLOR": "1"}  # fmt: skip
    done = subprocess.run(
        [str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(inventory), str(playbook),
         "-e", json.dumps(role_vars)],
        capture_output=True, text=True, env=env, timeout=900, check=False, cwd=REPO,
    )  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode != 0, output[-4000:]
    failed_at = "The driver change to R550 open failed at Install, switch and hold the driver packages in one apt"
    if failure == "unmet":
        assert f"{failed_at} transaction: E: Unable to correct problems" in output, output[-4000:]
        assert "firmware-nvidia-gsp" in output, output[-4000:]  # apt's cause, not its first line of output
    else:
        assert f"{failed_at} transaction: E: Sub-process /usr/bin/dpkg" in output, output[-4000:]
        assert "nvidia-open-kernel-dkms" not in selections(host)  # the half-installed open module is gone
    assert f"(nvidia-driver={VERSION}, nvidia-kernel-dkms={VERSION}) are back" in output, output[-4000:]
    # the host keeps its driver: the same packages, versions and holds, and the same pin file
    assert selections(host) == before
    assert ok(host, f"cat {PREFERENCES}") == OLD_PIN
