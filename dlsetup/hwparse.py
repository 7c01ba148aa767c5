"""Read-only hardware facts: parsers over tool output and a collector over a host's /sys and /proc.

This file is shipped to managed hosts as Ansible ``module_utils`` (``roles/hw_facts/module_utils/
dlsetup_hwparse.py`` is a symlink to it), so it must stay **stdlib-only and Python 3.8-compatible**:
no ``match``, no ``X | Y`` outside annotations, no third-party imports.

Two layers:

* pure parsers over text (nvidia-smi ``--query-gpu`` CSV and its failure messages, sysfs link attributes,
  ``/proc/driver/nvidia/version``, os-release, cpuinfo, meminfo, DMI strings, pci.ids), trivially unit-tested
  against real captures in ``tests/fixtures/``;
* :func:`collect`, which reads a host (or a fake sysfs/proc tree) through those parsers and returns the
  host object of the Facts JSON contract in ``docs/architecture.md``. It never writes anything; the only
  command it runs is one ``nvidia-smi --query-gpu`` call (two when an old nvidia-smi rejects the field
  list), through the ``run_command`` callable it is given.
"""

# This file is also linted as roles/hw_facts/module_utils/dlsetup_hwparse.py (a symlink): keep the
# pyupgrade rules off in the file itself, since it must stay on Python 3.8 syntax wherever it is found.
# ruff: noqa: UP006, UP031, UP035, UP045, RUF100

from __future__ import annotations

import ctypes
import gzip
import os
import platform
import re
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Set, Tuple

# run_command(argv) -> (rc, stdout, stderr); AnsibleModule.run_command has this shape.
RunCommand = Callable[[List[str]], Tuple[int, str, str]]
CudaVersionReader = Callable[[], Optional[int]]

NVIDIA_VENDOR_ID = "10de"
# PCI class codes (base class + subclass) of display devices we treat as GPUs: VGA 0x0300 and 3D 0x0302.
# Deliberately not 0x0403 (the GPU's HDMI audio function) nor 0x0680 (NVSwitch).
GPU_CLASS_PREFIXES = ("0x0300", "0x0302")

DEFAULT_PCI_IDS_PATHS = ("/usr/share/misc/pci.ids", "/usr/share/hwdata/pci.ids")
DEFAULT_OS_RELEASE_PATHS = ("/etc/os-release", "/usr/lib/os-release")
DEFAULT_CONTAINER_MARKERS = ("/run/systemd/container", "/.dockerenv", "/run/.containerenv")
DEFAULT_CUDA_LIBRARIES = ("libcuda.so.1", "libcuda.so")

# The one nvidia-smi query. compute_cap and pcie.link.gen.gpucurrent/gpumax exist from the 535 branch on
# and are absent from the 470 nvidia-smi (research/compat.md section 6.1); older drivers get the legacy list.
QUERY_FIELDS = (
    "index",
    "name",
    "uuid",
    "pci.bus_id",
    "pci.device_id",
    "memory.total",
    "driver_version",
    "pcie.link.gen.gpucurrent",
    "pcie.link.gen.gpumax",
    "pcie.link.gen.max",
    "pcie.link.width.current",
    "pcie.link.width.max",
    "persistence_mode",
    "compute_cap",
)
# The same query for 470 and older: the deprecated pcie.link.gen.current in place of gpucurrent, without the
# fields those drivers reject.
_LEGACY_RENAMED = {"pcie.link.gen.gpucurrent": "pcie.link.gen.current"}
_LEGACY_ABSENT = frozenset(("pcie.link.gen.gpumax", "compute_cap"))
LEGACY_QUERY_FIELDS = tuple(_LEGACY_RENAMED.get(f, f) for f in QUERY_FIELDS if f not in _LEGACY_ABSENT)
LEGACY_DRIVER_MAX_MAJOR = 470
QUERY_FORMAT = "--format=csv,noheader,nounits"

ERROR_KINDS = (
    "nvidia_smi_missing",
    "driver_not_loaded",
    "version_mismatch",
    "no_devices",
    "gpu_lost",
    "nvml_missing",
    "query_failed",
)

# nvidia-smi prints these instead of a value (research/compat.md section 6.2); "-q" uses a bare N/A.
SMI_SENTINELS = frozenset(
    (
        "[N/A]",
        "[Not Supported]",
        "[Unknown Error]",
        "[Requested functionality has been deprecated]",
        "[Insufficient Permissions]",
        "[GPU requires reset]",
        "N/A",
        "",
    )
)

