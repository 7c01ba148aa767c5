"""`dlsetup report` through the real CLI: the HTML page from the other commands' JSON documents
(tests/fixtures/report, written by its make_documents.py, and docs/examples), and from live hosts with the runner
boundary and the verify suite replaced (conftest.py). The page is read back with an HTML parser: every GPU, the
state of each link, the bandwidth bars, the drift and history, escaping, no external address, bad input."""

from __future__ import annotations

import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from dlsetup.facts.model import HostFacts
from dlsetup.facts.record import HostRecord
from dlsetup.verify.checks import theoretical_gbps

if TYPE_CHECKING:  # fixtures' types; conftest.py is not importable as a module
    from conftest import FakeRunner, Invoke, StubVerify

REPO = Path(__file__).resolve().parents[2]
FIX = REPO / "tests" / "fixtures" / "report"
FACTS, PLAN, VERIFY, DIFF = (FIX / f"{kind}-rigs.json" for kind in ("facts", "plan", "verify", "diff"))
HISTORY = FIX / "history-plx-rig.jsonl"
EXAMPLES = REPO / "docs" / "examples"
NOT_MEASURED = "not measured (verify --load measures it)"
# what the rigs' links are (tests/fixtures/report/SOURCE.md): one behind a PCIe switch trained down to x8, two
# in an x8/x8-bifurcated, Gen 3-forced slot
STATES = {
    "0000:04:00.0": "fine",
    "0000:05:00.0": "trained-down",
    "0000:01:00.0": "slot-limited",
    "0000:03:00.0": "slot-limited",
}


class Page(HTMLParser):
    """The elements of a page (tag and attributes, in document order) and its text."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict[str, str]]] = []
        self.text: list[str] = []
        self.feed(html)
        self.html = html

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, {k: v or "" for k, v in attrs}))

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    @property
    def all_text(self) -> str:
        return " ".join(" ".join(self.text).split())

    def find(self, tag: str, **wanted: str) -> list[dict[str, str]]:
        """Elements ``tag`` whose attributes hold ``wanted`` (``class_`` is one of the classes, ``data_gpu`` the
        ``data-gpu`` value)."""
        found = []
        for name, attrs in self.elements:
            if name != tag:
                continue
            ok = True
            for key, value in wanted.items():
                attr = "class" if key == "class_" else key.replace("_", "-")
                have = attrs.get(attr)
                ok = ok and have is not None and (value in have.split() if attr == "class" else have == value)
            if ok:
                found.append(attrs)
        return found

    def link_states(self) -> dict[str, str]:
        """GPU bus id → the state class of the line drawn for its own link."""
        states = {}
        for attrs in self.find("path"):
            if "data-gpu" in attrs:
                (state,) = [c.removeprefix("link-") for c in attrs["class"].split() if c.startswith("link-")]
                assert attrs["data-gpu"] not in states, "one line per GPU's link"
                states[attrs["data-gpu"]] = state
        return states


def write_report(cli: Invoke, out: Path, *files: Path | str) -> Page:
    result = cli("report", "--from-json", *map(str, files), "-o", str(out))
    assert result.exit_code == 0, result.output
    assert f"wrote {out}" in result.stdout
    return Page(out.read_text())


def one_error_line(result: Any) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    return str(lines[0])


def facts_document(path: Path = FACTS) -> dict[str, Any]:
    return dict(json.loads(path.read_text()))


def expected_state(gpu: dict[str, Any]) -> str:
    """The state a GPU's link has, worked out here from the facts alone (width: current, GPU's, slot's)."""
    link = gpu["pcie"]
    current, most, slot = link["width_current"], link["width_max"], link["slot_width_max"]
    if current is None or most is None:
        return "unknown"
    if current < most:
        return "slot-limited" if slot is not None and current >= slot < most else "trained-down"
    gen_max, slot_gen = link["gen_max"], link["slot_gen_max"]
    return "slot-limited" if gen_max and slot_gen and slot_gen < gen_max else "fine"


# --- the page from documents --------------------------------------------------------------------------------------


