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
import sys
import time
import uuid
from collections import deque
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
from synth_ray.io.inputs import InputSpec, identify_inputs, iter_documents, validate_inputs
from synth_ray.io.vectors import table_vectors, vectors_table

CENTROID_SAMPLE = 4096  # texts that train the K centroids (from the job's own input)
EMBED_CHUNK = 1024  # texts per embedding call; several calls run on several actors at once
# rows decided per round trip to the partitions: earlier sub-batches are in the index by then,
# so the exact in-batch comparison stays small whatever the unit size
DECIDE_BATCH = 512
SNAPSHOT_FILE = "snapshot.json"  # names the last snapshot's files and what they hold
# a snapshot is taken once the index grew by this many vectors and by as many as the last
# snapshot held (so all snapshots together write about twice the final index), and at the
# end of every filtered stage
SNAPSHOT_MIN_VECTORS = 200_000
_SNAPSHOT_FORMAT = 1
_RESTORE_READS = 8  # embedding shards read at once while re-adding committed units


class EmbedderActor:
    def __init__(self, model: str, device: str, batch_size: int) -> None:
        self.embedder = Embedder(model, device=device, batch_size=batch_size)

    def dim(self) -> int:
        return self.embedder.dim

    def encode(self, texts: list[str]) -> np.ndarray:
        return self.embedder.encode(texts)