# Kernel speed strings ("8.0 GT/s PCIe"; old kernels "8 GT/s") → PCIe generation.
_GTS_TO_GEN = {2.5: 1, 5.0: 2, 8.0: 3, 16.0: 4, 32.0: 5, 64.0: 6, 128.0: 7}
_SPEED_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*GT/s", re.IGNORECASE)
_PCI_ADDRESS_RE = re.compile(r"^([0-9a-fA-F]{4,8}):([0-9a-fA-F]{2}):([0-9a-fA-F]{2})\.([0-7])$")
_BUS_ID_IN_TEXT_RE = re.compile(r"([0-9a-fA-F]{4,8}:[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7])")
_PROC_VERSION_RE = re.compile(
    r"NVRM version:\s*NVIDIA UNIX\s+(?P<flavor>Open Kernel Module for \S+|\S+ Kernel Module)\s+"
    r"(?P<version>\d+(?:\.\d+)+)"
)
_INVALID_FIELD_RE = re.compile(r'Field "([^"]*)" is not a valid field to query')

# DMI strings vendors leave unset; they carry no information.
_DMI_PLACEHOLDERS = frozenset(
    (
        "",
        "to be filled by o.e.m.",
        "default string",
        "system manufacturer",
        "system product name",
        "not applicable",
        "not specified",
        "none",
        "na",
        "n/a",
        "0123456789",
        "oem",
    )
)
_VM_DMI_RE = re.compile(
    r"\b(qemu|kvm|vmware|virtualbox|innotek|xen|bochs|parallels|bhyve|virtual machine|openstack|"
    r"cloud hypervisor|firecracker)\b",
    re.IGNORECASE,
)
# Block devices that are not disks of their own: loop, RAM disks, device-mapper/md (followed through
# slaves/ instead), optical drives, floppies, network block devices, eMMC boot/RPMB areas.
_SKIP_BLOCK_RE = re.compile(r"^(loop|ram|zram|dm-|md|sr|fd|nbd|mtdblock)|^mmcblk\d+(boot|rpmb)")


# --------------------------------------------------------------------------------------------------
# nvidia-smi values and CSV


def smi_value(raw: Optional[str]) -> Optional[str]:
    """One nvidia-smi cell, stripped; ``None`` for a sentinel such as ``[N/A]`` or ``[Not Supported]``."""
    if raw is None:
        return None
    value = raw.strip()
    if value in SMI_SENTINELS:
        return None
    # Any other fully bracketed cell is a sentinel too (nvidia-smi adds new ones over time).
    if value.startswith("[") and value.endswith("]"):
        return None
    return value


def parse_query_gpu_csv(text: str, fields: Sequence[str]) -> List[Dict[str, Optional[str]]]:
    """Parse ``nvidia-smi --query-gpu=<fields> --format=csv,noheader,nounits`` output.

    Cells are separated by ``", "``; sentinels become ``None``. Raises ``ValueError`` when a row does not
    have one cell per requested field (the output is then not what was asked for).
    """
    rows: List[Dict[str, Optional[str]]] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        cells = line.split(", ")
        if len(cells) != len(fields):
            raise ValueError(
                "nvidia-smi returned %d values where %d were asked for: %r" % (len(cells), len(fields), line)
            )
        # zip(strict=True) needs Python 3.10; the lengths were checked just above.
        rows.append({field: smi_value(cell) for field, cell in zip(fields, cells)})  # noqa: B905
    return rows


def parse_query_gpu_csv_with_header(text: str) -> List[Dict[str, Optional[str]]]:
    """Parse ``--format=csv`` output (header, units in values): keys are field names without the unit.

    ``memory.total [MiB]`` becomes the key ``memory.total`` and ``143771 MiB`` the value ``143771``.
    """
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        return []
    names: List[str] = []
    units: List[Optional[str]] = []
    for column in lines[0].split(", "):
        match = re.match(r"^(.*?) \[(.+)\]$", column.strip())
        if match:
            names.append(match.group(1))
            units.append(match.group(2))
        else:
            names.append(column.strip())
            units.append(None)
    rows: List[Dict[str, Optional[str]]] = []
    for line in lines[1:]:
        cells = line.split(", ")
        if len(cells) != len(names):
            raise ValueError("row has %d values, header %d: %r" % (len(cells), len(names), line))
        row: Dict[str, Optional[str]] = {}
        for name, unit, cell in zip(names, units, cells):  # noqa: B905 (3.8: no strict=)
            value = smi_value(cell)
            if value is not None and unit is not None and value.endswith(" " + unit):
                value = value[: -len(unit) - 1]
            row[name] = value
        rows.append(row)
    return rows


