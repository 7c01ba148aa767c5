"""The verify table: the verdict and counts in its title, the reason under it, where each expectation came from.
Reports are the committed examples (docs/examples/verify-*.json: a real run on a host without a GPU, and the H200
captures with a plan record)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from rich.console import Console

from dlsetup.ui.verify import render_verify
from dlsetup.verify.report import VerifyReport

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples"


def rendered(name: str) -> str:
    console = Console(width=250, color_system=None, record=True)
    render_verify(console, VerifyReport.from_dict(json.loads((EXAMPLES / name).read_text())))
    return console.export_text()


def test_nothing_checked_is_its_own_verdict_with_a_reason() -> None:
    text = rendered("verify-localhost-no-gpu.json")
    assert "localhost: NOTHING CHECKED (0 ran: 0 passed, 0 failed; 20 skipped)" in text
    assert "PASSED" not in text
    assert "no NVIDIA GPU on PCI, no record of a provision (/etc/ansible/facts.d/dlsetup.fact)" in text


def test_each_check_says_where_its_expectation_came_from() -> None:
    text = rendered("verify-h200-record.json")
    assert "h200: FAILED (17 ran: 16 passed, 1 failed; 3 skipped)" in text
    assert re.search(r"driver\.branch\s.*pass\s.*580\s.*plan record\s.*580", text)
    assert re.search(r"gpu\.count\s.*pass\s.*1\s.*PCI\s", text)
    assert re.search(r"gpu\.memory\s.*pass\s.*140000\s.*--expect\s", text)
    assert "1 of 17 check(s) that ran failed: framework.jax" in text
