"""Verification checks as pure functions: a host's facts + expectations (+ probe results) → check results.

The testinfra suite (``dlsetup/verify/suite``) gathers facts and probes on the host and calls these; they are
plain Python so every rule is unit-tested on real captured facts. Check ids are documented in docs/verify.md.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from packaging.version import InvalidVersion, Version
from pydantic import ConfigDict
from pydantic.dataclasses import dataclass

from dlsetup.facts.baseline import HardwareBaseline
from dlsetup.facts.hwparse.common import driver_major, normalize_bus_id
from dlsetup.facts.model import GpuFacts, HostFacts, PcieLink
from dlsetup.facts.pcie import rule_of, shared_with
from dlsetup.plan.lanes import Cpu, load_cpus
from dlsetup.verify.expect import FROM_BASELINE, FROM_PCI, Expectations
from dlsetup.verify.probes import JaxProbe, TorchDevice, TorchProbe

Status = Literal["pass", "fail", "warn", "skip"]

# Per-lane, per-direction payload bandwidth in GB/s: transfer rate x encoding / 8 (8b/10b for Gen1/2,
# 128b/130b for Gen3-5; Gen6 rounded). The PCI-SIG rates and encodings; docs/verify.md has the table.
PCIE_LANE_GBPS = {1: 0.25, 2: 0.5, 3: 0.985, 4: 1.969, 5: 3.938, 6: 7.877}
DEFAULT_BANDWIDTH_MIN_RATIO = 0.6


@dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class CheckResult:
    """One check's outcome, as the verify report (``docs/schemas/verify.schema.json``) carries it."""

    id: str
    status: Status
    expected: Any
    actual: Any
    message: str
    # where ``expected`` came from: "--expect", "inventory", "plan record", "PCI", "driver", "default" (None: nothing
    # was expected)
    expected_from: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _against_baseline(facts: HostFacts, baseline: HardwareBaseline | None) -> str:
    """`` missing since the baseline of DATE: GTX 1080 Ti at 0000:06:00.0; new: ...`` (empty without one)."""
    if baseline is None:
        return ""
    now = {g.pci_bus_id for g in facts.gpus}
    missing = [g.label for g in baseline.gpus if g.pci_bus_id not in now]
    added = [g.label for g in facts.gpus if baseline.gpu(g.pci_bus_id) is None]
    when = f" of {baseline.recorded_at}" if baseline.recorded_at else ""
    parts = [f"missing since the baseline{when}: {', '.join(missing)}"] if missing else []
    parts += [f"not in the baseline: {', '.join(added)}"] if added else []
    hint = " (reseat or power it, or run with --accept-hardware if the change is meant)" if parts else ""
    return "; " + "; ".join(parts) + hint if parts else ""


def check_gpu_count(facts: HostFacts, expect: Expectations, baseline: HardwareBaseline | None = None) -> CheckResult:
    """The GPUs on PCI are the expected number, and the driver (when it answers) lists every one of them. Without
    an explicit ``gpu_count`` the expectation is the hardware baseline's count, else PCI's own (``with_defaults``):
    then the driver's list is what is checked, and a driver that does not answer leaves nothing to compare. A
    count that differs names the GPUs missing since the baseline (and those new to it)."""
    on_pci = len(facts.gpus)
    if expect.gpu_count is None:
        text = "no NVIDIA GPU on PCI" if on_pci == 0 else f"{on_pci} NVIDIA GPU(s) on PCI"
        return CheckResult("gpu.count", "skip", None, on_pci, f"{text} and no gpu_count expected: nothing to compare")
    if on_pci != expect.gpu_count:
        found = ", ".join(g.label for g in facts.gpus) or "none"
        return CheckResult(
            "gpu.count",
            "fail",
            expect.gpu_count,
            on_pci,
            f"expected {expect.gpu_count} NVIDIA GPU(s), PCI shows {on_pci}: {found}"
            + _against_baseline(facts, baseline),
        )
    visible = facts.visible_gpus
    from_pci = expect.origin("gpu_count") in (FROM_PCI, FROM_BASELINE)
    if facts.driver.loaded and len(visible) != on_pci:
        missing = ", ".join(g.pci_bus_id for g in facts.gpus if not g.visible_to_driver)
        return CheckResult(
            "gpu.count",
            "fail",
            expect.gpu_count,
            len(visible),
            f"PCI shows {on_pci} GPU(s) but the driver lists {len(visible)}; missing: {missing}",
        )
    if from_pci and not facts.driver.loaded:
        return CheckResult(
            "gpu.count",
            "skip",
            expect.gpu_count,
            None,
            f"{on_pci} NVIDIA GPU(s) on PCI, but the driver does not answer to list them (see driver.loaded)",
        )
    if from_pci:
        return CheckResult(
            "gpu.count", "pass", expect.gpu_count, len(visible), f"the driver lists all {on_pci} GPU(s) on PCI"
        )
    return CheckResult("gpu.count", "pass", expect.gpu_count, on_pci, f"{on_pci} NVIDIA GPU(s)")


