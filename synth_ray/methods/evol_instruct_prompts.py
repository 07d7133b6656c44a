"""Prompt templates for Evol-Instruct (Xu et al. 2023, "WizardLM: Empowering Large Language
Models to Follow Complex Instructions"), following the evolving prompts of the paper's
appendix and code (nlpxucan/WizardLM, Evol_Instruct/depth.py and breadth.py): in-depth evolving
(one of four ways to make an instruction harder, plus our own `complicate_input`), in-breadth
evolving (a new, rarer instruction in the same domain), and the equality judgement used to
eliminate evolutions with no information gain.
"""

from __future__ import annotations

IN_DEPTH = """I want you act as a Prompt Rewriter.
Your objective is to rewrite a given prompt into a more complex version to make those famous AI systems (e.g., chatgpt and GPT4) a bit harder to handle.
But the rewritten prompt must be reasonable and must be understood and responded by humans.
Your rewriting cannot omit the non-text parts such as the table and code in #The Given Prompt#. Also, please do not omit the input in #The Given Prompt#.
You SHOULD complicate the given prompt using the following method:
{method}
You should try your best not to make the #Rewritten Prompt# become verbose, #Rewritten Prompt# can only add 10 to 20 words into #The Given Prompt#.
'#The Given Prompt#', '#Rewritten Prompt#', 'given prompt' and 'rewritten prompt' are not allowed to appear in #Rewritten Prompt#
#The Given Prompt#:
{instruction}
#Rewritten Prompt#:
"""

IN_DEPTH_METHODS = {
    "add_constraints": "Please add one more constraints/requirements into #The Given Prompt#.",
    "deepening": "If #The Given Prompt# contains inquiries about certain issues, the depth and "
    "breadth of the inquiry can be increased.",
    "concretizing": "Please replace general concepts with more specific concepts.",
    "increased_reasoning_steps": "If #The Given Prompt# can be solved with just a few simple "
    "thinking processes, you can rewrite it to explicitly request multiple-step reasoning.",
    # Not the paper's: WizardLM names "complicate input" but publishes no prompt for it (its code,
    # Evol_Instruct/depth.py, has the four above). Our wording; drawn only when configured.
    "complicate_input": "Please add a complex input (such as a table, a piece of code or a "
    "formula) that #The Given Prompt# must work on, and keep the task about that input.",
}

IN_BREADTH = """I want you act as a Prompt Creator.
Your goal is to draw inspiration from the #Given Prompt# to create a brand new prompt.
This new prompt should belong to the same domain as the #Given Prompt# but be even more rare.
The LENGTH and complexity of the #Created Prompt# should be similar to that of the #Given Prompt#.
The #Created Prompt# must be reasonable and must be understood and responded by humans.
'#Given Prompt#', '#Created Prompt#', 'given prompt' and 'created prompt' are not allowed to appear in #Created Prompt#
#Given Prompt#:
{instruction}
#Created Prompt#:
"""

EQUALITY_JUDGE = """Here are two Instructions to ChatGPT AI, do you think they are equal to each other, which meet the following requirements:
1. They have same constraints and requirements.
2. They have same depth and breadth of the inquiry.
The First Prompt: {first}
The Second Prompt: {second}
Your Judgement (Just answer: Equal or Not Equal. No need to explain the reason.):"""


def evolving_prompt(
    operation: str, instruction: str, templates: dict[str, str] | None = None
) -> str:
    """The evolving prompt for `operation`; `templates` may override in_depth / in_breadth."""
    templates = templates or {}
    if operation == "breadth":
        return templates.get("in_breadth", IN_BREADTH).replace("{instruction}", instruction)
    template = templates.get("in_depth", IN_DEPTH)
    return template.replace("{method}", IN_DEPTH_METHODS[operation]).replace(
        "{instruction}", instruction
    )
