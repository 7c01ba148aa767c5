"""The runner boundary's own logic: inventory listing (real ansible-inventory), stats and run directories."""

import pytest

from dlsetup.config.targets import resolve_targets
from dlsetup.errors import ConfigError
from dlsetup.run import runner


def test_valid_inventory_is_listed(tmp_path):
    inv = tmp_path / "hosts.yml"
    inv.write_text(
        "all:\n  children:\n    rigs:\n      hosts:\n        rig-1:\n          dlsetup_expect: {gpu_count: 2}\n"
    )
    listing = runner.list_inventory(inv)
    assert listing["rigs"]["hosts"] == ["rig-1"]
    assert listing["_meta"]["hostvars"]["rig-1"]["dlsetup_expect"] == {"gpu_count": 2}


@pytest.mark.parametrize(
    ("name", "text"),
    [("broken.yml", "all:\n  hosts:\n    a: [\n"), ("broken.ini", "[rigs\nfoo\n")],
)
def test_broken_inventory_is_one_config_error(tmp_path, name, text):
    inv = tmp_path / name
    inv.write_text(text)
    with pytest.raises(ConfigError) as info:
        runner.list_inventory(inv)
    assert str(info.value).startswith(f"invalid inventory {inv}")
    assert "\n" not in str(info.value)


def test_missing_inventory(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        runner.list_inventory(tmp_path / "nope.yml")


def test_stats_from_runner():
    stats = runner._stats(
        {"ok": {"a": 5, "b": 1}, "changed": {"a": 2}, "failures": {"b": 1}, "dark": {"c": 1}, "skipped": {}}
    )
    assert stats["a"] == runner.HostStats(ok=5, changed=2)
    assert stats["b"].failures == 1 and not stats["b"].unreachable
    assert stats["c"].unreachable


def test_run_dirs_are_private_and_rotated(tmp_path, monkeypatch):
    monkeypatch.setenv("DLSETUP_STATE_DIR", str(tmp_path))
    made = [runner.new_run_dir(f"k{i}") for i in range(runner.KEEP_RUNS + 5)]
    left = sorted((tmp_path / "runs").iterdir())
    assert len(left) == runner.KEEP_RUNS
    assert left == sorted(made[-runner.KEEP_RUNS :])
    assert (made[-1].stat().st_mode & 0o777) == 0o700


def test_become_password_goes_to_the_prompt_not_to_disk(tmp_path, monkeypatch):
    """-K: the password answers ansible-playbook's BECOME prompt through ansible-runner and is written nowhere."""
    monkeypatch.setenv("DLSETUP_STATE_DIR", str(tmp_path))
    seen = {}

    class FakeRunner:
        status, rc, stats = "successful", 0, {}

    def fake_run(**kwargs):
        seen.update(kwargs)
        return FakeRunner()

    monkeypatch.setattr(runner.ansible_runner, "run", fake_run)
    runner.run_playbook("site.yml", resolve_targets(["localhost"]), become_password="s3cret-pw", kind="provision")
    assert "--ask-become-pass" in seen["cmdline"]
    assert seen["passwords"] == {runner.BECOME_PROMPT: "s3cret-pw"}
    assert "s3cret-pw" not in repr(seen["extravars"]) + repr(seen["envvars"])
    written = [p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()]
    assert written and not any(b"s3cret-pw" in data for data in written)
    runner.run_playbook("site.yml", resolve_targets(["localhost"]), kind="provision")
    assert seen["passwords"] is None and seen["cmdline"] is None