def check_gpu_visible(facts: HostFacts) -> CheckResult:
    gpus = facts.gpus
    if not gpus:
        return CheckResult("gpu.visible", "skip", None, 0, "no NVIDIA GPU on PCI")
    if not facts.driver.loaded:
        return CheckResult(
            "gpu.visible", "skip", len(gpus), None, "the NVIDIA driver is not answering (see driver.loaded)"
        )
    hidden = [g for g in gpus if not g.visible_to_driver]
    if hidden:
        labels = ", ".join(g.label for g in hidden)
        return CheckResult(
            "gpu.visible",
            "fail",
            len(gpus),
            len(gpus) - len(hidden),
            f"on PCI but not listed by the driver: {labels} (check dmesg for Xid errors, reseat, power)",
        )
    return CheckResult("gpu.visible", "pass", len(gpus), len(gpus), "every GPU on PCI is listed by the driver")


def check_gpu_model(facts: HostFacts, expect: Expectations) -> CheckResult:
    if expect.gpu_model is None:
        return CheckResult("gpu.model", "skip", None, None, "not checked: no gpu_model expected")
    gpus = facts.gpus
    if not gpus:
        return CheckResult("gpu.model", "fail", expect.gpu_model, None, "no NVIDIA GPU on PCI")
    want = expect.gpu_model.lower()
    wrong = [
        g for g in gpus if (g.pci_id or "") != want and not any(want in n.lower() for n in (g.name, g.pci_name) if n)
    ]
    actual = [g.model for g in gpus]
    if wrong:
        labels = ", ".join(g.label for g in wrong)
        return CheckResult("gpu.model", "fail", expect.gpu_model, actual, f"not a {expect.gpu_model}: {labels}")
    return CheckResult("gpu.model", "pass", expect.gpu_model, actual, f"every GPU matches {expect.gpu_model!r}")


def check_gpu_memory(facts: HostFacts, expect: Expectations) -> CheckResult:
    minimum = expect.gpu_memory_min_mib
    if minimum is None:
        return CheckResult("gpu.memory", "skip", None, None, "not checked: no gpu_memory_min_mib expected")
    gpus = facts.gpus
    if not gpus:
        return CheckResult("gpu.memory", "fail", minimum, None, "no NVIDIA GPU on PCI")
    unknown = [g for g in gpus if g.memory_mib is None]
    if unknown:
        return CheckResult(
            "gpu.memory",
            "skip",
            minimum,
            None,
            "GPU memory is unknown without a working driver: " + ", ".join(g.label for g in unknown),
        )
    small = [g for g in gpus if (g.memory_mib or 0) < minimum]
    actual = [g.memory_mib for g in gpus]
    if small:
        detail = ", ".join(f"{g.label} has {g.memory_mib} MiB" for g in small)
        return CheckResult("gpu.memory", "fail", minimum, actual, f"below the minimum: {detail}")
    return CheckResult("gpu.memory", "pass", minimum, actual, f">= {minimum} MiB on every GPU")


def host_cpu(facts: HostFacts) -> Cpu | None:
    """The host's CPU in dlsetup's CPU catalogue (``plan/data/cpus.yaml``), ``None`` when it is not listed."""
    return load_cpus().match_model(facts.cpu.model)


def _cpu_ports(facts: HostFacts) -> list[str]:
    """The CPU root ports the GPUs sit behind (GPUs behind one switch share one)."""
    ports = {g.pcie_attach.root_port for g in facts.gpus if g.pcie_attach and g.pcie_attach.to == "cpu"}
    return sorted(p for p in ports if p)


def lane_budget(facts: HostFacts, gpu: GpuFacts) -> str | None:
    """Where the lanes of a GPU in a narrow slot went, from where they come (``pcie_attach``) and the CPU
    catalogue: the chipset's uplink, or the CPU's lanes split between the slots in use; ``None`` when where the
    lanes come from is not known."""
    attach = gpu.pcie_attach
    if attach is None or attach.to == "unknown":
        return None
    cpu = host_cpu(facts)
    slot = gpu.pcie.slot_width_max
    if attach.to == "chipset":
        width = f"x{slot} " if slot else ""
        if cpu is None:
            return (
                f"it hangs off the chipset ({width}behind the chipset's link to the CPU, shared with every disk and "
                f"NIC; root port {attach.root_port}): move it to a CPU slot"
            )
        data = load_cpus()
        link = next(c for c in data.chipset_links if c.name == cpu.chipset_link)
        uplink = link.width * data.per_lane(link.gen)
        return (
            f"it hangs off the chipset ({width}behind {link.name}, about {uplink:.1f} GB/s shared with every disk and "
            f"NIC; root port {attach.root_port}): move it to a CPU slot"
        )
    if cpu is None:
        model = facts.cpu.model or "the CPU"
        return (
            f"its lanes come from the CPU (root port {attach.root_port}), but {model} is not in dlsetup's CPU "
            "catalogue, so its lane budget is not known: the board's manual says how it splits the CPU's lanes"
        )
    ports = len(_cpu_ports(facts))
    if cpu.lanes < 16 * ports:
        return f"the {cpu.name}'s {cpu.lanes} lanes are split between {ports} slots"
    slots = f"each of the {ports} slots in use" if ports > 1 else "its slot"
    return (
        f"the {cpu.name} has {cpu.lanes} lanes, enough for x16 in {slots}: the board wires this slot x{slot}; "
        "a slot wired x16 gives the GPU more"
    )


