"""Method `conversation`: Baize transcripts parsed as preprocess.py does, the stop rules, the
prompts of each kind (UltraChat's user simulator, gen_mt.py's next user turn), `messages`
built turn by turn; whole jobs on a scripted engine (turns as stages, a kill mid-dialogue
resumed exactly); and one real-engine run from the CLI, killed mid-dialogue and resumed.

    pytest tests/test_conversation.py -m "not engine"
"""

from __future__ import annotations

import copy
import json
import re

import pyarrow.parquet as pq
import pytest
from conftest import REPO, Crash, crash_on_commit, model_alias, write_jsonl
from fake_backend import FakeBackend

from synth_ray.config import validate_config
from synth_ray.engine.prompts import PromptRenderer
from synth_ray.engine.requests import EngineResult
from synth_ray.errors import ConfigError
from synth_ray.io.inputs import Document
from synth_ray.io.output_store import OutputStore
from synth_ray.methods.base import Dropped, Kept, row_id
from synth_ray.methods.conversation import (
    ConversationConfig,
    Dialogue,
    SelfChat,
    TurnStep,
    baize_turns,
    clean_simulated_turn,
    ended,
    magpie_user_prompt,
    simulator_message,
    turn_limit,
    turn_stop,
)
from synth_ray.methods.conversation_prompts import (
    BAIZE_SELF_CHAT,
    MAGPIE_MT_SYSTEM_PROMPT,
    ULTRACHAT_USER_SIMULATOR,
)
from synth_ray.runtime.job import run_job

# A self-chat completion shaped as a chat model writes it after Baize's template
BAIZE_COMPLETION = (
    "[Human] What is the best way to learn Python?\n"
    "[AI] Start with the official tutorial, then build small projects.\n"
    "[Human] Which projects would you suggest?\n"
    "[AI] A to-do list app, a web scraper, or a simple game.\n"
    "[Human] Thanks, that's all I needed!\n"
    "[AI] You're welcome! Happy coding."
)


def user(text):
    return {"role": "user", "content": text}


def assistant(text):
    return {"role": "assistant", "content": text}


def test_baize_transcript_is_read_as_preprocess_py_reads_it():
    """Split at [Human]: the text before the first and the last piece (the goodbye) go; each
    piece splits at [AI] into exactly two parts."""
    turns, parsed = baize_turns("Sure! Here is the transcript:\n" + BAIZE_COMPLETION)
    assert parsed and turns == [
        ("What is the best way to learn Python?", "Start with the official tutorial, then build small projects."),
        ("Which projects would you suggest?", "A to-do list app, a web scraper, or a simple game."),
    ]  # fmt: skip
    # a piece without its [AI] (or with two) ends the reading there, as preprocess.py breaks
    broken = "[Human] Q1\n[AI] A1\n[Human] Q2 unanswered\n[Human] Q3\n[AI] A3\n[Human] bye"
    assert baize_turns(broken) == ([("Q1", "A1")], False)
    twice = "[Human] Q1\n[AI] A1\n[AI] A1 again\n[Human] bye"
    assert baize_turns(twice) == ([], False)
    assert baize_turns("I cannot write a transcript.") == ([], True)


def baize_dialogue(**section):
    config = ConversationConfig(kind="baize", **section)
    return Dialogue(config, None, "m", seed=0, max_model_len=2048, max_tokens=64)


def self_chat(completion, why="stop", **section):
    method = SelfChat(baize_dialogue(**section))
    doc = Document(0, "q1", "learning Python")
    [candidate] = method.expand(doc)
    assert candidate.messages == [user(BAIZE_SELF_CHAT.format("learning Python"))]
    return method.finish(candidate, EngineResult(candidate.row_id, completion, 100, 80, why))


