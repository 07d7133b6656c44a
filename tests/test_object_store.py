"""Output on a URI through pyarrow's filesystems: shards written straight to their final names,
one commit object per unit, no rename or append anywhere, and the same exactly-once promises
as a local folder (a run killed at any commit step resumes to the clean run's rows).

    pytest tests/test_object_store.py

Every test runs twice: on `file://` URIs (pyarrow's LocalFileSystem, through
FileSystem.from_uri) and on `mock://` (pyarrow's in-memory _MockFileSystem, no POSIX at all).
Both are wrapped so that a `move`, `copy_file` or append fails the test, and renames of local
files under the test's folder fail too.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass

import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
from conftest import REPO, job_config, make_docs, use_local_s3, write_jsonl
from fake_backend import FakeBackend
from typer.testing import CliRunner

import synth_ray.io.filesystem as fs_mod
from synth_ray.cli import app
from synth_ray.errors import ConfigError, OutputConflictError
from synth_ray.io.commits import COMMITS_DIR, CommitObjects
from synth_ray.io.filesystem import UriLocation, register_filesystem
from synth_ray.io.manifest import UnitRecord
from synth_ray.io.output_store import OutputStore
from synth_ray.runtime.job import run_job
from synth_ray.status import collect_status


class Crash(BaseException):
    """Stands in for SIGKILL: nothing after it runs, no cleanup."""


class NoRenameHandler(pafs.FileSystemHandler):
    """Delegates to a real pyarrow filesystem, except the calls object stores do not have."""

    def __init__(self, inner: pafs.FileSystem) -> None:
        self.inner = inner
        self.calls: Counter[str] = Counter()

    def get_type_name(self):
        return "norename"

    def normalize_path(self, path):
        return self.inner.normalize_path(path)

    def get_file_info(self, paths):
        return self.inner.get_file_info(paths)

    def get_file_info_selector(self, selector):
        return self.inner.get_file_info(selector)

    def create_dir(self, path, recursive):
        self.inner.create_dir(path, recursive=recursive)

    def delete_dir(self, path):
        self.inner.delete_dir(path)

    def delete_dir_contents(self, path, missing_dir_ok=False):
        self.inner.delete_dir_contents(path, missing_dir_ok=missing_dir_ok)

    def delete_root_dir_contents(self):
        raise AssertionError("deleted the filesystem's root")

    def delete_file(self, path):
        self.inner.delete_file(path)

    def move(self, src, dest):
        raise AssertionError(f"rename {src} -> {dest} on a URI output")

    def copy_file(self, src, dest):
        raise AssertionError(f"copy {src} -> {dest} on a URI output")

    def open_input_stream(self, path):
        return self.inner.open_input_stream(path, compression=None)

    def open_input_file(self, path):
        return self.inner.open_input_file(path)

    def open_output_stream(self, path, metadata):
        self.calls["put"] += 1
        return self.inner.open_output_stream(path, compression=None, metadata=metadata)

    def open_append_stream(self, path, metadata):
        raise AssertionError(f"append to {path} on a URI output")


@dataclass
class Target:
    """Where a test writes: `uri(name)` is an output.path, `fs`/`path(name)` read it back."""

    kind: str
    fs: pafs.FileSystem
    root: str  # the filesystem path under which every test output lives

    def uri(self, name: str) -> str:
        return f"{'file://' if self.kind == 'file' else 'mock://'}{self.root}/{name}"

    def path(self, name: str) -> str:
        return f"{self.root}/{name}"

    def listdir(self, name: str) -> list[str]:
        selector = pafs.FileSelector(self.path(name), allow_not_found=True)
        return sorted(i.base_name for i in self.fs.get_file_info(selector))


@pytest.fixture(params=["file", "mock"])
def target(request, tmp_path, monkeypatch):
    """A URI target whose filesystem refuses renames; local renames under tmp_path fail too,
    and the working directory is tmp_path, so a URI mistaken for a path would show there."""
    inner = pafs._MockFileSystem() if request.param == "mock" else pafs.LocalFileSystem()
    guard = NoRenameHandler(inner)
    fs = pafs.PyFileSystem(guard)
    if request.param == "mock":
        register_filesystem("mock", fs)
        root = "bucket"
    else:  # through FileSystem.from_uri, then wrapped
        real = fs_mod.resolve_uri

        def guarded(uri, key="output.path"):
            inner, path = real(uri, key)
            guard.inner = inner
            return fs, path

        monkeypatch.setattr(fs_mod, "resolve_uri", guarded)
        root = str(tmp_path / "store")
    for name in ("replace", "rename"):
        real_os = getattr(os, name)

        def checked(src, dst, *args, _real=real_os, **kwargs):
            if str(tmp_path / "store") in f"{src}{dst}":
                raise AssertionError(f"local rename {src} -> {dst} under a URI output")
            return _real(src, dst, *args, **kwargs)

        monkeypatch.setattr(os, name, checked)
    monkeypatch.chdir(tmp_path)
    yield Target(request.param, fs, root)
    register_filesystem("mock", None)
    assert guard.calls["put"] > 0
    assert not any(p.name.startswith(("mock:", "file:")) for p in tmp_path.iterdir())


@pytest.fixture()
def docs_file(tmp_path):
    docs = make_docs(30)
    docs[4]["text"] = ""  # an empty document: an error row
    return write_jsonl(tmp_path / "in" / "docs.jsonl", docs)


def uri_config(tmp_path, docs_file, uri, **sections):
    config = job_config(tmp_path, docs_file, **sections)
    return config.model_copy(update={"output": config.output.model_copy(update={"path": uri})})


def ids_of(output: str, errors: bool = False) -> list[str]:
    return [r["id"] for r in OutputStore(output).rows(errors=errors)]


def test_clean_run_writes_shards_and_commit_objects(tmp_path, docs_file, target, embedded_model):
    local = run_job(job_config(tmp_path, docs_file), show_progress=False, backend=FakeBackend())
    uri = target.uri("out")
    summary = run_job(
        uri_config(tmp_path, docs_file, uri), show_progress=False, backend=FakeBackend()
    )
    n = summary.units_total
    assert summary.output_path == uri and n > 3
    top = target.listdir("out")
    assert "_manifest.jsonl" not in top and "_runs.jsonl" not in top
    assert {"_job.json", "stats.json", "data", "errors", COMMITS_DIR, "_runs"} <= set(top)
    shards = [name[: len("part-000000")] for name in target.listdir("out/data")]
    assert shards == [f"part-{i:06d}" for i in range(n)]
    commit_objects = [f"unit-{i:06d}.json" for i in range(n)]
    assert target.listdir(f"out/{COMMITS_DIR}") == ["_segments", *commit_objects]
    assert len(target.listdir("out/_runs")) == 1

    # every row readable by plain pyarrow, and the same rows as a run into a local folder
    data = pads.dataset(target.path("out/data"), filesystem=target.fs, format="parquet")
    stats = json.loads(target.fs.open_input_stream(target.path("out/stats.json")).read())
    assert data.count_rows() == stats["rows_out"] == local.stats["rows_out"]
    assert stats["accounted"] and stats["units_committed"] == n and stats["runs"] == 1
    for key in ("rows_in", "rows_out", "rows_errored", "input_documents", "output_tokens"):
        assert stats[key] == local.stats[key], key
    store = OutputStore(uri)
    assert sorted(ids_of(uri)) == sorted(ids_of(str(tmp_path / "out")))
    assert ids_of(uri, errors=True) == ids_of(str(tmp_path / "out"), errors=True)
    assert [r.unit_index for r in store.committed().values()] == list(range(n))
    if target.kind == "file":  # the URIs data_files gives are what pyarrow opens
        rows = sum(pq.read_table(f).num_rows for f in store.data_files())
        assert rows == stats["rows_out"]
    with pytest.raises(TypeError, match="not a local folder"):
        store.root  # noqa: B018

    again = run_job(
        uri_config(tmp_path, docs_file, uri), show_progress=False, backend=FakeBackend()
    )
    assert again.units_committed == 0 and again.units_skipped == n
    assert len(target.listdir("out/_runs")) == 1  # a run with nothing to do records no run


def crash_points():
    """(name, patcher) for every step of a unit's commit on a URI output."""

    def counting(at, step):
        calls = {"n": 0}

        def patched(*args):
            calls["n"] += 1
            return step(calls["n"] == at, *args)

        return patched

    def shard_written_commit_not(monkeypatch, at):
        real = CommitObjects.append

        def step(crash, self, record):
            if crash:
                raise Crash()
            return real(self, record)

        monkeypatch.setattr(CommitObjects, "append", counting(at, step))

    def shard_torn(monkeypatch, at):
        """A file:// write killed midway (an object store would show no object at all)."""
        real = UriLocation.write_table_atomic

        def step(crash, self, name, table):
            if crash:
                self.write_bytes_atomic(name, b"PAR1 truncated")
                raise Crash()
            return real(self, name, table)

        monkeypatch.setattr(UriLocation, "write_table_atomic", counting(at, step))

    def commit_object_torn(monkeypatch, at):
        real = CommitObjects.append

        def step(crash, self, record):
            if crash:
                real(self, record)
                name = f"{COMMITS_DIR}/unit-{record.unit_index:06d}.json"
                whole = self.location.read_bytes(name)
                self.location.write_bytes_atomic(name, whole[: len(whole) // 2])
                raise Crash()
            return real(self, record)

        monkeypatch.setattr(CommitObjects, "append", counting(at, step))

    def commit_object_written(monkeypatch, at):
        real = CommitObjects.append

        def step(crash, self, record):
            real(self, record)
            if crash:
                raise Crash()

        monkeypatch.setattr(CommitObjects, "append", counting(at, step))

    return [shard_written_commit_not, shard_torn, commit_object_torn, commit_object_written]


@pytest.mark.parametrize("crash", crash_points(), ids=lambda f: f.__name__)
@pytest.mark.parametrize("at", [1, 2, 5])
def test_crash_at_any_commit_step_then_resume_equals_clean_run(
    tmp_path, docs_file, target, embedded_model, monkeypatch, crash, at
):
    clean_uri, uri = target.uri("clean"), target.uri("out")
    run_job(uri_config(tmp_path, docs_file, clean_uri), show_progress=False, backend=FakeBackend())
    config = uri_config(tmp_path, docs_file, uri)
    with monkeypatch.context() as patch:
        crash(patch, at)
        with pytest.raises(Crash):
            run_job(config, show_progress=False, backend=FakeBackend())
    committed_before = len(OutputStore(uri).committed())
    if crash.__name__ == "shard_torn":  # `at` counts data and error shards
        assert committed_before < at
    else:
        assert committed_before == (at if crash.__name__ == "commit_object_written" else at - 1)

    summary = run_job(config, show_progress=False, backend=FakeBackend())
    assert summary.units_skipped == committed_before
    resumed, clean = ids_of(uri), ids_of(clean_uri)
    assert len(resumed) == len(set(resumed)), "duplicated rows"
    assert sorted(resumed) == sorted(clean)
    assert sorted(ids_of(uri, errors=True)) == sorted(ids_of(clean_uri, errors=True))
    # the rerun rewrote every uncommitted shard: what is on the store is whole and committed
    n = summary.units_total
    commit_objects = [f"unit-{i:06d}.json" for i in range(n)]
    assert target.listdir(f"out/{COMMITS_DIR}") == ["_segments", *commit_objects]
    data = pads.dataset(target.path("out/data"), filesystem=target.fs, format="parquet")
    assert sorted(data.to_table(columns=["id"]).column("id").to_pylist()) == sorted(clean)
    stats = OutputStore(uri).read_json("stats.json")
    clean_stats = OutputStore(clean_uri).read_json("stats.json")
    for key in ("rows_in", "rows_out", "rows_errored", "input_documents", "units_committed"):
        assert stats[key] == clean_stats[key], key
    assert stats["accounted"]


def test_different_config_on_same_uri_is_refused_then_overwrite(
    tmp_path, docs_file, target, embedded_model
):
    uri = target.uri("out")
    first = run_job(
        uri_config(tmp_path, docs_file, uri), show_progress=False, backend=FakeBackend()
    )
    other = uri_config(tmp_path, docs_file, uri, sampling={"max_tokens": 17})
    with pytest.raises(OutputConflictError, match=f"output.path {uri}: .*--overwrite"):
        run_job(other, show_progress=False, backend=FakeBackend())
    summary = run_job(other, overwrite=True, show_progress=False, backend=FakeBackend())
    assert summary.units_skipped == 0 and summary.units_committed == summary.units_total
    assert summary.units_total == first.units_total
    commit_objects = [n for n in target.listdir(f"out/{COMMITS_DIR}") if n.endswith(".json")]
    assert len(commit_objects) == summary.units_total
    assert len(target.listdir("out/_runs")) == 1  # the old job's run log went with it
    job = OutputStore(uri).read_job()
    assert job["fingerprint"] == other.fingerprint()


def test_commit_objects_only_count_when_whole_and_named_right(target):
    store = OutputStore(target.uri("log"))
    store.location.make_dir()
    log = store.commits
    assert log.read() == {} and not log.has_commits()
    log.append(UnitRecord(0, "u0", "data/part-000000.parquet", None, 3))
    log.append(UnitRecord(1, "u1", "data/s-part-000001.parquet", None, 2, stage="s"))
    loc = store.location
    loc.write_bytes_atomic(f"{COMMITS_DIR}/unit-000002.json", b'{"unit_index": 2, "unit_id"')
    wrong = UnitRecord(7, "u7", "data/part-000007.parquet", None, 1)
    loc.write_bytes_atomic(f"{COMMITS_DIR}/unit-000003.json", json.dumps(wrong.__dict__).encode())
    assert set(log.read()) == {"u0", "u1"} and log.has_commits()
    assert set(store.committed("s")) == {"u1"}
    log.forget()
    assert set(CommitObjects(loc).read()) == {"u0", "u1"}


def test_status_reads_a_uri(tmp_path, docs_file, target, embedded_model):
    uri = target.uri("out")
    summary = run_job(
        uri_config(tmp_path, docs_file, uri), show_progress=False, backend=FakeBackend()
    )
    report = collect_status(uri)
    assert report["units_committed"] == summary.units_total and report["units_pending"] == 0
    assert report["accounted"] and report["runs"] == 1 and report["method"] == "rephrase"
    result = CliRunner().invoke(app, ["status", uri, "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["units_committed"] == summary.units_total
    if target.kind == "file":  # the real command line, in its own process
        proc = subprocess.run(
            [sys.executable, "-m", "synth_ray", "status", uri, "--json"],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["rows_out"] == summary.stats["rows_out"]
    missing = CliRunner().invoke(app, ["status", target.uri("nothing")])
    assert missing.exit_code == 2 and "no synth-ray job here" in missing.output


def test_self_instruct_stages_on_a_uri_match_a_local_run(tmp_path, target, embedded_model):
    from test_self_instruct import ScriptedEngine
    from test_self_instruct import config as si_config

    engine = ScriptedEngine(embedded_model)
    local = si_config(tmp_path)
    run_job(local, show_progress=False, backend=FakeBackend(responder=engine))
    uri = target.uri("out")
    config = local.model_copy(update={"output": local.output.model_copy(update={"path": uri})})
    summary = run_job(config, show_progress=False, backend=FakeBackend(responder=engine))
    assert summary.stats["accounted"] and summary.stats["rows_out"] == 10
    assert OutputStore(uri).rows() == OutputStore(tmp_path / "out").rows()
    work = OutputStore(uri).child("stages")
    assert len(work.read_json("pool.json")["accepted"]) == 10
    assert work.committed() and target.listdir(f"out/stages/{COMMITS_DIR}")
    assert "_manifest.jsonl" not in target.listdir("out/stages")
    assert OutputStore(uri).read_json("_driver_stats.json") is not None


def test_bad_uris_are_one_line_errors_naming_output_path(tmp_path, docs_file, embedded_model):
    with pytest.raises(ConfigError, match="output.path nope://bucket/x: pyarrow cannot open"):
        OutputStore("nope://bucket/x")
    with pytest.raises(ConfigError, match="mock:// is an in-memory test store"):
        OutputStore("mock://bucket/x")  # unregistered: would vanish with the process
    backend = FakeBackend()
    bad = uri_config(tmp_path, docs_file, "nope://bucket/x")
    with pytest.raises(ConfigError, match="output.path nope://bucket/x"):
        run_job(bad, show_progress=False, backend=backend)
    assert backend.submitted == []
    # an S3 endpoint nobody listens on: refused when the folder is claimed, before any request
    unreachable = "s3://bucket/x?endpoint_override=127.0.0.1:9&scheme=http&region=us-east-1"
    with pytest.raises(ConfigError, match=r"output.path s3://bucket/x\?.*: cannot reach it"):
        run_job(uri_config(tmp_path, docs_file, unreachable), show_progress=False, backend=backend)
    assert backend.submitted == []
    result = CliRunner().invoke(app, ["status", "nope://bucket/x"])
    assert result.exit_code == 2 and "output.path nope://bucket/x" in result.output


@pytest.mark.parametrize("target", ["mock"], indirect=True)
def test_diversity_state_and_vectors_on_a_uri_resume_to_the_same_decisions(
    tmp_path, target, embedded_model, monkeypatch
):
    """Centroids, reference vectors and each unit's kept vectors live on the store; a run
    killed at a commit resumes from them to the decisions of a clean local run."""
    import pyarrow as pa
    import ray
    from test_diversity import PARAPHRASES, UNRELATED, echo_backend, generate_config, kept_rows

    from synth_ray.engine.prompts import PromptRenderer

    renderer = PromptRenderer.from_model(embedded_model)
    reference = tmp_path / "reference.parquet"
    pq.write_table(pa.table({"text": [UNRELATED[0]]}), reference)
    spread = (
        UNRELATED[:2] + [a for a, _ in PARAPHRASES] + UNRELATED[2:] + [b for _, b in PARAPHRASES]
    )
    extra = {"partitions": 2, "probes": 2, "reference_path": str(reference)}
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        clean = generate_config(tmp_path, spread, name="clean", **extra)
        run_job(clean, show_progress=False, backend=echo_backend(renderer))
        expected = kept_rows(clean.output.path)

        uri = target.uri("out")
        local = generate_config(tmp_path, spread, name="killed", **extra)
        config = local.model_copy(update={"output": local.output.model_copy(update={"path": uri})})
        real = CommitObjects.append

        def crashing(self, record):
            if record.unit_index == 3:
                raise Crash()
            return real(self, record)

        with monkeypatch.context() as patch:
            patch.setattr(CommitObjects, "append", crashing)
            with pytest.raises(Crash):
                run_job(config, show_progress=False, backend=echo_backend(renderer))
        assert len(OutputStore(uri).committed()) == 3
        summary = run_job(config, show_progress=False, backend=echo_backend(renderer, seed=5))
    finally:
        if started:
            ray.shutdown()
    assert kept_rows(uri) == expected
    assert summary.units_skipped == 3 and summary.stats["dropped_by_filter"] == {"diversity": 4}
    state = target.listdir("out/_diversity")
    assert "centroids.npy" in state and any(n.startswith("embeddings-reference-") for n in state)
    assert target.listdir("out/embeddings") == target.listdir("out/data")


# pyarrow's own wording (arrow/filesystem/s3_internal.h, ErrorToStatus)
SLOW_DOWN = (
    "When uploading part for key 'out/data/x' in bucket 'bucket': AWS Error SLOW_DOWN during "
    "UploadPart operation: Please reduce your request rate."
)


class ThrottlingHandler(NoRenameHandler):
    """Every `every`-th PUT (or every PUT after `always_after`) fails as S3 throttling does."""

    def __init__(self, inner, every: int = 3, always_after: int | None = None) -> None:
        super().__init__(inner)
        self.every = every
        self.always_after = always_after
        self.failed = 0

    def open_output_stream(self, path, metadata):
        self.calls["attempts"] += 1
        n = self.calls["attempts"]
        if (self.always_after is not None and n > self.always_after) or n % self.every == 0:
            self.failed += 1
            raise OSError(SLOW_DOWN)
        return super().open_output_stream(path, metadata)


@pytest.fixture()
def no_sleep(monkeypatch):
    import synth_ray.io.retry as retry_mod

    slept: list[float] = []
    monkeypatch.setattr(retry_mod, "_sleep", slept.append)
    return slept


def test_throttled_puts_are_retried_and_the_job_matches_a_clean_run(
    tmp_path, docs_file, embedded_model, no_sleep
):
    import synth_ray.io.retry as retry_mod

    clean = uri_config(tmp_path, docs_file, "mock://clean/out")
    register_filesystem("mock", pafs.PyFileSystem(NoRenameHandler(pafs._MockFileSystem())))
    try:
        run_job(clean, show_progress=False, backend=FakeBackend())
        clean_ids = ids_of("mock://clean/out")
        handler = ThrottlingHandler(pafs._MockFileSystem(), every=3)
        register_filesystem("mock", pafs.PyFileSystem(handler))
        before = retry_mod.retries_made
        config = uri_config(tmp_path, docs_file, "mock://bucket/out")
        run_job(config, show_progress=False, backend=FakeBackend())
        ids = ids_of("mock://bucket/out")
        assert sorted(ids) == sorted(clean_ids) and len(ids) == len(set(ids))
        assert handler.failed > 3 and retry_mod.retries_made - before == handler.failed
        assert no_sleep and all(0 <= s <= retry_mod.CAP_S for s in no_sleep)
    finally:
        register_filesystem("mock", None)


def test_persistent_throttling_fails_the_job_with_one_line(
    tmp_path, docs_file, embedded_model, no_sleep
):
    from synth_ray.io.storage_errors import find_storage_error
    from synth_ray.runtime.scheduler import JobFailed

    handler = ThrottlingHandler(pafs._MockFileSystem(), every=10**9, always_after=6)
    register_filesystem("mock", pafs.PyFileSystem(handler))
    try:
        config = uri_config(tmp_path, docs_file, "mock://bucket/out")
        with pytest.raises((JobFailed, OSError)) as failed:
            run_job(config, show_progress=False, backend=FakeBackend())
    finally:
        register_filesystem("mock", None)
    line = find_storage_error(failed.value) or str(failed.value)
    assert "PUT mock://bucket/out/" in line and "still failing after 6 attempts" in line, line
    assert "SLOW_DOWN" in line and "\n" not in line


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (OSError(SLOW_DOWN), "s3 SLOW_DOWN"),
        (
            OSError("AWS Error THROTTLING during ListObjectsV2 operation: Rate exceeded"),
            "s3 THROTTLING",
        ),
        (
            OSError("AWS Error NETWORK_CONNECTION during GetObject operation: curlCode: 28"),
            "s3 NETWORK_CONNECTION",
        ),
        (
            OSError("AWS Error UNKNOWN (HTTP status 503) during HeadObject operation: "),
            "s3 HTTP 503",
        ),
        (OSError("google::cloud::Status(UNAVAILABLE: connection reset)"), "gcs UNAVAILABLE"),
        (
            OSError("google::cloud::Status(RESOURCE_EXHAUSTED: rate limit)"),
            "gcs RESOURCE_EXHAUSTED",
        ),
        (
            OSError("GetProperties failed. Azure Error: [ServerBusy] 503 The server is busy."),
            "azure ServerBusy",
        ),
        (
            OSError("Azure Error: [AuthorizationFailure] 403 This request is not authorized: 503"),
            None,
        ),
        (ConnectionResetError(104, "Connection reset by peer"), "ConnectionResetError"),
        (TimeoutError("timed out"), "TimeoutError"),
        # permanent: what matters is the code, not words in the message
        (
            OSError("AWS Error ACCESS_DENIED during PutObject operation: SlowDown 503 timed out"),
            None,
        ),
        (OSError("AWS Error NO_SUCH_BUCKET during PutObject operation: try again"), None),
        (OSError("AWS Error UNKNOWN (HTTP status 403) during HeadObject operation: "), None),
        (OSError("google::cloud::Status(PERMISSION_DENIED: service unavailable)"), None),
        (OSError("Service Unavailable: connection reset, slow down, 503"), None),
        (FileNotFoundError(2, "No such file", "x"), None),
        (PermissionError(13, "Permission denied", "x"), None),
        (OSError(28, "No space left on device"), None),
        (ValueError("503"), None),
    ],
)
def test_errors_are_classified_by_their_code_not_their_words(error, kind):
    from synth_ray.io.retry import error_kind, is_transient

    assert error_kind(error) == kind and is_transient(error) is (kind is not None)


def test_retries_are_jittered_bounded_and_only_for_transient_errors():
    from synth_ray.io.retry import BASE_S, CAP_S, retry_transient
    from synth_ray.io.storage_errors import ObjectStoreError

    slept: list[float] = []
    calls = {"n": 0}

    def flaky():
        calls["n"] += 1
        if calls["n"] < 3:
            raise OSError(SLOW_DOWN)
        return "ok"

    assert retry_transient("PUT s3://b/x", flaky, sleep=slept.append) == "ok"
    assert calls["n"] == 3 and len(slept) == 2

    def denied():
        calls["n"] += 1
        raise OSError("AWS Error ACCESS_DENIED during PutObject operation: Access Denied")

    calls["n"] = 0
    slept.clear()
    with pytest.raises(OSError, match="ACCESS_DENIED"):
        retry_transient("PUT s3://b/x", denied, sleep=slept.append)
    assert calls["n"] == 1 and slept == []  # not retried

    waits: list[list[float]] = []
    for _ in range(40):
        slept = []
        with pytest.raises(
            ObjectStoreError, match=r"^PUT s3://b/x: still failing after 9 attempts"
        ):
            retry_transient(
                "PUT s3://b/x",
                lambda: (_ for _ in ()).throw(TimeoutError("timed out")),
                attempts=9,
                sleep=slept.append,
            )
        waits.append(slept)
    assert all(len(w) == 8 for w in waits)
    for n in range(8):
        nth = [w[n] for w in waits]
        assert all(0 <= d <= min(CAP_S, BASE_S * 2**n) for d in nth)
        assert len(set(nth)) > 35  # full jitter, not a fixed schedule
    assert max(w[7] for w in waits) > CAP_S / 2  # and it does back off, to the cap


@pytest.fixture()
def s3_behind_a_proxy(monkeypatch):
    """moto's S3 server behind a fault-injecting proxy; pyarrow's real S3 filesystem talks to
    the proxy. Yields (bucket URI, the proxy's fault rule setter, the proxy)."""
    import boto3
    from fault_proxy import FaultProxy
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    rule = {"decide": lambda method, path, n: None}
    proxy = FaultProxy(f"http://{host}:{port}", lambda m, p, n: rule["decide"](m, p, n))
    use_local_s3(monkeypatch, proxy.url)
    with proxy:
        boto3.client("s3", endpoint_url=f"http://{host}:{port}").create_bucket(Bucket="faulty")
        try:
            yield "s3://faulty/out", rule, proxy
        finally:
            server.stop()


S3_SLOW_DOWN_BODY = (
    b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message><RequestId>r1</RequestId></Error>"
)
S3_ACCESS_DENIED_BODY = (
    b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>AccessDenied</Code>'
    b"<Message>Access Denied</Message><RequestId>r2</RequestId></Error>"
)


def test_real_s3_throttling_is_retried_once_per_fault_and_the_job_is_exact(
    s3_behind_a_proxy, tmp_path, docs_file, embedded_model, no_sleep
):
    """The first PUT of every other object (but the lease's) answered 503 SlowDown by the
    store: pyarrow's real error is classified by its code and retried here, one request per
    attempt (the SDK's own retries are off, so faults and retries match one for one), commit
    objects are retried by obstore, and every row is there once. A 403 is never retried."""
    from fault_proxy import Fault

    import synth_ray.io.retry as retry_mod

    uri, rule, proxy = s3_behind_a_proxy
    config = uri_config(tmp_path, docs_file, uri)
    seen: list[str] = []

    def first_put_of_every_other_key(method, path, n):
        key = path.split("?")[0]  # each attempt is a new multipart upload
        if method != "PUT" or key in seen or "_lease" in key:
            return None
        seen.append(key)
        return Fault(503, S3_SLOW_DOWN_BODY) if len(seen) % 2 == 0 else None

    rule["decide"] = first_put_of_every_other_key
    before = retry_mod.retries_made
    summary = run_job(config, show_progress=False, backend=FakeBackend())
    faulted = [path for _, path, status in proxy.requests if status == 503]
    # commit objects are conditional writes through obstore, whose own retries take them
    by_obstore = [path for path in faulted if "/_commits/unit-" in path]
    assert len(by_obstore) >= 3 and len(faulted) - len(by_obstore) >= 10
    assert retry_mod.retries_made - before == len(faulted) - len(by_obstore)
    assert summary.units_committed == summary.units_total and summary.stats["accounted"]
    ids = ids_of(uri)
    assert len(ids) == len(set(ids)) == summary.stats["rows_out"]

    rule["decide"] = lambda method, path, n: (
        Fault(403, S3_ACCESS_DENIED_BODY) if method == "PUT" and "_lease" not in path else None
    )
    proxy.requests.clear()
    denied = uri_config(tmp_path, docs_file, "s3://faulty/other")
    with pytest.raises(Exception) as failed:
        run_job(denied, show_progress=False, backend=FakeBackend())
    assert "AWS Error ACCESS_DENIED" in str(failed.value)
    assert sum(1 for _, _, status in proxy.requests if status == 403) == 1  # never retried


def commit_units(store: OutputStore, n: int) -> list[UnitRecord]:
    """Commit `n` one-row units straight to `store`'s log; their records."""
    records = [
        UnitRecord(i, f"u{i}", f"data/part-{i:06d}.parquet", None, 1, {"rows_in": 1, "rows_out": 1})
        for i in range(n)
    ]
    for record in records:
        store.commit(record)
    return records


def test_a_new_reader_of_many_commits_fetches_segments_not_every_object(target, monkeypatch):
    """A resume, `status` or the card of a big output: the commits come from a few segment
    objects plus the objects no segment covers yet (fetched in parallel), and a dropped
    unit (--replan) never comes back from a segment."""
    import synth_ray.io.commits as commits

    monkeypatch.setattr(commits, "SEGMENT_SIZE", 10)
    store = OutputStore(target.uri("many"))
    store.location.make_dir()
    records = commit_units(store, 25)
    gets: list[str] = []
    real_get = UriLocation.read_bytes

    def counting_get(self, name):
        gets.append(name)
        return real_get(self, name)

    monkeypatch.setattr(UriLocation, "read_bytes", counting_get)
    assert set(OutputStore(store.location).committed()) == {f"u{i}" for i in range(25)}
    assert sum("_segments/" in g for g in gets) == 2 and len(gets) == 2 + 5, gets
    store.commits.checkpoint()  # what a stage's end does: the last 5 go into a segment too
    gets.clear()
    assert len(OutputStore(store.location).committed()) == 25 and len(gets) == 3
    store.drop_units([records[7]])
    store.commit(dataclasses.replace(records[7], unit_id="u7-new"))
    fresh = OutputStore(store.location).committed()
    assert "u7" not in fresh and fresh["u7-new"].unit_index == 7 and len(fresh) == 25


def test_a_drop_killed_halfway_leaves_no_segment_over_its_objects(target, monkeypatch):
    """--replan's drop removes the segments before the commit objects: a kill in between
    can leave a stale object (the rerun finds it stale again), never a segment whose old
    record would hide the object committed again under its name."""
    import synth_ray.io.commits as commits

    monkeypatch.setattr(commits, "SEGMENT_SIZE", 5)
    store = OutputStore(target.uri("drop"))
    store.location.make_dir()
    commit_units(store, 10)
    assert store.location.listdir(commits.SEGMENTS_DIR)
    real_delete = UriLocation.delete

    class Killed(BaseException):
        pass

    def delete(self, name):
        if name.endswith(".json"):
            raise Killed()
        return real_delete(self, name)

    monkeypatch.setattr(UriLocation, "delete", delete)
    with pytest.raises(Killed):
        store.commits.drop({"u3"})
    assert store.location.listdir(commits.SEGMENTS_DIR) == []
    assert set(OutputStore(store.location).committed()) == {f"u{i}" for i in range(10)}
