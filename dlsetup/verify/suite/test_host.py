"""Host checks: RAM and the root disk."""

from dlsetup.verify import checks


def test_host_memory(hw_facts, expectations, check):
    check(checks.check_host_memory(hw_facts, expectations))


def test_host_root_disk_ssd(hw_facts, expectations, check):
    check(checks.check_root_disk(hw_facts, expectations))
