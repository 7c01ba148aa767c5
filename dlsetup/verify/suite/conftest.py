"""Fixtures of the verification suite.

Two ways in:
* ``dlsetup verify`` sets ``DLSETUP_VERIFY_CONTEXT`` to a JSON file with each host's facts (already gathered)
  and expectations (already validated, with where each came from), and ``DLSETUP_VERIFY_REPORT`` to where the
  report goes;
* standalone ``pytest --pyargs dlsetup.verify.suite --hosts=ansible://GROUP --ansible-inventory=INV``: facts come
  from our module through testinfra's Ansible backend, expectations from the inventory's ``dlsetup_expect``.

``dlsetup verify`` also hands over what it read on the host in the same run as the facts (``verify.yml``): the
record of the last provision, the hardware baseline, the framework probes' output and the venv's build record;
standalone, the suite reads them on the host itself. What nobody expected explicitly is expected by default from
the record and from PCI (:mod:`dlsetup.verify.defaults`). Every
check of a host is evaluated once (:func:`dlsetup.verify.checks.evaluate`); each test reports one of them.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from testinfra.utils.ansible_runner import AnsibleRunner

from dlsetup import paths
from dlsetup.facts.baseline import BASELINE_PATH, HardwareBaseline
from dlsetup.facts.model import HostFacts
from dlsetup.facts.pcie import explain_pcie
from dlsetup.facts.record import RECORD_PATH, HostRecord
from dlsetup.verify import checks
from dlsetup.verify.checks import CheckResult
from dlsetup.verify.defaults import nothing_checked_reason, with_defaults
from dlsetup.verify.expect import FROM_INVENTORY, FROM_RECORD, Expectations, parse_expectations
from dlsetup.verify.probes import (
    BUILD_RECORD_NAME,
    JAX_PROBE,
    TORCH_PROBE,
    BuildRecord,
    JaxProbe,
    TorchProbe,
    probe_output,
)
from dlsetup.verify.report import HostReport, VerifyReport

for _key, _value in paths.ansible_env().items():
    if _key.startswith("ANSIBLE_") and _key != "ANSIBLE_NOCOLOR":
        os.environ.setdefault(_key, _value)

DEFAULT_VENV = "/opt/dlsetup/venv"
_CONTEXT: dict[str, Any] = {}
_CONTEXT_PATH = os.environ.get("DLSETUP_VERIFY_CONTEXT")
if _CONTEXT_PATH:
    _CONTEXT = json.loads(Path(_CONTEXT_PATH).read_text())
_RECORDS: dict[str, list[CheckResult]] = {}
_NOTHING_CHECKED: dict[str, str] = {}  # host → why nothing could be checked there (used when all checks skip)
_CACHE: dict[tuple[str, str], Any] = {}


class DlsetupCheckWarning(UserWarning):
    """A check that found something worth knowing that is not a failure."""


def _host_name(host: Any) -> str:
    return str(getattr(host.backend, "host", None) or host.backend.get_hostname())


def _context_host(name: str) -> dict[str, Any] | None:
    hosts = _CONTEXT.get("hosts") or {}
    entry = hosts.get(name)
    return dict(entry) if entry is not None else None


def _hostvars(host: Any) -> dict[str, Any]:
    try:
        return dict(host.ansible.get_variables())
    except Exception:  # not the ansible backend: no inventory variables
        return {}


@pytest.fixture
def host_name(host: Any) -> str:
    return _host_name(host)


@pytest.fixture
def hw_facts(host: Any, host_name: str) -> HostFacts:
    key = (host_name, "facts")
    if key not in _CACHE:
        ctx = _context_host(host_name)
        if ctx is not None:
            _CACHE[key] = explain_pcie(HostFacts.from_dict(ctx["facts"]))
        else:
            hv = _hostvars(host)
            args = " ".join(
                f"{opt}={hv[var]}"
                for opt, var in (("sysfs_root", "hw_facts_sysfs_root"), ("nvidia_proc_dir", "hw_facts_nvidia_proc_dir"))
                if hv.get(var)
            )
            res = host.ansible("dlsetup_hw_facts", args or None, check=False)
            if res.get("failed"):
                pytest.fail(f"dlsetup_hw_facts failed on {host_name}: {res.get('msg')}")
            _CACHE[key] = explain_pcie(HostFacts.from_dict(res["ansible_facts"]["dlsetup_hw"]))
    facts: HostFacts = _CACHE[key]
    return facts


@pytest.fixture
def host_record(host: Any, host_name: str) -> HostRecord | None:
    """The record of the last provision on the host (``None``: none, or not readable as one)."""
    key = (host_name, "record")
    if key not in _CACHE:
        ctx = _context_host(host_name) or {}
        if "record" in ctx:
            _CACHE[key] = HostRecord.parse(ctx["record"]) if ctx["record"] is not None else None
        else:
            _CACHE[key] = _read_record(host)
    record: HostRecord | None = _CACHE[key]
    return record


def _read_record(host: Any) -> HostRecord | None:
    try:
        state = host.file(RECORD_PATH)
        if not state.exists:
            return None
        return HostRecord.parse(json.loads(state.content_string))
    except Exception:  # unreadable, not JSON: no record (the next provision rewrites it)
        return None


@pytest.fixture
def hardware_baseline(host: Any, host_name: str, host_record: HostRecord | None) -> HardwareBaseline | None:
    """The hardware of the host's last verified run (``None``: none; or, from ``dlsetup verify
    --accept-hardware``, not compared). Standalone, the host's baseline file, else its record's GPUs."""
    key = (host_name, "baseline")
    if key not in _CACHE:
        ctx = _context_host(host_name) or {}
        if "baseline" in ctx:
            _CACHE[key] = HardwareBaseline.parse(ctx["baseline"]) if ctx["baseline"] is not None else None
        else:
            _CACHE[key] = _read_baseline(host) or (
                HardwareBaseline.from_record(host_record) if host_record is not None and host_record.gpus else None
            )
    baseline: HardwareBaseline | None = _CACHE[key]
    return baseline


def _read_baseline(host: Any) -> HardwareBaseline | None:
    try:
        found = host.file(BASELINE_PATH)
        if not found.exists:
            return None
        return HardwareBaseline.parse(json.loads(found.content_string))
    except Exception:  # unreadable, not JSON: no baseline
        return None


@pytest.fixture
def explicit_expectations(host: Any, host_name: str) -> Expectations:
    """What the user expects: ``--expect`` and the inventory's ``dlsetup_expect``."""
    key = (host_name, "expect")
    if key not in _CACHE:
        ctx = _context_host(host_name)
        if ctx is not None:
            origin = ctx.get("expect_from") or FROM_INVENTORY
            _CACHE[key] = parse_expectations(ctx.get("expect"), where=f"host {host_name}", origin=origin)
        else:
            raw = _hostvars(host).get("dlsetup_expect")
            _CACHE[key] = parse_expectations(raw, where=f"host {host_name}")
    result: Expectations = _CACHE[key]
    return result


