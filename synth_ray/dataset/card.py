"""The dataset card: README.md in an output folder, in Hugging Face dataset-card form.

    python -c "from synth_ray.dataset.card import write_card; print(write_card('out/quickstart'))"

Written by `synth-ray run` when a job completes (and by `synth-ray report`). The YAML header
lists the features of the data shards and a `default` config whose data files are
`data/*.parquet`, so `datasets.load_dataset(OUTPUT)` and the Hub read the rows and nothing else
(an `errors` config is added when error shards exist, a `dropped` config when dropped rows were
kept (`output.keep_dropped`), and one config per split a method kept rows into, named like it:
`load_dataset(OUTPUT, "uncertain")`; a split with no row yet has none, since `datasets` refuses
a config with no row, and the body says it holds 0). While a job runs, or after it was
killed, the data folder may hold shards not committed yet: the configs then name the committed
shards one by one, so a reader never sees an uncommitted or duplicated row. The body says how the data was made:
the method and its papers, the model, sampling, the method's settings, filters and their
thresholds, row and token counts, and how to cite. The license is left for the user, who knows
what the model's and the input's licenses allow. Rewriting the card replaces it whole: edits
to README.md belong in a copy.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import yaml

from synth_ray import __version__
from synth_ray.engine.models import model_display_name
from synth_ray.errors import UserError
from synth_ray.io.output_store import (
    CARD_FILE,
    DATA_DIR,
    DROPPED_DIR,
    ERRORS_DIR,
    STATS_FILE,
    OutputStore,
)
from synth_ray.methods.papers import PAPERS, Paper

SYNTH_RAY_CITATION = (
    "@software{synth_ray,\n  title = {synth-ray: synthetic training data on Ray and vLLM},\n"
    f"  year = {{2026}},\n  version = {{{__version__}}}\n}}"
)
_SIZES = [
    (1_000, "n<1K"),
    (10_000, "1K<n<10K"),
    (100_000, "10K<n<100K"),
    (1_000_000, "100K<n<1M"),
    (10_000_000, "1M<n<10M"),
    (100_000_000, "10M<n<100M"),
    (1_000_000_000, "100M<n<1B"),
]
_DTYPES = {
    "string": "string",
    "large_string": "large_string",
    "bool": "bool",
    "int8": "int8",
    "int16": "int16",
    "int32": "int32",
    "int64": "int64",
    "uint8": "uint8",
    "uint16": "uint16",
    "uint32": "uint32",
    "uint64": "uint64",
    "halffloat": "float16",
    "float": "float32",
    "double": "float64",
    "binary": "binary",
    "large_binary": "large_binary",
}


def feature(field: pa.Field) -> dict[str, Any]:
    """One column as a `dataset_info.features` entry (the form `datasets` writes)."""
    return {"name": field.name, **_feature_type(field.type)}


def _feature_type(t: pa.DataType) -> dict[str, Any]:
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        kind = "list" if pa.types.is_list(t) else "large_list"
        inner = _feature_type(t.value_type)
        if "dtype" in inner:
            return {kind: inner["dtype"]}
        return {kind: inner["struct"] if "struct" in inner else inner}
    if pa.types.is_struct(t):
        return {"struct": [feature(t.field(i)) for i in range(t.num_fields)]}
    if pa.types.is_timestamp(t):
        zone = f", tz={t.tz}" if t.tz else ""
        return {"dtype": f"timestamp[{t.unit}{zone}]"}
    if str(t) in _DTYPES:
        return {"dtype": _DTYPES[str(t)]}
    raise UserError(f"dataset card: column type {t} has no Hugging Face feature type")


def size_category(rows: int) -> str:
    return next((label for limit, label in _SIZES if rows < limit), "n>1B")


def card_text(store: OutputStore) -> str:
    """The card of the job in `store`, from `_job.json`, stats.json and the shards' schema."""
    job = store.read_job()
    if job is None:
        raise UserError(f"output folder {store.location.uri}: no synth-ray job here")
    config: dict[str, Any] = job["config"]
    stats: dict[str, Any] = store.read_json(STATS_FILE) or {}
    method = config["method"]
    records = sorted(store.committed().values(), key=lambda r: (r.stage, r.unit_index))
    schema = store.location.read_table(records[0].data_shard).schema if records else None
    data_files = _files(store, DATA_DIR, [s for r in records for s in r.data_shards()])
    error_files = _files(store, ERRORS_DIR, [s for r in records for s in r.error_shards()])
    dropped_files = _files(store, DROPPED_DIR, [s for r in records for s in r.dropped_shards])
    splits = sorted({split for r in records for split in r.split_shards})
    split_rows = {
        split: sum(r.stats.get("rows_by_split", {}).get(split, 0) for r in records)
        for split in splits
    }
    split_files = {  # `datasets` refuses a config with no row: an empty split gets none
        split: _files(store, split, [s for r in records for s in r.split_shards.get(split, [])])
        for split in splits
        if split_rows[split]
    }
    other_configs = [
        {"config_name": name, "data_files": [{"split": "train", "path": files}]}
        for name, files in [
            (ERRORS_DIR, error_files),
            (DROPPED_DIR, dropped_files),
            *split_files.items(),
        ]
        if files
    ]
    rows = int(stats.get("rows_out", 0))
    header = {
        "pretty_name": f"synth-ray {method}: {Path(str(config['output']['path'])).name}",
        "tags": ["synthetic", "synth-ray", method],
        "size_categories": [size_category(rows)],
        "dataset_info": {
            "features": [feature(f) for f in schema] if schema is not None else [],
        },
        "configs": [
            {
                "config_name": "default",
                "data_files": [{"split": "train", "path": data_files}],
                "default": True,
            },
            *other_configs,
        ],
    }
    papers = _papers(config)
    lines = [
        "---",
        yaml.safe_dump(header, sort_keys=False).rstrip(),
        "---",
        "",
        f"# {header['pretty_name']}",
        "",
        f"Synthetic data made by synth-ray {__version__} with the "
        f"`{method}` method"
        + (f", following {'; '.join(p.line() for p in papers)}." if papers else "."),
        "",
        "## How it was made",
        "",
        *_made_with(config, stats),
        "",
        "Settings of the method:",
        "",
        "```yaml",
        yaml.safe_dump({method: config.get(method, {})}, sort_keys=False).rstrip(),
        "sampling: " + json.dumps(config.get("sampling", {})),
        "```",
        "",
        "## Counts",
        "",
        *_counts(stats),
        "",
        "## Columns",
        "",
        "| column | type |",
        "|---|---|",
        *([f"| `{f.name}` | {f.type} |" for f in schema] if schema is not None else []),
        "",
        "## Reading it",
        "",
        "```python",
        "from datasets import load_dataset",
        'rows = load_dataset("path/to/this/folder", split="train")  # data/*.parquet',
        "```",
        "",
        "Only `data/*.parquet` holds rows; `errors/` holds the rows that failed, with the stage "
        "and the reason; `stats.json` the full accounting."
        + (
            " `dropped/` holds the rows the filters dropped (`id`, `source_id`, `stage`, "
            "`filter`, `completion`: the text it was dropped for, null when dropped before any "
            'request; `load_dataset(path, "dropped")`).'
            if dropped_files
            else ""
        )
        + "".join(
            f" The method kept {split_rows[split]:,} rows into `{split}/`"
            + (f' (`load_dataset(path, "{split}")`)' if split_rows[split] else "")
            + ", with the columns above."
            for split in splits
        ),
        "",
        "## License",
        "",
        "Not set by synth-ray. Choose one that the model's license and the input data's "
        "licenses allow, and add `license:` to the header above.",
        "",
        "## Citation",
        "",
        "```bibtex",
        "\n\n".join([*(p.bibtex() for p in papers), SYNTH_RAY_CITATION]),
        "```",
        "",
    ]
    return "\n".join(lines)


