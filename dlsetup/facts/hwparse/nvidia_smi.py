"""nvidia-smi: the one ``--query-gpu`` call, its CSV and sentinels, and what its failures mean.

Stdlib-only, Python 3.8-compatible (shipped as Ansible module_utils; see the package docstring).
"""

# ruff: noqa: UP006, UP031, UP035, UP045, RUF100

from __future__ import annotations

import ctypes
import re
from typing import Dict, List, Optional, Sequence, Tuple

from .common import driver_major, normalize_bus_id

DEFAULT_CUDA_LIBRARIES = ("libcuda.so.1", "libcuda.so")

# The one nvidia-smi query. compute_cap and pcie.link.gen.gpucurrent/gpumax exist in the 535, 550 and 555
# nvidia-smi binaries and are absent from the 470 one (docs/sources.md, DEB-SMI); older drivers get the legacy list.
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

# nvidia-smi prints these instead of a value (nvidia-smi(1); docs/sources.md, DEV); "-q" uses a bare N/A.
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

_BUS_ID_IN_TEXT_RE = re.compile(r"([0-9a-fA-F]{4,8}:[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7])")
_INVALID_FIELD_RE = re.compile(r'Field "([^"]*)" is not a valid field to query')


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
