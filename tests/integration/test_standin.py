"""The local stand-ins of NVIDIA's CUDA apt repository and of PyTorch's / JAX's pip indexes (standin.py), proven on
real Debian 12 and 13 hosts: apt trusts the stand-in repository only with its own key, a stand-in package (with a
dependency and a maintainer script) installs, and a venv gets the stand-in torch and jax from the stand-in index,
on which dlsetup's own PyTorch and JAX probes see the host's fake H200.

Both releases are booted together and driven in parallel, so each test costs one boot and one round of work.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import tempfile
import threading
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path

import fakegpu
import harness as h
import pytest
import standin as s

from dlsetup.facts.hwparse.common import normalize_bus_id
from dlsetup.verify.probes import JAX_PROBE, TORCH_PROBE, JaxProbe, TorchProbe, last_json_line

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
H200_CSV = REPO / "tests/fixtures/nvidia-smi-scenarios/h200/nvidia-smi-query-gpu.csv"
RELEASES = ("bookworm", "trixie")
TORCH_VERSION = "2.14.0"
TORCH_VARIANT = "cu126"
JAX_VERSION = "0.7.2"
VENV = "/opt/standin-venv"
# The product's check of a downloaded repository key (roles/nvidia_driver): the primary key's fingerprint.
PRIMARY_FPR = re.compile(r"(?m)^pub:.*\nfpr:+([0-9A-F]+):")
PACKAGES = (
    s.DebPackage(
        "standin-libnvidia-compute",
        "580.95.05-1",
        files={"/usr/lib/x86_64-linux-gnu/libnvidia-standin.so.1": b"not a library: dlsetup test stand-in\n"},
    ),
    s.DebPackage(
        "standin-nvidia-utils",
        "580.95.05-1",
        depends=["standin-libnvidia-compute (= 580.95.05-1)"],
        provides=["nvidia-smi"],
        conflicts=["nvidia-smi"],
        files={"/usr/bin/nvidia-smi": s.DebFile("#!/bin/sh\necho 'stand-in nvidia-smi 580.95.05'\n", 0o755)},
        scripts={"postinst": '#!/bin/sh\nset -e\necho "$1 $2" > /var/lib/standin-nvidia-utils.postinst\n'},
    ),
    s.DebPackage("standin-cuda-docs", "12.6.85-1", architecture="all", files={"/usr/share/doc/standin/README": "x\n"}),
)


def _require_tools() -> None:
    missing = s.missing_tools()
    if missing:
        reason = f"the stand-ins need these Debian packages here: {', '.join(missing)}"
        if os.environ.get("DLSETUP_REQUIRE_INTEGRATION") == "1":
            pytest.fail(reason)
        pytest.skip(reason)


@pytest.fixture(scope="module")
def standins() -> Iterator[s.Standins]:
    _require_tools()
    root = Path(tempfile.mkdtemp(prefix="dlst-standin-"))
    try:
        with s.SigningKey() as key:
            yield s.build_standins(
                root,
                key,
                PACKAGES,
                torch_version=TORCH_VERSION,
                jax_version=JAX_VERSION,
                extra_wheels=s.numpy_wheels(),
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def other_key() -> Iterator[s.SigningKey]:
    _require_tools()
    with s.SigningKey(uid="dlsetup test: not the repository's key <other@invalid>") as key:
        yield key


@pytest.fixture(scope="module")
def server(standins: s.Standins) -> Iterator[s.StandinServer]:
    with s.served(standins.root) as srv:
        yield srv


@contextlib.contextmanager
def serving(server: s.StandinServer, hosts: h.HostGroup) -> Iterator[dict[str, str]]:
    """The server on each host's gateway (host name → base URL), the hosts pointed at it directly."""
    urls: dict[str, str] = {}
    try:
        for host in hosts:
            urls[host.name] = server.listen(host.gateway)
            s.reach_directly(host, urls[host.name])
        yield urls
    finally:
        for host in hosts:
            server.unlisten(host.gateway)  # before the veth (and its address) goes away with the host


