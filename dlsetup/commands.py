"""What each CLI command does, without the rendering: the data path from inventory and flags to a result.

    config (targets, expectations, pins) → facts (gather) → plan (resolve) → run (site.yml) → verify (suite)

Everything that can be validated is validated before any host is changed. A command returns its result; a
result that ends the command with a non-zero exit carries that error as ``failure`` (the CLI renders the result,
then raises it). Input problems are raised at once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dlsetup.config.flags import parse_key_values
from dlsetup.config.targets import TargetSet, resolve_targets
from dlsetup.errors import (
    ConfigError,
    DlsetupError,
    RebootRequiredError,
    RunFailedError,
    UnreachableError,
    VerifyFailedError,
)
from dlsetup.facts import drift as hardware_drift
from dlsetup.facts import gather
from dlsetup.facts.model import HostFacts
from dlsetup.facts.record import HostRecord
from dlsetup.plan import drift as plan_drift
from dlsetup.plan.model import Plan
from dlsetup.plan.pins import validate_pins
from dlsetup.plan.request import request_from_facts, request_offline
from dlsetup.plan.resolve import resolve_stack
from dlsetup.run import runner
from dlsetup.verify import suite_runner
from dlsetup.verify.expect import Expectations, merge, parse_expect_flags
from dlsetup.verify.report import HostReport, VerifyReport

EventCallback = Callable[[dict[str, Any]], None]


# --- config -----------------------------------------------------------------------------------------------------


def load_targets(hosts: Sequence[str], inventory: Path | None) -> TargetSet:
    """Resolve HOST arguments against the (validated) inventory."""
    listing = runner.list_inventory(inventory) if inventory is not None else None
    return resolve_targets(hosts, inventory_path=inventory, inventory=listing)


def expectations_for(targets: TargetSet, expect_flags: Sequence[str]) -> dict[str, Expectations]:
    flags = parse_expect_flags(expect_flags)
    return {n: merge(targets.hostvars(n).get("dlsetup_expect"), flags, host=n) for n in targets.names}


def parse_pin_flags(pin_flags: Sequence[str]) -> dict[str, Any]:
    """``["driver_branch=580"]`` → a validated pins mapping."""
    overrides = parse_key_values(pin_flags, option="--pin", example="driver_branch=580")
    return validate_pins(overrides, where="--pin") if overrides else {}


def pins_for(targets: TargetSet, pin_flags: Sequence[str]) -> dict[str, dict[str, Any]]:
    overrides = parse_pin_flags(pin_flags)
    pins: dict[str, dict[str, Any]] = {}
    for name in targets.names:
        raw = targets.hostvars(name).get("dlsetup_pins") or {}
        if not isinstance(raw, Mapping):
            raise ConfigError(f"host {name}: dlsetup_pins must be a mapping, got {type(raw).__name__}")
        pins[name] = validate_pins({**raw, **overrides}, where=f"host {name}")
    return pins


# --- facts ------------------------------------------------------------------------------------------------------


def gather_facts(targets: TargetSet, on_event: EventCallback | None = None) -> gather.GatherResult:
    return gather.gather(targets, on_event)


def require_reachable(result: gather.GatherResult) -> None:
    if result.errors:
        name, reason = next(iter(result.errors.items()))
        more = f" (and {len(result.errors) - 1} more host(s))" if len(result.errors) > 1 else ""
        raise UnreachableError(f"host {name}: {reason}{more}; nothing was changed")


@dataclass(frozen=True)
class FactsResult:
    """``dlsetup facts``: the facts of every host reached, and why the others were not."""

    names: list[str]
    facts: dict[str, HostFacts]
    errors: dict[str, str]

    @property
    def failure(self) -> DlsetupError | None:
        if not self.errors:
            return None
        return UnreachableError(f"no facts from {', '.join(self.errors)}", shown=True)


def facts_command(hosts: Sequence[str], inventory: Path | None) -> FactsResult:
    targets = load_targets(hosts, inventory)
    gathered = gather_facts(targets)
    return FactsResult(targets.names, gathered.facts, gathered.errors)


# --- plan -------------------------------------------------------------------------------------------------------


@dataclass
class HostPlan:
    """One host's plan, with what changed since the record of its last provision."""

    name: str
    facts: HostFacts
    plan: Plan
    hardware_changes: list[str] = field(default_factory=list)
    plan_changes: list[str] = field(default_factory=list)

    def host_vars(self) -> dict[str, Any]:
        """The host variables of the run: the plan's role variables and the record the run leaves behind."""
        plan_json = self.plan.to_dict()
        return {**self.plan.to_extravars(), "dlsetup_state": HostRecord.of(self.facts, plan_json).to_dict()}


