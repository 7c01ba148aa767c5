"""Verification checks as pure functions: facts (the stable Facts JSON of one host) + expectations → results.

The testinfra suite (``dlsetup/verify_suite``) gathers facts and probes on the host and calls these; they are
plain Python so every rule is unit-tested on real captured facts. Check ids are documented in docs/verify.md.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

from dlsetup.expect import Expectations

Status = Literal["pass", "fail", "warn", "skip"]

# Per-lane, per-direction payload bandwidth in GB/s: transfer rate x encoding / 8 (8b/10b for Gen1/2,
# 128b/130b for Gen3-5; Gen6 rounded). Source: ../shared/research/compat.md section 7.1.
PCIE_LANE_GBPS = {1: 0.25, 2: 0.5, 3: 0.985, 4: 1.969, 5: 3.938, 6: 7.877}
DEFAULT_BANDWIDTH_MIN_RATIO = 0.6


@dataclass(frozen=True)
class CheckResult:
    id: str
    status: Status
    expected: Any
    actual: Any
    message: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _gpu_label(gpu: Mapping[str, Any]) -> str:
    name = gpu.get("name") or gpu.get("pci_name") or gpu.get("pci_id") or "GPU"
    index = gpu.get("index")
    prefix = f"GPU {index} " if index is not None else "GPU "
    return f"{prefix}({name}, {gpu.get('pci_bus_id')})"


def _gpus(facts: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return list(facts.get("gpus") or [])


def _driver(facts: Mapping[str, Any]) -> Mapping[str, Any]:
    return facts.get("driver") or {}


def check_gpu_count(facts: Mapping[str, Any], expect: Expectations) -> CheckResult:
    gpus = _gpus(facts)
    on_pci = len(gpus)
    visible = [g for g in gpus if g.get("visible_to_driver")]
    if expect.gpu_count is None:
        text = "no NVIDIA GPU on PCI" if on_pci == 0 else f"{on_pci} NVIDIA GPU(s) on PCI"
        return CheckResult("gpu.count", "skip", None, on_pci, f"{text}; no gpu_count expected")
    if on_pci != expect.gpu_count:
        found = ", ".join(_gpu_label(g) for g in gpus) or "none"
        return CheckResult(
            "gpu.count",
            "fail",
            expect.gpu_count,
            on_pci,
            f"expected {expect.gpu_count} NVIDIA GPU(s), PCI shows {on_pci}: {found}",
        )
    if _driver(facts).get("loaded") and len(visible) != on_pci:
        missing = ", ".join(str(g.get("pci_bus_id")) for g in gpus if not g.get("visible_to_driver"))
        return CheckResult(
            "gpu.count",
            "fail",
            expect.gpu_count,
            len(visible),
            f"PCI shows {on_pci} GPU(s) but the driver lists {len(visible)}; missing: {missing}",
        )
    return CheckResult("gpu.count", "pass", expect.gpu_count, on_pci, f"{on_pci} NVIDIA GPU(s)")


def check_gpu_visible(facts: Mapping[str, Any]) -> CheckResult:
    gpus = _gpus(facts)
    if not gpus:
        return CheckResult("gpu.visible", "skip", None, 0, "no NVIDIA GPU on PCI")
    if not _driver(facts).get("loaded"):
        return CheckResult("gpu.visible", "skip", len(gpus), None, "the NVIDIA driver is not answering")
    hidden = [g for g in gpus if not g.get("visible_to_driver")]
    if hidden:
        labels = ", ".join(_gpu_label(g) for g in hidden)
        return CheckResult(
            "gpu.visible",
            "fail",
            len(gpus),
            len(gpus) - len(hidden),
            f"on PCI but not listed by the driver: {labels} (check dmesg for Xid errors, reseat, power)",
        )
    return CheckResult("gpu.visible", "pass", len(gpus), len(gpus), "every GPU on PCI is listed by the driver")


def check_gpu_model(facts: Mapping[str, Any], expect: Expectations) -> CheckResult:
    if expect.gpu_model is None:
        return CheckResult("gpu.model", "skip", None, None, "no gpu_model expected")
    gpus = _gpus(facts)
    if not gpus:
        return CheckResult("gpu.model", "fail", expect.gpu_model, None, "no NVIDIA GPU on PCI")
    want = expect.gpu_model.lower()
    wrong = []
    for gpu in gpus:
        names = [str(gpu.get(k) or "").lower() for k in ("name", "pci_name")]
        if str(gpu.get("pci_id") or "").lower() != want and not any(want in n for n in names if n):
            wrong.append(gpu)
    actual = [g.get("name") or g.get("pci_name") or g.get("pci_id") for g in gpus]
    if wrong:
        labels = ", ".join(_gpu_label(g) for g in wrong)
        return CheckResult("gpu.model", "fail", expect.gpu_model, actual, f"not a {expect.gpu_model}: {labels}")
    return CheckResult("gpu.model", "pass", expect.gpu_model, actual, f"every GPU matches {expect.gpu_model!r}")


def check_gpu_memory(facts: Mapping[str, Any], expect: Expectations) -> CheckResult:
    if expect.gpu_memory_min_mib is None:
        return CheckResult("gpu.memory", "skip", None, None, "no gpu_memory_min_mib expected")
    gpus = _gpus(facts)
    if not gpus:
        return CheckResult("gpu.memory", "fail", expect.gpu_memory_min_mib, None, "no NVIDIA GPU on PCI")
    unknown = [g for g in gpus if g.get("memory_mib") is None]
    if unknown:
        return CheckResult(
            "gpu.memory",
            "skip",
            expect.gpu_memory_min_mib,
            None,
            "GPU memory is unknown without a working driver: " + ", ".join(_gpu_label(g) for g in unknown),
        )
    small = [g for g in gpus if int(g["memory_mib"]) < expect.gpu_memory_min_mib]
    actual = [g["memory_mib"] for g in gpus]
    if small:
        detail = ", ".join(f"{_gpu_label(g)} has {g['memory_mib']} MiB" for g in small)
        return CheckResult("gpu.memory", "fail", expect.gpu_memory_min_mib, actual, f"below the minimum: {detail}")
    return CheckResult(
        "gpu.memory", "pass", expect.gpu_memory_min_mib, actual, f">= {expect.gpu_memory_min_mib} MiB on every GPU"
    )


def width_diagnosis(pcie: Mapping[str, Any]) -> str | None:
    """Why a link runs narrower than the GPU can: the slot's lanes, or a link that trained down."""
    current, gpu_max, slot_max = pcie.get("width_current"), pcie.get("width_max"), pcie.get("slot_width_max")
    if current is None or gpu_max is None or current >= gpu_max:
        return None
    if slot_max is not None and slot_max < gpu_max:
        if current < slot_max:
            return (
                f"link trained down to x{current}: the slot gives x{slot_max} (itself below the GPU's x{gpu_max})"
                " and the link runs below even that (reseat the card, check the riser, clean the contacts)"
            )
        return (
            f"the slot gives only x{slot_max} (upstream port maximum) while the GPU can do x{gpu_max}: the CPU's "
            "lane budget or the board's slot wiring/bifurcation, not a fault of the card"
        )
    slot_text = f"x{slot_max}" if slot_max is not None else "unknown"
    return (
        f"link trained down to x{current} although GPU (x{gpu_max}) and slot ({slot_text}) can do more: "
        "reseat the card, check the riser cable, clean the contacts"
    )


