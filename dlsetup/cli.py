"""Command line: parse the arguments, call :mod:`dlsetup.commands`, render the result with :mod:`dlsetup.ui`.

Every command returns a result or raises a :class:`~dlsetup.errors.DlsetupError`; :func:`_exits` turns errors into
one line and their exit code, the only place where the process ends otherwise than with success.
"""

from __future__ import annotations

import functools
import getpass
import importlib.metadata
import itertools
import json
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, ParamSpec, TypeVar

import typer
import typer.core
from rich.console import Console
from rich.markup import escape

from dlsetup import __version__, commands
from dlsetup.config.accept import Accepted
from dlsetup.config.extravars import parse_extra_vars
from dlsetup.config.targets import Connection, HostArgs, VaultOptions
from dlsetup.errors import (
    EXIT_CODES_TEXT,
    EXIT_CONFIG,
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    ConfigError,
    DlsetupError,
    InterruptedRunError,
)
from dlsetup.plan.load import load_compat_data
from dlsetup.ui import facts as facts_ui
from dlsetup.ui import gpus as gpus_ui
from dlsetup.ui import plan as plan_ui
from dlsetup.ui import run as run_ui
from dlsetup.ui import verify as verify_ui


def _no_placeholders(params: list[Any]) -> list[Any]:
    """Typer labels a parameter without a metavar by its Python type (``--help <bool>``, ``HOST <list[str]>``); the
    options Typer itself adds (-h/--help, --install-completion) have none, and an argument's label ignores its
    metavar. A flag takes no value and HOST is named already, so neither shows a type."""
    for param in params:
        if isinstance(param, typer.core.TyperOption) and param.is_flag and param.metavar is None:
            param.metavar = ""
        if isinstance(param, typer.core.TyperArgument):
            param.display_type_rich = lambda ctx: None  # type: ignore[method-assign]
    return params


class _Group(typer.core.TyperGroup):
    def get_params(self, ctx: Any) -> list[Any]:
        return _no_placeholders(super().get_params(ctx))


class _Command(typer.core.TyperCommand):
    def get_params(self, ctx: Any) -> list[Any]:
        return _no_placeholders(super().get_params(ctx))