def test_a_baize_conversation_ends_as_its_transcript_or_a_stop_rule_says():
    done = self_chat(BAIZE_COMPLETION)
    assert isinstance(done, Kept) and done.row["stop_reason"] == "user_done"
    assert done.row["messages"] == [
        user("What is the best way to learn Python?"),
        assistant("Start with the official tutorial, then build small projects."),
        user("Which projects would you suggest?"),
        assistant("A to-do list app, a web scraper, or a simple game."),
    ]
    assert done.row["n_turns"] == 2 and done.row["opening"] == done.row["messages"][0]["content"]
    assert (done.row["n_input_tokens"], done.row["n_output_tokens"]) == (100, 80)
    # cut by max_tokens: its last piece was dropped, and the row says why it ends
    assert self_chat(BAIZE_COMPLETION, why="length").row["stop_reason"] == "truncated"
    capped = self_chat(BAIZE_COMPLETION, max_turns=1).row
    assert capped["stop_reason"] == "max_turns" and capped["n_turns"] == 1
    # the human asking again what was asked: the conversation ends before that turn
    again = BAIZE_COMPLETION.replace(
        "Which projects would you suggest?", "what is the best  way to learn python?"
    )
    repeated = self_chat(again).row
    assert repeated["stop_reason"] == "repeated_user_turn" and repeated["n_turns"] == 1
    assert repeated["messages"][-1]["role"] == "assistant"
    echoed = BAIZE_COMPLETION.replace(
        "A to-do list app, a web scraper, or a simple game.", "Which projects would you suggest?"
    )
    assert self_chat(echoed).row["stop_reason"] == "repeated_assistant_turn"
    malformed = BAIZE_COMPLETION.replace("[AI] A to-do", "A to-do")
    assert self_chat(malformed).row["stop_reason"] == "unparsed_turn"
    # nothing to keep: dropped, counted under why
    empty_answer = BAIZE_COMPLETION.replace(
        "Start with the official tutorial, then build small projects.", ""
    )
    assert self_chat(empty_answer) == Dropped("empty_assistant_turn")
    assert self_chat("No transcript here.") == Dropped("no_turns")
    marked = self_chat(
        BAIZE_COMPLETION.replace("Which projects", "DONE. Which projects"), done_marker="DONE"
    )
    assert marked.row["stop_reason"] == "user_done" and marked.row["n_turns"] == 1  # fmt: skip


def test_a_constrained_transcript_is_one_baize_parses():
    """`constrain`: the completion is decoded into Baize's format, at least one exchange and
    at most max_turns, then the human's last piece (answered or not), which the parser
    drops."""
    from synth_ray.engine.requests import SamplingSpec
    from synth_ray.methods.conversation import baize_transcript_regex

    job = SamplingSpec(0.7, 0.9, 384)
    assert SelfChat(baize_dialogue()).stage_sampling(job).constraint is None
    sampling = SelfChat(baize_dialogue(constrain=True, max_turns=2)).stage_sampling(job)
    assert sampling.constraint.kind == "regex"
    regex = re.compile(sampling.constraint.value)
    assert sampling.constraint.value == baize_transcript_regex(2, 384)
    assert regex.fullmatch(BAIZE_COMPLETION)
    assert baize_turns(BAIZE_COMPLETION)[0]  # what the format allows, the parser reads
    three = BAIZE_COMPLETION.replace("[Human] Thanks", "[Human] More?\n[AI] Yes.\n[Human] Thanks")
    assert not regex.fullmatch(three)  # past max_turns
    assert re.fullmatch(baize_transcript_regex(None), three)
    # a turn is bounded, so the first exchange and the next marker fit max_tokens
    long_answer = BAIZE_COMPLETION.replace("[AI] ", "[AI] " + "x" * 200, 1)
    assert not re.fullmatch(baize_transcript_regex(2, 384), long_answer)
    assert re.fullmatch(baize_transcript_regex(2, 1024), long_answer)
    assert not re.fullmatch(baize_transcript_regex(2, 1024), long_answer.replace("x", "\u00e9"))
    for off in ("[Human] Hi\n[AI] Hello", "Human: Hi\nAI: Hello\nHuman: bye",
                "[Human] a [AI] b\n[AI] c\n[Human] d"):  # fmt: skip
        assert not regex.fullmatch(off)


