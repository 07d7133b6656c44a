"""One line for a failing output filesystem: which path, and what is wrong with it.

    python -c "import errno; from synth_ray.io.storage_errors import describe_storage_error as d; print(d(OSError(errno.ENOSPC, 'No space left on device', '/out/x')))"

A full disk, a read-only remount, a lost quota or a dead NFS server fails the job mid-run. The
units committed before stay intact (a commit is one atomic rename or one fsync'd line), and the
rerun, once the cause is fixed, resumes from them; the user needs to know the path and the
cause, not a traceback.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator

# errno -> what to tell the user
STORAGE_ERRNOS = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EIO: "input/output error",
    errno.ESTALE: "stale file handle (the network filesystem went away)",
}


def first_line(err: BaseException) -> str:
    """The error's first non-empty line (at most 300 characters), or its type's name."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[0][:300] if lines else type(err).__name__


class ObjectStoreError(OSError):
    """An object-store call still failing after its retries (io/retry.py); the message names
    the URI, the operation and the last error."""


def describe_storage_error(err: BaseException) -> str | None:
    """`output <path>: <cause> (<ERRNO>)` for an OSError of the kinds above, the message of an
    ObjectStoreError, else None."""
    if isinstance(err, ObjectStoreError):
        return str(err)
    if not isinstance(err, OSError) or err.errno not in STORAGE_ERRNOS:
        return None
    path = err.filename if err.filename is not None else "(path not reported)"
    return f"output {path}: {STORAGE_ERRNOS[err.errno]} ({errno.errorcode[err.errno]})"


def find_storage_error(err: BaseException) -> str | None:
    """The description of the first storage error in `err`'s chain of causes, if any."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        found = describe_storage_error(current)
        if found is not None:
            return found
        current = current.__cause__ or current.__context__
    return None


@contextlib.contextmanager
def naming(path: object) -> Iterator[None]:
    """Re-raise an OSError that does not say which file (a failed write or fsync: only
    `open` names one) with `path`, so the one line can name it."""
    try:
        yield
    except OSError as err:
        if err.filename is not None or err.errno is None:
            raise
        raise OSError(err.errno, err.strerror or os.strerror(err.errno), str(path)) from err
