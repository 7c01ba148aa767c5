"""The real Typer app through CliRunner, with only the runner boundary replaced (see conftest.py).

Facts come from ``collector.collect()`` over the committed fake hosts; ``run_playbook`` is the fake runner,
``verify.run_suite`` is stubbed only where the CLI's handling of a report is under test. Two tests at the end run
``dlsetup facts`` and ``dlsetup verify`` on this machine for real.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from dlsetup import __version__
from dlsetup import cli as cli_module
from dlsetup.facts.baseline import HardwareBaseline
from dlsetup.facts.model import HostFacts
from dlsetup.facts.record import HostRecord
from dlsetup.plan.request import request_from_facts
from dlsetup.plan.resolve import resolve_stack
from dlsetup.run.runner import HostStats
from dlsetup.verify.report import VerifyReport

if TYPE_CHECKING:  # fixtures' types; conftest.py is not importable as a module
    from conftest import FakeRunner, Invoke, StubVerify

FACT_KEYS = ["os", "machine", "cpu", "memory_mib", "disks", "gpus", "driver", "warnings"]
UNREACHABLE = "192.0.2.10"  # TEST-NET-1: an address literal, so resolving it needs no DNS
SSH_FAILURE = "Failed to connect to the host via ssh: ssh: connect to host 192.0.2.10 port 22: No route to host"


def flat(text: str) -> str:
    """Whitespace collapsed: long messages may still wrap in rich's output."""
    return " ".join(text.split())


def one_error_line(result: Any) -> str:
    """The single line a bad-input error prints on stderr (nothing on stdout)."""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert result.stdout == ""
    assert lines[0].startswith("error: ")
    return str(lines[0])


def report_entry(*checks: tuple[str, str, str]) -> dict[str, Any]:
    """A verify report host entry from ``(id, status, message)`` triples; passed unless a check failed."""
    return {
        "passed": all(status != "fail" for _, status, _ in checks),
        "checks": [
            {"id": cid, "status": status, "expected": None, "actual": None, "message": message}
            for cid, status, message in checks
        ],
    }


def kepler_facts(rig: dict[str, Any]) -> dict[str, Any]:
    """The 1080 Ti rig with GTX 780s in the same slots (no Kepler tree is captured): ids as pci.ids names them."""
    for gpu in rig["gpus"]:
        gpu.update(
            pci_id="10de:1004", name="GeForce GTX 780", pci_name="GK110 [GeForce GTX 780]", compute_capability=None
        )
    return rig


@pytest.fixture
def inventory(tmp_path: Path) -> Path:
    """A tiny real inventory: Ansible reads it (dlsetup.run.inventory is not replaced)."""
    path = tmp_path / "hosts.yml"
    path.write_text(
        "all:\n"
        "  children:\n"
        "    rigs:\n"
        "      hosts:\n"
        "        rig1:\n"
        "          ansible_host: 192.0.2.21\n"
        "          dlsetup_expect:\n"
        "            gpu_count: 2\n"
        "            pcie_width_min: 16\n"
    )
    return path


# ------------------------------------------------------------------------------------------------
# --version, --help


def test_version(cli: Invoke) -> None:
    ansible = importlib.metadata.version("ansible-core")
    python = ".".join(map(str, sys.version_info[:3]))
    for flag in ("--version", "-V"):
        result = cli(flag)
        assert result.exit_code == 0
        assert result.stdout.strip() == f"dlsetup {__version__} (ansible-core {ansible}, Python {python})"


def test_short_help(cli: Invoke) -> None:
    for args in (["-h"], ["diff", "-h"]):
        result = cli(*args)
        assert result.exit_code == 0 and "Usage: " in result.stdout and "[OPTIONS]" in result.stdout, result.stdout


def test_no_arguments_shows_help(cli: Invoke) -> None:
    result = cli()
    assert result.exit_code == 2  # click's no_args_is_help exits with the usage code
    for command in ("facts", "verify", "plan", "provision"):
        assert command in result.output


@pytest.mark.parametrize(
    ("command", "options"),
    [
        ("facts", ["--inventory", "--format"]),
        ("verify", ["--inventory", "--expect", "--load", "--format", "--junit-xml"]),
        ("plan", ["--inventory", "--os", "--gpu", "--machine", "--pin", "--format"]),
        ("provision", ["--inventory", "--check", "--diff", "--tags", "--yes", "--pin", "--expect", "--no-verify"]),
    ],
)
def test_help_of_each_command_names_its_options(cli: Invoke, fake_runner: FakeRunner, command, options) -> None:
    result = cli(command, "--help")
    assert result.exit_code == 0
    assert f"{command} [OPTIONS]" in result.stdout  # the usage line of that command
    for option in options:
        assert option in result.stdout, option
    assert fake_runner.calls == []


# ------------------------------------------------------------------------------------------------
# facts


def test_facts_table_shows_one_row_per_gpu(cli: Invoke, fake_runner: FakeRunner, host_facts) -> None:
    fake_runner.facts["localhost"] = host_facts("2x1080ti")
    result = cli("facts", "localhost")
    assert result.exit_code == 0, result.output
    assert fake_runner.playbooks == ["facts.yml"]
    assert fake_runner.calls[0].hosts == ["localhost"]
    lines = result.stdout.splitlines()
    for bus_id, memory in (("0000:05:00.0", "11175 MiB"), ("0000:06:00.0", "11178 MiB")):
        (row,) = [line for line in lines if bus_id in line and "│" in line]
        cells = [cell.strip() for cell in row.split("│")]
        assert cells[1:] == [
            bus_id, "10de:1b06", "GeForce GTX 1080 Ti", memory, "-", "1/3", "x16/x16/x16", "cpu", "nvidia"
        ]  # fmt: skip
        # the bridge above it, named from pci.ids
        (path,) = [line for line in lines if line.startswith("PCIe ") and line.endswith(f"> {bus_id}")]
        assert "root port 0000:00:03." in path and "Xeon E7 v4/Xeon E5 v4/Xeon E3 v4/Xeon D" in path
    assert "Driver   410.78 (proprietary kernel module), CUDA 10.0" in result.stdout
    assert "OS       Ubuntu 24.04.3 LTS (noble), kernel 6.18.44-fc-v657-gpu" in result.stdout
    assert "no NVIDIA GPU" not in result.stdout


def test_facts_table_of_a_host_without_nvidia_gpu(cli: Invoke, fake_runner: FakeRunner, host_facts) -> None:
    fake_runner.facts["localhost"] = host_facts("xps13")
    result = cli("facts", "localhost")
    assert result.exit_code == 0, result.output
    assert "GPUs     no NVIDIA GPU on PCI" in result.stdout
    assert "Machine  Dell Inc. XPS 13 9370" in result.stdout
    assert "Driver   not loaded" in result.stdout
    assert "│" not in result.stdout  # no GPU table


@pytest.mark.parametrize(("host", "kind"), [("xps15", "driver_not_loaded"), ("2x1080ti-mismatch", "version_mismatch")])
def test_facts_table_names_the_driver_error_and_its_hint(
    cli: Invoke, fake_runner: FakeRunner, host_facts, host, kind
) -> None:
    facts = host_facts(host)
    error = facts["driver"]["error"]
    assert error["kind"] == kind  # the scenario really produces this failure
    fake_runner.facts["localhost"] = facts
    result = cli("facts", "localhost")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    (error_line,) = [line for line in lines if f"{kind}: " in line]
    if facts["driver"]["loaded"]:  # the module is loaded, NVML fails: version line, then the failure under it
        assert lines[lines.index(error_line) - 1] == "Driver   410.78 (proprietary kernel module), CUDA -"
        assert error_line == f"         {kind}: {error['message']}"
    else:
        assert error_line == f"Driver   {kind}: {error['message']}"
    hint_index = lines.index(error_line) + 1
    assert flat(lines[hint_index]).startswith("hint: ")
    assert flat(error["hint"]) in flat("\n".join(lines[hint_index:]))
    # the GPU the driver does not list still has its row, with the pci.ids name
    for gpu in facts["gpus"]:
        assert any(gpu["pci_bus_id"] in line and gpu["pci_name"] in line for line in lines)
    for warning in facts["warnings"]:
        assert f"warning  {warning}" in result.stdout


def test_facts_json_is_the_module_output(cli: Invoke, fake_runner: FakeRunner, host_facts) -> None:
    fake_runner.facts["localhost"] = host_facts("h200")
    result = cli("facts", "localhost", "--format", "json")
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    # the module's output, with where each GPU's lanes come from added (the H200 VM's GPU is on the root complex)
    attach = payload["hosts"]["localhost"]["gpus"][0].pop("pcie_attach")
    assert attach["to"] == "unknown" and attach["rule"] == "no_root_port" and attach["root_port"] is None
    assert payload == {"hosts": {"localhost": host_facts("h200")}}
    assert list(payload["hosts"]["localhost"]) == FACT_KEYS
    assert result.stderr == ""


def test_facts_json_of_several_hosts_keeps_each(
    cli: Invoke, fake_runner: FakeRunner, host_facts, shown_facts, inventory
) -> None:
    fake_runner.facts.update(localhost=host_facts("xps13"), rig1=host_facts("2x1080ti"))
    result = cli("facts", "-i", str(inventory), "localhost", "rigs", "--format", "json")
    assert result.exit_code == 0, result.output
    assert fake_runner.calls[0].hosts == ["localhost", "rig1"]
    hosts = json.loads(result.stdout)["hosts"]
    assert hosts == {"localhost": shown_facts("xps13"), "rig1": shown_facts("2x1080ti")}