app = typer.Typer(
    cls=_Group,
    help="Provision and verify deep-learning machines: the right NVIDIA driver, CUDA and framework build for "
    "the GPUs actually installed.",
    epilog=EXIT_CODES_TEXT,
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
# outside a terminal (a pipe, a log) a line is never wrapped: a path or a cause stays whole
out = Console(highlight=False, soft_wrap=not sys.stdout.isatty())
# soft_wrap: an error stays one line however narrow the terminal
err = Console(stderr=True, highlight=False, soft_wrap=True)
STATE: dict[str, bool] = {"debug": False}
P = ParamSpec("P")
R = TypeVar("R")

Hosts = Annotated[
    list[str],
    typer.Argument(
        metavar="HOST", help="localhost, user@host:port (user and port optional), or inventory hosts/groups."
    ),
]
Inventory = Annotated[
    Path | None,
    typer.Option(
        "-i", "--inventory", metavar="INVENTORY", help="Ansible inventory (YAML/INI) for named hosts and groups."
    ),
]
Limit = Annotated[
    str | None,
    typer.Option(
        "--limit",
        "-l",
        metavar="PATTERN",
        help="Further limit the hosts to an Ansible host pattern, e.g. 'rigs:!rig-2'.",
    ),
]
AskVaultPass = Annotated[
    bool,
    typer.Option(
        "--ask-vault-pass", "-J", metavar="", help="Ask for the vault password of the inventory's vaulted values."
    ),
]
VaultPasswordFile = Annotated[
    list[Path],
    typer.Option(
        "--vault-password-file", metavar="FILE", help="Vault password file (or script printing it); repeatable."
    ),
]
Forks = Annotated[
    int | None, typer.Option("--forks", "-f", metavar="N", help="Hosts worked on at once (default: all, at least 5).")
]
User = Annotated[
    str | None, typer.Option("--user", "-u", metavar="USER", help="Remote user where the inventory names none.")
]
Verbose = Annotated[
    int,
    typer.Option(
        "--verbose",
        "-v",
        count=True,
        metavar="",
        show_default=False,
        help="Ansible's verbosity into the log (up to -vvvvvv).",
    ),
]


def _complete(choices: Callable[[], Sequence[str]]) -> Callable[[str], list[str]]:
    """Shell completion of an option's value from ``choices`` (read when the shell asks, not at import)."""
    return lambda incomplete: [c for c in choices() if c.startswith(incomplete)]


def _os_names() -> list[str]:
    return [system.key for system in load_compat_data().systems]


def _architectures() -> list[str]:
    return [architecture.name for architecture in load_compat_data().architectures]


def _roles() -> list[str]:
    return [tag.removeprefix("role::") for tag in commands.known_tags()]


Format = Annotated[
    Literal["table", "json"],
    typer.Option(
        "--format", metavar="table|json", help="table or json.", autocompletion=_complete(lambda: ("table", "json"))
    ),
]
Explain = Annotated[
    bool,
    typer.Option("--explain", metavar="", help="Also say why each choice was made, and where each fact comes from."),
]
AcceptHardware = Annotated[
    bool,
    typer.Option(
        "--accept-hardware",
        metavar="",
        help="The hardware now is what is meant: rewrite dlsetup_expect in the inventory file (or print the block to "
        "paste) and record the hardware as the new baseline once verify passes.",
    ),
]
Pins = Annotated[
    list[str],
    typer.Option("--pin", metavar="KEY=VALUE", help="KEY=VALUE stack pin, e.g. driver_branch=580 (repeatable)."),
]
NvidiaRepo = Annotated[
    str | None,
    typer.Option(
        "--nvidia-repo",
        metavar="URL",
        help="Base of a mirror of NVIDIA's CUDA repository (the part before compute/cuda/repos/); "
        "default: NVIDIA's own.",
    ),
]
NvidiaRepoKey = Annotated[
    str | None,
    typer.Option(
        "--nvidia-repo-key", metavar="FINGERPRINT", help="Fingerprint the repository's signing key must have."
    ),
]
PytorchIndex = Annotated[
    str | None,
    typer.Option(
        "--pytorch-index", metavar="URL", help="Base of a mirror of PyTorch's wheel index (<base>/<variant>)."
    ),
]
PipIndex = Annotated[
    str | None,
    typer.Option(
        "--pip-index",
        metavar="URL",
        help="Package index for everything else pip installs (JAX); default: the host's pip.",
    ),
]
Wheelhouse = Annotated[
    str | None,
    typer.Option(
        "--wheelhouse", metavar="DIR", help="A directory of wheels on the host: install from it alone (offline labs)."
    ),
]


def _sources(
    nvidia_repo: str | None,
    nvidia_repo_key: str | None,
    pytorch_index: str | None,
    pip_index: str | None,
    wheelhouse: str | None,
) -> dict[str, str | None]:
    return {
        "nvidia_repo": nvidia_repo,
        "nvidia_repo_key": nvidia_repo_key,
        "pytorch_index": pytorch_index,
        "pip_index": pip_index,
        "wheelhouse": wheelhouse,
    }


def _host_args(
    hosts: Sequence[str],
    inventory: Path | None,
    limit: str | None,
    ask_vault_pass: bool,
    vault_password_files: Sequence[Path],
    connection: Connection,
) -> HostArgs:
    """The HOST arguments and the options that select among them; the vault password asked once, kept in memory."""
    password = getpass.getpass("Vault password: ") if ask_vault_pass else None
    vault = VaultOptions(password, tuple(vault_password_files))
    return HostArgs(tuple(hosts), inventory, limit, vault, connection)


def _show(exc: DlsetupError) -> None:
    if exc.shown:
        return
    if exc.verdict:
        err.print(f"[bold red]{escape(exc.message)}[/bold red]")
        return
    err.print(f"[bold red]error:[/bold red] {escape(exc.message)}")
    if exc.hint:
        err.print(f"hint: {escape(exc.hint)}")


def _exits(command: Callable[P, R]) -> Callable[P, R]:
    """Run a command; a DlsetupError becomes its line and exit code, Ctrl-C exit 130, anything else exit 1."""

    @functools.wraps(command)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except DlsetupError as exc:
            if STATE["debug"]:
                raise
            if kwargs.get("fmt") == "json" and not exc.shown:
                _json(exc.payload())  # JSON was asked for: the error is JSON on stdout too, in the one shape
            _show(exc)
            raise typer.Exit(exc.exit_code) from None
        except (KeyboardInterrupt, typer.Abort):  # Ctrl-C, or Ctrl-C / end of input at a question
            stopped = InterruptedRunError(signal.SIGINT, "interrupted: re-run the same command to converge")
            err.print(stopped.message)
            raise typer.Exit(stopped.exit_code) from None
        except typer.Exit:
            raise
        except Exception as exc:
            if STATE["debug"]:
                raise
            err.print(
                f"[bold red]internal error:[/bold red] {type(exc).__name__}: {escape(str(exc))} "
                "(run with --debug for details)"
            )
            raise typer.Exit(EXIT_INTERNAL) from None

    return run


def _check_format(fmt: str) -> bool:
    """Whether JSON was asked for (Typer has refused anything but table and json)."""
    return fmt == "json"


def _json(payload: Any) -> None:
    out.print_json(json.dumps(payload))


def _end(failure: DlsetupError | None, *, json_done: bool = False) -> None:
    """End a command whose result is rendered: with its failure's exit code and line (on stderr); ``json_done``:
    the JSON document on stdout already carries the failure, so it is not printed there again."""
    if failure is not None:
        if json_done:
            _show(failure)
            raise failure.as_shown()
        raise failure


def _version(value: bool) -> None:
    if value:
        try:
            ansible = importlib.metadata.version("ansible-core")
        except importlib.metadata.PackageNotFoundError:
            ansible = "not installed"
        python = ".".join(map(str, sys.version_info[:3]))
        out.print(f"dlsetup {__version__} (ansible-core {ansible}, Python {python})")
        raise typer.Exit()


@app.callback()
def main_options(
    debug: Annotated[bool, typer.Option("--debug", metavar="", help="Show tracebacks.")] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            "-V",
            callback=_version,
            is_eager=True,
            help="Show the versions of dlsetup, ansible-core, Python.",
        ),
    ] = False,
) -> None:
    STATE["debug"] = debug


