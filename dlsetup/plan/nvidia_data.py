"""Generate the GPU catalogue (``data/gpus.json``) from NVIDIA's own data and Debian's id lists.

Inputs, all of them files from Debian packages (``docs/sources.md``; ``--fetch`` downloads them):

* ``supported-gpus-<version>.json.gz``: NVIDIA's list of the GPUs each driver supports, shipped in the driver
  (Debian's ``nvidia-driver`` and ``nvidia-tesla-*-driver``), with NVIDIA's names per PCI id (and per subsystem),
  the ``kernelopen`` feature (the open kernel modules drive it) and ``legacybranch`` (the last branch that drives
  it, for GPUs a newer driver dropped);
* ``nvidia-detect-<version>-nvidia.ids``: the ids Debian's ``nvidia-driver`` of that release drives;
* ``pci.ids-<version>-nvidia.gz`` (or a whole ``pci.ids``): the chip codename of each id (``GP102 [GeForce GTX
  1080 Ti]``), which places it in an architecture and a compute capability (``architectures.yaml``, ``chips``).

Every NVIDIA GPU the driver data lists becomes a row. A GPU newer than the newest driver data (Blackwell) comes
from pci.ids alone, when its chip's compute capability is known. Nothing is guessed: an id whose chip is unknown is
left out and counted in the file's header.

    python -m dlsetup.plan.nvidia_data --from tests/fixtures/nvidia-data   # regenerate from the committed files
    python -m dlsetup.plan.nvidia_data --fetch DIR                         # download them first (needs apt)
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packaging.version import Version

from dlsetup.plan.catalogue import chip_codename
from dlsetup.plan.load import load_placement
from dlsetup.plan.schema import Architecture, Chip, architecture_for_codename, cc_for_chip

OUTPUT = Path(__file__).resolve().parent / "data" / "gpus.json"

# Names that are no product: a pci.ids line for a chip without a bracketed name, or one of these.
_NOT_A_PRODUCT = re.compile(
    r"Engineering Sample|Reserved|Initial Dev|Dev ID|INT SKU|Audio|USB|Bridge|bridge|NVSwitch|PCIe host|Serial|"
    r"Generic-GPU|Skinny|PG\d{3}|\bES\b|-ES-",
)
# Integrated (SoC) GPUs: not PCI cards dlsetup provisions.
_INTEGRATED = re.compile(r"^(GB10B|GB20B|GA10B|GV10B|GP10B|GM20B|GK20A)")
_MOBILE = re.compile(r"Mobile|Laptop|Max-Q|\bMX\d{3}\b", re.IGNORECASE)
_DATACENTER = re.compile(
    r"^(NVIDIA )?(Tesla|GRID|CMP|DGX|HGX|[ABHL]\d+[A-Z]*\b|L40|T4\b|T10\b|T40\b|A800|H800|H20\b|B200|B300|GB200|"
    r"GB300|GH200|PG\d+|A100|A30\b|A40\b|A16\b|A2\b)"
)
_WORKSTATION = re.compile(r"Quadro|RTX A\d|RTX \d000|RTX PRO|NVS \d|\bT\d{3,4}\b|RTX \d+ Ada|Ada Generation")
# Kepler GPUs are driven up to R470; every GPU NVIDIA's data drops at R390 or earlier is older than Kepler.
_LAST_PRE_KEPLER_BRANCH = 390
_ID_LINE = re.compile(r"^(?:0x|10de)?([0-9a-fA-F]{4})$")
_VERSION_IN_NAME = re.compile(r"-(\d+\.\d+(?:\.\d+)?)[-.]")


@dataclass(frozen=True)
class DriverList:
    """One ``supported-gpus.json``: which driver it came with, and its entries."""

    version: str
    chips: tuple[Mapping[str, Any], ...]

    @property
    def flags_open_modules(self) -> bool:
        """Whether this list says which GPUs the open modules drive (drivers before 515 had none)."""
        return any("kernelopen" in (chip.get("features") or []) for chip in self.chips)

    @classmethod
    def read(cls, path: Path) -> DriverList:
        match = _VERSION_IN_NAME.search(path.name)
        if not match:
            raise ValueError(f"{path.name}: the driver version is not in the file name")
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt", encoding="utf-8") as handle:
            data = json.load(handle)
        return cls(match.group(1), tuple(data["chips"]))


@dataclass(frozen=True)
class Inputs:
    """Everything the catalogue is made from, with the versions it came from."""

    drivers: tuple[DriverList, ...]  # newest first
    debian_ids: Mapping[str, frozenset[str]]  # Debian release → pci ids its nvidia-driver drives
    debian_versions: Mapping[str, str]  # Debian release → the nvidia-detect version of that list
    pci_ids: Mapping[str, str]  # pci id → pci.ids device name
    pci_ids_version: str

    @classmethod
    def read(cls, folder: Path) -> Inputs:
        drivers = sorted(
            (DriverList.read(p) for p in folder.glob("supported-gpus-*.json*")),
            key=lambda d: Version(d.version),
            reverse=True,
        )
        if not drivers:
            raise ValueError(f"{folder}: no supported-gpus-<version>.json(.gz)")
        releases = {"535": "12", "550": "13"}  # the nvidia-driver branch of each Debian release
        debian_ids: dict[str, frozenset[str]] = {}
        debian_versions: dict[str, str] = {}
        for path in sorted(folder.glob("nvidia-detect-*-nvidia.ids")):
            version = path.name.split("-")[2]
            release = releases.get(version.split(".")[0])
            if release is None:
                continue
            debian_ids[release] = parse_id_list(path.read_text())
            debian_versions[release] = version
        pci_path = next(iter(sorted(folder.glob("pci.ids*"))), None)
        if pci_path is None:
            raise ValueError(f"{folder}: no pci.ids")
        opener = gzip.open if pci_path.suffix == ".gz" else open
        with opener(pci_path, "rt", encoding="utf-8", errors="replace") as handle:
            text = handle.read()
        found = re.search(r"Version:\s*(\S+)", text)
        return cls(tuple(drivers), debian_ids, debian_versions, parse_pci_ids(text), found.group(1) if found else "?")


def parse_id_list(text: str) -> frozenset[str]:
    """An nvidia-detect id list (``10DE1B06`` a line) → ``{"10de:1b06", ...}``."""
    ids = set()
    for line in text.split():
        match = _ID_LINE.match(line.strip()[-4:]) if line.upper().startswith("10DE") else None
        if match:
            ids.add(f"10de:{match.group(1).lower()}")
    return frozenset(ids)


def parse_pci_ids(text: str) -> dict[str, str]:
    """The NVIDIA device lines of a pci.ids → ``{"10de:1b06": "GP102 [GeForce GTX 1080 Ti]"}``."""
    devices: dict[str, str] = {}
    in_nvidia = False
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        if line.startswith("C "):
            break
        if not line.startswith("\t"):
            in_nvidia = line.lower().startswith("10de ")
            continue
        if in_nvidia and not line.startswith("\t\t"):
            device, _, name = line[1:].partition("  ")
            devices[f"10de:{device.strip().lower()}"] = name.strip()
    return devices


def _bracketed(pci_name: str | None) -> list[str]:
    """``GP107M [GeForce GTX 1050 Ti Mobile]`` → ``["GeForce GTX 1050 Ti Mobile"]`` (alternatives split on " / ")."""
    match = re.search(r"\[(.+)\]", pci_name or "")
    return [part.strip() for part in match.group(1).split(" / ")] if match else []


def segment_of(names: Sequence[str], chip: str | None) -> str:
    """geforce | workstation | datacenter | mobile, from NVIDIA's and pci.ids' names (the -server packages and the
    laptop notes depend on it)."""
    text = " ".join(names)
    if (chip or "").endswith("M") or _MOBILE.search(text):
        return "mobile"
    if any(_DATACENTER.match(name) for name in names):
        return "datacenter"
    if _WORKSTATION.search(text):
        return "workstation"
    return "geforce"


def _legacy_branch(value: object) -> int | None:
    match = re.match(r"^(\d+)", str(value)) if value else None
    return int(match.group(1)) if match else None


@dataclass
class _Gathered:
    names: list[str] = field(default_factory=list)
    primary: str | None = None
    open_modules: bool | None = None
    legacy: int | None = None
    listed_in: list[str] = field(default_factory=list)


def _gather(drivers: Sequence[DriverList]) -> dict[str, _Gathered]:
    gathered: dict[str, _Gathered] = {}
    for driver in drivers:  # newest first: its names and flags win
        seen_here: set[str] = set()
        for chip in driver.chips:
            devid = str(chip.get("devid", "")).lower()
            if not re.match(r"^0x[0-9a-f]{4}$", devid):
                continue
            pci_id = f"10de:{devid[2:]}"
            entry = gathered.setdefault(pci_id, _Gathered())
            name = str(chip.get("name") or "").strip()
            if name and name not in entry.names:
                entry.names.append(name)
            first_listing = not entry.listed_in
            if pci_id not in seen_here:
                entry.listed_in.append(driver.version)
                seen_here.add(pci_id)
            if first_listing or driver.version == entry.listed_in[0]:
                if "subdevid" not in chip and entry.primary is None:
                    entry.primary = name
                if driver.flags_open_modules:
                    # a list that flags kernelopen on some GPU says yes or no for each of its GPUs
                    entry.open_modules = entry.open_modules or "kernelopen" in (chip.get("features") or [])
                legacy = _legacy_branch(chip.get("legacybranch"))
                if legacy is not None:
                    entry.legacy = legacy
    return gathered


def build_catalogue(
    inputs: Inputs, architectures: Sequence[Architecture], chips: Sequence[Chip]
) -> tuple[list[dict[str, Any]], list[str]]:
    """The catalogue rows, ordered by PCI id, and the ids left out (with why)."""
    gathered = _gather(inputs.drivers)
    newest = inputs.drivers[0].version
    rows: list[dict[str, Any]] = []
    left_out: list[str] = []
    candidates = sorted(set(gathered) | set(inputs.pci_ids))
    for pci_id in candidates:
        pci_name = inputs.pci_ids.get(pci_id)
        chip = chip_codename(pci_name)
        entry = gathered.get(pci_id)
        if entry is None:
            # pci.ids only: a GPU newer than NVIDIA's data in reach. Only products of a known architecture whose
            # compute capability is known are taken (Blackwell, newer Hopper parts).
            names = _bracketed(pci_name)
            arch = architecture_for_codename(architectures, chip) if chip else None
            if (
                not names
                or arch is None
                or arch.name not in ("Hopper", "Blackwell")
                or _INTEGRATED.match(chip or "")
                or _NOT_A_PRODUCT.search(pci_name or "")
            ):
                continue
            cc = cc_for_chip(chips, chip or "")
            if cc is None:
                left_out.append(f"{pci_id} {pci_name}: no compute capability in dlsetup's data for {chip}")
                continue
            rows.append(
                _row(pci_id, names[0], names[1:], chip, arch.name, cc, segment_of(names, chip),
                     "open" in arch.flavors, None, [], inputs, f"[DEB-PCIIDS] {pci_name}; newer than NVIDIA's data "
                     f"in reach (supported-gpus.json of {newest}): open modules as for every {arch.name} GPU")
            )  # fmt: skip
            continue
        arch = architecture_for_codename(architectures, chip) if chip else None
        if chip is not None and _INTEGRATED.match(chip):
            continue
        if arch is None and entry.legacy is not None and entry.legacy <= _LAST_PRE_KEPLER_BRANCH:
            # NVIDIA dropped it with the 390 branch or before: older than Kepler, whatever pci.ids calls its chip
            arch = architecture_for_codename(architectures, "NV")
        if arch is None:
            left_out.append(f"{pci_id} {entry.names[0] if entry.names else ''}: no chip codename in pci.ids")
            continue
        cc = cc_for_chip(chips, chip) if chip else None
        if cc is None and arch.compute_capabilities:
            left_out.append(f"{pci_id} {pci_name}: no compute capability in dlsetup's data for {chip}")
            continue
        primary = entry.primary or entry.names[0]
        aliases = [n for n in [*entry.names, *_bracketed(pci_name)] if n != primary]
        debian = [release for release, ids in sorted(inputs.debian_ids.items()) if pci_id in ids]
        tags = "[DEB-JSON " + " ".join(entry.listed_in) + "]"
        flags = {True: "kernelopen", False: "no kernelopen", None: "open modules not flagged"}[entry.open_modules] + (
            f", legacybranch {entry.legacy}.xx" if entry.legacy else ""
        )
        rows.append(
            _row(pci_id, primary, aliases, chip, arch.name, cc, segment_of([primary, *aliases], chip),
                 entry.open_modules, entry.legacy, debian, inputs,
                 f"{tags} {primary!r}, {flags}; [DEB-PCIIDS] {pci_name}")
        )  # fmt: skip
    return rows, left_out


def _row(
    pci_id: str,
    name: str,
    aliases: Iterable[str],
    chip: str | None,
    architecture: str,
    cc: str | None,
    segment: str,
    open_modules: bool | None,
    last_branch: int | None,
    debian: list[str],
    inputs: Inputs,
    source: str,
) -> dict[str, Any]:
    unique = list(dict.fromkeys(a for a in aliases if a and a != name))
    return {
        "pci_id": pci_id,
        "name": name,
        "aliases": unique,
        "chip": chip,
        "architecture": architecture,
        "compute_capability": cc,
        "segment": segment,
        "open_modules": open_modules,
        "last_branch": last_branch,
        "debian_driver": debian,
        "source": source,
    }


def render(rows: Sequence[Mapping[str, Any]], left_out: Sequence[str], inputs: Inputs) -> str:
    """The text of ``gpus.json``: what it was made from, then one line per GPU (JSON: it loads fast)."""
    about = {
        "generated_by": "python -m dlsetup.plan.nvidia_data --from tests/fixtures/nvidia-data (do not edit by hand)",
        "drivers": [d.version for d in inputs.drivers],
        "debian_id_lists": [f"Debian {r}: nvidia-detect {v}" for r, v in sorted(inputs.debian_versions.items())],
        "pci_ids": inputs.pci_ids_version,
        "gpus": len(rows),
        "left_out": list(left_out),
        "source": (
            "[DEB-JSON <version>] NVIDIA's supported-gpus.json of each driver (Debian's nvidia-driver and "
            "nvidia-tesla-470-driver): names, kernelopen (open_modules), legacybranch (last_branch); [DEB-DETECT12] "
            "[DEB-DETECT13] the ids Debian's nvidia-driver drives (debian_driver); [DEB-PCIIDS] the chip, which "
            "places the GPU in an architecture and a compute capability (architectures.yaml, chips)"
        ),
    }
    lines = ["{", f'"catalogue": {json.dumps(about, ensure_ascii=False)},', '"gpus": [']
    lines += [json.dumps(row, ensure_ascii=False) + "," for row in rows]
    lines[-1] = lines[-1].rstrip(",")
    lines += ["]", "}"]
    return "\n".join(lines) + "\n"


def generate(folder: Path) -> str:
    """The text of ``gpus.json`` made from the input files in ``folder``."""
    architectures, chips = load_placement()
    inputs = Inputs.read(folder)
    rows, left_out = build_catalogue(inputs, architectures, chips)
    return render(rows, left_out, inputs)


# --- fetching the inputs (network, apt): not used by dlsetup at run time ---------------------------------------

_DOC = "usr/share/doc/nvidia-driver/supported-gpus.json.gz"
PACKAGES = {
    "nvidia-driver=555.58.02-4": (_DOC, "supported-gpus-555.58.02.json.gz"),
    "nvidia-driver=550.163.01-2": (_DOC, "supported-gpus-550.163.01.json.gz"),
    "nvidia-driver=535.309.01-0+deb12u1": (_DOC, "supported-gpus-535.309.01.json.gz"),
    "nvidia-tesla-470-driver=470.256.02-1~deb12u1": (
        "usr/share/doc/nvidia-tesla-470-driver/supported-gpus.json.gz",
        "supported-gpus-470.256.02.json.gz",
    ),
    "nvidia-detect=535.309.01-0+deb12u1": ("usr/share/nvidia/nvidia.ids", "nvidia-detect-535.309.01-nvidia.ids"),
    "nvidia-detect=550.163.01-2": ("usr/share/nvidia/nvidia.ids", "nvidia-detect-550.163.01-nvidia.ids"),
    "pci.ids": ("usr/share/misc/pci.ids", "pci.ids"),
}  # fmt: skip


def fetch(folder: Path) -> None:
    """``apt-get download`` each package (the APT configuration in the environment must carry bookworm, trixie,
    sid and experimental with non-free), then ``dpkg-deb -x`` the one file the catalogue needs into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as work:
        for spec, (inner, name) in PACKAGES.items():
            subprocess.run(["apt-get", "download", "-q", spec], cwd=work, check=True)
            deb = max(Path(work).glob(spec.split("=")[0] + "_*.deb"), key=lambda p: p.stat().st_mtime)
            tree = Path(work) / "x"
            subprocess.run(["dpkg-deb", "-x", str(deb), str(tree)], check=True)
            (folder / name).write_bytes((tree / inner).read_bytes())
            deb.unlink()


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m dlsetup.plan.nvidia_data", description=__doc__.splitlines()[0])
    parser.add_argument("--from", dest="source", type=Path, help="folder with the input files")
    parser.add_argument("--fetch", type=Path, help="download the input files into this folder first")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    folder = args.fetch or args.source
    if folder is None:
        parser.error("give --from FOLDER or --fetch FOLDER")
    if args.fetch:
        fetch(args.fetch)
    args.output.write_text(generate(folder))
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