def test_facts_json_reports_an_unreachable_host(cli: Invoke, fake_runner: FakeRunner, host_facts, shown_facts) -> None:
    fake_runner.facts["localhost"] = host_facts("xps13")
    fake_runner.unreachable[UNREACHABLE] = SSH_FAILURE
    result = cli("facts", "localhost", UNREACHABLE, "--format", "json")
    assert result.exit_code == 3
    payload = json.loads(result.stdout)
    assert payload["hosts"] == {"localhost": shown_facts("xps13")}
    assert payload["errors"] == {UNREACHABLE: f"unreachable: {SSH_FAILURE}"}


def test_facts_table_reports_an_unreachable_host(cli: Invoke, fake_runner: FakeRunner) -> None:
    fake_runner.unreachable[UNREACHABLE] = SSH_FAILURE
    result = cli("facts", UNREACHABLE)
    assert result.exit_code == 3
    assert f"error unreachable: {SSH_FAILURE}" in result.stdout


def test_facts_of_a_host_whose_facts_task_did_not_run(cli: Invoke, fake_runner: FakeRunner) -> None:
    result = cli("facts", "localhost", "--format", "json")  # the fake returns no task result for it
    assert result.exit_code == 10
    assert json.loads(result.stdout)["errors"] == {
        "localhost": "reached, but the facts module failed: the facts task did not run"
    }


def test_malformed_facts_are_reported_not_rendered(cli: Invoke, fake_runner: FakeRunner, host_facts) -> None:
    facts = host_facts("h200")
    del facts["gpus"][0]["pcie"]
    fake_runner.facts["localhost"] = facts
    result = cli("facts", "localhost", "--format", "json")
    assert result.exit_code == 10  # reached: its facts module answered, wrongly
    assert json.loads(result.stdout) == {
        "hosts": {},
        "errors": {"localhost": "facts malformed: gpus[0]: missing pcie"},
    }


@pytest.mark.parametrize("command", [["facts", "localhost"], ["verify", "localhost"], ["plan", "--os", "debian-12"]])
def test_unknown_format_is_refused_by_the_choice(command: list[str], state_dir: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "dlsetup", *command, "--format", "xml"], capture_output=True,
                          text=True, check=False)  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.splitlines()[0].startswith("error: Invalid value for '--format'")
    assert "'xml' is not one of 'table', 'json'" in done.stderr.splitlines()[0]
    assert not (state_dir / "runs").exists()  # nothing ran


@pytest.mark.parametrize(
    ("host", "message"),
    [
        ("bad host!", "invalid host 'bad host!'"),
        ("no-such-host.invalid", "unknown host 'no-such-host.invalid'"),
    ],
)
def test_bad_host_is_one_line_and_exit_2(cli: Invoke, fake_runner: FakeRunner, host, message) -> None:
    result = cli("facts", host)
    assert result.exit_code == 2
    assert message in one_error_line(result)
    assert fake_runner.calls == []


# ------------------------------------------------------------------------------------------------
# verify (run_suite stubbed: the real suite runs in test_real_verify_localhost and elsewhere)


def test_verify_passes(cli: Invoke, fake_runner: FakeRunner, stub_verify: StubVerify, host_facts, shown_facts) -> None:
    fake_runner.facts["localhost"] = host_facts("2x1080ti")
    stub_verify.hosts["localhost"] = report_entry(("gpu.count", "pass", "2 NVIDIA GPU(s)"))
    result = cli("verify", "localhost", "--expect", "gpu_count=2", "--format", "json")
    assert result.exit_code == 0, result.output
    expected = VerifyReport.from_dict({"hosts": {"localhost": stub_verify.hosts["localhost"]}}).to_dict()
    assert json.loads(result.stdout) == expected
    assert expected["hosts"]["localhost"]["verdict"] == "passed"
    (call,) = stub_verify.calls
    assert call["facts"] == {"localhost": shown_facts("2x1080ti")}
    assert call["expectations"]["localhost"].to_dict() == {"gpu_count": 2}
    assert call["load"] is False
    assert call["frameworks"] == {}  # the probes' job comes from verify.yml; this host ran none


def test_verify_hands_the_framework_probes_to_the_suite(
    cli: Invoke, fake_runner: FakeRunner, stub_verify: StubVerify, host_facts
) -> None:
    fake_runner.facts["localhost"] = host_facts("2x1080ti")
    job = {
        "python": "/usr/bin/python3",
        "venv_python": "/opt/dlsetup/venv/bin/python",
        "build_record": None,
        "outputs": {"torch": {"stdout": '{"version": "2.7.1"}', "stderr": "", "rc": 0, "timed_out": False}},
    }
    fake_runner.framework_jobs["localhost"] = job
    record = {"gpus": [], "plan": {"driver": {"branch": "580"}}}
    fake_runner.previous_state["localhost"] = record  # the record of the applied plan, read in the same run
    stub_verify.hosts["localhost"] = report_entry(("gpu.count", "pass", "2 NVIDIA GPU(s)"))
    result = cli("verify", "localhost", "--format", "json")
    assert result.exit_code == 0, result.output
    assert [c.playbook for c in fake_runner.calls] == ["verify.yml"]  # facts and probes in one run
    (call,) = stub_verify.calls
    assert call["frameworks"] == {"localhost": job}
    assert call["records"] == {"localhost": record}


def test_verify_table_and_junit_path(
    cli: Invoke, fake_runner: FakeRunner, stub_verify: StubVerify, host_facts, tmp_path
) -> None:
    fake_runner.facts["localhost"] = host_facts("h200")
    stub_verify.hosts["localhost"] = report_entry(("gpu.pcie_gen", "warn", "Gen 1 at idle"))
    junit = tmp_path / "junit.xml"
    result = cli("verify", "localhost", "--load", "--junit-xml", str(junit))
    assert result.exit_code == 0, result.output
    assert "localhost: PASSED" in result.stdout
    assert re.search(r"gpu\.pcie_gen\s.*warn\s.*Gen 1 at idle", result.stdout)
    assert "log: " in result.stdout
    (call,) = stub_verify.calls
    assert call["junit_xml"] == junit
    assert call["load"] is True


def test_verify_exits_6_when_a_check_fails(
    cli: Invoke, fake_runner: FakeRunner, stub_verify: StubVerify, host_facts
) -> None:
    fake_runner.facts["localhost"] = host_facts("2x1080ti")
    stub_verify.hosts["localhost"] = report_entry(
        ("gpu.count", "pass", "2 NVIDIA GPU(s)"), ("gpu.pcie_width", "fail", "x8 < x16: the slot gives 8 lanes")
    )
    result = cli("verify", "localhost")
    assert result.exit_code == 6
    assert "localhost: FAILED" in result.stdout
    assert "x8 < x16: the slot gives 8 lanes" in result.stdout
    assert flat(result.stderr) == "verification failed on localhost"


def test_verify_json_exits_6_without_a_table_line(
    cli: Invoke, fake_runner: FakeRunner, stub_verify: StubVerify, host_facts
) -> None:
    fake_runner.facts["localhost"] = host_facts("xps15")
    stub_verify.hosts["localhost"] = report_entry(("driver.loaded", "fail", "driver_not_loaded"))
    result = cli("verify", "localhost", "--format", "json")
    assert result.exit_code == 6
    assert json.loads(result.stdout)["hosts"]["localhost"]["passed"] is False  # stdout is the JSON alone
    assert result.stderr.strip() == "verification failed on localhost"  # the verdict, for a person, on stderr


def test_verify_exits_3_when_a_host_is_unreachable(
    cli: Invoke, fake_runner: FakeRunner, stub_verify: StubVerify
) -> None:
    fake_runner.unreachable[UNREACHABLE] = SSH_FAILURE
    result = cli("verify", UNREACHABLE, "--format", "json")
    assert result.exit_code == 3, result.output
    (check,) = json.loads(result.stdout)["hosts"][UNREACHABLE]["checks"]
    assert check["id"] == "host.reachable"
    assert check["status"] == "fail"
    assert check["message"] == f"unreachable: {SSH_FAILURE}"
    assert stub_verify.calls == []  # nothing to run the suite on


def test_verify_of_an_unreachable_host_says_why_in_its_one_line(
    cli: Invoke, fake_runner: FakeRunner, stub_verify: StubVerify
) -> None:
    fake_runner.unreachable[UNREACHABLE] = SSH_FAILURE
    result = cli("verify", UNREACHABLE)
    assert result.exit_code == 3, result.output
    assert result.stderr.strip() == f"{UNREACHABLE} could not be checked: unreachable: {SSH_FAILURE}"


@pytest.mark.parametrize(
    ("args", "cause", "hint"),
    [
        (["facts"], "error: Missing argument 'HOST'.", "hint: dlsetup facts -h lists the arguments and options"),
        (["facts", "--frobnicate", "x"], "error: No such option: --frobnicate", "hint: dlsetup facts -h"),
        (["frobnicate"], "error: No such command 'frobnicate'.", "hint: dlsetup -h"),
        (["plan", "--os"], "error: Option '--os' requires an argument.", "hint: dlsetup plan -h"),
    ],
)
def test_usage_errors_are_a_cause_and_a_hint(args: list[str], cause: str, hint: str, state_dir: Path) -> None:
    """Through the real entry point (main), as a shell runs it: the cause first, where to read more second."""
    done = subprocess.run([sys.executable, "-m", "dlsetup", *args], capture_output=True, text=True, check=False,
                          env={**os.environ, "COLUMNS": "60", "DLSETUP_STATE_DIR": str(state_dir)})  # fmt: skip
    assert done.returncode == 2
    lines = done.stderr.splitlines()
    assert len(lines) == 2, done.stderr
    assert lines[0].startswith(cause) and lines[1].startswith(hint)
    assert done.stdout == ""


