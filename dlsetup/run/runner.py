"""The one place that talks to ansible-runner.

Results are read from runner events and ``.stats``, never from Ansible's stdout. Every run gets its own
private data directory under the state dir (``$DLSETUP_STATE_DIR`` or ``~/.local/state/dlsetup``;
:mod:`dlsetup.run.rundir` owns them) so its log (``artifacts/*/stdout``) and events stay for the user to read,
redacted (:mod:`dlsetup.run.redact`): no password, token or vaulted value of the inventory, the environment or
``-K`` is written there.
"""

from __future__ import annotations

import os
import re
import shlex
import sys
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import ansible_runner
import yaml

from dlsetup import paths
from dlsetup.config.targets import TargetSet
from dlsetup.errors import DlsetupError
from dlsetup.run import redact, rundir, signals
from dlsetup.run.rundir import KEEP_RUNS, new_run_dir, release_run_dir, state_dir
from dlsetup.run.skips import skip_reason

# the run directories are rundir's; commands and tests reach them through the runner
__all__ = [
    "KEEP_RUNS",
    "EventCallback",
    "FailedTask",
    "HostStats",
    "RunResult",
    "failure_line",
    "new_run_dir",
    "release_run_dir",
    "run_playbook",
    "state_dir",
]

BECOME_PROMPT = r"^BECOME password.*:\s*?$"
EventCallback = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class HostStats:
    ok: int = 0
    changed: int = 0
    failures: int = 0
    skipped: int = 0
    unreachable: bool = False


class FailedTask(NamedTuple):
    """A task that failed on a host: its name, the cause in one line (``failure_line``), its action, and the
    event file under the run directory that holds its whole result (stdout, stderr, command)."""

    task: str
    message: str
    action: str = ""
    details: Path | None = None


@dataclass
class RunResult:
    """What one playbook run did, per host."""

    status: str
    rc: int
    run_dir: Path
    stats: dict[str, HostStats] = field(default_factory=dict)
    # per host: the results of ok/changed tasks, in order: (task name, action, res)
    results: dict[str, list[tuple[str, str, dict[str, Any]]]] = field(default_factory=dict)
    failed_tasks: dict[str, list[FailedTask]] = field(default_factory=dict)
    unreachable: dict[str, str] = field(default_factory=dict)
    # per host: the tasks skipped, as (role, the condition that was false); role "" for a play's own task
    skipped: dict[str, list[tuple[str, str]]] = field(default_factory=dict)

    @property
    def log_path(self) -> Path:
        stdout = sorted(self.run_dir.glob("artifacts/*/stdout"))
        return stdout[-1] if stdout else self.run_dir

    def task_results(self, host: str, action: str, task: str | None = None) -> list[dict[str, Any]]:
        """The results of ``action`` on ``host`` (of the task named ``task`` only, when given), in order."""
        return [
            res for name, act, res in self.results.get(host, []) if act == action and (task is None or name == task)
        ]

    def fact(self, host: str, name: str) -> Any:
        """The last value a task on ``host`` set for fact ``name`` (``set_fact`` or a module's ansible_facts)."""
        value = None
        for _task, _action, res in self.results.get(host, []):
            facts = res.get("ansible_facts") or {}
            if name in facts:
                value = facts[name]
        return value


def _ensure_ansible_on_path() -> None:
    """ansible-runner looks up ansible-playbook/ansible-inventory on this process's PATH: make sure the ones
    installed next to dlsetup's interpreter are found even when its venv is not activated."""
    bin_dir = str(Path(sys.executable).parent)
    current = os.environ.get("PATH", "")
    if bin_dir not in current.split(os.pathsep):
        os.environ["PATH"] = bin_dir + os.pathsep + current if current else bin_dir


def _inventory_sources(targets: TargetSet, run_dir: Path) -> list[str]:
    sources: list[str] = []
    if targets.inventory_path is not None:
        sources.append(str(targets.inventory_path.resolve()))
    adhoc = targets.adhoc_inventory()
    if adhoc:
        inv_dir = run_dir / "inventory"
        inv_dir.mkdir(mode=0o700, exist_ok=True)
        adhoc_path = inv_dir / "dlsetup-hosts.yml"
        redact.write_private(adhoc_path, yaml.safe_dump(adhoc, sort_keys=False))
        sources.append(str(adhoc_path))
    return sources


