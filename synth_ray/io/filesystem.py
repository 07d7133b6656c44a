"""Where a job's output lives: a local folder, or a folder under a URI on a pyarrow filesystem.

    python -c "from synth_ray.io.filesystem import open_location as o; print(o('file:///tmp/x').listdir())"

`open_location(output.path)` returns one of two `Location`s with the same small interface:

- a plain path (`out/run1`, `/mnt/shared/run1`) is a `LocalLocation`: every file is written to a
  temp name, fsync'd and renamed into place (shards.py), exactly as synth-ray always has, so a
  reader never sees a truncated file under a final name, even after a power loss;
- a URI (anything with `://`: s3://, gs://, abfs://, hdfs://, file://, or a scheme registered
  with `register_filesystem`, such as an in-memory `mock://` in tests) is a `UriLocation` on the
  filesystem `pyarrow.fs.FileSystem.from_uri` resolves. Object stores have neither rename nor
  append, so every write is one whole object PUT straight to its final name: readers see the
  whole object or none, and a rerun overwrites the same name. Nothing here calls `move`.
  Written is therefore not committed: a unit counts only once its commit object is written
  after its shards (commits.py). On `file://` (pyarrow's LocalFileSystem) a killed write can
  leave a truncated file under its final name and nothing is fsync'd; the commit object still
  decides what counts, but a plain path is the durable choice for a local disk.

Names given to a Location are '/'-separated and relative to it.
"""

from __future__ import annotations

import shutil
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from synth_ray.errors import ConfigError
from synth_ray.io.retry import retry_transient, without_sdk_retries
from synth_ray.io.shards import (
    sweep_temp_files,
    write_bytes_atomic,
    write_parquet,
    write_shard_atomic,
)
from synth_ray.io.storage_errors import first_line

T = TypeVar("T")

# scheme -> filesystem used instead of FileSystem.from_uri (tests: an in-memory "mock")
_REGISTERED: dict[str, pafs.FileSystem] = {}


def register_filesystem(scheme: str, fs: pafs.FileSystem | None) -> None:
    """Serve `scheme://bucket/path` from `fs` (None removes it); `bucket/path` is its path.

    pyarrow's own `mock://` gives a fresh empty filesystem on every resolution, so a test that
    wants one in-memory store across a run and its resume registers a single instance here."""
    if fs is None:
        _REGISTERED.pop(scheme.lower(), None)
    else:
        _REGISTERED[scheme.lower()] = fs


def is_uri(path: str | Path) -> bool:
    return "://" in str(path)


def canonical(path: str | Path) -> str:
    """The string that names a location: the expanded local path, or the URI without a
    trailing '/' (before any query). Two output paths name one folder when these are equal."""
    text = str(path)
    if not is_uri(text):
        return str(Path(text).expanduser())
    base, sep, query = text.partition("?")
    return f"{base.rstrip('/')}{sep}{query}"


def resolve_uri(uri: str, key: str = "output.path") -> tuple[pafs.FileSystem, str]:
    """The filesystem and its path for `uri`; a scheme pyarrow cannot open, or a store it
    cannot reach while resolving (e.g. an S3 bucket's region), is a one-line ConfigError."""
    scheme = uri.split("://", 1)[0]
    if scheme.lower() in _REGISTERED:
        parts = urlsplit(uri)
        return _REGISTERED[scheme.lower()], f"{parts.netloc}{parts.path}".strip("/")
    if scheme.lower() == "mock":  # pyarrow would hand out a new empty store on every call
        raise ConfigError(
            f"{key} {uri}: mock:// is an in-memory test store; register one first "
            "(synth_ray.io.filesystem.register_filesystem)"
        )
    try:
        fs, path = pafs.FileSystem.from_uri(uri)
        return without_sdk_retries(fs), path
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
        raise ConfigError(
            f"{key} {uri}: pyarrow cannot open a filesystem for scheme '{scheme}' "
            f"({first_line(err)}); use a local path or an s3://, gs://, abfs://, hdfs:// "
            "or file:// URI"
        ) from None
    except OSError as err:
        raise ConfigError(f"{key} {uri}: cannot reach it ({first_line(err)})") from None