def test_verify_checks_the_reachable_hosts_and_exits_3_for_the_other(
    cli: Invoke, fake_runner: FakeRunner, stub_verify: StubVerify, host_facts
) -> None:
    fake_runner.facts["localhost"] = host_facts("h200")
    fake_runner.unreachable[UNREACHABLE] = SSH_FAILURE
    stub_verify.hosts["localhost"] = report_entry(("gpu.count", "pass", "1 NVIDIA GPU(s)"))
    result = cli("verify", "localhost", UNREACHABLE, "--format", "json")
    assert result.exit_code == 3, result.output
    hosts = json.loads(result.stdout)["hosts"]
    assert list(hosts) == ["localhost", UNREACHABLE]
    assert hosts["localhost"]["passed"] is True
    assert hosts[UNREACHABLE]["passed"] is False
    assert list(stub_verify.calls[0]["facts"]) == ["localhost"]


def test_verify_takes_inventory_expectations_and_flags(
    cli: Invoke, fake_runner: FakeRunner, stub_verify: StubVerify, host_facts, inventory
) -> None:
    fake_runner.facts["rig1"] = host_facts("2x1080ti")
    stub_verify.hosts["rig1"] = report_entry(("gpu.count", "pass", "2 NVIDIA GPU(s)"))
    result = cli("verify", "-i", str(inventory), "rig1", "--expect", "pcie_width_min=8", "--expect", "gpu_model=1080")
    assert result.exit_code == 0, result.output
    expectations = stub_verify.calls[0]["expectations"]["rig1"]
    assert expectations.to_dict() == {"gpu_count": 2, "gpu_model": "1080", "pcie_width_min": 8}


@pytest.mark.parametrize(
    ("flag", "message"),
    [
        ("gpu_count=two", "--expect: gpu_count must be an integer, got 'two'"),
        ("pcie_width_min=3", "--expect: pcie_width_min must be one of 1, 2, 4, 8, 12, 16, 32, got 3"),
        ("driver_flavor=closed", "--expect: driver_flavor must be one of open, proprietary, got 'closed'"),
        ("gpu_count", "--expect 'gpu_count': expected KEY=VALUE"),
        ("gpus=2", "--expect: unknown expectation 'gpus'"),
    ],
)
def test_bad_expectation_is_one_line_and_nothing_runs(
    cli: Invoke, fake_runner: FakeRunner, stub_verify: StubVerify, flag, message
) -> None:
    result = cli("verify", "localhost", "--expect", flag)
    assert result.exit_code == 2
    assert message in one_error_line(result)
    assert fake_runner.calls == []
    assert stub_verify.calls == []


def test_bad_inventory_expectation_names_the_host(
    cli: Invoke, fake_runner: FakeRunner, stub_verify: StubVerify, tmp_path
) -> None:
    inv = tmp_path / "bad.yml"
    inv.write_text("all:\n  hosts:\n    rig1:\n      dlsetup_expect:\n        gpu_count: many\n")
    result = cli("verify", "-i", str(inv), "rig1")
    assert result.exit_code == 2
    assert "host rig1: gpu_count must be an integer, got 'many'" in one_error_line(result)
    assert fake_runner.calls == []


def test_error_text_is_printed_verbatim_not_as_markup(cli: Invoke, fake_runner: FakeRunner) -> None:
    result = cli("verify", "localhost", "--expect", "framework=[red]torch[/red]")
    assert result.exit_code == 2
    assert one_error_line(result) == (
        "error: --expect: framework must be one of pytorch, jax, none, got '[red]torch[/red]'"
    )


# ------------------------------------------------------------------------------------------------
# plan


def test_plan_offline_two_1080ti(cli: Invoke, fake_runner: FakeRunner) -> None:
    result = cli("plan", "--os", "ubuntu-24.04", "--gpu", "GTX 1080 Ti", "--gpu", "GTX 1080 Ti", "--format", "json")
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    assert plan["os"] == "ubuntu-24.04"
    assert [g["pci_id"] for g in plan["gpus"]] == ["10de:1b06", "10de:1b06"]
    assert {g["architecture"] for g in plan["gpus"]} == {"Pascal"}
    assert (plan["driver"]["branch"], plan["driver"]["flavor"]) == ("580", "proprietary")
    assert plan["driver"]["source"] == "distribution"
    assert plan["pytorch"]["variant"] == "cu126"
    assert plan["pytorch"]["index_url"] == "https://download.pytorch.org/whl/cu126"
    assert fake_runner.calls == []


def test_plan_offline_kepler_has_no_supported_stack(cli: Invoke, fake_runner: FakeRunner) -> None:
    result = cli("plan", "--os", "ubuntu-24.04", "--gpu", "GTX 780", "--format", "json")
    assert result.exit_code == 4
    payload = json.loads(result.stdout)
    assert list(payload) == ["error"]
    assert payload["error"]["kind"] == "no_supported_stack"
    assert "GTX 780" in payload["error"]["message"]


def test_plan_offline_kepler_table_is_an_error_line(cli: Invoke) -> None:
    result = cli("plan", "--os", "ubuntu-24.04", "--gpu", "GTX 780")
    assert result.exit_code == 4
    assert flat(result.stderr).startswith("error: no supported deep-learning stack exists for GeForce GTX 780")


def test_plan_offline_rtx5090_on_debian12(cli: Invoke) -> None:
    result = cli("plan", "--os", "debian-12", "--gpu", "RTX 5090")
    assert result.exit_code == 0, result.output
    (driver_line,) = [line for line in result.stdout.splitlines() if line.startswith("driver ")]
    assert re.fullmatch(r"driver\s+R580 open from nvidia \(LTSB, EOL 2028-06\)\s*", driver_line)
    assert "GeForce RTX 5090 [10de:2b85] Blackwell" in result.stdout  # brackets kept, not read as markup
    as_json = json.loads(cli("plan", "--os", "debian-12", "--gpu", "RTX 5090", "--format", "json").stdout)
    assert (as_json["driver"]["flavor"], as_json["driver"]["source"]) == ("open", "nvidia")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "give HOST(s) to plan from live facts, or --os"),
        (["localhost", "--os", "debian-12"], "give either HOST(s) or --os, not both"),
        (["--os", "debian-12", "--pin", "driver_branch"], "--pin 'driver_branch': expected KEY=VALUE"),
    ],
)
def test_plan_bad_arguments_exit_2(cli: Invoke, fake_runner: FakeRunner, args, message) -> None:
    result = cli("plan", *args)
    assert result.exit_code == 2
    assert message in one_error_line(result)
    assert fake_runner.calls == []


def test_plan_unknown_model_json(cli: Invoke) -> None:
    result = cli("plan", "--os", "debian-12", "--gpu", "[red]RTX 9999", "--format", "json")
    assert result.exit_code == 2
    assert json.loads(result.stdout)["error"]["kind"] == "unknown_model"
    table = cli("plan", "--os", "debian-12", "--gpu", "[red]RTX 9999")
    assert table.exit_code == 2
    assert "[red]RTX 9999" in table.stderr  # the user's text, verbatim


def test_plan_from_live_facts(cli: Invoke, fake_runner: FakeRunner, host_facts) -> None:
    fake_runner.facts["localhost"] = host_facts("h200")
    result = cli("plan", "localhost", "--format", "json")
    assert result.exit_code == 0, result.output
    assert fake_runner.playbooks == ["facts.yml"]
    plan = json.loads(result.stdout)["hosts"]["localhost"]
    assert plan["os"] == "ubuntu-24.04"
    assert [(g["pci_id"], g["architecture"]) for g in plan["gpus"]] == [("10de:2335", "Hopper")]
    assert (plan["driver"]["branch"], plan["driver"]["flavor"]) == ("580", "open")
    assert plan["driver"]["packages"][-1] == "nvidia-driver-580-server-open"  # a datacenter-only box: -server
    assert plan["reboot_required"] is False  # 580 open is what the H200 already runs


def test_plan_from_live_facts_table(cli: Invoke, fake_runner: FakeRunner, host_facts) -> None:
    fake_runner.facts["localhost"] = host_facts("xps15")
    result = cli("plan", "localhost")
    assert result.exit_code == 0, result.output
    assert "XPS 15 9570" in result.stdout
    assert re.search(r"driver\s+R580 proprietary from nvidia", result.stdout)  # Debian 12: NVIDIA's repository
    assert "PRIME on-demand" in result.stdout


def test_plan_of_several_hosts_exits_with_the_worst(
    cli: Invoke, fake_runner: FakeRunner, host_facts, inventory
) -> None:
    fake_runner.facts.update(localhost=host_facts("xps13"), rig1=kepler_facts(host_facts("2x1080ti")))
    result = cli("plan", "-i", str(inventory), "localhost", "rig1", "--format", "json")
    assert result.exit_code == 4
    hosts = json.loads(result.stdout)["hosts"]
    assert hosts["localhost"]["pytorch"]["variant"] == "cpu"
    assert hosts["localhost"]["laptop"]["mem_sleep_default"] == "deep"
    assert hosts["rig1"]["error"]["kind"] == "no_supported_stack"


