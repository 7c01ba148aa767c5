"""The probes: Python snippets run on the verified host with its own interpreter (each prints one JSON line),
and what they report as typed models (:class:`TorchProbe`, :class:`JaxProbe`); the record a dl_stack build
leaves in the venv (:class:`BuildRecord`, ``<venv>/dlsetup-build.json``), the build the plan chose
(:class:`PlannedBuild`) and how they compare (:func:`judge_build`, the ``framework.build`` check).

A probe's JSON comes from whatever Python the host has, so the models take what they know and ignore the rest; a
probe that could not run is a model with ``error`` set.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from packaging.requirements import InvalidRequirement, Requirement
from packaging.version import InvalidVersion, Version
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
    import importlib.metadata, re
    names = set((d.metadata["Name"] or "").lower().replace("_", "-") for d in importlib.metadata.distributions())
    out["plugins"] = sorted(n for n in names if re.fullmatch(r"jax-cuda[0-9]+-plugin", n))
except Exception:
    pass
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

    @property
    def variant(self) -> str | None:
        """The wheel variant of this torch: the local label of its version (``2.11.0+cu130``), else what
        ``torch.version.cuda`` says (``13.0`` → ``cu130``; ``None`` → ``cpu``); ``None`` when torch did not import."""
        if self.torch is None:
            return None
        _, _, label = self.torch.partition("+")
        if label:
            return label.lower()
        return "cu" + self.cuda_build.replace(".", "") if self.cuda_build else "cpu"

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
    # the jax-cudaNN-plugin distributions installed (None: a probe that did not say)
    plugins: tuple[str, ...] | None = None

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


def probe_output(stdout: str, stderr: str, python: str, rc: int) -> dict[str, Any]:
    """A probe's result from what it printed: its last JSON line, else :func:`failure` from its stderr."""
    return last_json_line(stdout) or failure(stderr.strip().splitlines(), python, rc)


# -- the probes in verify.yml: started before the facts are read, collected after ---------------------------------
VERIFY_PLAYBOOK = "verify.yml"
_PROBES = {"torch": TORCH_PROBE, "jax": JAX_PROBE}


def probe_extravars() -> dict[str, Any]:
    """The extra variables of ``verify.yml``: each probe's source, base64-encoded (no template engine reads it)."""
    return {"dlsetup_verify_probes": {k: base64.b64encode(v.encode()).decode() for k, v in _PROBES.items()}}


def collected(result: Mapping[str, Any]) -> dict[str, Any] | None:
    """What the suite needs of one host's ``dlsetup_framework_probe`` job (as its collect call returned it): each
    probe's JSON (or why it printed none), whether the venv has its Python, the venv's build record text.
    ``None`` when the job did not finish with a result (the suite then runs the probes itself)."""
    outputs = result.get("outputs")
    if result.get("failed") or not isinstance(outputs, Mapping):
        return None
    python = str(result.get("python") or "python3")
    out: dict[str, Any] = {"venv_python": bool(result.get("venv_python")), "build_record": result.get("build_record")}
    for name in _PROBES:
        got = outputs.get(name)
        if not isinstance(got, Mapping):
            return None
        rc = got.get("rc")
        stdout, stderr = str(got.get("stdout") or ""), str(got.get("stderr") or "")
        out[name] = probe_output(stdout, stderr, python, rc if isinstance(rc, int) else -1)
    return out


# -- builds: what the dl_stack role recorded, what the plan chose -------------------------------------------------
BUILD_RECORD_NAME = "dlsetup-build.json"
BuildStatus = Literal["pass", "fail", "warn", "skip"]


@dataclass(frozen=True, config=_LENIENT)
class BuildIdentity:
    """What a build is (the dl_stack role's ``__dl_stack_identity``): the same identity is the same build."""

    torch_version: str = ""
    torch_variant: str = ""
    torch_index_url: str = ""
    jax_requirement: str = ""
    python: str = ""


