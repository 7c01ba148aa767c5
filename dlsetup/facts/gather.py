"""Gather each host's facts through the run stage (``facts.yml``: our module, then the last provision's record and
the hardware baseline); for verify, ``verify.yml`` also runs the framework probes alongside (their results in
:attr:`GatherResult.framework_probes`)."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from dlsetup.config.targets import TargetSet
from dlsetup.errors import DlsetupError
from dlsetup.facts.baseline import HardwareBaseline, load_from_controller
from dlsetup.facts.model import HostFacts
from dlsetup.facts.pcie import explain_pcie
from dlsetup.facts.record import HostRecord
from dlsetup.run import runner

FACTS_ACTION = "dlsetup_hw_facts"
PROBE_ACTION = "dlsetup_converged"
# verify.yml: the framework probes' results, as the module's collect call returns them
FRAMEWORK_ACTION = "dlsetup_framework_probe"
FRAMEWORK_TASK = "Collect the framework probes"
# the names of facts.yml's slurp tasks
RECORD_TASK = "Read the state of the last provision (hardware and plan then)"
BASELINE_TASK = "Read the hardware baseline"


@dataclass(frozen=True)
class GatherResult:
    facts: dict[str, HostFacts]
    # hosts that could not be reached or whose facts task failed: name -> one-line reason
    errors: dict[str, str]
    run: runner.RunResult
    # what the last provision recorded on each host, if anything
    previous: dict[str, HostRecord] = field(default_factory=dict)
    # the hardware of each host's last verified run: the host's own baseline, else the controller's copy, else
    # what an older provision's record says of its GPUs
    baselines: dict[str, HardwareBaseline] = field(default_factory=dict)
    # the hosts of ``errors`` that were reached, where the facts module failed (not unreachable)
    failed: frozenset[str] = frozenset()
    # the converged state now, as the last provision's record says to read it (dlsetup.run.converged)
    probes: dict[str, dict[str, Any]] = field(default_factory=dict)
    # verify.yml only: what the asynchronous dlsetup_framework_probe job returned on each host (failed set: it failed)
    framework_probes: dict[str, dict[str, Any]] = field(default_factory=dict)
    # the record as read on each host, unparsed (the verification suite gets it as it is)
    record_data: dict[str, Any] = field(default_factory=dict)


def gather(
    targets: TargetSet,
    on_event: runner.EventCallback | None = None,
    *,
    playbook: str = "facts.yml",
    extravars: Mapping[str, Any] | None = None,
) -> GatherResult:
    """Run the facts playbook (or ``verify.yml``, which includes it) on every target; unreachable hosts are
    reported, not raised."""
    run = runner.run_playbook(playbook, targets, extravars=extravars, on_event=on_event, kind="facts")
    facts: dict[str, HostFacts] = {}
    errors: dict[str, str] = {}
    failed: set[str] = set()
    for name in targets.names:
        if name in run.unreachable:
            errors[name] = f"unreachable: {run.unreachable[name]}"
            continue
        results = run.task_results(name, FACTS_ACTION)
        if not results:
            failures = run.failed_tasks.get(name)
            reason = failures[0][1] if failures else "the facts task did not run"
            errors[name] = f"reached, but the facts module failed: {reason}"
            failed.add(name)
            continue
        raw = (results[-1].get("ansible_facts") or {}).get("dlsetup_hw")
        try:
            facts[name] = explain_pcie(HostFacts.from_dict(raw))
        except DlsetupError as exc:
            errors[name] = f"facts malformed: {exc}"
            failed.add(name)
    record_data = {name: data for name in facts if (data := _slurped(run, name, RECORD_TASK)) is not None}
    previous = {name: record for name, data in record_data.items() if (record := HostRecord.parse(data)) is not None}
    baselines = {name: found for name in facts if (found := _baseline(run, name, previous.get(name))) is not None}
    probes = {name: probe for name in facts if isinstance(probe := _probe(run, name), dict)}
    frameworks = {
        name: job
        for name in facts
        if (results := run.task_results(name, FRAMEWORK_ACTION, FRAMEWORK_TASK))
        and isinstance(job := results[-1].get("job"), dict)
    }
    return GatherResult(facts, errors, run, previous, baselines, frozenset(failed), probes, frameworks, record_data)


def _probe(run: runner.RunResult, host: str) -> object:
    results = run.task_results(host, PROBE_ACTION)
    return results[-1].get("probe") if results else None


def _slurped(run: runner.RunResult, host: str, task: str) -> object:
    for res in run.task_results(host, "ansible.builtin.slurp", task):
        try:
            return json.loads(base64.b64decode(str(res.get("content", ""))))
        except (binascii.Error, ValueError):
            return None  # unreadable state is treated as no state: the next provision rewrites it
    return None


def _baseline(run: runner.RunResult, host: str, record: HostRecord | None) -> HardwareBaseline | None:
    data = _slurped(run, host, BASELINE_TASK)
    found = HardwareBaseline.parse(data) if data is not None else None
    if found is None:
        found = load_from_controller(runner.state_dir(), host)
    if found is None and record is not None and record.gpus:
        found = HardwareBaseline.from_record(record)
    return found
