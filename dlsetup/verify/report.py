"""The verify report: per host, its verdict, the counts of its checks and every check's result (``docs/verify.md``,
``docs/schemas/verify.schema.json``).

A host's verdict is ``passed`` (checks ran and none failed), ``failed`` (one did) or ``nothing_checked`` (every
check was skipped: nothing was expected of the host and nothing could be checked). Only ``passed`` passes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import ConfigDict, TypeAdapter, ValidationError, model_validator
from pydantic.dataclasses import dataclass

from dlsetup.verify.checks import CheckResult, summarize

Verdict = Literal["passed", "failed", "nothing_checked"]
_CHECKS: TypeAdapter[tuple[CheckResult, ...]] = TypeAdapter(tuple[CheckResult, ...])
VERDICT_TEXT: dict[str, str] = {"passed": "PASSED", "failed": "FAILED", "nothing_checked": "NOTHING CHECKED"}


@dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class CheckCounts:
    """How many checks ran (``passed`` + ``failed`` + ``warned``) and how many were skipped."""

    ran: int
    passed: int
    failed: int
    warned: int
    skipped: int

    @classmethod
    def of(cls, checks: Iterable[CheckResult]) -> CheckCounts:
        statuses = [c.status for c in checks]
        passed, failed, warned = statuses.count("pass"), statuses.count("fail"), statuses.count("warn")
        return cls(passed + failed + warned, passed, failed, warned, statuses.count("skip"))


def verdict_of(checks: Iterable[CheckResult]) -> Verdict:
    results = tuple(checks)
    if not summarize(results):
        return "failed"
    return "passed" if CheckCounts.of(results).ran else "nothing_checked"


def _summary(verdict: Verdict, counts: CheckCounts, checks: tuple[CheckResult, ...]) -> str:
    if verdict == "failed":
        failed = ", ".join(c.id for c in checks if c.status == "fail")
        return f"{counts.failed} of {counts.ran} check(s) that ran failed: {failed}"
    if verdict == "nothing_checked":
        return "every check was skipped: nothing was expected of this host and nothing could be checked"
    warned = f", {counts.warned} warned" if counts.warned else ""
    return f"{counts.ran} check(s) ran, none failed ({counts.passed} passed{warned}); {counts.skipped} skipped"


@dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class HostReport:
    """One host's checks, in report order, with its verdict, a one-line reason and the counts (derived from the
    checks: a report whose verdict or counts disagree with its checks is refused). It passed when checks ran and
    none failed."""

    passed: bool
    verdict: Verdict
    reason: str
    counts: CheckCounts
    checks: tuple[CheckResult, ...]

    @model_validator(mode="before")
    @classmethod
    def _derived(cls, data: Any) -> Any:
        """A report entry that carries only ``passed`` and ``checks`` (as earlier versions wrote it) gets its verdict,
        reason and counts from its checks."""
        if isinstance(data, Mapping) and "checks" in data:
            filled = dict(data)
            try:
                checks = _CHECKS.validate_python(data["checks"])
            except ValidationError:
                return data  # the checks' own errors are what validation reports
            verdict = filled.setdefault("verdict", verdict_of(checks))
            counts = CheckCounts.of(checks)
            filled.setdefault("counts", counts)
            filled.setdefault("passed", verdict == "passed")
            if verdict in VERDICT_TEXT:
                filled.setdefault("reason", _summary(verdict, counts, checks))
            return filled
        return data

    @model_validator(mode="after")
    def _consistent(self) -> HostReport:
        verdict = verdict_of(self.checks)
        if self.verdict != verdict:
            raise ValueError(f"verdict {self.verdict!r} disagrees with the checks ({verdict!r})")
        if self.passed != (verdict == "passed"):
            raise ValueError(f"passed={self.passed} disagrees with the verdict {verdict!r}")
        if self.counts != CheckCounts.of(self.checks):
            raise ValueError("counts disagree with the checks")
        return self

    @classmethod
    def of(cls, checks: Iterable[CheckResult], *, nothing_checked: str | None = None) -> HostReport:
        """The report of ``checks``; ``nothing_checked`` is the reason to give when every check was skipped."""
        results = tuple(checks)
        verdict = verdict_of(results)
        counts = CheckCounts.of(results)
        reason = _summary(verdict, counts, results)
        if verdict == "nothing_checked" and nothing_checked:
            reason = nothing_checked
        return cls(verdict == "passed", verdict, reason, counts, results)

    @classmethod
    def unreachable(cls, reason: str) -> HostReport:
        """The entry of a host that could not be checked at all."""
        check = CheckResult("host.reachable", "fail", True, False, reason)
        return cls(False, "failed", reason, CheckCounts.of([check]), (check,))


@dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class VerifyDocument:
    """``dlsetup verify --format json``: ``{"hosts": {NAME: {"passed", "verdict", "reason", "counts",
    "checks"}}}``."""

    hosts: dict[str, HostReport]


_DOCUMENT: TypeAdapter[VerifyDocument] = TypeAdapter(VerifyDocument)


class VerifyReport:
    """The report of one verification, with the log of the suite run that produced it (``None``: no suite ran)."""

    def __init__(self, hosts: Mapping[str, HostReport], log_path: Path | None) -> None:
        self.hosts = dict(hosts)
        self.log_path = log_path

    @property
    def passed(self) -> bool:
        return all(h.passed for h in self.hosts.values())

    @property
    def failed_hosts(self) -> list[str]:
        """The hosts that did not pass: a check failed, or nothing could be checked."""
        return [name for name, host in self.hosts.items() if not host.passed]

    def to_dict(self) -> dict[str, Any]:
        dumped: dict[str, Any] = _DOCUMENT.dump_python(VerifyDocument(self.hosts), mode="json")
        return dumped

    @classmethod
    def from_dict(cls, data: object, log_path: Path | None = None) -> VerifyReport:
        return cls(_DOCUMENT.validate_python(data).hosts, log_path)


def host_report_dict(report: HostReport) -> dict[str, Any]:
    """One host's entry as the report JSON carries it."""
    dumped: dict[str, Any] = _HOST.dump_python(report, mode="json")
    return dumped


_HOST: TypeAdapter[HostReport] = TypeAdapter(HostReport)


def verify_json_schema() -> dict[str, Any]:
    """The JSON Schema of the verify report (``docs/schemas/verify.schema.json`` is generated from it)."""
    return _DOCUMENT.json_schema(mode="serialization")
