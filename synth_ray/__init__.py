"""synth-ray: synthetic training data on Ray + vLLM with exactly-once Parquet shards.

Layers, each importing only from those below it:
    cli -> runtime (job, scheduler, actors) -> methods -> engine, io, plan -> config, errors
"""

__version__ = "0.1.0"