def open_location(path: str | Path, key: str = "output.path") -> Location:
    """A `UriLocation` for a path with '://', else a `LocalLocation` (see the module doc)."""
    text = str(path)
    if not is_uri(text):
        return LocalLocation(Path(text).expanduser())
    fs, base = resolve_uri(text, key)
    return UriLocation(fs, base, canonical(text), key)


class Location(ABC):
    """A folder that holds a job's output; every name is relative to it."""

    uri: str  # how people (and pyarrow, for real schemes) name it
    local: Path | None  # the folder on this machine, None for a URI location

    @abstractmethod
    def child(self, name: str) -> Location: ...

    @abstractmethod
    def kind(self) -> str:
        """'missing', 'file' or 'dir'; an unreachable store is a one-line ConfigError."""

    @abstractmethod
    def write_bytes_atomic(self, name: str, data: bytes) -> None:
        """Readers see the old content, the whole new content, or (URI only) nothing."""

    @abstractmethod
    def write_table_atomic(self, name: str, table: pa.Table) -> int:
        """Write `table` as zstd Parquet under `name`; returns its size in bytes."""

    @abstractmethod
    def read_bytes(self, name: str) -> bytes | None:
        """The file's bytes, None when there is no such file."""

    @abstractmethod
    def read_table(self, name: str, columns: list[str] | None = None) -> pa.Table: ...

    @abstractmethod
    def exists(self, name: str) -> bool: ...

    @abstractmethod
    def listdir(self, name: str = "") -> list[str]:
        """Sorted names of the entries directly under `name`; [] when it does not exist."""

    @abstractmethod
    def delete(self, name: str) -> None:
        """Remove a file or a whole folder; nothing to remove is fine."""

    @abstractmethod
    def make_dir(self) -> None: ...

    @abstractmethod
    def sweep_temp_files(self) -> int:
        """Delete temp files a killed run left behind (local only: a URI never has any)."""

    @abstractmethod
    def file_ref(self, name: str) -> Path | str:
        """What a reader passes to pyarrow: a Path here, else a URI string."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.uri!r})"


class LocalLocation(Location):
    """A local or shared-filesystem folder: temp name -> fsync -> rename (shards.py)."""

    def __init__(self, root: Path) -> None:
        self.local = root
        self.uri = str(root)

    def child(self, name: str) -> LocalLocation:
        return LocalLocation(self.local / name)

    def kind(self) -> str:
        if not self.local.exists():
            return "missing"
        return "dir" if self.local.is_dir() else "file"

    def write_bytes_atomic(self, name: str, data: bytes) -> None:
        write_bytes_atomic(data, self.local / name)

    def write_table_atomic(self, name: str, table: pa.Table) -> int:
        return write_shard_atomic(table, self.local / name)

    def read_bytes(self, name: str) -> bytes | None:
        path = self.local / name
        return path.read_bytes() if path.is_file() else None

    def read_table(self, name: str, columns: list[str] | None = None) -> pa.Table:
        return pq.read_table(self.local / name, columns=columns)

    def exists(self, name: str) -> bool:
        return (self.local / name).exists()

    def listdir(self, name: str = "") -> list[str]:
        folder = self.local / name
        return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []

    def delete(self, name: str) -> None:
        target = self.local / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()

    def make_dir(self) -> None:
        self.local.mkdir(parents=True, exist_ok=True)

    def sweep_temp_files(self) -> int:
        return sweep_temp_files(self.local)

    def file_ref(self, name: str) -> Path:
        return self.local / name


class UriLocation(Location):
    """A folder on a pyarrow filesystem: one whole-object PUT per file, never a rename."""

    local = None

    def __init__(
        self,
        fs: pafs.FileSystem,
        base: str,
        uri: str,
        key: str = "output.path",
        made: set[str] | None = None,
    ) -> None:
        self.fs = fs
        self.base = base.rstrip("/")
        self.uri = uri
        self.key = key
        self._made = made if made is not None else set()  # folders known to exist

    def _path(self, name: str) -> str:
        return "/".join(p for p in (self.base, name.strip("/")) if p)

    def _uri_of(self, name: str) -> str:
        """`name` under this URI, before any query (`s3://b/x?region=r` -> `s3://b/x/n?region=r`)."""
        base, sep, query = self.uri.partition("?")
        return f"{base}/{name}{sep}{query}" if name else self.uri

    def child(self, name: str) -> UriLocation:
        return UriLocation(self.fs, self._path(name), self._uri_of(name), self.key, self._made)

    def kind(self) -> str:
        if not self.base:
            return "dir"  # the root of the filesystem
        try:
            info = self._retry("HEAD", "", lambda: self.fs.get_file_info(self.base))
        except OSError as err:
            raise ConfigError(
                f"{self.key} {self.uri}: cannot reach it ({first_line(err)})"
            ) from None
        return {pafs.FileType.Directory: "dir", pafs.FileType.File: "file"}.get(
            info.type, "missing"
        )

    def _retry(self, op: str, name: str, call: Callable[[], T]) -> T:
        """Every call to the store: transient errors retried with backoff (io/retry.py)."""
        return retry_transient(f"{op} {self._uri_of(name)}", call)

    def _ensure_parent(self, path: str) -> None:
        parent = path.rsplit("/", 1)[0] if "/" in path else ""
        if parent and parent not in self._made:
            # a no-op or a marker on object stores
            shown = parent[len(self.base) :].strip("/") if parent.startswith(self.base) else parent
            self._retry("MKDIR", shown, lambda: self.fs.create_dir(parent, recursive=True))
            self._made.add(parent)

    def write_bytes_atomic(self, name: str, data: bytes) -> None:
        """One PUT of the whole object: the data is complete before the stream opens, so an
        object store never exposes part of it; the same name is simply overwritten."""
        path = self._path(name)
        self._ensure_parent(path)

        def put() -> None:
            with self.fs.open_output_stream(path, compression=None) as out:
                out.write(data)

        self._retry("PUT", name, put)

    def write_table_atomic(self, name: str, table: pa.Table) -> int:
        sink = pa.BufferOutputStream()
        write_parquet(table, sink)
        data = sink.getvalue()  # serialised in memory first: a failure here PUTs nothing
        self.write_bytes_atomic(name, data)
        return data.size

    def read_bytes(self, name: str) -> bytes | None:
        def get() -> bytes:
            with self.fs.open_input_stream(self._path(name), compression=None) as src:
                return src.read()

        try:
            return self._retry("GET", name, get)
        except (FileNotFoundError, IsADirectoryError):
            return None

    def read_table(self, name: str, columns: list[str] | None = None) -> pa.Table:
        def get() -> pa.Table:
            with self.fs.open_input_file(self._path(name)) as src:
                return pq.read_table(src, columns=columns)

        return self._retry("GET", name, get)

    def exists(self, name: str) -> bool:
        info = self._retry("HEAD", name, lambda: self.fs.get_file_info(self._path(name)))
        return info.type != pafs.FileType.NotFound

    def listdir(self, name: str = "") -> list[str]:
        selector = pafs.FileSelector(self._path(name), allow_not_found=True)
        found = self._retry("LIST", name, lambda: self.fs.get_file_info(selector))
        return sorted(info.base_name for info in found)

    def delete(self, name: str) -> None:
        path = self._path(name)
        kind = self._retry("HEAD", name, lambda: self.fs.get_file_info(path)).type
        if kind == pafs.FileType.Directory:
            self._retry("DELETE", name, lambda: self.fs.delete_dir(path))
        elif kind == pafs.FileType.File:
            self._retry("DELETE", name, lambda: self.fs.delete_file(path))
        self._made.difference_update(
            {d for d in self._made if d == path or d.startswith(path + "/")}
        )

    def make_dir(self) -> None:
        if self.base:
            try:
                self._retry("MKDIR", "", lambda: self.fs.create_dir(self.base, recursive=True))
            except OSError as err:  # e.g. a bucket that does not exist or is not writable
                raise ConfigError(
                    f"{self.key} {self.uri}: cannot create it ({first_line(err)})"
                ) from None
            self._made.add(self.base)

    def sweep_temp_files(self) -> int:
        return 0

    def file_ref(self, name: str) -> str:
        return self._uri_of(name)


def read_columns(shards: Iterable[tuple[Location, str]], columns: tuple[str, ...]) -> pa.Table:
    """The `columns` of these shards (each a folder and a name), concatenated in order; no
    shard: an empty table of string columns."""
    tables = [location.read_table(name, columns=list(columns)) for location, name in shards]
    if tables:
        return pa.concat_tables(tables)
    return pa.table({c: pa.array([], pa.string()) for c in columns})
