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
from synth_ray.engine.prompts import PromptRenderer
from synth_ray.errors import ConfigError
from synth_ray.io.inputs import InputSpec, absolute_path, validate_inputs
from synth_ray.io.output_store import OutputStore
from synth_ray.methods import build_method
from synth_ray.methods.self_instruct import load_seed_instructions
from synth_ray.runtime.backend import Backend
from synth_ray.runtime.diversity import CENTROID_SAMPLE, check_diversity_config
from synth_ray.runtime.evol_instruct import run_evol_instruct
from synth_ray.runtime.self_instruct import run_self_instruct
from synth_ray.runtime.slices import InputDocuments
from synth_ray.runtime.stage import JobContext, RunSummary, StageRunner
from synth_ray.runtime.star import run_star
from synth_ray.runtime.stopping import JobStopped, StopRequest


def input_spec(config: JobConfig) -> InputSpec:
    """What to read; self_improve reads its question column and reference answers."""
    i = config.input
    assert i is not None  # validated: every method but self_instruct has input
    if config.method == "self_improve":
        si = config.self_improve
        extra = (si.answer_column,) if si.answer_column else ()
        return InputSpec(absolute_path(i.path), si.question_column, i.id_column, i.limit, extra)
    return InputSpec(absolute_path(i.path), i.text_column, i.id_column, i.limit)


def load_renderer(config: JobConfig) -> PromptRenderer:
    """The model's tokenizer and chat template; an unusable model is a ConfigError."""
    model_path = resolve_model(config.engine.model)
    try:
        return PromptRenderer.from_model(model_path, source=config.engine.model)
    except Exception as err:  # transformers raises many types for an unusable folder or id
        raise ConfigError(
            f"engine.model {config.engine.model}: cannot load its tokenizer ({type(err).__name__})"
        ) from None


def run_single_stage(ctx: JobContext) -> dict[str, Any]:
    """rephrase, generate, and self_improve's one-stage modes: one stage into the folder."""
    assert ctx.docs is not None
    method = build_method(ctx.config, ctx.renderer, ctx.model_name)
    units = ctx.runner.plan(ctx.docs, method, ctx.fingerprint, ctx.id_column)
    ctx.prepare()
    return ctx.runner.execute(ctx.store, ctx.docs, method, units)


def driver_for(config: JobConfig) -> Callable[[JobContext], dict[str, Any]]:
    if config.method == "self_instruct":
        return run_self_instruct
    if config.method == "evol_instruct":
        return run_evol_instruct
    if config.method == "self_improve" and config.self_improve.mode == "star":
        return run_star
    return run_single_stage


def run_job(
    config: JobConfig,
    overwrite: bool = False,
    show_progress: bool = True,
    backend: Backend | None = None,
    stop: StopRequest | None = None,
) -> RunSummary:
    """Run (or resume) `config`. With `backend` given, the caller owns it (and Ray). Once
    `stop` is requested no new work starts and `JobStopped` is raised (its `summary` says
    what this run committed) after the work in flight finished or its grace ran out."""
    started = time.monotonic()
    docs = None
    if config.method == "self_instruct":
        seeds = load_seed_instructions(config.self_instruct.seed_path or "")  # bad seeds: fail now
        sample: Callable[[], list[str]] = lambda: list(seeds)  # noqa: E731
    else:
        spec = input_spec(config)
        validate_inputs(spec)
        docs = InputDocuments(spec)  # generators read their own slices of it
        sample = lambda: [d.text or "" for d in itertools.islice(docs(), CENTROID_SAMPLE)]  # noqa: E731
    if config.filters.diversity.enabled:
        check_diversity_config(config.filters.diversity)
    renderer = load_renderer(config)
    fingerprint = config.fingerprint()
    store = OutputStore(config.output.path)
    summary = RunSummary(output_path=store.location.uri)
    runner = StageRunner(config, renderer, summary, show_progress, backend, store.location)
    runner.stop = stop
    runner.diversity_sample = sample
    ctx = JobContext(
        config=config,
        runner=runner,
        store=store,
        renderer=renderer,
        model_name=model_display_name(config.engine.model),
        fingerprint=fingerprint,
        docs=docs,
        prepare=lambda: store.prepare(fingerprint, config.model_dump(mode="json"), overwrite),
    )
    try:
        summary.stats = driver_for(config)(ctx)
    except JobStopped as stopped:
        stopped.summary = summary
        raise
    finally:
        runner.close()
        summary.wall_s = time.monotonic() - started
    return summary
