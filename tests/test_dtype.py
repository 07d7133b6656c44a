"""engine.dtype: auto on CPU picks float32 unless the CPU has native bf16 (engine/dtype.py).

    python -m pytest tests/test_dtype.py

Flag sets are the `flags` lines of real CPUs (trimmed), so the rule is checked for both kinds
of machine this project runs on, whichever kind runs the test.
"""

from __future__ import annotations

import pytest
import torch

from synth_ray.engine.dtype import choose_dtype, cpu_description, parse_cpu_flags, ran_as

ZEN3_CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7B13
flags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sep mtrr sse sse2 ht syscall nx mmxext fxsr_opt pdpe1gb rdtscp lm constant_tsc rep_good nopl nonstop_tsc cpuid pni pclmulqdq ssse3 fma cx16 sse4_1 sse4_2 movbe popcnt aes xsave avx f16c rdrand hypervisor lahf_lm cmp_legacy cr8_legacy abm sse4a misalignsse 3dnowprefetch osvw topoext invpcid_single ssbd ibrs ibpb stibp vmmcall fsgsbase bmi1 avx2 smep bmi2 erms invpcid rdseed adx smap clflushopt clwb sha_ni xsaveopt xsavec xgetbv1 clzero xsaveerptr arat npt nrip_save umip vaes vpclmulqdq rdpid fsrm
bugs\t\t: sysret_ss_attrs spectre_v1 spectre_v2 spec_store_bypass srso
"""
ZEN4_FLAGS = (
    "fpu sse sse2 avx avx2 fma avx512f avx512dq avx512ifma avx512cd avx512bw avx512vl "
    "avx512_bf16 avx512vbmi avx512_vbmi2 avx512_vnni avx512_bitalg avx512_vpopcntdq"
)
SAPPHIRE_RAPIDS_FLAGS = "avx2 avx512f avx512bw avx512_vnni amx_bf16 amx_tile amx_int8"
SKYLAKE_X_FLAGS = "avx2 avx512f avx512dq avx512cd avx512bw avx512vl"  # AVX-512, no bf16
GRAVITON3_CPUINFO = "processor\t: 0\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm jscvt fcma lrcpc dcpop sha3 sm3 sm4 asimddp sha512 sve asimdfhm dit uscat ilrcpc flagm ssbs paca pacg dcpodp svei8mm svebf16 i8mm bf16 dgh rng\n"


def flags(text: str) -> frozenset[str]:
    return frozenset(text.split())


def test_parse_reads_x86_flags_and_arm_features():
    zen3 = parse_cpu_flags(ZEN3_CPUINFO)
    assert "avx2" in zen3 and "avx512f" not in zen3
    assert "bf16" in parse_cpu_flags(GRAVITON3_CPUINFO)
    assert parse_cpu_flags("processor: 0\n") == frozenset()


@pytest.mark.parametrize(
    "cpu_flags",
    [parse_cpu_flags(ZEN3_CPUINFO), flags(SKYLAKE_X_FLAGS), frozenset()],
    ids=["zen3-avx2", "skylake-avx512-no-bf16", "unknown"],
)
def test_auto_on_cpu_without_native_bf16_is_float32(cpu_flags):
    choice = choose_dtype("auto", on_cpu=True, flags=cpu_flags)
    assert choice.dtype == "float32"
    assert choice.reason == "float32: this CPU has no native bf16 (no avx512_bf16 or amx_bf16)"


@pytest.mark.parametrize(
    ("cpu_flags", "named"),
    [
        (flags(ZEN4_FLAGS), "avx512_bf16"),
        (flags(SAPPHIRE_RAPIDS_FLAGS), "amx_bf16"),
        (parse_cpu_flags(GRAVITON3_CPUINFO), "bf16"),
    ],
    ids=["zen4", "sapphire-rapids", "graviton3"],
)
def test_auto_on_cpu_with_native_bf16_is_bfloat16(cpu_flags, named):
    choice = choose_dtype("auto", on_cpu=True, flags=cpu_flags)
    assert choice.dtype == "bfloat16"
    assert named in choice.reason


def test_auto_on_gpu_keeps_the_models_dtype():
    assert choose_dtype("auto", on_cpu=False, flags=parse_cpu_flags(ZEN3_CPUINFO)).dtype == "auto"


def test_auto_is_reported_as_the_dtype_the_engine_ran():
    class ModelConfig:
        dtype = torch.bfloat16

    gpu_auto = choose_dtype("auto", on_cpu=False, flags=frozenset())
    assert ran_as(gpu_auto, ModelConfig()).dtype == "bfloat16"
    assert ran_as(gpu_auto, None) == gpu_auto  # engine without a model config: left as it was
    explicit = choose_dtype("float16", on_cpu=False, flags=frozenset())
    assert ran_as(explicit, ModelConfig()) == explicit


def test_explicit_dtype_is_respected_and_emulated_bf16_is_named():
    zen3 = parse_cpu_flags(ZEN3_CPUINFO)
    slow = choose_dtype("bfloat16", on_cpu=True, flags=zen3)
    assert slow.dtype == "bfloat16" and "emulated" in slow.reason
    fast = choose_dtype("bfloat16", on_cpu=True, flags=flags(ZEN4_FLAGS))
    assert fast.dtype == "bfloat16" and "emulated" not in fast.reason
    assert choose_dtype("float16", on_cpu=False, flags=zen3).dtype == "float16"


def test_cpu_description_lists_the_flags_that_decide_speed():
    described = cpu_description(flags(ZEN4_FLAGS))
    assert described["cpu_flags"] == ["avx2", "avx512f", "avx512_bf16"]
    assert described["native_bf16"] is True
    assert cpu_description(parse_cpu_flags(ZEN3_CPUINFO))["native_bf16"] is False
