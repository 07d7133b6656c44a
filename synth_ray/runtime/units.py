"""A unit's (or a slice's) rows in flight: documents -> rendered requests -> outcomes -> rows.

`UnitBuilder` expands documents with the method and renders each candidate's prompt to token
ids; a prompt that does not fit `engine.max_model_len` becomes an error row (stage `prompt`)
instead of a request. `collect_rows` turns the outcomes into rows in candidate order, so a
shard's content does not depend on the order completions came back. Both run next to the
engine, in the generator actor (runtime/slice_worker.py).
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from synth_ray.diversity.decide import BatchDecision, nn_value
from synth_ray.engine.prompts import PromptRenderer
from synth_ray.engine.requests import EngineRequest, EngineResult, SamplingSpec
from synth_ray.io.inputs import Document
from synth_ray.methods.base import Candidate, Dropped, Errored, Kept, Method
from synth_ray.plan import WorkUnit
from synth_ray.stats import UnitStats


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
    """One outcome per expected row (from 1 to `width` where the candidate's width is an upper
    bound); a parser bug on one completion errors only its rows."""
    width = candidate.width
    if result.error is not None:
        return [Errored("generate", result.error)] * candidate.error_rows()
    try:
        finished = method.finish(candidate, result)
        outcomes = finished if isinstance(finished, list) else [finished]
        n = len(outcomes)
        if n != width and (candidate.exact_width or not 1 <= n <= width):
            raise ValueError(f"{len(outcomes)} outcomes for {width} expected rows")
        for outcome in outcomes:
            split = getattr(outcome, "split", None)
            if split is not None and split not in method.splits:
                raise ValueError(f"kept into split {split!r}, which the method does not declare")
    except Exception as err:
        return [Errored("parse", f"{type(err).__name__}: {err}")] * candidate.error_rows()
    return outcomes


_TOKENIZE_BATCH = 1024  # prompts per tokenizer call: a step of progress each


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

    def build(
        self, unit: WorkUnit, docs: list[Document], step: Callable[[], None] = lambda: None
    ) -> PendingUnit:
        """The unit's candidates and their tokenized requests (a prompt too long for the
        engine becomes error rows). `step` marks progress per document expanded, per prompt
        rendered and per batch tokenized, so a big slice's preparation is never a stall."""
        candidates = []
        for doc in docs:
            candidates.extend(self.method.expand(doc))
            step()
        counted = len(docs) if self.method.counts_input_documents else 0
        pending = PendingUnit(unit, candidates, [], input_documents=counted)
        to_render = [
            c for c in candidates if c.error is None and c.dropped is None and c.kept is None
        ]
        texts = []
        for c in to_render:
            text = c.raw_prompt
            texts.append(text if text is not None else self.renderer.render_text(c.messages or []))
            step()
        token_ids: list[list[int]] = []
        for i in range(0, len(texts), _TOKENIZE_BATCH):
            batch = texts[i : i + _TOKENIZE_BATCH]
            token_ids.extend(self.renderer.tokenizer(batch, add_special_tokens=False)["input_ids"])
            step()
        for candidate in candidates:
            if candidate.error is not None:
                error = Errored(candidate.error_stage, candidate.error)
                pending.outcomes[candidate.row_id] = [error] * candidate.error_rows()
            elif candidate.dropped is not None:
                drops = [Dropped(candidate.dropped)] * candidate.error_rows()
                pending.outcomes[candidate.row_id] = drops
            elif candidate.kept is not None:
                pending.outcomes[candidate.row_id] = [Kept(candidate.kept)]
        for candidate, ids in zip(to_render, token_ids, strict=True):
            if len(ids) >= self.max_model_len:
                error = Errored(
                    "prompt",
                    f"prompt has {len(ids)} tokens; engine.max_model_len is {self.max_model_len}",
                )
                pending.outcomes[candidate.row_id] = [error] * candidate.error_rows()
                continue
            pending.requests.append(
                EngineRequest(
                    request_id=candidate.row_id,
                    prompt_token_ids=list(ids),
                    sampling=self.sampling
                    if candidate.constraint is None
                    else dataclasses.replace(self.sampling, constraint=candidate.constraint),
                    seed=request_seed(self.seed, candidate.row_id),
                    max_tokens=min(
                        candidate.max_tokens or self.sampling.max_tokens,
                        self.max_model_len - len(ids),
                    ),
                    messages=None
                    if candidate.raw_prompt is not None
                    else tuple(candidate.messages or ()),
                )
            )
        return pending