def parse_int(value: Optional[str]) -> Optional[int]:
    """An integer cell or file content; ``None`` for sentinels and anything that is not an integer."""
    value = smi_value(value)
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        return None


def normalize_bus_id(bus_id: Optional[str]) -> Optional[str]:
    """``00000000:00:06.0`` (nvidia-smi, 8-digit domain) → ``0000:00:06.0`` (sysfs); lower-case hex."""
    value = smi_value(bus_id)
    if value is None:
        return None
    match = _PCI_ADDRESS_RE.match(value)
    if not match:
        return None
    domain, bus, device, function = match.groups()
    return "%04x:%s:%s.%s" % (int(domain, 16), bus.lower(), device.lower(), function)


def parse_pci_device_id(device_id: Optional[str]) -> Optional[str]:
    """nvidia-smi ``pci.device_id`` ``0x233510DE`` (device then vendor) → ``10de:2335``."""
    value = smi_value(device_id)
    if value is None:
        return None
    match = re.match(r"^(?:0x)?([0-9a-fA-F]{4})([0-9a-fA-F]{4})$", value)
    if not match:
        return None
    return "%s:%s" % (match.group(2).lower(), match.group(1).lower())


def parse_persistence_mode(value: Optional[str]) -> Optional[bool]:
    """``Enabled``/``Disabled`` → True/False."""
    value = smi_value(value)
    if value is None:
        return None
    lowered = value.lower()
    if lowered == "enabled":
        return True
    if lowered == "disabled":
        return False
    return None


def is_invalid_field_error(rc: int, output: str) -> bool:
    """True when nvidia-smi rejected the field list (exit code 2, ``... is not a valid field to query``)."""
    return rc == 2 and _INVALID_FIELD_RE.search(output) is not None


def choose_query_fields(driver_version: Optional[str]) -> Tuple[str, ...]:
    """The ``--query-gpu`` field list for a driver version (legacy list for the 470 branch and older)."""
    major = driver_major(driver_version)
    if major is not None and major <= LEGACY_DRIVER_MAX_MAJOR:
        return LEGACY_QUERY_FIELDS
    return QUERY_FIELDS


def query_gpu_command(nvidia_smi: str, fields: Sequence[str]) -> List[str]:
    """The argv of the one nvidia-smi call."""
    return [nvidia_smi, "--query-gpu=" + ",".join(fields), QUERY_FORMAT]


# --------------------------------------------------------------------------------------------------
# nvidia-smi failures


def _first_line(text: str) -> str:
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return ""


def nvidia_smi_missing_error() -> Dict[str, str]:
    """The error for a host with an NVIDIA GPU on PCI but no ``nvidia-smi`` on PATH."""
    return {
        "kind": "nvidia_smi_missing",
        "message": "nvidia-smi was not found on PATH",
        "hint": "The NVIDIA driver's userspace is not installed (or not on PATH): "
        "`dlsetup provision` installs the driver for this GPU.",
    }


