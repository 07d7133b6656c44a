"""UltraFeedback's rating prompts and parser (Cui et al. 2024, "UltraFeedback: Boosting
Language Models with Scaled AI Feedback", ICML; OpenBMB/UltraFeedback
src/data_annotation/preference_templates.py and annotate_preference.py).

    python -c "from synth_ray.methods.preference_prompts import rating_prompt; print(rating_prompt('helpfulness', 'Say hi', ['hi', 'hello']))"

All of one prompt's responses are rated in one request, after the paper's system prompt, with
one of its four aspect templates, quoted as its code has them: `instruction_following` and
`honesty` answer "Rating: N" then "Rationale: ..." per text; `helpfulness` and
`truthfulness` first name the informativeness or hallucination types of the text ("Type: 1,
3" or "None") with a rationale, then "Rating" and "Rationale". `truthfulness` is the template
with a "World Knowledge" section, given "No additional world knowledge for reference." as the
paper's code gives it for prompts without reference answers; `helpfulness` is the one without
(the code passes world knowledge to truthfulness only). The templates are written out for
exactly 4 texts; `rating_prompt` writes the same template for `n`, repeating the paper's
second text's lines for texts 3 to n (and the system prompt's "four" becomes the number):
for 4 texts it is the paper's template.
"""

# ruff: noqa: W291

from __future__ import annotations

import re
from dataclasses import dataclass

SYSTEM = (
    "Your role is to evaluate text quality based on given criteria.\n"
    'You\'ll receive an instructional description ("Instruction") and {count} text outputs '
    '("Text").\n'
    "Understand and interpret instructions to evaluate effectively.\n"
    "Provide annotations for each text with a rating and rationale.\n"
    "The {count} texts given are independent, and should be evaluated separately."
)

INSTRUCTION_FOLLOWING = """# Instruction Following Assessment

Evaluate alignment between output and intent. Assess understanding of task goal and restrictions.

**Instruction Components**: Task Goal (intended outcome), Restrictions (text styles, formats, or designated methods, etc).

**Scoring**: Rate outputs 1 to 5:
1. **Irrelevant**: No alignment.
2. **Partial Focus**: Addresses one aspect poorly.
3. **Partial Compliance**:
    - (1) Meets goal or restrictions, neglecting other.
    - (2) Acknowledges both but slight deviations.
4. **Almost There**: Near alignment, minor deviations.
5. **Comprehensive Compliance**: Fully aligns, meets all requirements.

## Format:

### Input
Instruction: [Clearly specify the task goal and restrictions]

Texts:
<text 1> [Text 1]
<text 2> [Text 2]
<text 3> [Text 3]
<text 4> [Text 4]

### Output
#### Output for Text 1
Rating: [Rating for text 1]
Rationale: [Rationale for the rating in short sentences]

#### Output for Text 2
Rating: [Rating]
Rationale: [Rationale]

#### Output for Text 3
Rating: [Rating]
Rationale: [Rationale]

#### Output for Text 4
Rating: [Rating]
Rationale: [Rationale]

---

## Annotation

### Input
Instruction: {instruction}

Texts:
<text 1> {text_1}
<text 2> {text_2}
<text 3> {text_3}
<text 4> {text_4}

### Output
"""

HONESTY = """# Honesty and Uncertainty Expression Assessment

Assess how well the model conveys honesty and uncertainty. Evaluate if the model's confidence aligns with response correctness.

- **Indicators of Uncertainty**: 
    1. Weakeners: e.g., 'I guess,' 'probably.'
    2. Refusal to answer.
    3. Verbalized confidence scores: [0, 20] low; (20, 40] uncertain; (40, 60] moderate; (60, 80] leaning confident; (80, 100] high. 
- **No uncertainty expression indicate confidence.**

- **Response Correctness**: Align with ground truth, or provide accurate content without fabrication.

**Scoring**: Rate outputs 1 to 5 (or "N/A"):
1. **Confidently Incorrect**: Confident but entirely wrong.
2. **Confident with Significant Mistakes / Unconfident Incorrect**:
- Confident but contains major errors.
- Unconfident and entirely wrong.
3. **Uncertain / 'I Don't Know' / Subtle Mistakes**:
- 'I don't know' or declines.
- confident but contains minor errors.
- Unconfident and contains significant mistakes.
4. **Correct but Uncertain / Expressed Subtle Mistakes**:
- Correct but unconfident.
- Makes subtle mistakes but expresses uncertainty without specifying the exact area of doubt.
5. **Correct and Confident / Precisely Express Uncertainty**:
- Correct and confident.
- Makes mistakes, but precisely acknowledges minor errors and indicates uncertainty on potential mistakes.
N/A. **Not Applicable**: For creative writing tasks.

---

## Format:

### Input
Instruction: [Specify task goal and restrictions]

Texts:
<text 1> [Text 1]
<text 2> [Text 2]
<text 3> [Text 3]
<text 4> [Text 4]

### Output
##### Output for Text 1
Rating: [Rating for text 1]
Rationale: [Rationale for the rating in short sentences]

##### Output for Text 2
Rating: [Rating]
Rationale: [Rationale]

##### Output for Text 3
Rating: [Rating]
Rationale: [Rationale]

##### Output for Text 4
Rating: [Rating]
Rationale: [Rationale]

---

## Annotation

### Input
Instruction: {instruction}

Texts:
<text 1> {text_1}
<text 2> {text_2}
<text 3> {text_3}
<text 4> {text_4}

### Output
"""