def test_turn_stop_rules():
    said = [user("How do tides work?"), assistant("The Moon's gravity pulls the oceans.")]
    assert turn_stop("user", "Why twice a day?", "stop", said, None) is None
    assert turn_stop("user", "   ", "stop", said, None) == "empty_user_turn"
    assert turn_stop("assistant", "", "stop", said, None) == "empty_assistant_turn"
    # an echo of the last answer, case and spacing aside
    echo = "the moon's gravity  pulls the OCEANS."
    assert turn_stop("user", echo, "stop", said, None) == "repeated_user_turn"
    assert (
        turn_stop("assistant", "How do tides work?", "stop", said, None)
        == "repeated_assistant_turn"
    )
    assert turn_stop("user", "Why twice a day and", "length", said, None) == "truncated_user_turn"
    assert turn_stop("assistant", "Because the Earth", "length", said, None) is None  # kept
    assert turn_stop("user", "Thanks! <END>", "stop", said, "<END>") == "user_done"
    assert turn_stop("user", "<END>", "stop", said, "<END>") == "user_done"


def test_an_ended_conversation_keeps_its_complete_exchanges():
    state = {"id": "c", "n_turns": 1, "stop_reason": None,
             "messages": [user("q1"), assistant("a1"), user("q2")]}  # fmt: skip
    kept = ended(state, "empty_assistant_turn")
    assert kept == Kept({**state, "messages": [user("q1"), assistant("a1")],
                         "stop_reason": "empty_assistant_turn"})  # fmt: skip
    assert ended({**state, "n_turns": 0, "messages": [user("q1")]}, "context_full") == Dropped(
        "context_full"
    )


def test_simulated_user_turns_lose_the_transcript_format():
    assert (
        clean_simulated_turn('User: "Can you give me an example?"') == "Can you give me an example?"
    )
    spilled = "Can you give me an example?\n\nAssistant: Sure! For instance..."
    assert clean_simulated_turn(spilled) == "Can you give me an example?"
    assert clean_simulated_turn("user: ok, and then?\nassistant: then...") == "ok, and then?"
    assert clean_simulated_turn("What about assistants: are they good?") == "What about assistants: are they good?"  # fmt: skip


def test_turn_counts_are_drawn_in_range_per_conversation():
    drawn = [turn_limit(7, f"c{i}", 3, 7) for i in range(200)]
    assert set(drawn) == {3, 4, 5, 6, 7}
    assert drawn == [turn_limit(7, f"c{i}", 3, 7) for i in range(200)]  # fixed by the seed
    assert turn_limit(7, "c0", 2, None) is None


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"kind": "baize", "seeds": "topics"}, "seeds: topics are for kind ultrachat"),
        ({"kind": "ultrachat", "response_column": "r"}, "response_column: only kind magpie"),
        ({"kind": "baize", "min_turns": 2}, "min_turns: a baize transcript decides"),
        ({"min_turns": 4, "max_turns": 3}, "min_turns: 4 is above max_turns 3"),
        ({"kind": "magpie", "response_column": "r", "max_turns": 1}, "leaves no turn"),
        ({"kind": "ultrachat", "constrain": True}, "constrain: only a baize transcript"),
    ],
)
def test_config_refusals(tmp_path, section, message):
    base = {"method": "conversation", "input": {"path": "x"}, "output": {"path": str(tmp_path)}}
    with pytest.raises(ConfigError, match=re.escape(message)):
        validate_config({**base, "conversation": section})