class PartitionActor:
    def __init__(self, dim: int, exact_max: int) -> None:
        self.dim, self.exact_max = dim, exact_max
        self.index = PartitionIndex(dim, exact_max)

    def save(self, location: Location, name: str) -> int:
        """Write the index to `name` under `location` (the actor writes it: an index never
        passes through the driver); returns its bytes."""
        data = self.index.serialize()
        location.write_bytes_atomic(name, data)
        return len(data)

    def load(self, location: Location, name: str) -> int:
        """Replace the index by a saved one; returns its size."""
        data = location.read_bytes(name)
        if data is None:
            raise FileNotFoundError(name)
        self.index.load(data)
        return self.index.size

    def reset(self) -> None:
        self.index = PartitionIndex(self.dim, self.exact_max)

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
        # By default the partitions live on the driver's node and share its fate (a lost
        # driver is a resume anyway); `spread` puts them over the nodes, for their memory. A
        # partition lost all the same is rebuilt (`_rebuild`). An index search is one short
        # call per batch: reserve no CPU, fit beside the replicas.
        strategy: Any = "SPREAD"
        if cfg.partition_placement == "driver":
            here = ray.get_runtime_context().get_node_id()
            strategy = NodeAffinitySchedulingStrategy(here, soft=False)
        options = partition_class.options(num_cpus=0, scheduling_strategy=strategy)
        self._new_partition = lambda: options.remote(self.dim, cfg.exact_max_vectors)  # noqa: E731
        self.partitions = [self._new_partition() for _ in range(cfg.partitions)]
        # what a lost partition is rebuilt from, beside the committed units: the snapshot in
        # force, the vectors a method's own driver added, the decided units not yet committed
        self._snapshot_in_force: dict[str, Any] | None = None
        self._driver_added: list[np.ndarray] = []
        self._pending: deque[list[np.ndarray]] = deque()
        self._stores: dict[tuple[str, str], Any] = {}
        self.centroids = self._load_or_train_centroids(sample_texts) if cfg.partitions > 1 else None
        self.primed = False
        self.restored_stages: set[tuple[str, str]] = set()
        # the filtered stages whose kept vectors the index holds, in order: [output URI,
        # stage, units (a prefix of its units), sha256 of their unit ids]
        self.covered: list[list[Any]] = []
        self._covered_ids: list[Any] = []  # a running sha256 per covered stage
        self.added_since_snapshot = 0
        self.size_at_snapshot = 0
        # vectors added by a method's own driver (Self-Instruct's seeds, Evol-Instruct's
        # rounds) are not in committed units: a snapshot could not say what it holds
        self.snapshots_off = False
        self.snapshot_loaded: str | None = None  # the snapshot this run started from

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

        best = np.full(len(vectors), -np.inf, dtype=np.float32)
        if len(vectors) == 0:
            return best
        probes = self._route(vectors)
        asked = {}
        for p in range(len(self.partitions)):
            rows = np.nonzero((probes == p).any(axis=1))[0]
            if len(rows):
                asked[p] = rows
        scores = self._call_each("max_similarity", {p: vectors[r] for p, r in asked.items()})
        for p, rows in asked.items():
            best[rows] = np.maximum(best[rows], scores[p])
        return best

    def _call_each(self, method: str, arguments: dict[int, np.ndarray]) -> dict[int, Any]:
        """Call `method` on each partition with its argument; a partition found dead (its
        node lost, the actor killed) is rebuilt and asked again, once."""
        import ray

        refs = {p: getattr(self.partitions[p], method).remote(a) for p, a in arguments.items()}
        results = {}
        for p, ref in refs.items():
            try:
                results[p] = ray.get(ref)
            except ray.exceptions.RayActorError:
                self._rebuild(p)
                results[p] = ray.get(getattr(self.partitions[p], method).remote(arguments[p]))
        return results

    def restore(self, vectors: np.ndarray) -> None:
        """Add vectors as kept, without deciding (a driver's own: Self-Instruct's seeds)."""
        self.prime([])
        self.snapshots_off = True
        self._add(vectors)
        self._driver_added.append(vectors)

    def _add(self, vectors: np.ndarray) -> None:
        if len(vectors) == 0:
            return
        self.added_since_snapshot += len(vectors)
        home = self._route(vectors)[:, 0]
        homes = {p: vectors[home == p] for p in range(len(self.partitions)) if (home == p).any()}
        self._call_each("add", homes)

    def _rebuild(self, p: int) -> None:
        """Replace lost partition `p` with one holding what it held: the snapshot in force
        (else the reference corpus), the vectors a method's driver added, the committed units
        after the snapshot and the decided units not yet committed, each routed as before."""
        import ray

        print(
            f"warning: diversity partition {p} was lost (its node or process); rebuilding it "
            "from the last snapshot and the units committed since",
            file=sys.stderr,
        )
        self.partitions[p] = self._new_partition()
        skip: dict[tuple[str, str], int] = {}
        snapshot = self._snapshot_in_force
        if snapshot is not None:
            folder = snapshot["folder"]
            ray.get(self.partitions[p].load.remote(self.state, f"{folder}/partition-{p}.faiss"))
            skip = {(o, s): n for o, s, n, _ in snapshot["covered"]}
        elif self.cfg.reference_path:
            self._add_home(p, self._reference_vectors())
        for vectors in self._driver_added:
            self._add_home(p, vectors)
        for output, stage, units, _ in self.covered:
            store = self._stores[(output, stage)]
            records = sorted(store.committed(stage).values(), key=lambda r: r.unit_index)
            for record in records[skip.get((output, stage), 0) : units]:
                if record.embedding_shard:
                    table = store.location.read_table(record.embedding_shard)
                    self._add_home(p, table_vectors(table))
        for unit in self._pending:
            for vectors in unit:
                self._add_home(p, vectors)

    def _add_home(self, p: int, vectors: np.ndarray) -> None:
        """Add to partition `p` the vectors whose home it is."""
        import ray

        mine = vectors[self._route(vectors)[:, 0] == p] if len(vectors) else vectors
        if len(mine):
            ray.get(self.partitions[p].add.remote(mine))

    def decide_unit(self, vectors: np.ndarray) -> BatchDecision:
        """Decide a unit's ordered rows and add the kept ones: what a filtered stage does
        (runtime/slices.py), each unit's kept vectors then committed with it
        (`unit_committed`, in the order they were decided)."""
        self.prime([])
        self._pending.append([])
        return self._decide(vectors, self._pending[-1])

    def _decide(self, vectors: np.ndarray, added: list[np.ndarray]) -> BatchDecision:
        """Decide in sub-batches, each one's kept vectors added (and recorded in `added`,
        what a lost partition is rebuilt from) before the next is decided."""
        keep = np.zeros(len(vectors), dtype=bool)
        best = np.full(len(vectors), -np.inf, dtype=np.float32)
        for start in range(0, len(vectors), DECIDE_BATCH):
            part = vectors[start : start + DECIDE_BATCH]
            decision = decide_batch(part, self.index_max(part), self.cfg.threshold)
            self._add(part[decision.keep])
            added.append(part[decision.keep])
            keep[start : start + len(part)] = decision.keep
            best[start : start + len(part)] = decision.nn_similarity
        return BatchDecision(keep, best)

    def ordered(self, vectors: np.ndarray) -> OrderedBatch:
        """Row-by-row decisions beside other filters; call `finish(batch)` when done."""
        self.prime([])
        self.snapshots_off = True
        return OrderedBatch(vectors, self.index_max(vectors))

    def finish(self, batch: OrderedBatch) -> None:
        kept = batch.vectors[batch.keep].astype(np.float16)
        self._add(kept)
        self._driver_added.append(kept)

    # -- rebuilding the index on resume ----------------------------------------------------------

    def prime(self, stages: list[tuple[Any, str]]) -> None:
        """Make the index hold what the filtered `stages` (OutputStore, stage name; in run
        order) committed. The first call loads the last snapshot where it matches those
        commits and re-adds only the units after it; without one it adds the reference
        corpus and every committed unit's vectors (read a few units at a time, so memory
        stays one unit's worth). Each stage is restored once per run."""
        skip: dict[tuple[str, str], int] = {}
        if not self.primed:
            self.primed = True
            loaded = self._load_snapshot(stages)
            if loaded is not None:
                skip = loaded
            elif self.cfg.reference_path:
                self._add(self._reference_vectors())
        for store, stage in stages:
            key = (store.location.uri, stage)
            self._stores[key] = store
            if key not in self.restored_stages:
                self.restored_stages.add(key)
                self._restore_stage(store, stage, skip.get(key, 0))

    def _restore_stage(self, store: Any, stage: str, skip: int) -> None:
        """Add the kept vectors of `stage`'s committed units after the first `skip` (which
        the loaded snapshot holds), in unit order, reading ahead a few units."""
        from concurrent.futures import ThreadPoolExecutor

        records = sorted(store.committed(stage).values(), key=lambda r: r.unit_index)
        if not skip:
            self._cover(store.location.uri, stage)
        todo = [r for r in records[skip:]]
        with ThreadPoolExecutor(_RESTORE_READS) as pool:
            read = lambda r: (  # noqa: E731
                table_vectors(store.location.read_table(r.embedding_shard))
                if r.embedding_shard
                else None
            )
            ahead = [pool.submit(read, r) for r in todo[:_RESTORE_READS]]
            for position, record in enumerate(todo):
                vectors = ahead[position].result()
                ahead[position] = None  # type: ignore[call-overload]
                if position + _RESTORE_READS < len(todo):
                    ahead.append(pool.submit(read, todo[position + _RESTORE_READS]))
                if vectors is not None:
                    self._add(vectors)
                self._cover_unit(store.location.uri, stage, record.unit_id)

    def _cover(self, output: str, stage: str) -> None:
        if not self.covered or self.covered[-1][:2] != [output, stage]:
            self.covered.append([output, stage, 0, ""])
            self._covered_ids.append(hashlib.sha256())

    def unit_committed(self, output: str, stage: str, unit_id: str) -> None:
        """The next decided unit of the stage being filtered committed (its vectors are in
        the index): what a snapshot taken now covers."""
        if self._pending:
            self._pending.popleft()
        self._cover_unit(output, stage, unit_id)

    def _cover_unit(self, output: str, stage: str, unit_id: str) -> None:
        self._cover(output, stage)
        self._covered_ids[-1].update(unit_id.encode() + b"\n")
        self.covered[-1][2] += 1
        self.covered[-1][3] = self._covered_ids[-1].hexdigest()

    # -- snapshots ---------------------------------------------------------------------------------

    def snapshot_due(self) -> bool:
        """Whether the index grew enough since the last snapshot for a new one to pay."""
        if self.snapshots_off or not self.covered:
            return False
        return self.added_since_snapshot >= max(SNAPSHOT_MIN_VECTORS, self.size_at_snapshot)

    def take_snapshot(self, check: Callable[[], None] | None = None) -> None:
        """Save every partition's index and then `_diversity/snapshot.json` naming them and
        the committed units they hold. Call it only when every unit decided so far has
        committed (the index then holds exactly the committed units' vectors). `check` (the
        output lease's) runs before the pointer is written: a run that lost the output never
        replaces the live run's snapshot. A failed write leaves the previous snapshot in force
        (a resume re-adds more units) and is tried again once the index doubled again."""
        import ray

        if self.snapshots_off or not self.covered or not self.added_since_snapshot:
            return
        folder = f"snapshot-{uuid.uuid4().hex[:12]}"
        try:
            sizes = ray.get(
                [
                    p.save.remote(self.state, f"{folder}/partition-{i}.faiss")
                    for i, p in enumerate(self.partitions)
                ]
            )
            previous = self._read_pointer()
            if check is not None:
                check()
            pointer = {
                "format": _SNAPSHOT_FORMAT,
                "folder": folder,
                "index": self._snapshot_key(),
                "covered": self.covered,
                "bytes": sizes,
                "taken": time.time(),
            }
            self.state.write_bytes_atomic(SNAPSHOT_FILE, json.dumps(pointer).encode())
            self._snapshot_in_force = json.loads(json.dumps(pointer))  # a copy: covered moves on
        except (OSError, TypeError, ray.exceptions.RayError) as err:  # TypeError: unpicklable
            print(f"warning: diversity index snapshot not written ({err})", file=sys.stderr)
            # tried again only once the index doubles again: decisions never wait on it per unit
            self.size_at_snapshot += self.added_since_snapshot
            self.added_since_snapshot = 0
            return
        self.size_at_snapshot += self.added_since_snapshot
        self.added_since_snapshot = 0
        if previous is not None and previous.get("folder") != folder:
            self._delete_folder(str(previous.get("folder", "")))

    def _snapshot_key(self) -> dict[str, Any]:
        cfg = self.cfg
        centroids = None
        if self.centroids is not None:
            centroids = hashlib.sha256(np.ascontiguousarray(self.centroids).tobytes()).hexdigest()
        return {
            "model": cfg.model,
            "dim": self.dim,
            "partitions": cfg.partitions,
            "exact_max": cfg.exact_max_vectors,
            "centroids": centroids,
            "reference": self._reference_identity(),
        }

    def _reference_identity(self) -> list[Any] | None:
        """The reference corpus's path, column and files (name, size, sampled digest): an
        edited reference file makes the snapshot's reference vectors stale."""
        cfg = self.cfg
        if not cfg.reference_path:
            return None
        files = identify_inputs(InputSpec(cfg.reference_path, cfg.reference_column))
        return [cfg.reference_path, cfg.reference_column, files]

    def _read_pointer(self) -> dict[str, Any] | None:
        try:
            raw = self.state.read_bytes(SNAPSHOT_FILE)
            pointer = json.loads(raw) if raw else None
        except (OSError, ValueError):
            return None
        return pointer if isinstance(pointer, dict) else None

    def _delete_folder(self, folder: str) -> None:
        if not folder.startswith("snapshot-"):
            return
        try:
            self.state.delete(folder)
        except OSError:
            pass  # an old snapshot left behind costs disk, never correctness

    def _load_snapshot(self, stages: list[tuple[Any, str]]) -> dict[tuple[str, str], int] | None:
        """Load the last snapshot into the partitions where it holds exactly a prefix of
        what `stages` committed now (same units, same ids, same index settings); returns
        the units it holds per (output, stage), or None (nothing loaded)."""
        import ray

        pointer = self._read_pointer()
        if pointer is None or pointer.get("format") != _SNAPSHOT_FORMAT:
            return None
        if pointer.get("index") != self._snapshot_key():
            return None
        covered = pointer.get("covered") or []
        if not isinstance(covered, list) or not covered or len(covered) > len(stages):
            return None
        if not all(isinstance(e, list) and len(e) == 4 for e in covered):
            return None  # damaged: every unit is re-added instead
        if not isinstance(pointer.get("folder"), str):
            return None
        hashers = []  # each stage's running digest of its unit ids, continued as units commit
        for position, (entry, (store, stage)) in enumerate(zip(covered, stages, strict=False)):
            output, name, units, digest = entry
            if not isinstance(units, int):
                return None
            if [output, name] != [store.location.uri, stage]:
                return None
            records = sorted(store.committed(stage).values(), key=lambda r: r.unit_index)
            if units > len(records) or (position < len(covered) - 1 and units != len(records)):
                return None
            ids = hashlib.sha256(b"".join(r.unit_id.encode() + b"\n" for r in records[:units]))
            if ids.hexdigest() != digest and units:
                return None
            hashers.append(ids)
        folder = str(pointer["folder"])
        try:
            sizes = ray.get(
                [
                    p.load.remote(self.state, f"{folder}/partition-{i}.faiss")
                    for i, p in enumerate(self.partitions)
                ]
            )
        except (OSError, TypeError, ray.exceptions.RayError) as err:  # TypeError: unpicklable
            print(f"warning: diversity index snapshot not loaded ({err})", file=sys.stderr)
            ray.get([p.reset.remote() for p in self.partitions])
            return None
        self.covered.extend(list(entry) for entry in covered)
        self._covered_ids.extend(hashers)
        self.size_at_snapshot = int(sum(sizes))
        self.snapshot_loaded = folder
        self._snapshot_in_force = {"folder": folder, "covered": [list(e) for e in covered]}
        return {(output, name): units for output, name, units, _ in covered}

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
