"""The one place that runs the pytest-testinfra verification suite (:mod:`dlsetup.verify.suite`).

Facts and expectations (with where each came from) are handed to the suite in a context file; the suite reads the
record of the last provision on the host itself, and writes the per-host report (verdict, counts, every check) to a
report file, which becomes the :class:`~dlsetup.verify.report.VerifyReport`. JUnit XML comes from pytest itself.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import yaml
from pydantic import ValidationError

from dlsetup import paths
from dlsetup.config.targets import TargetSet
from dlsetup.errors import DlsetupError
from dlsetup.facts.baseline import HardwareBaseline
from dlsetup.facts.model import HostFacts
from dlsetup.verify.expect import Expectations
from dlsetup.verify.report import HostReport, VerifyReport


def run_suite(
    targets: TargetSet,
    facts: Mapping[str, HostFacts],
    expectations: Mapping[str, Expectations],
    *,
    work_dir: Path,
    load: bool = False,
    venvs: Mapping[str, str] | None = None,
    junit_xml: Path | None = None,
    baselines: Mapping[str, HardwareBaseline] | None = None,
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
            n: {
                "facts": facts[n].to_dict(),
                "expect": expectations[n].to_dict(),
                "expect_from": {k: v for k, v in expectations[n].origins.items() if k in expectations[n].to_dict()},
                "venv": (venvs or {}).get(n),
                # the hardware of the last verified run (None: none, or its expectations were just accepted)
                "baseline": b.to_dict() if (b := (baselines or {}).get(n)) is not None else None,
            }
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
    try:
        written = VerifyReport.from_dict(json.loads(report_path.read_text()))
    except (ValueError, ValidationError) as exc:
        raise DlsetupError(f"the verification suite wrote an unreadable report ({exc}); log: {log_path}") from None
    hosts = {
        name: written.hosts.get(name) or HostReport.unreachable(f"no check ran on {name}; log: {log_path}")
        for name in names
    }
    return VerifyReport(hosts, log_path)
