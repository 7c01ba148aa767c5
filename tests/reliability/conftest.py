"""Fixtures of the reliability suite: the integration layer's harness (tests/integration/harness.py) and one real
Debian 12 host, ``rel12``, dressed as a 2x GTX 1080 Ti rig (tests/integration/fakegpu.py), booted once for the
module.

tests/integration is put on ``sys.path`` so its ``harness`` and ``fakegpu`` modules are the same ones the
integration layer uses; the session ``harness`` fixture is the integration conftest's, written again here (a
conftest cannot import another conftest). Like tests/integration, every test here is skipped with the reason where
this machine cannot boot hosts, and fails instead with ``DLSETUP_REQUIRE_INTEGRATION=1`` (CI).
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "integration"))

import fakegpu  # noqa: E402
import harness as h  # noqa: E402
from cases import MEASURED  # noqa: E402
from hoststate import TIMINGS, Rig  # noqa: E402

REQUIRE_ENV = "DLSETUP_REQUIRE_INTEGRATION"
HOST_NAME = "rel12"  # unique: other test runs boot hosts on this machine at the same time


def _unavailable() -> str | None:
    reason = h.missing_prerequisites()
    return f"dlsetup reliability tests cannot run here: {reason}" if reason else None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = _unavailable()
    if reason is None or os.environ.get(REQUIRE_ENV) == "1":
        return  # with REQUIRE set, the harness fixture fails each test with the reason
    skip = pytest.mark.skip(reason=reason)
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(skip)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not TIMINGS:
        return
    terminalreporter.section("dlsetup reliability cases: seconds each (setup, runs, checks)")
    for label, seconds in TIMINGS:
        terminalreporter.write_line(f"{seconds:7.1f} s  {label}")
    terminalreporter.write_line(f"{sum(s for _, s in TIMINGS):7.1f} s  all {len(TIMINGS)} cases")
    for line in MEASURED:
        terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def rel_harness() -> Iterator[h.Harness]:
    """The harness (as tests/integration/conftest.py's ``harness``): torn down after the session, on a failure,
    on Ctrl-C and on SIGTERM."""
    reason = _unavailable()
    if reason:
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"{reason} ({REQUIRE_ENV}=1)")
        pytest.skip(reason)
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


@pytest.fixture(scope="module")
def rig(rel_harness: h.Harness) -> Iterator[Rig]:
    host = rel_harness.boot_host(HOST_NAME, "bookworm")
    try:
        fakes = fakegpu.install(host, sysfs="2x1080ti-rig", scenario="2x1080ti", nvidia_proc="410.78-proprietary")
        yield Rig(rel_harness, host, fakes)
    finally:
        rel_harness.stop([host])
