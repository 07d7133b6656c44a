"""Config of the row filters that sit beside the methods: today the embedding diversity filter.

    python -c "from synth_ray.filter_config import DiversityConfig; print(DiversityConfig())"

`filters.diversity.*` keys; every section forbids unknown keys. What decides which rows are
kept (model, threshold, partitions, probes, reference) enters the job fingerprint, so changing
it on a resumed run is refused; actor counts and placement only change speed and do not.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from synth_ray.sections import RUNTIME, Section

EMBEDDED_EMBEDDER = "embedded:all-minilm-l6-v2"
# Per partition: past this many accepted vectors the exact index turns into HNSW. Measured in
# benchmarks/bench_diversity.py (results.md, 2 CPU cores, one thread per partition): searching a
# 512-row batch costs the exact index 402 ms at 100k vectors and 825 ms at 200k (linear), HNSW
# 1043 and 762 ms (not growing); they cross near 200k, past which exact only gets worse.
DEFAULT_EXACT_MAX_VECTORS = 200_000


class DiversityConfig(Section):
    enabled: bool = Field(
        False,
        description="Drop rows too similar to a row already kept.",
        json_schema_extra=RUNTIME,  # off, the filter is left out of the fingerprint whole
    )
    model: str = Field(
        EMBEDDED_EMBEDDER,
        description="sentence-transformers folder or hub id; default all-MiniLM-L6-v2 (embedded).",
    )
    # all-MiniLM-L6-v2 puts paraphrases at 0.83-0.97 and unrelated sentences below 0.2
    threshold: float = Field(
        0.85,
        ge=-1,
        le=1,
        description="Cosine similarity to an earlier kept row at or above which a row is dropped.",
    )
    partitions: int = Field(
        1,
        ge=1,
        description="K filter actors; each row goes to the nearest of K centroids (1 = exact).",
    )
    probes: int = Field(
        2, ge=1, description="Partitions searched per row (its nearest centroids); <= partitions."
    )
    reference_path: str | None = Field(
        None, description="Parquet file/folder/glob of texts rows must also differ from."
    )
    reference_column: str = Field("text", description="Text column of the reference corpus.")
    exact_max_vectors: int = Field(
        DEFAULT_EXACT_MAX_VECTORS,
        ge=1,
        description="Vectors per partition searched exactly; past it the index becomes HNSW.",
    )
    partition_placement: Literal["driver", "spread"] = Field(
        "driver",
        description="Where the partition actors (the index) live: driver: on the driver's node; "
        "spread: over the cluster's nodes, so their memory adds up. Either way a lost partition "
        "is rebuilt from the last snapshot and the units committed since.",
        json_schema_extra=RUNTIME,
    )
    embedders: int = Field(
        1, ge=1, description="Embedding actors (sentence-transformers).", json_schema_extra=RUNTIME
    )
    gpus_per_embedder: float | None = Field(
        None,
        ge=0,
        description="GPUs per embedding actor; None: 1 when the cluster has GPUs left over.",
        json_schema_extra=RUNTIME,
    )
    cpus_per_embedder: float = Field(
        1.0, ge=0, description="Ray CPUs reserved per embedder.", json_schema_extra=RUNTIME
    )
    batch_size: int = Field(
        256, ge=1, description="Texts per embedding call.", json_schema_extra=RUNTIME
    )

    @model_validator(mode="after")
    def _probes_within_partitions(self) -> DiversityConfig:
        if self.probes > self.partitions:
            self.__dict__["probes"] = self.partitions  # 2 probes of 1 partition = 1 probe
        return self


class FiltersConfig(Section):
    diversity: DiversityConfig = Field(default_factory=DiversityConfig)

    def decisive(self) -> dict[str, object]:
        """A filter that is off decides nothing, so none of its keys enter the fingerprint."""
        return {"diversity": self.diversity.decisive()} if self.diversity.enabled else {}
