"""What a method's driver may ask of the runtime: run stages, plan them, filter for diversity.

    python -m pytest tests/test_layers.py   # methods/ never imports the runtime

A single-stage method needs nothing here: its registry entry builds one `Method` and
`run_single_stage` runs it. A multi-stage method (STaR, Self-Instruct's rounds, Evol-Instruct's
rounds) is a function of a `JobContext`: it plans and runs named stages through
`ctx.runner` (a `StageRunnerLike`, implemented by runtime/stage.py's StageRunner), reads what
earlier stages committed from `ctx.store`, and returns the job's stats. Every stage is
committed exactly once, so a driver that derives each stage's input from committed shards
resumes exactly after a kill.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import pyarrow as pa

from synth_ray.config import JobConfig, PoolConfig
from synth_ray.engine.prompts import PromptRenderer
from synth_ray.io.inputs import Document
from synth_ray.io.output_store import OutputStore
from synth_ray.methods.base import Method

DocumentSource = Callable[[], Iterable[Document]]
# a later stage's documents from an earlier stage's committed rows (a table of the columns it
# asked for) and the unit's first ordinal; runs on the replicas, so a module-level function
DocumentBuilder = Callable[[pa.Table, int], list[Document]]
# a later stage's documents from a unit's input rows and what an earlier stage committed for
# them (a table of the columns it asked for); runs on the replicas
JoinedDocumentBuilder = Callable[[list[Document], pa.Table], list[Document]]


class DiversityFilterLike(Protocol):
    """The job's diversity filter (runtime/diversity.py), as drivers use it between stages."""

    def embed_cached(self, name: str, texts: list[str]) -> np.ndarray: ...

    def restore(self, vectors: np.ndarray) -> None: ...

    def ordered(self, vectors: np.ndarray) -> Any: ...

    def finish(self, batch: Any) -> None: ...


class StageRunnerLike(Protocol):
    """Runs stages on the job's warm replicas (runtime/stage.py's StageRunner)."""

    summary: Any  # RunSummary: units_total so far

    def plan(
        self, docs: DocumentSource, method: Method, fingerprint: str, id_column: str | None = None
    ) -> list[Any]:
        """The stage's work units (fails on repeated ids before anything is written)."""

    def execute(
        self,
        store: OutputStore,
        docs: DocumentSource,
        method: Method,
        units: list[Any],
        stage: str = "",
    ) -> dict[str, Any]:
        """Generate the planned units not yet committed; returns the folder's stats."""

    def run_stage(
        self, stage: str, store: OutputStore, docs: DocumentSource, method: Method, fingerprint: str
    ) -> dict[str, Any]:
        """Plan and execute one named stage into `store`."""

    def run_unsettled_stage(
        self,
        stage: str,
        store: OutputStore,
        docs: DocumentSource,
        earlier_units: list[Any],
        earlier_stage: str,
        method: Method,
        fingerprint: str,
    ) -> dict[str, Any]:
        """Run `stage` on the input rows `earlier_stage` did not settle (no data or error row
        with their source id), by reference: the driver reads none of them."""

    def run_derived_stage(
        self,
        stage: str,
        store: OutputStore,
        earlier_store: OutputStore,
        earlier_units: list[Any],
        earlier_stage: str,
        columns: tuple[str, ...],
        build: DocumentBuilder,
        method: Method,
        fingerprint: str,
        group: int = 1,
        salts: dict[int, str] | None = None,
    ) -> dict[str, Any]:
        """Run `stage` on documents `build` makes from the `columns` of what `earlier_stage`
        committed in `earlier_store`, by reference: each unit covers `group` consecutive
        `earlier_units` (the earlier stage's, or the input plan's it derives from: found by
        index) and its replica reads their shards; the driver reads no row. `salts[k]` joins
        unit k's id when something besides those shards decides its documents."""

    def run_joined_stage(
        self,
        stage: str,
        store: OutputStore,
        docs: DocumentSource,
        input_units: list[Any],
        earlier: list[tuple[OutputStore, str]],
        columns: tuple[str, ...],
        build: JoinedDocumentBuilder,
        per_row: int,
        method: Method,
        fingerprint: str,
    ) -> dict[str, Any]:
        """Run `stage` on documents `build` makes from each input unit's rows and the
        `columns` of what the `earlier` stages ((store, stage)) committed for that unit, at
        most `per_row` per input row, by reference: the driver reads no row."""

    def summarize_committed(
        self,
        store: OutputStore,
        units: list[Any],
        stage: str,
        columns: tuple[str, ...],
        summarize: Callable[[pa.Table], Any],
    ) -> list[Any]:
        """`summarize(table)` of each committed unit of `stage` (its data shards' `columns`),
        in unit order, computed beside the data: the driver reads no row. `summarize` is a
        module-level function, and what it returns should be small."""

    def diversity_filter(self) -> DiversityFilterLike | None:
        """The job's diversity filter, None when it is off."""

    def use_pool(self, name: str) -> str:
        """Run this thread's later stages on pool `name` (`default`: the job's engine);
        returns the model name its rows record."""

    def pool_config(self, name: str) -> PoolConfig:
        """Pool `name`'s engine and size (a ConfigError naming the pools when none is)."""

    def pool_renderer(self, pool: str) -> PromptRenderer:
        """The tokenizer and chat template of `pool`'s model."""

    def model_name(self, pool: str | None = None) -> str:
        """The model name rows of pool `pool` (default: this thread's) record."""

    def run_together(self, parts: list[Together]) -> list[dict[str, Any]]:
        """Run `parts` at once, each on its pool; a stage one part publishes feeds the later
        stages reading it unit by unit as it commits. Returns their results in order."""


