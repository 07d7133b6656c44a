"""Prompt templates for Self-Instruct (Wang et al., ACL 2023, "Self-Instruct: Aligning Language
Models with Self-Generated Instructions"), in the formats of the paper's appendix tables:
instruction generation (a numbered list to continue), classification identification (few-shot
"Is it classification? Yes/No"), and instance generation, input-first for most tasks and
output-first (class label, then an input for it) for classification tasks. The exemplars are
our own, written in the paper's format.
"""

from __future__ import annotations

import re

GENERATE_HEADER = "Come up with a series of tasks:\n"

CLASSIFY = """Can the following task be regarded as a classification task with finite output labels?

Task: Given a product review, tell whether the customer was satisfied.
Is it classification? Yes

Task: Write a short poem about the first snow of winter.
Is it classification? No

Task: Decide if the given sentence is grammatically correct.
Is it classification? Yes

Task: Suggest three names for a new coffee shop.
Is it classification? No

Task: {instruction}
Is it classification?"""

INPUT_FIRST = """Come up with examples for the following tasks. Try to generate multiple examples when possible. If the task doesn't require additional input, you can generate the output directly.

Task: Convert the temperature from Celsius to Fahrenheit.
Example 1
Input: 25 degrees Celsius
Output: 77 degrees Fahrenheit

Task: Give two tips for sleeping better.
Output: Keep a regular bedtime, and avoid screens for an hour before sleep.

Task: {instruction}
"""

OUTPUT_FIRST = """Given the classification task definition and the class labels, generate an input that corresponds to each of the class labels. If the task doesn't require input, just generate possible class labels.

Task: Classify the sentiment of the sentence as positive or negative.
Class label: positive
Sentence: The staff were friendly and the room was spotless.
Class label: negative
Sentence: We waited an hour and the food arrived cold.

Task: {instruction}
"""


def generation_prompt(instructions: list[str], header: str = GENERATE_HEADER) -> str:
    """The header line, then the numbered list of in-context instructions, ending with the
    next number to fill. As in the paper's encode_prompt, the list follows the header without
    a blank line, and each instruction is put on one line (a seed such as
    "Question: ...\\nAnswer:" would otherwise break the list) without its trailing colons."""
    lines = [header.rstrip("\n")]
    for i, instruction in enumerate(instructions, start=1):
        one_line = re.sub(r"\s+", " ", instruction).strip().rstrip(":")
        lines.append(f"{i}. {one_line}")
    lines.append(f"{len(instructions) + 1}.")
    return "\n".join(lines)
