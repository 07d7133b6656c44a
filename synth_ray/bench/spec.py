"""The file a benchmark hands each system's process: one workload, one set of engine settings.

    python -c "from synth_ray.bench.spec import RunSpec; help(RunSpec)"

Every system reads the same spec, so they run the same model, dtype rule, vLLM engine arguments,
sampling and prompts. A system writes back a `SystemResult`; times are seconds from its own
process start.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

PROCESS_START = time.monotonic()


@dataclass(frozen=True)
class RunSpec:
    model: str  # resolved: a local folder or a hub id
    dtype: str  # engine.dtype as configured; each process resolves it for its own machine
    engine_args: dict[str, Any]  # engine.vllm_args(): every vLLM argument the config sets
    cpu_kv_cache_gib: int
    temperature: float
    top_p: float
    seed: int
    ignore_eos: bool
    prompts_path: str  # JSONL of {"prompt": rendered text, "max_tokens": int}
    replicas: int = 1
    ray_num_cpus: int | None = None
    # a CPU engine's OpenMP threads: what synth-ray's replica gets (cluster.replica_cpus)
    cpu_threads: int = 1
    # what every request decodes under: none, json, regex or choice (bench/constraints.py)
    constraint: str = "none"
    extra: dict[str, Any] = field(default_factory=dict)

    def write(self, path: Path) -> Path:
        path.write_text(json.dumps(asdict(self)))
        return path

    @classmethod
    def read(cls, path: str | Path) -> RunSpec:
        return cls(**json.loads(Path(path).read_text()))

    def structured_fields(self) -> dict[str, Any] | None:
        """vLLM `StructuredOutputsParams` fields of the constraint; None for free decoding."""
        from synth_ray.bench.constraints import vllm_fields

        return vllm_fields(self.constraint)

    def requests(self) -> list[tuple[str, int]]:
        with open(self.prompts_path) as fh:
            return [(r["prompt"], int(r["max_tokens"])) for r in map(json.loads, fh)]


@dataclass
class SystemResult:
    output_tokens: int
    requests: int
    engine_ready_s: float | None  # process start -> engine loaded (None: not observable)
    first_result_s: float  # process start -> the first finished request is in the caller's hands
    done_s: float  # process start -> the last request is in the caller's hands
    dtype: str | None = None
    wall_s: float = 0.0  # process start -> exit, measured by the parent
    notes: str = ""
    # requests whose text is in the constraint's language (None: free decoding, not checked)
    conforming: int | None = None

    @property
    def generation_s(self) -> float:
        """Engine ready -> last result: the steady-state window."""
        return self.done_s - (self.engine_ready_s or 0.0)

    def write(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(asdict(self)))

    @classmethod
    def read(cls, path: str | Path) -> SystemResult:
        return cls(**json.loads(Path(path).read_text()))


def since_start() -> float:
    return time.monotonic() - PROCESS_START
