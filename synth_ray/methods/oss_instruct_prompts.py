"""Prompts of the `oss_instruct` method: Magicoder's OSS-Instruct prompt, and our tests variant.

    python -c "from synth_ray.methods.oss_instruct_prompts import PROMPT; print(PROMPT)"

`SYSTEM` and `PROMPT` are Magicoder's, verbatim (Wei et al. 2023, "Magicoder: Empowering Code
Generation with OSS-Instruct"; ise-uiuc/magicoder at 3ef43f0, `SYSTEM` in
src/magicoder/generate_data.py, `PROMPT` is data/prompt.txt, which generate_data.py fills with
`prompt_template.format(code=seed)`). `TESTS_PROMPT` is ours: the same prompt asking for a
third section, [Tests], of Python `assert` statements that check the solution, so a row can be
kept only when its solution passes them (Magicoder publishes no such prompt). `LANGUAGE_HINT`
is ours too, appended only when `oss_instruct.language` is set.
"""

from __future__ import annotations

from synth_ray.methods.templating import fill

SYSTEM = (
    "You are exceptionally skilled at crafting high-quality programming problems and offering "
    "precise solutions."
)

PROMPT = """Please gain inspiration from the following random code snippet to create a high-quality programming problem. Present your output in two distinct sections: [Problem Description] and [Solution].

Code snippet for inspiration:
```
{code}
```

Guidelines for each section:

1. [Problem Description]: This should be **completely self-contained**, providing all the contextual information one needs to understand and solve the problem. Assume common programming knowledge, but ensure that any specific context, variables, or code snippets pertinent to this problem are explicitly included.

2. [Solution]: Offer a comprehensive, **correct** solution that accurately addresses the [Problem Description] you provided."""

TESTS_PROMPT = """Please gain inspiration from the following random code snippet to create a high-quality programming problem. Present your output in three distinct sections: [Problem Description], [Solution] and [Tests].

Code snippet for inspiration:
```
{code}
```

Guidelines for each section:

1. [Problem Description]: This should be **completely self-contained**, providing all the contextual information one needs to understand and solve the problem. Assume common programming knowledge, but ensure that any specific context, variables, or code snippets pertinent to this problem are explicitly included.

2. [Solution]: Offer a comprehensive, **correct** solution in Python, in one ```python code block, that accurately addresses the [Problem Description] you provided. It must not read input or need any file or network access.

3. [Tests]: A ```python code block of `assert` statements, one per line, that check the [Solution] on a few inputs, including edge cases. They run right after the solution's code block, with nothing else."""

LANGUAGE_HINT = "\n\nWrite the [Solution] in {language}."

TEMPLATES = {"system": SYSTEM, "prompt": PROMPT, "tests_prompt": TESTS_PROMPT}
REQUIRED = {"system": set(), "prompt": {"code"}, "tests_prompt": {"code"}}


def oss_prompt(
    snippet: str,
    tests: bool = False,
    language: str | None = None,
    templates: dict[str, str] | None = None,
) -> str:
    """The user prompt for one seed snippet; `templates` may override prompt / tests_prompt."""
    templates = templates or {}
    name = "tests_prompt" if tests else "prompt"
    prompt = fill(templates.get(name, TEMPLATES[name]), {"code": snippet})
    if language and not tests:  # the tests prompt already asks for Python
        prompt += fill(LANGUAGE_HINT, {"language": language})
    return prompt
