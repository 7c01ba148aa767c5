"""The one place that talks to ansible-runner.

Results are read from runner events and ``.stats``, never from Ansible's stdout. Every run gets its own
private data directory under the state dir (``$DLSETUP_STATE_DIR`` or ``~/.local/state/dlsetup``) so its
log (``artifacts/*/stdout``) and events stay for the user to read.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import ansible_runner
import yaml

from dlsetup import paths
from dlsetup.config.targets import TargetSet
from dlsetup.errors import ConfigError, DlsetupError, InterruptedRunError

KEEP_RUNS = 30
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


def state_dir() -> Path:
    base = os.environ.get("DLSETUP_STATE_DIR")
    if base:
        return Path(base)
    xdg = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(xdg) / "dlsetup"


def new_run_dir(kind: str) -> Path:
    runs = state_dir() / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    # oldest first by creation order (names can tie within one second)
    old = sorted((p for p in runs.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime_ns)
    for stale in old[: max(0, len(old) - KEEP_RUNS + 1)]:
        shutil.rmtree(stale, ignore_errors=True)
    # unique even for two runs of one kind within a second; mkdtemp makes it 0700 (the event log holds host
    # variables)
    return Path(tempfile.mkdtemp(prefix=f"{time.strftime('%Y%m%d-%H%M%S')}-{kind}-", dir=runs))


def _ensure_ansible_on_path() -> None:
    """ansible-runner looks up ansible-playbook/ansible-inventory on this process's PATH: make sure the ones
    installed next to dlsetup's interpreter are found even when its venv is not activated."""
    bin_dir = str(Path(sys.executable).parent)
    current = os.environ.get("PATH", "")
    if bin_dir not in current.split(os.pathsep):
        os.environ["PATH"] = bin_dir + os.pathsep + current if current else bin_dir


def list_inventory(path: Path) -> dict[str, Any]:
    """``ansible-inventory --list`` for the user's inventory; a broken inventory is a ConfigError."""
    _ensure_ansible_on_path()
    if not path.exists():
        raise ConfigError(f"inventory {path} does not exist")
    # a private data dir of our own: without one ansible-runner makes /tmp/.ansible-runner-* and leaves it there
    with tempfile.TemporaryDirectory(prefix="dlsetup-inventory-") as private:
        out, err = ansible_runner.get_inventory(
            action="list",
            inventories=[str(path.resolve())],
            response_format="json",
            quiet=True,
            envvars=paths.ansible_env(),
            private_data_dir=private,
        )
    if not out:
        reason = _first_error_line(err) or "ansible-inventory returned nothing"
        raise ConfigError(f"invalid inventory {path}: {reason}")
    if isinstance(out, dict):
        return out
    try:
        return dict(json.loads(out))
    except json.JSONDecodeError:
        raise ConfigError(f"invalid inventory {path}: {_first_error_line(err) or out[:200]}") from None


def _first_error_line(text: str | None) -> str:
    for raw in (text or "").splitlines():
        line = raw.strip()
        if line and not line.startswith("[WARNING]"):
            return line.removeprefix("[ERROR]: ").strip()
    return ""


def _inventory_sources(targets: TargetSet, run_dir: Path) -> list[str]:
    sources: list[str] = []
    if targets.inventory_path is not None:
        sources.append(str(targets.inventory_path.resolve()))
    adhoc = targets.adhoc_inventory()
    if adhoc:
        inv_dir = run_dir / "inventory"
        inv_dir.mkdir(exist_ok=True)
        adhoc_path = inv_dir / "dlsetup-hosts.yml"
        adhoc_path.write_text(yaml.safe_dump(adhoc, sort_keys=False))
        sources.append(str(adhoc_path))
    return sources


@contextlib.contextmanager
def _stop_on_signal() -> Iterator[list[int]]:
    """While a playbook runs, SIGINT and SIGTERM are recorded in the list yielded instead of acted on at once.

    The list is ansible-runner's cancel callback: ansible-runner then kills ansible-playbook's process group and
    the run ends as "canceled". Without a callback of ours, ansible-runner installs handlers of its own for both
    signals and never restores them: an interrupted run surfaced as an internal error (exit 1), and a Ctrl-C
    after the first run (planning, verify) was ignored.
    """
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield received
        return

    def record(signum: int, frame: object) -> None:
        received.append(signum)

    previous = {signum: signal.signal(signum, record) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield received
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)


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
    """
    _ensure_ansible_on_path()
    run_dir = new_run_dir(kind)
    sources = _inventory_sources(targets, run_dir)
    if host_extravars:
        per_host = run_dir / "inventory" / "dlsetup-plans.yml"
        per_host.parent.mkdir(exist_ok=True)
        per_host.write_text(
            yaml.safe_dump({"all": {"hosts": {h: dict(v) for h, v in host_extravars.items()}}}, sort_keys=False)
        )
        sources.append(str(per_host))
    result = RunResult(status="unknown", rc=-1, run_dir=run_dir)

    def handle(event: dict[str, Any]) -> bool:
        _collect(result, event)
        if on_event is not None:
            on_event(event)
        return True

    cmdline = []
    if check:
        cmdline.append("--check")
    if diff:
        cmdline.append("--diff")
    passwords: dict[str, str] = {}
    if become_password is not None:
        # answered through ansible-runner's pexpect prompt handling: never written to the run dir or a log
        cmdline.append("--ask-become-pass")
        passwords[BECOME_PROMPT] = become_password
    with _stop_on_signal() as signals:
        runner = ansible_runner.run(
            private_data_dir=str(run_dir),
            playbook=str(paths.playbook(playbook)),
            inventory=sources,
            limit=",".join(targets.names),
            extravars=dict(extravars or {}),
            envvars=paths.ansible_env(),
            cmdline=" ".join(cmdline) or None,
            tags=",".join(tags) or None,
            forks=forks or max(5, len(targets.names)),
            quiet=True,
            event_handler=handle,
            suppress_env_files=True,
            passwords=passwords or None,
            cancel_callback=lambda: bool(signals),
        )
    result.status = str(runner.status)
    result.rc = int(runner.rc if runner.rc is not None else -1)
    if signals:
        raise InterruptedRunError(
            signals[0],
            f"{signal.Signals(signals[0]).name} stopped the {kind} run on {', '.join(targets.names)}; "
            f"log: {result.log_path}",
            hint="a task already started on a host may still finish there; run the same command again to converge",
        )
    for host, stat in _stats(runner.stats).items():
        result.stats[host] = stat
    if result.status not in {"successful", "failed"} and not result.stats:
        raise DlsetupError(f"ansible run {result.status} (rc {result.rc}); log: {result.log_path}")
    return result


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


def _collect(result: RunResult, event: Mapping[str, Any]) -> None:
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
        failed = FailedTask(task, failure_line(res), action, _event_file(result.run_dir, event))
        result.failed_tasks.setdefault(host, []).append(failed)
    elif name == "runner_on_unreachable":
        result.unreachable[host] = failure_line(res)


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
