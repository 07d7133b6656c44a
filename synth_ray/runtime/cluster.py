"""Joining Ray and sizing replicas: the only place that decides where engines run.

`connect_ray` joins `ray.address` / `RAY_ADDRESS` or starts a local Ray; `ray_backend_for`
checks the cluster can hold the replicas (failing at once, naming what is missing) and builds
the backend with the engine settings from the config.
"""

from __future__ import annotations

import dataclasses
import math
import os
import socket
from typing import Any

from synth_ray.config import EngineConfig, JobConfig
from synth_ray.engine.vllm_engine import EngineSettings, cpu_engine_env
from synth_ray.errors import ConfigError, ResourceError


def engine_settings(config: JobConfig, tensor_parallel_size: int) -> EngineSettings:
    e = config.engine
    return EngineSettings(
        model=e.model,
        dtype=e.dtype,
        tensor_parallel_size=max(1, tensor_parallel_size),
        args=e.vllm_args(),
    )


def _probe(address: str, timeout_s: float = 10.0) -> None:
    """Fail at once when nothing listens at host:port: ray.init would retry for many minutes."""
    if address == "auto" or "://" in address or ":" not in address:
        return  # Ray resolves these itself (local bootstrap file, Ray Client with its own timeout)
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            pass
    except (OSError, ValueError) as err:
        raise ResourceError(
            f"ray.address {address}: cannot connect (nothing answers there: {err.__class__.__name__})"
        ) from None


