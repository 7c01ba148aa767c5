"""The docs cannot drift from the code: every `dlsetup` command line shown in README.md and docs/ names only
options its command has, every dlsetup option named in their prose exists, the lines that need no host run as
shown, and the README's exit-code table is the one `dlsetup --help` prints."""

from __future__ import annotations

import re
import shlex
from functools import cache
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dlsetup.cli import app
from dlsetup.errors import EXIT_CODES

REPO = Path(__file__).resolve().parents[2]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
COMMANDS = ("facts", "plan", "verify", "provision", "diff", "init", "gpus", "report")
_COMMAND_NAMES = "|".join(COMMANDS)
# a dlsetup command line in a code span, or a line of a code block
_LINE = re.compile(rf"(?:`|^\s*(?:\$ )?)(dlsetup (?:{_COMMAND_NAMES})\b[^`\n]*)", re.MULTILINE)
_OPTION = re.compile(r"(?<![\w-])(--[a-z][a-z0-9-]*|-[a-zA-Z](?=[\s\]=]|$))")
# options the docs name in code spans that belong to other tools (apt, pip, nvidia-smi, pytest, ssh, the data
# tools), or that the reliability table shows because dlsetup does not have them
FOREIGN = {"--fetch", "--allow-downgrades", "--no-index", "--query-gpu", "--ssh-config", "-o", "--frobnicate"}


def _command_lines() -> list[tuple[str, str]]:
    return [
        (str(doc.relative_to(REPO)), match.group(1).strip())
        for doc in DOCS
        for match in _LINE.finditer(doc.read_text())
    ]


@cache
def _help(command: str | None = None) -> str:
    args = [command, "--help"] if command else ["--help"]
    result = CliRunner().invoke(app, args, env={"COLUMNS": "400", "NO_COLOR": "1"})
    assert result.exit_code == 0, result.output
    return result.output


def _has(option: str, text: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", text) is not None


def _without_comment(line: str) -> str:
    return line.split(" #", maxsplit=1)[0]


def test_the_docs_show_command_lines() -> None:
    assert len(_command_lines()) > 30  # the pattern still finds them


@pytest.mark.parametrize(("doc", "line"), _command_lines(), ids=lambda v: v[:60])
def test_every_option_a_command_line_names_exists(doc: str, line: str) -> None:
    command = line.split()[1]
    missing = sorted({o for o in _OPTION.findall(_without_comment(line)) if not _has(o, _help(command))})
    assert not missing, f"{doc}: `{line}` names {missing}, which `dlsetup {command} --help` does not have"


def test_every_option_the_prose_names_exists() -> None:
    """A code span that opens with an option (`--skip-tags role::dl_stack`) names one of dlsetup's; a span that
    opens with another program (`gpg --import`) is that program's."""
    everything = " ".join(_help(c) for c in COMMANDS) + _help()
    missing = sorted(
        f"{doc.relative_to(REPO)}: `{span}`"
        for doc in DOCS
        for span in re.findall(r"`(-[^`\n]+)`", doc.read_text())
        if (option := _OPTION.match(span)) and option.group(1) not in FOREIGN and not _has(option.group(1), everything)
    )
    assert not missing, f"options the docs name that no dlsetup command has: {missing}"


def _normalised(text: str) -> str:
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", text).split())


def test_help_lists_every_exit_code() -> None:
    text = _normalised(_help())
    for code, meaning in EXIT_CODES:
        assert _normalised(f"{code} {meaning}") in text, (code, meaning)


def test_the_readme_exit_code_table_is_the_one_the_code_has() -> None:
    section = (REPO / "README.md").read_text().split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    rows = [tuple(c.strip() for c in line.strip("|").split("|")) for line in section.splitlines()
            if line.startswith("| ")]  # fmt: skip
    assert rows[1:] == list(EXIT_CODES)  # the header row, then the table of dlsetup.errors


RUNNABLE = ("dlsetup plan --os", "dlsetup plan --cpu", "dlsetup gpus")


@pytest.mark.parametrize(
    ("doc", "line"), [(d, c) for d, c in _command_lines() if c.startswith(RUNNABLE)], ids=lambda v: v[:60]
)
def test_the_command_lines_that_need_no_host_run(doc: str, line: str) -> None:
    """What a doc shows offline (a plan for parts, the GPU list) runs as shown: exit 0, or 4 for a build that no
    stack supports (which the doc then explains)."""
    args = shlex.split(_without_comment(line).replace("\\|", "|"))[1:]
    if any(a.startswith("[") or a.endswith("]") or a.endswith("...") or "|" in a for a in args):
        pytest.skip("a synopsis, not a command line")
    result = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    assert result.exit_code in (0, 4), f"{doc}: `{line}` exited {result.exit_code}: {result.output[-800:]}"
