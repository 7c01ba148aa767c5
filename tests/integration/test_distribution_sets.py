"""Every package set the planner can take from Debian's own archive installs there (issue 8, item 4).

On real Debian 12 and 13 hosts with the archive as Debian configures it by default (main, updates and security)
plus the components the plan names (contrib, non-free, non-free-firmware), each distribution set the planner can
choose: the driver (proprietary and open) together with the distribution's CUDA toolkit and cuDNN, is simulated with
``apt-get -s install``, recommended packages included as the roles install them, under the apt preferences pin the
nvidia_driver role writes (its own template, rendered with the plan's variables). apt must accept every set, at the
planned version.

The Debian 12 open set is also tried without the pin: apt refuses it there (nvidia-open-kernel-dkms stays at
535.261.03 in contrib while bookworm-security moves nvidia-driver on), which is why the plan holds it at 535.261.03.
If that control ever installs, Debian has fixed its archive and the pin in systems.yaml can go.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import harness as h
import pytest
import yaml
from jinja2 import Environment

from dlsetup.plan.load import load_compat_data
from dlsetup.plan.model import Plan
from dlsetup.plan.request import request_offline
from dlsetup.plan.resolve import resolve_stack

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
ROLE = REPO / "roles" / "nvidia_driver"
BASE = REPO / "roles" / "base"
COMPONENTS_FILE = "/etc/apt/sources.list.d/dlsetup-debian.sources"
PREFERENCES = "/etc/apt/preferences.d/dlsetup-nvidia-driver.pref"

# (id, os, GPUs, pins): every flavour the distribution can serve, on both suites
SETS = [
    ("deb12-proprietary", "debian-12", ["GTX 1080 Ti", "GTX 1080 Ti"], {"driver_source": "distribution"}),
    ("deb12-open", "debian-12", ["RTX 4090"], {"driver_source": "distribution"}),
    ("deb12-turing-proprietary", "debian-12", ["RTX 2080 Ti"], {"driver_source": "distribution",
                                                                "driver_flavor": "proprietary"}),
    ("deb13-proprietary", "debian-13", ["GTX 1080 Ti"], {"driver_source": "distribution"}),
    ("deb13-open", "debian-13", ["RTX 4090"], {"driver_source": "distribution"}),
]  # fmt: skip


def plan_for(os_name: str, gpus: list[str], pins: dict[str, Any]) -> Plan:
    return resolve_stack(request_offline(os_name, gpus, None, pins))


def preferences(plan: Plan) -> str:
    """The nvidia_driver role's apt preferences file for this plan: its template and its pin-version expression."""
    env = Environment(keep_trailing_newline=True)
    variables: dict[str, Any] = {**plan.to_extravars(), "ansible_managed": "test"}
    role_vars = yaml.safe_load((ROLE / "vars" / "main.yml").read_text())
    variables["__nvidia_driver_pin_version"] = env.from_string(role_vars["__nvidia_driver_pin_version"]).render(
        **variables
    )
    return env.from_string((ROLE / "templates" / "preferences.j2").read_text()).render(**variables)


def packages_of(plan: Plan) -> list[str]:
    assert plan.driver.source == "distribution"
    names = list(plan.driver.packages)
    if plan.cuda.source == "distribution":
        names += [*plan.cuda.packages, *plan.cudnn.packages, *plan.nccl.packages]
    return names


def ok(host: h.Host, cmd: str, timeout: float = 900) -> str:
    done = host.run(cmd, timeout=timeout)
    assert done.returncode == 0, f"{cmd}: {done.stdout[-3000:]}{done.stderr[-3000:]}"
    return done.stdout


def apt_sources_module() -> Any:
    spec = importlib.util.spec_from_file_location("dlsetup_apt_sources", BASE / "library" / "dlsetup_apt_sources.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def components_file(host: h.Host, codename: str, components: list[str]) -> str:
    """The base role's dlsetup-debian.sources for this host: its module reads the host's own sources, its template
    writes the stanzas that add the missing components."""
    module = apt_sources_module()
    suites = [codename, f"{codename}-updates", f"{codename}-security"]
    stanzas = module.missing_stanzas(
        module.read_entries(str(host.root), ""), suites, components, "/usr/share/keyrings/debian-archive-keyring.gpg"
    )
    assert stanzas, "the host's sources name no Debian archive entry"
    template = Environment(keep_trailing_newline=True).from_string(
        (BASE / "templates" / "dlsetup-debian.sources.j2").read_text()
    )
    return template.render(
        ansible_managed="test", base_debian_components=components, base_reg_apt_sources={"stanzas": stanzas}
    )


@pytest.fixture(scope="module")
def hosts(harness: h.Harness) -> Iterator[dict[str, h.Host]]:
    group = harness.boot([h.HostSpec("sets12", "bookworm"), h.HostSpec("sets13", "trixie")])
    try:
        by_os = {"debian-12": group["sets12"], "debian-13": group["sets13"]}
        for os_name, host in by_os.items():
            system = load_compat_data().system(os_name)
            assert system is not None
            host.write_file(
                COMPONENTS_FILE, components_file(host, system.codename, list(system.distribution.components))
            )
            ok(host, "apt-get -q update")
        yield by_os
    finally:
        harness.stop(list(group))


def simulate(host: h.Host, packages: list[str]) -> tuple[int, str]:
    done = host.run(
        "DEBIAN_FRONTEND=noninteractive apt-get -s -o APT::Install-Recommends=true install " + " ".join(packages),
        timeout=600,
    )
    return done.returncode, done.stdout + done.stderr


@pytest.mark.parametrize(("os_name", "gpus", "pins"), [s[1:] for s in SETS], ids=[s[0] for s in SETS])
def test_every_distribution_set_installs(hosts, os_name: str, gpus: list[str], pins: dict[str, Any]) -> None:
    host = hosts[os_name]
    plan = plan_for(os_name, gpus, pins)
    host.write_file(PREFERENCES, preferences(plan))
    try:
        rc, output = simulate(host, packages_of(plan))
    finally:
        host.run(f"rm -f {PREFERENCES}")
    assert rc == 0, f"apt refuses the planned set {packages_of(plan)}:\n{output[-4000:]}"
    installed = dict(re.findall(r"(?m)^Inst (\S+) \((\S+)", output))
    driver_main = "nvidia-driver"
    assert driver_main in installed, output[-3000:]
    wanted = plan.driver.version or f"{plan.driver.branch}."
    assert installed[driver_main].startswith(wanted), installed[driver_main]
    if plan.driver.flavor == "open":
        assert "nvidia-open-kernel-dkms" in installed and "nvidia-kernel-dkms" not in installed
    else:
        assert "nvidia-kernel-dkms" in installed and "nvidia-open-kernel-dkms" not in installed


def test_debian12_open_set_needs_its_version_pin(hosts) -> None:
    """The control: without the plan's pin, apt refuses Debian 12's open set as Debian configures it."""
    plan = plan_for("debian-12", ["RTX 4090"], {"driver_source": "distribution"})
    assert plan.driver.version == "535.261.03"
    rc, output = simulate(hosts["debian-12"], packages_of(plan))
    assert rc != 0, "Debian 12's open set now installs without a pin: drop driver_version_pins from systems.yaml"
    assert "unmet dependencies" in output or "held broken packages" in output, output[-3000:]