def test_turn_ranges_follow_each_kind():
    assert ConversationConfig().turn_range() == (3, 7)  # UltraChat's 3 to 7 rounds
    assert ConversationConfig(max_turns=2).turn_range() == (2, 2)
    assert ConversationConfig(kind="magpie").turn_range() == (2, 2)  # gen_mt.py's num_turns
    assert ConversationConfig(kind="baize").turn_range() == (1, None)


@pytest.fixture()
def renderer(embedded_model):
    return PromptRenderer(copy.deepcopy(PromptRenderer.from_model(embedded_model).tokenizer))


def test_ultrachat_simulator_reads_the_dialogue_with_the_prompt_appended(renderer):
    dialogue = Dialogue(ConversationConfig(), renderer, "m", 0, 2048, 64)
    state = {"id": "c", "messages": [user("How do tides work?"), assistant("The Moon pulls.")]}
    prompt = TurnStep(dialogue, "user", 2, False).prompt(state)
    asked = simulator_message(state["messages"], ULTRACHAT_USER_SIMULATOR)
    assert asked == (
        "User: How do tides work?\n\nAssistant: The Moon pulls.\n\n" + ULTRACHAT_USER_SIMULATOR
    )
    assert prompt == renderer.render_text([user(asked)])
    # the assistant sees the conversation itself, under the template's own system turn
    state["messages"].append(user("Why twice a day?"))
    assert TurnStep(dialogue, "assistant", 2, False).prompt(state) == renderer.render_text(
        state["messages"]
    )


def test_magpie_next_user_turn_is_gen_mt_prompt(renderer):
    """gen_mt.py (tokenizer-template path): apply_chat_template of the conversation under
    its system prompt, without a generation prompt, + the model's mt_append_template."""
    from test_magpie import LLAMA_3_8B_INSTRUCT, with_template

    messages = [user("How do tides work?"), assistant("The Moon pulls.")]
    chat = [{"role": "system", "content": MAGPIE_MT_SYSTEM_PROMPT}, *messages]
    for template, bos, append in [
        (None, None, "<|im_start|>user\n"),  # SmolLM2's own ChatML
        (LLAMA_3_8B_INSTRUCT, "<|begin_of_text|>", "<|start_header_id|>user<|end_header_id|>\n\n"),
    ]:
        tokenizer = renderer.tokenizer
        if template is not None:
            tokenizer = with_template(tokenizer, template, bos)
        rendered = tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=False)
        assert magpie_user_prompt(PromptRenderer(tokenizer), messages) == rendered + append


def test_a_prompt_that_leaves_no_room_ends_the_conversation_before_the_request(renderer):
    dialogue = Dialogue(ConversationConfig(), renderer, "m", 0, max_model_len=64, max_tokens=48)
    state = {"id": "c", "source_id": "s", "n_turns": 1, "stop_reason": None,
             "messages": [user("q " * 10), assistant("a " * 10)]}  # fmt: skip
    [candidate] = TurnStep(dialogue, "user", 2, False).expand(
        Document(0, "s", None, extra={"__conversation": state})
    )
    assert candidate.raw_prompt is None and candidate.kept["stop_reason"] == "context_full"
    # one that ended earlier is carried as it is, with no request
    [carried] = TurnStep(dialogue, "assistant", 2, False).expand(
        Document(0, "s", None, extra={"__conversation": candidate.kept})
    )
    assert carried.kept == candidate.kept and carried.raw_prompt is None


# ---- whole jobs on a scripted engine ---------------------------------------------------

TOPICS = ["tides", "volcanoes", "bread"]