def test_plan_takes_inventory_pins_and_flags_override_them(
    cli: Invoke, fake_runner: FakeRunner, host_facts, tmp_path
) -> None:
    inv = tmp_path / "pins.yml"
    inv.write_text("all:\n  hosts:\n    h200:\n      dlsetup_pins:\n        pytorch_variant: cu126\n")
    fake_runner.facts["h200"] = host_facts("h200")
    pinned = cli("plan", "-i", str(inv), "h200", "--format", "json")
    assert pinned.exit_code == 0, pinned.output
    assert json.loads(pinned.stdout)["hosts"]["h200"]["pytorch"]["variant"] == "cu126"
    overridden = cli("plan", "-i", str(inv), "h200", "--pin", "pytorch_variant=cu130", "--format", "json")
    assert overridden.exit_code == 0, overridden.output
    assert json.loads(overridden.stdout)["hosts"]["h200"]["pytorch"]["variant"] == "cu130"


def test_plan_bad_inventory_pin_exits_2_before_any_run(cli: Invoke, fake_runner: FakeRunner, tmp_path) -> None:
    inv = tmp_path / "pins.yml"
    inv.write_text("all:\n  hosts:\n    h200:\n      dlsetup_pins:\n        driver_branch: 999\n")
    result = cli("plan", "-i", str(inv), "h200")
    assert result.exit_code == 2
    assert result.stderr.startswith("error: host h200: pin driver_branch: no data for branch 999")
    assert fake_runner.calls == []


def test_plan_of_an_unreachable_host_exits_3(cli: Invoke, fake_runner: FakeRunner) -> None:
    fake_runner.unreachable[UNREACHABLE] = SSH_FAILURE
    result = cli("plan", UNREACHABLE)
    assert result.exit_code == 3
    assert f"host {UNREACHABLE}: unreachable" in one_error_line(result)


# ------------------------------------------------------------------------------------------------
# provision (site.yml is the fake runner; the final verify is stubbed)


def expected_host_vars(facts: dict[str, Any], roles: tuple[str, ...] = ()) -> dict[str, Any]:
    typed = HostFacts.from_dict(facts)
    plan = resolve_stack(request_from_facts(typed, {}))
    record = HostRecord.of(typed, plan.to_dict(), roles).to_dict()
    record.pop("converged")
    return {**plan.to_extravars(), "dlsetup_plan": plan.to_dict(), "dlsetup_state": record}


def test_provision_check_mode(cli: Invoke, fake_runner: FakeRunner, stub_verify: StubVerify, host_facts) -> None:
    facts = host_facts("2x1080ti")
    fake_runner.facts["localhost"] = facts
    fake_runner.site_stats["localhost"] = HostStats(ok=51, changed=9)
    result = cli("provision", "localhost", "--check", "--diff", "--tags", "role::base")
    assert result.exit_code == 0, result.output
    # role::base uses none of the plan's sources: no preflight
    assert fake_runner.playbooks == ["facts.yml", "site.yml"]
    site = fake_runner.call("site.yml")
    assert site.hosts == ["localhost"]
    # the record says which roles ran: verify expects only what they applied
    sent = site.kwargs["host_extravars"]["localhost"]
    # what the run was asked (its fingerprint) and what to read back at its end (dlsetup.run.converged)
    converged = sent["dlsetup_state"].pop("converged")
    assert set(converged) == {"fingerprint", "spec"} and len(converged["fingerprint"]) == 64
    assert "pciutils" in converged["spec"]["packages"] and "cuda-drivers-580" not in converged["spec"]["packages"]
    assert sent == expected_host_vars(facts, ("base",))
    assert site.kwargs["host_extravars"]["localhost"]["dlsetup_state"]["roles"] == ["base"]
    assert site.kwargs["host_extravars"]["localhost"]["nvidia_driver_flavor"] == "proprietary"
    assert site.kwargs["check"] is True
    assert site.kwargs["diff"] is True
    assert list(site.kwargs["tags"]) == ["role::base"]
    assert site.kwargs["kind"] == "check"
    assert "check mode: 9 task(s) would change; nothing was changed" in result.stdout
    assert re.search(r"localhost\s+│\s+51\s+│\s+9\s+│\s+0\s+│\s+0\s+│\s+no", result.stdout)  # the summary row
    assert "R580 proprietary from distribution" in result.stdout  # the plan was shown first
    assert stub_verify.calls == []  # check mode verifies nothing


def test_provision_with_unsupported_hardware_changes_nothing(cli: Invoke, fake_runner: FakeRunner, host_facts) -> None:
    fake_runner.facts["localhost"] = kepler_facts(host_facts("2x1080ti"))
    result = cli("provision", "localhost", "--yes")
    assert result.exit_code == 4
    assert fake_runner.playbooks == ["facts.yml"]  # site.yml never ran
    message, hint = result.stderr.strip().splitlines()
    assert message.startswith("error: host localhost: no supported deep-learning stack exists for GeForce GTX 780")
    assert message.endswith("; nothing was changed")
    assert hint.startswith("hint: ")


def test_provision_unknown_inventory_host_exits_2_before_any_run(
    cli: Invoke, fake_runner: FakeRunner, inventory
) -> None:
    result = cli("provision", "-i", str(inventory), "rig9", "--yes")
    assert result.exit_code == 2
    assert "unknown host or group 'rig9': not in inventory" in one_error_line(result)
    assert fake_runner.calls == []


def test_provision_bad_pin_exits_2_before_any_run(cli: Invoke, fake_runner: FakeRunner) -> None:
    result = cli("provision", "localhost", "--pin", "driver_branch=590x", "--yes")
    assert result.exit_code == 2
    one_error_line(result)
    assert fake_runner.calls == []


def test_provision_unreachable_at_gather_changes_nothing(cli: Invoke, fake_runner: FakeRunner) -> None:
    fake_runner.unreachable[UNREACHABLE] = SSH_FAILURE
    result = cli("provision", UNREACHABLE, "--yes")
    assert result.exit_code == 3
    assert one_error_line(result).endswith("nothing was changed")
    assert fake_runner.playbooks == ["facts.yml"]


def test_provision_failed_run_exits_5(
    cli: Invoke, fake_runner: FakeRunner, stub_verify: StubVerify, host_facts
) -> None:
    fake_runner.facts["localhost"] = host_facts("2x1080ti")
    fake_runner.site_status = "failed"
    fake_runner.site_stats["localhost"] = HostStats(ok=20, changed=3, failures=1)
    fake_runner.site_failed_tasks["localhost"] = [("Install the NVIDIA driver packages", "No package matching")]
    result = cli("provision", "localhost", "--yes")
    assert result.exit_code == 5
    assert "localhost failed at 'Install the NVIDIA driver packages': No package matching" in result.stdout
    assert flat(result.stderr) == "provision failed: fix the cause above and run the same command again"
    assert stub_verify.calls == []


def test_provision_unreachable_during_the_run_exits_3(
    cli: Invoke, fake_runner: FakeRunner, stub_verify: StubVerify, host_facts
) -> None:
    fake_runner.facts["localhost"] = host_facts("2x1080ti")
    fake_runner.site_status = "failed"
    fake_runner.site_stats["localhost"] = HostStats(ok=20, unreachable=True)
    result = cli("provision", "localhost", "--yes")
    assert result.exit_code == 3
    assert re.search(r"localhost\s+│\s+20\s+│\s+0\s+│\s+0\s+│\s+0\s+│\s+yes", result.stdout)
    assert stub_verify.calls == []


def test_provision_reboot_required_exits_7(
    cli: Invoke, fake_runner: FakeRunner, stub_verify: StubVerify, host_facts
) -> None:
    fake_runner.facts["localhost"] = host_facts("xps15")
    fake_runner.site_results["localhost"] = [
        ("Tell dlsetup that a reboot is required", "ansible.builtin.set_fact",
         {"ansible_facts": {"dlsetup_reboot_required": True}}),
    ]  # fmt: skip
    result = cli("provision", "localhost", "--yes")
    assert result.exit_code == 7
    assert "reboot, then run the same command again" in flat(result.stderr)
    assert "reboot required on localhost" in flat(result.stderr)
    assert stub_verify.calls == []  # verifying before the reboot would only report the old driver


def test_provision_check_mode_does_not_ask_for_a_reboot(cli: Invoke, fake_runner: FakeRunner, host_facts) -> None:
    # in check mode the driver role's handlers still run and set the fact, though nothing was installed
    fake_runner.facts["localhost"] = host_facts("xps15")
    fake_runner.site_stats["localhost"] = HostStats(ok=30, changed=5)
    fake_runner.site_results["localhost"] = [
        ("Tell dlsetup that a reboot is required", "ansible.builtin.set_fact",
         {"ansible_facts": {"dlsetup_reboot_required": True}}),
    ]  # fmt: skip
    result = cli("provision", "localhost", "--check")
    assert result.exit_code == 0, result.output
    assert "check mode: 5 task(s) would change; nothing was changed" in result.stdout
    assert "check mode: a reboot would be required on localhost" in result.stdout
    assert "run the same command again" not in result.output


def test_provision_a_cleared_reboot_fact_does_not_stop(
    cli: Invoke, fake_runner: FakeRunner, stub_verify: StubVerify, host_facts
) -> None:
    fake_runner.facts["localhost"] = host_facts("h200")
    fake_runner.site_results["localhost"] = [
        ("Tell dlsetup", "ansible.builtin.set_fact", {"ansible_facts": {"dlsetup_reboot_required": True}}),
        ("Tell dlsetup", "ansible.builtin.set_fact", {"ansible_facts": {"dlsetup_reboot_required": False}}),
    ]
    stub_verify.hosts["localhost"] = report_entry(("gpu.count", "pass", "1 NVIDIA GPU(s)"))
    result = cli("provision", "localhost", "--yes")
    assert result.exit_code == 0, result.output
    assert len(stub_verify.calls) == 1


