"""The state of one PCIe link, as the report colours it (``docs/report.md``, "Link states"). Pure.

A link joins a device (a GPU, or a switch's upstream port) to the port above it, whose own maximum is the slot's:

- ``fine``: the link runs as wide as the device can;
- ``slot-limited``: it runs at the slot's maximum, which is below the device's (the board's lanes or bifurcation,
  not a fault), or the slot's maximum generation is below the device's;
- ``trained-down``: it runs narrower than both the device and the slot can (a card to reseat, a riser, dirty
  contacts), or, read under load, at a lower generation than both can;
- ``unknown``: the width is not readable.

The generation read at idle is shown, not judged: GPUs lower it to save power (as verify's ``gpu.pcie_gen`` says),
so only a reading taken under load can make a link ``trained-down``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from dlsetup.facts.model import PcieHop, PcieLink

LinkState = Literal["fine", "slot-limited", "trained-down", "unknown"]
LINK_STATES: tuple[LinkState, ...] = ("fine", "slot-limited", "trained-down", "unknown")
# which of two states a link with both shows
_SEVERITY: dict[LinkState, int] = {"fine": 0, "unknown": 1, "slot-limited": 2, "trained-down": 3}
STATE_TEXT: dict[LinkState, str] = {
    "fine": "fine",
    "slot-limited": "slot-limited",
    "trained-down": "trained down",
    "unknown": "unknown",
}


@dataclass(frozen=True)
class LinkVerdict:
    """A link's state, why (one line), and the two short lines drawn beside it (width, generation)."""

    state: LinkState
    why: str
    width_text: str
    gen_text: str


def best_of(*values: int | None) -> int | None:
    """The lowest of the known values (the generation a link can reach: the lower of the device's and the slot's)."""
    known = [v for v in values if v is not None]
    return min(known) if known else None


def _width(link: PcieLink, device: str) -> tuple[LinkState, str]:
    current, most, slot = link.width_current, link.width_max, link.slot_width_max
    if current is None or most is None:
        return "unknown", "the link width is not readable"
    if current >= most:
        return "fine", f"runs x{current}, the {device}'s full width"
    if slot is not None and slot < most and current >= slot:
        return "slot-limited", (
            f"runs x{current}: the slot gives x{slot} (its upstream port's maximum) while the {device} can do "
            f"x{most}: the board's lanes or bifurcation, not a fault"
        )
    slot_text = f"x{slot}" if slot is not None else "unknown"
    return "trained-down", (
        f"runs x{current} although the {device} (x{most}) and the slot ({slot_text}) can do more: the link trained "
        "down (reseat the card, check the riser, clean the contacts)"
    )


def _gen(link: PcieLink, device: str, under_load: int | None) -> tuple[LinkState, str]:
    best = best_of(link.gen_max, link.slot_gen_max)
    if under_load is not None and best is not None and under_load < best:
        return "trained-down", f"runs Gen{under_load} under load although the {device} and the slot can do Gen{best}"
    if link.gen_max is not None and link.slot_gen_max is not None and link.slot_gen_max < link.gen_max:
        return "slot-limited", (
            f"the slot reaches Gen{link.slot_gen_max} at most while the {device} can do Gen{link.gen_max}"
        )
    return "fine", ""


def verdict(link: PcieLink, *, device: str = "GPU", gen_under_load: int | None = None) -> LinkVerdict:
    """The state of ``link`` (a GPU's, or :func:`hop_link` of a bridge), with ``gen_under_load`` the generation read
    under load where there is one."""
    width_state, width_why = _width(link, device)
    gen_state, gen_why = _gen(link, device, gen_under_load)
    state = max((width_state, gen_state), key=lambda s: _SEVERITY[s])
    reasons = [why for s, why in ((width_state, width_why), (gen_state, gen_why)) if why and s != "fine"]
    why = "; ".join(reasons) or width_why
    if link.width_current is None:
        width_text = "x?"
    elif link.width_max is None or link.width_current >= link.width_max:
        width_text = f"x{link.width_current}"
    else:
        width_text = f"x{link.width_current} of x{link.width_max}"
    gen = gen_under_load if gen_under_load is not None else link.gen_current
    best = best_of(link.gen_max, link.slot_gen_max)
    if gen is None:
        gen_text = f"Gen? of {best}" if best is not None else "Gen?"
    elif best is not None and gen < best:
        gen_text = f"Gen{gen} of {best}" + (" (load)" if gen_under_load is not None else "")
    else:
        gen_text = f"Gen{gen}" + (" (load)" if gen_under_load is not None else "")
    return LinkVerdict(state, why, width_text, gen_text)


def hop_link(hop: PcieHop, parent: PcieHop | None) -> PcieLink:
    """The link above a bridge ``hop`` (a switch's upstream port), its slot being the ``parent`` port's maximum."""
    return PcieLink(
        gen_current=hop.gen_current,
        gen_max=hop.gen_max,
        width_current=hop.width_current,
        width_max=hop.width_max,
        slot_gen_max=parent.gen_max if parent is not None else None,
        slot_width_max=parent.width_max if parent is not None else None,
    )
