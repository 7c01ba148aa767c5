"""`dlsetup report`'s page in a real browser: headless Chromium (Debian's `chromium`) renders the report of the
rigs of tests/fixtures/report, dumps the DOM it built and takes a screenshot, while its network log records every
request. The DOM holds every GPU, the state of each link and the bars; the screenshot is a real PNG; and the page
made no request: each URL in the network log is a local one (file:, data:, about:, chrome:) or one Chromium makes
for itself, whatever page it shows (its update check, the sign-in account list: ``initiator`` "not an origin",
not the page's site; no flag turns them off), which the test's own page with external references proves it tells
apart. Everything Chromium writes stays under the test's tmp_path (its TMPDIR too).

Skips where `chromium` is not on PATH, unless ``DLSETUP_REQUIRE_INTEGRATION=1`` (CI), then it fails.

``python tests/modules/test_report_browser.py`` writes docs/report.png: the PCIe-switch rig's page (two GTX 1080 Ti,
one trained down to x8, with their bandwidth bars).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
FIX = REPO / "tests" / "fixtures" / "report"
DOCUMENTS = [FIX / f"{kind}-rigs.json" for kind in ("facts", "plan", "verify", "diff")]
STATES = {
    "0000:04:00.0": "fine",
    "0000:05:00.0": "trained-down",
    "0000:01:00.0": "slot-limited",
    "0000:03:00.0": "slot-limited",
}
LOCAL_SCHEMES = ("file", "data", "about", "chrome", "chrome-error", "blob")
# the flags every run gets: no sandbox (root in CI), no GPU, nothing Chromium need not do on its own
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
_URL = re.compile(r"\b([a-z][a-z0-9+.-]*)://([^\s\"'\\<>/?#]*)")


def chromium() -> str:
    found = shutil.which("chromium")
    if found is None:
        why = "chromium is not on PATH (Debian: apt-get install chromium; tests/run.sh installs it as root)"
        if os.environ.get("DLSETUP_REQUIRE_INTEGRATION") == "1":
            pytest.fail(f"DLSETUP_REQUIRE_INTEGRATION=1 but {why}")
        pytest.skip(why)
    return found


def render(
    browser: str, page: Path, work: Path, *, screenshot: Path | None = None, extra: Sequence[str] = ()
) -> tuple[str, dict[str, Any]]:
    """Open ``page`` in headless Chromium: its DOM after rendering, and the network log of the run."""
    work.mkdir(parents=True, exist_ok=True)
    (work / "t").mkdir(exist_ok=True)
    netlog = work / "net.json"
    args = [
        browser,
        *FLAGS,
        f"--user-data-dir={work / 'profile'}",
        f"--log-net-log={netlog}",
        # nothing leaves this machine, whatever Chromium asks for itself (its requests still show in the log)
        "--host-resolver-rules=MAP * ~NOTFOUND",
        *extra,
    ]
    if screenshot is not None:
        args += [f"--screenshot={screenshot}", "--window-size=1280,2000"]
    args += ["--dump-dom", page.as_uri()]
    # TMPDIR relative to the run's directory: Chromium's singleton socket lives there, and a unix socket's path
    # must stay under 108 bytes, which a pytest tmp_path can pass
    env = {**os.environ, "TMPDIR": "t", "HOME": str(work / "home")}
    done = subprocess.run(args, capture_output=True, text=True, env=env, cwd=work, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout, json.loads(netlog.read_text())


def requests(netlog: dict[str, Any]) -> tuple[list[str], list[str]]:
    """The URLs of the requests made for a page (its site, ``file://``, in their network isolation key, or an
    initiator that is an origin) and of those Chromium made for itself."""
    types = {number: name for name, number in netlog["constants"]["logEventTypes"].items()}
    page: list[str] = []
    own: list[str] = []
    for event in netlog["events"]:
        params = event.get("params") or {}
        if types.get(event["type"]) != "URL_REQUEST_START_JOB" or "url" not in params:
            continue
        for_itself = params.get("initiator") == "not an origin" and "file://" not in params.get(
            "network_isolation_key", ""
        )
        (own if for_itself else page).append(params["url"])
    return page, own


def external(urls: Sequence[str]) -> list[str]:
    return [u for u in urls if u.split(":", 1)[0] not in LOCAL_SCHEMES]


def urls_in(netlog: dict[str, Any]) -> list[str]:
    """Every URL an event of the log names (``url``, ``original_url``, a redirect's ``location``)."""
    keys = ("url", "original_url", "location", "new_location")
    return [
        params[key]
        for event in netlog["events"]
        for params in [event.get("params") or {}]
        for key in keys
        if isinstance(params.get(key), str)
    ]


def origin(url: str) -> str:
    match = _URL.match(url)
    assert match is not None, url
    return f"{match.group(1)}://{match.group(2)}"


def tmp_leftovers() -> set[str]:
    """What Chromium leaves in /tmp when its TMPDIR is not set (``.org.chromium.Chromium.XXXXXX``)."""
    return {p.name for pattern in (".org.chromium.*", ".com.google.Chrome.*", "chromium*")
            for p in Path("/tmp").glob(pattern)}  # fmt: skip


def write_report(out: Path, documents: Sequence[Path | str], cwd: Path | None = None) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "dlsetup", "report", "--from-json", *map(str, documents), "-o", str(out)],
        capture_output=True, text=True, timeout=120, check=False, cwd=cwd,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