def classify_nvidia_smi_failure(
    rc: int,
    output: str,
    kernel_drivers: Sequence[Optional[str]] = (),
    kernel_module: Optional[str] = None,
) -> Dict[str, str]:
    """Turn a failed nvidia-smi call into ``{"kind", "message", "hint"}``.

    ``output`` is stdout and stderr together; ``message`` is its first non-empty line. ``kernel_drivers``
    (the drivers bound to the NVIDIA GPUs on PCI) and ``kernel_module`` ("open"/"proprietary") only sharpen
    the hint. The kind is decided from the text first (the same text has been seen with different exit
    codes across driver generations), then from the exit code documented in nvidia-smi(1).
    """
    message = _first_line(output) or "nvidia-smi exited with code %d and printed nothing" % rc
    lowered = output.lower()
    if "couldn't communicate with the nvidia driver" in lowered:
        kind = "driver_not_loaded"
        hint = (
            "The nvidia kernel module is not loaded. Check `lsmod | grep nvidia` and `dmesg | grep -i nvrm`: "
            "after a driver install or kernel upgrade reboot, or rebuild the module (DKMS) for the running "
            "kernel; with Secure Boot on, the module must be signed with an enrolled key. "
            "In a container, run it with the NVIDIA container toolkit."
        )
    elif "driver/library version mismatch" in lowered:
        kind = "version_mismatch"
        hint = (
            "The loaded nvidia kernel module is older than the installed driver libraries (the driver was "
            "upgraded without a reboot): reboot the machine."
        )
    elif "no devices were found" in lowered:
        kind = "no_devices"
        hint = (
            "The driver is loaded but drives no GPU. Check `lspci -k` for nouveau bound to the GPU "
            "(blacklist it and reboot), that the installed driver branch supports this GPU, and "
            "`dmesg | grep NVRM`; the open kernel modules do not drive pre-Turing GPUs "
            "(Maxwell, Pascal, Volta: use the proprietary flavor, branch 580 or older)."
        )
        if any(driver == "nouveau" for driver in kernel_drivers):
            hint += " Here nouveau is bound to an NVIDIA GPU."
        if kernel_module == "open":
            hint += " Here the open kernel module is loaded."
    elif "unable to determine the device handle" in lowered or "gpu is lost" in lowered or rc == 15:
        kind = "gpu_lost"
        bus = _BUS_ID_IN_TEXT_RE.search(output)
        which = "GPU %s" % normalize_bus_id(bus.group(1)) if bus else "A GPU"
        hint = (
            "%s stopped answering (fell off the bus): look for Xid 79 in `dmesg`, check its power "
            "cables and PSU, reseat the card; a reboot is needed to recover it." % which
        )
    elif "libnvidia-ml.so" in lowered or "nvml shared library" in lowered or rc == 12:
        kind = "nvml_missing"
        hint = (
            "nvidia-smi cannot load NVML (libnvidia-ml.so): the driver's userspace libraries are missing "
            "or not on the loader path; reinstall the driver packages or run `ldconfig` "
            "(in a container, use the NVIDIA container toolkit)."
        )
    elif rc in (124, 137):
        kind = "query_failed"
        hint = (
            "nvidia-smi did not answer in time and was stopped: a GPU may have fallen off the bus "
            "(look for Xid 79 in `dmesg`) or the driver is stuck; a reboot usually clears it."
        )
    elif rc == 9:
        kind = "driver_not_loaded"
        hint = "nvidia-smi reports that the NVIDIA driver is not loaded: check `lsmod | grep nvidia`."
    elif rc == 18:
        kind = "version_mismatch"
        hint = "Driver and library versions differ: reboot the machine."
    elif rc == 6:
        kind = "no_devices"
        hint = "The driver found no GPU: check `lspci -k` and `dmesg | grep NVRM`."
    else:
        kind = "query_failed"
        if is_invalid_field_error(rc, output):
            hint = "This nvidia-smi does not know a field dlsetup queries; its driver is older than expected."
        else:
            hint = "nvidia-smi exited with code %d: run `nvidia-smi` by hand for the full message." % rc
    return {"kind": kind, "message": message, "hint": hint}


# --------------------------------------------------------------------------------------------------
# sysfs, /proc, os-release, DMI, pci.ids


def link_speed_to_gen(speed: Optional[str]) -> Optional[int]:
    """sysfs ``current_link_speed``/``max_link_speed`` (``32.0 GT/s PCIe``, ``8 GT/s``) → generation."""
    if speed is None:
        return None
    match = _SPEED_RE.match(speed)
    if not match:
        return None  # "Unknown", "Unknown speed", empty
    return _GTS_TO_GEN.get(float(match.group(1)))


def parse_link_width(width: Optional[str]) -> Optional[int]:
    """sysfs ``*_link_width`` (a bare integer) → lanes; ``None`` for 0 (link down) and nonsense."""
    value = parse_int(width)
    if value is None or value <= 0 or value > 32:
        return None
    return value


def parse_nvidia_proc_version(text: Optional[str]) -> Optional[Dict[str, str]]:
    """``/proc/driver/nvidia/version`` → ``{"version": "580.159.04", "kernel_module": "open"}``.

    "NVIDIA UNIX Open Kernel Module for x86_64" is the open flavor, "NVIDIA UNIX x86_64 Kernel Module" the
    proprietary one. ``None`` when the text is not a driver version file.
    """
    if not text:
        return None
    match = _PROC_VERSION_RE.search(text)
    if not match:
        return None
    flavor = "open" if match.group("flavor").startswith("Open ") else "proprietary"
    return {"version": match.group("version"), "kernel_module": flavor}


