"""Structured output: JSON Schema -> typed columns, completions parsed and validated again,
constraints reaching the engine's sampling, and config errors in one line.

    pytest tests/test_structured_output.py

The real engine decoding under these constraints is tested in test_end_to_end.py
(`test_structured_generate_on_real_engine`).
"""

from __future__ import annotations

import json

import pyarrow as pa
import pytest
from conftest import job_config, make_docs, write_jsonl

from synth_ray.engine.requests import Constraint, EngineResult, SamplingSpec
from synth_ray.methods.base import Errored, Kept
from synth_ray.methods.structured_output import (
    SchemaError,
    StructuredReader,
    columns_of,
    json_constraint,
)

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 20},
        "age": {"type": "integer", "minimum": 0},
        "height": {"type": "number"},
        "admin": {"type": "boolean"},
        "tags": {"type": "array", "items": {"type": "string"}},
        "pet": {
            "type": "object",
            "properties": {"kind": {"enum": ["cat", "dog"]}, "legs": {"type": ["integer", "null"]}},
        },
    },
    "required": ["name", "age"],
}


def test_each_property_becomes_a_column_of_its_type():
    fields = columns_of(PERSON)
    assert [(f.name, f.type) for f in fields] == [
        ("name", pa.string()),
        ("age", pa.int64()),
        ("height", pa.float64()),
        ("admin", pa.bool_()),
        ("tags", pa.list_(pa.string())),
        ("pet", pa.struct([pa.field("kind", pa.string()), pa.field("legs", pa.int64())])),
    ]


@pytest.mark.parametrize(
    ("schema", "message"),
    [
        ({"type": "array", "items": {"type": "string"}}, "top level must be an object"),
        ({"type": "object"}, "needs `properties`"),
        ({"type": "object", "properties": {"x": {"anyOf": [{}, {}]}}}, "x: anyOf"),
        ({"type": "object", "properties": {"x": {"type": "array"}}}, "x: an array needs one"),
        ({"type": "object", "properties": {"x": {"type": "object"}}}, "x: an object needs"),
        ({"type": "object", "properties": {"x": {"type": ["string", "integer"]}}}, "x: type"),
        ({"type": "object", "properties": {"x": {}}}, "x: no type"),
        ({"type": "object", "properties": {"text": {"type": "string"}}}, "'text' is one of"),
        ({"type": "object", "properties": {"x": {"type": "strin"}}}, "not a valid JSON Schema"),
    ],
)
def test_schemas_without_a_column_type_are_refused_naming_where(schema, message):
    with pytest.raises(SchemaError, match=message):
        columns_of(schema, frozenset({"text"}))


def test_a_completion_is_parsed_and_validated_again():
    reader = StructuredReader(PERSON, columns_of(PERSON))
    good = '{"name": "Ada", "age": 36, "tags": ["math"], "pet": {"kind": "cat", "legs": 4}}'
    assert reader.read(good, "stop") == {
        "name": "Ada",
        "age": 36,
        "height": None,
        "admin": None,
        "tags": ["math"],
        "pet": {"kind": "cat", "legs": 4},
    }
    cut = reader.read('{"name": "Ada", "ag', "length")
    assert cut.startswith("not JSON (cut by max_tokens)")
    assert reader.read('{"name": "Ada"}', "stop") == (
        "does not match the schema at the top level: 'age' is a required property"
    )
    wrong = reader.read('{"name": "Ada", "age": 3, "pet": {"kind": "cow"}}', "stop")
    assert wrong.startswith("does not match the schema at pet/kind: 'cow' is not one of")
    too_big = reader.read('{"name": "A", "age": 99999999999999999999}', "stop")
    assert too_big.startswith("age cannot be stored as int64")
    # what JSON allows but a column cannot hold is a row error, never a failed shard write
    surrogate = reader.read('{"name": "\\ud800", "age": 1}', "stop")
    assert surrogate.startswith("name cannot be stored as string"), surrogate
    big_number = reader.read('{"name": "A", "age": 1, "height": 99999999999999999999}', "stop")
    assert big_number["height"] == 1e20  # a number column takes any size, as a float
    # the reader travels to replicas
    import pickle

    assert pickle.loads(pickle.dumps(reader)).read(good, "stop")["age"] == 36


def generate_config(tmp_path, **section):
    docs = write_jsonl(tmp_path / "docs.jsonl", make_docs(3))
    return job_config(tmp_path, docs, method="generate", generate=section)