@app.command(cls=_Command)
@_exits
def facts(
    hosts: Hosts,
    inventory: Inventory = None,
    limit: Limit = None,
    ask_vault_pass: AskVaultPass = False,
    vault_password_file: VaultPasswordFile = [],  # noqa: B006
    forks: Forks = None,
    user: User = None,
    verbose: Verbose = 0,
    fmt: Format = "table",
) -> None:
    """Report each host's hardware: OS, machine, CPU, RAM, disks, NVIDIA GPUs (from PCI), PCIe links, driver."""
    as_json = _check_format(fmt)
    result = commands.facts_command(
        _host_args(hosts, inventory, limit, ask_vault_pass, vault_password_file, Connection(forks, user, verbose))
    )
    if as_json:
        payload: dict[str, Any] = {"hosts": {n: f.to_dict() for n, f in result.facts.items()}}
        if result.errors:
            payload["errors"] = result.errors
        _json(payload)
    else:
        for name in result.names:
            if name in result.facts:
                facts_ui.render_facts(out, name, result.facts[name])
            else:
                facts_ui.render_host_error(out, name, result.errors.get(name, "no facts"))
    _end(result.failure)


@app.command(cls=_Command)
@_exits
def verify(
    hosts: Hosts,
    inventory: Inventory = None,
    limit: Limit = None,
    ask_vault_pass: AskVaultPass = False,
    vault_password_file: VaultPasswordFile = [],  # noqa: B006
    forks: Forks = None,
    user: User = None,
    verbose: Verbose = 0,
    expect: Annotated[
        list[str],
        typer.Option(
            "--expect", metavar="KEY=VALUE", help="KEY=VALUE expectation, overrides dlsetup_expect (repeatable)."
        ),
    ] = [],  # noqa: B006 - Typer reads the default
    load: Annotated[
        bool, typer.Option("--load", metavar="", help="Require PCIe readings under load (needs PyTorch).")
    ] = False,
    fmt: Format = "table",
    junit_xml: Annotated[
        Path | None, typer.Option("--junit-xml", metavar="FILE", help="Also write JUnit XML here.")
    ] = None,
    accept_hardware: AcceptHardware = False,
) -> None:
    """Check each host against its expectations (inventory dlsetup_expect and --expect) and its hardware baseline
    (the hardware of its last verified run) with the testinfra suite."""
    as_json = _check_format(fmt)
    result = commands.verify_command(
        _host_args(hosts, inventory, limit, ask_vault_pass, vault_password_file, Connection(forks, user, verbose)),
        expect_flags=expect,
        load=load,
        junit_xml=junit_xml,
        accept=accept_hardware,
    )
    if as_json:
        payload = result.report.to_dict()
        if accept_hardware:
            payload["accepted"] = {n: _accepted_json(a) for n, a in result.accepted.items()}
            payload["baselines_recorded"] = sorted(result.baselines)
        _json(payload)
    else:
        for accepted in result.accepted.values():
            _render_accepted(out, accepted)
        verify_ui.render_verify(out, result.report)
        for name in result.baselines:
            out.print(f"{name}: hardware recorded as the new baseline")
        if result.report.log_path is not None:
            out.print(f"log: {result.report.log_path}")
    _end(result.failure, json_done=as_json)


