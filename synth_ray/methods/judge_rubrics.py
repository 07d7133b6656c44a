"""The judge's built-in rubrics: each a published prompt and the parser of its answer format.

    python -c "from synth_ray.methods.judge_rubrics import RUBRICS; print(sorted(RUBRICS))"

- `alpagasus`: Chen et al. 2024, "AlpaGasus: Training a Better Alpaca with Fewer Data" (ICLR),
  Figure 3 and their rating code: ChatGPT rates the accuracy of each (instruction, input,
  response) triplet on 0-5, the score on the first line and the explanation after it; the
  paper keeps triplets scored 4.5 or more.
- `fineweb_edu`: Penedo et al. 2024, "The FineWeb Datasets" (NeurIPS D&B), Appendix F.1: the
  additive 5-point educational-value prompt Llama-3-70B-Instruct answered to label FineWeb-Edu,
  ending with "Educational score: <total points>"; FineWeb-Edu keeps pages scored 3 or more.
The prompt texts are the papers' own (their wording, including their typos, is what the scores
were calibrated on); the code around them is ours.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from synth_ray.methods.templating import fill, placeholders  # noqa: F401  (re-exported)

ScoreParser = Callable[[str], float | None]

ALPAGASUS_SYSTEM = (
    "We would like to request your feedback on the performance of AI assistant in response to "
    "the instruction and the given input displayed following."
)
ALPAGASUS_USER = (
    "###Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n{response}\n\n"
    "Please rate according to the accuracy of the response to the instruction and the input. "
    "Each assistant receives a score on a scale of 0 to 5, where a higher score indicates higher "
    "level of the accuracy. Please first output a single line containing value indicating the "
    "scores. In the subsequent line, please provide a comprehensive explanation of your "
    "evaluation, avoiding any potential bias. \n\n"
)

FINEWEB_EDU_USER = """Below is an extract from a web page. Evaluate whether the page has a high educational value and could be useful in an educational setting for teaching from primary school to grade school levels using the additive 5-point scoring system described below. Points are accumulated based on the satisfaction of each criterion:

- Add 1 point if the extract provides some basic information relevant to educational topics, even if it includes some irrelevant or non-academic content like advertisements and promotional material.
- Add another point if the extract addresses certain elements pertinent to education but does not align closely with educational standards. It might mix educational content with non-educational material, offering a superficial overview of potentially useful topics, or presenting information in a disorganized manner and incoherent writing style.
- Award a third point if the extract is appropriate for educational use and introduces key concepts relevant to school curricula. It is coherent though it may not be comprehensive or could include some extraneous information. It may resemble an introductory section of a textbook or a basic tutorial that is suitable for learning but has notable limitations like treating concepts that are too complex for grade school students.
- Grant a fourth point if the extract highly relevant and beneficial for educational purposes for a level not higher than grade school, exhibiting a clear and consistent writing style. It could be similar to a chapter from a textbook or a tutorial, offering substantial educational content, including exercises and solutions, with minimal irrelevant information, and the concepts aren't too advanced for grade school students. The content is coherent, focused, and valuable for structured learning.
- Bestow a fifth point if the extract is outstanding in its educational value, perfectly suited for teaching either at primary school or grade school. It follows detailed reasoning, the writing style is easy to follow and offers profound and thorough insights into the subject matter, devoid of any non-educational or complex content.

The extract: {text}

After examining the extract:
- Briefly justify your total score, up to 100 words.
- Conclude with the score using the format: "Educational score: <total points>\""""  # noqa: E501

NUMBER = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)"
# AlpaGasus reads the score from the first line ("4.5", "Score: 4.5", "4.5/5", "**4**")
FIRST_LINE_SCORE = re.compile(rf"^\W*(?:score\W*)?({NUMBER})(?!\d)", re.IGNORECASE)
# FineWeb-Edu's annotation pipeline matched "Educational score: N" and took the last match
EDUCATIONAL_SCORE = re.compile(rf"educational score:\s*\**\s*({NUMBER})", re.IGNORECASE)


def score_from_first_line(text: str) -> float | None:
    """The number opening the first non-empty line, as AlpaGasus's rating is read."""
    for line in text.strip().splitlines():
        if line.strip():
            found = FIRST_LINE_SCORE.match(line.strip())
            return float(found.group(1)) if found else None
    return None


def score_after(pattern: re.Pattern[str]) -> ScoreParser:
    """A parser taking the last match of `pattern`'s first group as the score."""

    def parse(text: str) -> float | None:
        found = pattern.findall(text)
        if not found:
            return None
        last = found[-1] if isinstance(found[-1], str) else found[-1][0]
        try:
            return float(last)
        except ValueError:
            return None

    return parse


def regex_literal(text: str) -> str:
    """`text` matched literally in a structured-outputs regex (only the metacharacters are
    escaped: the engines' regex dialects do not all accept Python's escaped spaces)."""
    return re.sub(r"([.^$*+?()\[\]{}|\\])", r"\\\1", text)


# Answer formats a constrained judge is decoded into (`judge.constrain`); each is a string its
# rubric's parser reads a score from. Lengths are bounded so the score fits a small budget.
ALPAGASUS_ANSWER = r"([0-4](\.5)?|5)\n[^\n]{1,400}"  # the score line, then the explanation
FINEWEB_EDU_ANSWER = r"[^\n]{1,300}\nEducational score: [0-5]"  # justification, then the score


@dataclass(frozen=True)
class Rubric:
    """A rubric: the prompt (system and user, with `{placeholder}`s filled from row columns),
    how a score is read from the answer, its scale, the columns each placeholder reads by
    default, and the threshold its paper filtered at."""

    user: str
    parse: ScoreParser
    scale: tuple[float, float]
    columns: dict[str, str]
    system: str | None = None
    paper_min_score: float | None = None
    answer_regex: str | None = None  # the format `judge.constrain` decodes the answer into


RUBRICS: dict[str, Rubric] = {
    "alpagasus": Rubric(
        user=ALPAGASUS_USER,
        system=ALPAGASUS_SYSTEM,
        parse=score_from_first_line,
        scale=(0.0, 5.0),
        columns={"instruction": "instruction", "input": "input", "response": "output"},
        paper_min_score=4.5,
        answer_regex=ALPAGASUS_ANSWER,
    ),
    "fineweb_edu": Rubric(
        user=FINEWEB_EDU_USER,
        parse=score_after(EDUCATIONAL_SCORE),
        scale=(0.0, 5.0),
        columns={"text": "text"},
        paper_min_score=3.0,
        answer_regex=FINEWEB_EDU_ANSWER,
    ),
}