def test_provision_applies_then_verifies(
    cli: Invoke, fake_runner: FakeRunner, stub_verify: StubVerify, host_facts
) -> None:
    fake_runner.facts["localhost"] = host_facts("h200")
    stub_verify.hosts["localhost"] = report_entry(("gpu.count", "pass", "1 NVIDIA GPU(s)"))
    result = cli("provision", "localhost", "--yes", "--expect", "gpu_count=1")
    assert result.exit_code == 0, result.output
    # facts, the run, then facts again for the verification (the driver may answer only now), then the hardware
    # that verified is recorded as the baseline
    assert fake_runner.playbooks == ["facts.yml", "preflight.yml", "site.yml", "verify.yml", "baseline.yml"]
    assert "localhost: hardware recorded as the new baseline" in result.stdout
    site = fake_runner.call("site.yml")
    assert site.kwargs["check"] is False
    assert site.kwargs["kind"] == "provision"
    (call,) = stub_verify.calls
    assert call["work_dir"] == site.result.run_dir / "verify"
    assert call["expectations"]["localhost"].to_dict() == {"gpu_count": 1}
    assert "localhost: PASSED" in result.stdout


def test_provision_does_not_pass_a_host_it_could_not_verify(
    cli: Invoke, fake_runner: FakeRunner, stub_verify: StubVerify, host_facts
) -> None:
    # both hosts are planned and provisioned; after the run one cannot be read any more
    fake_runner.facts.update({"localhost": host_facts("h200"), UNREACHABLE: host_facts("2x1080ti")})
    fake_runner.unreachable_after_site[UNREACHABLE] = SSH_FAILURE
    stub_verify.hosts["localhost"] = report_entry(("gpu.count", "pass", "1 NVIDIA GPU(s)"))
    result = cli("provision", "localhost", UNREACHABLE, "--yes")
    assert fake_runner.playbooks == ["facts.yml", "preflight.yml", "site.yml", "verify.yml", "baseline.yml"]
    # only the host that verified gets a baseline
    assert fake_runner.call("baseline.yml").hosts == ["localhost"]
    assert list(stub_verify.calls[0]["facts"]) == ["localhost"]
    assert result.exit_code == 6, result.output
    assert f"{UNREACHABLE}: FAILED" in result.stdout
    assert re.search(r"host\.reachable\s.*fail\s.*unreachable: Failed to connect", result.stdout)


def test_provision_with_no_host_left_to_verify_runs_no_suite(
    cli: Invoke, fake_runner: FakeRunner, stub_verify: StubVerify, host_facts
) -> None:
    fake_runner.facts[UNREACHABLE] = host_facts("2x1080ti")
    fake_runner.unreachable_after_site[UNREACHABLE] = SSH_FAILURE
    result = cli("provision", UNREACHABLE, "--yes")
    assert result.exit_code == 6, result.output
    assert stub_verify.calls == []
    assert f"{UNREACHABLE}: FAILED" in result.stdout


def test_provision_shows_live_progress(cli: Invoke, fake_runner: FakeRunner, host_facts) -> None:
    """Outside a terminal: plain lines, each stamped with the elapsed time; a change with the module's message,
    a failure with its cause, a diff with --diff, never an unchanged task's result."""
    fake_runner.facts["localhost"] = host_facts("2x1080ti")
    task = "Install the NVIDIA driver packages"
    diff = {"before": "a\nb\n", "after": "a\nc\n", "before_header": "/etc/x", "after_header": "/etc/x"}
    looped = {"before": {"state": "absent"}, "after": {"state": "directory"}, "before_header": "/opt/d"}
    fake_runner.site_events = [
        {"event": "playbook_on_task_start", "event_data": {"task": task}},
        {"event": "runner_on_ok", "event_data": {"host": "localhost", "task": task,
                                                 "res": {"changed": True, "msg": "2 packages", "diff": diff}}},
        {"event": "runner_on_ok", "event_data": {"host": "localhost", "task": "Probe", "res": {"changed": False}}},
        {"event": "runner_on_ok", "event_data": {"host": "localhost", "task": "Dirs", "res": {
            "changed": True, "results": [{"changed": True, "diff": looped}]}}},
        {"event": "runner_on_failed",
         "event_data": {"host": "localhost", "task": task, "res": {"msg": "first line [x]\nsecond line"}}},
    ]  # fmt: skip
    result = cli("provision", "localhost", "--check", "--diff")
    lines = [re.sub(r"^\[\d+:\d\d\] ", "", line) for line in result.stdout.splitlines()]
    assert re.search(r"^\[\d+:\d\d\] check run$", result.stdout, re.MULTILINE)
    assert f"TASK {task}" in lines
    assert f"  changed localhost: {task}: 2 packages" in lines
    diff_shown = [line for line in lines if line.startswith("    ")]
    assert diff_shown == ["    --- /etc/x", "    +++ /etc/x", "    @@ -1,2 +1,2 @@", "     a", "    -b", "    +c",
                          "    --- /opt/d", "    +++ after", "    @@ -1 +1 @@", "    -state: absent",
                          "    +state: directory"]  # fmt: skip
    assert f"  failed  localhost: {task}: first line [x]" in lines
    assert "second line" not in result.stdout
    assert "Probe" not in result.stdout  # unchanged tasks make no line


def test_the_summary_names_what_was_skipped_and_why(cli: Invoke, fake_runner: FakeRunner, host_facts) -> None:
    fake_runner.facts["localhost"] = host_facts("2x1080ti")
    skipped = {"changed": False, "false_condition": "laptop_profile | length > 0"}
    fake_runner.site_events = [
        {"event": "runner_on_skipped", "event_data": {"host": "localhost", "task": f"t{n}", "role": "laptop",
                                                      "res": skipped}} for n in range(3)
    ]  # fmt: skip
    result = cli("provision", "localhost", "--check", "--tags", "base,laptop")
    assert "skipped on localhost: 3 tasks: laptop 3 (laptop_profile | length > 0)" in result.stdout
    assert "not run (--tags/--skip-tags): hw_facts, nvidia_driver, cuda, dl_stack, state" in result.stdout


def test_provision_verification_failure_exits_6(
    cli: Invoke, fake_runner: FakeRunner, stub_verify: StubVerify, host_facts
) -> None:
    fake_runner.facts["localhost"] = host_facts("h200")
    stub_verify.hosts["localhost"] = report_entry(("framework.pytorch", "fail", "PyTorch does not import"))
    result = cli("provision", "localhost", "--yes")
    assert result.exit_code == 6
    assert "localhost: FAILED" in result.stdout


def test_provision_no_verify(cli: Invoke, fake_runner: FakeRunner, stub_verify: StubVerify, host_facts) -> None:
    fake_runner.facts["localhost"] = host_facts("h200")
    result = cli("provision", "localhost", "--yes", "--no-verify")
    assert result.exit_code == 0, result.output
    assert fake_runner.playbooks == ["facts.yml", "preflight.yml", "site.yml"]
    assert stub_verify.calls == []


def test_provision_without_yes_and_without_a_terminal_refuses_before_anything_runs(
    cli: Invoke, fake_runner: FakeRunner, host_facts
) -> None:
    # stdin is not a terminal under CliRunner: nobody can answer, so there is no consent, and a piped "y" is none
    fake_runner.facts["localhost"] = host_facts("h200")
    result = cli("provision", "localhost", input="y\n")
    assert result.exit_code == 2, result.output
    assert one_error_line(result) == (
        "error: provision changes hosts and there is no terminal to ask on: give --yes to apply, or --check for a "
        "dry run; nothing was changed"
    )
    assert fake_runner.playbooks == []
    # a check run changes nothing: it never asks and needs no --yes
    assert cli("provision", "localhost", "--check").exit_code == 0
    assert "site.yml" in fake_runner.playbooks