class ScriptedChat:
    """Answers each kind of request of an ultrachat job from its decoded prompt."""

    def __init__(self, embedded_model: str) -> None:
        self.tokenizer = PromptRenderer.from_model(embedded_model).tokenizer
        self.sampling: dict[str, object] = {}

    def __call__(self, request):
        prompt = self.tokenizer.decode(request.prompt_token_ids)
        rid, n_in = request.request_id, len(request.prompt_token_ids)
        last = prompt.split("<|im_start|>user\n")[-1].split("<|im_end|>")[0]
        if "Write one question" in prompt:
            self.sampling["opener"] = request.sampling
            topic = last.rsplit("Topic: ", 1)[1]
            texts = [f'"What makes {topic} interesting?"', f"How do {topic} work?"]
            texts += [f"How do {topic} work?"] * (request.sampling.n - 2)  # a duplicate
            if topic == "bread":
                texts[0] = ""  # an empty opener
            samples = tuple((t, 7, "stop") for t in texts)
            return EngineResult(rid, texts[0], n_in, 7 * len(texts), "stop", samples=samples)
        if ULTRACHAT_USER_SIMULATOR in last:
            self.sampling["user"] = request.sampling
            asked = re.findall(r"User: (.*)", last)
            if "volcanoes work" in asked[0]:  # this simulator only echoes the answer
                answer = re.findall(r"Assistant: (.*)", last)[-1]
                return EngineResult(rid, f"User: {answer}", n_in, 9, "stop")
            return EngineResult(rid, f"User: Tell me more ({len(asked)})", n_in, 9, "stop")
        self.sampling["assistant"] = request.sampling
        if last == "What makes volcanoes interesting?":
            return EngineResult(rid, "", n_in, 0, "stop")  # a failed first answer
        return EngineResult(rid, f"Answer to: {last}", n_in, 11, "stop")


def ultrachat_config(tmp_path, **section):
    topics = write_jsonl(tmp_path / "topics.jsonl", [{"id": t, "text": t} for t in TOPICS])
    return validate_config(
        {
            "method": "conversation",
            "input": {"path": str(topics), "id_column": "id"},
            "output": {"path": str(tmp_path / "out"), "rows_per_shard": 1},
            "engine": {"max_model_len": 1024},
            "sampling": {"max_tokens": 32, "temperature": 0.7},
            "conversation": {"seeds": "topics", "openers_per_topic": 3, "min_turns": 2,
                             "max_turns": 3, **section},
        }
    )  # fmt: skip


def rows(path):
    return [r for f in OutputStore(path).data_files() for r in pq.read_table(f).to_pylist()]


def conversation_id(topic, sample):
    return row_id(topic, "conversation", sample)


def test_ultrachat_job_alternates_turns_as_stages(tmp_path, embedded_model):
    model = ScriptedChat(embedded_model)
    config = ultrachat_config(tmp_path)
    backend = FakeBackend(responder=model)
    specs = []
    real_add = backend.add_stage
    backend.add_stage = lambda spec: (specs.append(spec), real_add(spec))[-1]
    summary = run_job(config, show_progress=False, backend=backend)
    # the diversity filter (when on) can decide only in the stage that writes the output
    stats = summary.stats
    assert stats["conversation"]["stages"] == [
        "openers", "assistant-t1", "user-t2", "assistant-t2", "user-t3", "assistant-t3"
    ]  # fmt: skip
    filtered = {s.stage: s.method.diversity_column for s in specs}  # the stages run at once
    assert filtered == dict.fromkeys(stats["conversation"]["stages"][:-1]) | {
        "assistant-t3": "opening"
    }
    out = {r["id"]: r for r in rows(tmp_path / "out")}
    # tides and bread: the kept openers; volcanoes' first answer failed (dropped), and its
    # second opener's simulator only echoes the answer (ends after one exchange)
    assert set(out) == {
        conversation_id("tides", 0), conversation_id("tides", 1),
        conversation_id("volcanoes", 1), conversation_id("bread", 1),
    }  # fmt: skip
    tides = out[conversation_id("tides", 1)]
    limit = turn_limit(config.sampling.seed, tides["id"], 2, 3)
    assert tides["messages"][:4] == [
        user("How do tides work?"),
        assistant("Answer to: How do tides work?"),
        user("Tell me more (1)"),
        assistant("Answer to: Tell me more (1)"),
    ]
    assert tides["n_turns"] == limit == len(tides["messages"]) // 2
    assert tides["stop_reason"] == "max_turns" and tides["seed"] == "tides"
    assert out[conversation_id("tides", 0)]["opening"] == "What makes tides interesting?"
    echo = out[conversation_id("volcanoes", 1)]
    assert echo["stop_reason"] == "repeated_user_turn" and echo["n_turns"] == 1
    assert [m["role"] for m in echo["messages"]] == ["user", "assistant"]
    assert all(r["stop_reason"] for r in out.values())
    assert stats["accounted"] and stats["rows_in"] == 9 and stats["rows_out"] == 4
    assert stats["dropped_by_filter"] == {
        "duplicate_opener": 3, "empty_opener": 1, "empty_assistant_turn": 1
    }  # fmt: skip
    assert stats["input_documents"] == 3
    assert sum(stats["conversation"]["stop_reasons"].values()) == 4
    # tokens of every stage, not only the output's: the 5 openers no conversation kept too
    assert stats["output_tokens"] == sum(r["n_output_tokens"] for r in out.values()) + 5 * 7
    opener, turn = model.sampling["opener"], model.sampling["user"]
    assert opener.n == 3 and opener.max_tokens == 32 and turn.temperature == 0.7 and turn.n == 1


