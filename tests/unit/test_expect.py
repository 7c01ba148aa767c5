import pytest

from dlsetup.errors import ConfigError
from dlsetup.verify.expect import Expectations, merge, parse_expect_flags, parse_expectations


def test_full_mapping_is_coerced():
    exp = parse_expectations(
        {
            "gpu_count": 2,
            "gpu_model": "GTX 1080 Ti",
            "gpu_memory_min_mib": "11000",
            "pcie_width_min": 16,
            "pcie_gen_min": 3,
            "memory_min_mib": 32000,
            "root_disk_ssd": "yes",
            "driver_branch": 580,
            "cuda_version": "12.6",
            "framework": "PyTorch",
        },
        where="host rig",
    )
    assert exp.gpu_count == 2
    assert exp.gpu_memory_min_mib == 11000
    assert exp.root_disk_ssd is True
    assert exp.driver_branch == "580"
    assert exp.framework == "pytorch"


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        ({"gpu_cnt": 2}, "unknown expectation 'gpu_cnt'"),
        ({"gpu_count": -1}, "gpu_count must be >= 0"),
        ({"gpu_count": "two"}, "gpu_count must be an integer"),
        ({"gpu_count": True}, "gpu_count must be an integer"),
        ({"pcie_width_min": 3}, "pcie_width_min must be one of"),
        ({"pcie_gen_min": 7}, "between 1 and 6"),
        ({"root_disk_ssd": "maybe"}, "root_disk_ssd must be true or false"),
        ({"driver_branch": "58"}, "3-digit driver branch"),
        ({"cuda_version": "twelve"}, "cuda_version must look like 12.4"),
        ({"framework": "tensorflow"}, "framework must be one of"),
        ({"pcie_bandwidth_min_ratio": 1.5}, "between 0 and 1"),
        (["gpu_count"], "must be a mapping"),
    ],
)
def test_bad_values_are_one_line_errors(raw, needle):
    with pytest.raises(ConfigError) as info:
        parse_expectations(raw, where="host rig")
    message = str(info.value)
    assert needle in message
    assert message.startswith("host rig: ")
    assert "\n" not in message


def test_flags_override_inventory():
    flags = parse_expect_flags(["gpu_count=1", "pcie_width_min=8"])
    exp = merge({"gpu_count": 2, "gpu_model": "1080"}, flags, host="rig")
    assert exp == Expectations(gpu_count=1, gpu_model="1080", pcie_width_min=8)


@pytest.mark.parametrize("flag", ["gpu_count", "=2", "gpu_count=-2", "nope=1"])
def test_bad_flags(flag):
    with pytest.raises(ConfigError):
        parse_expect_flags([flag])


def test_absent_means_unchecked():
    assert parse_expectations(None, where="x") == Expectations()
    assert Expectations().to_dict() == {}


def test_framework_takes_both_and_the_pytorch_build():
    exp = parse_expectations(
        {"framework": "JAX, pytorch", "pytorch_version": "2.11.0", "pytorch_variant": "CU130"}, where="host rig"
    )
    assert (exp.framework, exp.pytorch_version, exp.pytorch_variant) == ("pytorch,jax", "2.11.0", "cu130")
    assert exp.wants("pytorch") and exp.wants("jax")
    # a PyTorch build expected means PyTorch is expected, whatever framework says
    assert Expectations(pytorch_variant="cpu").wants("pytorch")
    assert not Expectations(framework="none").wants("pytorch")
    assert not Expectations(framework="pytorch").wants("jax")


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        ({"framework": "none,pytorch"}, "framework must be one of"),
        ({"pytorch_version": "latest"}, "pytorch_version must look like 2.11.0"),
        ({"pytorch_variant": "cuda13"}, "pytorch_variant must be a wheel variant"),
    ],
)
def test_bad_framework_values(raw, needle):
    with pytest.raises(ConfigError, match=needle):
        parse_expectations(raw, where="host rig")


def test_each_value_says_where_it_came_from():
    flags = parse_expect_flags(["gpu_count=1"])
    exp = merge({"gpu_count": 2, "gpu_model": "1080"}, flags, host="rig")
    assert exp.origins == {"gpu_count": "--expect", "gpu_model": "inventory"}
    assert (exp.origin("gpu_count"), exp.origin("gpu_model"), exp.origin("driver_branch")) == (
        "--expect",
        "inventory",
        None,
    )
    # where the values came from is not part of what is expected
    assert "origins" not in exp.to_dict() and exp == Expectations(gpu_count=1, gpu_model="1080")
    assert parse_expectations({"gpu_count": 2}, where="x", origin="--expect").origins == {"gpu_count": "--expect"}
