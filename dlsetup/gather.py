"""Gather hardware facts from hosts through the runner (the facts playbook and our module)."""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from typing import Any

from dlsetup import runner
from dlsetup.errors import DlsetupError
from dlsetup.facts import HostFacts
from dlsetup.targets import TargetSet

FACTS_ACTION = "dlsetup_hw_facts"


@dataclass(frozen=True)
class GatherResult:
    facts: dict[str, HostFacts]
    # hosts that could not be reached or whose facts task failed: name -> one-line reason
    errors: dict[str, str]
    run: runner.RunResult
    # what the last provision recorded on each host (/etc/ansible/facts.d/dlsetup.fact), if anything
    previous: dict[str, dict[str, Any]] = field(default_factory=dict)


def gather(targets: TargetSet, on_event: runner.EventCallback | None = None) -> GatherResult:
    """Run the facts playbook on every target; unreachable hosts are reported, not raised."""
    run = runner.run_playbook("facts.yml", targets, on_event=on_event, kind="facts")
    facts: dict[str, HostFacts] = {}
    errors: dict[str, str] = {}
    for name in targets.names:
        if name in run.unreachable:
            errors[name] = f"unreachable: {run.unreachable[name]}"
            continue
        results = run.task_results(name, FACTS_ACTION)
        if not results:
            failed = run.failed_tasks.get(name)
            reason = failed[0][1] if failed else "the facts task did not run"
            errors[name] = f"facts failed: {reason}"
            continue
        raw: Any = (results[-1].get("ansible_facts") or {}).get("dlsetup_hw")
        try:
            facts[name] = HostFacts.from_dict(raw)
        except DlsetupError as exc:
            errors[name] = f"facts malformed: {exc}"
    previous = {name: state for name in facts if (state := _previous_state(run, name)) is not None}
    return GatherResult(facts, errors, run, previous)


def _previous_state(run: runner.RunResult, host: str) -> dict[str, Any] | None:
    for res in run.task_results(host, "ansible.builtin.slurp"):
        try:
            data = json.loads(base64.b64decode(str(res.get("content", ""))))
        except (binascii.Error, ValueError):
            return None  # unreadable state is treated as no state: the next provision rewrites it
        return data if isinstance(data, dict) else None
    return None
