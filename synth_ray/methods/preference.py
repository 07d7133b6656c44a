"""Method `preference`: n responses per prompt, rated together by an LLM judge, then one
chosen/rejected pair per prompt with both ratings (UltraFeedback; Self-Rewarding's pairing).

    synth-ray run configs/preference.yaml

Stages, each committed exactly once. `responses` (in stages/): one request per response, each
under a system prompt of a principle drawn for it (UltraFeedback's principles and mixes,
preference_principles.py), at the job's sampling. With `preference.generators` (engine
sections) each prompt's `n` responses come from as many models of that pool, drawn per prompt
(distinct models while the pool has `n`, as UltraFeedback drew 4 of its 17): one `responses`
stage per model, in `stages/generator-K/`, the replicas of one model stopping before the
next's start; without it the job's model writes all `n`. Which model and principle writes
response i of a prompt is drawn from sampling.seed and the prompt's id, so a resume redraws
the same. `pairs` (the output): one rating request per prompt showing its responses in a
shuffled order (UltraFeedback shuffles against position bias; seeded the same way), with the
paper's system prompt and aspect template, greedy. The chosen response is the highest rated,
the rejected the lowest (Self-Rewarding, Yuan et al. 2024) or, with `rejected: random`, a
random lower-rated one (UltraFeedback-binarized, Tunstall et al. 2023). A response cut by
max_tokens is rated like any other, as UltraFeedback's were; rows record each response's
`finish_reasons`. Dropped, by reason: `tie` (every rated response equal), `too_few_rated`
(fewer than 2 ratings parsed), `identical_responses` (the rated responses are one text).
Prompts whose responses failed to generate count as `too_few_responses`. The rating stage goes
by reference: each of its units is an input unit, whose rows and whose committed responses
(of every generator) its replica reads (`pair_documents`), so the driver holds no response.
The judge is the job's engine, or `preference.judge_engine`. Row id = hash(source_id, "pair").
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

from synth_ray.config import (
    DEFAULT_POOL,
    EngineConfig,
    JobConfig,
    PoolConfig,
    check_pool_declared,
)
from synth_ray.engine.requests import Constraint, EngineResult, SamplingSpec
from synth_ray.io.inputs import Document
from synth_ray.io.output_store import STAGES_DIR, OutputStore
from synth_ray.methods.base import TOKEN_COLUMNS, Candidate, Dropped, Kept, Method, Outcome, row_id
from synth_ray.methods.preference_principles import MIXES, draw_principle
from synth_ray.methods.preference_prompts import (
    TEMPLATES,
    TYPED_ASPECTS,
    answer_regex,
    parse_annotations,
    rating_prompt,
    system_prompt,
)
from synth_ray.methods.registry import MethodSpec, register
from synth_ray.methods.stages import JobContext, Together
from synth_ray.sections import ADDED, Section
from synth_ray.stats import UnitStats

Aspect = Literal["instruction_following", "honesty", "truthfulness", "helpfulness"]
PrincipleMix = Literal["chat", "flan", "evol_instruct", "truthful_qa", "none"]
assert set(Aspect.__args__) == set(TEMPLATES) and set(PrincipleMix.__args__) == set(MIXES)


class PreferenceConfig(Section):
    n: int = Field(4, ge=2, le=8, description="Responses per prompt (UltraFeedback: 4).")
    aspect: Aspect = Field(
        "instruction_following", description="The UltraFeedback template the judge rates with."
    )
    rejected: Literal["lowest", "random"] = Field(
        "lowest",
        description="lowest: the lowest-rated response (Self-Rewarding); random: any lower-rated "
        "one (UltraFeedback-binarized).",
    )
    principles: PrincipleMix = Field(
        "chat",
        description="UltraFeedback's mix of principles, one drawn per response, whose system "
        "prompt the response is written under (chat: its ShareGPT/UltraChat mix); none: no "
        "principle.",
    )
    system_prompt: str | None = Field(
        None,
        description="Sent before each prompt when responses are generated, the principle's "
        "system prompt after it.",
    )
    judge_max_tokens: int = Field(
        500, ge=16, description="Tokens of the rating answer (UltraFeedback: 500)."
    )
    constrain: bool = Field(
        False,
        description="Decode each rating answer into the paper's block format (structured "
        "outputs): every text gets a rating its parser reads, with rationales cut to fit "
        "judge_max_tokens. A departure from the paper, whose GPT-4 wrote freely; for small "
        "judges that do not follow the format.",
        json_schema_extra=ADDED,
    )
    generators: list[EngineConfig] | None = Field(
        None,
        min_length=1,
        description="Engine sections of the models that write the responses, each prompt's "
        "drawn from them; None: the job's engine writes them all.",
    )
    judge_engine: EngineConfig | None = Field(
        None,
        description="An engine section for the rating stage (a stronger judge); None: the "
        "job's engine rates the responses.",
    )
    generator_pools: list[str] | None = Field(
        None,
        min_length=1,
        description="Pools (of the job's `pools`, or `default`) whose models write the "
        "responses, in place of `generators`; each runs beside the judge's.",
        json_schema_extra=ADDED,
    )
    judge_pool: str | None = Field(
        None,
        description="The pool (of the job's `pools`) that rates, in place of `judge_engine`: "
        "it rates each unit's responses as soon as they are committed.",
        json_schema_extra=ADDED,
    )

    @model_validator(mode="after")
    def _constrained_answer_fits(self) -> PreferenceConfig:
        if self.constrain:
            try:
                answer_regex(self.aspect, self.n, self.judge_max_tokens)
            except ValueError as err:
                raise ValueError(f"judge_max_tokens: {err}") from None
        return self

    @model_validator(mode="after")
    def _model_paths_absolute(self) -> PreferenceConfig:
        """Local model folders, absolute now: a submitted job runs in another folder."""
        for engine in [*(self.generators or []), self.judge_engine]:
            model = engine.model if engine else None
            if model and not model.startswith("embedded:") and Path(model).expanduser().exists():
                engine.__dict__["model"] = str(Path(model).expanduser().resolve())
        return self

    def check_in_job(self, job: Any) -> None:
        if self.generators is not None and self.generator_pools is not None:
            raise ValueError("preference.generator_pools: give it or generators, not both")
        if self.judge_engine is not None and self.judge_pool is not None:
            raise ValueError("preference.judge_pool: give it or judge_engine, not both")
        for key, name in [("judge_pool", self.judge_pool), *(
            ("generator_pools", pool) for pool in self.generator_pools or ()
        )]:  # fmt: skip
            check_pool_declared(f"preference.{key}", name, job)
        if job.sampling.temperature == 0:
            raise ValueError(
                "sampling.temperature: 0 makes the n responses one text; sample (e.g. 1.0)"
            )
        if job.filters.diversity.enabled:
            raise ValueError("filters.diversity.enabled: not supported for preference pairs")


@dataclasses.dataclass(frozen=True)
class Completion:
    """Who writes one response of a prompt: the pool's generator `generator`, under the
    system prompt of `principle` (None: none drawn)."""

    generator: int
    principle: str | None
    principle_prompt: str | None


def draw_generators(rng: random.Random, n: int, pool: int) -> list[int]:
    """The generator of each of `n` responses: distinct ones while the pool has `n` (as
    UltraFeedback drew 4 models of its pool per prompt), else the pool again and again, each
    pass in a new order, so every model writes n/pool of them, give or take one."""
    drawn: list[int] = []
    while len(drawn) < n:
        drawn.extend(rng.sample(range(pool), min(pool, n - len(drawn))))
    return drawn


def completion_plan(seed: Any, source_id: str, n: int, pool: int, mix: str) -> list[Completion]:
    """Response i's generator and principle, the same on every run for this prompt."""
    rng = random.Random(f"{seed}:{source_id}:completions")
    plan = []
    for generator in draw_generators(rng, n, pool):
        drawn = draw_principle(rng, mix)
        plan.append(Completion(generator, *(drawn or (None, None))))
    return plan


