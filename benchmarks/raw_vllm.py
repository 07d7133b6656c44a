"""The baseline: raw `vllm.LLM.generate` over all prompts at once, in this process.

    python benchmarks/raw_vllm.py --prompts P.jsonl --model DIR --max-tokens 64 --result R.json

Prompts are rendered with the model's chat template exactly as synth-ray renders them
(synth_ray.engine.prompts) and passed as token ids, so both systems see identical inputs.
The dtype follows synth-ray's rule (synth_ray.engine.dtype): `auto` is float32 on a CPU without
native bf16, so both systems always run the same dtype.
Writes {"engine_ready_s", "generate_s", "output_tokens", "n_prompts", "dtype"} to --result.
"""

from __future__ import annotations

import argparse
import json
import time

T0 = time.monotonic()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--prompts", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--max-tokens", type=int, required=True)
    parser.add_argument("--max-model-len", type=int, default=1024)
    parser.add_argument("--enforce-eager", action="store_true")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--result", required=True)
    args = parser.parse_args()

    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt
    from vllm.platforms import current_platform

    from synth_ray.engine.dtype import choose_dtype, read_cpu_flags
    from synth_ray.engine.prompts import PromptRenderer

    dtype = choose_dtype(args.dtype, current_platform.is_cpu(), read_cpu_flags()).dtype

    renderer = PromptRenderer.from_model(args.model)
    prompts = [json.loads(line)["prompt"] for line in open(args.prompts)]
    token_prompts = [
        TokensPrompt(prompt_token_ids=renderer.render([{"role": "user", "content": p}]))
        for p in prompts
    ]
    llm = LLM(
        model=args.model,
        dtype=dtype,
        max_model_len=args.max_model_len,
        enforce_eager=args.enforce_eager,
        enable_prefix_caching=True,
        disable_log_stats=True,
    )
    params = SamplingParams(temperature=0.7, top_p=0.9, max_tokens=args.max_tokens, ignore_eos=True)
    ready = time.monotonic()
    outputs = llm.generate(token_prompts, params, use_tqdm=False)
    done = time.monotonic()
    tokens = sum(len(o.outputs[0].token_ids) for o in outputs)
    with open(args.result, "w") as fh:
        json.dump(
            {
                "engine_ready_s": ready - T0,
                "generate_s": done - ready,
                "output_tokens": tokens,
                "n_prompts": len(prompts),
                "dtype": dtype,
            },
            fh,
        )


if __name__ == "__main__":
    main()
