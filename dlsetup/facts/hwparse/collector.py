"""The collector: read a host (or a fake sysfs/proc tree) and return the Facts JSON host object.

:func:`collect` never writes anything; the only command it runs is one ``nvidia-smi --query-gpu`` call (two when an
old nvidia-smi rejects the field list), through the ``run_command`` callable it is given. GPUs come from PCI and are
enriched from nvidia-smi by bus id; a GPU nvidia-smi lists on a bus id PCI does not show (WSL2, whose GPUs come
through /dev/dxg; a container without /sys/bus/pci) is reported too, with ``"source": "nvidia-smi"``. The contract it
produces is in ``docs/architecture.md`` and ``docs/schemas/facts.schema.json``.

Stdlib-only, Python 3.8-compatible (shipped as Ansible module_utils; see the package docstring).
"""

# ruff: noqa: UP006, UP031, UP035, UP045, RUF100

from __future__ import annotations

import os
import platform
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from .common import normalize_bus_id, parse_int, read_text, read_value
from .nvidia_smi import (
    LEGACY_QUERY_FIELDS,
    choose_query_fields,
    classify_nvidia_smi_failure,
    format_cuda_version,
    is_invalid_field_error,
    nvidia_smi_missing_error,
    parse_pci_device_id,
    parse_persistence_mode,
    parse_query_gpu_csv,
    query_gpu_command,
    read_cuda_driver_version,
    smi_value,
)
from .sysfs import (
    find_root_disks,
    is_nvidia_gpu,
    kernel_driver,
    read_disks,
    read_pci_devices,
    read_pci_link,
    read_pcie_path,
)
from .textfiles import (
    DEFAULT_CONTAINER_MARKERS,
    DEFAULT_OS_RELEASE_PATHS,
    DEFAULT_PCI_IDS_PATHS,
    DEFAULT_WSL_LIB_DIR,
    clean_dmi_value,
    detect_virtualization,
    lookup_pci_names,
    os_facts,
    parse_cpuinfo,
    parse_meminfo_total_mib,
    parse_nvidia_proc_version,
    parse_os_release,
    read_pci_ids,
    wsl2_evidence,
)

# run_command(argv) -> (rc, stdout, stderr); AnsibleModule.run_command has this shape.
RunCommand = Callable[[List[str]], Tuple[int, str, str]]
CudaVersionReader = Callable[[], Optional[int]]


def _pcie(
    sysfs_link: Mapping[str, Optional[int]], row: Optional[Mapping[str, Optional[str]]]
) -> Dict[str, Optional[int]]:
    """Link facts: sysfs first (works before a driver exists), nvidia-smi where sysfs has nothing."""
    row = row or {}
    smi_gen_current = parse_int(row.get("pcie.link.gen.gpucurrent")) or parse_int(row.get("pcie.link.gen.current"))
    # pcie.link.gen.gpumax is the GPU's own maximum; nvidia-smi 470 and older only have the
    # system-limited pcie.link.gen.max, used as the last resort.
    smi_gen_max = parse_int(row.get("pcie.link.gen.gpumax"))
    if smi_gen_max is None and "pcie.link.gen.gpumax" not in row:
        smi_gen_max = parse_int(row.get("pcie.link.gen.max"))

    def pick(sysfs_value: Optional[int], smi: Optional[int]) -> Optional[int]:
        return sysfs_value if sysfs_value is not None else smi

    return {
        "gen_current": pick(sysfs_link.get("gen_current"), smi_gen_current),
        "gen_max": pick(sysfs_link.get("gen_max"), smi_gen_max),
        "width_current": pick(sysfs_link.get("width_current"), parse_int(row.get("pcie.link.width.current"))),
        "width_max": pick(sysfs_link.get("width_max"), parse_int(row.get("pcie.link.width.max"))),
        "slot_gen_max": sysfs_link.get("slot_gen_max"),
        "slot_width_max": sysfs_link.get("slot_width_max"),
    }


