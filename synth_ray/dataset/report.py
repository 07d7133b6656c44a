"""The run report: OUTPUT/report/index.html, one self-contained page (plots inline, nothing
fetched from a network), and each plot as a PNG beside it.

    synth-ray report out/quickstart
    python -c "from synth_ray.dataset.report import write_report; print(write_report('out/q'))"

Written by `synth-ray run` when a job completes; `synth-ray report` writes it for any output,
also while the job runs or after it was killed. What each figure is made of:
- throughput over time (output tokens/s the engines generated, rows/s committed) and replicas
  starting/busy/idle over time: the `_timeline/` samples of every run of every stage;
- the acceptance funnel (rows in, past errors, past each filter, kept) and errors by stage:
  stats.json, exact;
- output/input length histograms (powers of two) and kept rows per style/operation/format...:
  the distributions each unit recorded where its rows were written (stats.py `observe`),
  merged in stats.json, exact, so no row of the output is read again for them (units committed
  by a version that did not record them are missing, and the caption says how many rows the
  figure holds); sample rows: the first rows of the first committed shard;
- dropped rows (with `output.keep_dropped`): up to DROPPED_PER_FILTER per filter, with their
  completion cut short, from the first DROPPED_SHARDS_READ dropped shards in (stage, unit) order;
- the nearest-neighbour similarity histogram: the diversity filter's, over every row it saw.
"""

from __future__ import annotations

import base64
import html
import io
import json
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
from matplotlib.figure import Figure

from synth_ray.errors import UserError
from synth_ray.io.output_store import (
    DROPPED_DIR,
    PROGRESS_FILE,
    REPORT_DIR,
    STATS_FILE,
    TIMELINE_DIR,
    OutputStore,
)
from synth_ray.stats import CATEGORY_COLUMNS, LENGTH_COLUMNS, MANY

RATE_WINDOW_S = 15.0
SAMPLE_ROWS = 5
DROPPED_PER_FILTER = 3
DROPPED_SHARDS_READ = 16  # a filter rare in a big output is not hunted through every shard
COMPLETION_SHOWN = 300  # characters of a dropped row's completion
COLOURS = {"busy": "#2a9d8f", "idle": "#e9c46a", "starting": "#adb5bd"}


def write_report(output: str | Path | OutputStore) -> str:
    """Write report/index.html and its PNGs into the output; returns the page's location."""
    store = output if isinstance(output, OutputStore) else OutputStore(output)
    job = store.read_job()
    if job is None:
        raise UserError(f"output folder {store.location.uri}: no synth-ray job here")
    stats = store.read_json(STATS_FILE) or {}
    sample = _sample_rows(store)
    dropped = _dropped_rows(store)
    figures: list[tuple[str, str, bytes]] = []  # (name, caption, png)
    samples = _timeline(store)
    if samples:
        figures.append(("throughput", *_throughput(samples)))
        figures.append(("replicas", *_replicas(samples)))
    if stats:
        figures.append(("funnel", *_funnel(stats)))
    kept = int(stats.get("rows_out", 0))
    for column in LENGTH_COLUMNS:
        bins = (stats.get("length_bins") or {}).get(column)
        if bins and sum(bins):
            figures.append((column, *_lengths(column, bins, kept)))
    if stats.get("nn_similarity_histogram"):
        figures.append(("similarity", *_similarity(stats)))
    for column in CATEGORY_COLUMNS:
        found = (stats.get("categories") or {}).get(column) or {}
        counts = sorted(found.items(), key=lambda item: (-item[1], item[0]))
        if 1 < len(counts) and MANY not in found:
            figures.append((f"by_{column}", *_categories(column, counts, kept)))
    for name, _, png in figures:
        store.location.write_bytes_atomic(f"{REPORT_DIR}/{name}.png", png)
    page = _page(store, job, stats, figures, sample, dropped)
    store.location.write_bytes_atomic(f"{REPORT_DIR}/index.html", page.encode())
    return f"{store.location.uri.rstrip('/')}/{REPORT_DIR}/index.html"


# -- what the figures are made of ------------------------------------------------------------


def _timeline(store: OutputStore) -> list[list[dict[str, Any]]]:
    """Every run of every stage: its samples, in time order."""
    runs = []
    for name in store.location.listdir(TIMELINE_DIR):
        raw = store.location.read_bytes(f"{TIMELINE_DIR}/{name}")
        samples = []
        for line in raw.decode(errors="replace").splitlines() if raw else []:
            try:
                sample = json.loads(line)
            except ValueError:
                continue  # written whole and renamed, so only a damaged disk gets here
            if isinstance(sample, dict) and "t" in sample:
                samples.append(sample)
        if samples:
            runs.append(samples)
    return sorted(runs, key=lambda s: s[0]["t"])


