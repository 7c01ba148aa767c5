import pytest

from dlsetup.config.targets import parse_adhoc, resolve_targets
from dlsetup.errors import ConfigError

INVENTORY = {
    "_meta": {
        "hostvars": {
            "rig-1080ti": {"ansible_host": "192.0.2.10", "dlsetup_expect": {"gpu_count": 2}},
            "xps13-9370": {"ansible_host": "192.0.2.20"},
        }
    },
    "all": {"children": ["ungrouped", "rigs", "laptops"]},
    "rigs": {"hosts": ["rig-1080ti"]},
    "laptops": {"hosts": ["xps13-9370"]},
    "empty": {},
    "ungrouped": {},
}


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


def test_groups_expand_with_children_and_hostvars_merge():
    ts = resolve_targets(["all"], inventory_path=None, inventory=INVENTORY)
    assert ts.names == ["rig-1080ti", "xps13-9370"]
    assert ts.hostvars("rig-1080ti")["dlsetup_expect"] == {"gpu_count": 2}
    assert ts.adhoc_inventory() == {}


def test_comma_lists_and_duplicates():
    ts = resolve_targets(["rigs,rig-1080ti", "localhost"], inventory=INVENTORY)
    assert ts.names == ["rig-1080ti", "localhost"]


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ("rig-typo", "unknown host or group 'rig-typo'"),
        ("empty", "group 'empty'"),
        ("bad host!", "invalid host"),
        ("user@host.invalid", "does not resolve"),
    ],
)
def test_bad_hosts_are_config_errors(tmp_path, spec, needle):
    with pytest.raises(ConfigError) as info:
        resolve_targets([spec], inventory_path=tmp_path / "hosts.yml", inventory=INVENTORY)
    assert needle in str(info.value)


def test_no_hosts():
    with pytest.raises(ConfigError, match="no host given"):
        resolve_targets([])
