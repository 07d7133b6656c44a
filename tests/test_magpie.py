"""Method `magpie`: the pre-query prefix cut from real chat templates (and refused where it
cannot be), the filters, the stages' sampling, and a kill resumed exactly (simulated engine;
the real engine runs it in test_end_to_end.py).

    pytest tests/test_magpie.py
"""

from __future__ import annotations

import copy
import json

import pyarrow.parquet as pq
import pytest
from conftest import Crash, crash_on_commit, model_alias
from fake_backend import FakeBackend

from synth_ray.config import validate_config
from synth_ray.engine.prompts import PromptRenderer
from synth_ray.engine.requests import EngineResult
from synth_ray.errors import ConfigError
from synth_ray.io.output_store import OutputStore
from synth_ray.methods.magpie import pre_query_prefix
from synth_ray.runtime.job import run_job


@pytest.fixture()
def tokenizer(embedded_model):
    return copy.deepcopy(PromptRenderer.from_model(embedded_model).tokenizer)


def template(*json_text: str) -> str:
    """A chat template from its text in a tokenizer_config.json (JSON string escapes)."""
    return json.loads('"' + "".join(json_text) + '"')


# The templates exactly as the models' tokenizer_config.json hold them ("chat_template"), as
# openvinotoolkit/openvino.genai vendors them (tests/python_tests/data/tokenizer_configs.py).
LLAMA_3_1_8B_INSTRUCT = template(  # meta-llama/Meta-Llama-3.1-8B-Instruct
    r"{{- bos_token }}\n{%- if custom_tools is defined %}\n    {%- set tools = custom_tools %}\n{%"
    r"- endif %}\n{%- if not tools_in_user_message is defined %}\n    {%- set tools_in_user_messag"
    r"e = true %}\n{%- endif %}\n{%- if not date_string is defined %}\n    {%- set date_string = \""
    r"26 Jul 2024\" %}\n{%- endif %}\n{%- if not tools is defined %}\n    {%- set tools = none %}\n"
    r"{%- endif %}\n\n{#- This block extracts the system message, so we can slot it into the right"
    r" place. #}\n{%- if messages[0]['role'] == 'system' %}\n    {%- set system_message = messages"
    r"[0]['content']|trim %}\n    {%- set messages = messages[1:] %}\n{%- else %}\n    {%- set sys"
    r"tem_message = \"\" %}\n{%- endif %}\n\n{#- System message + builtin tools #}\n{{- \"<|start_"
    r"header_id|>system<|end_header_id|>\\n\\n\" }}\n{%- if builtin_tools is defined or tools is n"
    r"ot none %}\n    {{- \"Environment: ipython\\n\" }}\n{%- endif %}\n{%- if builtin_tools is de"
    r"fined %}\n    {{- \"Tools: \" + builtin_tools | reject('equalto', 'code_interpreter') | join"
    r"(\", \") + \"\\n\\n\"}}\n{%- endif %}\n{{- \"Cutting Knowledge Date: December 2023\\n\" }}\n"
    r"{{- \"Today Date: \" + date_string + \"\\n\\n\" }}\n{%- if tools is not none and not tools_i"
    r"n_user_message %}\n    {{- \"You have access to the following functions. To call a function,"
    r" please respond with JSON for a function call.\" }}\n    {{- 'Respond in the format {\"name\""
    r": function name, \"parameters\": dictionary of argument name and its value}.' }}\n    {{- \""
    r"Do not use variables.\\n\\n\" }}\n    {%- for t in tools %}\n        {{- t | tojson(indent=4"
    r") }}\n        {{- \"\\n\\n\" }}\n    {%- endfor %}\n{%- endif %}\n{{- system_message }}\n{{-"
    r" \"<|eot_id|>\" }}\n\n{#- Custom tools are passed in a user message with some extra guidance"
    r" #}\n{%- if tools_in_user_message and not tools is none %}\n    {#- Extract the first user m"
    r"essage so we can plug it in here #}\n    {%- if messages | length != 0 %}\n        {%- set f"
    r"irst_user_message = messages[0]['content']|trim %}\n        {%- set messages = messages[1:] "
    r"%}\n    {%- else %}\n        {{- raise_exception(\"Cannot put tools in the first user messag"
    r"e when there's no first user message!\") }}\n{%- endif %}\n    {{- '<|start_header_id|>user<"
    r"|end_header_id|>\\n\\n' -}}\n    {{- \"Given the following functions, please respond with a "
    r"JSON for a function call \" }}\n    {{- \"with its proper arguments that best answers the gi"
    r"ven prompt.\\n\\n\" }}\n    {{- 'Respond in the format {\"name\": function name, \"parameter"
    r"s\": dictionary of argument name and its value}.' }}\n    {{- \"Do not use variables.\\n\\n\""
    r" }}\n    {%- for t in tools %}\n        {{- t | tojson(indent=4) }}\n        {{- \"\\n\\n\" "
    r"}}\n    {%- endfor %}\n    {{- first_user_message + \"<|eot_id|>\"}}\n{%- endif %}\n\n{%- fo"
    r"r message in messages %}\n    {%- if not (message.role == 'ipython' or message.role == 'tool"
    r"' or 'tool_calls' in message) %}\n        {{- '<|start_header_id|>' + message['role'] + '<|e"
    r"nd_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' }}\n    {%- elif 'tool_calls"
    r"' in message %}\n        {%- if not message.tool_calls|length == 1 %}\n            {{- raise"
    r"_exception(\"This model only supports single tool-calls at once!\") }}\n        {%- endif %}"
    r"\n        {%- set tool_call = message.tool_calls[0].function %}\n        {%- if builtin_tool"
    r"s is defined and tool_call.name in builtin_tools %}\n            {{- '<|start_header_id|>ass"
    r"istant<|end_header_id|>\\n\\n' -}}\n            {{- \"<|python_tag|>\" + tool_call.name + \""
    r".call(\" }}\n            {%- for arg_name, arg_val in tool_call.arguments | items %}\n      "
    r"          {{- arg_name + '=\"' + arg_val + '\"' }}\n                {%- if not loop.last %}\n"
    r"                    {{- \", \" }}\n                {%- endif %}\n                {%- endfor "
    r"%}\n            {{- \")\" }}\n        {%- else  %}\n            {{- '<|start_header_id|>assi"
    r"stant<|end_header_id|>\\n\\n' -}}\n            {{- '{\"name\": \"' + tool_call.name + '\", '"
    r" }}\n            {{- '\"parameters\": ' }}\n            {{- tool_call.arguments | tojson }}\n"
    r"            {{- \"}\" }}\n        {%- endif %}\n        {%- if builtin_tools is defined %}\n"
    r"            {#- This means we're in ipython mode #}\n            {{- \"<|eom_id|>\" }}\n    "
    r"    {%- else %}\n            {{- \"<|eot_id|>\" }}\n        {%- endif %}\n    {%- elif messa"
    r"ge.role == \"tool\" or message.role == \"ipython\" %}\n        {{- \"<|start_header_id|>ipyt"
    r"hon<|end_header_id|>\\n\\n\" }}\n        {%- if message.content is mapping or message.conten"
    r"t is iterable %}\n            {{- message.content | tojson }}\n        {%- else %}\n        "
    r"    {{- message.content }}\n        {%- endif %}\n        {{- \"<|eot_id|>\" }}\n    {%- end"
    r"if %}\n{%- endfor %}\n{%- if add_generation_prompt %}\n    {{- '<|start_header_id|>assistant"
    r"<|end_header_id|>\\n\\n' }}\n{%- endif %}\n"
)
LLAMA_3_8B_INSTRUCT = template(  # meta-llama/Meta-Llama-3-8B-Instruct
    r"{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|star"
    r"t_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|e"
    r"ot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ con"
    r"tent }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_heade"
    r"r_id|>\n\n' }}{% endif %}"
)
QWEN2_7B_INSTRUCT = template(  # Qwen/Qwen2-7B-Instruct
    r"{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im"
    r"_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + me"
    r"ssage['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_gener"
    r"ation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
GEMMA_7B_IT = template(  # google/gemma-7b-it
    r"{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not s"
    r"upported') }}{% endif %}{% for message in messages %}{% if (message['role'] == 'user') != (l"
    r"oop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/"
    r"user/assistant/...') }}{% endif %}{% if (message['role'] == 'assistant') %}{% set role = 'mo"
    r"del' %}{% else %}{% set role = message['role'] %}{% endif %}{{ '<start_of_turn>' + role + '\n"
    r"' + message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}{% if add_generation_prompt "
    r"%}{{'<start_of_turn>model\n'}}{% endif %}"
)

# magpie-align/magpie configs/model_configs.json: "pre_query_template" of
# meta-llama/Meta-Llama-3-8B-Instruct, Meta-Llama-3.1-8B-Instruct (the same) and
# Qwen/Qwen2-7B-Instruct; "pre_query_template_with_system_prompt" of Meta-Llama-3-8B-Instruct
# and Qwen/Qwen2-Math-7B-Instruct (its Qwen2 template with Qwen2's default system text)
MAGPIE_LLAMA_3 = "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n"
MAGPIE_QWEN2 = "<|im_start|>user\n"
MAGPIE_SYSTEM_PROMPT = (
    "A chat between a curious user and an artificial intelligence assistant. The assistant "
    "gives helpful, detailed, and polite answers to the user's questions."
)
MAGPIE_LLAMA_3_WITH_SYSTEM = (
    "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"
    f"{MAGPIE_SYSTEM_PROMPT}<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n"
)
MAGPIE_QWEN2_WITH_SYSTEM = (
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
)


def with_template(tokenizer, chat_template: str, bos_token: str | None):
    tokenizer.chat_template = chat_template
    tokenizer.bos_token = bos_token  # what the template's `bos_token` renders as
    return tokenizer


@pytest.mark.parametrize(
    ("chat_template", "bos_token", "magpie", "stop"),
    [
        (LLAMA_3_1_8B_INSTRUCT, "<|begin_of_text|>", MAGPIE_LLAMA_3, "<|eot_id|>"),
        (QWEN2_7B_INSTRUCT, None, MAGPIE_QWEN2, "<|im_end|>"),
        (LLAMA_3_8B_INSTRUCT, "<|begin_of_text|>", MAGPIE_LLAMA_3, "<|eot_id|>"),
    ],
    ids=["llama-3.1", "qwen2", "llama-3"],
)
def test_prefix_is_magpies_bare_user_header(tokenizer, chat_template, bos_token, magpie, stop):
    """Llama 3.1's template writes its "Cutting Knowledge Date" system turn and Qwen2's its
    "You are a helpful assistant." when given no system message: neither is in Magpie's
    pre-query template, and neither is sent (Llama 3 writes none: its prefix is kept)."""
    with_template(tokenizer, chat_template, bos_token)
    assert pre_query_prefix(tokenizer) == (magpie, (stop,))


def test_embedded_models_prefix_is_its_bare_user_header(tokenizer):
    # SmolLM2's template writes "You are a helpful AI assistant named SmolLM, trained by
    # Hugging Face" as its system turn when given none
    assert "named SmolLM" in tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False
    )
    assert pre_query_prefix(tokenizer) == ("<|im_start|>user\n", ("<|im_end|>",))


