"""The rephrase method's built-in styles, each its paper's or corpus's own prompt.

    python -c "from synth_ray.methods.rephrase_styles import STYLES; print(sorted(STYLES))"

- WRAP (Maini et al. 2024, "Rephrasing the Web", appendix): `easy`, `medium`, `hard`, `qa`,
  after WRAP's system prompt.
- FinePhrase (Hugging Face 2025, huggingface/finephrase prompts/format/*.md): `faq`, `table`,
  `tutorial`, `math`; a user prompt only. FinePhrase rephrases whole documents
  (`rephrase.whole_document: true`).
- Nemotron-CC (Su et al. 2024, "Nemotron-CC: Transforming Common Crawl into a Refined
  Long-Horizon Pretraining Dataset", appendix; as in NeMo Curator): `wikipedia` and
  `distill` with their system prompts, `diverse_qa`, `extract_knowledge` and
  `knowledge_list` with none. Each answer is post-processed per style as NeMo Curator's
  Nemotron-CC pipeline does (tutorials/nemotron-cc/nemotron_sdg_utilities.py), see
  `nemotron_postprocess`: an answer cut by max_tokens is dropped (`truncated`), markdown
  emphasis is removed, `wikipedia` and `distill` answers that do not open with their required
  line are dropped (`missing_opening`) and lose it when they do, and a `diverse_qa` answer with
  anything but its opening line before the first question is dropped (`unparsed`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from synth_ray.methods.base import Dropped


@dataclass(frozen=True)
class Style:
    template: str  # with {text}
    system: str | None
    source: str
    # the answer -> the row's text, or the filter that drops it (Nemotron-CC's per-style
    # post-processing); None: the answer is the row's text
    postprocess: Callable[[str], str | Dropped] | None = None
    # an answer cut by max_tokens is dropped as `truncated` (NeMo Curator's token-count filter
    # sits just under each style's output budget, so a cut answer never passes it)
    drop_truncated: bool = False


WRAP_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the questions."
)
NEMOTRON_DISTILL_SYSTEM = (
    "You are an artificial intelligence assistant. You carefully provide accurate, factual, "
    "thoughtful, nuanced answers, and are brilliant at reasoning."
)

WRAP = "WRAP"
FINEPHRASE = "FinePhrase"
NEMOTRON = "Nemotron-CC"

WIKIPEDIA_OPENING = "Here is a paraphrased version:"
DIVERSE_QA_OPENING = "Here are the questions and answers based on the provided text:"
DISTILL_OPENING = "Paraphrased Text:"
PASSAGE_LINES = ("Passage:", "Passage 1:", "Passage 2:", "Passage 3:")

# NeMo Curator's MarkdownRemover: bold, italic, underline, then links (which keep their URL)
_MARKDOWN = (
    (re.compile(r"\*\*(.*?)\*\*"), r"\1"),
    (re.compile(r"\*(.*?)\*"), r"\1"),
    (re.compile(r"_(.*?)_"), r"\1"),
    (re.compile(r"\[.*?\]\((.*?)\)"), r"\1"),
)


def without_markdown(text: str) -> str:
    """The text without markdown emphasis and link markup, as NeMo Curator's MarkdownRemover
    leaves it before every Nemotron-CC style's own step: `**Paraphrased Text:**` becomes
    `Paraphrased Text:`, and so does any `a_b_c` become `ab_c`."""
    for pattern, replacement in _MARKDOWN:
        text = pattern.sub(replacement, text)
    return text


def without_quotes(text: str) -> str:
    """NeMo Curator's QuotationRemover: a text wholly inside double quotes loses them, unless
    its first line is a quoted line of its own."""
    if len(text.strip()) > 2 and text[0] == '"' and text[-1] == '"':
        if "\n" not in text.strip() or text.split("\n")[0][-1] != '"':
            text = text[1:-1]
    return text


def after_opening(opening: str) -> Callable[[str], str | Dropped]:
    """Nemotron-CC's post-processing of `wikipedia` and `distill`: an answer that does not begin
    with `opening` (exactly, once markdown is removed) is dropped as `missing_opening`, so a
    refusal or a "Sure! Here is..." preamble never becomes a row; one that does loses it."""

    def postprocess(text: str) -> str | Dropped:
        text = without_markdown(text)
        if not text.startswith(opening):
            return Dropped("missing_opening")
        return without_quotes(text[len(opening) :].strip())

    return postprocess


def diverse_qa_pairs(text: str) -> str | Dropped:
    """Nemotron-CC's post-processing of `diverse_qa` (NeMo Curator's
    NemotronCCDiverseQAPostprocessor): the answer's lines lose their "- " bullets and the
    opening line, and each "Question:" line starts a pair that takes the lines after it. An
    answer with any other line before its first question, or with no question, is dropped as
    `unparsed`. The pairs are kept in order, a blank line apart."""
    lines = [line.strip() for line in without_markdown(text).split("\n") if line.strip()]
    lines = [line[2:].strip() if line.startswith("- ") else line for line in lines]
    if lines and lines[0] == DIVERSE_QA_OPENING:
        lines = lines[1:]
    pairs: list[str] = []
    for line in lines:
        if line.startswith("Question:"):
            pairs.append(line)
        elif pairs:
            pairs[-1] += "\n" + line
        else:
            return Dropped("unparsed")
    if not pairs:
        return Dropped("unparsed")
    return "\n\n".join(pairs)


def knowledge_items(text: str) -> str:
    """Nemotron-CC's post-processing of `knowledge_list` (NeMo Curator's
    NemotronCCKnowledgeListPostprocessor): a first line that is not a bullet (a preamble) is
    removed, and each bulleted or indented line loses its bullet and indent."""
    lines = []
    for index, line in enumerate(without_markdown(text).split("\n")):
        if index == 0 and not line.startswith("-"):
            continue
        lines.append(line[2:].strip() if line.startswith(("  ", "- ")) else line)
    return "\n".join(lines)


def without_passage_labels(text: str) -> str:
    """Nemotron-CC's post-processing of `extract_knowledge`: lines that are only a passage
    label ("Passage:", "Passage 1:" to "Passage 3:") are removed."""
    lines = without_markdown(text).split("\n")
    return "\n".join(line for line in lines if line not in PASSAGE_LINES)


STYLES: dict[str, Style] = {
    "easy": Style(
        "For the following paragraph give me a paraphrase of the same using a very small "
        "vocabulary and extremely simple sentences that a toddler will understand:\n\n{text}",
        WRAP_SYSTEM,
        WRAP,
    ),
    "medium": Style(
        "For the following paragraph give me a diverse paraphrase of the same in high quality "
        "English language as in sentences on Wikipedia:\n\n{text}",
        WRAP_SYSTEM,
        WRAP,
    ),
    "hard": Style(
        "For the following paragraph give me a paraphrase of the same using very terse and "
        "abstruse language that only an erudite scholar will understand. Replace simple words "
        "and phrases with rare and complex ones:\n\n{text}",
        WRAP_SYSTEM,
        WRAP,
    ),
    "qa": Style(
        "Convert the following paragraph into a conversational format with multiple tags of "
        '"Question:" followed by "Answer:":\n\n{text}',
        WRAP_SYSTEM,
        WRAP,
    ),
    "faq": Style(
        "Rewrite the document as a comprehensive FAQ (Frequently Asked Questions). Extract or "
        "infer the key questions a reader would have about this topic, then provide clear, "
        "direct answers. Order questions logically\u2014from foundational to advanced, or by "
        "topic area. Each answer should be self-contained and understandable without reference "
        "to other answers. Ensure the FAQ works as a standalone document. Output only the FAQ, "
        "nothing else.\n\nDocument:\n{text}\n",
        None,
        FINEPHRASE,
    ),
    "table": Style(
        "Rewrite the document as a structured table that organizes the key information, then "
        "generate one question-answer pair based on the table. First extract the main data "
        "points and organize them into a clear table format with appropriate headers using "
        "markdown table syntax with proper alignment. After the table, generate one insightful "
        "question that can be answered using the table data. Provide a clear, concise answer to "
        "the question based on the information in the table. Output only the table followed by "
        "the question-answer pair, nothing else.\n\nDocument:\n{text}\n",
        None,
        FINEPHRASE,
    ),
    "tutorial": Style(
        "Rewrite the document as a clear, step-by-step tutorial or instructional guide. Use "
        "numbered steps or bullet points where appropriate to enhance clarity. Preserve all "
        "essential information while ensuring the style feels didactic and easy to follow. "
        "Output only the tutorial, nothing else.\n\nDocument:\n{text}\n",
        None,
        FINEPHRASE,
    ),
    "math": Style(
        "Rewrite the document to create a mathematical word problem based on the numerical data "
        "or relationships in the text. Provide a step-by-step solution that shows the "
        "calculation process clearly. Create a problem that requires multi-step reasoning and "
        "basic arithmetic operations. It should include the question followed by a detailed "
        "solution showing each calculation step. Output only the problem and solution, nothing "
        "else.\n\nDocument:\n{text}",
        None,
        FINEPHRASE,
    ),
    "wikipedia": Style(
        "For the following paragraph give me a diverse paraphrase of the same in high quality "
        "English language as in sentences on Wikipedia. Begin your answer on a separate line "
        'with "Here is a paraphrased version:".\n\nText: {text}',
        WRAP_SYSTEM,
        NEMOTRON,
        postprocess=after_opening(WIKIPEDIA_OPENING),
        drop_truncated=True,
    ),
    "diverse_qa": Style(
        "Task:\nRead the text, ask questions and answer them.\n\nFollow these instructions:\n"
        "1. Ask diverse questions that require different cognitive skills or cover different "
        "aspects of the text.\n2. Ask questions in various forms such as:\n  - Yes/No questions "
        "that require determining whether a statement is true or false.\n  - Open-ended "
        "questions that begin with words like what, how, when, where, why and who.\n  - "
        "Multi-choice questions that offers two or more options to choose from. Include the "
        "options in the question.\n  - Comparison questions that compare two quantities or "
        "objects and determine the relationship between them.\n  - Reading comprehension "
        "questions that test the ability to understand and analyze the text.\n  - "
        "Problem-solving questions that test the ability to solve mathematical, physical, or "
        "logical problems.\n3. Focus on asking questions about factual information, important "
        "knowledge, or concrete details in the text.\n4. Write questions and answers using "
        "clear and concise language.\n5. Use plain text. Do not use Markdown.\n6. Each question "
        'and answer pair should be on a separate line. Tag the question with "Question:" and '
        'the answer with "Answer:".\n\nText:\n{text}\n\nTask:\nAfter reading the above text, '
        "ask up to 8 questions and provide the correct answers following the instructions. "
        "Give your response in this format:\n\nHere are the questions and answers based on the "
        "provided text:\n- Question: [first question] Answer: [first answer]\n- Question: "
        "[second question] Answer: [second answer]\n....",
        None,
        NEMOTRON,
        postprocess=diverse_qa_pairs,
        drop_truncated=True,
    ),
    "distill": Style(
        "Your task is to read and paraphrase the provided text following these instructions:\n"
        "- Aim to create a condensed but accurate and informative version of the original text, "
        "not a simplistic summary.\n- Capture and preserve the crucial information, key "
        "concepts, important values, factual details in the original text, while making it "
        "more readable and accessible.\n- Retain technical terms, specialized vocabulary, and "
        "complex concepts.\n- Retain examples, explanations of reasoning processes, and "
        "supporting evidence to maintain the text's depth and context.\n- Only include "
        "information that is present in the original text. Do not adding new or unsubstantiated "
        "claims.\n- Write the text in plain text without formatting.\n\nHere is the text:\n"
        "{text}\n\nTask:\nAfter thoroughly reading the above text, paraphrase it in "
        "high-quality and clear English following the instructions. Begin your response with "
        '"Paraphrased Text:".',
        NEMOTRON_DISTILL_SYSTEM,
        NEMOTRON,
        postprocess=after_opening(DISTILL_OPENING),
        drop_truncated=True,
    ),
    "extract_knowledge": Style(
        "Your task is to rewrite knowledge from the provided text following these instructions."
        "\n- Rewrite the text as a passage or passages using easy-to-understand and "
        "high-quality English like sentences in textbooks and Wikipedia.\n- Focus on content in "
        "disciplines such as humanities, social sciences, natural sciences, technology, "
        "engineering, math, law and legal, business, management, art, education, agricultural "
        "sciences, politics, and history.\n- Disregard content that does not contain useful "
        "facts or knowledge.\n- Retain examples, explanations of reasoning processes, and "
        "supporting evidence to maintain the text's depth and context.\n- Do not add or alter "
        "details. Only restate what is already in the text.\n- Write in plain text.\n- Do not "
        "add titles, subtitles, note, or comment.\n\nText:\n{text}\n\nTask:\nRewrite facts and "
        "knowledge from the above text as a passage or passages following the instructions.",
        None,
        NEMOTRON,
        postprocess=without_passage_labels,
        drop_truncated=True,
    ),
    "knowledge_list": Style(
        "Review the text and extract the key information. Follow these instructions:\n- "
        "Carefully read the above text and provide a concise and organized list of factual "
        "information, concrete details, key concepts, and important numbers and statistics "
        "extracted from the text.\n- Ensure each point is clear, specific, and supported by the "
        "original text.\n- Ensure the extract text is information-dense and easier to learn "
        "from.\n- Do not add titles or headings.\n\nText:\n{text}\n\nTask:\nExtract the factual "
        "information, concrete details, and key concepts from the above text following the "
        "instructions.",
        None,
        NEMOTRON,
        postprocess=knowledge_items,
        drop_truncated=True,
    ),
}