def ok(host: h.Host, cmd: str | list[str], *, timeout: float = 300, input: str | None = None) -> str:
    result = host.run(cmd, timeout=timeout, input=input)
    assert result.returncode == 0, f"{host.name}: {cmd} -> {result.returncode}\n{result.stdout[-3000:]}{result.stderr}"
    return result.stdout


def h200_gpus() -> list[dict[str, str]]:
    lines = [ln for ln in H200_CSV.read_text().splitlines() if ln.strip()]
    header = [c.split(" [")[0] for c in lines[0].split(", ")]
    return [dict(zip(header, line.split(", "), strict=True)) for line in lines[1:]]


# -- on this machine -------------------------------------------------------------------------------------------
def test_server_serves_and_stops(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "file.txt").write_text("hello\n")
    server = s.StandinServer(tmp_path)
    try:
        url = server.listen("127.0.0.1")
        with urllib.request.urlopen(f"{url}/a/file.txt", timeout=10) as response:
            assert response.read() == b"hello\n"
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(f"{url}/a/nothing", timeout=10)
        assert missing.value.code == 404
        missing.value.close()
    finally:
        server.stop()
    assert [(r.path, r.status) for r in server.requests] == [("/a/file.txt", 200), ("/a/nothing", 404)]
    assert not [t.name for t in threading.enumerate() if t.name.startswith("dlsetup-standin")]
    with pytest.raises(OSError):
        urllib.request.urlopen(url, timeout=5)
    server.stop()  # twice is fine


