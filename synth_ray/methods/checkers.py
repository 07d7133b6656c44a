"""Answer checkers for self-improvement: extract a final answer, normalize it, compare.

    python -c "from synth_ray.methods.checkers import get_checker; c = get_checker('numeric'); print(c.extract('so 3 + 4 = 7.\\n#### 7'))"

Each checker turns free text (a model's rationale, or a raw reference such as GSM8K's answer
with `#### 18` at the end) into a normalized final answer, or None when there is none.
- numeric: GSM8K's `#### 42`, else "the answer is 42", else the last number; commas, `$`,
  trailing units and a `.0` are normalized away ("$1,200.00 dollars" -> "1200").
- exact: "the answer is X" or the last non-empty line; case, spaces and final punctuation.
- choice: a multiple-choice letter A-E: "(B)", "answer: B", "the answer is B".
Checkers are looked up by name (`self_improve.checker`); `CHECKERS` is the registry.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Context, Decimal, InvalidOperation, localcontext

from synth_ray.errors import ConfigError

_NUMBER = r"-?\$?\d[\d,]*(?:\.\d+)?"
_GSM8K_FINAL = re.compile(r"####\s*(" + _NUMBER + ")")
_ANSWER_IS = re.compile(r"answer\s*(?:is|:)\s*:?\s*(.+)", re.IGNORECASE)
_ANY_NUMBER = re.compile(_NUMBER)


def normalize_number(text: str) -> str | None:
    match = _ANY_NUMBER.search(text)
    if match is None:
        return None
    raw = match.group(0).replace("$", "").replace(",", "")
    # exact at any length: the default context (28 digits) would round, or raise on quantize
    with localcontext(Context(prec=len(raw) + 2)):
        try:
            value = Decimal(raw)
        except InvalidOperation:
            return None
        if value == value.to_integral_value():
            return str(value.quantize(Decimal(1)))
        return format(value.normalize(), "f")


def extract_numeric(text: str) -> str | None:
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
