"""Method `evol_instruct` (Xu et al. 2023, WizardLM): evolve instructions over rounds.

    synth-ray run configs/evol_instruct.yaml

Per round, three stage methods (methods/evol_instruct_rounds.py runs them):
- `EvolveStep`: rewrite an instruction with its round's operation (in-depth: add constraints,
  deepening, concretizing, increased reasoning steps, complicate input; or in-breadth).
- `JudgeStep`: does the evolved instruction equal its parent? (the paper's LLM judgement,
  asked greedily in a few tokens whatever the job's sampling)
- `RespondStep`: answer the evolved instruction; the output rows.
The paper's elimination rules, each counted under its name when it drops an evolution:
`no_information_gain` (judged equal), `copies_prompt_scaffolding` (mentions "#Rewritten
Prompt#", "given prompt", ...), `model_could_not_answer` (the response apologises and is
short), `response_only_stopwords` (only punctuation and stop words).
"""

from __future__ import annotations

import dataclasses
import random
import re

import pyarrow as pa
from pydantic import Field, model_validator

from synth_ray.engine.requests import EngineResult, SamplingSpec
from synth_ray.io.inputs import Document
from synth_ray.methods.base import TOKEN_COLUMNS, Candidate, Dropped, Kept, Method, Outcome, row_id
from synth_ray.methods.evol_instruct_prompts import EQUALITY_JUDGE, evolving_prompt
from synth_ray.sections import Section, check_templates

# The operations whose prompts the WizardLM code publishes (Evol_Instruct/depth.py, breadth.py).
PAPER_EVOL_OPERATIONS = [
    "add_constraints",
    "deepening",
    "concretizing",
    "increased_reasoning_steps",
    "breadth",
]
# The paper names a fifth in-depth operation, "complicate input", but publishes no prompt for it:
# ours is our own wording, so it is opt-in, never drawn by default.
EVOL_OPERATIONS = [*PAPER_EVOL_OPERATIONS, "complicate_input"]


class EvolConfig(Section):
    rounds: int = Field(4, ge=1, description="Evolution rounds (the paper used 4).")
    operations: list[str] = Field(
        default_factory=lambda: list(PAPER_EVOL_OPERATIONS),
        description="Operations drawn uniformly per instruction per round; complicate_input "
        "(our own prompt: the paper publishes none) only when listed here.",
    )
    judge_information_gain: bool = Field(
        True, description="Ask the model whether the evolved instruction equals its parent."
    )
    templates: dict[str, str] = Field(
        default_factory=dict,
        description="Override prompt templates: in_depth ({method}, {instruction}), in_breadth "
        "({instruction}), judge ({first}, {second}).",
    )

    @model_validator(mode="after")
    def _templates(self) -> EvolConfig:
        check_templates(
            self.templates,
            {
                "in_depth": {"method", "instruction"},
                "in_breadth": {"instruction"},
                "judge": {"first", "second"},
            },
        )
        unknown = sorted(set(self.operations) - set(EVOL_OPERATIONS))
        if unknown:
            raise ValueError(
                f"operations: unknown operation {unknown[0]!r} (expected some of {EVOL_OPERATIONS})"
            )
        return self


SCAFFOLDING = re.compile(
    r"#?\s*(the\s+)?(given|rewritten|created)\s+prompt\s*#?|#\s*rewritten|#\s*created",
    re.IGNORECASE,
)
STOP_WORDS = set(
    "a an and are as at be but by for from has have he her his i if in into is it its me my "
    "no not of on or our she so than that the their them then there these they this to too "
    "us was we were what when which who will with you your yes ok okay".split()
)
# The judge answers "Equal" or "Not Equal" (its prompt asks for no reason): room for that,
# with some markup, and no explanation to pay for.
JUDGE_MAX_TOKENS = 8
# "It apologises and is short": the paper's rule for a response showing the model could not
# answer; 80 words is our reading of "short" (responses to evolved prompts run longer).
SHORT_APOLOGY_WORDS = 80


def choose_operation(seed: int, rnd: int, source_id: str, operations: list[str]) -> str:
    """The same instruction in the same round always gets the same operation."""
    return random.Random(f"{seed}:{rnd}:{source_id}").choice(operations)


def copies_scaffolding(instruction: str) -> bool:
    return bool(SCAFFOLDING.search(instruction))


def response_drop(response: str) -> str | None:
    words = re.findall(r"[A-Za-z']+", response.lower())
    if "sorry" in words and len(response.split()) < SHORT_APOLOGY_WORDS:
        return "model_could_not_answer"
    if all(w in STOP_WORDS for w in words):
        return "response_only_stopwords"
    return None


