"""Work units in flight: documents -> rendered requests -> results -> one committed shard.

`UnitBuilder` expands a unit's documents with the method and renders each candidate's prompt
to token ids; a prompt that does not fit `engine.max_model_len` becomes an error row (stage
`prompt`) instead of a request. `UnitTracker` collects results by request id and commits the
unit (shards, then manifest line) as soon as its last result arrives, rows in candidate order,
so a shard's content does not depend on which replica finished first.
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from synth_ray.diversity.decide import BatchDecision, histogram, nn_value
from synth_ray.engine.prompts import PromptRenderer
from synth_ray.engine.requests import EngineRequest, EngineResult, SamplingSpec
from synth_ray.io.inputs import Document
from synth_ray.io.output_store import OutputStore
from synth_ray.methods.base import Candidate, Dropped, Errored, Kept, Method
from synth_ray.plan import WorkUnit
from synth_ray.runtime.scheduler import WorkItem
from synth_ray.stats import UnitStats

if TYPE_CHECKING:
    from synth_ray.runtime.diversity import DiversityFilter


def request_seed(base_seed: int, row_id: str) -> int:
    digest = hashlib.sha256(f"{base_seed}:{row_id}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


@dataclass
class PendingUnit:
    unit: WorkUnit
    candidates: list[Candidate]
    requests: list[EngineRequest]
    outcomes: dict[str, list[Kept | Dropped | Errored]] = field(default_factory=dict)
    results: dict[str, EngineResult] = field(default_factory=dict)
    input_documents: int = 0

    @property
    def complete(self) -> bool:
        return len(self.outcomes) == len(self.candidates)

    def add_result(self, method: Method, candidate: Candidate, result: EngineResult) -> None:
        """Record a candidate's completion as its outcomes (kept, dropped or errored rows)."""
        self.results[result.request_id] = result
        self.outcomes[result.request_id] = completion_outcomes(method, candidate, result)


def completion_outcomes(
    method: Method, candidate: Candidate, result: EngineResult
) -> list[Kept | Dropped | Errored]:
    """One outcome per expected row; a parser bug on one completion errors only its rows."""
    width = candidate.width
    if result.error is not None:
        return [Errored("generate", result.error)] * width
    try:
        finished = method.finish(candidate, result)
        outcomes = finished if isinstance(finished, list) else [finished]
        if len(outcomes) != width:
            raise ValueError(f"{len(outcomes)} outcomes for {width} expected rows")
    except Exception as err:
        return [Errored("parse", f"{type(err).__name__}: {err}")] * width
    return outcomes


class UnitBuilder:
    def __init__(
        self,
        method: Method,
        renderer: PromptRenderer,
        max_model_len: int,
        sampling: SamplingSpec,
        seed: int,
    ) -> None:
        self.method = method
        self.renderer = renderer
        self.max_model_len = max_model_len
        self.sampling = sampling
        self.seed = seed

    def build(self, unit: WorkUnit, docs: list[Document]) -> PendingUnit:
        candidates = [c for doc in docs for c in self.method.expand(doc)]
        counted = len(docs) if self.method.counts_input_documents else 0
        pending = PendingUnit(unit, candidates, [], input_documents=counted)
        to_render = [c for c in candidates if c.error is None]
        texts = [self.renderer.render_text(c.messages or []) for c in to_render]
        token_ids = (
            self.renderer.tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []
        )
        for candidate in candidates:
            if candidate.error is not None:
                error = Errored(candidate.error_stage, candidate.error)
                pending.outcomes[candidate.row_id] = [error] * candidate.width
        for candidate, ids in zip(to_render, token_ids, strict=True):
            if len(ids) >= self.max_model_len:
                error = Errored(
                    "prompt",
                    f"prompt has {len(ids)} tokens; engine.max_model_len is {self.max_model_len}",
                )
                pending.outcomes[candidate.row_id] = [error] * candidate.width
                continue
            pending.requests.append(
                EngineRequest(
                    request_id=candidate.row_id,
                    prompt_token_ids=list(ids),
                    sampling=self.sampling,
                    seed=request_seed(self.seed, candidate.row_id),
                    max_tokens=min(self.sampling.max_tokens, self.max_model_len - len(ids)),
                )
            )
        return pending