def _gpu_entry(
    device: Mapping[str, Any],
    row: Optional[Mapping[str, Optional[str]]],
    pci_name: Optional[str],
) -> Dict[str, Any]:
    subsystem = None
    if device.get("subsystem_vendor") and device.get("subsystem_device"):
        subsystem = "%s:%s" % (device["subsystem_vendor"], device["subsystem_device"])
    entry: Dict[str, Any] = {
        "index": parse_int(row.get("index")) if row else None,
        "pci_bus_id": device["address"],
        "pci_id": "%s:%s" % (device["vendor"], device["device"]) if device.get("device") else None,
        "subsystem_id": subsystem,
        "pci_class": device.get("class"),
        "name": smi_value(row.get("name")) if row else None,
        "pci_name": pci_name,
        "memory_mib": parse_int(row.get("memory.total")) if row else None,
        "compute_capability": smi_value(row.get("compute_cap")) if row else None,
        "persistence_mode": parse_persistence_mode(row.get("persistence_mode")) if row else None,
        "kernel_driver": kernel_driver(device["path"]),
        "visible_to_driver": row is not None,
        "pcie": _pcie(read_pci_link(device["path"]), row),
    }
    path = read_pcie_path(device["path"])
    if path:  # left out when empty (a GPU on the root complex), as the model's default
        entry["pcie_path"] = path
    return entry


def _name_hops(gpus: Sequence[Dict[str, Any]], pci_ids_text: Optional[str]) -> None:
    """Each PCIe hop's name from pci.ids (``Xeon E5 v4 ... Root Port 3``, ``200 Series PCH PCI Express Root Port
    #1``): the names tell a chipset's port from the CPU's (``dlsetup.facts.pcie``)."""
    ids = [hop["pci_id"] for gpu in gpus for hop in gpu.get("pcie_path", ()) if hop["pci_id"]]
    if not ids or pci_ids_text is None:
        return
    names = lookup_pci_names(pci_ids_text, ids)
    for gpu in gpus:
        for hop in gpu.get("pcie_path", ()):
            hop["name"] = names.get(hop["pci_id"] or "")


def _smi_only_entry(bus: str, row: Mapping[str, Optional[str]], pci_name: Optional[str]) -> Dict[str, Any]:
    """A GPU nvidia-smi lists but PCI does not show: everything comes from nvidia-smi (no class, no kernel driver,
    no sysfs link values), and ``source`` says so."""
    return {
        "index": parse_int(row.get("index")),
        "pci_bus_id": bus,
        "pci_id": parse_pci_device_id(row.get("pci.device_id")),
        "subsystem_id": None,  # not in the query: sysfs gives it for GPUs on PCI
        "pci_class": None,
        "name": smi_value(row.get("name")),
        "pci_name": pci_name,
        "memory_mib": parse_int(row.get("memory.total")),
        "compute_capability": smi_value(row.get("compute_cap")),
        "persistence_mode": parse_persistence_mode(row.get("persistence_mode")),
        "kernel_driver": None,
        "visible_to_driver": True,
        "pcie": _pcie({}, row),
        "source": "nvidia-smi",
    }


def _virtualization(
    container_markers: Sequence[str],
    wsl2: List[str],
    vendor: Optional[str],
    product: Optional[str],
    cpu_hypervisor: bool,
    hypervisor_type: Optional[str],
) -> Tuple[Optional[str], List[str]]:
    """The machine's virtualization and what shows it (for containers and WSL2)."""
    markers = [marker for marker in container_markers if os.path.exists(marker)]
    if markers:
        # a container on WSL2 is still a container (no kernel of its own); the WSL2 signs are part of its evidence
        return "container", ["%s is present" % marker for marker in markers] + wsl2
    if wsl2:
        return "wsl2", wsl2
    return detect_virtualization(False, vendor, product, cpu_hypervisor, hypervisor_type), []


def _query_nvidia_smi(
    run_command: RunCommand, nvidia_smi: str, driver_version: Optional[str]
) -> Tuple[int, str, Sequence[str]]:
    """The one ``--query-gpu`` call; retried once with the legacy fields if they were rejected."""
    fields = choose_query_fields(driver_version)
    rc, out, err = run_command(query_gpu_command(nvidia_smi, fields))
    if rc != 0 and fields != LEGACY_QUERY_FIELDS and is_invalid_field_error(rc, out + "\n" + err):
        fields = LEGACY_QUERY_FIELDS
        rc, out, err = run_command(query_gpu_command(nvidia_smi, fields))
    if rc != 0:
        return rc, (out + "\n" + err).strip("\n"), fields
    return rc, out, fields