def run_playbook(
    playbook: str,
    targets: TargetSet,
    *,
    extravars: Mapping[str, Any] | None = None,
    host_extravars: Mapping[str, Mapping[str, Any]] | None = None,
    check: bool = False,
    diff: bool = False,
    tags: Iterable[str] = (),
    forks: int | None = None,
    on_event: EventCallback | None = None,
    kind: str = "run",
    become_password: str | None = None,
) -> RunResult:
    """Run a shipped playbook on ``targets`` and collect per-host results from events and stats.

    ``host_extravars`` become host variables in an extra inventory source (per-host plans), so
    every host in one run can get its own plan without recomputation in Jinja.

    What the run leaves in its directory is redacted (:mod:`dlsetup.run.redact`): events as they are written,
    ansible-runner's ``command`` (the whole environment) as soon as it is, our log from the redacted events, and
    the whole directory once more at the end; its temp files (``TMPDIR``, Ansible's local temp) live in
    ``tmp/`` of the run directory and go with the run.
    """
    _ensure_ansible_on_path()
    run_dir = new_run_dir(kind)
    envvars = paths.ansible_env()
    if targets.inventory_plugins:  # the order the inventory was read in (dlsetup.run.inventory_child)
        envvars["ANSIBLE_INVENTORY_ENABLED"] = ",".join(targets.inventory_plugins)
    secrets = redact.Secrets.collect(
        {**os.environ, **envvars},
        dict(targets.inventory_hostvars),
        targets.adhoc_inventory(),
        dict(extravars or {}),
        {h: dict(v) for h, v in (host_extravars or {}).items()},
        values=[become_password, targets.vault.password, *targets.vaulted],
    )
    sources = _inventory_sources(targets, run_dir)
    if host_extravars:
        per_host = run_dir / "inventory" / "dlsetup-plans.yml"
        per_host.parent.mkdir(mode=0o700, exist_ok=True)
        redact.write_private(
            per_host,
            yaml.safe_dump({"all": {"hosts": {h: dict(v) for h, v in host_extravars.items()}}}, sort_keys=False),
        )
        sources.append(str(per_host))
    result = RunResult(status="unknown", rc=-1, run_dir=run_dir)
    ident = uuid.uuid4().hex
    log = _RunLog(run_dir / "artifacts" / ident, secrets)

    def handle(event: dict[str, Any]) -> bool:
        raw = dict(event)  # redaction rebuilds what it changes: the values under raw stay Ansible's
        redact.redact_event(event, secrets)  # ansible-runner writes the event as the handler leaves it
        _collect(result, raw, event)
        log.write(event)
        if on_event is not None:
            on_event(event)
        return True

    cmdline = []
    if check:
        cmdline.append("--check")
    if diff:
        cmdline.append("--diff")
    # vaulted values: Ansible opens them with the same secrets (a file it reads, or the asked password answered at
    # its prompt); dlsetup never writes them out
    cmdline += targets.vault.cmdline()
    if targets.connection.user is not None:
        cmdline += ["--user", targets.connection.user]
    passwords: dict[str, str] = dict(targets.vault.prompts())
    if become_password is not None:
        # answered through ansible-runner's pexpect prompt handling: never written to the run dir or a log
        cmdline.append("--ask-become-pass")
        passwords[BECOME_PROMPT] = become_password
    try:
        with rundir.scratch(run_dir) as scratch, signals.deferred_signals() as received:
            runner = ansible_runner.run(
                private_data_dir=str(run_dir),
                ident=ident,
                playbook=str(paths.playbook(playbook)),
                inventory=sources,
                limit=",".join(targets.names),
                extravars=dict(extravars or {}),
                envvars={**envvars, **rundir.scratch_env(scratch)},
                cmdline=shlex.join(cmdline) or None,
                tags=",".join(tags) or None,
                forks=forks or targets.connection.forks or max(5, len(targets.names)),
                verbosity=targets.connection.verbosity or None,
                quiet=True,
                event_handler=handle,
                status_handler=log.status,
                suppress_env_files=True,
                # our log is written from the redacted events; ansible-runner's would hold the raw output
                suppress_output_file=True,
                # Ansible's jsonfile fact cache would keep every host's facts (its environment too) on disk
                fact_cache_type="memory",
                passwords=passwords or None,
                cancel_callback=lambda: bool(received),
            )
    finally:
        log.close()
        redact.redact_tree(run_dir, secrets, skip=[rundir.LOCK_NAME])
    result.status = str(runner.status)
    result.rc = int(runner.rc if runner.rc is not None else -1)
    if received:
        raise signals.interrupted(
            received[0],
            f"the {kind} run on {', '.join(targets.names)}; log: {result.log_path}",
            hint="a task already started on a host may still finish there; run the same command again to converge",
        )
    for host, stat in _stats(runner.stats).items():
        result.stats[host] = stat
    if result.status not in {"successful", "failed"} and not result.stats:
        raise DlsetupError(f"ansible run {result.status} (rc {result.rc}); log: {result.log_path}")
    return result


