"""Host checks: RAM and the root disk."""


def test_host_memory(check):
    check("host.memory")


def test_host_root_disk_ssd(check):
    check("host.root_disk_ssd")
