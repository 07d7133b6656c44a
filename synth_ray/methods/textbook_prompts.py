"""Prompts of the `textbook` method: Cosmopedia's, and one of our own for phi-style exercises.

    python -c "from synth_ray.methods.textbook_prompts import FORMATS; print(sorted(FORMATS))"

Cosmopedia (Ben Allal et al. 2024, huggingface/cosmopedia prompts/web_samples/
build_web_prompts.py and prompts/stories/build_ultrachat_stories_prompts.py): `wikihow`,
`textbook_narrative`, `textbook_academic`, `blogpost` and `young_children_story` are its texts
with two changes: the audience its textbook prompt names ("college students") is
`{audience}`, and a topic seed is introduced as `Here is a topic: "..."` where a web seed is
`Here is an extract from a webpage: "..."` (Cosmopedia's own openstax/stanford prompts are
topic-seeded in other words). Cosmopedia cut each extract to 1000 characters; so do we.
`textbook_exercises` is ours: phi-1 ("Textbooks Are All You Need", Gunasekar et al. 2023)
describes textbook sections followed by exercises with solutions, but publishes no prompt.
"""

from __future__ import annotations

from synth_ray.methods.templating import fill

EXTRACT_CHARS = 1000
WEB_SEED = 'Here is an extract from a webpage: "{seed}".'
TOPIC_SEED = 'Here is a topic: "{seed}".'

FORMATS = {
    "wikihow": (
        "{seed_line}\n\nWrite a long and very detailed tutorial that could be part of WikiHow "
        "whose title is related to the {seed_kind} above. Include in depth explanations for each "
        "step and how it helps achieve the desired outcome, including key tips and guidelines. \n"
        "Ensure clarity and practicality, allowing readers to easily follow and apply the "
        "instructions. Do not use images."
    ),
    "textbook_narrative": (
        "{seed_line}\n\nWrite an extensive and detailed course unit suitable for a textbook "
        "targeted at {audience}, related to the given {seed_kind}. Do not just list concepts, "
        "but develop each one in detail before moving to the next, as we prioritize depth of "
        "understanding and comprehensive exploration of the subject matter over breadth. Focus "
        "on:\n\n- Rigor: Ensure in-depth coverage of the concepts.\n- Engagement: Use a narrative "
        "style akin to Michael Lewis, making it captivating and thought-provoking.\n- Relevance: "
        "Connect the topic with current trends, real-life examples, or recent studies. Do not use "
        "images.\nDo not include a title or an introduction, simply write the content without "
        "headlines and introductory phrases. Do not use images."
    ),
    "textbook_academic": (
        "{seed_line}\n\nWrite an extensive and detailed course unit suitable for a textbook "
        "targeted at {audience}, related to the given {seed_kind}. Do not just list concepts, "
        "but develop each one in detail before moving to the next, as we prioritize depth of "
        "understanding and comprehensive exploration of the subject matter over breadth. Focus "
        "on:\n\n- Rigor: Ensure in-depth coverage of the concepts/sections.\n- Engagement: Write "
        "with an academic, professional and engaging tone that captivates interest.\n- "
        "Application: Incorporate specific, practical examples, such as proofs in calculus or "
        "critical dates and figures in history.\nDo not include a title or an introduction, "
        "simply write the content without headlines and introductory phrases. Do not use images."
    ),
    "blogpost": (
        "{seed_line}\n\nWrite an informative and insightful blog post that expands upon the "
        "{seed_kind} above. Your post should delve into the nuances of the topic, offering fresh "
        "perspectives and deeper analysis. Aim to:\n\n- Inform: Provide valuable, well-researched "
        "information that educates the reader.\n- Engage: Write in a conversational tone that "
        "connects with the audience, making complex ideas accessible.\n- Illustrate: Use "
        "examples, anecdotes, or personal experiences to bring the topic to life.\nDo not give a "
        'title and do not start with sentences like "Have you ever..." or "Hello dear '
        'readers..", simply write the content without these introductory phrases.'
    ),
    "young_children_story": (
        "Write an educational story (3-5 paragraphs) targeted at young children using simple "
        "words. The story should be inspired from this {seed_kind}: \n\u201c{seed}\u201d\n\n"
        "The story doesn\u2019t have to be addressing everything in the {seed_kind}, it is there "
        "just for inspiration.\nThe story should have the following features: \n- Science "
        "integration: embed basic science concepts within the story, explaining them through the "
        "characters' adventures and discoveries. For example, if the story includes a scene "
        "where characters are looking at the sky, you could have them wonder why it's blue and "
        "explain the physics behind in grade-school level.\n- Dialogue: include at least one "
        "dialogue and insightful conversation.\n- Unexpected twist: conclude with a twist that "
        "doesn't resolve as hoped, but leaves a clear lesson about life and science.\nDo not "
        'start with classic sentences like "Once upon a time", be creative.'
    ),
    # ours (phi-1 publishes no prompt): a section that teaches, then exercises with solutions
    "textbook_exercises": (
        "{seed_line}\n\nWrite a section of a textbook for {audience} that teaches the main "
        "ideas of the {seed_kind} above clearly and step by step, with worked examples. End the "
        "section with three exercises of increasing difficulty, each followed by its full "
        "solution. Do not include a title. Do not use images."
    ),
}
OWN_FORMATS = {"textbook_exercises"}


def textbook_prompt(format_name: str, seed: str, seed_kind: str, audience: str) -> str:
    """The prompt for one seed in one format; `seed_kind` is "extract" or "topic"."""
    seed = seed.strip()[:EXTRACT_CHARS]
    line = fill(WEB_SEED if seed_kind == "extract" else TOPIC_SEED, {"seed": seed})
    values = {"seed_line": line, "seed_kind": seed_kind, "audience": audience, "seed": seed}
    return fill(FORMATS[format_name], values)