TRUTHFULNESS = """# Truthfulness and Hallucination Assessment

Evaluate the model's accuracy in providing information without introducing misleading or fabricated details. 

Assign numeric identifier (or "None") from 1 to 3 for each type of hallucination:
1. **Contradictory with the World (Factual Error)**: Entities, locations, concepts, or events that conflict with established knowledge.
2. **Contradictory with Instruction and Input**: Responses diverge, introducing new facts not aligned with instructions or inputs.
3. **Self-Contradictory / Logical Error**: Responses contain internal contradictions or logical errors within each independent text. 

**Scoring**: Rate outputs 1 to 5 based on extent of hallucination:
1. **Completely Hallucinated**: Entirely unreliable due to hallucinations.
2. **Severe Hallucination**: Nearly half contains hallucinations, severe deviation from main points.
3. **Partial Hallucination / Misunderstanding**: Overall truthful, partial misunderstanding due to hallucinations.
4. **Insignificant Hallucination**: Mostly truthful, slight hallucination not affecting main points.
5. **No Hallucination**: Free of hallucinations.

---

## Format

### Input
Instruction: [Specify task goal and restrictions]

Texts:
<text 1> [Text 1]
<text 2> [Text 2]
<text 3> [Text 3]
<text 4> [Text 4]

World Knowledge:
[External world knowledge for this instruction. Not part of instruction, but external resource.]

### Output
#### Output for Text 1
Type: [List of numeric identifiers (or "None" if no hallucination observed) of hallucination types, separated by commas]
Rationale: [Rationale for the identification in short sentences]
Rating: [Rating for text 1]
Rationale: [Rationale for the rating in short sentences]

#### Output for Text 2
Type: [List of types]
Rationale: [Rationale]
Rating: [Rating]
Rationale: [Rationale]

#### Output for Text 3
Type: [List of types]
Rationale: [Rationale]
Rating: [Rating]
Rationale: [Rationale]

#### Output for Text 4
Type: [List of types]
Rationale: [Rationale]
Rating: [Rating]
Rationale: [Rationale]

---

## Annotation

### Input
Instruction: {instruction}

Texts:
<text 1> {text_1}
<text 2> {text_2}
<text 3> {text_3}
<text 4> {text_4}

World Knowledge:
{world_knowledge}

### Output
"""

HELPFULNESS = """# Informativeness / Helpfulness Assessment

Evaluate if model's outputs fulfill task objectives and provide high-quality, correct, and, informative content.

Helpfulness assessment emphasizes **Overall Quality** regarding correctness and informativenss . 

**Correctness**: Accurate computation, reasoning steps, and outputs without misunderstandings or fabrication.

Assign numeric identifier (or "None") from 1 to 3 for each type of informativeness:
1. **Clarity and Relevance**: Ensure response relates to the task and seek clarifications if needed.
2. **Useful and Comprehensive Information**: Provide relevant background, reasoning steps, or detailed description.
3. **Not Lengthy, No Repetition**: Avoid verbosity or recycling content.

Score 1 to 5 based on extent of helpfulness, regarding both informativeness and correctness:
1. **Severely Incorrect**: Contains significant inaccuracies or fabricated content, even if comprehensive information is provided.
2. **Partially Incorrect**: Contains errors that may cause confusion, even though comprehensive information is present.
3. **Correct**: Accurate and provides useful information that meets the task's requirements.
4. **Highly Informative**: Accurate and extensive, providing valuable insights and detailed information.
5. **Outstandingly Helpful**: Both accurate and in-depth, offering profound insights and comprehensive information.

---

## Format

### Input
Instruction: [Specify task goal and restrictions]

Texts:
<text 1> [Text 1]
<text 2> [Text 2]
<text 3> [Text 3]
<text 4> [Text 4]

### Output
#### Output for Text 1
Type: [List of numeric identifiers (or "None") for informativeness type, separated by commas]
Rationale: [Rationale for the identification in short sentences]
Rating: [Rating for text 1]
Rationale: [Rationale for the rating in short sentencs]

#### Output for Text 2
Type: [List of types]
Rationale: [Rationale]
Rating: [Rating]
Rationale: [Rationale]

#### Output for Text 3
Type: [List of types]
Rationale: [Rationale]
Rating: [Rating]
Rationale: [Rationale]

#### Output for Text 4
Type: [List of types]
Rationale: [Rationale]
Rating: [Rating]
Rationale: [Rationale]

---

## Annotation

### Input
Instruction: {instruction}

Texts:
<text 1> {text_1}
<text 2> {text_2}
<text 3> {text_3}
<text 4> {text_4}

### Output
"""
TEMPLATES = {
    "instruction_following": INSTRUCTION_FOLLOWING,
    "honesty": HONESTY,
    "truthfulness": TRUTHFULNESS,
    "helpfulness": HELPFULNESS,
}
# the aspects whose answer names types before the rating (annotate_preference.py's `process`)
TYPED_ASPECTS = frozenset({"truthfulness", "helpfulness"})
# what the paper's code gives the truthfulness template for a prompt without reference answers
NO_WORLD_KNOWLEDGE = "No additional world knowledge for reference."
NUMBER_WORDS = {2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 7: "seven", 8: "eight"}
PAPER_TEXTS = 4  # the paper's templates are written for four texts


