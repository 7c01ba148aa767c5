"""Command line: parse arguments, call dlsetup.commands, render. No logic lives here."""

from __future__ import annotations

import getpass
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from dlsetup import __version__, commands, ui
from dlsetup.compat import error_payload, render
from dlsetup.errors import EXIT_INTERNAL, ConfigError, DlsetupError, UnreachableError, VerifyFailedError

app = typer.Typer(
    help="Provision and verify deep-learning machines: the right NVIDIA driver, CUDA and framework build for "
    "the GPUs actually installed.",
    epilog="Exit codes: 0 ok, 1 internal error, 2 bad input, 3 unreachable host, 4 no supported stack, "
    "5 Ansible run failed, 6 verification failed, 7 reboot required (then run the same command again), "
    "130/143 interrupted (run it again to converge).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console(highlight=False)
# soft_wrap: an error stays one line however narrow the terminal
err = Console(stderr=True, highlight=False, soft_wrap=True)
STATE: dict[str, bool] = {"debug": False}
T = TypeVar("T")

Hosts = Annotated[
    list[str], typer.Argument(help="localhost, user@host:port (user and port optional), or inventory hosts/groups.")
]
Inventory = Annotated[
    Path | None, typer.Option("-i", "--inventory", help="Ansible inventory (YAML/INI) for named hosts and groups.")
]
Format = Annotated[str, typer.Option("--format", help="table or json.")]
Pins = Annotated[list[str], typer.Option("--pin", help="KEY=VALUE stack pin, e.g. driver_branch=580 (repeatable).")]


def _fail(exc: DlsetupError) -> NoReturn:
    if STATE["debug"]:
        raise exc
    err.print(f"[bold red]error:[/bold red] {escape(exc.message)}")
    if exc.hint:
        err.print(f"hint: {escape(exc.hint)}")
    raise typer.Exit(exc.exit_code)


def _guard(fn: Callable[[], T]) -> T:
    try:
        return fn()
    except DlsetupError as exc:
        _fail(exc)
    except KeyboardInterrupt:
        err.print("interrupted: re-run the same command to converge")
        raise typer.Exit(130) from None
    except Exception as exc:
        if STATE["debug"]:
            raise
        err.print(
            f"[bold red]internal error:[/bold red] {type(exc).__name__}: {escape(str(exc))} "
            "(run with --debug for details)"
        )
        raise typer.Exit(EXIT_INTERNAL) from None


def _check_format(fmt: str) -> None:
    if fmt not in ("table", "json"):
        _fail(ConfigError(f"--format must be table or json, got {fmt!r}"))


def _version(value: bool) -> None:
    if value:
        out.print(f"dlsetup {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Show version.")] = False,
) -> None:
    STATE["debug"] = debug


@app.command()
def facts(hosts: Hosts, inventory: Inventory = None, fmt: Format = "table") -> None:
    """Report each host's hardware: OS, machine, CPU, RAM, disks, NVIDIA GPUs (from PCI), PCIe links, driver."""
    _check_format(fmt)
    targets = _guard(lambda: commands.load_targets(hosts, inventory))
    result = _guard(lambda: commands.gather_facts(targets))
    if fmt == "json":
        payload: dict[str, Any] = {"hosts": {n: f.to_dict() for n, f in result.facts.items()}}
        if result.errors:
            payload["errors"] = result.errors
        out.print_json(json.dumps(payload))
    else:
        for name in targets.names:
            if name in result.facts:
                ui.render_facts(out, name, result.facts[name].to_dict())
            else:
                ui.render_host_error(out, name, result.errors.get(name, "no facts"))
    if result.errors:
        raise typer.Exit(3)