def driver_major(version: Optional[str]) -> Optional[int]:
    """``580.159.04`` → 580."""
    if not version:
        return None
    match = re.match(r"^\s*(\d+)", version)
    return int(match.group(1)) if match else None


def parse_os_release(text: str) -> Dict[str, str]:
    """os-release ``KEY=value`` lines (values optionally quoted) → dict."""
    result: Dict[str, str] = {}
    for raw_line in text.splitlines():
        line = raw_line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
            value = re.sub(r"\\(.)", r"\1", value)
        result[key.strip()] = value
    return result


def os_facts(os_release: Mapping[str, str], kernel: Optional[str]) -> Dict[str, Optional[str]]:
    """The ``os`` object of the Facts JSON from parsed os-release and the kernel release."""
    codename = os_release.get("VERSION_CODENAME") or os_release.get("UBUNTU_CODENAME")
    if not codename:
        match = re.search(r"\(([a-z]+)\)", os_release.get("VERSION", ""))
        codename = match.group(1) if match else None
    return {
        "id": os_release.get("ID") or None,
        "version": os_release.get("VERSION_ID") or None,
        "codename": codename or None,
        "kernel": kernel or None,
        "pretty_name": os_release.get("PRETTY_NAME") or None,
    }


def parse_cpuinfo(text: str) -> Dict[str, Any]:
    """``/proc/cpuinfo`` → ``{"model", "cores", "threads", "hypervisor"}``.

    Cores are distinct (physical id, core id) pairs; without core ids (some VMs, ARM) cores = threads.
    """
    model: Optional[str] = None
    threads = 0
    cores: Set[Tuple[str, str]] = set()
    hypervisor = False
    for block in re.split(r"\n\s*\n", text):
        fields: Dict[str, str] = {}
        for line in block.splitlines():
            key, sep, value = line.partition(":")
            if sep:
                fields[key.strip()] = value.strip()
        if "processor" not in fields:
            continue
        threads += 1
        if model is None:
            model = fields.get("model name") or fields.get("Model") or fields.get("cpu model") or None
        if "core id" in fields:
            cores.add((fields.get("physical id", "0"), fields["core id"]))
        if "hypervisor" in fields.get("flags", "").split():
            hypervisor = True
    return {
        "model": model,
        "cores": (len(cores) or threads) or None,
        "threads": threads or None,
        "hypervisor": hypervisor,
    }


def parse_meminfo_total_mib(text: str) -> Optional[int]:
    """``MemTotal:  16252928 kB`` → 15872 (MiB, rounded down)."""
    match = re.search(r"^MemTotal:\s*(\d+)\s*kB", text, re.MULTILINE)
    return int(match.group(1)) // 1024 if match else None


def clean_dmi_value(value: Optional[str]) -> Optional[str]:
    """A DMI string, stripped; ``None`` for empty values and vendor placeholders."""
    if value is None:
        return None
    value = value.strip()
    if value.lower() in _DMI_PLACEHOLDERS:
        return None
    return value


def detect_virtualization(
    in_container: bool,
    dmi_vendor: Optional[str],
    dmi_product: Optional[str],
    cpu_hypervisor_flag: bool,
    hypervisor_type: Optional[str] = None,
) -> Optional[str]:
    """``"container"``, ``"vm"`` or ``None`` (bare metal or unknown)."""
    if in_container:
        return "container"
    for value in (dmi_vendor, dmi_product):
        if value and _VM_DMI_RE.search(value):
            return "vm"
    if cpu_hypervisor_flag or (hypervisor_type or "").strip():
        return "vm"
    return None


