"""The GPU catalogue: PCI id and model-name lookup, the pci.ids codename fallback, pci.ids parsing."""

from __future__ import annotations

from pathlib import Path

import pytest

from dlsetup.facts.hwparse.textfiles import lookup_pci_name
from dlsetup.plan.catalogue import (
    architecture_from_pci_name,
    by_name,
    by_pci_id,
    chip_codename,
    find_by_name,
    identify,
    identify_text,
    normalize_pci_id,
)
from dlsetup.plan.model import PlanInputError

PCI_IDS = (Path(__file__).resolve().parents[1] / "fixtures" / "pci.ids" / "pci.ids.excerpt").read_text()


@pytest.mark.parametrize(
    ("pci_id", "name", "arch", "cc"),
    [
        ("10de:1b06", "GeForce GTX 1080 Ti", "Pascal", "6.1"),
        ("10DE:1B00", "TITAN X Pascal", "Pascal", "6.1"),
        ("10de:17c2", "GeForce GTX TITAN X", "Maxwell", "5.2"),
        ("10de:1004", "GeForce GTX 780", "Kepler", "3.5"),
        ("10de:1db4", "Tesla V100 PCIe 16GB", "Volta", "7.0"),
        ("10de:1e04", "GeForce RTX 2080 Ti", "Turing", "7.5"),
        ("10de:2204", "GeForce RTX 3090", "Ampere", "8.6"),
        ("10de:20b0", "A100 SXM4 40GB", "Ampere", "8.0"),
        ("10de:2684", "GeForce RTX 4090", "Ada", "8.9"),
        ("10de:2330", "H100 SXM5 80GB", "Hopper", "9.0"),
        ("10de:2335", "H200 SXM 141GB", "Hopper", "9.0"),
        ("10de:2b85", "GeForce RTX 5090", "Blackwell", "12.0"),
        ("10de:1c8c", "GeForce GTX 1050 Ti Mobile", "Pascal", "6.1"),
    ],
)
def test_by_pci_id(pci_id: str, name: str, arch: str, cc: str) -> None:
    row = by_pci_id(pci_id)
    assert row is not None
    assert name in row.names  # pci.ids names it so; NVIDIA's own name is row.name
    assert (row.architecture, row.compute_capability) == (arch, cc)


def test_by_pci_id_unknown_and_malformed() -> None:
    assert by_pci_id("10de:ffff") is None
    assert by_pci_id("not-an-id") is None
    assert normalize_pci_id(" 10DE:2B85 ") == "10de:2b85"
    assert normalize_pci_id("10de2b85") is None


@pytest.mark.parametrize(
    ("query", "pci_id"),
    [
        ("GTX 1080 Ti", "10de:1b06"),
        ("1080ti", "10de:1b06"),
        ("gtx  1080 TI", "10de:1b06"),
        ("NVIDIA GeForce GTX 1080 Ti", "10de:1b06"),
        ("RTX 5090", "10de:2b85"),
        ("RTX 5090 D", "10de:2b87"),
        ("5090", "10de:2b85"),
        ("H200", "10de:2335"),
        ("H200 NVL", "10de:233b"),
        ("GTX TITAN X", "10de:17c2"),
        ("GeForce GTX TITAN X", "10de:17c2"),
        ("TITAN X Pascal", "10de:1b00"),
        ("TITAN Xp", "10de:1b02"),
        ("GTX 1050 Ti", "10de:1c82"),  # the desktop card: the laptop part shares NVIDIA's name
        ("GTX 1050 Ti Max-Q", "10de:1c8c"),  # NVIDIA: "GeForce GTX 1050 Ti with Max-Q Design" (Dell's subsystem)
        ("GTX 780", "10de:1004"),
        ("RTX 4090", "10de:2684"),
    ],
)
def test_by_name(query: str, pci_id: str) -> None:
    assert by_name(query).pci_id == pci_id


@pytest.mark.parametrize(("query", "arch"), [("H100", "Hopper"), ("A100", "Ampere"), ("GTX 1050", "Pascal")])
def test_by_name_equivalent_matches_share_an_architecture(query: str, arch: str) -> None:
    assert len(find_by_name(query)) >= 1
    assert by_name(query).architecture == arch


def test_by_name_ambiguous_across_architectures() -> None:
    with pytest.raises(PlanInputError) as caught:
        by_name("TITAN X")
    assert caught.value.kind == "ambiguous_model"
    assert "Maxwell" in caught.value.message and "Pascal" in caught.value.message


