"""The diversity filter: decisions, index, routing, persistence, embedder, and whole runs on Ray.

    pytest tests/test_diversity.py

Whole-run tests use the simulated generator (FakeBackend) so that which replica answers, and
when, is under the test's control; the embedder, faiss and the Ray actors are the real ones.
The real engine with the filter on runs in test_end_to_end.py.
"""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import Crash, crash_on_commit, job_config, write_jsonl
from fake_backend import FakeBackend

from synth_ray.diversity.decide import decide_batch, histogram
from synth_ray.diversity.index import PartitionIndex
from synth_ray.diversity.partitioning import route, train_centroids
from synth_ray.engine.requests import EngineResult
from synth_ray.errors import ConfigError
from synth_ray.io.vectors import read_vectors, write_vectors_atomic

PARAPHRASES = [
    ("How do I reset my password?", "What is the way to reset my password?"),
    ("The cat sat on the mat.", "A cat was sitting on the mat."),
    ("Explain photosynthesis in simple terms.", "Describe photosynthesis in simple words."),
]
UNRELATED = [
    "Quantum computers use qubits.",
    "Bake the bread at 200 degrees.",
    "The treaty was signed in 1648.",
    "Write a SQL query to count users.",
]


def unit(v: list[float]) -> np.ndarray:
    a = np.asarray(v, dtype=np.float32)
    return (a / np.linalg.norm(a)).astype(np.float16)


# -- pure parts ------------------------------------------------------------------------------


def test_in_batch_near_duplicates_keep_the_first_and_index_hits_drop():
    a, b = unit([1, 0, 0]), unit([0, 1, 0])
    near_a = unit([1, 0.05, 0])
    vectors = np.stack([a, near_a, b, a])
    decision = decide_batch(vectors, np.full(4, -np.inf), 0.9)
    assert decision.keep.tolist() == [True, False, True, False]
    assert decision.nn_similarity[0] == -np.inf and decision.nn_similarity[1] > 0.99
    # b is already in the index: now only a is new
    decision = decide_batch(np.stack([a, b]), np.array([-np.inf, 0.999]), 0.9)
    assert decision.keep.tolist() == [True, False]


def test_threshold_is_inclusive_and_histogram_bins():
    a = unit([1, 0])
    decision = decide_batch(np.stack([a]), np.array([0.5], np.float32), 0.5)
    assert decision.keep.tolist() == [False]  # "at least threshold" is dropped
    counts = histogram(np.array([-0.3, 0.0, 0.51, 0.99, 1.0, -np.inf], np.float32))
    assert sum(counts) == 5 and counts[0] == 2 and counts[10] == 1 and counts[19] == 2


def test_index_turns_into_hnsw_past_its_size_and_still_finds_members():
    rng = np.random.default_rng(0)
    data = rng.normal(size=(300, 32)).astype(np.float32)
    data = (data / np.linalg.norm(data, axis=1, keepdims=True)).astype(np.float16)
    index = PartitionIndex(32, exact_max=100)
    index.add(data[:100])
    assert index.kind == "exact"
    index.add(data[100:])
    assert index.kind == "hnsw" and index.size == 300
    found = index.max_similarity(data)
    assert (found > 0.99).mean() >= 0.99  # every stored vector finds itself
    assert PartitionIndex(32).max_similarity(data[:2]).tolist() == [-np.inf, -np.inf]


def test_routing_is_deterministic_and_nearest_first():
    rng = np.random.default_rng(1)
    sample = rng.normal(size=(400, 16)).astype(np.float32)
    sample /= np.linalg.norm(sample, axis=1, keepdims=True)
    c1, c2 = train_centroids(sample, 4), train_centroids(sample, 4)
    assert np.array_equal(c1, c2)
    probes = route(sample[:50], c1, 2)
    scores = sample[:50] @ c1.T
    assert (probes[:, 0] == scores.argmax(axis=1)).all()
    assert (probes[:, 0] != probes[:, 1]).all()


