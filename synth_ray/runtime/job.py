"""Run one job: validate everything, then run its stages on one set of replicas.

    synth-ray run configs/quickstart.yaml          # the CLI front of `run_job`

Order matters for the promises: every check that can fail on the user's input (inputs,
columns, model path, ids, output owner, cluster resources) runs before the first request,
so a bad config never leaves half a job behind; and a unit is committed only when all its
rows are on disk, so a run killed at any moment resumes without losing or duplicating rows.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from typing import Any

from synth_ray.config import JobConfig
from synth_ray.engine.models import model_display_name, resolve_model
from synth_ray.engine.prompts import load_renderer
from synth_ray.io.inputs import (
    default_id_column,
    identify_inputs,
    snapshot_inputs,
    validate_inputs,
)
from synth_ray.io.lease import OutputLease
from synth_ray.io.output_store import OutputStore
from synth_ray.methods import method_spec
from synth_ray.methods.stages import JobContext
from synth_ray.runtime.backend import Backend
from synth_ray.runtime.cluster import remote_api_key
from synth_ray.runtime.diversity import CENTROID_SAMPLE, check_diversity_config
from synth_ray.runtime.stage import RunSummary, StageRunner
from synth_ray.runtime.stage_documents import InputDocuments
from synth_ray.runtime.stopping import JobStopped, StopRequest
from synth_ray.runtime.timeline import set_state


def with_default_id_column(config: JobConfig, method: Any, resuming: bool = True) -> JobConfig:
    """`config` with `input.id_column: id` when it names none and every input file has an `id`
    column (io/inputs.py `default_id_column`), so a real corpus without one runs as it is and
    one with one keeps its ids; `id_column: ""` asks for derived ids. Resolved before the
    fingerprint, so a recipe that named `id` and one that relies on this default are the
    same job. An output this job made with derived ids before this default keeps them when
    `resuming` (not --overwrite)."""
    if method.input_spec is None or config.input is None or config.input.id_column:
        return config
    if config.input.id_column == "":  # asked for: derived ids, whatever columns there are
        found = None
    else:
        found = default_id_column(method.input_spec(config))
    resolved = config.model_copy(
        update={"input": config.input.model_copy(update={"id_column": found})}
    )
    if found is not None and resuming and _made_with_derived_ids(config, resolved):
        return config.model_copy(
            update={"input": config.input.model_copy(update={"id_column": None})}
        )
    return resolved


def _made_with_derived_ids(config: JobConfig, resolved: JobConfig) -> bool:
    """Whether the output was made by this same job with derived ids, before ids defaulted to
    an `id` column: then it keeps them, so it resumes as it was."""
    try:
        job = OutputStore(config.output.path).read_job()
    except Exception:  # noqa: BLE001 - no readable output: a new one
        return False
    return bool(job) and job.get("fingerprint") == config.fingerprint() != resolved.fingerprint()


def row_ids_line(id_column: str | None, given: str | None) -> str:
    """What the rows' ids come from (`given`: `input.id_column` as the config says), for the
    run's summary."""
    if id_column is not None:
        how = "input.id_column" if given else "found in every input file"
        return f"row ids: the input's {id_column!r} column ({how})"
    if given == "":
        return "row ids: derived from file name and row number (input.id_column: '')"
    return (
        "row ids: derived from file name and row number (not every input file has an 'id' "
        "column; input.id_column names another)"
    )


def _nothing_committed(store: OutputStore) -> bool:
    """True for an output with no commit yet; False when the output cannot be read (claiming
    it reports why, in one line, before any work)."""
    try:
        return not store.commits.has_commits()
    except OSError:
        return False


def run_job(
    config: JobConfig,
    overwrite: bool = False,
    show_progress: bool = True,
    backend: Backend | None = None,
    stop: StopRequest | None = None,
    replan: bool = False,
) -> RunSummary:
    """Run (or resume) `config`. With `backend` given, the caller owns it (and Ray). Once
    `stop` is requested no new work starts and `JobStopped` is raised (its `summary` says
    what this run committed) after the work in flight finished or its grace ran out. An input
    that differs from the one the output's earlier runs planned with is refused
    (InputChangedError) unless `replan` (or `overwrite`) says to plan again."""
    started = time.monotonic()
    method = method_spec(config.method)
    method.check(config)  # the method's own files (seeds, exemplars): fail now
    given_ids = config.input.id_column if config.input is not None else None  # "": derived
    config = with_default_id_column(config, method, resuming=not overwrite)
    docs = None
    if method.input_spec is None:
        texts = method.sample_texts
        sample: Callable[[], list[str]] = lambda: list(texts(config)) if texts else []  # noqa: E731
    else:
        spec = method.input_spec(config)
        validate_inputs(spec)
        # generators read their own slices of it, each read checked against this snapshot
        docs = InputDocuments(snapshot_inputs(spec))
        sample = lambda: [d.text or "" for d in itertools.islice(docs(), CENTROID_SAMPLE)]  # noqa: E731
    if config.filters.diversity.enabled:
        check_diversity_config(config.filters.diversity)
    for engine in [config.engine, *(pool.engine for pool in config.pools.values()),
                   *(pool.engine for pool in method.pools(config).values())]:  # fmt: skip
        resolve_model(engine.tokenizer_source)  # a missing model folder fails before Ray starts
        if engine.remote:
            remote_api_key(engine)  # a key's variable not set: before any work too
    fingerprint = config.fingerprint()
    store = OutputStore(config.output.path)
    # one writer per output, taken before anything is written (io/lease.py)
    inputs = None
    if docs is not None:  # what later runs compare, and what the cached plans are keyed by
        inputs = docs.identity = identify_inputs(docs.spec)
    lease = OutputLease(store.location)
    lease.acquire()
    store.lease = lease
    summary = RunSummary(output_path=store.location.uri)
    if docs is not None:
        summary.row_ids = row_ids_line(docs.spec.id_column, given_ids)
    try:
        if inputs is not None and docs is not None and not (overwrite or replan):
            store.check_recorded_inputs(fingerprint, docs.spec.path, inputs)
        runner = StageRunner(config, None, summary, show_progress, backend, store.location)
        runner.extra_pools = method.pools(config)
    except BaseException:
        lease.release()
        raise
    runner.stop = stop
    runner.replan = replan
    runner.diversity_sample = sample
    try:
        if overwrite or _nothing_committed(store):
            runner.start_replicas_early()  # a first run generates: engines load meanwhile
        renderer = load_renderer(config)
        runner.renderer = renderer
        ctx = JobContext(
            config=config,
            runner=runner,
            store=store,
            renderer=renderer,
            model_name=model_display_name(config.engine.model),
            fingerprint=fingerprint,
            docs=docs,
            prepare=lambda: store.prepare(
                fingerprint, config.model_dump(mode="json"), overwrite, inputs
            ),
        )
        summary.stats = method.run(ctx)
        usage = runner.remote_usage()
        if usage is not None:  # tokens, retries and cost of the stages on remote engines
            summary.stats = store.add_stats_sections({"remote": usage})
        set_state(store.location, "done")
    except JobStopped as stopped:
        stopped.summary = summary
        raise
    finally:
        try:
            runner.close()
        finally:
            lease.release()
        summary.wall_s = time.monotonic() - started
    return summary