def _interactive() -> bool:
    """Whether a person can answer a question (stdin is a terminal)."""
    return sys.stdin.isatty()


def _accepted_json(accepted: Accepted) -> dict[str, Any]:
    return {"expect": accepted.expect, "written_to": str(accepted.path) if accepted.path else None,
            "paste": None if accepted.path else accepted.block, "why_not_written": accepted.why}  # fmt: skip


def _render_accepted(view: Console, accepted: Accepted) -> None:
    if accepted.path is not None:
        view.print(f"{escape(accepted.host)}: dlsetup_expect in {escape(str(accepted.path))} now follows the hardware")
        return
    view.print(
        f"{escape(accepted.host)}: {escape(accepted.why or 'the inventory cannot be rewritten')}; "
        "used for this run, paste this into its host variables to keep it:"
    )
    view.print(escape(accepted.block.rstrip("\n")), soft_wrap=True)


def _render_drift(view: Console, host_plan: commands.HostPlan) -> None:
    drift = host_plan.drift
    if drift.drifted:
        since = f" (baseline of {drift.baseline.recorded_at})" if drift.baseline and drift.baseline.recorded_at else ""
        view.print(f"[yellow]hardware changed since the last verified run{escape(since)}:[/yellow]")
        for line in drift.lines:
            view.print(f"  {escape(line)}")
    for line in host_plan.plan_changes:
        view.print(f"[yellow]plan changed:[/yellow] {escape(line)}")


@app.command(cls=_Command)
@_exits
def diff(
    hosts: Hosts,
    inventory: Inventory = None,
    limit: Limit = None,
    ask_vault_pass: AskVaultPass = False,
    vault_password_file: VaultPasswordFile = [],  # noqa: B006
    forks: Forks = None,
    user: User = None,
    verbose: Verbose = 0,
    pin: Pins = [],  # noqa: B006
    fmt: Format = "table",
    nvidia_repo: NvidiaRepo = None,
    nvidia_repo_key: NvidiaRepoKey = None,
    pytorch_index: PytorchIndex = None,
    pip_index: PipIndex = None,
    wheelhouse: Wheelhouse = None,
) -> None:
    """Read-only: what changed in each host's hardware since its last verified run, and the plan changes it
    causes. Exits 9 when something drifted (like git diff --exit-code), 0 when nothing did."""
    as_json = _check_format(fmt)
    result = commands.diff_command(
        _host_args(hosts, inventory, limit, ask_vault_pass, vault_password_file, Connection(forks, user, verbose)),
        pin_flags=pin,
        source_flags=_sources(nvidia_repo, nvidia_repo_key, pytorch_index, pip_index, wheelhouse),
    )
    if as_json:
        _json(result.to_dict())
    else:
        for name, host_plan in result.plans.items():
            out.rule(f"[bold]{escape(name)}")
            if host_plan.drift.baseline is None:
                out.print("no baseline yet: the host has not verified after a provision")
            elif not host_plan.drift.drifted and not host_plan.plan_changes:
                out.print("no change since the last verified run")
            _render_drift(out, host_plan)
        for name, problem in result.errors.items():
            out.rule(f"[bold]{escape(name)}")
            err.print(f"[bold red]error:[/bold red] {escape(problem.message)}")
        for name, why in result.unreachable.items():
            out.rule(f"[bold]{escape(name)}")
            err.print(f"[bold red]error:[/bold red] {escape(why)}")
    _end(result.failure)


