"""The two drawings of a host's page as plain data: the PCIe tree (boxes, lines and their coordinates) and the
host-to-device bandwidth bars. Pure: the template only writes them out as inline SVG.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from dlsetup.facts.model import GpuFacts, HostFacts, PcieHop
from dlsetup.report import links
from dlsetup.report.links import STATE_TEXT, LinkState, LinkVerdict
from dlsetup.verify.checks import PCIE_LANE_GBPS, CheckResult, theoretical_gbps
from dlsetup.verify.report import HostReport

BANDWIDTH_CHECK = "framework.pytorch.bandwidth"
NOT_MEASURED = "not measured (verify --load measures it)"

# the PCIe tree's geometry, in SVG user units (pixels at 100 %)
MARGIN = 8
ROOT_WIDTH = 96
NODE_WIDTH = 196
GAP = 96
GPU_HEIGHT = 62
HOP_HEIGHT = 50
ROW = 78
NODE_CHARS = 32  # a node's line, in characters of its 11 px font, before it is cut short (the full text is its title)

# the bandwidth chart's
BAR_LABEL_WIDTH = 250
BAR_AREA = 470
BAR_VALUE_WIDTH = 150
BAR_HEIGHT = 18
BAR_PITCH = 26


def join_text(*parts: str | None, sep: str = " ") -> str:
    """The parts that are there, joined."""
    return sep.join(p for p in parts if p)


@dataclass(frozen=True)
class TreeNode:
    """A box of the PCIe tree: the root complex, a root port, a switch's port, or a GPU."""

    kind: str
    x: int
    y: int
    width: int
    height: int
    lines: tuple[str, ...]
    title: str
    gpu: str | None = None  # a GPU's bus id
    address: str | None = None


@dataclass(frozen=True)
class TreeEdge:
    """A line of the PCIe tree: a link (coloured by its state) or a connection inside a chip (``state`` None: the
    root complex to its port, a switch's upstream to its downstream port)."""

    path: str
    state: LinkState | None
    address: str
    title: str
    text: tuple[str, ...]
    text_x: int
    text_y: int
    gpu: str | None = None  # the GPU whose own link this is

    @property
    def css_class(self) -> str:
        return f"link link-{self.state}" if self.state else "link link-internal"


@dataclass(frozen=True)
class PcieTree:
    width: int
    height: int
    nodes: tuple[TreeNode, ...]
    edges: tuple[TreeEdge, ...]


@dataclass(frozen=True)
class Bar:
    kind: Literal["measured", "theoretical", "gpu-max"]
    label: str
    gbps: float
    y: int
    width: int
    text: str
    x: int = BAR_LABEL_WIDTH
    height: int = BAR_HEIGHT

    @property
    def text_x(self) -> int:
        return self.x + self.width + 6


@dataclass(frozen=True)
class BandwidthChart:
    """One GPU's bars: measured host-to-device bandwidth, the theoretical of its link now, the GPU's own maximum."""

    gpu: str | None
    title: str
    bars: tuple[Bar, ...]
    note: str
    measured: bool
    floor_x: int | None
    floor_text: str
    width: int
    height: int


def _cut(text: str, chars: int = NODE_CHARS) -> str:
    return text if len(text) <= chars else text[: chars - 1].rstrip() + "…"


def gpu_label(gpu: GpuFacts) -> str:
    return f"GPU {gpu.index}" if gpu.index is not None else "GPU"


LANES_FROM = {"cpu": "CPU", "chipset": "chipset", "unknown": "unknown"}


def lanes_from(gpu: GpuFacts) -> tuple[str, str]:
    """Where ``gpu``'s lanes come from (CPU, chipset, unknown) and by which rule."""
    attach = gpu.pcie_attach
    if attach is None:
        return "unknown", "not in these facts" if gpu.on_pci else "the GPU is not on PCI (only nvidia-smi lists it)"
    return LANES_FROM[attach.to], f"rule {attach.rule}"


