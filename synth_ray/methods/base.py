"""What a method is: input document -> candidate rows (with chat messages) -> output rows.

A method is plain Python with no Ray in it, so it can be tested alone. The runtime calls
`expand` on each input document, renders each candidate's messages, sends them to a generator,
and hands the completion back to `finish`, which keeps, drops (naming the filter) or errors the
row. Every candidate ends as exactly one of the three, which is what makes
`rows_in = rows_out + rows_dropped + rows_errored` hold.
"""

from __future__ import annotations

import dataclasses
import hashlib
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from synth_ray.engine.requests import Constraint, EngineResult, SamplingSpec
from synth_ray.io.inputs import Document


def row_id(*parts: object) -> str:
    """Deterministic 16-hex-digit id from the parts that make a row unique."""
    return hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).hexdigest()[:16]


@dataclass
class Candidate:
    """Planned output rows from one prompt: `width` of them (one per sample when the method
    asks for n samples), or an error found before generation. The prompt is `messages`
    rendered with the model's chat template, or `raw_prompt` as it is."""

    row_id: str
    source_id: str
    fields: dict[str, Any] = field(default_factory=dict)
    messages: list[dict[str, str]] | None = None
    # the prompt as the engine sees it, no chat template applied (Magpie's pre-query prefix,
    # a base model's completion prompt); when set, `messages` is ignored
    raw_prompt: str | None = None
    error: str | None = None
    error_stage: str = "input"
    # dropped before any request, by this filter's name (a question that cannot be made):
    # its `width` rows are counted dropped and nothing is sent to the engine
    dropped: str | None = None
    # kept as it is, with no request: a row an earlier stage settled, carried to a later one
    # (a conversation that ended before this turn); `width` must be 1
    kept: dict[str, Any] | None = None
    # labels this candidate is counted under in the unit's stats (`UnitStats.tallies`)
    tallies: tuple[str, ...] = ()
    width: int = 1
    # False: `width` is an upper bound, and `finish` returns from 1 to `width` outcomes (Self-
    # Instruct's up to 5 instances in one completion); an error is then one row, not `width`
    exact_width: bool = True
    # this prompt's own output cap (a per-row length budget); None: `sampling.max_tokens`.
    # Either way it is capped so prompt + output fit the context
    max_tokens: int | None = None
    # this prompt's own structured-outputs constraint, in place of its stage's (Self-Instruct
    # decodes a classification task's instances into another format than the others')
    constraint: Constraint | None = None

    def error_rows(self) -> int:
        """How many rows an error before or during generation stands for."""
        return self.width if self.exact_width else 1

    def sample_id(self, index: int) -> str:
        """Id of the row for sample `index`: the candidate's own id for a single sample."""
        return self.row_id if self.width == 1 else row_id(self.row_id, "sample", index)


@dataclass
class Kept:
    """A row kept: into `data/` (the dataset's default config), or with `split` set into the
    output's folder `<split>/` (its own dataset-card config, same schema), which must be one
    of the method's `splits`; otherwise the row becomes a `parse` error."""

    row: dict[str, Any]
    split: str | None = None


@dataclass
class Dropped:
    filter_name: str


@dataclass
class Errored:
    stage: str
    error: str


Outcome = Kept | Dropped | Errored


class Method(ABC):
    name: str
    schema: pa.Schema
    # False for a stage that re-asks rows already counted (STaR's rationalize stage), so
    # `input_documents` keeps counting input rows only.
    counts_input_documents: bool = True
    # the output column the diversity filter compares (None: this method's rows are not
    # filtered at commit; a driver may filter them itself, as Self-Instruct does)
    diversity_column: str | None = None
    # named splits this method may keep rows into (`Kept(row, split=...)`), besides data/:
    # each unit writes a shard for each, empty too, so every record names the split and a
    # reader finds its columns; names are checked by `check_split_name` (lowercase, not an
    # output folder) before any work. Split rows skip the diversity filter
    splits: tuple[str, ...] = ()

    @abstractmethod
    def estimate_rows(self, doc: Document) -> int:
        """Rough candidates per document, used only to size work units (never for correctness)."""

    @abstractmethod
    def expand(self, doc: Document) -> list[Candidate]:
        """Candidates for one document; a bad document gives one candidate with `error` set."""

    @abstractmethod
    def finish(self, candidate: Candidate, result: EngineResult) -> Outcome | list[Outcome]:
        """Turn a completion into an output row (or one outcome per sample when the candidate's
        width is above 1), or say why it is dropped or errored."""

    def prepare_finish(  # noqa: B027
        self, pairs: list[tuple[Candidate, EngineResult]], progress: Callable[[], None]
    ) -> None:
        """Called once per slice, with all its completions, before `finish` is called on each:
        a method whose check is slow per row (running generated code in the sandbox) runs all
        of them at once here, in parallel, and its `finish` reads the verdicts. Call
        `progress()` after each check: a replica whose engine is idle while it checks would
        otherwise look stalled. An exception here fails the slice (and the job) with its
        message: it is the checker that failed, not a row. Default: nothing."""

    def sampling_overrides(self) -> dict[str, Any]:
        """Changes to the job's sampling for this method's requests (e.g. n samples)."""
        return {}

    def stage_sampling(self, job: SamplingSpec) -> SamplingSpec:
        """The sampling this method's requests use, given the job's `sampling` section: the
        job's with `sampling_overrides` applied, unless a method (a greedy check, a stage
        with its paper's own settings) decides otherwise."""
        return dataclasses.replace(job, **self.sampling_overrides())

    @staticmethod
    def token_fields(result: EngineResult) -> dict[str, Any]:
        return {
            "n_input_tokens": result.n_input_tokens,
            "n_output_tokens": result.n_output_tokens,
            "finish_reason": result.finish_reason,
        }


TOKEN_COLUMNS = [
    pa.field("n_input_tokens", pa.int32()),
    pa.field("n_output_tokens", pa.int32()),
    pa.field("finish_reason", pa.string()),
]
