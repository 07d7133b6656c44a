"""A whole benchmark: for each sweep value, the workload through each system, one after another.

    synth-ray bench configs/generate.yaml --systems synth-ray,vllm --prompts 64 --lengths skewed
    synth-ray bench configs/generate.yaml --sweep engine.max_num_seqs=64,256
    synth-ray bench configs/bench.yaml --constraints none,json,regex --lengths natural

The config gives the model, the engine settings (engine.*), sampling (temperature, top_p,
max_tokens) and synth-ray's resources/scheduler; a sweep applies `KEY=value` to it like `--set`,
and each of `constraints` (bench/constraints.py) runs the workload again, decoded under it.
Systems run in fresh processes, one at a time, so they never share the machine. A system whose
packages are missing is skipped with one line saying what to install; one that fails is reported
with its log and the others still run (and is not run again in later repeats).

Order bias: the systems share caches (vLLM's torch.compile cache, the page cache of the model's
weights), so the first to run pays for what the next reuses. `--repeats N` runs every system N
times, each repeat in another order (rotated: with two systems they alternate, with three each
takes each place once in three repeats), and reports each figure's median; `--warmup` runs each
system once, untimed, before its timed runs. The engine's start is a column of its own.

    synth-ray bench configs/bench.yaml --systems synth-ray,vllm --repeats 3 --warmup
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from synth_ray.bench import constraints as bench_constraints
from synth_ray.bench import machine, report
from synth_ray.bench.spec import RunSpec, SystemResult
from synth_ray.bench.systems import ALL_SYSTEMS, SYSTEMS, SystemFailed, missing, run_system
from synth_ray.bench.workload import LENGTH_MODES, SOURCES, build_workload
from synth_ray.errors import ConfigError


@dataclass
class BenchOptions:
    config: Path
    overrides: list[str] = field(default_factory=list)
    systems: tuple[str, ...] = SYSTEMS
    prompts: int = 128
    lengths: str = "fixed"
    source: str = "questions"
    sweep: tuple[str, list[str]] | None = None
    results_dir: Path = Path("bench-results")
    seed: int = 0
    label: str = ""
    work_dir: Path | None = None  # where each system's logs and outputs go (default: a temp dir)
    constraints: tuple[str, ...] = ("none",)
    repeats: int = 1  # timed runs of each system, each repeat in another order (`run_order`)
    warmup: bool = False  # each system runs once, untimed, before its timed runs

    def __post_init__(self) -> None:
        unknown = [s for s in self.systems if s not in ALL_SYSTEMS]
        if unknown or not self.systems:
            raise ConfigError(
                f"--systems {','.join(self.systems)}: expected some of {','.join(ALL_SYSTEMS)}"
            )
        if self.lengths not in LENGTH_MODES:
            raise ConfigError(
                f"--lengths {self.lengths}: expected one of {', '.join(LENGTH_MODES)}"
            )
        if self.source not in SOURCES:
            raise ConfigError(f"--source {self.source}: expected one of {', '.join(SOURCES)}")
        kinds = bench_constraints.KINDS
        if not self.constraints or any(c not in kinds for c in self.constraints):
            raise ConfigError(
                f"--constraints {','.join(self.constraints)}: expected some of {','.join(kinds)}"
            )
        if self.lengths != "natural" and set(self.constraints) != {"none"}:
            raise ConfigError(
                f"--constraints {','.join(self.constraints)}: needs --lengths natural (with "
                "ignore_eos the engine stops constraining once the grammar ends)"
            )
        if self.prompts < 1:
            raise ConfigError(f"--prompts {self.prompts}: expected at least 1")
        if self.repeats < 1:
            raise ConfigError(f"--repeats {self.repeats}: expected at least 1")


class BenchStop:
    """SIGTERM or Ctrl-C during a bench (a time slice that ran out: `timeout` signals the whole
    process group, the running system included): no further system starts, and the bench
    still writes the records of every run that finished, the rest marked as stopped (the
    command then exits 130). A second signal interrupts at once."""

    def __init__(self) -> None:
        self.requested = False
        self.why = ""

    def _handle(self, signum: int, _frame: Any) -> None:
        if self.requested:  # a second signal: out at once, as before the bench took them
            raise KeyboardInterrupt
        self.requested = True
        self.why = f"stopped by {signal.Signals(signum).name} before it finished"

    @contextlib.contextmanager
    def installed(self) -> Iterator[BenchStop]:
        if threading.current_thread() is not threading.main_thread():
            yield self  # signals reach the main thread only
            return
        before = {sig: signal.signal(sig, self._handle) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield self
        finally:
            for sig, handler in before.items():
                signal.signal(sig, handler)


def run_order(systems: list[str], repeat: int) -> list[str]:
    """The order of `systems` in repeat `repeat` (from 0): rotated by one place per repeat, so
    no system always runs first on a cold cache or last on a warm one."""
    if not systems:
        return []
    shift = repeat % len(systems)
    return systems[shift:] + systems[:shift]


def _split_values(values: str) -> list[str]:
    """Split at commas outside brackets and quotes: a value may be a YAML/JSON mapping such as
    `{method: ngram, num_speculative_tokens: 4}`."""
    items, depth, quote, start = [], 0, "", 0
    for i, ch in enumerate(values):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch in "{[":
            depth += 1
        elif ch in "}]":
            depth -= 1
        elif ch == "," and depth == 0:
            items.append(values[start:i])
            start = i + 1
    items.append(values[start:])
    return [v.strip() for v in items if v.strip()]


def parse_sweep(text: str | None) -> tuple[str, list[str]] | None:
    """`KEY=v1,v2,...` -> (KEY, [v1, v2, ...]); values are parsed later like `--set` values."""
    if not text:
        return None
    key, sep, values = text.partition("=")
    items = _split_values(values)
    if not sep or not key.strip() or not items:
        raise ConfigError(
            f"--sweep {text}: expected KEY=v1,v2,... (e.g. engine.max_num_seqs=64,256)"
        )
    return key.strip(), items


def _documents(job: Any, n: int) -> list[str]:
    from synth_ray.io.inputs import InputSpec, absolute_path, iter_documents

    if job.input is None:
        raise ConfigError("--source rephrase: the config has no input to rephrase")
    spec = InputSpec(absolute_path(job.input.path), job.input.text_column, limit=n)
    return [doc.text for doc in iter_documents(spec) if doc.text]


def spec_for(job: Any, prompts_path: Path, ignore_eos: bool, constraint: str = "none") -> RunSpec:
    from synth_ray.engine.models import resolve_model

    cores = os.cpu_count() or 1
    # the share of a local Ray's CPUs each synth-ray replica reserves and computes on
    # (runtime/cluster.py replica_cpus); every system's CPU engine gets as many threads
    threads = (
        job.resources.cpus_per_replica or (job.ray.num_cpus or cores) // job.resources.replicas
    )
    return RunSpec(
        model=resolve_model(job.engine.model),
        dtype=job.engine.dtype,
        engine_args=job.engine.vllm_args(),
        cpu_kv_cache_gib=job.engine.cpu_kv_cache_gib,
        temperature=job.sampling.temperature,
        top_p=job.sampling.top_p,
        seed=job.sampling.seed,
        ignore_eos=ignore_eos,
        prompts_path=str(prompts_path),
        replicas=job.resources.replicas,
        # Ray Data LLM's CPU stages and its engine each hold a CPU; on 2 it waits forever
        ray_num_cpus=max(4, job.ray.num_cpus or cores),
        cpu_threads=max(1, int(threads)),
        constraint=constraint,
    )


def run_bench(
    opts: BenchOptions, say: Callable[[str], None] = print
) -> tuple[list[dict[str, Any]], Path, Path | None]:
    """Run everything; returns the records, the results Markdown file and the plot (or None)."""
    from synth_ray.config import load_config

    work = opts.work_dir or Path(tempfile.mkdtemp(prefix="synth-ray-bench-"))
    values = opts.sweep[1] if opts.sweep else [""]
    runnable = []
    for system in opts.systems:
        hint = missing(system)
        if hint:
            say(f"{system}: skipped, not installed (needs {hint})")
        runnable.append((system, hint))
    with BenchStop().installed() as stop:
        rows = _run_values(opts, values, runnable, work, stop, say)
    if stop.requested:
        say(f"bench: {stop.why.replace(' before it finished', '')}; writing what finished")
    first = [f"{opts.sweep[0]}={values[0]}"] if opts.sweep else []
    first_job = load_config(opts.config, opts.overrides + first)
    records = report.summarize(rows)
    m = machine.describe()
    stamp = time.strftime("%Y-%m-%d %H:%M")
    decoded = f", decoded {' / '.join(opts.constraints)}" if opts.constraints != ("none",) else ""
    what = (
        f"{opts.prompts} {opts.source} prompts{decoded}, {opts.lengths} lengths "
        f"(max_tokens {first_job.sampling.max_tokens}), {first_job.engine.model}"
    )
    title = f"{stamp} synth-ray bench{f' ({opts.label})' if opts.label else ''}: {what}"
    engine = ", ".join(f"{k} {v}" for k, v in first_job.engine.vllm_args().items())
    context = (
        f"Machine: {machine.line(m)}. Engine: dtype {first_job.engine.dtype} "
        f"(ran {next((r['dtype'] for r in records if r.get('dtype')), '?')}), {engine}; "
        f"synth-ray replicas {first_job.resources.replicas}, batch_size "
        f"{first_job.scheduler.batch_size}, max_in_flight_per_replica "
        f"{first_job.scheduler.max_in_flight_per_replica or 'auto (2 x max_num_seqs)'}. "
        "Each system in a fresh process, one after another"
        + (f", {opts.repeats} repeats in rotated order (medians)" if opts.repeats > 1 else "")
        + (", after an untimed warm-up run of each" if opts.warmup else "")
        + f"; config {opts.config}."
    )
    plot_path = None
    if any("skipped" not in r for r in records):
        name = f"bench-{time.strftime('%Y%m%d-%H%M%S')}.png"
        plot_path = report.plot(records, opts.results_dir / name, what)
    header = {
        "date": stamp,
        "label": opts.label,
        "machine": m,
        "config": str(opts.config),
        "prompts": opts.prompts,
        "lengths": opts.lengths,
        "source": opts.source,
        "constraints": list(opts.constraints),
        "repeats": opts.repeats,
        "warmup": opts.warmup,
        "max_tokens": first_job.sampling.max_tokens,
        "model": first_job.engine.model,
        "engine_args": first_job.engine.vllm_args(),
        "plot": str(plot_path) if plot_path else None,
    }
    md = report.append_results(opts.results_dir, title, context, header, records, plot_path)
    return records, md, plot_path


def _run_setting(
    opts: BenchOptions,
    runnable: list[tuple[str, str]],
    label: str,
    kind: str,
    job_dict: dict[str, Any],
    spec: RunSpec,
    planned: int | None,
    folder: Path,
    stop: BenchStop,
    say: Callable[[str], None],
) -> list[report.Row]:
    """Every system on one setting (a sweep value, a constraint): the warm-up runs if asked,
    then `opts.repeats` timed runs of each, each repeat in `run_order`; one row per system in
    `runnable`'s order."""
    setting = report.Row(label, "", None, constraint=kind).setting
    prefix = f"{setting}: " if setting else ""
    results: dict[str, list[SystemResult]] = {s: [] for s, hint in runnable if not hint}
    failed: dict[str, str] = {}  # the last failure of each system that failed a timed run

    def run_one(system: str, where: Path, what: str) -> SystemResult | None:
        if stop.requested:
            return None
        say(f"{prefix}{system}: {what} ({opts.prompts} prompts)")
        try:
            return run_system(system, job_dict, spec, where)
        except SystemFailed as err:
            if stop.requested:  # killed with the rest of the process group: not its failure
                return None
            say(f"{system}: failed: {err}")
            if what.startswith("warming"):
                say(f"{system}: its timed runs go ahead on a cold cache")
            else:
                failed[system] = f"failed: {err}"
            return None

    if opts.warmup:
        for system in results:
            run_one(system, folder / system / "warmup", "warming up, untimed")
    several = opts.repeats > 1 or opts.warmup
    for repeat in range(opts.repeats):
        for system in run_order([s for s in results if s not in failed], repeat):
            what = f"running, repeat {repeat + 1} of {opts.repeats}" if several else "running"
            where = folder / system / str(repeat) if several else folder / system
            result = run_one(system, where, what)
            if result is None:
                continue
            if planned is not None and result.output_tokens != planned:
                result.notes = (
                    f"{result.notes}; " if result.notes else ""
                ) + f"generated {result.output_tokens} of {planned} planned tokens"
            results[system].append(result)
    rows = []
    for system, hint in runnable:
        runs = results.get(system, [])
        if hint:
            rows.append(report.Row(label, system, None, f"not installed ({hint})", kind))
        elif runs:  # a later repeat's failure keeps the runs that finished, and says so
            row = report.Row(label, system, runs[0], constraint=kind, more=runs[1:])
            if system in failed:
                row.note = f"{len(runs)} of {opts.repeats} runs; then {failed[system]}"
            elif len(runs) < opts.repeats:
                row.note = f"{len(runs)} of {opts.repeats} runs; then {stop.why}"
            rows.append(row)
        else:
            rows.append(report.Row(label, system, None, failed.get(system) or stop.why, kind))
    return rows


