"""Static checks over dlsetup's roles and playbooks (docs/roles.md, shared/STYLE.md "Roles").

Every role has the standard files, its argument_specs agree with its defaults, every public variable carries
the role prefix, every module is named by FQCN, every command has changed_when, nothing ignores errors, every
mode is a quoted octal string. The last part tests the pure functions of the base role's read-only
``dlsetup_apt_sources`` module.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from jinja2 import Environment

from dlsetup.plan.request import request_offline
from dlsetup.plan.resolve import resolve_stack

REPO = Path(__file__).resolve().parents[2]
ROLES_DIR = REPO / "roles"
PLAYBOOKS_DIR = REPO / "playbooks"
ROLES = ("base", "nvidia_driver", "cuda", "dl_stack", "laptop")
# Facts that are dlsetup's contract with the Python side rather than a role's own variable.
CONTRACT_FACTS = {"dlsetup_reboot_required"}
REQUIRED_FILES = (
    "defaults/main.yml",
    "meta/main.yml",
    "meta/argument_specs.yml",
    "tasks/main.yml",
    "handlers/main.yml",
    "vars/main.yml",
    "vars/Debian.yml",
    "vars/Ubuntu.yml",
)
# Keys of a task that are not its action.
TASK_KEYWORDS = {
    "name",
    "when",
    "register",
    "loop",
    "loop_control",
    "with_items",
    "notify",
    "listen",
    "tags",
    "vars",
    "become",
    "become_user",
    "changed_when",
    "failed_when",
    "check_mode",
    "environment",
    "args",
    "delegate_to",
    "run_once",
    "no_log",
    "diff",
    "until",
    "retries",
    "delay",
    "ignore_errors",
    "block",
    "rescue",
    "always",
    "any_errors_fatal",
    "throttle",
    "timeout",
    "module_defaults",
    "debugger",
    "collections",
}
BLOCK_KEYS = ("block", "rescue", "always")


def _load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def _role_names_with_library() -> set[str]:
    return {p.stem for p in ROLES_DIR.glob("*/library/*.py")}


def _task_files() -> list[Path]:
    files = [p for role in ROLES for sub in ("tasks", "handlers") for p in (ROLES_DIR / role / sub).glob("*.yml")]
    return sorted(files)


def _playbooks() -> list[Path]:
    return sorted(p for p in PLAYBOOKS_DIR.glob("*.yml") if p.name != "facts.yml")


def _walk(tasks: Any) -> Iterator[dict[str, Any]]:
    for task in tasks or []:
        if not isinstance(task, dict):
            continue
        yield task
        for key in BLOCK_KEYS:
            if key in task:
                yield from _walk(task[key])


def _all_tasks() -> Iterator[tuple[str, dict[str, Any]]]:
    for path in _task_files():
        for task in _walk(_load(path)):
            yield f"{path.relative_to(REPO)}: {task.get('name')}", task
    for path in _playbooks():
        for play in _load(path) or []:
            for section in ("pre_tasks", "tasks", "post_tasks", "handlers"):
                for task in _walk(play.get(section)):
                    yield f"{path.relative_to(REPO)}: {task.get('name')}", task


def _action(task: dict[str, Any]) -> str | None:
    actions = [k for k in task if k not in TASK_KEYWORDS]
    assert len(actions) <= 1, f"several actions in one task: {actions}"
    return actions[0] if actions else None


def _role_of(where: str) -> str | None:
    match = re.match(r"roles/([^/]+)/", where)
    return match.group(1) if match else None


TASKS = list(_all_tasks())


def test_tasks_were_found() -> None:
    assert len(TASKS) > 100


@pytest.mark.parametrize("role", ROLES)
def test_role_has_the_standard_files(role: str) -> None:
    missing = [f for f in REQUIRED_FILES if not (ROLES_DIR / role / f).is_file()]
    assert not missing, f"{role} lacks {missing}"


@pytest.mark.parametrize("role", ROLES)
def test_role_has_no_meta_dependencies(role: str) -> None:
    meta = _load(ROLES_DIR / role / "meta/main.yml")
    assert meta.get("dependencies") in (None, [])


@pytest.mark.parametrize("role", ROLES)
def test_argument_specs_equal_defaults(role: str) -> None:
    defaults = _load(ROLES_DIR / role / "defaults/main.yml")
    options = _load(ROLES_DIR / role / "meta/argument_specs.yml")["argument_specs"]["main"]["options"]
    assert set(options) == set(defaults), f"{role}: specs and defaults name different variables"
    for name, spec in options.items():
        assert spec.get("default") == defaults[name], f"{role}: {name} default differs"
        assert spec.get("description"), f"{role}: {name} has no description"
        assert spec.get("type") in {"bool", "int", "str", "list", "dict", "path"}, f"{role}: {name} type"
        if spec["type"] == "list":
            assert spec.get("elements"), f"{role}: list {name} needs elements"


@pytest.mark.parametrize("role", ROLES)
def test_public_variables_are_prefixed_and_commented(role: str) -> None:
    path = ROLES_DIR / role / "defaults/main.yml"
    defaults = _load(path)
    assert f"{role}_enabled" in defaults
    assert all(name.startswith(f"{role}_") for name in defaults), sorted(defaults)
    lines = path.read_text().splitlines()
    for index, line in enumerate(lines):
        if re.match(r"^[a-z]", line):
            above = lines[index - 1] if index else ""
            assert above.startswith("#"), f"{role}: {line.split(':')[0]} has no comment above it"


@pytest.mark.parametrize("role", ROLES)
def test_internal_variables_are_prefixed(role: str) -> None:
    for path in (ROLES_DIR / role / "vars").glob("*.yml"):
        names = _load(path) or {}
        bad = [n for n in names if not n.startswith(f"__{role}_")]
        assert not bad, f"{path.relative_to(REPO)}: {bad}"


@pytest.mark.parametrize("role", ROLES)
def test_main_starts_with_an_os_assert_and_loads_os_vars(role: str) -> None:
    tasks = _load(ROLES_DIR / role / "tasks/main.yml")
    assert _action(tasks[0]) == "ansible.builtin.assert"
    assert any("Debian" in str(t) or "supported" in str(t) for t in tasks[0]["ansible.builtin.assert"]["that"])
    assert _action(tasks[1]) == "ansible.builtin.include_vars"
    assert "first_found" in str(tasks[1])


def test_every_module_is_named_by_fqcn() -> None:
    local = _role_names_with_library()
    for where, task in TASKS:
        action = _action(task)
        if action is None:
            continue
        assert action.startswith("ansible.builtin.") or action in local, f"{where}: {action}"


def test_every_command_has_changed_when() -> None:
    for where, task in TASKS:
        if _action(task) in {"ansible.builtin.command", "ansible.builtin.shell"}:
            assert "changed_when" in task, where


def test_read_only_probes_run_in_check_mode() -> None:
    for where, task in TASKS:
        if _action(task) in {"ansible.builtin.command", "ansible.builtin.shell"} and task["changed_when"] is False:
            assert task.get("check_mode") is False, f"{where}: a read-only probe needs check_mode: false"


def test_nothing_ignores_errors() -> None:
    for where, task in TASKS:
        assert "ignore_errors" not in task, where
    for path in [*_task_files(), *_playbooks()]:
        assert "ignore_errors" not in path.read_text(), path


def test_modes_are_quoted_octal_strings() -> None:
    found = 0
    for where, task in TASKS:
        args = task.get(_action(task) or "")
        if isinstance(args, dict) and "mode" in args:
            found += 1
            assert isinstance(args["mode"], str) and re.fullmatch(r"0[0-7]{3}", args["mode"]), where
    assert found > 10


def test_registers_set_facts_and_loop_vars_are_prefixed() -> None:
    for where, task in TASKS:
        role = _role_of(where)
        if role is None:
            continue
        if "register" in task:
            assert task["register"].startswith(f"{role}_reg_"), where
        if "loop_control" in task:
            assert task["loop_control"]["loop_var"].startswith(f"{role}_"), where
        if _action(task) == "ansible.builtin.set_fact":
            for name in task["ansible.builtin.set_fact"]:
                assert name.startswith(f"__{role}_") or name in CONTRACT_FACTS, f"{where}: {name}"


def test_every_role_is_in_site_yml_with_its_tag() -> None:
    play = _load(PLAYBOOKS_DIR / "site.yml")[0]
    assert play["hosts"] == "all" and play["become"] is True and play["gather_facts"] is True
    roles = [(r["role"], r["tags"]) for r in play["roles"]]
    assert roles == [(name, [f"role::{name}"]) for name in ("hw_facts", *ROLES)]


def test_no_repository_host_is_written_into_roles_or_playbooks() -> None:
    # The distribution's mirrors come from the host's own sources; NVIDIA's public repository is written only as
    # the two roles' documented default address (dlsetup passes the plan's address, a mirror included).
    distro = re.compile(r"deb\.debian\.org|archive\.ubuntu\.com|security\.debian\.org|security\.ubuntu\.com")
    nvidia_defaults = {
        ROLES_DIR / f"{role}/{name}" for role in ("nvidia_driver", "cuda") for name in REPO_DEFAULT_FILES
    }
    files = [p for role in ROLES for p in (ROLES_DIR / role).rglob("*") if p.is_file() and p.suffix != ".pyc"]
    assert len(files) > 50
    for path in [*files, *_playbooks()]:
        text = path.read_text()
        assert not distro.search(text), path
        if path not in nvidia_defaults:
            assert "nvidia.com" not in text, path


REPO_DEFAULT_FILES = ("defaults/main.yml", "meta/argument_specs.yml")


@pytest.mark.parametrize(
    ("facts", "url"),
    [
        ({"ansible_distribution": "Debian", "ansible_distribution_version": "12.8",
          "ansible_distribution_major_version": "12", "ansible_architecture": "x86_64"},
         "https://developer.download.nvidia.com/compute/cuda/repos/debian12/x86_64/"),
        ({"ansible_distribution": "Ubuntu", "ansible_distribution_version": "24.04",
          "ansible_distribution_major_version": "24", "ansible_architecture": "aarch64"},
         "https://developer.download.nvidia.com/compute/cuda/repos/ubuntu2404/sbsa/"),
    ],
)  # fmt: skip
def test_repo_url_defaults_to_nvidias_public_repository_as_the_plan_does(facts: dict[str, str], url: str) -> None:
    """Used on its own, a role reaches the address the plan would give (docs/sources.md)."""
    for role, var in (("nvidia_driver", "nvidia_driver_repo_url"), ("cuda", "cuda_repo_url")):
        template = _load(ROLES_DIR / f"{role}/defaults/main.yml")[var]
        assert Environment().from_string(template).render(**facts) + "/" == url
    if facts["ansible_architecture"] == "x86_64":  # the planner plans x86_64 hosts
        plan = resolve_stack(request_offline("debian-12", ["RTX 5090"]))
        assert plan.nvidia_repository is not None and plan.nvidia_repository.url == url


def test_the_key_is_pinned_and_never_added_by_script() -> None:
    defaults = _load(ROLES_DIR / "nvidia_driver/defaults/main.yml")
    assert defaults["nvidia_driver_repo_key_fingerprint"] == "EB693B3035CD5710E231E123A4B469963BF863CC"
    for where, task in TASKS:
        action = _action(task)
        assert action != "ansible.builtin.apt_key", where
        if action in {"ansible.builtin.command", "ansible.builtin.shell"}:
            command = str(task[action])
            assert "apt-key" not in command and not re.search(r"\|\s*(ba)?sh\b", command), where


# -- the base role's dlsetup_apt_sources module (pure functions) ------------------------------------------------


def _sources_module() -> Any:
    path = ROLES_DIR / "base/library/dlsetup_apt_sources.py"
    spec = importlib.util.spec_from_file_location("dlsetup_apt_sources", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SRC = _sources_module()
SUITES = ["bookworm", "bookworm-updates", "bookworm-security"]
WANTED = ["contrib", "non-free", "non-free-firmware"]
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
# Mirror names are placeholders: tests never name a real host.
MIRROR = "http://mirror.invalid/debian"
SECURITY = "http://mirror.invalid/debian-security"

DEB822 = f"""\
# a comment
Types: deb deb-src
URIs: {MIRROR}
Suites: bookworm bookworm-updates
Components: main
Signed-By: {KEYRING}

