"""`synth-ray bench`: the same prompts through synth-ray, raw vLLM and Ray Data LLM, side by side.

    synth-ray bench configs/generate.yaml --prompts 64 --lengths skewed

workload.py builds the prompts and each request's output budget; systems.py runs each system in
a fresh process (raw_vllm.py and ray_data_llm.py are those processes' programs; synth-ray runs
through its own CLI); runner.py repeats that per sweep value; report.py prints the table and
appends the results (JSONL + Markdown) and a PNG plot.
"""
