"""Chat messages -> token ids through the model's own chat template, on the driver.

    python -c "from synth_ray.engine.prompts import PromptRenderer; r = PromptRenderer.from_model('MODEL_DIR'); print(r.render([{'role': 'user', 'content': 'hi'}]))"

Rendering once on the driver means a too-long prompt is caught (and becomes an error row)
before it reaches an engine, and `n_input_tokens` is known exactly.
"""

from __future__ import annotations

from typing import Any


class PromptRenderer:
    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.has_chat_template = bool(getattr(tokenizer, "chat_template", None))

    @classmethod
    def from_model(cls, model: str) -> PromptRenderer:
        from transformers import AutoTokenizer

        return cls(AutoTokenizer.from_pretrained(model))

    def render_text(self, messages: list[dict[str, str]]) -> str:
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