@pytest.mark.parametrize(
    ("chat_template", "bos_token", "system_prompt", "expected"),
    [
        (
            LLAMA_3_8B_INSTRUCT,
            "<|begin_of_text|>",
            MAGPIE_SYSTEM_PROMPT,
            MAGPIE_LLAMA_3_WITH_SYSTEM,
        ),
        (QWEN2_7B_INSTRUCT, None, "You are a helpful assistant.", MAGPIE_QWEN2_WITH_SYSTEM),
        # Magpie's hand-written Llama 3.1 template is Llama 3's; the model's own has its date
        (
            LLAMA_3_1_8B_INSTRUCT,
            "<|begin_of_text|>",
            "Be brief.",
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge "
            "Date: December 2023\nToday Date: 26 Jul 2024\n\nBe brief.<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\n",
        ),
    ],
    ids=["llama-3", "qwen2", "llama-3.1"],
)
def test_a_system_prompt_is_the_templates_system_turn(
    tokenizer, chat_template, bos_token, system_prompt, expected
):
    with_template(tokenizer, chat_template, bos_token)
    assert pre_query_prefix(tokenizer, system_prompt)[0] == expected


def test_a_system_prompt_needs_a_template_with_a_system_role(tokenizer):
    with_template(tokenizer, GEMMA_7B_IT, "<bos>")
    assert pre_query_prefix(tokenizer) == ("<bos><start_of_turn>user\n", ("<end_of_turn>",))
    with pytest.raises(ConfigError, match="magpie.system_prompt: .* drops or refuses"):
        pre_query_prefix(tokenizer, "Be brief.")


