"""Run one job: validate everything, then run its stages on one set of replicas.

    synth-ray run configs/quickstart.yaml          # the CLI front of `run_job`

Order matters for the promises: every check that can fail on the user's input (inputs,
columns, model path, ids, output owner, cluster resources) runs before the first request,
so a bad config never leaves half a job behind; and a unit is committed only when all its
rows are on disk, so a run killed at any moment resumes without losing or duplicating rows.
"""

from __future__ import annotations

import time

from synth_ray.config import JobConfig
from synth_ray.engine.models import model_display_name, resolve_model
from synth_ray.engine.prompts import PromptRenderer
from synth_ray.errors import ConfigError
from synth_ray.io.inputs import InputSpec, iter_documents, validate_inputs
from synth_ray.io.output_store import OutputStore
from synth_ray.methods import build_method
from synth_ray.methods.self_instruct import load_seed_instructions
from synth_ray.runtime.backend import Backend
from synth_ray.runtime.cluster import connect_ray, engine_settings, ray_backend_for
from synth_ray.runtime.evol_instruct import run_evol_instruct
from synth_ray.runtime.self_instruct import run_self_instruct
from synth_ray.runtime.stage import RunSummary, StageRunner
from synth_ray.runtime.star import run_star

__all__ = ["RunSummary", "connect_ray", "engine_settings", "ray_backend_for", "run_job"]


def input_spec(config: JobConfig) -> InputSpec:
    """What to read; self_improve reads its question column and reference answers."""
    i = config.input
    assert i is not None  # validated: every method but self_instruct has input
    if config.method == "self_improve":
        si = config.self_improve
        extra = (si.answer_column,) if si.answer_column else ()
        return InputSpec(i.path, si.question_column, i.id_column, i.limit, extra)
    return InputSpec(i.path, i.text_column, i.id_column, i.limit)


def load_renderer(config: JobConfig) -> PromptRenderer:
    """The model's tokenizer and chat template; an unusable model is a ConfigError."""
    model_path = resolve_model(config.engine.model)
    try:
        return PromptRenderer.from_model(model_path)
    except Exception as err:  # transformers raises many types for an unusable folder or id
        raise ConfigError(
            f"engine.model {config.engine.model}: cannot load its tokenizer ({type(err).__name__})"
        ) from None


def run_job(
    config: JobConfig,
    overwrite: bool = False,
    show_progress: bool = True,
    backend: Backend | None = None,
) -> RunSummary:
    """Run (or resume) `config`. With `backend` given, the caller owns it (and Ray)."""
    started = time.monotonic()
    if config.method == "self_instruct":
        load_seed_instructions(config.self_instruct.seed_path or "")  # bad seeds: fail now
    else:
        validate_inputs(input_spec(config))
    renderer = load_renderer(config)
    model_name = model_display_name(config.engine.model)
    fingerprint = config.fingerprint()
    store = OutputStore(config.output.path)
    summary = RunSummary(output_path=str(store.root))
    runner = StageRunner(config, renderer, summary, show_progress, backend)
    try:

        def prepare() -> None:
            store.prepare(fingerprint, config.model_dump(mode="json"), overwrite)

        if config.method == "self_instruct":
            summary.stats = run_self_instruct(
                runner, store, config, model_name, fingerprint, prepare
            )
            return summary
        spec = input_spec(config)
        docs = lambda: iter_documents(spec)  # noqa: E731
        if config.method == "evol_instruct":
            summary.stats = run_evol_instruct(
                runner,
                store,
                config,
                docs,
                model_name,
                fingerprint,
                config.input.id_column,
                prepare,
            )
            return summary
        method = build_method(config, renderer, model_name)
        if config.method == "self_improve" and config.self_improve.mode == "star":
            summary.stats = run_star(
                runner, store, docs, method, fingerprint, config.input.id_column, prepare
            )
        else:
            units = runner.plan(docs, method, fingerprint, config.input.id_column)
            prepare()
            summary.stats = runner.execute(store, docs, method, units)
    finally:
        runner.close()
        summary.wall_s = time.monotonic() - started
    return summary
