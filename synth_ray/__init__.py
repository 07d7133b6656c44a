"""synth-ray: synthetic training data on Ray + vLLM with exactly-once Parquet shards.

Layers, each importing only from those below it:
    cli, status
    runtime   job (dispatch) -> method drivers (star, self_instruct, evol_instruct) -> stage
              -> scheduler (policy), units, progress; ray_backend, generator_actor, cluster
    plan      deterministic work units
    methods   rephrase, generate, self_improve, self_instruct, evol_instruct; checkers, filters
    engine    vllm_engine, prompts, models, requests;  io: inputs, shards, manifest, output_store
    config    config, method_config, errors, stats
"""

__version__ = "0.1.0"