@pytest.mark.parametrize("query", ["RTX 9999", "Radeon RX 7900", "x"])
def test_by_name_unknown(query: str) -> None:
    with pytest.raises(PlanInputError) as caught:
        by_name(query)
    assert caught.value.kind == "unknown_model"


@pytest.mark.parametrize(
    ("pci_name", "chip", "arch"),
    [
        ("GK110 [GeForce GTX 780]", "GK110", "Kepler"),
        ("GM200 [GeForce GTX TITAN X]", "GM200", "Maxwell"),
        ("GP102 [GeForce GTX 1080 Ti]", "GP102", "Pascal"),
        ("GP107M [GeForce GTX 1050 Ti Mobile]", "GP107M", "Pascal"),
        ("GV100GL [Tesla V100 PCIe 16GB]", "GV100GL", "Volta"),
        ("TU104 [GeForce RTX 2060]", "TU104", "Turing"),
        ("GA102 [GeForce RTX 3090]", "GA102", "Ampere"),
        ("AD102 [GeForce RTX 4090]", "AD102", "Ada"),
        ("GH100[H100 SXM5 80GB]", "GH100", "Hopper"),
        ("GB202 [GeForce RTX 5090]", "GB202", "Blackwell"),
        ("GF100 [GeForce GTX 480]", "GF100", "pre-Kepler"),
        ("G92 [GeForce GT 330]", "G92", "pre-Kepler"),
    ],
)
def test_codename_fallback(pci_name: str, chip: str, arch: str) -> None:
    assert chip_codename(pci_name) == chip
    found = architecture_from_pci_name(pci_name)
    assert found is not None and found.name == arch


@pytest.mark.parametrize("pci_name", [None, "", "High Definition Audio Controller", "[GeForce RTX 2060]", "H100"])
def test_codename_fallback_refuses_what_it_cannot_read(pci_name: str | None) -> None:
    assert architecture_from_pci_name(pci_name) is None


@pytest.mark.parametrize(
    ("pci_id", "name"),
    [
        ("10de:1e89", "TU104 [GeForce RTX 2060]"),
        ("10de:2330", "GH100[H100 SXM5 80GB]"),
        ("10DE:1B06", "GP102 [GeForce GTX 1080 Ti]"),
        ("10de:2335", None),  # H200 is newer than this 2023 pci.ids
        ("10de:147d", None),  # a subsystem line (two tabs) under 2204 is not a device
        ("8086:2335", "DH89xxCC USB2 Enhanced Host Controller #1"),
        ("8086:0000", None),
    ],
)
def test_pci_ids_name(pci_id: str, name: str | None) -> None:
    assert lookup_pci_name(PCI_IDS, pci_id) == name


def test_identify_order_of_trust() -> None:
    spec, warning = identify("10de:1b06", reported_cc="6.1")
    assert (spec.identified_by, spec.architecture, warning) == ("catalogue", "Pascal", None)
    # 10de:1e2e: an engineering sample pci.ids lists and NVIDIA's data does not
    sample = "TU102 [GeForce RTX 2080 Ti Engineering Sample]"
    spec, warning = identify("10de:1e2e", reported_cc="7.5", pci_name=sample)
    assert (spec.identified_by, spec.architecture, spec.compute_capability) == ("compute_capability", "Turing", "7.5")
    assert warning is not None and "not in dlsetup's catalogue" in warning
    spec, warning = identify("10de:1e2e", pci_name=sample)
    assert (spec.identified_by, spec.architecture, spec.name) == (
        "pci_ids",
        "Turing",
        "GeForce RTX 2080 Ti Engineering Sample",
    )
    assert warning is not None and "TU102" in warning
    spec, warning = identify("10de:2f00")
    assert (spec.identified_by, spec.architecture, warning) == ("unknown", None, None)
    spec, _ = identify("1002:73bf", pci_name="Navi 21 [Radeon RX 6800]")
    assert spec.architecture is None


def test_identify_text_uses_pci_ids_for_uncatalogued_ids() -> None:
    # 10de:1b07, a P102-100 mining card: NVIDIA's data does not list it, this pci.ids names it "GP102 [P102-100]"
    spec, warning = identify_text("10de:1b07", pci_ids_text=PCI_IDS)
    assert (spec.architecture, spec.compute_capability, spec.identified_by) == ("Pascal", "6.1", "pci_ids")
    assert warning is not None
    spec, _ = identify_text("10de:1b07")
    assert spec.architecture is None  # without a pci.ids there is nothing to go on: not guessed
