"""The JSON documents a report is built from, recognised by their shape and merged per host. Pure: no I/O.

Each command's ``--format json`` document is ``{"hosts": {NAME: entry}}`` (``docs/architecture.md``); what an entry
holds says which command wrote it: a facts entry has ``os``, ``machine``, ``cpu``, ``gpus`` and ``driver``, a
verify entry ``checks``, a diff entry ``drifted`` and ``changes``, a plan entry ``driver``, ``cuda``, ``pytorch``
and ``jax``; a provision document also has ``check`` and ``changed`` at its top. An offline plan
(``dlsetup plan --os ...``) is one plan object without a host. An entry ``{"error": {...}}`` is a host the command
could not do (it becomes a problem shown on the host's page), as is a facts document's ``errors``.

Entries are read with the models of the stages that wrote them (:class:`~dlsetup.facts.model.HostFacts`,
:class:`~dlsetup.verify.report.HostReport`); the plan, the drift and a provision's host entry, which the report
only shows, with the lenient models below (a host's record may come from another dlsetup version). Anything that is
not such a document is bad input (:class:`~dlsetup.errors.ConfigError`, exit 2), naming the file and the path.
A controller's ``history.jsonl`` (one baseline a line) gives the baseline history of the host its directory names.

:func:`live_inputs` makes the same :class:`HostInputs` from what a run gathered from a host now.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

from pydantic import ConfigDict, Field, JsonValue, TypeAdapter, ValidationError
from pydantic.dataclasses import dataclass as model

from dlsetup.errors import ConfigError, DlsetupError
from dlsetup.facts.baseline import HardwareBaseline
from dlsetup.facts.drift import Drift, hardware_drift
from dlsetup.facts.model import HostFacts
from dlsetup.facts.record import HostRecord
from dlsetup.verify.report import HostReport

DocumentKind = Literal["facts", "plan", "verify", "diff", "provision", "history"]
# where a host's plan came from: its record (the plan the last provision applied), `dlsetup plan` (what a provision
# would apply now), or a provision's document (the plan it applied)
PlanSource = Literal["record", "plan", "provision"]
Part = Literal["facts", "plan", "verify", "drift", "history"]

_LENIENT = ConfigDict(extra="ignore")


@model(frozen=True, config=_LENIENT)
class PlannedGpuPart:
    name: str | None = None
    pci_id: str | None = None
    architecture: str | None = None
    compute_capability: str | None = None


@model(frozen=True, config=_LENIENT)
class DriverPart:
    source: str | None = None
    branch: str | None = None
    flavor: str | None = None
    version: str | None = None
    packages: tuple[str, ...] = ()


@model(frozen=True, config=_LENIENT)
class CudaPart:
    version: str | None = None
    source: str | None = None
    packages: tuple[str, ...] = ()


@model(frozen=True, config=_LENIENT)
class LibraryPart:
    version: str | None = None
    packages: tuple[str, ...] = ()


@model(frozen=True, config=_LENIENT)
class PytorchPart:
    version: str | None = None
    variant: str | None = None
    index_url: str | None = None
    cuda: str | None = None


@model(frozen=True, config=_LENIENT)
class JaxPart:
    extra: str | None = None
    index_url: str | None = None


@model(frozen=True, config=_LENIENT)
class AppliedPlan:
    """What a report shows of a Plan JSON (``docs/plan.md``): the OS, the GPUs it was made for, the driver, CUDA,
    cuDNN, NCCL, PyTorch and JAX, and its warnings."""

    os: str | None = None
    gpus: tuple[PlannedGpuPart, ...] = ()
    driver: DriverPart = Field(default_factory=DriverPart)
    cuda: CudaPart = Field(default_factory=CudaPart)
    cudnn: LibraryPart = Field(default_factory=LibraryPart)
    nccl: LibraryPart = Field(default_factory=LibraryPart)
    pytorch: PytorchPart = Field(default_factory=PytorchPart)
    jax: JaxPart = Field(default_factory=JaxPart)
    warnings: tuple[str, ...] = ()
    wheelhouse: str | None = None


@model(frozen=True, config=_LENIENT)
class DriftChange:
    """One hardware change since the baseline, as ``dlsetup diff --format json`` carries it."""

    kind: str
    subject: str
    text: str
    before: JsonValue = None
    after: JsonValue = None


@model(frozen=True, config=_LENIENT)
class HostDrift:
    """A host's drift: the hardware changes since its baseline (recorded at ``baseline_recorded_at``; ``None``: no
    baseline) and the plan changes they cause."""

    baseline_recorded_at: str | None = None
    drifted: bool = False
    changes: tuple[DriftChange, ...] = ()
    plan_changes: tuple[str, ...] = ()
    # a baseline was there to compare with (a diff entry says so by its date; a live run knows)
    has_baseline: bool = True

    @classmethod
    def of(cls, drift: Drift, plan_changes: Sequence[str] = ()) -> HostDrift:
        """The drift :mod:`dlsetup.facts.drift` computed for a host gathered now."""
        recorded = drift.baseline.recorded_at if drift.baseline is not None else None
        changes = tuple(DriftChange(c.kind, c.subject, c.text, c.before, c.after) for c in drift.changes)
        return cls(recorded, bool(changes or plan_changes), changes, tuple(plan_changes), drift.baseline is not None)


@model(frozen=True, config=_LENIENT)
class _ProvisionFailedTask:
    task: str
    message: str | None = None


@model(frozen=True, config=_LENIENT)
class _ProvisionHost:
    """A host entry of ``dlsetup provision --format json``: what a report shows of it."""

    plan: AppliedPlan
    drift: HostDrift | None = None
    plan_changes: tuple[str, ...] = ()
    verify: HostReport | None = None
    unreachable: str | None = None
    failed_tasks: tuple[_ProvisionFailedTask, ...] = ()
    reboot_required: bool = False


@dataclasses.dataclass(frozen=True)
class HistoryEntry:
    """One line of the controller's ``history.jsonl``: a baseline, when it was recorded and by which run."""

    baseline: HardwareBaseline
    recorded_at: str | None = None
    run: str | None = None

    @classmethod
    def parse_all(cls, entries: Iterable[Mapping[str, Any]]) -> tuple[HistoryEntry, ...]:
        """The entries :func:`dlsetup.facts.baseline.history` read, oldest first; one without a baseline is left
        out."""
        found = []
        for entry in entries:
            baseline = HardwareBaseline.parse(entry.get("baseline"))
            if baseline is None:
                continue
            stamp, run = entry.get("recorded_at"), entry.get("run")
            found.append(
                cls(
                    baseline,
                    stamp if isinstance(stamp, str) else baseline.recorded_at,
                    run if isinstance(run, str) else None,
                )
            )
        return tuple(found)


