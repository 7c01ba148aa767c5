"""The verify report: per host, whether it passed and every check's result (``docs/verify.md``,
``docs/schemas/verify.schema.json``)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pydantic import ConfigDict, TypeAdapter
from pydantic.dataclasses import dataclass

from dlsetup.verify.checks import CheckResult, summarize


@dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class HostReport:
    """One host's checks, in report order; it passed when none failed."""

    passed: bool
    checks: tuple[CheckResult, ...]

    @classmethod
    def of(cls, checks: Iterable[CheckResult]) -> HostReport:
        results = tuple(checks)
        return cls(summarize(results), results)

    @classmethod
    def unreachable(cls, reason: str) -> HostReport:
        """The entry of a host that could not be checked at all."""
        return cls(False, (CheckResult("host.reachable", "fail", True, False, reason),))


@dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class VerifyDocument:
    """``dlsetup verify --format json``: ``{"hosts": {NAME: {"passed", "checks"}}}``."""

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
        return [name for name, host in self.hosts.items() if not host.passed]

    def to_dict(self) -> dict[str, Any]:
        dumped: dict[str, Any] = _DOCUMENT.dump_python(VerifyDocument(self.hosts), mode="json")
        return dumped

    @classmethod
    def from_dict(cls, data: object, log_path: Path | None = None) -> VerifyReport:
        return cls(_DOCUMENT.validate_python(data).hosts, log_path)


def verify_json_schema() -> dict[str, Any]:
    """The JSON Schema of the verify report (``docs/schemas/verify.schema.json`` is generated from it)."""
    return _DOCUMENT.json_schema(mode="serialization")
