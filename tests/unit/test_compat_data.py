"""The compatibility data: every row has a source, ranges do not contradict each other, package names are well
formed, and a data file that breaks any of this is refused at load."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable, Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import yaml

from dlsetup.errors import DlsetupError
from dlsetup.plan.consistency import all_package_names, consistency_problems
from dlsetup.plan.load import DATA_FILES, load_compat_data, load_compat_data_from, raw_rows
from dlsetup.plan.model import PlanInputError
from dlsetup.plan.pins import validate_pins
from dlsetup.plan.schema import PACKAGE_NAME, cc_tuple

DATA_DIR = Path(str(resources.files("dlsetup.plan") / "data"))


def _mappings(node: Any, path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    if isinstance(node, dict):
        yield path, node
        for key, value in node.items():
            yield from _mappings(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _mappings(value, f"{path}[{i}]")


def test_every_row_has_a_source() -> None:
    rows = 0
    for key, value in raw_rows().items():
        for path, mapping in _mappings(value, key):
            rows += 1
            source = mapping.get("source")
            assert isinstance(source, str) and len(source.strip()) >= 10, f"{path} has no source"
    assert rows > 100  # the walk really visited the data


def test_shipped_data_is_consistent() -> None:
    data = load_compat_data()
    assert list(consistency_problems(data)) == []
    assert {a.name for a in data.architectures} >= {
        "Kepler",
        "Maxwell",
        "Pascal",
        "Volta",
        "Turing",
        "Ampere",
        "Ada",
        "Hopper",
        "Blackwell",
    }
    assert {s.key for s in data.systems} == {"ubuntu-22.04", "ubuntu-24.04", "debian-12", "debian-13"}


@pytest.mark.parametrize("name", all_package_names(load_compat_data()))
def test_package_names_follow_debian_policy(name: str) -> None:
    assert PACKAGE_NAME.match(name), name


def test_package_names_are_many_and_include_the_documented_ones() -> None:
    names = set(all_package_names(load_compat_data()))
    assert {
        "nvidia-driver-580",
        "nvidia-driver-580-open",
        "nvidia-driver-580-server-open",
        "linux-modules-nvidia-580-generic",
        "linux-modules-nvidia-580-server-open-generic",
        "nvidia-driver",
        "nvidia-kernel-dkms",
        "nvidia-open-kernel-dkms",
        "firmware-nvidia-gsp",
        "nvidia-driver-pinning-580",
        "cuda-drivers-580",
        "cuda-drivers",
        "nvidia-open",
        "cuda-toolkit-12-9",
        "cuda-toolkit-13-0",
        "cudnn9-cuda-12",
        "cudnn9-cuda-13",
        "libnccl2",
        "nvidia-cuda-toolkit",
    } <= names


def test_urls_are_only_wheel_indexes() -> None:
    """The only addresses in the data are the public defaults their owners document: NVIDIA's CUDA repository
    and PyTorch's wheel index. The distribution's archive and the general package index come from the host's own
    apt sources and pip configuration, so no such address is written here."""
    text = "\n".join(data_file(DATA_DIR, name).read_text() for name in DATA_FILES)
    hosts = set(re.findall(r"[a-z]+://([^/\s\"']+)", text))
    assert hosts == {"download.pytorch.org", "developer.download.nvidia.com"}
    repo = load_compat_data().nvidia_repository
    assert repo.path_template.startswith("compute/cuda/repos/") and "://" not in repo.path_template
    assert repo.base_url == "https://developer.download.nvidia.com"


def test_last_branches_and_cuda_ranges_agree() -> None:
    data = load_compat_data()
    for name in ("Maxwell", "Pascal", "Volta"):
        arch = data.architecture(name)
        assert arch.max_branch == 580 and arch.flavors == ("proprietary",) and arch.last_cuda_major == 12
    assert data.architecture("Kepler").max_branch == 470 and not data.architecture("Kepler").dl_supported
    blackwell = data.architecture("Blackwell")
    assert blackwell.flavors == ("open",) and blackwell.min_branch == 570
    assert data.toolkit("12.9").covers("5.0") and not data.toolkit("13.0").covers("7.0")
    assert data.toolkit("12.8").covers("12.0") and not data.toolkit("12.6").covers("10.0")
    assert data.branch(535).end_of_life == "2026-06" and data.branch(580).end_of_life == "2028-06"


def test_every_supported_architecture_has_a_complete_stack() -> None:
    """Some branch, toolkit, torch build and JAX extra serve each architecture (the ranges overlap)."""
    data = load_compat_data()
    for arch in data.architectures:
        if not arch.dl_supported:
            continue
        branches = [b.branch for b in data.branches if arch.drives(b.branch) and set(b.flavors) & set(arch.flavors)]
        assert branches, arch.name
        top = max(branches)
        assert any(all(t.covers(cc) for cc in arch.compute_capabilities) and t.min_branch <= top for t in data.toolkits)
        assert any(
            all(b.runs_on(cc) for cc in arch.compute_capabilities) and data.floor_for(b.cuda_major) <= top
            for b in data.pytorch
            if b.cuda_major
        ), arch.name
        lowest = min(map(cc_tuple, arch.compute_capabilities))
        if lowest >= (5, 2):
            assert any(lowest >= cc_tuple(j.cc_min) and j.min_branch <= top for j in data.jax), arch.name


# --- bad data is refused -----------------------------------------------------------------------------------------


def data_file(folder: Path, name: str) -> Path:
    """A data file as shipped: YAML, or JSON for generated data (the GPU catalogue)."""
    generated = folder / f"{name}.json"
    return generated if generated.exists() else folder / f"{name}.yaml"


def _edit(folder: Path, name: str, change: Callable[[dict[str, Any]], None]) -> None:
    path = data_file(folder, name)
    if path.suffix == ".json":
        loaded = json.loads(path.read_text())
        change(loaded)
        path.write_text(json.dumps(loaded))
        return
    loaded = yaml.safe_load(path.read_text())
    change(loaded)
    path.write_text(yaml.safe_dump(loaded, sort_keys=False))


def _row(rows: list[dict[str, Any]], **match: Any) -> dict[str, Any]:
    return next(r for r in rows if all(r.get(k) == v for k, v in match.items()))


# fmt: off
BROKEN: list[tuple[str, str, Callable[[dict[str, Any]], None], str]] = [
    ("missing-source", "gpus", lambda d: _row(d["gpus"], pci_id="10de:1b06").pop("source"), "source"),
    ("empty-source", "branches", lambda d: _row(d["branches"], branch=580).update(source=""), "source"),
    ("gpu-wrong-architecture", "gpus",
     lambda d: _row(d["gpus"], pci_id="10de:1b06").update(architecture="Turing"), "10de:1b06"),
    ("cuda13-claims-pascal", "cuda", lambda d: _row(d["toolkits"], version="13.0").update(cc_min="5.0"), "Pascal"),
    ("min-driver-goes-backwards", "cuda",
     lambda d: _row(d["toolkits"], version="12.9").update(min_driver="560.28.03"), "older driver"),
    ("torch-arch-outside-cuda", "frameworks",
     lambda d: _row(d["pytorch"], version="2.14.0", variant="cu126")["archs"].append("sm_120"), "outside CUDA"),
    ("variant-cuda-mismatch", "frameworks",
     lambda d: _row(d["pytorch"], version="2.14.0", variant="cu126").update(cuda="12.8"), "does not match"),
    ("unquoted-cc", "architectures",
     lambda d: _row(d["architectures"], name="Ada").update(compute_capabilities=[8.9]), "compute_capabilities"),
    ("unknown-branch-bound", "architectures",
     lambda d: _row(d["architectures"], name="Pascal").update(max_branch=585), "585"),
    ("os-offers-unknown-branch", "systems",
     lambda d: _row(d["systems"], key="debian-12")["distribution"].update(driver_branches=[536]), "536"),
    ("bad-template", "systems",
     lambda d: d["driver_packages"][0]["packages"].append("nvidia-{flavour}"), "placeholder"),
    ("unknown-field", "machines", lambda d: d["machines"][0].update(colour="silver"), "colour"),
    ("machine-gpu-not-catalogued", "machines", lambda d: d["machines"][1].update(gpus=["10de:9999"]), "10de:9999"),
    ("eol-format", "branches", lambda d: _row(d["branches"], branch=595).update(end_of_life="March 2027"), "YYYY-MM"),
]
# fmt: on


@pytest.mark.parametrize(("name", "change", "needle"), [c[1:] for c in BROKEN], ids=[c[0] for c in BROKEN])
def test_broken_data_is_refused(
    tmp_path: Path, name: str, change: Callable[[dict[str, Any]], None], needle: str
) -> None:
    folder = tmp_path / "data"
    shutil.copytree(DATA_DIR, folder)
    assert load_compat_data_from(folder) is not None  # the copy itself is fine
    _edit(folder, name, change)
    with pytest.raises(DlsetupError) as caught:
        load_compat_data_from(folder)
    assert needle in caught.value.message


# --- pins -------------------------------------------------------------------------------------------------------


def test_pins_are_normalised_and_idempotent() -> None:
    raw = {
        "driver_branch": "R580",
        "driver_flavor": "Proprietary",
        "driver_source": "nvidia",
        "cuda_version": "12.9",
        "pytorch_variant": "CU126",
        "pytorch_version": "2.14",
    }
    valid = validate_pins(raw)
    assert valid == {
        "driver_branch": 580,
        "driver_flavor": "proprietary",
        "driver_source": "nvidia",
        "cuda_version": "12.9",
        "pytorch_variant": "cu126",
        "pytorch_version": "2.14.0",
    }
    assert validate_pins(valid) == valid
    assert validate_pins({"driver_branch": None}) == {} and validate_pins(None) == {}


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        ({"branch": 580}, "pin branch: unknown key"),
        ({"driver_branch": True}, "driver_branch"),
        ({"driver_branch": 999}, "no data for branch 999"),
        ({"driver_branch": "58O"}, "not a driver branch"),
        ({"driver_flavor": "closed"}, "not one of open, proprietary"),
        ({"driver_source": "ppa"}, "driver_source"),
        ({"cuda_version": 12.9}, "got float"),
        ({"cuda_version": "12.7"}, "no data for CUDA 12.7"),
        ({"pytorch_variant": "rocm6.2"}, "not cpu or cuXYZ"),
        ({"pytorch_variant": "cu999"}, "no data for cu999"),
        ({"pytorch_version": 2.14}, "got float"),
        ({"pytorch_version": "1.13.1"}, "no data for torch 1.13.1"),
    ],
)
def test_bad_pins_name_the_key(raw: dict[str, Any], needle: str) -> None:
    with pytest.raises(PlanInputError) as caught:
        validate_pins(raw, where="host gpu1")
    assert caught.value.kind == "bad_pin"
    assert caught.value.message.startswith("host gpu1: pin ")
    assert needle in caught.value.message


def test_pins_must_be_a_mapping() -> None:
    with pytest.raises(PlanInputError):
        validate_pins(["driver_branch=580"])  # type: ignore[arg-type]