def test_every_gpu_is_drawn_with_the_state_of_its_link(cli: Invoke, tmp_path: Path) -> None:
    page = write_report(cli, tmp_path / "r.html", FACTS, PLAN, VERIFY, DIFF)
    facts = facts_document()
    gpus = [gpu for host in facts["hosts"].values() for gpu in host["gpus"]]
    assert page.link_states() == STATES
    assert page.link_states() == {g["pci_bus_id"]: expected_state(g) for g in gpus}
    for gpu in gpus:
        bus = gpu["pci_bus_id"]
        assert page.find("g", class_="node-gpu", data_address=bus), bus
        assert len(page.find("tr", data_gpu=bus)) == 1
        assert bus in page.all_text
    # the switch's uplink is a link of its own (fine: x16 at Gen 3 on both sides); inside a chip there is no link
    (uplink,) = page.find("path", data_link="0000:02:00.0")
    assert uplink["class"].split() == ["link", "link-fine"]
    for address in ("0000:03:08.0", "0000:03:10.0", "0000:00:03.0"):
        (inside,) = page.find("path", data_link=address)
        assert "link-internal" in inside["class"].split()
    for node in ("root_port", "switch_upstream", "switch_downstream", "root_complex"):
        assert page.find("g", class_=f"node-{node}"), node
    text = page.all_text
    assert "runs x8 although the GPU (x16) and the slot (x16) can do more" in text
    assert "the slot gives x8 (its upstream port's maximum) while the GPU can do x16" in text
    assert "shares the switch 0000:02:00.0 with GPU 0 (0000:04:00.0)" in text
    assert "lanes from: CPU" in text
    # the verdict line and every check of verify
    verify = json.loads(VERIFY.read_text())
    assert text.count("Verdict: PASSED") == 2
    for name, entry in verify["hosts"].items():
        assert len(page.find("section", data_host=name)) == 1
        for check in entry["checks"]:
            assert page.find("tr", data_check=check["id"]), check["id"]
            assert check["message"] in text
    # the plan
    assert "580 proprietary, from NVIDIA's CUDA repository" in text
    assert "2.14.0 cu126" in text or "cu126" in text


def test_a_gpu_without_a_path_sits_on_its_root_complex(cli: Invoke, tmp_path: Path, host_facts: Any) -> None:
    """Facts without bridges (a VM's passed-through H200; a document from before dlsetup read them): each GPU is
    drawn on its root complex, its own link coloured as ever."""
    old_rig = host_facts("2x1080ti")
    for gpu in old_rig["gpus"]:
        gpu.pop("pcie_path", None)
        gpu.pop("pcie_attach", None)
    old_rig.pop("pcie_shared", None)
    document = tmp_path / "facts.json"
    document.write_text(json.dumps({"hosts": {"h200": host_facts("h200"), "old-rig": old_rig}}))
    page = write_report(cli, tmp_path / "r.html", document, EXAMPLES / "verify-h200-record.json")
    assert page.link_states() == {"0000:00:06.0": "fine", "0000:05:00.0": "fine", "0000:06:00.0": "fine"}
    assert len(page.find("g", class_="node-root_complex")) == 2
    assert not page.find("g", class_="node-root_port")
    assert "no bridges in these facts: each GPU is drawn on its root complex" in page.all_text
    # the H200's measured copy against Gen 5 x16's theoretical
    assert len(page.find("svg", class_="bandwidth", data_gpu="0000:00:06.0")) == 1
    (measured,) = page.find("rect", class_="bar-measured")
    assert float(measured["data-gbps"]) == 55.13
    (theoretical, *_) = page.find("rect", class_="bar-theoretical")
    assert float(theoretical["data-gbps"]) == pytest.approx(theoretical_gbps(5, 16))
    assert "87% of the theoretical; verify's floor is 60%" in page.all_text
    # the old rig was not verified: its bars are theoretical only
    assert page.all_text.count(NOT_MEASURED) >= 2