class Responses(Method):
    """Stage 1, one per generator: the responses this generator writes, one request and one
    row each."""

    name = "preference_responses"
    schema = pa.schema(
        [
            pa.field("id", pa.string()),
            pa.field("source_id", pa.string()),
            pa.field("sample", pa.int32()),
            pa.field("prompt", pa.string()),
            pa.field("response", pa.string()),
            pa.field("model", pa.string()),
            pa.field("principle", pa.string()),
            pa.field("system_prompt", pa.string()),
            *TOKEN_COLUMNS,
        ]
    )

    def __init__(
        self,
        config: PreferenceConfig,
        seed: Any,
        model: str,
        generator: int = 0,
        pool: int = 1,
    ) -> None:
        self.config = config
        self.seed = seed
        self.model = model
        self.generator = generator
        self.pool = pool
        # every generator's stage reads every prompt: the first counts them
        self.counts_input_documents = generator == 0

    def estimate_rows(self, doc: Document) -> int:
        """1: the units are sized by the output's rows, one pair per prompt (the rating
        stage's units are these units)."""
        return 1

    def mine(self, doc: Document) -> list[tuple[int, Completion]]:
        """The prompt's responses this generator writes: (response index, completion)."""
        config = self.config
        plan = completion_plan(self.seed, doc.source_id, config.n, self.pool, config.principles)
        return [(i, c) for i, c in enumerate(plan) if c.generator == self.generator]

    def expand(self, doc: Document) -> list[Candidate]:
        mine = self.mine(doc)
        if not mine:
            return []
        rid = row_id(doc.source_id, "responses")
        if doc.error is not None:
            return [Candidate(rid, doc.source_id, error=doc.error, width=len(mine))]
        if not doc.text or not doc.text.strip():
            return [Candidate(rid, doc.source_id, error="empty prompt", width=len(mine))]
        candidates = []
        for i, completion in mine:
            parts = (self.config.system_prompt, completion.principle_prompt)
            system = " ".join(part for part in parts if part)
            messages = [{"role": "user", "content": doc.text}]
            if system:
                messages.insert(0, {"role": "system", "content": system})
            fields = {
                "sample": i,
                "prompt": doc.text,
                "principle": completion.principle,
                "system_prompt": system or None,
            }
            candidates.append(
                Candidate(row_id(doc.source_id, "response", i), doc.source_id, fields, messages)
            )
        return candidates

    def finish(self, candidate: Candidate, result: EngineResult) -> Outcome:
        return Kept(
            {
                "id": candidate.row_id,
                "source_id": candidate.source_id,
                **candidate.fields,
                "response": result.text,
                "model": self.model,
                **self.token_fields(result),
            }
        )


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
            pa.field("types", pa.list_(pa.list_(pa.int32()))),
            pa.field("responses", pa.list_(pa.string())),
            pa.field("models", pa.list_(pa.string())),
            pa.field("principles", pa.list_(pa.string())),
            pa.field("finish_reasons", pa.list_(pa.string())),
            pa.field("chosen_model", pa.string()),
            pa.field("rejected_model", pa.string()),
            pa.field("rationale", pa.string()),
            pa.field("aspect", pa.string()),
            pa.field("response_model", pa.string()),
            pa.field("judge_model", pa.string()),
            *TOKEN_COLUMNS,
        ]
    )

    def __init__(self, config: PreferenceConfig, judge_model: str, seed: Any) -> None:
        self.config = config
        self.judge_model = judge_model
        self.seed = seed

    def estimate_rows(self, doc: Document) -> int:
        return 1

    def stage_sampling(self, job: SamplingSpec) -> SamplingSpec:
        """Greedy, as UltraFeedback rated (temperature 0), one answer; with
        `preference.constrain`, decoded into the paper's block format."""
        config = self.config
        constraint = None
        if config.constrain:
            regex = answer_regex(config.aspect, config.n, config.judge_max_tokens)
            constraint = Constraint("regex", regex)
        return dataclasses.replace(
            job,
            temperature=0.0,
            top_p=1.0,
            n=1,
            max_tokens=config.judge_max_tokens,
            constraint=constraint,
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
        fields = {**doc.extra, "prompt": doc.text, "shown": shown}
        return [Candidate(row_id(doc.source_id, "pair"), doc.source_id, fields, messages)]

    def finish(self, candidate: Candidate, result: EngineResult) -> Outcome:
        fields = candidate.fields
        responses: list[str] = fields["responses"]
        models: list[str] = fields["models"]
        shown: list[int] = fields["shown"]
        ratings: list[float | None] = [None] * len(responses)
        types: list[list[int] | None] = [None] * len(responses)
        annotations = parse_annotations(result.text, len(responses), self.config.aspect)
        for position, annotation in enumerate(annotations):
            ratings[shown[position]] = annotation.rating
            if annotation.types is not None:
                types[shown[position]] = list(annotation.types)
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
                "prompt": fields["prompt"],
                "chosen": responses[chosen],
                "rejected": responses[rejected],
                "chosen_rating": ratings[chosen],
                "rejected_rating": ratings[rejected],
                "ratings": ratings,
                "types": types if self.config.aspect in TYPED_ASPECTS else None,
                "responses": responses,
                "models": models,
                "principles": fields["principles"],
                "finish_reasons": fields["finish_reasons"],
                "chosen_model": models[chosen],
                "rejected_model": models[rejected],
                "rationale": result.text.strip(),
                "aspect": self.config.aspect,
                "response_model": ", ".join(dict.fromkeys(models)),
                "judge_model": self.judge_model,
                **self.token_fields(result),
            }
        )


