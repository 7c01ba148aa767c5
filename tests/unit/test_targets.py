"""HOST arguments to targets, given Ansible's answer for the inventory (tests/unit/test_inventory.py asks Ansible
for real; here the answer is written out, so each rule of resolve_targets is seen alone)."""

import pytest

from dlsetup.config.targets import Selection, parse_adhoc, resolve_targets
from dlsetup.errors import ConfigError

HOSTVARS = {
    "rig-1080ti": {"ansible_host": "192.0.2.10", "dlsetup_expect": {"gpu_count": 2}},
    "xps13-9370": {"ansible_host": "192.0.2.20"},
}


def _selection(*matched: tuple[str, ...], matched_all: tuple[tuple[str, ...], ...] | None = None) -> Selection:
    return Selection(
        matched=matched,
        matched_all=matched_all if matched_all is not None else matched,
        hostvars={n: HOSTVARS[n] for names in matched for n in names},
        empty_groups=frozenset({"empty"}),
    )


def test_localhost_needs_no_inventory():
    ts = resolve_targets(["localhost"])
    assert ts.names == ["localhost"]
    assert ts.targets[0].is_local
    assert ts.adhoc_inventory()["all"]["hosts"]["localhost"]["ansible_connection"] == "local"


def test_adhoc_ssh_host_with_user_and_port():
    target = parse_adhoc("ubuntu@192.0.2.5:2222")
    assert target.name == "192.0.2.5_2222"
    assert target.hostvars == {"ansible_host": "192.0.2.5", "ansible_user": "ubuntu", "ansible_port": 2222}
    assert not target.is_local


def test_inventory_hosts_keep_ansibles_order_and_variables(tmp_path):
    ts = resolve_targets(["all"], inventory_path=tmp_path / "h.yml", selection=_selection(("rig-1080ti", "xps13-9370")))
    assert ts.names == ["rig-1080ti", "xps13-9370"]
    assert ts.hostvars("rig-1080ti")["dlsetup_expect"] == {"gpu_count": 2}
    assert ts.adhoc_inventory() == {}


def test_a_pattern_that_selects_nothing_falls_back_to_localhost_and_addresses(tmp_path):
    ts = resolve_targets(
        ["rigs", "localhost", "root@192.0.2.7"],
        inventory_path=tmp_path / "h.yml",
        selection=_selection(("rig-1080ti",), (), ()),
    )
    assert ts.names == ["rig-1080ti", "localhost", "192.0.2.7"]


def test_duplicates_are_one_target(tmp_path):
    ts = resolve_targets(
        ["rigs", "rig-1080ti"],
        inventory_path=tmp_path / "h.yml",
        selection=_selection(("rig-1080ti",), ("rig-1080ti",)),
    )
    assert ts.names == ["rig-1080ti"]


def test_limit_leaves_out_inventory_hosts_and_unnamed_addresses(tmp_path):
    selection = _selection(("rig-1080ti",), (), matched_all=(("rig-1080ti", "xps13-9370"), ()))
    ts = resolve_targets(
        ["all", "localhost"], inventory_path=tmp_path / "h.yml", selection=selection, limit="rig-1080ti"
    )
    assert ts.names == ["rig-1080ti"]
    with pytest.raises(ConfigError, match=r"no hosts matched 'xps13-9370' within --limit 'rig-1080ti'"):
        resolve_targets(
            ["xps13-9370"],
            inventory_path=tmp_path / "h.yml",
            selection=_selection((), matched_all=(("xps13-9370",),)),
            limit="rig-1080ti",
        )


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ("rig-typo", "unknown host or group 'rig-typo'"),
        ("empty", "group 'empty'"),
        ("rig-*", "host pattern 'rig-*' matches no host in inventory"),
        ("bad host!", "host pattern 'bad host!' matches no host"),
        ("user@host.invalid", "does not resolve"),
    ],
)
def test_bad_hosts_are_config_errors(tmp_path, spec, needle):
    with pytest.raises(ConfigError) as info:
        resolve_targets([spec], inventory_path=tmp_path / "hosts.yml", selection=_selection(()))
    assert needle in str(info.value)


def test_bad_hosts_without_an_inventory():
    with pytest.raises(ConfigError, match="invalid host 'bad host!'"):
        resolve_targets(["bad host!"])


def test_no_hosts():
    with pytest.raises(ConfigError, match="no host given"):
        resolve_targets([])


def test_empty_limit():
    with pytest.raises(ConfigError, match="--limit is empty"):
        resolve_targets(["localhost"], limit=" ")


@pytest.mark.parametrize(
    ("limit", "kept"),
    [("all", True), ("*", True), ("local*", True), ("!localhost", False), ("all:!localhost", False),
     ("rigs,localhost", True), ("rigs", False), ("~^local", True), ("all:&rigs", False)],
)  # fmt: skip
def test_limit_reads_a_pattern_for_hosts_outside_the_inventory(limit: str, kept: bool) -> None:
    if kept:
        assert resolve_targets(["localhost"], limit=limit).names == ["localhost"]
    else:
        with pytest.raises(ConfigError, match="within --limit"):
            resolve_targets(["localhost"], limit=limit)
