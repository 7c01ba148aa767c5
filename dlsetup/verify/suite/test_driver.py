"""Driver checks: loaded and answering, branch, kernel module flavour, CUDA version."""


def test_driver_loaded(check):
    check("driver.loaded")


def test_driver_branch(check):
    check("driver.branch")


def test_driver_flavor(check):
    check("driver.flavor")


def test_driver_cuda(check):
    check("driver.cuda")