def test_the_report_renders_in_chromium_without_a_request(tmp_path: Path) -> None:
    browser = chromium()
    before = tmp_leftovers()
    report = tmp_path / "report.html"
    write_report(report, DOCUMENTS)
    shot = tmp_path / "r.png"
    dom, netlog = render(browser, report, tmp_path / "chromium", screenshot=shot)

    # the DOM Chromium built: every GPU's link with its state, its row and its bars
    for bus, state in STATES.items():
        (line,) = re.findall(rf'<path class="link link-([a-z-]+)"[^>]*data-gpu="{re.escape(bus)}"', dom)
        assert line == state, bus
        assert f'<tr data-gpu="{bus}">' in dom
        (chart,) = re.findall(rf'<svg class="bandwidth"[^>]*data-gpu="{re.escape(bus)}"[^>]*>(.*?)</svg>', dom, re.S)
        assert 'class="bar bar-measured"' in chart and 'class="bar bar-theoretical"' in chart
    assert dom.count('class="link link-trained-down"') == 1
    assert dom.count('class="link link-slot-limited"') == 2
    assert "<script" not in dom

    # a real PNG of the window
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert data[12:16] == b"IHDR"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (1280, 2000)
    assert len(data) > 20_000  # not a blank page

    # no request for the page; whatever else the log names is what Chromium asked for itself
    page, own = requests(netlog)
    assert external(page) == [], page
    assert set(external(urls_in(netlog))) <= set(own), own

    # everything Chromium wrote is under tmp_path: nothing of its own in /tmp
    assert tmp_leftovers() <= before


def test_the_request_check_sees_a_page_that_makes_requests(tmp_path: Path) -> None:
    """The control: a page with external references (no CSP) is seen asking for each of them."""
    browser = chromium()
    page = tmp_path / "leaky.html"
    page.write_text(
        '<!DOCTYPE html><html><head><link rel="stylesheet" href="http://192.0.2.1/a.css">'
        "<style>body { background: url(http://192.0.2.2/b.png) }</style></head>"
        '<body><img src="https://192.0.2.3/c.png"><svg><image href="http://192.0.2.4/d.png"/></svg></body></html>'
    )
    _, netlog = render(browser, page, tmp_path / "chromium")
    made, own = requests(netlog)
    assert not set(external(urls_in(netlog))) <= set(own)
    assert {origin(u) for u in external(made)} == {
        f"{s}://192.0.2.{n}" for s, n in (("http", 1), ("http", 2), ("https", 3), ("http", 4))
    }


def write_docs_png(target: Path = REPO / "docs" / "report.png") -> Path:
    """docs/report.png: the PCIe-switch rig's page (its documents alone), at 80 % so it stays small."""
    browser = shutil.which("chromium")
    if browser is None:
        raise SystemExit("chromium is not on PATH")
    with tempfile.TemporaryDirectory(prefix="dlsetup-report-png-") as scratch:
        work = Path(scratch)
        documents = []
        for source in DOCUMENTS:
            data = json.loads(source.read_text())
            data["hosts"] = {"plx-rig": data["hosts"]["plx-rig"]}
            documents.append(source.name.replace("rigs", "plx-rig"))
            (work / documents[-1]).write_text(json.dumps(data))
        report = work / "report.html"
        write_report(report, documents, cwd=work)
        shot = work / "report.png"
        render(browser, report, work / "chromium", screenshot=shot, extra=["--force-device-scale-factor=0.8",
                                                                           "--hide-scrollbars"])  # fmt: skip
        shutil.copyfile(shot, target)
    return target


if __name__ == "__main__":
    print(write_docs_png())
