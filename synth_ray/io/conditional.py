"""Conditional writes, for the output's lease on a URI: create-only and compare-and-swap.

    python -m pytest tests/test_lease.py -k object_store

pyarrow's filesystems write whole objects but cannot make a write conditional, so two runs that
read a lease object and then write it could both take it. Object stores can: a PUT with
`If-None-Match: *` creates only what does not exist, one with `If-Match: ETAG` replaces only the
version that was read. obstore (the Python binding of the Rust `object_store` crate, which
speaks S3, GCS and Azure) sends both; a `file://` URI gets the same two operations from the OS
(a hard link that fails on an existing name; a swap under an exclusive lock).

`open_conditional` returns None for a store it cannot serve (another scheme, obstore not
installed, a URI obstore cannot parse): the lease then writes its record unconditionally, and
says so in its docstring.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

from synth_ray.io.filesystem import Location
from synth_ray.io.shards import write_bytes_atomic

OBJECT_STORE_SCHEMES = {"s3", "gs", "az", "abfs", "abfss", "azure"}
# pyarrow's S3 URI options -> obstore's config keys (the rest come from the environment)
_S3_QUERY = {"region": "region", "endpoint_override": "endpoint"}


class ConditionalObjects(Protocol):
    """Objects under one folder, written only on a condition; tags are opaque versions."""

    def read(self, name: str) -> tuple[bytes, str] | None:
        """The object's bytes and version tag; None when it does not exist."""

    def create(self, name: str, data: bytes) -> str | None:
        """Write `data` when nothing is at `name`; its tag, or None when something is."""

    def swap(self, name: str, data: bytes, tag: str) -> str | None:
        """Replace the object when it is still version `tag`; the new tag, or None when it
        changed or went meanwhile."""

    def delete(self, name: str) -> None: ...


def open_conditional(location: Location) -> ConditionalObjects | None:
    """Conditional writes for a URI `location`, or None where there are none (see module)."""
    if location.local is not None:
        return None  # a local folder has an OS lock instead
    parts = urlsplit(location.uri)
    scheme = parts.scheme.lower()
    if scheme == "file":
        return LocalConditional(Path(unquote(parts.path)))
    if scheme not in OBJECT_STORE_SCHEMES:
        return None
    try:
        from obstore.store import from_url
    except ImportError:
        return None
    config: dict[str, Any] = {}
    if scheme == "s3":
        query = parse_qs(parts.query)
        for key, option in _S3_QUERY.items():
            if key in query:
                config[option] = query[key][0]
        if "endpoint" in config and "://" not in config["endpoint"]:
            http = query.get("scheme", ["https"])[0]
            config["endpoint"] = f"{http}://{config['endpoint']}"
    base = f"{scheme}://{parts.netloc}{parts.path}"
    try:
        store = from_url(base, config=config or None)
    except Exception:  # obstore cannot parse or configure it: the unconditional fallback
        return None
    return ObstoreConditional(store)


class ObstoreConditional:
    """Conditional PUTs on an object store through obstore. A tag is the object's ETag and,
    where the store has one, its version (GCS's generation: an update is conditional on it).
    obstore's other errors (a network failure past its retries, access denied) are raised
    as OSError, what every caller of a store already handles."""

    def __init__(self, store: Any) -> None:
        self.store = store

    def read(self, name: str) -> tuple[bytes, str] | None:
        import obstore
        from obstore.exceptions import NotFoundError

        with _as_oserror(name):
            try:
                result = obstore.get(self.store, name)
            except (NotFoundError, FileNotFoundError):
                return None
            return bytes(result.bytes()), _pack(
                result.meta.get("e_tag"), result.meta.get("version")
            )

    def create(self, name: str, data: bytes) -> str | None:
        import obstore
        from obstore.exceptions import AlreadyExistsError, PreconditionError

        with _as_oserror(name):
            try:
                put = obstore.put(self.store, name, data, mode="create")
            except (AlreadyExistsError, PreconditionError, FileExistsError):
                return None
            return _pack(put.get("e_tag"), put.get("version"))

    def swap(self, name: str, data: bytes, tag: str) -> str | None:
        import obstore
        from obstore.exceptions import NotFoundError, PreconditionError

        e_tag, version = json.loads(tag)
        mode: dict[str, str] = {"e_tag": e_tag} if e_tag else {}
        if version:
            mode["version"] = version
        with _as_oserror(name):
            try:
                put = obstore.put(self.store, name, data, mode=mode)
            except (PreconditionError, NotFoundError, FileNotFoundError):
                return None
            return _pack(put.get("e_tag"), put.get("version"))

    def delete(self, name: str) -> None:
        import obstore

        with _as_oserror(name):
            obstore.delete(self.store, name)


def _pack(e_tag: str | None, version: str | None) -> str:
    return json.dumps([e_tag, version])


@contextlib.contextmanager
def _as_oserror(name: str) -> Iterator[None]:
    """obstore's own errors (not OSError subclasses) as OSError naming the object."""
    from obstore.exceptions import BaseError

    try:
        yield
    except BaseError as err:
        first = str(err).strip().splitlines()[0][:300] if str(err).strip() else ""
        raise OSError(f"{name}: {type(err).__name__}: {first}") from err


class LocalConditional:
    """The same operations on a `file://` folder: a create is a hard link that fails on an
    existing name; a swap reads, compares and replaces under an exclusive lock that every
    writer of the folder takes. A tag is the content's hash."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def read(self, name: str) -> tuple[bytes, str] | None:
        try:
            data = (self.folder / name).read_bytes()
        except FileNotFoundError:
            return None
        return data, _tag(data)

    def create(self, name: str, data: bytes) -> str | None:
        path = self.folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.parent / f".tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}-{path.name}"
        tmp.write_bytes(data)
        try:
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
            os.link(tmp, path)
        except FileExistsError:
            return None
        finally:
            tmp.unlink(missing_ok=True)
        return _tag(data)

    def swap(self, name: str, data: bytes, tag: str) -> str | None:
        path = self.folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = os.open(path.parent / f".{path.name}.swap-lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            current = self.read(name)
            if current is None or current[1] != tag:
                return None
            write_bytes_atomic(data, path)
            return _tag(data)
        finally:
            os.close(lock)  # closing releases the lock

    def delete(self, name: str) -> None:
        (self.folder / name).unlink(missing_ok=True)


def _tag(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:32]