def _sample_rows(store: OutputStore) -> pa.Table | None:
    """SAMPLE_ROWS whole rows of the first committed shard with rows (one shard read)."""
    records = sorted(store.committed().values(), key=lambda r: (r.stage, r.unit_index))
    first = next((r.data_shards()[0] for r in records if r.rows_out and r.data_shards()), None)
    return None if first is None else store.location.read_table(first).slice(0, SAMPLE_ROWS)


def _dropped_rows(store: OutputStore) -> list[dict[str, Any]] | None:
    """Up to DROPPED_PER_FILTER kept dropped rows per filter, in (stage, unit) order, from at
    most DROPPED_SHARDS_READ shards; None when the output kept none (keep_dropped was off)."""
    records = sorted(store.committed().values(), key=lambda r: (r.stage, r.unit_index))
    shards = [s for r in records for s in r.dropped_shards][:DROPPED_SHARDS_READ]
    if not shards:
        return None
    shown: list[dict[str, Any]] = []
    per_filter: dict[str, int] = {}
    columns = ["filter", "stage", "id", "completion"]
    for shard in shards:
        for row in store.location.read_table(shard, columns=columns).to_pylist():
            if per_filter.get(row["filter"], 0) < DROPPED_PER_FILTER:
                per_filter[row["filter"]] = per_filter.get(row["filter"], 0) + 1
                shown.append(row)
    return sorted(shown, key=lambda row: row["filter"])


def _held(counted: int, kept: int) -> str:
    """What a distribution's figure holds, when it is not every kept row."""
    if counted >= kept:
        return f"{counted:,} rows"
    return f"{counted:,} of the {kept:,} kept rows (units committed by an older version: none)"


# -- figures -----------------------------------------------------------------------------------


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


def _figure() -> tuple[Figure, Any]:
    fig = Figure(figsize=(8, 3.4))
    ax = fig.add_subplot()
    ax.grid(alpha=0.3)
    return fig, ax


def _rates(
    samples: list[dict[str, Any]], key: str, window_s: float = RATE_WINDOW_S
) -> tuple[list[float], list[float]]:
    """Per-second rate of a cumulative figure, over the last `window_s` at each sample:
    commits and probe answers arrive in steps, so a rate between two neighbours zigzags."""
    ts, rates = [], []
    j = 0
    for b in samples[1:]:
        while j + 1 < len(samples) and b["t"] - samples[j + 1]["t"] >= window_s:
            j += 1
        a = samples[j]
        dt = b["t"] - a["t"]
        if dt > 0:
            ts.append(b["t"])
            rates.append(max(0.0, (b.get(key, 0) - a.get(key, 0)) / dt))
    return ts, rates


def _run_offsets(runs: list[list[dict[str, Any]]]) -> list[float]:
    """Where each run starts on a time axis of running time: runs joined end to end, so a
    resume a day later leaves no day-long gap."""
    offsets, at = [], 0.0
    for samples in runs:
        offsets.append(at - samples[0]["t"])
        at += samples[-1]["t"] - samples[0]["t"]
    return offsets


def _mark_runs(ax: Any, runs: list[list[dict[str, Any]]], offsets: list[float]) -> None:
    for samples, offset in list(zip(runs, offsets, strict=True))[1:]:
        ax.axvline(samples[0]["t"] + offset, color="#888", linestyle=":", linewidth=1)


def _throughput(runs: list[list[dict[str, Any]]]) -> tuple[str, bytes]:
    fig, ax = _figure()
    rows_ax = ax.twinx()
    offsets = _run_offsets(runs)
    labelled: set[str] = set()

    def label(name: str) -> str | None:
        first = name not in labelled
        labelled.add(name)
        return name if first else None

    for samples, offset in zip(runs, offsets, strict=True):
        ts, generated = _rates(samples, "engine_tokens")
        if any(generated):
            ax.plot([t + offset for t in ts], generated, color="#264653",
                    label=label("output tokens/s (engines)"))  # fmt: skip
        ts, committed = _rates(samples, "output_tokens")
        ax.plot([t + offset for t in ts], committed, color="#2a9d8f", linestyle="--",
                label=label("output tokens/s (committed)"))  # fmt: skip
        ts, rows = _rates(samples, "rows_in")
        rows_ax.plot([t + offset for t in ts], rows, color="#e76f51", alpha=0.7,
                     label=label("rows/s (committed)"))  # fmt: skip
    _mark_runs(ax, runs, offsets)
    ax.set_xlabel("seconds of running (dotted: the next run or stage)")
    ax.set_ylabel("output tokens/s")
    rows_ax.set_ylabel("rows/s")
    lines = ax.get_legend_handles_labels()
    more = rows_ax.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], loc="upper left", fontsize=8)
    ax.set_title("Throughput over time")
    caption = (
        f"{len(runs)} run(s) of a stage, sampled every few seconds; rates over the last "
        f"{RATE_WINDOW_S:.0f} s. Engines' tokens come from the replicas' progress probes; "
        "committed figures grow when a unit commits."
    )
    return caption, _png(fig)


