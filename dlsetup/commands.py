"""What each CLI command does, without the rendering: inventory + flags → targets → facts → plan → run → verify.

Everything that can be validated is validated before any host is changed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dlsetup import drift, gather, runner, verify
from dlsetup.compat.pins import validate_pins
from dlsetup.compat.resolver import Plan, request_from_facts, request_offline, resolve_stack
from dlsetup.errors import ConfigError, DlsetupError, RebootRequiredError, UnreachableError
from dlsetup.expect import Expectations, merge, parse_expect_flags
from dlsetup.targets import TargetSet, resolve_targets

EventCallback = Callable[[dict[str, Any]], None]


def load_targets(hosts: Sequence[str], inventory: Path | None) -> TargetSet:
    """Resolve HOST arguments against the (validated) inventory."""
    listing = runner.list_inventory(inventory) if inventory is not None else None
    return resolve_targets(hosts, inventory_path=inventory, inventory=listing)


def expectations_for(targets: TargetSet, expect_flags: Sequence[str]) -> dict[str, Expectations]:
    flags = parse_expect_flags(expect_flags)
    return {n: merge(targets.hostvars(n).get("dlsetup_expect"), flags, host=n) for n in targets.names}


def parse_pin_flags(pin_flags: Sequence[str]) -> dict[str, Any]:
    """``["driver_branch=580"]`` → a validated pins mapping."""
    overrides: dict[str, Any] = {}
    for flag in pin_flags:
        key, sep, value = flag.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--pin {flag!r}: expected KEY=VALUE, e.g. --pin driver_branch=580")
        overrides[key.strip()] = value.strip()
    return validate_pins(overrides, where="--pin") if overrides else {}


def pins_for(targets: TargetSet, pin_flags: Sequence[str]) -> dict[str, dict[str, Any]]:
    overrides = parse_pin_flags(pin_flags)
    pins: dict[str, dict[str, Any]] = {}
    for name in targets.names:
        raw = targets.hostvars(name).get("dlsetup_pins") or {}
        if not isinstance(raw, Mapping):
            raise ConfigError(f"host {name}: dlsetup_pins must be a mapping, got {type(raw).__name__}")
        merged = {**raw, **overrides}
        pins[name] = validate_pins(merged, where=f"host {name}")
    return pins


def plan_offline(os_name: str, gpus: Sequence[str], machine: str | None, pins: Mapping[str, Any]) -> Plan:
    """A plan with no host at all: for parts someone is about to buy."""
    return resolve_stack(request_offline(os_name, list(gpus), machine, dict(pins)))


def gather_facts(targets: TargetSet, on_event: EventCallback | None = None) -> gather.GatherResult:
    return gather.gather(targets, on_event)


def require_reachable(result: gather.GatherResult) -> None:
    if result.errors:
        name, reason = next(iter(result.errors.items()))
        more = f" (and {len(result.errors) - 1} more host(s))" if len(result.errors) > 1 else ""
        raise UnreachableError(f"host {name}: {reason}{more}; nothing was changed")


@dataclass
class HostPlan:
    name: str
    facts: dict[str, Any]
    plan: Plan
    hardware_changes: list[str] = field(default_factory=list)
    plan_changes: list[str] = field(default_factory=list)


def plan_hosts(
    result: gather.GatherResult, pins: Mapping[str, Mapping[str, Any]]
) -> tuple[dict[str, HostPlan], dict[str, DlsetupError]]:
    """Resolve a plan per reachable host; hosts with no supported stack are returned as errors."""
    plans: dict[str, HostPlan] = {}
    errors: dict[str, DlsetupError] = {}
    for name, host_facts in result.facts.items():
        facts_dict = host_facts.to_dict()
        try:
            plan = resolve_stack(request_from_facts(facts_dict, dict(pins.get(name) or {})))
        except DlsetupError as exc:
            errors[name] = exc
            continue
        previous = result.previous.get(name)
        plans[name] = HostPlan(
            name,
            facts_dict,
            plan,
            drift.hardware_changes(previous, facts_dict.get("gpus") or []),
            drift.plan_changes((previous or {}).get("plan"), plan.to_dict()),
        )
    return plans, errors


@dataclass
class ProvisionOutcome:
    run: runner.RunResult
    reboot_required: list[str]
    verify_report: verify.VerifyReport | None = None


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
    # to_extravars() carries the role variables and the whole plan (dlsetup_plan) for the state file
    host_vars = {name: host_plan.plan.to_extravars() for name, host_plan in plans.items()}
    run = runner.run_playbook(
        "site.yml",
        targets,
        host_extravars=host_vars,
        check=check,
        diff=diff,
        tags=tags,
        on_event=on_event,
        kind="check" if check else "provision",
        become_password=become_password,
    )
    reboot = [n for n in plans if run.fact(n, "dlsetup_reboot_required")]
    outcome = ProvisionOutcome(run, reboot)
    ok = all(not s.failures and not s.unreachable for s in run.stats.values()) and run.status == "successful"
    if ok and not check and run_verify and not reboot:
        outcome.verify_report = verify_hosts(
            targets, {n: p.facts for n, p in plans.items()}, expectations, run, junit_xml=junit_xml
        )
    return outcome


def verify_hosts(
    targets: TargetSet,
    facts: Mapping[str, Mapping[str, Any]],
    expectations: Mapping[str, Expectations],
    run: runner.RunResult | None = None,
    *,
    load: bool = False,
    junit_xml: Path | None = None,
) -> verify.VerifyReport:
    """Run the testinfra suite on ``facts``. After a provision (``run`` given) the facts are gathered again
    instead, since the driver may answer now where it did not before."""
    lost: dict[str, str] = {}
    if run is not None:
        refreshed = gather.gather(targets)
        facts = {n: f.to_dict() for n, f in refreshed.facts.items()}
        lost = refreshed.errors  # a host that cannot be read now must fail the report, not drop out of it
    work_dir = run.run_dir / "verify" if run is not None else runner.new_run_dir("verify")
    venvs = {n: str(targets.hostvars(n).get("dl_stack_venv_path") or "") or None for n in targets.names}
    report = (
        verify.run_suite(
            targets,
            facts,
            expectations,
            work_dir=work_dir,
            load=load,
            venvs={n: v for n, v in venvs.items() if v},
            junit_xml=junit_xml,
        )
        if facts
        else verify.VerifyReport({}, work_dir)
    )
    if not lost:
        return report
    hosts = {**report.hosts, **{n: verify.unreachable_entry(reason) for n, reason in lost.items()}}
    return verify.VerifyReport({n: hosts[n] for n in targets.names if n in hosts}, report.log_path)


def unreachable_entry(reason: str) -> dict[str, Any]:
    """The verify report entry of a host that could not be checked at all."""
    return verify.unreachable_entry(reason)


def reboot_error(hosts: Sequence[str]) -> RebootRequiredError:
    return RebootRequiredError(
        # the nvidia_driver role (a kernel module) or the laptop role (kernel command line, PRIME) asked for it
        f"reboot required on {', '.join(hosts)} to load the new kernel module or settings: "
        "reboot, then run the same command again"
    )
