"""A method from outside the package: found through the `synth_ray.methods` entry-point group,
its own config section validated, run by the unchanged runtime (issue 12's extension test).

    pytest tests/test_method_plugin.py

The plug-in is a real installed distribution (a `.dist-info` with `entry_points.txt` on the
path) in a fresh interpreter, so discovery is importlib.metadata's, not a test shortcut. Its run
goes through `run_job` on the simulated engine; nothing of synth_ray is edited or patched.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from conftest import write_jsonl

TESTS = Path(__file__).resolve().parent

PLUGIN = '''
"""A third-party method: each prompt answered, the answer shouted."""

from typing import Any

import pyarrow as pa
from pydantic import Field

from synth_ray.methods.base import Candidate, Kept, Method, row_id
from synth_ray.methods.registry import MethodSpec, register
from synth_ray.methods.stages import JobContext, run_single_stage
from synth_ray.sections import Section


class ShoutConfig(Section):
    suffix: str = Field("!", min_length=1)


class Shout(Method):
    name = "shout"
    schema = pa.schema([("id", pa.string()), ("source_id", pa.string()), ("text", pa.string())])

    def __init__(self, config: ShoutConfig) -> None:
        self.config = config

    def estimate_rows(self, doc):
        return 1

    def expand(self, doc):
        rid = row_id(doc.source_id, "shout")
        return [Candidate(rid, doc.source_id, messages=[{"role": "user", "content": doc.text}])]

    def finish(self, candidate, result):
        text = result.text.upper() + self.config.suffix
        return Kept({"id": candidate.row_id, "source_id": candidate.source_id, "text": text})


def run(ctx: JobContext) -> dict[str, Any]:
    return run_single_stage(ctx, Shout(ctx.config.section_as(ShoutConfig)))


register(MethodSpec("shout", run=run, section=ShoutConfig))
'''

DRIVER = """
import json, sys, warnings
sys.path.insert(0, {tests!r})
from fake_backend import FakeBackend
import pyarrow.parquet as pq
from synth_ray.config import load_config, validate_config
from synth_ray.errors import ConfigError
from synth_ray.runtime.job import run_job

config = load_config({config!r})
report = {{"section": type(config.section).__name__, "suffix": config.section.suffix}}
run_job(config, show_progress=False, backend=FakeBackend())
table = pq.read_table({out!r} + "/data")
report["ids"] = sorted(table.column("source_id").to_pylist())
report["texts"] = table.column("text").to_pylist()
for bad in ({{"shout": {{"suffix": ""}}}}, {{"shout": {{"volume": 11}}}}):
    try:
        validate_config({{**{base!r}, **bad}})
    except ConfigError as err:
        report.setdefault("errors", []).append(str(err))
try:
    validate_config({{**{base!r}, "method": "generate"}})
except ConfigError as err:
    report["foreign"] = str(err)
print("REPORT " + json.dumps(report))
"""


def install_plugin(site: Path) -> None:
    """What `pip install` leaves for a plug-in: its module and a dist-info with entry points."""
    (site / "shout_method.py").write_text(PLUGIN)
    info = site / "shout_method-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: shout-method\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[synth_ray.methods]\nshout = shout_method\n")


def test_a_method_installed_as_a_plugin_validates_and_runs_unchanged(tmp_path, embedded_model):
    site = tmp_path / "site"
    site.mkdir()
    install_plugin(site)
    rows = [{"id": f"p{i}", "text": f"Say something about {i}."} for i in range(10)]
    data = write_jsonl(tmp_path / "in.jsonl", rows)
    out = str(tmp_path / "out")
    base = {
        "method": "shout",
        "input": {"path": str(data), "id_column": "id"},
        "output": {"path": out, "rows_per_shard": 4},
        "engine": {"max_model_len": 512},
        "sampling": {"max_tokens": 8},
        "shout": {"suffix": "!!"},
    }
    config = tmp_path / "job.yaml"
    config.write_text(json.dumps(base))  # JSON is YAML
    script = DRIVER.format(tests=str(TESTS), config=str(config), out=out, base=base)
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        env={"PYTHONPATH": str(site), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = [x for x in proc.stdout.splitlines() if x.startswith("REPORT ")]
    assert proc.returncode == 0 and lines, proc.stdout[-2000:] + proc.stderr[-3000:]
    report = json.loads(lines[0].removeprefix("REPORT "))
    assert report["section"] == "ShoutConfig" and report["suffix"] == "!!"
    assert report["ids"] == sorted(r["id"] for r in rows)  # every row once
    assert all(t.endswith("!!") and t[:-2] == t[:-2].upper() for t in report["texts"])
    assert report["errors"] == [
        "config key shout.suffix: String should have at least 1 character, got ''",
        "config key shout.volume: unknown key",
    ]
    assert report["foreign"].startswith(
        "config key shout: a section of method shout, but this job's method is generate"
    )
