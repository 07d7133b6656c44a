"""An engine that is an OpenAI-compatible HTTP endpoint (a hosted model, a team's vLLM or SGLang
server, an inference gateway): `engine.kind: openai`.

    python -m pytest tests/test_openai_engine.py   # a real `vllm serve` behind a fault proxy

A replica (a Ray actor without a GPU) holds up to `max_concurrency` requests open at once,
each first paying the job's shared rate limit (engine/rate_limit.py, through the pool's one
limiter actor). A request answered 429 or 5xx, timed out, or cut off (a dropped connection)
is retried with full-jitter exponential backoff (tenacity), never sooner than the server's
`Retry-After`; one still failing after `max_attempts` becomes a row error naming the last
reason, as any engine's rejected request does. An authentication error (401/403) is no row's
fault: it fails the replica with one line (`RemoteAuthError`), and at start, where every
replica checks the key and the model against `GET /models` before taking work, the job fails
at once. The API key is read from the environment variable the config names, on the driver,
and travels to the replicas in memory only: never in a config, a log line or the output.
Tokens in and out are the API's `usage`; with n samples the completion tokens are shared
among them by their lengths in the local tokenizer.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any

from synth_ray.engine.dtype import DtypeChoice
from synth_ray.engine.requests import Constraint, EngineRequest, EngineResult

Limiter = Callable[[int], Awaitable[Any]]  # await limiter(tokens): the shared rate limit
# what a slow server may take per request before it counts as a timeout (a retry)
DEFAULT_TIMEOUT_S = 600.0


class RemoteAuthError(RuntimeError):
    """The endpoint refused the API key (401/403): no retry, no row error: the job stops."""


class RemoteUnavailableError(RuntimeError):
    """The endpoint cannot be reached, or does not serve the model, at a replica's start."""


@dataclass(frozen=True)
class RemoteSettings:
    """Where and how a remote engine sends requests (config.EngineConfig's `openai` section,
    with the key's value read on the driver)."""

    base_url: str
    api: str = "completions"  # or "chat"
    api_key: str | None = field(default=None, repr=False)  # never printed
    max_concurrency: int = 64
    timeout_s: float = DEFAULT_TIMEOUT_S
    max_attempts: int = 6
    max_backoff_s: float = 30.0
    check_model: bool = True  # at start: GET /models must list the model
    send_seed: bool = True  # a vLLM server on CPU dies on seeded sampled requests


class _Transient(Exception):
    """A failure worth another try: 429, 5xx, a timeout, a dropped connection."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


class _Rejected(Exception):
    """The server refused this request for what it is (400, 404, 422), or it kept failing: a
    row error; `retries` are the reasons of the attempts that were retried."""

    def __init__(self, reason: str, retries: tuple[str, ...] = ()) -> None:
        super().__init__(reason)
        self.retries = retries


def retry_after_s(value: str | None, now: float | None = None) -> float | None:
    """Seconds a `Retry-After` header asks to wait: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None
    return max(0.0, when - (time.time() if now is None else now))


def constraint_fields(constraint: Constraint | None, api: str) -> dict[str, Any]:
    """A structured-outputs constraint as the request's fields: a JSON Schema as
    `response_format` (OpenAI's, which vLLM and SGLang servers also read; chat only on
    OpenAI's own API), regex, choice and grammar as vLLM's `structured_outputs` field (vLLM
    servers; another server answers 400, a row error naming it)."""
    if constraint is None:
        return {}
    if constraint.kind == "json":
        schema = json.loads(constraint.value)
        return {
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "row", "schema": schema},
            }
        }
    if constraint.kind == "choice":
        return {"structured_outputs": {"choice": list(constraint.choices)}}
    return {"structured_outputs": {constraint.kind: constraint.value}}


def request_body(
    model: str, request: EngineRequest, api: str, send_seed: bool = True
) -> dict[str, Any]:
    """The JSON body of `request`: the prompt as token ids (completions) or its chat
    messages (chat), its sampling, seed and constraint."""
    s = request.sampling
    body: dict[str, Any] = {
        "model": model,
        "max_tokens": request.max_tokens,
        "temperature": s.temperature,
        "top_p": s.top_p,
        "n": s.n,
    }
    if api == "chat":
        if request.messages is None:
            raise _Rejected("a raw prompt (no chat messages) needs engine.openai.api: completions")
        body["messages"] = [dict(m) for m in request.messages]
    else:
        body["prompt"] = list(request.prompt_token_ids)
    if request.seed is not None and send_seed:
        body["seed"] = request.seed
    if s.stop:
        body["stop"] = list(s.stop)
    if s.presence_penalty:
        body["presence_penalty"] = s.presence_penalty
    if s.ignore_eos:  # vLLM's own field (benchmarks): other servers refuse it
        body["ignore_eos"] = True
    body.update(constraint_fields(s.constraint, api))
    return body


