"""sysfs: PCI devices and their links, and the block devices, under ``/sys`` (or a fake tree).

Stdlib-only, Python 3.8-compatible (shipped as Ansible module_utils; see the package docstring).
"""

# ruff: noqa: UP006, UP031, UP035, UP045, RUF100

from __future__ import annotations

import os
import re
from typing import Any, Dict, List, Optional, Sequence

from .common import normalize_bus_id, parse_int, read_value
from .textfiles import parse_mountinfo_root

NVIDIA_VENDOR_ID = "10de"
# PCI class codes (base class + subclass) of display devices we treat as GPUs: VGA 0x0300 and 3D 0x0302.
# Deliberately not 0x0403 (the GPU's HDMI audio function) nor 0x0680 (NVSwitch).
GPU_CLASS_PREFIXES = ("0x0300", "0x0302")

_GTS_TO_GEN = {2.5: 1, 5.0: 2, 8.0: 3, 16.0: 4, 32.0: 5, 64.0: 6, 128.0: 7}
_SPEED_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*GT/s", re.IGNORECASE)
# Block devices that are not disks of their own: loop, RAM disks, device-mapper/md (followed through
# slaves/ instead), optical drives, floppies, network block devices, eMMC boot/RPMB areas.
_SKIP_BLOCK_RE = re.compile(r"^(loop|ram|zram|dm-|md|sr|fd|nbd|mtdblock)|^mmcblk\d+(boot|rpmb)")


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
                "vendor": _hex_id(read_value(os.path.join(path, "vendor"))),
                "device": _hex_id(read_value(os.path.join(path, "device"))),
                "subsystem_vendor": _hex_id(read_value(os.path.join(path, "subsystem_vendor"))),
                "subsystem_device": _hex_id(read_value(os.path.join(path, "subsystem_device"))),
                "class": (read_value(os.path.join(path, "class")) or "").lower() or None,
            }
        )
    return devices


def _link_values(path: str) -> Dict[str, Optional[int]]:
    """A PCI function's own link: current and max generation and width (``None`` where sysfs has none)."""
    return {
        "gen_current": link_speed_to_gen(read_value(os.path.join(path, "current_link_speed"))),
        "gen_max": link_speed_to_gen(read_value(os.path.join(path, "max_link_speed"))),
        "width_current": parse_link_width(read_value(os.path.join(path, "current_link_width"))),
        "width_max": parse_link_width(read_value(os.path.join(path, "max_link_width"))),
    }


def read_pci_link(device_path: str) -> Dict[str, Optional[int]]:
    """Link generation/width of a PCI device, and ``slot_*_max`` of its upstream port (sysfs parent).

    The parent is the directory above the device's resolved path; when that is a root complex
    (``pci0000:00``) it has no link attributes and the slot values are ``None``.
    """
    parent = os.path.dirname(device_path)
    parent_is_port = normalize_bus_id(os.path.basename(parent)) is not None
    return {
        **_link_values(device_path),
        "slot_gen_max": link_speed_to_gen(read_value(os.path.join(parent, "max_link_speed")))
        if parent_is_port
        else None,
        "slot_width_max": parse_link_width(read_value(os.path.join(parent, "max_link_width")))
        if parent_is_port
        else None,
    }


def read_pcie_path(device_path: str) -> List[Dict[str, Any]]:
    """The PCIe chain above a device, root port first: every bridge between the root complex and the device.

    The kernel nests a device's sysfs directory under the bridges it sits behind (``pci0000:00/0000:00:01.0/
    0000:01:00.0``), so the chain is the bus-id directories of the device's resolved path. A hop's ``kind`` comes
    from its position, as PCIe builds it: the first bridge is the root port; below it, a switch shows as its
    upstream port then one of its downstream ports. A device on the root complex itself (a VM's passed-through
    GPU) has an empty chain.
    """
    hops: List[Dict[str, Any]] = []
    parent = os.path.dirname(device_path)
    chain: List[str] = []
    while normalize_bus_id(os.path.basename(parent)) is not None:
        chain.insert(0, parent)
        parent = os.path.dirname(parent)
    for position, path in enumerate(chain):
        kind = ("switch_downstream", "switch_upstream")[position % 2] if position else "root_port"
        vendor = _hex_id(read_value(os.path.join(path, "vendor")))
        device = _hex_id(read_value(os.path.join(path, "device")))
        hops.append(
            {
                "address": normalize_bus_id(os.path.basename(path)),
                "pci_id": "%s:%s" % (vendor, device) if vendor and device else None,
                "name": None,
                "kind": kind,
                **_link_values(path),
            }
        )
    return hops


def kernel_driver(device_path: str) -> Optional[str]:
    """The kernel driver bound to a PCI device (``nvidia``, ``nouveau``), or ``None``."""
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
                if dm.startswith("dm-") and read_value(os.path.join(block, dm, "dm", "name")) == name:
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
        sectors = parse_int(read_value(os.path.join(path, "size")))
        if not sectors:
            continue
        rotational_raw = read_value(os.path.join(path, "queue", "rotational"))
        rotational = None if rotational_raw not in ("0", "1") else rotational_raw == "1"
        model = read_value(os.path.join(path, "device", "model")) or None
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
