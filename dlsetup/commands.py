"""What each CLI command does, without the rendering: the data path from inventory and flags to a result.

    config (targets, expectations, pins) → facts (gather) → plan (resolve) → run (site.yml) → verify (suite)

Everything that can be validated is validated before any host is changed. A command returns its result; a
result that ends the command with a non-zero exit carries that error as ``failure`` (the CLI renders the result,
then raises it). Input problems are raised at once.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import stat
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from dlsetup import __version__, paths
from dlsetup.config import accept as accept_hw
from dlsetup.config.flags import parse_key_values
from dlsetup.config.targets import HostArgs, TargetSet, resolve_targets
from dlsetup.errors import (
    ConfigError,
    DlsetupError,
    DriftError,
    HostFailedError,
    PreflightError,
    RebootRequiredError,
    RunFailedError,
    UnreachableError,
    VerifyFailedError,
)
from dlsetup.facts import gather
from dlsetup.facts.baseline import HardwareBaseline, save_on_controller
from dlsetup.facts.baseline import history as baseline_history
from dlsetup.facts.drift import Drift, hardware_drift
from dlsetup.facts.model import HostFacts
from dlsetup.facts.record import HostRecord
from dlsetup.plan import drift as plan_drift
from dlsetup.plan.catalogue import planning_key
from dlsetup.plan.lanes import LaneAllocation, lane_allocation
from dlsetup.plan.load import load_compat_data
from dlsetup.plan.model import Plan, SourceOverrides
from dlsetup.plan.pins import validate_pins
from dlsetup.plan.request import request_from_facts, request_offline
from dlsetup.plan.resolve import resolve_stack
from dlsetup.plan.schema import Gpu
from dlsetup.plan.sources import sources_from_inventory, validate_sources
from dlsetup.report import documents as report_documents
from dlsetup.report import page as report_page
from dlsetup.report.build import HostPage, build_host
from dlsetup.run import converged, runner
from dlsetup.run import inventory as ansible_inventory
from dlsetup.run.redact import Secrets
from dlsetup.verify import probes, suite_runner
from dlsetup.verify.expect import Expectations, merge, parse_expect_flags
from dlsetup.verify.report import HostReport, VerifyReport, host_report_dict

EventCallback = Callable[[dict[str, Any]], None]


# --- config -----------------------------------------------------------------------------------------------------


def check_inventory_path(inventory: Path) -> None:
    """The inventory is something Ansible can read: a file, a directory or an executable script, and not a loop
    of symbolic links or a pipe that would block."""
    try:
        info = inventory.stat()
    except RuntimeError:
        raise ConfigError(f"inventory {inventory} is a loop of symbolic links") from None
    except OSError as exc:
        if inventory.is_symlink():
            why = "a loop of symbolic links" if exc.errno == errno.ELOOP else f"a broken symbolic link ({exc.strerror})"
            raise ConfigError(f"inventory {inventory} is {why}") from None
        raise ConfigError(f"inventory {inventory} does not exist") from None
    if not (stat.S_ISREG(info.st_mode) or stat.S_ISDIR(info.st_mode)):
        raise ConfigError(f"inventory {inventory} is not a file or a directory (a pipe or a device cannot be read)")
    if not os.access(inventory, os.R_OK):
        raise ConfigError(f"inventory {inventory} cannot be read (permission denied)")


def load_targets(args: HostArgs) -> TargetSet:
    """Resolve HOST arguments (host patterns, within ``--limit``) against the (validated) inventory, read by
    Ansible."""
    selection = None
    if args.inventory is not None:
        check_inventory_path(args.inventory)
        selection = ansible_inventory.select(args.inventory, args.hosts, limit=args.limit, vault=args.vault)
    elif args.vault:
        raise ConfigError("--ask-vault-pass and --vault-password-file open an inventory's vaulted values: give -i")
    return resolve_targets(
        args.hosts,
        inventory_path=args.inventory,
        selection=selection,
        limit=args.limit,
        vault=args.vault,
        connection=args.connection,
    )


def expectations_for(targets: TargetSet, expect_flags: Sequence[str]) -> dict[str, Expectations]:
    flags = parse_expect_flags(expect_flags)
    return {n: merge(targets.hostvars(n).get("dlsetup_expect"), flags, host=n) for n in targets.names}


def parse_pin_flags(pin_flags: Sequence[str]) -> dict[str, Any]:
    """``["driver_branch=580"]`` → a validated pins mapping."""
    overrides = parse_key_values(pin_flags, option="--pin", example="driver_branch=580")
    return validate_pins(overrides, where="--pin") if overrides else {}


def parse_source_flags(flags: Mapping[str, str | None] | None) -> SourceOverrides:
    """``--nvidia-repo``, ``--nvidia-repo-key``, ``--pytorch-index``, ``--pip-index``, ``--wheelhouse``."""
    return validate_sources(dict(flags or {}), where="command line")


def sources_for(targets: TargetSet, flags: SourceOverrides) -> dict[str, SourceOverrides]:
    """Each host's sources: its inventory's (``dlsetup_nvidia_repo`` ...), then the command line's."""
    return {
        name: sources_from_inventory(targets.hostvars(name), where=f"host {name}").merged(flags)
        for name in targets.names
    }


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


def gather_for_verify(targets: TargetSet) -> gather.GatherResult:
    """The facts, with the framework probes run alongside them in the same run (``verify.yml``)."""
    return gather.gather(targets, playbook=probes.VERIFY_PLAYBOOK, extravars=probes.probe_extravars())


def require_reachable(result: gather.GatherResult) -> None:
    """Every host answered with its facts; else the first problem: unreachable (exit 3), or reached with a facts
    module that failed (exit 10, with the module's cause)."""
    if result.errors:
        name, reason = next(iter(result.errors.items()))
        more = f" (and {len(result.errors) - 1} more host(s))" if len(result.errors) > 1 else ""
        kind = HostFailedError if name in result.failed else UnreachableError
        raise kind(f"host {name}: {reason}{more}; nothing was changed")


