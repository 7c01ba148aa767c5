"""docs/reliability.md is the rendering of the reliability suite's table (tests/reliability/cases.py), and the table
is one the suite can run: what CI checks of issue 10's reliability suite without a host."""

from __future__ import annotations

import importlib
import re
import sys
from pathlib import Path
from types import ModuleType

RELIABILITY = Path(__file__).resolve().parents[1] / "reliability"


def _module(name: str) -> ModuleType:
    if str(RELIABILITY) not in sys.path:
        sys.path.insert(0, str(RELIABILITY))
    return importlib.import_module(name)  # the modules the suite imports, by the same names


def test_the_committed_table_is_current() -> None:
    render = _module("render")
    assert render.DOC.read_text() == render.render(), "run: python -m tests.reliability.render"


def test_the_table_is_one_the_suite_runs() -> None:
    cases = _module("cases")
    by_id = cases.by_id()
    assert len(by_id) >= 60
    areas = {c.area for c in cases.CASES}
    assert areas == set(cases.AREAS), "every area of the issue has cases, and no case is outside them"
    for case in cases.CASES:
        assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", case.id), case.id
        assert case.argv and case.argv[0] in {"facts", "plan", "diff", "verify", "provision", "gpus", "init"}, case.id
        assert (case.cause is None) == (case.expect_code == 0), f"{case.id}: a failure names its cause"
        if case.cause is not None:
            re.compile(case.cause)
        names = {m.group(1) for arg in case.argv for m in re.finditer(r"\{(\w+)\}", arg)}
        given = {"inv", "host", "addr", "tmp", "state"} | ({"bad", "vpass"} if case.setup is not None else set())
        assert names <= given, f"{case.id}: {sorted(names - given)} are filled in by nobody"
    signals = {(c.interrupt.signum, c.interrupt.phase, c.argv[0]) for c in cases.CASES if c.interrupt}
    assert len(signals) == 8, "SIGINT and SIGTERM in each of facts, plan, preflight and verify"
