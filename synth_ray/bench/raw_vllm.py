"""The baseline: raw `vllm.LLM.generate` over all prompts at once, in a process of its own.

    python -m synth_ray.bench.raw_vllm SPEC.json RESULT.json

What a user comparing with plain vLLM writes: one synchronous call, every request in it. Prompts
are passed as token ids from the same tokenization every system uses (no special tokens added).
Results come back only when the call returns, so its first result is also its last.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from synth_ray.bench.constraints import conforms
from synth_ray.bench.spec import RunSpec, SystemResult, since_start


def sampling_params(spec: RunSpec, budgets: list[int], on_cpu: bool) -> list[Any]:
    """One vLLM SamplingParams per request: its budget, the spec's sampling and constraint
    (seeded per request on a GPU; the CPU build takes no per-request seed)."""
    from vllm import SamplingParams
    from vllm.sampling_params import StructuredOutputsParams

    constrained = spec.structured_fields()
    structured = StructuredOutputsParams(**constrained) if constrained else None
    return [
        SamplingParams(
            temperature=spec.temperature,
            top_p=spec.top_p,
            max_tokens=budget,
            ignore_eos=spec.ignore_eos,
            seed=None if on_cpu else spec.seed + i,
            structured_outputs=structured,
        )
        for i, budget in enumerate(budgets)
    ]


def main(spec_path: str, result_path: str) -> None:
    spec = RunSpec.read(spec_path)
    from vllm import LLM
    from vllm.inputs import TokensPrompt
    from vllm.platforms import current_platform

    from synth_ray.engine.dtype import choose_dtype, ran_as, read_cpu_flags
    from synth_ray.engine.prompts import PromptRenderer
    from synth_ray.engine.vllm_engine import cpu_engine_env

    on_cpu = current_platform.is_cpu()
    if on_cpu:
        os.environ.update(cpu_engine_env(spec.cpu_kv_cache_gib, spec.cpu_threads))
    choice = choose_dtype(spec.dtype, on_cpu, read_cpu_flags())
    requests = spec.requests()
    tokenizer = PromptRenderer.from_model(spec.model).tokenizer
    ids = tokenizer([p for p, _ in requests], add_special_tokens=False)["input_ids"]
    llm = LLM(model=spec.model, dtype=choice.dtype, disable_log_stats=True, **spec.engine_args)
    dtype = ran_as(choice, getattr(llm.llm_engine, "model_config", None)).dtype
    params = sampling_params(spec, [budget for _, budget in requests], on_cpu)
    constrained = spec.structured_fields()
    ready = since_start()
    outputs = llm.generate([TokensPrompt(prompt_token_ids=x) for x in ids], params, use_tqdm=False)
    done = since_start()
    SystemResult(
        output_tokens=sum(len(o.outputs[0].token_ids) for o in outputs),
        requests=len(outputs),
        engine_ready_s=ready,
        first_result_s=done,
        done_s=done,
        dtype=dtype,
        conforming=(
            sum(conforms(constrained, o.outputs[0].text) for o in outputs) if constrained else None
        ),
    ).write(result_path)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
