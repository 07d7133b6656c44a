"""One benchmark's table, its results lines (JSONL + Markdown) and its plot (PNG).

    python -c "from synth_ray.bench.report import Row; help(Row)"

Figures per system: output tokens/s steady state (engine ready -> last result; the engine's
load excluded) and whole process (spawn -> exit), requests/s (steady), each as a ratio to raw
vLLM measured in the same run, the engine's start (spawn -> engine loaded), time to first
result, wall time. A system whose engine load is not observable (Ray Data LLM) has no steady
figures and no engine start. With repeats (`--repeats`), each figure is the median of the
system's runs, and `runs` says how many there were. Under a constraint, each system's figure
is also a ratio to its own free decoding of the same sweep value (`vs free`: steady tokens/s,
else whole-process), and `conforming` counts the texts in the constraint's language. Figures are comparable only within one
table: same machine, same workload, one run.
"""

from __future__ import annotations

import json
import statistics
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from synth_ray.bench.spec import SystemResult


@dataclass
class Row:
    sweep: str  # "" or "KEY=value"
    system: str
    result: SystemResult | None
    skipped: str = ""  # why the system did not run
    constraint: str = "none"  # what the requests decoded under (bench/constraints.py)
    more: list[SystemResult] = field(default_factory=list)  # the repeats after `result`
    note: str = ""  # about the row as a whole (runs that did not finish)

    @property
    def runs(self) -> list[SystemResult]:
        return [self.result, *self.more] if self.result is not None else []

    @property
    def setting(self) -> str:
        """The sweep value and the constraint: rows compared with each other share it."""
        if self.constraint == "none":
            return self.sweep
        return ", ".join(x for x in (self.sweep, f"constraint={self.constraint}") if x)

    def speed(self) -> float | None:
        """Steady tokens/s where observable, else whole-process: what `vs free` compares."""
        steady = self.steady_tok_s()
        return steady if steady is not None else self.whole_tok_s()

    def steady_tok_s(self) -> float | None:
        return self.median(lambda r: r.output_tokens / r.generation_s if _steady(r) else None)

    def whole_tok_s(self) -> float | None:
        return self.median(lambda r: r.output_tokens / r.wall_s if r.wall_s > 0 else None)

    def steady_req_s(self) -> float | None:
        return self.median(lambda r: r.requests / r.generation_s if _steady(r) else None)

    def median(self, figure: Callable[[SystemResult], float | None]) -> float | None:
        """The median of `figure` over the runs where it is observable (None where none)."""
        values = [v for v in map(figure, self.runs) if v is not None]
        return statistics.median(values) if values else None


def _steady(r: SystemResult) -> bool:
    return r.engine_ready_s is not None and r.generation_s > 0


def _rounded(value: float | None, digits: int) -> float | None:
    return round(value, digits) if value is not None else None


def _ratio(value: float | None, base: float | None) -> float | None:
    return round(value / base, 3) if value is not None and base else None


def summarize(rows: list[Row]) -> list[dict[str, Any]]:
    """One record per row, with ratios to raw vLLM of the same setting (sweep value and
    constraint) and, under a constraint, to the same system's free decoding."""
    base = {r.setting: r for r in rows if r.system == "vllm" and r.result}
    free = {(r.sweep, r.system): r for r in rows if r.constraint == "none" and r.result}
    records = []
    for row in rows:
        ref = base.get(row.setting)
        rec: dict[str, Any] = {
            "sweep": row.setting,
            "system": row.system,
            "constraint": row.constraint,
        }
        if row.result is None:
            rec["skipped"] = row.skipped
            records.append(rec)
            continue
        steady, whole = row.steady_tok_s(), row.whole_tok_s()
        rec.update(
            steady_tok_s=round(steady, 1) if steady is not None else None,
            whole_tok_s=round(whole, 1) if whole is not None else None,
            steady_req_s=round(row.steady_req_s() or 0, 2) if steady is not None else None,
            steady_ratio=_ratio(steady, ref.steady_tok_s() if ref else None),
            whole_ratio=_ratio(whole, ref.whole_tok_s() if ref else None),
            engine_start_s=_rounded(row.median(lambda r: r.engine_ready_s), 2),
            first_result_s=_rounded(row.median(lambda r: r.first_result_s), 2),
            wall_s=_rounded(row.median(lambda r: r.wall_s), 2),
            runs=len(row.runs),
            output_tokens=row.result.output_tokens,
            requests=row.result.requests,
            dtype=row.result.dtype,
            notes="; ".join(
                dict.fromkeys(n for n in (row.note, *(r.notes for r in row.runs)) if n)
            ),
        )
        if row.constraint != "none":
            unconstrained = free.get((row.sweep, row.system))
            rec["vs_free"] = _ratio(row.speed(), unconstrained.speed() if unconstrained else None)
            conforming = sum(r.conforming or 0 for r in row.runs)
            rec["conforming"] = f"{conforming}/{sum(r.requests for r in row.runs)}"
        records.append(rec)
    return records


