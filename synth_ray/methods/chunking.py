"""Split a document into chunks of at most N tokens on paragraph, then sentence boundaries.

    python -c "from synth_ray.methods.chunking import split_into_chunks; print(split_into_chunks('a b. c d.', 3, lambda t: [len(x.split()) for x in t]))"

Paragraphs are packed greedily into a chunk while they fit; a paragraph longer than the limit is
split into sentences, and a sentence longer than the limit into words. Packing adds the pieces'
token counts (plus one per joint); a packed chunk the tokenizer counts as longer after all is
split again, so no chunk exceeds the limit unless a single word does.
"""

from __future__ import annotations

import re
from collections.abc import Callable

TokenCounter = Callable[[list[str]], list[int]]

_PARAGRAPH = re.compile(r"\n\s*\n")
_SENTENCE = re.compile(r"(?<=[.!?。！？])\s+")


def _pieces(text: str, limit: int, count: TokenCounter) -> list[tuple[str, int, str]]:
    """(piece, tokens, joiner-before-it) at the coarsest granularity that fits the limit."""
    out: list[tuple[str, int, str]] = []
    paragraphs = [p.strip() for p in _PARAGRAPH.split(text) if p.strip()]
    for para, n in zip(paragraphs, count(paragraphs), strict=True):
        if n <= limit:
            out.append((para, n, "\n\n"))
            continue
        sentences = [s for s in _SENTENCE.split(para) if s.strip()]
        for i, (sent, m) in enumerate(zip(sentences, count(sentences), strict=True)):
            joiner = "\n\n" if i == 0 else " "
            if m <= limit:
                out.append((sent, m, joiner))
                continue
            words = sent.split()
            for j, (word, w) in enumerate(zip(words, count(words), strict=True)):
                out.append((word, w, joiner if j == 0 else " "))
    return out


def _pack(pieces: list[tuple[str, int, str]], limit: int) -> list[str]:
    chunks: list[str] = []
    current: list[str] = []
    used = 0
    for piece, n, joiner in pieces:
        extra = n + (1 if current else 0)
        if current and used + extra > limit:
            chunks.append("".join(current))
            current, used = [], 0
            extra = n
        current.append(piece if not current else joiner + piece)
        used += extra
    if current:
        chunks.append("".join(current))
    return chunks


def split_into_chunks(text: str, max_tokens: int, count: TokenCounter) -> list[str]:
    """Chunks of `text`, in order, each at most `max_tokens` tokens by `count`."""
    chunks = _pack(_pieces(text, max_tokens, count), max_tokens)
    result: list[str] = []
    for chunk, n in zip(chunks, count(chunks), strict=True):
        if n <= max_tokens or len(chunk.split()) < 2:
            result.append(chunk)
            continue
        words = chunk.split()
        half = len(words) // 2
        result.extend(split_into_chunks(" ".join(words[:half]), max_tokens, count))
        result.extend(split_into_chunks(" ".join(words[half:]), max_tokens, count))
    return result
