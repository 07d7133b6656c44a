"""What every system in a benchmark runs: rendered prompts and each request's output budget.

    python -c "from synth_ray.bench.workload import output_budgets; print(output_budgets(8, 256, 'skewed', 0))"

Prompts are rendered once, here, with the model's chat template and handed to every system as
the same text (each system tokenizes it the same way, no special tokens added), so all of them
see identical token ids. Length modes:
- `fixed`: every request generates exactly `max_tokens` (`ignore_eos`): the fair ceiling.
- `skewed`: most requests short, a few long, still with `ignore_eos` so every system generates
  the same tokens: budgets drawn from a log-normal (median max_tokens/8, sigma 1.2, seeded),
  clipped to [1, max_tokens]. This is where a synchronous batch call waits for its longest
  request and a continuous feed should win.
- `natural`: the model stops by itself (no `ignore_eos`); tokens are counted as generated, so
  systems may differ in how many they made.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

LENGTH_MODES = ("fixed", "skewed", "natural")
SOURCES = ("questions", "rephrase")

_TOPICS = [
    "the history of the printing press",
    "how vaccines train the immune system",
    "why the sea is salty",
    "the rules of chess for a beginner",
    "how a bicycle gear works",
    "the water cycle",
    "how bread rises",
    "what a black hole is",
    "how to plant tomatoes",
    "the causes of the seasons",
    "how a refrigerator keeps food cold",
    "how bees make honey",
    "why leaves change colour in autumn",
    "how a compass finds north",
    "how rainbows form",
    "what inflation means for savings",
]
_FORMS = [
    "Explain {t} in a short paragraph.",
    "Write three bullet points about {t}.",
    "Describe {t} to a ten-year-old.",
    "Give a one-sentence summary of {t}.",
    "List common misconceptions about {t}.",
    "Write a short quiz question about {t}.",
    "Compare two viewpoints on {t}.",
    "Write a haiku about {t}.",
]
_REPHRASE_STYLES = ("medium", "easy", "hard", "qa")  # WRAP's four: the copy-heavy workload
_REPHRASE_CHUNK_TOKENS = 350


@dataclass(frozen=True)
class Workload:
    prompts: list[str]  # rendered with the chat template: sent as they are
    max_tokens: list[int]  # each request's output budget
    ignore_eos: bool
    lengths: str
    source: str

    @property
    def planned_output_tokens(self) -> int | None:
        """Tokens every system must generate, or None where the model decides (`natural`)."""
        return sum(self.max_tokens) if self.ignore_eos else None

    def write(self, path: Path) -> Path:
        with open(path, "w") as fh:
            for prompt, budget in zip(self.prompts, self.max_tokens, strict=True):
                fh.write(json.dumps({"prompt": prompt, "max_tokens": budget}) + "\n")
        return path


def output_budgets(n: int, max_tokens: int, lengths: str, seed: int) -> list[int]:
    """Each request's max_tokens for a length mode (see the module docstring)."""
    if lengths not in LENGTH_MODES:
        raise ValueError(f"lengths {lengths!r}: expected one of {', '.join(LENGTH_MODES)}")
    if lengths != "skewed":
        return [max_tokens] * n
    rng = random.Random(seed)
    median = max(1.0, max_tokens / 8)
    return [
        min(max_tokens, max(1, round(math.exp(rng.gauss(math.log(median), 1.2))))) for _ in range(n)
    ]


def question_messages(n: int) -> list[list[dict[str, str]]]:
    """Short instruction prompts, each different (so prefix caching cannot skip work)."""
    return [
        [
            {
                "role": "user",
                "content": _FORMS[i % len(_FORMS)].format(
                    t=_TOPICS[(i // len(_FORMS)) % len(_TOPICS)]
                )
                + f" (#{i})",
            }
        ]
        for i in range(n)
    ]


def rephrase_messages(
    documents: list[str], n: int, count_tokens: Callable[[list[str]], list[int]]
) -> list[list[dict[str, str]]]:
    """WRAP rephrasing prompts over chunks of `documents`, as a `rephrase` job sends them: the
    copy-heavy workload where n-gram speculation pays. Cycles through the four WRAP styles
    when there are fewer chunks than `n`."""
    from synth_ray.methods.chunking import split_into_chunks
    from synth_ray.methods.rephrase_styles import STYLES

    chunks = [
        chunk
        for doc in documents
        if doc and doc.strip()
        for chunk in split_into_chunks(doc, _REPHRASE_CHUNK_TOKENS, count_tokens)
    ]
    if not chunks:
        raise ValueError("the input has no text to rephrase")
    out = []
    for i in range(n):
        style = STYLES[_REPHRASE_STYLES[(i // len(chunks)) % len(_REPHRASE_STYLES)]]
        messages = [{"role": "system", "content": style.system}] if style.system else []
        messages.append(
            {"role": "user", "content": style.template.format(text=chunks[i % len(chunks)])}
        )
        out.append(messages)
    return out


def build_workload(
    model: str,
    n: int,
    max_tokens: int,
    lengths: str,
    source: str = "questions",
    documents: list[str] | None = None,
    seed: int = 0,
) -> Workload:
    """`n` prompts rendered with `model`'s chat template, and their output budgets."""
    from synth_ray.engine.prompts import PromptRenderer

    if source not in SOURCES:
        raise ValueError(f"source {source!r}: expected one of {', '.join(SOURCES)}")
    renderer = PromptRenderer.from_model(model)
    if source == "questions":
        conversations = question_messages(n)
    else:
        conversations = rephrase_messages(documents or [], n, renderer.count_tokens)
    prompts = [renderer.render_text(messages) for messages in conversations]
    return Workload(
        prompts=prompts,
        max_tokens=output_budgets(n, max_tokens, lengths, seed),
        ignore_eos=lengths != "natural",
        lengths=lengths,
        source=source,
    )