def documents_by_unit(
    docs: Iterable[Document], units: list[WorkUnit]
) -> Iterator[tuple[WorkUnit, list[Document]]]:
    """Walk the documents once, grouping them by unit; units absent from `units` are skipped."""
    wanted = iter(sorted(units, key=lambda u: u.start))
    current = next(wanted, None)
    batch: list[Document] = []
    for doc in docs:
        while current is not None and doc.ordinal >= current.stop:
            yield current, batch
            batch = []
            current = next(wanted, None)
        if current is None:
            return
        if doc.ordinal >= current.start:
            batch.append(doc)
    while current is not None:
        yield current, batch
        batch = []
        current = next(wanted, None)


OnCommit = Callable[[PendingUnit, UnitStats], None]
NN_FIELD = pa.field("nn_similarity", pa.float32())


class UnitTracker:
    """Collects results per unit and commits each unit exactly when it is complete.

    With a diversity filter, a complete unit's kept rows are sent to be embedded at once, but
    units are decided and committed strictly in unit order (a later unit waits for earlier
    ones): each decision then sees exactly the rows kept before it, whichever replica finished
    first, and the committed units always form a prefix that a resumed run rebuilds from.
    """

    def __init__(
        self,
        store: OutputStore,
        method: Method,
        on_commit: OnCommit,
        stage: str = "",
        diversity: DiversityFilter | None = None,
        annotate_nn: bool = False,
    ) -> None:
        """`diversity` filters the rows on `method.diversity_column`; `annotate_nn` adds the
        `nn_similarity` column (from the filter, or from a field a driver-level filter set)."""
        self.store = store
        self.method = method
        self.on_commit = on_commit
        self.stage = stage
        self.pending: dict[int, PendingUnit] = {}
        self.by_request: dict[str, PendingUnit] = {}
        self.candidate_of: dict[str, Candidate] = {}
        self.diversity = diversity if method.diversity_column else None
        self.annotate_nn = annotate_nn or self.diversity is not None
        self.schema = method.schema.append(NN_FIELD) if self.annotate_nn else method.schema
        # diversity only: registered units not yet committed, in unit order
        self._order: deque[int] = deque()
        self._embedding: dict[int, tuple[PendingUnit, list[Any]]] = {}

    def work_items(self, units: Iterable[PendingUnit]) -> Iterator[WorkItem]:
        """Register each unit as the scheduler reaches it and yield its requests."""
        for pending in units:
            if self.diversity is not None:
                self._order.append(pending.unit.index)
            if pending.complete:  # nothing to generate: every candidate failed before that
                self._commit(pending)
                continue
            self.pending[pending.unit.index] = pending
            for candidate in pending.candidates:
                self.candidate_of[candidate.row_id] = candidate
            for request in pending.requests:
                self.by_request[request.request_id] = pending
                yield WorkItem(request, pending.unit.index)

    def add_result(self, item: WorkItem, result: EngineResult) -> None:
        pending = self.by_request.pop(result.request_id)
        candidate = self.candidate_of.pop(result.request_id)
        pending.add_result(self.method, candidate, result)
        if pending.complete:
            del self.pending[pending.unit.index]
            self._commit(pending)

    def flush(self) -> None:
        """Decide and commit the units still waiting for their embeddings (end of a stage)."""
        self._drain(block=True)
        if self._order:
            raise AssertionError(f"units {list(self._order)[:5]} never completed")

    def _commit(self, pending: PendingUnit) -> None:
        if self.diversity is None:
            self._write(pending)
            return
        texts = [
            text
            for candidate in pending.candidates
            for outcome in pending.outcomes[candidate.row_id]
            if isinstance(outcome, Kept)
            and (text := filtered_text(outcome.row, self.method.diversity_column))
        ]
        self._embedding[pending.unit.index] = (pending, self.diversity.embed_async(texts))
        self._drain(block=False)

    def _drain(self, block: bool) -> None:
        import ray

        while self._order and self._order[0] in self._embedding:
            pending, refs = self._embedding[self._order[0]]
            if not block and refs:
                done, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
                if len(done) < len(refs):
                    return  # its vectors are still being computed; the next result retries
            assert self.diversity is not None
            vectors = self.diversity.gather(refs, self.diversity.dim)
            decision = self.diversity.decide(vectors)
            del self._embedding[self._order.popleft()]
            self._write(pending, vectors, decision)

    def _write(
        self,
        pending: PendingUnit,
        vectors: np.ndarray | None = None,
        decision: BatchDecision | None = None,
    ) -> None:
        out = collect_rows(pending, self.annotate_nn, self.method.diversity_column, decision)
        kept_vectors = None
        if decision is not None and vectors is not None:
            out.stats.nn_histogram = histogram(decision.nn_similarity)
            kept_vectors = (out.kept_ids, vectors[decision.keep])
        self.store.commit_unit(
            pending.unit.index,
            pending.unit.unit_id,
            out.rows,
            self.schema,
            out.errors,
            out.stats,
            stage=self.stage,
            vectors=kept_vectors,
        )
        self.on_commit(pending, out.stats)


