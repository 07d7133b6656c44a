"""Methods by name: each method registers itself once, in its own module, with everything the
runtime, `submit` and the CLI need to know about it.

    python -c "import synth_ray.methods as m; print(m.registered())"

Nothing outside a method's own module names it: the runtime asks `method_spec(name)` how to
read the input, what to check before any work, how to run (one stage, or a driver over
methods/stages.py's StageRunnerLike) and which local files `submit` must send.
Adding a method: write its module (its `Method` classes, a `register(MethodSpec(...))` at the
bottom, its config section a `Section` beside it), import it in methods/__init__.py (a
package outside this one registers through the `synth_ray.methods` entry-point group instead),
add its test and recipe, and its rows in docs/methods.md and docs/config.md.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from synth_ray.config import JobConfig, PoolConfig
from synth_ray.errors import ConfigError
from synth_ray.io.inputs import InputSpec, absolute_path
from synth_ray.methods.stages import JobContext
from synth_ray.sections import MethodSection, Section, register_section


def input_text_column(config: JobConfig) -> InputSpec:
    """The input as most methods read it: `input.text_column` is each row's text."""
    i = config.input
    assert i is not None  # config validation: a method that reads input has an input section
    return InputSpec(absolute_path(i.path), i.text_column, i.id_column, i.limit)


def _nothing(config: JobConfig) -> None:
    return None


# where a local file's path sits in the config: (section, key[, index, key ...])
FileKey = tuple[str | int, ...]


def _no_files(config: JobConfig) -> dict[FileKey, str]:
    return {}


def _no_pools(config: JobConfig) -> dict[str, PoolConfig]:
    return {}


def _no_papers(config: JobConfig) -> list[str]:
    return []


def _never(config: JobConfig) -> bool:
    return False


@dataclass(frozen=True)
class MethodSpec:
    """`run(ctx)` runs or resumes the whole method and returns its stats. `input_spec` says
    how to read the input rows (None: the method reads none, e.g. Self-Instruct's seeds);
    `sample_texts` then gives the texts the diversity filter's centroids are trained on.
    `check` fails fast on the method's own files before any work; `files` names the local
    files (config section, key[, list index, key ...]) -> path that `submit` must send with
    the job. A section field marked INLINED (sections.py: a file read into the config, such
    as `generate.output_schema`) is sent as its value instead.
    `pools` gives the pools the method's section names inline (an engine section such as
    preference.judge_engine), beside the job's `pools`. `papers` names the keys of methods/papers.py this config follows (the dataset card cites
    them). `section` is the method's config section, read from the key named like the method
    (`old_section_names` are accepted with a deprecation warning; `fingerprint_key`, where
    set, is the key the section enters the fingerprint under, so old outputs resume).
    `streams` says whether the config's stages run together (the pipeline bench's question)."""

    name: str
    run: Callable[[JobContext], dict[str, Any]]
    section: type[Section]
    input_spec: Callable[[JobConfig], InputSpec] | None = input_text_column
    sample_texts: Callable[[JobConfig], list[str]] | None = None
    check: Callable[[JobConfig], None] = _nothing
    files: Callable[[JobConfig], dict[FileKey, str]] = field(default=_no_files)
    papers: Callable[[JobConfig], list[str]] = field(default=_no_papers)
    pools: Callable[[JobConfig], dict[str, PoolConfig]] = field(default=_no_pools)
    # whether the config's stages run together (`run_together`), on one pool too: what the
    # pipeline bench compares with its stages one after another
    streams: Callable[[JobConfig], bool] = field(default=_never)
    old_section_names: tuple[str, ...] = ()
    fingerprint_key: str | None = None


_REGISTRY: dict[str, MethodSpec] = {}


def register(spec: MethodSpec) -> MethodSpec:
    if spec.name in _REGISTRY and _REGISTRY[spec.name] is not spec:
        raise ValueError(f"method {spec.name} is registered twice")
    _REGISTRY[spec.name] = spec
    register_section(
        spec.name,
        MethodSection(
            spec.section,
            reads_input=spec.input_spec is not None,
            old_names=spec.old_section_names,
            fingerprint_key=spec.fingerprint_key,
        ),
    )
    return spec


def method_spec(name: str) -> MethodSpec:
    """The registered method `name`; an unknown one is a one-line ConfigError."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(
            f"config key method: unknown method {name!r} (registered: {', '.join(registered())})"
        ) from None


def registered() -> list[str]:
    return sorted(_REGISTRY)