RESPONSE_COLUMNS = ("source_id", "sample", "response", "model", "principle", "finish_reason")


def pair_documents(docs: list[Document], table: pa.Table, n: int) -> list[Document]:
    """The rating stage's documents, built on the replica (runtime `run_joined_stage`) from
    an input unit's rows and the responses every generator committed for them: one per prompt
    with all `n` responses (in response order), each with its model, principle and finish
    reason. A prompt with fewer responses (errors) gets none: the driver counts those from
    the stages' totals."""
    by_prompt: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
    columns = [table.column(c).to_pylist() for c in RESPONSE_COLUMNS]
    for source_id, *rest in zip(*columns, strict=True):
        by_prompt[source_id].append(tuple(rest))
    out = []
    for doc in docs:
        got = sorted(by_prompt.get(doc.source_id, []), key=lambda r: r[0])
        if len(got) < n:
            continue
        _, responses, models, principles, finish_reasons = (list(c) for c in zip(*got, strict=True))
        extra = {
            "responses": responses,
            "models": models,
            "principles": principles,
            "finish_reasons": finish_reasons,
        }
        out.append(Document(doc.ordinal, doc.source_id, doc.text, extra=extra))
    return out


def inline_pools(job: JobConfig) -> dict[str, PoolConfig]:
    """The pools `generators` and `judge_engine` name inline, sized like the job's own; an
    engine equal to the job's is the pool `default`, and equal engines share one pool."""
    pools: dict[str, PoolConfig] = {}
    for name, engine in _inline_engines(job):
        if name != DEFAULT_POOL and name not in pools:
            pools[name] = PoolConfig(engine=engine, **job.resources.model_dump())
    return pools


