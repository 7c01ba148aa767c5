"""Render docs/reliability.md from the table of cases.py: ``python -m tests.reliability.render`` writes it,
``--check`` exits 1 when the committed file differs (tests/unit/test_reliability_table.py checks the same)."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cases import AREAS, CASES, Case

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "reliability.md"

INTRO = """\
# Reliability: bad input, hostile input, faults

Generated from `tests/reliability/cases.py` by `python -m tests.reliability.render`; do not edit by hand (a unit
test, `tests/unit/test_reliability_table.py`, fails when this file is not the rendering of the table).

`tests/reliability/test_reliability.py` (marker `integration`, so `bash tests/run.sh` and CI run it) runs every
case below through the real CLI (`python -m dlsetup ...`, no terminal, `COLUMNS=200`) against one real Debian 12
host, `rel12`, booted once for the module with the integration layer's harness and dressed as a 2x GTX 1080 Ti rig
(recorded sysfs tree, the fake `nvidia-smi` replaying the real capture, the 410.78 driver's `/proc` files). Each
case has a directory of its own (its inputs, its `DLSETUP_STATE_DIR`, its `TMPDIR`) and asserts:

- **the exit code** of every run of it (README, *Exit codes*);
- **the cause**, for a failure: stderr is at most two lines, and they match the regular expression below (which
  names the thing that is wrong);
- **the host unchanged**, per case: the type, mode, owner and sha256 of every entry under `/etc` and `/opt` (read
  through the host's root on this machine), `dpkg --get-selections '*'` and every package's version and status,
  taken before the case's setup and after its run, must be equal;
- **nothing left behind**: no process of the run (ansible-playbook and its workers, `ansible-inventory`, the verify
  suite's pytest and testinfra's ansible: every process carrying the case's `DLSETUP_STATE_DIR`, SSH control
  masters excepted) alive 15 s after dlsetup exited, and the run's `TMPDIR` empty (no `.ansible-runner-*`);
- what the case adds: no run directory made (the input is refused before anything runs), no secret in any file
  of the state directory, rotation that keeps at most 30 run directories and never one a live run holds, the
  size of what a run leaves.

How faults are made: **host keys** by an inventory whose `ansible_ssh_common_args` name another `known_hosts` (a
key that is not the host's, an empty file, no file); **signals** by starting dlsetup in a session of its own and,
once a run directory of the phase is there and its child (ansible-playbook, or the verify suite's pytest) runs,
sending SIGINT to its process group (as a terminal's Ctrl-C does) or SIGTERM to dlsetup alone (as `kill` and
systemd do), only in phases that change nothing on the host; **concurrency** by two runs started at once on one
state directory; **a full disk** by a 64 KiB tmpfs mounted as the state directory and filled (blocks; or its
inodes), unmounted after the case; **scale** by a generated 10 MB YAML inventory.

A case marked *fixed* failed before the fix it now guards: the column names the product bug it found. A case
marked *xfail* would show a product bug that is not fixed yet: it runs as `xfail(strict=True)`, so the suite fails
once the bug is fixed, and the mark becomes *fixed* then.

Measured on a 2-core VM (the CI class): the whole suite, host boot and teardown included, takes about {minutes}
minutes. The 10 MB inventory (100,000 hosts) takes {big_s} of them, for one `dlsetup facts` of one host in it
(480 s before dlsetup read inventories through Ansible's API, asking only for the selected hosts): Ansible still
parses the whole file, once to select the hosts and once in the playbook run, so that time grows with the file;
what dlsetup reads, keeps and writes grows with the hosts selected (the state directory holds {big_state} after
it, and the run's `TMPDIR` stays empty). Every other case takes 0.4-12 s.
"""
# measured (tests/reliability, 2-core VM); update when the suite's run time moves
MEASURED = {"minutes": "4", "big_s": "about 75 s", "big_state": "27 KB"}


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _row(case: Case) -> str:
    cause = f"`{_cell(case.cause)}`" if case.cause is not None else "(succeeds)"
    status = f"xfail: {_cell(case.xfail)}" if case.xfail else "passes"
    if case.fixed and not case.xfail:
        status += f"; fixed: {_cell(case.fixed)}"
    return f"| {case.id} | {case.area} | {_cell(case.what)} | {case.expect_code} | {cause} | {status} |"


def render() -> str:
    """docs/reliability.md: the intro, the number of cases per area, the table in the order of :data:`AREAS`."""
    counts = Counter(c.area for c in CASES)
    unknown = set(counts) - set(AREAS)
    if unknown:
        raise ValueError(f"cases with an area not in AREAS: {sorted(unknown)}")
    lines = [INTRO.format(**MEASURED)]
    xfails, fixed = sum(1 for c in CASES if c.xfail), sum(1 for c in CASES if c.fixed and not c.xfail)
    lines.append(f"## Cases ({len(CASES)}: {fixed} of them found a bug that is now fixed, {xfails} xfail)\n")
    lines.append("| area | cases |\n|---|---|")
    lines += [f"| {area} | {counts[area]} |" for area in AREAS if counts[area]]
    lines.append("")
    lines.append("| id | area | input or fault | exit code | cause (first two stderr lines match) | now |")
    lines.append("|---|---|---|---|---|---|")
    for area in AREAS:
        lines += [_row(c) for c in CASES if c.area == area]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if not DOC.exists() or DOC.read_text() != text:
            print(f"{DOC} is not the rendering of tests/reliability/cases.py: run python -m tests.reliability.render")
            return 1
        return 0
    DOC.write_text(text)
    print(f"wrote {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
