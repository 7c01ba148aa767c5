"""Driver checks: loaded and answering, branch, kernel module flavour, CUDA version."""

from dlsetup.verify import checks


def test_driver_loaded(hw_facts, check):
    check(checks.check_driver_loaded(hw_facts))


def test_driver_branch(hw_facts, expectations, check):
    check(checks.check_driver_branch(hw_facts, expectations))


def test_driver_flavor(hw_facts, expectations, check):
    check(checks.check_driver_flavor(hw_facts, expectations))


def test_driver_cuda(hw_facts, expectations, check):
    check(checks.check_driver_cuda(hw_facts, expectations))