def connect_ray(config: JobConfig) -> bool:
    """Join the configured cluster or start a local one; True if this call started Ray."""
    import ray

    if ray.is_initialized():
        return False
    address = config.ray.address or os.environ.get("RAY_ADDRESS")
    if address:
        _probe(address)
    try:
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(num_cpus=config.ray.num_cpus, include_dashboard=False, log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as err:
        where = f"ray.address {address}" if address else "local Ray"
        hint = ""
        if address and os.environ.get("RAY_AUTH_MODE") != "token":
            hint = "; if the cluster uses token authentication, export RAY_AUTH_MODE=token"
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ResourceError(f"{where}: cannot connect ({reason}){hint}") from None
    return True


def replica_gpus(config: JobConfig) -> int:
    """resources.gpus_per_replica, or when unset 1 if the connected cluster has a GPU, else 0."""
    import ray

    gpus = config.resources.gpus_per_replica
    if gpus is None:
        gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
    return gpus


def replica_cpus(config: JobConfig, gpus: int, sharing: int | None = None) -> float:
    """Ray CPUs each replica reserves: `resources.cpus_per_replica`, or when unset 1 beside a
    GPU, and on CPU an even share of the cluster's CPUs less the embedders' (at least 1, at
    most the largest node's), because a CPU engine computes on the CPUs it reserves: one
    replica on a 2-core machine decodes on both cores, two share them one each, and
    nothing oversubscribes a core. `sharing`: the replicas of every pool that may run at
    once (default: this pool's)."""
    import ray

    cpus = config.resources.cpus_per_replica
    if cpus is not None:
        return cpus
    if gpus:
        return 1.0
    total = ray.cluster_resources().get("CPU", 0)
    diversity = config.filters.diversity
    if diversity.enabled:
        total -= diversity.embedders * diversity.cpus_per_embedder
    largest = max((n["Resources"].get("CPU", 0) for n in ray.nodes() if n.get("Alive")), default=0)
    replicas = max(sharing or 0, config.resources.replicas)
    return float(max(1, min(math.floor(total / replicas), math.floor(largest))))


def ray_backend_for(
    config: JobConfig,
    keep_alive: bool = False,
    actor_class: type | None = None,
    sharing: int | None = None,
) -> Any:
    """Build the Ray backend after checking the cluster can hold the replicas. `actor_class`
    replaces the generator actor in benchmarks of the system around the engine only;
    `sharing` is replica_cpus'."""

    from synth_ray.runtime.ray_backend import RayBackend, ReplicaResources, check_cluster_fits

    if config.engine.remote:
        return _remote_backend(config, keep_alive, actor_class)
    gpus = replica_gpus(config)
    cpus = replica_cpus(config, gpus, sharing)
    tp = tensor_parallel_size(config, gpus, cpus)
    env = cpu_engine_env(config.engine.cpu_kv_cache_gib, int(cpus), tp) if gpus == 0 else {}
    resources = ReplicaResources(cpus, gpus, env)
    check_cluster_fits(config.resources.replicas, resources)
    extra = {"actor_class": actor_class} if actor_class is not None else {}
    return RayBackend(engine_settings(config, tp), resources, keep_alive=keep_alive, **extra)


def remote_api_key(engine: EngineConfig) -> str | None:
    """The API key of a remote engine, read from the environment variable the config names
    (None without one); a variable that is not set is a ConfigError naming it."""
    remote = engine.openai
    if remote is None or not remote.api_key_env:
        return None
    key = os.environ.get(remote.api_key_env)
    if not key:
        raise ConfigError(
            f"engine.openai.api_key_env {remote.api_key_env}: not set in this environment "
            "(export it before the run; its value is never written to the output)"
        )
    return key


def _remote_backend(config: JobConfig, keep_alive: bool, actor_class: type | None) -> Any:
    """Replicas of a remote engine: no GPU, `cpus_per_replica` (default 1) for rendering,
    tokenizing and parsing; the pool's rate limiter started when the config sets a limit."""
    from synth_ray.engine.openai_engine import RemoteSettings
    from synth_ray.runtime.ray_backend import RayBackend, ReplicaResources, check_cluster_fits

    remote = config.engine.openai
    assert remote is not None
    settings = EngineSettings(
        model=config.engine.model,
        tokenizer=config.engine.tokenizer_source,
        remote=RemoteSettings(
            base_url=remote.base_url,
            api=remote.api,
            api_key=remote_api_key(config.engine),
            max_concurrency=remote.max_concurrency,
            timeout_s=remote.timeout_s,
            max_attempts=remote.max_attempts,
            send_seed=remote.send_seed,
        ),
    )
    limiter = None
    if remote.requests_per_minute or remote.tokens_per_minute:
        from synth_ray.runtime.rate_limiter import start_rate_limiter

        name, limiter = start_rate_limiter(remote.requests_per_minute, remote.tokens_per_minute)
        settings = dataclasses.replace(settings, limiter=name)
    resources = ReplicaResources(config.resources.cpus_per_replica or 1.0, 0, {})
    check_cluster_fits(config.resources.replicas, resources)
    extra = {"actor_class": actor_class} if actor_class is not None else {}
    backend = RayBackend(settings, resources, keep_alive=keep_alive, **extra)
    if limiter is not None:
        backend.companions.append(limiter)
    return backend


def tensor_parallel_size(config: JobConfig, gpus: int, cpus: float) -> int:
    """engine.tensor_parallel_size, or the replica's GPUs (1 on a CPU); a size the replica's
    GPUs or cores cannot hold is a ResourceError naming both keys."""
    tp = config.engine.tensor_parallel_size
    if tp is None:
        return max(1, gpus)
    if gpus and tp != gpus:
        raise ResourceError(
            f"engine.tensor_parallel_size={tp}: a replica's ranks are its GPUs; set "
            f"resources.gpus_per_replica={tp} (it is {gpus})"
        )
    if not gpus and tp > cpus:
        raise ResourceError(
            f"engine.tensor_parallel_size={tp}: needs a core per rank; the replica reserves "
            f"{cpus:g} CPUs (resources.cpus_per_replica)"
        )
    return tp


def _sees_file(path: str) -> bool:
    return os.path.exists(path)


def unreachable_message(what: str, path: str, blind: list[str], fix: str) -> str | None:
    """The one-line error for nodes that cannot see `path` (None when every node can)."""
    if not blind:
        return None
    nodes = ", ".join(sorted(blind)[:5]) + (f" and {len(blind) - 5} more" if len(blind) > 5 else "")
    return f"{what} {path}: not visible from Ray node(s) {nodes}; {fix}"


def check_visible_from_every_node(what: str, path: str, fix: str) -> None:
    """Fail before any work, naming the nodes, when a local `path` the generators need (they
    read their input slices and write their shards themselves) is not on every node of a
    multi-node cluster. One zero-CPU probe task per node; a single node is never probed."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    if not ray.is_initialized():
        return  # a simulated backend in tests: nothing runs elsewhere
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    if len(nodes) < 2:
        return
    probe = ray.remote(_sees_file)
    refs = {
        node["NodeManagerAddress"] + f" ({node['NodeID'][:8]})": probe.options(
            num_cpus=0,
            scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False),
        ).remote(path)
        for node in nodes
    }
    blind = [name for name, ref in refs.items() if not ray.get(ref, timeout=300)]
    message = unreachable_message(what, path, blind, fix)
    if message:
        raise ResourceError(message)
