"""Python snippets run on the verified host with its own interpreter; each prints one JSON line."""

TORCH_PROBE = r'''
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
'''

JAX_PROBE = r'''
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
'''
