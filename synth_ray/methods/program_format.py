"""The program a constrained program of thought is decoded into (`self_improve.constrain`
with `checker: program`), in Program of Thoughts' GSM8K format: lines assigning the givens
(`trays = 4`), then at most a few computed ones (`muffins = 12 * trays`), then the answer
(`ans = muffins - sold`) and at most two newlines; no blank line inside, no fence, no comment,
so `cut_program` keeps it whole.

    python -c "from synth_ray.methods.program_format import program_format; print(program_format(256).regex)"

Every line is an assignment `name = expression`. An expression is up to four names or
numbers joined by `+ - * / // % **`, or two terms each of which may be a parenthesized pair
(`(a + b) * c`). Names are lower case (`[a-z][a-z0-9_]*`, at most 12 characters), never a
keyword nor a builtin the sandbox's answer line calls, nor starts like a statement
(`UNNAMEABLE`, `STATEMENT_STARTS`); numbers have at most 6
digits (no leading zero) and 2 decimals. So every program of the language is Python that
compiles, and the sandbox still runs it: an undefined name, a division by zero or an
overflowing power fails there, as in a free program. The number
of lines is what fits max_tokens (methods/format_regex.py: a character per token at most):
up to 4 givens and 2 computed lines (at 256 tokens: 3 givens, 1 computed line), the answer
line always.
"""

from __future__ import annotations

import keyword

from synth_ray.methods.format_regex import (
    Pattern,
    alt,
    chars,
    identifier,
    literal,
    optional,
    repeat,
    seq,
)

NAME_CHARS = 12
MAX_GIVENS = 4
MAX_COMPUTED = 2
# A name is no keyword (`def = 3` would not compile) and none of the builtins the sandbox's
# answer line calls (`print = 24` breaks `print(ans)`); nor does it start as a statement the
# model would rather write: the 135M model opens with `def`, and held to a name it writes
# `defget_total = 24` instead of choosing one.
UNNAMEABLE = frozenset(
    [w for w in keyword.kwlist if w.islower()] + ["round", "int", "float", "isinstance", "abs"]
)
STATEMENT_STARTS = frozenset(["def", "import", "from", "print", "class", "return", "while"])
_DIGITS = frozenset("0123456789")

_NAME = identifier(NAME_CHARS, UNNAMEABLE, STATEMENT_STARTS)
# no leading zero: Python refuses `049`
_INTEGER = alt(literal("0"), seq(chars(_DIGITS - {"0"}, 1, 1), chars(_DIGITS, 0, 5)))
_NUMBER = seq(_INTEGER, optional(seq(literal("."), chars(_DIGITS, 1, 2))))
_OPERATOR = alt(*(literal(f" {op} ") for op in ("+", "-", "*", "/", "//", "%", "**")))
_ATOM = alt(_NAME, _NUMBER)
_TERM = alt(_ATOM, seq(literal("("), _ATOM, _OPERATOR, _ATOM, literal(")")))
EXPRESSION = alt(seq(_ATOM, repeat(seq(_OPERATOR, _ATOM), 0, 3)), seq(_TERM, _OPERATOR, _TERM))
_GIVEN = seq(_NAME, literal(" = "), optional(literal("-")), _NUMBER, literal("\n"))
_COMPUTED = seq(_NAME, literal(" = "), EXPRESSION, literal("\n"))
# The model ends its last line with a newline (or two, PoT's stop): held to the end of the
# answer line instead, it pads the last number with zeros (`3 * 100000`) until the end of
# the sequence is all that is left.
_ANSWER = seq(literal("ans = "), EXPRESSION, chars(frozenset("\n"), 0, 2))


def program_format(max_tokens: int) -> Pattern:
    """The program language for a budget of `max_tokens`: the answer line, and as many other
    lines as fit with it and the end-of-sequence token, filled in this order: one computed
    line, up to 4 givens, a second computed line. The givens come first in the program.
    ValueError when not even the answer line fits."""
    budget = max_tokens - 1
    if _ANSWER.longest > budget:
        raise ValueError(
            f"max_tokens {max_tokens} is too small for the answer line "
            f"(at least {_ANSWER.longest + 1})"
        )
    room = budget - _ANSWER.longest
    computed = min(1, room // _COMPUTED.longest)
    room -= computed * _COMPUTED.longest
    givens = min(MAX_GIVENS, room // _GIVEN.longest)
    room -= givens * _GIVEN.longest
    computed += min(MAX_COMPUTED - computed, room // _COMPUTED.longest)
    parts = []
    if givens:
        parts.append(repeat(_GIVEN, 0, givens))
    if computed:
        parts.append(repeat(_COMPUTED, 0, computed))
    return seq(*parts, _ANSWER)
