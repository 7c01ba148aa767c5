"""Fixtures of the verification suite.

Two ways in:
* ``dlsetup verify`` sets ``DLSETUP_VERIFY_CONTEXT`` to a JSON file with each host's facts (already gathered)
  and expectations (already validated), and ``DLSETUP_VERIFY_REPORT`` to where the check records go;
* standalone ``pytest --pyargs dlsetup.verify.suite --hosts=ansible://GROUP --ansible-inventory=INV``: facts come
  from our module through testinfra's Ansible backend, expectations from the inventory's ``dlsetup_expect``.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from dlsetup import paths
from dlsetup.facts.model import HostFacts
from dlsetup.verify.checks import CheckResult
from dlsetup.verify.expect import Expectations, parse_expectations
from dlsetup.verify.probes import JAX_PROBE, TORCH_PROBE, JaxProbe, TorchProbe, failure, last_json_line

for _key, _value in paths.ansible_env().items():
    if _key.startswith("ANSIBLE_") and _key != "ANSIBLE_NOCOLOR":
        os.environ.setdefault(_key, _value)

DEFAULT_VENV = "/opt/dlsetup/venv"
_CONTEXT: dict[str, Any] = {}
_CONTEXT_PATH = os.environ.get("DLSETUP_VERIFY_CONTEXT")
if _CONTEXT_PATH:
    _CONTEXT = json.loads(Path(_CONTEXT_PATH).read_text())
_RECORDS: dict[str, list[dict[str, Any]]] = {}
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
            _CACHE[key] = HostFacts.from_dict(ctx["facts"])
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
            _CACHE[key] = HostFacts.from_dict(res["ansible_facts"]["dlsetup_hw"])
    facts: HostFacts = _CACHE[key]
    return facts


@pytest.fixture
def expectations(host: Any, host_name: str) -> Expectations:
    key = (host_name, "expect")
    if key not in _CACHE:
        ctx = _context_host(host_name)
        raw = ctx.get("expect") if ctx is not None else _hostvars(host).get("dlsetup_expect")
        _CACHE[key] = parse_expectations(raw, where=f"host {host_name}")
    result: Expectations = _CACHE[key]
    return result


def _python(host: Any, host_name: str) -> str:
    ctx = _context_host(host_name) or {}
    venv = ctx.get("venv") or _hostvars(host).get("dl_stack_venv_path") or DEFAULT_VENV
    candidate = f"{venv}/bin/python"
    return candidate if host.file(candidate).exists else "python3"


def _run_probe(host: Any, host_name: str, script: str, *, load: bool = True) -> dict[str, Any]:
    python = _python(host, host_name)
    env = "DLSETUP_PROBE_LOAD=1" if load else "DLSETUP_PROBE_LOAD=0"
    res = host.run(f"{env} %s -c %s", python, script)
    return last_json_line(res.stdout) or failure(res.stderr.strip().splitlines(), python, res.rc)


@pytest.fixture
def torch_probe(host: Any, host_name: str) -> TorchProbe:
    key = (host_name, "torch")
    if key not in _CACHE:
        _CACHE[key] = TorchProbe.parse(_run_probe(host, host_name, TORCH_PROBE))
    probe: TorchProbe = _CACHE[key]
    return probe


@pytest.fixture
def jax_probe(host: Any, host_name: str) -> JaxProbe:
    key = (host_name, "jax")
    if key not in _CACHE:
        _CACHE[key] = JaxProbe.parse(_run_probe(host, host_name, JAX_PROBE))
    probe: JaxProbe = _CACHE[key]
    return probe


@pytest.fixture
def load_required() -> bool:
    return bool(_CONTEXT.get("load"))


@pytest.fixture
def check(host_name: str, record_property: Callable[[str, Any], None]) -> Callable[[CheckResult], None]:
    """Record a check result, then turn it into pytest's outcome (fail/skip, warn = pass + warning)."""

    def report(result: CheckResult) -> None:
        _RECORDS.setdefault(host_name, []).append(result.to_dict())
        record_property("check_id", result.id)
        record_property("status", result.status)
        message = f"{result.id}: {result.message} (expected {result.expected!r}, actual {result.actual!r})"
        if result.status == "fail":
            pytest.fail(message, pytrace=False)
        elif result.status == "skip":
            pytest.skip(message)
        elif result.status == "warn":
            warnings.warn(message, DlsetupCheckWarning, stacklevel=2)

    return report


# report order: what the machine is, then its GPUs, the driver, the frameworks
_ORDER = ("host.", "gpu.", "driver.", "framework.")


def _rank(record: dict[str, Any]) -> int:
    return next((i for i, prefix in enumerate(_ORDER) if record["id"].startswith(prefix)), len(_ORDER))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    target = os.environ.get("DLSETUP_VERIFY_REPORT")
    if not target:
        return
    report = {
        "hosts": {
            name: {
                "passed": not any(r["status"] == "fail" for r in records),
                "checks": sorted(records, key=_rank),
            }
            for name, records in _RECORDS.items()
        }
    }
    Path(target).write_text(json.dumps(report, indent=1))