@dataclasses.dataclass(frozen=True)
class HostInputs:
    """Everything known of one host: its facts, its plan (and where it came from), its verify report, its drift and
    baseline history, the problems the documents or the run gave instead of a part, and where each part came
    from (``sources``: part → file or run)."""

    name: str
    facts: HostFacts | None = None
    plan: AppliedPlan | None = None
    plan_from: PlanSource | None = None
    verify: HostReport | None = None
    drift: HostDrift | None = None
    history: tuple[HistoryEntry, ...] = ()
    problems: tuple[str, ...] = ()
    sources: tuple[tuple[Part, str], ...] = ()

    def source_of(self, part: Part) -> str | None:
        return next((where for p, where in reversed(self.sources) if p == part), None)


@dataclasses.dataclass(frozen=True)
class Document:
    """One recognised document: its kind, its file, what it says of each host; an offline plan has no host."""

    kind: DocumentKind
    where: str
    hosts: dict[str, HostInputs]
    offline_plan: AppliedPlan | None = None


_HOST_REPORT: TypeAdapter[HostReport] = TypeAdapter(HostReport)
_PLAN: TypeAdapter[AppliedPlan] = TypeAdapter(AppliedPlan)


def parse_plan(data: object) -> AppliedPlan | None:
    """A Plan JSON (a host's record's, which an older dlsetup may have written) as far as a report shows it, or
    ``None`` when it is not one."""
    try:
        return _PLAN.validate_python(data)
    except ValidationError:
        return None


_DRIFT: TypeAdapter[HostDrift] = TypeAdapter(HostDrift)
_PROVISION: TypeAdapter[_ProvisionHost] = TypeAdapter(_ProvisionHost)

_FACTS_KEYS = frozenset(("os", "machine", "cpu", "gpus", "driver"))
_PLAN_KEYS = frozenset(("driver", "cuda", "pytorch", "jax"))
_DIFF_KEYS = frozenset(("drifted", "changes"))
KINDS_TEXT = "dlsetup facts, plan, verify, diff or provision --format json, or a controller's history.jsonl"


def _entry_kind(entry: Mapping[str, Any]) -> DocumentKind | None:
    keys = set(entry)
    if keys >= _FACTS_KEYS:
        return "facts"
    if "checks" in keys:
        return "verify"
    if keys >= _DIFF_KEYS:
        return "diff"
    if keys >= _PLAN_KEYS:
        return "plan"
    return None


def _invalid(where: str, path: str, exc: ValidationError) -> ConfigError:
    error = exc.errors()[0]
    loc = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error["loc"])
    return ConfigError(f"{where}: {path}{loc}: {error['msg'].lower()}")