class EvolveStep(Method):
    """Doc: an instruction (its id is the row's source_id); extra has `operation` and `root`
    (the input row it descends from). Keeps the evolved instruction."""

    name = "evol_evolve"
    schema = pa.schema(
        [
            pa.field("id", pa.string()),
            pa.field("source_id", pa.string()),
            pa.field("parent_instruction", pa.string()),
            pa.field("operation", pa.string()),
            pa.field("evolved", pa.string()),
            pa.field("root", pa.string()),
        ]
    )

    def __init__(self, rnd: int, templates: dict[str, str] | None = None) -> None:
        self.round = rnd
        self.templates = templates or {}
        self.counts_input_documents = rnd == 0

    def estimate_rows(self, doc: Document) -> int:
        return 1

    def expand(self, doc: Document) -> list[Candidate]:
        rid = row_id(doc.source_id, "evolve", self.round)
        if doc.error is not None or not (doc.text or "").strip():
            return [Candidate(rid, doc.source_id, error=doc.error or "empty instruction")]
        operation = str(doc.extra["operation"])
        fields = {
            "parent_instruction": doc.text,
            "operation": operation,
            "root": doc.extra.get("root", doc.source_id),
        }
        return [
            Candidate(
                rid,
                doc.source_id,
                fields=fields,
                messages=[
                    {
                        "role": "user",
                        "content": evolving_prompt(operation, doc.text or "", self.templates),
                    }
                ],
            )
        ]

    def finish(self, candidate: Candidate, result: EngineResult) -> Outcome:
        evolved = result.text.strip().strip('"').strip()
        if not evolved:
            return Dropped("empty_evolution")
        return Kept(
            {
                "id": candidate.row_id,
                "source_id": candidate.source_id,
                **candidate.fields,
                "evolved": evolved,
            }
        )


class JudgeStep(Method):
    """Doc: an evolved instruction (its id is the row's source_id); extra has its `parent`
    text, `parent_id`, `operation` and `root`, or `dropped` (copies prompt scaffolding: no
    request). Drops it as `no_information_gain` when judged equal to its parent; keeps it,
    with what the respond stage needs, otherwise."""

    name = "evol_judge"
    schema = pa.schema(
        [
            pa.field("id", pa.string()),
            pa.field("source_id", pa.string()),
            pa.field("parent_id", pa.string()),
            pa.field("operation", pa.string()),
            pa.field("evolved", pa.string()),
            pa.field("root", pa.string()),
        ]
    )
    counts_input_documents = False

    def __init__(self, template: str = EQUALITY_JUDGE) -> None:
        self.template = template

    def estimate_rows(self, doc: Document) -> int:
        return 1

    def stage_sampling(self, job: SamplingSpec) -> SamplingSpec:
        """Greedy and short, whatever the job's `sampling` says: whether two instructions are
        equal is a judgement, so the same pair always gets the same verdict; a sampled one
        would eliminate evolutions at random. (WizardLM's released code has no judge; its
        evolve and respond calls sample at T=1, as the job's sampling does here.)"""
        return dataclasses.replace(
            job, temperature=0.0, top_p=1.0, max_tokens=JUDGE_MAX_TOKENS, n=1, stop=()
        )

    def expand(self, doc: Document) -> list[Candidate]:
        rid = row_id(doc.source_id, "judge")
        if doc.extra.get("dropped"):
            return [Candidate(rid, doc.source_id, dropped=str(doc.extra["dropped"]))]
        prompt = self.template.replace("{first}", str(doc.extra["parent"])).replace(
            "{second}", doc.text or ""
        )
        fields = {k: doc.extra[k] for k in ("parent_id", "operation", "root")}
        return [
            Candidate(
                rid,
                doc.source_id,
                fields={**fields, "evolved": doc.text},
                messages=[{"role": "user", "content": prompt}],
            )
        ]

    def finish(self, candidate: Candidate, result: EngineResult) -> Outcome:
        verdict = result.text.strip().lower()
        if verdict.startswith("equal"):  # "not equal" does not start with "equal"
            return Dropped("no_information_gain")
        return Kept({"id": candidate.row_id, "source_id": candidate.source_id, **candidate.fields})


class RespondStep(Method):
    """Doc: a surviving evolved instruction; extra has parent_id, operation, round, root, or
    `dropped` (copies prompt scaffolding: no request)."""

    name = "evol_instruct"
    diversity_column = "instruction"  # near-duplicate evolutions, when the filter is on
    schema = pa.schema(
        [
            pa.field("id", pa.string()),
            pa.field("source_id", pa.string()),
            pa.field("instruction", pa.string()),
            pa.field("response", pa.string()),
            pa.field("round", pa.int32()),
            pa.field("operation", pa.string()),
            pa.field("parent_id", pa.string()),
            pa.field("model", pa.string()),
            *TOKEN_COLUMNS,
        ]
    )
    counts_input_documents = False

    def __init__(self, model_name: str) -> None:
        self.model_name = model_name

    def estimate_rows(self, doc: Document) -> int:
        return 1

    def expand(self, doc: Document) -> list[Candidate]:
        """Doc source_id is the evolved instruction's id (the row's id); extra["root"] is the
        input row it descends from (the row's source_id)."""
        if doc.extra.get("dropped"):
            dropped = str(doc.extra["dropped"])
            return [Candidate(doc.source_id, str(doc.extra["root"]), dropped=dropped)]
        return [
            Candidate(
                doc.source_id,
                str(doc.extra["root"]),
                fields={"instruction": doc.text, **doc.extra},
                messages=[{"role": "user", "content": doc.text or ""}],
            )
        ]

    def finish(self, candidate: Candidate, result: EngineResult) -> Outcome:
        reason = response_drop(result.text)
        if reason is not None:
            return Dropped(reason)
        f = candidate.fields
        return Kept(
            {
                "id": candidate.row_id,
                "source_id": candidate.source_id,
                "instruction": f["instruction"],
                "response": result.text.strip(),
                "round": f["round"],
                "operation": f["operation"],
                "parent_id": f["parent_id"],
                "model": self.model_name,
                **self.token_fields(result),
            }
        )
