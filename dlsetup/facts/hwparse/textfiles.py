"""Text files a host keeps: the NVIDIA driver's proc version, os-release, cpuinfo, meminfo, mountinfo, DMI
strings and the pci.ids database.

Stdlib-only, Python 3.8-compatible (shipped as Ansible module_utils; see the package docstring).
"""

# ruff: noqa: UP006, UP031, UP035, UP045, RUF100

from __future__ import annotations

import gzip
import re
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Set, Tuple

from .common import read_text

DEFAULT_PCI_IDS_PATHS = ("/usr/share/misc/pci.ids", "/usr/share/hwdata/pci.ids")
DEFAULT_OS_RELEASE_PATHS = ("/etc/os-release", "/usr/lib/os-release")
DEFAULT_CONTAINER_MARKERS = ("/run/systemd/container", "/.dockerenv", "/run/.containerenv")
# WSL2 (microsoft/WSL#4555, #9821): the kernel release carries "microsoft-standard" (5.x kernels add "-WSL2"), the
# GPU is paravirtualized through /dev/dxg, and the Windows driver's Linux libraries (libcuda, nvidia-smi) are
# mounted at /usr/lib/wsl/lib. WSL1's "4.4.0-19041-Microsoft" has no Linux kernel and no GPU support.
DEFAULT_WSL_LIB_DIR = "/usr/lib/wsl/lib"
_WSL2_KERNEL_RE = re.compile(r"microsoft-standard|wsl2", re.IGNORECASE)

_PROC_VERSION_RE = re.compile(
    r"NVRM version:\s*NVIDIA UNIX\s+(?P<flavor>Open Kernel Module for \S+|\S+ Kernel Module)\s+"
    r"(?P<version>\d+(?:\.\d+)+)"
)
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


def wsl2_evidence(
    kernel_release: Optional[str],
    proc_version: Optional[str],
    dxg_present: bool,
    wsl_lib_present: bool,
) -> List[str]:
    """Why this is WSL2, one line per sign (empty: not WSL2).

    A WSL2 kernel (``5.15.153.1-microsoft-standard-WSL2``, ``4.19.67-microsoft-standard``) or ``/dev/dxg`` makes it
    WSL2; ``/usr/lib/wsl/lib`` alone does not (a copied tree), but is reported beside them.
    """
    evidence: List[str] = []
    if kernel_release and _WSL2_KERNEL_RE.search(kernel_release):
        evidence.append("kernel %s is a WSL2 kernel" % kernel_release.strip())
    elif proc_version and _WSL2_KERNEL_RE.search(proc_version):
        evidence.append("/proc/version names a WSL2 kernel: %s" % proc_version.strip().split(" (")[0])
    if dxg_present:
        evidence.append("/dev/dxg is present (WSL2's paravirtualized GPU device)")
    if not evidence:
        return []
    if wsl_lib_present:
        evidence.append("/usr/lib/wsl/lib is present (the Windows driver's libraries)")
    return evidence


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


def read_pci_ids(paths: Sequence[str] = DEFAULT_PCI_IDS_PATHS) -> Optional[str]:
    """The text of the first readable pci.ids database among ``paths`` (``.gz`` files are decompressed)."""
    for path in paths:
        if path.endswith(".gz"):
            try:
                with gzip.open(path, "rt", encoding="utf-8", errors="replace") as handle:
                    return handle.read()
            except (OSError, ValueError):
                continue
        text = read_text(path)
        if text is not None:
            return text
    return None