def test_the_bars_compare_each_measurement_with_its_link(cli: Invoke, tmp_path: Path) -> None:
    page = write_report(cli, tmp_path / "r.html", FACTS, VERIFY)
    bars: dict[str, dict[str, float]] = {}
    widths: dict[str, dict[str, int]] = {}
    for name, attrs in page.elements:
        if name == "svg" and "bandwidth" in attrs.get("class", "").split():
            current = attrs["data-gpu"]
            bars[current], widths[current] = {}, {}
            assert attrs["data-measured"] == "yes"
        if name == "rect" and "bar" in attrs.get("class", "").split():
            kind = next(c.removeprefix("bar-") for c in attrs["class"].split() if c != "bar")
            bars[current][kind] = float(attrs["data-gbps"])
            widths[current][kind] = int(attrs["width"])
    assert set(bars) == set(STATES)
    assert bars["0000:04:00.0"] == {"measured": 12.21, "theoretical": pytest.approx(theoretical_gbps(3, 16))}
    # trained down to x8: the theoretical of the link now, and the GPU's own x16 beside it
    assert bars["0000:05:00.0"] == {
        "measured": 6.07,
        "theoretical": pytest.approx(theoretical_gbps(3, 8)),
        "gpu-max": pytest.approx(theoretical_gbps(3, 16)),
    }
    # Gen 3 x8 in the slot, Gen 4 x16 for the card
    assert bars["0000:01:00.0"]["gpu-max"] == pytest.approx(theoretical_gbps(4, 16))
    # one scale per host: twice the bandwidth, twice the bar
    plx = widths["0000:05:00.0"]
    assert plx["gpu-max"] == pytest.approx(2 * plx["theoretical"], abs=1)
    assert widths["0000:04:00.0"]["theoretical"] == plx["gpu-max"]
    assert len(page.find("line", class_="floor")) == 4
    assert NOT_MEASURED not in page.all_text


def test_without_a_measurement_the_theoretical_bar_stands_alone(cli: Invoke, tmp_path: Path) -> None:
    page = write_report(cli, tmp_path / "r.html", FACTS)
    assert not page.find("rect", class_="bar-measured")
    assert len(page.find("rect", class_="bar-theoretical")) == 4
    assert page.all_text.count(NOT_MEASURED) >= 4
    assert "Verdict: NOT VERIFIED" in page.all_text


def test_the_drift_and_the_history_appear(cli: Invoke, tmp_path: Path) -> None:
    # a controller's history.jsonl is named for its host by its directory (STATE_DIR/hosts/NAME/)
    history = tmp_path / "state-copy" / "hosts" / "plx-rig" / "history.jsonl"
    history.parent.mkdir(parents=True)
    shutil.copy(HISTORY, history)
    page = write_report(cli, tmp_path / "r.html", FACTS, DIFF, history)
    text = page.all_text
    assert "changed since the baseline of 2026-11-02T09:41:00Z:" in text
    assert "~ GPU NVIDIA GeForce GTX 1080 Ti (10de:1b06) at 0000:05:00.0: link width x8, was x16" in text
    assert len(page.find("table", class_="history")) == 1
    assert "2026-09-14T18:02:00Z" in text and "2026-11-02T09:41:00Z" in text
    assert "GPU added: NVIDIA GeForce GTX 1080 Ti at 0000:05:00.0" in text
    assert "RAM: 31.4 GiB -> 62.8 GiB" in text
    assert "the first baseline" in text
    # newest first
    assert text.index("2026-11-02T09:41:00Z", text.index("baseline recorded")) < text.index("2026-09-14T18:02:00Z")
    assert "no baseline yet: the host has not verified after a provision" in text  # x8-rig's diff entry


def test_hostile_text_is_escaped(cli: Invoke, tmp_path: Path) -> None:
    facts = facts_document()
    host = facts["hosts"]["plx-rig"]
    host["gpus"][0]["name"] = '"><img src=x onerror=alert(1)>'
    host["machine"]["product"] = "</style><script>alert(2)</script>"
    document = tmp_path / "facts.json"
    document.write_text(json.dumps({"hosts": {"<script>alert(1)</script>": host}}))
    page = write_report(cli, tmp_path / "r.html", document)
    assert "<script" not in page.html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.html
    assert "<img" not in page.html
    assert not [tag for tag, _ in page.elements if tag in ("script", "img", "iframe", "object")]
    assert "<script>alert(1)</script>" in page.all_text  # shown as text
    assert '"><img src=x onerror=alert(1)>' in page.all_text
    assert page.html.count("</style>") == 1