def _run_values(
    opts: BenchOptions,
    values: list[str],
    runnable: list[tuple[str, str]],
    work: Path,
    stop: BenchStop,
    say: Callable[[str], None],
) -> list[report.Row]:
    """Every sweep value and constraint, in order; the rows of all of them."""
    from synth_ray.config import load_config
    from synth_ray.engine.models import resolve_model

    rows: list[report.Row] = []
    for index, value in enumerate(values):
        label = f"{opts.sweep[0]}={value}" if opts.sweep else ""
        overrides = opts.overrides + ([label] if label else [])
        job = load_config(opts.config, overrides)
        here = work / (f"{index}-{re.sub(r'[^A-Za-z0-9._-]+', '_', label)}" if label else "run")
        here.mkdir(parents=True, exist_ok=True)
        documents = _documents(job, opts.prompts) if opts.source == "rephrase" else None
        workload = build_workload(
            resolve_model(job.engine.model),
            opts.prompts,
            job.sampling.max_tokens,
            opts.lengths,
            opts.source,
            documents,
            opts.seed,
        )
        prompts_path = workload.write(here / "prompts.jsonl")
        job_dict = job.model_dump(mode="json")
        for kind in opts.constraints:
            spec = spec_for(job, prompts_path, workload.ignore_eos, kind)
            rows += _run_setting(
                opts, runnable, label, kind, job_dict, spec, workload.planned_output_tokens,
                here / kind, stop, say,
            )  # fmt: skip
    return rows