def write_card(output: str | Path | OutputStore) -> str:
    """Write README.md into the output folder; returns where it went."""
    store = output if isinstance(output, OutputStore) else OutputStore(output)
    store.location.write_bytes_atomic(CARD_FILE, card_text(store).encode())
    return f"{store.location.uri.rstrip('/')}/{CARD_FILE}"


def _files(store: OutputStore, folder: str, committed: list[str]) -> str | list[str]:
    """`folder/*.parquet` when the folder holds exactly the committed shards (a completed
    stage removed any other); else the committed ones by name, so a reader of a running or
    killed job's output sees only rows that are committed, once."""
    present = {f"{folder}/{n}" for n in store.location.listdir(folder) if n.endswith(".parquet")}
    if not committed:
        return []
    return f"{folder}/*.parquet" if present == set(committed) else sorted(committed)


def _papers(config: dict[str, Any]) -> list[Paper]:
    from synth_ray.config import validate_config
    from synth_ray.methods.registry import method_spec

    spec = method_spec(config["method"])
    job = validate_config(copy.deepcopy(config))  # validation takes the method's section out
    return [PAPERS[k] for k in spec.papers(job) if k in PAPERS]


def _models(config: dict[str, Any]) -> list[str]:
    """The job's model, and any other a method section names (a judge's own engine, a list
    of generators' engines)."""
    models = [f"model: `{model_display_name(config['engine']['model'])}`"]
    section = config.get(config["method"]) or {}
    for key, value in section.items():
        engines = value if isinstance(value, list) else [value]
        names = [
            f"`{model_display_name(e['model'])}`"
            for e in engines
            if isinstance(e, dict) and e.get("model")
        ]
        if names:
            models.append(f"{key} model{'s' if len(names) > 1 else ''}: {', '.join(names)}")
    for name, pool in (config.get("pools") or {}).items():
        models.append(f"pool {name} model: `{model_display_name(pool['engine']['model'])}`")
    return models