@dataclass(frozen=True)
class FactsResult:
    """``dlsetup facts``: the facts of every host reached, and why the others were not."""

    names: list[str]
    facts: dict[str, HostFacts]
    errors: dict[str, str]
    # the hosts of ``errors`` that were reached but whose facts module failed
    failed: frozenset[str] = frozenset()

    @property
    def failure(self) -> DlsetupError | None:
        if not self.errors:
            return None
        kind = HostFailedError if all(n in self.failed for n in self.errors) else UnreachableError
        return kind(f"no facts from {', '.join(self.errors)}", shown=True)


def facts_command(hosts: HostArgs) -> FactsResult:
    check_output_paths(None)
    targets = load_targets(hosts)
    gathered = gather_facts(targets)
    return FactsResult(targets.names, gathered.facts, gathered.errors, gathered.failed)


# --- plan -------------------------------------------------------------------------------------------------------


@dataclass
class HostPlan:
    """One host's plan, with what changed since its hardware baseline and the record of its last provision."""

    name: str
    facts: HostFacts
    plan: Plan
    drift: Drift = field(default_factory=lambda: Drift(None))
    plan_changes: list[str] = field(default_factory=list)
    # provision: what the run is asked to do and what to read back ({fingerprint, spec}), and whether the host is
    # still as the last provision left it (dlsetup.run.converged)
    converge: dict[str, Any] | None = None
    convergence: converged.Convergence | None = None

    def host_vars(self, tags: Sequence[str] = ()) -> dict[str, Any]:
        """The host variables of the run: the plan's role variables and the record the run leaves behind (which
        says which roles ran, when ``tags`` chose some)."""
        plan_json = self.plan.to_dict()
        record = HostRecord.of(self.facts, plan_json, _roles_of(tags), self.converge)
        return {**self.plan.to_extravars(), "dlsetup_state": record.to_dict()}

    def converges(
        self,
        tags: Sequence[str],
        extravars: Mapping[str, Any] | None,
        inventory_vars: Mapping[str, Any],
        recorded: Mapping[str, Any] | None,
        probe_now: Mapping[str, Any] | None,
    ) -> None:
        """Work out this run's fingerprint and spec, and compare them with what the last provision recorded."""
        role_vars = self.plan.to_extravars()
        gpus = HostRecord.of(self.facts, None).to_dict()["gpus"]
        self.converge = {
            "fingerprint": converged.fingerprint(role_vars, gpus, _roles_of(tags), extravars, inventory_vars),
            "spec": converged.spec({**role_vars, **dict(extravars or {})}, inventory_vars),
        }
        self.convergence = converged.compare(recorded, self.converge["fingerprint"], probe_now)


def _roles_of(tags: Sequence[str]) -> list[str]:
    return [t.split("::", 1)[1] for t in tags if t.startswith("role::") and t != "role::state"]


def plan_hosts(
    result: gather.GatherResult,
    pins: Mapping[str, Mapping[str, Any]],
    sources: Mapping[str, SourceOverrides] | None = None,
) -> tuple[dict[str, HostPlan], dict[str, DlsetupError]]:
    """Resolve a plan per reachable host; hosts with no supported stack are returned as errors."""
    plans: dict[str, HostPlan] = {}
    errors: dict[str, DlsetupError] = {}
    for name, host_facts in result.facts.items():
        try:
            request = request_from_facts(host_facts, dict(pins.get(name) or {}), sources=(sources or {}).get(name))
            plan = resolve_stack(request)
        except DlsetupError as exc:
            errors[name] = exc
            continue
        previous = result.previous.get(name)
        plans[name] = HostPlan(
            name,
            host_facts,
            plan,
            hardware_drift(result.baselines.get(name), host_facts),
            plan_drift.plan_changes(previous.plan if previous else None, plan.to_dict()),
        )
    return plans, errors


@dataclass(frozen=True)
class PlanResult:
    """``dlsetup plan``: a plan per host (or one offline plan, under the OS name), and the hosts that got none."""

    plans: dict[str, Plan]
    errors: dict[str, DlsetupError]
    offline: bool
    # --cpu: the PCIe lanes the build's CPU gives its GPUs
    lanes: LaneAllocation | None = None

    @property
    def failure(self) -> DlsetupError | None:
        if not self.errors:
            return None
        # the errors were rendered with the plans: exit with the worst one's code
        return max(self.errors.values(), key=lambda e: e.exit_code).as_shown()


WHAT_IF_OS = "ubuntu-24.04"


def plan_command(
    hosts: HostArgs,
    *,
    os_name: str | None,
    gpus: Sequence[str],
    machine: str | None,
    pin_flags: Sequence[str],
    source_flags: Mapping[str, str | None] | None = None,
    cpu: str | None = None,
) -> PlanResult:
    if cpu is not None and hosts.hosts:
        raise ConfigError("--cpu plans a build of parts offline (with --gpu): give it without HOSTs")
    if cpu is not None and os_name is None:
        os_name = WHAT_IF_OS  # a build not yet bought has no OS yet: plan for the one most rigs run
    if os_name is None and not hosts.hosts:
        raise ConfigError("give HOST(s) to plan from live facts, or --os (and --gpu) to plan offline")
    if os_name is not None and hosts.hosts:
        raise ConfigError("give either HOST(s) or --os, not both")
    flags = parse_source_flags(source_flags)
    if os_name is not None:
        pins = parse_pin_flags(pin_flags)
        try:
            request = request_offline(os_name, list(gpus), machine, pins, sources=flags)
            plan = resolve_stack(request)
        except DlsetupError as exc:
            return PlanResult({}, {os_name: exc}, True)
        lanes = None
        if cpu is not None:
            lanes = lane_allocation(cpu, [(g.name, g.architecture) for g in plan.gpus])
        return PlanResult({os_name: plan}, {}, True, lanes)
    check_output_paths(None)
    targets = load_targets(hosts)
    pins_by_host = pins_for(targets, pin_flags)
    sources = sources_for(targets, flags)
    gathered = gather_facts(targets)
    require_reachable(gathered)
    host_plans, errors = plan_hosts(gathered, pins_by_host, sources)
    return PlanResult({n: p.plan for n, p in host_plans.items()}, errors, False)