@dataclass(frozen=True, config=_LENIENT)
class BuildRecord:
    """``<venv>/dlsetup-build.json``: the build the venv holds, written by the dl_stack role. ``identity`` is
    ``None`` for a venv of an earlier dlsetup that the role moved into the builds (``legacy``); ``error`` says why
    a file was not readable as a record."""

    build_id: str | None = None
    complete: bool = False
    legacy: bool = False
    identity: BuildIdentity | None = None
    installed: dict[str, str] = Field(default_factory=dict)
    error: str | None = None

    @classmethod
    def parse(cls, text: str) -> BuildRecord:
        """The record in ``text`` (the file's content); anything else is a record that says why not."""
        try:
            return _BUILD.validate_python(json.loads(text))
        except (ValueError, ValidationError) as exc:
            return cls(error=f"not a build record ({type(exc).__name__})")


_BUILD: TypeAdapter[BuildRecord] = TypeAdapter(BuildRecord)


@dataclasses.dataclass(frozen=True)
class PlannedBuild:
    """The PyTorch and JAX build a plan chose, as the dl_stack role gets it (``Plan.to_extravars``)."""

    torch_version: str
    torch_variant: str = ""
    torch_index_url: str = ""
    jax_requirement: str = ""

    @classmethod
    def of_plan(cls, plan: Mapping[str, Any] | None) -> PlannedBuild | None:
        """The build of a recorded plan (Plan JSON, read leniently); ``None`` when it has no PyTorch."""
        pytorch = plan.get("pytorch") if isinstance(plan, Mapping) else None
        if not isinstance(pytorch, Mapping) or not isinstance(pytorch.get("version"), str) or not pytorch["version"]:
            return None
        jax = plan.get("jax") if isinstance(plan, Mapping) else None
        extra = jax.get("extra") if isinstance(jax, Mapping) else None
        return cls(
            torch_version=pytorch["version"],
            torch_variant=str(pytorch.get("variant") or ""),
            torch_index_url=str(pytorch.get("index_url") or ""),
            # with PyTorch the role always installs JAX: jax[cpu] when the plan has no CUDA extra
            jax_requirement=f"jax[{extra or 'cpu'}]",
        )

    def describe(self) -> str:
        torch = f"torch {self.torch_version}" + (f" {self.torch_variant}" if self.torch_variant else "")
        return torch + (f" with {self.jax_requirement}" if self.jax_requirement else "")


@dataclasses.dataclass(frozen=True)
class BuildVerdict:
    """The outcome of :func:`judge_build`: a check's status, expected and actual values, and message."""

    status: BuildStatus
    expected: str | None
    actual: str | None
    message: str


def _release(version: str) -> tuple[int, ...] | None:
    try:
        return Version(version).release
    except InvalidVersion:
        return None


def _same_release(actual: str, planned: str) -> bool:
    have, want = _release(actual), _release(planned)
    return have is not None and want is not None and have[: len(want)] == want


def _jax_kind(requirement: str) -> tuple[str, frozenset[str]] | None:
    """A jax requirement's name and extras (``jax[cuda12]==0.7.1`` → ``("jax", {"cuda12"})``); its version aside."""
    try:
        parsed = Requirement(requirement)
    except InvalidRequirement:
        return None
    return parsed.name.lower(), frozenset(e.lower() for e in parsed.extras)


def _cuda_plugin(requirement: str) -> str | None:
    """The plugin distribution a CUDA extra brings (``jax[cuda12]`` → ``jax-cuda12-plugin``); ``None`` for CPU."""
    match = re.search(r"\[[^]]*cuda([0-9]+)", requirement)
    return f"jax-cuda{match.group(1)}-plugin" if match else None


def _installed(record: BuildRecord | None, torch: TorchProbe, jax: JaxProbe) -> str:
    """What is in the venv, in one line: the torch and jax that import, and the build that recorded them."""
    parts = []
    if torch.torch:
        parts.append(f"torch {torch.torch} (" + (f"CUDA {torch.cuda_build})" if torch.cuda_build else "no CUDA)"))
    else:
        parts.append("no importable torch")
    if jax.jax:
        plugins = f" + {', '.join(jax.plugins)}" if jax.plugins else (" (no CUDA plugin)" if jax.plugins == () else "")
        parts.append(f"jax {jax.jax}{plugins}")
    else:
        parts.append("no importable jax")
    if record is None:
        where = "no build record"
    elif record.error:
        where = f"build record unreadable: {record.error}"
    elif record.identity is None:
        where = f"build {record.build_id} (a venv of an earlier dlsetup, not recorded)"
    else:
        i = record.identity
        where = f"build {record.build_id}: torch {i.torch_version} {i.torch_variant or ''}".rstrip()
        where += f" with {i.jax_requirement}" if i.jax_requirement else ""
    return f"{', '.join(parts)}; {where}"


