"""Self-Instruct's instruction filters (Wang et al., ACL 2023, section 2.3) and ROUGE-L.

    python -c "from synth_ray.methods.instruction_filters import rouge_l; print(rouge_l('a b c', 'a c'))"

`heuristic_drop` returns the name of the first heuristic an instruction fails (length, an
unsupported modality keyword, starting with punctuation, starting with a non-English
character), or None. `RougePool` keeps the accepted instructions and tells, for a new one,
its highest ROUGE-L F-measure against the pool; the paper adds an instruction only when that
is at most 0.7. ROUGE-L is computed on lower-cased word tokens (LCS, F-measure), like
`rouge_score` without stemming; the pool check is O(pool x tokens^2) in pure Python, fine for
tens of thousands of short instructions per run.
"""

from __future__ import annotations

import re
import string

_TOKEN = re.compile(r"[a-z0-9]+")
# Tasks a text-only model cannot do (the paper's keyword list).
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
    "video",
    "audio",
    "music",
    "flowchart",
    "diagram",
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
    """The paper drops instructions of 3 words or fewer: `min_words` defaults to 4."""
    words = instruction.split()
    if len(words) < min_words or len(words) > max_words:
        return "length"
    if _UNSUPPORTED.search(instruction.lower()):
        return "unsupported_task"
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


def parse_numbered_list(completion: str) -> list[str]:
    """Instructions from a completion that continues a numbered list: text before the first
    number is the item the prompt's trailing number started, unless it is a chat model's
    preamble ("Sure! Here are some more tasks:"); wrapped lines are joined."""
    items: list[str] = []
    current: list[str] = []
    numbered = False
    for line in completion.splitlines():
        match = re.match(r"^\s*(?:Task\s*)?(\d+)\s*[.):]\s*(.*)$", line)
        if match:
            if current and (numbered or not _is_preamble(" ".join(current))):
                items.append(" ".join(current))
            numbered = True
            current = [match.group(2).strip()] if match.group(2).strip() else []
        elif line.strip():
            current.append(line.strip())
    if current and (numbered or not _is_preamble(" ".join(current))):
        items.append(" ".join(current))
    return [re.sub(r"\s+", " ", item).strip() for item in items if item.strip()]


def _is_preamble(text: str) -> bool:
    text = text.strip()
    return text.endswith(":") or _PREAMBLE.match(text) is not None