# --- provision --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProvisionRequest:
    """Everything a provision needs, validated and planned, before anything on a host is changed."""

    targets: TargetSet
    plans: dict[str, HostPlan]
    expectations: dict[str, Expectations]
    # --accept-hardware: each host's new dlsetup_expect and where it went
    accepted: dict[str, accept_hw.Accepted] = field(default_factory=dict)
    # the hardware baseline of each host, as gathered (verify compares a converged host with it)
    baselines: dict[str, HardwareBaseline] = field(default_factory=dict)

    @property
    def all_converged(self) -> bool:
        return all(p.convergence is not None and p.convergence.converged for p in self.plans.values())


def accept_hardware(
    targets: TargetSet, facts: Mapping[str, HostFacts], expect_flags: Sequence[str]
) -> tuple[dict[str, accept_hw.Accepted], dict[str, Expectations]]:
    """``--accept-hardware``: each host's ``dlsetup_expect`` made to describe its hardware now (written into the
    inventory file it came from, or returned as a block to paste), and the expectations that follow from it."""
    accepted: dict[str, accept_hw.Accepted] = {}
    for name in targets.names:
        if name not in facts:
            continue
        current = targets.hostvars(name).get("dlsetup_expect")
        target = next(t for t in targets.targets if t.name == name)
        inventory = targets.inventory_path if target.from_inventory else None
        accepted[name] = accept_hw.accept(name, facts[name], current if isinstance(current, Mapping) else None,
                                          inventory)  # fmt: skip
    flags = parse_expect_flags(expect_flags)
    expectations = {
        n: merge(accepted[n].expect if n in accepted else targets.hostvars(n).get("dlsetup_expect"), flags, host=n)
        for n in targets.names
    }
    return accepted, expectations


def prepare_provision(
    hosts: HostArgs,
    *,
    pin_flags: Sequence[str],
    expect_flags: Sequence[str],
    source_flags: Mapping[str, str | None] | None = None,
    tags: Sequence[str] = (),
    junit_xml: Path | None = None,
    accept: bool = False,
    on_event: EventCallback | None = None,
    extravars: Mapping[str, Any] | None = None,
) -> ProvisionRequest:
    """Targets, pins, sources, expectations, facts and plans; any problem is raised before a host is touched.
    With ``accept`` (``--accept-hardware``) each host's expectations are rewritten to its hardware now."""
    tags = select_tags(tags)
    check_output_paths(junit_xml)
    targets = load_targets(hosts)
    pins = pins_for(targets, pin_flags)
    sources = sources_for(targets, parse_source_flags(source_flags))
    expectations = expectations_for(targets, expect_flags)
    gathered = gather_facts(targets, on_event)
    require_reachable(gathered)
    plans, errors = plan_hosts(gathered, pins, sources)
    if errors:
        name, problem = next(iter(errors.items()))
        raise problem.about_host(name, "; nothing was changed")
    compare_converged(targets, gathered, plans, tags, extravars)
    accepted: dict[str, accept_hw.Accepted] = {}
    if accept:
        accepted, expectations = accept_hardware(targets, gathered.facts, expect_flags)
    return ProvisionRequest(targets, plans, expectations, accepted, dict(gathered.baselines))


def compare_converged(
    targets: TargetSet,
    gathered: gather.GatherResult,
    plans: Mapping[str, HostPlan],
    tags: Sequence[str],
    extravars: Mapping[str, Any] | None,
) -> None:
    """Give each plan this run's fingerprint and spec, and whether its host is still as its last provision left
    it (what the facts step probed against the record it read)."""
    for name, host_plan in plans.items():
        previous = gathered.previous.get(name)
        host_plan.converges(
            tags, extravars, targets.hostvars(name), previous.converged if previous else None, gathered.probes.get(name)
        )


def known_tags() -> list[str]:
    """The role tags of site.yml (``role::base`` ...), read from the shipped playbook."""
    plays = yaml.safe_load(paths.playbook("site.yml").read_text())
    found: list[str] = []
    for play in plays:
        for item in [*play.get("roles", []), *play.get("post_tasks", [])]:
            found += [t for t in item.get("tags", []) if t not in found]
    return found


_PROBE_BYTES = 64 * 1024  # about what a run's first files take before its playbook starts


def _unwritable(directory: Path) -> str | None:
    """Why a file cannot be created in ``directory`` (or the nearest directory above it that exists), tried for
    real: permissions, a read-only or pseudo file system (``/proc``), a full disk; ``None`` when it can."""
    existing = next((p for p in [directory, *directory.parents] if p.exists() or p.is_symlink()), None)
    if existing is None:
        return "no part of it exists"
    if not existing.is_dir():
        return f"{existing} is not a directory"
    try:
        fd, probe = tempfile.mkstemp(prefix=".dlsetup-write-check-", dir=existing)
    except OSError as exc:
        return f"{existing}: {exc.strerror or exc}"
    try:  # data, not only an inode: a full disk still lets an empty file be made
        os.write(fd, b"\0" * _PROBE_BYTES)
        os.fsync(fd)
    except OSError as exc:
        return f"{existing}: {exc.strerror or exc}"
    finally:
        os.close(fd)
        os.unlink(probe)
    return None