def system_prompt(count: int) -> str:
    return SYSTEM.format(count=NUMBER_WORDS.get(count, str(count)))


def _lines(line: str, count: int) -> str:
    return "\n".join(line.format(i=i) for i in range(1, count + 1))


def template_for(aspect: str, count: int) -> str:
    """The aspect's template for `count` texts: the paper's for 4; otherwise its text lists
    and its output blocks are cut or extended, texts 3 to `count` repeating text 2's block."""
    template = TEMPLATES[aspect]
    if count == PAPER_TEXTS:
        return template
    pieces = [
        (_lines("<text {i}> [Text {i}]", PAPER_TEXTS), _lines("<text {i}> [Text {i}]", count)),
        (
            _lines("<text {i}> {{text_{i}}}", PAPER_TEXTS),
            _lines("<text {i}> {{text_{i}}}", count),
        ),
    ]
    start = re.search(r"#+ Output for Text 1\n", template)
    end = template.index("\n\n---\n\n## Annotation")
    assert start is not None
    blocks = template[start.start() : end].split("\n\n")
    assert len(blocks) == PAPER_TEXTS
    second = blocks[1]
    more = [second.replace("Text 2", f"Text {i}") for i in range(2, count + 1)]
    pieces.append(("\n\n".join(blocks), "\n\n".join([blocks[0], *more])))
    for paper, ours in pieces:
        assert template.count(paper) == 1, paper
        template = template.replace(paper, ours)
    return template


def rating_prompt(aspect: str, instruction: str, texts: list[str]) -> str:
    """The user turn of the rating request: the aspect's template for len(texts) texts,
    filled with the instruction and the texts (in the order they are shown)."""
    values = {f"text_{i}": text for i, text in enumerate(texts, 1)}
    return template_for(aspect, len(texts)).format(
        instruction=instruction, world_knowledge=NO_WORLD_KNOWLEDGE, **values
    )


@dataclass(frozen=True)
class Annotation:
    """One text's annotation, as the paper's `process` reads it.

    `rating`: 1-5, or None where the text has none in the paper's format, "N/A" (honesty's
    creative writing), or a number off the scale. `types`: the typed aspects' "Type" line,
    the identifiers listed (() for "None"); None for the other aspects or an unparsed block."""

    rating: float | None
    rationale: str | None = None
    types: tuple[int, ...] | None = None
    types_rationale: str | None = None


UNRATED = Annotation(None)
_HEADER = re.compile(r"#+\s*Output for Text\s*(\d+)", re.IGNORECASE)
# annotate_preference.py's `process`, one pattern per answer format
# (any case, labels in markdown bold, and the last Rationale optional: a judge that bolds
# its labels, or an answer cut by judge_max_tokens after the last rating, still parses)


def _label(name: str) -> str:
    return rf"(?:^|\n)[ \t#]*[*_]*{name}[*_]*[ \t]*:[*_]*[ \t]*"


_LAST_RATIONALE = rf"(?:{_label('Rationale')}(.*))?$"
_PLAIN = re.compile(rf"{_label('Rating')}(.+?){_LAST_RATIONALE}", re.DOTALL | re.IGNORECASE)
_TYPED = re.compile(
    rf"{_label('Type')}(.+?){_label('Rationale')}(.+?){_label('Rating')}(.+?){_LAST_RATIONALE}",
    re.DOTALL | re.IGNORECASE,
)
_NUMBER = re.compile(r"\b\d+\b")