def test_killed_mid_dialogue_resumes_each_conversation_exactly_once(
    tmp_path, embedded_model, monkeypatch
):
    clean = tmp_path / "clean"
    clean.mkdir()
    run_job(
        ultrachat_config(clean),
        show_progress=False,
        backend=FakeBackend(responder=ScriptedChat(embedded_model)),
    )
    with monkeypatch.context() as patch:
        crash_on_commit(patch, lambda r: r.stage == "user-t2" and r.unit_index == 1)
        with pytest.raises(Crash):
            run_job(
                ultrachat_config(tmp_path),
                show_progress=False,
                backend=FakeBackend(responder=ScriptedChat(embedded_model)),
            )
    work = OutputStore(tmp_path / "out" / "stages")
    before = {r.unit_index for r in work.committed("user-t2").values()}
    assert 1 not in before and work.committed("assistant-t1")
    backend = FakeBackend(responder=ScriptedChat(embedded_model))
    summary = run_job(ultrachat_config(tmp_path), show_progress=False, backend=backend)
    # nothing committed was asked again: no opener, no first answer, no committed user turn
    asked = set(backend.generated)
    assert not any(rid == row_id(t, "openers") for t in TOPICS for rid in asked)
    assert not any(
        row_id(conversation_id(t, s), "assistant", 1) in asked for t in TOPICS for s in range(3)
    )
    resumed = sorted(rows(tmp_path / "out"), key=lambda r: r["id"])
    assert [r["id"] for r in resumed] == sorted({r["id"] for r in resumed})  # each once
    assert resumed == sorted(rows(clean / "out"), key=lambda r: r["id"])
    assert summary.stats["accounted"] and summary.stats["rows_in"] == 9


