"""Local stand-ins for the public sources dlsetup provisions from but test hosts cannot reach.

Test hosts reach only this machine (see :mod:`harness`), so NVIDIA's CUDA apt repository and PyTorch's / JAX's
pip indexes are replaced here by small, real, locally built equivalents served over plain HTTP:

* :class:`StandinAptRepo`: a **flat** apt repository in NVIDIA's layout,
  ``<root>/compute/cuda/repos/<directory>/<arch>/`` (e.g. ``debian12/x86_64``), with ``.deb`` files built by
  ``dpkg-deb --build`` from :class:`DebPackage` specs, ``Packages``/``Packages.gz``, a ``Release`` (Origin
  ``NVIDIA``, Label ``NVIDIA CUDA``) with its detached ``Release.gpg`` and a clear-signed ``InRelease``, and the
  armored public key as ``3bf863cc.pub`` (the file name the product downloads).
  :class:`SigningKey` is a throw-away OpenPGP key (gpg, temporary ``GNUPGHOME``, no passphrase) exposing its
  ``fingerprint`` (40 upper-case hex) so tests can pin it; make a second one to test a refused key.
* :func:`build_wheel`, :func:`torch_wheel`, :func:`jax_wheel`: ``py3-none-any`` wheels built with zipfile
  (dist-info METADATA, WHEEL, RECORD; reproducible bytes). The stand-in ``torch`` implements exactly what
  ``dlsetup.verify.probes.TORCH_PROBE`` uses, on numpy, with the host's GPUs as its fake ``nvidia-smi``
  lists them; pinned memory is not emulated (``pin_memory()`` raises). The stand-in ``jax`` implements what
  ``JAX_PROBE`` uses. Both say in their docstrings that they are test stand-ins.
* :func:`add_to_index`: a PEP 503 "simple" index tree (``<root>/whl/<variant>/<project>/`` like PyTorch's,
  ``<root>/simple/<project>/`` like PyPI's); :func:`numpy_wheels` downloads real numpy wheels (cp311, cp313,
  manylinux x86_64) once into the integration test cache, since the stand-in torch depends on numpy.
* :class:`StandinServer`: a stdlib threaded HTTP server for one directory, listening on any number of
  addresses (a test host's ``host.gateway``), every request recorded; :meth:`StandinServer.stop` joins all
  threads.
* :func:`reach_directly` / :func:`stop_reaching_directly`: let one test host reach the server directly, past
  the harness proxies it is otherwise confined to (apt ``Acquire::http::Proxy::<address> "DIRECT"``; pip without
  ``proxy =`` but with ``trusted-host``, its https traffic to PyPI still going through ``https_proxy`` from
  ``/etc/environment``; the address added to ``no_proxy``). Hosts not passed to it see nothing new.
  :func:`install_apt_source` writes a keyring and a deb822 source the way the product does.

System tools needed on this machine: ``gpg`` (package ``gpg``), ``gpgconf`` (``gpgconf``), ``dpkg-deb``
(``dpkg``), ``gzip``; :func:`missing_tools` names what is missing. ``apt-ftparchive`` is not needed: the index
files are written here.
"""

from __future__ import annotations

import base64
import configparser
import contextlib
import email.utils
import functools
import gzip
import hashlib
import html
import io
import logging
import os
import re
import shutil
import socketserver
import subprocess
import sys
import tempfile
import threading
import zipfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import MappingProxyType
from typing import Any, Protocol
from urllib.parse import quote, urlsplit

from harness import cache_dir

LOG = logging.getLogger("dlsetup.tests.standin")
LOG.setLevel(logging.INFO)

# The key file name and Release labels of NVIDIA's CUDA repository, which the product expects.
NVIDIA_KEY_FILE = "3bf863cc.pub"
NVIDIA_ORIGIN = "NVIDIA"
NVIDIA_LABEL = "NVIDIA CUDA"

# The GPU query both stand-in frameworks run at import (the fake nvidia-smi of tests/fakes answers it).
GPU_QUERY = "index,name,pci.bus_id,memory.total,compute_cap"
DEFAULT_ARCH_LIST = ("sm_50", "sm_60", "sm_70", "sm_75", "sm_80", "sm_86", "sm_90")
PIN_MEMORY_ERROR = "stand-in torch: no pinned memory"
# PyTorch's index variants (https://download.pytorch.org/whl/<variant>/ there) → torch.version.cuda.
TORCH_VARIANTS: Mapping[str, str | None] = MappingProxyType({"cu126": "12.6", "cu130": "13.0", "cpu": None})

# numpy is a real dependency of the stand-in torch. 2.3.5 has cp311 (Debian 12) and cp313 (Debian 13) wheels.
NUMPY_VERSION = "2.3.5"
NUMPY_PLATFORM = "manylinux_2_28_x86_64"
NUMPY_PYTHONS = ("3.11", "3.13")

# Written on a host by reach_directly(); the originals are kept next to them for stop_reaching_directly().
APT_DIRECT_CONF = "/etc/apt/apt.conf.d/02dlsetup-test-standin"
PIP_CONF = "/etc/pip.conf"
ENVIRONMENT = "/etc/environment"
_ORIG_SUFFIX = ".dlsetup-standin-orig"

_GPG_TIMEOUT_S = 60
_REQUEST_TIMEOUT_S = 30.0  # an idle or stuck client cannot keep a handler thread (and stop()) waiting longer
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # fixed timestamps: the same spec gives the same wheel bytes and hashes


class StandinError(RuntimeError):
    """A stand-in could not be built or served."""


def missing_tools() -> list[str]:
    """Debian packages this module needs that are missing here (empty when everything is present)."""
    needs = {"gpg": "gpg", "gpgconf": "gpgconf", "dpkg-deb": "dpkg", "gzip": "gzip"}
    return sorted({package for tool, package in needs.items() if shutil.which(tool) is None})


