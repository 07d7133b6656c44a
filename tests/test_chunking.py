"""Chunking on paragraph and sentence boundaries, never over the token limit."""

from __future__ import annotations

from synth_ray.methods.chunking import split_into_chunks


def words(texts):
    return [len(t.split()) for t in texts]


def test_short_text_is_one_chunk():
    assert split_into_chunks("one two three.", 10, words) == ["one two three."]


def test_paragraphs_packed_greedily():
    text = "a b c.\n\nd e f.\n\ng h i j k l m n."
    assert split_into_chunks(text, 8, words) == ["a b c.\n\nd e f.", "g h i j k l m n."]


def test_long_paragraph_split_on_sentences_then_words():
    text = "One two three. Four five six. " + " ".join(["w"] * 12)
    chunks = split_into_chunks(text, 5, words)
    assert all(n <= 5 for n in words(chunks))
    assert " ".join(chunks).split() == text.split()  # nothing lost, order kept


def test_real_tokenizer_limit_respected(embedded_model):
    from synth_ray.engine.prompts import PromptRenderer

    renderer = PromptRenderer.from_model(embedded_model)
    text = "\n\n".join(
        f"Paragraph {i}. " + "The quick brown fox jumps over the lazy dog. " * (i + 1)
        for i in range(12)
    )
    chunks = split_into_chunks(text, 50, renderer.count_tokens)
    assert len(chunks) > 5
    assert max(renderer.count_tokens(chunks)) <= 50
    assert " ".join(chunks).split() == text.split()
