"""The messages between the scheduler and a generator: plain dataclasses, cheap to pickle.

A request carries token ids (the prompt is rendered once, on the driver, so its length is
checked before it reaches an engine) and its own seed (derived from the row id), so a row's
completion does not depend on which replica ran it or in what order.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Constraint:
    """What the engine's structured outputs force a completion to be: `json` (a JSON Schema,
    as canonical JSON text), `regex`, `choice` (one of `choices`) or `grammar` (EBNF/GBNF).
    Every token that would leave that language is masked while decoding."""

    kind: str
    value: str = ""
    choices: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in ("json", "regex", "choice", "grammar"):
            raise ValueError(f"constraint kind {self.kind!r}: json, regex, choice or grammar")


@dataclass(frozen=True)
class SamplingSpec:
    temperature: float
    top_p: float
    max_tokens: int
    ignore_eos: bool = False
    n: int = 1  # completions per prompt, sampled in one engine request (shared prefill)
    stop: tuple[str, ...] = ()  # generation ends before any of these strings (not included)
    # OpenAI-style: subtracted from the logit of every token already in the output
    presence_penalty: float = 0.0
    constraint: Constraint | None = None  # structured outputs: decoded inside this language


@dataclass(frozen=True)
class EngineRequest:
    request_id: str
    prompt_token_ids: list[int]
    sampling: SamplingSpec
    seed: int | None
    max_tokens: int  # sampling.max_tokens capped so prompt + output fit the context
    # the chat messages the token ids were rendered from (None: a raw prompt), for an engine
    # that takes messages rather than token ids (a remote chat API)
    messages: tuple[dict[str, str], ...] | None = None

    @property
    def key(self) -> str:
        return self.request_id


@dataclass(frozen=True)
class EngineResult:
    """One finished request; `error` is set (and `text` empty) when the engine rejected it.

    `text`/`finish_reason` are the first completion's; with `n > 1`, `samples` holds all n
    (text, output tokens, finish reason) and `n_output_tokens` is their total."""

    request_id: str
    text: str
    n_input_tokens: int
    n_output_tokens: int
    finish_reason: str | None
    error: str | None = None
    samples: tuple[tuple[str, int, str | None], ...] = ()
    retries: tuple[str, ...] = ()  # a remote engine's: why each retried attempt failed

    @property
    def key(self) -> str:
        return self.request_id

    def all_samples(self) -> list[tuple[str, int, str | None]]:
        return list(self.samples) or [(self.text, self.n_output_tokens, self.finish_reason)]
