"""The remote engine (engine.kind: openai): its requests, retries, rate limit and accounting.

    python -m pytest tests/test_openai_engine.py

The client is tested here against a small OpenAI-shaped server behind the fault proxy (fast,
every fault exactly where it is wanted); the real thing, `vllm serve` on CPU behind the same
proxy, driven by `synth-ray run`, is test_remote_job.py's.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from fault_proxy import Fault, FaultProxy

from synth_ray.config import validate_config
from synth_ray.engine.openai_engine import (
    OpenAIEngine,
    RemoteAuthError,
    RemoteSettings,
    RemoteUnavailableError,
    parse_response,
    request_body,
    retry_after_s,
    share_tokens,
)
from synth_ray.engine.rate_limit import TokenBuckets
from synth_ray.engine.requests import Constraint, EngineRequest, SamplingSpec
from synth_ray.errors import ConfigError

SPEC = SamplingSpec(0.5, 0.9, 8)


def request(rid="r1", n=1, constraint=None, messages=({"role": "user", "content": "hi"},)):
    sampling = SamplingSpec(0.5, 0.9, 8, n=n, constraint=constraint, stop=("\n\n",))
    return EngineRequest(rid, [1, 2, 3], sampling, 7, 8, messages)


class Stub:
    """An OpenAI-shaped server: /v1/models and /v1/completions (and chat) answering by the
    prompt, recording each body it got and the Authorization it was sent."""

    def __init__(self) -> None:
        self.bodies: list[dict] = []
        self.auth: list[str | None] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _send(self, status, data):
                raw = json.dumps(data).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def do_GET(self):
                stub.auth.append(self.headers.get("Authorization"))
                self._send(200, {"data": [{"id": "stub-model"}]})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                stub.bodies.append(body)
                stub.auth.append(self.headers.get("Authorization"))
                if body.get("max_tokens", 0) > 100:
                    self._send(400, {"error": {"message": "max_tokens too large"}})
                    return
                n = body.get("n", 1)
                if "messages" in body:
                    choices = [
                        {"index": i, "message": {"content": f"chat {i}"}, "finish_reason": "stop"}
                        for i in range(n)
                    ]
                else:
                    choices = [
                        {"index": i, "text": f"text {i} " * (i + 1), "finish_reason": "length"}
                        for i in range(n)
                    ]
                usage = {"prompt_tokens": 3, "completion_tokens": 4 * n}
                self._send(200, {"choices": choices[::-1], "usage": usage})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture(scope="module")
def stub():
    server = Stub()
    yield server
    server.server.shutdown()


def engine_at(url, **remote):
    settings = RemoteSettings(base_url=f"{url}/v1", api_key="sk-test", max_backoff_s=0.05,
                              **remote)  # fmt: skip
    return OpenAIEngine("stub-model", settings, count_tokens=lambda t: len(t.split()))


def test_a_request_becomes_the_apis_body():
    """Completions: the token ids as the prompt; chat: the messages; sampling, seed, stop and
    n as the APIs name them; a JSON Schema as response_format, regex and choice as vLLM's
    structured_outputs; a raw prompt cannot go to a chat API."""
    body = request_body("m", request(n=2), "completions")
    assert body["prompt"] == [1, 2, 3] and "messages" not in body
    assert (body["model"], body["max_tokens"], body["n"], body["seed"]) == ("m", 8, 2, 7)
    assert body["stop"] == ["\n\n"] and body["temperature"] == 0.5 and body["top_p"] == 0.9
    assert "seed" not in request_body("m", request(), "completions", send_seed=False)
    chat = request_body("m", request(), "chat")
    assert chat["messages"] == [{"role": "user", "content": "hi"}] and "prompt" not in chat
    schema = Constraint("json", json.dumps({"type": "object"}))
    fmt = request_body("m", request(constraint=schema), "chat")["response_format"]
    assert fmt == {
        "type": "json_schema",
        "json_schema": {"name": "row", "schema": {"type": "object"}},
    }
    regex = request_body("m", request(constraint=Constraint("regex", "[ab]+")), "completions")
    assert regex["structured_outputs"] == {"regex": "[ab]+"}
    choice = request_body("m", request(constraint=Constraint("choice", choices=("a", "b"))), "chat")
    assert choice["structured_outputs"] == {"choice": ["a", "b"]}
    with pytest.raises(Exception, match="needs engine.openai.api: completions"):
        request_body("m", request(messages=None), "chat")


def test_usage_is_the_rows_tokens_and_n_samples_share_it_by_length():
    data = {
        "choices": [
            {"index": 1, "text": "b b b", "finish_reason": "length"},
            {"index": 0, "text": "a", "finish_reason": "stop"},
        ],
        "usage": {"prompt_tokens": 11, "completion_tokens": 8},
    }
    result = parse_response(request(n=2), data, "completions", lambda t: len(t.split()), ("x",))
    assert (result.text, result.finish_reason, result.n_input_tokens) == ("a", "stop", 11)
    assert result.n_output_tokens == 8 and result.samples == (
        ("a", 2, "stop"),
        ("b b b", 6, "length"),
    )
    assert result.retries == ("x",)
    assert share_tokens(10, [1, 1, 1]) == [4, 3, 3] and sum(share_tokens(7, [0, 0])) == 7
    assert parse_response(request(), {"choices": []}, "chat", None, ()).error


def test_retry_after_is_seconds_or_an_http_date():
    assert retry_after_s("2") == 2.0 and retry_after_s(" 0.5 ") == 0.5
    assert retry_after_s("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0
    assert retry_after_s("soon") is None and retry_after_s(None) is None


def test_buckets_hold_a_minutes_allowance_and_refill_in_order():
    """60 requests a minute: 60 go at once, the next waits a second; a token limit holds a
    request of prompt + max_tokens until the bucket has them; the waits are summed."""
    now = [0.0]

    async def sleep(seconds):
        now[0] += seconds

    async def run():
        buckets = TokenBuckets(60, 1000, clock=lambda: now[0], sleep=sleep)
        for _ in range(60):
            assert await buckets.acquire(10) == 0.0
        assert await buckets.acquire(10) == pytest.approx(1.0)
        # 400 tokens left after 60 x 10, +16.7 in that second, -10: 900 needs 29.6 s more
        assert await buckets.acquire(900) == pytest.approx(29.6)
        buckets.give_back(400)
        assert await buckets.acquire(300) == 0.0
        return buckets.waited_s

    assert asyncio.run(run()) == pytest.approx(30.6)


def test_429_500_and_dropped_connections_are_retried_a_400_is_a_row_error(stub):
    """Behind the fault proxy: a 429 with Retry-After is waited out (never sooner), a 500 and
    a dropped connection are retried; each retry's reason is on the result; a 400 is the
    row's error at once; the key goes out as a bearer token."""
    faults = {
        2: Fault(429, b'{"error": {"message": "slow down"}}', {"Retry-After": "0.3"}),
        3: Fault(500, b"oops"),
        4: Fault(drop=True),
    }
    with FaultProxy(stub.url, lambda method, path, n: faults.get(n)) as proxy:
        engine = engine_at(proxy.url)  # request 1: GET /models

        async def run():
            started = time.monotonic()
            first = await engine.generate_one(request("a"))
            waited = time.monotonic() - started
            bad = await engine.generate_one(
                EngineRequest("b", [1], SamplingSpec(0, 1, 500), None, 500, None)
            )
            return first, waited, bad

        first, waited, bad = asyncio.run(run())
    assert first.error is None and first.text == "text 0 "
    assert first.retries == ("HTTP 429", "HTTP 500", "connection (RemoteProtocolError)")
    assert waited >= 0.3
    assert bad.error == "remote engine: HTTP 400: max_tokens too large" and not bad.retries
    assert engine.retries == {"HTTP 429": 1, "HTTP 500": 1, "connection (RemoteProtocolError)": 1}
    assert stub.auth[-1] == "Bearer sk-test"