def failed_unit(method: Method, unit: WorkUnit, docs: list[Document], reason: str) -> PendingUnit:
    """The documents' candidates, each an error row with `reason` (or its own input error),
    with nothing rendered: what a row that kept killing replicas becomes."""
    candidates = [c for doc in docs for c in method.expand(doc)]
    counted = len(docs) if method.counts_input_documents else 0
    pending = PendingUnit(unit, candidates, [], input_documents=counted)
    for candidate in candidates:
        if candidate.error is not None:
            error = Errored(candidate.error_stage, candidate.error)
        elif candidate.dropped is not None:
            pending.outcomes[candidate.row_id] = [
                Dropped(candidate.dropped)
            ] * candidate.error_rows()
            continue
        elif candidate.kept is not None:  # never sent: no request of it can have failed
            pending.outcomes[candidate.row_id] = [Kept(candidate.kept)]
            continue
        else:
            error = Errored("generate", reason)
        pending.outcomes[candidate.row_id] = [error] * candidate.error_rows()
    return pending


NN_FIELD = pa.field("nn_similarity", pa.float32())


@dataclass
class UnitRows:
    """What a unit (or a slice of one) writes: its rows, error rows and accounting."""

    rows: list[dict[str, Any]]
    errors: list[dict[str, Any]]
    stats: UnitStats
    kept_ids: list[str]  # ids of the rows the diversity decision kept (with a decision)
    row_ids: list[str] = field(default_factory=list)  # the id of each row in `rows`
    # with `keep_dropped`: each dropped row's id, source_id, filter and completion
    dropped: list[dict[str, Any]] = field(default_factory=list)
    splits: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # kept rows by split


def completion_of(candidate: Candidate, result: EngineResult | None, index: int) -> str | None:
    """The completion row `index` of `candidate` came from: its own sample's where the
    candidate asked for `width` samples, the whole completion where its rows share one
    (`exact_width` False); None where no completion came (dropped or failed before)."""
    if result is None or result.error is not None:
        return None
    if candidate.width > 1 and candidate.exact_width:
        samples = result.all_samples()
        return samples[index][0] if index < len(samples) else None
    return result.text


def filtered_text(row: dict[str, Any], column: str | None) -> str | None:
    """The text the diversity filter compares for a row; None when the row has none."""
    text = row.get(column or "")
    return text if isinstance(text, str) and text.strip() else None


def collect_rows(
    pending: PendingUnit,
    annotate_nn: bool,
    diversity_column: str | None = None,
    decision: BatchDecision | None = None,
    keep_dropped: bool = False,
    splits: tuple[str, ...] = (),
) -> UnitRows:
    """Rows in candidate order, each outcome counted once. `annotate_nn` adds `nn_similarity`
    (from the candidate's fields, or from `decision`, which also drops the rows it rejects).
    Rows kept into a split go to `splits` (one list per declared split, empty too), not
    through the diversity decision; `keep_dropped` keeps each dropped row with its completion."""
    stats = UnitStats(input_documents=pending.input_documents)
    rows: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    kept_ids: list[str] = []
    row_ids: list[str] = []
    dropped: list[dict[str, Any]] = []
    split_rows: dict[str, list[dict[str, Any]]] = {split: [] for split in splits}
    filtered = 0  # position among the rows the diversity filter decided on
    for candidate in pending.candidates:
        stats.tallies.update(candidate.tallies)
        stats.rows_in += len(pending.outcomes[candidate.row_id])
        result = pending.results.get(candidate.row_id)
        if result is not None:
            stats.input_tokens += result.n_input_tokens
            stats.output_tokens += result.n_output_tokens
            stats.retries.update(result.retries)
        for index, outcome in enumerate(pending.outcomes[candidate.row_id]):
            if isinstance(outcome, Kept) and outcome.split is not None:
                split_rows[outcome.split].append(outcome.row)
                stats.rows_out += 1
                stats.splits[outcome.split] += 1
                stats.observe(outcome.row)
                continue
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
                row_ids.append(outcome.row.get("id") or candidate.sample_id(index))
                stats.rows_out += 1
                stats.observe(outcome.row)
            elif isinstance(outcome, Dropped):
                stats.dropped[outcome.filter_name] += 1
                if keep_dropped:
                    dropped.append(
                        {
                            "id": candidate.sample_id(index),
                            "source_id": candidate.source_id,
                            "filter": outcome.filter_name,
                            "completion": completion_of(candidate, result, index),
                        }
                    )
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
    return UnitRows(rows, errors, stats, kept_ids, row_ids, dropped, split_rows)
