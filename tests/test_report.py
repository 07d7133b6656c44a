"""The run report: its figures from a finished output, the page in a real headless Chromium
(no console errors, every plot decoded, a screenshot that is not blank), and `synth-ray report`.

    pytest tests/test_report.py

Chromium is Debian's package (/usr/bin/chromium), driven by Playwright; `.ci/run` installs it.
Without it the browser test skips here and fails under CI=true.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
from conftest import job_config, make_docs, write_jsonl
from fake_backend import FakeBackend
from typer.testing import CliRunner

from synth_ray.cli import app
from synth_ray.dataset.report import write_report
from synth_ray.io.filesystem import open_location
from synth_ray.runtime.job import run_job
from synth_ray.runtime.progress import JobProgress
from synth_ray.runtime.timeline import Timeline

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _add_a_timeline(out: Path) -> None:
    """Samples of a 5-minute run (a fake engine finishes in milliseconds): two replicas, one
    starting late, tokens and commits growing."""
    from types import SimpleNamespace

    clock = [time.time()]
    progress = JobProgress(units_total=30, units_done=0, enabled=False)
    timeline = Timeline(open_location(out), "units", progress, every_s=5, clock=lambda: clock[0])
    for step in range(60):
        clock[0] += 5
        progress.units_done = step // 2
        progress.stats.rows_in = progress.stats.rows_out = 8 * (step // 2)
        progress.stats.output_tokens = 900 * (step // 2)
        replicas = {
            0: SimpleNamespace(ready=True, in_flight={0: []}, outstanding=32, mark=(400 * step, 1)),
            1: SimpleNamespace(
                ready=step > 10, in_flight={0: []} if 10 < step < 55 else {},
                outstanding=16, mark=(300 * max(0, step - 10), 1),
            ),
        }  # fmt: skip
        timeline.tick(SimpleNamespace(replicas=replicas, failures=[], requests_resent=0))


@pytest.fixture(scope="module")
def reported(tmp_path_factory, embedded_model) -> tuple[Path, str]:
    """A rephrase job with the diversity filter (two styles: a per-style plot, the similarity
    histogram) and a too-long document (an error), then its report."""
    tmp = tmp_path_factory.mktemp("report")
    docs = make_docs(12) + [{"id": "long", "text": " ".join(["word"] * 3000)}]
    path = write_jsonl(tmp / "docs.jsonl", docs)
    config = job_config(
        tmp,
        path,
        engine={"max_model_len": 256, "enforce_eager": True},
        filters={"diversity": {"enabled": True, "threshold": 0.9}},
        rephrase={"styles": ["easy", "qa"], "max_chunk_tokens": 64},
    )
    run_job(config, show_progress=False, backend=FakeBackend())
    out = tmp / "out"
    _add_a_timeline(out)
    return out, write_report(out)


def test_the_report_has_each_figure_as_png_and_inline(reported):
    out, page = reported
    assert page == f"{out}/report/index.html"
    text = Path(page).read_text()
    names = ["throughput", "replicas", "funnel", "n_output_tokens", "n_input_tokens"]
    for name in [*names, "similarity", "by_style"]:
        assert f"<figure id='{name}'>" in text, name
        assert (out / "report" / f"{name}.png").read_bytes()[:8] == PNG_MAGIC
    assert "src='data:image/png;base64," in text and "http" not in text.split("<body>")[1]
    assert "<h2>Sample rows</h2>" in text and "Errors by stage: " in text


def test_the_distributions_are_exact_and_the_report_reads_no_row_for_them(reported, monkeypatch):
    """Each unit records its kept rows' length bins and category counts where its rows are
    written (a diversity-filtered unit: of the rows its decision kept); stats.json merges
    them. They equal what every row of the output says, and the report reads one shard (its
    sample rows), whatever the output's size."""
    import json

    import pyarrow.parquet as pq

    from synth_ray.io.output_store import OutputStore
    from synth_ray.stats import length_bin

    out, _ = reported
    store = OutputStore(out)
    rows = [r for f in store.data_files() for r in pq.read_table(f).to_pylist()]
    stats = json.loads((out / "stats.json").read_text())
    assert stats["rows_dropped"] > 0  # the filter dropped rows: they must not be counted
    bins = [0] * len(stats["length_bins"]["n_output_tokens"])
    for row in rows:
        bins[length_bin(row["n_output_tokens"])] += 1
    assert stats["length_bins"]["n_output_tokens"] == bins and sum(bins) == stats["rows_out"]
    styles: dict[str, int] = {}
    for row in rows:
        styles[row["style"]] = styles.get(row["style"], 0) + 1
    assert stats["categories"]["style"] == styles
    reads: list[str] = []
    cls = type(store.location)
    real = cls.read_table

    def counting(self, name, *args, **kwargs):
        reads.append(name)
        return real(self, name, *args, **kwargs)

    monkeypatch.setattr(cls, "read_table", counting)
    write_report(out)
    assert len([r for r in reads if r.startswith("data/")]) <= 1, reads