def _made_with(config: dict[str, Any], stats: dict[str, Any]) -> list[str]:
    engine = config["engine"]
    dtype = stats.get("engine_dtype", engine.get("dtype", "auto"))
    out = [f"- {m}" for m in _models(config)]
    out.append(f"- engine: vLLM, dtype {dtype}, max_model_len {engine.get('max_model_len')}")
    diversity = (config.get("filters") or {}).get("diversity") or {}
    if diversity.get("enabled"):
        out.append(
            f"- diversity filter: rows whose nearest kept neighbour has cosine similarity >= "
            f"{diversity.get('threshold')} are dropped (embedding model "
            f"`{model_display_name(str(diversity.get('model')))}`)"
        )
    else:
        out.append("- diversity filter: off")
    if config.get("input"):
        out.append(f"- input: `{Path(str(config['input']['path'])).name}`")
    return out


def _counts(stats: dict[str, Any]) -> list[str]:
    if not stats:
        return ["No stats.json: the job has not finished a run."]
    out = [
        f"- rows kept: {stats.get('rows_out', 0):,} of {stats.get('rows_in', 0):,} candidates",
        f"- dropped by filters: {stats.get('rows_dropped', 0):,}"
        + _by(stats.get("dropped_by_filter")),
        f"- errored: {stats.get('rows_errored', 0):,}" + _by(stats.get("errored_by_stage")),
        *(
            [
                f"- of the rows kept, in named splits instead of data/: "
                f"{sum(stats['rows_by_split'].values()):,}{_by(stats['rows_by_split'])}"
            ]
            if stats.get("rows_by_split")
            else []
        ),
        f"- tokens: {stats.get('input_tokens', 0):,} in, {stats.get('output_tokens', 0):,} out",
        *(
            [
                f"- remote engines: estimated cost ${stats['remote']['cost_usd']:.4f} at the "
                f"configured prices, {stats['remote']['retries']} requests retried"
            ]
            if stats.get("remote")
            else []
        ),
        f"- runs: {stats.get('runs', 0)}, generation time {stats.get('generation_wall_s', 0)} s",
    ]
    return out


def _by(reasons: dict[str, int] | None) -> str:
    return f" ({', '.join(f'{k}: {v:,}' for k, v in reasons.items())})" if reasons else ""