@pytest.fixture
def expectations(
    host_name: str,
    hw_facts: HostFacts,
    host_record: HostRecord | None,
    hardware_baseline: HardwareBaseline | None,
    explicit_expectations: Expectations,
) -> Expectations:
    """The explicit expectations, completed with the defaults of the baseline, PCI and the plan record."""
    key = (host_name, "expect+defaults")
    if key not in _CACHE:
        _CACHE[key] = with_defaults(explicit_expectations, hw_facts, host_record, hardware_baseline)
        _NOTHING_CHECKED[host_name] = nothing_checked_reason(hw_facts, host_record, explicit_expectations)
    result: Expectations = _CACHE[key]
    return result


def _venv(host: Any, host_name: str) -> str:
    ctx = _context_host(host_name) or {}
    return str(ctx.get("venv") or _hostvars(host).get("dl_stack_venv_path") or DEFAULT_VENV)


@pytest.fixture
def venv_path(host: Any, host_name: str) -> str:
    """dlsetup's venv on the host (``dl_stack_venv_path``): the framework checks' Python and its build record."""
    return _venv(host, host_name)


def _collected(host_name: str) -> dict[str, Any] | None:
    """What ``dlsetup verify`` collected of the host's framework probes (verify.yml), if it did."""
    found = (_context_host(host_name) or {}).get("frameworks")
    return dict(found) if isinstance(found, dict) else None


def _python(host: Any, host_name: str) -> str:
    return f"{_venv(host, host_name)}/bin/python" if _has_venv_python(host, host_name) else "python3"


def _run_probe(host: Any, host_name: str, name: str, script: str) -> dict[str, Any]:
    """A probe's JSON: as ``dlsetup verify`` collected it, else run here with the venv's Python (standalone)."""
    collected = _collected(host_name)
    if collected is not None:
        result: dict[str, Any] = collected[name]
        return result
    python = _python(host, host_name)
    res = host.run("DLSETUP_PROBE_LOAD=1 %s -c %s", python, script)
    return probe_output(res.stdout, res.stderr, python, res.rc)


def _has_venv_python(host: Any, host_name: str) -> bool:
    collected = _collected(host_name)
    if collected is not None:
        return bool(collected["venv_python"])
    return bool(host.file(f"{_venv(host, host_name)}/bin/python").exists)


