"""The CPU catalogue and what a build of parts gets on PCIe (plan --cpu): data with a source on every row, and
the lane allocation of the builds this project starts from."""

from __future__ import annotations

import json

import pytest

from dlsetup.errors import ConfigError
from dlsetup.plan.lanes import allocate, lane_allocation, load_cpus

PASCAL_PAIR = [("GTX 1080 Ti", "Pascal")] * 2


def test_every_row_has_a_source_that_is_an_address() -> None:
    data = load_cpus()
    rows = [*data.cpus, *data.chipset_links]
    assert all("[URL " in row.source for row in rows), [r.name for r in rows if "[URL " not in r.source]
    assert "[URL " in data.gpu_links_source and "[URL " in data.pcie_generations_source
    names = [c.name for c in data.cpus]
    assert len(names) == len(set(names))
    assert {"Core i7-6700K", "Core i5-6600K", "Threadripper 1950X"} <= set(names)  # the build's own CPUs


def test_two_gpus_on_a_skylake_i7_run_x8_x8_and_a_threadripper_is_named() -> None:
    build = lane_allocation("Core i7-6700K", PASCAL_PAIR)
    assert [(g.attached_to, g.width, g.gen) for g in build.gpus] == [("cpu", 8, 3), ("cpu", 8, 3)]
    assert build.gpus[1].why == "x8 because the CPU's 16 lanes are split between 2 slots"
    assert build.gpus[0].bandwidth_gbps == pytest.approx(7.9, abs=0.05)
    assert build.alternative is not None and "x16/x16" in build.alternative
    assert "https://" in build.source and "[URL" not in build.source


def test_a_threadripper_1950x_gives_both_x16() -> None:
    build = lane_allocation("TR 1950X", PASCAL_PAIR)
    assert [(g.width, g.bandwidth_gbps) for g in build.gpus] == [(16, 15.8), (16, 15.8)]
    assert build.alternative is None  # nothing listed gives two Pascal cards more than x16 gen3


def test_a_gpu_beyond_the_cpus_slots_hangs_off_the_chipset() -> None:
    lanes = allocate(load_cpus().find("i7-6700K"), [("GTX 1080 Ti", "Pascal")] * 4)
    assert [g.attached_to for g in lanes] == ["cpu", "cpu", "cpu", "chipset"]
    assert [g.width for g in lanes] == [8, 4, 4, 4]
    assert lanes[3].why.startswith("x4 in a chipset slot, behind DMI 3.0")
    assert lanes[3].why.endswith("move it to a CPU slot")


def test_the_link_is_the_older_generation_of_card_and_slot() -> None:
    (rtx5090,) = allocate(load_cpus().find("Core i9-13900K"), [("RTX 5090", "Blackwell")])
    assert (rtx5090.width, rtx5090.gen, rtx5090.bandwidth_gbps) == (16, 5, 63.0)
    (gtx,) = allocate(load_cpus().find("Core i9-13900K"), [("GTX 1080 Ti", "Pascal")])
    assert (gtx.gen, gtx.bandwidth_gbps) == (3, 15.8)


def test_an_unlisted_cpu_is_unknown_not_guessed() -> None:
    with pytest.raises(ConfigError, match=r"^unknown CPU 'Pentium 4': dlsetup's CPU catalogue has Core i7-6700K"):
        lane_allocation("Pentium 4", PASCAL_PAIR)


def test_plan_cpu_json_and_table(cli, fake_runner) -> None:
    result = cli("plan", "--cpu", "Core i7-6700K", "--gpu", "GTX 1080 Ti", "--gpu", "GTX 1080 Ti", "--format", "json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["os"] == "ubuntu-24.04"  # no --os: the what-if plans for the OS most rigs run
    assert [g["width"] for g in document["pcie_lanes"]["gpus"]] == [8, 8]
    table = cli("plan", "--cpu", "Core i7-6700K", "--gpu", "GTX 1080 Ti", "--gpu", "GTX 1080 Ti").stdout
    assert "PCIe lanes: Core i7-6700K" in table and "better: Core i7-6850K gives these GPUs x16/x16" in table
    refused = cli("plan", "localhost", "--cpu", "Core i7-6700K")
    assert refused.exit_code == 2 and fake_runner.calls == []
