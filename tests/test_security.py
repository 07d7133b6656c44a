"""What a config or an input row must never be able to do (issue: security review).

YAML is data, never code; an input row's id never becomes a path; `submit` sends only the
files the job reads; remote code in a model is not trusted unless the config says so."""

from __future__ import annotations

import re

import pytest
import yaml
from conftest import REPO, job_config, write_jsonl
from fake_backend import FakeBackend

from synth_ray.config import load_config
from synth_ray.engine.vllm_engine import EngineSettings
from synth_ray.errors import ConfigError
from synth_ray.io.inputs import InputSpec, iter_documents


def test_yaml_tags_that_run_code_are_refused_not_run(tmp_path):
    marker = tmp_path / "PWNED"
    config = tmp_path / "job.yaml"
    config.write_text(
        f"method: !!python/object/apply:os.system ['touch {marker}']\noutput: {{path: out}}\n"
    )
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(config)
    plain = tmp_path / "plain.yaml"
    plain.write_text("method: generate\ninput: {path: in.jsonl}\noutput: {path: out}\n")
    tagged = f"!!python/object/apply:os.system ['touch {marker}']"
    # an override that is not plain YAML stays the literal string it was given
    assert load_config(plain, [f"output.path={tagged}"]).output.path == tagged
    assert not marker.exists()


def test_row_ids_never_become_paths(tmp_path, embedded_model):
    from synth_ray.runtime.job import run_job

    rows = [
        {"id": "../../escaped", "text": "A short document about rivers."},
        {"id": "/tmp/absolute", "text": "Another document, about stones."},
    ]
    docs = write_jsonl(tmp_path / "in" / "docs.jsonl", rows)
    config = job_config(tmp_path, docs)
    run_job(config, show_progress=False, backend=FakeBackend())
    out = tmp_path / "out"
    written = {p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()}
    assert all(name.startswith(("out/", "in/")) for name in written), written
    [shard] = [p.name for p in (out / "data").iterdir()]
    assert re.fullmatch(r"part-000000-[0-9a-f]{12}-[0-9a-f]{6}\.parquet", shard), shard
    assert not (tmp_path.parent / "escaped").exists()


def test_submit_sends_only_the_input_files_never_hidden_or_other_files(tmp_path):
    from synth_ray.jobs import prepare_submission

    folder = tmp_path / "inputs"
    write_jsonl(folder / "a.jsonl", [{"prompt": "hi"}])
    write_jsonl(folder / "sub" / "b.jsonl", [{"prompt": "there"}])
    write_jsonl(folder / ".hidden.jsonl", [{"prompt": "secret"}])
    write_jsonl(folder / ".git" / "x.jsonl", [{"prompt": "history"}])
    (folder / "credentials.env").write_text("TOKEN=abc\n")
    config = tmp_path / "job.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "method": "generate",
                "input": {"path": str(folder), "text_column": "prompt"},
                "output": {"path": str(tmp_path / "out")},
            }
        )
    )
    workdir = tmp_path / "workdir"
    workdir.mkdir()
    prepare_submission(config, [], workdir)
    sent = sorted(p.relative_to(workdir).as_posix() for p in workdir.rglob("*") if p.is_file())
    assert sent == ["input/a.jsonl", "input/sub/b.jsonl", "job.yaml"]
    # and a local run reads the same files: hidden ones are never inputs
    texts = [d.text for d in iter_documents(InputSpec(str(folder), "prompt"))]
    assert texts == ["hi", "there"]


def test_remote_code_is_not_trusted_unless_the_config_says_so():
    assert EngineSettings(model="m").engine_args().get("trust_remote_code", False) is False
    trusted = EngineSettings(model="m", args={"trust_remote_code": True})
    assert trusted.engine_args()["trust_remote_code"] is True


def test_submit_sends_the_files_each_method_names(tmp_path):
    """Each method's registry entry names the local files it reads besides the input (seed
    tasks, few-shot exemplars): `submit` sends those too and rewrites their paths."""
    from synth_ray.jobs import prepare_submission

    questions = write_jsonl(tmp_path / "q.jsonl", [{"question": "1+1?", "answer": "#### 2"}])
    shots = write_jsonl(
        tmp_path / "shots.jsonl", [{"question": "2+2?", "rationale": "2+2=4.", "answer": "4"}]
    )
    config = tmp_path / "job.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "method": "self_improve",
                "input": {"path": str(questions)},
                "output": {"path": str(tmp_path / "out")},
                "self_improve": {"mode": "rejection", "few_shot_path": str(shots)},
            }
        )
    )
    workdir = tmp_path / "workdir"
    workdir.mkdir()
    _, data = prepare_submission(config, [], workdir)
    assert data["self_improve"]["few_shot_path"] == "few_shot_path/shots.jsonl"
    assert (workdir / "few_shot_path" / "shots.jsonl").read_text() == shots.read_text()


