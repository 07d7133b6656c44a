"""Run one job: validate everything, plan units, skip committed ones, generate, commit.

    synth-ray run configs/quickstart.yaml          # the CLI front of `run_job`

Order matters for the promises: every check that can fail on the user's input (inputs,
columns, model path, ids, output owner, cluster resources) runs before the first request,
so a bad config never leaves half a job behind; and a unit is committed only when all its
rows are on disk, so a run killed at any moment resumes without losing or duplicating rows.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from synth_ray.config import JobConfig
from synth_ray.engine.models import model_display_name, resolve_model
from synth_ray.engine.prompts import PromptRenderer
from synth_ray.engine.requests import SamplingSpec
from synth_ray.engine.vllm_engine import EngineSettings, cpu_engine_env
from synth_ray.errors import ConfigError, OutputConflictError, ResourceError
from synth_ray.io.inputs import InputSpec, iter_documents, validate_inputs
from synth_ray.io.output_store import OutputStore
from synth_ray.methods import build_method
from synth_ray.plan import plan_units
from synth_ray.runtime.backend import Backend
from synth_ray.runtime.progress import JobProgress
from synth_ray.runtime.scheduler import Scheduler, SchedulerSettings
from synth_ray.runtime.units import PendingUnit, UnitBuilder, UnitTracker, documents_by_unit
from synth_ray.stats import UnitStats


@dataclass
class RunSummary:
    output_path: str
    units_total: int
    units_skipped: int
    units_committed: int
    stats: dict[str, Any]
    wall_s: float
    startup_s: float = 0.0
    generation_wall_s: float = 0.0
    output_tokens_this_run: int = 0
    requests_resent: int = 0
    replica_failures: list[str] = field(default_factory=list)

    @property
    def steady_tokens_per_s(self) -> float:
        """Output tokens/s of this run from first replica ready to last result."""
        return (
            self.output_tokens_this_run / self.generation_wall_s if self.generation_wall_s else 0.0
        )


def input_spec(config: JobConfig) -> InputSpec:
    i = config.input
    return InputSpec(i.path, i.text_column, i.id_column, i.limit)


def engine_settings(config: JobConfig, tensor_parallel_size: int) -> EngineSettings:
    e = config.engine
    return EngineSettings(
        model=e.model,
        dtype=e.dtype,
        max_model_len=e.max_model_len,
        tensor_parallel_size=max(1, tensor_parallel_size),
        gpu_memory_utilization=e.gpu_memory_utilization,
        enable_prefix_caching=e.enable_prefix_caching,
        enforce_eager=e.enforce_eager,
        max_num_seqs=e.max_num_seqs,
        speculative_config=e.speculative_config,
        extra_args=dict(e.extra_args),
    )


def connect_ray(config: JobConfig) -> bool:
    """Join the configured cluster or start a local one; True if this call started Ray."""
    import ray

    if ray.is_initialized():
        return False
    address = config.ray.address or os.environ.get("RAY_ADDRESS")
    try:
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(num_cpus=config.ray.num_cpus, include_dashboard=False, log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as err:
        where = f"ray.address {address}" if address else "local Ray"
        raise ResourceError(f"{where}: cannot start or connect ({err})".splitlines()[0]) from None
    return True


def ray_backend_for(config: JobConfig, keep_alive: bool = False) -> Any:
    """Build the Ray backend after checking the cluster can hold the replicas."""
    import ray

    from synth_ray.runtime.ray_backend import RayBackend, ReplicaResources, check_cluster_fits

    gpus = config.resources.gpus_per_replica
    if gpus is None:
        gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
    env = cpu_engine_env(config.engine.cpu_kv_cache_gib) if gpus == 0 else {}
    resources = ReplicaResources(config.resources.cpus_per_replica, gpus, env)
    check_cluster_fits(config.resources.replicas, resources)
    return RayBackend(engine_settings(config, gpus), resources, keep_alive=keep_alive)


def run_job(
    config: JobConfig,
    overwrite: bool = False,
    show_progress: bool = True,
    backend: Backend | None = None,
) -> RunSummary:
    """Run (or resume) `config`. With `backend` given, the caller owns it (and Ray)."""
    started = time.monotonic()
    spec = input_spec(config)
    validate_inputs(spec)
    model_path = resolve_model(config.engine.model)
    try:
        renderer = PromptRenderer.from_model(model_path)
    except Exception as err:  # transformers raises many types for an unusable folder or id
        raise ConfigError(
            f"engine.model {config.engine.model}: cannot load its tokenizer ({type(err).__name__})"
        ) from None
    method = build_method(config, renderer, model_display_name(config.engine.model))
    fingerprint = config.fingerprint()
    units = plan_units(
        lambda: iter_documents(spec),
        method,
        fingerprint,
        config.output.rows_per_shard,
        config.input.id_column,
    )
    store = OutputStore(config.output.path)
    store.prepare(fingerprint, config.model_dump(mode="json"), overwrite)
    committed = store.committed()
    planned_ids = {u.unit_id for u in units}
    stale = [r for r in committed.values() if r.unit_id not in planned_ids]
    if stale:
        raise OutputConflictError(
            f"output.path {config.output.path}: unit {stale[0].unit_index} was committed from "
            "different input rows (the input changed); rerun with --overwrite"
        )
    remaining = [u for u in units if u.unit_id not in committed]
    summary = RunSummary(
        output_path=str(store.root),
        units_total=len(units),
        units_skipped=len(units) - len(remaining),
        units_committed=0,
        stats={},
        wall_s=0.0,
    )
    if remaining:
        _generate(config, store, method, renderer, remaining, summary, show_progress, backend)
    summary.stats = store.write_stats(units_total=len(units))
    summary.wall_s = time.monotonic() - started
    return summary


def _generate(
    config: JobConfig,
    store: OutputStore,
    method: Any,
    renderer: PromptRenderer,
    remaining: list[Any],
    summary: RunSummary,
    show_progress: bool,
    backend: Backend | None,
) -> None:
    import ray

    owns_ray = False
    owns_backend = backend is None
    if backend is None:
        owns_ray = connect_ray(config)
    progress = JobProgress(summary.units_total, summary.units_skipped, enabled=show_progress)

    def on_commit(pending: PendingUnit, stats: UnitStats) -> None:
        summary.units_committed += 1
        progress.unit_committed(stats)

    s = config.sampling
    builder = UnitBuilder(
        method,
        renderer,
        config.engine.max_model_len,
        SamplingSpec(s.temperature, s.top_p, s.max_tokens, s.ignore_eos),
        s.seed,
    )
    tracker = UnitTracker(store, method, on_commit)
    spec = input_spec(config)

    def pending_units() -> Iterator[PendingUnit]:
        for unit, docs in documents_by_unit(iter_documents(spec), remaining):
            yield builder.build(unit, docs)

    sc = config.scheduler
    settings = SchedulerSettings(
        replicas=config.resources.replicas,
        batch_size=sc.batch_size,
        max_in_flight=sc.max_in_flight_per_replica,
        max_attempts=sc.max_attempts,
        max_replica_restarts=sc.max_replica_restarts,
        start_timeout_s=sc.start_timeout_s,
    )
    run_started = time.time()
    try:
        if backend is None:
            backend = ray_backend_for(config)
        scheduler = Scheduler(
            backend, tracker.work_items(pending_units()), tracker.add_result, settings
        )
        try:
            scheduler.run()
        finally:
            backend.shutdown()
            summary.requests_resent = scheduler.requests_resent
            summary.replica_failures = list(scheduler.failures)
        if scheduler.first_ready_at is not None and scheduler.finished_at is not None:
            summary.startup_s = scheduler.first_ready_at - scheduler.started_at
            summary.generation_wall_s = scheduler.finished_at - scheduler.first_ready_at
        summary.output_tokens_this_run = progress.stats.output_tokens
        store.record_run(
            {
                "started": run_started,
                "finished": time.time(),
                "units_committed": summary.units_committed,
                "startup_s": round(summary.startup_s, 3),
                "generation_wall_s": round(summary.generation_wall_s, 3),
                "output_tokens": progress.stats.output_tokens,
                "requests_resent": summary.requests_resent,
            }
        )
    finally:
        progress.close()
        if owns_backend and owns_ray:
            ray.shutdown()