def check_output_paths(junit_xml: Path | None) -> None:
    """The files a run writes here (its log and artifacts, a JUnit report) can be written: checked up front, so a
    run that changed hosts does not end on an unwritable path."""
    state = runner.state_dir()
    # runs/ is what a run writes into: a file of that name, or a full disk, must fail here, not mid-run
    wanted = [("the state directory (DLSETUP_STATE_DIR)", state, state / "runs")]
    if junit_xml is not None:
        if junit_xml.is_dir():
            raise ConfigError(f"--junit-xml: {junit_xml} is a directory, give a file name; nothing was changed")
        parent = junit_xml.parent if str(junit_xml.parent) else Path(".")
        wanted.append(("--junit-xml", parent, parent))
    for what, shown, probed in wanted:
        why = _unwritable(probed)
        if why is not None:
            raise ConfigError(f"{what}: {shown} cannot be written ({why}); nothing was changed")


def select_tags(tags: Sequence[str], skip_tags: Sequence[str] = ()) -> list[str]:
    """The role tags a provision runs, from ``--tags`` and ``--skip-tags`` (each a role name, ``base``, or its tag,
    ``role::base``; comma-separated lists as Ansible takes them): ``[]`` for all of them. An unknown one is bad
    input, never a run that does nothing."""
    known = known_tags()

    def normalised(values: Sequence[str], option: str) -> list[str]:
        found: list[str] = []
        for value in (t.strip() for raw in values for t in raw.split(",")):
            if not value:
                continue
            tag = value if value.startswith("role::") else f"role::{value}"
            if tag not in known:
                names = ", ".join(t.removeprefix("role::") for t in known)
                raise ConfigError(f"unknown tag {value!r} for {option}; known: {names} (or role::NAME)")
            found += [tag] if tag not in found else []
        return found

    selected, skipped = normalised(tags, "--tags"), normalised(skip_tags, "--skip-tags")
    if not skipped:
        return selected
    left = [t for t in (selected or known) if t not in skipped]
    if not left:
        raise ConfigError("--skip-tags leaves no role to run; nothing was changed")
    return left


@dataclass
class ProvisionOutcome:
    run: runner.RunResult
    reboot_required: list[str]
    check: bool
    verify_report: VerifyReport | None = None
    # check mode only: the preflight refused a source (a real run would have stopped before changing anything)
    preflight_failure: PreflightError | None = None
    # hosts whose verify passed and whose hardware baseline was (re)written: name -> the baseline
    baselines: dict[str, HardwareBaseline] = field(default_factory=dict)
    # hosts left out of the run: still as their last provision left them
    converged: list[str] = field(default_factory=list)

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
        if self.preflight_failure is not None:
            return self.preflight_failure
        if self.run.status != "successful" or any(s.failures for s in stats):
            return RunFailedError("provision failed: fix the cause above and run the same command again", verdict=True)
        # In check mode the reboot handlers run too, though nothing was installed: asking for a reboot (exit 7)
        # would loop, as the same check run after it flags the same reboot again.
        if self.reboot_required and not self.check:
            return reboot_error(self.reboot_required)
        if self.verify_report is not None and not self.verify_report.passed:
            return VerifyFailedError(f"verification failed on {', '.join(self.verify_report.failed_hosts)}", shown=True)
        return None

    def to_dict(self, plans: Mapping[str, HostPlan]) -> dict[str, Any]:
        """``provision --format json``: per host, the plan applied (and what changed since the last verified
        run), the run's counts and the tasks that changed or failed, verify's result; the log; the error."""
        hosts: dict[str, Any] = {}
        report = self.verify_report
        for name, host_plan in plans.items():
            stats = self.run.stats.get(name, runner.HostStats())
            hosts[name] = {
                "plan": host_plan.plan.to_dict(),
                "drift": host_plan.drift.to_dict(),
                "plan_changes": host_plan.plan_changes,
                "stats": dataclasses.asdict(stats),
                "changed_tasks": [task for task, _action, res in self.run.results.get(name, []) if res.get("changed")],
                "failed_tasks": [
                    {"task": f.task, "message": f.message, "details": str(f.details) if f.details else None}
                    for f in self.run.failed_tasks.get(name, [])
                ],
                "unreachable": self.run.unreachable.get(name),
                "reboot_required": name in self.reboot_required,
                "verify": host_report_dict(report.hosts[name]) if report is not None and name in report.hosts else None,
                "baseline_recorded": name in self.baselines,
                "converged": name in self.converged,
                "convergence": host_plan.convergence.reason if host_plan.convergence else None,
            }
        failure = self.failure
        return {
            "check": self.check,
            "changed": self.changed,
            "hosts": hosts,
            "log": str(self.run.log_path),
            **({"error": failure.payload()["error"]} if failure is not None else {}),
        }


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
    accepted: Sequence[str] = (),
    extravars: Mapping[str, Any] | None = None,
    full: bool = False,
    baselines: Mapping[str, HardwareBaseline] | None = None,
) -> ProvisionOutcome:
    """Check each host's sources (preflight); apply each host's plan with site.yml; then verify (unless check mode
    or the run failed) against the expectations and each host's hardware baseline (not for the ``accepted``
    hosts, whose expectations follow their hardware now); record the hardware of every host that passed.

    A host still in the state its last provision converged to (``HostPlan.convergence``) is left out of the
    preflight and the run, unless ``full``; its facts, just gathered, are the ones verify checks."""
    pending = [n for n, p in plans.items() if full or p.convergence is None or not p.convergence.converged]
    preflight_failure: PreflightError | None = None
    if pending:
        try:
            preflight(targets.subset(pending), {n: plans[n] for n in pending}, tags=tags, on_event=on_event,
                      become_password=become_password)  # fmt: skip
        except PreflightError as exc:
            if not check:
                raise
            # a check run changes nothing either way: it goes on, so the user sees the whole dry run, and ends
            # with the preflight's exit code
            preflight_failure = exc
        run = runner.run_playbook(
            "site.yml",
            targets.subset(pending),
            extravars=extravars,
            host_extravars={name: plans[name].host_vars(tags) for name in pending},
            check=check,
            diff=diff,
            tags=tags,
            on_event=on_event,
            kind="check" if check else "provision",
            become_password=become_password,
        )
    else:
        run = runner.RunResult("successful", 0, runner.new_run_dir("converged"))
    reboot = [n for n in plans if run.fact(n, "dlsetup_reboot_required")]
    outcome = ProvisionOutcome(run, reboot, check, preflight_failure=preflight_failure, converged=[
        n for n in plans if n not in pending])  # fmt: skip
    ok = all(not s.failures and not s.unreachable for s in run.stats.values()) and run.status == "successful"
    if ok and not check and run_verify and not reboot:
        facts = {n: p.facts for n, p in plans.items()}
        if pending:  # the run may have changed what the facts read (a driver that loads now): read them again
            verified = verify_hosts(targets, facts, expectations, run, junit_xml=junit_xml, accepted=accepted)
        else:
            verified = verify_hosts(
                targets, facts, expectations, junit_xml=junit_xml, accepted=accepted, baselines=baselines
            )
        outcome.verify_report = verified.report
        # a host whose run changed something may have a new framework build: the older ones can go once it verified
        ran_dl_stack = not tags or "role::dl_stack" in tags
        prune = [n for n, p in plans.items() if ran_dl_stack and p.plan.pytorch.version and run.stats.get(n)
                 and run.stats[n].changed]  # fmt: skip
        outcome.baselines = record_baselines(
            targets, verified, run_dir=run.run_dir, on_event=on_event, become_password=become_password, prune=prune
        )
    return outcome


