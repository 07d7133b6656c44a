"""The job config: a YAML file plus `--set key.path=value` overrides, validated by pydantic.

    python -c "from synth_ray.config import load_config; print(load_config('configs/quickstart.yaml'))"

Every section forbids unknown keys, so a typo stops the run before any work starts with one
line naming the key (`ConfigError`, exit status 2). The README's reference table lists each key.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, model_validator

from synth_ray.errors import ConfigError
from synth_ray.filter_config import FiltersConfig
from synth_ray.method_config import (
    DEFAULT_STYLES,
    EVOL_OPERATIONS,
    EvolConfig,
    GenerateConfig,
    RephraseConfig,
    SelfImproveConfig,
    SelfInstructConfig,
    _Section,
)

EMBEDDED_MODEL = "embedded:smollm2-135m-instruct"


class InputConfig(_Section):
    path: str = Field(description="A Parquet or JSONL file, a folder of them, or a glob.")
    text_column: str = Field("text", description="Column holding the document or prompt text.")
    id_column: str | None = Field(
        None,
        description="Column of unique row ids; without it ids derive from file name and row number.",
    )
    limit: int | None = Field(None, ge=1, description="Use only the first N input rows.")


class OutputConfig(_Section):
    path: str = Field(description="Output folder: shards, manifest and stats.json live here.")
    # 10k rows of ~300-token rephrasings is ~10 MB of Parquet: big enough for readers, small
    # enough that a killed run loses little work.
    rows_per_shard: int = Field(10_000, ge=1, description="About this many output rows per shard.")


# Marks on EngineConfig fields (json_schema_extra): VLLM = passed to vLLM's engine under the
# field's own name; RUNTIME = how fast or where, not what: left out of the fingerprint.
VLLM = {"vllm": True}
RUNTIME = {"decisive": False}


class EngineConfig(_Section):
    """The engine. A vLLM engine argument is one field here marked `VLLM` (plus its README row):
    it reaches vLLM under the same name, with no other edit (`vllm_args`)."""

    model: str = Field(
        EMBEDDED_MODEL,
        description="A local HF model folder, a hub id, or the embedded default.",
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
    speculative_config: dict[str, Any] | None = Field(
        None,
        description="Passed to vLLM as speculative_config (e.g. ngram or a draft model).",
        json_schema_extra=VLLM,
    )
    extra_args: dict[str, Any] = Field(
        default_factory=dict, description="Any other vLLM engine argument, passed through as is."
    )

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

    def runtime_only(self) -> list[str]:
        """Fields that change how fast or where, not what: not in the fingerprint."""
        return [
            name
            for name, info in type(self).model_fields.items()
            if (info.json_schema_extra or {}).get("decisive") is False
        ]


class SamplingConfig(_Section):
    temperature: float = Field(0.7, ge=0)
    top_p: float = Field(0.9, gt=0, le=1)
    max_tokens: int = Field(512, ge=1, description="Output tokens per request at most.")
    seed: int = Field(0, description="Each request's seed derives from this and its row id.")
    ignore_eos: bool = Field(False, description="Always generate max_tokens (for benchmarks).")


class ResourcesConfig(_Section):
    replicas: int = Field(1, ge=1, description="Generator actors, one vLLM engine each.")
    gpus_per_replica: int | None = Field(
        None,
        ge=0,
        description="GPUs per replica (tensor-parallel size); None: 1 if the cluster has GPUs, else 0.",
    )
    cpus_per_replica: float = Field(1.0, gt=0, description="Ray CPUs reserved per replica.")


class SchedulerConfig(_Section):
    # Small batches keep results streaming back; many in flight keep the engine's batch full.
    batch_size: int = Field(
        8, ge=1, description="Slices (or, diversity-filtered, requests) per actor call, at most."
    )
    max_in_flight_per_replica: int = Field(
        256, ge=1, description="Requests outstanding per replica; more keeps a fast GPU busier."
    )
    min_slice_rows: int = Field(
        32,
        ge=1,
        description="Smallest slice a unit is cut into at the end of a stage (for load balance).",
    )
    max_attempts: int = Field(
        3, ge=1, description="Tries per request when its replica dies before answering."
    )
    max_replica_restarts: int = Field(
        3, ge=0, description="Dead replicas replaced before the job fails with the reason."
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
    address: str | None = Field(
        None,
        description="Existing cluster ('auto', 'ray://...', host:port); None starts a local one.",
    )
    num_cpus: int | None = Field(None, ge=1, description="CPUs of a local Ray; None: all.")


# the sections that belong to one method each; a section is named after its method
METHOD_SECTIONS = frozenset(
    {"rephrase", "generate", "self_improve", "self_instruct", "evol_instruct"}
)


class JobConfig(_Section):
    method: Literal["rephrase", "generate", "self_improve", "self_instruct", "evol_instruct"]
    input: InputConfig | None = None
    output: OutputConfig
    engine: EngineConfig = Field(default_factory=EngineConfig)
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)
    resources: ResourcesConfig = Field(default_factory=ResourcesConfig)
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)
    ray: RayConfig = Field(default_factory=RayConfig)
    rephrase: RephraseConfig = Field(default_factory=RephraseConfig)
    generate: GenerateConfig = Field(default_factory=GenerateConfig)
    self_improve: SelfImproveConfig = Field(default_factory=SelfImproveConfig)
    self_instruct: SelfInstructConfig = Field(default_factory=SelfInstructConfig)
    evol_instruct: EvolConfig = Field(default_factory=EvolConfig)
    filters: FiltersConfig = Field(default_factory=FiltersConfig)

    @model_validator(mode="before")
    @classmethod
    def _renamed_sections(cls, data: Any) -> Any:
        """`evol` is the old name of the `evol_instruct` section: accepted, with a warning."""
        if isinstance(data, dict) and "evol" in data:
            if "evol_instruct" in data:
                raise ValueError("evol: renamed evol_instruct; give only evol_instruct")
            warnings.warn(
                "config key evol: renamed evol_instruct (evol is accepted for now)",
                FutureWarning,
                stacklevel=2,
            )
            data = {**data, "evol_instruct": data["evol"]}
            del data["evol"]
        return data

    @property
    def evol(self) -> EvolConfig:
        """The `evol_instruct` section, by its old name."""
        return self.evol_instruct

    @model_validator(mode="after")
    def _method_inputs(self) -> JobConfig:
        if self.method == "self_instruct":
            if not self.self_instruct.seed_path:
                raise ValueError("self_instruct.seed_path: required for method self_instruct")
        elif self.input is None:
            raise ValueError(f"input: required for method {self.method}")
        foreign = sorted((self.model_fields_set & METHOD_SECTIONS) - {self.method})
        if foreign:
            raise ValueError(
                f"{foreign[0]}: a section of method {foreign[0]}, but this job's method is "
                f"{self.method} (it would be ignored); remove it or set method: {foreign[0]}"
            )
        unknown = set(self.evol_instruct.operations) - set(EVOL_OPERATIONS)
        if unknown:
            raise ValueError(
                f"evol_instruct.operations: unknown operation {sorted(unknown)[0]!r} "
                f"(expected some of {EVOL_OPERATIONS})"
            )
        return self

    def fingerprint(self) -> str:
        """Hash of everything that decides the output rows; where and how fast they run is left out.

        A rerun with the same fingerprint resumes; a different one is refused without --overwrite.
        """
        decisive = self.model_dump(include={"method", "input", "engine", "sampling"})
        # evol_instruct's section keeps its old key, so earlier outputs still resume
        key = {"evol_instruct": "evol"}.get(self.method, self.method)
        decisive[key] = getattr(self, self.method).model_dump()
        decisive["output"] = {"rows_per_shard": self.output.rows_per_shard}
        if self.filters.diversity.enabled:
            decisive["filters"] = {"diversity": self.filters.diversity.decisive()}
        for key in self.engine.runtime_only():
            decisive["engine"].pop(key)
        blob = json.dumps(decisive, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


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


def _format_validation_error(err: ValidationError) -> str:
    first = err.errors()[0]
    key = ".".join(str(p) for p in first["loc"]) or "config"
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


__all__ = [
    "DEFAULT_STYLES",
    "EvolConfig",
    "GenerateConfig",
    "JobConfig",
    "RephraseConfig",
    "SelfImproveConfig",
    "SelfInstructConfig",
    "load_config",
    "validate_config",
]