def width_diagnosis(pcie: PcieLink, budget: str | None = None) -> str | None:
    """Why a link runs narrower than the GPU can: the slot's lanes (``budget`` says where they went, when that is
    known), or a link that trained down."""
    current, gpu_max, slot_max = pcie.width_current, pcie.width_max, pcie.slot_width_max
    if current is None or gpu_max is None or current >= gpu_max:
        return None
    if slot_max is not None and slot_max < gpu_max:
        if current < slot_max:
            return (
                f"link trained down to x{current}: the slot gives x{slot_max} (itself below the GPU's x{gpu_max})"
                " and the link runs below even that (reseat the card, check the riser, clean the contacts)"
            )
        if budget:
            return f"the slot gives only x{slot_max} while the GPU can do x{gpu_max}: {budget}"
        return (
            f"the slot gives only x{slot_max} (upstream port maximum) while the GPU can do x{gpu_max}: the CPU's "
            "lane budget or the board's slot wiring/bifurcation, not a fault of the card"
        )
    slot_text = f"x{slot_max}" if slot_max is not None else "unknown"
    return (
        f"link trained down to x{current} although GPU (x{gpu_max}) and slot ({slot_text}) can do more: "
        "reseat the card, check the riser cable, clean the contacts"
    )


def check_pcie_width(facts: HostFacts, expect: Expectations, baseline: HardwareBaseline | None = None) -> CheckResult:
    """Each link's width: below ``pcie_width_min``, or below what the same GPU ran at in the hardware baseline, is
    a failure; narrower than the GPU can do is a warning; each says why (the slot, or a link that trained down)."""
    gpus = facts.gpus
    if not gpus:
        return CheckResult("gpu.pcie_width", "skip", expect.pcie_width_min, None, "no NVIDIA GPU on PCI")
    actual = [g.pcie.width_current for g in gpus]
    if any(w is None for w in actual):
        return CheckResult(
            "gpu.pcie_width", "skip", expect.pcie_width_min, actual, "the link width is not readable on every GPU"
        )
    failures: list[str] = []
    warnings: list[str] = []
    for gpu in gpus:
        current = gpu.pcie.width_current or 0
        why = width_diagnosis(gpu.pcie, lane_budget(facts, gpu))
        before = baseline.gpu(gpu.pci_bus_id) if baseline is not None else None
        was = before.width_current if before is not None and before.pci_id in (None, gpu.pci_id) else None
        had = f" (the baseline had x{was})" if was else ""
        if expect.pcie_width_min is not None and current < expect.pcie_width_min:
            reason = why or f"the GPU itself is an x{gpu.pcie.width_max} device"
            failures.append(f"{gpu.label} runs x{current}, expected >= x{expect.pcie_width_min}{had}: {reason}")
        elif was is not None and current < was:
            reason = why or "the link or slot changed since"
            failures.append(f"{gpu.label} runs x{current}, narrower than x{was}{had}: {reason}")
        elif why and "trained down" in why:
            warnings.append(f"{gpu.label}: {why}")
        elif why:
            warnings.append(f"{gpu.label} runs x{current}: {why}")
    if failures:
        return CheckResult("gpu.pcie_width", "fail", expect.pcie_width_min, actual, "; ".join(failures))
    if warnings:
        return CheckResult("gpu.pcie_width", "warn", expect.pcie_width_min, actual, "; ".join(warnings))
    return CheckResult(
        "gpu.pcie_width", "pass", expect.pcie_width_min, actual, "every GPU runs at the width its slot allows"
    )


def _sharing(facts: HostFacts, gpu: GpuFacts) -> str:
    """`` (shares switch 0000:03:00.0 with GPU 1 (...))``: the uplink its traffic shares; empty when none."""
    parts = []
    for group, others in shared_with(facts, gpu):
        what = "switch" if group.kind == "switch" else "root port"
        parts.append(f"shares {what} {group.via} with {', '.join(o.label for o in others)}")
    return f" ({'; '.join(parts)})" if parts else ""


