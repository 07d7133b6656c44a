"""Retry transient object-store errors: tenacity's exponential backoff with full jitter.

    python -c "from synth_ray.io.retry import error_kind; print(error_kind(OSError('AWS Error SLOW_DOWN during PutObject operation: Please reduce your request rate.')))"

Object stores throttle (S3's SlowDown, GCS's RESOURCE_EXHAUSTED), return 5xx and drop
connections under load: a run of thousands of shards meets these. Every call of a `UriLocation`
goes through `retry_transient`: a transient error is retried up to `ATTEMPTS` times in all,
sleeping a uniformly random time in [0, min(CAP_S, BASE_S * 2^n)] before retry n+1
(tenacity's `wait_random_exponential`, AWS's "full jitter", so many writers do not retry in
step). Writes are idempotent (each object is written whole under its deterministic name), so a
retried PUT is safe. Anything else (not found, access denied, a bad bucket, a full disk) is
raised at once; a transient error still failing on the last attempt becomes an
`ObjectStoreError`, one line naming the URI, the operation and the last error.

Errors are classified by kind, never by free text (`error_kind`):
- Python's own types: `TimeoutError`, `ConnectionError` (reset, refused, aborted, broken pipe)
  and `BlockingIOError` are transient; not found, permission, is/not a directory are not.
- pyarrow raises every S3 and GCS failure as a bare `OSError` whose message carries the
  SDK's error code in a fixed place: `AWS Error <S3Errors name>[ (HTTP status N)] during <op>
  operation: ...` (arrow/filesystem/s3_internal.h, `ErrorToStatus`) and
  `google::cloud::Status(<StatusCode name>: ...)` (gcsfs_internal.cc), and Azure's as
  `Azure Error: [<x-ms-error-code>] ...` (azurefs.cc). The code is read from that place and
  looked up in the sets below; the rest of the message is never searched. HDFS errors come
  with an errno, so Python's types above classify them.
  An S3 `UNKNOWN` is judged by its HTTP status (429 and 5xx transient).

One layer of retries, not two: pyarrow's S3 filesystem retries on its own (the AWS SDK's
standard strategy, 3 attempts), which under these 6 would make up to 18 requests and hide
every retry from the count; `without_sdk_retries` turns the SDK's off for the filesystems
synth-ray resolves, so each attempt here is one request. The conditional writes (commit
objects, the lease: io/conditional.py) go through obstore instead, whose Rust `object_store`
retries them with its own typed errors and backoff; nothing here wraps those.
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Callable
from typing import TypeVar

import pyarrow.fs as pafs
import tenacity

from synth_ray.io.storage_errors import ObjectStoreError, first_line

T = TypeVar("T")

ATTEMPTS = 6
BASE_S = 0.5
CAP_S = 20.0

# Aws::S3::S3Errors names (as pyarrow prints them) that a later attempt can get past
TRANSIENT_S3_ERRORS = frozenset(
    {
        "SLOW_DOWN",
        "THROTTLING",
        "SERVICE_UNAVAILABLE",
        "INTERNAL_FAILURE",
        "REQUEST_TIMEOUT",
        "NETWORK_CONNECTION",
    }
)
# google::cloud::StatusCode names that Google's own retry policies retry
TRANSIENT_GCS_CODES = frozenset(
    {"UNAVAILABLE", "RESOURCE_EXHAUSTED", "DEADLINE_EXCEEDED", "INTERNAL"}
)
# Azure Storage error codes (x-ms-error-code) that the service documents as retryable
TRANSIENT_AZURE_CODES = frozenset({"ServerBusy", "InternalError", "OperationTimedOut"})
_TRANSIENT_HTTP = frozenset({408, 429, 500, 502, 503, 504})

_S3_CODE = re.compile(r"AWS Error (\w+|\[code \d+\])(?: \(HTTP status (\d+)\))? during ")
_GCS_CODE = re.compile(r"google::cloud::Status\((\w+):")
_AZURE_CODE = re.compile(r"Azure Error: \[(\w*)\]")
_PERMANENT_TYPES = (
    FileNotFoundError,
    FileExistsError,
    PermissionError,
    IsADirectoryError,
    NotADirectoryError,
)
_TRANSIENT_TYPES = (TimeoutError, ConnectionError, BlockingIOError)

retries_made = 0  # in this process, for tests and the run summary
_sleep = time.sleep  # tests replace it


def error_kind(err: BaseException) -> str | None:
    """The transient kind of `err` ("s3 SLOW_DOWN", "gcs UNAVAILABLE", "ConnectionResetError"),
    or None when retrying cannot help."""
    if isinstance(err, _PERMANENT_TYPES) or not isinstance(err, OSError):
        return None
    if isinstance(err, _TRANSIENT_TYPES):
        return type(err).__name__
    text = str(err)
    s3 = _S3_CODE.search(text)
    if s3 is not None:
        code, status = s3.group(1), s3.group(2)
        if code in TRANSIENT_S3_ERRORS:
            return f"s3 {code}"
        if code == "UNKNOWN" and status is not None and int(status) in _TRANSIENT_HTTP:
            return f"s3 HTTP {status}"
        return None
    gcs = _GCS_CODE.search(text)
    if gcs is not None and gcs.group(1) in TRANSIENT_GCS_CODES:
        return f"gcs {gcs.group(1)}"
    azure = _AZURE_CODE.search(text)
    if azure is not None and azure.group(1) in TRANSIENT_AZURE_CODES:
        return f"azure {azure.group(1)}"
    return None


def is_transient(err: BaseException) -> bool:
    """Whether retrying may help: throttling, 5xx, timeouts, dropped connections."""
    return error_kind(err) is not None


def retry_transient(
    what: str,
    call: Callable[[], T],
    attempts: int = ATTEMPTS,
    sleep: Callable[[float], None] | None = None,
) -> T:
    """`call()`, retried on transient errors; `what` ("PUT s3://b/out/x") names it in
    warnings and in the final error."""

    def warn(state: tenacity.RetryCallState) -> None:
        global retries_made
        retries_made += 1
        err = state.outcome.exception() if state.outcome else None
        delay = state.next_action.sleep if state.next_action else 0.0
        print(
            f"warning: {what}: {first_line(err)}; retry {state.attempt_number} of "
            f"{attempts - 1} in {delay:.1f}s",
            file=sys.stderr,
            flush=True,
        )

    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_exception(is_transient),
        stop=tenacity.stop_after_attempt(attempts),
        wait=tenacity.wait_random_exponential(multiplier=BASE_S, max=CAP_S),
        sleep=sleep or (lambda seconds: _sleep(seconds)),
        before_sleep=warn,
        reraise=True,
    )
    try:
        return retrying(call)
    except OSError as err:
        if not is_transient(err):
            raise
        raise ObjectStoreError(
            f"{what}: still failing after {attempts} attempts: {first_line(err)}"
        ) from err


def without_sdk_retries(fs: pafs.FileSystem) -> pafs.FileSystem:
    """`fs`, or for pyarrow's S3 filesystem the same one with the AWS SDK's own retries off
    (see the module doc): rebuilt from its own arguments with a one-attempt strategy."""
    if not isinstance(fs, pafs.S3FileSystem):
        return fs
    _, (kwargs,) = fs.__reduce__()
    return pafs.S3FileSystem(
        **kwargs, retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=1)
    )
