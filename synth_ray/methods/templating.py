"""Filling `{name}` placeholders in prompt templates, safely for any text.

    python -c "from synth_ray.methods.templating import fill; print(fill('Q: {q}', {'q': '{x}'}))"

`str.format` fails on a template or a value holding braces (JSON, code); these functions
touch only `{identifier}` placeholders, and a value put in is never filled again.
"""

from __future__ import annotations

import re


def placeholders(template: str) -> list[str]:
    """The `{name}` placeholders of a template, in order, each once."""
    seen: list[str] = []
    for name in re.findall(r"\{([A-Za-z_][A-Za-z0-9_]*)\}", template):
        if name not in seen:
            seen.append(name)
    return seen


def fill(template: str, values: dict[str, str]) -> str:
    """Fill `{name}` placeholders; braces elsewhere in the template or the values stay as they
    are (str.format would choke on a JSON example or code in a response)."""
    return re.sub(
        r"\{([A-Za-z_][A-Za-z0-9_]*)\}",
        lambda m: values.get(m.group(1), m.group(0)),
        template,
    )
