"""The diversity filter on Ray: embedding actors, K partition actors, decisions in call order.

    synth-ray run configs/quickstart.yaml --set filters.diversity.enabled=true

`DiversityFilter` lives in the driver. Its `EmbedderActor`s (sentence-transformers, on a GPU
when the cluster has one to spare) embed rows for the generator replicas, which send back only
the vectors (runtime/slice_worker.py), and for the driver's own filters (Self-Instruct,
Evol-Instruct). It routes each vector to the partition of its nearest centroid and asks the
partitions (`PartitionActor`, a faiss index each) for each row's highest similarity to what
was kept before; the in-batch part of the decision is made here, exactly and in row order
(diversity/decide.py). Because one driver asks in one order, a decision never
depends on which worker generated a row or when it finished, and rows kept through one replica
stop near-duplicates arriving through another.

State is rebuilt, never trusted from memory: centroids and reference-corpus vectors are saved
under `_diversity/`, kept rows' vectors are committed with their unit (io/vectors.py), and a
resumed run re-adds them in the original order before deciding anything new.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from synth_ray.diversity.decide import BatchDecision, OrderedBatch, decide_batch
from synth_ray.diversity.embedding import Embedder, resolve_embedding_model
from synth_ray.diversity.index import PartitionIndex
from synth_ray.diversity.partitioning import route, train_centroids
from synth_ray.errors import ConfigError, InputError, ResourceError
from synth_ray.filter_config import DiversityConfig
from synth_ray.io.filesystem import Location, open_location
from synth_ray.io.inputs import InputSpec, iter_documents, validate_inputs
from synth_ray.io.vectors import table_vectors, vectors_table

CENTROID_SAMPLE = 4096  # texts that train the K centroids (from the job's own input)
EMBED_CHUNK = 1024  # texts per embedding call; several calls run on several actors at once
# rows decided per round trip to the partitions: earlier sub-batches are in the index by then,
# so the exact in-batch comparison stays small whatever the unit size
DECIDE_BATCH = 512


class EmbedderActor:
    def __init__(self, model: str, device: str, batch_size: int) -> None:
        self.embedder = Embedder(model, device=device, batch_size=batch_size)

    def dim(self) -> int:
        return self.embedder.dim

    def encode(self, texts: list[str]) -> np.ndarray:
        return self.embedder.encode(texts)


class PartitionActor:
    def __init__(self, dim: int, exact_max: int) -> None:
        self.index = PartitionIndex(dim, exact_max)

    def max_similarity(self, vectors: np.ndarray) -> np.ndarray:
        return self.index.max_similarity(vectors)

    def add(self, vectors: np.ndarray) -> int:
        self.index.add(vectors)
        return self.index.size

    def describe(self) -> dict[str, Any]:
        return {"size": self.index.size, "kind": self.index.kind, "gpu": self.index.use_gpu}


def check_diversity_config(cfg: DiversityConfig) -> None:
    """Every check that needs no actor, run before any work: model path, reference corpus."""
    resolve_embedding_model(cfg.model)
    if cfg.reference_path:
        try:
            validate_inputs(InputSpec(cfg.reference_path, cfg.reference_column))
        except InputError as err:
            raise ConfigError(f"filters.diversity.reference_path: {err}") from None


def _failure_line(err: BaseException) -> str:
    """The ConfigError line inside a Ray actor error, or its last meaningful line."""
    text = str(getattr(err, "cause", None) or err)
    for line in text.splitlines():
        if "filters.diversity" in line:
            return line.split("ConfigError: ", 1)[-1].strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:300] if lines else type(err).__name__


class DiversityFilter:
    def __init__(
        self,
        cfg: DiversityConfig,
        state: Location | str | Path,
        sample_texts: Callable[[], list[str]],
        gpus_taken: float = 0.0,
        start_timeout_s: float = 900.0,
    ) -> None:
        """`state` is the job's `_diversity/` folder (a Location, a path or a URI);
        `sample_texts` gives the texts that train the centroids when there are several
        partitions; `gpus_taken` is what the generator replicas hold, so embedders take a GPU
        only where one is left. Embedders that cannot start within `start_timeout_s` (the
        cluster has no room for them) fail the job with a line naming what they need."""
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        self.cfg = cfg
        self.state = state if isinstance(state, Location) else open_location(state)
        gpus = cfg.gpus_per_embedder
        if gpus is None:
            spare = ray.cluster_resources().get("GPU", 0) - gpus_taken
            gpus = 1 if spare >= cfg.embedders else 0
        device = "cuda" if gpus else "cpu"
        embedder_class = ray.remote(EmbedderActor)
        self.embedders = [
            # stateless: Ray restarts one lost with its node and re-runs its calls elsewhere
            embedder_class.options(
                num_cpus=cfg.cpus_per_embedder,
                num_gpus=gpus,
                max_restarts=3,
                max_task_retries=3,
            ).remote(resolve_embedding_model(cfg.model), device, cfg.batch_size)
            for _ in range(cfg.embedders)
        ]
        try:
            dims = ray.get([e.dim.remote() for e in self.embedders], timeout=start_timeout_s)
        except ray.exceptions.GetTimeoutError:
            self.close()
            need = {"CPU": cfg.cpus_per_embedder, **({"GPU": gpus} if gpus else {})}
            available = {k: v for k, v in ray.available_resources().items() if k in need}
            raise ResourceError(
                f"filters.diversity: {cfg.embedders} embedder(s) not started within "
                f"{start_timeout_s:g}s (scheduler.start_timeout_s): each needs {need}; the "
                f"cluster has {available} available"
            ) from None
        except ray.exceptions.RayError as err:
            self.close()
            raise ConfigError(_failure_line(err)) from None
        self.dim = int(dims[0])
        self._next_embedder = itertools.cycle(self.embedders)
        partition_class = ray.remote(PartitionActor)
        # The partitions hold state that only a replay of the committed shards rebuilds, so
        # they live on the driver's node and share its fate: losing any other node never
        # loses filter state (and a lost driver is a resume anyway). An index search is one
        # short call per batch: reserve no CPU, fit beside the replicas.
        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        self.partitions = [
            partition_class.options(num_cpus=0, scheduling_strategy=here).remote(
                self.dim, cfg.exact_max_vectors
            )
            for _ in range(cfg.partitions)
        ]
        self.centroids = self._load_or_train_centroids(sample_texts) if cfg.partitions > 1 else None
        self.restored_stages: set[str] = set()
        if cfg.reference_path:
            self.restore(self._reference_vectors())

    # -- embedding ---------------------------------------------------------------------------

    def embed_async(self, texts: list[str]) -> list[Any]:
        """Object refs of the texts' vectors, in chunks spread over the embedders."""
        return [
            next(self._next_embedder).encode.remote(texts[i : i + EMBED_CHUNK])
            for i in range(0, len(texts), EMBED_CHUNK)
        ]

    @staticmethod
    def gather(refs: list[Any], dim: int) -> np.ndarray:
        import ray

        parts = ray.get(refs)
        return np.concatenate(parts) if parts else np.zeros((0, dim), np.float16)

    def embed(self, texts: list[str]) -> np.ndarray:
        return self.gather(self.embed_async(texts), self.dim)

    def embed_cached(self, name: str, texts: list[str]) -> np.ndarray:
        """Vectors of `texts`, saved as `_diversity/embeddings-<name>.parquet`; a rerun with
        the same texts reads them back instead of embedding again (same float16 values)."""
        file = f"embeddings-{name}.parquet"
        digest = hashlib.sha256("\x1e".join(texts).encode()).hexdigest()
        try:
            table = self.state.read_table(file) if self.state.exists(file) else None
        except ValueError:  # torn by a killed file:// write: embed again
            table = None
        if (
            table is not None
            and (table.schema.metadata or {}).get(b"texts_sha256") == digest.encode()
        ):
            return table_vectors(table)
        vectors = self.embed(texts)
        table = vectors_table([str(i) for i in range(len(texts))], vectors)
        meta = {**(table.schema.metadata or {}), b"texts_sha256": digest.encode()}
        self.state.write_table_atomic(file, table.replace_schema_metadata(meta))
        return vectors

    # -- decisions ---------------------------------------------------------------------------

    def _route(self, vectors: np.ndarray) -> np.ndarray:
        if self.centroids is None:
            return np.zeros((len(vectors), 1), dtype=np.int64)
        return route(vectors, self.centroids, self.cfg.probes)

    def index_max(self, vectors: np.ndarray) -> np.ndarray:
        """Each row's highest similarity to everything kept before (its probed partitions)."""
        import ray

        best = np.full(len(vectors), -np.inf, dtype=np.float32)
        if len(vectors) == 0:
            return best
        probes = self._route(vectors)
        calls = []
        for p in range(len(self.partitions)):
            rows = np.nonzero((probes == p).any(axis=1))[0]
            if len(rows):
                calls.append((rows, self.partitions[p].max_similarity.remote(vectors[rows])))
        for rows, scores in zip(
            [rows for rows, _ in calls], ray.get([ref for _, ref in calls]), strict=True
        ):
            best[rows] = np.maximum(best[rows], scores)
        return best

    def restore(self, vectors: np.ndarray) -> None:
        """Add vectors as kept, without deciding (reference corpus, resumed units)."""
        import ray

        if len(vectors) == 0:
            return
        home = self._route(vectors)[:, 0]
        ray.get(
            [
                self.partitions[p].add.remote(vectors[home == p])
                for p in range(len(self.partitions))
                if (home == p).any()
            ]
        )

    def decide(self, vectors: np.ndarray) -> BatchDecision:
        """Decide ordered rows and add the kept ones to the index."""
        keep = np.zeros(len(vectors), dtype=bool)
        best = np.full(len(vectors), -np.inf, dtype=np.float32)
        for start in range(0, len(vectors), DECIDE_BATCH):
            part = vectors[start : start + DECIDE_BATCH]
            decision = decide_batch(part, self.index_max(part), self.cfg.threshold)
            self.restore(part[decision.keep])
            keep[start : start + len(part)] = decision.keep
            best[start : start + len(part)] = decision.nn_similarity
        return BatchDecision(keep, best)

    def ordered(self, vectors: np.ndarray) -> OrderedBatch:
        """Row-by-row decisions beside other filters; call `finish(batch)` when done."""
        return OrderedBatch(vectors, self.index_max(vectors))

    def finish(self, batch: OrderedBatch) -> None:
        self.restore(batch.vectors[batch.keep].astype(np.float16))

    def restore_stage(self, store: Any, stage: str) -> None:
        """Re-add the kept vectors of `stage`'s committed units, once per run, in unit order."""
        if stage in self.restored_stages:
            return
        self.restored_stages.add(stage)
        for vectors in store.committed_vectors(stage):
            self.restore(vectors)

    def describe(self) -> list[dict[str, Any]]:
        import ray

        return ray.get([p.describe.remote() for p in self.partitions])

    # -- persisted state -----------------------------------------------------------------------

    def _load_or_train_centroids(self, sample_texts: Callable[[], list[str]]) -> np.ndarray:
        k = self.cfg.partitions
        saved = self.state.read_bytes("centroids.npy")
        if saved is not None:
            try:
                centroids = np.load(io.BytesIO(saved))
            except ValueError:  # torn by a killed file:// write: train again
                centroids = np.zeros((0, 0))
            if centroids.shape == (k, self.dim):
                return centroids
        texts = [t for t in sample_texts() if t][:CENTROID_SAMPLE]
        if len(texts) < k:
            raise ConfigError(
                f"filters.diversity.partitions={k}: the job's input has {len(texts)} texts to "
                f"train {k} centroids on; use fewer partitions"
            )
        centroids = train_centroids(self.embed(texts), k)
        buffer = io.BytesIO()
        np.save(buffer, centroids)
        self.state.write_bytes_atomic("centroids.npy", buffer.getvalue())
        return centroids

    def _reference_vectors(self) -> np.ndarray:
        cfg = self.cfg
        spec = InputSpec(cfg.reference_path or "", cfg.reference_column)
        texts = [d.text for d in iter_documents(spec) if d.error is None and d.text]
        key = json.dumps([cfg.model, cfg.reference_path, cfg.reference_column])
        return self.embed_cached(
            "reference-" + hashlib.sha256(key.encode()).hexdigest()[:12], texts
        )

    def close(self) -> None:
        import ray

        for actor in [*self.embedders, *getattr(self, "partitions", [])]:
            ray.kill(actor)
        self.embedders, self.partitions = [], []
