"""Shared fixtures. The real engine starts once per session (about 45 s on 2 cores) and every
end-to-end test reuses it through a keep-alive Ray backend."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    import json

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def one_shard(folder: Path) -> Path:
    """The one shard in `folder` (its name carries the attempt that wrote it)."""
    [shard] = sorted(folder.glob("*.parquet"))
    return shard


def make_docs(n: int, words: int = 40) -> list[dict]:
    """n distinct documents of about `words` words, some with two paragraphs."""
    vocab = "river stone market winter garden signal copper lantern harbor meadow".split()
    docs = []
    for i in range(n):
        body = " ".join(vocab[(i * 7 + j * 3) % len(vocab)] for j in range(words))
        text = f"Document {i} begins. {body}."
        if i % 3 == 0:
            text += f"\n\nA second paragraph for document {i}, short and plain."
        docs.append({"id": f"d{i:04d}", "text": text})
    return docs


def job_config(tmp_path: Path, input_path: Path, **sections) -> JobConfig:  # noqa: F821
    from synth_ray.config import validate_config

    data = {
        "method": "rephrase",
        "input": {"path": str(input_path), "id_column": "id"},
        "output": {"path": str(tmp_path / "out"), "rows_per_shard": 8},
        "engine": {"max_model_len": 512, "enforce_eager": True},
        "sampling": {"max_tokens": 16, "temperature": 0.7},
        "rephrase": {"styles": ["easy", "qa"], "max_chunk_tokens": 64},
        "ray": {"num_cpus": 2},
    }
    for key, value in sections.items():
        data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
    if data["method"] != "rephrase" and "rephrase" not in sections:
        del data["rephrase"]  # a section of another method is refused
    return validate_config(data)


def use_local_s3(monkeypatch: pytest.MonkeyPatch, endpoint: str) -> None:
    """Point every S3 client of this process (pyarrow, obstore, boto3) at a local endpoint
    (moto's server, or a proxy in front of it) with test credentials."""
    env = {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ALLOW_HTTP": "true",
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)


@pytest.fixture(scope="session")
def embedded_model() -> str:
    from synth_ray.engine.models import prepare_embedded_model

    return str(prepare_embedded_model())


def model_alias(model: str | Path, dest: Path) -> Path:
    """Another model folder (another name: a judge, a second generator) holding links to
    `model`'s files: the same weights and tokenizer without copying hundreds of MB."""
    dest.mkdir(parents=True, exist_ok=True)
    for item in Path(model).iterdir():
        (dest / item.name).symlink_to(item.resolve())
    return dest


@pytest.fixture(scope="session")
def shared_engine(embedded_model, tmp_path_factory):
    """One real vLLM CPU engine in one Ray actor, reused by every end-to-end test."""
    import ray

    from synth_ray.runtime.cluster import ray_backend_for

    # 2048 tokens: the judge's FineWeb-Edu rubric alone is ~550; each job checks its prompts
    # against its own engine.max_model_len before they reach the engine
    # The replica computes on 2 threads (the machine's cores) and reserves 2 of Ray's 3 CPUs:
    # the third holds the diversity filter's embedder in the jobs that turn it on.
    config = job_config(
        tmp_path_factory.mktemp("engine"),
        REPO / "examples" / "web_docs.jsonl",
        engine={"max_model_len": 2048},
        resources={"cpus_per_replica": 2},
    )
    ray.init(num_cpus=3, include_dashboard=False, log_to_driver=False)
    backend = ray_backend_for(config, keep_alive=True)
    yield backend
    backend.close()
    ray.shutdown()


class Crash(BaseException):
    """Stands in for SIGKILL at a chosen commit: nothing after it runs, no cleanup."""


def crash_on_commit(monkeypatch, when):
    """Make the manifest append raise Crash for the first unit record `when(record)` accepts,
    so that unit's shards are on disk but it is not committed."""
    import synth_ray.io.manifest as manifest_mod

    real = manifest_mod.Manifest.append

    def crashing(self, record):
        if when(record):
            raise Crash()
        return real(self, record)

    monkeypatch.setattr(manifest_mod.Manifest, "append", crashing)


def watch_driver_reads(monkeypatch, after_stage: str) -> dict:
    """Record the input rows and output shards this process's main thread reads (the driver:
    simulated replicas do their per-row work in worker threads) once `after_stage` has
    executed. Returns {"watching": bool, "reads": [what was read]}."""
    import threading

    import synth_ray.io.filesystem as filesystem
    import synth_ray.io.inputs as inputs
    from synth_ray.runtime.stage import StageRunner

    seen: dict = {"watching": False, "reads": []}

    def watch(name, real):
        def read(*args, **kwargs):
            if seen["watching"] and threading.current_thread() is threading.main_thread():
                seen["reads"].append(name)
            return real(*args, **kwargs)

        return read

    monkeypatch.setattr(inputs, "_rows_jsonl", watch("input row", inputs._rows_jsonl))
    for cls in (filesystem.LocalLocation, filesystem.UriLocation):
        monkeypatch.setattr(cls, "read_table", watch("output shard", cls.read_table))
    real_execute = StageRunner.execute

    def execute(self, store, docs, method, units, stage="", gate=None):
        result = real_execute(self, store, docs, method, units, stage, gate)
        seen["watching"] = seen["watching"] or stage == after_stage
        return result

    monkeypatch.setattr(StageRunner, "execute", execute)
    return seen


@pytest.fixture(scope="module")
def ray_local():
    """A local Ray for a test module (or the one an earlier module left running)."""
    import ray

    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    if started:
        ray.shutdown()