class _RunLog:
    """The run's log, ``artifacts/<ident>/stdout``, written from the redacted events' text; and the redaction of
    ansible-runner's ``command`` (the command line and the whole environment) as soon as it is written."""

    def __init__(self, artifact_dir: Path, secrets: redact.Secrets) -> None:
        self.artifact_dir = artifact_dir
        self.secrets = secrets
        self._handle: Any = None

    def status(self, data: Mapping[str, Any], runner_config: Any = None) -> None:
        # "running" comes after ansible-runner wrote artifacts/<ident>/command and before it starts the child
        if data.get("status") == "running":
            command = self.artifact_dir / "command"
            if command.exists():
                redact.redact_file(command, self.secrets)
            self._open()

    def _open(self) -> None:
        if self._handle is None:
            self.artifact_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(self.artifact_dir / "stdout", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            self._handle = os.fdopen(fd, "a", encoding="utf-8")

    def write(self, event: Mapping[str, Any]) -> None:
        text = event.get("stdout")
        if isinstance(text, str) and text:
            self._open()
            self._handle.write(text + "\n")
            self._handle.flush()

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


def _stats(raw: Mapping[str, Any] | None) -> dict[str, HostStats]:
    if not raw:
        return {}
    hosts: set[str] = set()
    for key in ("ok", "changed", "failures", "skipped", "dark", "processed"):
        hosts.update((raw.get(key) or {}).keys())
    return {
        host: HostStats(
            ok=int((raw.get("ok") or {}).get(host, 0)),
            changed=int((raw.get("changed") or {}).get(host, 0)),
            failures=int((raw.get("failures") or {}).get(host, 0)),
            skipped=int((raw.get("skipped") or {}).get(host, 0)),
            unreachable=bool((raw.get("dark") or {}).get(host, 0)),
        )
        for host in hosts
    }


def _collect(result: RunResult, event: Mapping[str, Any], shown: Mapping[str, Any] | None = None) -> None:
    """Keep the results of ``event`` (its values as Ansible gave them: facts are read from them) and the causes of
    failures as ``shown`` (the redacted event, which is what the console and the run's files get)."""
    shown = event if shown is None else shown
    name = event.get("event", "")
    data = event.get("event_data") or {}
    host = data.get("host")
    if not host:
        return
    res = data.get("res") or {}
    task = str(data.get("task") or "")
    action = str(data.get("task_action") or "")
    if name == "runner_on_ok":
        result.results.setdefault(host, []).append((task, action, dict(res)))
    elif name == "runner_on_failed" and not data.get("ignore_errors"):
        failed = FailedTask(task, failure_line(_res(shown)), action, _event_file(result.run_dir, event))
        result.failed_tasks.setdefault(host, []).append(failed)
    elif name == "runner_on_unreachable":
        result.unreachable[host] = unreachable_line(_res(shown))
    elif name == "runner_on_skipped":
        # ansible-runner's skipped events have no result: the condition is read from the task's file
        why = res.get("false_condition") or skip_reason(str(data.get("task_path") or "")) or "a condition"
        result.skipped.setdefault(host, []).append((str(data.get("role") or ""), " ".join(str(why).split())))


def _res(event: Mapping[str, Any]) -> Mapping[str, Any]:
    res = (event.get("event_data") or {}).get("res")
    return res if isinstance(res, Mapping) else {}


def _event_file(run_dir: Path, event: Mapping[str, Any]) -> Path | None:
    """Where ansible-runner writes this event, the task's whole result (``artifacts/<ident>/job_events/``)."""
    ident, counter, uuid = event.get("runner_ident"), event.get("counter"), event.get("uuid")
    if not (ident and uuid and counter is not None):
        return None
    return run_dir / "artifacts" / str(ident) / "job_events" / f"{counter}-{uuid}.json"


# What a failed result's output is made of. An error line (pip's "ERROR:", apt's "E:", ...) is the cause when
# there is one; noise is never the cause; warnings only when nothing else was printed.
_ERROR_LINE = re.compile(r"^(ERROR|E|FATAL|fatal|error|Error)(\s*\[[^]]*\])?\s*:\s*\S")
_NOISE_LINE = re.compile(r"^(\[notice\]|\[DEPRECATION WARNING\]|Traceback \(most recent call last\):|File \")")
_WARNING_LINE = re.compile(r"^(WARNING|W|\[WARNING\]|DEPRECATION)\s*:|^\S*Warning: ")
# ansible.builtin.pip puts pip's output in msg only: "stdout: OUT\n:stderr: ERR" (its _fail)
_PIP_STDERR = "\n:stderr: "
# why pip found nothing on an index it could not reach (its "WARNING: Retrying ... after connection broken by")
_PIP_UNREACHABLE = re.compile(
    r"(Failed to establish a new connection: [^'\")]+|Read timed out[^'\")]*|"
    r"\[SSL: [A-Z_]+\][^'\")]*|Name or service not known|Temporary failure in name resolution)"
)
_PIP_NOTHING_FOUND = ("No matching distribution found", "Could not find a version that satisfies")
_MAX_LINE = 400


def failure_line(res: Mapping[str, Any]) -> str:
    """The cause of a failed (or unreachable) task's result, in one line.

    A command's cause is at the end of its output, not at the start (pip begins with "Looking in indexes: ..."):
    the last error line (``ERROR:``, ``E:``) of stderr, else of stdout, else the last line that is not noise (a
    traceback's exception, not its frames; not pip's ``[notice]``). A result with no output (``assert``, ``fail``,
    most modules) has its ``msg``, whose first line is the headline. The whole result stays in the run's
    artifacts (``FailedTask.details``).
    """
    msg = str(res.get("msg") or "")
    streams = [str(res.get(key) or "") for key in ("stderr", "module_stderr", "stdout", "module_stdout")]
    if _PIP_STDERR in msg or (msg.startswith("stdout: ") and not any(s.strip() for s in streams)):
        out, _, err = msg.partition(_PIP_STDERR)
        streams, msg = [err, out.removeprefix("stdout: ")], ""
    line = _cause(streams, msg)
    if line.removeprefix("ERROR: ").startswith(_PIP_NOTHING_FOUND):
        reasons = _PIP_UNREACHABLE.findall("\n".join(streams))
        if reasons:
            line += f" (the index was unreachable: {reasons[-1].strip()})"
    if not line:
        rc = res.get("rc")
        line = msg.strip().splitlines()[0] if msg.strip() else "failed"
        if rc not in (None, 0):
            line += f" (rc {rc})"
    return line if len(line) <= _MAX_LINE else line[: _MAX_LINE - 1] + "…"


_SSH_PREFIX = "Failed to connect to the host via ssh: "
_CHANGED_KEY = re.compile(r"^Host key for (?P<host>\S+) has changed", re.MULTILINE)
_OFFENDING_KEY = re.compile(r"^Offending \S+ key in (?P<where>\S+)", re.MULTILINE)


def unreachable_line(res: Mapping[str, Any]) -> str:
    """Why a host could not be reached, in one line: ssh's own cause rather than the first line of its stderr.

    ssh opens a changed host key with a banner of ``@`` characters, and a host key it cannot verify with warnings;
    the cause is the line that names the key (and the known_hosts line that holds the other one).
    """
    msg = str(res.get("msg") or "")
    changed = _CHANGED_KEY.search(msg)
    if changed:
        where = _OFFENDING_KEY.search(msg)
        known = f" (known_hosts holds another key at {where['where']})" if where else ""
        return (f"the host key of {changed['host']} has CHANGED since it was recorded{known}: Host key verification "
                "failed; if the host was reinstalled, remove the old key with ssh-keygen -R")  # fmt: skip
    if msg.startswith(_SSH_PREFIX):
        lines = [line.strip() for line in msg.removeprefix(_SSH_PREFIX).splitlines()]
        telling = [line for line in lines if line and not line.startswith(("@", "Warning: Permanently added"))]
        if telling:
            return failure_line({"msg": _SSH_PREFIX + " ".join(telling)})
    return failure_line(res)


def _cause(streams: list[str], msg: str) -> str:
    warnings = ""
    for text in streams:
        lines = [raw.strip() for raw in text.splitlines() if raw.strip()]
        errors = [line for line in lines if _ERROR_LINE.match(line)]
        if errors:
            return errors[-1]
        telling = [line for line in lines if not _NOISE_LINE.match(line)]
        plain = [line for line in telling if not _WARNING_LINE.match(line)]
        if plain:
            return plain[-1]
        warnings = warnings or (telling[-1] if telling else "")
    lines = [raw.strip() for raw in msg.splitlines() if raw.strip()]
    errors = [line for line in lines if _ERROR_LINE.match(line)]
    if errors:
        return errors[-1]
    if lines and msg not in _GENERIC_MSGS:
        return lines[0]
    return warnings


# what Ansible says when the cause is in the output (then a warning there says more than these)
_GENERIC_MSGS = {"non-zero return code", "MODULE FAILURE\nSee stdout/stderr for the exact error"}