def check_pcie_width(facts: Mapping[str, Any], expect: Expectations) -> CheckResult:
    gpus = _gpus(facts)
    if not gpus:
        return CheckResult("gpu.pcie_width", "skip", expect.pcie_width_min, None, "no NVIDIA GPU on PCI")
    actual = [g.get("pcie", {}).get("width_current") for g in gpus]
    if any(w is None for w in actual):
        return CheckResult(
            "gpu.pcie_width", "skip", expect.pcie_width_min, actual, "the link width is not readable on every GPU"
        )
    failures: list[str] = []
    warnings: list[str] = []
    for gpu in gpus:
        pcie = gpu.get("pcie") or {}
        current = int(pcie["width_current"])
        why = width_diagnosis(pcie)
        if expect.pcie_width_min is not None and current < expect.pcie_width_min:
            reason = why or f"the GPU itself is an x{pcie.get('width_max')} device"
            failures.append(f"{_gpu_label(gpu)} runs x{current}, expected >= x{expect.pcie_width_min}: {reason}")
        elif why and "trained down" in why:
            warnings.append(f"{_gpu_label(gpu)}: {why}")
        elif why:
            warnings.append(f"{_gpu_label(gpu)} runs x{current}: {why}")
    if failures:
        return CheckResult("gpu.pcie_width", "fail", expect.pcie_width_min, actual, "; ".join(failures))
    if warnings:
        return CheckResult("gpu.pcie_width", "warn", expect.pcie_width_min, actual, "; ".join(warnings))
    return CheckResult(
        "gpu.pcie_width", "pass", expect.pcie_width_min, actual, "every GPU runs at the width its slot allows"
    )