def test_the_page_is_self_contained_and_prints(cli: Invoke, tmp_path: Path) -> None:
    page = write_report(cli, tmp_path / "r.html", FACTS, PLAN, VERIFY, DIFF)
    (csp,) = page.find("meta", http_equiv="Content-Security-Policy")
    assert csp["content"] == "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
    for tag, attrs in page.elements:
        assert "src" not in attrs, (tag, attrs)
        assert attrs.get("href", "#").startswith("#"), (tag, attrs)
        assert "xlink:href" not in attrs
    assert not [tag for tag, _ in page.elements if tag in ("script", "link", "img", "iframe", "object", "embed")]
    assert not re.search(r"(?:src|href)\s*=\s*[\"']?\s*(?:https?:)?//", page.html, re.IGNORECASE)
    assert "url(" not in page.html
    assert "@import" not in page.html
    # on paper: its own rules, a page per host, no dark background anywhere
    assert "@media print" in page.html
    assert ".host + .host { break-before: page; page-break-before: always; }" in page.html
    backgrounds = re.findall(r"background:\s*(#[0-9a-fA-F]{3,6})", page.html)
    assert backgrounds
    for colour in backgrounds:
        digits = colour[1:] if len(colour) == 7 else "".join(c * 2 for c in colour[1:])
        assert min(int(digits[i : i + 2], 16) for i in (0, 2, 4)) >= 0xD0, colour


def test_format_json_names_the_page_and_its_hosts(cli: Invoke, tmp_path: Path) -> None:
    out = tmp_path / "r.html"
    result = cli("report", "--from-json", str(FACTS), str(VERIFY), "-o", str(out), "--format", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"report": str(out), "hosts": ["plx-rig", "x8-rig"]}
    assert out.read_text().startswith("<!DOCTYPE html>")


def test_an_offline_plan_belongs_to_the_one_host(cli: Invoke, tmp_path: Path) -> None:
    page = write_report(cli, tmp_path / "r.html", EXAMPLES / "facts-2x1080ti.json",
                        EXAMPLES / "plan-debian12-2x1080ti.json")  # fmt: skip
    text = page.all_text
    assert "the plan dlsetup plan resolved: what a provision would apply now" in text
    assert "debian-12" in text
    result = cli("report", "--from-json", str(FACTS), str(EXAMPLES / "plan-debian12-2x1080ti.json"), "-o",
                 str(tmp_path / "r2.html"))  # fmt: skip
    assert result.exit_code == 2
    assert "an offline plan names no host, and the other documents name 2 hosts" in one_error_line(result)


def test_a_later_document_wins(cli: Invoke, tmp_path: Path) -> None:
    failed = json.loads(VERIFY.read_text())
    entry = failed["hosts"]["plx-rig"]
    entry["checks"][0] = {**entry["checks"][0], "status": "fail", "message": "less RAM than expected"}
    for key in ("passed", "verdict", "reason", "counts"):
        entry.pop(key)
    later = tmp_path / "verify-again.json"
    later.write_text(json.dumps(failed))
    page = write_report(cli, tmp_path / "r.html", FACTS, VERIFY, later)
    assert page.all_text.count("Verdict: FAILED") == 1  # plx-rig's
    assert page.all_text.count("Verdict: PASSED") == 1
    assert f"verify {later}" in page.all_text


# --- the page from hosts ------------------------------------------------------------------------------------------


@pytest.fixture
def rig(fake_runner: FakeRunner, stub_verify: StubVerify, state_dir: Path) -> FakeRunner:
    """localhost as the PCIe-switch rig: its facts, the record of a provision, a baseline on the host, the
    controller's history, and the report verify gives."""
    facts = facts_document()["hosts"]["plx-rig"]
    plan = json.loads(PLAN.read_text())["hosts"]["plx-rig"]
    fake_runner.facts["localhost"] = facts
    fake_runner.previous_state["localhost"] = HostRecord.of(HostFacts.from_dict(facts), plan).to_dict()
    lines = HISTORY.read_text().splitlines()
    fake_runner.baselines["localhost"] = json.loads(lines[-1])["baseline"]
    history = state_dir / "hosts" / "localhost" / "history.jsonl"
    history.parent.mkdir(parents=True)
    shutil.copy(HISTORY, history)
    stub_verify.hosts["localhost"] = json.loads(VERIFY.read_text())["hosts"]["plx-rig"]
    return fake_runner