def check_pcie_lane_source(facts: HostFacts, expect: Expectations) -> CheckResult:
    """Where each GPU's lanes come from (``pcie_attach``). A GPU on the chipset's lanes fails when
    ``pcie_lane_source: cpu`` is expected, and warns without it when its slot is narrower than the GPU (the chipset
    costs it lanes); a GPU whose lanes' origin is unknown is skipped."""
    wanted = expect.pcie_lane_source
    gpus = [g for g in facts.gpus if g.pcie_attach is not None]
    if not gpus:
        return CheckResult("gpu.pcie_lane_source", "skip", wanted, None, "no NVIDIA GPU on PCI")
    actual = [g.pcie_attach.to for g in gpus if g.pcie_attach]
    failures: list[str] = []
    warnings: list[str] = []
    known: list[str] = []
    for gpu in gpus:
        attach = gpu.pcie_attach
        assert attach is not None
        if attach.to == "unknown":
            continue
        rule = rule_of(attach.rule)
        because = f" ({rule.when})" if rule else ""
        if attach.to == "chipset":
            budget = lane_budget(facts, gpu) or "it hangs off the chipset: move it to a CPU slot"
            text = f"{gpu.label}: {budget}{because}"
            slot, most = gpu.pcie.slot_width_max, gpu.pcie.width_max
            if wanted == "cpu":
                failures.append(text)
            elif wanted is None and slot is not None and most is not None and slot < most:
                warnings.append(text)
            else:
                known.append(f"{gpu.label} on the chipset's lanes{_sharing(facts, gpu)}")
        elif wanted == "chipset":
            failures.append(
                f"{gpu.label} sits on the CPU's lanes (root port {attach.root_port}), expected the chipset's"
            )
        else:
            known.append(f"{gpu.label} on the CPU's lanes (root port {attach.root_port}){_sharing(facts, gpu)}")
    if failures:
        return CheckResult("gpu.pcie_lane_source", "fail", wanted, actual, "; ".join(failures))
    if warnings:
        return CheckResult("gpu.pcie_lane_source", "warn", wanted, actual, "; ".join(warnings))
    if not known:
        rootless = all(g.pcie_attach and g.pcie_attach.root_port is None for g in gpus)
        why = (
            "not checked: no root port above the GPUs (on the root complex itself, as in a VM): where their lanes "
            "come from is not visible"
            if rootless
            else "not checked: no rule of dlsetup's places the GPUs' root ports (pci.ids names them not, or not as "
            "a CPU's or a chipset's port): not guessed"
        )
        return CheckResult("gpu.pcie_lane_source", "skip", wanted, actual, why)
    unknown = [g.label for g in gpus if g.pcie_attach and g.pcie_attach.to == "unknown"]
    rest = f"; not known for {', '.join(unknown)}" if unknown else ""
    return CheckResult("gpu.pcie_lane_source", "pass", wanted, actual, "; ".join(known) + rest)


def _achievable_gen(pcie: PcieLink) -> int | None:
    gens = [g for g in (pcie.gen_max, pcie.slot_gen_max) if g is not None]
    return min(gens) if gens else None


def check_pcie_gen(
    facts: HostFacts,
    expect: Expectations,
    loaded_gens: Mapping[str, int | None] | None = None,
    baseline: HardwareBaseline | None = None,
) -> CheckResult:
    """Link generation. Read at idle, a lower generation is only a warning (GPUs drop the link speed to
    save power); ``loaded_gens`` (bus id → gen read under load) turns it into a real check. A link whose best
    generation (GPU and slot maximum) fell below the hardware baseline's fails."""
    gpus = facts.gpus
    if not gpus:
        return CheckResult("gpu.pcie_gen", "skip", expect.pcie_gen_min, None, "no NVIDIA GPU on PCI")
    under_load_by_bus = {normalize_bus_id(bus): gen for bus, gen in (loaded_gens or {}).items()}
    failures: list[str] = []
    warnings: list[str] = []
    actual: list[int | None] = []
    for gpu in gpus:
        best = _achievable_gen(gpu.pcie)
        under_load = under_load_by_bus.get(gpu.pci_bus_id)
        current = under_load if under_load is not None else gpu.pcie.gen_current
        actual.append(current)
        before = baseline.gpu(gpu.pci_bus_id) if baseline is not None else None
        was = before.best_gen if before is not None and before.pci_id in (None, gpu.pci_id) else None
        had = f" (the baseline had Gen{was})" if was else ""
        if expect.pcie_gen_min is not None and best is not None and best < expect.pcie_gen_min:
            failures.append(
                f"{gpu.label} can reach Gen{best} at most (GPU/slot), expected >= Gen{expect.pcie_gen_min}{had}"
            )
            continue
        if was is not None and best is not None and best < was:
            failures.append(f"{gpu.label} can reach Gen{best} at most (GPU/slot){had}: a BIOS setting or the slot")
            continue
        if current is None:
            continue
        floor = max(x for x in (best, expect.pcie_gen_min, 1) if x is not None)
        if current < floor:
            if under_load is not None:
                failures.append(f"{gpu.label} runs Gen{current} under load, its link can do Gen{floor}")
            else:
                warnings.append(
                    f"{gpu.label} reads Gen{current} at idle (max Gen{floor}); GPUs lower the link speed when idle: "
                    "run with --load or install a framework to read it under load"
                )
    if failures:
        return CheckResult("gpu.pcie_gen", "fail", expect.pcie_gen_min, actual, "; ".join(failures))
    if warnings:
        return CheckResult("gpu.pcie_gen", "warn", expect.pcie_gen_min, actual, "; ".join(warnings))
    if all(a is None for a in actual):
        return CheckResult("gpu.pcie_gen", "skip", expect.pcie_gen_min, actual, "the link generation is not readable")
    mode = "under load" if loaded_gens else "at idle"
    return CheckResult("gpu.pcie_gen", "pass", expect.pcie_gen_min, actual, f"every link at its best generation {mode}")


