"""Retry transient object-store errors with exponential backoff and full jitter.

    python -c "import random; from synth_ray.io.retry import backoff_delay; print([round(backoff_delay(a, random.Random(0)), 2) for a in range(6)])"

Object stores throttle (S3's SlowDown, GCS's 429), return 5xx and drop connections under load:
a run of thousands of shards meets these. Every call of a `UriLocation` goes through
`retry_transient`: a transient error is retried up to `ATTEMPTS` times in all, sleeping a
uniformly random time in [0, min(CAP_S, BASE_S * 2^attempt)] between tries ("full jitter", so
many writers do not retry in step). Writes are idempotent (each object is written whole under
its deterministic name), so a retried PUT is safe. Anything else (not found, access denied, a
bad bucket) is raised at once; a transient error still failing on the last attempt becomes an
`ObjectStoreError`, one line naming the URI, the operation and the last error.
"""

from __future__ import annotations

import errno
import random
import re
import sys
import time
from collections.abc import Callable
from typing import TypeVar

from synth_ray.io.storage_errors import ObjectStoreError

T = TypeVar("T")

ATTEMPTS = 6
BASE_S = 0.5
CAP_S = 20.0

_TRANSIENT_TEXT = re.compile(
    r"slow ?down|throttl|too many requests|request ?limit|rate ?exceeded|service ?unavailable|"
    r"internal ?error|request ?timeout|timed? ?out|connection (?:reset|closed|aborted|refused)|"
    r"broken pipe|temporarily unavailable|try again|\b(?:429|500|502|503|504)\b",
    re.IGNORECASE,
)
_PERMANENT_TEXT = re.compile(
    r"access ?denied|forbidden|\b403\b|\b404\b|no ?such ?(?:bucket|key)|invalid ?access ?key|"
    r"signature ?does ?not ?match|not found",
    re.IGNORECASE,
)
_TRANSIENT_ERRNOS = {
    errno.ETIMEDOUT,
    errno.ECONNRESET,
    errno.ECONNABORTED,
    errno.ECONNREFUSED,
    errno.EAGAIN,
    errno.EPIPE,
}

retries_made = 0  # in this process, for tests and the run summary
_sleep = time.sleep  # tests replace it


def is_transient(err: BaseException) -> bool:
    """Whether retrying may help: throttling, 5xx, timeouts, dropped connections."""
    if isinstance(
        err, FileNotFoundError | PermissionError | IsADirectoryError | NotADirectoryError
    ):
        return False
    if isinstance(err, TimeoutError | ConnectionError):
        return True
    if not isinstance(err, OSError):
        return False
    text = str(err)
    if _PERMANENT_TEXT.search(text):
        return False
    return err.errno in _TRANSIENT_ERRNOS or _TRANSIENT_TEXT.search(text) is not None


def backoff_delay(attempt: int, rng: random.Random | None = None) -> float:
    """Seconds to wait after failed attempt number `attempt` (0-based): full jitter."""
    return (rng or random).uniform(0.0, min(CAP_S, BASE_S * 2**attempt))


def retry_transient(
    what: str,
    call: Callable[[], T],
    attempts: int = ATTEMPTS,
    sleep: Callable[[float], None] | None = None,
    rng: random.Random | None = None,
) -> T:
    """`call()`, retried on transient errors; `what` ("PUT s3://b/out/x") names it in
    warnings and in the final error."""
    global retries_made
    for attempt in range(attempts):
        try:
            return call()
        except OSError as err:
            if not is_transient(err):
                raise
            reason = str(err).strip().splitlines()[0][:300] if str(err).strip() else repr(err)
            if attempt == attempts - 1:
                raise ObjectStoreError(
                    f"{what}: still failing after {attempts} attempts: {reason}"
                ) from err
            delay = backoff_delay(attempt, rng)
            retries_made += 1
            print(
                f"warning: {what}: {reason}; retry {attempt + 1} of {attempts - 1} in {delay:.1f}s",
                file=sys.stderr,
                flush=True,
            )
            (sleep or _sleep)(delay)
    raise AssertionError("unreachable")
