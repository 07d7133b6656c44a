"""synth-ray: synthetic training data on Ray + vLLM with exactly-once Parquet shards.

Layers, each importing only from those below it:
    cli, status, jobs (cluster submission through Ray's Jobs API), bench (synth-ray against
              raw vLLM and Ray Data LLM on one workload), dataset (the card of an output,
              rows picked by an SQL condition)
    runtime   job (dispatch through the method registry) -> stage (StageRunner) -> scheduler
              (policy), units, progress; ray_backend, generator_actor, cluster; diversity (the
              filter's embedder and partition actors). It names no method.
    plan      deterministic work units
    methods   registry (every method registers itself; a multi-stage one from its driver),
              stages (what a driver may ask of the runtime); rephrase, generate, self_improve
              (+ _star, its driver), self_instruct (+ _rounds), evol_instruct (+ _rounds),
              judge, preference, magpie, textbook, tinystories, metamath, oss_instruct;
              checkers, filters
    diversity embedding, index, decide, partitioning (pure parts of the diversity filter)
    engine    build (which engine a replica runs), vllm_engine, inprocess_engine, prompts,
              models, requests
    io        inputs, shards, manifest, commits, filesystem, vectors, output_store
    verify    sandbox (runs generated programs confined), confine (the confinement itself)
    config    config, sections, filter_config, errors, stats
"""

__version__ = "0.1.0"