def test_vectors_round_trip_exactly(tmp_path):
    vectors = np.random.default_rng(2).normal(size=(5, 384)).astype(np.float16)
    write_vectors_atomic(tmp_path / "v.parquet", [f"r{i}" for i in range(5)], vectors)
    table, back = read_vectors(tmp_path / "v.parquet")
    assert table.column("id").to_pylist()[0] == "r0" and np.array_equal(back, vectors)


def test_embedder_separates_paraphrases_from_unrelated_texts():
    from synth_ray.diversity.embedding import Embedder

    embedder = Embedder(device="cpu")
    for a, b in PARAPHRASES:
        v = embedder.encode([a, b]).astype(np.float32)
        assert v[0] @ v[1] >= 0.85, (a, b)
    v = embedder.encode(UNRELATED).astype(np.float32)
    sims = v @ v.T
    np.fill_diagonal(sims, 0)
    assert sims.max() < 0.5


def test_bad_model_paths_are_one_line_config_errors(tmp_path):
    from synth_ray.diversity.embedding import resolve_embedding_model

    with pytest.raises(
        ConfigError, match=r"^filters.diversity.model /no/such/model: no such folder$"
    ):
        resolve_embedding_model("/no/such/model")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="not a sentence-transformers model folder"):
        resolve_embedding_model(str(tmp_path / "empty"))


def test_bad_filter_config_values_are_refused(tmp_path):
    docs = write_jsonl(tmp_path / "in.jsonl", [{"id": "a", "text": "x"}])
    with pytest.raises(ConfigError, match="filters.diversity.threshold"):
        job_config(tmp_path, docs, filters={"diversity": {"enabled": True, "threshold": 1.5}})
    with pytest.raises(ConfigError, match="filters.diversity.partitions"):
        job_config(tmp_path, docs, filters={"diversity": {"partitions": 0}})


# -- whole runs on Ray with a simulated generator ----------------------------------------------

TEXTS = [p for pair in PARAPHRASES for p in pair] + UNRELATED


def echo_responder(request):
    """The completion is the text after 'ECHO:' in the prompt, so tests choose the rows."""
    return request  # replaced per test by echo_backend


def echo_backend(renderer, **kwargs) -> FakeBackend:
    def respond(request):
        prompt = renderer.tokenizer.decode(request.prompt_token_ids)
        text = prompt.split("ECHO:", 1)[1].split("<|im_end|>", 1)[0].strip()
        return EngineResult(request.request_id, text, len(request.prompt_token_ids), 3, "stop")

    return FakeBackend(responder=respond, **kwargs)


def generate_config(tmp_path, texts, name="out", **diversity):
    rows = [{"id": f"p{i:02d}", "text": f"ECHO: {t}"} for i, t in enumerate(texts)]
    path = write_jsonl(tmp_path / f"{name}.jsonl", rows)
    config = job_config(
        tmp_path,
        path,
        method="generate",
        output={"path": str(tmp_path / name), "rows_per_shard": 2},
        filters={"diversity": {"enabled": True, "threshold": 0.8, **diversity}},
        resources={"replicas": 2},
        # one request at a time per replica: both replicas serve, finishing out of order
        scheduler={"batch_size": 1, "max_in_flight_per_replica": 1},
    )
    return config


def kept_rows(path) -> list[dict]:
    from synth_ray.io.output_store import OutputStore

    store = OutputStore(path)
    return [{k: r[k] for k in ("id", "text", "nn_similarity")} for r in store.rows()]


