"""Regular expressions a completion is decoded into (structured outputs), built with the
length of their longest match, so a format can be made to end inside a token budget.

    python -c "from synth_ray.methods.format_regex import text; print(text(40).longest)"

A completion decoded under a regex is still cut by max_tokens, and a format whose end its
parser needs is then lost. Every character a pattern here admits is printable ASCII (or a
newline), and a token of a byte-level BPE vocabulary spans at least one byte, so a match of n
characters takes at most n tokens: `Pattern.longest` is that n, exact, computed as the
pattern is built. It is the only safe bound: SmolLM2 spends a token per digit and on most
symbols. `fitting` finds the largest size of a format that fits a budget.

Used by the `constrain` options of Self-Instruct's instances, program of thought and
OSS-Instruct (methods/self_instruct.py, program_format.py, oss_instruct.py).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

# printable ASCII, space to tilde: one byte each
PRINTABLE = frozenset(chr(c) for c in range(0x20, 0x7F))


@dataclass(frozen=True)
class Pattern:
    """A regex (in the subset every structured-outputs engine accepts: literals, classes,
    groups, alternation, bounded repetition) and the length of its longest match."""

    regex: str
    longest: int


def literal(text: str) -> Pattern:
    """`text` itself (newlines as `\\n`)."""
    escaped = re.sub(r"([.^$*+?()\[\]{}|\\])", r"\\\1", text).replace("\n", r"\n")
    return Pattern(escaped, len(text))


def char_class(allowed: set[str] | frozenset[str]) -> str:
    """A bracket expression of exactly `allowed` (ASCII, written as ranges where they run)."""
    codes = sorted(ord(c) for c in allowed)
    if not codes or codes[-1] > 0x7F:
        raise ValueError("char_class: needs ASCII characters")
    parts, start = [], 0
    for i in range(1, len(codes) + 1):
        if i == len(codes) or codes[i] != codes[i - 1] + 1:
            first, last = codes[start], codes[i - 1]
            parts.append(
                _class_char(first) if first == last else f"{_class_char(first)}-{_class_char(last)}"
            )
            start = i
    return "[" + "".join(parts) + "]"


def _class_char(code: int) -> str:
    char = chr(code)
    if char == "\n":
        return r"\n"
    if char == "\t":
        return r"\t"
    return "\\" + char if char in "\\]^-[" else char


def chars(allowed: set[str] | frozenset[str], low: int, high: int) -> Pattern:
    """`low` to `high` characters, each one of `allowed`."""
    cls = char_class(allowed)
    return Pattern(cls if low == high == 1 else f"{cls}{{{low},{high}}}", high)


def seq(*parts: Pattern) -> Pattern:
    """`parts` one after another (no pattern here has an alternation outside a group)."""
    return Pattern("".join(p.regex for p in parts), sum(p.longest for p in parts))


def alt(*parts: Pattern) -> Pattern:
    return Pattern("(" + "|".join(p.regex for p in parts) + ")", max(p.longest for p in parts))


def optional(part: Pattern) -> Pattern:
    return Pattern(f"({part.regex})?", part.longest)


def repeat(part: Pattern, low: int, high: int) -> Pattern:
    return Pattern(f"({part.regex}){{{low},{high}}}", part.longest * high)


def text(high: int, banned: str = "", lines: bool = False, not_first: str = "") -> Pattern:
    """1 to `high` printable ASCII characters starting with a non-space (nor one of
    `not_first`), without the characters `banned`; several lines with `lines`. One character
    class repeated: a repeated group of alternatives (a character, or `E` and what may follow
    it) is what xgrammar, vLLM's default backend, masks slowly, over 100 ms a token at a few
    hundred repetitions, so what a format must not hold is banned by characters."""
    plain = (PRINTABLE | ({"\n"} if lines else set())) - set(banned)
    first = chars(plain - {" ", "\n"} - set(not_first), 1, 1)
    return seq(first, chars(plain, 0, high - 1))


def identifier(
    high: int,
    excluded: set[str] | frozenset[str],
    prefixes: set[str] | frozenset[str] = frozenset(),
    written: str = "",
) -> Pattern:
    """A lower-case identifier (`[a-z][a-z0-9_]*`) of at most `high` characters that is none
    of the words `excluded` (Python's keywords, say) and starts with none of `prefixes`: a
    trie of those words, each branch off it free. `written` is what is written already (for
    the recursion)."""
    lower = frozenset("abcdefghijklmnopqrstuvwxyz")
    rest = lower | frozenset("0123456789_")
    allowed = rest if written else lower
    depth = len(written)
    words = set(excluded) | set(prefixes)
    children = sorted({w[depth] for w in words if w.startswith(written) and len(w) > depth})
    branches = []
    if high >= 1:
        others = allowed - set(children)
        if others:
            branches.append(seq(chars(others, 1, 1), chars(rest, 0, high - 1)))
        for c in children:
            if written + c not in prefixes:
                branches.append(
                    seq(literal(c), identifier(high - 1, excluded, prefixes, written + c))
                )
    ends_here = bool(written) and written not in excluded
    if not branches:
        return literal("")
    return optional(alt(*branches)) if ends_here else alt(*branches)


def fitting(make: Callable[[int], Pattern], budget: int, low: int = 1) -> tuple[int, Pattern]:
    """The largest size `n` (at least `low`) whose `make(n)` is at most `budget` characters
    long, and that pattern; ValueError when even `make(low)` is longer. `make` must grow with
    `n`."""
    if make(low).longest > budget:
        raise ValueError(f"the shortest format takes {make(low).longest} characters, over {budget}")
    lo, hi = low, max(low, budget)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if make(mid).longest <= budget:
            lo = mid
        else:
            hi = mid - 1
    return lo, make(lo)
