"""Prompts of the `textbook` method: Cosmopedia's, one per audience it wrote for, and one of our
own for phi-style exercises.

    python -c "from synth_ray.methods.textbook_prompts import FORMATS; print(sorted(FORMATS))"

Cosmopedia (Ben Allal et al. 2024, huggingface/cosmopedia), verbatim, typos included:
- prompts/web_samples/build_web_prompts.py: `wikihow`, `blogpost` and `textbook_narrative`,
  which name no audience, and `textbook_academic`, written for college students only. Their
  `<ADD_TOPIC>` (the seed's cluster topic, added to half the prompts) is left out: we have no
  clusters.
- prompts/stories/build_ultrachat_stories_prompts.py: `young_children_story`.
- prompts/openstax/build_openstax_prompts.py: `textbook_unit`, one prompt per audience (young
  children, middle school students, college students, professionals and researchers), each
  an e-learning module or textbook on a topic. OpenStax's prompts name a book, then a
  chapter, section and unit from its outline; here the topic is the book and there is no
  outline. They are written for a topic, so they take topic seeds only.
A topic seed (`textbook.seed: topic`) in a prompt Cosmopedia wrote for a web extract is the
same prompt with the extract's words changed to a topic's (`TOPIC_WORDS`): `Here is a topic:
"..."` for `Here is an extract from a webpage: "..."`, "the topic above" for "the extract
above", and so on. Cosmopedia cut each extract to 1000 characters; so do we.
`textbook_exercises` is ours: phi-1 ("Textbooks Are All You Need", Gunasekar et al. 2023)
describes textbook sections followed by exercises with solutions, but publishes no prompt. It
takes whichever audience is configured, at `{audience}`.
"""

from __future__ import annotations

from dataclasses import dataclass

from synth_ray.methods.templating import fill

EXTRACT_CHARS = 1000
# the audience key of a prompt of ours that takes any audience, named where `{audience}` is
ANY_AUDIENCE = "*"


@dataclass(frozen=True)
class Prompt:
    """One prompt, `{seed}` where the seed goes, for a web extract and for a topic."""

    extract: str | None  # None: written for a topic only
    topic: str


# The words of Cosmopedia's extract prompts that a topic seed changes: (theirs, ours).
TOPIC_WORDS = (
    ('Here is an extract from a webpage: "{seed}".', 'Here is a topic: "{seed}".'),
    ("related to the extract above", "related to the topic above"),
    ("expands upon the extract above", "expands upon the topic above"),
    ("related to the given extract", "related to the given topic"),
    ("inspired from this text snippet:", "inspired from this topic:"),
    ("everything in the snippet", "everything in the topic"),
    ("the main ideas of the extract above", "the main ideas of the topic above"),  # ours
)


def for_extract(text: str) -> Prompt:
    """A prompt written for a web extract, and its topic-seed variant (`TOPIC_WORDS`)."""
    topic = text
    for theirs, ours in TOPIC_WORDS:
        topic = topic.replace(theirs, ours)
    if "extract" in topic or "snippet" in topic:
        raise ValueError(f"extract wording left for a topic in: {topic[:60]!r}")
    return Prompt(text, topic)


def openstax(beginning: str, criteria: str) -> Prompt:
    """An OpenStax prompt as Cosmopedia composed it (beginning, then a blank line, then the
    criteria) for a book on the topic, without its chapter/section/unit sentences."""
    return Prompt(None, beginning.replace("{{X}}", "'{seed}'") + "\n" + criteria)