def _achievable_gen(pcie: Mapping[str, Any]) -> int | None:
    gens = [g for g in (pcie.get("gen_max"), pcie.get("slot_gen_max")) if g is not None]
    return min(gens) if gens else None


def check_pcie_gen(
    facts: Mapping[str, Any], expect: Expectations, loaded_gens: Mapping[str, int | None] | None = None
) -> CheckResult:
    """Link generation. Read at idle, a lower generation is only a warning (GPUs drop the link speed to
    save power); ``loaded_gens`` (bus id → gen read under load) turns it into a real check."""
    gpus = _gpus(facts)
    if not gpus:
        return CheckResult("gpu.pcie_gen", "skip", expect.pcie_gen_min, None, "no NVIDIA GPU on PCI")
    failures: list[str] = []
    warnings: list[str] = []
    actual: list[int | None] = []
    for gpu in gpus:
        pcie = gpu.get("pcie") or {}
        best = _achievable_gen(pcie)
        under_load = (loaded_gens or {}).get(str(gpu.get("pci_bus_id")))
        current = under_load if under_load is not None else pcie.get("gen_current")
        actual.append(current)
        label = _gpu_label(gpu)
        if expect.pcie_gen_min is not None and best is not None and best < expect.pcie_gen_min:
            failures.append(f"{label} can reach Gen{best} at most (GPU/slot), expected >= Gen{expect.pcie_gen_min}")
            continue
        if current is None:
            continue
        floor = max(x for x in (best, expect.pcie_gen_min, 1) if x is not None)
        if current < floor:
            if under_load is not None:
                failures.append(f"{label} runs Gen{current} under load, its link can do Gen{floor}")
            else:
                warnings.append(
                    f"{label} reads Gen{current} at idle (max Gen{floor}); GPUs lower the link speed when idle: "
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


def check_driver_loaded(facts: Mapping[str, Any]) -> CheckResult:
    driver = _driver(facts)
    if not _gpus(facts):
        return CheckResult("driver.loaded", "skip", True, driver.get("loaded"), "no NVIDIA GPU on PCI")
    error = driver.get("error")
    if error:
        hint = f" ({error.get('hint')})" if error.get("hint") else ""
        return CheckResult("driver.loaded", "fail", True, False, f"{error.get('kind')}: {error.get('message')}{hint}")
    if not driver.get("loaded"):
        return CheckResult("driver.loaded", "fail", True, False, "the NVIDIA driver is not loaded")
    return CheckResult(
        "driver.loaded",
        "pass",
        True,
        True,
        f"driver {driver.get('version')} ({driver.get('kernel_module') or 'unknown'} kernel module)",
    )


def check_driver_branch(facts: Mapping[str, Any], expect: Expectations) -> CheckResult:
    if expect.driver_branch is None:
        return CheckResult("driver.branch", "skip", None, None, "no driver_branch expected")
    version = _driver(facts).get("version")
    if not version:
        return CheckResult("driver.branch", "fail", expect.driver_branch, None, "no NVIDIA driver answers")
    branch = str(version).split(".")[0]
    status: Status = "pass" if branch == expect.driver_branch else "fail"
    return CheckResult("driver.branch", status, expect.driver_branch, branch, f"driver {version}")


def check_driver_flavor(facts: Mapping[str, Any], expect: Expectations) -> CheckResult:
    if expect.driver_flavor is None:
        return CheckResult("driver.flavor", "skip", None, None, "no driver_flavor expected")
    module = _driver(facts).get("kernel_module")
    if module is None:
        return CheckResult("driver.flavor", "fail", expect.driver_flavor, None, "no NVIDIA kernel module loaded")
    status: Status = "pass" if module == expect.driver_flavor else "fail"
    return CheckResult("driver.flavor", status, expect.driver_flavor, module, f"{module} kernel module loaded")


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split(".") if p.isdigit())