def _inline_engines(job: JobConfig) -> list[tuple[str, EngineConfig]]:
    """(pool name, engine) of each inline engine: generators in order, then the judge."""
    config = job.section_as(PreferenceConfig)
    named: list[tuple[str, EngineConfig]] = []
    engines = [*(config.generators or []), *([config.judge_engine] if config.judge_engine else [])]
    for engine in engines:
        same = next((name for name, known in named if known == engine), None)
        if engine == job.engine:
            same = DEFAULT_POOL
        named.append((same or f"preference-engine-{len(named)}", engine))
    return named


def generator_pools(job: JobConfig) -> list[str]:
    """The pool of each generator (one: the job's own when none is named)."""
    config = job.section_as(PreferenceConfig)
    if config.generator_pools is not None:
        return list(config.generator_pools)
    if config.generators is not None:
        return [name for name, _ in _inline_engines(job)[: len(config.generators)]]
    return [DEFAULT_POOL]


def judge_pool(job: JobConfig) -> str:
    config = job.section_as(PreferenceConfig)
    if config.judge_pool is not None:
        return config.judge_pool
    if config.judge_engine is not None:
        return _inline_engines(job)[-1][0]
    return DEFAULT_POOL


def run_preference(ctx: JobContext) -> dict[str, Any]:
    """The generators' pools write responses while the judge's pool rates each unit's as soon
    as they are committed (`run_together`); on one pool too, sharing its replicas."""
    assert ctx.docs is not None
    config = ctx.config.section_as(PreferenceConfig)
    seed = ctx.config.sampling.seed
    pools = generator_pools(ctx.config)
    several = config.generators is not None or config.generator_pools is not None
    plan_method = Responses(config, seed, ctx.runner.model_name(pools[0]), 0, len(pools))
    units = ctx.runner.plan(ctx.docs, plan_method, f"{ctx.fingerprint}/responses", ctx.id_column)
    ctx.prepare()
    work = ctx.store.child(STAGES_DIR)
    work.prepare(f"{ctx.fingerprint}/stages", {"stages_of": ctx.fingerprint}, overwrite=False)
    stores: list[OutputStore] = [work]
    if several:
        stores = [work.child(f"generator-{k}") for k in range(len(pools))]
        for k, store in enumerate(stores):
            key = f"{ctx.fingerprint}/stages/generator-{k}"
            store.prepare(key, {"stages_of": ctx.fingerprint}, overwrite=False)
    parts = []
    models = []
    for k, pool in enumerate(pools):
        models.append(ctx.runner.model_name(pool))
        write = Responses(config, seed, models[k], k, len(pools)) if several else plan_method
        responses = functools.partial(
            ctx.runner.execute, stores[k], ctx.docs, write, units, "responses"
        )
        parts.append(Together(responses, pool, publishes=((stores[k], "responses"),)))
    judge = judge_pool(ctx.config)
    rate = RatePairs(config, ctx.runner.model_name(judge), seed)
    pairs = functools.partial(
        ctx.runner.run_joined_stage,
        "pairs",
        ctx.store,
        ctx.docs,
        units,
        [(store, "responses") for store in stores],
        RESPONSE_COLUMNS,
        functools.partial(pair_documents, n=config.n),
        1,
        rate,
        ctx.fingerprint,
    )
    parts.append(Together(pairs, judge))
    # one after another (pools that do not fit at once): the judge's own model writes last,
    # so its replicas are up for the ratings
    parts[:-1] = sorted(parts[:-1], key=lambda part: part.pool == judge)
    ctx.runner.run_together(parts)
    generated: dict[str, int] = {}
    for k, store in enumerate(stores):
        generated[models[k]] = generated.get(models[k], 0) + store.totals("responses").rows_out
    responses = UnitStats()
    for store in stores:
        responses.merge(store.totals("responses"))
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
                "responses_by_model": generated,
                "aspect": config.aspect,
                "principles": config.principles,
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
    MethodSpec(
        "preference",
        run=run_preference,
        section=PreferenceConfig,
        papers=preference_papers,
        pools=inline_pools,
        streams=lambda config: True,
    )
)
