"""Benchmark: `dlsetup facts` over SSH with dlsetup's connection tuning (pipelining + ControlPersist)
against a baseline without it, in the same run, on the same real Debian host (systemd-nspawn).

Reports the median wall time of each and their ratio (baseline / tuned); nothing is asserted.
Needs what the integration layer needs (root, mmdebstrap, systemd-container):

    sudo .venv/bin/python benchmarks/bench_ssh_tuning.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "integration"))

import harness as h  # noqa: E402

from dlsetup import paths  # noqa: E402
from dlsetup.commands import load_targets  # noqa: E402
from dlsetup.config.targets import HostArgs  # noqa: E402
from dlsetup.facts import gather  # noqa: E402

UNTUNED = {"ANSIBLE_PIPELINING": "False", "ANSIBLE_SSH_ARGS": "-o ControlMaster=no"}


def timed_facts(targets: object, env_override: dict[str, str]) -> float:
    original: Callable[[], dict[str, str]] = paths.ansible_env

    def patched() -> dict[str, str]:
        env = original()
        env.update(env_override)
        return env

    paths.ansible_env = patched  # type: ignore[assignment]
    try:
        start = time.perf_counter()
        result = gather.gather(targets)  # type: ignore[arg-type]
        elapsed = time.perf_counter() - start
    finally:
        paths.ansible_env = original  # type: ignore[assignment]
    if result.errors:
        raise SystemExit(f"facts failed: {result.errors}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    reason = h.missing_prerequisites()
    if reason:
        raise SystemExit(f"cannot run: {reason}")
    bench = h.Harness()
    try:
        hosts = bench.boot([h.HostSpec("bench12", "bookworm")])
        inventory = hosts.write_inventory(bench.run_dir / "bench.yml")
        targets = load_targets(HostArgs(("bench12",), inventory))
        timed_facts(targets, {})  # warm-up: first connection, interpreter discovery caches
        tuned: list[float] = []
        baseline: list[float] = []
        for _ in range(args.rounds):  # interleaved, so drift on the machine hits both equally
            baseline.append(timed_facts(targets, UNTUNED))
            tuned.append(timed_facts(targets, {}))
    finally:
        bench.close()
    report = {
        "benchmark": "dlsetup facts over SSH, 1 host",
        "rounds": args.rounds,
        "baseline_untuned_median_s": round(statistics.median(baseline), 3),
        "dlsetup_tuned_median_s": round(statistics.median(tuned), 3),
        "ratio_baseline_over_tuned": round(statistics.median(baseline) / statistics.median(tuned), 2),
    }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
