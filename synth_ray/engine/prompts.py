"""Chat messages -> token ids through the model's own chat template, on the driver.

    python -c "from synth_ray.engine.prompts import PromptRenderer; r = PromptRenderer.from_model('MODEL_DIR'); print(r.render([{'role': 'user', 'content': 'hi'}]))"

Prompts are rendered next to the generator that runs them (runtime/slice_worker.py), before
they reach its engine, so a too-long prompt becomes an error row and `n_input_tokens` is known
exactly. A renderer loaded with `from_model` pickles as its model name and is loaded once per
process on the other side, so a method holding one is cheap to ship to every generator.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from synth_ray.config import JobConfig


class PromptRenderer:
    def __init__(self, tokenizer: Any, source: str | None = None) -> None:
        """`source` is the model as configured (`engine.model`: resolved again on whichever
        node unpickles it, like the engine's model); None pickles the tokenizer whole."""
        self.tokenizer = tokenizer
        self.source = source
        self.has_chat_template = bool(getattr(tokenizer, "chat_template", None))
        self._folds_system: bool | None = None  # decided on first use

    @property
    def folds_system(self) -> bool:
        """Whether the chat template has no system role, so system text goes in the first
        user turn. Mistral-7B-Instruct-v0.1 (WRAP's own rephraser) and Gemma raise on a
        system message; some templates drop it silently: both are detected with a probe."""
        if self._folds_system is None:
            self._folds_system = self.has_chat_template and not self._keeps_system_text()
        return self._folds_system

    def _keeps_system_text(self) -> bool:
        probe = "synth-ray system probe 7f3a"
        messages = [{"role": "system", "content": probe}, {"role": "user", "content": "hi"}]
        try:
            rendered = self.tokenizer.apply_chat_template(
                messages, add_generation_prompt=True, tokenize=False
            )
        except Exception:  # jinja's TemplateError ("System role not supported") and friends
            return False
        return probe in rendered

    @classmethod
    def from_model(cls, model: str, source: str | None = None) -> PromptRenderer:
        """The tokenizer of `model` (a local folder or hub id); `source` defaults to it."""
        from transformers import AutoTokenizer

        return cls(AutoTokenizer.from_pretrained(model), source=source or model)

    def __reduce__(self) -> tuple[Any, ...]:
        if self.source is None:
            return (PromptRenderer, (self.tokenizer, None))
        return (renderer_for, (self.source,))

    def render_text(self, messages: list[dict[str, str]]) -> str:
        if self.has_chat_template and self.folds_system:
            messages = fold_system_messages(messages)
        if self.has_chat_template:
            return self.tokenizer.apply_chat_template(
                messages, add_generation_prompt=True, tokenize=False
            )
        # Base models without a template: the contents, in order, one per paragraph.
        return "\n\n".join(m["content"] for m in messages)

    def render(self, messages: list[dict[str, str]]) -> list[int]:
        """Token ids of the prompt, special tokens as the template writes them (no extra BOS)."""
        return list(self.tokenizer.encode(self.render_text(messages), add_special_tokens=False))

    def count_tokens(self, texts: list[str]) -> list[int]:
        """Token counts of plain texts (no special tokens), batched for speed."""
        if not texts:
            return []
        encoded = self.tokenizer(texts, add_special_tokens=False)["input_ids"]
        return [len(ids) for ids in encoded]


def fold_system_messages(messages: list[dict[str, str]]) -> list[dict[str, str]]:
    """System messages merged into the first user message (system text, a blank line, then
    the user text), for templates without a system role."""
    system = [m["content"] for m in messages if m["role"] == "system"]
    rest = [dict(m) for m in messages if m["role"] != "system"]
    if not system:
        return rest
    first_user = next((m for m in rest if m["role"] == "user"), None)
    if first_user is None:
        return [{"role": "user", "content": "\n\n".join(system)}, *rest]
    first_user["content"] = "\n\n".join([*system, first_user["content"]])
    return rest


@functools.lru_cache(maxsize=4)
def renderer_for(model: str) -> PromptRenderer:
    """One renderer per configured model per process, resolved on this node (the embedded
    model converted here if needed): what an unpickled renderer becomes."""
    from synth_ray.engine.models import resolve_model

    return PromptRenderer.from_model(resolve_model(model), source=model)


def load_renderer(config: JobConfig) -> PromptRenderer:
    """The job's model's tokenizer and chat template (`config.engine.model`, or a remote
    engine's `openai.tokenizer`); an unusable one is a ConfigError naming it."""
    from synth_ray.engine.models import resolve_model
    from synth_ray.errors import ConfigError

    model = config.engine.tokenizer_source
    key = "engine.openai.tokenizer" if model != config.engine.model else "engine.model"
    try:
        return PromptRenderer.from_model(resolve_model(model), source=model)
    except ConfigError:
        raise
    except Exception as err:  # transformers raises many types for an unusable folder or id
        raise ConfigError(
            f"{key} {model}: cannot load its tokenizer ({type(err).__name__})"
        ) from None
