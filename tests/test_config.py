"""Config validation: unknown keys, wrong types and bad values give one line naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from synth_ray.config import load_config, validate_config
from synth_ray.errors import ConfigError

BASE = "method: rephrase\ninput: {path: x.jsonl}\noutput: {path: out}\n"


def load(tmp_path, text, overrides=()):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return load_config(path, list(overrides))


def test_defaults_and_overrides(tmp_path):
    config = load(tmp_path, BASE, ["input.limit=20", "sampling.temperature=0", "ray.address=auto"])
    assert config.input.limit == 20 and config.sampling.temperature == 0.0
    assert config.ray.address == "auto" and config.section.max_chunk_tokens == 300
    assert config.section.styles == ["easy", "medium", "hard", "qa"]


@pytest.mark.parametrize(
    ("text", "overrides", "message"),
    [
        (
            BASE + "input: {path: x, text_colum: t}\n",
            [],
            "config key input.text_colum: unknown key",
        ),
        (BASE, ["sampling.temprature=1"], "config key sampling.temprature: unknown key"),
        (
            BASE,
            ["resources.replicas=two"],
            "config key resources.replicas: Input should be a valid integer",
        ),
        (
            BASE,
            ["resources.replicas=0"],
            "config key resources.replicas: Input should be greater than or equal to 1",
        ),
        (
            BASE,
            ["method=summarize"],
            "config key method: unknown method 'summarize' (registered: conversation, evol_instruct,",
        ),
        (
            "method: rephrase\noutput: {path: o}\n",
            [],
            "config key input: required for method rephrase",
        ),
        (BASE, ["rephrase.styles=[easy, poetic]"], "style 'poetic'"),
        (
            BASE,
            ["rephrase.custom_styles={x: no placeholder}"],
            "custom_styles.x: template must contain {text}",
        ),
        (BASE, ["input.limit"], "expected KEY=VALUE"),
        (BASE, ["input.path.x=1"], "input.path is a value, not a section"),
        ("method: [unclosed\n", [], "not valid YAML"),
        ("- a\n- b\n", [], "expected a mapping"),
    ],
)
def test_bad_config_names_the_key(tmp_path, text, overrides, message):
    with pytest.raises(ConfigError) as err:
        load(tmp_path, text, overrides)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")


def test_custom_style_can_be_used(tmp_path):
    config = load(
        tmp_path,
        BASE,
        ["rephrase.styles=[tweet]", "rephrase.custom_styles={tweet: 'As a tweet: {text}'}"],
    )
    assert config.section.styles == ["tweet"]


def test_fingerprint_ignores_where_and_how_fast():
    base = {"method": "generate", "input": {"path": "x"}, "output": {"path": "a"}}
    a = validate_config(base)
    b = validate_config(
        {**base, "output": {"path": "b"}, "resources": {"replicas": 4}, "ray": {"address": "auto"}}
    )
    c = validate_config({**base, "sampling": {"max_tokens": 5}})
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()


def test_every_recipe_loads_and_filters_only_what_is_not_paraphrase_by_design():
    """configs/ has a recipe per method, each valid. The diversity filter is on except where
    a method's outputs paraphrase each other by design (issue 12, fix 9): the WRAP styles of
    one chunk, the agreeing samples of rejection sampling and self-consistency, and the
    bench's workload, which measures the engine against raw vLLM with nothing in between."""
    repo = Path(__file__).resolve().parent.parent
    recipes = {p.name: load_config(p) for p in sorted((repo / "configs").glob("*.yaml"))}
    methods = {c.method for c in recipes.values()}
    import synth_ray.methods as m

    assert methods == set(m.registered())
    for name, config in recipes.items():
        unfiltered = config.method == "rephrase" and len(config.section.styles) > 1
        unfiltered |= config.method == "self_improve" and config.section.mode != "star"
        unfiltered |= config.method in ("judge", "preference", "label")  # not supported there
        unfiltered |= name == "bench.yaml"
        # the remote recipe: its replica and an embedder would share a 2-core machine with the
        # server it is pointed at (docs/engines.md)
        unfiltered |= name == "generate_remote.yaml"
        assert config.filters.diversity.enabled is not unfiltered, name


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"method": "rephrase", "self_improve": {"n": 8}},
            "config key self_improve: a section of method self_improve, but this job's "
            "method is rephrase",
        ),
        (
            {"method": "generate", "evol_instruct": {"rounds": 2}},
            "evol_instruct: a section of method evol_instruct",
        ),
        (
            {"method": "evol_instruct", "evol": {"rounds": 2}, "evol_instruct": {"rounds": 3}},
            "evol: renamed evol_instruct; give only evol_instruct",
        ),
    ],
)
def test_a_section_of_another_method_is_refused(tmp_path, data, message):
    from synth_ray.config import validate_config

    base = {"input": {"path": "x"}, "output": {"path": str(tmp_path / "o")}}
    with pytest.raises(ConfigError) as err:
        validate_config({**base, **data})
    assert message in str(err.value) and "\n" not in str(err.value)


