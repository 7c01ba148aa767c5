"""Gather each host's facts through the run stage (``facts.yml``: our module, then the last provision's record)."""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field

from dlsetup.config.targets import TargetSet
from dlsetup.errors import DlsetupError
from dlsetup.facts.model import HostFacts
from dlsetup.facts.record import HostRecord
from dlsetup.run import runner

FACTS_ACTION = "dlsetup_hw_facts"


@dataclass(frozen=True)
class GatherResult:
    facts: dict[str, HostFacts]
    # hosts that could not be reached or whose facts task failed: name -> one-line reason
    errors: dict[str, str]
    run: runner.RunResult
    # what the last provision recorded on each host, if anything
    previous: dict[str, HostRecord] = field(default_factory=dict)


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
        raw = (results[-1].get("ansible_facts") or {}).get("dlsetup_hw")
        try:
            facts[name] = HostFacts.from_dict(raw)
        except DlsetupError as exc:
            errors[name] = f"facts malformed: {exc}"
    previous = {name: record for name in facts if (record := _previous_record(run, name)) is not None}
    return GatherResult(facts, errors, run, previous)


def _previous_record(run: runner.RunResult, host: str) -> HostRecord | None:
    for res in run.task_results(host, "ansible.builtin.slurp"):
        try:
            data = json.loads(base64.b64decode(str(res.get("content", ""))))
        except (binascii.Error, ValueError):
            return None  # unreadable state is treated as no state: the next provision rewrites it
        return HostRecord.parse(data)
    return None
