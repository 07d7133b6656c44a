"""Self-Instruct's parsers and filters on hand-made completions, malformed ones included."""

from __future__ import annotations

import pytest

from synth_ray.methods.instruction_filters import (
    RougePool,
    heuristic_drop,
    parse_numbered_list,
    rouge_l,
)
from synth_ray.methods.self_instruct import parse_instance


def test_rouge_l_known_values():
    assert rouge_l("the cat sat on the mat", "the cat sat on the mat") == 1.0
    assert rouge_l("a b c d", "x y z") == 0.0
    # LCS "a c" = 2; precision 2/3, recall 2/2 -> F = 0.8
    assert rouge_l("a b c", "a c") == pytest.approx(0.8)
    assert rouge_l("", "anything") == 0.0


def test_pool_similarity_and_growth():
    pool = RougePool(["Write a poem about the sea."])
    assert pool.max_similarity("Write a poem about the sea!") == 1.0
    assert pool.max_similarity("List three capital cities in Asia.") < 0.3
    pool.add("List three capital cities in Asia.")
    assert pool.max_similarity("List three capital cities in Europe.") > 0.7


@pytest.mark.parametrize(
    ("instruction", "reason"),
    [
        ("Write a short story about a brave mouse.", None),
        ("Hi", "length"),
        (" ".join(["word"] * 200), "length"),
        ("Draw a picture of a cat using ASCII.", "unsupported_task"),
        ("Describe the image in the input.", "unsupported_task"),
        ("Summarize the attached video transcript.", "unsupported_task"),
        ("- Write a haiku about rain today", "starts_with_punctuation"),
        ("Écris un poème sur la mer s'il te plaît", "non_english"),
    ],
)
def test_heuristics(instruction, reason):
    assert heuristic_drop(instruction, min_words=3, max_words=150) == reason


def test_parse_numbered_list_continuation_and_wrapping():
    completion = "Give three tips for saving money.\n10. Translate the sentence\ninto French.\n11) Name a fruit.\n\n12."
    assert parse_numbered_list(completion) == [
        "Give three tips for saving money.",
        "Translate the sentence into French.",
        "Name a fruit.",
    ]
    assert parse_numbered_list("") == []
    assert parse_numbered_list("   \n\n") == []


@pytest.mark.parametrize(
    ("text", "classification", "expected"),
    [
        (
            "Example 1\nInput: 5 kg\nOutput: 11 pounds\nExample 2\nInput: 1 kg\nOutput: 2.2 pounds",
            False,
            ("5 kg", "11 pounds"),
        ),
        ("Output: Drink water and sleep well.", False, ("", "Drink water and sleep well.")),
        (
            "Class label: positive\nSentence: What a lovely day.\nClass label: negative\nSentence: Awful.",
            True,
            ("What a lovely day.", "positive"),
        ),
        ("I cannot help with that.", False, None),
        ("Input: same\nOutput: same", False, None),
        ("Class label:\nSentence: nothing", True, None),
    ],
)
def test_parse_instance(text, classification, expected):
    assert parse_instance(text, classification) == expected
