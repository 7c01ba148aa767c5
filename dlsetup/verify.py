"""The one place that runs the pytest-testinfra verification suite.

Facts and expectations are handed to the suite in a context file; the suite writes one record per check
to a report file, which becomes the ``VerifyReport``. JUnit XML comes from pytest itself.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from dlsetup import paths
from dlsetup.errors import DlsetupError
from dlsetup.expect import Expectations
from dlsetup.targets import TargetSet


@dataclass(frozen=True)
class VerifyReport:
    hosts: dict[str, dict[str, Any]]
    log_path: Path

    @property
    def passed(self) -> bool:
        return all(h["passed"] for h in self.hosts.values())

    def to_dict(self) -> dict[str, Any]:
        return {"hosts": self.hosts}


def unreachable_entry(reason: str) -> dict[str, Any]:
    return {
        "passed": False,
        "checks": [{"id": "host.reachable", "status": "fail", "expected": True, "actual": False, "message": reason}],
    }


def run_suite(
    targets: TargetSet,
    facts: Mapping[str, Mapping[str, Any]],
    expectations: Mapping[str, Expectations],
    *,
    work_dir: Path,
    load: bool = False,
    venvs: Mapping[str, str] | None = None,
    junit_xml: Path | None = None,
) -> VerifyReport:
    """Run the suite against the hosts in ``facts`` (already gathered) and return the per-host report."""
    names = [n for n in targets.names if n in facts]
    work_dir.mkdir(parents=True, exist_ok=True)
    context_path = work_dir / "verify-context.json"
    report_path = work_dir / "verify-report.json"
    inventory_path = work_dir / "verify-inventory.yml"
    log_path = work_dir / "verify.log"
    context = {
        "load": load,
        "hosts": {
            n: {"facts": dict(facts[n]), "expect": expectations[n].to_dict(), "venv": (venvs or {}).get(n)}
            for n in names
        },
    }
    context_path.write_text(json.dumps(context))
    inventory_path.write_text(yaml.safe_dump(targets.inventory_for_all(), sort_keys=False))
    suite = paths.verify_suite_dir()
    cmd = [
        sys.executable, "-m", "pytest", str(suite),
        "-c", str(suite / "pytest.ini"), "--rootdir", str(suite),
        "--hosts", ",".join(f"ansible://{n}" for n in names),
        "--ansible-inventory", str(inventory_path),
        "-q", "-rfEsw", "--color=no",
    ]  # fmt: skip
    if junit_xml is not None:
        cmd += ["--junit-xml", str(junit_xml)]
    env = dict(os.environ)
    env.update(paths.ansible_env())
    env.update({"DLSETUP_VERIFY_CONTEXT": str(context_path), "DLSETUP_VERIFY_REPORT": str(report_path)})
    with log_path.open("w") as log:
        proc = subprocess.run(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, check=False)
    if proc.returncode not in (0, 1) or not report_path.exists():
        raise DlsetupError(
            f"the verification suite could not run (pytest exit code {proc.returncode}); log: {log_path}"
        )
    raw = json.loads(report_path.read_text())
    hosts: dict[str, dict[str, Any]] = {}
    for name in names:
        entry = raw.get("hosts", {}).get(name)
        hosts[name] = entry if entry else unreachable_entry(f"no check ran on {name}; log: {log_path}")
    return VerifyReport(hosts, log_path)
