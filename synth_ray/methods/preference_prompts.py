"""UltraFeedback's rating prompts (Cui et al. 2024, "UltraFeedback: Boosting Language Models
with Scaled AI Feedback", ICML; OpenBMB/UltraFeedback src/data_annotation/preference_templates.py).

    python -c "from synth_ray.methods.preference_prompts import rating_prompt; print(rating_prompt('instruction_following', 'Say hi', ['hi', 'hello']))"

All of one prompt's responses are rated in one request, each "Rating: N" (1-5) with a
rationale under "#### Output for Text i", after the paper's system prompt. The aspect texts are
the paper's; the paper's templates are written out for exactly 4 texts, and `rating_prompt`
writes the same format for `n` (the paper's wording "four" becomes the number).
"""

from __future__ import annotations

import re

SYSTEM = (
    "Your role is to evaluate text quality based on given criteria.\n"
    'You\'ll receive an instructional description ("Instruction") and {count} text outputs '
    '("Text").\n'
    "Understand and interpret instructions to evaluate effectively.\n"
    "Provide annotations for each text with a rating and rationale.\n"
    "The {count} texts given are independent, and should be evaluated separately."
)

ASPECTS = {
    "instruction_following": """# Instruction Following Assessment

Evaluate alignment between output and intent. Assess understanding of task goal and restrictions.

**Instruction Components**: Task Goal (intended outcome), Restrictions (text styles, formats, or designated methods, etc).

**Scoring**: Rate outputs 1 to 5:
1. **Irrelevant**: No alignment.
2. **Partial Focus**: Addresses one aspect poorly.
3. **Partial Compliance**:
    - (1) Meets goal or restrictions, neglecting other.
    - (2) Acknowledges both but slight deviations.
4. **Almost There**: Near alignment, minor deviations.
5. **Comprehensive Compliance**: Fully aligns, meets all requirements.""",
    "helpfulness": """# Informativeness / Helpfulness Assessment

Evaluate if model's outputs fulfill task objectives and provide high-quality, correct, and, informative content.

Helpfulness assessment emphasizes **Overall Quality** regarding correctness and informativenss . 

**Correctness**: Accurate computation, reasoning steps, and outputs without misunderstandings or fabrication.

Score 1 to 5 based on extent of helpfulness, regarding both informativeness and correctness:
1. **Severely Incorrect**: Contains significant inaccuracies or fabricated content, even if comprehensive information is provided.
2. **Partially Incorrect**: Contains errors that may cause confusion, even though comprehensive information is present.
3. **Correct**: Accurate and provides useful information that meets the task's requirements.
4. **Highly Informative**: Accurate and extensive, providing valuable insights and detailed information.
5. **Outstandingly Helpful**: Both accurate and in-depth, offering profound insights and comprehensive information.""",  # noqa: E501, W291
}
NUMBER_WORDS = {2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 7: "seven", 8: "eight"}


def system_prompt(count: int) -> str:
    return SYSTEM.format(count=NUMBER_WORDS.get(count, str(count)))


def rating_prompt(aspect: str, instruction: str, texts: list[str]) -> str:
    """The aspect's rubric, the paper's answer format for len(texts) texts, then the
    instruction and the texts to rate."""
    n = range(1, len(texts) + 1)
    placeholders = "\n".join(f"<text {i}> [Text {i}]" for i in n)
    outputs = "\n\n".join(
        f"#### Output for Text {i}\nRating: [Rating for text {i}]\n"
        f"Rationale: [Rationale for the rating in short sentences]"
        if i == 1
        else f"#### Output for Text {i}\nRating: [Rating]\nRationale: [Rationale]"
        for i in n
    )
    given = "\n".join(f"<text {i}> {t}" for i, t in zip(n, texts, strict=True))
    return (
        f"{ASPECTS[aspect]}\n\n## Format:\n\n### Input\n"
        f"Instruction: [Clearly specify the task goal and restrictions]\n\nTexts:\n{placeholders}"
        f"\n\n### Output\n{outputs}\n\n---\n\n## Annotation\n\n### Input\n"
        f"Instruction: {instruction}\n\nTexts:\n{given}\n\n### Output\n"
    )


_HEADER = re.compile(r"#+\s*Output for Text\s*(\d+)", re.IGNORECASE)
_RATING = re.compile(r"Rating:\s*\**\s*(N/A|\d+(?:\.\d+)?)", re.IGNORECASE)


def parse_ratings(answer: str, count: int) -> list[float | None]:
    """The rating of each of `count` texts, in the order shown (None: not rated, N/A, or off
    the 1-5 scale). Blocks are found by their "Output for Text i" headers; without headers,
    the "Rating:" lines are taken in order when there are exactly `count` of them."""
    ratings: list[float | None] = [None] * count
    headers = list(_HEADER.finditer(answer))
    if headers:
        for here, following in zip(headers, [*headers[1:], None], strict=True):
            index = int(here.group(1)) - 1
            block = answer[here.end() : following.start() if following else len(answer)]
            found = _RATING.search(block)
            if 0 <= index < count and ratings[index] is None and found:
                ratings[index] = _on_scale(found.group(1))
        return ratings
    found = _RATING.findall(answer)
    if len(found) == count:
        ratings = [_on_scale(value) for value in found]
    return ratings


def _on_scale(value: str) -> float | None:
    if value.upper() == "N/A":
        return None
    rating = float(value)
    return rating if 1 <= rating <= 5 else None
