"""Answer checkers on hand-made completions, malformed ones included."""

from __future__ import annotations

import pytest

from synth_ray.errors import ConfigError
from synth_ray.methods.checkers import get_checker


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("She has 3 + 4 = 7 apples.\n#### 7", "7"),
        ("Natalia sold 48/2 = 24 clips in May.\n#### 72", "72"),
        ("#### 1,800", "1800"),
        ("#### $1,200.00", "1200"),
        ("The total is 26.50 dollars.\n#### 26.50", "26.5"),
        ("So the answer is 18 dollars.", "18"),
        ("The answer is: $42.", "42"),
        ("First 5, then 9, finally 12 apples", "12"),
        ("#### -3", "-3"),
        ("#### 8.0", "8"),
        ("I am not sure.", None),
        ("", None),
        ("####", None),
        # past the 28 digits of Decimal's default context: exact, never an error
        ("#### " + "9" * 40, "9" * 40),
        ("#### 12345678901234567890123456789.50", "12345678901234567890123456789.5"),
        ("#### " + "1" * 5000, "1" * 5000),
    ],
)
def test_numeric(text, expected):
    assert get_checker("numeric").extract(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Half a cup each.\n#### .5", "0.5"),
        ("#### -.25", "-0.25"),
        ("She eats 3/4 of the pie.\n#### 3/4", "0.75"),
        ("So the answer is 3/4.", "0.75"),
        ("Each gets 1/3 of the cake", "1/3"),  # no finite decimal: a fraction, lowest terms
        ("#### 2/6", "1/3"),
        ("#### 10/2", "5"),
        ("#### -3/4", "-0.75"),
        ("#### 1/1024", "0.0009765625"),
        ("The probability is $\\boxed{\\frac{3}{4}}$.", "0.75"),  # MATH's reference
        ("The answer is \\dfrac{1}{3}.", "1/3"),
        ("#### 5/0", None),
        ("It was 3/4/2020 when we met.", "3"),  # a date is no fraction: its first number
        ("The answer is $\\frac12$.", "0.5"),  # LaTeX's unbraced one-digit parts
        ("The answer is \\frac{-3}{4}.", "-0.75"),  # a sign inside the braces
    ],
)
def test_numeric_decimals_and_fractions_are_exact_rationals(text, expected):
    assert get_checker("numeric").extract(text) == expected


def test_equal_rationals_compare_equal_however_written():
    numeric = get_checker("numeric")
    reference = numeric.extract("She has 3 out of 4 left.\n#### 3/4")
    for spelled in ("#### 0.75", "#### .75", "#### 6/8", "the answer is \\frac{3}{4}"):
        assert numeric.is_correct(numeric.extract(spelled), reference), spelled
    assert not numeric.is_correct(numeric.extract("#### 3"), reference)
    assert not numeric.is_correct(numeric.extract("#### 4"), reference)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Thinking...\nThe answer is Paris.", "paris"),
        ("Line one\n  Blue Whale  \n", "blue whale"),
        ("#### Yes", "yes"),
        ("   \n\n", None),
    ],
)
def test_exact(text, expected):
    assert get_checker("exact").extract(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Option (B) fits best.", "B"),
        ("So the answer is C.", "C"),
        ("Answer: (d)", None),  # lower case is not a choice letter
        ("#### E", "E"),
        ("Between (A) and (C), the answer is A", "A"),
        ("no letter here", None),
    ],
)
def test_choice(text, expected):
    assert get_checker("choice").extract(text) == expected


def test_correctness_needs_both_sides():
    numeric = get_checker("numeric")
    assert numeric.is_correct("18", "18") and not numeric.is_correct(None, "18")
    assert not numeric.is_correct("18", None)


def test_unknown_checker_is_a_config_error():
    with pytest.raises(ConfigError, match="self_improve.checker: unknown checker 'fuzzy'"):
        get_checker("fuzzy")