def check_driver_loaded(facts: HostFacts) -> CheckResult:
    driver = facts.driver
    if not facts.gpus:
        return CheckResult("driver.loaded", "skip", None, driver.loaded, "no NVIDIA GPU on PCI: no driver needed")
    error = driver.error
    if error is not None:
        hint = f" ({error.hint})" if error.hint else ""
        return CheckResult("driver.loaded", "fail", True, False, f"{error.kind}: {error.message}{hint}")
    if not driver.loaded:
        return CheckResult("driver.loaded", "fail", True, False, "the NVIDIA driver is not loaded")
    return CheckResult(
        "driver.loaded",
        "pass",
        True,
        True,
        f"driver {driver.version} ({driver.kernel_module or 'unknown'} kernel module)",
    )


def check_driver_branch(facts: HostFacts, expect: Expectations) -> CheckResult:
    if expect.driver_branch is None:
        return CheckResult("driver.branch", "skip", None, None, "not checked: no driver_branch expected")
    version = facts.driver.version
    major = driver_major(version)
    if major is None:
        return CheckResult("driver.branch", "fail", expect.driver_branch, None, "no NVIDIA driver answers")
    branch = str(major)
    status: Status = "pass" if branch == expect.driver_branch else "fail"
    return CheckResult("driver.branch", status, expect.driver_branch, branch, f"driver {version}")


def check_driver_flavor(facts: HostFacts, expect: Expectations) -> CheckResult:
    if expect.driver_flavor is None:
        return CheckResult("driver.flavor", "skip", None, None, "not checked: no driver_flavor expected")
    module = facts.driver.kernel_module
    if module is None:
        return CheckResult("driver.flavor", "fail", expect.driver_flavor, None, "no NVIDIA kernel module loaded")
    status: Status = "pass" if module == expect.driver_flavor else "fail"
    return CheckResult("driver.flavor", status, expect.driver_flavor, module, f"{module} kernel module loaded")


def _at_least(actual: str, wanted: str) -> bool:
    try:
        return Version(actual) >= Version(wanted)
    except InvalidVersion:
        return False


def check_driver_cuda(facts: HostFacts, expect: Expectations) -> CheckResult:
    if expect.cuda_version is None:
        return CheckResult("driver.cuda", "skip", None, None, "not checked: no cuda_version expected")
    cuda = facts.driver.cuda_version
    if not cuda:
        return CheckResult(
            "driver.cuda", "skip", expect.cuda_version, None, "the driver's CUDA version is unknown (libcuda not found)"
        )
    return CheckResult(
        "driver.cuda",
        "pass" if _at_least(cuda, expect.cuda_version) else "fail",
        expect.cuda_version,
        cuda,
        f"the driver supports CUDA up to {cuda}",
    )


def check_host_memory(facts: HostFacts, expect: Expectations) -> CheckResult:
    actual = facts.memory_mib
    if expect.memory_min_mib is None:
        return CheckResult("host.memory", "skip", None, actual, "not checked: no memory_min_mib expected")
    if actual is None:
        return CheckResult("host.memory", "skip", expect.memory_min_mib, None, "memory size unknown")
    ok = actual >= expect.memory_min_mib
    return CheckResult("host.memory", "pass" if ok else "fail", expect.memory_min_mib, actual, f"{actual} MiB RAM")


def check_root_disk(facts: HostFacts, expect: Expectations) -> CheckResult:
    if expect.root_disk_ssd is None:
        return CheckResult("host.root_disk_ssd", "skip", None, None, "not checked: no root_disk_ssd expected")
    roots = facts.root_disks()
    if not roots:
        return CheckResult(
            "host.root_disk_ssd", "skip", expect.root_disk_ssd, None, "the root disk is not identifiable"
        )
    disk = roots[0]
    if disk.ssd is None:
        return CheckResult("host.root_disk_ssd", "skip", expect.root_disk_ssd, None, f"{disk.name}: type unknown")
    status: Status = "pass" if disk.ssd == expect.root_disk_ssd else "fail"
    kind = "SSD" if disk.ssd else "rotational disk"
    return CheckResult("host.root_disk_ssd", status, expect.root_disk_ssd, disk.ssd, f"/ is on {disk.name} ({kind})")