_HOP_KIND_TEXT = {
    "root_port": "root port",
    "switch_upstream": "switch upstream",
    "switch_downstream": "switch downstream",
}


def _column_x(column: int) -> int:
    """The left edge of a tree column: 0 is the root complex, 1 the first bridge."""
    if column == 0:
        return MARGIN
    return MARGIN + ROOT_WIDTH + GAP + (column - 1) * (NODE_WIDTH + GAP)


def pcie_tree(facts: HostFacts, verdicts: Mapping[str, LinkVerdict]) -> PcieTree | None:
    """The tree of root complexes, root ports, switch ports and GPUs, from every GPU's ``pcie_path`` (a GPU without
    one sits on its root complex), laid out left to right: each GPU a row, the GPUs in the last column, a bridge
    beside the middle of the GPUs below it. ``None`` without GPUs."""
    if not facts.gpus:
        return None
    parent: dict[str, str] = {}
    children: dict[str, list[str]] = {}
    hops: dict[str, PcieHop] = {}
    gpus = {f"gpu:{g.pci_bus_id}": g for g in facts.gpus}
    roots: list[str] = []
    columns: dict[str, int] = {}
    for key, gpu in gpus.items():
        root = f"rc:{gpu.pci_bus_id.split(':')[0]}" if gpu.on_pci else "off-pci"
        chain = [root, *(hop.address for hop in gpu.pcie_path), key]
        for hop in gpu.pcie_path:
            hops.setdefault(hop.address, hop)
        if root not in children:
            roots.append(root)
            children[root] = []
            columns[root] = 0
        for column, (up, down) in enumerate(itertools.pairwise(chain), start=1):
            if down in parent:  # a bridge already placed (another GPU behind it)
                continue
            parent[down] = up
            children[up].append(down)
            children.setdefault(down, [])
            columns[down] = column
    gpu_column = max(columns[key] for key in gpus)
    for key in gpus:
        columns[key] = gpu_column

    centre: dict[str, int] = {}
    leaves: list[str] = []

    def place(node: str) -> None:
        if node in gpus:
            centre[node] = MARGIN + len(leaves) * ROW + ROW // 2
            leaves.append(node)
            return
        for child in children[node]:
            place(child)
        kids = children[node]
        centre[node] = (centre[kids[0]] + centre[kids[-1]]) // 2

    for root in roots:
        place(root)

    nodes: list[TreeNode] = []
    boxes: dict[str, tuple[int, int, int, int]] = {}
    for node, column in columns.items():
        x = _column_x(column)
        if column == 0:
            first, last = _span(node, children, centre, gpus)
            top, bottom = first - GPU_HEIGHT // 2, last + GPU_HEIGHT // 2
            boxes[node] = (x, top, ROOT_WIDTH, bottom - top)
            domain = node.partition(":")[2]
            lines: tuple[str, ...] = (
                ("root complex", f"domain {domain}") if domain else ("not on PCI", "nvidia-smi only")
            )
            title = f"PCI root complex, domain {domain}" if domain else "GPUs only nvidia-smi lists (not on PCI)"
            nodes.append(TreeNode("root_complex", x, top, ROOT_WIDTH, bottom - top, lines, title))
        elif node in gpus:
            gpu = gpus[node]
            found = verdicts[gpu.pci_bus_id]
            lanes, _ = lanes_from(gpu)
            box = (x, centre[node] - GPU_HEIGHT // 2, NODE_WIDTH, GPU_HEIGHT)
            boxes[node] = box
            lines = (f"{gpu_label(gpu)} · {gpu.pci_bus_id}", _cut(gpu.model), f"lanes from: {lanes}")
            title = f"{gpu.label}: link {found.width_text}, {found.gen_text}: {found.why}"
            nodes.append(TreeNode("gpu", *box, lines, title, gpu=gpu.pci_bus_id, address=gpu.pci_bus_id))
        else:
            hop = hops[node]
            box = (x, centre[node] - HOP_HEIGHT // 2, NODE_WIDTH, HOP_HEIGHT)
            boxes[node] = box
            kind = _HOP_KIND_TEXT[hop.kind]
            lines = (hop.address, join_text(kind, hop.pci_id, sep=" · "), _cut(hop.name or "not in pci.ids"))
            title = join_text(f"{kind} {hop.address}", hop.pci_id, hop.name, sep=", ")
            nodes.append(TreeNode(hop.kind, *box, lines, title, address=hop.address))

    edges = [_edge(up, down, boxes, centre, gpus, hops, verdicts) for down, up in parent.items()]
    width = _column_x(gpu_column) + NODE_WIDTH + MARGIN
    height = 2 * MARGIN + len(leaves) * ROW
    return PcieTree(width, height, tuple(nodes), tuple(edges))


def _span(
    node: str, children: Mapping[str, list[str]], centre: Mapping[str, int], gpus: Mapping[str, GpuFacts]
) -> tuple[int, int]:
    """The centres of the first and last GPU below ``node``."""
    found: list[int] = []
    stack = [node]
    while stack:
        current = stack.pop()
        if current in gpus:
            found.append(centre[current])
        stack.extend(children[current])
    return min(found), max(found)


def _edge(
    up: str,
    down: str,
    boxes: Mapping[str, tuple[int, int, int, int]],
    centre: Mapping[str, int],
    gpus: Mapping[str, GpuFacts],
    hops: Mapping[str, PcieHop],
    verdicts: Mapping[str, LinkVerdict],
) -> TreeEdge:
    ux, _, uw, _ = boxes[up]
    dx = boxes[down][0]
    x1 = ux + uw
    y1 = centre[down] if up.startswith(("rc:", "off-pci")) else centre[up]
    y2 = centre[down]
    elbow = x1 + 18
    path = f"M{x1},{y1} H{elbow} V{y2} H{dx}"
    if down in gpus:
        gpu = gpus[down]
        found = verdicts[gpu.pci_bus_id]
        return TreeEdge(
            path,
            found.state,
            gpu.pci_bus_id,
            f"{gpu.label}: {STATE_TEXT[found.state]}: {found.why}",
            (found.width_text, found.gen_text),
            dx - 6,
            y2,
            gpu=gpu.pci_bus_id,
        )
    hop = hops[down]
    if hop.kind == "switch_upstream":
        found = links.verdict(links.hop_link(hop, hops.get(up)), device="switch")
        title = f"the uplink of switch {hop.address}: {STATE_TEXT[found.state]}: {found.why}"
        return TreeEdge(path, found.state, hop.address, title, (found.width_text, found.gen_text), dx - 6, y2)
    inside = "inside the switch" if hop.kind == "switch_downstream" else "inside the root complex"
    return TreeEdge(path, None, hop.address, f"{hop.address}: {inside}", (), dx - 6, y2)


# --- bandwidth ----------------------------------------------------------------------------------------------------


def find_check(report: HostReport | None, check_id: str) -> CheckResult | None:
    """The check ``check_id`` of ``report``, if it ran."""
    if report is None:
        return None
    return next((c for c in report.checks if c.id == check_id), None)


def measured_gbps(facts: HostFacts | None, report: HostReport | None) -> dict[int, float]:
    """PyTorch device index → the host-to-device bandwidth verify measured (``framework.pytorch.bandwidth``'s
    ``actual``, one value or null per device in PyTorch's order)."""
    check = find_check(report, BANDWIDTH_CHECK)
    if check is None or not isinstance(check.actual, list | tuple):
        return {}
    return {i: float(v) for i, v in enumerate(check.actual) if isinstance(v, int | float) and not isinstance(v, bool)}


def _floor_ratio(report: HostReport | None) -> float | None:
    check = find_check(report, BANDWIDTH_CHECK)
    if check is None or not isinstance(check.expected, int | float) or isinstance(check.expected, bool):
        return None
    return float(check.expected)


def bandwidth_charts(facts: HostFacts | None, report: HostReport | None) -> tuple[BandwidthChart, ...]:
    """Per GPU: the bandwidth measured (matched to the GPUs the driver lists, in their order, as verify matches a
    measurement without a bus id), the theoretical of its link now (its current width at the best generation the
    GPU and the slot reach, which verify compares with) and, where more, of the GPU's own maximum link."""
    measured = measured_gbps(facts, report)
    ratio = _floor_ratio(report)
    wanted: list[
        tuple[str | None, str, float | None, list[tuple[Literal["theoretical", "gpu-max"], str, float]], str]
    ] = []
    if facts is not None:
        visible = [g.pci_bus_id for g in facts.visible_gpus]
        for gpu in facts.gpus:
            link = gpu.pcie
            index = visible.index(gpu.pci_bus_id) if gpu.pci_bus_id in visible else None
            gbps = measured.get(index) if index is not None else None
            ideal: list[tuple[Literal["theoretical", "gpu-max"], str, float]] = []
            gen = links.best_of(link.gen_max, link.slot_gen_max)
            if gen in PCIE_LANE_GBPS and link.width_current:
                assert gen is not None
                ideal.append(
                    (
                        "theoretical",
                        f"theoretical, Gen{gen} x{link.width_current}",
                        theoretical_gbps(gen, link.width_current),
                    )
                )
            if link.gen_max in PCIE_LANE_GBPS and link.width_max:
                assert link.gen_max is not None
                most = theoretical_gbps(link.gen_max, link.width_max)
                if not ideal or most > ideal[0][2] + 1e-9:
                    ideal.append(("gpu-max", f"the GPU's maximum, Gen{link.gen_max} x{link.width_max}", most))
            if gbps is not None:
                note = ""
            elif index is None:
                note = "not measured (the driver does not list this GPU)"
            else:
                note = NOT_MEASURED
            if not ideal:
                note = join_text(note, "no theoretical: the link is not readable", sep="; ")
            wanted.append((gpu.pci_bus_id, f"{gpu_label(gpu)} · {gpu.pci_bus_id} · {gpu.model}", gbps, ideal, note))
    else:
        for index, gbps in measured.items():
            wanted.append((None, f"PyTorch device {index}", gbps, [], "no facts: no theoretical to compare with"))
    scale = max([v for *_, ideal, _ in wanted for _, _, v in ideal] + [g for _, _, g, _, _ in wanted if g], default=0)
    charts = []
    for bus, title, gbps, ideal, why in wanted:
        note = why
        rows: list[tuple[Literal["measured", "theoretical", "gpu-max"], str, float]] = []
        if gbps is not None:
            rows.append(("measured", "measured host-to-device", gbps))
        rows += ideal
        bars = tuple(
            Bar(kind, label, value, MARGIN + i * BAR_PITCH, _bar(value, scale), f"{value:.1f} GB/s")
            for i, (kind, label, value) in enumerate(rows)
        )
        theoretical = next((v for k, _, v in ideal if k == "theoretical"), None)
        floor_x = None
        floor_text = ""
        if gbps is not None and theoretical:
            share = f"{gbps / theoretical:.0%} of the theoretical"
            note = share + (f"; verify's floor is {ratio:.0%}" if ratio is not None else "")
            if ratio is not None:
                floor_x = BAR_LABEL_WIDTH + _bar(theoretical * ratio, scale)
                floor_text = f"verify's floor: {ratio:.0%} of the theoretical, {theoretical * ratio:.1f} GB/s"
        height = 2 * MARGIN + max(len(bars), 1) * BAR_PITCH
        charts.append(
            BandwidthChart(
                bus,
                title,
                bars,
                note,
                gbps is not None,
                floor_x,
                floor_text,
                BAR_LABEL_WIDTH + BAR_AREA + BAR_VALUE_WIDTH,
                height,
            )
        )
    return tuple(charts)


def _bar(value: float, scale: float) -> int:
    return max(1, round(BAR_AREA * value / scale)) if scale > 0 else 1