@dataclass
class UnitRows:
    """What a unit (or a slice of one) writes: its rows, error rows and accounting."""

    rows: list[dict[str, Any]]
    errors: list[dict[str, Any]]
    stats: UnitStats
    kept_ids: list[str]  # ids of the rows the diversity decision kept (with a decision)


def filtered_text(row: dict[str, Any], column: str | None) -> str | None:
    """The text the diversity filter compares for a row; None when the row has none."""
    text = row.get(column or "")
    return text if isinstance(text, str) and text.strip() else None


def collect_rows(
    pending: PendingUnit,
    annotate_nn: bool,
    diversity_column: str | None = None,
    decision: BatchDecision | None = None,
) -> UnitRows:
    """Rows in candidate order, each outcome counted once. `annotate_nn` adds `nn_similarity`
    (from the candidate's fields, or from `decision`, which also drops the rows it rejects)."""
    stats = UnitStats(input_documents=pending.input_documents)
    rows: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    kept_ids: list[str] = []
    filtered = 0  # position among the rows the diversity filter decided on
    for candidate in pending.candidates:
        stats.rows_in += candidate.width
        result = pending.results.get(candidate.row_id)
        if result is not None:
            stats.input_tokens += result.n_input_tokens
            stats.output_tokens += result.n_output_tokens
        for index, outcome in enumerate(pending.outcomes[candidate.row_id]):
            if isinstance(outcome, Kept) and annotate_nn:
                row = dict(outcome.row)
                row["nn_similarity"] = candidate.fields.get("nn_similarity")
                if decision is not None and filtered_text(row, diversity_column):
                    position, filtered = filtered, filtered + 1
                    if not decision.keep[position]:
                        outcome = Dropped("diversity")
                    else:
                        row["nn_similarity"] = nn_value(decision.nn_similarity[position])
                        kept_ids.append(row.get("id") or candidate.sample_id(index))
                if isinstance(outcome, Kept):
                    outcome = Kept(row)
            if isinstance(outcome, Kept):
                rows.append(outcome.row)
                stats.rows_out += 1
            elif isinstance(outcome, Dropped):
                stats.dropped[outcome.filter_name] += 1
            else:
                stats.errored[outcome.stage] += 1
                errors.append(
                    {
                        "id": candidate.sample_id(index),
                        "source_id": candidate.source_id,
                        "stage": outcome.stage,
                        "error": outcome.error,
                    }
                )
    return UnitRows(rows, errors, stats, kept_ids)