def plan_hosts(
    result: gather.GatherResult, pins: Mapping[str, Mapping[str, Any]]
) -> tuple[dict[str, HostPlan], dict[str, DlsetupError]]:
    """Resolve a plan per reachable host; hosts with no supported stack are returned as errors."""
    plans: dict[str, HostPlan] = {}
    errors: dict[str, DlsetupError] = {}
    for name, host_facts in result.facts.items():
        try:
            plan = resolve_stack(request_from_facts(host_facts, dict(pins.get(name) or {})))
        except DlsetupError as exc:
            errors[name] = exc
            continue
        previous = result.previous.get(name)
        plans[name] = HostPlan(
            name,
            host_facts,
            plan,
            hardware_drift.hardware_changes(previous, host_facts.gpus),
            plan_drift.plan_changes(previous.plan if previous else None, plan.to_dict()),
        )
    return plans, errors


@dataclass(frozen=True)
class PlanResult:
    """``dlsetup plan``: a plan per host (or one offline plan, under the OS name), and the hosts that got none."""

    plans: dict[str, Plan]
    errors: dict[str, DlsetupError]
    offline: bool

    @property
    def failure(self) -> DlsetupError | None:
        if not self.errors:
            return None
        # the errors were rendered with the plans: exit with the worst one's code
        return max(self.errors.values(), key=lambda e: e.exit_code).as_shown()


def plan_command(
    hosts: Sequence[str],
    inventory: Path | None,
    *,
    os_name: str | None,
    gpus: Sequence[str],
    machine: str | None,
    pin_flags: Sequence[str],
) -> PlanResult:
    if os_name is None and not hosts:
        raise ConfigError("give HOST(s) to plan from live facts, or --os (and --gpu) to plan offline")
    if os_name is not None and hosts:
        raise ConfigError("give either HOST(s) or --os, not both")
    if os_name is not None:
        pins = parse_pin_flags(pin_flags)
        try:
            return PlanResult({os_name: resolve_stack(request_offline(os_name, list(gpus), machine, pins))}, {}, True)
        except DlsetupError as exc:
            return PlanResult({}, {os_name: exc}, True)
    targets = load_targets(hosts, inventory)
    pins_by_host = pins_for(targets, pin_flags)
    gathered = gather_facts(targets)
    require_reachable(gathered)
    host_plans, errors = plan_hosts(gathered, pins_by_host)
    return PlanResult({n: p.plan for n, p in host_plans.items()}, errors, False)


# --- provision --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProvisionRequest:
    """Everything a provision needs, validated and planned, before anything on a host is changed."""

    targets: TargetSet
    plans: dict[str, HostPlan]
    expectations: dict[str, Expectations]


def prepare_provision(
    hosts: Sequence[str], inventory: Path | None, *, pin_flags: Sequence[str], expect_flags: Sequence[str]
) -> ProvisionRequest:
    """Targets, pins, expectations, facts and plans; any problem is raised before a host is touched."""
    targets = load_targets(hosts, inventory)
    pins = pins_for(targets, pin_flags)
    expectations = expectations_for(targets, expect_flags)
    gathered = gather_facts(targets)
    require_reachable(gathered)
    plans, errors = plan_hosts(gathered, pins)
    if errors:
        name, problem = next(iter(errors.items()))
        raise problem.about_host(name, "; nothing was changed")
    return ProvisionRequest(targets, plans, expectations)


@dataclass
class ProvisionOutcome:
    run: runner.RunResult
    reboot_required: list[str]
    check: bool
    verify_report: VerifyReport | None = None

    @property
    def changed(self) -> int:
        return sum(s.changed for s in self.run.stats.values())

    @property
    def failure(self) -> DlsetupError | None:
        """Why the provision did not end well, in the order it matters: unreachable, failed, reboot, verify."""
        stats = self.run.stats.values()
        if any(s.unreachable for s in stats):
            return UnreachableError(
                f"unreachable during the run: {', '.join(n for n, s in self.run.stats.items() if s.unreachable)}",
                shown=True,
            )
        if self.run.status != "successful" or any(s.failures for s in stats):
            return RunFailedError("provision failed: fix the cause above and run the same command again", verdict=True)
        # In check mode the reboot handlers run too, though nothing was installed: asking for a reboot (exit 7)
        # would loop, as the same check run after it flags the same reboot again.
        if self.reboot_required and not self.check:
            return reboot_error(self.reboot_required)
        if self.verify_report is not None and not self.verify_report.passed:
            return VerifyFailedError(f"verification failed on {', '.join(self.verify_report.failed_hosts)}", shown=True)
        return None


