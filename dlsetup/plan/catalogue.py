"""The GPU catalogue: identify a GPU by PCI id or by model name, with the pci.ids chip codename as fallback.

Order of trust for a live GPU: the catalogue row for its PCI id; else the compute capability the driver reports;
else the chip codename at the start of its pci.ids name (``GP102 [GeForce GTX 1080 Ti]`` → GP → Pascal). A GPU
none of these place is reported as unknown, never guessed.
"""

from __future__ import annotations

import re

from dlsetup.facts.hwparse.textfiles import lookup_pci_name
from dlsetup.plan.load import load_compat_data
from dlsetup.plan.model import GpuSpec, PlanInputError
from dlsetup.plan.schema import Architecture, CompatData, Gpu

NVIDIA_VENDOR = "10de"
_PCI_ID = re.compile(r"^\s*([0-9a-fA-F]{4}):([0-9a-fA-F]{4})\s*$")
# A pci.ids chip codename: letters then digits, optional suffix (GP102, GK110B, GV100GL, GP107M, G92, NV1).
_CHIP = re.compile(r"^([A-Z]{1,2}\d{1,3}[A-Za-z]{0,3})\b")
_NOISE_WORDS = ("nvidia", "geforce")


def normalize_pci_id(text: str) -> str | None:
    """``"10DE:1B06"`` → ``"10de:1b06"``; None when ``text`` is not ``vendor:device`` hex."""
    match = _PCI_ID.match(text)
    return f"{match.group(1)}:{match.group(2)}".lower() if match else None


def by_pci_id(pci_id: str, data: CompatData | None = None) -> Gpu | None:
    """The catalogue row for a PCI id, or None."""
    data = data or load_compat_data()
    wanted = normalize_pci_id(pci_id)
    return next((g for g in data.gpus if g.pci_id == wanted), None)


def _squash(text: str) -> str:
    """Lower case, no spaces/punctuation, no vendor words: ``"NVIDIA GeForce GTX 1080 Ti"`` → ``"gtx1080ti"``."""
    text = text.lower()
    for word in _NOISE_WORDS:
        text = text.replace(word, "")
    return re.sub(r"[^a-z0-9]", "", text)


def find_by_name(query: str, data: CompatData | None = None) -> list[Gpu]:
    """Catalogue rows matching a model name, case/space-insensitively.

    An exact match on a name or alias wins; otherwise every row whose name or alias contains the query.
    """
    data = data or load_compat_data()
    wanted = _squash(query)
    if len(wanted) < 2:
        return []
    exact = [g for g in data.gpus if wanted in {_squash(n) for n in (g.name, *g.aliases)}]
    if exact:
        return exact
    return [g for g in data.gpus if any(wanted in _squash(n) for n in (g.name, *g.aliases))]


def by_name(query: str, data: CompatData | None = None) -> Gpu:
    """One catalogue row for a model name such as ``"GTX 1080 Ti"``, ``"1080ti"``, ``"RTX 5090"``, ``"H100"``.

    Several matches of one architecture and compute capability are equivalent for planning (``"H100"``: SXM5 or
    PCIe), and the shortest name is taken; matches that differ raise ``ambiguous_model``. No match raises
    ``unknown_model``.
    """
    data = data or load_compat_data()
    matches = find_by_name(query, data)
    if not matches:
        raise PlanInputError(
            f"unknown GPU model {query!r}: not in dlsetup's catalogue",
            kind="unknown_model",
            hint="give its PCI id (10de:xxxx) or its pci.ids name, e.g. 'TU104 [GeForce RTX 2070 SUPER]'",
        )
    if len({(g.architecture, g.compute_capability) for g in matches}) > 1:
        listed = "; ".join(f"{g.name} ({g.pci_id}, {g.architecture})" for g in matches)
        raise PlanInputError(
            f"GPU model {query!r} is ambiguous: {listed}", kind="ambiguous_model", hint="give the full name or PCI id"
        )
    return min(matches, key=lambda g: (len(g.name), g.pci_id))


def chip_codename(pci_name: str | None) -> str | None:
    """The chip codename that starts a pci.ids device name: ``"GP102 [GeForce GTX 1080 Ti]"`` → ``"GP102"``."""
    if not pci_name:
        return None
    match = _CHIP.match(pci_name.strip())
    return match.group(1) if match else None