def test_a_report_of_hosts_gathers_facts_and_runs_verify(
    cli: Invoke, tmp_path: Path, rig: FakeRunner, stub_verify: StubVerify
) -> None:
    out = tmp_path / "r.html"
    result = cli("report", "localhost", "-o", str(out))
    assert result.exit_code == 0, result.output
    assert rig.playbooks == ["facts.yml"]  # read-only: nothing but the facts (and the suite)
    assert len(stub_verify.calls) == 1
    assert "localhost: PASSED; GPU 0 NVIDIA GeForce GTX 1080 Ti (0000:04:00.0): link fine" in result.stdout
    page = Page(out.read_text())
    text = page.all_text
    assert page.link_states() == {"0000:04:00.0": "fine", "0000:05:00.0": "trained-down"}
    assert "the plan the last provision applied (the host's record)" in text
    assert "580 proprietary" in text
    assert "Verdict: PASSED" in text
    assert len(page.find("rect", class_="bar-measured")) == 2
    # drift against the baseline on the host, and the controller's history
    assert "link width x8, was x16" in text
    assert "2026-09-14T18:02:00Z" in text
    assert "GPU added: NVIDIA GeForce GTX 1080 Ti at 0000:05:00.0" in text


def test_no_verify_leaves_the_checks_out(cli: Invoke, tmp_path: Path, rig: FakeRunner, stub_verify: StubVerify) -> None:
    out = tmp_path / "r.html"
    result = cli("report", "localhost", "-o", str(out), "--no-verify", "--format", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"report": str(out), "hosts": ["localhost"]}
    assert stub_verify.calls == []
    text = Page(out.read_text()).all_text
    assert "Verdict: NOT VERIFIED" in text
    assert NOT_MEASURED in text


def test_an_unreachable_host_is_on_the_page_and_exits_3(
    cli: Invoke, tmp_path: Path, rig: FakeRunner, stub_verify: StubVerify
) -> None:
    rig.unreachable["192.0.2.10"] = "Failed to connect to the host via ssh: No route to host"
    out = tmp_path / "r.html"
    result = cli("report", "localhost", "192.0.2.10", "-o", str(out))
    assert result.exit_code == 3, result.output
    assert "error: 192.0.2.10: unreachable: Failed to connect to the host via ssh" in result.stderr
    page = Page(out.read_text())
    assert len(page.find("section", data_host="192.0.2.10")) == 1
    assert "unreachable: Failed to connect to the host via ssh: No route to host" in page.all_text
    assert page.find("section", data_host="localhost")


# --- bad input ----------------------------------------------------------------------------------------------------


def _not_json(tmp: Path) -> str:
    (tmp / "bad.json").write_text('{"hosts": ')
    return str(tmp / "bad.json")


def _other_json(tmp: Path) -> str:
    (tmp / "other.json").write_text(json.dumps({"name": "not ours"}))
    return str(tmp / "other.json")


def _other_hosts(tmp: Path) -> str:
    (tmp / "other.json").write_text(json.dumps({"hosts": {"a": {"address": "10.0.0.1"}}}))
    return str(tmp / "other.json")


def _broken_facts(tmp: Path) -> str:
    facts = facts_document()
    del facts["hosts"]["plx-rig"]["gpus"][1]["pcie"]
    (tmp / "facts.json").write_text(json.dumps(facts))
    return str(tmp / "facts.json")


def _broken_verify(tmp: Path) -> str:
    verify = json.loads(VERIFY.read_text())
    verify["hosts"]["x8-rig"]["checks"][0]["status"] = "maybe"
    (tmp / "verify.json").write_text(json.dumps(verify))
    return str(tmp / "verify.json")


