"""What every decision of the resolver shares: the :class:`Work` of one request (the data, the OS, the reasons and
warnings gathered so far), the GPUs as planned (:class:`PlanGpu`), and how they are named in reasons."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date

from dlsetup.plan.model import GpuSpec, Reason, StackRequest
from dlsetup.plan.schema import Architecture, CompatData, Flavor, OperatingSystem, cc_tuple
from dlsetup.plan.sources import nvidia_repository_url

ORIGIN_NAMES = {"distribution": "the distribution's archive", "nvidia": "NVIDIA's CUDA repository"}


@dataclass
class Work:
    """Reasons and warnings gathered while resolving one request."""

    data: CompatData
    system: OperatingSystem
    request: StackRequest
    today: date
    reasons: list[Reason] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def why(self, topic: str, text: str, source: str = "") -> None:
        self.reasons.append(Reason(topic, text, source))

    def warn(self, text: str) -> None:
        if text not in self.warnings:
            self.warnings.append(text)


@dataclass(frozen=True)
class PlanGpu:
    spec: GpuSpec
    arch: Architecture

    @property
    def flavors(self) -> tuple[Flavor, ...]:
        """The kernel-module flavours that drive it: its architecture's, less open where NVIDIA's data does not list
        it for the open modules (some Turing and Ampere parts)."""
        if self.spec.open_modules is False:
            return tuple(f for f in self.arch.flavors if f != "open")
        return self.arch.flavors

    @property
    def ccs(self) -> tuple[str, ...]:
        """The compute capabilities the stack must serve: the GPU's, or every one of its architecture's."""
        return (self.spec.compute_capability,) if self.spec.compute_capability else self.arch.compute_capabilities


def names(gpus: Iterable[PlanGpu]) -> str:
    """The GPUs' names, each once: ``NVIDIA GeForce GTX 1080 Ti, NVIDIA TITAN Xp``."""
    labels: list[str] = []
    for gpu in gpus:
        if gpu.spec.name not in labels:
            labels.append(gpu.spec.name)
    return ", ".join(labels)


def by_arch(gpus: Iterable[PlanGpu]) -> str:
    """The GPUs grouped by architecture: ``Pascal (GTX 1080 Ti); Turing (RTX 2080 Ti)``."""
    groups: dict[str, list[PlanGpu]] = {}
    for gpu in gpus:
        groups.setdefault(gpu.arch.name, []).append(gpu)
    return "; ".join(f"{arch} ({names(members)})" for arch, members in groups.items())


def ccs_of(gpus: Sequence[PlanGpu]) -> list[str]:
    """Every compute capability the stack must serve, lowest first."""
    return sorted({cc for g in gpus for cc in g.ccs}, key=cc_tuple)


def repo_url(work: Work) -> str:
    """NVIDIA's repository for the request's OS (``https://.../compute/cuda/repos/debian12/x86_64/``), or its
    mirror's."""
    return nvidia_repository_url(work.data, work.system, work.request.sources, work.request.arch)