# format -> audience -> prompt; the audience None: the format names none
FORMATS: dict[str, dict[str | None, Prompt]] = {
    "wikihow": {
        None: for_extract(
            'Here is an extract from a webpage: "{seed}".\n\nWrite a long and very detailed '
            "tutorial that could be part of WikiHow whose title is related to the extract "
            "above. Include in depth explanations for each step and how it helps achieve the "
            "desired outcome, inluding key tips and guidelines. \nEnsure clarity and "
            "practicality, allowing readers to easily follow and apply the instructions. Do not "
            "use images."
        )
    },
    "textbook_narrative": {
        None: for_extract(
            'Here is an extract from a webpage: "{seed}".\n\nWrite an extensive and detailed '
            "course unit suitable for a textbook, related to the given extract. Do not just "
            "list concepts, but develop each one in detail before moving to the next, as we "
            "prioritize depth of understanding and comprehensive exploration of the subject "
            "matter over breadth. Focus on:\n\n- Rigor: Ensure in-depth coverage of the "
            "concepts.\n- Engagement: Use a narrative style akin to Michael Lewis, making it "
            "captivating and thought-provoking.\n- Relevance: Connect the topic with current "
            "trends, real-life examples, or recent studies. Do not use images.\nDo not include "
            "a title or an introduction, simply write the content without headlines and "
            "introductory phrases. Do not use images."
        )
    },
    "textbook_academic": {
        "college students": for_extract(
            'Here is an extract from a webpage: "{seed}".\n\nWrite an extensive and detailed '
            "course unit suitable for a textbook targeted at college students, related to the "
            "given extract. Do not just list concepts, but develop each one in detail before "
            "moving to the next, as we prioritize depth of understanding and comprehensive "
            "exploration of the subject matter over breadth. Focus on:\n\n- Rigor: Ensure "
            "in-depth coverage of the concepts/sections.\n- Engagement: Write with an academic, "
            "professional and engaging tone that captivates interest.\n- Application: "
            "Incorporate specific, practical examples, such as proofs in calculus or critical "
            "dates and figures in history.\nDo not include a title or an introduction, simply "
            "write the content without headlines and introductory phrases. Do not use images."
        )
    },
    "blogpost": {
        None: for_extract(
            'Here is an extract from a webpage: "{seed}".\n\nWrite an informative and '
            "insightful blog post that expands upon the extract above. Your post should delve "
            "into the nuances of the topic, offering fresh perspectives and deeper analysis. "
            "Aim to:\n\n- Inform: Provide valuable, well-researched information that educates "
            "the reader.\n- Engage: Write in a conversational tone that connects with the "
            "audience, making complex ideas accessible.\n- Illustrate: Use examples, anecdotes, "
            "or personal experiences to bring the topic to life.\nDo not give a title and do "
            'not start with sentences like "Have you ever..." or "Hello dear readers..", simply '
            "write the content without these introductory phrases."
        )
    },
    "young_children_story": {
        None: for_extract(
            "Write an educational story (3-5 paragraphs) targeted at young children using "
            "simple words. The story should be inspired from this text snippet: "
            "\n\u201c{seed}\u201d\n\nThe story doesn\u2019t have to be addressing everything in "
            "the snippet, it is there just for inspiration.\nThe story should have the "
            "following features: \n- Science integration: embed basic science concepts within "
            "the story, explaining them through the characters' adventures and discoveries. For "
            "example, if the story includes a scene where characters are looking at the sky, "
            "you could have them wonder why it's blue and explain the physics behind in "
            "grade-school level.\n- Dialogue: include at least one dialogue and insightful "
            "conversation.\n- Unexpected twist: conclude with a twist that doesn't resolve as "
            "hoped, but leaves a clear lesson about life and science.\nDo not start with "
            'classic sentences like "Once upon a time", be creative.'
        )
    },
    "textbook_unit": {
        "young children": openstax(
            "Create a fun and simple e-learning module on {{X}}, tailored for 5 to 10 year-old "
            "children. Opt for a playful and imaginative approach, suitable for very young "
            "learners.\n",
            "In this module for young children, aim to:\n\n- Use very simple, everyday words "
            "and phrases that a 5-year-old would easily understand, avoiding any complex "
            "concepts or technical terms.\n- Tell a short, engaging story with colorful cartoon "
            "characters. For instance, to illustrate economic trade concepts use characters "
            "like animals or friendly creatures trading snacks or toys. Another example is "
            "addition and calculus, use apples to explain: '2 apples + 3 apples = 5 apples' .\n"
            "- Keep the tone light, cheerful, and encouraging. Do not use images.",
        ),
        "middle school students": openstax(
            "Create an engaging and accessible e-learning module on {{X}}, tailored for middle "
            "school students without prior knowledge on the topic.\n",
            "Instead of a traditional textbook approach, use a story-based narrative to explain "
            "the concept. Try to:\n\n- Avoid technical jargon and present the ideas in a "
            "straightforward, conversational tone to spark curiosity and relate to the "
            "experiences of a younger audience.\n- Include interactive elements like thought "
            "experiments and real-life scenarios. The goal is to topic approachable and fun, "
            "sparking curiosity about how it applies to everyday life.\n- Do not use "
            'introductory phrases such as "welcome to this unit" at the beginning or '
            "conclusions the end. Do not use images.",
        ),
        "professionals and researchers": openstax(
            "Create an extract of a scientific journal article for {{X}}, tailored for "
            "professionals and researchers on the topic.\n",
            "The style should mirror that of a scholarly publication, not school textbooks, "
            "aiming to engage a highly knowledgeable audience with very deep expertise. Try "
            "to:\n\n- Present advanced theories, using technical and academic language.\n- "
            "Include critical analysis of recent research findings and debates in the field, "
            "with a detailed examination of empirical data and statistical methodologies.\n- "
            "The article should reflect the depth and complexity of content found in top-tier "
            "economics journals, intended for a readership deeply entrenched in the field.\n- "
            "Do not add come up with references or add them at the end of the article. If there "
            "are mathematical expressions use a correct LateX formatting and do not use images.",
        ),
        "college students": openstax(
            "Write a comprehensive and in-depth textbook on {{X}}, tailored for college "
            "students.\n",
            "Try to be:\n\n- Rigorous: Ensure very detailed and in-depth coverage of the "
            "concepts.\n- Engaging: Write with an academic and engaging tone that captivates "
            "interest.\n- Applied: Use specific and practical examples. For example, if the "
            "topic is integration in calculus, include equations and proofs of the concept "
            "you're teaching. As another example, if the topic is the history of the United "
            "States, include dates, names, and key events.\nIf there are mathematical "
            "expressions use a correct LateX formatting. Do not use images and avoid "
            'introductory phrases such as "welcome to this unit" at the beginning or '
            "conclusions the end.",
        ),
    },
    # ours (phi-1 publishes no prompt): a section that teaches, then exercises with solutions
    "textbook_exercises": {
        ANY_AUDIENCE: for_extract(
            'Here is an extract from a webpage: "{seed}".\n\nWrite a section of a textbook for '
            "{audience} that teaches the main ideas of the extract above clearly and step by "
            "step, with worked examples. End the section with three exercises of increasing "
            "difficulty, each followed by its full solution. Do not include a title. Do not "
            "use images."
        )
    },
}
OWN_FORMATS = {"textbook_exercises"}


def audiences_of(format_name: str, audiences: list[str]) -> list[str | None]:
    """The audiences among `audiences` that a format has a prompt for, in their order: [None]
    for a format that names no audience, all of them for ours."""
    prompts = FORMATS[format_name]
    if None in prompts:
        return [None]
    if ANY_AUDIENCE in prompts:
        return list(audiences)
    return [a for a in audiences if a in prompts]


def textbook_prompt(format_name: str, seed: str, seed_kind: str, audience: str | None) -> str:
    """The prompt for one seed in one format, in the text written for `audience`; `seed_kind`
    is "extract" or "topic". Raises ValueError for an audience the format has no prompt for,
    or an extract given to a format written for topics only."""
    prompts = FORMATS[format_name]
    key = None if None in prompts else ANY_AUDIENCE if ANY_AUDIENCE in prompts else audience
    if key not in prompts:
        raise ValueError(f"{format_name}: no prompt for the audience {audience!r}")
    prompt = prompts[key]
    template = prompt.extract if seed_kind == "extract" else prompt.topic
    if template is None:
        raise ValueError(f"{format_name}: written for a topic, not a web extract")
    return fill(template, {"seed": seed.strip()[:EXTRACT_CHARS], "audience": audience or ""})