# Qwen1.5-1.8B-Chat's: a turn ends only when another follows, so its default system turn's
# end cannot be told apart from the user header's opening
ENDS_WHEN_FOLLOWED = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content']}}"
    "{% if (loop.last and add_generation_prompt) or not loop.last %}{{ '<|im_end|>' + '\n'}}"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt and messages[-1]['role'] != 'assistant' %}"
    "{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def test_a_default_system_turn_that_cannot_be_cut_is_refused_not_sent(tokenizer):
    tokenizer.chat_template = ENDS_WHEN_FOLLOWED
    with pytest.raises(ConfigError, match="set magpie.system_prompt"):
        pre_query_prefix(tokenizer)
    assert pre_query_prefix(tokenizer, "You are a helpful assistant")[0] == (
        "<|im_start|>system\nYou are a helpful assistant<|im_end|>\n<|im_start|>user\n"
    )


@pytest.mark.parametrize(
    ("template", "why"),
    [
        (None, "has no chat template"),
        ("{{ messages[0]['content'] }}", "writes nothing before the user's message"),
        ("{{ messages[0]['content'] }} / {{ messages[0]['content'] }}", "exactly once"),
        ("len {{ messages[0]['content'] | length }}: {{ messages[0]['content'] }}", "depends on"),
    ],
)
def test_templates_that_cannot_be_cut_are_refused(tokenizer, template, why):
    tokenizer.chat_template = template
    with pytest.raises(ConfigError, match=why):
        pre_query_prefix(tokenizer)


