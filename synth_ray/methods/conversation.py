"""Method `conversation`: multi-turn conversations, one row per conversation, its turns in a
`messages` column (a list of {role, content}: the chat format TRL and HF datasets read).

    synth-ray run configs/conversation_ultrachat.yaml   # or _baize.yaml, _magpie.yaml

Kinds (`conversation.kind`), each as its paper's released code or prompts do it
(methods/conversation_prompts.py quotes them):
- `ultrachat` (Ding et al. 2023): each input row is an opening question (`seeds: questions`,
  UltraChat's meta-questions or specific questions) or a topic (`seeds: topics`: stage
  `openers` asks `openers_per_topic` opening questions about it, sampled in one request).
  Then the assistant answers and the user simulator speaks, in turn: the simulator is the
  same model answering one user message that holds the conversation so far as a transcript
  followed by UltraChat's user-simulator prompt (the prompt "appended to the dialogue
  history", as its authors describe it; `user_prompts` lists the prompts to draw one from per
  conversation, UltraChat's Sector 1 prompt by default). A conversation's length is drawn
  from [min_turns, max_turns] (UltraChat's 3 to 7 by default).
- `baize` (Xu et al. 2023, collect.py): one request per seed question: the self-chat
  template, which the model completes as a `[Human]`/`[AI]` transcript; the transcript is
  parsed into turns as preprocess.py does (`baize_turns`). One stage, `transcripts`. With
  `constrain`, the transcript is decoded into that format (a regex: structured outputs), for
  small models that do not follow it.
- `magpie` (Xu et al. 2024, exp/gen_mt.py): each input row is a first instruction (a magpie
  job's output; with `response_column`, its response too, as gen_mt.py reads both); every
  later user turn is written by the model from the conversation so far rendered with the
  chat template under gen_mt.py's multi-turn system prompt, cut just before the next user
  message (the template's own pre-query text for it: magpie.py's prefix cut), one line at
  instruction sampling; responses are greedy, without that system prompt.
Turns are stages, each committed exactly once: stage `assistant-tK` answers turn K and
`user-tK` writes user turn K (ultrachat and magpie), each unit's documents built on its
replica from the previous stage's committed unit (`run_derived_stage`), so a kill anywhere
resumes at the unit it stopped in, and the driver reads no row. Every stage's rows are the
conversations as they stand (the same columns as the output); those that ended earlier are
carried along with no request (`Candidate.kept`). The intermediate stages live in `stages/`;
the last, `assistant-tN` (N = the largest turn count), writes the output. With
`filters.diversity` on, that last stage drops conversations whose opening is a near-duplicate
of one kept (the runtime filters only where the output is written: after their turns).
Stop rules, in this order, for each new turn (its `stop_reason` names the rule):
- `user_done`: a user turn holding `done_marker` (none by default: no paper's prompt has
  one; Baize's human "will stop the conversation when they have no more question", which a
  transcript that ends on its own shows: `user_done` there);
- `empty_user_turn` / `empty_assistant_turn`; `repeated_user_turn` /
  `repeated_assistant_turn` (equal to an earlier message of the conversation, case and
  spacing ignored: an echo of the last answer too); `truncated_user_turn` (a user turn cut
  by max_tokens; an answer cut so is kept, as Magpie keeps it);
- `context_full`: the next prompt would leave less room than the stage's max_tokens
  (checked before the request);
- `max_turns`: the conversation has its drawn number of exchanges.
A conversation ends after its last complete exchange (a user turn left unanswered is cut
away), and is one row whichever rule ended it. One that ends before its first exchange
(an empty or failed first answer, an empty opener) is dropped, counted under its stop reason;
one whose request fails in the engine at any turn is an error row of that stage (nothing of
it is written). `stats.json`: rows_in counts every conversation begun (every opener asked).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import random
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any, Literal

import pyarrow as pa
from pydantic import Field, model_validator

from synth_ray.config import DEFAULT_POOL, JobConfig, check_pool_declared
from synth_ray.engine.prompts import PromptRenderer, fold_system_messages
from synth_ray.engine.requests import Constraint, EngineResult, SamplingSpec
from synth_ray.errors import ConfigError
from synth_ray.io.inputs import Document, InputSpec, absolute_path
from synth_ray.io.output_store import STAGES_DIR
from synth_ray.methods.base import TOKEN_COLUMNS, Candidate, Dropped, Kept, Method, Outcome, row_id
from synth_ray.methods.conversation_prompts import (
    BAIZE_AI,
    BAIZE_HUMAN,
    BAIZE_SELF_CHAT,
    MAGPIE_MT_SYSTEM_PROMPT,
    OPENER,
    TRANSCRIPT_ROLES,
    ULTRACHAT_USER_SIMULATOR,
)
from synth_ray.methods.magpie import _cut, normalized, pre_query_prefix
from synth_ray.methods.registry import MethodSpec, register
from synth_ray.methods.stages import JobContext, Together
from synth_ray.sections import ADDED, Section
from synth_ray.stats import UnitStats

Kind = Literal["ultrachat", "baize", "magpie"]
# (min, max) exchanges per kind: UltraChat's Sector 1 dialogues have 3 to 7 rounds; gen_mt.py's
# --num_turns defaults to 2; Baize's transcript decides (None: no cap)
DEFAULT_TURNS: dict[str, tuple[int, int | None]] = {
    "ultrachat": (3, 7),
    "magpie": (2, 2),
    "baize": (1, None),
}


class ConversationConfig(Section):
    kind: Kind = Field(
        "ultrachat",
        description="ultrachat (user simulator and assistant alternate), baize (self-chat "
        "transcript) or magpie (gen_mt.py's next user turns from the template).",
    )
    seeds: Literal["questions", "topics"] = Field(
        "questions",
        description="ultrachat: each input row is an opening question, or a topic to ask "
        "openers_per_topic opening questions about.",
    )
    openers_per_topic: int = Field(3, ge=1, description="Opening questions per topic.")
    opener_max_tokens: int = Field(
        64, ge=8, description="Tokens an opening question may take (capped by max_tokens)."
    )
    min_turns: int | None = Field(
        None,
        ge=1,
        description="Fewest exchanges a conversation is drawn to have (default: ultrachat 3, "
        "magpie max_turns); not for baize.",
    )
    max_turns: int | None = Field(
        None,
        ge=1,
        description="Most exchanges (default: ultrachat 7, magpie 2, baize no cap).",
    )
    user_prompts: list[str] = Field(
        default_factory=lambda: [ULTRACHAT_USER_SIMULATOR],
        min_length=1,
        description="ultrachat: the user-simulator prompts, one drawn per conversation "
        "(default: UltraChat's Sector 1 prompt).",
    )
    done_marker: str | None = Field(
        None,
        min_length=1,
        description="A user turn holding this text ends the conversation (user_done); none "
        "by default.",
    )
    instruction_temperature: float = Field(1.0, ge=0, description="magpie: gen_mt.py's 1.0.")
    instruction_top_p: float = Field(1.0, gt=0, le=1, description="magpie: gen_mt.py's 1.0.")
    instruction_max_tokens: int = Field(
        128, ge=8, description="magpie: tokens a user turn may take (capped by max_tokens)."
    )
    response_temperature: float = Field(0.0, ge=0, description="magpie: gen_mt.py's 0.")
    constrain: bool = Field(
        False,
        description="baize: decode the transcript into Baize's [Human]/[AI] format "
        "(structured outputs), at least one exchange, for small models that do not follow "
        "it. A departure from Baize, whose ChatGPT wrote freely.",
    )
    response_column: str | None = Field(
        None,
        min_length=1,
        description="magpie: the input column holding each first instruction's response "
        "(as gen_mt.py reads it); unset: the first response is generated.",
    )
    user_pool: str | None = Field(
        None,
        description="ultrachat, magpie: the pool (of the job's `pools`) whose model writes "
        "the user turns (and openers): the user simulator, beside the assistant on the job's "
        "engine, each turn streaming to the other as it commits; none: the job's model.",
        json_schema_extra=ADDED,
    )

    @model_validator(mode="after")
    def _kinds(self) -> ConversationConfig:
        if self.kind != "ultrachat" and self.seeds == "topics":
            raise ValueError("seeds: topics are for kind ultrachat")
        if self.kind != "magpie" and self.response_column is not None:
            raise ValueError("response_column: only kind magpie reads a first response")
        if self.kind != "baize" and self.constrain:
            raise ValueError("constrain: only a baize transcript has a format to decode into")
        if self.kind == "baize" and self.min_turns is not None:
            raise ValueError("min_turns: a baize transcript decides its length (max_turns cuts)")
        lo, hi = self.turn_range()
        if hi is not None and lo > hi:
            raise ValueError(f"min_turns: {lo} is above max_turns {hi}")
        if self.response_column is not None and hi == 1:
            raise ValueError("max_turns: 1 with response_column leaves no turn to generate")
        if self.kind == "baize" and self.user_pool is not None:
            raise ValueError("user_pool: a baize transcript is one request, both sides at once")
        return self

    def check_in_job(self, job: Any) -> None:
        check_pool_declared("conversation.user_pool", self.user_pool, job)

    def turn_range(self) -> tuple[int, int | None]:
        """The (fewest, most) exchanges of a conversation; most None: no cap (baize)."""
        lo, hi = DEFAULT_TURNS[self.kind]
        if self.max_turns is not None:
            hi = self.max_turns
        if self.min_turns is not None:
            return self.min_turns, hi
        return (lo if hi is None else min(lo, hi)), hi


MESSAGE = pa.struct([pa.field("role", pa.string()), pa.field("content", pa.string())])
CONVERSATION_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string()),
        pa.field("source_id", pa.string()),
        pa.field("kind", pa.string()),
        pa.field("seed", pa.string()),  # the input row's text: a question, topic or instruction
        pa.field("opening", pa.string()),  # the first user message (the diversity filter's)
        pa.field("messages", pa.list_(MESSAGE)),
        pa.field("n_turns", pa.int32()),  # exchanges: user messages answered
        pa.field("stop_reason", pa.string()),  # null while a conversation goes on (stages/)
        pa.field("model", pa.string()),
        *TOKEN_COLUMNS,  # summed over every request of the conversation; the last one's reason
    ]
)
STATE_COLUMNS = tuple(CONVERSATION_SCHEMA.names)
STATE = "__conversation"  # a later stage's document: Document.extra[STATE] is the row


def draw(seed: int, conversation_id: str, what: str, n: int) -> int:
    """A number in [0, n) fixed by the job's seed and the conversation."""
    digest = hashlib.sha256(f"{seed}:{conversation_id}:{what}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "little")).randrange(n)


def turn_limit(seed: int, conversation_id: str, lo: int, hi: int | None) -> int | None:
    """The exchanges this conversation is to have, drawn uniformly from [lo, hi]."""
    return None if hi is None else lo + draw(seed, conversation_id, "turns", hi - lo + 1)


def transcript(messages: list[dict[str, str]]) -> str:
    """The conversation as the user simulator reads it: one `Role: text` paragraph each."""
    return "\n\n".join(f"{TRANSCRIPT_ROLES[m['role']]}: {m['content']}" for m in messages)


def simulator_message(messages: list[dict[str, str]], prompt: str) -> str:
    """UltraChat's user simulator's request: the dialogue so far, its prompt appended."""
    return f"{transcript(messages)}\n\n{prompt}"


def clean_simulated_turn(text: str) -> str:
    """A simulated user's turn without what belongs to the transcript format: a leading
    `User:` label, and anything from a paragraph the simulator opens as the assistant's; one
    pair of quotes around the whole turn goes too."""
    text = text.strip()
    label = f"{TRANSCRIPT_ROLES['user']}:"
    if text[: len(label)].lower() == label.lower():
        text = text[len(label) :].strip()
    other = f"{TRANSCRIPT_ROLES['assistant']}:"
    for start in (0, *(i + 1 for i, c in enumerate(text) if c == "\n")):
        if text[start:].lstrip().lower().startswith(other.lower()):
            text = text[:start].strip()
            break
    if len(text) >= 2 and text[0] == text[-1] == '"':
        text = text[1:-1].strip()
    return text


def clean_opener(text: str) -> str:
    """An opening question: the first non-empty line, without surrounding quotes."""
    line = next((line.strip() for line in text.splitlines() if line.strip()), "")
    if len(line) >= 2 and line[0] == line[-1] == '"':
        line = line[1:-1].strip()
    return line


def baize_turns(completion: str) -> tuple[list[tuple[str, str]], bool]:
    """The (human, AI) turns of a self-chat transcript, as Baize's preprocess.py reads them:
    split at `[Human]`, the text before the first and the last piece dropped (the last is
    the human's goodbye or a piece cut off), each piece split at `[AI]` into exactly two
    parts, else the reading stops there. Returns the turns and whether every piece parsed."""
    pieces = completion.split(BAIZE_HUMAN)[1:-1]
    turns = []
    for piece in pieces:
        parts = piece.split(BAIZE_AI)
        if len(parts) != 2:
            return turns, False
        turns.append((parts[0].strip(), parts[1].strip()))
    return turns, True


def turn_stop(
    role: str,
    text: str,
    finish_reason: str | None,
    messages: list[dict[str, str]],
    done_marker: str | None,
) -> str | None:
    """Why a new turn ends the conversation instead of joining it (None: it joins)."""
    if role == "user" and done_marker and done_marker in text:
        return "user_done"
    if not text.strip():
        return f"empty_{role}_turn"
    said = {normalized(m["content"]) for m in messages}
    if normalized(text) in said:
        return f"repeated_{role}_turn"
    if role == "user" and finish_reason == "length":
        return "truncated_user_turn"
    return None


def ended(state: dict[str, Any], reason: str) -> Outcome:
    """The conversation as it ends: after its last complete exchange; dropped (counted under
    `reason`) when it has none."""
    messages = list(state["messages"])
    if messages and messages[-1]["role"] == "user":
        messages.pop()
    if not state["n_turns"]:
        return Dropped(reason)
    return Kept({**state, "messages": messages, "stop_reason": reason})


@dataclass(frozen=True)
class Dialogue:
    """What every stage of one job shares. The renderer pickles as its model's name."""

    config: ConversationConfig
    renderer: PromptRenderer
    model_name: str
    seed: int  # sampling.seed: draws turn counts and user prompts
    max_model_len: int
    max_tokens: int  # sampling.max_tokens
    user_stop: tuple[str, ...] = ()  # magpie: the template's end of a user turn

    def start(self, doc: Document, conversation_id: str) -> dict[str, Any]:
        """A conversation's first state from its input row (no turn yet)."""
        return {
            "id": conversation_id,
            "source_id": doc.source_id,
            "kind": self.config.kind,
            "seed": doc.text,
            "opening": None,
            "messages": [],
            "n_turns": 0,
            "stop_reason": None,
            "model": self.model_name,
            "n_input_tokens": 0,
            "n_output_tokens": 0,
            "finish_reason": None,
        }

    def limit(self, conversation_id: str) -> int | None:
        lo, hi = self.config.turn_range()
        return turn_limit(self.seed, conversation_id, lo, hi)

    def fits(self, prompt: str, max_tokens: int) -> bool:
        """Whether `prompt` leaves `max_tokens` of room in the context."""
        return self.renderer.count_tokens([prompt])[0] + max_tokens <= self.max_model_len


def magpie_user_prompt(renderer: PromptRenderer, messages: list[dict[str, str]]) -> str:
    """gen_mt.py's prompt for the next user turn: the conversation under its multi-turn
    system prompt, rendered by the chat template up to where the next user message would
    begin (for a template without a system role, the system text opens the first user
    turn). ConfigError when the template cannot be cut there."""
    before = [{"role": "system", "content": MAGPIE_MT_SYSTEM_PROMPT}, *messages]
    if renderer.folds_system:
        before = fold_system_messages(before)
    return _cut(renderer.tokenizer, before)[0]


class Openers(Method):
    """Stage `openers` (ultrachat, topics): `openers_per_topic` opening questions sampled in
    one request per topic; each kept one begins a conversation."""

    name = "conversation_openers"
    schema = CONVERSATION_SCHEMA

    def __init__(self, dialogue: Dialogue) -> None:
        self.dialogue = dialogue
        self.n = dialogue.config.openers_per_topic

    def estimate_rows(self, doc: Document) -> int:
        return self.n

    def sampling_overrides(self) -> dict[str, Any]:
        return {"n": self.n}

    def stage_sampling(self, job: SamplingSpec) -> SamplingSpec:
        cap = min(job.max_tokens, self.dialogue.config.opener_max_tokens)
        return dataclasses.replace(job, n=self.n, max_tokens=cap)

    def expand(self, doc: Document) -> list[Candidate]:
        rid = row_id(doc.source_id, "openers")
        if doc.error is not None:
            return [Candidate(rid, doc.source_id, error=doc.error, width=self.n)]
        if not (doc.text or "").strip():
            return [Candidate(rid, doc.source_id, dropped="empty_seed", width=self.n)]
        prompt = [{"role": "user", "content": OPENER.format(topic=doc.text.strip())}]
        return [Candidate(rid, doc.source_id, {"doc": doc}, prompt, width=self.n)]

    def finish(self, candidate: Candidate, result: EngineResult) -> list[Outcome]:
        doc = candidate.fields["doc"]
        outcomes: list[Outcome] = []
        seen: set[str] = set()
        for i, (text, n_out, why) in enumerate(result.all_samples()):
            question = clean_opener(text)
            if not question:
                outcomes.append(Dropped("empty_opener"))
            elif why == "length":
                outcomes.append(Dropped("truncated_opener"))
            elif normalized(question) in seen:
                outcomes.append(Dropped("duplicate_opener"))
            else:
                seen.add(normalized(question))
                state = self.dialogue.start(doc, row_id(doc.source_id, "conversation", i))
                state["opening"] = question
                state["messages"] = [{"role": "user", "content": question}]
                # the shared prompt's tokens go to the first sample's conversation only
                state["n_input_tokens"] = result.n_input_tokens if i == 0 else 0
                state["n_output_tokens"] = n_out
                state["finish_reason"] = why
                outcomes.append(Kept(state))
        return outcomes


class TurnStep(Method):
    """Stage `user-tK` or `assistant-tK`: turn K of every conversation still going on; those
    that ended are carried as they are. The first stage reads input rows instead (a first
    user message; for magpie with `response_column`, a first exchange)."""

    schema = CONVERSATION_SCHEMA

    def __init__(self, dialogue: Dialogue, role: str, turn: int, first: bool) -> None:
        self.dialogue = dialogue
        self.role = role
        self.turn = turn
        self.name = f"conversation_{role}"
        self.counts_input_documents = first
        c = dialogue.config
        magpie_user = c.kind == "magpie" and role == "user"
        self.max_tokens_cap = c.instruction_max_tokens if magpie_user else None

    def estimate_rows(self, doc: Document) -> int:
        return 1

    def stage_sampling(self, job: SamplingSpec) -> SamplingSpec:
        c = self.dialogue.config
        sampling = dataclasses.replace(job, n=1)
        if c.kind != "magpie":
            return sampling  # UltraChat's and Baize's turns sample as the job says
        if self.role == "assistant":
            return dataclasses.replace(sampling, temperature=c.response_temperature)
        return dataclasses.replace(
            sampling,
            temperature=c.instruction_temperature,
            top_p=c.instruction_top_p,
            max_tokens=min(job.max_tokens, c.instruction_max_tokens),
            stop=(*self.dialogue.user_stop, "\n"),  # gen_mt.py's early stopping
        )

    def _state(self, doc: Document) -> dict[str, Any] | Candidate:
        """The conversation this document carries; a first stage starts it from the input
        row (or says why it cannot: an input error, an empty row)."""
        if STATE in doc.extra:
            return dict(doc.extra[STATE])  # type: ignore[call-overload]
        conversation_id = row_id(doc.source_id, "conversation")
        rid = row_id(conversation_id, self.role, self.turn)
        if doc.error is not None:
            return Candidate(rid, doc.source_id, error=doc.error)
        text = (doc.text or "").strip()
        if not text:
            return Candidate(rid, doc.source_id, dropped="empty_seed")
        state = self.dialogue.start(doc, conversation_id)
        state["opening"] = text
        state["messages"] = [{"role": "user", "content": text}]
        response = self.dialogue.config.response_column
        if response is not None:
            answer = doc.extra.get(response)
            if not isinstance(answer, str) or not answer.strip():
                return Candidate(rid, doc.source_id, dropped="empty_response")
            state["messages"].append({"role": "assistant", "content": answer.strip()})
            state["n_turns"] = 1
        return state

    def expand(self, doc: Document) -> list[Candidate]:
        state = self._state(doc)
        if isinstance(state, Candidate):
            return [state]
        rid = row_id(state["id"], self.role, self.turn)
        if state["stop_reason"] is not None:
            return [Candidate(rid, doc.source_id, kept=state)]
        limit = self.dialogue.limit(state["id"])
        if self.role == "user" and limit is not None and state["n_turns"] >= limit:
            return [self._settled(rid, doc.source_id, ended(state, "max_turns"))]
        try:
            prompt = self.prompt(state)
        except ConfigError as err:  # the template cannot be cut after this conversation
            return [Candidate(rid, doc.source_id, error=str(err), error_stage="prompt")]
        room = min(self.dialogue.max_tokens, self.max_tokens_cap or self.dialogue.max_tokens)
        if not self.dialogue.fits(prompt, room):
            return [self._settled(rid, doc.source_id, ended(state, "context_full"))]
        return [Candidate(rid, doc.source_id, {"state": state}, raw_prompt=prompt)]

    @staticmethod
    def _settled(rid: str, source_id: str, outcome: Outcome) -> Candidate:
        if isinstance(outcome, Dropped):
            return Candidate(rid, source_id, dropped=outcome.filter_name)
        assert isinstance(outcome, Kept)
        return Candidate(rid, source_id, kept=outcome.row)

    def prompt(self, state: dict[str, Any]) -> str:
        """The raw prompt that makes this turn."""
        d, messages = self.dialogue, state["messages"]
        if self.role == "assistant":
            return d.renderer.render_text(messages)  # the template's own default system turn
        if d.config.kind == "magpie":
            return magpie_user_prompt(d.renderer, messages)
        prompts = d.config.user_prompts
        chosen = prompts[draw(d.seed, state["id"], "user_prompt", len(prompts))]
        return d.renderer.render_text(
            [{"role": "user", "content": simulator_message(messages, chosen)}]
        )

    def finish(self, candidate: Candidate, result: EngineResult) -> Outcome:
        state = dict(candidate.fields["state"])
        state["n_input_tokens"] += result.n_input_tokens
        state["n_output_tokens"] += result.n_output_tokens
        state["finish_reason"] = result.finish_reason
        text = result.text.strip()
        if self.role == "user" and self.dialogue.config.kind == "ultrachat":
            text = clean_simulated_turn(text)
        reason = turn_stop(
            self.role,
            text,
            result.finish_reason,
            state["messages"],
            self.dialogue.config.done_marker,
        )
        if reason is not None:
            return ended(state, reason)
        state["messages"] = [*state["messages"], {"role": self.role, "content": text}]
        if self.role == "assistant":
            state["n_turns"] += 1
            limit = self.dialogue.limit(state["id"])
            if limit is not None and state["n_turns"] >= limit:
                state["stop_reason"] = "max_turns"
        return Kept(state)


class SelfChat(Method):
    """Baize's one stage: the self-chat template completed as a transcript, parsed into
    turns and cut by the stop rules."""

    name = "conversation"
    schema = CONVERSATION_SCHEMA
    diversity_column = "opening"

    def __init__(self, dialogue: Dialogue) -> None:
        self.dialogue = dialogue

    def estimate_rows(self, doc: Document) -> int:
        return 1

    def stage_sampling(self, job: SamplingSpec) -> SamplingSpec:
        """The job's sampling; with `constrain`, decoded into Baize's transcript format."""
        sampling = dataclasses.replace(job, n=1)
        if not self.dialogue.config.constrain:
            return sampling
        regex = baize_transcript_regex(self.dialogue.config.turn_range()[1], job.max_tokens)
        return dataclasses.replace(sampling, constraint=Constraint("regex", regex))

    def expand(self, doc: Document) -> list[Candidate]:
        rid = row_id(doc.source_id, "conversation")
        if doc.error is not None:
            return [Candidate(rid, doc.source_id, error=doc.error)]
        if not (doc.text or "").strip():
            return [Candidate(rid, doc.source_id, dropped="empty_seed")]
        messages = [{"role": "user", "content": BAIZE_SELF_CHAT.format(doc.text.strip())}]
        return [Candidate(rid, doc.source_id, {"doc": doc}, messages)]

    def finish(self, candidate: Candidate, result: EngineResult) -> Outcome:
        state = self.dialogue.start(candidate.fields["doc"], candidate.row_id)
        state.update(
            n_input_tokens=result.n_input_tokens,
            n_output_tokens=result.n_output_tokens,
            finish_reason=result.finish_reason,
        )
        return self.conversation(state, result.text, result.finish_reason)

    def conversation(self, state: dict[str, Any], completion: str, why: str | None) -> Outcome:
        """The transcript's turns up to the first that a stop rule ends it at."""
        turns, parsed = baize_turns(completion)
        if not turns:
            return Dropped("unparsed_turn" if not parsed else "no_turns")
        limit = self.dialogue.limit(state["id"])
        marker = self.dialogue.config.done_marker
        for human, ai in turns:
            for role, text in (("user", human), ("assistant", ai)):
                reason = turn_stop(role, text, None, state["messages"], marker)
                if reason is not None:
                    return ended(state, reason)
                state["messages"] = [*state["messages"], {"role": role, "content": text}]
            state["n_turns"] += 1
            state["opening"] = state["opening"] or human
            if limit is not None and state["n_turns"] >= limit:
                return Kept({**state, "stop_reason": "max_turns"})
        if not parsed:
            return Kept({**state, "stop_reason": "unparsed_turn"})
        # the model stopped writing: Baize's human stops when they have no more question
        return Kept({**state, "stop_reason": "truncated" if why == "length" else "user_done"})


BAIZE_MARKER_TOKENS = 6  # "\n[Human] " spelled in small tokens, generously


def baize_turn_chars(max_tokens: int) -> int:
    """The most characters of one constrained turn: the first exchange and the next human
    marker fit `max_tokens` at one token per character (printable ASCII: at most one byte,
    so at most one token, each), so a transcript cut by max_tokens keeps that exchange."""
    return max(8, (max_tokens - 3 * BAIZE_MARKER_TOKENS) // 3)


def baize_transcript_regex(most: int | None, max_tokens: int = 384) -> str:
    """Baize's format, as a constrained transcript is decoded into: 1 to `most` exchanges
    (8 without a cap), then the human's last piece, answered or not (preprocess.py drops
    it); turns of printable ASCII without a marker's `[` or a newline, each at most
    `baize_turn_chars(max_tokens)` long."""
    turn = rf"[ -Z\\-~]{{1,{baize_turn_chars(max_tokens)}}}"
    human, ai = (rf"{re.escape(marker)} {turn}" for marker in (BAIZE_HUMAN, BAIZE_AI))
    return rf"{human}\n{ai}\n({human}\n{ai}\n){{0,{(most or 8) - 1}}}{human}(\n{ai})?"


def state_documents(table: pa.Table, first_ordinal: int) -> list[Document]:
    """A stage's documents from the previous stage's committed unit (on its replica): each
    conversation as it stands, in row order."""
    return [
        Document(first_ordinal + i, row["source_id"], None, extra={STATE: row})
        for i, row in enumerate(table.to_pylist())
    ]


def count_endings(table: pa.Table) -> dict[str, dict[str, int]]:
    """Kept conversations per stop reason and per number of exchanges (beside the data)."""
    return {
        "stop_reasons": dict(Counter(table.column("stop_reason").to_pylist())),
        "turns": dict(Counter(str(n) for n in table.column("n_turns").to_pylist())),
    }


def turn_stages(dialogue: Dialogue, user: Dialogue | None = None) -> list[tuple[str, Method]]:
    """The stages in order: openers (topics), then user and assistant turns up to the most
    exchanges (from turn 2 when the input holds the first exchange). `user`: the user
    simulator's model, its renderer and context (default: the assistant's)."""
    c = dialogue.config
    user = user or dialogue
    _, most = c.turn_range()
    assert most is not None
    stages: list[tuple[str, Method]] = []
    if c.seeds == "topics":
        stages.append(("openers", Openers(user)))
    for turn in range(1 if c.response_column is None else 2, most + 1):
        if turn > 1:
            stages.append((f"user-t{turn}", TurnStep(user, "user", turn, not stages)))
        stages.append((f"assistant-t{turn}", TurnStep(dialogue, "assistant", turn, not stages)))
    return stages


def stage_pool(name: str, user_pool: str | None) -> str:
    """The pool a stage runs on: the user simulator's writes openers and user turns."""
    if user_pool is not None and (name == "openers" or name.startswith("user-")):
        return user_pool
    return DEFAULT_POOL


def conversation_input(config: JobConfig) -> InputSpec:
    """The text column (questions, topics or first instructions), plus magpie's responses."""
    i, section = config.input, config.section_as(ConversationConfig)
    assert i is not None
    extra = (section.response_column,) if section.response_column else ()
    return InputSpec(absolute_path(i.path), i.text_column, i.id_column, i.limit, extra)


def run_conversation(ctx: JobContext) -> dict[str, Any]:
    """Turn by turn, one stage per turn. With `user_pool` the user simulator's pool writes the
    openers and user turns while the job's engine answers: each pool runs its stages in turn,
    and each stage takes the other pool's units as they commit (`run_together`)."""
    assert ctx.docs is not None
    config = ctx.config.section_as(ConversationConfig)
    user_pool = config.user_pool or DEFAULT_POOL
    user_renderer = ctx.runner.pool_renderer(user_pool)
    user_stop: tuple[str, ...] = ()
    if config.kind == "magpie":  # a template that cannot be cut is refused before any work
        _, user_stop = pre_query_prefix(user_renderer.tokenizer)
        probe = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]
        magpie_user_prompt(user_renderer, probe)
    dialogue = Dialogue(
        config,
        ctx.renderer,
        ctx.model_name,
        ctx.config.sampling.seed,
        ctx.config.engine.max_model_len,
        ctx.config.sampling.max_tokens,
        user_stop,
    )
    user = dataclasses.replace(
        dialogue,
        renderer=user_renderer,
        max_model_len=ctx.runner.pool_config(user_pool).engine.max_model_len,
    )
    if config.kind == "baize":
        stages: list[tuple[str, Method]] = [("transcripts", SelfChat(dialogue))]
    else:
        stages = turn_stages(dialogue, user)
    # the job's diversity filter decides where the rows are written: in the output stage
    stages[-1][1].diversity_column = "opening"
    first_name, first = stages[0]
    units = ctx.runner.plan(ctx.docs, first, f"{ctx.fingerprint}/{first_name}", ctx.id_column)
    ctx.prepare()
    work = ctx.store.child(STAGES_DIR)
    last = len(stages) - 1
    if last:
        work.prepare(f"{ctx.fingerprint}/stages", {"stages_of": ctx.fingerprint}, overwrite=False)
    first_store = ctx.store if last == 0 else work
    parts = [
        Together(
            functools.partial(ctx.runner.execute, first_store, ctx.docs, first, units, first_name),
            stage_pool(first_name, config.user_pool),
            publishes=((first_store, first_name),),
        )
    ]
    # conversations per unit never grow past the first stage's rows: n per topic
    per_row = config.openers_per_topic if isinstance(first, Openers) else 1
    lineages = [
        dataclasses.replace(u, start=u.start * per_row, stop=u.stop * per_row) for u in units
    ]
    for i in range(1, len(stages)):
        name, method = stages[i]
        store = ctx.store if i == last else work
        run = functools.partial(
            ctx.runner.run_derived_stage,
            name,
            store,
            work,
            lineages,
            stages[i - 1][0],
            STATE_COLUMNS,
            state_documents,
            method,
            ctx.fingerprint,
        )
        parts.append(Together(run, stage_pool(name, config.user_pool), ((store, name),)))
    ctx.runner.run_together(parts)
    return write_stats(ctx, config, work, [name for name, _ in stages], lineages)


def write_stats(
    ctx: JobContext,
    config: ConversationConfig,
    work: Any,
    stage_names: list[str],
    units: list[Any],
) -> dict[str, Any]:
    """stats.json: the output stage's units, plus every conversation (or opener) the work
    stages dropped or errored, so rows_in counts every one begun; their tokens too."""
    outside = UnitStats()
    for position, name in enumerate(stage_names[:-1]):
        totals = work.totals(name)
        outside.rows_in += sum(totals.dropped.values()) + sum(totals.errored.values())
        outside.dropped.update(totals.dropped)
        outside.errored.update(totals.errored)
        outside.input_tokens += totals.input_tokens
        outside.output_tokens += totals.output_tokens
        if position == 0:
            outside.input_documents += totals.input_documents
    endings: dict[str, Counter[str]] = {"stop_reasons": Counter(), "turns": Counter()}
    for unit in ctx.runner.summarize_committed(
        ctx.store, units, stage_names[-1], ("stop_reason", "n_turns"), count_endings
    ):
        for key, counts in unit.items():
            endings[key].update(counts)
    return ctx.store.write_stats(
        units_total=ctx.runner.summary.units_total,
        extra=outside,
        sections={
            "conversation": {
                "kind": config.kind,
                "stages": stage_names,
                "stop_reasons": dict(sorted(endings["stop_reasons"].items())),
                "turns": dict(sorted(endings["turns"].items(), key=lambda kv: int(kv[0]))),
            }
        },
    )


def conversation_papers(config: JobConfig) -> list[str]:
    kind = config.section_as(ConversationConfig).kind
    return [
        {"ultrachat": "ding2023ultrachat", "baize": "xu2023baize", "magpie": "xu2024magpie"}[kind]
    ]


register(
    MethodSpec(
        "conversation",
        run=run_conversation,
        section=ConversationConfig,
        input_spec=conversation_input,
        papers=conversation_papers,
        streams=lambda config: config.section_as(ConversationConfig).kind != "baize",
    )
)
