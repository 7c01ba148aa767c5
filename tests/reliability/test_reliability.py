"""The reliability suite (issue 10): every case of cases.py run through the real CLI against one real Debian 12 host.

Each case gets a directory of its own (its inputs, its ``DLSETUP_STATE_DIR``, its ``TMPDIR``) and asserts:

* the exit code of every run of it;
* its cause: stderr is at most two lines and they match the case's regular expression (for a failure);
* the host unchanged: the checksums of everything under ``/etc`` and ``/opt`` (read through the host's root) and
  dpkg's selections and package states, taken before the case's setup and after its run;
* nothing left behind: no process of the run (ansible-playbook, its workers, the verify suite's pytest) alive
  once dlsetup has exited, and its ``TMPDIR`` empty (no ``.ansible-runner-*`` or other leftovers);
* what the case's ``check`` adds (no secret in the run directory, rotation, sizes).

docs/reliability.md is the table rendered (``python -m tests.reliability.render``).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import suppress
from pathlib import Path

import pytest
from cases import CASES, Case, Context, Outcome
from hoststate import TIMINGS, Rig, differences, host_state, processes_of

pytestmark = pytest.mark.integration

LEFTOVER_GRACE_S = 15.0
PHASE_TIMEOUT_S = 120.0


def _params() -> list[object]:
    return [
        pytest.param(c, id=c.id, marks=[pytest.mark.xfail(strict=True, reason=c.xfail)] if c.xfail else [])
        for c in CASES
    ]


@pytest.fixture(scope="module")
def work(rig: Rig) -> Iterator[Path]:
    """The suite's directory, inside the harness's run dir (removed with it); the working inventory in it."""
    path = rig.harness.run_dir / "reliability"
    path.mkdir()
    rig.harness.write_inventory(path / "hosts.yml", hosts=[rig.host], host_vars={rig.host.name: rig.fakes})
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _command(case: Case, ctx: Context) -> list[str]:
    return [sys.executable, "-m", "dlsetup", *(arg.format(**ctx.values) for arg in case.argv)]


def _start(case: Case, ctx: Context, number: int) -> tuple[subprocess.Popen[bytes], Path, Path]:
    """dlsetup in a session of its own (as a shell's job), its output into files, ``case.stdin`` piped in."""
    out, err = ctx.tmp / f"stdout.{number}", ctx.tmp / f"stderr.{number}"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        proc = subprocess.Popen(
            _command(case, ctx),
            stdin=subprocess.PIPE if case.stdin is not None else subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            env=ctx.env,
            cwd=ctx.tmp,
            start_new_session=True,
        )
    if proc.stdin is not None:
        with suppress(BrokenPipeError):
            proc.stdin.write((case.stdin or "").encode())
        proc.stdin.close()
    return proc, out, err


def _finish(case: Case, procs: Sequence[tuple[subprocess.Popen[bytes], Path, Path]], start: float) -> list[Outcome]:
    outcomes = []
    for proc, out, err in procs:
        try:
            code = proc.wait(timeout=max(1.0, case.timeout_s - (time.monotonic() - start)))
        except subprocess.TimeoutExpired:
            for other, _, _ in procs:
                with suppress(ProcessLookupError):
                    os.killpg(other.pid, signal.SIGKILL)
            pytest.fail(f"dlsetup did not end within {case.timeout_s:.0f} s (it hangs)")
        outcomes.append(Outcome(code, out.read_text(errors="replace"), err.read_text(errors="replace"),
                                time.monotonic() - start))  # fmt: skip
    return outcomes


def _phase_started(ctx: Context, phase: str, child: str) -> bool:
    runs = Path(ctx.env["DLSETUP_STATE_DIR"]) / "runs"
    if not runs.is_dir() or not any(f"-{phase}-" in p.name for p in runs.iterdir()):
        return False
    return any(child in cmdline for cmdline in processes_of(Path(ctx.env["DLSETUP_STATE_DIR"])).values())


def _interrupted(case: Case, ctx: Context) -> Outcome:
    assert case.interrupt is not None
    start = time.monotonic()
    proc, out, err = _start(case, ctx, 0)
    deadline = start + PHASE_TIMEOUT_S
    while not _phase_started(ctx, case.interrupt.phase, case.interrupt.child):
        if proc.poll() is not None:
            pytest.fail(f"dlsetup ended (rc {proc.returncode}) before its {case.interrupt.phase} phase: "
                        f"{out.read_text()[-2000:]}{err.read_text()[-2000:]}")  # fmt: skip
        if time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail(f"no {case.interrupt.child} of a {case.interrupt.phase} run after {PHASE_TIMEOUT_S:.0f} s")
        time.sleep(0.1)
    if case.interrupt.group:
        os.killpg(proc.pid, case.interrupt.signum)  # Ctrl-C: the terminal signals the foreground process group
    else:
        os.kill(proc.pid, case.interrupt.signum)
    return _finish(case, [(proc, out, err)], start)[0]


def _drive(case: Case, ctx: Context) -> list[Outcome]:
    if case.interrupt is not None:
        return [_interrupted(case, ctx)]
    start = time.monotonic()
    return _finish(case, [_start(case, ctx, n) for n in range(case.parallel)], start)


def _leftovers(state_dir: Path, grace_s: float = LEFTOVER_GRACE_S) -> dict[int, str]:
    """The run's processes still alive a grace period after dlsetup ended; killed, and returned."""
    deadline = time.monotonic() + grace_s
    while (left := processes_of(state_dir)) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in left:
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return left


def _show(outcome: Outcome) -> str:
    return f"exit {outcome.code}\n--- stderr\n{outcome.stderr[-3000:]}\n--- stdout\n{outcome.stdout[-3000:]}"


@pytest.mark.parametrize("case", _params())
def test_case(case: Case, rig: Rig, work: Path) -> None:
    directory = work / case.id
    directory.mkdir()
    (directory / "tmp").mkdir()
    state = directory / "state"
    env = dict(os.environ, DLSETUP_STATE_DIR=str(state), TMPDIR=str(directory / "tmp"), COLUMNS="200")
    ctx = Context(directory, state, env, rig.host.name, rig.host.address, dict(rig.host_vars), rig.ssh_common_args)
    ctx.values.update(inv=str(work / "hosts.yml"), host=rig.host.name, addr=rig.host.address, tmp=str(directory),
                      state=str(state))  # fmt: skip
    before = host_state(rig.host)
    start = time.monotonic()
    ended = False
    try:
        if case.setup is not None:
            case.setup(ctx)
        outcomes = _drive(case, ctx)
        left = _leftovers(Path(ctx.env["DLSETUP_STATE_DIR"]))
        ended = True
        for outcome in outcomes:
            assert outcome.code == case.expect_code, _show(outcome)
            if case.cause is not None:
                lines = [line for line in outcome.stderr.splitlines() if line.strip()]
                assert 1 <= len(lines) <= 2, f"the cause is not one or two lines:\n{_show(outcome)}"
                assert re.search(case.cause, "\n".join(lines), re.MULTILINE), _show(outcome)
        assert not left, f"processes of the run left behind: {left}"
        leftover_files = sorted(p.name for p in (directory / "tmp").iterdir())
        assert not leftover_files, f"left in TMPDIR: {leftover_files}"
        if case.check is not None:
            case.check(ctx, outcomes)
    finally:
        if not ended:  # a case that failed or timed out before its run ended: end what it started
            _leftovers(Path(ctx.env["DLSETUP_STATE_DIR"]), grace_s=0)
        for cleanup in reversed(ctx.cleanups):
            cleanup()
        TIMINGS.append((case.id, time.monotonic() - start))
    assert differences(before, host_state(rig.host)) == []