@app.command(cls=_Command)
@_exits
def plan(
    hosts: Annotated[list[str] | None, typer.Argument(metavar="HOST", help="Hosts to plan from live facts.")] = None,
    inventory: Inventory = None,
    limit: Limit = None,
    ask_vault_pass: AskVaultPass = False,
    vault_password_file: VaultPasswordFile = [],  # noqa: B006
    forks: Forks = None,
    user: User = None,
    verbose: Verbose = 0,
    os_name: Annotated[
        str | None,
        typer.Option(
            "--os",
            metavar="OS",
            help="Plan offline for ubuntu-22.04/24.04, debian-12/13.",
            autocompletion=_complete(_os_names),
        ),
    ] = None,
    gpu: Annotated[
        list[str], typer.Option("--gpu", metavar="GPU", help="PCI id (10de:1b06) or model name (repeatable).")
    ] = [],  # noqa: B006
    machine: Annotated[
        str | None, typer.Option("--machine", metavar="MODEL", help='Machine model, e.g. "XPS 15 9570".')
    ] = None,
    cpu: Annotated[
        str | None,
        typer.Option(
            "--cpu",
            metavar="CPU",
            help='The build\'s CPU, e.g. "Core i7-6700K": adds the PCIe lanes each --gpu gets (ubuntu-24.04 '
            "without --os).",
        ),
    ] = None,
    pin: Pins = [],  # noqa: B006
    fmt: Format = "table",
    explain: Explain = False,
    nvidia_repo: NvidiaRepo = None,
    nvidia_repo_key: NvidiaRepoKey = None,
    pytorch_index: PytorchIndex = None,
    pip_index: PipIndex = None,
    wheelhouse: Wheelhouse = None,
) -> None:
    """Resolve the driver, CUDA and framework stack for live hosts, or offline for parts you plan to buy."""
    as_json = _check_format(fmt)
    result = commands.plan_command(
        _host_args(
            hosts or [], inventory, limit, ask_vault_pass, vault_password_file, Connection(forks, user, verbose)
        ),
        os_name=os_name,
        gpus=gpu,
        machine=machine,
        pin_flags=pin,
        source_flags=_sources(nvidia_repo, nvidia_repo_key, pytorch_index, pip_index, wheelhouse),
        cpu=cpu,
    )
    if as_json:
        if result.offline:
            (name,) = [*result.plans, *result.errors]
            document: dict[str, Any] = result.plans[name].to_dict() if result.plans else result.errors[name].payload()
            if result.lanes is not None:
                document["pcie_lanes"] = result.lanes.to_dict()
            _json(document)
        else:
            by_host: dict[str, Any] = {n: p.to_dict() for n, p in result.plans.items()}
            by_host.update({n: e.payload() for n, e in result.errors.items()})
            _json({"hosts": by_host})
    else:
        for name, host_plan in result.plans.items():
            out.rule(f"[bold]{name}")
            plan_ui.render_plan(out, host_plan, explain=explain)
        if result.lanes is not None:
            plan_ui.render_lanes(out, result.lanes, explain=explain)
        for name, problem in result.errors.items():
            out.rule(f"[bold]{name}")
            err.print(f"[bold red]error:[/bold red] {escape(problem.message)}")
    _end(result.failure)


@app.command(cls=_Command)
@_exits
def init(
    directory: Annotated[
        Path, typer.Argument(metavar="DIR", help="Where to write the example inventory (created if missing).")
    ] = Path("dlsetup-inventory"),
    fmt: Format = "table",
) -> None:
    """Write an example inventory (the seed machines: GTX 1080 Ti / TITAN X rigs, XPS 13 and 15), with
    comments, into DIRECTORY; existing files are never overwritten."""
    written = commands.init_command(directory)
    hosts = next((p for p in written if p.name == "hosts.yml"), written[0])
    following = f"edit the addresses in {hosts}, then: dlsetup facts -i {hosts} all"
    if _check_format(fmt):
        _json({"written": [str(p) for p in written], "next": following})
        return
    for path in written:
        out.print(f"wrote {escape(str(path))}")
    out.print(f"next: {escape(following)}")