def record_baselines(
    targets: TargetSet,
    verified: VerifyRun,
    *,
    run_dir: Path | None,
    on_event: EventCallback | None = None,
    become_password: str | None = None,
    prune: Sequence[str] = (),
) -> dict[str, HardwareBaseline]:
    """Record the hardware of every host whose verify passed, on the host (``playbooks/baseline.yml``) and on the
    controller, where it differs from the baseline it had; on the passed hosts of ``prune`` (the provision built
    or switched a framework venv there), let the dl_stack role drop the builds beyond the ones it keeps. A host
    that failed keeps its last good baseline and every venv build."""
    passed = [n for n in targets.names if n in verified.facts and verified.report.hosts.get(n) and
              verified.report.hosts[n].passed]  # fmt: skip
    new = {n: HardwareBaseline.of(verified.facts[n]) for n in passed}
    changed = {n: b for n, b in new.items() if (old := verified.baselines.get(n)) is None or not old.same(b)}
    pruned = [n for n in passed if n in prune]
    if not changed and not pruned:
        return {}
    host_vars: dict[str, dict[str, Any]] = {n: {} for n in passed if n in changed or n in pruned}
    for name, baseline in changed.items():
        host_vars[name]["dlsetup_baseline"] = baseline.to_dict()
    for name in pruned:
        host_vars[name]["dlsetup_prune_venvs"] = True
    run = runner.run_playbook(
        "baseline.yml",
        targets.subset(list(host_vars)),
        host_extravars=host_vars,
        on_event=on_event,
        kind="baseline",
        become_password=become_password,
    )
    written = {n: b for n, b in changed.items() if run.stats.get(n) and not run.stats[n].failures
               and not run.stats[n].unreachable}  # fmt: skip
    for name, baseline in written.items():
        save_on_controller(runner.state_dir(), name, baseline, run_dir=run_dir)
    return written


# Which role uses which of the plan's sources: with --tags, only the sources of the roles that run are checked.
_SOURCE_ROLES = {"apt_repository": ("role::nvidia_driver", "role::cuda"), "wheels": ("role::dl_stack",)}


def preflight_sources(plan: Plan, tags: Sequence[str] = ()) -> dict[str, Any]:
    """The plan's sources the run will use (all, or those of the roles ``tags`` select)."""
    sources = plan.preflight_sources()
    selected = set(tags)
    if selected and not selected & set(_SOURCE_ROLES["apt_repository"]):
        sources["apt_repository"] = {}
    if selected and not selected & set(_SOURCE_ROLES["wheels"]):
        sources["indexes"], sources["wheelhouse"] = [], ""
    return sources


def preflight(
    targets: TargetSet,
    plans: Mapping[str, HostPlan],
    *,
    tags: Sequence[str] = (),
    on_event: EventCallback | None = None,
    become_password: str | None = None,
) -> runner.RunResult | None:
    """Before any host is changed: check from each host that its plan's sources can be reached and trusted
    (playbooks/preflight.yml). The first problem raises :class:`PreflightError` (exit 8)."""
    checks = {name: preflight_sources(p.plan, tags) for name, p in plans.items()}
    if not any(c["apt_repository"] or c["indexes"] or c["wheelhouse"] for c in checks.values()):
        return None
    run = runner.run_playbook(
        "preflight.yml",
        targets,
        host_extravars={name: {"dlsetup_preflight": c} for name, c in checks.items()},
        on_event=on_event,
        kind="preflight",
        become_password=become_password,
    )
    if run.unreachable:
        name, why = next(iter(run.unreachable.items()))
        raise UnreachableError(f"host {name}: unreachable during the preflight ({why}); nothing was changed")
    failed = {name: tasks[0][1] for name, tasks in run.failed_tasks.items() if tasks}
    if failed or run.status != "successful":
        if not failed:
            raise PreflightError(f"preflight run {run.status} (rc {run.rc}); nothing was changed; log: {run.log_path}")
        name, why = next(iter(failed.items()))
        others = [n for n in failed if n != name]
        more = f" (also on {', '.join(others)})" if others else ""
        raise PreflightError(
            f"host {name}: {why}; nothing was changed{more}",
            hint="give a reachable mirror with --nvidia-repo/--pytorch-index/--pip-index (or dlsetup_* in the "
            "inventory), or --wheelhouse for an offline host; log: " + str(run.log_path),
        )
    return run


