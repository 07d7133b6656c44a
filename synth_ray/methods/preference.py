"""Method `preference`: n responses per prompt, rated together by an LLM judge, then one
chosen/rejected pair per prompt with both ratings (UltraFeedback; Self-Rewarding's pairing).

    synth-ray run configs/preference.yaml

Two stages, each committed exactly once. `responses` (in stages/): one request per prompt with
vLLM's `n` at the job's sampling, one row per response. `pairs` (the output): one rating request
per prompt showing its responses in a shuffled order (UltraFeedback shuffles against position
bias; the order is seeded by sampling.seed and the prompt's id), with the paper's system prompt
and aspect rubric, greedy; each response gets "Rating: 1-5". The chosen response is the highest
rated, the rejected the lowest (Self-Rewarding, Yuan et al. 2024) or, with `rejected: random`,
a random lower-rated one (UltraFeedback-binarized, Tunstall et al. 2023). Dropped, by reason:
`tie` (every rated response equal), `too_few_rated` (fewer than 2 ratings parsed),
`identical_responses` (the rated responses are one text). Prompts whose responses failed to
generate count as `too_few_responses`. The rating stage goes by reference: each of its units
covers `n` responses units, whose committed rows its replica reads (`pair_documents`), so the
driver holds no response. With `preference.judge_engine` (an engine section) the
rating stage runs on that model: the generator's replicas stop and the judge's start between
the stages. Row id = hash(source_id, "pair").
"""

from __future__ import annotations

import dataclasses
import functools
import random
from collections import defaultdict
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
from pydantic import Field, model_validator

from synth_ray.config import EngineConfig, JobConfig
from synth_ray.engine.requests import EngineResult, SamplingSpec
from synth_ray.io.inputs import Document
from synth_ray.io.output_store import STAGES_DIR
from synth_ray.methods.base import TOKEN_COLUMNS, Candidate, Dropped, Kept, Method, Outcome, row_id
from synth_ray.methods.preference_prompts import (
    parse_ratings,
    rating_prompt,
    system_prompt,
)
from synth_ray.methods.registry import MethodSpec, register
from synth_ray.methods.stages import JobContext
from synth_ray.sections import Section
from synth_ray.stats import UnitStats


class PreferenceConfig(Section):
    n: int = Field(4, ge=2, le=8, description="Responses per prompt (UltraFeedback: 4).")
    aspect: Literal["instruction_following", "helpfulness"] = Field(
        "instruction_following", description="The UltraFeedback rubric the judge rates with."
    )
    rejected: Literal["lowest", "random"] = Field(
        "lowest",
        description="lowest: the lowest-rated response (Self-Rewarding); random: any lower-rated "
        "one (UltraFeedback-binarized).",
    )
    system_prompt: str | None = Field(
        None, description="Sent before each prompt when responses are generated."
    )
    judge_max_tokens: int = Field(
        500, ge=16, description="Tokens of the rating answer (UltraFeedback: 500)."
    )
    judge_engine: EngineConfig | None = Field(
        None,
        description="An engine section for the rating stage (a stronger judge); None: the "
        "job's engine rates the responses it wrote.",
    )

    @model_validator(mode="after")
    def _judge_model_path_absolute(self) -> PreferenceConfig:
        """A local judge model folder, absolute now: a submitted job runs in another folder."""
        model = self.judge_engine.model if self.judge_engine else None
        if model and not model.startswith("embedded:") and Path(model).expanduser().exists():
            self.judge_engine.__dict__["model"] = str(Path(model).expanduser().resolve())
        return self

    def check_in_job(self, job: Any) -> None:
        if job.sampling.temperature == 0:
            raise ValueError(
                "sampling.temperature: 0 makes the n responses one text; sample (e.g. 0.8)"
            )
        if job.filters.diversity.enabled:
            raise ValueError("filters.diversity.enabled: not supported for preference pairs")