@app.command(cls=_Command)
@_exits
def gpus(
    arch: Annotated[
        str | None,
        typer.Option(
            "--arch",
            metavar="ARCH",
            help="Only this architecture, e.g. Pascal.",
            autocompletion=_complete(_architectures),
        ),
    ] = None,
    fmt: Format = "table",
) -> None:
    """List the NVIDIA GPUs dlsetup knows (NVIDIA's own data) and what each gets on each supported OS."""
    as_json = _check_format(fmt)
    result = commands.gpus_command(arch)
    if as_json:
        _json(result.to_dict())
    else:
        gpus_ui.render_gpus(out, result)


@app.command(cls=_Command)
@_exits
def provision(
    hosts: Hosts,
    inventory: Inventory = None,
    limit: Limit = None,
    ask_vault_pass: AskVaultPass = False,
    vault_password_file: VaultPasswordFile = [],  # noqa: B006
    forks: Forks = None,
    user: User = None,
    verbose: Verbose = 0,
    check: Annotated[bool, typer.Option("--check", metavar="", help="Change nothing; show what would change.")] = False,
    diff: Annotated[bool, typer.Option("--diff", metavar="", help="Show file differences.")] = False,
    tags: Annotated[
        list[str],
        typer.Option(
            "--tags",
            "-t",
            metavar="ROLES",
            help="Only run these roles: base or role::base, comma-separated.",
            autocompletion=_complete(_roles),
        ),
    ] = [],  # noqa: B006
    extra_vars: Annotated[
        list[str],
        typer.Option(
            "--extra-vars",
            "-e",
            metavar="VARS",
            help="Role variables: key=value, YAML/JSON or @FILE (repeatable); checked against what the roles take.",
        ),
    ] = [],  # noqa: B006
    skip_tags: Annotated[
        list[str],
        typer.Option(
            "--skip-tags",
            metavar="ROLES",
            help="Run every role but these, e.g. dl_stack (comma-separated).",
            autocompletion=_complete(_roles),
        ),
    ] = [],  # noqa: B006
    yes: Annotated[bool, typer.Option("--yes", "-y", metavar="", help="Do not ask before changing hosts.")] = False,
    pin: Pins = [],  # noqa: B006
    expect: Annotated[
        list[str], typer.Option("--expect", metavar="KEY=VALUE", help="KEY=VALUE expectation for the final verify.")
    ] = [],  # noqa: B006
    no_verify: Annotated[
        bool, typer.Option("--no-verify", metavar="", help="Skip the verification after the run.")
    ] = False,
    junit_xml: Annotated[
        Path | None, typer.Option("--junit-xml", metavar="FILE", help="JUnit XML of the final verify.")
    ] = None,
    ask_become_pass: Annotated[
        bool, typer.Option("--ask-become-pass", "-K", metavar="", help="Ask for the sudo password of the remote user.")
    ] = False,
    full: Annotated[
        bool,
        typer.Option("--full", metavar="", help="Run every role even on a host still as its last provision left it."),
    ] = False,
    accept_hardware: AcceptHardware = False,
    explain: Explain = False,
    fmt: Format = "table",
    nvidia_repo: NvidiaRepo = None,
    nvidia_repo_key: NvidiaRepoKey = None,
    pytorch_index: PytorchIndex = None,
    pip_index: PipIndex = None,
    wheelhouse: Wheelhouse = None,
) -> None:
    """Install the planned driver, CUDA and DL stack; re-runs converge; then verify. With --format json, the
    result is one JSON document on stdout and the progress goes to stderr."""
    as_json = _check_format(fmt)
    view = err if as_json else out  # what a person reads: stdout, or stderr when stdout is the JSON
    tags = commands.select_tags(tags, skip_tags)
    extravars = parse_extra_vars(extra_vars)
    if not check and not yes and not _interactive():
        # nobody to ask: a change needs consent given up front (a check run changes nothing and never asks)
        raise ConfigError(
            "provision changes hosts and there is no terminal to ask on: give --yes to apply, or --check for a dry "
            "run; nothing was changed"
        )
    host_args = _host_args(
        hosts, inventory, limit, ask_vault_pass, vault_password_file, Connection(forks, user, verbose)
    )
    # the facts phase: a live table on a terminal, no lines (its problems are the command's error)
    with run_ui.Progress(view, what="gathering facts", quiet=True) as gathering:
        request = commands.prepare_provision(
            host_args,
            pin_flags=pin,
            expect_flags=expect,
            source_flags=_sources(nvidia_repo, nvidia_repo_key, pytorch_index, pip_index, wheelhouse),
            tags=tags,
            junit_xml=junit_xml,
            accept=accept_hardware,
            on_event=gathering,
            extravars=extravars,
        )
    for name, host_plan in request.plans.items():
        view.rule(f"[bold]{name}: plan")
        _render_drift(view, host_plan)
        plan_ui.render_plan(view, host_plan.plan, explain=explain)
        if host_plan.convergence is not None:
            note = " (--full: its roles run anyway)" if full and host_plan.convergence.converged else ""
            view.print(f"{name}: {escape(host_plan.convergence.reason)}{note}")
    nothing_to_do = request.all_converged and not full
    for accepted in request.accepted.values():
        _render_accepted(view, accepted)
    gone = [c for p in request.plans.values() for c in p.drift.removed_gpus]
    if not check and not yes and not nothing_to_do and _interactive():
        if gone and not typer.confirm(
            f"{len(gone)} GPU(s) of the last verified run are gone ({'; '.join(c.text[2:] for c in gone)}). "
            "Provision for the hardware as it is now?",
            default=False,
            err=as_json,  # stdout is the JSON document
        ):
            if as_json:
                _json({"declined": True, "changed": 0, "hosts": {}})
            err.print("nothing was changed")
            return
        if not gone and not typer.confirm("Apply this plan?", default=False, err=as_json):
            if as_json:
                _json({"declined": True, "changed": 0, "hosts": {}})
            err.print("nothing was changed")
            return
    become_password = getpass.getpass("BECOME (sudo) password: ") if ask_become_pass else None
    with run_ui.Progress(view, diff=diff, what="check run" if check else "provision") as progress:
        outcome = commands.provision(
            request.targets,
            request.plans,
            request.expectations,
            check=check,
            diff=diff,
            tags=tags,
            run_verify=not no_verify,
            junit_xml=junit_xml,
            on_event=progress,
            become_password=become_password,
            accepted=list(request.accepted),
            extravars=extravars,
            full=full,
            baselines=request.baselines,
        )
    not_run = [t.removeprefix("role::") for t in commands.known_tags() if tags and t not in tags]
    run_ui.render_run_summary(view, outcome.run, not_run=not_run, converged=outcome.converged)
    failure = outcome.failure
    if check and (failure is None or failure is outcome.preflight_failure):
        view.print(f"check mode: {outcome.changed} task(s) would change; nothing was changed")
        if outcome.reboot_required:
            view.print(f"check mode: a reboot would be required on {', '.join(outcome.reboot_required)}")
    if outcome.verify_report is not None:
        verify_ui.render_verify(view, outcome.verify_report)
    for name in outcome.baselines:
        view.print(f"{name}: hardware recorded as the new baseline")
    if as_json:
        _json(outcome.to_dict(request.plans))
    _end(failure, json_done=as_json)