def reboot_error(hosts: Sequence[str]) -> RebootRequiredError:
    return RebootRequiredError(
        # the nvidia_driver role (a kernel module) or the laptop role (kernel command line, PRIME) asked for it
        f"reboot required on {', '.join(hosts)} to load the new kernel module or settings: "
        "reboot, then run the same command again"
    )


# --- verify -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VerifyRun:
    """A verification: the report, the facts it checked and the baselines it compared them with."""

    report: VerifyReport
    facts: Mapping[str, HostFacts]
    baselines: Mapping[str, HardwareBaseline]


def verify_hosts(
    targets: TargetSet,
    facts: Mapping[str, HostFacts],
    expectations: Mapping[str, Expectations],
    run: runner.RunResult | None = None,
    *,
    load: bool = False,
    junit_xml: Path | None = None,
    lost: Mapping[str, str] | None = None,
    baselines: Mapping[str, HardwareBaseline] | None = None,
    accepted: Sequence[str] = (),
    gathered: gather.GatherResult | None = None,
) -> VerifyRun:
    """Run the testinfra suite on ``facts`` against ``expectations`` and each host's hardware ``baselines``
    (except the ``accepted`` hosts'); hosts in ``lost`` (name → why) are reported as unreachable.

    After a provision (``run`` given) the facts (and baselines) are gathered again instead, since the driver may
    answer now where it did not before; a host that cannot be read then fails the report rather than dropping out
    of it. ``gathered`` (by :func:`gather_for_verify`) hands the suite the records and framework probes read with
    the facts.
    """
    lost = dict(lost or {})
    baselines = dict(baselines or {})
    if run is not None:
        gathered = gather_for_verify(targets)
        facts = gathered.facts
        baselines = dict(gathered.baselines)
        lost.update(gathered.errors)
    compared = {n: b for n, b in baselines.items() if n not in accepted}
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
            baselines=compared,
            records=gathered.record_data if gathered is not None else None,
            frameworks=gathered.framework_probes if gathered is not None else None,
        )
        if facts
        else VerifyReport({}, None)
    )
    if lost:
        hosts = {**report.hosts, **{n: HostReport.unreachable(reason) for n, reason in lost.items()}}
        report = VerifyReport({n: hosts[n] for n in targets.names if n in hosts}, report.log_path)
    return VerifyRun(report, facts, baselines)


@dataclass(frozen=True)
class VerifyResult:
    """``dlsetup verify``: the report, and the hosts that could not be reached to check them; with
    ``--accept-hardware``, the new expectations and the baselines recorded."""

    report: VerifyReport
    unreachable: Mapping[str, str]  # name → why its facts could not be read
    accepted: dict[str, accept_hw.Accepted] = field(default_factory=dict)
    baselines: dict[str, HardwareBaseline] = field(default_factory=dict)

    @property
    def failure(self) -> DlsetupError | None:
        failed = self.report.failed_hosts
        if not failed:
            return None
        # docs/verify.md: 6 when a check failed, 3 when a host was unreachable; the higher one when both
        kind = VerifyFailedError if any(n not in self.unreachable for n in failed) else UnreachableError
        blank = [n for n in failed if n not in self.unreachable and self.report.hosts[n].verdict == "nothing_checked"]
        failing = [n for n in failed if n not in blank and n not in self.unreachable]
        parts = [f"verification failed on {', '.join(failing)}"] if failing else []
        if blank:
            parts.append(f"nothing could be checked on {', '.join(blank)}")
        # a host never checked: why (its first line), as the one line of the verdict says
        parts += [f"{n} could not be checked: {self.unreachable[n]}" for n in failed if n in self.unreachable]
        return kind("; ".join(parts), kind="verify_failed", verdict=True)


def verify_command(
    hosts: HostArgs,
    *,
    expect_flags: Sequence[str],
    load: bool,
    junit_xml: Path | None,
    accept: bool = False,
) -> VerifyResult:
    """Verify the hosts against their expectations and hardware baselines. With ``accept``
    (``--accept-hardware``) the expectations are rewritten to the hardware now, the baselines are not compared,
    and the hosts that pass get their hardware recorded as the new baseline (the only time verify writes)."""
    check_output_paths(junit_xml)
    targets = load_targets(hosts)
    expectations = expectations_for(targets, expect_flags)
    gathered = gather_for_verify(targets)
    accepted: dict[str, accept_hw.Accepted] = {}
    if accept:
        accepted, expectations = accept_hardware(targets, gathered.facts, expect_flags)
    verified = verify_hosts(
        targets,
        gathered.facts,
        expectations,
        load=load,
        junit_xml=junit_xml,
        lost=gathered.errors,
        baselines=gathered.baselines,
        accepted=list(accepted),
        gathered=gathered,
    )
    baselines = record_baselines(targets, verified, run_dir=None) if accept else {}
    return VerifyResult(verified.report, dict(gathered.errors), accepted, baselines)


# --- diff -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DiffResult:
    """``dlsetup diff``: per host, the hardware drift against its baseline and the plan changes it causes."""

    plans: dict[str, HostPlan]
    errors: dict[str, DlsetupError]
    unreachable: dict[str, str]

    @property
    def drifted(self) -> list[str]:
        return [n for n, p in self.plans.items() if p.drift.drifted or p.plan_changes]

    def to_dict(self) -> dict[str, Any]:
        hosts: dict[str, Any] = {}
        for name, host_plan in self.plans.items():
            hosts[name] = {
                **host_plan.drift.to_dict(),
                "drifted": name in self.drifted,
                "plan_changes": host_plan.plan_changes,
            }
        for name, exc in self.errors.items():
            hosts[name] = exc.payload()
        for name, why in self.unreachable.items():
            hosts[name] = UnreachableError(why).payload()
        return {"hosts": hosts}

    @property
    def failure(self) -> DlsetupError | None:
        if self.unreachable:
            return UnreachableError(f"no facts from {', '.join(self.unreachable)}", shown=True)
        if self.errors:
            return max(self.errors.values(), key=lambda e: e.exit_code).as_shown()
        if self.drifted:
            return DriftError(f"drifted since the last verified baseline: {', '.join(self.drifted)}", shown=True)
        return None


