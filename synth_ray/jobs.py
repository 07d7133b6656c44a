"""Cluster jobs through Ray's Jobs API: submit a config, follow its logs, stop it, ask its status.

    synth-ray submit configs/generate.yaml --address http://HEAD:8265
    synth-ray logs JOB_ID --follow      synth-ray status JOB_ID      synth-ray stop JOB_ID

`submit` validates the config here first (a typo fails on your laptop, not after the cluster
queued it), then packs a working directory that travels in the job's runtime environment: the
config with every path rewritten to point inside it, and the local input files it names (input,
Self-Instruct seeds, the diversity filter's reference corpus). The entrypoint is `synth-ray run`
on that config with `ray.address=auto`, so the driver joins the cluster it runs on. The output
path must be reachable from the cluster (shared filesystem or object-store URI); a relative one
is made absolute here. Rerunning the same submit after the job died resumes from its committed
shards, because the output folder and the config fingerprint are the same.
These are ordinary Ray jobs: `ray job logs/status/stop` work on them too.
"""

from __future__ import annotations

import asyncio
import glob
import math
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from synth_ray.config import JobConfig, apply_overrides, load_config
from synth_ray.errors import ConfigError, ResourceError
from synth_ray.io.inputs import resolve_input_files
from synth_ray.methods import method_spec
from synth_ray.runtime.stopping import DEFAULT_GRACE_S

DEFAULT_DASHBOARD = "http://127.0.0.1:8265"
# a runtime_env working_dir is uploaded whole through the GCS; Ray caps it at 500 MiB
MAX_WORKING_DIR_BYTES = 400 * 2**20
TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}


def dashboard_address(address: str | None) -> str:
    """--address (http:// added when missing), else an http RAY_API_SERVER_ADDRESS or
    RAY_ADDRESS, else the local dashboard."""
    if address:
        return address if "://" in address else f"http://{address}"
    for name in ("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS"):
        value = os.environ.get(name, "")
        if value.startswith(("http://", "https://")):
            return value
    return DEFAULT_DASHBOARD


def client(address: str | None) -> Any:
    """A JobSubmissionClient, or a one-line ResourceError when the dashboard does not answer."""
    from ray.job_submission import JobSubmissionClient

    url = dashboard_address(address)
    try:
        return JobSubmissionClient(url)
    except Exception as err:  # ConnectionError, RuntimeError, auth errors: all "cannot reach"
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        hint = ""
        if "auth" in first.lower() and os.environ.get("RAY_AUTH_MODE") != "token":
            hint = "; if the cluster uses token authentication, export RAY_AUTH_MODE=token"
        raise ResourceError(f"Ray dashboard {url}: cannot connect ({first[:200]}){hint}") from None


def _is_uri(path: str) -> bool:
    return "://" in path