@dataclass(frozen=True)
class Together:
    """One part of `run_together`: `run()` runs its stages (through the runner, on `pool`);
    `publishes` names the (folder, stage)s it writes that another part reads, which then
    get their units as they commit instead of after the whole stage. `filtered`: it writes
    a stage the job's diversity filter decides (filters.diversity on); the filter decides
    one stage at a time (its index and snapshots cover stages in order), so parts with two
    such stages run one after another."""

    run: Callable[[], dict[str, Any]]
    pool: str = "default"
    publishes: tuple[tuple[OutputStore, str], ...] = ()
    filtered: bool = False


@dataclass(frozen=True)
class GeneratedDocuments:
    """Documents a method makes from their ordinal alone (`make(i)`: a module-level function,
    or a partial of one), as TinyStories' and Magpie's requests are. A DocumentSource that is
    sent as it is: each replica makes its own slice's documents, so neither the driver nor the
    stage spec holds them."""

    count: int
    make: Callable[[int], Document]

    def __call__(self) -> Iterator[Document]:
        return (self.make(i) for i in range(self.count))

    def read_range(self, start: int, stop: int) -> list[Document]:
        return [self.make(i) for i in range(start, min(stop, self.count))]


@dataclass
class JobContext:
    """What a method's driver needs to run its stages. Every driver takes just this."""

    config: JobConfig
    runner: StageRunnerLike
    store: OutputStore
    renderer: PromptRenderer
    model_name: str
    fingerprint: str
    docs: DocumentSource | None  # the input rows; None for a method without input (seeds)
    prepare: Callable[[], None]  # claims the output folder: call it once planning succeeded

    @property
    def id_column(self) -> str | None:
        return self.config.input.id_column if self.config.input else None


def run_single_stage(ctx: JobContext, method: Method) -> dict[str, Any]:
    """One stage into the output folder itself: what rephrase and generate are."""
    assert ctx.docs is not None
    units = ctx.runner.plan(ctx.docs, method, ctx.fingerprint, ctx.id_column)
    ctx.prepare()
    return ctx.runner.execute(ctx.store, ctx.docs, method, units)