@app.command()
def verify(
    hosts: Hosts,
    inventory: Inventory = None,
    expect: Annotated[
        list[str], typer.Option("--expect", help="KEY=VALUE expectation, overrides dlsetup_expect (repeatable).")
    ] = [],  # noqa: B006 - Typer reads the default
    load: Annotated[bool, typer.Option("--load", help="Require PCIe readings under load (needs PyTorch).")] = False,
    fmt: Format = "table",
    junit_xml: Annotated[Path | None, typer.Option("--junit-xml", help="Also write JUnit XML here.")] = None,
) -> None:
    """Check each host against its expectations (inventory dlsetup_expect and --expect) with the testinfra suite."""
    _check_format(fmt)
    targets = _guard(lambda: commands.load_targets(hosts, inventory))
    expectations = _guard(lambda: commands.expectations_for(targets, expect))
    gathered = _guard(lambda: commands.gather_facts(targets))
    facts = {n: f.to_dict() for n, f in gathered.facts.items()}
    report = _guard(
        lambda: commands.verify_hosts(targets, facts, expectations, load=load, junit_xml=junit_xml) if facts else None
    )
    hosts_report: dict[str, Any] = dict(report.hosts) if report else {}
    for name, reason in gathered.errors.items():
        hosts_report[name] = commands.unreachable_entry(reason)
    payload = {"hosts": {n: hosts_report[n] for n in targets.names if n in hosts_report}}
    if fmt == "json":
        out.print_json(json.dumps(payload))
    else:
        ui.render_verify(out, payload)
        if report:
            out.print(f"log: {report.log_path}")
    if not all(h["passed"] for h in payload["hosts"].values()):
        failed = [n for n, h in payload["hosts"].items() if not h["passed"]]
        if fmt == "table":
            err.print(f"[bold red]verification failed[/bold red] on {', '.join(failed)}")
        # docs/verify.md: 6 when a check failed, 3 when a host was unreachable; the higher one when both
        checks_failed = report is not None and not report.passed
        raise typer.Exit(VerifyFailedError.exit_code if checks_failed else UnreachableError.exit_code)


@app.command()
def plan(
    hosts: Annotated[list[str] | None, typer.Argument(help="Hosts to plan from live facts.")] = None,
    inventory: Inventory = None,
    os_name: Annotated[
        str | None, typer.Option("--os", help="Plan offline for ubuntu-22.04/24.04, debian-12/13.")
    ] = None,
    gpu: Annotated[list[str], typer.Option("--gpu", help="PCI id (10de:1b06) or model name (repeatable).")] = [],  # noqa: B006
    machine: Annotated[str | None, typer.Option("--machine", help='Machine model, e.g. "XPS 15 9570".')] = None,
    pin: Pins = [],  # noqa: B006
    fmt: Format = "table",
) -> None:
    """Resolve the driver, CUDA and framework stack for live hosts, or offline for parts you plan to buy."""
    _check_format(fmt)
    if os_name is None and not hosts:
        _fail(ConfigError("give HOST(s) to plan from live facts, or --os (and --gpu) to plan offline"))
    if os_name is not None and hosts:
        _fail(ConfigError("give either HOST(s) or --os, not both"))
    plans: dict[str, Any] = {}
    errors: dict[str, DlsetupError] = {}
    if os_name is not None:
        pins = _guard(lambda: commands.parse_pin_flags(pin))
        try:
            plans[os_name] = commands.plan_offline(os_name, gpu, machine, pins)
        except DlsetupError as exc:
            errors[os_name] = exc
    else:
        targets = _guard(lambda: commands.load_targets(hosts or [], inventory))
        pins_by_host = _guard(lambda: commands.pins_for(targets, pin))
        gathered = _guard(lambda: commands.gather_facts(targets))
        _guard(lambda: commands.require_reachable(gathered))
        host_plans, errors = commands.plan_hosts(gathered, pins_by_host)
        plans = {n: p.plan for n, p in host_plans.items()}
    if fmt == "json":
        payload: dict[str, Any]
        if os_name is not None:
            payload = plans[os_name].to_dict() if plans else error_payload(errors[os_name])
        else:
            by_host: dict[str, Any] = {n: p.to_dict() for n, p in plans.items()}
            by_host.update({n: error_payload(e) for n, e in errors.items()})
            payload = {"hosts": by_host}
        out.print_json(json.dumps(payload))
    else:
        for name, p in plans.items():
            out.rule(f"[bold]{name}")
            render.render_plan(out, p)
        for name, problem in errors.items():
            out.rule(f"[bold]{name}")
            err.print(f"[bold red]error:[/bold red] {escape(problem.message)}")
    if errors:
        raise typer.Exit(max(e.exit_code for e in errors.values()))


