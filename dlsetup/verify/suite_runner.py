"""The one place that runs the pytest-testinfra verification suite (:mod:`dlsetup.verify.suite`).

Facts and expectations (with where each came from) are handed to the suite in a context file, with what the same run
read on each host (``verify.yml``: the record of the last provision, the framework probes, the venv's build record):
given all of it, the suite makes no call to the host. It writes the per-host report (verdict, counts, every check)
to a report file, which becomes the :class:`~dlsetup.verify.report.VerifyReport`. JUnit XML comes from pytest
itself.

The hosts and their variables reach the suite (testinfra's ``ansible-inventory`` and ``ansible``) through the
environment of pytest, not a file: ``verify-inventory`` is an inventory script that prints
``$DLSETUP_VERIFY_INVENTORY`` (which the suite's conftest hands testinfra directly, sparing it
``ansible-inventory``), so an ``ansible_become_password`` or ``ansible_ssh_pass`` of the inventory still connects and is
written nowhere. What the suite leaves in the work directory is redacted like a run's (:mod:`dlsetup.run.redact`);
its temp files live in ``tmp/`` there, removed at the end; a SIGINT or SIGTERM stops pytest too
(:func:`dlsetup.run.signals.run_child`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from dlsetup import paths
from dlsetup.config.targets import TargetSet
from dlsetup.errors import DlsetupError
from dlsetup.facts.baseline import HardwareBaseline
from dlsetup.facts.model import HostFacts
from dlsetup.run import redact, rundir, signals
from dlsetup.verify import probes
from dlsetup.verify.expect import Expectations
from dlsetup.verify.report import HostReport, VerifyReport

# prints the inventory given in the environment (Ansible's script inventory: --list, --host NAME)
_INVENTORY_SCRIPT = """#!/bin/sh
# dlsetup verify: the hosts and their variables come from DLSETUP_VERIFY_INVENTORY, the environment of this
# verify run, so that no password of the inventory is written to disk.
if [ "$1" = "--host" ]; then echo '{}'; else printf '%s\\n' "$DLSETUP_VERIFY_INVENTORY"; fi
"""


def _collected(result: Mapping[str, Any] | None) -> dict[str, Any] | None:
    return probes.collected(result) if result is not None else None


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
    records: Mapping[str, Any] | None = None,
    frameworks: Mapping[str, Mapping[str, Any]] | None = None,
) -> VerifyReport:
    """Run the suite against the hosts in ``facts`` (already gathered) and return the per-host report.

    ``records`` (the record as read on each host, absent: none) and ``frameworks`` (the framework probes'
    results collected with the facts, :func:`dlsetup.verify.probes.collected`), when given, spare the suite its
    own calls to the hosts for them."""
    names = [n for n in targets.names if n in facts]
    work_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    context_path = work_dir / "verify-context.json"
    report_path = work_dir / "verify-report.json"
    inventory_path = work_dir / "verify-inventory"
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
                **({"record": records.get(n)} if records is not None else {}),
                **({"frameworks": found} if (found := _collected((frameworks or {}).get(n))) is not None else {}),
            }
            for n in names
        },
    }
    inventory = targets.inventory_for_all()["all"]["hosts"]
    listing = json.dumps({"all": {"hosts": list(inventory)}, "_meta": {"hostvars": inventory}})
    env = dict(os.environ)
    env.update(paths.ansible_env())
    secrets = redact.Secrets.collect(
        env, dict(targets.inventory_hostvars), inventory, values=[targets.vault.password, *targets.vaulted]
    )
    redact.write_private(context_path, json.dumps(secrets.redact(context)))
    redact.write_private(inventory_path, _INVENTORY_SCRIPT, mode=0o700)
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
    env.update(
        {
            "DLSETUP_VERIFY_CONTEXT": str(context_path),
            "DLSETUP_VERIFY_REPORT": str(report_path),
            "DLSETUP_VERIFY_INVENTORY": listing,
            # only our script: an ansible.cfg's choice of inventory plugins must not turn it away
            "ANSIBLE_INVENTORY_ENABLED": "script",
        }
    )
    try:
        with rundir.scratch(work_dir) as scratch:
            env.update(rundir.scratch_env(scratch))
            fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as log:
                returncode, _, _ = signals.run_child(
                    cmd,
                    what=f"the verification suite on {', '.join(names)}; log: {log_path}",
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
        written_text = report_path.read_text() if report_path.exists() else None
    finally:
        redact.redact_tree(work_dir, secrets, skip=[rundir.LOCK_NAME])
    if returncode not in (0, 1) or written_text is None:
        raise DlsetupError(f"the verification suite could not run (pytest exit code {returncode}); log: {log_path}")
    try:
        written = VerifyReport.from_dict(json.loads(written_text))
    except (ValueError, ValidationError) as exc:
        raise DlsetupError(f"the verification suite wrote an unreadable report ({exc}); log: {log_path}") from None
    hosts = {
        name: written.hosts.get(name) or HostReport.unreachable(f"no check ran on {name}; log: {log_path}")
        for name in names
    }
    return VerifyReport(hosts, log_path)