def provision(
    targets: TargetSet,
    plans: Mapping[str, HostPlan],
    expectations: Mapping[str, Expectations],
    *,
    check: bool,
    diff: bool,
    tags: Sequence[str],
    run_verify: bool,
    junit_xml: Path | None,
    on_event: EventCallback | None = None,
    become_password: str | None = None,
) -> ProvisionOutcome:
    """Apply each host's plan with site.yml; then verify (unless check mode or the run failed)."""
    run = runner.run_playbook(
        "site.yml",
        targets,
        host_extravars={name: host_plan.host_vars() for name, host_plan in plans.items()},
        check=check,
        diff=diff,
        tags=tags,
        on_event=on_event,
        kind="check" if check else "provision",
        become_password=become_password,
    )
    reboot = [n for n in plans if run.fact(n, "dlsetup_reboot_required")]
    outcome = ProvisionOutcome(run, reboot, check)
    ok = all(not s.failures and not s.unreachable for s in run.stats.values()) and run.status == "successful"
    if ok and not check and run_verify and not reboot:
        outcome.verify_report = verify_hosts(
            targets, {n: p.facts for n, p in plans.items()}, expectations, run, junit_xml=junit_xml
        )
    return outcome


def reboot_error(hosts: Sequence[str]) -> RebootRequiredError:
    return RebootRequiredError(
        # the nvidia_driver role (a kernel module) or the laptop role (kernel command line, PRIME) asked for it
        f"reboot required on {', '.join(hosts)} to load the new kernel module or settings: "
        "reboot, then run the same command again"
    )


# --- verify -----------------------------------------------------------------------------------------------------


def verify_hosts(
    targets: TargetSet,
    facts: Mapping[str, HostFacts],
    expectations: Mapping[str, Expectations],
    run: runner.RunResult | None = None,
    *,
    load: bool = False,
    junit_xml: Path | None = None,
    lost: Mapping[str, str] | None = None,
) -> VerifyReport:
    """Run the testinfra suite on ``facts``; hosts in ``lost`` (name → why) are reported as unreachable.

    After a provision (``run`` given) the facts are gathered again instead, since the driver may answer now where
    it did not before; a host that cannot be read then fails the report rather than dropping out of it.
    """
    lost = dict(lost or {})
    if run is not None:
        refreshed = gather.gather(targets)
        facts = refreshed.facts
        lost.update(refreshed.errors)
    work_dir = run.run_dir / "verify" if run is not None else runner.new_run_dir("verify")
    venvs = {n: str(targets.hostvars(n).get("dl_stack_venv_path") or "") or None for n in targets.names}
    report = (
        suite_runner.run_suite(
            targets,
            facts,
            expectations,
            work_dir=work_dir,
            load=load,
            venvs={n: v for n, v in venvs.items() if v},
            junit_xml=junit_xml,
        )
        if facts
        else VerifyReport({}, None)
    )
    if not lost:
        return report
    hosts = {**report.hosts, **{n: HostReport.unreachable(reason) for n, reason in lost.items()}}
    return VerifyReport({n: hosts[n] for n in targets.names if n in hosts}, report.log_path)


@dataclass(frozen=True)
class VerifyResult:
    """``dlsetup verify``: the report, and the hosts that could not be reached to check them."""

    report: VerifyReport
    unreachable: frozenset[str]

    @property
    def failure(self) -> DlsetupError | None:
        failed = self.report.failed_hosts
        if not failed:
            return None
        # docs/verify.md: 6 when a check failed, 3 when a host was unreachable; the higher one when both
        kind = VerifyFailedError if any(n not in self.unreachable for n in failed) else UnreachableError
        return kind(f"verification failed on {', '.join(failed)}", kind="verify_failed", verdict=True)


def verify_command(
    hosts: Sequence[str],
    inventory: Path | None,
    *,
    expect_flags: Sequence[str],
    load: bool,
    junit_xml: Path | None,
) -> VerifyResult:
    targets = load_targets(hosts, inventory)
    expectations = expectations_for(targets, expect_flags)
    gathered = gather_facts(targets)
    report = verify_hosts(targets, gathered.facts, expectations, load=load, junit_xml=junit_xml, lost=gathered.errors)
    return VerifyResult(report, frozenset(gathered.errors))