@app.command(cls=_Command)
@_exits
def report(
    hosts: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="HOST|FILE",
            help="Hosts to report on (facts gathered now), or with --from-json the JSON documents to read (- for "
            "stdin).",
        ),
    ] = None,
    inventory: Inventory = None,
    limit: Limit = None,
    ask_vault_pass: AskVaultPass = False,
    vault_password_file: VaultPasswordFile = [],  # noqa: B006
    forks: Forks = None,
    user: User = None,
    verbose: Verbose = 0,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", metavar="FILE", help="Where to write the HTML page (required).")
    ] = None,
    from_json: Annotated[
        bool,
        typer.Option(
            "--from-json",
            metavar="",
            help="The arguments are documents of facts, plan, verify, diff or provision --format json, merged per "
            "host (a later file's part wins); nothing is run, no host is asked.",
        ),
    ] = False,
    no_verify: Annotated[
        bool,
        typer.Option(
            "--no-verify", metavar="", help="With HOSTs: do not run verify (no checks, no measured bandwidth)."
        ),
    ] = False,
    load: Annotated[
        bool, typer.Option("--load", metavar="", help="With HOSTs: verify requires PCIe readings under load.")
    ] = False,
    expect: Annotated[
        list[str], typer.Option("--expect", metavar="KEY=VALUE", help="With HOSTs: KEY=VALUE expectation for verify.")
    ] = [],  # noqa: B006
    fmt: Format = "table",
) -> None:
    """Write one self-contained HTML page (printable, no script, no external resource): per host the machine, the
    applied plan, the PCIe tree with each link's state, host-to-device bandwidth against the link's theoretical,
    verify's checks and the hardware history. Read-only: with HOSTs it gathers facts and runs verify."""
    as_json = _check_format(fmt)
    result = commands.report_command(
        _host_args(
            hosts or [], inventory, limit, ask_vault_pass, vault_password_file, Connection(forks, user, verbose)
        ),
        output=output,
        from_json=from_json,
        run_verify=not no_verify,
        load=load,
        expect_flags=expect,
    )
    if as_json:
        _json(result.to_dict())
    else:
        for page in result.pages:
            gpus = "; ".join(f"{g.label} {g.model} ({g.bus_id}): link {g.state_text}" for g in page.gpus)
            out.print(f"{escape(page.name)}: {page.verdict_text}; {escape(gpus) or 'no NVIDIA GPU'}")
        out.print(f"wrote {escape(str(result.path))}")
    for name, why in result.unreachable.items():
        err.print(f"[bold red]error:[/bold red] {escape(name)}: {escape(why)}")
    _end(result.failure)


