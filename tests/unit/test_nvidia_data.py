"""The GPU catalogue generator on NVIDIA's and Debian's real files (tests/fixtures/nvidia-data, SOURCE.txt says where
each comes from), and the catalogue it makes: every GPU in it gets a plan or a refusal that names why, on every
supported OS."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from dlsetup.errors import DlsetupError, UnsupportedError
from dlsetup.plan import nvidia_data
from dlsetup.plan.catalogue import by_name, by_pci_id, planning_key
from dlsetup.plan.load import load_compat_data, load_placement
from dlsetup.plan.model import GpuSpec, StackRequest
from dlsetup.plan.resolve import resolve_stack

REPO = Path(__file__).resolve().parents[2]
INPUTS = REPO / "tests" / "fixtures" / "nvidia-data"
SHIPPED = REPO / "dlsetup" / "plan" / "data" / "gpus.json"


@pytest.fixture(scope="module")
def inputs() -> nvidia_data.Inputs:
    return nvidia_data.Inputs.read(INPUTS)


def test_the_shipped_catalogue_is_what_the_real_files_give() -> None:
    assert SHIPPED.read_text() == nvidia_data.generate(INPUTS), (
        "regenerate: python -m dlsetup.plan.nvidia_data --from tests/fixtures/nvidia-data"
    )


def test_the_inputs_are_read_with_their_versions(inputs: nvidia_data.Inputs) -> None:
    assert [d.version for d in inputs.drivers] == ["555.58.02", "550.163.01", "535.309.01", "470.256.02"]
    assert len(inputs.drivers[1].chips) == 2224  # NVIDIA's list in Debian's nvidia-driver 550.163.01-2
    assert inputs.debian_versions == {"12": "535.309.01", "13": "550.163.01"}
    assert inputs.pci_ids_version == "2026.10.24"
    assert inputs.pci_ids["10de:1b06"] == "GP102 [GeForce GTX 1080 Ti]"
    # Debian's id lists: the H200 only in trixie's, the RTX 5090 in neither
    assert "10de:2335" in inputs.debian_ids["13"] and "10de:2335" not in inputs.debian_ids["12"]
    assert all("10de:2b85" not in ids for ids in inputs.debian_ids.values())
    assert inputs.drivers[0].flags_open_modules and not inputs.drivers[-1].flags_open_modules  # 470 has no flags


def test_id_lists_and_pci_ids_parse_like_nvidia_detect() -> None:
    assert nvidia_data.parse_id_list("10DE1B06\n10de2335\n\nnot-an-id\n") == {"10de:1b06", "10de:2335"}
    text = "10de  NVIDIA Corporation\n\t1b06  GP102 [GeForce GTX 1080 Ti]\n\t\t10de 120f  GTX 1080 Ti\n8086  Intel\n"
    assert nvidia_data.parse_pci_ids(text) == {"10de:1b06": "GP102 [GeForce GTX 1080 Ti]"}


def test_rows_carry_nvidias_flags(inputs: nvidia_data.Inputs) -> None:
    architectures, chips = load_placement()
    rows, left_out = nvidia_data.build_catalogue(inputs, architectures, chips)
    by_id = {row["pci_id"]: row for row in rows}
    ti = by_id["10de:1b06"]
    assert (ti["name"], ti["architecture"], ti["compute_capability"], ti["open_modules"]) == (
        "NVIDIA GeForce GTX 1080 Ti", "Pascal", "6.1", False,
    )  # fmt: skip
    assert ti["debian_driver"] == ["12", "13"] and ti["last_branch"] is None
    assert by_id["10de:2684"]["open_modules"] is True  # RTX 4090: kernelopen
    assert by_id["10de:1e09"]["open_modules"] is False  # CMP 50HX: a Turing part NVIDIA does not flag
    assert by_id["10de:1eb8"]["open_modules"] is None  # Tesla T4: only the 470 list, which predates the flag
    assert by_id["10de:1004"]["last_branch"] == 470  # GTX 780: legacybranch "470.xx"
    assert by_id["10de:0020"]["architecture"] == "pre-Kepler" and by_id["10de:0020"]["last_branch"] == 71
    assert by_id["10de:1b38"]["segment"] == "datacenter"  # Tesla P40
    mobile = by_id["10de:1c8c"]
    assert mobile["segment"] == "mobile" and "NVIDIA GeForce GTX 1050 Ti with Max-Q Design" in mobile["aliases"]
    # newer than the newest NVIDIA data (555): from pci.ids, Blackwell
    assert by_id["10de:2b85"]["architecture"] == "Blackwell" and by_id["10de:2b85"]["compute_capability"] == "12.0"
    assert "10de:233b" in by_id  # H200 NVL
    # nothing guessed: an id whose chip has no compute capability in the data is left out and said so
    assert any(line.startswith("10de:3182 GB110") for line in left_out)
    assert "10de:3182" not in by_id
    # no HDMI audio function, NVSwitch or engineering sample becomes a GPU
    assert not any("Audio" in row["name"] or "NVSwitch" in row["name"] for row in rows)
    assert len(rows) > 1000


def test_every_current_gpu_of_nvidias_lists_is_in_the_catalogue(inputs: nvidia_data.Inputs) -> None:
    data = load_compat_data()
    with gzip.open(INPUTS / "supported-gpus-555.58.02.json.gz", "rt") as handle:
        chips = json.load(handle)["chips"]
    current = {f"10de:{c['devid'][2:].lower()}" for c in chips if "legacybranch" not in c}
    placed = {g.pci_id for g in data.gpus}
    missing = sorted(current - placed)
    assert missing == [], missing  # every GPU a current driver drives has a row


@pytest.mark.parametrize(
    ("query", "pci_id", "architecture"),
    [
        ("RTX 3080", "10de:2206", "Ampere"),
        ("GeForce GTX 1080", "10de:1b80", "Pascal"),
        ("10de:1b38", "10de:1b38", "Pascal"),  # Tesla P40
        ("RTX 4080", "10de:2704", "Ada"),
        ("RTX A6000", "10de:2230", "Ampere"),
        ("Tesla P40", "10de:1b38", "Pascal"),
        ("GTX 1050 Ti Max-Q", "10de:1c8c", "Pascal"),
    ],
)
def test_the_gpus_people_buy_are_known(query: str, pci_id: str, architecture: str) -> None:
    row = by_pci_id(query) if query.startswith("10de:") else by_name(query)
    assert row is not None and (row.pci_id, row.architecture) == (pci_id, architecture)


def _spec(gpu: object) -> GpuSpec:
    row = by_pci_id(str(gpu))
    assert row is not None
    return GpuSpec(
        row.pci_id, row.name, row.architecture, row.compute_capability, "catalogue", row.chip, row.segment,
        open_modules=row.open_modules, last_branch=row.last_branch, debian_driver=row.debian_driver,
    )  # fmt: skip


@pytest.mark.parametrize("os_name", ["ubuntu-22.04", "ubuntu-24.04", "debian-12", "debian-13"])
def test_every_gpu_gets_a_plan_or_a_named_refusal(os_name: str) -> None:
    """One GPU of each kind (same planning key and Debian id lists) stands for the others: they get one plan."""
    data = load_compat_data()
    kinds: dict[tuple[object, ...], str] = {}
    for gpu in data.gpus:
        kinds.setdefault((*planning_key(gpu, data), gpu.debian_driver), gpu.pci_id)
    planned = refused = 0
    for pci_id in kinds.values():
        spec = _spec(pci_id)
        try:
            plan = resolve_stack(StackRequest(os=os_name, gpus=(spec,)))
        except UnsupportedError as exc:
            refused += 1
            assert exc.kind == "no_supported_stack", (pci_id, exc.message)
            assert spec.name in exc.message  # the refusal names the GPU...
            assert spec.last_branch is not None or spec.architecture in ("pre-Kepler", "Kepler")
            if spec.last_branch is not None:
                assert f"R{spec.last_branch}" in exc.message  # ...and the last branch that drives it
            continue
        except DlsetupError as exc:  # pragma: no cover - any other error is a defect of the data or resolver
            pytest.fail(f"{pci_id} on {os_name}: {exc.message}")
        planned += 1
        assert plan.driver.branch is not None and plan.pytorch.version is not None, pci_id
        if spec.open_modules is False:
            assert plan.driver.flavor == "proprietary", pci_id
        if spec.architecture == "Blackwell":
            assert plan.driver.flavor == "open", pci_id
    assert planned >= 10 and refused >= 3, (planned, refused)