def check_driver_cuda(facts: Mapping[str, Any], expect: Expectations) -> CheckResult:
    if expect.cuda_version is None:
        return CheckResult("driver.cuda", "skip", None, None, "no cuda_version expected")
    cuda = _driver(facts).get("cuda_version")
    if not cuda:
        return CheckResult(
            "driver.cuda", "skip", expect.cuda_version, None, "the driver's CUDA version is unknown (libcuda not found)"
        )
    ok = _version_tuple(str(cuda)) >= _version_tuple(expect.cuda_version)
    return CheckResult(
        "driver.cuda",
        "pass" if ok else "fail",
        expect.cuda_version,
        cuda,
        f"the driver supports CUDA up to {cuda}",
    )


def check_host_memory(facts: Mapping[str, Any], expect: Expectations) -> CheckResult:
    if expect.memory_min_mib is None:
        return CheckResult("host.memory", "skip", None, facts.get("memory_mib"), "no memory_min_mib expected")
    actual = facts.get("memory_mib")
    if actual is None:
        return CheckResult("host.memory", "skip", expect.memory_min_mib, None, "memory size unknown")
    ok = int(actual) >= expect.memory_min_mib
    return CheckResult("host.memory", "pass" if ok else "fail", expect.memory_min_mib, actual, f"{actual} MiB RAM")


def check_root_disk(facts: Mapping[str, Any], expect: Expectations) -> CheckResult:
    if expect.root_disk_ssd is None:
        return CheckResult("host.root_disk_ssd", "skip", None, None, "no root_disk_ssd expected")
    roots = [d for d in facts.get("disks") or [] if "/" in (d.get("holds") or [])]
    if not roots:
        return CheckResult(
            "host.root_disk_ssd", "skip", expect.root_disk_ssd, None, "the root disk is not identifiable"
        )
    disk = roots[0]
    ssd = disk.get("ssd")
    if ssd is None:
        return CheckResult(
            "host.root_disk_ssd", "skip", expect.root_disk_ssd, None, f"{disk.get('name')}: type unknown"
        )
    status: Status = "pass" if bool(ssd) == expect.root_disk_ssd else "fail"
    kind = "SSD" if ssd else "rotational disk"
    return CheckResult("host.root_disk_ssd", status, expect.root_disk_ssd, ssd, f"/ is on {disk.get('name')} ({kind})")


def theoretical_gbps(gen: int, width: int) -> float:
    return PCIE_LANE_GBPS[gen] * width