def diff_command(
    hosts: HostArgs,
    *,
    pin_flags: Sequence[str],
    source_flags: Mapping[str, str | None] | None = None,
) -> DiffResult:
    """Read-only: each host's hardware against its baseline, and the plan it would get against the applied one."""
    check_output_paths(None)
    targets = load_targets(hosts)
    pins = pins_for(targets, pin_flags)
    sources = sources_for(targets, parse_source_flags(source_flags))
    gathered = gather_facts(targets)
    plans, errors = plan_hosts(gathered, pins, sources)
    return DiffResult(plans, errors, dict(gathered.errors))


# --- report -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReportResult:
    """``dlsetup report``: the page written, what it shows of each host, and the hosts whose facts could not be read
    (the page says why)."""

    path: Path
    pages: tuple[HostPage, ...]
    unreachable: dict[str, str] = field(default_factory=dict)
    failed: frozenset[str] = frozenset()

    @property
    def hosts(self) -> list[str]:
        return [p.name for p in self.pages]

    def to_dict(self) -> dict[str, Any]:
        """``report --format json``: where the page is and its hosts, in page order."""
        payload: dict[str, Any] = {"report": str(self.path), "hosts": self.hosts}
        if self.unreachable:
            payload["errors"] = dict(self.unreachable)
        return payload

    @property
    def failure(self) -> DlsetupError | None:
        if not self.unreachable:
            return None
        kind = HostFailedError if all(n in self.failed for n in self.unreachable) else UnreachableError
        return kind(f"no facts from {', '.join(self.unreachable)} (the report says why)", shown=True)


def check_report_output(output: Path | None) -> Path:
    """``-o FILE``: given, not a directory, in a directory that exists and can be written."""
    if output is None:
        raise ConfigError("give -o/--output FILE: where to write the report (an HTML file)")
    if output.is_dir():
        raise ConfigError(f"-o {output} is a directory: give a file name, e.g. {output / 'report.html'}")
    if (output.exists() or output.is_symlink()) and not output.is_file():
        raise ConfigError(f"-o {output} exists and is not a regular file")
    parent = output.parent if str(output.parent) else Path(".")
    if not parent.is_dir():
        raise ConfigError(f"-o {output}: the directory {parent} does not exist")
    why = _unwritable(parent)
    if why is not None:
        raise ConfigError(f"-o {output}: {parent} cannot be written ({why})")
    return output


def read_report_document(argument: str) -> report_documents.Document:
    """One ``--from-json`` argument (a file, or ``-`` for stdin) as a recognised document; bad input otherwise."""
    where = "stdin" if argument == "-" else argument
    try:
        if argument == "-":
            text = sys.stdin.read()
        else:
            path = Path(argument)
            if path.is_dir():
                raise ConfigError(f"--from-json {argument} is a directory, not a JSON file")
            text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"--from-json {argument} cannot be read ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"--from-json {argument} is not UTF-8 text (a JSON document is)") from None
    # a controller's history.jsonl (STATE_DIR/hosts/NAME/) names its host by its directory
    host = Path(argument).resolve().parent.name if argument != "-" else None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        try:
            lines = [json.loads(line) for line in text.splitlines() if line.strip()]
        except json.JSONDecodeError:
            lines = []
        if len(lines) > 1:
            return report_documents.recognise_history(lines, where, host)
        detail = f"{exc.msg}, line {exc.lineno} column {exc.colno}"
        raise ConfigError(f"--from-json {where} is not JSON ({detail})") from None
    return report_documents.recognise(data, where, history_host=host)


def _report_inputs_offline(
    hosts: HostArgs, *, run_verify: bool, load: bool, expect_flags: Sequence[str]
) -> dict[str, report_documents.HostInputs]:
    if not hosts.hosts:
        raise ConfigError("--from-json takes the JSON files to read as arguments (- for stdin)")
    host_options = {"-i/--inventory": hosts.inventory is not None, "-l/--limit": hosts.limit is not None,
                    "a vault option": bool(hosts.vault), "--no-verify": not run_verify, "--load": load,
                    "--expect": bool(expect_flags)}  # fmt: skip
    given = [option for option, there in host_options.items() if there]
    if given:
        raise ConfigError(f"{given[0]} is for HOSTs: with --from-json the arguments are JSON files")
    return report_documents.merge([read_report_document(a) for a in hosts.hosts])


def _report_inputs_live(
    hosts: HostArgs, *, run_verify: bool, load: bool, expect_flags: Sequence[str]
) -> tuple[dict[str, report_documents.HostInputs], gather.GatherResult, Secrets]:
    check_output_paths(None)
    targets = load_targets(hosts)
    expectations = expectations_for(targets, expect_flags)
    gathered = gather_facts(targets)
    report = None
    if run_verify and gathered.facts:
        # read-only, as `dlsetup verify`: the hosts that gave no facts are reported unreachable there too
        report = verify_hosts(targets, gathered.facts, expectations, load=load, lost=gathered.errors,
                              baselines=gathered.baselines).report  # fmt: skip
    state = runner.state_dir()
    inputs = {
        name: report_documents.live_inputs(
            name,
            facts=gathered.facts.get(name),
            record=gathered.previous.get(name),
            baseline=gathered.baselines.get(name),
            verify=report.hosts.get(name) if report is not None else None,
            history=baseline_history(state, name),
            problem=gathered.errors.get(name),
        )
        for name in targets.names
    }
    secrets = Secrets.collect(dict(os.environ), *(targets.hostvars(n) for n in targets.names))
    return inputs, gathered, secrets


