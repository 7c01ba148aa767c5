"""What an installed dlsetup needs at run time ships in its wheel: the Ansible content (the module's module_utils
package included, through its symlink), the compatibility data, the verify suite and the documentation that plans
and messages point to."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

REQUIRED = (
    "dlsetup/_data/playbooks/site.yml",
    "dlsetup/_data/playbooks/facts.yml",
    "dlsetup/_data/roles/hw_facts/library/dlsetup_hw_facts.py",
    "dlsetup/_data/roles/hw_facts/module_utils/dlsetup_hwparse/__init__.py",
    "dlsetup/_data/roles/hw_facts/module_utils/dlsetup_hwparse/collector.py",
    "dlsetup/_data/roles/base/tasks/install.yml",
    "dlsetup/_data/roles/base/tasks/state.yml",
    "dlsetup/_data/inventory/hosts.yml",
    "dlsetup/_data/docs/sources.md",
    "dlsetup/_data/docs/schemas/facts.schema.json",
    "dlsetup/facts/hwparse/collector.py",
    "dlsetup/facts/data/pcie_ports.yaml",
    "dlsetup/report/templates/report.html.j2",
    "dlsetup/plan/data/gpus.json",
    "dlsetup/plan/data/systems.yaml",
    "dlsetup/verify/suite/conftest.py",
    "dlsetup/verify/suite/pytest.ini",
    "dlsetup/py.typed",
)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp("wheel")
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(REPO)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert build.returncode == 0, build.stderr[-3000:]
    (path,) = out.glob("dlsetup-*.whl")
    return zipfile.ZipFile(path)


def test_the_wheel_carries_what_runs(wheel: zipfile.ZipFile) -> None:
    names = set(wheel.namelist())
    missing = [name for name in REQUIRED if name not in names]
    assert missing == []


def test_module_utils_in_the_wheel_is_the_package_itself(wheel: zipfile.ZipFile) -> None:
    for module in ("common", "nvidia_smi", "sysfs", "textfiles", "collector"):
        shipped = wheel.read(f"dlsetup/_data/roles/hw_facts/module_utils/dlsetup_hwparse/{module}.py")
        assert shipped == (REPO / "dlsetup" / "facts" / "hwparse" / f"{module}.py").read_bytes(), module
