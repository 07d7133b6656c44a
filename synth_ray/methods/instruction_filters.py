"""Self-Instruct's instruction filters (Wang et al., ACL 2023, section 2.3) and ROUGE-L.

    python -c "from synth_ray.methods.instruction_filters import rouge_l; print(rouge_l('a b c', 'a c'))"

`heuristic_drop` returns the name of the first heuristic an instruction fails (length, an
unsupported modality keyword, starting with "Write a program", starting with punctuation,
starting with a non-English character), or None. `RougePool` keeps the accepted instructions and tells, for a new one,
its highest ROUGE-L F-measure against the pool; the paper adds an instruction only when that
is at most 0.7. ROUGE-L is computed on lower-cased word tokens (LCS, F-measure), like
`rouge_score` without stemming; the pool check is O(pool x tokens^2) in pure Python, fine for
tens of thousands of short instructions per run.
"""

from __future__ import annotations

import re
import string

_TOKEN = re.compile(r"[a-z0-9]+")
# Tasks a text-only model cannot do: the paper's keyword list (bootstrap_instructions.py), matched
# as whole words in any case. Alpaca's longer list (video, audio, music, ...) is not the paper's.
UNSUPPORTED_KEYWORDS = [
    "image",
    "images",
    "graph",
    "graphs",
    "picture",
    "pictures",
    "file",
    "files",
    "map",
    "maps",
    "draw",
    "plot",
    "go to",
]
_UNSUPPORTED = re.compile(r"\b(" + "|".join(re.escape(k) for k in UNSUPPORTED_KEYWORDS) + r")\b")


def tokens(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


def _lcs(a: list[str], b: list[str]) -> int:
    if not a or not b:
        return 0
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b):
            current.append(previous[j] + 1 if x == y else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


def rouge_l(a: str | list[str], b: str | list[str]) -> float:
    """ROUGE-L F-measure of two texts (or token lists), 0..1."""
    ta = tokens(a) if isinstance(a, str) else a
    tb = tokens(b) if isinstance(b, str) else b
    lcs = _lcs(ta, tb)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(ta), lcs / len(tb)
    return 2 * precision * recall / (precision + recall)


def heuristic_drop(instruction: str, min_words: int, max_words: int) -> str | None:
    """The first of the paper's heuristics that `instruction` fails, in the paper's order, or
    None. The paper drops instructions of 3 words or fewer (`min_words` defaults to 4), and
    those starting with "Write a program": the model tends to prefix existing tasks with it,
    leaving unclear whether a program or the result is wanted."""
    words = instruction.split()
    if len(words) < min_words or len(words) > max_words:
        return "length"
    if _UNSUPPORTED.search(instruction.lower()):
        return "unsupported_task"
    # The paper's code compares after str.capitalize(), so any case of "write a program" matches.
    if instruction.lower().startswith("write a program"):
        return "write_a_program"
    first = instruction[0]
    if first in string.punctuation:
        return "starts_with_punctuation"
    if not first.isascii() or not first.isalnum():
        return "non_english"
    return None


class RougePool:
    """Instructions accepted so far (seeds included), for the ROUGE-L novelty check."""

    def __init__(self, instructions: list[str]) -> None:
        self.token_lists = [tokens(i) for i in instructions]

    def max_similarity(self, instruction: str) -> float:
        candidate = tokens(instruction)
        return max((rouge_l(candidate, other) for other in self.token_lists), default=0.0)

    def add(self, instruction: str) -> None:
        self.token_lists.append(tokens(instruction))


_PREAMBLE = re.compile(
    r"^(?:sure|certainly|of course|okay|ok|absolutely|here (?:are|is)|below (?:are|is))\b",
    re.IGNORECASE,
)


_ITEM = re.compile(r"^\s*(?:Task\s*)?(\d+)\s*[.):]\s*(.*)$")


def parse_numbered_list(completion: str, truncated: bool = False) -> list[str]:
    """Instructions from a completion that continues a numbered list.

    An item is a numbered line and the lines right under it (wrapped lines are joined). A blank
    line ends it, as the paper's "\\n\\n" stop ends the whole completion: text after a blank
    line that does not open a new numbered item (a chat model's "I hope these tasks are
    helpful!") belongs to no item and is dropped. Numbered items after a blank line are still
    read, so a chat model's preamble and blank line, or a list spaced by blank lines, loses
    nothing. Text before the first number is the item the prompt's trailing number started
    (its first paragraph only), unless it is a chat model's preamble ("Sure! Here are some
    more tasks:"). `truncated` (the completion hit max_tokens): the last item is dropped when
    the text ended inside it; one a blank line had closed is complete and kept.
    """
    items: list[str] = []
    current: list[str] | None = []  # None: after a blank line, outside any item
    numbered = False

    def close() -> bool:
        text = re.sub(r"\s+", " ", " ".join(current or [])).strip()
        if text and (numbered or not _is_preamble(text)):
            items.append(text)
            return True
        return False

    for line in completion.splitlines():
        match = _ITEM.match(line)
        if match:
            close()
            numbered = True
            current = [match.group(2).strip()]
        elif not line.strip():
            close()
            current = None
        elif current is not None:
            current.append(line.strip())
    open_at_end = current is not None
    if close() and truncated and open_at_end:
        items.pop()
    return items


def _is_preamble(text: str) -> bool:
    text = text.strip()
    return text.endswith(":") or _PREAMBLE.match(text) is not None