def test_the_schema_reaches_the_engine_and_rows_get_typed_columns(tmp_path):
    from synth_ray.methods.generate import GenerateConfig, GenerateMethod

    config = generate_config(tmp_path, output_schema=PERSON)
    method = GenerateMethod(config.section_as(GenerateConfig), "m")
    sampling = method.stage_sampling(SamplingSpec(0.7, 0.9, 64))
    assert sampling.constraint == json_constraint(PERSON)
    assert json.loads(sampling.constraint.value) == PERSON
    assert method.schema.field("pet").type == columns_of(PERSON)[-1].type
    [candidate] = method.expand(_doc("write a person"))
    kept = method.finish(candidate, EngineResult("r", '{"name": "Bo", "age": 7}', 5, 9, "stop"))
    assert isinstance(kept, Kept) and kept.row["age"] == 7 and kept.row["text"]
    table = pa.Table.from_pylist([kept.row], schema=method.schema)
    assert table.column("age").type == pa.int64()
    cut = method.finish(candidate, EngineResult("r", '{"name": "B', 5, 64, "length"))
    assert isinstance(cut, Errored) and cut.stage == "structured_output"
    assert "cut by max_tokens" in cut.error


def test_choice_regex_and_grammar_constraints_reach_the_engine(tmp_path):
    from synth_ray.engine.vllm_engine import structured_outputs
    from synth_ray.methods.generate import GenerateConfig, GenerateMethod

    for given, expected in [
        ({"choice": ["yes", "no"]}, Constraint("choice", choices=("yes", "no"))),
        ({"regex": r"Score: [1-5]"}, Constraint("regex", r"Score: [1-5]")),
        ({"grammar": 'root ::= "a" | "b"'}, Constraint("grammar", 'root ::= "a" | "b"')),
    ]:
        config = generate_config(tmp_path, constraint=given)
        method = GenerateMethod(config.section_as(GenerateConfig), "m")
        sampling = method.stage_sampling(SamplingSpec(0.7, 0.9, 64))
        assert sampling.constraint == expected
    params = structured_outputs(Constraint("choice", choices=("yes", "no")))
    assert params.choice == ["yes", "no"]
    assert structured_outputs(json_constraint(PERSON)).json == json.dumps(
        PERSON, sort_keys=True, separators=(",", ":")
    )
    assert structured_outputs(None) is None


def test_a_schema_file_is_read_into_the_job_and_its_content_fingerprinted(tmp_path):
    file = tmp_path / "person.json"
    file.write_text(json.dumps(PERSON))
    config = generate_config(tmp_path, output_schema=str(file))
    from synth_ray.methods.generate import GenerateConfig

    assert config.section_as(GenerateConfig).output_schema == PERSON
    changed = {**PERSON, "required": ["name"]}
    file.write_text(json.dumps(changed))
    assert generate_config(tmp_path, output_schema=str(file)).fingerprint() != config.fingerprint()
    # a job without a schema keeps the fingerprint it had before this key existed
    plain = generate_config(tmp_path)
    assert "output_schema" not in json.dumps(plain.section_as(GenerateConfig).decisive())


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"output_schema": "/nope/schema.json"}, "generate.output_schema.*no such file"),
        ({"output_schema": {"type": "object"}}, "generate.*needs `properties`"),
        ({"constraint": {"regex": "a", "choice": ["b"]}}, "exactly one of regex, choice"),
        ({"constraint": {"choice": []}}, "non-empty list"),
        (
            {"output_schema": PERSON, "constraint": {"regex": "a"}},
            "output_schema or constraint, not both",
        ),
    ],
)
def test_bad_structured_configs_are_one_line_errors(tmp_path, section, message):
    from synth_ray.config import load_config

    docs = write_jsonl(tmp_path / "docs.jsonl", make_docs(1))
    path = tmp_path / "job.yaml"
    path.write_text(
        json.dumps(
            {
                "method": "generate",
                "input": {"path": str(docs), "text_column": "text"},
                "output": {"path": str(tmp_path / "out")},
                "generate": section,
            }
        )
    )
    with pytest.raises(Exception, match=message) as failed:
        load_config(path)
    assert "\n" not in str(failed.value)


def _doc(text: str):
    from synth_ray.io.inputs import Document

    return Document(ordinal=0, source_id="s1", text=text)
