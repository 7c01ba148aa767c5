"""The source tags of the data (docs/sources.md) as addresses a user can open: a plan's ``--explain`` and its JSON
name pages, never a tag or a file that is not shipped.

``[URL host/path]`` is ``https://host/path``; ``pytorch#N`` and ``owner/repo#N`` are GitHub issues; ``[MIRROR
owner/repo@sha path]`` a file of a repository at a commit; ``[PYPI]`` and ``[PYPI-WHL]`` torch's wheels (their
metadata and files, on PyTorch's index too);
``[DEB-...]`` the Debian package that was read; ``[DEV]`` a measurement on an H200 machine (its raw output is in
the project's test fixtures, which are not installed: the text says what was measured instead).
"""

from __future__ import annotations

import re

_DEBIAN = {
    "DEB-JSON": "https://packages.debian.org/trixie/nvidia-driver",
    "DEB-README": "https://packages.debian.org/trixie/nvidia-driver",
    "DEB-DETECT12": "https://packages.debian.org/bookworm/nvidia-detect",
    "DEB-DETECT13": "https://packages.debian.org/trixie/nvidia-detect",
    "DEB-PCIIDS": "https://pci-ids.ucw.cz",
    "DEB-SMI": "https://packages.debian.org/search?keywords=nvidia-smi",
    "DEB-POLICY": "https://packages.debian.org/search?keywords=nvidia-driver",
}
_TAG = re.compile(r"\[(?P<kind>URL|MIRROR|PYPI-WHL|PYPI|DEV|DEB-[A-Z]+[0-9]*)(?: (?P<what>[^]]*))?\]")
_ISSUE = re.compile(r"(?<![\w/.])(?P<repo>[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+|pytorch)#(?P<number>\d+)")


def _tag(match: re.Match[str]) -> str:
    kind, what = match["kind"], (match["what"] or "").strip()
    if kind == "URL":
        return _url(what)
    if kind == "MIRROR":
        repo_at, _, path = what.partition(" ")
        repo, _, commit = repo_at.partition("@")
        return f"https://github.com/{repo}/blob/{commit}/{path}" if path else f"https://github.com/{repo}/tree/{commit}"
    if kind in ("PYPI", "PYPI-WHL"):  # the metadata and files of torch's wheels, also on PyTorch's own index
        return "torch's wheels (https://download.pytorch.org/whl/torch/)"
    if kind == "DEV":
        return "measured on an NVIDIA H200 (Ubuntu 24.04, driver 580.159.04):"
    for prefix, address in _DEBIAN.items():
        if kind.startswith(prefix):
            return address
    return match.group(0)


_HOST_PATH = re.compile(r"^[a-z0-9-]+(\.[a-z0-9-]+)+(/\S*)?$")


def _url(what: str) -> str:
    """``host/path``, or a list of issues (``pytorch#1, #2; dev-discuss 3128``), as addresses."""
    parts, repo = [], "pytorch/pytorch"
    for part in re.split(r"\s*[,;]\s*", what):
        head, _, rest = part.partition(" ")
        issue = re.fullmatch(r"(?:(?P<repo>[\w.-]+/[\w.-]+|pytorch))?#(?P<number>\d+)", head)
        if issue:
            repo = {"pytorch": "pytorch/pytorch", None: repo}.get(issue["repo"], issue["repo"])
            parts.append(f"https://github.com/{repo}/issues/{issue['number']}" + (f" {rest}" if rest else ""))
        elif head == "dev-discuss" and rest.isdigit():
            parts.append(f"https://dev-discuss.pytorch.org/t/{rest}")
        elif _HOST_PATH.match(part):
            parts.append(f"https://{part}")
        else:
            parts.append(part)
    return ", ".join(parts)


def _issue(match: re.Match[str]) -> str:
    repo = "pytorch/pytorch" if match["repo"] == "pytorch" else match["repo"]
    return f"https://github.com/{repo}/issues/{match['number']}"


def openable(source: str) -> str:
    """``source`` with every tag replaced by its address (text around the tags is kept)."""
    return _ISSUE.sub(_issue, _TAG.sub(_tag, source)) if source else source