def test_submit_sends_a_schema_file_as_its_content_and_benchmark_files(tmp_path, monkeypatch):
    """A JSON Schema given by path travels inside job.yaml (the config read it); each
    decontamination benchmark file travels beside it, its path rewritten. The packed job
    validates where it runs, with none of the local paths."""
    import copy
    import json

    from synth_ray.config import validate_config
    from synth_ray.jobs import prepare_submission

    prompts = write_jsonl(tmp_path / "p.jsonl", [{"id": "a", "text": "hi"}])
    schema = {"type": "object", "properties": {"score": {"type": "integer"}}}
    (tmp_path / "schema.json").write_text(json.dumps(schema))
    bench = write_jsonl(tmp_path / "gsm.jsonl", [{"question": "What is 2 + 2?"}])
    folder = tmp_path / "code"
    folder.mkdir()
    (folder / "a.py").write_text("print(1)\n")
    cases = [
        ("generate", prompts, {"output_schema": str(tmp_path / "schema.json")}),
        ("oss_instruct", folder, {"decontaminate": ["human_eval", {"name": "gsm8k", "path": str(bench)}]}),
    ]  # fmt: skip
    for method, source, section in cases:
        config = tmp_path / f"{method}.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "method": method,
                    "input": {"path": str(source)},
                    "output": {"path": str(tmp_path / "out")},
                    method: section,
                }
            )
        )
        workdir = tmp_path / f"workdir-{method}"
        workdir.mkdir()
        _, data = prepare_submission(config, [], workdir)
        monkeypatch.chdir(workdir)
        (tmp_path / "schema.json").rename(tmp_path / "moved.json") if method == "generate" else None
        packed = validate_config(copy.deepcopy(data))  # (validation takes sections out)
        if method == "generate":
            assert data["generate"]["output_schema"] == schema
        else:
            entry = data["oss_instruct"]["decontaminate"][1]
            assert entry["path"] == "decontaminate-1-path/gsm.jsonl"
            assert (workdir / entry["path"]).read_text() == bench.read_text()
            assert data["oss_instruct"]["decontaminate"][0] == "human_eval"
        assert packed.fingerprint()


RECIPES = sorted(p.name for p in (REPO / "configs").glob("*.yaml"))


@pytest.mark.parametrize("recipe", RECIPES)
def test_every_recipe_prepares_for_submit(tmp_path, monkeypatch, recipe):
    """Each method's recipe, new methods included, packs into a job folder whose config
    validates and whose local files are all inside it."""
    from synth_ray.config import validate_config
    from synth_ray.jobs import prepare_submission

    repo = REPO
    monkeypatch.chdir(repo)  # recipes name their inputs relative to the checkout
    workdir = tmp_path / "workdir"
    workdir.mkdir()
    config, data = prepare_submission(repo / "configs" / recipe, [], workdir)
    monkeypatch.chdir(workdir)  # the job runs in its folder
    packed = validate_config(data)
    if packed.input is not None:
        assert (workdir / packed.input.path.split("*")[0]).exists()
    assert packed.method == config.method and packed.output.path.startswith("/")


def test_submit_sends_a_tinystories_vocabulary(tmp_path):
    from synth_ray.jobs import prepare_submission

    vocabulary = tmp_path / "words.json"
    vocabulary.write_text('{"nouns": ["cat"], "verbs": ["run"], "adjectives": ["red"]}')
    config = tmp_path / "job.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "method": "tinystories",
                "output": {"path": str(tmp_path / "out")},
                "tinystories": {"vocabulary_path": str(vocabulary)},
            }
        )
    )
    workdir = tmp_path / "workdir"
    workdir.mkdir()
    _, data = prepare_submission(config, [], workdir)
    assert data["tinystories"]["vocabulary_path"] == "vocabulary_path/words.json"
    assert (workdir / "vocabulary_path" / "words.json").read_text() == vocabulary.read_text()