def theoretical_gbps(gen: int, width: int) -> float:
    return PCIE_LANE_GBPS[gen] * width


def check_pytorch(facts: HostFacts, expect: Expectations, probe: TorchProbe | None) -> list[CheckResult]:
    """Checks from the PyTorch probe (``None`` when no Python with torch was found)."""
    wanted = expect.wants("pytorch")
    if probe is None or not probe.torch:
        reason = (probe.error if probe is not None else None) or "PyTorch is not installed"
        if not wanted:
            return [CheckResult("framework.pytorch", "skip", None, None, f"{reason}; PyTorch is not expected")]
        return [CheckResult("framework.pytorch", "fail", "pytorch", None, reason)]
    gpus = facts.visible_gpus
    results = [
        CheckResult(
            "framework.pytorch", "pass", "pytorch" if wanted else None, probe.torch, f"torch {probe.torch} imports"
        ),
        _torch_version_check(probe.torch, expect),
        _torch_variant_check(probe, expect),
    ]
    devices = probe.devices
    if not gpus:
        results.append(CheckResult("framework.pytorch.devices", "skip", 0, len(devices), "no GPU for PyTorch to use"))
        return results
    if not probe.cuda_available:
        results.append(
            CheckResult(
                "framework.pytorch.devices",
                "fail",
                len(gpus),
                0,
                f"torch.cuda.is_available() is False: {probe.cuda_error or 'no CUDA device'}",
            )
        )
        return results
    status: Status = "pass" if len(devices) == len(gpus) else "fail"
    results.append(
        CheckResult("framework.pytorch.devices", status, len(gpus), len(devices), f"PyTorch sees {len(devices)} GPU(s)")
    )
    results.append(_arch_check(devices, probe.arch_list))
    bad = [d for d in devices if not d.matmul_ok]
    results.append(
        CheckResult(
            "framework.pytorch.matmul",
            "fail" if bad else "pass",
            len(devices),
            len(devices) - len(bad),
            "; ".join(f"cuda:{d.index} {d.matmul_error or 'wrong result'}" for d in bad)
            or "a matmul ran correctly on every GPU",
        )
    )
    results.append(_bandwidth_check(gpus, devices, expect))
    return results


def _release(version: str) -> tuple[int, ...] | None:
    try:
        return Version(version).release
    except InvalidVersion:
        return None


def _torch_version_check(version: str, expect: Expectations) -> CheckResult:
    wanted = expect.pytorch_version
    if wanted is None:
        return CheckResult(
            "framework.pytorch.version", "skip", None, version, "not checked: no pytorch_version expected"
        )
    have, want = _release(version), _release(wanted)
    ok = have is not None and want is not None and have[: len(want)] == want
    return CheckResult(
        "framework.pytorch.version",
        "pass" if ok else "fail",
        wanted,
        version,
        f"torch {version}" + ("" if ok else f", expected {wanted}"),
    )


def torch_variant(probe: TorchProbe) -> str | None:
    """The wheel variant of the torch the probe found: the local label of its version (``2.11.0+cu130``), else what
    ``torch.version.cuda`` says (``13.0`` → ``cu130``; ``None`` → ``cpu``)."""
    if probe.torch is None:
        return None
    _, _, label = probe.torch.partition("+")
    if label:
        return label.lower()
    if probe.cuda_build:
        return "cu" + probe.cuda_build.replace(".", "")
    return "cpu"


def _torch_variant_check(probe: TorchProbe, expect: Expectations) -> CheckResult:
    variant = torch_variant(probe)
    built = f"built with CUDA {probe.cuda_build}" if probe.cuda_build else "built without CUDA"
    wanted = expect.pytorch_variant
    if wanted is None:
        return CheckResult(
            "framework.pytorch.variant", "skip", None, variant, f"not checked: no pytorch_variant expected ({built})"
        )
    if wanted == "cpu":
        cuda_ok = probe.cuda_build is None
    elif wanted.startswith("cu"):
        cuda_ok = probe.cuda_build is not None and "cu" + probe.cuda_build.replace(".", "") == wanted
    else:  # ROCm builds say nothing in torch.version.cuda
        cuda_ok = True
    status: Status = "pass" if variant == wanted and cuda_ok else "fail"
    message = f"torch {probe.torch} is the {variant} wheel, {built} (torch.version.cuda)"
    if variant == wanted and not cuda_ok:
        message += f": not what a {wanted} wheel is"
    return CheckResult("framework.pytorch.variant", status, wanted, variant, message)