def check_pytorch(facts: Mapping[str, Any], expect: Expectations, probe: Mapping[str, Any] | None) -> list[CheckResult]:
    """Checks from the PyTorch probe's JSON (``None`` when no Python with torch was found)."""
    wanted = expect.framework == "pytorch"
    if probe is None or not probe.get("torch"):
        reason = (probe or {}).get("error") or "PyTorch is not installed"
        status: Status = "fail" if wanted else "skip"
        return [CheckResult("framework.pytorch", status, "pytorch" if wanted else None, None, reason)]
    gpus = [g for g in _gpus(facts) if g.get("visible_to_driver")]
    results = [CheckResult("framework.pytorch", "pass", expect.framework, probe["torch"], f"torch {probe['torch']}")]
    devices = list(probe.get("devices") or [])
    if not gpus:
        results.append(CheckResult("framework.pytorch.devices", "skip", 0, len(devices), "no GPU for PyTorch to use"))
        return results
    if not probe.get("cuda_available"):
        results.append(
            CheckResult(
                "framework.pytorch.devices",
                "fail",
                len(gpus),
                0,
                f"torch.cuda.is_available() is False: {probe.get('cuda_error') or 'no CUDA device'}",
            )
        )
        return results
    status = "pass" if len(devices) == len(gpus) else "fail"
    results.append(
        CheckResult("framework.pytorch.devices", status, len(gpus), len(devices), f"PyTorch sees {len(devices)} GPU(s)")
    )
    arch_list = [str(a) for a in probe.get("arch_list") or []]
    results.append(_arch_check(devices, arch_list))
    bad = [d for d in devices if not d.get("matmul_ok")]
    results.append(
        CheckResult(
            "framework.pytorch.matmul",
            "fail" if bad else "pass",
            len(devices),
            len(devices) - len(bad),
            "; ".join(f"cuda:{d.get('index')} {d.get('matmul_error') or 'wrong result'}" for d in bad)
            or "a matmul ran correctly on every GPU",
        )
    )
    results.append(_bandwidth_check(gpus, devices, expect))
    return results


def _arch_check(devices: Sequence[Mapping[str, Any]], arch_list: Sequence[str]) -> CheckResult:
    """The build must hold code for each GPU: an exact sm_XY, same-major older SASS (binary compatible), or PTX
    of an equal or lower version (JIT)."""
    missing = []
    for device in devices:
        major, minor = (int(x) for x in device.get("cc") or (0, 0))
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
            missing.append(f"cuda:{device.get('index')} ({device.get('name')}) is sm_{cc}")
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


def _bandwidth_check(
    gpus: Sequence[Mapping[str, Any]], devices: Sequence[Mapping[str, Any]], expect: Expectations
) -> CheckResult:
    ratio = expect.pcie_bandwidth_min_ratio or DEFAULT_BANDWIDTH_MIN_RATIO
    by_bus = {str(g.get("pci_bus_id")).lower(): g for g in gpus}
    failures: list[str] = []
    actual: list[float | None] = []
    measured = 0
    for index, device in enumerate(devices):
        gbps = device.get("h2d_gbps")
        actual.append(gbps)
        gpu = by_bus.get(str(device.get("pci_bus_id") or "").lower()) or (gpus[index] if index < len(gpus) else None)
        if gbps is None or gpu is None:
            continue
        pcie = gpu.get("pcie") or {}
        link = device.get("load_link") or {}
        gen = link.get("gen") or _achievable_gen(pcie)
        width = link.get("width") or pcie.get("width_current")
        if not gen or not width or int(gen) not in PCIE_LANE_GBPS:
            continue
        measured += 1
        floor = theoretical_gbps(int(gen), int(width)) * ratio
        if float(gbps) < floor:
            failures.append(
                f"{_gpu_label(gpu)} copies {float(gbps):.1f} GB/s host-to-device, below {floor:.1f} GB/s "
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


def check_jax(expect: Expectations, probe: Mapping[str, Any] | None, gpu_count: int) -> CheckResult:
    wanted = expect.framework == "jax"
    if probe is None or not probe.get("jax"):
        reason = (probe or {}).get("error") or "JAX is not installed"
        return CheckResult("framework.jax", "fail" if wanted else "skip", "jax" if wanted else None, None, reason)
    gpu_devices = int(probe.get("gpu_devices") or 0)
    if gpu_count and gpu_devices != gpu_count:
        return CheckResult(
            "framework.jax",
            "fail",
            gpu_count,
            gpu_devices,
            f"jax {probe['jax']} sees {gpu_devices} GPU device(s): {probe.get('backend_error') or ''}".strip(),
        )
    return CheckResult("framework.jax", "pass", gpu_count, gpu_devices, f"jax {probe['jax']} sees {gpu_devices} GPU(s)")


def summarize(results: Sequence[CheckResult]) -> bool:
    """A host passes when no check failed (warnings and skips do not fail it)."""
    return not any(r.status == "fail" for r in results)