INSTRUCTIONS = [
    "How do volcanoes form on the ocean floor?",
    "",  # empty
    "Hi there",  # too short
    "how do VOLCANOES form   on the ocean floor?",  # a duplicate of the first
    "Write a poem about the sea and its endless",  # truncated
    "Explain what a hash table is and when to use one.",
    "Give me three tips for learning French quickly.",
    "Give me three tips for learning French quickly.",  # a duplicate
]


class ScriptedModel:
    def __init__(self, embedded_model: str) -> None:
        self.tokenizer = PromptRenderer.from_model(embedded_model).tokenizer
        self.prefix = pre_query_prefix(self.tokenizer)[0]
        self.sampling: dict[str, object] = {}

    def __call__(self, request):
        prompt = self.tokenizer.decode(request.prompt_token_ids)
        rid, tokens = request.request_id, len(request.prompt_token_ids)
        if prompt == self.prefix:  # the raw pre-query prefix, nothing else
            self.sampling["instruction"] = request.sampling
            i = self.index[rid]
            why = "length" if i == 4 else "stop"
            return EngineResult(rid, INSTRUCTIONS[i], tokens, 9, why)
        self.sampling["response"] = request.sampling
        asked = prompt.split("<|im_start|>user\n")[-1].split("<|im_end|>")[0]
        why = "length" if asked == INSTRUCTIONS[6] else "stop"  # cut by max_tokens: kept
        return EngineResult(rid, f"An answer to: {asked}", tokens, 9, why)


def magpie_config(tmp_path, **magpie):
    return validate_config(
        {
            "method": "magpie",
            "output": {"path": str(tmp_path / "out"), "rows_per_shard": 2},
            "engine": {"max_model_len": 1024},
            "sampling": {"max_tokens": 64, "temperature": 0.3},
            "magpie": {"num_instructions": len(INSTRUCTIONS), **magpie},
        }
    )


def scripted(embedded_model):
    from synth_ray.methods.base import row_id

    model = ScriptedModel(embedded_model)
    model.index = {row_id(f"magpie-{i:07d}", "instruction"): i for i in range(len(INSTRUCTIONS))}
    return model


def rows(path):
    return [r for f in OutputStore(path).data_files() for r in pq.read_table(f).to_pylist()]