def _arch_check(devices: Sequence[TorchDevice], arch_list: Sequence[str]) -> CheckResult:
    """The build must hold code for each GPU: an exact sm_XY, same-major older SASS (binary compatible), or PTX
    of an equal or lower version (JIT)."""
    missing = []
    for device in devices:
        major, minor = device.cc
        cc = major * 10 + minor
        ok = False
        for arch in arch_list:
            kind, _, num = arch.partition("_")
            if not num.isdigit():
                continue
            value = int(num)
            if (kind == "sm" and value // 10 == major and value <= cc) or (kind == "compute" and value <= cc):
                ok = True
        if not ok:
            missing.append(f"cuda:{device.index} ({device.name}) is sm_{cc}")
    actual = list(arch_list)
    if missing:
        return CheckResult(
            "framework.pytorch.arch",
            "fail",
            "every GPU's compute capability",
            actual,
            "this PyTorch build has no code for " + ", ".join(missing) + f" (built for {' '.join(arch_list)})",
        )
    return CheckResult(
        "framework.pytorch.arch", "pass", "every GPU's compute capability", actual, "arch list covers every GPU"
    )


def _bandwidth_check(gpus: Sequence[GpuFacts], devices: Sequence[TorchDevice], expect: Expectations) -> CheckResult:
    ratio = expect.pcie_bandwidth_min_ratio or DEFAULT_BANDWIDTH_MIN_RATIO
    by_bus = {g.pci_bus_id: g for g in gpus}
    failures: list[str] = []
    actual: list[float | None] = []
    measured = 0
    for index, device in enumerate(devices):
        gbps = device.h2d_gbps
        actual.append(gbps)
        gpu = by_bus.get(device.bus_id or "") or (gpus[index] if index < len(gpus) else None)
        if gbps is None or gpu is None:
            continue
        link = device.load_link
        gen = (link.gen if link else None) or _achievable_gen(gpu.pcie)
        width = (link.width if link else None) or gpu.pcie.width_current
        if not gen or not width or gen not in PCIE_LANE_GBPS:
            continue
        measured += 1
        floor = theoretical_gbps(gen, width) * ratio
        if gbps < floor:
            failures.append(
                f"{gpu.label} copies {gbps:.1f} GB/s host-to-device, below {floor:.1f} GB/s "
                f"({ratio:.0%} of Gen{gen} x{width})"
            )
    if failures:
        return CheckResult("framework.pytorch.bandwidth", "fail", ratio, actual, "; ".join(failures))
    if measured == 0:
        return CheckResult("framework.pytorch.bandwidth", "skip", ratio, actual, "no bandwidth measurement to compare")
    return CheckResult(
        "framework.pytorch.bandwidth",
        "pass",
        ratio,
        actual,
        f"pinned host-to-device copies reach >= {ratio:.0%} of the link",
    )


def check_jax(expect: Expectations, probe: JaxProbe | None, gpu_count: int) -> CheckResult:
    wanted = expect.wants("jax")
    if probe is None or not probe.jax:
        reason = (probe.error if probe is not None else None) or "JAX is not installed"
        if not wanted:
            return CheckResult("framework.jax", "skip", None, None, f"{reason}; JAX is not expected")
        return CheckResult("framework.jax", "fail", "jax", None, reason)
    gpu_devices = probe.gpu_devices
    if gpu_count and gpu_devices != gpu_count:
        return CheckResult(
            "framework.jax",
            "fail",
            gpu_count,
            gpu_devices,
            f"jax {probe.jax} sees {gpu_devices} GPU device(s): {probe.backend_error or ''}".strip(),
        )
    return CheckResult("framework.jax", "pass", gpu_count, gpu_devices, f"jax {probe.jax} sees {gpu_devices} GPU(s)")


def check_pcie_gen_probed(
    facts: HostFacts,
    expect: Expectations,
    probe: TorchProbe | None,
    load_required: bool,
    baseline: HardwareBaseline | None = None,
) -> CheckResult:
    """:func:`check_pcie_gen` with the generations the PyTorch probe read under load; ``--load`` (``load_required``)
    without a load to read them under is a skip that says why."""
    loaded = probe.loaded_gens() if probe is not None else {}
    if load_required and not loaded and facts.gpus:
        why = (probe.error if probe is not None else None) or "no GPU load could be generated"
        return CheckResult(
            "gpu.pcie_gen",
            "skip",
            expect.pcie_gen_min,
            None,
            f"--load needs PyTorch with CUDA on the host to generate load; {why}",
        )
    return check_pcie_gen(facts, expect, loaded or None, baseline)


# Every check of a host, in report order (docs/verify.md): what the machine is, its GPUs, the driver, frameworks.
CHECK_IDS = (
    "host.memory",
    "host.root_disk_ssd",
    "gpu.count",
    "gpu.visible",
    "gpu.model",
    "gpu.memory",
    "gpu.pcie_width",
    "gpu.pcie_gen",
    "gpu.pcie_lane_source",
    "driver.loaded",
    "driver.branch",
    "driver.flavor",
    "driver.cuda",
    "framework.pytorch",
    "framework.pytorch.version",
    "framework.pytorch.variant",
    "framework.pytorch.devices",
    "framework.pytorch.arch",
    "framework.pytorch.matmul",
    "framework.pytorch.bandwidth",
    "framework.jax",
)

# The expectation key each check compares with; the checks not named here compare with what the host itself
# shows (``FIXED_FROM``), or with nothing.
EXPECTATION_OF = {
    "host.memory": "memory_min_mib",
    "host.root_disk_ssd": "root_disk_ssd",
    "gpu.count": "gpu_count",
    "gpu.model": "gpu_model",
    "gpu.memory": "gpu_memory_min_mib",
    "gpu.pcie_width": "pcie_width_min",
    "gpu.pcie_gen": "pcie_gen_min",
    "gpu.pcie_lane_source": "pcie_lane_source",
    "driver.branch": "driver_branch",
    "driver.flavor": "driver_flavor",
    "driver.cuda": "cuda_version",
    "framework.pytorch.version": "pytorch_version",
    "framework.pytorch.variant": "pytorch_variant",
    "framework.pytorch.bandwidth": "pcie_bandwidth_min_ratio",
}
FIXED_FROM = {
    "gpu.visible": FROM_PCI,  # every GPU on PCI
    "driver.loaded": FROM_PCI,  # a GPU on PCI needs a driver
    "framework.pytorch.devices": "driver",  # the GPUs the driver lists
    "framework.pytorch.arch": "driver",  # their compute capabilities
    "framework.pytorch.matmul": "driver",
    "framework.jax": "driver",
}


def _framework_origin(check_id: str, expect: Expectations) -> str | None:
    """Where the expectation that PyTorch/JAX imports came from: ``framework``, or a PyTorch version/variant."""
    name = "jax" if check_id == "framework.jax" else "pytorch"
    if name in (expect.framework or "").split(","):
        return expect.origin("framework")
    if name == "pytorch":
        return expect.origin("pytorch_version") or expect.origin("pytorch_variant")
    return None


def attribute(result: CheckResult, expect: Expectations) -> CheckResult:
    """``result`` with ``expected_from`` set: where its expected value came from (``None`` when nothing was)."""
    if result.expected is None or result.expected_from is not None:
        return result
    key = EXPECTATION_OF.get(result.id)
    origin: str | None
    if result.id == "framework.pytorch" or (result.id == "framework.jax" and result.expected == "jax"):
        origin = _framework_origin(result.id, expect)
    elif key is not None:
        origin = expect.origin(key) or ("default" if key == "pcie_bandwidth_min_ratio" else None)
    else:
        origin = FIXED_FROM.get(result.id)
    return dataclasses.replace(result, expected_from=origin)


def evaluate(
    facts: HostFacts,
    expect: Expectations,
    torch_probe: TorchProbe | None,
    jax_probe: JaxProbe | None,
    *,
    load_required: bool = False,
    baseline: HardwareBaseline | None = None,
) -> list[CheckResult]:
    """Every check of one host (one result per id of :data:`CHECK_IDS`, in that order), each saying where its
    expected value came from. The suite reports these; a PyTorch check that an earlier one decided (PyTorch
    missing, no GPU, CUDA unavailable) is a skip that says which."""
    found: dict[str, CheckResult] = {}
    for result in (
        check_host_memory(facts, expect),
        check_root_disk(facts, expect),
        check_gpu_count(facts, expect, baseline),
        check_gpu_visible(facts),
        check_gpu_model(facts, expect),
        check_gpu_memory(facts, expect),
        check_pcie_width(facts, expect, baseline),
        check_pcie_gen_probed(facts, expect, torch_probe, load_required, baseline),
        check_pcie_lane_source(facts, expect),
        check_driver_loaded(facts),
        check_driver_branch(facts, expect),
        check_driver_flavor(facts, expect),
        check_driver_cuda(facts, expect),
        *check_pytorch(facts, expect, torch_probe),
        check_jax(expect, jax_probe, len(facts.visible_gpus)),
    ):
        found[result.id] = attribute(result, expect)
    results = []
    for check_id in CHECK_IDS:
        if check_id in found:
            results.append(found[check_id])
            continue
        deciding = ("framework.pytorch", "framework.pytorch.devices")
        decided = [r for r in found.values() if r.id in deciding and r.status in ("fail", "skip")]
        why = decided[-1].message if decided else "not applicable"
        results.append(CheckResult(check_id, "skip", None, None, f"cannot run: {why}"))
    return results


def summarize(results: Sequence[CheckResult]) -> bool:
    """No check failed (warnings and skips do not fail a host; :class:`~dlsetup.verify.report.HostReport` also
    asks that at least one check ran)."""
    return not any(r.status == "fail" for r in results)