def share_tokens(total: int, lengths: list[int]) -> list[int]:
    """`total` completion tokens shared among samples in proportion to `lengths` (their
    local token counts), summing to `total` exactly."""
    if not lengths:
        return []
    weight = sum(lengths)
    if weight == 0:
        base = [total // len(lengths)] * len(lengths)
        base[0] += total - sum(base)
        return base
    shares = [total * n // weight for n in lengths]
    shares[lengths.index(max(lengths))] += total - sum(shares)
    return shares


def parse_response(
    request: EngineRequest,
    data: dict[str, Any],
    api: str,
    count: Callable[[str], int] | None,
    retries: tuple[str, ...],
) -> EngineResult:
    """An EngineResult from an OpenAI-style response: choices in index order, tokens from
    `usage` (prompt tokens: the request's own count where the server says none)."""
    choices = sorted(data.get("choices") or [], key=lambda c: c.get("index", 0))
    if not choices:
        return EngineResult(
            request.request_id, "", len(request.prompt_token_ids), 0, None,
            error="remote engine returned no choices", retries=retries,
        )  # fmt: skip
    texts = [
        (c.get("message") or {}).get("content") or "" if api == "chat" else c.get("text") or ""
        for c in choices
    ]
    reasons = [c.get("finish_reason") for c in choices]
    usage = data.get("usage") or {}
    n_in = int(usage.get("prompt_tokens") or len(request.prompt_token_ids))
    n_out = usage.get("completion_tokens")
    local = [count(t) if count else len(t.split()) for t in texts]
    n_out = int(n_out) if n_out is not None else sum(local)
    tokens = share_tokens(n_out, local)
    samples = tuple(zip(texts, tokens, reasons, strict=True)) if len(texts) > 1 else ()
    return EngineResult(
        request_id=request.request_id,
        text=texts[0],
        n_input_tokens=n_in,
        n_output_tokens=n_out,
        finish_reason=reasons[0],
        samples=samples,
        retries=retries,
    )


def _message(response: Any) -> str:
    """The server's own one-line reason from an error response."""
    try:
        data = response.json()
        error = data.get("error", data) if isinstance(data, dict) else data
        text = error.get("message") if isinstance(error, dict) else str(error)
    except ValueError:
        text = response.text
    return " ".join(str(text or "").split())[:300]


class OpenAIEngine:
    """The engine of a replica whose model is served elsewhere (see the module docstring)."""

    def __init__(
        self,
        model: str,
        remote: RemoteSettings,
        limiter: Limiter | None = None,
        count_tokens: Callable[[str], int] | None = None,
    ) -> None:
        import httpx

        self.model = model
        self.remote = remote
        self.limiter = limiter
        self.count_tokens = count_tokens
        self.api = remote.api
        self.dtype_choice = DtypeChoice("remote", f"served at {remote.base_url}")
        self.max_num_seqs = remote.max_concurrency
        headers = {"Authorization": f"Bearer {remote.api_key}"} if remote.api_key else {}
        self._headers = headers
        self._client: Any = None  # an httpx.AsyncClient, made in the actor's event loop
        self._slots: asyncio.Semaphore | None = None
        self.finished_requests = 0
        self.finished_tokens = 0
        self.retries: dict[str, int] = {}
        self._httpx = httpx
        self.check()

    def check(self) -> None:
        """At start: the key is accepted and the model is served (`GET /models`); one line
        naming what is wrong otherwise."""
        url = self.remote.base_url.rstrip("/") + "/models"
        try:
            response = self._httpx.get(url, headers=self._headers, timeout=30.0)
        except self._httpx.HTTPError as err:
            raise RemoteUnavailableError(
                f"engine.openai.base_url {self.remote.base_url}: cannot reach it "
                f"({type(err).__name__})"
            ) from None
        if response.status_code in (401, 403):
            raise RemoteAuthError(
                f"engine.openai.api_key_env: {self.remote.base_url} refused the key "
                f"(HTTP {response.status_code}: {_message(response)})"
            )
        if response.status_code != 200 or not self.remote.check_model:
            return  # a gateway without /models: the first request tells
        served = [m.get("id") for m in (response.json().get("data") or [])]
        if served and self.model not in served:
            raise RemoteUnavailableError(
                f"engine.model {self.model}: not served at {self.remote.base_url} "
                f"(it serves {', '.join(map(str, served[:5]))})"
            )

    def _ensure_client(self) -> Any:
        if self._client is None:
            limits = self._httpx.Limits(
                max_connections=self.remote.max_concurrency,
                max_keepalive_connections=self.remote.max_concurrency,
            )
            self._client = self._httpx.AsyncClient(
                base_url=self.remote.base_url.rstrip("/") + "/",
                headers=self._headers,
                timeout=self.remote.timeout_s,
                limits=limits,
            )
            self._slots = asyncio.Semaphore(self.remote.max_concurrency)
        return self._client

    def progress(self) -> int:
        """Finished requests and their tokens: a replica whose server answers nothing for
        the stall timeout is stuck (the tokens of a request still streaming are not seen)."""
        return self.finished_tokens + self.finished_requests

    def output_tokens(self) -> int:
        return self.finished_tokens

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        client = self._ensure_client()
        try:
            response = await client.post(path, json=body)
        except self._httpx.TimeoutException as err:
            raise _Transient(f"timeout ({type(err).__name__})") from None
        except self._httpx.TransportError as err:  # refused, reset, dropped mid-answer
            raise _Transient(f"connection ({type(err).__name__})") from None
        status = response.status_code
        if status == 200:
            try:
                return response.json()
            except ValueError:
                raise _Transient("HTTP 200 with a body that is no JSON") from None
        if status in (401, 403):
            raise RemoteAuthError(
                f"engine.openai.api_key_env: {self.remote.base_url} refused the key "
                f"(HTTP {status}: {_message(response)})"
            )
        if status in (408, 409, 429) or status >= 500:
            wait = retry_after_s(response.headers.get("retry-after"))
            raise _Transient(f"HTTP {status}", wait)
        raise _Rejected(f"HTTP {status}: {_message(response)}")

    async def _post_with_retries(
        self, path: str, body: dict[str, Any]
    ) -> tuple[dict[str, Any], tuple[str, ...]]:
        """The response of the first attempt that is not transient; the reasons of the
        attempts before it. Waits: full jitter over an exponential cap, at least Retry-After."""
        from tenacity import (
            AsyncRetrying,
            RetryError,
            retry_if_exception_type,
            stop_after_attempt,
            wait_random_exponential,
        )

        jitter = wait_random_exponential(multiplier=0.5, max=self.remote.max_backoff_s)

        def wait(state: Any) -> float:
            err = state.outcome.exception() if state.outcome else None
            floor = getattr(err, "retry_after", None) or 0.0
            return max(floor, jitter(state))

        reasons: list[str] = []

        def count(state: Any) -> None:
            err = state.outcome.exception()
            reasons.append(getattr(err, "reason", type(err).__name__))
            self.retries[reasons[-1]] = self.retries.get(reasons[-1], 0) + 1

        try:
            async for attempt in AsyncRetrying(
                retry=retry_if_exception_type(_Transient),
                stop=stop_after_attempt(self.remote.max_attempts),
                wait=wait,
                before_sleep=count,
                reraise=False,
            ):
                with attempt:
                    return await self._post(path, body), tuple(reasons)
        except RetryError as err:
            last = err.last_attempt.exception()
            reason = getattr(last, "reason", str(last))
            raise _Rejected(
                f"{reason} after {self.remote.max_attempts} attempts (engine.openai.max_attempts)",
                tuple(reasons),
            ) from None
        raise AssertionError("unreachable")

    async def generate_one(self, request: EngineRequest) -> EngineResult:
        self._ensure_client()
        assert self._slots is not None
        path = "chat/completions" if self.api == "chat" else "completions"
        try:
            body = request_body(self.model, request, self.api, self.remote.send_seed)
        except _Rejected as err:
            return _failed(request, str(err))
        async with self._slots:
            if self.limiter is not None:
                await self.limiter(
                    len(request.prompt_token_ids) + request.max_tokens * request.sampling.n
                )
            try:
                data, retries = await self._post_with_retries(path, body)
            except _Rejected as err:
                return _failed(request, f"remote engine: {err}", err.retries)
        result = parse_response(request, data, self.api, self.count_tokens, retries)
        if result.error is None:
            self.finished_requests += 1
            self.finished_tokens += result.n_output_tokens
        return result

    async def generate_many(self, requests: list[EngineRequest]) -> list[EngineResult]:
        return list(await asyncio.gather(*(self.generate_one(r) for r in requests)))

    def shutdown(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                asyncio.get_running_loop().create_task(client.aclose())
            except RuntimeError:  # no loop running: nothing holds the connections open
                pass


def _failed(request: EngineRequest, error: str, retries: tuple[str, ...] = ()) -> EngineResult:
    return EngineResult(
        request.request_id, "", len(request.prompt_token_ids), 0, None, error=error,
        retries=retries,
    )  # fmt: skip
