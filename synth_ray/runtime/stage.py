"""Run one stage of a job: plan its units, skip committed ones, generate the rest, commit.

A single-stage method is one stage written to the output folder itself.
Multi-round methods run several stages, each committed exactly once in its own folder, on the
same replicas: `StageRunner` starts them on first need and keeps them warm until `close()`.
A stage's units hash the job fingerprint, the stage name and every source id in the unit, so
on resume a stage whose input is unchanged skips its committed units, and one whose input
changed is refused rather than mixed. Which pool's replicas a stage runs on, and stages of
several pools at once, are runtime/pools.py's.

    python -m pytest tests/test_job_fake_engine.py tests/test_pools.py
"""

from __future__ import annotations

import dataclasses
import hashlib
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from synth_ray.config import JobConfig
from synth_ray.engine.prompts import PromptRenderer
from synth_ray.engine.requests import SamplingSpec
from synth_ray.errors import OutputConflictError
from synth_ray.io.filesystem import Location, open_location
from synth_ray.io.inputs import absolute_path
from synth_ray.io.output_store import DIVERSITY_DIR, OutputStore, check_split_name
from synth_ray.methods.base import Method
from synth_ray.methods.stages import (
    DocumentBuilder,
    DocumentSource,
    GeneratedDocuments,
    JoinedDocumentBuilder,
)
from synth_ray.plan import WorkUnit, plan_scanned, plan_units
from synth_ray.runtime.backend import Backend
from synth_ray.runtime.metrics import JobMetrics
from synth_ray.runtime.plan_cache import load_units, plan_name, save_units
from synth_ray.runtime.plan_tasks import TASKS_FROM_BYTES, input_bytes, scan_input
from synth_ray.runtime.pools import PoolRunner
from synth_ray.runtime.progress import JobProgress
from synth_ray.runtime.scheduler import (
    JobFailed,
    Scheduler,
    SchedulerSettings,
    WorkItem,
    default_stall_timeout_s,
)
from synth_ray.runtime.shared_scheduler import Lane, SharedScheduler
from synth_ray.runtime.slices import (
    FilteredSliceTracker,
    SliceTracker,
    StageSpec,
    cut_slices,
    failed_slice,
    split_slice,
)
from synth_ray.runtime.stage_documents import (
    DocumentsByReference,
    EarlierRows,
    InputDocuments,
    InputWithEarlierRows,
    UnsettledRows,
)
from synth_ray.runtime.stopping import JobStopped
from synth_ray.runtime.streaming import Needs, StageBesideFailed, UnitFeed, UnitGate, gated
from synth_ray.runtime.timeline import Timeline
from synth_ray.runtime.unit_tasks import summarize_units
from synth_ray.stats import UnitStats

if TYPE_CHECKING:
    from synth_ray.runtime.diversity import DiversityFilter


@dataclass
class RunSummary:
    """What a run did, summed over its stages."""

    output_path: str
    units_total: int = 0
    units_skipped: int = 0
    units_committed: int = 0
    stats: dict[str, Any] = field(default_factory=dict)
    wall_s: float = 0.0
    startup_s: float = 0.0
    generation_wall_s: float = 0.0
    output_tokens_this_run: int = 0
    requests_resent: int = 0
    replica_failures: list[str] = field(default_factory=list)
    stalls: list[str] = field(default_factory=list)  # why each stalled replica was replaced
    pool_shrinks: list[str] = field(default_factory=list)  # replicas lost and not replaced
    replica_moves: list[str] = field(default_factory=list)  # from an idle pool to a busy one
    # what the replicas' engines ran: dtype, why that dtype, niceness (empty if none started)
    engine: dict[str, Any] = field(default_factory=dict)
    row_ids: str = ""  # what the rows' ids come from (an input column, or derived)

    @property
    def steady_tokens_per_s(self) -> float:
        """Output tokens/s of this run from first replica ready to last result."""
        return (
            self.output_tokens_this_run / self.generation_wall_s if self.generation_wall_s else 0.0
        )


def committed_records(store: OutputStore, stage: str, units: list[WorkUnit]) -> list[Any]:
    """`stage`'s commit record of each of `units`, found by unit index. Once a stage has
    executed its commits are exactly its planned units (`execute` refuses or replans any
    other), so a later stage finds them by index, from its own units or those they derive
    from (the input plan)."""
    by_index = {record.unit_index: record for record in store.committed(stage).values()}
    missing = [unit.index for unit in units if unit.index not in by_index]
    if missing:
        raise AssertionError(f"unit {missing[0]} of stage {stage} is not committed")
    return [by_index[unit.index] for unit in units]


