"""The host command lines that README.md and docs/ show for this machine (`dlsetup facts localhost`, the quick
start's `dlsetup provision localhost --check`, ...) run as shown, for real: Ansible against localhost, with a
recorded two-GTX-1080-Ti rig in place of this machine's hardware (the sysfs tree of tests/fixtures/sysfs, its
/proc/driver/nvidia, and the fake nvidia-smi replaying the rig's capture). What a line may exit with is what the
exit-code table gives its command: a check that fails (6), a drift (9), a source this machine cannot reach (8)."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
FIXTURES = REPO / "tests" / "fixtures"
HOST_COMMANDS = ("facts", "plan", "verify", "diff", "provision", "report")
# a dlsetup command line naming localhost, in a code span or a code block, also as ~/.dlsetup/bin/dlsetup
_LINE = re.compile(rf"(?:^|[`\s/])dlsetup ((?:{'|'.join(HOST_COMMANDS)}) localhost\b[^`\n]*)", re.MULTILINE)
# what each command may exit with here (README "Exit codes"); anything else is a doc that no longer runs
EXITS = {"facts": {0}, "plan": {0, 4}, "verify": {0, 6}, "diff": {0, 9}, "provision": {0, 8}, "report": {0}}


def _lines() -> list[tuple[str, str]]:
    found = {
        (str(doc.relative_to(REPO)), match.group(1).split(" #", 1)[0].split("&&", 1)[0].strip())
        for doc in DOCS
        for match in _LINE.finditer(doc.read_text())
    }
    return sorted(found)


def test_the_docs_show_host_commands_for_this_machine() -> None:
    commands = {line.split()[0] for _, line in _lines()}
    assert commands == set(HOST_COMMANDS), commands  # the pattern still finds one of each


@pytest.fixture
def rig(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """An inventory naming localhost with the rig's fake hardware, and the environment the fakes need."""
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(
        "all:\n  hosts:\n    localhost:\n"
        "      ansible_connection: local\n"
        f"      ansible_python_interpreter: {sys.executable}\n"
        f"      hw_facts_sysfs_root: {FIXTURES}/sysfs/2x1080ti-rig\n"
        f"      hw_facts_nvidia_proc_dir: {FIXTURES}/nvidia-proc/410.78-proprietary\n"
        f"      hw_facts_pci_ids_path: {FIXTURES}/pci.ids/pci.ids.excerpt\n"
    )
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "nvidia-smi").symlink_to(REPO / "tests" / "fakes" / "nvidia-smi")
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{Path(sys.executable).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "DLSETUP_FAKE_SMI_DIR": str(FIXTURES / "nvidia-smi-scenarios" / "2x1080ti"),
        "DLSETUP_STATE_DIR": str(tmp_path / "state"),
        "COLUMNS": "200",
    }
    return inventory, env


@pytest.mark.parametrize(("doc", "line"), _lines(), ids=lambda v: v[:50])
def test_the_host_command_lines_run_as_shown(doc: str, line: str, rig: tuple[Path, dict[str, str]]) -> None:
    inventory, env = rig
    args = shlex.split(line)
    # in the test's directory: a line that writes a file (report -o report.html) writes it there
    done = subprocess.run(
        [sys.executable, "-m", "dlsetup", *args, "-i", str(inventory)],
        capture_output=True, text=True, env=env, timeout=900, check=False, cwd=inventory.parent,
    )  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode in EXITS[args[0]], f"{doc}: `dlsetup {line}` exited {done.returncode}: {output[-1500:]}"
    assert "Traceback" not in output
    if done.returncode in (0, 6, 9):
        # the command read the rig, not this machine (which has no NVIDIA GPU)
        assert "GTX 1080 Ti" in output or args[0] == "diff", output[-1500:]
        if args[0] == "report":
            assert "GTX 1080 Ti" in (inventory.parent / args[args.index("-o") + 1]).read_text()
    else:
        # exit 4 or 8: one line saying why, and for a provision that nothing was changed
        first = done.stderr.strip().splitlines()[0]
        assert first.startswith("error: "), first
        assert args[0] != "provision" or first.endswith("nothing was changed"), first
