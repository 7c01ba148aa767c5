"""Render a :class:`Plan` for a terminal with rich: a table of choices, then the reasons and the warnings."""

from __future__ import annotations

from collections import Counter
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from dlsetup.plan.lanes import LaneAllocation
from dlsetup.plan.model import Plan

_TOPIC_ORDER = (
    "gpus",
    "driver.flavor",
    "driver.branch",
    "driver.source",
    "driver.packages",
    "driver.version",
    "secure_boot",
    "cuda",
    "cudnn",
    "nccl",
    "nvidia_repository",
    "pytorch",
    "jax",
    "laptop",
    "reboot",
)


def _or_dash(value: object) -> str:
    return "—" if value in (None, "", []) else str(value)


class _Rows(Table):
    """A table whose cells are plain text: names such as "[GeForce ...]" must never be read as rich markup."""

    def add_row(self, *cells: RenderableType | None, **kwargs: Any) -> None:
        super().add_row(*(Text(c) if isinstance(c, str) else c for c in cells), **kwargs)


def choices_table(plan: Plan) -> Table:
    """The choices, one row per component."""
    table = _Rows(show_header=True, header_style="bold", box=None, pad_edge=False)
    table.add_column("component", style="cyan", no_wrap=True)
    table.add_column("choice")
    counts = Counter(
        f"{g.name} [{g.pci_id or '?'}] {g.architecture} CC {g.compute_capability or '?'}" for g in plan.gpus
    )
    gpus = ", ".join(f"{n}x {label}" if n > 1 else label for label, n in counts.items())
    table.add_row("OS", plan.os)
    if plan.machine is not None:
        profile = f" (profile {plan.machine.profile})" if plan.machine.profile else ""
        table.add_row("machine", f"{_or_dash(plan.machine.product)}{profile}")
    table.add_row("GPUs", gpus or "no NVIDIA GPU (CPU-only stack)")
    driver = plan.driver
    if driver.branch is not None:
        eol = f", EOL {driver.end_of_life}" if driver.end_of_life else ""
        table.add_row(
            "driver",
            f"R{driver.branch} {driver.flavor} from {driver.source} ({driver.support}{eol})"
            + (f", held at {driver.version}" if driver.version else ""),
        )
        table.add_row("  packages", " ".join(driver.packages))
    else:
        table.add_row("driver", "none")
    cuda = plan.cuda
    table.add_row("CUDA", f"{cuda.version} from {cuda.source}: {' '.join(cuda.packages)}" if cuda.version else "none")
    for label, lib in (("cuDNN", plan.cudnn), ("NCCL", plan.nccl)):
        if lib.packages:
            table.add_row(label, f"{lib.version or 'newest'}: {' '.join(lib.packages)}")
    repo = plan.nvidia_repository
    if repo is not None:
        table.add_row(
            "NVIDIA repository", f"{repo.url} (for {' and '.join(repo.used_for)}; key {repo.key_fingerprint})"
        )
    host_pip = "the host's pip configuration"
    wheels = f"the wheelhouse {plan.wheelhouse} (offline)" if plan.wheelhouse else None
    torch = plan.pytorch
    if torch.version is not None:
        table.add_row(
            "PyTorch", f"torch=={torch.version} ({torch.variant}) from {wheels or torch.index_url or host_pip}"
        )
    else:
        table.add_row("PyTorch", "none")
    jax = f"jax[{plan.jax.extra}]" if plan.jax.extra and plan.jax.extra != "cpu" else "jax (CPU)"
    table.add_row("JAX", f"{jax} from {wheels or plan.jax.index_url or host_pip}")
    if plan.laptop.prime or plan.laptop.mem_sleep_default:
        parts = []
        if plan.laptop.prime:
            parts.append(f"PRIME {plan.laptop.prime}")
        if plan.laptop.mem_sleep_default:
            parts.append(f"mem_sleep_default={plan.laptop.mem_sleep_default}")
        table.add_row("laptop", ", ".join(parts))
    secure = plan.secure_boot
    table.add_row(
        "Secure Boot",
        "signed modules, no key enrollment" if secure.signed_modules else f"MOK enrollment: {secure.mok_enrollment}",
    )
    table.add_row("reboot", "required" if plan.reboot_required else "not needed")
    return table


def plan_renderable(plan: Plan, *, explain: bool = False) -> RenderableType:
    """The plan as one rich renderable: its choices and warnings; ``explain`` (``--explain``) adds why each choice
    was made and where each fact comes from."""
    parts: list[RenderableType] = [choices_table(plan)]
    if explain and plan.reasons:
        parts.append(Text("\nwhy", style="bold"))
        order = {topic: i for i, topic in enumerate(_TOPIC_ORDER)}
        for reason in sorted(plan.reasons, key=lambda r: order.get(r.topic, len(order))):
            line = Text("  ")
            line.append(f"{reason.topic}: ", style="cyan")
            line.append(reason.text)
            parts.append(line)
            if reason.source:
                parts.append(Text(f"    source: {reason.source}", style="dim"))
    if plan.warnings:
        parts.append(Text("\nwarnings", style="bold yellow"))
        for warning in plan.warnings:
            parts.append(Text(f"  ! {warning}", style="yellow"))
    return Group(*parts)


def render_plan(console: Console, plan: Plan, *, explain: bool = False) -> None:
    """Print ``plan`` on ``console``; without ``explain``, a line says how to see the reasons."""
    console.print(plan_renderable(plan, explain=explain))
    if not explain and plan.reasons:
        console.print(Text("(--explain: why each choice, and its sources)", style="dim"))


def render_lanes(console: Console, allocation: LaneAllocation, *, explain: bool = False) -> None:
    """``plan --cpu``: the PCIe lanes each GPU of the build gets, its bandwidth, why, and a better listed CPU."""
    cpu = allocation.cpu
    console.print(Text(f"\nPCIe lanes: {cpu.name} ({cpu.platform}), {cpu.lanes} PCIe {cpu.gen}.0 lanes", style="bold"))
    table = _Rows(show_header=True, header_style="bold", box=None, pad_edge=False)
    for column in ("GPU", "slot", "link", "host-to-device", "why"):
        table.add_column(column)
    for number, lane in enumerate(allocation.gpus):
        table.add_row(f"{number}: {lane.gpu}", f"{lane.attached_to} x{lane.slot_width}", f"x{lane.width} gen{lane.gen}",
                      f"{lane.bandwidth_gbps:.1f} GB/s", lane.why)  # fmt: skip
    console.print(table)
    if allocation.alternative:
        console.print(Text(f"better: {allocation.alternative}", style="yellow"))
    if explain:
        console.print(Text(f"    source: {allocation.source}", style="dim"))