def documents_for_replicas(docs: DocumentSource) -> Any:
    """What a stage's replicas get to read their slices from: a reference (input files, an
    earlier stage's unsettled rows) where there is one, else the documents themselves."""
    if isinstance(docs, InputDocuments):
        return docs.spec
    if isinstance(docs, DocumentsByReference):
        return docs.by_reference()
    if isinstance(docs, GeneratedDocuments):
        return docs  # each replica makes its own
    return list(docs())


def _joined_shards(records: list[Any]) -> tuple[Any, ...]:
    """A joined unit's earlier shards, as `InputWithEarlierRows` reads them."""
    return tuple((i, name) for i, record in enumerate(records) for name in record.data_shards())


def _data_shards(records: list[Any]) -> tuple[Any, ...]:
    return tuple(name for record in records for name in record.data_shards())


def _settled_shards(records: list[Any]) -> tuple[Any, ...]:
    return tuple(
        name for record in records for name in (*record.data_shards(), *record.error_shards())
    )


def _committed_feed(store: OutputStore, stage: str) -> UnitFeed:
    """A finished stage as a feed (a joined stage reading it beside one still running)."""
    feed = UnitFeed(store.location.uri, stage)
    for record in store.committed(stage).values():
        feed.add(record)
    feed.finish()
    return feed


