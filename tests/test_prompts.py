"""Chat templates: WRAP's system prompt reaches models whose template has no system role.

python -m pytest tests/test_prompts.py
"""

from __future__ import annotations

import copy

import pytest

from synth_ray.engine.prompts import PromptRenderer, fold_system_messages

# Mistral-7B-Instruct-v0.1's template (WRAP's own rephraser), in its essentials: it raises on
# any role but user/assistant.
MISTRAL_V01 = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token }}"
    "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}"
    "{% endif %}{% endfor %}"
)
# A template that silently drops the system message.
DROPS_SYSTEM = (
    "{% for message in messages %}{% if message['role'] == 'user' %}"
    "<user>{{ message['content'] }}</user>{% endif %}{% endfor %}<assistant>"
)

WRAP_MESSAGES = [
    {
        "role": "system",
        "content": "A chat between a curious user and an artificial intelligence assistant.",
    },
    {
        "role": "user",
        "content": "For the following paragraph give me a paraphrase ...: Cats sleep.",
    },
]


@pytest.fixture(scope="module")
def tokenizer(embedded_model):
    return PromptRenderer.from_model(embedded_model).tokenizer


@pytest.mark.parametrize("template", [MISTRAL_V01, DROPS_SYSTEM])
def test_system_text_is_folded_into_the_user_turn_without_a_system_role(tokenizer, template):
    custom = copy.deepcopy(tokenizer)
    custom.chat_template = template
    renderer = PromptRenderer(custom)
    assert renderer.folds_system
    text = renderer.render_text(WRAP_MESSAGES)
    assert "A chat between a curious user" in text and "Cats sleep." in text
    assert text.index("A chat between") < text.index("Cats sleep.")
    assert renderer.render(WRAP_MESSAGES)


def test_a_template_with_a_system_role_keeps_it(tokenizer):
    renderer = PromptRenderer(tokenizer)
    assert not renderer.folds_system
    assert renderer.render_text(WRAP_MESSAGES) == tokenizer.apply_chat_template(
        WRAP_MESSAGES, add_generation_prompt=True, tokenize=False
    )


def test_fold_system_messages():
    assert fold_system_messages(WRAP_MESSAGES) == [
        {
            "role": "user",
            "content": WRAP_MESSAGES[0]["content"] + "\n\n" + WRAP_MESSAGES[1]["content"],
        }
    ]
    only_user = [{"role": "user", "content": "hi"}]
    assert fold_system_messages(only_user) == only_user


def test_raw_prompt_reaches_the_engine_without_a_chat_template(tokenizer):
    """The raw-prompt path (Magpie's pre-query prefix, base models): the text is tokenized as
    it is, special tokens included, with no template around it."""
    from synth_ray.engine.requests import SamplingSpec
    from synth_ray.io.inputs import Document
    from synth_ray.methods.base import Candidate
    from synth_ray.methods.generate import GenerateMethod
    from synth_ray.plan import WorkUnit
    from synth_ray.runtime.units import UnitBuilder

    class RawMethod(GenerateMethod):
        def expand(self, doc):
            return [Candidate(f"r{doc.ordinal}", doc.source_id, raw_prompt=doc.text)]

    from synth_ray.methods.generate import GenerateConfig

    prefix = "<|im_start|>user\n"
    builder = UnitBuilder(
        RawMethod(GenerateConfig(), "m"),
        PromptRenderer(tokenizer),
        512,
        SamplingSpec(0.0, 1.0, 8),
        0,
    )
    pending = builder.build(WorkUnit(0, "u", 0, 1, 1), [Document(0, "d0", prefix)])
    [request] = pending.requests
    assert request.prompt_token_ids == tokenizer(prefix, add_special_tokens=False)["input_ids"]
    assert tokenizer.convert_tokens_to_ids("<|im_start|>") == request.prompt_token_ids[0]
    templated = PromptRenderer(tokenizer).render([{"role": "user", "content": prefix}])
    assert request.prompt_token_ids != templated