# Click's exceptions, which Typer vendors since 0.23 (typer._click) and re-exported before: found through the one
# Typer exports, so neither layout is named
_USAGE_ERROR = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")
_CLICK_ERROR = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")


def _json_asked(argv: Sequence[str]) -> bool:
    """Whether a command line asks for ``--format json`` (read before Click could parse it)."""
    return "--format=json" in argv or any(a == "--format" and b == "json" for a, b in itertools.pairwise(argv))


def _usage_error(exc: Any) -> int:
    """A usage error as every other error: ``error: CAUSE`` on the first line, where to read more on the second
    (Typer's own display puts the cause on the fourth line, inside a box)."""
    if type(exc).__name__ == "NoArgsIsHelpError":  # bare ``dlsetup``: the help, as with -h, but exit 2
        err.print(exc.format_message(), markup=False)
        return EXIT_CONFIG
    if _json_asked(sys.argv[1:]):
        _json({"error": {"kind": "usage", "message": exc.format_message(), "hint": None}})
    command = exc.ctx.command_path if exc.ctx is not None else "dlsetup"
    if command == "dlsetup":  # an option's missing value is raised before the command's context exists
        named = next((a for a in sys.argv[1:] if not a.startswith("-")), None)
        names = {c.name or getattr(c.callback, "__name__", "") for c in app.registered_commands}
        command = f"dlsetup {named}" if named in names else command
    err.print(f"[bold red]error:[/bold red] {escape(exc.format_message())}")
    err.print(f"hint: {escape(command)} -h lists the arguments and options")
    return exc.exit_code if exc.exit_code else EXIT_CONFIG


def main() -> None:
    try:
        code = app(standalone_mode=False, prog_name="dlsetup")
    except _USAGE_ERROR as exc:  # type: ignore[misc]
        sys.exit(_usage_error(exc))
    except _CLICK_ERROR as exc:  # type: ignore[misc]
        err.print(f"[bold red]error:[/bold red] {escape(exc.format_message())}")
        sys.exit(exc.exit_code)
    except typer.Abort:
        err.print("interrupted: nothing was changed by this prompt")
        sys.exit(EXIT_INTERRUPTED)
    sys.exit(code if isinstance(code, int) else 0)