def _run(cmd: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(list(cmd), capture_output=True, text=True, check=False, **kwargs)
    if result.returncode != 0:
        raise StandinError(f"{' '.join(cmd[:3])} ... failed (rc {result.returncode}): {result.stderr.strip()}")
    return result


# -- OpenPGP key -----------------------------------------------------------------------------------------------
class SigningKey:
    """A throw-away OpenPGP signing key in its own temporary ``GNUPGHOME`` (no passphrase).

    ``fingerprint`` is the primary key's (40 upper-case hex), ``public_armored`` the exported public key. Use as
    a context manager or call :meth:`close` (stops the gpg-agent it started and removes the home).
    """

    def __init__(
        self, uid: str = "dlsetup test stand-in of NVIDIA CUDA <standin@invalid>", algorithm: str = "ed25519"
    ) -> None:
        # Short path: gpg-agent's socket lives in the home when /run/user/<uid> does not exist (108-byte limit).
        self.home = Path(tempfile.mkdtemp(prefix="dlst-gpg-"))
        self.home.chmod(0o700)
        self.uid = uid
        try:
            # "sign" only and no expiry: like NVIDIA's key, a primary key that signs the repository itself.
            self._gpg("--passphrase", "", "--quick-generate-key", uid, algorithm, "sign", "never")
            listing = self._gpg("--with-colons", "--fixed-list-mode", "--list-keys", uid).stdout
            match = re.search(r"(?m)^pub:.*\nfpr:+([0-9A-F]{40}):", listing)
            if match is None:
                raise StandinError(f"gpg listed no primary key fingerprint:\n{listing}")
            self.fingerprint = match.group(1)
            self.public_armored = self._gpg("--armor", "--export", self.fingerprint).stdout
        except BaseException:
            self.close()
            raise

    def _gpg(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return _run(
            ["gpg", "--homedir", str(self.home), "--batch", "--no-tty", "--pinentry-mode", "loopback", *args],
            input=input,
            timeout=_GPG_TIMEOUT_S,
        )

    def clearsign(self, text: str) -> str:
        # SHA-512: apt's verifiers (gpgv on 12, sqv on 13) refuse SHA-1 signatures.
        return self._gpg("--local-user", self.fingerprint, "--digest-algo", "SHA512", "--clearsign", input=text).stdout

    def detach_sign(self, text: str) -> str:
        return self._gpg(
            "--local-user", self.fingerprint, "--digest-algo", "SHA512", "--armor", "--detach-sign", input=text
        ).stdout

    def close(self) -> None:
        if self.home.exists():
            subprocess.run(
                ["gpgconf", "--homedir", str(self.home), "--kill", "all"], capture_output=True, check=False, timeout=30
            )
            shutil.rmtree(self.home, ignore_errors=True)

    def __enter__(self) -> SigningKey:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- apt repository --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DebFile:
    """A file a stand-in package ships."""

    content: bytes | str
    mode: int = 0o644


@dataclass(frozen=True)
class DebPackage:
    """A stand-in ``.deb``: ``files`` maps absolute paths to contents (or :class:`DebFile` for a mode);
    ``scripts`` maps maintainer script names (``preinst``, ``postinst``, ``prerm``, ``postrm``) to their text."""

    name: str
    version: str
    architecture: str = "amd64"  # or "all"
    depends: Sequence[str] = ()
    provides: Sequence[str] = ()
    conflicts: Sequence[str] = ()
    files: Mapping[str, DebFile | bytes | str] = field(default_factory=dict)
    scripts: Mapping[str, str] = field(default_factory=dict)
    description: str = "dlsetup test stand-in package"
    section: str = "multiverse/devel"  # NVIDIA's repository uses Ubuntu-style sections

    @property
    def filename(self) -> str:
        version = self.version.split(":", 1)[-1]  # an epoch is not part of the file name
        return f"{self.name}_{version}_{self.architecture}.deb"

    def control(self, installed_size_kib: int) -> str:
        fields = {
            "Package": self.name,
            "Version": self.version,
            "Architecture": self.architecture,
            "Maintainer": "dlsetup tests <standin@invalid>",
            "Installed-Size": str(installed_size_kib),
            "Depends": ", ".join(self.depends),
            "Provides": ", ".join(self.provides),
            "Conflicts": ", ".join(self.conflicts),
            "Section": self.section,
            "Priority": "optional",
            "Description": f"{self.description}\n This is a test stand-in, not NVIDIA software.",
        }
        return "".join(f"{k}: {v}\n" for k, v in fields.items() if v)


_MAINTAINER_SCRIPTS = frozenset({"preinst", "postinst", "prerm", "postrm"})


def build_deb(package: DebPackage, dest_dir: Path) -> Path:
    """Build ``package`` with ``dpkg-deb --build`` into ``dest_dir``; returns the ``.deb``."""
    unknown = set(package.scripts) - _MAINTAINER_SCRIPTS
    if unknown:
        raise ValueError(f"unknown maintainer scripts {sorted(unknown)}")
    with tempfile.TemporaryDirectory(prefix="dlst-deb-") as tmp:
        tree = Path(tmp) / "tree"
        total = 0
        for path, spec in package.files.items():
            if not path.startswith("/"):
                raise ValueError(f"{package.name}: file paths must be absolute, got {path!r}")
            entry = spec if isinstance(spec, DebFile) else DebFile(spec)
            data = entry.content.encode() if isinstance(entry.content, str) else entry.content
            target = tree / path.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            target.chmod(entry.mode)
            total += len(data)
        control_dir = tree / "DEBIAN"
        control_dir.mkdir(parents=True)
        (control_dir / "control").write_text(package.control(max(1, -(-total // 1024))))
        for name, text in package.scripts.items():
            script = control_dir / name
            script.write_text(text)
            script.chmod(0o755)
        for directory in [tree, *(p for p in tree.rglob("*") if p.is_dir())]:
            directory.chmod(0o755)  # the umask here must not decide the modes on the host
        dest_dir.mkdir(parents=True, exist_ok=True)
        out = dest_dir / package.filename
        _run(["dpkg-deb", "--root-owner-group", "-Zgzip", "--build", str(tree), str(out)])
    return out


def _hashes(data: bytes) -> dict[str, str]:
    return {
        # apt's index format lists these too; apt itself trusts only the SHA-2 sums
        "MD5Sum": hashlib.md5(data).hexdigest(),
        "SHA1": hashlib.sha1(data).hexdigest(),
        "SHA256": hashlib.sha256(data).hexdigest(),
        "SHA512": hashlib.sha512(data).hexdigest(),
    }


class StandinAptRepo:
    """A flat apt repository in NVIDIA's layout: ``<root>/compute/cuda/repos/<directory>/<arch>/``.

    ``build(packages, key)`` (re)writes the ``.deb`` files, ``Packages``, ``Packages.gz``, ``Release``,
    ``Release.gpg``, ``InRelease`` and ``3bf863cc.pub``. :meth:`url` gives the repository URL under a server's
    base URL, which is what the product's ``dlsetup_nvidia_repo_url`` takes.
    """

    def __init__(self, root: Path, directory: str = "debian12", arch: str = "x86_64") -> None:
        self.root = Path(root)
        self.directory = directory
        self.arch = arch

    @property
    def relative(self) -> str:
        return f"compute/cuda/repos/{self.directory}/{self.arch}"

    @property
    def path(self) -> Path:
        return self.root / self.relative

    def url(self, base_url: str) -> str:
        return f"{base_url.rstrip('/')}/{self.relative}"

    def build(self, packages: Iterable[DebPackage], key: SigningKey) -> Path:
        packages = list(packages)
        names = [p.name for p in packages]
        if len(set(zip(names, (p.version for p in packages), strict=True))) != len(packages):
            raise ValueError(f"duplicate package versions in {names}")
        if self.path.exists():
            shutil.rmtree(self.path)
        self.path.mkdir(parents=True)
        stanzas = []
        for package in packages:
            deb = build_deb(package, self.path)
            data = deb.read_bytes()
            sums = _hashes(data)
            # The control data as built (what apt-ftparchive reads), plus where the file is and its hashes.
            control = _run(["dpkg-deb", "--field", str(deb)]).stdout
            index_fields = (
                f"Filename: ./{deb.name}\nSize: {len(data)}\n"
                f"MD5sum: {sums['MD5Sum']}\nSHA1: {sums['SHA1']}\nSHA256: {sums['SHA256']}\n"
            )
            head, found, tail = control.partition("\nDescription:")
            if not found:
                raise StandinError(f"{deb.name}: no Description in its control data")
            stanza = f"{head}\n{index_fields}Description:{tail}"
            stanzas.append(stanza if stanza.endswith("\n") else stanza + "\n")
        packages_text = "\n".join(stanzas).encode()
        (self.path / "Packages").write_bytes(packages_text)
        # mtime=0: the same packages give the same Packages.gz bytes.
        (self.path / "Packages.gz").write_bytes(gzip.compress(packages_text, mtime=0))
        release = self._release({"Packages": packages_text, "Packages.gz": (self.path / "Packages.gz").read_bytes()})
        (self.path / "Release").write_text(release)
        (self.path / "Release.gpg").write_text(key.detach_sign(release))
        (self.path / "InRelease").write_text(key.clearsign(release))
        (self.path / NVIDIA_KEY_FILE).write_text(key.public_armored)
        return self.path

    def _release(self, files: Mapping[str, bytes]) -> str:
        # Like NVIDIA's: no Suite/Codename (a flat repository, "Suites: /"), a non-standard Architecture line.
        lines = [
            f"Origin: {NVIDIA_ORIGIN}",
            f"Label: {NVIDIA_LABEL}",
            f"Architecture: {self.arch}",
            f"Date: {email.utils.formatdate(usegmt=True)}",
        ]
        for algorithm in ("MD5Sum", "SHA1", "SHA256", "SHA512"):
            lines.append(f"{algorithm}:")
            lines += [f" {_hashes(data)[algorithm]} {len(data):>16} {name}" for name, data in sorted(files.items())]
        lines.append("Acquire-By-Hash: no")
        return "\n".join(lines) + "\n"


# -- wheels ----------------------------------------------------------------------------------------------------
def _dist_name(name: str) -> str:
    """The wheel file-name form of a project name (binary distribution format: runs of -_. become _)."""
    return re.sub(r"[-_.]+", "_", name).lower()


def project_name(name: str) -> str:
    """PEP 503 normalised project name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def build_wheel(
    dest_dir: Path,
    name: str,
    version: str,
    files: Mapping[str, str | bytes],
    *,
    summary: str,
    requires: Sequence[str] = (),
    extras: Sequence[str] = (),
    requires_python: str | None = ">=3.9",
    description: str = "",
) -> Path:
    """Write a ``py3-none-any`` wheel of ``files`` (paths relative to site-packages) into ``dest_dir``.

    ``requires`` become ``Requires-Dist``, ``extras`` ``Provides-Extra`` (with no requirements of their own).
    """
    dist = _dist_name(name)
    info = f"{dist}-{version}.dist-info"
    metadata = [
        "Metadata-Version: 2.1",
        f"Name: {name}",
        f"Version: {version}",
        f"Summary: {summary}",
        *([f"Requires-Python: {requires_python}"] if requires_python else []),
        *(f"Requires-Dist: {r}" for r in requires),
        *(f"Provides-Extra: {e}" for e in extras),
    ]
    contents: dict[str, bytes] = {
        path: (data.encode() if isinstance(data, str) else data) for path, data in sorted(files.items())
    }
    contents[f"{info}/METADATA"] = ("\n".join(metadata) + "\n\n" + description).encode()
    contents[f"{info}/WHEEL"] = (
        b"Wheel-Version: 1.0\nGenerator: dlsetup-tests-standin\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    )
    record = "".join(f"{path},{_record_hash(data)},{len(data)}\n" for path, data in contents.items())
    contents[f"{info}/RECORD"] = (record + f"{info}/RECORD,,\n").encode()
    dest_dir.mkdir(parents=True, exist_ok=True)
    out = dest_dir / f"{dist}-{version}-py3-none-any.whl"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path, data in contents.items():
            entry = zipfile.ZipInfo(path, date_time=_ZIP_DATE)
            entry.external_attr = 0o644 << 16
            entry.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(entry, data)
    out.write_bytes(buffer.getvalue())
    return out


# The nvidia-smi query shared by both stand-in frameworks (written into each wheel as _standin_gpus.py).
_GPUS_SOURCE = '''\
"""The host's GPUs as nvidia-smi lists them (dlsetup test stand-in; no GPU is used)."""
import subprocess

QUERY = "@GPU_QUERY@"


class GPU:
    def __init__(self, index, name, bus_id, memory_mib, major, minor):
        self.index, self.name, self.bus_id = index, name, bus_id
        self.memory_mib, self.major, self.minor = memory_mib, major, minor
        domain, bus, rest = bus_id.split(":")
        self.pci_domain_id, self.pci_bus_id = int(domain, 16), int(bus, 16)
        self.pci_device_id = int(rest.split(".")[0], 16)


def query():
    """([GPU, ...], None), or ([], why there is none)."""
    cmd = ["nvidia-smi", "--query-gpu=" + QUERY, "--format=csv,noheader,nounits"]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except FileNotFoundError:
        return [], "nvidia-smi not found: no NVIDIA driver on this system"
    except (OSError, subprocess.SubprocessError) as exc:
        return [], "nvidia-smi failed: %s" % exc
    if res.returncode != 0:
        said = (res.stdout.strip() or res.stderr.strip() or "no output").splitlines()[0]
        return [], "nvidia-smi exited with %d: %s" % (res.returncode, said)
    gpus = []
    for line in res.stdout.splitlines():
        if not line.strip():
            continue
        parts = [p.strip() for p in line.split(",")]
        try:
            index, name = int(parts[0]), ", ".join(parts[1:-3])
            bus_id, memory, cap = parts[-3], int(float(parts[-2])), parts[-1]
            major, minor = (int(x) for x in cap.split("."))
            gpus.append(GPU(index, name, bus_id, memory, major, minor))
        except (ValueError, IndexError):
            return [], "nvidia-smi printed an unexpected line: %r" % line
    if not gpus:
        return [], "nvidia-smi lists no GPU"
    return gpus, None
'''.replace("@GPU_QUERY@", GPU_QUERY)

_TORCH_INIT = '''\
"""dlsetup TEST STAND-IN for PyTorch. This is NOT PyTorch.

It exists only so dlsetup's integration tests can install "torch" from a local index and run dlsetup's
PyTorch probe on hosts with fake GPUs. Tensors are numpy arrays; "CUDA" devices are the GPUs that
nvidia-smi lists (read once at import), and nothing runs on a GPU. Pinned host memory is not emulated:
Tensor.pin_memory() raises RuntimeError, so no bandwidth number is ever made up.
"""
import numpy as _np

from . import version
from . import cuda
from ._tensor import (Tensor, device, dtype, float32, float, float64, double, uint8, int64, long,
                      randn, empty, zeros, ones, tensor, from_numpy, allclose, matmul, manual_seed)

__version__ = version.__version__
STANDIN = True
'''

_TORCH_TENSOR = '''\
"""Tensors of the dlsetup test stand-in torch: numpy arrays tagged with a device (nothing runs on a GPU)."""
import numpy as _np

from . import cuda as _cuda

PIN_MEMORY_ERROR = @PIN_MEMORY_ERROR@


class dtype:
    def __init__(self, name, np_type):
        self.name, self.np_type = name, np_type

    def __repr__(self):
        return "torch." + self.name


float32 = float = dtype("float32", _np.float32)
float64 = double = dtype("float64", _np.float64)
uint8 = dtype("uint8", _np.uint8)
int64 = long = dtype("int64", _np.int64)
_DTYPES = {d.np_type: d for d in (float32, float64, uint8, int64)}


class device:
    def __init__(self, type, index=None):
        if isinstance(type, device):
            type, index = type.type, type.index
        elif isinstance(type, int):
            type, index = "cuda", type
        elif ":" in type:
            type, _, number = type.partition(":")
            index = int(number)
        if type not in ("cpu", "cuda"):
            raise RuntimeError("Expected one of cpu, cuda device type at start of device string: " + type)
        if type == "cuda":
            index = _cuda._check(index)
        self.type, self.index = type, index

    def __eq__(self, other):
        return isinstance(other, device) and (self.type, self.index) == (other.type, other.index)

    def __hash__(self):
        return hash((self.type, self.index))

    def __str__(self):
        return self.type if self.index is None else "%s:%d" % (self.type, self.index)

    def __repr__(self):
        return "device(type=%r%s)" % (self.type, "" if self.index is None else ", index=%d" % self.index)


_CPU = device("cpu")
_device = device  # for methods whose "device" parameter (torch's name) hides the class


class Tensor:
    def __init__(self, array, device=None):
        self._a = _np.asarray(array)
        self.device = _CPU if device is None else device

    @property
    def dtype(self):
        return _DTYPES.get(self._a.dtype.type, self._a.dtype)

    @property
    def shape(self):
        return tuple(self._a.shape)

    def size(self, dim=None):
        return self.shape if dim is None else self.shape[dim]

    def dim(self):
        return self._a.ndim

    def numel(self):
        return int(self._a.size)

    @property
    def is_cuda(self):
        return self.device.type == "cuda"

    def to(self, target, non_blocking=False):
        target = target if isinstance(target, device) else device(target)
        return self if target == self.device else Tensor(self._a.copy(), target)

    def cuda(self, device=None, non_blocking=False):
        return self.to(_device("cuda", _cuda.current_device() if device is None else device))

    def cpu(self):
        return self.to(_CPU)

    def pin_memory(self):
        raise RuntimeError(PIN_MEMORY_ERROR)

    def is_pinned(self):
        return False

    def copy_(self, src, non_blocking=False):
        _np.copyto(self._a, src._a)
        return self

    def numpy(self):
        if self.is_cuda:
            raise TypeError("can't convert %s device type tensor to numpy. Use Tensor.cpu() first." % self.device)
        return self._a

    def item(self):
        return self._a.item()

    def tolist(self):
        return self._a.tolist()

    def __matmul__(self, other):
        _same_device(self, other)
        return Tensor(self._a @ other._a, self.device)

    def __len__(self):
        return len(self._a)

    def __repr__(self):
        suffix = "" if self.device.type == "cpu" else ", device='%s'" % self.device
        return "tensor(%s%s)" % (_np.array2string(self._a, threshold=20), suffix)


def _same_device(a, b):
    if a.device != b.device:
        raise RuntimeError("Expected all tensors to be on the same device, but found at least two devices, "
                           "%s and %s!" % (a.device, b.device))


def _shape(size):
    if len(size) == 1 and isinstance(size[0], (tuple, list)):
        return tuple(size[0])
    return tuple(size)


def _place(array, dtype, device_):
    if dtype is not None:
        array = array.astype(dtype.np_type, copy=False)
    return Tensor(array, _CPU if device_ is None else device(device_))


_RNG = _np.random.default_rng()


def manual_seed(seed):
    global _RNG
    _RNG = _np.random.default_rng(seed)


def randn(*size, dtype=None, device=None):
    return _place(_RNG.standard_normal(_shape(size), dtype=_np.float32), dtype, device)


def empty(*size, dtype=None, device=None):
    return _place(_np.empty(_shape(size), dtype=(dtype or float32).np_type), None, device)


def zeros(*size, dtype=None, device=None):
    return _place(_np.zeros(_shape(size), dtype=(dtype or float32).np_type), None, device)


def ones(*size, dtype=None, device=None):
    return _place(_np.ones(_shape(size), dtype=(dtype or float32).np_type), None, device)


def tensor(data, dtype=None, device=None):
    return _place(_np.array(data), dtype, device)


def from_numpy(array):
    return Tensor(array)


def matmul(a, b):
    return a @ b


def allclose(input, other, rtol=1e-05, atol=1e-08, equal_nan=False):
    _same_device(input, other)
    return bool(_np.allclose(input._a, other._a, rtol=rtol, atol=atol, equal_nan=equal_nan))
'''

_TORCH_CUDA = '''\
"""torch.cuda of the dlsetup test stand-in: the GPUs nvidia-smi lists at import; nothing runs on them."""
import warnings as _warnings

from .. import version as _version
from .._standin_gpus import query as _query

if _version.cuda is None:
    _GPUS, unavailable_reason = [], None  # a CPU build: no CUDA, and nothing to warn about (as real torch)
else:
    _GPUS, unavailable_reason = _query()
_current = 0


class _CudaDeviceProperties:
    def __init__(self, gpu):
        self.name, self.major, self.minor = gpu.name, gpu.major, gpu.minor
        self.total_memory = gpu.memory_mib * 1024 * 1024
        self.pci_bus_id, self.pci_device_id, self.pci_domain_id = gpu.pci_bus_id, gpu.pci_device_id, gpu.pci_domain_id
        self.is_integrated = 0
        self.is_multi_gpu_board = 0

    def __repr__(self):
        return "_CudaDeviceProperties(name='%s', major=%d, minor=%d, total_memory=%dMB)" % (
            self.name, self.major, self.minor, self.total_memory // (1024 * 1024))


def is_available():
    if _version.cuda is None:
        return False
    if unavailable_reason is not None:
        _warnings.warn("CUDA initialization: " + unavailable_reason, UserWarning, stacklevel=2)
        return False
    return True


def is_initialized():
    return bool(_GPUS)


def device_count():
    return len(_GPUS)


def _check(device):
    """The index of a CUDA device (int, "cuda:N", torch.device or None for the current one)."""
    if _version.cuda is None:
        raise AssertionError("Torch not compiled with CUDA enabled")
    if not _GPUS:
        raise RuntimeError("Found no NVIDIA driver on your system (stand-in torch: %s)" % unavailable_reason)
    if device is None:
        index = _current
    elif isinstance(device, int):
        index = device
    elif isinstance(device, str):
        index = int(device.partition(":")[2] or _current)
    else:
        index = _current if device.index is None else device.index
    if not 0 <= index < len(_GPUS):
        raise RuntimeError("CUDA error: invalid device ordinal")
    return index


def get_device_properties(device=None):
    return _CudaDeviceProperties(_GPUS[_check(device)])


def get_device_name(device=None):
    return get_device_properties(device).name


def get_device_capability(device=None):
    props = get_device_properties(device)
    return props.major, props.minor


def get_arch_list():
    return list(_version.ARCH_LIST) if is_available() else []


def set_device(device):
    global _current
    _current = _check(device)


def current_device():
    _check(None)
    return _current


def synchronize(device=None):
    _check(device)
'''


def torch_wheel(
    dest_dir: Path,
    version: str = "2.14.0+cu126",
    cuda: str | None = "12.6",
    arch_list: Sequence[str] = DEFAULT_ARCH_LIST,
) -> Path:
    """The stand-in ``torch`` wheel (``Requires-Dist: numpy``). ``cuda=None`` makes a CPU build."""
    version_py = (
        '"""Build facts of the dlsetup test stand-in torch (not PyTorch)."""\n'
        f"__version__ = {version!r}\ncuda = {cuda!r}\nhip = None\ngit_version = 'dlsetup-test-standin'\n"
        f"debug = False\nARCH_LIST = {list(arch_list)!r}\n"
    )
    return build_wheel(
        dest_dir,
        "torch",
        version,
        {
            "torch/__init__.py": _TORCH_INIT,
            "torch/version.py": version_py,
            "torch/_tensor.py": _TORCH_TENSOR.replace("@PIN_MEMORY_ERROR@", repr(PIN_MEMORY_ERROR)),
            "torch/cuda/__init__.py": _TORCH_CUDA,
            "torch/_standin_gpus.py": _GPUS_SOURCE,
        },
        summary="dlsetup test stand-in for PyTorch (not PyTorch)",
        requires=["numpy"],
        description="A test stand-in: see the torch package docstring.\n",
    )


_JAX_INIT = '''\
"""dlsetup TEST STAND-IN for JAX. This is NOT JAX.

It exists only so dlsetup's integration tests can install "jax" from a local index and run dlsetup's JAX
probe: jax.devices("gpu") returns one device per GPU that nvidia-smi lists (read once at import), and raises
RuntimeError when there is none, as real jax does. Nothing runs on a GPU.
"""
from . import version
from ._standin_gpus import query as _query

__version__ = version.__version__
STANDIN = True
_GPUS, unavailable_reason = _query()


class Device:
    def __init__(self, id, platform, device_kind):
        self.id, self.platform, self.device_kind = id, platform, device_kind
        self.process_index = 0
        self.client = None

    def __repr__(self):
        return "%sDevice(id=%d)" % ("Cuda" if self.platform == "gpu" else "Cpu", self.id)


def _gpu_devices():
    return [Device(g.index, "gpu", g.name) for g in _GPUS]


def default_backend():
    return "gpu" if _GPUS else "cpu"


def devices(backend=None):
    backend = default_backend() if backend is None else str(backend).lower()
    if backend in ("gpu", "cuda"):
        if not _GPUS:
            raise RuntimeError("Unknown backend: '%s' requested, but no platforms that are instances of %s are "
                               "present. Platforms present are: cpu (stand-in jax: %s)"
                               % (backend, backend, unavailable_reason))
        return _gpu_devices()
    if backend == "cpu":
        return [Device(0, "cpu", "cpu")]
    raise RuntimeError("Unknown backend %s" % backend)


def local_devices(process_index=None, backend=None):
    return devices(backend)


def device_count(backend=None):
    return len(devices(backend))


def local_device_count(backend=None):
    return device_count(backend)
'''


def jax_wheel(dest_dir: Path, version: str = "0.7.2", extras: Sequence[str] = ("cuda12", "cuda13")) -> Path:
    """The stand-in ``jax`` wheel; ``extras`` are declared (``jax[cuda12]`` installs) but pull in nothing."""
    return build_wheel(
        dest_dir,
        "jax",
        version,
        {
            "jax/__init__.py": _JAX_INIT,
            "jax/version.py": f'"""Version of the dlsetup test stand-in jax (not JAX)."""\n__version__ = {version!r}\n',
            "jax/_standin_gpus.py": _GPUS_SOURCE,
        },
        summary="dlsetup test stand-in for JAX (not JAX)",
        extras=extras,
        description="A test stand-in: see the jax package docstring.\n",
    )


# -- pip index -------------------------------------------------------------------------------------------------
def _wheel_project(path: Path) -> str:
    return project_name(path.name.split("-", 1)[0])


def _page(title: str, links: Iterable[tuple[str, str]]) -> str:
    body = "".join(f'<a href="{html.escape(href)}">{html.escape(text)}</a><br>\n' for href, text in links)
    return (
        "<!DOCTYPE html>\n<html><head>"
        '<meta name="pypi:repository-version" content="1.0">'
        f"<title>{html.escape(title)}</title></head>\n<body><h1>{html.escape(title)}</h1>\n{body}</body></html>\n"
    )


def add_to_index(index_dir: Path, wheels: Iterable[Path]) -> Path:
    """Put ``wheels`` into the PEP 503 index at ``index_dir`` (``<index_dir>/<project>/<file>``) and rewrite
    its pages: ``index.html`` listing the projects, one per project listing its files with ``#sha256=``."""
    index_dir.mkdir(parents=True, exist_ok=True)
    for wheel in wheels:
        target = index_dir / _wheel_project(wheel) / wheel.name
        target.parent.mkdir(exist_ok=True)
        target.unlink(missing_ok=True)
        try:
            os.link(wheel, target)  # the cache and the index usually share a file system: no 16 MB copies
        except OSError:
            shutil.copyfile(wheel, target)
    projects = sorted(p for p in index_dir.iterdir() if p.is_dir())
    for project in projects:
        links = [
            (f"{quote(f.name)}#sha256={hashlib.sha256(f.read_bytes()).hexdigest()}", f.name)
            for f in sorted(project.glob("*.whl"))
        ]
        (project / "index.html").write_text(_page(f"Links for {project.name}", links))
    (index_dir / "index.html").write_text(_page("Simple index", [(f"{p.name}/", p.name) for p in projects]))
    return index_dir


def numpy_wheels(
    version: str = NUMPY_VERSION, pythons: Sequence[str] = NUMPY_PYTHONS, platform: str = NUMPY_PLATFORM
) -> list[Path]:
    """Real numpy wheels for ``pythons`` (CPython, ``platform``), downloaded from PyPI once into the
    integration test cache (``harness.cache_dir()``), then reused."""
    dest = cache_dir() / f"standin-numpy-{version}-{platform}-{'-'.join(pythons)}"
    if not (dest / ".complete").exists():
        # Download into a fresh directory and rename: a concurrent or interrupted run never sees half a set.
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-numpy-", dir=dest.parent))
        try:
            for python in pythons:
                subprocess.run(
                    [sys.executable, "-m", "pip", "download", "-q", "--dest", str(tmp), "--only-binary=:all:",
                     "--implementation", "cp", "--python-version", python, "--platform", platform,
                     f"numpy=={version}"],
                    check=True, timeout=600,
                )  # fmt: skip
            (tmp / ".complete").touch()
            if not (dest / ".complete").exists():
                shutil.rmtree(dest, ignore_errors=True)
                tmp.rename(dest)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    wheels = sorted(dest.glob("numpy-*.whl"))
    tags = {f"cp{p.replace('.', '')}" for p in pythons}
    if {w.name.split("-")[2] for w in wheels} != tags:
        raise StandinError(f"{dest} holds {[w.name for w in wheels]}, expected numpy wheels for {sorted(tags)}")
    return wheels


# -- HTTP server -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Request:
    client: str
    method: str
    path: str
    status: int


class _Handler(SimpleHTTPRequestHandler):
    server: _Listener  # type: ignore[assignment]
    timeout = _REQUEST_TIMEOUT_S
    server_version = "dlsetup-test-standin"

    # SimpleHTTPRequestHandler would guess a Content-Encoding-free type anyway; be explicit for the index files.
    extensions_map = {  # noqa: RUF012  # the base class declares it as a class attribute
        **SimpleHTTPRequestHandler.extensions_map,
        ".whl": "application/octet-stream",
        ".deb": "application/vnd.debian.binary-package",
        ".gz": "application/gzip",
        ".pub": "application/pgp-keys",
        ".gpg": "application/pgp-signature",
        "": "text/plain",
    }

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        try:
            status = int(code)
        except ValueError:
            status = 0
        self.server.owner._record(Request(self.client_address[0], self.command or "-", self.path, status))

    def log_message(self, format: str, *args: object) -> None:
        LOG.debug("standin %s %s", self.client_address[0], format % args)


class _Listener(ThreadingHTTPServer):
    # Non-daemon request threads, joined by server_close(): stop() leaves no thread behind.
    daemon_threads = False
    block_on_close = True

    def __init__(self, address: tuple[str, int], handler: Any, owner: StandinServer) -> None:
        self.owner = owner
        super().__init__(address, handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind() calls getfqdn(): a reverse DNS lookup of a test address can stall for seconds.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), int(self.server_address[1])


class StandinServer:
    """Serve ``directory`` over plain HTTP on one or more addresses (stdlib, a thread per connection).

    ``listen(address, port=0)`` starts a listener and returns its base URL (``http://address:port``);
    ``unlisten(address)`` stops it; ``stop()`` stops all and joins their threads. ``requests`` records every
    request answered (client, method, path, status), so tests can prove a host really fetched from here.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        self._listeners: dict[str, tuple[_Listener, threading.Thread]] = {}

    def listen(self, address: str, port: int = 0) -> str:
        with self._lock:
            if address in self._listeners:
                raise ValueError(f"already listening on {address}")
        handler = functools.partial(_Handler, directory=str(self.directory))
        listener = _Listener((address, port), handler, self)
        thread = threading.Thread(
            target=listener.serve_forever, kwargs={"poll_interval": 0.2}, name=f"dlsetup-standin-{address}"
        )
        thread.start()
        with self._lock:
            self._listeners[address] = (listener, thread)
        url = self.url(address)
        LOG.info("standin: serving %s at %s", self.directory, url)
        return url

    def url(self, address: str) -> str:
        with self._lock:
            listener = self._listeners[address][0]
        host, port = listener.server_address[:2]
        return f"http://{host}:{port}"

    def _record(self, request: Request) -> None:
        with self._lock:
            self.requests.append(request)

    def requests_from(self, client: str) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if r.client == client]

    def unlisten(self, address: str) -> None:
        with self._lock:
            entry = self._listeners.pop(address, None)
        if entry is None:
            return
        listener, thread = entry
        listener.shutdown()  # ends serve_forever
        listener.server_close()  # closes the socket and joins the request threads
        thread.join()

    def stop(self) -> None:
        """Stop every listener and join every thread. Safe to call twice."""
        with self._lock:
            addresses = list(self._listeners)
        for address in addresses:
            self.unlisten(address)

    def __enter__(self) -> StandinServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- pointing a test host at the server ------------------------------------------------------------------------
class _HostLike(Protocol):
    root: Path

    def write_file(self, path: str, content: str | bytes, mode: int = 0o644) -> Path: ...


def _read(host: _HostLike, path: str) -> str:
    target = host.root / path.lstrip("/")
    return target.read_text() if target.exists() else ""


def _keep_original(host: _HostLike, path: str) -> None:
    original = host.root / (path.lstrip("/") + _ORIG_SUFFIX)
    if not original.exists():  # a second reach_directly() must not overwrite the true original
        original.write_text(_read(host, path))


def reach_directly(host: _HostLike, base_url: str) -> None:
    """Let ``host`` reach the stand-in server at ``base_url`` directly, past the harness proxies.

    * apt: ``Acquire::http::Proxy::<address> "DIRECT";`` (apt.conf(5)): only that address bypasses the
      apt proxy; Debian's mirrors still go through it.
    * pip: ``proxy =`` is dropped from ``/etc/pip.conf`` (pip sends every request, plain http included, to
      that proxy, which only tunnels CONNECT to PyPI) and ``trusted-host = <address>`` is added (the
      stand-in index is plain http). PyPI stays reachable: without ``proxy =`` pip uses ``https_proxy`` from
      ``/etc/environment`` (read at SSH login) for https URLs.
    * ``/etc/environment``: the address joins ``no_proxy``/``NO_PROXY`` for other clients.

    Changes only this host; :func:`stop_reaching_directly` puts the files back.
    """
    address = urlsplit(base_url).hostname
    if not address:
        raise ValueError(f"no host in {base_url!r}")
    host.write_file(APT_DIRECT_CONF, f'Acquire::http::Proxy::{address} "DIRECT";\n')
    _keep_original(host, PIP_CONF)
    pip = configparser.ConfigParser(interpolation=None)
    pip.read_string(_read(host, PIP_CONF))
    if not pip.has_section("global"):
        pip.add_section("global")
    pip.remove_option("global", "proxy")
    trusted = pip.get("global", "trusted-host", fallback="").split()
    pip.set("global", "trusted-host", " ".join(dict.fromkeys([*trusted, address])))
    out = io.StringIO()
    pip.write(out)
    host.write_file(PIP_CONF, out.getvalue())
    _keep_original(host, ENVIRONMENT)
    lines = _read(host, ENVIRONMENT).splitlines()
    for name in ("no_proxy", "NO_PROXY"):
        current = next((ln for ln in lines if ln.startswith(f"{name}=")), None)
        values = current.partition("=")[2].split(",") if current else ["localhost", "127.0.0.1"]
        updated = f"{name}={','.join(dict.fromkeys([*(v for v in values if v), address]))}"
        lines = [updated if ln == current else ln for ln in lines] if current else [*lines, updated]
    host.write_file(ENVIRONMENT, "\n".join(lines) + "\n")


def stop_reaching_directly(host: _HostLike) -> None:
    """Undo :func:`reach_directly` on ``host``."""
    (host.root / APT_DIRECT_CONF.lstrip("/")).unlink(missing_ok=True)
    for path in (PIP_CONF, ENVIRONMENT):
        original = host.root / (path.lstrip("/") + _ORIG_SUFFIX)
        if original.exists():
            host.write_file(path, original.read_text())
            original.unlink()


def install_apt_source(
    host: _HostLike, repo_url: str, key_armored: str, name: str = "dlsetup-standin-cuda"
) -> tuple[str, str]:
    """Write ``key_armored`` as ``/etc/apt/keyrings/<name>.asc`` and a deb822 source ``Signed-By`` it for the
    flat repository at ``repo_url`` (what the product writes for NVIDIA's repository). Returns both paths."""
    keyring = f"/etc/apt/keyrings/{name}.asc"
    source = f"/etc/apt/sources.list.d/{name}.sources"
    host.write_file(keyring, key_armored)
    host.write_file(
        source,
        f"# dlsetup test stand-in of NVIDIA's CUDA repository\n"
        f"Types: deb\nURIs: {repo_url.rstrip('/')}/\nSuites: /\nSigned-By: {keyring}\n",
    )
    return keyring, source


def remove_apt_source(host: _HostLike, name: str = "dlsetup-standin-cuda") -> None:
    for path in (f"/etc/apt/keyrings/{name}.asc", f"/etc/apt/sources.list.d/{name}.sources"):
        (host.root / path.lstrip("/")).unlink(missing_ok=True)


# -- everything together ---------------------------------------------------------------------------------------
@dataclass
class Standins:
    """A built tree of both stand-ins under ``root`` (see :func:`build_standins`)."""

    root: Path
    key: SigningKey
    repos: dict[str, StandinAptRepo]  # by directory: debian12, debian13
    wheels: dict[str, Path]  # "torch-<variant>" (e.g. torch-cu126), "jax" → the stand-in wheels built

    def repo_for(self, version_id: str) -> StandinAptRepo:
        return self.repos[f"debian{version_id}"]


def build_standins(
    root: Path,
    key: SigningKey,
    packages: Iterable[DebPackage],
    *,
    directories: Sequence[str] = ("debian12", "debian13"),
    torch_version: str = "2.14.0",
    torch_variants: Mapping[str, str | None] = TORCH_VARIANTS,
    arch_list: Sequence[str] = DEFAULT_ARCH_LIST,
    jax_version: str = "0.7.2",
    extra_wheels: Iterable[Path] = (),
) -> Standins:
    """Build the CUDA repository stand-in for each of ``directories`` with ``packages``, and the pip index:
    for each ``torch_variants`` entry (variant → CUDA version, ``None`` for a CPU build) ``whl/<variant>/`` with
    torch ``<torch_version>+<variant>``, and ``simple/`` with jax; every tree also gets ``extra_wheels`` (e.g.
    :func:`numpy_wheels`)."""
    packages = list(packages)
    extra = list(extra_wheels)
    repos = {d: StandinAptRepo(root, d) for d in directories}
    for repo in repos.values():
        repo.build(packages, key)
    built = root / "built-wheels"
    wheels: dict[str, Path] = {}
    for variant, cuda in torch_variants.items():
        wheel = torch_wheel(built / variant, f"{torch_version}+{variant}", cuda, arch_list if cuda else ())
        add_to_index(root / "whl" / variant, [wheel, *extra])
        wheels[f"torch-{variant}"] = wheel
    wheels["jax"] = jax_wheel(built, jax_version)
    add_to_index(root / "simple", [wheels["jax"], *extra])
    return Standins(root=root, key=key, repos=repos, wheels=wheels)


@contextlib.contextmanager
def served(directory: Path) -> Iterator[StandinServer]:
    """A :class:`StandinServer` for ``directory``, stopped (threads joined) on exit."""
    server = StandinServer(directory)
    try:
        yield server
    finally:
        server.stop()
