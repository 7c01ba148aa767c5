"""What a build of parts gets on PCIe (issue 13, part): the lanes its CPU gives each GPU, and the host-to-device
bandwidth each GPU can reach, from the CPU catalogue (``data/cpus.yaml``, a source on every row).

The allocation is what boards do: the CPU's lanes split into slots as the CPU allows (``splits``), the widest
split that seats every GPU on CPU lanes is used, and a GPU beyond the CPU's slots sits in a chipset slot (x4),
whose traffic shares the chipset's uplink with every disk and NIC. A GPU's link is the narrower of its slot and
its card, at the older of the two generations.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from dlsetup.errors import ConfigError
from dlsetup.plan.addresses import openable

CHIPSET_SLOT_WIDTH = 4


class _Row(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Generation(_Row):
    gen: int
    gbps_per_lane: float


class ChipsetLink(_Row):
    name: str
    width: int
    gen: int
    source: str = Field(min_length=1)


class GpuLink(_Row):
    architecture: str
    gen: int


class Cpu(_Row):
    name: str
    aliases: tuple[str, ...] = ()
    platform: str
    lanes: int
    gen: int
    splits: tuple[tuple[int, ...], ...] = Field(min_length=1)
    chipset_link: str
    source: str = Field(min_length=1)

    @model_validator(mode="after")
    def _splits_fit(self) -> Cpu:
        for split in self.splits:
            if sum(split) > self.lanes:
                raise ValueError(f"{self.name}: split {list(split)} needs more than its {self.lanes} lanes")
        return self


class CpuCatalogue(_Row):
    pcie_generations: tuple[Generation, ...]
    pcie_generations_source: str
    chipset_links: tuple[ChipsetLink, ...]
    gpu_links: tuple[GpuLink, ...]
    gpu_links_source: str
    cpus: tuple[Cpu, ...]

    @model_validator(mode="after")
    def _links_known(self) -> CpuCatalogue:
        links = {link.name for link in self.chipset_links}
        for cpu in self.cpus:
            if cpu.chipset_link not in links:
                raise ValueError(f"{cpu.name}: chipset_link {cpu.chipset_link!r} is not among chipset_links")
        return self

    def per_lane(self, gen: int) -> float:
        return next(g.gbps_per_lane for g in self.pcie_generations if g.gen == gen)

    def match_model(self, model: str | None) -> Cpu | None:
        """The CPU a host's ``/proc/cpuinfo`` model names (``Intel(R) Core(TM) i7-6700K CPU @ 4.00GHz``, ``AMD Ryzen
        Threadripper 1950X 16-Core Processor``): a listed name or alias as whole words of it; ``None`` when no row
        is (a ``7950X3D`` is not a ``7950X``: never guessed)."""
        if not model:
            return None
        words = _words(model)
        for cpu in self.cpus:
            for name in (cpu.name, *cpu.aliases):
                wanted = _words(name)
                if any(words[i : i + len(wanted)] == wanted for i in range(len(words) - len(wanted) + 1)):
                    return cpu
        return None

    def find(self, text: str) -> Cpu:
        """A CPU by its name or an alias (case and spaces aside); an unknown one is bad input, not a guess."""
        wanted = " ".join(text.lower().replace("intel", "").replace("amd", "").split())
        for cpu in self.cpus:
            if wanted in (" ".join(n.lower().split()) for n in (cpu.name, *cpu.aliases)):
                return cpu
        raise ConfigError(
            f"unknown CPU {text!r}: dlsetup's CPU catalogue has {', '.join(c.name for c in self.cpus)}",
            hint="a CPU that is not listed is not guessed; its lanes are in the vendor's specifications",
        )


def _words(text: str) -> list[str]:
    """Lower-case words, the trademark signs and the vendors' filler words dropped."""
    text = re.sub(r"\((?:r|tm|c)\)", " ", text.lower())
    return [w for w in text.replace("@", " ").split() if w not in ("intel", "amd", "cpu", "processor")]


@cache
def load_cpus() -> CpuCatalogue:
    text = (resources.files("dlsetup.plan") / "data" / "cpus.yaml").read_text(encoding="utf-8")
    return CpuCatalogue.model_validate(yaml.safe_load(text))