def test_provision_on_a_terminal_asks_and_a_no_changes_nothing(
    cli: Invoke, fake_runner: FakeRunner, host_facts, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_runner.facts["localhost"] = host_facts("h200")
    monkeypatch.setattr(cli_module, "_interactive", lambda: True)
    result = cli("provision", "localhost", input="n\n")
    assert result.exit_code == 0, result.output
    assert "Apply this plan?" in result.output and "nothing was changed" in result.stderr
    assert "site.yml" not in fake_runner.playbooks


def test_provision_names_hardware_drift_against_an_older_record(
    cli: Invoke, fake_runner: FakeRunner, stub_verify: StubVerify, host_facts
) -> None:
    facts = host_facts("2x1080ti")
    fake_runner.facts["localhost"] = facts
    keep = {k: facts["gpus"][0][k] for k in ("pci_bus_id", "pci_id", "subsystem_id", "pci_name")}
    # what an older provision recorded: the first 1080 Ti, and a TITAN X (Pascal) where the second one is now
    gone = {"pci_bus_id": "0000:06:00.0", "pci_id": "10de:1b00", "subsystem_id": "10de:119a",
            "pci_name": "GP102 [TITAN X]"}  # fmt: skip
    previous_plan = resolve_stack(request_from_facts(HostFacts.from_dict(facts), {})).to_dict()
    previous_plan["driver"]["branch"] = "535"
    fake_runner.previous_state["localhost"] = {"gpus": [keep, gone], "plan": previous_plan}
    result = cli("provision", "localhost", "--check")
    assert result.exit_code == 0, result.output
    lines = [flat(line) for line in result.stdout.splitlines()]
    assert "hardware changed since the last verified run:" in lines
    assert "~ GPU at 0000:06:00.0: GP102 [TITAN X] (10de:1b00) -> GeForce GTX 1080 Ti (10de:1b06)" in lines
    assert not any("0000:05:00.0" in line for line in lines)
    assert "plan changed: driver branch: 535 -> 580" in lines


def _baseline_of(facts: dict[str, Any]) -> dict[str, Any]:
    return HardwareBaseline.of(HostFacts.from_dict(facts)).to_dict()


def test_a_removed_gpu_stays_in_the_drift_until_a_run_verifies(
    cli: Invoke, fake_runner: FakeRunner, stub_verify: StubVerify, host_facts
) -> None:
    rig = host_facts("2x1080ti")
    fake_runner.baselines["localhost"] = baseline = _baseline_of(rig)
    rig["gpus"].pop(1)
    fake_runner.facts["localhost"] = rig
    stub_verify.hosts["localhost"] = report_entry(("gpu.count", "fail", "expected 2 NVIDIA GPU(s), PCI shows 1"))
    for _ in range(2):  # verify fails: the baseline stays, and the next run shows the same drift
        result = cli("provision", "localhost", "--yes")
        assert result.exit_code == 6, result.output
        assert "- GPU GeForce GTX 1080 Ti (10de:1b06) at 0000:06:00.0" in result.stdout
        assert "baseline.yml" not in fake_runner.playbooks
        assert fake_runner.baselines["localhost"] == baseline
    # verify gets the baseline it is to compare with
    assert stub_verify.calls[-1]["baselines"]["localhost"].to_dict() == baseline
    # once a run verifies (the GPU is back), the hardware is recorded and the drift is gone
    stub_verify.hosts["localhost"] = report_entry(("gpu.count", "pass", "2 NVIDIA GPU(s)"))
    fake_runner.facts["localhost"] = host_facts("2x1080ti")
    result = cli("provision", "localhost", "--yes")
    assert result.exit_code == 0, result.output
    assert "hardware changed" not in result.stdout
    # the same hardware: the baseline is not rewritten (the run changed something: only old venv builds may go)
    assert "dlsetup_baseline" not in fake_runner.call("baseline.yml").kwargs["host_extravars"]["localhost"]
    assert fake_runner.baselines["localhost"] == baseline


def test_a_gpu_that_disappeared_asks_first_on_a_terminal(
    cli: Invoke, fake_runner: FakeRunner, stub_verify: StubVerify, host_facts, monkeypatch: pytest.MonkeyPatch
) -> None:
    rig = host_facts("2x1080ti")
    fake_runner.baselines["localhost"] = _baseline_of(rig)
    rig["gpus"].pop(1)
    fake_runner.facts["localhost"] = rig
    monkeypatch.setattr(cli_module, "_interactive", lambda: True)
    refused = cli("provision", "localhost", input="n\n")
    assert refused.exit_code == 0, refused.output
    assert "1 GPU(s) of the last verified run are gone (GPU GeForce GTX 1080 Ti (10de:1b06) at 0000:06:00.0)" in (
        flat(refused.output)
    )
    assert "nothing was changed" in refused.stderr
    assert "site.yml" not in fake_runner.playbooks
    # --yes accepts without asking
    stub_verify.hosts["localhost"] = report_entry(("gpu.count", "fail", "expected 2 NVIDIA GPU(s), PCI shows 1"))
    taken = cli("provision", "localhost", "--yes")
    assert "are gone" not in taken.output and "site.yml" in fake_runner.playbooks


def test_accept_hardware_rewrites_the_inventory_and_records_the_baseline(
    cli: Invoke, fake_runner: FakeRunner, stub_verify: StubVerify, host_facts, tmp_path: Path
) -> None:
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(
        "# the lab\nall:\n  hosts:\n    rig:  # under the desk\n      ansible_host: 10.0.0.5\n"
        "      dlsetup_expect:\n        gpu_count: 2  # two 1080 Ti\n        pcie_width_min: 16\n"
        "        driver_branch: 580\n"
    )
    rig = host_facts("2x1080ti")
    fake_runner.baselines["rig"] = _baseline_of(rig)
    rig["gpus"].pop(1)
    fake_runner.facts["rig"] = rig
    stub_verify.hosts["rig"] = report_entry(("gpu.count", "pass", "1 NVIDIA GPU(s)"))
    result = cli("provision", "rig", "-i", str(inventory), "--yes", "--accept-hardware")
    assert result.exit_code == 0, result.output
    text = inventory.read_text()
    assert text.startswith("# the lab\n") and "# under the desk" in text and "# two 1080 Ti" in text
    assert "gpu_count: 1" in text and "pcie_width_min: 16" in text and "driver_branch: 580" in text
    (call,) = stub_verify.calls
    assert call["expectations"]["rig"].gpu_count == 1
    assert "rig" not in call["baselines"]  # accepted: the old baseline is not compared
    assert fake_runner.baselines["rig"]["gpus"] == _baseline_of(rig)["gpus"]


def test_accept_hardware_without_an_inventory_file_prints_the_block(
    cli: Invoke, fake_runner: FakeRunner, stub_verify: StubVerify, host_facts
) -> None:
    fake_runner.facts["localhost"] = host_facts("h200")
    stub_verify.hosts["localhost"] = report_entry(("gpu.count", "pass", "1 NVIDIA GPU(s)"))
    result = cli("verify", "localhost", "--accept-hardware")
    assert result.exit_code == 0, result.output
    assert "localhost: the host is not from an inventory file" in flat(result.stdout)
    assert "dlsetup_expect:" in result.stdout and "gpu_count: 1" in result.stdout
    assert "localhost: hardware recorded as the new baseline" in result.stdout


def test_diff_exits_9_on_drift_and_0_without(cli: Invoke, fake_runner: FakeRunner, host_facts) -> None:
    rig = host_facts("2x1080ti")
    fake_runner.facts["localhost"] = rig
    result = cli("diff", "localhost")
    assert result.exit_code == 0, result.output
    assert "no baseline yet" in result.stdout
    fake_runner.baselines["localhost"] = _baseline_of(rig)
    result = cli("diff", "localhost")
    assert result.exit_code == 0, result.output
    assert "no change since the last verified run" in result.stdout
    rig["gpus"][0]["pcie"]["width_current"] = 8
    result = cli("diff", "localhost", "--format", "json")
    assert result.exit_code == 9, result.output
    host = json.loads(result.stdout)["hosts"]["localhost"]
    assert host["drifted"] is True
    assert [(c["kind"], c["subject"], c["before"], c["after"]) for c in host["changes"]] == [
        ("link_width", "0000:05:00.0", 16, 8)
    ]
    assert "site.yml" not in fake_runner.playbooks and "baseline.yml" not in fake_runner.playbooks


def test_provision_without_previous_state_reports_no_drift(cli: Invoke, fake_runner: FakeRunner, host_facts) -> None:
    fake_runner.facts["localhost"] = host_facts("2x1080ti")
    result = cli("provision", "localhost", "--check")
    assert result.exit_code == 0, result.output
    assert "hardware changed" not in result.stdout
    assert "plan changed" not in result.stdout


# ------------------------------------------------------------------------------------------------
# for real, on this machine (no mocks)


def _has_nvidia_gpu() -> bool:
    devices = Path("/sys/bus/pci/devices")
    if Path("/proc/driver/nvidia/version").exists():
        return True
    if not devices.is_dir():
        return False
    for device in devices.iterdir():
        try:
            vendor = (device / "vendor").read_text().strip()
            pci_class = (device / "class").read_text().strip()
        except OSError:
            continue
        if vendor == "0x10de" and pci_class[:6] in ("0x0300", "0x0302"):
            return True
    return False


no_gpu_here = pytest.mark.skipif(_has_nvidia_gpu(), reason="these checks describe a host without an NVIDIA GPU")


@no_gpu_here
def test_real_facts_localhost(cli: Invoke, state_dir: Path) -> None:
    result = cli("facts", "localhost", "--format", "json")
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert list(payload) == ["hosts"]
    facts = payload["hosts"]["localhost"]
    assert list(facts) == FACT_KEYS
    assert facts["gpus"] == []
    assert facts["driver"]["error"] is None
    assert isinstance(facts["memory_mib"], int) and facts["memory_mib"] > 0
    assert facts["os"]["kernel"] == os.uname().release
    # the run left its log under the state dir, not in the user's home
    assert any((state_dir / "runs").iterdir())


@no_gpu_here
def test_real_verify_localhost(cli: Invoke) -> None:
    """This machine has no NVIDIA GPU, no record of a provision and no expectation: nothing can be checked, which
    is not a pass."""
    result = cli("verify", "localhost", "--format", "json")
    assert result.exit_code == 6, result.output
    entry = json.loads(result.stdout)["hosts"]["localhost"]
    assert entry["passed"] is False and entry["verdict"] == "nothing_checked"
    assert entry["counts"]["ran"] == 0 and "no NVIDIA GPU on PCI" in entry["reason"]
    checks = {c["id"]: c for c in entry["checks"]}
    assert checks["gpu.count"]["status"] == "skip"
    assert checks["gpu.count"]["message"].startswith("no NVIDIA GPU")
    assert checks["driver.loaded"]["status"] == "skip"
    assert all(c["status"] != "fail" for c in entry["checks"])


def test_real_host_without_its_interpreter_is_reached_but_failed(cli: Invoke, tmp_path: Path) -> None:
    """A real run against this machine with an inventory naming a Python that does not exist: the host is
    reached (the local connection works), so it is not "unreachable": exit 10, with the module's own cause."""
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(
        "all:\n  hosts:\n    here:\n      ansible_connection: local\n"
        "      ansible_python_interpreter: /nonexistent/bin/python3\n"
    )
    result = cli("facts", "-i", str(inventory), "here", "--format", "json")
    assert result.exit_code == 10, result.output
    error = json.loads(result.stdout)["errors"]["here"]
    assert error.startswith("reached, but the facts module failed: ")
    assert "/nonexistent/bin/python3" in error and "unreachable" not in error
    provision = cli("provision", "-i", str(inventory), "here", "--check")
    assert provision.exit_code == 10, provision.output
    assert "/nonexistent/bin/python3" in one_error_line(provision)


# preflight: the plan's sources are checked from the host before anything is changed


def test_provision_preflight_gets_the_plans_sources(
    cli: Invoke, fake_runner: FakeRunner, stub_verify: StubVerify, host_facts
) -> None:
    fake_runner.facts["localhost"] = host_facts("h200")
    stub_verify.hosts["localhost"] = report_entry(("gpu.count", "pass", "1 NVIDIA GPU(s)"))
    result = cli(
        "provision", "localhost", "--yes", "--nvidia-repo", "http://mirror.example:8080/nv",
        "--nvidia-repo-key", "0123456789abcdef0123456789ABCDEF01234567", "--pytorch-index", "http://mirror.example/whl",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    checks = fake_runner.call("preflight.yml").kwargs["host_extravars"]["localhost"]["dlsetup_preflight"]
    site = fake_runner.call("site.yml").kwargs["host_extravars"]["localhost"]
    repo = checks["apt_repository"]
    assert repo["url"] == "http://mirror.example:8080/nv/compute/cuda/repos/ubuntu2404/x86_64/"
    assert repo["key_url"] == repo["url"] + "3bf863cc.pub"
    assert repo["fingerprint"] == "0123456789ABCDEF0123456789ABCDEF01234567"
    # every package the run takes from the repository is checked there: on Ubuntu the driver is Ubuntu's own
    assert site["nvidia_driver_source"] == "distribution" and site["cuda_source"] == "nvidia"
    assert repo["packages"] == site["cuda_packages"]
    (torch,) = [i for i in checks["indexes"] if i["project"] == "torch"]
    assert torch == {
        "url": site["dl_stack_torch_index_url"],
        "project": "torch",
        "version": site["dl_stack_torch_version"],
    }
    assert torch["url"].startswith("http://mirror.example/whl/cu")


def test_provision_refused_by_the_preflight_changes_nothing(
    cli: Invoke, fake_runner: FakeRunner, stub_verify: StubVerify, host_facts
) -> None:
    fake_runner.facts["localhost"] = host_facts("h200")
    fake_runner.preflight_failed["localhost"] = (
        "http://10.0.0.1:9/compute/cuda/repos/ubuntu2404/x86_64/3bf863cc.pub: "
        "cannot connect ([Errno 111] Connection refused)"
    )
    result = cli("provision", "localhost", "--yes")
    assert result.exit_code == 8
    assert fake_runner.playbooks == ["facts.yml", "preflight.yml"]  # site.yml never ran
    message, hint = result.stderr.strip().splitlines()
    assert message == (
        "error: host localhost: http://10.0.0.1:9/compute/cuda/repos/ubuntu2404/x86_64/3bf863cc.pub: cannot connect "
        "([Errno 111] Connection refused); nothing was changed"
    )
    assert hint.startswith("hint: give a reachable mirror with --nvidia-repo")
    assert stub_verify.calls == []


def test_provision_with_tags_checks_only_the_sources_of_those_roles(
    cli: Invoke, fake_runner: FakeRunner, stub_verify: StubVerify, host_facts
) -> None:
    fake_runner.facts["localhost"] = host_facts("h200")
    result = cli("provision", "localhost", "--check", "--tags", "role::dl_stack")
    assert result.exit_code == 0, result.output
    checks = fake_runner.call("preflight.yml").kwargs["host_extravars"]["localhost"]["dlsetup_preflight"]
    assert checks["apt_repository"] == {} and [i["project"] for i in checks["indexes"]] == ["torch", "jax"]


def test_a_role_variable_the_plan_sets_is_refused_in_the_inventory(
    cli: Invoke, fake_runner: FakeRunner, tmp_path: Path
) -> None:
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(
        "all:\n  hosts:\n    rig1:\n      ansible_host: 192.0.2.10\n      dl_stack_torch_index_url: http://m/whl/cu126\n"
    )
    result = cli("provision", "-i", str(inventory), "rig1", "--yes")
    assert result.exit_code == 2
    assert fake_runner.playbooks == []
    assert result.stderr.strip().splitlines()[0] == (
        "error: host rig1: dl_stack_torch_index_url is set by dlsetup's plan and would override the inventory's "
        "value; set dlsetup_pytorch_index (or --pytorch-index) instead: the plan derives the role variable from it"
    )


def test_an_unknown_tag_is_refused_before_anything_runs(cli: Invoke, fake_runner: FakeRunner) -> None:
    result = cli("provision", "localhost", "--check", "--tags", "role::base,role::drivers")
    assert result.exit_code == 2
    assert fake_runner.playbooks == []
    assert result.stderr.startswith("error: unknown tag 'role::drivers' for --tags; known: hw_facts, base,")


@pytest.mark.parametrize(
    ("options", "ran"),
    [
        (["--tags", "base"], ["role::base"]),
        (["--tags", "role::base,cuda"], ["role::base", "role::cuda"]),
        (["--skip-tags", "dl_stack,laptop"], ["role::hw_facts", "role::base", "role::nvidia_driver", "role::cuda",
                                              "role::state"]),
        (["--tags", "base,cuda", "--skip-tags", "role::cuda"], ["role::base"]),
    ],
)  # fmt: skip
def test_tags_and_skip_tags_take_role_names(
    cli: Invoke, fake_runner: FakeRunner, host_facts, options: list[str], ran: list[str]
) -> None:
    fake_runner.facts["localhost"] = host_facts("2x1080ti")
    result = cli("provision", "localhost", "--check", "--no-verify", *options)
    assert result.exit_code == 0, result.output
    assert list(fake_runner.call("site.yml").kwargs["tags"]) == ran


def test_skip_tags_that_leave_nothing(cli: Invoke, fake_runner: FakeRunner) -> None:
    result = cli("provision", "localhost", "--check", "--tags", "base", "--skip-tags", "base")
    assert result.exit_code == 2
    assert result.stderr.startswith("error: --skip-tags leaves no role to run")
    assert fake_runner.playbooks == []


def test_an_unwritable_output_path_is_refused_before_anything_runs(
    cli: Invoke, fake_runner: FakeRunner, tmp_path: Path
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory\n")
    result = cli("provision", "localhost", "--check", "--junit-xml", str(blocker / "reports" / "verify.xml"))
    assert result.exit_code == 2
    assert fake_runner.playbooks == []
    assert result.stderr == (
        f"error: --junit-xml: {blocker}/reports cannot be written ({blocker} is not a directory); nothing was changed\n"
    )


@pytest.mark.parametrize("command", ["facts", "verify", "plan", "diff", "provision"])
def test_a_state_directory_that_cannot_be_written_is_bad_input(
    cli: Invoke, fake_runner: FakeRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: str
) -> None:
    blocker = tmp_path / "state-is-a-file"
    blocker.write_text("")
    monkeypatch.setenv("DLSETUP_STATE_DIR", str(blocker))
    args = ["--check"] if command == "provision" else []
    result = cli(command, "localhost", *args)
    assert result.exit_code == 2, result.output
    assert one_error_line(result) == (
        f"error: the state directory (DLSETUP_STATE_DIR): {blocker} cannot be written ({blocker} is not a "
        "directory); nothing was changed"
    )
    assert fake_runner.playbooks == []


def test_a_junit_path_on_a_pseudo_file_system_is_refused_up_front(cli: Invoke, fake_runner: FakeRunner) -> None:
    result = cli("verify", "localhost", "--junit-xml", "/proc/x")
    assert result.exit_code == 2, result.output
    assert one_error_line(result).startswith("error: --junit-xml: /proc cannot be written (/proc: ")
    assert fake_runner.playbooks == []


@pytest.mark.parametrize(
    ("option", "first", "second", "key"),
    [("--expect", "gpu_count=2", "gpu_count=1", "gpu_count"), ("--pin", "driver_branch=580", "driver_branch=535",
     "driver_branch")],
)  # fmt: skip
def test_an_option_given_twice_with_different_values_is_refused(
    cli: Invoke, fake_runner: FakeRunner, option: str, first: str, second: str, key: str
) -> None:
    result = cli("provision", "localhost", "--check", option, first, option, second)
    assert result.exit_code == 2, result.output
    old, new = first.split("=")[1], second.split("=")[1]
    assert one_error_line(result) == (
        f"error: {option} {key} given twice with different values ({old!r} and {new!r}): give it once"
    )
    assert fake_runner.playbooks == []
    # the same value twice is what was meant
    assert cli("provision", "localhost", "--check", option, first, option, first).exit_code != 2


# -- hosts and inventories as Ansible reads them ------------------------------------------------------------------
INVENTORY_WITH_BARE_HOSTS = (
    "all:\n  hosts:\n    bare:\n  children:\n    empty: {}\n    rigs:\n      hosts:\n        rig-1:\n"
)


def test_a_host_without_variables_and_an_empty_group(cli: Invoke, fake_runner: FakeRunner, tmp_path: Path) -> None:
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(INVENTORY_WITH_BARE_HOSTS)
    fake_runner.unreachable.update({"bare": SSH_FAILURE, "rig-1": SSH_FAILURE})
    for name in ("bare", "rig-1", "rigs"):  # known: they reach the facts run (and are unreachable there)
        result = cli("facts", "-i", str(inventory), name)
        assert result.exit_code == 3, result.output
    empty = cli("facts", "-i", str(inventory), "empty")
    assert empty.exit_code == 2
    assert one_error_line(empty) == f"error: group 'empty' in {inventory} has no hosts"


def test_inventories_that_cannot_be_read(cli: Invoke, fake_runner: FakeRunner, tmp_path: Path) -> None:
    (tmp_path / "loop-a").symlink_to(tmp_path / "loop-b")
    (tmp_path / "loop-b").symlink_to(tmp_path / "loop-a")
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    cases = {
        "loop-a": "is a loop of symbolic links",
        "fifo": "is not a file or a directory (a pipe or a device cannot be read)",
        "dangling": "is a broken symbolic link (No such file or directory)",
        "missing.yml": "does not exist",
    }
    for name, why in cases.items():
        result = cli("facts", "-i", str(tmp_path / name), "rig-1")
        assert result.exit_code == 2, (name, result.output)
        assert one_error_line(result) == f"error: inventory {tmp_path / name} {why}"
    assert fake_runner.playbooks == []


def test_an_ipv6_address_with_a_port_is_one_host(cli: Invoke, fake_runner: FakeRunner) -> None:
    fake_runner.unreachable["ipv6-0-0-0-0-0-0-0-1_2222"] = SSH_FAILURE
    result = cli("facts", "root@[::1]:2222", "--format", "json")
    assert result.exit_code == 3, result.output
    assert json.loads(result.stdout)["errors"] == {"ipv6-0-0-0-0-0-0-0-1_2222": f"unreachable: {SSH_FAILURE}"}
    (call,) = fake_runner.calls
    assert call.hosts == ["ipv6-0-0-0-0-0-0-0-1_2222"]


def test_old_framework_builds_are_pruned_only_after_a_verify_that_passed(
    cli: Invoke, fake_runner: FakeRunner, stub_verify: StubVerify, host_facts
) -> None:
    fake_runner.facts["localhost"] = host_facts("h200")
    stub_verify.hosts["localhost"] = report_entry(("framework.pytorch", "fail", "PyTorch does not import"))
    failed = cli("provision", "localhost", "--yes")
    assert failed.exit_code == 6 and "baseline.yml" not in fake_runner.playbooks  # the old build stays
    stub_verify.hosts["localhost"] = report_entry(("framework.pytorch", "pass", "torch 2.14.0"))
    passed = cli("provision", "localhost", "--yes")
    assert passed.exit_code == 0, passed.output
    host_vars = fake_runner.call("baseline.yml").kwargs["host_extravars"]["localhost"]
    assert host_vars["dlsetup_prune_venvs"] is True and "dlsetup_baseline" in host_vars
    # a converged run (nothing changed) has no new build, and the same hardware: no baseline run at all
    fake_runner.site_stats["localhost"] = HostStats(ok=40, changed=0)
    calls = len(fake_runner.calls)
    assert cli("provision", "localhost", "--yes").exit_code == 0
    assert "baseline.yml" not in [c.playbook for c in fake_runner.calls[calls:]]


def test_init_writes_the_example_inventory_and_never_overwrites(cli: Invoke, tmp_path: Path) -> None:
    target = tmp_path / "lab"
    result = cli("init", str(target))
    assert result.exit_code == 0, result.output
    hosts = target / "hosts.yml"
    assert hosts.read_text() == (Path(__file__).resolve().parents[2] / "inventory" / "hosts.yml").read_text()
    assert (target / "group_vars" / "all.yml").is_file()
    assert f"dlsetup facts -i {hosts} all" in result.stdout
    hosts.write_text("# mine\n")
    again = cli("init", str(target))
    assert again.exit_code == 2
    assert "exists already: dlsetup init never overwrites" in one_error_line(again)
    assert hosts.read_text() == "# mine\n"


def test_extra_vars_reach_the_provision_run_and_bad_ones_nothing(
    cli: Invoke, fake_runner: FakeRunner, host_facts
) -> None:
    fake_runner.facts["localhost"] = host_facts("2x1080ti")
    result = cli("provision", "localhost", "--check", "--no-verify", "-e", "dl_stack_keep_venvs=3", "-f", "3", "-vv")
    assert result.exit_code == 0, result.output
    site = fake_runner.call("site.yml")
    assert site.kwargs["extravars"] == {"dl_stack_keep_venvs": 3}
    refused = cli("provision", "localhost", "--check", "-e", "nvidia_driver_branch=570")
    assert refused.exit_code == 2
    assert refused.stderr.startswith("error: -e nvidia_driver_branch: set by dlsetup's plan")
    assert fake_runner.playbooks.count("site.yml") == 1  # the refused one ran nothing


def test_forks_user_and_verbosity_reach_every_run(cli: Invoke, fake_runner: FakeRunner, host_facts) -> None:
    fake_runner.facts["localhost"] = host_facts("xps13")
    assert cli("facts", "localhost", "-f", "7", "-u", "lab", "-vvv").exit_code == 0
    (call,) = fake_runner.calls
    assert (call.targets.connection.forks, call.targets.connection.user, call.targets.connection.verbosity) == (
        7, "lab", 3
    )  # fmt: skip


@pytest.mark.parametrize(
    "args",
    [
        ["facts", "bad!host", "--format", "json"],
        ["verify", "localhost", "--expect", "gpu_cnt=2", "--format", "json"],
        ["plan", "--os", "debian-12", "localhost", "--format", "json"],
        ["provision", "localhost", "--tags", "nope", "--format", "json"],
        ["diff", "localhost", "--pin", "driver_branch=abc", "--format", "json"],
    ],
)
def test_with_json_every_input_error_is_json_on_stdout_in_one_shape(
    cli: Invoke, fake_runner: FakeRunner, args: list[str]
) -> None:
    result = cli(*args)
    assert result.exit_code == 2, result.output
    payload = json.loads(result.stdout)
    assert set(payload) == {"error"} and set(payload["error"]) == {"kind", "message", "hint"}
    assert payload["error"]["message"] in result.stderr  # and the one line for a person, on stderr
    assert fake_runner.playbooks == []


def test_a_usage_error_with_json_is_json_too(state_dir: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "dlsetup", "facts", "--format", "json", "--frobnicate", "x"],
                          capture_output=True, text=True, check=False)  # fmt: skip
    assert done.returncode == 2
    assert json.loads(done.stdout)["error"]["kind"] == "usage"


def test_provision_json_is_one_document_and_the_progress_goes_to_stderr(
    cli: Invoke, fake_runner: FakeRunner, stub_verify: StubVerify, host_facts
) -> None:
    fake_runner.facts["localhost"] = host_facts("2x1080ti")
    fake_runner.site_stats["localhost"] = HostStats(ok=40, changed=2, skipped=30)
    fake_runner.site_results["localhost"] = [
        ("Install the driver packages", "dlsetup_driver_packages", {"changed": True}),
        ("Read the driver state", "ansible.builtin.command", {"changed": False}),
    ]
    result = cli("provision", "localhost", "--check", "--format", "json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    host = document["hosts"]["localhost"]
    assert document["check"] is True and document["changed"] == 2
    assert host["plan"]["driver"]["branch"] == "580"
    assert host["stats"] == {"ok": 40, "changed": 2, "failures": 0, "skipped": 30, "unreachable": False}
    assert host["changed_tasks"] == ["Install the driver packages"]
    assert host["failed_tasks"] == [] and host["unreachable"] is None
    assert "error" not in document and document["log"]
    assert "localhost: plan" in result.stderr  # what a person reads is on stderr


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        ("dlsetup fa", ["facts"]),
        ("dlsetup plan --format ", ["table", "json"]),
        ("dlsetup plan --os debian", ["debian-12", "debian-13"]),
        ("dlsetup provision x --skip-tags dl", ["dl_stack"]),
    ],
)
def test_shell_completion(words: str, expected: list[str]) -> None:
    """As bash asks (the script `dlsetup --install-completion` installs sets these variables)."""
    cword = len(words.split()) - (0 if words.endswith(" ") else 1)
    env = {**os.environ, "_DLSETUP_COMPLETE": "complete_bash", "COMP_WORDS": words, "COMP_CWORD": str(cword)}
    done = subprocess.run([sys.executable, "-m", "dlsetup"], env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == expected


@pytest.mark.parametrize("command", [None, "facts", "plan", "verify", "provision", "diff", "init", "gpus"])
def test_help_shows_no_type_placeholders(cli: Invoke, command: str | None) -> None:
    """A flag takes no value and HOST is named already, so their help shows no type (Typer's own display says
    '<bool>' and '<list[str]>', also on the -h/--help and --install-completion rows that Typer adds), and a counted
    flag (-v) shows no default."""
    text = cli(*([command] if command else []), "--help").stdout
    assert "Show this message and exit." in text
    assert not [line for line in text.splitlines() if re.search(r"<(bool|str|int|list)|\[default: 0\]", line)]


def test_init_json(cli: Invoke, tmp_path: Path) -> None:
    result = cli("init", str(tmp_path / "inv"), "--format", "json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["written"] == [
        str(tmp_path / "inv" / "group_vars" / "all.yml"),
        str(tmp_path / "inv" / "hosts.yml"),
    ]
    assert document["next"].startswith(f"edit the addresses in {tmp_path / 'inv' / 'hosts.yml'}")