def test_magpie_job_filters_dedupes_and_answers(tmp_path, embedded_model):
    from synth_ray.methods.stages import GeneratedDocuments

    model = scripted(embedded_model)
    backend = FakeBackend(responder=model)
    specs = []
    real_add = backend.add_stage
    backend.add_stage = lambda spec: (specs.append(spec), real_add(spec))[-1]
    summary = run_job(magpie_config(tmp_path), show_progress=False, backend=backend)
    # the instruction requests are made by the replicas, never shipped as a list
    assert isinstance(specs[0].documents, GeneratedDocuments)
    out = rows(tmp_path / "out")
    assert [r["instruction"] for r in out] == [
        INSTRUCTIONS[0],
        INSTRUCTIONS[5],
        INSTRUCTIONS[6],
    ]
    assert out[0]["response"] == f"An answer to: {INSTRUCTIONS[0]}"
    # gen_res.py keeps a response cut by max_tokens; its row says so
    assert [r["finish_reason"] for r in out] == ["stop", "stop", "length"]
    stats = summary.stats
    assert stats["dropped_by_filter"] == {
        "empty": 1,
        "too_short": 1,
        "truncated": 1,
        "duplicate": 2,
    }
    assert stats["accounted"] and stats["rows_in"] == len(INSTRUCTIONS) and stats["rows_out"] == 3
    assert stats["magpie"]["instructions_kept"] == 3
    instruction, response = model.sampling["instruction"], model.sampling["response"]
    assert (instruction.temperature, instruction.top_p) == (1.0, 1.0)
    assert "\n" in instruction.stop and "<|im_end|>" in instruction.stop
    assert response.temperature == 0.0 and response.max_tokens == 64


def test_a_response_pool_answers_what_the_jobs_model_asked(tmp_path, embedded_model):
    """magpie.response_pool: the job's model writes the instructions, the pool's answers
    them (its rows name that model), each engine getting only its own stage's requests; the
    rows are those of one model doing both. A pool not declared is one line."""
    plain = run_job(
        magpie_config(tmp_path / "plain"),
        show_progress=False,
        backend=FakeBackend(responder=scripted(embedded_model)),
    )
    responder = tmp_path / "responder-model"
    model_alias(embedded_model, responder)
    config = magpie_config(tmp_path).model_dump(mode="json")
    config["magpie"]["response_pool"] = "responder"
    config["pools"] = {"responder": {"engine": {"model": str(responder), "max_model_len": 1024}}}
    pools = {
        "default": FakeBackend(responder=scripted(embedded_model)),
        "responder": FakeBackend(responder=scripted(embedded_model)),
    }
    summary = run_job(validate_config(config), show_progress=False, backend=pools)
    out = rows(tmp_path / "out")
    assert {r["model"] for r in out} == {"responder-model"}
    assert [r["response"] for r in out] == [r["response"] for r in rows(tmp_path / "plain" / "out")]
    stages = [
        {key.split(":")[0] for _, _, keys in b.submitted for key in keys} for b in pools.values()
    ]
    assert stages == [{"instructions"}, {"responses"}]
    assert summary.stats["rows_out"] == plain.stats["rows_out"] == 3
    with pytest.raises(ConfigError, match=r"magpie.response_pool: no pool 'big' \(pools: default"):
        magpie_config(tmp_path, response_pool="big")


def test_killed_in_responses_resumes_without_asking_again(tmp_path, embedded_model, monkeypatch):
    from synth_ray.methods.base import row_id

    model = scripted(embedded_model)
    run_job(
        magpie_config(tmp_path / "clean"), show_progress=False, backend=FakeBackend(responder=model)
    )
    with monkeypatch.context() as patch:
        # responses unit k answers instructions unit k: unit 3 holds one instruction to answer
        crash_on_commit(patch, lambda r: r.stage == "responses" and r.unit_index == 3)
        with pytest.raises(Crash):
            run_job(
                magpie_config(tmp_path), show_progress=False, backend=FakeBackend(responder=model)
            )
    done = {r.unit_index for r in OutputStore(tmp_path / "out").committed("responses").values()}
    answered = {0: [0], 1: [], 2: [5], 3: [6]}  # per responses unit, the instructions kept
    left = {
        row_id(f"magpie-{i:07d}", "response")
        for u in answered
        if u not in done
        for i in answered[u]
    }
    backend = FakeBackend(responder=model)
    summary = run_job(magpie_config(tmp_path), show_progress=False, backend=backend)
    assert sorted(backend.generated) == sorted(left)  # only the uncommitted units' responses
    responses = {row_id(f"magpie-{i:07d}", "response") for i in range(len(INSTRUCTIONS))}
    assert row_id("magpie-0000006", "response") in backend.generated
    assert set(backend.generated) <= responses  # no instruction asked again
    assert rows(tmp_path / "out") == rows(tmp_path / "clean" / "out")
    assert summary.stats["accounted"] and summary.stats["rows_in"] == len(INSTRUCTIONS)