class StageRunner(PoolRunner):
    """Plans, generates and commits a job's stages on its pools' replicas (runtime/pools.py)."""

    def __init__(
        self,
        config: JobConfig,
        renderer: PromptRenderer | None,
        summary: RunSummary,
        show_progress: bool = True,
        backend: Backend | None = None,
        output: Location | None = None,
    ) -> None:
        """With `backend` given the caller owns it (and Ray); otherwise Ray and the replicas are
        started on the first stage with work and stopped by `close()`. `output` is the job's
        output location (opened from output.path when not given). `renderer` may be set after
        construction (`start_replicas_early` runs before the tokenizer is loaded), but before
        the first stage."""
        super().__init__(config, renderer, backend)
        self.summary = summary
        self.replica_moves = summary.replica_moves  # the run's summary lists the moves
        self.show_progress = show_progress
        reference = config.filters.diversity.reference_path
        # resolved now, before joining Ray moves a submitted job's working directory
        self._diversity_config = config.filters.diversity.model_copy(
            update={"reference_path": absolute_path(reference) if reference else None}
        )
        self.output = output if output is not None else open_location(config.output.path)
        # texts that train the diversity filter's centroids (set by the job: its input)
        self.diversity_sample: Callable[[], list[str]] = list
        self.replan = False  # committed units whose rows changed are dropped and redone
        self._unsaved_plans: dict[str, list[WorkUnit]] = {}  # planned, cached by `execute`
        self._diversity: DiversityFilter | None = None
        self._filtered_stages: list[tuple[OutputStore, str]] = []
        self._paths_checked = False

    def plan(
        self, docs: DocumentSource, method: Method, fingerprint: str, id_column: str | None = None
    ) -> list[WorkUnit]:
        """The stage's units: over input files, the output's cached plan when it has one for
        this input (runtime/plan_cache.py: a resume reads no input row), else planned now
        from a scan of the input (in Ray tasks for a big one: runtime/plan_tasks.py, so the
        driver parses no row) and cached once the output is claimed (`execute`)."""
        rows_per_shard = self.config.output.rows_per_shard
        name = None
        if isinstance(docs, InputDocuments):
            name = plan_name(fingerprint, rows_per_shard, docs)
        if name is not None and not self.replan:
            cached = load_units(self.output, name)
            if cached is not None:
                return cached
        if isinstance(docs, InputDocuments) and docs.spec.limit is None:
            if self.owns_backend and input_bytes(docs.spec) >= TASKS_FROM_BYTES:
                self._ensure_ray()  # a big input is scanned by Ray tasks beside the data
                self._check_input_visible(docs)
            hash_ids = id_column is not None
            scans = scan_input(docs.spec, method.estimate_rows, hash_ids)
            units = plan_scanned(scans, fingerprint, rows_per_shard, None, id_column, docs)
        else:  # documents built on the driver, or the first `input.limit` rows (read just those)
            units = plan_units(docs, method, fingerprint, rows_per_shard, id_column)
        if name is not None:
            self._unsaved_plans[name] = units
        return units

    def run_stage(
        self, stage: str, store: OutputStore, docs: DocumentSource, method: Method, fingerprint: str
    ) -> dict[str, Any]:
        """Plan and execute one named stage into an already prepared `store`."""
        units = self.plan(docs, method, f"{fingerprint}/{stage}")
        return self.execute(store, docs, method, units, stage=stage)

    def execute(
        self,
        store: OutputStore,
        docs: DocumentSource,
        method: Method,
        units: list[WorkUnit],
        stage: str = "",
        gate: UnitGate | None = None,
    ) -> dict[str, Any]:
        """Generate the units not yet committed; returns the folder's stats (all stages). A
        method declaring a split name the output cannot hold fails here, before any work.
        With `gate`, each unit waits until the earlier units it reads committed (a stage
        running beside the one it reads: `run_together`). Stages running beside this one
        and reading it hear of each unit as it commits."""
        with self._lock:
            self.stage_pools[(store, stage)] = self.pool
        feed = self._feeds.get((store.location.uri, stage))
        if feed is not None:
            feed.set_planned(units)  # the ids a later stage beside this one derives from
        try:
            stats = self._execute(store, docs, method, units, stage, gate, feed)
        except BaseException as err:
            if feed is not None and not isinstance(err, JobStopped):
                feed.fail(str(err).splitlines()[0] if str(err) else type(err).__name__)
            raise
        if feed is not None:
            feed.finish()
        return stats

    def _execute(
        self,
        store: OutputStore,
        docs: DocumentSource,
        method: Method,
        units: list[WorkUnit],
        stage: str,
        gate: UnitGate | None,
        feed: UnitFeed | None,
    ) -> dict[str, Any]:
        for split in method.splits:
            check_split_name(split)
        with self._lock:  # stages running at once: one saves the plans
            unsaved, self._unsaved_plans = self._unsaved_plans, {}
        for name, planned in unsaved.items():  # the output is claimed now
            try:
                save_units(self.output, name, planned)
            except OSError as err:  # a cache: the next run plans again
                print(f"warning: the plan was not cached ({err})", file=sys.stderr)
        committed = store.committed(stage)
        planned_ids = {u.unit_id for u in units}
        stale = [r for r in committed.values() if r.unit_id not in planned_ids]
        if stale and self.replan:  # asked for: the changed units are generated again
            store.drop_units(stale)
            print(
                f"--replan: {len(stale)} committed unit(s){' of stage ' + stage if stage else ''}"
                " hold rows the input changed; they are generated again",
                file=sys.stderr,
            )
            committed = store.committed(stage)
        elif stale:
            raise OutputConflictError(
                f"output.path {self.config.output.path}: unit {stale[0].unit_index}"
                f"{' of stage ' + stage if stage else ''} was committed from different input "
                "rows (the input changed); rerun with --replan to generate the changed units "
                "again, or --overwrite to start over"
            )
        if self.stop is not None:
            self.stop.check()
        remaining = [u for u in units if u.unit_id not in committed]
        if feed is not None:
            for record in committed.values():
                feed.add(record)
        with self._lock:
            self.summary.units_total += len(units)
            self.summary.units_skipped += len(units) - len(remaining)
        if self.config.filters.diversity.enabled and method.diversity_column:
            self._filtered_stages.append((store, stage))
        if remaining:
            try:
                self._generate(store, docs, method, units, remaining, stage, gate, feed)
            except JobStopped:
                store.write_stats(units_total=self.summary.units_total)  # what did commit
                raise
        # every unit is committed now: drop what killed runs left (also when none remained)
        store.sweep_unreferenced(stage, method.splits)
        return store.write_stats(units_total=self.summary.units_total)

    def run_unsettled_stage(
        self,
        stage: str,
        store: OutputStore,
        docs: DocumentSource,
        earlier_units: list[WorkUnit],
        earlier_stage: str,
        method: Method,
        fingerprint: str,
    ) -> dict[str, Any]:
        """Run `stage` on the input rows `earlier_stage` did not settle, by reference: one
        unit per earlier unit (same input rows, same seek), each replica dropping the rows
        whose source id the earlier unit's committed shards hold. The driver reads no row;
        unit ids derive from the earlier ones, so a resume plans the same units. Documents
        that are not input files (built on the driver) are filtered here instead."""
        plan_key = f"{fingerprint}/{stage}"
        feed = self._feeds.get((store.location.uri, earlier_stage))
        if not isinstance(docs, InputDocuments):
            if feed is not None:  # filtered here, from every earlier unit: once all committed
                self._wait_finished(feed)
            settled = {r["source_id"] for r in store.rows(earlier_stage)}
            settled |= {r["source_id"] for r in store.rows(earlier_stage, errors=True)}
            wrong = [doc for doc in docs() if doc.source_id not in settled]
            renumbered = [dataclasses.replace(doc, ordinal=i) for i, doc in enumerate(wrong)]
            return self.run_stage(stage, store, lambda: iter(renumbered), method, fingerprint)
        records = store.committed(earlier_stage)
        units, shards = [], {}
        needs: Needs = {}
        for unit in earlier_units:
            if feed is not None:  # committed later, unit by unit
                needs[unit.index] = [(feed, unit.index)]
            else:
                record = records.get(unit.unit_id)
                if record is None:
                    raise AssertionError(f"unit {unit.index} of {earlier_stage} is not committed")
                shards[unit.index] = (*record.data_shards(), *record.error_shards())
            unit_id = hashlib.sha256(f"{plan_key}|{unit.unit_id}".encode()).hexdigest()[:16]
            units.append(dataclasses.replace(unit, unit_id=unit_id, plan_key=""))
        earlier_key = earlier_units[0].plan_key if earlier_units else ""
        earlier_ids = {unit.index: unit.unit_id for unit in earlier_units}
        rows = UnsettledRows(docs.spec, store.location, shards, earlier_key, earlier_ids)
        gate = None if feed is None else UnitGate(needs, _settled_shards)
        return self.execute(
            store, DocumentsByReference(rows, units), method, units, stage=stage, gate=gate
        )

    def _wait_finished(self, feed: UnitFeed) -> None:
        """Return once the stage beside this one that `feed` hears committed every unit;
        StageBesideFailed if it (or another beside it) failed, JobStopped on a stop."""
        while not feed.done.wait(0.2):
            if feed.failed:
                raise StageBesideFailed(f"stage {feed.name} failed: {feed.failed}")
            self._check_beside()

    def _check_beside(self) -> None:
        """Raise if the stages running together must stop: StageBesideFailed once one
        failed, JobStopped on a stop."""
        if self._aborted:
            raise StageBesideFailed(self._aborted)
        if self.stop is not None:
            self.stop.check()

    def run_derived_stage(
        self,
        stage: str,
        store: OutputStore,
        earlier_store: OutputStore,
        earlier_units: list[WorkUnit],
        earlier_stage: str,
        columns: tuple[str, ...],
        build: DocumentBuilder,
        method: Method,
        fingerprint: str,
        group: int = 1,
        salts: dict[int, str] | None = None,
    ) -> dict[str, Any]:
        """Run `stage` on documents built from `earlier_stage`'s committed rows, by reference
        (`EarlierRows`): unit k covers earlier units [k*group, (k+1)*group), their ordinal
        range and their data shards; its replica reads those shards' `columns` and `build`s
        its documents. `earlier_units` give the indexes and ordinal ranges (the earlier
        stage's own units, or those of the input plan its units derive from). Unit ids derive
        from the earlier ones (and unit k's `salts[k]`: what else decides its documents, such
        as Magpie's duplicates), so a resume plans the same units; the driver reads no row."""
        plan_key = f"{fingerprint}/{stage}"
        feed = self._feeds.get((earlier_store.location.uri, earlier_stage))
        if feed is None:
            records: list[Any] = committed_records(earlier_store, earlier_stage, earlier_units)
        else:  # committed later, unit by unit: its planned units carry the ids its commits will
            records = feed.planned(self._check_beside)
            if len(records) != len(earlier_units):
                raise AssertionError(f"stage {earlier_stage} planned {len(records)} units")
        units, shards = [], {}
        needs: Needs = {}
        for k, lo in enumerate(range(0, len(earlier_units), group)):
            covered = earlier_units[lo : lo + group]
            names: list[str] = []
            hasher = hashlib.sha256(plan_key.encode())
            for record in records[lo : lo + group]:
                if feed is None:
                    names.extend(record.data_shards())
                hasher.update(f"|{record.unit_id}".encode())
            if feed is not None:
                needs[k] = [(feed, unit.index) for unit in covered]
            shards[k] = tuple(names)
            if salts and salts.get(k):
                hasher.update(f"|{salts[k]}".encode())
            first, last = covered[0], covered[-1]
            estimated = sum(u.stop - u.start for u in covered)
            units.append(WorkUnit(k, hasher.hexdigest()[:16], first.start, last.stop, estimated))
        rows = EarlierRows(earlier_store.location, shards, tuple(columns), build)
        gate = None if feed is None else UnitGate(needs, _data_shards)
        return self.execute(
            store, DocumentsByReference(rows, units), method, units, stage=stage, gate=gate
        )

    def run_joined_stage(
        self,
        stage: str,
        store: OutputStore,
        docs: DocumentSource,
        input_units: list[WorkUnit],
        earlier: list[tuple[OutputStore, str]],
        columns: tuple[str, ...],
        build: JoinedDocumentBuilder,
        per_row: int,
        method: Method,
        fingerprint: str,
    ) -> dict[str, Any]:
        """Run `stage` on documents built from the input rows of each unit of `input_units`
        (the input's plan) together with what the `earlier` stages ((store, stage), each with
        one unit per input unit) committed for that unit, by reference
        (`InputWithEarlierRows`): unit k reads input unit k's rows (from its seek, checked
        against its id) and the `columns` of each earlier stage's unit-k data shards, and
        `build` makes at most `per_row` documents per input row. Unit ids derive from the
        input's and the earlier ones, so a resume plans the same units; the driver reads no
        row."""
        if not isinstance(docs, InputDocuments):
            raise TypeError(f"stage {stage} reads input files; got {type(docs).__name__}")
        plan_key = f"{fingerprint}/{stage}"
        feeds = [self._feeds.get((s.location.uri, name)) for s, name in earlier]
        streamed = any(feed is not None for feed in feeds)
        if streamed:  # committed later, unit by unit: the ids its commits will carry
            committed = [
                committed_records(s, name, input_units)
                if feed is None
                else feed.planned(self._check_beside)
                for (s, name), feed in zip(earlier, feeds, strict=True)
            ]
            sources = [
                feed or _committed_feed(s, name)
                for (s, name), feed in zip(earlier, feeds, strict=True)
            ]
        else:
            committed = [committed_records(s, name, input_units) for s, name in earlier]
        samples = int(method.sampling_overrides().get("n", 1))  # rows per document
        units, shards = [], {}
        needs: Needs = {}
        for position, unit in enumerate(input_units):
            records = [of_stage[position] for of_stage in committed]
            if streamed:
                needs[unit.index] = [(source, unit.index) for source in sources]
            else:
                shards[unit.index] = tuple(
                    (i, name) for i, record in enumerate(records) for name in record.data_shards()
                )
            ids = "|".join([unit.unit_id, *(record.unit_id for record in records)])
            unit_id = hashlib.sha256(f"{plan_key}|{ids}".encode()).hexdigest()[:16]
            start, stop = unit.start * per_row, unit.stop * per_row
            units.append(
                dataclasses.replace(
                    unit,
                    unit_id=unit_id,
                    start=start,
                    stop=stop,
                    plan_key="",
                    estimated_rows=(stop - start) * samples,
                )
            )
        rows = InputWithEarlierRows(
            docs.spec,
            tuple(s.location for s, _ in earlier),
            shards,
            tuple(columns),
            build,
            per_row,
            input_units[0].plan_key if input_units else "",
            {unit.index: unit.unit_id for unit in input_units},
        )
        gate = UnitGate(needs, _joined_shards) if streamed else None
        return self.execute(
            store, DocumentsByReference(rows, units), method, units, stage=stage, gate=gate
        )

    def summarize_committed(
        self,
        store: OutputStore,
        units: list[WorkUnit],
        stage: str,
        columns: tuple[str, ...],
        summarize: Callable[[Any], Any],
    ) -> list[Any]:
        """`summarize(table)` of each of `stage`'s committed units (the `columns` of its data
        shards), in unit order, computed in Ray tasks beside the data (runtime/unit_tasks.py):
        the driver reads no row, and holds only what `summarize` returns."""
        records = committed_records(store, stage, units)
        shards = [tuple(record.data_shards()) for record in records]
        return summarize_units(store.location, shards, columns, summarize)

    def diversity_filter(self) -> DiversityFilter | None:
        """The job's one diversity filter (None when disabled), started on first need with
        its index holding every filtered stage's committed vectors so far: loaded from the
        last snapshot where it matches, the units after it re-added in stage order."""
        if not self.config.filters.diversity.enabled:
            return None
        if self._diversity is None:
            from synth_ray.runtime.cluster import replica_gpus
            from synth_ray.runtime.diversity import DiversityFilter

            self._ensure_ray()
            self._diversity = DiversityFilter(
                self._diversity_config,
                self.output.child(DIVERSITY_DIR),
                self.diversity_sample,
                gpus_taken=self.config.resources.replicas * replica_gpus(self.config),
                start_timeout_s=self.config.scheduler.start_timeout_s,
            )
        self._diversity.prime(self._filtered_stages)
        return self._diversity

    def _generate(
        self,
        store: OutputStore,
        docs: DocumentSource,
        method: Method,
        units: list[WorkUnit],
        remaining: list[WorkUnit],
        stage: str,
        gate: UnitGate | None = None,
        feed: UnitFeed | None = None,
    ) -> None:
        progress = JobProgress(
            len(units), len(units) - len(remaining), enabled=self.show_progress, label=stage
        )
        s = self.config.sampling
        sampling = SamplingSpec(s.temperature, s.top_p, s.max_tokens, s.ignore_eos)
        sampling = method.stage_sampling(sampling)
        filtering = self.config.filters.diversity.enabled
        annotate_nn = filtering and store.location.uri == self.output.uri
        diversity = self.diversity_filter() if filtering and method.diversity_column else None
        try:
            self._generate_slices(
                store, docs, method, remaining, stage, sampling, annotate_nn, progress, diversity,
                gate, feed,
            )  # fmt: skip
        finally:
            progress.close()

    def _generate_slices(
        self,
        store: OutputStore,
        docs: DocumentSource,
        method: Method,
        remaining: list[WorkUnit],
        stage: str,
        sampling: SamplingSpec,
        annotate_nn: bool,
        progress: JobProgress,
        diversity: DiversityFilter | None,
        gate: UnitGate | None = None,
        feed: UnitFeed | None = None,
    ) -> None:
        """Replicas do the per-row work (runtime/slice_worker.py); this process sends slice
        bounds and commits units. With `diversity`, replicas also embed their rows, and this
        process decides each unit in order before a replica writes it."""
        backend = self._ensure_backend()
        self._check_paths_visible(docs)
        spec = StageSpec(
            key=f"{stage or 'main'}:{uuid.uuid4().hex[:12]}",
            stage=stage,
            method=method,
            renderer=self.renderer,
            documents=documents_for_replicas(docs),
            sampling=sampling,
            seed=self.config.sampling.seed,
            max_model_len=self.stage_config.engine.max_model_len,
            output=store.location,
            annotate_nn=annotate_nn,
            run_id=store.run_id,
            plan_key=remaining[0].plan_key if remaining else "",
            keep_dropped=self.config.output.keep_dropped,
        )
        if diversity is not None:
            from synth_ray.runtime.diversity import EMBED_CHUNK

            spec.embedders = list(diversity.embedders)
            spec.embedding_dim = diversity.dim
            spec.embed_chunk = EMBED_CHUNK

        replicas = self.stage_config.resources.replicas

        def on_commit(stats: UnitStats) -> None:
            with self._lock:
                self.summary.units_committed += 1
            progress.unit_committed(stats)

        tracker = (
            SliceTracker(store, stage, on_commit)
            if diversity is None
            else FilteredSliceTracker(
                store,
                stage,
                on_commit,
                diversity,
                spec.key,
                max(16, 4 * replicas),
            )
        )
        if feed is not None:
            tracker.on_record = feed.add
        slices: Iterator[Any] = cut_slices(
            remaining,
            spec.key,
            sum(u.estimated_rows for u in remaining),
            replicas,
            self.config.scheduler.min_slice_rows,
        )
        together = self._running_together()
        if together:
            slices = gated(slices, gate, lambda: self._aborted)
        work = tracker.work(tracker.register(slices, {u.index: u for u in remaining}))
        backend.add_stage(spec)
        try:
            self._schedule(
                store,
                work,
                tracker.add_result,
                progress,
                split=split_slice,
                exhausted=failed_slice,
                finishing=tracker.finishing,
                fed_from_outside=gate is not None,
            )
        finally:
            backend.drop_stage(spec.key)
        tracker.check_done()

    def _check_paths_visible(self, docs: DocumentSource) -> None:
        """Once per run: generators read input slices and write shards on their own nodes,
        so a local input or output must be on a filesystem every node shares."""
        if self._paths_checked:
            return
        from synth_ray.io.output_store import JOB_FILE
        from synth_ray.runtime.cluster import check_visible_from_every_node

        if self.output.local is not None:
            check_visible_from_every_node(
                "output.path",
                str(self.output.local / JOB_FILE),
                "generators write their shards there: use a shared filesystem or an "
                "object-store URI (s3://, gs://, ...)",
            )
        self._check_input_visible(docs)
        self._paths_checked = True

    def _check_input_visible(self, docs: DocumentSource) -> None:
        """Fail with one line naming the nodes where a local input cannot be seen (planning
        tasks and generators read it on their own nodes)."""
        from synth_ray.runtime.cluster import check_visible_from_every_node

        spec = docs.spec if isinstance(docs, InputDocuments) else None
        by_input = (UnsettledRows, InputWithEarlierRows)
        if isinstance(docs, DocumentsByReference) and isinstance(docs.rows, by_input):
            spec = docs.rows.spec
        if spec is not None:
            from synth_ray.io.inputs import resolve_input_files

            check_visible_from_every_node(
                "input.path",
                str(resolve_input_files(spec.path)[1][-1]),
                "generators read their slices of it: put it on a shared filesystem",
            )

    def _schedule(
        self,
        store: OutputStore,
        work: Iterator[WorkItem],
        sink: Callable[[WorkItem, Any], None],
        progress: JobProgress,
        split: Callable[[WorkItem], list[WorkItem]] | None = None,
        exhausted: Callable[[WorkItem, str], WorkItem | None] | None = None,
        finishing: Callable[[], list[WorkItem]] | None = None,
        fed_from_outside: bool = False,
    ) -> None:
        """Run the work on the replicas to the end, then record the run in `store`. A stage
        running beside others of its pool hands its work to the pool's shared scheduler."""
        shared = self._shared.get(self.pool) if self._running_together() else None
        if shared is not None:
            lane = Lane(
                getattr(self._local, "rank", 0), work, sink, split, exhausted, finishing,
                notice=progress.notice, fed_from_outside=fed_from_outside,
            )  # fmt: skip
            self._schedule_lane(shared, lane, store, progress)
            return
        summary = self.summary
        run_started = time.time()
        timeline = Timeline(self.output, progress.label, progress, metrics=self._metrics(progress))
        scheduler = self._new_scheduler(
            work, sink, split, exhausted, finishing, progress.notice, timeline.tick,
            fed_from_outside,
        )  # fmt: skip
        pool = self.pool
        self._schedulers[pool] = scheduler
        try:
            scheduler.run()
        except JobStopped:
            timeline.record(scheduler, "stopped")
            store.record_run(self._run_record(scheduler, progress, run_started, 0.0, 0.0))
            raise
        except JobFailed:
            timeline.record(scheduler, "failed")
            raise
        finally:
            self._schedulers.pop(pool, None)
            self._scheduler_ended(scheduler)
        startup = generation = 0.0
        if scheduler.first_ready_at is not None and scheduler.finished_at is not None:
            startup = scheduler.first_ready_at - scheduler.started_at
            generation = scheduler.finished_at - scheduler.first_ready_at
        with self._lock:
            summary.startup_s += startup
            summary.generation_wall_s += generation
            summary.output_tokens_this_run += progress.stats.output_tokens
            summary.engine = summary.engine or scheduler.engine_info
        timeline.record(scheduler, "stage done")
        store.record_run(self._run_record(scheduler, progress, run_started, startup, generation))

    def _new_scheduler(
        self,
        work: Iterator[WorkItem | None],
        sink: Callable[[WorkItem, Any], None],
        split: Callable[[WorkItem], list[WorkItem]] | None,
        exhausted: Callable[[WorkItem, str], WorkItem | None] | None,
        finishing: Callable[[], list[WorkItem]] | None,
        notice: Callable[[str], None] | None,
        on_tick: Callable[[Scheduler], None] | None,
        fed_from_outside: bool | Callable[[], bool],
        work_closed: Callable[[], bool] | None = None,
    ) -> Scheduler:
        """A scheduler for this thread's pool, with the job's scheduler settings."""
        sc = self.config.scheduler
        resources = self.stage_config.resources
        stall_timeout = sc.stall_timeout_s or default_stall_timeout_s(
            self.config.sampling.max_tokens
        )
        settings = SchedulerSettings(
            replicas=resources.replicas,
            batch_size=sc.batch_size,
            max_in_flight=sc.max_in_flight_per_replica,
            max_attempts=sc.max_attempts,
            max_replica_restarts=sc.max_replica_restarts,
            start_timeout_s=sc.start_timeout_s,
            stall_timeout_s=stall_timeout,
            # its answers are also the timeline's engine tokens, sampled every 5 s
            probe_interval_s=min(5.0, stall_timeout / 4),
        )
        return Scheduler(
            self._ensure_backend(),
            work,
            sink,
            settings,
            split=split,
            on_exhausted=exhausted,
            notice=notice,
            stop=self.stop,
            on_tick=on_tick,
            finishing=finishing,
            fed_from_outside=fed_from_outside,
            work_closed=work_closed,
        )

    def _scheduler_ended(self, scheduler: Scheduler) -> None:
        """Park the pool's warm replicas for its next stage; sum what its scheduler saw."""
        scheduler.backend.shutdown()
        with self._lock:
            self.summary.requests_resent += scheduler.requests_resent
            self.summary.replica_failures.extend(scheduler.failures)
            self.summary.stalls.extend(scheduler.stalls)
            self.summary.pool_shrinks.extend(scheduler.shrinks)

    def _schedule_lane(
        self, shared: SharedScheduler, lane: Lane, store: OutputStore, progress: JobProgress
    ) -> None:
        """Run `lane` on its pool's shared scheduler (started by the first stage to come),
        then record this stage's run: its own units and tokens, the pool's replicas."""
        run_started = time.time()
        timeline = Timeline(self.output, progress.label, progress, metrics=self._metrics(progress))
        lane.on_tick = timeline.tick
        pool = self.pool

        def start(shared: SharedScheduler) -> Scheduler:
            scheduler = self._new_scheduler(
                shared.work(), shared.sink, shared.split, shared.exhausted, shared.finishing,
                shared.notice, shared.tick, shared.fed_from_outside, shared.closed,
            )  # fmt: skip
            self._schedulers[pool] = scheduler
            return scheduler

        def end(scheduler: Scheduler) -> None:
            self._schedulers.pop(pool, None)
            self._scheduler_ended(scheduler)
            if scheduler.first_ready_at is not None and scheduler.finished_at is not None:
                with self._lock:
                    self.summary.startup_s += scheduler.first_ready_at - scheduler.started_at
                    self.summary.generation_wall_s += (
                        scheduler.finished_at - scheduler.first_ready_at
                    )

        shared.add(lane, start, end)
        scheduler = shared.scheduler
        assert scheduler is not None
        since = (scheduler.requests_resent, len(scheduler.stalls), len(scheduler.shrinks))
        try:
            lane.wait()
        except JobStopped:
            timeline.record(scheduler, "stopped")
            record = self._run_record(scheduler, progress, run_started, 0.0, 0.0, since)
            store.record_run(record)
            raise
        except JobFailed:
            timeline.record(scheduler, "failed")
            raise
        startup = generation = 0.0
        ready = scheduler.first_ready_at
        if ready is not None and lane.finished_at is not None:
            startup = max(0.0, ready - lane.started_at)
            generation = lane.finished_at - max(ready, lane.started_at)
        with self._lock:
            self.summary.output_tokens_this_run += progress.stats.output_tokens
            self.summary.engine = self.summary.engine or scheduler.engine_info
        timeline.record(scheduler, "stage done")
        record = self._run_record(scheduler, progress, run_started, startup, generation, since)
        store.record_run(record)

    def _metrics(self, progress: JobProgress) -> JobMetrics | None:
        """Ray metrics of this stage, where this process is connected to Ray."""
        import ray

        if not ray.is_initialized():
            return None
        return JobMetrics(self.output.uri.rstrip("/").rsplit("/", 1)[-1], progress.label)

    @staticmethod
    def _run_record(
        scheduler: Scheduler,
        progress: JobProgress,
        run_started: float,
        startup: float,
        generation: float,
        since: tuple[int, int, int] = (0, 0, 0),
    ) -> dict[str, Any]:
        """One line of _runs.jsonl: what this run of a stage did (and why it stopped early).
        `since`: the scheduler's requests re-sent, stalls and shrinks when the stage began
        (a pool's shared scheduler counts every stage's)."""
        resent, stalled, shrunk = since
        stalls, shrinks = scheduler.stalls[stalled:], scheduler.shrinks[shrunk:]
        record = {
            **{f"engine_{key}": value for key, value in scheduler.engine_info.items()},
            "started": run_started,
            "finished": time.time(),
            "units_committed": progress.units_done - progress.units_at_start,
            "startup_s": round(startup, 3),
            "generation_wall_s": round(generation, 3),
            "output_tokens": progress.stats.output_tokens,
            "requests_resent": scheduler.requests_resent - resent,
            "replicas_stalled": len(stalls),
            "stalls": stalls[-5:],
        }
        if shrinks:
            record["pool_shrinks"] = shrinks[-5:]
        if scheduler.stop is not None and scheduler.stop.requested:
            record["stopped_by"] = scheduler.stop.signal_name
        return record

    def close(self) -> None:
        """Stop replicas, the diversity filter's actors, and Ray if this runner started them."""
        if self._diversity is not None:
            self._diversity.close()
            self._diversity = None
        if self.owns_backend:
            for backend in self._backends.values():
                backend.close()  # type: ignore[attr-defined]
        self._backends.clear()
        if self.owns_ray:
            import ray

            ray.shutdown()
            self.owns_ray = False