def test_built_artifacts(standins, tmp_path):
    key = standins.key
    assert re.fullmatch(r"[0-9A-F]{40}", key.fingerprint)
    repo = standins.repo_for("12")
    assert {"Packages", "Packages.gz", "Release", "Release.gpg", "InRelease", s.NVIDIA_KEY_FILE} <= {
        p.name for p in repo.path.iterdir()
    }
    release = (repo.path / "Release").read_text()
    assert "Origin: NVIDIA\n" in release and "Label: NVIDIA CUDA\n" in release
    gpg_home = tmp_path / "gpg"
    gpg_home.mkdir(mode=0o700)
    shown = subprocess.run(
        ["gpg", "--homedir", str(gpg_home), "--batch", "--with-colons", "--fixed-list-mode", "--show-keys",
         str(repo.path / s.NVIDIA_KEY_FILE)],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert PRIMARY_FPR.findall(shown) == [key.fingerprint]
    subprocess.run(["gpgconf", "--homedir", str(gpg_home), "--kill", "all"], capture_output=True, check=False)
    assert {f"torch-{v}" for v in s.TORCH_VARIANTS} <= set(standins.wheels)
    with zipfile.ZipFile(standins.wheels[f"torch-{TORCH_VARIANT}"]) as wheel:
        names = wheel.namelist()
        metadata = wheel.read(f"torch-{TORCH_VERSION}+{TORCH_VARIANT}.dist-info/METADATA").decode()
        record = wheel.read(f"torch-{TORCH_VERSION}+{TORCH_VARIANT}.dist-info/RECORD").decode()
    assert "Requires-Dist: numpy\n" in metadata
    assert {line.split(",")[0] for line in record.splitlines()} == set(names)
    with zipfile.ZipFile(standins.wheels["jax"]) as wheel:
        metadata = wheel.read(f"jax-{JAX_VERSION}.dist-info/METADATA").decode()
    assert "Provides-Extra: cuda12\n" in metadata and "Provides-Extra: cuda13\n" in metadata
    assert "Requires-Dist" not in metadata


# -- on Debian 12 and 13 ---------------------------------------------------------------------------------------
def _update_standin_only(host: h.Host, source: str) -> subprocess.CompletedProcess[str]:
    # Only the stand-in source: Debian's lists are not needed here, and fetching them would only cost time.
    return host.run(
        ["apt-get", "update", "-q", "-o", f"Dir::Etc::SourceList={source}", "-o", "Dir::Etc::SourceParts=-",
         "-o", "APT::Get::List-Cleanup=0"],
        timeout=120,
    )  # fmt: skip


def test_signed_cuda_repository(boot_host, standins, other_key, server):
    hosts = boot_host.many([h.HostSpec(f"stcuda{h.RELEASES[r]}", r) for r in RELEASES])
    with serving(server, hosts) as urls:

        def exercise(host: h.Host) -> None:
            repo_url = standins.repo_for(host.version_id).url(urls[host.name])
            # The key as the product fetches it (apt's own http method: proves the DIRECT setting for apt).
            ok(host, ["/usr/lib/apt/apt-helper", "download-file", f"{repo_url}/{s.NVIDIA_KEY_FILE}", "/root/key.pub"])
            fetched = (host.root / "root/key.pub").read_text()
            assert fetched == standins.key.public_armored

            # A different key: apt refuses the repository, and its packages stay unknown.
            _, source = s.install_apt_source(host, repo_url, other_key.public_armored)
            refused = _update_standin_only(host, source)
            assert refused.returncode != 0, f"{host.name}: apt accepted a repository signed by another key"
            said = refused.stdout + refused.stderr
            assert "is not signed" in said, said
            # apt names the key that signed, missing from the keyring given: gpgv on 12 by its long id
            # (NO_PUBKEY), sqv on 13 by its fingerprint (Missing key)
            assert standins.key.fingerprint[-16:] in said, said
            assert host.run("apt-cache show standin-nvidia-utils").returncode != 0

            # The right key: update, install with the dependency, and the maintainer script ran.
            s.install_apt_source(host, repo_url, fetched)
            updated = _update_standin_only(host, source)
            assert updated.returncode == 0, updated.stdout + updated.stderr
            assert "W:" not in updated.stdout + updated.stderr, updated.stdout + updated.stderr
            assert "Candidate: 580.95.05-1" in ok(host, "apt-cache policy standin-nvidia-utils")
            # apt read the stand-in's Release as NVIDIA's: the origin and label apt pins and preferences match on
            policy = ok(host, "apt-cache policy")
            assert f"{repo_url}  Packages\n     release o=NVIDIA,l=NVIDIA CUDA," in policy, policy
            ok(host, "DEBIAN_FRONTEND=noninteractive apt-get install -y -q standin-nvidia-utils standin-cuda-docs")
            versions = ok(host, "dpkg-query -W -f='${Package} ${Version} ${Status}\\n' 'standin-*'")
            for package in PACKAGES:
                assert f"{package.name} {package.version} install ok installed" in versions, versions
            assert ok(host, "nvidia-smi").strip() == "stand-in nvidia-smi 580.95.05"
            assert ok(host, "cat /var/lib/standin-nvidia-utils.postinst").strip() == "configure"

        h.run_parallel(hosts, exercise)
    for host in hosts:
        fetched = {r.path.rsplit("/", 1)[-1] for r in server.requests_from(host.address) if r.status == 200}
        assert {"InRelease", "standin-nvidia-utils_580.95.05-1_amd64.deb"} <= fetched, (host.name, fetched)


def test_frameworks_from_standin_index(boot_host, standins, server):
    hosts = boot_host.many([h.HostSpec(f"stwhl{h.RELEASES[r]}", r) for r in RELEASES])
    for host in hosts:
        fakegpu.install(host, sysfs="h200-vm", scenario="h200", nvidia_proc="h200-580-open")
    results: dict[str, dict[str, object]] = {}
    with serving(server, hosts) as urls:

        def exercise(host: h.Host) -> None:
            url = urls[host.name]
            # python3-venv from Debian's archive, through the harness's apt proxy (untouched for Debian's hosts).
            ok(host, "apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv")
            ok(host, ["python3", "-m", "venv", VENV])
            pip = [f"{VENV}/bin/pip", "install", "-q", "--no-cache-dir", "--disable-pip-version-check"]
            ok(host, [*pip, "--index-url", f"{url}/whl/{TORCH_VARIANT}/", f"torch=={TORCH_VERSION}"])
            ok(host, [*pip, "--index-url", f"{url}/simple/", "jax[cuda12]"])
            python = f"{VENV}/bin/python"
            results[host.name] = {
                "torch": last_json_line(ok(host, [python, "-"], input=TORCH_PROBE)),
                "jax": last_json_line(ok(host, [python, "-"], input=JAX_PROBE)),
                # the same probes on a host without nvidia-smi (the fake lives in /usr/local/bin)
                "torch_no_smi": last_json_line(
                    ok(host, ["env", "PATH=/usr/sbin:/usr/bin:/sbin:/bin", python, "-"], input=TORCH_PROBE)
                ),
                "jax_no_smi": last_json_line(
                    ok(host, ["env", "PATH=/usr/sbin:/usr/bin:/sbin:/bin", python, "-"], input=JAX_PROBE)
                ),
                "doc": ok(host, [python, "-c", "import torch, jax; print(torch.__doc__); print(jax.__doc__)"]),
                "python": ok(host, [python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"]).strip(),
            }
            # PyTorch's CPU variant from its own tree: no CUDA build, so no GPU even where nvidia-smi lists one.
            ok(
                host,
                [*pip, "--force-reinstall", "--no-deps", "--index-url", f"{url}/whl/cpu/", f"torch=={TORCH_VERSION}"],
            )
            results[host.name]["torch_cpu"] = last_json_line(ok(host, [python, "-"], input=TORCH_PROBE))
            # pip without the harness's proxy setting still reaches PyPI (https_proxy from /etc/environment).
            ok(host, [f"{VENV}/bin/pip", "download", "-q", "--no-deps", "--dest", "/root/pypi-check", "six"])

        h.run_parallel(hosts, exercise)

    gpus = h200_gpus()
    for host in hosts:
        got = results[host.name]
        assert got["python"] == {"12": "3.11", "13": "3.13"}[host.version_id]
        assert "TEST STAND-IN for PyTorch" in str(got["doc"]) and "TEST STAND-IN for JAX" in str(got["doc"])
        torch = TorchProbe.parse(got["torch"])
        assert torch.error is None, torch
        assert torch.torch == f"{TORCH_VERSION}+{TORCH_VARIANT}"
        assert torch.cuda_build == "12.6"
        assert torch.cuda_available, torch
        assert torch.arch_list == s.DEFAULT_ARCH_LIST
        assert len(torch.devices) == len(gpus)
        for device, gpu in zip(torch.devices, gpus, strict=True):
            assert device.name == gpu["name"]
            assert f"{device.cc[0]}.{device.cc[1]}" == gpu["compute_cap"]
            assert device.memory_mib == int(gpu["memory.total"].split()[0])
            assert device.bus_id == normalize_bus_id(gpu["pci.bus_id"])
            assert device.matmul_ok, device
            assert device.h2d_gbps is None  # never a made-up bandwidth
            assert device.bandwidth_error == s.PIN_MEMORY_ERROR
        jax = JaxProbe.parse(got["jax"])
        assert (jax.jax, jax.gpu_devices, jax.backend_error) == (JAX_VERSION, len(gpus), None)
        blind = TorchProbe.parse(got["torch_no_smi"])
        assert (blind.torch, blind.cuda_available, blind.devices, blind.arch_list) == (torch.torch, False, (), ())
        blind_jax = JaxProbe.parse(got["jax_no_smi"])
        assert blind_jax.gpu_devices == 0
        assert "nvidia-smi not found" in (blind_jax.backend_error or ""), blind_jax
        cpu = TorchProbe.parse(got["torch_cpu"])
        assert (cpu.torch, cpu.cuda_build, cpu.cuda_available, cpu.devices) == (f"{TORCH_VERSION}+cpu", None, False, ())
        paths = {r.path for r in server.requests_from(host.address) if r.status == 200}
        assert f"/whl/{TORCH_VARIANT}/torch/" in paths and "/simple/jax/" in paths, paths