def test_a_request_that_keeps_failing_is_a_row_error_naming_the_last_reason(stub):
    with FaultProxy(stub.url, lambda method, path, n: Fault(503) if n > 1 else None) as proxy:
        engine = engine_at(proxy.url, max_attempts=3)
        result = asyncio.run(engine.generate_one(request()))
    assert result.error == "remote engine: HTTP 503 after 3 attempts (engine.openai.max_attempts)"
    assert result.retries == ("HTTP 503", "HTTP 503")


def test_a_refused_key_or_a_model_not_served_fails_at_start_in_one_line(stub):
    with FaultProxy(
        stub.url, lambda m, p, n: Fault(401, b'{"error": {"message": "bad key"}}')
    ) as proxy:
        with pytest.raises(RemoteAuthError, match=r"refused the key \(HTTP 401: bad key\)"):
            engine_at(proxy.url)
    with pytest.raises(
        RemoteUnavailableError, match="engine.model other: not served at .* stub-model"
    ):
        OpenAIEngine("other", RemoteSettings(base_url=f"{stub.url}/v1"))
    with pytest.raises(RemoteUnavailableError, match="cannot reach it"):
        OpenAIEngine("m", RemoteSettings(base_url="http://127.0.0.1:9/v1"))


def test_chat_api_sends_messages_and_reads_message_content(stub):
    engine = engine_at(stub.url, api="chat")
    result = asyncio.run(engine.generate_one(request(n=2)))
    assert result.text == "chat 0" and [s[0] for s in result.samples] == ["chat 0", "chat 1"]
    assert stub.bodies[-1]["messages"] == [{"role": "user", "content": "hi"}]


def test_remote_engine_config_errors_are_one_line(tmp_path, monkeypatch):
    from synth_ray.runtime.job import run_job

    base = {
        "method": "generate",
        "input": {"path": "examples/prompts.jsonl", "text_column": "prompt"},
        "output": {"path": str(tmp_path / "out")},
    }
    with pytest.raises(ConfigError, match="engine.openai: required for kind openai"):
        validate_config({**base, "engine": {"kind": "openai", "model": "m"}})
    with pytest.raises(ConfigError, match="set kind: openai"):
        validate_config({**base, "engine": {"openai": {"base_url": "http://x/v1"}}})
    remote = {"base_url": "http://127.0.0.1:9/v1", "api_key_env": "SYNTH_RAY_NO_SUCH_KEY",
              "tokenizer": "embedded:smollm2-135m-instruct"}  # fmt: skip
    config = validate_config({**base, "engine": {"kind": "openai", "model": "m", "openai": remote}})
    monkeypatch.delenv("SYNTH_RAY_NO_SUCH_KEY", raising=False)
    with pytest.raises(ConfigError, match="api_key_env SYNTH_RAY_NO_SUCH_KEY: not set"):
        run_job(config, show_progress=False)
    assert not (tmp_path / "out").exists()  # before any work
    # where and how a remote model is reached is not what the job makes
    plain = validate_config({**base, "engine": {"model": "m"}})
    assert config.fingerprint() == plain.fingerprint()
