"""Random strings of a regular expression's language, drawn from the parsed regex itself
(Python's own parser), for property tests of structured-output regexes: every string drawn
fully matches the regex. hypothesis's `from_regex` does this too; it is not a dependency."""

from __future__ import annotations

import random
import re

try:  # Python 3.11+
    from re import _constants as sre_constants
    from re import _parser as sre_parse
except ImportError:  # pragma: no cover - Python 3.10
    import sre_constants  # type: ignore[no-redef]
    import sre_parse  # type: ignore[no-redef]

PRINTABLE = [chr(c) for c in range(32, 127)] + ["\n", "\t", "é", "—"]
_MAXREPEAT = sre_constants.MAXREPEAT


def _category(name: object) -> list[str]:
    pattern = {
        sre_constants.CATEGORY_DIGIT: r"\d",
        sre_constants.CATEGORY_NOT_DIGIT: r"\D",
        sre_constants.CATEGORY_SPACE: r"\s",
        sre_constants.CATEGORY_NOT_SPACE: r"\S",
        sre_constants.CATEGORY_WORD: r"\w",
        sre_constants.CATEGORY_NOT_WORD: r"\W",
    }[name]
    return [c for c in PRINTABLE if re.fullmatch(pattern, c)]


_CLASSES: dict[tuple, list[str]] = {}


def _class(items: list) -> list[str]:
    key = tuple(items)
    if key not in _CLASSES:
        _CLASSES[key] = _members(items)
    return _CLASSES[key]


def _members(items: list) -> list[str]:
    negate = False
    chars: set[str] = set()
    for op, arg in items:
        if op is sre_constants.NEGATE:
            negate = True
        elif op is sre_constants.LITERAL:
            chars.add(chr(arg))
        elif op is sre_constants.RANGE:
            chars.update(chr(c) for c in range(arg[0], arg[1] + 1))
        elif op is sre_constants.CATEGORY:
            chars.update(_category(arg))
        else:
            raise NotImplementedError(op)
    if negate:
        return [c for c in PRINTABLE if c not in chars]
    return sorted(chars)


def longest(pattern: str) -> int:
    """The length of the longest string `pattern` matches, by Python's own regex parser."""
    return sre_parse.parse(pattern).getwidth()[1]


def _draw(parsed, rng: random.Random, out: list[str], long: bool | str) -> None:
    for op, arg in parsed:
        if op is sre_constants.LITERAL:
            out.append(chr(arg))
        elif op is sre_constants.NOT_LITERAL:
            out.append(rng.choice([c for c in PRINTABLE if c != chr(arg)]))
        elif op is sre_constants.ANY:
            out.append(rng.choice([c for c in PRINTABLE if c != "\n"]))
        elif op is sre_constants.IN:
            out.append(rng.choice(_class(arg)))
        elif op is sre_constants.SUBPATTERN:
            _draw(arg[-1], rng, out, long)
        elif op is sre_constants.BRANCH:
            widest = max(arg[1], key=lambda branch: branch.getwidth()[1])
            pick = widest if long == "longest" else rng.choice(arg[1])
            _draw(pick, rng, out, long)
        elif op in (sre_constants.MAX_REPEAT, sre_constants.MIN_REPEAT):
            low, high, body = arg
            high = low + 8 if high is _MAXREPEAT else high
            # long draws favour the upper bound: lengths at the edge are the ones that matter
            if long == "longest" or (long and rng.random() < 0.5):
                count = high
            else:
                count = rng.randint(low, high)
            for _ in range(count):
                _draw(body, rng, out, long)
        elif op is sre_constants.AT:
            continue
        else:
            raise NotImplementedError(op)


def draw(pattern: str, rng: random.Random, long: bool | str = False) -> str:
    """One string of `pattern`'s language; `long` tends to the longest it allows, "longest"
    is as long as it allows (each repetition at its most, each alternative the widest)."""
    return _draw_parsed(sre_parse.parse(pattern), rng, long)


def _draw_parsed(parsed, rng: random.Random, long: bool | str) -> str:
    out: list[str] = []
    _draw(parsed, rng, out, long)
    return "".join(out)


def strings(pattern: str, count: int, seed: int = 0) -> list[str]:
    """`count` strings of the language: a third drawn freely, a third tending to the longest,
    a third as long as the language allows (at the edge of a length budget)."""
    rng = random.Random(seed)
    modes: list[bool | str] = [False, True, "longest"]
    parsed = sre_parse.parse(pattern)
    found = [_draw_parsed(parsed, rng, modes[i % 3]) for i in range(count)]
    compiled = re.compile(pattern)
    bad = [s for s in found if not compiled.fullmatch(s)]
    assert not bad, f"drawn strings outside the language: {bad[:3]}"
    return found