def _error_text(entry: Mapping[str, Any]) -> str:
    error = entry.get("error")
    if isinstance(error, Mapping):
        return str(error.get("message") or error.get("kind") or "failed")
    return str(error)


def _is_error(entry: Mapping[str, Any]) -> bool:
    return set(entry) == {"error"}


def recognise_history(entries: Sequence[object], where: str, host: str | None) -> Document:
    """The lines of a controller's ``history.jsonl`` (``STATE_DIR/hosts/NAME/``: ``host`` is NAME, the name of its
    directory) as the baseline history of that host."""
    if not all(isinstance(e, Mapping) and isinstance(e.get("baseline"), Mapping) for e in entries):
        raise ConfigError(f"{where}: not a document of {KINDS_TEXT} (lines without a baseline)")
    if not host:
        raise ConfigError(f"{where}: a baseline history names its host by its directory (hosts/NAME/history.jsonl)")
    history = HistoryEntry.parse_all(e for e in entries if isinstance(e, Mapping))
    if len(history) != len(entries):
        raise ConfigError(f"{where}: a line's baseline is not a hardware baseline (docs/schemas/baseline.schema.json)")
    return Document("history", where, {host: HostInputs(host, history=history, sources=(("history", where),))})


def recognise(data: object, where: str, *, history_host: str | None = None) -> Document:
    """The document ``data`` (read from ``where``) as one of the commands' JSON documents, or a one-line baseline
    history of ``history_host``; anything else raises :class:`ConfigError` naming ``where``."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: not a document of {KINDS_TEXT} (a JSON {type(data).__name__}, not an object)")
    if "hosts" not in data and "baseline" in data:
        return recognise_history([data], where, history_host)
    if "hosts" not in data:
        if isinstance(data.get("os"), str) and set(data) >= _PLAN_KEYS:
            try:
                plan = _PLAN.validate_python(data)
            except ValidationError as exc:
                raise _invalid(where, "plan", exc) from None
            return Document("plan", where, {}, offline_plan=plan)
        if _is_error(data):
            raise ConfigError(f"{where}: the output of a command that failed: {_error_text(data)}")
        raise ConfigError(f"{where}: not a document of {KINDS_TEXT} (no hosts)")
    hosts = data["hosts"]
    if not isinstance(hosts, Mapping) or not all(isinstance(e, Mapping) for e in hosts.values()):
        raise ConfigError(f"{where}: hosts: expected an object of host entries")
    provision = "check" in data and "changed" in data
    kinds = {_entry_kind(e) for e in hosts.values() if not _is_error(e)}
    if provision:
        kind: DocumentKind = "provision"
    elif len(kinds) > 1:
        raise ConfigError(f"{where}: not a document of {KINDS_TEXT} (its host entries have different shapes)")
    elif None in kinds:
        name = next(n for n, e in hosts.items() if not _is_error(e) and _entry_kind(e) is None)
        raise ConfigError(f"{where}: not a document of {KINDS_TEXT} (hosts.{name} is none of their host entries)")
    elif kinds:
        (found,) = kinds
        assert found is not None
        kind = found
    elif "errors" in data:
        kind = "facts"  # every host unreachable
    else:
        kind = "plan" if hosts else "facts"
    read = {str(name): _read_entry(kind, str(name), entry, where) for name, entry in hosts.items()}
    errors = data.get("errors")
    if kind == "facts" and isinstance(errors, Mapping):
        for name, why in errors.items():
            known = read.get(str(name), HostInputs(str(name)))
            read[str(name)] = dataclasses.replace(known, problems=(*known.problems, f"facts ({where}): {why}"))
    return Document(kind, where, read)


def _read_entry(kind: DocumentKind, name: str, entry: Mapping[str, Any], where: str) -> HostInputs:
    path = f"hosts.{name}"
    if _is_error(entry):
        return HostInputs(name, problems=(f"{kind} ({where}): {_error_text(entry)}",))
    try:
        if kind == "facts":
            try:
                facts = HostFacts.from_dict(entry)
            except DlsetupError as exc:
                raise ConfigError(f"{where}: {path}: {exc.message.removeprefix('facts.')}") from None
            return HostInputs(name, facts=facts, sources=(("facts", where),))
        if kind == "verify":
            return HostInputs(name, verify=_HOST_REPORT.validate_python(entry), sources=(("verify", where),))
        if kind == "diff":
            drift = _DRIFT.validate_python({**entry, "has_baseline": entry.get("baseline_recorded_at") is not None})
            return HostInputs(name, drift=drift, sources=(("drift", where),))
        if kind == "plan":
            plan = _PLAN.validate_python(entry)
            return HostInputs(name, plan=plan, plan_from="plan", sources=(("plan", where),))
        return _provision_entry(name, _PROVISION.validate_python(entry), where)
    except ValidationError as exc:
        raise _invalid(where, path, exc) from None


def _provision_entry(name: str, entry: _ProvisionHost, where: str) -> HostInputs:
    sources: list[tuple[Part, str]] = [("plan", where)]
    drift = None
    if entry.drift is not None:
        drift = dataclasses.replace(
            entry.drift,
            plan_changes=entry.plan_changes,
            drifted=entry.drift.drifted or bool(entry.plan_changes),
            has_baseline=entry.drift.baseline_recorded_at is not None,
        )
        sources.append(("drift", where))
    if entry.verify is not None:
        sources.append(("verify", where))
    problems = [f"provision ({where}): unreachable: {entry.unreachable}"] if entry.unreachable else []
    problems += [f"provision ({where}): {t.task} failed: {t.message or ''}".rstrip(": ") for t in entry.failed_tasks]
    if entry.reboot_required:
        problems.append(f"provision ({where}): a reboot is required")
    return HostInputs(
        name,
        plan=entry.plan,
        plan_from="provision",
        verify=entry.verify,
        drift=drift,
        problems=tuple(problems),
        sources=tuple(sources),
    )


def combine(earlier: HostInputs, later: HostInputs) -> HostInputs:
    """One host's inputs from two documents: each part the later one has replaces the earlier one's."""
    return HostInputs(
        earlier.name,
        facts=later.facts if later.facts is not None else earlier.facts,
        plan=later.plan if later.plan is not None else earlier.plan,
        plan_from=later.plan_from if later.plan is not None else earlier.plan_from,
        verify=later.verify if later.verify is not None else earlier.verify,
        drift=later.drift if later.drift is not None else earlier.drift,
        history=later.history or earlier.history,
        problems=(*earlier.problems, *later.problems),
        sources=(*earlier.sources, *later.sources),
    )


def merge(documents: Sequence[Document]) -> dict[str, HostInputs]:
    """The documents merged per host name, hosts in the order they first appear; where two documents give the same
    part of a host (two verify reports), the later one wins. An offline plan (no host) belongs to the one host the
    other documents name; with none or several it is bad input."""
    hosts: dict[str, HostInputs] = {}
    for document in documents:
        for name, inputs in document.hosts.items():
            hosts[name] = combine(hosts[name], inputs) if name in hosts else inputs
    for document in documents:
        if document.offline_plan is None:
            continue
        if len(hosts) != 1:
            named = f"{len(hosts)} hosts" if hosts else "no host"
            raise ConfigError(
                f"{document.where}: an offline plan names no host, and the other documents name {named}: give it "
                "with the documents of one host, or give `dlsetup plan HOST --format json` instead"
            )
        (name,) = hosts
        hosts[name] = combine(
            hosts[name],
            HostInputs(name, plan=document.offline_plan, plan_from="plan", sources=(("plan", document.where),)),
        )
    if not hosts:
        where = ", ".join(d.where for d in documents)
        raise ConfigError(f"{where}: the documents name no host")
    return hosts


def live_inputs(
    name: str,
    *,
    facts: HostFacts | None,
    record: HostRecord | None,
    baseline: HardwareBaseline | None,
    verify: HostReport | None,
    history: Iterable[Mapping[str, Any]] = (),
    problem: str | None = None,
) -> HostInputs:
    """What a run that gathered ``name`` now knows of it: its facts, its record (the plan its last provision
    applied), its drift against its ``baseline``, its verify report (if verify ran) and the controller's baseline
    ``history``; ``problem``: why its facts could not be read."""
    problems = [problem] if problem else []
    sources: list[tuple[Part, str]] = []
    plan = None
    if record is not None and record.plan is not None:
        plan = parse_plan(record.plan)
        if plan is None:
            problems.append("the host's record holds a plan this dlsetup cannot read (an older version's?)")
        else:
            sources.append(("plan", f"the record on {name}"))
    drift = None
    if facts is not None:
        sources.append(("facts", f"facts gathered from {name} now"))
        drift = HostDrift.of(hardware_drift(baseline, facts))
        sources.append(("drift", f"the baseline of {name} against its facts now"))
    if verify is not None:
        sources.append(("verify", f"verify run on {name} now"))
    entries = HistoryEntry.parse_all(history)
    if entries:
        sources.append(("history", "this controller's baseline history"))
    return HostInputs(
        name,
        facts=facts,
        plan=plan,
        plan_from="record" if plan is not None else None,
        verify=verify,
        drift=drift,
        history=HistoryEntry.parse_all(history),
        problems=tuple(problems),
        sources=tuple(sources),
    )
