"""Benchmark (issue 12): what a converged host costs, and what a fleet costs against one host, on real Debian 12
hosts (the integration harness: systemd-nspawn, SSH, host keys checked), all in one run.

Each host is a CPU-only machine (an XPS 13's recorded sysfs, no NVIDIA GPU) that installs a real PyTorch CPU build
and JAX from a wheelhouse on the host. After a first provision of every host, the suite measures, interleaved
round by round so that drift on the machine hits every figure alike, the median of ``--rounds`` runs of:

* ``dlsetup facts``, ``dlsetup verify`` and a no-op ``dlsetup provision --yes --no-verify`` of 1 host and of all
  (a converged host: the probe finds nothing to do and no role runs);
* a forced full re-run of 1 host (``--full``: every role runs, as bare ``ansible-playbook`` runs them);
* the same playbook (``site.yml`` with the plan dlsetup passed, read back from its run directory) through bare
  ``ansible-playbook``, tuned (dlsetup's Ansible environment: pipelining, ControlPersist) and untuned;
* and, once, the first provision of a CPU-only host.

It reports ratios against targets, never absolute times as a verdict, and writes them to ``--out`` (default
``docs/benchmarks.md``). Timings on a shared 2-core machine are noisy: nothing here fails on a missed target.
Needs what the integration layer needs (root, mmdebstrap, systemd-container):

    sudo .venv/bin/python benchmarks/bench_converge.py [--hosts 8] [--rounds 3] [--out docs/benchmarks.md]

``.ci/run`` runs it with ``--hosts 1 --rounds 1`` (that it still runs, not how fast).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "integration"))

import fakegpu  # noqa: E402
import harness as h  # noqa: E402
from provisioning import cpu_wheelhouse, install_wheelhouse  # noqa: E402

from dlsetup import paths  # noqa: E402

UNTUNED = {"ANSIBLE_PIPELINING": "False", "ANSIBLE_SSH_ARGS": "-o ControlMaster=no"}


@dataclass(frozen=True)
class Target:
    """A ratio the issue sets a target for: ``numerator / denominator`` at most ``at_most``."""

    name: str
    numerator: str
    denominator: str
    at_most: float
    why: str


TARGETS = (
    Target("no-op re-run / facts (1 host)", "provision_noop_1", "facts_1", 2.0,
           "a converged host costs about one fact-gathering round trip"),
    Target("verify / facts (1 host)", "verify_1", "facts_1", 1.5, "verify reads what facts read, and checks it"),
    Target("facts: all hosts / 1 host", "facts_n", "facts_1", 2.0, "a fleet costs about what one host costs"),
    Target("verify: all hosts / 1 host", "verify_n", "verify_1", 2.0, "a fleet costs about what one host costs"),
    Target("no-op re-run: all hosts / 1 host", "provision_noop_n", "provision_noop_1", 2.0,
           "a fleet costs about what one host costs"),
    Target("forced full re-run (--full) / bare tuned ansible-playbook", "provision_full_1",
           "ansible_tuned_1", 1.1, "dlsetup's own overhead over the playbook it runs"),
)  # fmt: skip
INFORMATIVE = (
    ("bare ansible-playbook: untuned / tuned", "ansible_untuned_1", "ansible_tuned_1"),
    ("no-op re-run / forced full re-run (what the converged-state probe saves)", "provision_noop_1",
     "provision_full_1"),
    ("verify of all hosts: dlsetup verify / the standalone suite, which reads and probes each host in turn (what "
     "verify.yml's background probes and the suite's no calls save)", "verify_n", "suite_standalone_n"),
)  # fmt: skip


class Bench:
    """The hosts, their inventory and a state directory of the suite's own; every command timed as a process."""

    def __init__(self, harness: h.Harness, count: int) -> None:
        self.harness = harness
        self.state = harness.run_dir / "bench-state"
        self.names = [f"bench{n}" for n in range(1, count + 1)]
        wheelhouse = cpu_wheelhouse()
        if wheelhouse is None:
            raise SystemExit("cannot run: no CPU PyTorch wheel on this machine (see tests/integration/provisioning.py)")
        self.hosts = harness.boot([h.HostSpec(name, "bookworm") for name in self.names])
        host_vars = {
            host.name: {**fakegpu.install(host, sysfs="xps13-9370"), **install_wheelhouse(host, wheelhouse),
                        "dlsetup_expect": {"gpu_count": 0}}
            for host in self.hosts
        }  # fmt: skip
        self.inventory = self.hosts.write_inventory(harness.run_dir / "bench.yml", host_vars=host_vars)

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        return {**os.environ, "DLSETUP_STATE_DIR": str(self.state), **(extra or {})}

    def run(self, argv: Sequence[str], env: dict[str, str] | None = None, ok: Sequence[int] = (0,)) -> float:
        start = time.perf_counter()
        done = subprocess.run(list(argv), env=env or self.env(), capture_output=True, text=True, check=False)
        elapsed = time.perf_counter() - start
        if done.returncode not in ok:
            raise SystemExit(
                f"{' '.join(argv[:6])} exited {done.returncode}: {done.stdout[-3000:]}{done.stderr[-2000:]}"
            )
        return elapsed

    def dlsetup(self, *args: str) -> Callable[[], float]:
        return lambda: self.run([sys.executable, "-m", "dlsetup", *args])

    def hosts_arg(self, everyone: bool) -> str:
        return ",".join(self.names) if everyone else self.names[0]

    def plans_file(self) -> Path:
        """The per-host plan inventory the last provision handed its playbook (its run directory keeps it)."""
        runs = sorted((self.state / "runs").glob("*-provision-*"), key=lambda p: p.stat().st_mtime)
        plans = runs[-1] / "inventory" / "dlsetup-plans.yml"
        copy = self.harness.run_dir / "bench-plans.yml"
        copy.write_text(plans.read_text())
        return copy

    def standalone_suite(self) -> Callable[[], float]:
        """The verification suite on its own (README), on every host: it reads and probes each host in turn."""
        env = {**self.env(), "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
        suite = paths.verify_suite_dir()
        argv = [sys.executable, "-m", "pytest", str(suite), "-c", str(suite / "pytest.ini"), "--rootdir", str(suite),
                "--hosts=ansible://all", f"--ansible-inventory={self.inventory}", "-q"]  # fmt: skip
        return lambda: self.run(argv, env=env)

    def ansible_playbook(self, plans: Path, extra_env: dict[str, str]) -> Callable[[], float]:
        """site.yml through bare ansible-playbook, with dlsetup's plan as the same host variables."""
        env = {**os.environ, **paths.ansible_env(), **extra_env}
        argv = [str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(self.inventory), "-i", str(plans),
                "--limit", self.names[0], str(paths.playbook("site.yml"))]  # fmt: skip
        return lambda: self.run(argv, env=env)


def measure(bench: Bench, rounds: int) -> tuple[dict[str, list[float]], float]:
    provision = ("provision", "-i", str(bench.inventory), "--yes")
    everyone = bench.hosts_arg(True)
    # the other hosts first (their time is not a figure: it converges them), then the first provision of one
    # CPU-only host, the run whose plan bare ansible-playbook is given
    if len(bench.names) > 1:
        bench.dlsetup(*provision, "--no-verify", ",".join(bench.names[1:]))()
    first = bench.dlsetup(*provision, "--no-verify", bench.names[0])()
    plans = bench.plans_file()
    figures: dict[str, Callable[[], float]] = {
        "facts_1": bench.dlsetup("facts", "-i", str(bench.inventory), bench.names[0]),
        "facts_n": bench.dlsetup("facts", "-i", str(bench.inventory), everyone),
        "verify_1": bench.dlsetup("verify", "-i", str(bench.inventory), bench.names[0]),
        "verify_n": bench.dlsetup("verify", "-i", str(bench.inventory), everyone),
        "provision_noop_1": bench.dlsetup(*provision, "--no-verify", bench.names[0]),
        "provision_noop_n": bench.dlsetup(*provision, "--no-verify", everyone),
        "provision_full_1": bench.dlsetup(*provision, "--no-verify", "--full", bench.names[0]),
        "ansible_tuned_1": bench.ansible_playbook(plans, {}),
        "ansible_untuned_1": bench.ansible_playbook(plans, UNTUNED),
        "suite_standalone_n": bench.standalone_suite(),
    }
    times: dict[str, list[float]] = {name: [] for name in figures}
    for _ in range(rounds):  # interleaved: drift on the machine hits every figure alike
        for name, timed in figures.items():
            times[name].append(timed())
    return times, first


def report(times: dict[str, list[float]], first: float, hosts: int, rounds: int) -> dict[str, Any]:
    median = {name: statistics.median(values) for name, values in times.items()}
    ratios = [
        {"name": t.name, "ratio": round(median[t.numerator] / median[t.denominator], 2), "target": t.at_most,
         "met": median[t.numerator] / median[t.denominator] <= t.at_most, "why": t.why}
        for t in TARGETS
    ]  # fmt: skip
    informative = [{"name": n, "ratio": round(median[a] / median[b], 2)} for n, a, b in INFORMATIVE]
    return {
        "hosts": hosts,
        "rounds": rounds,
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "date": time.strftime("%Y-%m-%d"),
        "median_s": {name: round(value, 1) for name, value in median.items()},
        "first_provision_cpu_only_s": round(first, 1),
        "ratios": ratios,
        "informative": informative,
    }


INTRO = """\
# Benchmarks

Generated by `benchmarks/bench_converge.py` from one run of the suite; do not edit by hand. Real Debian 12 hosts
of the integration harness on this machine (systemd-nspawn, SSH with host keys checked), each a CPU-only host with
a real PyTorch CPU build and JAX from a wheelhouse on it: {hosts} host(s), the median of {rounds} interleaved
round(s), {cpus} CPU(s) shared by the controller and every host, {date}. The ratios are the result: the hosts
share the controller's CPUs, so absolute times say more about this machine than about dlsetup.

Levers (issue 12) in the code: the converged-state probe (one read-only module run by the facts step: the applied
plan's fingerprint, the planned packages' versions and holds, the managed files, the framework venv; where nothing
differs no role runs, `--full` runs them), justified by "no-op re-run / forced full re-run" below; SSH pipelining
and ControlPersist ("bare ansible-playbook: untuned / tuned"); forks sized to the inventory (one per host, at least
Ansible's 5: the "all hosts / 1 host" rows); verify's hosts in parallel: `verify.yml` starts the PyTorch and JAX
probes in the background on every host at once, reads the facts meanwhile and collects the probes in one call, so
that the suite makes no call to a host ("dlsetup verify / the standalone suite"). Not in the code: coarser tasks,
fact caching between the facts step and the playbook, and Mitogen (not tried).
"""


def markdown(result: dict[str, Any]) -> str:
    lines = [INTRO.format(**result), "| ratio | value | target | met |", "|---|---|---|---|"]
    for ratio in result["ratios"]:
        met = "yes" if ratio["met"] else "**no**"
        lines.append(f"| {ratio['name']} ({ratio['why']}) | {ratio['ratio']} | at most {ratio['target']} | {met} |")
    lines += ["", "| also measured | value |", "|---|---|"]
    lines += [f"| {r['name']} | {r['ratio']} |" for r in result["informative"]]
    lines += ["", "Medians, in seconds, to read the ratios by:", "", "| figure | median s |", "|---|---|"]
    lines += [f"| `{name}` | {value} |" for name, value in result["median_s"].items()]
    lines += [f"| first provision of a CPU-only host | {result['first_provision_cpu_only_s']} |", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks.md")
    args = parser.parse_args()
    reason = h.missing_prerequisites()
    if reason:
        raise SystemExit(f"cannot run: {reason}")
    harness = h.Harness()
    try:
        bench = Bench(harness, args.hosts)
        times, first = measure(bench, args.rounds)
    finally:
        harness.close()
    result = report(times, first, args.hosts, args.rounds)
    args.out.write_text(markdown(result))
    print(json.dumps(result, indent=1))
    missed = [r["name"] for r in result["ratios"] if not r["met"]]
    print(f"wrote {args.out}; targets missed: {', '.join(missed) if missed else 'none'}")


if __name__ == "__main__":
    main()
