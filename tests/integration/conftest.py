"""Fixtures for the integration layer: real Debian 12/13 hosts (see docs/testing.md).

Fixtures:

* ``harness`` (session): the :class:`harness.Harness` (run dir, SSH key, known_hosts, proxies, teardown).
* ``debian_hosts`` (session): a :class:`harness.HostGroup` of two hosts booted in parallel, ``deb12``
  (bookworm) and ``deb13`` (trixie).
* ``debian_inventory`` (session): a YAML inventory for ``debian_hosts`` with no extra variables.
* ``ssh_config`` (session): a file for ``ssh -F`` / testinfra ``--ssh-config`` naming every live host.
* ``boot_host`` (function): a factory booting extra hosts, stopped when the test ends.

The whole directory is skipped with the reason when this machine cannot run it (not root, no mmdebstrap or
systemd-nspawn). With ``DLSETUP_REQUIRE_INTEGRATION=1`` (CI) those tests fail instead of skipping.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import harness as h
import pytest

HERE = Path(__file__).resolve().parent
REQUIRE_ENV = "DLSETUP_REQUIRE_INTEGRATION"


def _unavailable() -> str | None:
    reason = h.missing_prerequisites()
    return f"dlsetup integration tests cannot run here: {reason}" if reason else None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = _unavailable()
    if reason is None or os.environ.get(REQUIRE_ENV) == "1":
        return  # with REQUIRE set, the harness fixture fails each test with the reason
    skip = pytest.mark.skip(reason=reason)
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(skip)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not h.TIMINGS:
        return
    terminalreporter.section("dlsetup integration harness timings")
    for label, seconds in h.TIMINGS:
        terminalreporter.write_line(f"{seconds:7.1f} s  {label}")


@pytest.fixture(scope="session")
def harness() -> Iterator[h.Harness]:
    reason = _unavailable()
    if reason:
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"{reason} ({REQUIRE_ENV}=1)")
        pytest.skip(reason)
    # SIGTERM (CI cancelling the job) must also run teardown: turn it into KeyboardInterrupt while hosts live.
    previous = signal.getsignal(signal.SIGTERM)

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    if previous in (signal.SIG_DFL, None):
        signal.signal(signal.SIGTERM, interrupt)
    instance = h.Harness()
    try:
        yield instance
    finally:
        try:
            instance.close()
        finally:
            if previous in (signal.SIG_DFL, None):
                signal.signal(signal.SIGTERM, signal.SIG_DFL)


@pytest.fixture(scope="session")
def debian_hosts(harness: h.Harness) -> h.HostGroup:
    """``deb12`` (Debian 12) and ``deb13`` (Debian 13), booted in parallel, up for the whole session."""
    return harness.boot([h.HostSpec("deb12", "bookworm"), h.HostSpec("deb13", "trixie")])


@pytest.fixture(scope="session")
def debian_inventory(harness: h.Harness, debian_hosts: h.HostGroup) -> Path:
    """An Ansible inventory (YAML) for ``deb12`` and ``deb13``, host keys checked."""
    return debian_hosts.write_inventory(harness.run_dir / "inventory.yml")


@pytest.fixture(scope="session")
def ssh_config(harness: h.Harness, debian_hosts: h.HostGroup) -> Path:
    """``ssh -F`` config with an alias per live host (name and address), host keys checked."""
    return harness.ssh_config


class HostFactory:
    """``boot_host(name, release="bookworm", files={path: content}, nspawn_args=[...]) -> Host``.

    ``boot_host.many([HostSpec, ...])`` boots several in parallel. Everything booted is stopped after the test.
    """

    def __init__(self, harness: h.Harness) -> None:
        self.harness = harness
        self.booted: list[h.Host] = []

    def __call__(self, name: str, release: str = "bookworm", **kwargs: Any) -> h.Host:
        return self.many([h.HostSpec(name, release, **kwargs)])[0]

    def many(self, specs: list[h.HostSpec]) -> h.HostGroup:
        group = self.harness.boot(specs)
        self.booted.extend(group)
        return group


@pytest.fixture
def boot_host(harness: h.Harness) -> Iterator[HostFactory]:
    factory = HostFactory(harness)
    try:
        yield factory
    finally:
        harness.stop(factory.booted)
