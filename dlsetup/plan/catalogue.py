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
_NOISE_WORDS = frozenset(("nvidia", "geforce", "with", "design", "graphics"))
_MOBILE_QUERY = re.compile(r"mobile|laptop|max-?q|notebook", re.IGNORECASE)


def normalize_pci_id(text: str) -> str | None:
    """``"10DE:1B06"`` → ``"10de:1b06"``; None when ``text`` is not ``vendor:device`` hex."""
    match = _PCI_ID.match(text)
    return f"{match.group(1)}:{match.group(2)}".lower() if match else None


def by_pci_id(pci_id: str, data: CompatData | None = None) -> Gpu | None:
    """The catalogue row for a PCI id, or None."""
    data = data or load_compat_data()
    wanted = normalize_pci_id(pci_id)
    return data.gpu(wanted) if wanted else None


def _squash(text: str) -> str:
    """Lower case, no spaces/punctuation, no vendor or filler words: ``"NVIDIA GeForce GTX 1050 Ti with Max-Q
    Design"`` → ``"gtx1050timaxq"``."""
    words = re.findall(r"[a-z0-9]+", text.lower())
    return "".join(w for w in words if w not in _NOISE_WORDS)


def _names(gpu: Gpu) -> set[str]:
    return {_squash(n) for n in gpu.names}


def _word_starts(name: str) -> tuple[str, set[int]]:
    """A name squashed, and where each of its words starts in it."""
    squashed, starts = "", set()
    for word in re.findall(r"[a-z0-9]+", name.lower()):
        if word in _NOISE_WORDS:
            continue
        starts.add(len(squashed))
        squashed += word
    return squashed, starts


def _contains(gpu: Gpu, wanted: str) -> bool:
    """Whether one of the GPU's names holds the query starting at a word: "V100" is in "Tesla V100-PCIE-16GB",
    not in "Quadro GV100"; "1080ti" is in "GeForce GTX 1080 Ti"."""
    for name in gpu.names:
        squashed, starts = _word_starts(name)
        at = squashed.find(wanted)
        while at != -1:
            if at in starts:
                return True
            at = squashed.find(wanted, at + 1)
    return False


def find_by_name(query: str, data: CompatData | None = None) -> list[Gpu]:
    """Catalogue rows matching a model name, case/space-insensitively, under any name NVIDIA or pci.ids uses.

    An exact match on a name wins; then names that hold the query's words as whole words ("T4" in "Tesla T4");
    then names that hold it from the start of a word ("1080ti" in "GeForce GTX 1080 Ti").
    """
    data = data or load_compat_data()
    wanted = _squash(query)
    if len(wanted) < 2:
        return []
    exact = [g for g in data.gpus if wanted in _names(g)]
    if exact:
        return exact
    words = [w for w in re.findall(r"[a-z0-9]+", query.lower()) if w not in _NOISE_WORDS]
    whole = [g for g in data.gpus if any(_has_words(n, words) for n in g.names)]
    if whole:
        return whole
    return [g for g in data.gpus if _contains(g, wanted)]


def _has_words(name: str, words: list[str]) -> bool:
    """Whether ``words`` appear in ``name`` as consecutive whole words ("T4" in "Tesla T4", not in "T400")."""
    tokens = [w for w in re.findall(r"[a-z0-9]+", name.lower()) if w not in _NOISE_WORDS]
    size = len(words)
    return size > 0 and any(tokens[i : i + size] == words for i in range(len(tokens) - size + 1))


def planning_key(gpu: Gpu, data: CompatData | None = None) -> tuple[object, ...]:
    """What decides a GPU's plan, but for the Debian archive's id lists: GPUs with the same key get the same plan
    wherever the archive's driver lists them both. Open-module support NVIDIA's data does not flag counts as the
    architecture's."""
    data = data or load_compat_data()
    open_modules = (
        gpu.open_modules if gpu.open_modules is not None else "open" in data.architecture(gpu.architecture).flavors
    )
    return (
        gpu.architecture,
        gpu.compute_capability,
        open_modules,
        gpu.last_branch,
        gpu.segment == "datacenter",
    )


def by_name(query: str, data: CompatData | None = None) -> Gpu:
    """One catalogue row for a model name such as ``"GTX 1080 Ti"``, ``"1080ti"``, ``"RTX 5090"``, ``"H100"``.

    Matches that get the same plan (``"H100"``: SXM5 or PCIe; ``"GTX 1050 Ti"``: the desktop card and the laptop
    part share NVIDIA's name) are equivalent, and one is taken: a desktop part over a laptop one unless the query
    names a laptop part, then one the Debian archive's drivers list, then the one named exactly so, then the
    lowest PCI id. Matches that would get different
    plans raise ``ambiguous_model`` listing them; no match raises ``unknown_model``.
    """
    data = data or load_compat_data()
    matches = find_by_name(query, data)
    if not matches:
        raise PlanInputError(
            f"unknown GPU model {query!r}: not in dlsetup's catalogue",
            kind="unknown_model",
            hint="give its PCI id (10de:xxxx), or see `dlsetup gpus` for the GPUs dlsetup knows",
        )
    if len({planning_key(g, data) for g in matches}) > 1:
        shown = sorted(matches, key=lambda g: g.pci_id)
        listed = "; ".join(f"{g.name} ({g.pci_id}, {g.architecture})" for g in shown[:8])
        if len(shown) > 8:
            listed += f"; and {len(shown) - 8} more"
        raise PlanInputError(
            f"GPU model {query!r} is ambiguous: {listed}",
            kind="ambiguous_model",
            hint="give the full name or the PCI id",
        )
    laptop = _MOBILE_QUERY.search(query) is not None
    wanted = _squash(query)
    return min(
        matches,
        key=lambda g: ((g.segment == "mobile") != laptop, -len(g.debian_driver), _squash(g.name) != wanted, g.pci_id),
    )


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
        return _spec(row, cc), warning
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
        only_cc = data.cc_for_chip(chip) or (
            arch.compute_capabilities[0] if len(arch.compute_capabilities) == 1 else None
        )
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
    return _spec(by_name(text, data)), None


def _spec(row: Gpu, cc: str | None = None) -> GpuSpec:
    return GpuSpec(
        row.pci_id,
        row.name,
        row.architecture,
        cc or row.compute_capability,
        "catalogue",
        row.chip,
        row.segment,
        open_modules=row.open_modules,
        last_branch=row.last_branch,
        debian_driver=row.debian_driver,
    )
