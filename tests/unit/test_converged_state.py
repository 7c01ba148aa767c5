"""dlsetup.run.converged: what the probe reads, the fingerprint of a run, and the comparison that lets a re-run skip
its roles (the probe itself runs for real in tests/integration/test_converged.py)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import yaml

from dlsetup.run import converged

REPO = Path(__file__).resolve().parents[2]
_VAR = re.compile(r"^\{\{\s*(__\w+)\s*\}\}$")


def test_every_file_a_role_writes_is_probed() -> None:
    """Each ``dest:`` of a template/copy and each ``path:`` the roles remove is a probed file (by its role
    variable), or one the probe leaves out on purpose (the record and baseline, written after it; a venv's own
    files, read through the venv)."""
    probed = set(converged.managed_files())
    left_out = {"/etc/ansible/facts.d/dlsetup.fact", "/etc/ansible/facts.d/dlsetup_baseline.fact"}
    role_vars: dict[str, str] = {}
    for vars_file in (REPO / "roles").glob("*/vars/*.yml"):
        role_vars.update({k: v for k, v in (yaml.safe_load(vars_file.read_text()) or {}).items() if isinstance(v, str)})
    missing = []
    for tasks in sorted((REPO / "roles").glob("*/tasks/*.yml")):
        for task in yaml.safe_load(tasks.read_text()) or []:
            for module in ("ansible.builtin.template", "ansible.builtin.copy", "ansible.builtin.get_url"):
                dest = (task.get(module) or {}).get("dest")
                if dest is None:
                    continue
                name = _VAR.match(dest)
                path = role_vars.get(name.group(1), dest) if name else dest
                if "dl_stack" in str(tasks) or path in left_out:
                    continue
                if path not in probed:
                    missing.append(f"{tasks.relative_to(REPO)}: {task['name']}: {dest}")
    assert not missing, missing


def test_the_markers_of_pending_work_are_probed() -> None:
    assert set(converged.pending_markers()) == {
        "/var/lib/dlsetup/apt-update-pending",
        "/var/lib/dlsetup/reboot-required",
    }
    assert set(converged.pending_markers()) <= set(converged.managed_files())


def test_the_spec_names_the_planned_packages_without_versions_or_patterns() -> None:
    spec = converged.spec(
        {"nvidia_driver_packages": ["nvidia-driver=550.1", "nvidia-*"], "cuda_packages": ["cuda-toolkit-12-9"],
         "dl_stack_enabled": True},
        {"base_extra_packages": ["less"], "dl_stack_venv_path": "/srv/venv"},
    )  # fmt: skip
    assert {"nvidia-driver", "cuda-toolkit-12-9", "less", "pciutils"} <= set(spec["packages"])
    assert not [p for p in spec["packages"] if "*" in p or "=" in p]
    assert spec["venvs"] == ["/srv/venv"]
    assert converged.spec({"dl_stack_enabled": False}, {})["venvs"] == []


def _fingerprint(**changes: object) -> str:
    args: dict[str, object] = {
        "host_vars": {"cuda_enabled": True, "dlsetup_plan": {"driver": "580", "reboot_required": False}},
        "gpus": [{"pci_bus_id": "0000:05:00.0"}],
        "roles": [],
        "extravars": None,
        "inventory_vars": {"ansible_host": "10.0.0.2"},
    }
    args.update(changes)
    return converged.fingerprint(**args)  # type: ignore[arg-type]


def test_the_fingerprint_follows_what_the_run_is_asked() -> None:
    same = _fingerprint()
    assert _fingerprint() == same
    # a reboot the host still needs, or how it is reached, is not a different request
    assert (
        _fingerprint(host_vars={"cuda_enabled": True, "dlsetup_plan": {"driver": "580", "reboot_required": True}})
        == same
    )
    assert _fingerprint(inventory_vars={"ansible_host": "10.0.0.3"}) == same
    for changed in (
        {"host_vars": {"cuda_enabled": False, "dlsetup_plan": {"driver": "580"}}},
        {"gpus": [{"pci_bus_id": "0000:06:00.0"}]},
        {"roles": ["base"]},
        {"extravars": {"base_extra_packages": ["less"]}},
        {"inventory_vars": {"ansible_host": "10.0.0.2", "base_apt_lock_timeout": 5}},
    ):
        assert _fingerprint(**changed) != same, changed


PROBE = {
    "packages": {"pciutils": {"version": "1:3.9.0-4", "hold": False}},
    "files": {"/etc/apt/sources.list.d/dlsetup-debian.sources": "ab" * 32, "/var/lib/dlsetup/reboot-required": None},
    "venvs": {"/opt/dlsetup/venv": {"target": "/opt/dlsetup/venvs/x", "python_runs": True, "digest": "d"}},
}


def test_a_host_is_converged_only_when_fingerprint_and_probe_are_unchanged() -> None:
    recorded = {"fingerprint": "f", "spec": {}, "probe": PROBE}
    ok = converged.compare(recorded, "f", PROBE)
    assert ok.converged and ok.reason.startswith("converged: plan unchanged, 1 package(s), 2 file(s) and 1 venv(s)")
    assert not converged.compare(None, "f", PROBE).converged
    assert not converged.compare({"fingerprint": "f", "spec": {}}, "f", PROBE).converged  # a check run's record
    assert "changed since the last provision" in converged.compare(recorded, "g", PROBE).reason
    assert not converged.compare(recorded, "f", None).converged


def test_each_difference_is_named() -> None:
    recorded = {"fingerprint": "f", "probe": PROBE}
    cases = {
        "package pciutils (1:3.9.0-4 -> absent)": {"packages": {"pciutils": {"version": None, "hold": False}}},
        "package pciutils (now held)": {"packages": {"pciutils": {"version": "1:3.9.0-4", "hold": True}}},
        "file /etc/apt/sources.list.d/dlsetup-debian.sources (removed)": {
            "files": {**PROBE["files"], "/etc/apt/sources.list.d/dlsetup-debian.sources": None}
        },
        "venv /opt/dlsetup/venv (changed)": {
            "venvs": {"/opt/dlsetup/venv": {"target": "/opt/dlsetup/venvs/x", "python_runs": False, "digest": "d"}}
        },
    }
    for named, change in cases.items():
        result = converged.compare(recorded, "f", {**PROBE, **change})
        assert not result.converged and named in result.reason, (named, result.reason)
    pending = converged.compare(
        recorded, "f", {**PROBE, "files": {**PROBE["files"], "/var/lib/dlsetup/reboot-required": "cd" * 32}}
    )
    assert not pending.converged and "work is pending (/var/lib/dlsetup/reboot-required)" in pending.reason


def _module():
    path = REPO / "roles" / "hw_facts" / "library" / "dlsetup_converged.py"
    spec = importlib.util.spec_from_file_location("dlsetup_converged", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_module_reads_this_machine(tmp_path: Path) -> None:
    """dpkg-query, files and a venv on this machine (a Debian one): what it reads, and what it reads when absent."""
    module = _module()
    (tmp_path / "f").write_text("x")
    probe = module.probe({"packages": ["dpkg", "no-such-package-dlsetup"], "files": [str(tmp_path / "f"),
                          str(tmp_path / "g")], "venvs": [str(tmp_path / "venv")]})  # fmt: skip
    assert probe["packages"]["dpkg"]["version"]
    assert probe["packages"]["no-such-package-dlsetup"] == {"version": None, "hold": False}
    assert probe["files"] == {str(tmp_path / "f"): __import__("hashlib").sha256(b"x").hexdigest(),
                              str(tmp_path / "g"): None}  # fmt: skip
    assert probe["venvs"] == {str(tmp_path / "venv"): None}
    record = tmp_path / "record.json"
    record.write_text('{"converged": {"spec": {"files": ["%s"]}}}' % (tmp_path / "f"))
    assert module.spec_of_record(str(record)) == {"files": [str(tmp_path / "f")]}
    record.write_text("not json")
    assert module.spec_of_record(str(record)) is None