BAD = [
    ("no -o", lambda t: ["--from-json", str(FACTS)], "give -o/--output FILE"),
    ("no file", lambda t: ["--from-json", "-o", str(t / "r.html")], "--from-json takes the JSON files"),
    ("no host", lambda t: ["-o", str(t / "r.html")], "give HOST(s) to report on, or --from-json"),
    ("missing file", lambda t: ["--from-json", str(t / "nope.json"), "-o", str(t / "r.html")], "cannot be read"),
    ("directory", lambda t: ["--from-json", str(t), "-o", str(t / "r.html")], "is a directory, not a JSON file"),
    ("not JSON", lambda t: ["--from-json", _not_json(t), "-o", str(t / "r.html")], "is not JSON (Expecting value"),
    ("other JSON", lambda t: ["--from-json", _other_json(t), "-o", str(t / "r.html")], "not a document of dlsetup"),
    ("other hosts", lambda t: ["--from-json", _other_hosts(t), "-o", str(t / "r.html")],
     "(hosts.a is none of their host entries)"),
    ("broken facts", lambda t: ["--from-json", _broken_facts(t), "-o", str(t / "r.html")],
     "facts.json: hosts.plx-rig: gpus[1]: missing pcie"),
    ("broken verify", lambda t: ["--from-json", _broken_verify(t), "-o", str(t / "r.html")],
     "verify.json: hosts.x8-rig.checks[0].status: input should be"),
    ("-o a directory", lambda t: ["--from-json", str(FACTS), "-o", str(t)], "is a directory: give a file name"),
    ("-o nowhere", lambda t: ["--from-json", str(FACTS), "-o", str(t / "no" / "r.html")], "does not exist"),
    ("-i with files", lambda t: ["--from-json", str(FACTS), "-i", str(FACTS), "-o", str(t / "r.html")],
     "-i/--inventory is for HOSTs"),
    ("--load with files", lambda t: ["--from-json", str(FACTS), "--load", "-o", str(t / "r.html")],
     "--load is for HOSTs"),
    ("HOST without -o", lambda t: ["localhost"], "give -o/--output FILE"),
    ("a bad --expect", lambda t: ["localhost", "--expect", "gpu_count=many", "-o", str(t / "r.html")], "gpu_count"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "args", "cause"), BAD, ids=[case for case, _, _ in BAD])
def test_bad_input_exits_2_before_anything_runs(
    cli: Invoke, tmp_path: Path, fake_runner: FakeRunner, case: str, args: Any, cause: str
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    argv = args(work)
    before = sorted(work.iterdir())
    result = cli("report", *argv)
    assert result.exit_code == 2, result.output
    assert cause in one_error_line(result)
    assert result.stdout == ""
    assert fake_runner.calls == []  # no host was asked
    assert sorted(work.iterdir()) == before  # nothing written


def test_bad_input_with_format_json_is_the_error_document(cli: Invoke, tmp_path: Path) -> None:
    result = cli("report", "--from-json", str(FACTS), "--format", "json")
    assert result.exit_code == 2
    assert json.loads(result.stdout)["error"]["kind"] == "bad_input"


def test_a_provision_document_and_stdin(cli: Invoke, tmp_path: Path) -> None:
    """`provision --format json` gives the plan it applied, the drift, verify's result and its failures; `-` reads
    a document from stdin."""
    plan = json.loads(PLAN.read_text())["hosts"]["plx-rig"]
    verify = json.loads(VERIFY.read_text())["hosts"]["plx-rig"]
    drift = json.loads(DIFF.read_text())["hosts"]["plx-rig"]
    provision = {
        "check": False,
        "changed": 3,
        "hosts": {
            "plx-rig": {
                "plan": plan,
                "drift": {k: drift[k] for k in ("baseline_recorded_at", "drifted", "changes")},
                "plan_changes": ["driver branch: 570 -> 580"],
                "stats": {"ok": 40, "changed": 3, "failures": 0, "unreachable": False, "skipped": 2},
                "changed_tasks": [],
                "failed_tasks": [],
                "unreachable": None,
                "reboot_required": True,
                "verify": verify,
                "baseline_recorded": False,
                "converged": False,
                "convergence": None,
            }
        },
        "log": "/var/log/x",
    }
    out = tmp_path / "r.html"
    result = cli("report", "--from-json", str(FACTS), "-", "-o", str(out), input=json.dumps(provision))
    assert result.exit_code == 0, result.output
    text = Page(out.read_text()).all_text
    assert "the plan this provision applied" in text
    assert "plan: driver branch: 570 -> 580" in text
    assert "link width x8, was x16" in text
    assert "provision (stdin): a reboot is required" in text
    assert "verify stdin" in text
    assert text.count("Verdict: PASSED") == 1  # plx-rig; x8-rig has no verify report
