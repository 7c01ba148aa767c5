"""A verify without expectations: the defaults of PCI and of the plan record, the verdict and the counts.

Facts come from ``collector.collect()`` over the committed captures (``captured_facts`` in conftest.py, and below
the 2x1080ti rig with a lost GPU); records, probe outputs and the lost-GPU scenario are in tests/fixtures/verify
(SOURCE.md says where each comes from)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from dlsetup.facts.hwparse import collector
from dlsetup.facts.model import HostFacts
from dlsetup.facts.pcie import explain_pcie
from dlsetup.facts.record import HostRecord
from dlsetup.plan.request import request_offline
from dlsetup.plan.resolve import resolve_stack
from dlsetup.verify import checks
from dlsetup.verify.defaults import from_record, nothing_checked_reason, with_defaults
from dlsetup.verify.expect import Expectations, merge, parse_expect_flags
from dlsetup.verify.probes import JaxProbe, TorchProbe
from dlsetup.verify.report import HostReport, VerifyReport

REPO = Path(__file__).resolve().parents[2]
FIX = REPO / "tests" / "fixtures"
VERIFY = FIX / "verify"
NO_EXPECTATIONS = Expectations()
# Not captured (the H200 runs no JAX): what JAX_PROBE prints where jax sees one GPU.
JAX_ONE_GPU = JaxProbe.parse({"jax": "0.8.1", "gpu_devices": 1})


def fixture(name: str) -> Any:
    return json.loads((VERIFY / name).read_text())


def record(name: str) -> HostRecord:
    parsed = HostRecord.parse(fixture(name))
    assert parsed is not None
    return parsed


def torch_probe(name: str) -> TorchProbe:
    return TorchProbe.parse(fixture(name))


def jax_probe(name: str) -> JaxProbe:
    return JaxProbe.parse(fixture(name))


@pytest.fixture
def h200(host_facts) -> HostFacts:
    return explain_pcie(HostFacts.from_dict(host_facts("h200")))


@pytest.fixture
def xps13(host_facts) -> HostFacts:
    return explain_pcie(HostFacts.from_dict(host_facts("xps13")))


def by_id(results: list[checks.CheckResult]) -> dict[str, checks.CheckResult]:
    return {r.id: r for r in results}


def test_a_provisioned_h200_passes_on_the_record_alone(h200: HostFacts) -> None:
    expect = with_defaults(NO_EXPECTATIONS, h200, record("record-h200.json"))
    results = checks.evaluate(h200, expect, torch_probe("h200-torch-probe.json"), JAX_ONE_GPU)
    assert [r.id for r in results] == list(checks.CHECK_IDS)
    found = by_id(results)
    ran = {r.id for r in results if r.status != "skip"}
    assert {r.id: r.status for r in results if r.id in ran} == dict.fromkeys(ran, "pass")
    # nothing was asked of the RAM, the disk, the GPU model or memory: those say so
    assert {r.id for r in results if r.status == "skip"} == {
        "host.memory",
        "host.root_disk_ssd",
        "gpu.model",
        "gpu.memory",
        "gpu.pcie_lane_source",  # the VM's GPU sits on the root complex
    }
    assert all(r.message.startswith("not checked: no ") for r in results if r.status == "skip")
    # what was expected, and from where
    assert (found["gpu.count"].expected, found["gpu.count"].actual, found["gpu.count"].expected_from) == (1, 1, "PCI")
    assert (found["driver.branch"].expected, found["driver.branch"].expected_from) == ("580", "plan record")
    assert (found["driver.flavor"].expected, found["driver.flavor"].actual) == ("open", "open")
    assert (found["driver.cuda"].expected, found["driver.cuda"].expected_from) == ("13.0", "plan record")
    assert found["framework.pytorch"].expected_from == "plan record"
    assert (found["framework.pytorch.version"].expected, found["framework.pytorch.version"].actual) == (
        "2.11.0",
        "2.11.0+cu130",
    )
    assert (found["framework.pytorch.variant"].expected, found["framework.pytorch.variant"].actual) == (
        "cu130",
        "cu130",
    )
    assert found["framework.jax"].expected_from == "driver"
    assert found["framework.pytorch.bandwidth"].expected_from == "default"
    report = HostReport.of(results)
    assert (report.verdict, report.passed) == ("passed", True)
    assert (report.counts.ran, report.counts.passed, report.counts.skipped) == (16, 16, 5)


def test_explicit_expectations_override_the_record_and_say_so(h200: HostFacts) -> None:
    flags = parse_expect_flags(["driver_branch=570"])
    explicit = merge({"gpu_count": 2}, flags, host="h200")
    expect = with_defaults(explicit, h200, record("record-h200.json"))
    assert expect.origins == {
        "gpu_count": "inventory",
        "driver_branch": "--expect",
        "driver_flavor": "plan record",
        "cuda_version": "plan record",
        "framework": "plan record",
        "pytorch_version": "plan record",
        "pytorch_variant": "plan record",
    }
    found = by_id(checks.evaluate(h200, expect, torch_probe("h200-torch-probe.json"), JAX_ONE_GPU))
    branch = found["driver.branch"]
    assert (branch.status, branch.expected, branch.actual, branch.expected_from) == ("fail", "570", "580", "--expect")
    count = found["gpu.count"]
    assert (count.status, count.expected_from) == ("fail", "inventory")
    assert found["driver.flavor"].status == "pass"


def test_an_explicit_framework_drops_the_recorded_pytorch_build(h200: HostFacts) -> None:
    expect = with_defaults(Expectations(framework="jax"), h200, record("record-h200.json"))
    assert (expect.framework, expect.pytorch_version, expect.pytorch_variant) == ("jax", None, None)
    assert not expect.wants("pytorch") and expect.wants("jax")


def test_a_gpu_on_pci_that_nvidia_smi_does_not_list_fails_by_bus_id(tmp_path: Path) -> None:
    facts = HostFacts.from_dict(collect_lost_gpu_rig(tmp_path))
    assert [g.visible_to_driver for g in facts.gpus] == [True, False]
    expect = with_defaults(NO_EXPECTATIONS, facts, None)
    found = by_id(checks.evaluate(facts, expect, torch_probe("no-torch-probe.json"), jax_probe("no-jax-probe.json")))
    count, visible = found["gpu.count"], found["gpu.visible"]
    assert (count.status, count.expected, count.actual, count.expected_from) == ("fail", 2, 1, "PCI")
    assert "missing: 0000:06:00.0" in count.message
    assert visible.status == "fail" and "0000:06:00.0" in visible.message and "0000:05:00.0" not in visible.message
    report = HostReport.of(found.values())
    assert report.verdict == "failed" and "gpu.count" in report.reason and "gpu.visible" in report.reason


def test_the_whole_rig_listed_passes_the_pci_default(host_facts) -> None:
    facts = HostFacts.from_dict(host_facts("2x1080ti"))
    found = by_id(checks.evaluate(facts, with_defaults(NO_EXPECTATIONS, facts, None), None, None))
    assert (found["gpu.count"].status, found["gpu.count"].actual) == ("pass", 2)
    assert found["gpu.count"].message == "the driver lists all 2 GPU(s) on PCI"


def test_a_driver_that_does_not_answer_leaves_the_pci_count_unchecked(host_facts) -> None:
    facts = HostFacts.from_dict(host_facts("xps15"))  # GTX 1050 Ti Mobile on PCI, no driver loaded
    found = by_id(checks.evaluate(facts, with_defaults(NO_EXPECTATIONS, facts, None), None, None))
    assert found["gpu.count"].status == "skip" and "driver does not answer" in found["gpu.count"].message
    assert found["driver.loaded"].status == "fail"
    # an explicit count is still checked against PCI
    found = by_id(checks.evaluate(facts, Expectations(gpu_count=1), None, None))
    assert found["gpu.count"].status == "pass"


def test_a_record_that_names_pytorch_fails_when_torch_does_not_import(h200: HostFacts) -> None:
    expect = with_defaults(NO_EXPECTATIONS, h200, record("record-h200.json"))
    results = checks.evaluate(h200, expect, torch_probe("no-torch-probe.json"), jax_probe("no-jax-probe.json"))
    found = by_id(results)
    torch = found["framework.pytorch"]
    assert (torch.status, torch.expected, torch.expected_from) == ("fail", "pytorch", "plan record")
    assert torch.message == "PyTorch does not import: No module named 'torch'"
    jax = found["framework.jax"]
    assert (jax.status, jax.expected_from) == ("fail", "plan record")
    for later in ("version", "variant", "devices", "arch", "matmul", "bandwidth"):
        r = found[f"framework.pytorch.{later}"]
        assert r.status == "skip" and r.message == "cannot run: PyTorch does not import: No module named 'torch'"
    report = HostReport.of(results)
    assert (report.verdict, report.counts.failed) == ("failed", 2)


def test_a_cpu_host_whose_provision_stopped_before_pytorch_fails(xps13: HostFacts) -> None:
    # the issue: no GPU, a record of a plan with PyTorch (cpu), and no torch on the host
    rec = record("record-xps13.json")
    assert from_record(rec) == {"framework": "pytorch", "pytorch_version": "2.15.0", "pytorch_variant": "cpu"}
    expect = with_defaults(NO_EXPECTATIONS, xps13, rec)
    results = checks.evaluate(xps13, expect, torch_probe("no-torch-probe.json"), jax_probe("no-jax-probe.json"))
    report = HostReport.of(results, nothing_checked=nothing_checked_reason(xps13, rec, NO_EXPECTATIONS))
    assert report.verdict == "failed" and not report.passed
    assert [r.id for r in results if r.status == "fail"] == ["framework.pytorch"]
    # torch present, but the CUDA wheel where the plan installs the cpu one
    cuda_wheel = torch_probe("h200-torch-probe.json")
    found = by_id(checks.evaluate(xps13, expect, cuda_wheel, jax_probe("no-jax-probe.json")))
    assert found["framework.pytorch"].status == "pass"
    variant = found["framework.pytorch.variant"]
    assert (variant.status, variant.expected, variant.actual) == ("fail", "cpu", "cu130")
    assert found["framework.pytorch.version"].status == "fail"


def test_no_gpu_and_no_record_is_nothing_checked(xps13: HostFacts) -> None:
    expect = with_defaults(NO_EXPECTATIONS, xps13, None)
    assert expect.to_dict() == {}
    results = checks.evaluate(xps13, expect, torch_probe("no-torch-probe.json"), jax_probe("no-jax-probe.json"))
    assert {r.status for r in results} == {"skip"}
    assert all(r.message for r in results)  # each says why
    reason = nothing_checked_reason(xps13, None, NO_EXPECTATIONS)
    report = HostReport.of(results, nothing_checked=reason)
    assert (report.verdict, report.passed, report.reason) == ("nothing_checked", False, reason)
    assert "no NVIDIA GPU on PCI" in reason and "/etc/ansible/facts.d/dlsetup.fact" in reason
    assert "--expect" in reason
    whole = VerifyReport({"xps13": report}, None)
    assert not whole.passed and whole.failed_hosts == ["xps13"]


@pytest.mark.parametrize(
    ("expect", "torch", "ran"),
    [
        (Expectations(memory_min_mib=1024), "no-torch-probe.json", "host.memory"),
        (NO_EXPECTATIONS, "h200-torch-probe.json", "framework.pytorch"),  # torch there, though nobody asked
    ],
)
def test_no_gpu_and_no_record_passes_when_something_did_run(
    xps13: HostFacts, expect: Expectations, torch: str, ran: str
) -> None:
    results = checks.evaluate(xps13, expect, torch_probe(torch), jax_probe("no-jax-probe.json"))
    report = HostReport.of(results, nothing_checked="unused")
    assert [r.id for r in results if r.status != "skip"] == [ran]
    assert (report.verdict, report.counts.ran) == ("passed", 1)


def test_the_counts_are_in_the_json_and_follow_the_schema(h200: HostFacts) -> None:
    expect = with_defaults(NO_EXPECTATIONS, h200, record("record-h200.json"))
    results = checks.evaluate(h200, expect, torch_probe("no-torch-probe.json"), jax_probe("no-jax-probe.json"))
    document = VerifyReport({"h200": HostReport.of(results)}, None).to_dict()
    entry = document["hosts"]["h200"]
    assert entry["counts"] == {"ran": 10, "passed": 8, "failed": 2, "warned": 0, "skipped": 11}
    assert entry["counts"]["ran"] + entry["counts"]["skipped"] == len(entry["checks"])
    assert (entry["verdict"], entry["passed"]) == ("failed", False)
    assert entry["reason"] == "2 of 10 check(s) that ran failed: framework.pytorch, framework.jax"
    assert entry["checks"][2]["expected_from"] == "PCI"
    schema = json.loads((REPO / "docs" / "schemas" / "verify.schema.json").read_text())
    assert list(Draft202012Validator(schema).iter_errors(document)) == []
    assert VerifyReport.from_dict(document).to_dict() == document


def test_a_report_whose_counts_or_verdict_disagree_with_its_checks_is_refused(h200: HostFacts) -> None:
    results = checks.evaluate(h200, Expectations(), None, None)
    entry = VerifyReport({"h": HostReport.of(results)}, None).to_dict()["hosts"]["h"]
    for key, wrong in (("counts", {**entry["counts"], "ran": 0}), ("verdict", "nothing_checked"), ("passed", False)):
        with pytest.raises(ValueError, match="disagree"):
            VerifyReport.from_dict({"hosts": {"h": {**entry, key: wrong}}})
    # a report that says only passed and checks (as earlier versions wrote it) gets the rest from its checks
    old = VerifyReport.from_dict({"hosts": {"h": {"passed": entry["passed"], "checks": entry["checks"]}}})
    assert old.to_dict()["hosts"]["h"] == entry


# ------------------------------------------------------------------------------------------------
# the 2x1080ti rig whose second GPU the driver lost (tests/fixtures/verify/smi-2x1080ti-one-lost)


def collect_lost_gpu_rig(work: Path) -> dict[str, Any]:
    """``collector.collect()`` over the 2x1080ti rig's sysfs tree, with a fake nvidia-smi listing one GPU."""
    dev_vm = FIX / "hosts" / "dev-vm-debian12"
    proc = work / "proc"
    (proc / "self").mkdir(parents=True)
    (proc / "sys" / "kernel").mkdir(parents=True)
    (proc / "cpuinfo").write_text((dev_vm / "cpuinfo").read_text())
    (proc / "meminfo").write_text((dev_vm / "meminfo").read_text())
    (proc / "self" / "mountinfo").write_text("")
    (proc / "sys" / "kernel" / "osrelease").write_text("6.18.44-fc-v657-gpu\n")
    fake_smi = REPO / "tests" / "fakes" / "nvidia-smi"

    def smi(argv: list[str]) -> tuple[int, str, str]:
        env = dict(os.environ, DLSETUP_FAKE_SMI_DIR=str(VERIFY / "smi-2x1080ti-one-lost"))
        env.pop("DLSETUP_FAKE_SMI_LOG", None)
        out = subprocess.run([str(fake_smi), *argv[1:]], capture_output=True, text=True, env=env, check=False)
        return out.returncode, out.stdout, out.stderr

    facts = collector.collect(
        smi,
        sysfs_root=str(FIX / "sysfs" / "2x1080ti-rig"),
        nvidia_proc_dir=str(FIX / "nvidia-proc" / "410.78-proprietary"),
        pci_ids_paths=(str(FIX / "pci.ids" / "pci.ids.excerpt"),),
        nvidia_smi_path=str(fake_smi),
        proc_root=str(proc),
        os_release_paths=(str(FIX / "hosts" / "h200-ubuntu2404" / "os-release"),),
        container_markers=(str(work / "no-container-marker"),),
        cuda_driver_version=lambda: 10000,
    )
    return dict(json.loads(json.dumps(facts)))


def test_a_provision_with_tags_is_expected_to_have_applied_only_its_roles() -> None:
    """`provision --tags role::nvidia_driver`: the record names the roles that ran; the CUDA toolkit and the
    frameworks it did not install are not expected."""
    plan = resolve_stack(request_offline("debian-12", ["GTX 1080 Ti", "GTX 1080 Ti"])).to_dict()
    everything = from_record(HostRecord(plan=plan))
    assert everything["framework"] == "pytorch,jax" and everything["driver_branch"] == "580"
    assert everything["cuda_version"] == "12.9"  # the toolkit's, higher than the cu126 wheel's 12.6
    driver_only = from_record(HostRecord(plan=plan, roles=("hw_facts", "base", "nvidia_driver")))
    assert driver_only == {"driver_branch": "580", "driver_flavor": "proprietary"}
    frameworks = from_record(HostRecord(plan=plan, roles=("nvidia_driver", "dl_stack")))
    assert frameworks["cuda_version"] == "12.6" and frameworks["framework"] == "pytorch,jax"
