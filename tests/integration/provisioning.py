"""Provisioning helpers the integration tests share: a re-run through dlsetup's own API."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from dlsetup import commands
from dlsetup.config.targets import HostArgs


def changed_on_rerun(
    inventory: Path, host: str, tags: Sequence[str], source_flags: Mapping[str, str | None] | None = None
) -> tuple[int, dict[str, int]]:
    """Run the same provision again through dlsetup's own API and return (failures, changed per host), read from
    the runner's stats; the tasks that changed are printed (pytest shows them when an assertion fails). The
    sources are the inventory's (``dlsetup_wheelhouse`` ...) and ``source_flags`` (as ``--pytorch-index`` ...)."""
    targets = commands.load_targets(HostArgs((host,), inventory))
    gathered = commands.gather_facts(targets)
    commands.require_reachable(gathered)
    sources = commands.sources_for(targets, commands.parse_source_flags(source_flags))
    plans, errors = commands.plan_hosts(gathered, commands.pins_for(targets, []), sources)
    assert not errors, errors
    outcome = commands.provision(
        targets, plans, commands.expectations_for(targets, []), check=False, diff=False, tags=list(tags),
        run_verify=False, junit_xml=None,
    )  # fmt: skip
    changed_tasks = [task for results in outcome.run.results.values() for task, _, res in results if res.get("changed")]
    print("changed on the re-run:", changed_tasks)
    failures = sum(s.failures for s in outcome.run.stats.values())
    return failures, {name: s.changed for name, s in outcome.run.stats.items()}