Types: deb
URIs: {SECURITY}
Suites: bookworm-security
Components: main non-free-firmware
Signed-By: {KEYRING}

Types: deb
URIs: http://other.invalid/repo
Suites: bookworm
Components: main
Enabled: no
"""


def test_deb822_entries_are_parsed() -> None:
    entries = SRC.parse_deb822(DEB822, "/etc/apt/sources.list.d/debian.sources")
    assert [e["suites"] for e in entries] == [["bookworm", "bookworm-updates"], ["bookworm-security"], ["bookworm"]]
    assert entries[0]["types"] == ["deb", "deb-src"]
    assert entries[0]["signed_by"] == KEYRING
    assert [e["enabled"] for e in entries] == [True, True, False]


def test_missing_components_reuse_the_hosts_uris_and_keyring() -> None:
    entries = SRC.parse_deb822(DEB822, "x.sources")
    stanzas = SRC.missing_stanzas(entries, SUITES, WANTED, KEYRING)
    assert stanzas == [
        {"uris": [MIRROR], "suites": ["bookworm", "bookworm-updates"], "components": WANTED, "signed_by": KEYRING},
        {
            "uris": [SECURITY],
            "suites": ["bookworm-security"],
            "components": ["contrib", "non-free"],
            "signed_by": KEYRING,
        },
    ]


def test_one_line_sources_and_components_spread_over_files() -> None:
    one_line = (
        f"deb {MIRROR} bookworm main non-free-firmware\n"
        f"deb-src {MIRROR} bookworm main\n"
        f"deb [arch=amd64 signed-by=/k.gpg] {MIRROR}/ bookworm-updates main contrib # trailing comment\n"
        "deb cdrom:[Debian GNU/Linux 12]/ bookworm main\n"
    )
    entries = SRC.parse_one_line(one_line, "/etc/apt/sources.list")
    entries += SRC.parse_deb822(f"Types: deb\nURIs: {MIRROR}\nSuites: bookworm\nComponents: contrib\n", "b.sources")
    stanzas = SRC.missing_stanzas(entries, SUITES, WANTED, KEYRING)
    # bookworm: main+non-free-firmware in one file, contrib in another; the trailing slash is the same URI;
    # no Signed-By in the host's line for bookworm -> the Debian keyring; cdrom entries are never copied.
    assert stanzas == [
        {"uris": [MIRROR], "suites": ["bookworm"], "components": ["non-free"], "signed_by": KEYRING},
        {
            "uris": [f"{MIRROR}/"],
            "suites": ["bookworm-updates"],
            "components": ["non-free", "non-free-firmware"],
            "signed_by": "/k.gpg",
        },
    ]


def test_nothing_missing_gives_no_stanza_and_our_own_file_is_ignored(tmp_path: Path) -> None:
    parts = tmp_path / "etc/apt/sources.list.d"
    parts.mkdir(parents=True)
    (parts / "debian.sources").write_text(
        f"Types: deb\nURIs: {MIRROR}\nSuites: bookworm\nComponents: main\nSigned-By: {KEYRING}\n"
    )
    (parts / "dlsetup-debian.sources").write_text(
        f"Types: deb\nURIs: {MIRROR}\nSuites: bookworm\nComponents: {' '.join(WANTED)}\nSigned-By: {KEYRING}\n"
    )
    entries = SRC.read_entries(str(tmp_path), "/etc/apt/sources.list.d/dlsetup-debian.sources")
    assert [e["file"] for e in entries] == ["/etc/apt/sources.list.d/debian.sources"]
    assert SRC.missing_stanzas(entries, SUITES, WANTED, KEYRING)[0]["components"] == WANTED
    (parts / "debian.sources").write_text(
        f"Types: deb\nURIs: {MIRROR}\nSuites: bookworm\nComponents: main {' '.join(WANTED)}\n"
    )
    entries = SRC.read_entries(str(tmp_path), "/etc/apt/sources.list.d/dlsetup-debian.sources")
    assert SRC.missing_stanzas(entries, SUITES, WANTED, KEYRING) == []