def parse_annotations(answer: str, count: int, aspect: str) -> list[Annotation]:
    """Each of `count` texts' annotation, in the order shown. A text's block runs from its
    "Output for Text i" header to the next; an answer without headers is split at blank
    lines and read by position when that gives exactly `count` blocks (the paper's rule).
    Within a block the paper's pattern is matched: "Rating: ... / Rationale: ..." or, for
    helpfulness and truthfulness, "Type / Rationale / Rating / Rationale"; the rating is
    the first whole number of its line (the paper's `\\b\\d+\\b`). A block out of format
    leaves its text unrated; the paper asked GPT-4 again, a greedy judge would answer alike."""
    blocks: list[str | None] = [None] * count
    headers = list(_HEADER.finditer(answer))
    if headers:
        for here, following in zip(headers, [*headers[1:], None], strict=True):
            index = int(here.group(1)) - 1
            if 0 <= index < count and blocks[index] is None:
                blocks[index] = answer[here.end() : following.start() if following else None]
    else:
        split = answer.strip().split("\n\n")
        if len(split) == count:
            blocks = list(split)
    return [_annotation(block, aspect) if block else UNRATED for block in blocks]


# tokens a constrained block's fixed text may take besides its rationales (header, labels,
# rating, blank line), counted generously: the engine may spell a forced text in small tokens
BLOCK_TOKENS = {"plain": 24, "typed": 40}
MIN_RATIONALE_CHARS = 8


def answer_regex(aspect: str, count: int, max_tokens: int) -> str:
    """The answer a constrained judge is decoded into (`preference.constrain`): the paper's
    blocks for `count` texts with the aspect's header, a rating of 1-5 (honesty also N/A),
    a typed aspect's `Type:` line (None, or identifiers 1-3), and one-line rationales of
    printable ASCII short enough that every block fits `max_tokens` at one token per
    character, so no rating is cut away (unless the prompt leaves less than `max_tokens` of
    the context: a request's output is capped to what fits). `parse_annotations` reads every string it admits. Raises ValueError when
    `max_tokens` cannot hold `count` blocks."""
    typed = aspect in TYPED_ASPECTS
    fixed = BLOCK_TOKENS["typed" if typed else "plain"] * count
    rationales = count * (2 if typed else 1)
    chars = (max_tokens - fixed) // rationales
    if chars < MIN_RATIONALE_CHARS:
        need = fixed + MIN_RATIONALE_CHARS * rationales
        raise ValueError(
            f"{max_tokens} tokens cannot hold {count} constrained ratings with their "
            f"rationales; give at least {need}"
        )
    header = re.search(r"(#+) Output for Text 1\n", template_for(aspect, count))
    assert header is not None
    # printable ASCII but '#': a character is one byte, so at most one token
    rationale = rf'[ -"$-~]{{1,{min(chars, 400)}}}'
    rating = "([1-5]|N/A)" if aspect == "honesty" else "[1-5]"
    blocks = []
    for i in range(1, count + 1):
        block = rf"{header.group(1)} Output for Text {i}\n"
        if typed:
            block += rf"Type: (None|[1-3](, [1-3]){{0,2}})\nRationale: {rationale}\n"
        blocks.append(block + rf"Rating: {rating}\nRationale: {rationale}")
    return r"\n\n".join(blocks)


def parse_ratings(answer: str, count: int, aspect: str) -> list[float | None]:
    """The rating of each of `count` texts, in the order shown (see `parse_annotations`)."""
    return [a.rating for a in parse_annotations(answer, count, aspect)]


def _annotation(block: str, aspect: str) -> Annotation:
    if aspect in TYPED_ASPECTS:
        found = _TYPED.search(block)
        if found is None:
            return UNRATED
        types, types_rationale, rating, rationale = found.groups()
        types = types.strip(" *_")
        named = () if types == "None" else tuple(int(t) for t in _NUMBER.findall(types))
        return Annotation(
            _rating(rating), (rationale or "").strip() or None, named, types_rationale.strip()
        )
    found = _PLAIN.search(block)
    if found is None:
        return UNRATED
    return Annotation(_rating(found.group(1)), (found.group(2) or "").strip() or None)


def _rating(value: str) -> float | None:
    numbers = _NUMBER.findall(value)
    if value.strip(" *_\n") == "N/A" or not numbers:
        return None
    rating = float(numbers[0])
    return rating if 1 <= rating <= 5 else None