def test_a_user_simulator_pool_writes_openers_and_user_turns_beside_the_assistant(
    tmp_path, embedded_model
):
    """`conversation.user_pool`: openers and user turns on the simulator's pool, answers on
    the job's, each pool on its own backend, the turns streaming between them: the same
    conversations as one model on one pool (the scripted model answers both)."""
    one = tmp_path / "one"
    one.mkdir()
    run_job(
        ultrachat_config(one),
        show_progress=False,
        backend=FakeBackend(responder=ScriptedChat(embedded_model)),
    )
    simulator = tmp_path / "simulator"
    model_alias(embedded_model, simulator)
    config = ultrachat_config(tmp_path).model_dump(mode="json")
    config["conversation"]["user_pool"] = "simulator"
    config["pools"] = {"simulator": {"engine": {"model": str(simulator), "max_model_len": 1024}}}
    config = validate_config(config)
    kinds: dict[str, set[str]] = {"default": set(), "simulator": set()}

    def answering(pool):
        model = ScriptedChat(embedded_model)

        def respond(request):
            result = model(request)
            kinds[pool].update(model.sampling)
            model.sampling.clear()
            return result

        return respond

    pools = {pool: FakeBackend(responder=answering(pool), latency_polls=0) for pool in kinds}
    summary = run_job(config, show_progress=False, backend=pools)
    assert kinds == {"simulator": {"opener", "user"}, "default": {"assistant"}}
    by_id = lambda folder: sorted(rows(folder / "out"), key=lambda r: r["id"])  # noqa: E731
    assert by_id(tmp_path) == by_id(one) and summary.stats["accounted"]
    # the stages' unit ids are those of a run one stage after another: it resumes this one
    # with nothing left to do
    config = validate_config(
        {**config.model_dump(mode="json"), "scheduler": {"stream_stages": False}}
    )
    again = {pool: FakeBackend(responder=answering(pool)) for pool in kinds}
    summary = run_job(config, show_progress=False, backend=again)
    assert summary.units_committed == 0 and not again["default"].generated
    with pytest.raises(ConfigError, match="conversation.user_pool: no pool 'x'"):
        ultrachat_config(tmp_path, user_pool="x")


class ScriptedMagpie:
    """gen_mt.py's two kinds of request: a raw prompt ending in the template's user header
    (the next user turn), and the conversation with a generation prompt (the answer)."""

    def __init__(self, embedded_model: str) -> None:
        self.tokenizer = PromptRenderer.from_model(embedded_model).tokenizer
        self.sampling: dict[str, object] = {}
        self.prompts: list[str] = []

    def __call__(self, request):
        prompt = self.tokenizer.decode(request.prompt_token_ids)
        rid, n_in = request.request_id, len(request.prompt_token_ids)
        if prompt.endswith("<|im_start|>user\n"):
            self.sampling["user"] = request.sampling
            self.prompts.append(prompt)
            if "hash table" in prompt:
                return EngineResult(rid, "And in C?", n_in, 4, "stop")
            return EngineResult(rid, "Why is that so and how", n_in, 6, "length")  # cut
        self.sampling["assistant"] = request.sampling
        last = prompt.split("<|im_start|>user\n")[-1].split("<|im_end|>")[0]
        return EngineResult(rid, f"About: {last}", n_in, 5, "stop")


def test_magpie_kind_writes_later_user_turns_from_the_template(tmp_path, embedded_model):
    """Turn 1 from a magpie job's output (instruction and response, as gen_mt.py reads them),
    then a user turn from the conversation under gen_mt.py's system prompt cut at the next
    user header, at Magpie's instruction sampling, and a greedy answer."""
    pairs = [
        {"id": "m1", "instruction": "Explain a hash table.", "response": "A map from keys."},
        {"id": "m2", "instruction": "Why is the sky blue?", "response": "Rayleigh scattering."},
        {"id": "m3", "instruction": "Name a prime.", "response": ""},  # no first exchange
    ]
    data = write_jsonl(tmp_path / "magpie.jsonl", pairs)
    config = validate_config(
        {
            "method": "conversation",
            "input": {"path": str(data), "text_column": "instruction"},
            "output": {"path": str(tmp_path / "out"), "rows_per_shard": 2},
            "engine": {"max_model_len": 1024},
            "sampling": {"max_tokens": 32, "temperature": 0.7},
            "conversation": {"kind": "magpie", "response_column": "response", "max_turns": 3},
        }
    )
    model = ScriptedMagpie(embedded_model)
    summary = run_job(config, show_progress=False, backend=FakeBackend(responder=model))
    out = {r["source_id"]: r for r in rows(tmp_path / "out")}
    assert out["m1"]["messages"] == [
        user("Explain a hash table."), assistant("A map from keys."),
        user("And in C?"), assistant("About: And in C?"),
    ]  # fmt: skip
    # the third user turn repeats the second: the conversation ends after two exchanges
    assert out["m1"]["stop_reason"] == "repeated_user_turn" and out["m1"]["n_turns"] == 2
    # a user turn cut by max_tokens ends the conversation before it
    assert out["m2"]["stop_reason"] == "truncated_user_turn" and out["m2"]["n_turns"] == 1
    assert out["m2"]["messages"] == [
        user("Why is the sky blue?"),
        assistant("Rayleigh scattering."),
    ]
    stats = summary.stats
    assert stats["conversation"]["stages"] == ["user-t2", "assistant-t2", "user-t3", "assistant-t3"]
    assert stats["dropped_by_filter"] == {"empty_response": 1} and stats["accounted"]
    first = model.prompts[0]
    assert first.startswith(f"<|im_start|>system\n{MAGPIE_MT_SYSTEM_PROMPT}<|im_end|>\n")
    asked, answered = model.sampling["user"], model.sampling["assistant"]
    assert (asked.temperature, asked.top_p, asked.max_tokens) == (1.0, 1.0, 32)
    assert "\n" in asked.stop and "<|im_end|>" in asked.stop
    assert answered.temperature == 0.0 and answered.stop == ()