def test_paraphrases_dropped_across_workers_unrelated_kept(tmp_path, embedded_model, ray_local):
    from synth_ray.engine.prompts import PromptRenderer
    from synth_ray.runtime.job import run_job

    renderer = PromptRenderer.from_model(embedded_model)
    config = generate_config(tmp_path, TEXTS)
    backend = echo_backend(renderer, seed=3, latency_polls=3)
    summary = run_job(config, show_progress=False, backend=backend)
    rows = kept_rows(config.output.path)
    texts = [r["text"] for r in rows]
    # each pair shares a unit of 2 rows here; pairs also land on different replicas below
    assert texts == [a for a, _ in PARAPHRASES] + UNRELATED
    assert summary.stats["dropped_by_filter"] == {"diversity": 3}
    assert summary.stats["accounted"] and sum(summary.stats["nn_similarity_histogram"]) == 9
    assert rows[0]["nn_similarity"] is None and all(r["nn_similarity"] < 0.8 for r in rows[1:])
    assert pq.read_schema(next((tmp_path / "out" / "data").glob("*.parquet"))).field(
        "nn_similarity"
    )
    served = {rid for rid, _, _ in backend.submitted}
    assert len(served) == 2  # both replicas generated rows

    # duplicates that arrive in different units, through different replicas, in any finishing
    # order: the same decisions every time
    spread = [a for a, _ in PARAPHRASES] + UNRELATED + [b for _, b in PARAPHRASES]
    outcomes = []
    for seed in (0, 1, 2):
        cfg = generate_config(tmp_path, spread, name=f"spread{seed}")
        run_job(cfg, show_progress=False, backend=echo_backend(renderer, seed=seed))
        outcomes.append(kept_rows(cfg.output.path))
    assert outcomes[0] == outcomes[1] == outcomes[2]
    assert [r["text"] for r in outcomes[0]] == [a for a, _ in PARAPHRASES] + UNRELATED


def test_killed_run_resumes_to_the_same_decisions(tmp_path, embedded_model, ray_local, monkeypatch):
    from synth_ray.engine.prompts import PromptRenderer
    from synth_ray.runtime.job import run_job

    renderer = PromptRenderer.from_model(embedded_model)
    spread = (
        UNRELATED[:2] + [a for a, _ in PARAPHRASES] + UNRELATED[2:] + [b for _, b in PARAPHRASES]
    )
    clean = generate_config(tmp_path, spread, name="clean")
    run_job(clean, show_progress=False, backend=echo_backend(renderer))
    expected = kept_rows(clean.output.path)

    config = generate_config(tmp_path, spread, name="killed")
    with monkeypatch.context() as patch:
        crash_on_commit(patch, lambda record: record.unit_index == 3)
        with pytest.raises(Crash):
            run_job(config, show_progress=False, backend=echo_backend(renderer))
    from synth_ray.io.output_store import OutputStore

    assert len(OutputStore(config.output.path).committed()) == 3  # a prefix, in unit order
    summary = run_job(config, show_progress=False, backend=echo_backend(renderer, seed=5))
    assert kept_rows(config.output.path) == expected
    assert summary.units_skipped == 3 and summary.stats["dropped_by_filter"] == {"diversity": 3}


def test_a_resume_loads_the_index_snapshot_and_re_adds_only_later_units(
    tmp_path, embedded_model, ray_local, monkeypatch
):
    """Snapshots are taken mid-stage (once every decided unit committed) and at its end. A
    resume loads the last one and reads back only the units committed after it, ending with
    the clean run's rows; a snapshot that does not match the commits (tampered here) is
    ignored and every unit is re-added, with the same result."""
    import json
    import shutil

    import synth_ray.runtime.diversity as diversity
    from synth_ray.engine.prompts import PromptRenderer
    from synth_ray.io.output_store import OutputStore
    from synth_ray.runtime.job import run_job

    renderer = PromptRenderer.from_model(embedded_model)
    spread = UNRELATED + [a for a, _ in PARAPHRASES] + [b for _, b in PARAPHRASES]
    parts = {"partitions": 2, "probes": 2}
    clean = generate_config(tmp_path, spread, name="clean", **parts)
    run_job(clean, show_progress=False, backend=echo_backend(renderer))
    expected = kept_rows(clean.output.path)

    monkeypatch.setattr(diversity, "SNAPSHOT_MIN_VECTORS", 1)  # as soon as the index doubled
    config = generate_config(tmp_path, spread, name="killed", **parts)
    with monkeypatch.context() as patch:
        crash_on_commit(patch, lambda record: record.unit_index == 4)
        with pytest.raises(Crash):
            run_job(config, show_progress=False, backend=echo_backend(renderer))
    state = tmp_path / "killed" / "_diversity"
    pointer = json.loads((state / diversity.SNAPSHOT_FILE).read_text())
    [(_, stage, covered, _)] = pointer["covered"]
    assert stage == "" and 1 <= covered < 4
    assert len(list(state.glob("snapshot-*"))) == 1  # the earlier ones were deleted
    shutil.copytree(tmp_path / "killed", tmp_path / "tampered")

    read: list[int] = []
    real_read = diversity.table_vectors

    def counting(table):
        read.append(len(table))
        return real_read(table)

    monkeypatch.setattr(diversity, "table_vectors", counting)
    summary = run_job(config, show_progress=False, backend=echo_backend(renderer, seed=5))
    assert len(read) == 4 - covered  # the units after the snapshot, and only them
    assert summary.units_skipped == 4 and kept_rows(config.output.path) == expected
    final = json.loads((state / diversity.SNAPSHOT_FILE).read_text())
    assert final["covered"][0][2] == summary.units_total  # the stage's end

    pointer["covered"][0][3] = "0" * 64  # units other than the ones committed
    (tmp_path / "tampered" / "_diversity" / diversity.SNAPSHOT_FILE).write_text(json.dumps(pointer))
    tampered = config.model_copy(
        update={"output": config.output.model_copy(update={"path": str(tmp_path / "tampered")})}
    )
    read.clear()
    run_job(tampered, show_progress=False, backend=echo_backend(renderer, seed=6))
    assert len(read) == 4 and kept_rows(tmp_path / "tampered") == expected
    assert len(OutputStore(tmp_path / "tampered").committed()) == summary.units_total


