"""Which dtype an engine runs in: `engine.dtype: auto` made safe for CPUs without native bf16.

    python -m synth_ray.engine.dtype   # prints this machine's CPU flags that matter and the choice

On a CPU without native bf16 (AVX2-only x86 such as AMD Zen 3 and most Intel client CPUs),
PyTorch emulates bf16 and the embedded model decodes about 10x slower than in float32
(measured: 6.4 vs 55.6 output tokens/s on a 2-core Zen 3). vLLM's own `auto` takes the model's
bf16 anyway, so `auto` is resolved here instead: float32 on such a CPU, bfloat16 where the CPU
computes bf16 natively (AVX-512 BF16 or AMX on x86, the BF16 extension on Arm). On a GPU `auto`
is passed through and vLLM keeps the model's own dtype. An explicit dtype is always respected,
with a warning in the reason when it is bf16 on a CPU that emulates it.

Everything but `read_cpu_flags` is pure, so the rule is tested on the flag sets of both kinds
of CPU (tests/test_dtype.py) whatever machine runs the tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# x86: AVX-512 BF16 (Zen 4+, Cooper Lake+) or AMX BF16 (Sapphire Rapids+); Arm: FEAT_BF16.
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")
# Shown beside benchmark figures: what decides how fast a CPU engine can be.
RELEVANT_CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "bf16")


@dataclass(frozen=True)
class DtypeChoice:
    """The dtype passed to vLLM and the one-line reason shown in the summary and stats."""

    dtype: str
    reason: str


def ran_as(choice: DtypeChoice, model_config: object) -> DtypeChoice:
    """`auto` made concrete once the engine is built (its model config's torch dtype), so the
    summary, stats and benchmarks say which dtype actually ran; other choices are unchanged."""
    ran = str(getattr(model_config, "dtype", "") or "").removeprefix("torch.")
    if choice.dtype != "auto" or not ran:
        return choice
    return DtypeChoice(ran, f"{choice.reason}: {ran}")


def parse_cpu_flags(cpuinfo: str) -> frozenset[str]:
    """The feature flags of the first CPU in a /proc/cpuinfo text (`flags` on x86,
    `Features` on Arm); empty when there is none."""
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() in ("flags", "features"):
            return frozenset(value.split())
    return frozenset()


def read_cpu_flags(path: str = "/proc/cpuinfo") -> frozenset[str]:
    """This machine's CPU flags; empty where /proc/cpuinfo is absent (then bf16 counts as
    emulated, the safe side: float32 is never the slow choice)."""
    try:
        return parse_cpu_flags(Path(path).read_text(errors="replace"))
    except OSError:
        return frozenset()


def native_bf16_flags(flags: frozenset[str]) -> list[str]:
    """The flags that give this CPU native bf16 arithmetic; empty means bf16 is emulated."""
    return [f for f in NATIVE_BF16_FLAGS if f in flags]


def choose_dtype(requested: str, on_cpu: bool, flags: frozenset[str]) -> DtypeChoice:
    """`engine.dtype` -> the dtype vLLM gets. `auto` on CPU: bfloat16 with native bf16 support,
    else float32; `auto` on GPU: unchanged (the model's own dtype). Anything else: as given."""
    native = native_bf16_flags(flags)
    emulated_bf16 = on_cpu and not native
    if requested != "auto":
        reason = f"{requested}: set by engine.dtype"
        if emulated_bf16 and requested in ("bfloat16", "bf16"):
            reason += (
                " (this CPU has no native bf16, so it is emulated: about 10x slower than float32)"
            )
        return DtypeChoice(requested, reason)
    if not on_cpu:
        return DtypeChoice("auto", "auto: the model's own dtype (GPU)")
    if native:
        return DtypeChoice("bfloat16", f"bfloat16: this CPU has native bf16 ({', '.join(native)})")
    return DtypeChoice(
        "float32", "float32: this CPU has no native bf16 (no avx512_bf16 or amx_bf16)"
    )


def cpu_description(flags: frozenset[str] | None = None) -> dict[str, object]:
    """CPU model and the flags that matter, recorded beside every benchmark figure."""
    flags = read_cpu_flags() if flags is None else flags
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.lower().startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": model,
        "cpu_flags": [f for f in RELEVANT_CPU_FLAGS if f in flags],
        "native_bf16": bool(native_bf16_flags(flags)),
    }


if __name__ == "__main__":
    found = read_cpu_flags()
    print(cpu_description(found))
    print(choose_dtype("auto", on_cpu=True, flags=found))