def _replicas(runs: list[list[dict[str, Any]]]) -> tuple[str, bytes]:
    fig, ax = _figure()
    offsets = _run_offsets(runs)
    for i, (samples, offset) in enumerate(zip(runs, offsets, strict=True)):
        ts = [s["t"] + offset for s in samples]
        layers = [[s.get(f"replicas_{k}", 0) for s in samples] for k in COLOURS]
        ax.stackplot(ts, *layers, colors=list(COLOURS.values()), step="post",
                     labels=list(COLOURS) if i == 0 else ())  # fmt: skip
    _mark_runs(ax, runs, offsets)
    ax.set_xlabel("seconds of running (dotted: the next run or stage)")
    ax.set_ylabel("replicas")
    ax.legend(loc="upper right", fontsize=8)
    ax.set_title("Replicas: busy (holding requests), idle, starting")
    return "Idle replicas while work is left mean the feed cannot keep up.", _png(fig)


def _funnel(stats: dict[str, Any]) -> tuple[str, bytes]:
    steps = [("rows in", stats.get("rows_in", 0))]
    left = stats.get("rows_in", 0) - stats.get("rows_errored", 0)
    steps.append(("without errors", left))
    for reason, n in sorted(stats.get("dropped_by_filter", {}).items(), key=lambda x: -x[1]):
        left -= n
        steps.append((f"past {reason}", left))
    steps.append(("kept", stats.get("rows_out", 0)))
    fig, ax = _figure()
    names = [s[0] for s in steps][::-1]
    values = [s[1] for s in steps][::-1]
    bars = ax.barh(names, values, color="#2a9d8f")
    ax.bar_label(bars, labels=[f"{v:,}" for v in values], fontsize=8, padding=3)
    ax.set_xlabel("candidate rows")
    ax.set_title("Acceptance funnel")
    errors = stats.get("errored_by_stage", {})
    caption = "Errors by stage: " + (
        ", ".join(f"{k} {v:,}" for k, v in errors.items()) if errors else "none"
    )
    return caption, _png(fig)


def _lengths(column: str, bins: list[int], kept: int) -> tuple[str, bytes]:
    """Rows per power-of-two bin: bin 0 holds 0 tokens, bin k [2^(k-1), 2^k)."""
    last = max(i for i, count in enumerate(bins) if count)
    shown = bins[: last + 1]
    fig, ax = _figure()
    labels = ["0"] + [f"{2 ** (k - 1)}-{2**k - 1}" for k in range(1, len(shown))]
    ax.bar(range(len(shown)), shown, color="#264653")
    ax.set_xticks(range(len(shown)), labels, rotation=45, ha="right", fontsize=8)
    what = "output" if column == "n_output_tokens" else "input"
    ax.set_xlabel(f"{what} tokens per row")
    ax.set_ylabel("rows")
    ax.set_title(f"{what.capitalize()} lengths")
    return _held(sum(bins), kept), _png(fig)


def _similarity(stats: dict[str, Any]) -> tuple[str, bytes]:
    histogram = stats["nn_similarity_histogram"]
    width = 1.0 / len(histogram)
    fig, ax = _figure()
    ax.bar([i * width for i in range(len(histogram))], histogram, width=width, align="edge",
           color="#e76f51")  # fmt: skip
    ax.set_xlabel("cosine similarity to the nearest row already kept")
    ax.set_ylabel("rows")
    ax.set_title("Diversity filter: nearest-neighbour similarity")
    return "Every row the filter saw, kept and dropped.", _png(fig)


def _categories(column: str, counts: list[tuple[str, int]], kept: int) -> tuple[str, bytes]:
    fig, ax = _figure()
    names = [c[0] for c in counts][::-1]
    bars = ax.barh(names, [c[1] for c in counts][::-1], color="#264653")
    ax.bar_label(bars, fontsize=8, padding=3)
    ax.set_xlabel("kept rows")
    ax.set_title(f"Rows per {column}")
    held = _held(sum(count for _, count in counts), kept)
    return f"Kept rows by {column}: {held}.", _png(fig)