def test_a_lost_partition_is_rebuilt_and_the_decisions_hold(
    tmp_path, embedded_model, ray_local, monkeypatch, capsys
):
    """Partition actors killed mid-stage (as when their node is lost), right after a unit
    was decided and before it committed: the next call finds them dead and rebuilds each
    from the snapshot in force (or, with none, from nothing), the units committed since and
    the decided units not yet committed. The paraphrases of the killed units' rows are still
    dropped: the run ends with the clean run's rows, with snapshots and without."""
    import ray

    import synth_ray.runtime.diversity as diversity
    from synth_ray.engine.prompts import PromptRenderer
    from synth_ray.runtime.job import run_job
    from synth_ray.runtime.slices import FilteredSliceTracker

    renderer = PromptRenderer.from_model(embedded_model)
    # units of 2 rows: the a's are decided in units 2-3, their paraphrases come after
    spread = UNRELATED + [a for a, _ in PARAPHRASES] + [b for _, b in PARAPHRASES]
    parts = {"partitions": 2, "probes": 2, "partition_placement": "spread"}
    clean = generate_config(tmp_path, spread, name="clean", **parts)
    run_job(clean, show_progress=False, backend=echo_backend(renderer))
    expected = kept_rows(clean.output.path)
    real_decide = FilteredSliceTracker._decide
    killed: list[int] = []

    def decide_then_kill(self, unit):
        real_decide(self, unit)
        if unit.unit.index in (2, 3):
            for actor in self.diversity.partitions:
                ray.kill(actor)
            killed.append(unit.unit.index)

    monkeypatch.setattr(FilteredSliceTracker, "_decide", decide_then_kill)
    for snapshot_at in (1, diversity.SNAPSHOT_MIN_VECTORS):
        monkeypatch.setattr(diversity, "SNAPSHOT_MIN_VECTORS", snapshot_at)
        killed.clear()
        config = generate_config(tmp_path, spread, name=f"lost-{snapshot_at}", **parts)
        run_job(config, show_progress=False, backend=echo_backend(renderer))
        assert killed == [2, 3] and "diversity partition 0 was lost" in capsys.readouterr().err
        assert kept_rows(config.output.path) == expected


def _bare_filter(state_path):
    """A DiversityFilter without actors: enough for its snapshot bookkeeping."""
    from synth_ray.filter_config import DiversityConfig
    from synth_ray.io.filesystem import open_location
    from synth_ray.runtime.diversity import DiversityFilter

    bare = DiversityFilter.__new__(DiversityFilter)
    bare.cfg = DiversityConfig(enabled=True)
    bare.state = open_location(str(state_path))
    bare.dim, bare.centroids = 4, None
    bare.snapshots_off, bare.covered, bare._covered_ids = False, [["out", "", 3, "d"]], []
    bare.added_since_snapshot, bare.size_at_snapshot = 10, 0
    return bare