def lookup_pci_names(pci_ids_text: str, pci_ids: Iterable[str]) -> Dict[str, str]:
    """Device names from a ``pci.ids`` database for ``vendor:device`` ids (lower-case hex).

    ``10de:1b06`` → ``GP102 [GeForce GTX 1080 Ti]``; ids not in the database are absent from the result.
    """
    wanted: Dict[str, Set[str]] = {}
    for pci_id in pci_ids:
        vendor, _, device = pci_id.lower().partition(":")
        wanted.setdefault(vendor, set()).add(device)
    found: Dict[str, str] = {}
    vendor_now: Optional[str] = None
    for line in pci_ids_text.splitlines():
        if not line or line.startswith("#"):
            continue
        if line.startswith("C "):
            break  # the class list follows the vendor list
        if not line.startswith("\t"):
            vendor_now = line[:4].lower()
            continue
        if line.startswith("\t\t") or vendor_now not in wanted:
            continue
        device, _, name = line[1:].partition("  ")
        device = device.strip().lower()
        if device in wanted[vendor_now]:
            found["%s:%s" % (vendor_now, device)] = name.strip()
    return found


def lookup_pci_name(pci_ids_text: str, pci_id: str) -> Optional[str]:
    """One device name from a ``pci.ids`` database, or ``None``."""
    return lookup_pci_names(pci_ids_text, [pci_id]).get(pci_id.lower())