@dataclass(frozen=True)
class GpuLane:
    """One GPU of the build: where it sits, its link, the host-to-device bandwidth it can reach, and why."""

    gpu: str
    attached_to: str  # "cpu" or "chipset"
    slot_width: int
    width: int
    gen: int
    bandwidth_gbps: float
    why: str


@dataclass(frozen=True)
class LaneAllocation:
    cpu: Cpu
    gpus: tuple[GpuLane, ...]
    alternative: str | None  # a listed CPU whose lanes give these GPUs more, named with what they get
    source: str

    def to_dict(self) -> dict[str, object]:
        return {
            "cpu": self.cpu.name,
            "cpu_lanes": self.cpu.lanes,
            "cpu_gen": self.cpu.gen,
            "gpus": [g.__dict__ for g in self.gpus],
            "alternative": self.alternative,
            "source": self.source,
        }


def _split_for(cpu: Cpu, count: int) -> tuple[int, ...]:
    """The split that gives ``count`` GPUs the widest CPU slots: most GPUs on CPU lanes, then the widest
    narrowest slot, then the most lanes in all."""

    def score(split: Sequence[int]) -> tuple[int, int, int]:
        seated = sorted(split, reverse=True)[:count]
        return (len(seated), min(seated), sum(seated))

    best: Sequence[int] = sorted(cpu.splits, key=score)[-1]
    return tuple(sorted(best, reverse=True))


def allocate(cpu: Cpu, gpus: Sequence[tuple[str, str]], data: CpuCatalogue | None = None) -> tuple[GpuLane, ...]:
    """``gpus`` as (name, architecture) pairs, in slot order."""
    data = data or load_cpus()
    split = _split_for(cpu, len(gpus))
    link = next(c for c in data.chipset_links if c.name == cpu.chipset_link)
    on_chipset = max(0, len(gpus) - len(split))
    uplink = link.width * data.per_lane(link.gen)
    lanes: list[GpuLane] = []
    for index, (name, architecture) in enumerate(gpus):
        card_gen = next((g.gen for g in data.gpu_links if g.architecture == architecture), cpu.gen)
        if index < len(split):
            width, gen = min(split[index], 16), min(card_gen, cpu.gen)
            bandwidth = width * data.per_lane(gen)
            if width == 16:
                why = f"x16 from the CPU's {cpu.lanes} lanes"
            else:
                used = min(len(gpus), len(split))
                why = f"x{width} because the CPU's {cpu.lanes} lanes are split between {used} slots"
            lanes.append(GpuLane(name, "cpu", split[index], width, gen, round(bandwidth, 1), why))
        else:
            gen = min(card_gen, link.gen)
            alone = CHIPSET_SLOT_WIDTH * data.per_lane(gen)
            bandwidth = min(alone, uplink / on_chipset)
            why = (f"x{CHIPSET_SLOT_WIDTH} in a chipset slot, behind {link.name} (about {uplink:.1f} GB/s shared with "
                   "every disk and NIC): move it to a CPU slot")  # fmt: skip
            lanes.append(GpuLane(name, "chipset", CHIPSET_SLOT_WIDTH, CHIPSET_SLOT_WIDTH, gen, round(bandwidth, 1),
                                 why))  # fmt: skip
    return tuple(lanes)


def lane_allocation(cpu_name: str, gpus: Sequence[tuple[str, str]]) -> LaneAllocation:
    """The build's allocation, and the listed CPU with the fewest lanes that gives every GPU more."""
    data = load_cpus()
    cpu = data.find(cpu_name)
    lanes = allocate(cpu, gpus, data)
    worst = min((g.bandwidth_gbps for g in lanes), default=0.0)
    better = []
    for other in data.cpus:
        if other.name == cpu.name:
            continue
        theirs = allocate(other, gpus, data)
        if min((g.bandwidth_gbps for g in theirs), default=0.0) > worst and all(g.attached_to == "cpu" for g in theirs):
            better.append((other.lanes, other.name, theirs))
    alternative = None
    if better:
        _, name, theirs = min(better)
        widths = "/".join(f"x{g.width}" for g in theirs)
        alternative = (
            f"{name} gives these GPUs {widths} ({min(g.bandwidth_gbps for g in theirs):.1f} GB/s each at least)"
        )
    source = openable(f"{cpu.source}; {data.gpu_links_source}; {data.pcie_generations_source}")
    return LaneAllocation(cpu, lanes, alternative, source)