@app.command()
def provision(
    hosts: Hosts,
    inventory: Inventory = None,
    check: Annotated[bool, typer.Option("--check", help="Change nothing; show what would change.")] = False,
    diff: Annotated[bool, typer.Option("--diff", help="Show file differences.")] = False,
    tags: Annotated[list[str], typer.Option("--tags", help="Only run these role tags, e.g. role::base.")] = [],  # noqa: B006
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask before changing hosts.")] = False,
    pin: Pins = [],  # noqa: B006
    expect: Annotated[list[str], typer.Option("--expect", help="KEY=VALUE expectation for the final verify.")] = [],  # noqa: B006
    no_verify: Annotated[bool, typer.Option("--no-verify", help="Skip the verification after the run.")] = False,
    junit_xml: Annotated[Path | None, typer.Option("--junit-xml", help="JUnit XML of the final verify.")] = None,
    ask_become_pass: Annotated[
        bool, typer.Option("--ask-become-pass", "-K", help="Ask for the sudo password of the remote user.")
    ] = False,
) -> None:
    """Install the planned driver, CUDA and DL stack; re-runs converge; then verify."""
    targets = _guard(lambda: commands.load_targets(hosts, inventory))
    pins = _guard(lambda: commands.pins_for(targets, pin))
    expectations = _guard(lambda: commands.expectations_for(targets, expect))
    gathered = _guard(lambda: commands.gather_facts(targets))
    _guard(lambda: commands.require_reachable(gathered))
    host_plans, errors = commands.plan_hosts(gathered, pins)
    if errors:
        name, problem = next(iter(errors.items()))
        problem.message = f"host {name}: {problem.message}; nothing was changed"
        _fail(problem)
    for name, host_plan in host_plans.items():
        out.rule(f"[bold]{name}: plan")
        for line in host_plan.hardware_changes:
            out.print(f"[yellow]hardware changed since the last provision:[/yellow] {line}")
        for line in host_plan.plan_changes:
            out.print(f"[yellow]plan changed:[/yellow] {line}")
        render.render_plan(out, host_plan.plan)
    if not check and not yes and sys.stdin.isatty() and not typer.confirm("Apply this plan?", default=False):
        err.print("nothing was changed")
        raise typer.Exit(0)
    become_password = getpass.getpass("BECOME (sudo) password: ") if ask_become_pass else None
    outcome = _guard(
        lambda: commands.provision(
            targets,
            host_plans,
            expectations,
            check=check,
            diff=diff,
            tags=tags,
            run_verify=not no_verify,
            junit_xml=junit_xml,
            on_event=ui.Progress(out),
            become_password=become_password,
        )
    )
    ui.render_run_summary(out, outcome.run)
    stats = outcome.run.stats.values()
    if any(s.unreachable for s in stats):
        raise typer.Exit(3)
    if outcome.run.status != "successful" or any(s.failures for s in stats):
        err.print("[bold red]provision failed[/bold red]: fix the cause above and run the same command again")
        raise typer.Exit(5)
    # In check mode the reboot handlers run too, though nothing was installed: asking for a reboot (exit 7) would
    # loop, as the same check run after it flags the same reboot again.
    if outcome.reboot_required and not check:
        _fail(commands.reboot_error(outcome.reboot_required))
    if check:
        changed = sum(s.changed for s in stats)
        out.print(f"check mode: {changed} task(s) would change; nothing was changed")
        if outcome.reboot_required:
            out.print(f"check mode: a reboot would be required on {', '.join(outcome.reboot_required)}")
    if outcome.verify_report is not None:
        ui.render_verify(out, outcome.verify_report.to_dict())
        if not outcome.verify_report.passed:
            raise typer.Exit(VerifyFailedError.exit_code)


def main() -> None:
    app()