# ---- the real engine, from the CLI -------------------------------------------------------


@pytest.mark.engine
def test_dialogue_on_the_real_engine_reads_back_as_chat_messages(
    tmp_path, shared_engine, embedded_model
):
    """An ultrachat job on the real engine (the session's warm one): each conversation is in
    the output once, its turns alternate, and `datasets` and DuckDB read it back as chat
    messages. (Resume mid-dialogue is test_killed_mid_dialogue_resumes_each_conversation_
    exactly_once's; a process kill of the stage path is test_kill_anywhere.py's.)"""
    import duckdb
    from datasets import Dataset

    out = tmp_path / "out"
    config = validate_config(
        {
            "method": "conversation",
            "input": {
                "path": str(REPO / "examples" / "prompts.jsonl"),
                "text_column": "prompt",
                "limit": 3,
            },
            "output": {"path": str(out), "rows_per_shard": 1},
            "engine": {"max_model_len": 1024, "enforce_eager": True},
            "sampling": {"max_tokens": 16, "temperature": 0.7},
            "conversation": {"kind": "ultrachat", "max_turns": 2},
            "scheduler": {"batch_size": 1},
        }
    )
    run_job(config, show_progress=False, backend=shared_engine)

    stats = json.loads((out / "stats.json").read_text())
    assert stats["accounted"] and stats["rows_in"] == 3
    data = out / "data"
    conversations = Dataset.from_parquet(str(data / "*.parquet"))
    ids = conversations["id"]
    assert len(ids) == len(set(ids)) == stats["rows_out"] >= 1
    tokenizer = PromptRenderer.from_model(embedded_model).tokenizer
    for row in conversations:
        assert row["stop_reason"] and row["n_turns"] == len(row["messages"]) // 2 >= 1
        assert [m["role"] for m in row["messages"]] == ["user", "assistant"] * row["n_turns"]
        tokenizer.apply_chat_template(row["messages"], tokenize=False)  # the chat format
    [(typed,)] = duckdb.sql(
        f"SELECT DISTINCT typeof(messages) FROM read_parquet('{data}/*.parquet')"
    ).fetchall()
    assert typed == 'STRUCT("role" VARCHAR, "content" VARCHAR)[]'
    roles = duckdb.sql(
        f"SELECT DISTINCT m.role FROM (SELECT unnest(messages) AS m "
        f"FROM read_parquet('{data}/*.parquet'))"
    ).fetchall()
    assert {r for (r,) in roles} == {"user", "assistant"}
    [turns] = duckdb.sql(
        f"SELECT sum(len(messages)), sum(n_turns) FROM read_parquet('{data}/*.parquet')"
    ).fetchall()
    assert turns[0] == 2 * turns[1]