def collect(
    run_command: RunCommand,
    sysfs_root: str = "/sys",
    nvidia_proc_dir: str = "/proc/driver/nvidia",
    pci_ids_paths: Sequence[str] = DEFAULT_PCI_IDS_PATHS,
    nvidia_smi_path: Optional[str] = None,
    proc_root: str = "/proc",
    os_release_paths: Sequence[str] = DEFAULT_OS_RELEASE_PATHS,
    container_markers: Sequence[str] = DEFAULT_CONTAINER_MARKERS,
    cuda_driver_version: CudaVersionReader = read_cuda_driver_version,
    dev_root: str = "/dev",
    wsl_lib_dir: str = DEFAULT_WSL_LIB_DIR,
) -> Dict[str, Any]:
    """Read the host and return the Facts JSON host object (``docs/architecture.md``).

    ``nvidia_smi_path`` is the nvidia-smi found on PATH (``None``: not installed). GPUs come from PCI
    (``<sysfs_root>/bus/pci/devices``) and are enriched from nvidia-smi by bus id; GPUs only nvidia-smi lists
    follow them with ``"source": "nvidia-smi"``. WSL2 is told by its kernel release (``<proc_root>/version``) and
    ``<dev_root>/dxg``. Nothing fails for lack of a GPU or a broken driver: that ends up in ``driver.error`` and
    ``warnings``.
    """
    warnings: List[str] = []

    os_release: Dict[str, str] = {}
    for path in os_release_paths:
        text = read_text(path)
        if text is not None:
            os_release = parse_os_release(text)
            break
    kernel = read_value(os.path.join(proc_root, "sys", "kernel", "osrelease")) or platform.release()

    dmi_dir = os.path.join(sysfs_root, "class", "dmi", "id")
    vendor = clean_dmi_value(read_value(os.path.join(dmi_dir, "sys_vendor")))
    product = clean_dmi_value(read_value(os.path.join(dmi_dir, "product_name")))
    cpu = parse_cpuinfo(read_text(os.path.join(proc_root, "cpuinfo")) or "")
    wsl2 = wsl2_evidence(
        kernel,
        read_text(os.path.join(proc_root, "version")),
        os.path.exists(os.path.join(dev_root, "dxg")),
        os.path.isdir(wsl_lib_dir),
    )
    virtualization, evidence = _virtualization(
        container_markers,
        wsl2,
        vendor,
        product,
        bool(cpu["hypervisor"]),
        read_value(os.path.join(sysfs_root, "hypervisor", "type")),
    )
    memory_mib = parse_meminfo_total_mib(read_text(os.path.join(proc_root, "meminfo")) or "")

    try:
        root_disks = find_root_disks(sysfs_root, read_text(os.path.join(proc_root, "self", "mountinfo")))
        disks = read_disks(sysfs_root, root_disks)
    except OSError as exc:
        disks = []
        warnings.append("cannot read block devices under %s: %s" % (sysfs_root, exc))

    pci_ok = True
    try:
        pci_devices = read_pci_devices(sysfs_root)
    except OSError as exc:
        pci_ok = False
        pci_devices = []
        warnings.append("cannot list PCI devices under %s/bus/pci/devices: %s" % (sysfs_root, exc))
    pci_gpus = [device for device in pci_devices if is_nvidia_gpu(device["vendor"], device["class"])]
    kernel_drivers = [kernel_driver(device["path"]) for device in pci_gpus]

    proc = parse_nvidia_proc_version(read_text(os.path.join(nvidia_proc_dir, "version")))
    kernel_module = proc["kernel_module"] if proc else None

    pci_names: Dict[str, str] = {}
    pci_ids_text: Optional[str] = None
    if pci_gpus:
        pci_ids_text = read_pci_ids(pci_ids_paths)
        if pci_ids_text is not None:
            pci_names = lookup_pci_names(
                pci_ids_text, ["%s:%s" % (d["vendor"], d["device"]) for d in pci_gpus if d["device"]]
            )

    rows: List[Dict[str, Optional[str]]] = []
    error: Optional[Dict[str, str]] = None
    smi_ok = False
    if nvidia_smi_path is None:
        if pci_gpus or not pci_ok:
            error = nvidia_smi_missing_error()
    else:
        rc, output, fields = _query_nvidia_smi(run_command, nvidia_smi_path, proc["version"] if proc else None)
        if rc == 0:
            try:
                rows = parse_query_gpu_csv(output, fields)
                smi_ok = True
            except ValueError as exc:
                error = {
                    "kind": "query_failed",
                    "message": str(exc),
                    "hint": "nvidia-smi answered in an unexpected format: run the query by hand.",
                }
        else:
            error = classify_nvidia_smi_failure(rc, output, kernel_drivers, kernel_module)
        if error is not None and pci_ok and not pci_gpus and not wsl2:
            # No NVIDIA GPU on PCI: a failing nvidia-smi (typically "No devices were found") is expected. Not on
            # WSL2, whose GPUs never are on PCI: there nvidia-smi is the only witness of the Windows driver.
            error = None

    by_bus: Dict[str, Dict[str, Optional[str]]] = {}
    for row in rows:
        bus = normalize_bus_id(row.get("pci.bus_id"))
        if bus is not None:
            by_bus[bus] = row

    gpus: List[Dict[str, Any]] = []
    for device in pci_gpus:
        match = by_bus.pop(device["address"]) if device["address"] in by_bus else None
        pci_id = "%s:%s" % (device["vendor"], device["device"])
        gpus.append(_gpu_entry(device, match, pci_names.get(pci_id)))
        if match is None:
            reason = "driver error: %s" % error["kind"] if error else "not listed"
            warnings.append(
                "GPU %s (%s) is on PCI but not visible to the NVIDIA driver (nvidia-smi: %s)"
                % (device["address"], pci_id, reason)
            )
    _name_hops(gpus, pci_ids_text)
    smi_names: Dict[str, str] = {}
    smi_ids = [i for i in (parse_pci_device_id(extra.get("pci.device_id")) for extra in by_bus.values()) if i]
    if smi_ids:
        pci_ids_text = read_pci_ids(pci_ids_paths)
        if pci_ids_text is not None:
            smi_names = lookup_pci_names(pci_ids_text, smi_ids)
    for bus, extra in sorted(by_bus.items()):
        smi_pci_id = parse_pci_device_id(extra.get("pci.device_id"))
        gpus.append(_smi_only_entry(bus, extra, smi_names.get(smi_pci_id) if smi_pci_id else None))
        if not (virtualization == "wsl2" or (virtualization == "container" and not pci_gpus)):
            # expected on WSL2 and in a container that sees no NVIDIA GPU on PCI (the facts say which); odd anywhere
            # else, and beside GPUs that PCI does show
            warnings.append(
                "nvidia-smi lists GPU %s (%s, %s) that PCI does not show under %s"
                % (bus, smi_value(extra.get("name")), smi_pci_id, sysfs_root)
            )

    driver_version = next((row["driver_version"] for row in rows if row.get("driver_version")), None)
    if driver_version is None and proc is not None:
        driver_version = proc["version"]
    loaded = (
        proc is not None
        or smi_ok
        or "nvidia" in kernel_drivers
        or os.path.isdir(os.path.join(sysfs_root, "module", "nvidia"))
    )
    try:
        cuda_version = format_cuda_version(cuda_driver_version())
    except Exception:  # ctypes trouble must not break fact gathering
        cuda_version = None

    return {
        "os": os_facts(os_release, kernel),
        "machine": _machine(vendor, product, virtualization, evidence),
        "cpu": {"model": cpu["model"], "cores": cpu["cores"], "threads": cpu["threads"]},
        "memory_mib": memory_mib,
        "disks": disks,
        "gpus": gpus,
        "driver": {
            "loaded": loaded,
            "version": driver_version,
            "cuda_version": cuda_version,
            "kernel_module": kernel_module,
            "error": error,
        },
        "warnings": warnings,
    }


def _machine(
    vendor: Optional[str], product: Optional[str], virtualization: Optional[str], evidence: List[str]
) -> Dict[str, Any]:
    machine: Dict[str, Any] = {"vendor": vendor, "product": product, "virtualization": virtualization}
    if evidence:  # the key is there only when there is evidence to show (docs/architecture.md)
        machine["virtualization_evidence"] = evidence
    return machine