def test_a_resume_under_another_prefix_is_refused_not_mixed(tmp_path, embedded_model, monkeypatch):
    """Instructions committed under another prefix (here SmolLM2's default system turn before
    the user header, as synth-ray sent it before) are changed input: the job is refused and
    asks no model, rather than adding instructions from the bare user header to them."""
    import synth_ray.methods.magpie as magpie
    from synth_ray.errors import OutputConflictError

    model = scripted(embedded_model)
    bare = model.prefix
    older = (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
        "Face<|im_end|>\n" + bare
    )
    with monkeypatch.context() as patch:
        patch.setattr(magpie, "pre_query_prefix", lambda tokenizer, system=None: (older, ()))
        model.prefix = older
        run_job(magpie_config(tmp_path), show_progress=False, backend=FakeBackend(responder=model))
    model.prefix = bare
    backend = FakeBackend(responder=model)
    with pytest.raises(OutputConflictError, match="--replan"):
        run_job(magpie_config(tmp_path), show_progress=False, backend=backend)
    assert backend.generated == []


def test_a_model_without_a_usable_template_fails_before_any_work(tmp_path, embedded_model):

    model = tmp_path / "model"
    model_alias(embedded_model, model)
    config_file = model / "tokenizer_config.json"
    import json

    tokenizer_config = json.loads(config_file.read_text())
    tokenizer_config["chat_template"] = "{{ messages[0]['content'] }}"
    config_file.write_text(json.dumps(tokenizer_config))
    (model / "chat_template.jinja").unlink(missing_ok=True)
    config = validate_config(
        {
            "method": "magpie",
            "output": {"path": str(tmp_path / "out")},
            "engine": {"model": str(model), "max_model_len": 1024},
        }
    )
    backend = FakeBackend()
    with pytest.raises(ConfigError, match="writes nothing before the user's message"):
        run_job(config, show_progress=False, backend=backend)
    assert backend.generated == [] and not (tmp_path / "out" / "_manifest.jsonl").exists()


def test_the_driver_reads_no_instruction_to_dedup_and_answer(
    tmp_path, embedded_model, ray_local, monkeypatch
):
    """Dedup keys are computed in Ray tasks beside the shards and the responses stage goes by
    reference (each unit's replica reads its instructions unit): from the instructions
    stage's end on, the driver reads neither an input row nor an output shard."""
    from conftest import watch_driver_reads

    seen = watch_driver_reads(monkeypatch, after_stage="instructions")
    backend = FakeBackend(responder=scripted(embedded_model))
    specs = []
    real_add = backend.add_stage
    backend.add_stage = lambda spec: (specs.append(spec), real_add(spec))[-1]
    summary = run_job(magpie_config(tmp_path), show_progress=False, backend=backend)
    assert seen["watching"] and seen["reads"] == []
    [responses] = [spec for spec in specs if spec.stage == "responses"]
    assert not isinstance(responses.documents, list)  # no instruction travels with it
    out = rows(tmp_path / "out")
    assert [r["instruction"] for r in out] == [INSTRUCTIONS[0], INSTRUCTIONS[5], INSTRUCTIONS[6]]
    assert summary.stats["dropped_by_filter"]["duplicate"] == 2 and summary.stats["accounted"]


def test_duplicates_are_every_occurrence_after_the_first_across_units():
    import numpy as np
    import pyarrow as pa

    from synth_ray.methods.magpie import duplicate_positions, instruction_keys

    units = [
        ["Tell me a joke.", "Name a river."],
        ["tell me  a JOKE."],
        [],
        ["A", "name a river.", "A"],
    ]
    keys = [instruction_keys(pa.table({"instruction": pa.array(u, pa.string())})) for u in units]
    found = duplicate_positions(keys)
    assert [p.tolist() for p in found] == [[], [0], [], [1, 2]]
    assert [p.tolist() for p in duplicate_positions([np.array([], dtype="S16")])] == [[]]