# -- the page ----------------------------------------------------------------------------------


def _page(
    store: OutputStore,
    job: dict[str, Any],
    stats: dict[str, Any],
    figures: list[tuple[str, str, bytes]],
    sample: pa.Table | None,
    dropped: list[dict[str, Any]] | None = None,
) -> str:
    config = job["config"]
    e = html.escape
    live = store.read_json(PROGRESS_FILE) or {}
    facts = [
        ("method", config["method"]),
        ("model", config["engine"]["model"]),
        ("state", live.get("state", "unknown")),
        ("rows kept / in", f"{stats.get('rows_out', 0):,} / {stats.get('rows_in', 0):,}"),
        ("dropped / errored", f"{stats.get('rows_dropped', 0):,} / {stats.get('rows_errored', 0):,}"),
        ("tokens in / out", f"{stats.get('input_tokens', 0):,} / {stats.get('output_tokens', 0):,}"),
        ("units", f"{stats.get('units_committed', 0)} of {stats.get('units_total', '?')}"),
        ("runs; generation time", f"{stats.get('runs', 0)}; {stats.get('generation_wall_s', 0)} s"),
        ("stalled replicas; requests re-sent",
         f"{stats.get('replicas_stalled', 0)}; {stats.get('requests_resent', 0)}"),
    ]  # fmt: skip
    if stats.get("remote"):
        remote = stats["remote"]
        facts.append(("remote engines: cost; retried",
                      f"${remote['cost_usd']:.4f}; {remote['retries']}"))  # fmt: skip
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>synth-ray report: {e(store.location.uri)}</title>",
        "<style>body{font-family:system-ui,sans-serif;max-width:980px;margin:2em auto;"
        "color:#222}table{border-collapse:collapse;font-size:14px}td,th{border:1px solid #ccc;"
        "padding:4px 8px;vertical-align:top;text-align:left}figure{margin:1.5em 0}"
        "figcaption{color:#555;font-size:14px}img{max-width:100%}"
        ".row{margin:1em 0;width:100%}.row th{width:11em}"
        ".row td{white-space:pre-wrap;word-break:break-word}</style>",
        "</head><body>",
        f"<h1>synth-ray report</h1><p>{e(store.location.uri)} · written "
        f"{e(time.strftime('%Y-%m-%d %H:%M:%S'))}</p>",
        "<table>",
        *(f"<tr><th>{e(k)}</th><td>{e(str(v))}</td></tr>" for k, v in facts),
        "</table>",
    ]
    for name, caption, png in figures:
        data = base64.b64encode(png).decode()
        parts.append(
            f"<figure id='{e(name)}'><img alt='{e(name)}' src='data:image/png;base64,{data}'>"
            f"<figcaption>{e(caption)}</figcaption></figure>"
        )
    if sample is not None and sample.num_rows:
        parts.append("<h2>Sample rows</h2><p>The first rows of the first committed shard.</p>")
        for row in sample.to_pylist():
            parts += [
                "<table class='row'>",
                *(f"<tr><th>{e(k)}</th><td>{e(_cell(v))}</td></tr>" for k, v in row.items()),
                "</table>",
            ]
    if dropped:
        parts += [
            f"<h2 id='dropped'>Dropped rows</h2><p>Up to {DROPPED_PER_FILTER} per filter, from "
            f'{DROPPED_DIR}/ (<code>load_dataset(OUTPUT, "dropped")</code> reads them all); '
            f"completions cut at {COMPLETION_SHOWN} characters.</p>",
            "<table class='row'><tr><th>filter</th><th>stage</th><th>id</th>"
            "<th>completion</th></tr>",
            *(
                f"<tr><td>{e(row['filter'])}</td><td>{e(row['stage'])}</td>"
                f"<td>{e(row['id'])}</td><td>{e(_cut(row['completion']))}</td></tr>"
                for row in dropped
            ),
            "</table>",
        ]
    elif stats.get("rows_dropped"):
        parts.append(
            "<p id='dropped'>Dropped rows were not kept: <code>--set output.keep_dropped=true"
            "</code> keeps them, with their completions, in the units a run commits from then "
            "on (with <code>--overwrite</code>, every unit).</p>"
        )
    parts.append("</body></html>")
    return "\n".join(parts)


def _cut(completion: str | None) -> str:
    """A dropped row's completion as shown: cut at COMPLETION_SHOWN characters."""
    if completion is None:
        return "(no completion: dropped before any request)"
    if len(completion) <= COMPLETION_SHOWN:
        return completion
    return completion[:COMPLETION_SHOWN] + " ..."


def _cell(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= 400 else text[:400] + " ..."