class Responses(Method):
    """Stage 1: `n` sampled responses per prompt, one row each."""

    name = "preference_responses"
    schema = pa.schema(
        [
            pa.field("id", pa.string()),
            pa.field("source_id", pa.string()),
            pa.field("sample", pa.int32()),
            pa.field("prompt", pa.string()),
            pa.field("response", pa.string()),
            *TOKEN_COLUMNS,
        ]
    )

    def __init__(self, config: PreferenceConfig) -> None:
        self.config = config

    def estimate_rows(self, doc: Document) -> int:
        return self.config.n

    def sampling_overrides(self) -> dict[str, Any]:
        return {"n": self.config.n}

    def expand(self, doc: Document) -> list[Candidate]:
        rid = row_id(doc.source_id, "responses")
        n = self.config.n
        if doc.error is not None:
            return [Candidate(rid, doc.source_id, error=doc.error, width=n)]
        if not doc.text or not doc.text.strip():
            return [Candidate(rid, doc.source_id, error="empty prompt", width=n)]
        messages = [{"role": "user", "content": doc.text}]
        if self.config.system_prompt:
            messages.insert(0, {"role": "system", "content": self.config.system_prompt})
        return [Candidate(rid, doc.source_id, {"prompt": doc.text}, messages=messages, width=n)]

    def finish(self, candidate: Candidate, result: EngineResult) -> list[Outcome]:
        return [
            Kept(
                {
                    "id": candidate.sample_id(i),
                    "source_id": candidate.source_id,
                    "sample": i,
                    "prompt": candidate.fields["prompt"],
                    "response": text,
                    "n_input_tokens": result.n_input_tokens if i == 0 else 0,
                    "n_output_tokens": n_tokens,
                    "finish_reason": why,
                }
            )
            for i, (text, n_tokens, why) in enumerate(result.all_samples())
        ]


class RatePairs(Method):
    """Stage 2: one rating request per prompt; its answer becomes a chosen/rejected pair."""

    name = "preference"
    schema = pa.schema(
        [
            pa.field("id", pa.string()),
            pa.field("source_id", pa.string()),
            pa.field("prompt", pa.string()),
            pa.field("chosen", pa.string()),
            pa.field("rejected", pa.string()),
            pa.field("chosen_rating", pa.float64()),
            pa.field("rejected_rating", pa.float64()),
            pa.field("ratings", pa.list_(pa.float64())),
            pa.field("responses", pa.list_(pa.string())),
            pa.field("rationale", pa.string()),
            pa.field("aspect", pa.string()),
            pa.field("response_model", pa.string()),
            pa.field("judge_model", pa.string()),
            *TOKEN_COLUMNS,
        ]
    )

    def __init__(
        self, config: PreferenceConfig, response_model: str, judge_model: str, seed: int
    ) -> None:
        self.config = config
        self.response_model = response_model
        self.judge_model = judge_model
        self.seed = seed

    def estimate_rows(self, doc: Document) -> int:
        return 1

    def stage_sampling(self, job: SamplingSpec) -> SamplingSpec:
        """Greedy, as UltraFeedback rated (temperature 0), one answer."""
        return dataclasses.replace(
            job, temperature=0.0, top_p=1.0, n=1, max_tokens=self.config.judge_max_tokens
        )

    def order(self, source_id: str, count: int) -> list[int]:
        """The shown order of a prompt's responses: shuffled, the same on every run."""
        shown = list(range(count))
        random.Random(f"{self.seed}:{source_id}:order").shuffle(shown)
        return shown

    def expand(self, doc: Document) -> list[Candidate]:
        responses: list[str] = list(doc.extra["responses"])  # type: ignore[call-overload]
        shown = self.order(doc.source_id, len(responses))
        user = rating_prompt(self.config.aspect, doc.text or "", [responses[i] for i in shown])
        messages = [
            {"role": "system", "content": system_prompt(len(responses))},
            {"role": "user", "content": user},
        ]
        fields = {"prompt": doc.text, "responses": responses, "shown": shown}
        return [Candidate(row_id(doc.source_id, "pair"), doc.source_id, fields, messages)]

    def finish(self, candidate: Candidate, result: EngineResult) -> Outcome:
        responses: list[str] = candidate.fields["responses"]
        shown: list[int] = candidate.fields["shown"]
        ratings: list[float | None] = [None] * len(responses)
        for position, rating in enumerate(parse_ratings(result.text, len(responses))):
            ratings[shown[position]] = rating
        rated = [i for i, r in enumerate(ratings) if r is not None]
        if len(rated) < 2:
            return Dropped("too_few_rated")
        best = max(ratings[i] for i in rated)  # type: ignore[type-var]
        worst = min(ratings[i] for i in rated)  # type: ignore[type-var]
        if best == worst:
            return Dropped("tie")
        chosen = min(i for i in rated if ratings[i] == best)
        lower = [i for i in rated if ratings[i] < best]  # type: ignore[operator]
        if self.config.rejected == "lowest":
            rejected = min(i for i in rated if ratings[i] == worst)
        else:
            rejected = random.Random(f"{self.seed}:{candidate.source_id}:rejected").choice(lower)
        if responses[chosen].strip() == responses[rejected].strip():
            return Dropped("identical_responses")
        return Kept(
            {
                "id": candidate.row_id,
                "source_id": candidate.source_id,
                "prompt": candidate.fields["prompt"],
                "chosen": responses[chosen],
                "rejected": responses[rejected],
                "chosen_rating": ratings[chosen],
                "rejected_rating": ratings[rejected],
                "ratings": ratings,
                "responses": responses,
                "rationale": result.text.strip(),
                "aspect": self.config.aspect,
                "response_model": self.response_model,
                "judge_model": self.judge_model,
                **self.token_fields(result),
            }
        )