def format_cuda_version(version: Optional[int]) -> Optional[str]:
    """``cuDriverGetVersion`` value → ``"major.minor"`` (13000 → ``"13.0"``, 12040 → ``"12.4"``)."""
    if not version or version <= 0:
        return None
    return "%d.%d" % (version // 1000, (version % 1000) // 10)


def read_cuda_driver_version(library_names: Sequence[str] = DEFAULT_CUDA_LIBRARIES) -> Optional[int]:
    """The CUDA version the installed driver supports, from ``cuDriverGetVersion`` in libcuda.

    ``None`` when libcuda cannot be loaded. The call needs no GPU and no ``cuInit``, so it is safe on a
    host whose kernel module is missing or mismatched.
    """
    for name in library_names:
        try:
            library = ctypes.CDLL(name)
            get_version = library.cuDriverGetVersion
        except (OSError, AttributeError):
            continue
        version = ctypes.c_int(0)
        try:
            rc = get_version(ctypes.byref(version))
        except Exception:  # a broken library must not break fact gathering
            continue
        if rc == 0 and version.value > 0:
            return int(version.value)
    return None


def parse_mountinfo_root(text: str) -> Tuple[Optional[str], Optional[str]]:
    """``/proc/self/mountinfo`` → (``major:minor``, mount source) of the mount on ``/`` (the last one)."""
    result: Tuple[Optional[str], Optional[str]] = (None, None)
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 5 or fields[4] != "/":
            continue
        source: Optional[str] = None
        if "-" in fields[6:]:
            after = fields[fields.index("-", 6) + 1 :]
            if len(after) >= 2:
                source = after[1]
        result = (fields[2], source)
    return result


# --------------------------------------------------------------------------------------------------
# reading a (possibly fake) host


def _read(path: str) -> Optional[str]:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read()
    except (OSError, ValueError):
        return None


def _read_value(path: str) -> Optional[str]:
    text = _read(path)
    return text.strip() if text is not None else None


def _read_pci_ids(paths: Sequence[str]) -> Optional[str]:
    for path in paths:
        if path.endswith(".gz"):
            try:
                with gzip.open(path, "rt", encoding="utf-8", errors="replace") as handle:
                    return handle.read()
            except (OSError, ValueError):
                continue
        text = _read(path)
        if text is not None:
            return text
    return None


def _hex_id(value: Optional[str]) -> Optional[str]:
    """sysfs ``0x10de`` → ``10de``."""
    if not value:
        return None
    value = value.strip().lower()
    if value.startswith("0x"):
        value = value[2:]
    return value.zfill(4) if re.match(r"^[0-9a-f]{1,4}$", value) else None


def is_nvidia_gpu(vendor: Optional[str], pci_class: Optional[str]) -> bool:
    """Vendor 0x10de and class 0x0300xx (VGA) or 0x0302xx (3D controller)."""
    if _hex_id(vendor) != NVIDIA_VENDOR_ID or not pci_class:
        return False
    return pci_class.strip().lower().startswith(GPU_CLASS_PREFIXES)


def read_pci_devices(sysfs_root: str) -> List[Dict[str, Any]]:
    """Every device under ``<sysfs_root>/bus/pci/devices`` with its ids, class and sysfs path.

    Raises ``OSError`` when the directory cannot be listed.
    """
    base = os.path.join(sysfs_root, "bus", "pci", "devices")
    devices: List[Dict[str, Any]] = []
    for name in sorted(os.listdir(base)):
        address = normalize_bus_id(name)
        if address is None:
            continue
        path = os.path.realpath(os.path.join(base, name))
        devices.append(
            {
                "address": address,
                "path": path,
                "vendor": _hex_id(_read_value(os.path.join(path, "vendor"))),
                "device": _hex_id(_read_value(os.path.join(path, "device"))),
                "subsystem_vendor": _hex_id(_read_value(os.path.join(path, "subsystem_vendor"))),
                "subsystem_device": _hex_id(_read_value(os.path.join(path, "subsystem_device"))),
                "class": (_read_value(os.path.join(path, "class")) or "").lower() or None,
            }
        )
    return devices


def read_pci_link(device_path: str) -> Dict[str, Optional[int]]:
    """Link generation/width of a PCI device, and ``slot_*_max`` of its upstream port (sysfs parent).

    The parent is the directory above the device's resolved path; when that is a root complex
    (``pci0000:00``) it has no link attributes and the slot values are ``None``.
    """
    parent = os.path.dirname(device_path)
    parent_is_port = _PCI_ADDRESS_RE.match(os.path.basename(parent)) is not None
    return {
        "gen_current": link_speed_to_gen(_read_value(os.path.join(device_path, "current_link_speed"))),
        "gen_max": link_speed_to_gen(_read_value(os.path.join(device_path, "max_link_speed"))),
        "width_current": parse_link_width(_read_value(os.path.join(device_path, "current_link_width"))),
        "width_max": parse_link_width(_read_value(os.path.join(device_path, "max_link_width"))),
        "slot_gen_max": link_speed_to_gen(_read_value(os.path.join(parent, "max_link_speed")))
        if parent_is_port
        else None,
        "slot_width_max": parse_link_width(_read_value(os.path.join(parent, "max_link_width")))
        if parent_is_port
        else None,
    }


def _kernel_driver(device_path: str) -> Optional[str]:
    link = os.path.join(device_path, "driver")
    if not os.path.islink(link):
        return None
    return os.path.basename(os.readlink(link).rstrip("/")) or None


def _disks_behind(sysfs_root: str, block_path: str, depth: int = 0) -> List[str]:
    """Whole-disk names behind a block device: a partition's disk, or dm/md slaves followed down."""
    if depth > 8 or not os.path.isdir(block_path):
        return []
    name = os.path.basename(block_path)
    if os.path.exists(os.path.join(block_path, "partition")):
        return [os.path.basename(os.path.dirname(block_path))]
    slaves_dir = os.path.join(block_path, "slaves")
    if name.startswith(("dm-", "md")) and os.path.isdir(slaves_dir):
        disks: List[str] = []
        for slave in sorted(os.listdir(slaves_dir)):
            target = os.path.realpath(os.path.join(sysfs_root, "class", "block", slave))
            for disk in _disks_behind(sysfs_root, target, depth + 1):
                if disk not in disks:
                    disks.append(disk)
        return disks
    return [name]


def find_root_disks(sysfs_root: str, mountinfo_text: Optional[str]) -> List[str]:
    """Names of the disks that hold ``/`` (through partitions, LVM/dm and md); ``[]`` when unknown."""
    if not mountinfo_text:
        return []
    majmin, source = parse_mountinfo_root(mountinfo_text)
    if majmin and not majmin.startswith("0:"):
        path = os.path.join(sysfs_root, "dev", "block", majmin)
        if os.path.exists(path):
            disks = _disks_behind(sysfs_root, os.path.realpath(path))
            if disks:
                return disks
    if source and source.startswith("/dev/"):
        name = os.path.basename(source)
        if source.startswith("/dev/mapper/"):
            block = os.path.join(sysfs_root, "block")
            for dm in sorted(os.listdir(block)) if os.path.isdir(block) else []:
                if dm.startswith("dm-") and _read_value(os.path.join(block, dm, "dm", "name")) == name:
                    return _disks_behind(sysfs_root, os.path.realpath(os.path.join(block, dm)))
            return []
        path = os.path.join(sysfs_root, "class", "block", name)
        if os.path.exists(path):
            return _disks_behind(sysfs_root, os.path.realpath(path))
    return []


def _disk_transport(name: str, real_path: str) -> Optional[str]:
    if name.startswith("nvme"):
        return "nvme"
    if name.startswith("vd") or "/virtio" in real_path:
        return "virtio"
    if name.startswith("mmcblk"):
        return "mmc"
    if "/usb" in real_path:
        return "usb"
    if "/ata" in real_path:
        return "sata"
    if name.startswith("xvd"):
        return "xen"
    if name.startswith("sd"):
        return "scsi"
    return None


def read_disks(sysfs_root: str, root_disks: Sequence[str]) -> List[Dict[str, Any]]:
    """Whole disks under ``<sysfs_root>/block`` (no loop/ram/zram/dm/md/sr, no empty media)."""
    block = os.path.join(sysfs_root, "block")
    disks: List[Dict[str, Any]] = []
    for name in sorted(os.listdir(block)) if os.path.isdir(block) else []:
        if _SKIP_BLOCK_RE.match(name):
            continue
        path = os.path.join(block, name)
        sectors = parse_int(_read_value(os.path.join(path, "size")))
        if not sectors:
            continue
        rotational_raw = _read_value(os.path.join(path, "queue", "rotational"))
        rotational = None if rotational_raw not in ("0", "1") else rotational_raw == "1"
        model = _read_value(os.path.join(path, "device", "model")) or None
        disks.append(
            {
                "name": name,
                "model": model,
                # sysfs "size" counts 512-byte sectors whatever the device's sector size.
                "size_gib": round(sectors * 512 / float(1 << 30)),
                "rotational": rotational,
                "transport": _disk_transport(name, os.path.realpath(path)),
                "ssd": None if rotational is None else not rotational,
                "holds": ["/"] if name in root_disks else [],
            }
        )
    return disks


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
    return {
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
        "kernel_driver": _kernel_driver(device["path"]),
        "visible_to_driver": row is not None,
        "pcie": _pcie(read_pci_link(device["path"]), row),
    }


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
) -> Dict[str, Any]:
    """Read the host and return the Facts JSON host object (``docs/architecture.md``).

    ``nvidia_smi_path`` is the nvidia-smi found on PATH (``None``: not installed). GPUs come from PCI
    (``<sysfs_root>/bus/pci/devices``) and are enriched from nvidia-smi by bus id. Nothing fails for lack
    of a GPU or a broken driver: that ends up in ``driver.error`` and ``warnings``.
    """
    warnings: List[str] = []

    os_release: Dict[str, str] = {}
    for path in os_release_paths:
        text = _read(path)
        if text is not None:
            os_release = parse_os_release(text)
            break
    kernel = _read_value(os.path.join(proc_root, "sys", "kernel", "osrelease")) or platform.release()

    dmi_dir = os.path.join(sysfs_root, "class", "dmi", "id")
    vendor = clean_dmi_value(_read_value(os.path.join(dmi_dir, "sys_vendor")))
    product = clean_dmi_value(_read_value(os.path.join(dmi_dir, "product_name")))
    cpu = parse_cpuinfo(_read(os.path.join(proc_root, "cpuinfo")) or "")
    virtualization = detect_virtualization(
        any(os.path.exists(marker) for marker in container_markers),
        vendor,
        product,
        bool(cpu["hypervisor"]),
        _read_value(os.path.join(sysfs_root, "hypervisor", "type")),
    )
    memory_mib = parse_meminfo_total_mib(_read(os.path.join(proc_root, "meminfo")) or "")

    try:
        root_disks = find_root_disks(sysfs_root, _read(os.path.join(proc_root, "self", "mountinfo")))
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
    kernel_drivers = [_kernel_driver(device["path"]) for device in pci_gpus]

    proc = parse_nvidia_proc_version(_read(os.path.join(nvidia_proc_dir, "version")))
    kernel_module = proc["kernel_module"] if proc else None

    pci_names: Dict[str, str] = {}
    if pci_gpus:
        pci_ids_text = _read_pci_ids(pci_ids_paths)
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
        if error is not None and pci_ok and not pci_gpus:
            # No NVIDIA GPU on PCI: a failing nvidia-smi (typically "No devices were found") is expected.
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
    for bus, extra in sorted(by_bus.items()):
        warnings.append(
            "nvidia-smi lists GPU %s (%s, %s) that PCI does not show under %s"
            % (bus, smi_value(extra.get("name")), parse_pci_device_id(extra.get("pci.device_id")), sysfs_root)
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
        "machine": {"vendor": vendor, "product": product, "virtualization": virtualization},
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