def architecture_from_pci_name(pci_name: str | None, data: CompatData | None = None) -> Architecture | None:
    """Architecture from a pci.ids name's chip codename (GK/GM/GP/GV/TU/GA/AD/GH/GB...), or None."""
    data = data or load_compat_data()
    chip = chip_codename(pci_name)
    return data.architecture_for_codename(chip) if chip else None


def _bracket_name(pci_name: str | None) -> str | None:
    if not pci_name:
        return None
    match = re.search(r"\[(.+)\]", pci_name)
    return match.group(1) if match else pci_name


def identify(
    pci_id: str | None,
    *,
    pci_name: str | None = None,
    reported_cc: str | None = None,
    reported_name: str | None = None,
    data: CompatData | None = None,
) -> tuple[GpuSpec, str | None]:
    """Identify one GPU; returns the spec and a warning line (or None).

    ``reported_cc``/``reported_name`` come from nvidia-smi, ``pci_name`` from the host's pci.ids.
    """
    data = data or load_compat_data()
    norm = normalize_pci_id(pci_id) if pci_id else None
    row = by_pci_id(norm, data) if norm else None
    if row is not None:
        cc = row.compute_capability
        warning = None
        if reported_cc and reported_cc != cc and data.architecture_for_cc(reported_cc) is not None:
            warning = (
                f"{row.name} ({norm}): the driver reports CC {reported_cc}, the catalogue {cc}; using {reported_cc}"
            )
            cc = reported_cc
        spec = GpuSpec(norm, row.name, row.architecture, cc, "catalogue", row.chip, row.segment)
        return spec, warning
    name = reported_name or _bracket_name(pci_name) or norm or "unnamed GPU"
    if norm and not norm.startswith(NVIDIA_VENDOR + ":"):
        return GpuSpec(norm, name, None, None, "unknown"), None
    if reported_cc:
        arch = data.architecture_for_cc(reported_cc)
        if arch is not None:
            warning = (
                f"{name} ({norm}) is not in dlsetup's catalogue: architecture {arch.name} taken from the "
                f"compute capability the driver reports ({reported_cc})"
            )
            chip = chip_codename(pci_name)
            return GpuSpec(norm, name, arch.name, reported_cc, "compute_capability", chip), warning
    chip = chip_codename(pci_name)
    arch = data.architecture_for_codename(chip) if chip else None
    if chip and arch is not None:
        only_cc = arch.compute_capabilities[0] if len(arch.compute_capabilities) == 1 else None
        warning = (
            f"{name} ({norm or 'no PCI id'}) is not in dlsetup's catalogue: architecture {arch.name} inferred from "
            f"the pci.ids chip codename {chip}"
        )
        if only_cc is None:
            warning += "; its exact compute capability is unknown, so every CC of the architecture must be served"
        return GpuSpec(norm, name, arch.name, only_cc, "pci_ids", chip), warning
    return GpuSpec(norm, name, None, None, "unknown"), None


def identify_text(
    text: str, *, pci_ids_text: str | None = None, data: CompatData | None = None
) -> tuple[GpuSpec, str | None]:
    """Identify a ``--gpu`` argument: a PCI id, a model name, or a pci.ids-style name (``"TU104 [...]"``).

    A PCI id not in the catalogue is looked up in ``pci_ids_text`` when given; still unknown, the spec has no
    architecture (the resolver reports it). A name that matches nothing raises ``unknown_model``.
    """
    data = data or load_compat_data()
    pci_id = normalize_pci_id(text)
    if pci_id is not None:
        pci_name = lookup_pci_name(pci_ids_text, pci_id) if pci_ids_text and not by_pci_id(pci_id, data) else None
        return identify(pci_id, pci_name=pci_name, data=data)
    bracket = _bracket_name(text)
    if bracket and bracket != text and find_by_name(bracket, data):
        text = bracket  # "GP102 [GeForce GTX 1080 Ti]": the catalogue knows the model
    elif not find_by_name(text, data) and chip_codename(text) and architecture_from_pci_name(text, data):
        return identify(None, pci_name=text, data=data)
    row = by_name(text, data)
    return GpuSpec(
        row.pci_id, row.name, row.architecture, row.compute_capability, "catalogue", row.chip, row.segment
    ), None