RESPONSE_COLUMNS = ("source_id", "sample", "prompt", "response")


def pair_documents(table: pa.Table, first_ordinal: int, n: int) -> list[Document]:
    """The rating stage's documents from a unit's committed responses (the replica builds
    them: runtime `run_derived_stage`): one per prompt with all `n` responses, in the order
    the prompts come, numbered from `first_ordinal`. A prompt with fewer responses (errors)
    gets none: the driver counts those from the two stages' totals."""
    by_prompt: dict[str, list[tuple[int, str, str]]] = defaultdict(list)
    columns = [table.column(c).to_pylist() for c in RESPONSE_COLUMNS]
    for source_id, sample, prompt, response in zip(*columns, strict=True):
        by_prompt[source_id].append((sample, prompt, response))
    docs = []
    for source_id, got in by_prompt.items():
        if len(got) < n:
            continue
        got.sort(key=lambda r: r[0])
        responses = [response for _, _, response in got]
        ordinal = first_ordinal + len(docs)
        docs.append(Document(ordinal, source_id, got[0][1], extra={"responses": responses}))
    return docs


def run_preference(ctx: JobContext) -> dict[str, Any]:
    assert ctx.docs is not None
    config = ctx.config.section_as(PreferenceConfig)
    sample = Responses(config)
    units = ctx.runner.plan(ctx.docs, sample, f"{ctx.fingerprint}/responses", ctx.id_column)
    ctx.prepare()
    work = ctx.store.child(STAGES_DIR)
    work.prepare(f"{ctx.fingerprint}/stages", {"stages_of": ctx.fingerprint}, overwrite=False)
    ctx.runner.execute(work, ctx.docs, sample, units, stage="responses")
    judge_model = ctx.model_name
    if config.judge_engine is not None:  # the generator's replicas make way for the judge's
        judge_model = ctx.runner.use_engine(config.judge_engine)
    rate = RatePairs(config, ctx.model_name, judge_model, ctx.config.sampling.seed)
    ctx.runner.run_derived_stage(
        "pairs",
        ctx.store,
        work,
        units,
        "responses",
        RESPONSE_COLUMNS,
        functools.partial(pair_documents, n=config.n),
        rate,
        ctx.fingerprint,
        group=config.n,  # a responses unit holds rows_per_shard / n prompts
    )
    responses = work.totals("responses")
    prompts = responses.input_documents
    short = prompts - ctx.store.totals("pairs").input_documents
    skipped = UnitStats(rows_in=short)
    if short:
        skipped.dropped["too_few_responses"] = short
    return ctx.store.write_stats(
        units_total=ctx.runner.summary.units_total,
        extra=skipped,
        sections={
            "preference": {
                "prompts": prompts,
                "responses_stage": responses.to_dict(),
                "aspect": config.aspect,
            }
        },
    )


def preference_papers(config: JobConfig) -> list[str]:
    pairing = config.section_as(PreferenceConfig).rejected
    return [
        "cui2024ultrafeedback",
        "yuan2024selfrewarding" if pairing == "lowest" else "tunstall2023zephyr",
    ]


register(
    MethodSpec("preference", run=run_preference, section=PreferenceConfig, papers=preference_papers)
)
