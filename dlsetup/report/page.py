"""The HTML page: :mod:`.build`'s data through the Jinja2 template shipped in ``templates/`` (package data, so it is
in the wheel), autoescaped: a host name, a GPU name or a check message is text, never markup.

The page is self-contained: CSS in a ``<style>`` element, the drawings as inline SVG, no script, no external
address; its Content-Security-Policy (``default-src 'none'``) makes a browser refuse anything else.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

import jinja2

from dlsetup.report.build import HostPage
from dlsetup.report.links import LINK_STATES, STATE_TEXT

CONTENT_SECURITY_POLICY = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
TEMPLATE = "report.html.j2"


@dataclass(frozen=True)
class ReportPage:
    """The whole page: its hosts, when and by what it was made, and from what."""

    hosts: tuple[HostPage, ...]
    generated_at: str
    generator: str
    inputs: tuple[str, ...]

    @property
    def title(self) -> str:
        return "dlsetup report: " + ", ".join(h.name for h in self.hosts)


@cache
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("dlsetup.report", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def render(page: ReportPage) -> str:
    """The page as one HTML document."""
    template = _environment().get_template(TEMPLATE)
    return template.render(
        page=page,
        csp=CONTENT_SECURITY_POLICY,
        link_states=[(state, STATE_TEXT[state]) for state in LINK_STATES],
    )


def host_names(hosts: Sequence[HostPage]) -> list[str]:
    return [h.name for h in hosts]