def _pack(source: str, into: Path, name: str) -> str:
    """Copy a local input (file, folder or glob) under `into/name`; returns its new relative path."""
    if _is_uri(source):
        return source  # object-store input: the cluster reads it where it is
    src = Path(source).expanduser()
    target = into / name
    if src.is_dir():  # only the files the job reads: no hidden files, nothing else in the folder
        root, files = resolve_input_files(str(src))
        for file in files:
            copy = target / file.relative_to(root)
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(file, copy)
        return name
    if src.is_file():
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, target / src.name)
        return f"{name}/{src.name}"
    matches = sorted(Path(p) for p in glob.glob(os.path.expanduser(source), recursive=True))
    if not matches:
        raise ConfigError(f"{name}: {source} matches no file to send with the job")
    target.mkdir(parents=True, exist_ok=True)
    for match in matches:
        shutil.copy2(match, target / match.name)
    return f"{name}/*{Path(source).suffix}"


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def prepare_submission(
    config_path: str | Path, overrides: list[str], workdir: Path
) -> tuple[JobConfig, dict[str, Any]]:
    """Validate the config with its overrides and write the job's working directory:
    `job.yaml` plus the inputs it needs. Returns the validated config and the data written."""
    config = load_config(config_path, overrides)  # a bad config fails here, with one line
    data = apply_overrides(yaml.safe_load(Path(config_path).read_text()) or {}, overrides)
    if config.input is not None:
        data["input"]["path"] = _pack(config.input.path, workdir, "input")
    for keys, path in method_spec(config.method).files(config).items():
        where = data
        for key in keys[:-1]:
            where = where.setdefault(key, {}) if isinstance(key, str) else where[key]
        where[keys[-1]] = _pack(path, workdir, "-".join(str(k) for k in keys[1:]))
    section = config.section
    for name, info in type(section).model_fields.items():
        value = getattr(section, name)
        if (info.json_schema_extra or {}).get("inline_on_submit") and value is not None:
            data.setdefault(config.method, {})[name] = value
    reference = config.filters.diversity.reference_path
    if reference:
        data["filters"]["diversity"]["reference_path"] = _pack(reference, workdir, "reference")
    output = config.output.path
    if not _is_uri(output):
        output = str(Path(output).expanduser().resolve())
    data["output"]["path"] = output
    model = config.engine.model
    if not model.startswith("embedded:") and Path(model).expanduser().exists():
        data.setdefault("engine", {})["model"] = str(Path(model).expanduser().resolve())
    for name, pool in config.pools.items():  # each pool's model folder, as the job's
        model = pool.engine.model
        if not model.startswith("embedded:") and Path(model).expanduser().exists():
            data["pools"][name]["engine"]["model"] = str(Path(model).expanduser().resolve())
    data.setdefault("ray", {})["address"] = "auto"
    (workdir / "job.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    if _size(workdir) > MAX_WORKING_DIR_BYTES:
        raise ConfigError(
            f"input.path {config.input.path if config.input else ''}: the files to send exceed "
            f"{MAX_WORKING_DIR_BYTES >> 20} MiB; put them on shared storage or an object store "
            "and give that path"
        )
    return config, data


def submission_id(config: JobConfig) -> str:
    return (
        f"synth-ray-{config.method.replace('_', '-')}-{config.fingerprint()[:8]}-{int(time.time())}"
    )


def submit(
    config_path: str | Path,
    address: str | None = None,
    overrides: list[str] | None = None,
    overwrite: bool = False,
    grace_s: float = DEFAULT_GRACE_S,
    replan: bool = False,
) -> tuple[str, str, str]:
    """Submit the job; returns (job id, dashboard URL, output path). `synth-ray stop` (Ray's
    SIGTERM) gives the run `grace_s` to commit its work in flight: Ray's own wait before
    SIGKILL (`RAY_JOB_STOP_WAIT_TIME_S`, 3 s by default) is raised to cover it."""
    jobs = client(address)
    with tempfile.TemporaryDirectory(prefix="synth-ray-submit-") as tmp:
        workdir = Path(tmp)
        config, data = prepare_submission(config_path, overrides or [], workdir)
        entrypoint = (
            f"synth-ray run job.yaml --no-progress --grace {grace_s:g}"
            + (" --overwrite" if overwrite else "")
            + (" --replan" if replan else "")
        )
        request = {
            "entrypoint": entrypoint,
            "submission_id": submission_id(config),
            "runtime_env": {
                "working_dir": str(workdir),
                "env_vars": {
                    "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "0"),
                    # read by the job's supervisor: how long SIGTERM may take before SIGKILL
                    "RAY_JOB_STOP_WAIT_TIME_S": str(math.ceil(grace_s) + 10),
                },
            },
            "metadata": {
                "synth_ray_output": data["output"]["path"],
                "synth_ray_config": Path(config_path).name,
                "synth_ray_method": config.method,
            },
        }
        job_id = _submit_with_retry(jobs, request, dashboard_address(address))
    return job_id, dashboard_address(address), data["output"]["path"]


def _submit_with_retry(jobs: Any, request: dict[str, Any], url: str, within_s: float = 60) -> str:
    """Submit; a cluster whose job agent is still starting ("try again later") gets retried
    for `within_s`, any other refusal is one ResourceError line."""
    deadline = time.monotonic() + within_s
    while True:
        try:
            return jobs.submit_job(**request)
        except RuntimeError as err:
            text = str(err)
            if "try again later" in text and time.monotonic() < deadline:
                time.sleep(2)
                continue
            reason = text.splitlines()[0][:300] if text else type(err).__name__
            raise ResourceError(f"Ray dashboard {url}: job submission refused ({reason})") from None


def _known_job(jobs: Any, job_id: str) -> Any:
    try:
        return jobs.get_job_info(job_id)
    except Exception as err:  # the client raises RuntimeError with the HTTP body for a 404
        if re.search(r"not found|does not exist|404", str(err), re.I):
            raise ConfigError(f"job {job_id}: no such job on this cluster") from None
        raise


def job_info(job_id: str, address: str | None = None) -> dict[str, Any]:
    """Status, message, times and the output path of a submitted job."""
    info = _known_job(client(address), job_id)
    return {
        "job_id": job_id,
        "status": str(getattr(info.status, "value", info.status)),
        "message": info.message,
        "entrypoint": info.entrypoint,
        "start_time": info.start_time,
        "end_time": info.end_time,
        "output": (info.metadata or {}).get("synth_ray_output"),
    }


def logs(
    job_id: str,
    address: str | None = None,
    follow: bool = False,
    write: Callable[[str], object] = print,
) -> None:
    """Write the job's driver log; with `follow`, chunk by chunk until the job ends."""
    jobs = client(address)
    _known_job(jobs, job_id)
    if not follow:
        write(jobs.get_job_logs(job_id))
        return

    async def tail() -> None:
        async for chunk in jobs.tail_job_logs(job_id):  # ends when the job does
            write(chunk)

    asyncio.run(tail())


def stop(job_id: str, address: str | None = None, wait_s: float = 60.0) -> str:
    """Ask the job to stop; returns its status once terminal (or after `wait_s`)."""
    jobs = client(address)
    _known_job(jobs, job_id)
    jobs.stop_job(job_id)
    deadline = time.monotonic() + wait_s
    status = str(jobs.get_job_status(job_id).value)
    while status not in TERMINAL and time.monotonic() < deadline:
        time.sleep(1)
        status = str(jobs.get_job_status(job_id).value)
    return status


def wait(job_id: str, address: str | None = None, timeout_s: float = 3600) -> str:
    """Block until the job ends; returns its final status."""
    jobs = client(address)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = str(jobs.get_job_status(job_id).value)
        if status in TERMINAL:
            return status
        time.sleep(2)
    raise TimeoutError(f"job {job_id} still running after {timeout_s:.0f}s")
