"""The probes: Python snippets run on the verified host with its own interpreter (each prints one JSON line),
and what they report as typed models (:class:`TorchProbe`, :class:`JaxProbe`).

A probe's JSON comes from whatever Python the host has, so the models take what they know and ignore the rest; a
probe that could not run is a model with ``error`` set.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from pydantic import ConfigDict, Field, TypeAdapter, ValidationError
from pydantic.dataclasses import dataclass

from dlsetup.facts.hwparse.common import normalize_bus_id

_LENIENT = ConfigDict(extra="ignore")

TORCH_PROBE = r"""
import json, os, subprocess, time
os.environ.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
out = {"torch": None}
try:
    import torch
except Exception as exc:  # not installed, or broken
    out["error"] = "PyTorch does not import: %s" % (str(exc).splitlines() or [type(exc).__name__])[0]
    print(json.dumps(out)); raise SystemExit(0)
out["torch"] = torch.__version__
out["cuda_build"] = torch.version.cuda
try:
    out["cuda_available"] = bool(torch.cuda.is_available())
except Exception as exc:
    out["cuda_available"] = False
    out["cuda_error"] = str(exc).splitlines()[0]
out["arch_list"] = torch.cuda.get_arch_list() if out["cuda_available"] else []
out["devices"] = []
LOAD = os.environ.get("DLSETUP_PROBE_LOAD", "1") == "1"

def link_now(index):
    for fields in ("pcie.link.gen.gpucurrent,pcie.link.width.current", "pcie.link.gen.current,pcie.link.width.current"):
        try:
            res = subprocess.run(["nvidia-smi", "--id=%d" % index, "--query-gpu=" + fields,
                                  "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=20)
        except Exception:
            return None
        if res.returncode == 0:
            parts = [p.strip() for p in res.stdout.strip().split(",")]
            try:
                return {"gen": int(parts[0]), "width": int(parts[1])}
            except (ValueError, IndexError):
                return None
    return None

for i in range(torch.cuda.device_count() if out["cuda_available"] else 0):
    props = torch.cuda.get_device_properties(i)
    dev = {"index": i, "name": props.name, "cc": [props.major, props.minor],
           "memory_mib": props.total_memory // (1024 * 1024)}
    bus = getattr(props, "pci_bus_id", None)
    if bus is not None:
        dev["pci_bus_id"] = "%04x:%02x:%02x.0" % (getattr(props, "pci_domain_id", 0), bus,
                                                  getattr(props, "pci_device_id", 0))
    try:
        torch.cuda.set_device(i)
        a = torch.randn(512, 512); b = torch.randn(512, 512)
        got = (a.cuda(i) @ b.cuda(i)).cpu()
        dev["matmul_ok"] = bool(torch.allclose(got, a @ b, rtol=1e-2, atol=1e-1))
    except Exception as exc:
        dev["matmul_ok"] = False
        dev["matmul_error"] = str(exc).splitlines()[0]
    if LOAD and dev.get("matmul_ok"):
        try:
            size = 256 * 1024 * 1024
            host = torch.empty(size, dtype=torch.uint8).pin_memory()
            devbuf = torch.empty(size, dtype=torch.uint8, device=i)
            devbuf.copy_(host, non_blocking=True); torch.cuda.synchronize(i)
            start = torch.cuda.Event(enable_timing=True); end = torch.cuda.Event(enable_timing=True)
            reps = 24
            start.record()
            for _ in range(reps):
                devbuf.copy_(host, non_blocking=True)
            end.record()
            dev["load_link"] = link_now(i)  # read while the copies are in flight
            end.synchronize()
            dev["h2d_gbps"] = round(reps * size / (start.elapsed_time(end) / 1000.0) / 1e9, 2)
            del host, devbuf
        except Exception as exc:
            dev["bandwidth_error"] = str(exc).splitlines()[0]
    out["devices"].append(dev)
print(json.dumps(out))
"""

JAX_PROBE = r"""
import json
out = {"jax": None}
try:
    import jax
except Exception as exc:
    out["error"] = "JAX does not import: %s" % (str(exc).splitlines() or [type(exc).__name__])[0]
    print(json.dumps(out)); raise SystemExit(0)
out["jax"] = jax.__version__
try:
    out["gpu_devices"] = len(jax.devices("gpu"))
except Exception as exc:
    out["gpu_devices"] = 0
    out["backend_error"] = str(exc).splitlines()[0]
print(json.dumps(out))
"""


@dataclass(frozen=True, config=_LENIENT)
class LoadLink:
    """The link generation and width nvidia-smi read while the probe's copies were in flight."""

    gen: int | None = None
    width: int | None = None


@dataclass(frozen=True, config=_LENIENT)
class TorchDevice:
    index: int
    name: str | None = None
    cc: tuple[int, int] = (0, 0)
    memory_mib: int | None = None
    pci_bus_id: str | None = None
    matmul_ok: bool = False
    matmul_error: str | None = None
    h2d_gbps: float | None = None
    load_link: LoadLink | None = None
    bandwidth_error: str | None = None

    @property
    def bus_id(self) -> str | None:
        """The device's PCI bus id in the one normalised form (as the facts carry it)."""
        return normalize_bus_id(self.pci_bus_id)


@dataclass(frozen=True, config=_LENIENT)
class TorchProbe:
    """What :data:`TORCH_PROBE` found: torch's version (``None``: not importable, see ``error``) and per GPU."""

    torch: str | None = None
    error: str | None = None
    cuda_build: str | None = None
    cuda_available: bool = False
    cuda_error: str | None = None
    arch_list: tuple[str, ...] = ()
    devices: tuple[TorchDevice, ...] = Field(default=())

    @classmethod
    def parse(cls, data: object) -> TorchProbe:
        """The probe's JSON; anything else becomes a probe that reports why."""
        try:
            return _TORCH.validate_python(data)
        except ValidationError as exc:
            return cls(error=f"the PyTorch probe printed unexpected JSON: {exc.errors()[0]['msg']}")

    def loaded_gens(self) -> dict[str, int]:
        """Bus id → link generation read under load, for the GPUs the probe could load."""
        return {
            d.bus_id: d.load_link.gen
            for d in self.devices
            if d.bus_id is not None and d.load_link is not None and d.load_link.gen is not None
        }


@dataclass(frozen=True, config=_LENIENT)
class JaxProbe:
    """What :data:`JAX_PROBE` found: jax's version (``None``: not importable) and how many GPU devices it sees."""

    jax: str | None = None
    error: str | None = None
    gpu_devices: int = 0
    backend_error: str | None = None

    @classmethod
    def parse(cls, data: object) -> JaxProbe:
        try:
            return _JAX.validate_python(data)
        except ValidationError as exc:
            return cls(error=f"the JAX probe printed unexpected JSON: {exc.errors()[0]['msg']}")


_TORCH: TypeAdapter[TorchProbe] = TypeAdapter(TorchProbe)
_JAX: TypeAdapter[JaxProbe] = TypeAdapter(JaxProbe)


def last_json_line(stdout: str) -> dict[str, Any] | None:
    """The last line of a probe's output that is a JSON object, or ``None``."""
    for line in reversed(stdout.strip().splitlines()):
        if line.startswith("{"):
            try:
                parsed = json.loads(line)
            except ValueError:
                continue
            if isinstance(parsed, dict):
                return parsed
    return None


def failure(stderr: Sequence[str], python: str, rc: int) -> dict[str, Any]:
    """The probe result of a probe that printed no JSON: the last line it wrote to stderr."""
    last = stderr[-1] if stderr else f"exit code {rc}"
    return {"error": f"probe with {python} failed: {last}"}