def test_old_evol_section_is_accepted_with_a_warning(tmp_path):
    from synth_ray.config import validate_config

    base = {"method": "evol_instruct", "input": {"path": "x"}, "output": {"path": "o"}}
    with pytest.warns(FutureWarning, match="config key evol: renamed evol_instruct"):
        config = validate_config({**base, "evol": {"rounds": 2}})
    assert config.section.rounds == 2
    # the fingerprint is the same under either name, so an earlier output still resumes
    assert (
        config.fingerprint()
        == validate_config({**base, "evol_instruct": {"rounds": 2}}).fingerprint()
    )


def test_a_vllm_knob_is_one_field_from_config_to_engine(tmp_path):
    """Every EngineConfig field marked VLLM reaches vLLM's engine arguments under its own name;
    a new knob needs no other edit (a subclass stands in for adding a field)."""
    from pydantic import Field

    from synth_ray.config import VLLM, EngineConfig
    from synth_ray.engine.vllm_engine import EngineSettings

    class WithNewKnob(EngineConfig):
        max_num_batched_tokens: int | None = Field(None, json_schema_extra=VLLM)

    engine = WithNewKnob(max_num_batched_tokens=8192, extra_args={"seed": 3})
    args = EngineSettings(model="m", args=engine.vllm_args()).engine_args()
    assert args["max_num_batched_tokens"] == 8192 and args["seed"] == 3
    assert args["max_model_len"] == 2048 and args["enable_prefix_caching"] is True
    assert "max_num_seqs" not in args  # None: vLLM's own default
    assert "cpu_kv_cache_gib" not in args and "model" in args
    # runtime-only knobs stay out of the fingerprint
    config = validate_config(
        {"method": "generate", "input": {"path": "x"}, "output": {"path": str(tmp_path)}}
    )
    faster = config.model_copy(
        update={"engine": config.engine.model_copy(update={"max_num_seqs": 64})}
    )
    assert config.fingerprint() == faster.fingerprint()


FINGERPRINT_CASES = [
    {
        "method": "rephrase",
        "input": {"path": "in.jsonl", "limit": 5},
        "output": {"path": "o", "rows_per_shard": 7},
        "engine": {"max_num_seqs": 4, "enforce_eager": True},
        "resources": {"replicas": 3},
        "filters": {"diversity": {"enabled": True, "threshold": 0.8, "embedders": 2}},
        "rephrase": {"styles": ["qa"]},
    },
    {
        "method": "evol_instruct",
        "input": {"path": "in.jsonl"},
        "output": {"path": "o"},
        "evol_instruct": {"rounds": 2},
    },
    {
        "method": "self_instruct",
        "output": {"path": "o"},
        "self_instruct": {"seed_path": "s.jsonl", "target": 9},
    },
]


def test_one_fingerprint_rule_keeps_earlier_outputs_resumable():
    """The fingerprint is one rule over every section (fields marked RUNTIME left out); the
    values below were computed by the per-section code it replaced, so outputs written before
    issue 12 still resume. evol_instruct's section enters under its old key, evol.
    (self_instruct's changed on purpose: `max_instances` now makes up to 5 rows per
    instruction where it made one, so an older output is not resumed into a different one.)"""
    got = [validate_config(case).fingerprint() for case in FINGERPRINT_CASES]
    assert got == ["942fc79bf5f74d66", "476f6ea9b2d457ae", "ebb3a9849bbb250f"]


@pytest.mark.parametrize(
    ("key", "value", "decides"),
    [
        ("output.path", "elsewhere", False),
        ("resources.replicas", 5, False),
        ("scheduler.batch_size", 3, False),
        ("engine.enforce_eager", False, False),
        ("filters.diversity.embedders", 4, False),
        ("filters.diversity.batch_size", 8, False),
        ("output.rows_per_shard", 8, True),
        ("input.limit", 6, True),
        ("engine.max_model_len", 1024, True),
        ("sampling.seed", 1, True),
        ("filters.diversity.threshold", 0.7, True),
        ("rephrase.max_chunk_tokens", 100, True),
    ],
)
def test_what_enters_the_fingerprint(key, value, decides):
    import copy

    changed = copy.deepcopy(FINGERPRINT_CASES[0])
    *path, last = key.split(".")
    node = changed
    for part in path:
        node = node.setdefault(part, {})
    node[last] = value
    before = validate_config(FINGERPRINT_CASES[0]).fingerprint()
    assert (validate_config(changed).fingerprint() != before) is decides