def write_report(output: Path, html: str) -> None:
    """Write the page in one step (a reader never sees half of it), readable as any file the user makes."""
    tmp = output.with_name(f".{output.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(html)
        tmp.replace(output)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def report_command(
    hosts: HostArgs,
    *,
    output: Path | None,
    from_json: bool = False,
    run_verify: bool = True,
    load: bool = False,
    expect_flags: Sequence[str] = (),
) -> ReportResult:
    """Write the HTML report of HOSTs (facts gathered now, the plan their record holds, verify run now unless
    ``run_verify`` is False, their drift and the controller's baseline history) or, with ``from_json``, of the
    JSON documents the arguments name (offline). Every input problem is raised before anything runs."""
    output = check_report_output(output)
    expect_flags = list(expect_flags)
    if from_json:
        inputs = _report_inputs_offline(hosts, run_verify=run_verify, load=load, expect_flags=expect_flags)
        unreachable: dict[str, str] = {}
        failed: frozenset[str] = frozenset()
        secrets = Secrets.collect(dict(os.environ))
        read_from = tuple("stdin" if a == "-" else a for a in hosts.hosts)
    else:
        if not hosts.hosts:
            raise ConfigError("give HOST(s) to report on, or --from-json FILE... to report from JSON documents")
        parse_expect_flags(expect_flags)  # bad input before any host is asked
        inputs, gathered, secrets = _report_inputs_live(hosts, run_verify=run_verify, load=load,
                                                        expect_flags=expect_flags)  # fmt: skip
        unreachable, failed = dict(gathered.errors), gathered.failed
        verified = " and verify run on them" if run_verify else ""
        read_from = (f"the facts gathered from {', '.join(inputs)} now{verified}",)
    pages = tuple(build_host(host, i, live=not from_json) for i, host in enumerate(inputs.values()))
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    html = report_page.render(report_page.ReportPage(pages, stamp, f"dlsetup {__version__}", read_from))
    write_report(output, secrets.scrub(html))
    return ReportResult(output, pages, unreachable, failed)


# --- init -------------------------------------------------------------------------------------------------------


def init_command(directory: Path) -> list[Path]:
    """Write the example inventory (the seed machines, with comments) into ``directory``; an existing file is
    never overwritten (bad input, before anything is written). Returns the files written."""
    source = paths.inventory_dir()
    files = sorted(p for p in source.rglob("*") if p.is_file())
    targets = [directory / p.relative_to(source) for p in files]
    existing = [t for t in targets if t.exists() or t.is_symlink()]
    if existing:
        raise ConfigError(f"{existing[0]} exists already: dlsetup init never overwrites; give another directory")
    if directory.exists() and not directory.is_dir():
        raise ConfigError(f"{directory} is not a directory")
    why = _unwritable(directory)
    if why is not None:
        raise ConfigError(f"{directory} cannot be written ({why})")
    for src, dest in zip(files, targets, strict=True):
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(src.read_bytes())
    return targets


# --- gpus -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GpuOutcome:
    """What one GPU gets on one OS: a plan, or the error that refuses it."""

    plan: Plan | None
    error: DlsetupError | None

    def to_dict(self) -> dict[str, Any]:
        if self.plan is None:
            assert self.error is not None
            return self.error.payload()
        plan = self.plan
        return {
            "driver": {"source": plan.driver.source, "branch": plan.driver.branch, "flavor": plan.driver.flavor},
            "cuda": plan.cuda.version,
            "pytorch": {"version": plan.pytorch.version, "variant": plan.pytorch.variant},
            "jax": plan.jax.extra,
        }


@dataclass(frozen=True)
class GpusResult:
    """``dlsetup gpus``: the catalogue's GPUs (of one architecture, or all) and what each gets on each OS."""

    gpus: list[Gpu]
    systems: list[str]
    outcomes: dict[str, dict[str, GpuOutcome]]  # pci id → OS → outcome
    provenance: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {
            "catalogue": self.provenance,
            "gpus": [
                {
                    "pci_id": g.pci_id,
                    "name": g.name,
                    "aliases": list(g.aliases),
                    "chip": g.chip,
                    "architecture": g.architecture,
                    "compute_capability": g.compute_capability,
                    "segment": g.segment,
                    "open_modules": g.open_modules,
                    "last_branch": g.last_branch,
                    "plans": {os_key: o.to_dict() for os_key, o in self.outcomes[g.pci_id].items()},
                }
                for g in self.gpus
            ],
        }


def gpus_command(architecture: str | None) -> GpusResult:
    """Every GPU dlsetup knows (of ``architecture``), planned on every supported OS. GPUs that get the same plan
    (same planning key and Debian id lists) are planned once."""
    data = load_compat_data()
    known = {a.name.lower(): a.name for a in data.architectures}
    if architecture is not None and architecture.lower() not in known:
        raise ConfigError(
            f"unknown architecture {architecture!r}: one of {', '.join(a.name for a in data.architectures)}"
        )
    wanted = known[architecture.lower()] if architecture else None
    gpus = [g for g in data.gpus if wanted is None or g.architecture == wanted]
    systems = [s.key for s in data.systems]
    plans: dict[tuple[object, ...], Plan] = {}
    outcomes: dict[str, dict[str, GpuOutcome]] = {}
    for gpu in gpus:
        kind = (*planning_key(gpu, data), gpu.debian_driver)
        outcomes[gpu.pci_id] = {}
        for os_key in systems:
            known_plan = plans.get((*kind, os_key))
            if known_plan is not None:
                outcomes[gpu.pci_id][os_key] = GpuOutcome(known_plan, None)
                continue
            try:  # a refusal is cheap and names the GPU: it is not shared
                plan = resolve_stack(request_offline(os_key, [gpu.pci_id]), data=data)
            except DlsetupError as exc:
                outcomes[gpu.pci_id][os_key] = GpuOutcome(None, exc)
                continue
            plans[(*kind, os_key)] = plan
            outcomes[gpu.pci_id][os_key] = GpuOutcome(plan, None)
    return GpusResult(gpus, systems, outcomes, data.catalogue.model_dump(mode="json"))
