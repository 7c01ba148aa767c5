"""Run our Ansible modules for real: Ansible (through ansible-runner) against localhost, local connection.

``run_module(sysfs, scenario, **args)`` runs ``dlsetup_hw_facts`` with

* ``sysfs``: a tree name under ``tests/fixtures/sysfs/`` or a path, passed as ``sysfs_root``;
* ``scenario``: a scenario name under ``tests/fixtures/nvidia-smi-scenarios/`` or a path: the fake
  ``tests/fakes/nvidia-smi`` is put first on PATH and replays it; ``None`` puts no nvidia-smi there;
* ``**args``: more module arguments (``nvidia_proc_dir``, ``pci_ids_path``, ...). Unless given,
  ``nvidia_proc_dir`` points at an empty folder (never the real /proc/driver/nvidia of the test machine) and
  ``pci_ids_path`` at the pci.ids excerpt in tests/fixtures/pci.ids/. ``nvidia_proc`` is a shortcut naming a
  tree under ``tests/fixtures/nvidia-proc/``. ``check=True`` runs in check mode, ``module=`` another module.

It returns the module's result (``changed``, ``ansible_facts``, ...) plus ``fake_nvidia_smi_calls``: the calls
the fake received, each ``{"argv": [...], "rc": N}``. A failed or skipped module fails the test, except with
``expect_ok=False``.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ansible_runner
import pytest

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures"
SYSFS_TREES = FIXTURES / "sysfs"
SCENARIOS = FIXTURES / "nvidia-smi-scenarios"
NVIDIA_PROC = FIXTURES / "nvidia-proc"
PCI_IDS_EXCERPT = FIXTURES / "pci.ids" / "pci.ids.excerpt"
FAKE_NVIDIA_SMI = REPO / "tests" / "fakes" / "nvidia-smi"
LIBRARY = REPO / "roles" / "hw_facts" / "library"
MODULE_UTILS = REPO / "roles" / "hw_facts" / "module_utils"

RunModule = Callable[..., dict[str, Any]]


def _resolve(value: str | Path, base: Path) -> Path:
    path = Path(value)
    if not path.is_absolute() and not path.exists():
        path = base / path
    if not path.exists():
        raise FileNotFoundError(path)
    return path.resolve()


@pytest.fixture
def run_module(tmp_path: Path) -> RunModule:
    counter = iter(range(1000))

    def run(
        sysfs: str | Path,
        scenario: str | Path | None,
        *,
        check: bool = False,
        nvidia_proc: str | None = None,
        module: str = "dlsetup_hw_facts",
        expect_ok: bool = True,
        **args: Any,
    ) -> dict[str, Any]:
        work = tmp_path / f"run{next(counter)}"
        bin_dir = work / "bin"
        bin_dir.mkdir(parents=True)
        (work / "pd").mkdir()
        log = work / "fake-nvidia-smi.log"
        env = {
            "ANSIBLE_LIBRARY": str(LIBRARY),
            "ANSIBLE_MODULE_UTILS": str(MODULE_UTILS),
            "ANSIBLE_LOCAL_TEMP": str(work / "tmp"),
            "ANSIBLE_REMOTE_TEMP": str(work / "remote-tmp"),
            "ANSIBLE_NOCOLOR": "1",
            "DLSETUP_FAKE_SMI_LOG": str(log),
            # ansible itself must stay reachable: the fake comes first, then this interpreter's bin dir.
            "PATH": os.pathsep.join([str(bin_dir), str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
        }
        if scenario is not None:
            (bin_dir / "nvidia-smi").symlink_to(FAKE_NVIDIA_SMI)
            env["DLSETUP_FAKE_SMI_DIR"] = str(_resolve(scenario, SCENARIOS))
        module_args: dict[str, Any] = {"sysfs_root": str(_resolve(sysfs, SYSFS_TREES))}
        if nvidia_proc is not None:
            module_args["nvidia_proc_dir"] = str(_resolve(nvidia_proc, NVIDIA_PROC))
        else:
            empty = work / "no-nvidia-proc"
            empty.mkdir()
            module_args["nvidia_proc_dir"] = str(empty)
        module_args["pci_ids_path"] = str(PCI_IDS_EXCERPT)
        module_args.update({k: str(v) for k, v in args.items()})
        result = ansible_runner.run(
            private_data_dir=str(work / "pd"),
            host_pattern="localhost",
            module=module,
            module_args=" ".join(f"{k}={json.dumps(v)}" for k, v in module_args.items()),
            inventory=f"localhost ansible_connection=local ansible_python_interpreter={sys.executable}",
            envvars=env,
            cmdline="--check" if check else None,
            quiet=True,
        )
        res: dict[str, Any] | None = None
        outcome = None
        for event in result.events:
            if event.get("event") in ("runner_on_ok", "runner_on_failed", "runner_on_skipped"):
                outcome = event["event"]
                res = dict(event["event_data"].get("res") or {})
        if res is None:
            raise AssertionError(f"no module result from ansible-runner (status {result.status}, rc {result.rc})")
        if expect_ok and (outcome != "runner_on_ok" or res.get("failed") or res.get("skipped")):
            raise AssertionError(f"module did not succeed ({outcome}): {json.dumps(res)[:2000]}")
        calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
        res["fake_nvidia_smi_calls"] = calls
        return res

    return run