COLUMNS = [
    ("sweep", "sweep"),
    ("system", "system"),
    ("steady_tok_s", "steady out tok/s"),
    ("whole_tok_s", "whole-process out tok/s"),
    ("steady_req_s", "steady req/s"),
    ("steady_ratio", "steady / vLLM"),
    ("whole_ratio", "whole / vLLM"),
    ("engine_start_s", "engine start s"),
    ("first_result_s", "first result s"),
    ("wall_s", "wall s"),
    ("output_tokens", "output tokens"),
    ("runs", "runs"),
    ("vs_free", "vs free"),
    ("conforming", "conforming"),
]
_CONSTRAINED_ONLY = ("vs_free", "conforming")


def _cell(value: Any) -> str:
    return "-" if value is None or value == "" else str(value)


def table_lines(records: list[dict[str, Any]]) -> list[list[str]]:
    show_sweep = any(r["sweep"] for r in records)
    constrained = any(r.get("constraint", "none") != "none" for r in records)
    repeated = any(r.get("runs", 1) > 1 for r in records)
    cols = [
        c
        for c in COLUMNS
        if (show_sweep or c[0] != "sweep")
        and (constrained or c[0] not in _CONSTRAINED_ONLY)
        and (repeated or c[0] != "runs")
    ]
    lines = [[title for _, title in cols]]
    for rec in records:
        if "skipped" in rec:
            line = [_cell(rec.get(key)) for key, _ in cols[: 2 if show_sweep else 1]]
            line.append(f"skipped: {rec['skipped']}")
            line += [""] * (len(cols) - len(line))
        else:
            line = [_cell(rec.get(key)) for key, _ in cols]
        lines.append(line)
    return lines


def markdown(title: str, context: str, records: list[dict[str, Any]], plot: Path | None) -> str:
    lines = table_lines(records)
    out = [f"\n## {title}\n", context + "\n"]
    out.append("| " + " | ".join(lines[0]) + " |")
    out.append("|" + "---|" * len(lines[0]))
    out += ["| " + " | ".join(line) + " |" for line in lines[1:]]
    if plot is not None:
        out.append(f"\nPlot: {plot.name}")
    return "\n".join(out) + "\n"


def append_results(
    results_dir: Path,
    title: str,
    context: str,
    header: dict[str, Any],
    records: list[dict],
    plot_path: Path | None,
) -> Path:
    """Append to results.md and results.jsonl in `results_dir`; returns the Markdown file."""
    results_dir.mkdir(parents=True, exist_ok=True)
    with open(results_dir / "results.jsonl", "a") as fh:
        for rec in records:
            fh.write(json.dumps({**header, **rec}) + "\n")
    md = results_dir / "results.md"
    with open(md, "a") as fh:
        fh.write(markdown(title, context, records, plot_path))
    return md


def plot(records: list[dict[str, Any]], path: Path, title: str) -> Path:
    """Bars per system (steady and whole-process tokens/s); with a sweep, a line per system
    across the sweep values."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ran = [r for r in records if "skipped" not in r]
    sweeps = list(dict.fromkeys(r["sweep"] for r in ran))
    systems = list(dict.fromkeys(r["system"] for r in ran))
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    if len(sweeps) > 1:
        positions = range(len(sweeps))  # values may be long mappings: wrapped tick labels
        for system in systems:
            ys = [
                next(
                    (r["whole_tok_s"] for r in ran if r["system"] == system and r["sweep"] == s),
                    None,
                )
                for s in sweeps
            ]
            (whole_line,) = ax.plot(positions, ys, marker="o", label=f"{system} (whole process)")
            st = [
                next(
                    (r["steady_tok_s"] for r in ran if r["system"] == system and r["sweep"] == s),
                    None,
                )
                for s in sweeps
            ]
            if any(v is not None for v in st):
                ax.plot(
                    positions,
                    st,
                    marker="s",
                    linestyle="--",
                    color=whole_line.get_color(),  # one colour per system
                    label=f"{system} (steady)",
                )
        ax.set_xticks(list(positions), [textwrap.fill(s, 32) for s in sweeps], fontsize=7)
        ax.set_xlabel("setting")
    else:
        width = 0.38
        xs = range(len(systems))
        steady = [
            next(r for r in ran if r["system"] == s).get("steady_tok_s") or 0 for s in systems
        ]
        whole = [next(r for r in ran if r["system"] == s).get("whole_tok_s") or 0 for s in systems]
        ax.bar([x - width / 2 for x in xs], steady, width, label="steady state")
        ax.bar([x + width / 2 for x in xs], whole, width, label="whole process")
        ax.set_xticks(list(xs), systems)
    ax.set_ylabel("output tokens/s")
    ax.set_title(textwrap.fill(title, 100), fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