def judge_build(
    planned: PlannedBuild | None, record: BuildRecord | None, torch: TorchProbe, jax: JaxProbe, *, venv: str
) -> BuildVerdict:
    """Whether the venv holds the build the plan chose: its build record (``record``; ``None`` when the venv has
    none) says so, and the torch and jax that import there are that build (torch's release and wheel variant, which
    ``torch.version.cuda`` must agree with; jax with no other CUDA plugin than the planned one, and that one
    unless jax sees GPUs without it). A venv without a record
    (made by an earlier dlsetup) whose imports match is a ``warn``."""
    if planned is None:
        return BuildVerdict(
            "skip",
            None,
            None,
            "no PyTorch build planned (no plan record of one, or the expected frameworks leave PyTorch out): "
            "nothing to compare",
        )
    expected = planned.describe()
    actual = _installed(record, torch, jax)
    wrong: list[str] = []
    if torch.torch is None:
        wrong.append(f"torch does not import from {venv} ({torch.error or 'not installed'})")
    else:
        if not _same_release(torch.torch, planned.torch_version):
            wrong.append(f"torch is {torch.torch}, the plan chose {planned.torch_version}")
        variant = torch.variant
        if planned.torch_variant and variant != planned.torch_variant:
            wrong.append(f"torch is the {variant} wheel, the plan chose {planned.torch_variant}")
        elif planned.torch_variant.startswith("cu") and (
            torch.cuda_build is None or "cu" + torch.cuda_build.replace(".", "") != planned.torch_variant
        ):
            wrong.append(f"torch.version.cuda is {torch.cuda_build}, not what a {planned.torch_variant} wheel is")
    plugin = _cuda_plugin(planned.jax_requirement)
    if planned.jax_requirement and jax.jax is None:
        wrong.append(f"jax does not import ({jax.error or 'not installed'}), the plan chose {planned.jax_requirement}")
    elif planned.jax_requirement and jax.plugins is not None:
        others = sorted(set(jax.plugins) - {plugin})
        # a missing plugin is what makes jax see no GPU; jax that sees GPUs some other way is not held against it
        if plugin and plugin not in jax.plugins and jax.gpu_devices == 0:
            wrong.append(f"{plugin} is not installed, which {planned.jax_requirement} brings (jax sees no GPU)")
        if others:
            wrong.append(f"{', '.join(others)} installed, not part of {planned.jax_requirement}")
    if record is not None and record.error is None and record.identity is not None:
        built = record.identity
        if not record.complete:
            wrong.append(f"build {record.build_id} did not finish installing")
        if built.torch_version != planned.torch_version or built.torch_variant != planned.torch_variant:
            wrong.append(
                f"build {record.build_id} is torch {built.torch_version} {built.torch_variant}, "
                f"the plan chose {planned.torch_version} {planned.torch_variant}"
            )
        if built.torch_index_url != planned.torch_index_url:
            wrong.append(f"build {record.build_id} took torch from {built.torch_index_url or 'the general index'}")
        if _jax_kind(built.jax_requirement) != _jax_kind(planned.jax_requirement):
            wrong.append(f"build {record.build_id} has {built.jax_requirement or 'no JAX'}")
        recorded_torch = record.installed.get("torch")
        if recorded_torch and torch.torch and recorded_torch != torch.torch:
            wrong.append(f"build {record.build_id} installed torch {recorded_torch}, {torch.torch} imports now")
    if wrong:
        return BuildVerdict(
            "fail",
            expected,
            actual,
            f"{venv} does not hold the planned build ({expected}): " + "; ".join(wrong) + f". Installed: {actual}",
        )
    if record is None or record.error is not None or record.identity is None:
        why = "no record" if record is None else (record.error or "a venv of an earlier dlsetup")
        return BuildVerdict(
            "warn",
            expected,
            actual,
            f"torch and jax are the planned build ({expected}), but {venv} has no build record of it ({why}); "
            "the next dlsetup provision builds a recorded venv",
        )
    return BuildVerdict("pass", expected, actual, f"{venv} holds the planned build {expected}: {actual}")
