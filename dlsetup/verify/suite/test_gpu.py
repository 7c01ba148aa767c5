"""GPU checks: count (every GPU on PCI listed by the driver), visibility, model, memory, PCIe width and
generation, where the lanes come from."""


def test_gpu_count(check):
    check("gpu.count")


def test_gpu_visible(check):
    check("gpu.visible")


def test_gpu_model(check):
    check("gpu.model")


def test_gpu_memory(check):
    check("gpu.memory")


def test_gpu_pcie_width(check):
    check("gpu.pcie_width")


def test_gpu_pcie_gen(check):
    check("gpu.pcie_gen")


def test_gpu_pcie_lane_source(check):
    check("gpu.pcie_lane_source")