def test_a_snapshot_that_cannot_be_written_is_retried_only_when_the_index_doubled(tmp_path, capsys):
    """Decisions wait for commits only while a snapshot is due: a failed write (a full disk,
    an output Ray cannot send to the actors) must not keep it due for every unit."""
    from types import SimpleNamespace

    from synth_ray.runtime.diversity import SNAPSHOT_FILE

    def refuse(*args):
        raise TypeError("cannot be pickled")

    bare = _bare_filter(tmp_path / "state")
    bare.partitions = [SimpleNamespace(save=SimpleNamespace(remote=refuse))]
    bare.take_snapshot()
    assert "snapshot not written" in capsys.readouterr().err
    assert bare.added_since_snapshot == 0 and bare.size_at_snapshot == 10
    assert not (tmp_path / "state" / SNAPSHOT_FILE).exists()


def test_a_damaged_snapshot_pointer_is_ignored(tmp_path):
    import json

    from synth_ray.runtime.diversity import SNAPSHOT_FILE

    bare = _bare_filter(tmp_path / "state")
    (tmp_path / "state").mkdir()
    key = bare._snapshot_key()
    for covered, folder in (
        ([["x"]], "snapshot-a"),
        ([["o", "", "3", "d"]], "snapshot-a"),
        (
            [["o", "", 3, "d"]],
            None,
        ),
    ):
        pointer = {"format": 1, "index": key, "covered": covered, "folder": folder}
        (tmp_path / "state" / SNAPSHOT_FILE).write_text(json.dumps(pointer))
        assert bare._load_snapshot([(None, "")]) is None
    (tmp_path / "state" / SNAPSHOT_FILE).write_text("{not json")
    assert bare._load_snapshot([(None, "")]) is None


def test_a_stop_commits_the_units_already_decided(tmp_path, embedded_model, ray_local, monkeypatch):
    """A graceful stop with the filter on: every unit decided before or during the grace is
    written and committed (its write is sent although no new work is), and the resume ends
    with the clean run's rows."""
    from synth_ray.engine.prompts import PromptRenderer
    from synth_ray.io.output_store import OutputStore
    from synth_ray.runtime.job import run_job
    from synth_ray.runtime.slices import FilteredSliceTracker
    from synth_ray.runtime.stopping import JobStopped, StopRequest

    renderer = PromptRenderer.from_model(embedded_model)
    spread = UNRELATED + [a for a, _ in PARAPHRASES] + [b for _, b in PARAPHRASES]
    clean = generate_config(tmp_path, spread, name="clean")
    run_job(clean, show_progress=False, backend=echo_backend(renderer))
    expected = kept_rows(clean.output.path)

    stop = StopRequest(grace_s=600)
    decided: list[int] = []
    real_decide = FilteredSliceTracker._decide

    def decide_then_stop(self, unit):
        real_decide(self, unit)
        decided.append(unit.unit.index)
        stop.request("SIGTERM")  # as a signal arriving right after the first decision

    monkeypatch.setattr(FilteredSliceTracker, "_decide", decide_then_stop)
    config = generate_config(tmp_path, spread, name="stopped")
    with pytest.raises(JobStopped):
        run_job(config, show_progress=False, backend=echo_backend(renderer), stop=stop)
    committed = OutputStore(config.output.path).committed()
    assert decided and sorted(r.unit_index for r in committed.values()) == sorted(decided)
    monkeypatch.undo()
    summary = run_job(config, show_progress=False, backend=echo_backend(renderer, seed=4))
    assert summary.units_skipped == len(decided)
    assert kept_rows(config.output.path) == expected


