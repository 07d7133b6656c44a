"""Config sections of the methods (rephrase, generate, self_improve, self_instruct, evol).

    python -c "from synth_ray.method_config import SelfImproveConfig; print(SelfImproveConfig())"

Kept apart from config.py (the job-level sections, loading and error messages) so each file
has one job; config.py re-exports these. Every section forbids unknown keys.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def check_templates(templates: dict[str, str], required: dict[str, set[str]]) -> None:
    """Template overrides: known names only, each keeping the placeholders its stage fills."""
    for name, text in templates.items():
        if name not in required:
            raise ValueError(
                f"templates.{name}: unknown template (expected one of {sorted(required)})"
            )
        missing = [p for p in sorted(required[name]) if "{" + p + "}" not in text]
        if missing:
            raise ValueError(f"templates.{name}: must contain {{{missing[0]}}}")


DEFAULT_STYLES = ["easy", "medium", "hard", "qa"]


class RephraseConfig(_Section):
    styles: list[str] = Field(
        default_factory=lambda: list(DEFAULT_STYLES),
        description="Styles per chunk: easy, medium, hard, qa, or names from custom_styles.",
    )
    # WRAP rephrased ~300-token chunks: long enough for context, short enough for a small model.
    max_chunk_tokens: int = Field(300, ge=8)
    custom_styles: dict[str, str] = Field(
        default_factory=dict,
        description="name -> prompt template with {text}; a template may replace a built-in style.",
    )

    @model_validator(mode="after")
    def _styles_known(self) -> RephraseConfig:
        if not self.styles:
            raise ValueError("styles: expected at least one style")
        for name, template in self.custom_styles.items():
            if "{text}" not in template:
                raise ValueError(f"custom_styles.{name}: template must contain {{text}}")
        known = set(DEFAULT_STYLES) | set(self.custom_styles)
        unknown = [s for s in self.styles if s not in known]
        if unknown:
            raise ValueError(
                f"styles: unknown style {unknown[0]!r} (expected one of {sorted(known)})"
            )
        return self


class SelfImproveConfig(_Section):
    mode: Literal["star", "rejection", "self_consistency"] = Field(
        "star",
        description="star: rationale, then rationalize wrong ones with a hint; rejection: n "
        "samples, keep k correct; self_consistency: n samples, keep those agreeing with the majority.",
    )
    question_column: str = Field("question", description="Input column with the question.")
    answer_column: str | None = Field(
        "answer", description="Raw reference (e.g. GSM8K's full answer); the checker extracts it."
    )
    checker: Literal["numeric", "exact", "choice"] = Field("numeric")
    # 4 samples already lift self-consistency well above one; more cost linearly.
    n: int = Field(
        4, ge=1, le=64, description="Samples per question (rejection, self_consistency)."
    )
    k: int = Field(1, ge=1, description="Correct samples kept per question at most (rejection).")
    min_agreement: float = Field(
        0.5, gt=0, le=1, description="Majority share needed to keep a question (self_consistency)."
    )
    iteration: int = Field(
        0, ge=0, description="Stamped on every row: which model iteration made it."
    )
    few_shot_path: str | None = Field(
        None, description="JSONL of {question, rationale, answer} replacing the built-in examples."
    )
    templates: dict[str, str] = Field(
        default_factory=dict,
        description="Override prompt templates: instruction (the line before the examples), hint ({answer}).",
    )

    @model_validator(mode="after")
    def _labels_needed(self) -> SelfImproveConfig:
        check_templates(self.templates, {"instruction": set(), "hint": {"answer"}})
        if self.mode in ("star", "rejection") and not self.answer_column:
            raise ValueError(f"answer_column: mode {self.mode} needs reference answers")
        if self.mode == "rejection" and self.k > self.n:
            raise ValueError(f"k: {self.k} is more than n={self.n}")
        return self


class SelfInstructConfig(_Section):
    seed_path: str | None = Field(
        None,
        description="Seed tasks: the public seed-task JSONL, or a text file, one instruction a line.",
    )
    target: int = Field(100, ge=1, description="Stop once this many new instructions are accepted.")
    requests_per_round: int = Field(
        16, ge=1, description="Generation requests per round; the pool grows between rounds."
    )
    max_rounds: int = Field(
        50, ge=1, description="Give up growing the pool after this many rounds."
    )
    # The paper's 8 in-context instructions: 6 human seeds and 2 machine-generated ones; while the
    # pool has fewer machine instructions, seeds fill their places (round 0: 8 seeds).
    seeds_in_context: int = Field(6, ge=0)
    machine_in_context: int = Field(2, ge=0)
    rouge_threshold: float = Field(
        0.7,
        gt=0,
        le=1,
        description="Drop an instruction whose ROUGE-L with any pool instruction exceeds this.",
    )
    # the paper drops instructions of 3 words or fewer (bootstrap_instructions.py)
    min_words: int = Field(4, ge=1, description="Fewer words than this: dropped as `length`.")
    max_words: int = Field(150, ge=1)
    templates: dict[str, str] = Field(
        default_factory=dict,
        description="Override prompt templates: generate_header, classify, input_first, output_first ({instruction}).",
    )

    @model_validator(mode="after")
    def _templates(self) -> SelfInstructConfig:
        needs = {"instruction"}
        check_templates(
            self.templates,
            {
                "generate_header": set(),
                "classify": needs,
                "input_first": needs,
                "output_first": needs,
            },
        )
        return self


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


class EvolConfig(_Section):
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
        return self


class GenerateConfig(_Section):
    system_prompt: str | None = Field(
        None, description="Sent before every prompt as a system message."
    )
