"""-e/--extra-vars as ansible-playbook takes them, checked against the roles' own argument specs; -f, -u, -v."""

from __future__ import annotations

from pathlib import Path

import pytest

from dlsetup.config.extravars import parse_extra_vars, role_options
from dlsetup.config.targets import Connection, Target, TargetSet
from dlsetup.errors import ConfigError


def test_the_roles_options_come_from_their_argument_specs() -> None:
    options = role_options()
    assert options["dl_stack_keep_venvs"] == ("dl_stack", "int")
    assert options["dl_stack_venv_path"] == ("dl_stack", "path")
    assert {role for role, _ in options.values()} >= {"base", "cuda", "dl_stack", "nvidia_driver"}


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (["dl_stack_keep_venvs=3"], {"dl_stack_keep_venvs": 3}),  # key=value gives strings; the spec says int
        (["dl_stack_keep_venvs=3 dl_stack_venv_path='/srv/my venv'"],
         {"dl_stack_keep_venvs": 3, "dl_stack_venv_path": "/srv/my venv"}),
        (['{"dl_stack_keep_venvs": 4}'], {"dl_stack_keep_venvs": 4}),
        (["---\ndl_stack_keep_venvs: 5\n"], {"dl_stack_keep_venvs": 5}),
        (["dl_stack_keep_venvs=3", "dl_stack_keep_venvs=6"], {"dl_stack_keep_venvs": 6}),  # the later one wins
    ],
)  # fmt: skip
def test_the_forms_ansible_playbook_takes(values: list[str], expected: dict[str, object]) -> None:
    assert parse_extra_vars(values) == expected


def test_a_file(tmp_path: Path) -> None:
    (tmp_path / "vars.yml").write_text("dl_stack_keep_venvs: 7\n")
    assert parse_extra_vars([f"@{tmp_path / 'vars.yml'}"]) == {"dl_stack_keep_venvs": 7}
    with pytest.raises(ConfigError, match=r"-e @\S+nope\.yml: \S+ cannot be read \(No such file or directory\)"):
        parse_extra_vars([f"@{tmp_path / 'nope.yml'}"])
    (tmp_path / "list.yml").write_text("- a\n")
    with pytest.raises(ConfigError, match="must be a mapping of variables, got list"):
        parse_extra_vars([f"@{tmp_path / 'list.yml'}"])


@pytest.mark.parametrize(
    ("values", "cause"),
    [
        (["nvidia_driver_branch=570"], r"^-e nvidia_driver_branch: set by dlsetup's plan .*--pin"),
        (["dl_stack_keep_vens=3"], r"^-e dl_stack_keep_vens: no role of dlsetup takes this variable; did you mean "
                                   r"dl_stack_keep_venvs"),
        (["frobnicate=1"], r"^-e frobnicate: no role of dlsetup takes this variable; the roles' variables are in"),
        (["dl_stack_keep_venvs=many"], r"^-e dl_stack_keep_venvs: expected an int, got 'many'$"),
        (['{"dl_stack_keep_venvs": [1]}'], r"expected an int, got \[1\]"),
        (["{not: yaml: here"], r"is not YAML or JSON \(line 1, column \d+\)"),
        (["=3"], r"expected key=value, a YAML/JSON mapping or @FILE"),
    ],
)  # fmt: skip
def test_bad_extra_vars_are_refused(values: list[str], cause: str) -> None:
    with pytest.raises(ConfigError, match=cause):
        parse_extra_vars(values)


@pytest.mark.parametrize(
    ("kwargs", "cause"),
    [({"forks": 0}, "--forks must be at least 1"), ({"user": "a b"}, "is not a user name"),
     ({"user": ""}, "is not a user name"),
     ({"verbosity": 7}, "up to 6 times")],
)  # fmt: skip
def test_bad_connection_options(kwargs: dict[str, object], cause: str) -> None:
    with pytest.raises(ConfigError, match=cause):
        Connection(**kwargs)  # type: ignore[arg-type]


def test_the_remote_user_is_the_default_the_inventory_overrides() -> None:
    targets = TargetSet(
        (Target("a", {"ansible_host": "192.0.2.1"}), Target("b", {"ansible_host": "192.0.2.2", "ansible_user": "lab"}),
         Target("localhost", {"ansible_connection": "local"})),
        None, {}, connection=Connection(user="admin"),
    )  # fmt: skip
    hosts = targets.inventory_for_all()["all"]["hosts"]
    assert hosts["a"]["ansible_user"] == "admin"
    assert hosts["b"]["ansible_user"] == "lab"
    assert "ansible_user" not in hosts["localhost"]