def test_partitions_and_reference_corpus(tmp_path, embedded_model, ray_local):
    import pyarrow as pa

    from synth_ray.engine.prompts import PromptRenderer
    from synth_ray.runtime.job import run_job

    renderer = PromptRenderer.from_model(embedded_model)
    reference = tmp_path / "reference.parquet"
    pq.write_table(pa.table({"text": [UNRELATED[0]]}), reference)
    config = generate_config(
        tmp_path, TEXTS, name="parts", partitions=2, probes=2, reference_path=str(reference)
    )
    summary = run_job(config, show_progress=False, backend=echo_backend(renderer))
    texts = [r["text"] for r in kept_rows(config.output.path)]
    assert texts == [a for a, _ in PARAPHRASES] + UNRELATED[1:]
    assert summary.stats["dropped_by_filter"] == {"diversity": 4}
    assert (tmp_path / "parts" / "_diversity" / "centroids.npy").exists()


def test_unloadable_model_fails_before_any_row(tmp_path, embedded_model, ray_local):
    from synth_ray.engine.prompts import PromptRenderer
    from synth_ray.runtime.job import run_job

    renderer = PromptRenderer.from_model(embedded_model)
    config = generate_config(tmp_path, TEXTS, name="badmodel", model="no-such-org/no-such-model")
    with pytest.raises(ConfigError, match="filters.diversity.model no-such-org/no-such-model"):
        run_job(config, show_progress=False, backend=echo_backend(renderer))
    missing = generate_config(tmp_path, TEXTS, name="badref", reference_path="/no/ref.parquet")
    with pytest.raises(ConfigError, match="filters.diversity.reference_path"):
        run_job(missing, show_progress=False, backend=echo_backend(renderer))


def test_embedders_the_cluster_cannot_hold_fail_the_job_instead_of_waiting(
    tmp_path, embedded_model, ray_local
):
    """An embedder actor Ray can never place (it asks for more CPUs than the cluster has, or
    they are all taken) fails the job within scheduler.start_timeout_s, naming what it needs,
    instead of waiting for it forever."""
    from synth_ray.engine.prompts import PromptRenderer
    from synth_ray.errors import ResourceError
    from synth_ray.runtime.job import run_job

    renderer = PromptRenderer.from_model(embedded_model)
    config = generate_config(tmp_path, TEXTS, name="nocpu", cpus_per_embedder=64)
    config = config.model_copy(
        update={"scheduler": config.scheduler.model_copy(update={"start_timeout_s": 3})}
    )
    with pytest.raises(ResourceError, match=r"embedder\(s\) not started within 3s.*'CPU': 64"):
        run_job(config, show_progress=False, backend=echo_backend(renderer))


def test_sliced_units_are_decided_as_whole_units(tmp_path, embedded_model, ray_local):
    """Units cut into slices at the tail (and staged, embedded next to the generator) reach
    the same decisions as units sent whole, end as one data shard each, and leave nothing
    staged."""
    from synth_ray.engine.prompts import PromptRenderer
    from synth_ray.io.output_store import OutputStore
    from synth_ray.runtime.job import run_job

    renderer = PromptRenderer.from_model(embedded_model)
    spread = [a for a, _ in PARAPHRASES] + UNRELATED + [b for _, b in PARAPHRASES]
    outcomes = []
    for name, min_slice in (("whole", 1000), ("sliced", 1)):
        cfg = generate_config(tmp_path, spread, name=name)
        cfg.output.rows_per_shard = 6
        cfg.scheduler.min_slice_rows = min_slice
        cfg.scheduler.max_in_flight_per_replica = 256
        backend = echo_backend(renderer, seed=4)
        summary = run_job(cfg, show_progress=False, backend=backend)
        outcomes.append(kept_rows(cfg.output.path))
        store = OutputStore(cfg.output.path)
        sent = [key for _, _, keys in backend.submitted for key in keys if "final" not in key]
        assert (len(sent) > len(store.committed())) == (name == "sliced")
        names = sorted(p.name for p in (tmp_path / name / "data").iterdir())
        assert [n[: len("part-000000")] for n in names] == [
            f"part-{i:06d}" for i in range(len(store.committed()))
        ]
        assert not list((tmp_path / name / "_staging").glob("*")), "staged rows left behind"
        assert summary.stats["accounted"] and summary.stats["dropped_by_filter"] == {"diversity": 3}
    assert outcomes[0] == outcomes[1]
