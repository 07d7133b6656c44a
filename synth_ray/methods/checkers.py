"""Answer checkers for self-improvement: extract a final answer, normalize it, compare.

    python -c "from synth_ray.methods.checkers import get_checker; c = get_checker('numeric'); print(c.extract('so 3 + 4 = 7.\\n#### 7'))"

Each checker turns free text (a model's rationale, or a raw reference such as GSM8K's answer
with `#### 18` at the end) into a normalized final answer, or None when there is none.
- numeric: GSM8K's `#### 42`, else "the answer is 42", else the last number; commas, `$`,
  trailing units and a `.0` are normalized away ("$1,200.00 dollars" -> "1200"). Numbers are
  exact rationals: ".5" is 0.5, and a fraction ("3/4", MATH's "\\frac{3}{4}") is one number, so
  3/4 and 0.75 compare equal; one that has no finite decimal is written "1/3".
- exact: "the answer is X" or the last non-empty line; case, spaces and final punctuation.
- choice: a multiple-choice letter A-E: "(B)", "answer: B", "the answer is B".
Checkers are looked up by name (`self_improve.checker`); `CHECKERS` is the registry.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import MAX_EMAX, MAX_PREC, MIN_EMIN, Context, Decimal, InvalidOperation, localcontext
from fractions import Fraction

from synth_ray.errors import ConfigError

_DECIMAL = r"(?:\d[\d,]*(?:\.\d+)?|\.\d+)"
# a fraction is one number: "3/4" is three quarters, not a 3 and a 4 (a date, 3/4/2020, is no
# fraction: its first number is read)
_NUMBER = r"(?<![\d/])-?\$?" + _DECIMAL + r"(?:/" + _DECIMAL + r"(?![\d/]))?"
_GSM8K_FINAL = re.compile(r"####\s*(" + _NUMBER + ")")
_ANSWER_IS = re.compile(r"answer\s*(?:is|:)\s*:?\s*(.+)", re.IGNORECASE)
_ANY_NUMBER = re.compile(_NUMBER)
# MATH's LaTeX fractions, \frac{3}{4} (also \dfrac, \tfrac), read as 3/4
# (and the unbraced \frac12 of one-digit parts; a sign inside the braces: \frac{-3}{4})
_LATEX_FRACTION = re.compile(
    r"\\[dt]?frac\s*(?:\{\s*(-?\d+)\s*\}|(\d))\s*(?:\{\s*(-?\d+)\s*\}|(\d))"
)


# exact at any length: Decimal's default context (28 digits) would round, or raise on quantize,
# and int() refuses numbers of more than 4300 digits
_EXACT = Context(prec=MAX_PREC, Emax=MAX_EMAX, Emin=MIN_EMIN)


def _spell(value: Decimal) -> str:
    with localcontext(_EXACT):
        if value == value.to_integral_value():
            return str(value.quantize(Decimal(1)))
        return format(value.normalize(), "f")


def _spell_fraction(value: Fraction) -> str:
    """A finite decimal ("0.75") where the fraction has one, else "p/q" in lowest terms."""
    rest, twos, fives = value.denominator, 0, 0
    while rest % 2 == 0:
        rest, twos = rest // 2, twos + 1
    while rest % 5 == 0:
        rest, fives = rest // 5, fives + 1
    if rest != 1:
        return f"{_spell(Decimal(value.numerator))}/{_spell(Decimal(value.denominator))}"
    places = max(twos, fives)
    scaled = value * 10**places  # an integer: the denominator divides 10**places
    return _spell(Decimal(scaled.numerator).scaleb(-places, _EXACT))


def _latex_as_slash(found: re.Match[str]) -> str:
    numerator = found.group(1) or found.group(2)
    denominator = found.group(3) or found.group(4)
    if denominator.startswith("-"):  # keep the sign in front, where the number reader sees it
        numerator, denominator = f"-{numerator}".replace("--", ""), denominator[1:]
    return f"{numerator}/{denominator}"


def normalize_number(text: str) -> str | None:
    """The first number in `text`, an exact rational spelled one way: "$1,200.00" -> "1200",
    ".5" -> "0.5", "3/4" and "0.75" -> "0.75", "2/6" -> "1/3"; None when there is none (or
    a fraction divides by zero)."""
    match = _ANY_NUMBER.search(_LATEX_FRACTION.sub(_latex_as_slash, text))
    if match is None:
        return None
    raw = match.group(0).replace("$", "").replace(",", "")
    numerator, _, denominator = raw.partition("/")
    try:
        value = Decimal(numerator)
        if not denominator:
            return _spell(value)
        divisor = Decimal(denominator)
    except InvalidOperation:
        return None
    if divisor == 0:
        return None
    return _spell_fraction(Fraction(value) / Fraction(divisor))


def extract_numeric(text: str) -> str | None:
    text = _LATEX_FRACTION.sub(_latex_as_slash, text)
    final = _GSM8K_FINAL.findall(text)
    if final:
        return normalize_number(final[-1])
    stated = _ANSWER_IS.findall(text)
    for candidate in reversed(stated):
        number = normalize_number(candidate)
        if number is not None:
            return number
    numbers = _ANY_NUMBER.findall(text)
    return normalize_number(numbers[-1]) if numbers else None


def extract_exact(text: str) -> str | None:
    stated = _ANSWER_IS.findall(text)
    line = (
        stated[-1]
        if stated
        else next((ln for ln in reversed(text.strip().splitlines()) if ln.strip()), "")
    )
    if "####" in line:
        line = line.split("####")[-1]
    normalized = re.sub(r"\s+", " ", line).strip().strip(".!?\"'").strip().lower()
    return normalized or None


_CHOICE_PATTERNS = [
    re.compile(r"answer\s*(?:is|:)\s*:?\s*\(?([A-E])\b\)?"),
    re.compile(r"####\s*\(?([A-E])\b"),
    re.compile(r"\(([A-E])\)"),
    re.compile(r"^\s*([A-E])[.)]?\s*$", re.MULTILINE),
]


def extract_choice(text: str) -> str | None:
    for pattern in _CHOICE_PATTERNS:
        found = pattern.findall(text)
        if found:
            return found[-1].upper()
    return None


@dataclass(frozen=True)
class Checker:
    name: str
    extract_fn: object

    def extract(self, text: str | None) -> str | None:
        if not text:
            return None
        return self.extract_fn(text)  # type: ignore[operator]

    def is_correct(self, predicted: str | None, reference: str | None) -> bool:
        return predicted is not None and reference is not None and predicted == reference


CHECKERS = {
    "numeric": Checker("numeric", extract_numeric),
    "exact": Checker("exact", extract_exact),
    "choice": Checker("choice", extract_choice),
}


def get_checker(name: str) -> Checker:
    try:
        return CHECKERS[name]
    except KeyError:
        raise ConfigError(
            f"config key self_improve.checker: unknown checker {name!r} (expected one of {sorted(CHECKERS)})"
        ) from None