@pytest.fixture
def torch_probe(host: Any, host_name: str, expectations: Expectations) -> TorchProbe:
    key = (host_name, "torch")
    if key not in _CACHE:
        venv = _venv(host, host_name)
        recorded = FROM_RECORD in (expectations.origin("framework"), expectations.origin("pytorch_version"))
        if recorded and expectations.wants("pytorch") and not _has_venv_python(host, host_name):
            # the provision installs PyTorch there: another Python's torch would not be the one it installed
            _CACHE[key] = TorchProbe(error=f"no Python at {venv}/bin/python, the venv the provision installs into")
        else:
            _CACHE[key] = TorchProbe.parse(_run_probe(host, host_name, "torch", TORCH_PROBE))
    probe: TorchProbe = _CACHE[key]
    return probe


@pytest.fixture
def jax_probe(host: Any, host_name: str) -> JaxProbe:
    key = (host_name, "jax")
    if key not in _CACHE:
        _CACHE[key] = JaxProbe.parse(_run_probe(host, host_name, "jax", JAX_PROBE))
    probe: JaxProbe = _CACHE[key]
    return probe


@pytest.fixture
def build_record(host: Any, host_name: str, venv_path: str) -> BuildRecord | None:
    """The venv's build record (``dlsetup-build.json``; ``None``: the venv has none)."""
    key = (host_name, "build")
    if key not in _CACHE:
        collected = _collected(host_name)
        if collected is not None:
            text = collected.get("build_record")
        else:
            found = host.file(f"{venv_path}/{BUILD_RECORD_NAME}")
            text = found.content_string if found.exists else None
        _CACHE[key] = BuildRecord.parse(text) if text is not None else None
    record: BuildRecord | None = _CACHE[key]
    return record


@pytest.fixture
def load_required() -> bool:
    return bool(_CONTEXT.get("load"))


@pytest.fixture
def host_checks(
    host_name: str,
    hw_facts: HostFacts,
    expectations: Expectations,
    torch_probe: TorchProbe,
    jax_probe: JaxProbe,
    load_required: bool,
    hardware_baseline: HardwareBaseline | None,
) -> dict[str, CheckResult]:
    """Every check of the host (:func:`dlsetup.verify.checks.evaluate`), by id; evaluated once per host."""
    key = (host_name, "checks")
    if key not in _CACHE:
        results = checks.evaluate(
            hw_facts, expectations, torch_probe, jax_probe, load_required=load_required, baseline=hardware_baseline
        )
        _CACHE[key] = {r.id: r for r in results}
    found: dict[str, CheckResult] = _CACHE[key]
    return found


@pytest.fixture
def check(
    host_name: str, host_checks: dict[str, CheckResult], record_property: Callable[[str, Any], None]
) -> Callable[[str], None]:
    """Report the check ``check_id`` of this host (or a result evaluated by the test itself), then turn it into
    pytest's outcome (fail/skip, warn = pass + warning)."""

    def report(check_id: str | CheckResult) -> None:
        result = host_checks[check_id] if isinstance(check_id, str) else check_id
        _RECORDS.setdefault(host_name, []).append(result)
        record_property("check_id", result.id)
        record_property("status", result.status)
        record_property("expected_from", result.expected_from or "")
        expected = f"expected {result.expected!r}" + (f" from {result.expected_from}" if result.expected_from else "")
        message = f"{result.id}: {result.message} ({expected}, actual {result.actual!r})"
        if result.status == "fail":
            pytest.fail(message, pytrace=False)
        elif result.status == "skip":
            pytest.skip(message)
        elif result.status == "warn":
            warnings.warn(message, DlsetupCheckWarning, stacklevel=2)

    return report


def _rank(result: CheckResult) -> int:
    return checks.CHECK_IDS.index(result.id) if result.id in checks.CHECK_IDS else len(checks.CHECK_IDS)


def pytest_configure(config: pytest.Config) -> None:
    """Under ``dlsetup verify`` the inventory is already in the environment (``DLSETUP_VERIFY_INVENTORY``, what
    its inventory script prints): testinfra gets it from there instead of running ``ansible-inventory`` for it."""
    listing = os.environ.get("DLSETUP_VERIFY_INVENTORY")
    inventory_file = getattr(config.option, "ansible_inventory", None)
    if not (_CONTEXT_PATH and listing and inventory_file):
        return
    try:
        parsed = json.loads(listing)
        # testinfra reads the inventory once per file, through this cached property
        AnsibleRunner.get_runner(inventory_file).__dict__["inventory"] = parsed
    except Exception:  # another testinfra: it runs ansible-inventory itself, which reads the same listing
        return


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    target = os.environ.get("DLSETUP_VERIFY_REPORT")
    if not target:
        return
    hosts = {
        name: HostReport.of(sorted(results, key=_rank), nothing_checked=_NOTHING_CHECKED.get(name))
        for name, results in _RECORDS.items()
    }
    Path(target).write_text(json.dumps(VerifyReport(hosts, None).to_dict(), indent=1))
