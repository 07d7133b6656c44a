"""Run every recipe in configs/ on its own model (the embedded one) and say what each keeps.

    python scripts/check_recipes.py                    # all recipes, outputs in a temp folder
    python scripts/check_recipes.py judge magpie       # some of them
    python scripts/check_recipes.py --out out/recipes  # keep the outputs to look at

A newcomer's first run is a recipe on the embedded 135M model: each must keep rows there, or
the first run looks broken. Each recipe runs as a user runs it (`synth-ray run`, a fresh
process), only its output folder moved; the table gives rows in, kept, dropped by filter and
errored by stage, and the exit status is 1 when any recipe failed or kept nothing. Takes
about 30 minutes on 2 cores (vLLM on CPU).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def run_recipe(config: Path, out: Path) -> dict:
    """Run one recipe into `out`; its stats.json, plus the wall time and any failure."""
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "synth_ray", "run", str(config), "--no-progress", "--overwrite",
         "--set", f"output.path={out}"],
        cwd=REPO, capture_output=True, text=True,
    )  # fmt: skip
    wall = round(time.monotonic() - started, 1)
    stats_file = out / "stats.json"
    if done.returncode != 0 or not stats_file.exists():
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        return {"wall_s": wall, "failed": f"exit {done.returncode}: {tail[0]}"}
    return {"wall_s": wall, **json.loads(stats_file.read_text())}


def line(name: str, stats: dict) -> str:
    if "failed" in stats:
        return f"| {name} | - | - | - | - | {stats['wall_s']} | FAILED {stats['failed']} |"
    dropped = ", ".join(f"{k} {v}" for k, v in stats.get("dropped_by_filter", {}).items())
    errored = ", ".join(f"{k} {v}" for k, v in stats.get("errored_by_stage", {}).items())
    verdict = "ok" if stats["rows_out"] > 0 else "KEPT NOTHING"
    return (
        f"| {name} | {stats['rows_in']} | {stats['rows_out']} | {dropped or '-'} | "
        f"{errored or '-'} | {stats['wall_s']} | {verdict} |"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipes", nargs="*", help="recipe names (default: every configs/*.yaml)")
    parser.add_argument("--out", type=Path, help="folder for the outputs (default: a temp dir)")
    args = parser.parse_args()
    configs = sorted((REPO / "configs").glob("*.yaml"))
    if args.recipes:
        known = {c.stem: c for c in configs}
        unknown = [r for r in args.recipes if r not in known]
        if unknown:
            parser.error(f"no recipe {unknown[0]!r} in configs/ (have: {', '.join(known)})")
        configs = [known[r] for r in args.recipes]
    out = args.out or Path(tempfile.mkdtemp(prefix="synth-ray-recipes-"))
    print("| recipe | rows in | kept | dropped | errored | wall s | |")
    print("|---|---|---|---|---|---|---|")
    bad = 0
    for config in configs:
        if "kind: openai" in config.read_text() and not args.recipes:
            print(f"| {config.stem} | | | | | | skipped: needs its endpoint (name it to run) |")
            continue
        stats = run_recipe(config, out / config.stem)
        bad += "failed" in stats or stats.get("rows_out", 0) == 0
        print(line(config.stem, stats), flush=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