def test_a_column_with_many_values_is_not_counted_by_value():
    from synth_ray.stats import MANY, MAX_CATEGORIES, UnitStats

    one, two = UnitStats(), UnitStats()
    for i in range(MAX_CATEGORIES // 2 + 1):
        one.observe({"label": f"a{i}", "n_output_tokens": 0})
        two.observe({"label": f"b{i}", "n_output_tokens": 5})
    assert len(one.categories["label"]) == MAX_CATEGORIES // 2 + 1
    one.merge(UnitStats.from_dict(two.to_dict()))
    assert one.categories["label"] == {MANY: 2 * (MAX_CATEGORIES // 2 + 1)}
    assert one.lengths["n_output_tokens"][0] == one.lengths["n_output_tokens"][3] == 21


def test_a_report_of_an_output_with_nothing_committed(tmp_path):
    from synth_ray.io.output_store import OutputStore

    OutputStore(tmp_path / "out").prepare(
        "f" * 16, {"method": "generate", "engine": {"model": "m"}}, False
    )
    page = Path(write_report(tmp_path / "out")).read_text()
    assert "<figure" not in page and "<th>method</th><td>generate</td>" in page


def test_synth_ray_report_from_the_command_line(reported, tmp_path):
    out, _ = reported
    done = CliRunner().invoke(app, ["report", str(out)])
    assert done.exit_code == 0, done.output
    assert "report/index.html" in done.output and "README.md" in done.output
    missing = CliRunner().invoke(app, ["report", str(tmp_path / "nothing")])
    assert missing.exit_code == 2 and "no synth-ray job here" in missing.output


def test_the_page_renders_in_headless_chromium(reported, tmp_path):
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI") == "true":  # .ci/run installs it under exactly this
            pytest.fail(f"{CHROMIUM} missing: .ci/run installs Debian's chromium")
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    from PIL import Image, ImageStat
    from playwright.sync_api import sync_playwright

    _, page_path = reported
    problems: list[str] = []
    shot = tmp_path / "report.png"
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"],
        )  # fmt: skip
        page = browser.new_page(viewport={"width": 1100, "height": 900})
        page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda err: problems.append(str(err)))
        page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url}"))
        page.goto(Path(page_path).as_uri(), wait_until="load")
        widths = page.eval_on_selector_all("img", "imgs => imgs.map(i => i.naturalWidth)")
        page.screenshot(path=str(shot), full_page=True)
        browser.close()
    assert problems == []
    assert len(widths) == 7 and all(w > 300 for w in widths), widths
    image = Image.open(shot).convert("L")
    assert image.height > 2000  # the whole page: seven figures and the rows
    assert ImageStat.Stat(image).stddev[0] > 20  # not a blank page


def test_a_failing_report_is_a_warning_after_a_completed_job(reported, monkeypatch, capsys):
    """The data is committed when the card and report are written: their failure must not
    turn a done job into exit 1."""
    import synth_ray.dataset.report as report_module
    from synth_ray.cli import _write_card

    out, _ = reported

    def broken(store: object) -> str:
        raise MemoryError("no room for the plots")

    monkeypatch.setattr(report_module, "write_report", broken)
    _write_card(str(out))
    said = capsys.readouterr()
    assert "dataset card:" in said.out and "README.md" in said.out
    assert "warning: no report: no room for the plots" in said.err
