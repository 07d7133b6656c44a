"""The Ray mechanism under the scheduler: generator actors, object refs, their completions.

    python -c "from synth_ray.runtime.ray_backend import check_cluster_fits; help(check_cluster_fits)"

Every actor call is an object ref mapped back to (replica, batch). Any failure of a call (the
actor died, its node was lost, its engine raised EngineDead) is reported as ReplicaFailed: the
scheduler re-sends the batch elsewhere and this backend kills the actor, so a half-dead engine
never keeps receiving work.
"""

from __future__ import annotations

import queue
from dataclasses import dataclass
from typing import Any

import ray

from synth_ray.engine.vllm_engine import EngineSettings
from synth_ray.errors import ResourceError
from synth_ray.runtime.backend import (
    BatchDone,
    Event,
    ReplicaFailed,
    ReplicaProgress,
    ReplicaReady,
)
from synth_ray.runtime.generator_actor import GeneratorActor
from synth_ray.runtime.slices import FinalizeTask, SliceTask, StageSpec


@dataclass(frozen=True)
class ReplicaResources:
    num_cpus: float
    num_gpus: int
    env_vars: dict[str, str]


def check_cluster_fits(replicas: int, resources: ReplicaResources) -> None:
    """Fail now, naming what is missing, if the cluster can never hold the replicas."""
    total = ray.cluster_resources()
    gpus, cpus = total.get("GPU", 0), total.get("CPU", 0)
    if resources.num_gpus and gpus < resources.num_gpus:
        raise ResourceError(
            f"resources.gpus_per_replica={resources.num_gpus}: the Ray cluster has {gpus:g} GPUs "
            "(set resources.gpus_per_replica=0 to run on CPU)"
        )
    if resources.num_gpus and gpus < replicas * resources.num_gpus:
        raise ResourceError(
            f"resources.replicas={replicas} x gpus_per_replica={resources.num_gpus} needs "
            f"{replicas * resources.num_gpus} GPUs; the Ray cluster has {gpus:g}"
        )
    if cpus < replicas * resources.num_cpus:
        raise ResourceError(
            f"resources.replicas={replicas} x cpus_per_replica={resources.num_cpus:g} needs "
            f"{replicas * resources.num_cpus:g} CPUs; the Ray cluster has {cpus:g}"
        )


def _reason(err: BaseException) -> str:
    """The most specific one-line reason inside a Ray error."""
    cause = getattr(err, "cause", None) or getattr(err, "__cause__", None)
    text = str(cause if cause is not None else err).strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in reversed(lines):
        if ("Error" in line or "error" in line) and not line.startswith(("File ", "Traceback")):
            return line[:500]
    return (lines[-1] if lines else type(err).__name__)[:500]


class RayBackend:
    def __init__(
        self,
        settings: EngineSettings,
        resources: ReplicaResources,
        keep_alive: bool = False,
        actor_class: type = GeneratorActor,
    ) -> None:
        """With `keep_alive`, `shutdown` parks healthy actors and the next `start_replica`
        reuses them (one warm engine across several jobs, e.g. a test session); `close` kills
        them for good. `actor_class` is for benchmarks of the system around the engine
        (benchmarks/bench_driver.py); jobs always run GeneratorActor."""
        self.settings = settings
        self.resources = resources
        self.keep_alive = keep_alive
        self.idle: list[Any] = []
        self.actor_class = ray.remote(actor_class)
        self.stages: dict[str, Any] = {}  # stage key -> object ref of its StageSpec
        self.actors: dict[int, Any] = {}
        self.refs: dict[Any, tuple[str, int, int]] = {}
        self.completed: queue.SimpleQueue[Any] = queue.SimpleQueue()  # refs done, for `poll`
        self.next_replica_id = 0
        self.probing: set[int] = set()  # replicas with a progress probe outstanding
        self.companions: list[
            Any
        ] = []  # actors the replicas use (a rate limiter): closed with them

    def prestart(self, replicas: int) -> None:
        """Create `replicas` actors now, parked until the scheduler starts its replicas: their
        engines load (the longest part of a short job's start) while the driver still loads
        the tokenizer and plans."""
        while len(self.idle) < replicas:
            self.idle.append(self._new_actor())

    def start_replica(self) -> int:
        replica_id = self.next_replica_id
        self.next_replica_id += 1
        actor = self.idle.pop() if self.idle else self._new_actor()
        self.actors[replica_id] = actor
        self._track(actor.ready.remote(), "ready", replica_id, -1)
        return replica_id

    def _new_actor(self) -> Any:
        return self.actor_class.options(
            num_cpus=self.resources.num_cpus,
            num_gpus=self.resources.num_gpus,
            max_restarts=0,
            max_concurrency=10_000,
            runtime_env={"env_vars": self.resources.env_vars},
        ).remote(self.settings)

    def add_stage(self, spec: StageSpec) -> None:
        """Put the stage's spec in the object store once; replicas fetch it on first use."""
        self.stages[spec.key] = ray.put(spec)

    def drop_stage(self, key: str) -> None:
        self.stages.pop(key, None)

    def submit(
        self, replica_id: int, batch_id: int, payloads: list[SliceTask | FinalizeTask]
    ) -> None:
        """Jobs send only slices (and diversity-filtered units to write) to real replicas."""
        specs = [(key, self.stages[key]) for key in dict.fromkeys(p.stage_key for p in payloads)]
        ref = self.actors[replica_id].run_slices.remote(specs, payloads)
        self._track(ref, "batch", replica_id, batch_id)

    def probe(self, replica_id: int) -> None:
        """One probe outstanding per replica: a stuck actor must not pile them up."""
        if replica_id in self.probing or replica_id not in self.actors:
            return
        self.probing.add(replica_id)
        self._track(self.actors[replica_id].progress.remote(), "progress", replica_id, -1)

    def _track(self, ref: Any, kind: str, replica_id: int, batch_id: int) -> None:
        """Remember what `ref` is; once it completes, Ray's callback queues it for `poll`."""
        self.refs[ref] = (kind, replica_id, batch_id)
        ref.future().add_done_callback(lambda _done, ref=ref: self.completed.put(ref))

    def poll(self, timeout: float) -> list[Event]:
        """The events of the calls completed by now, waiting up to `timeout` for a first one.
        Its cost is the calls completed, not the calls outstanding: completions arrive in a
        queue (`_track`), where `ray.wait` would scan every outstanding ref each time."""
        if not self.refs:
            return []
        try:
            done = [self.completed.get(timeout=timeout)]
        except queue.Empty:
            return []
        while True:
            try:
                done.append(self.completed.get_nowait())
            except queue.Empty:
                break
        events: list[Event] = []
        failed: set[int] = set()
        for ref in done:
            entry = self.refs.pop(ref, None)
            if entry is None:
                continue  # a call of a replica stopped meanwhile, or of an earlier job
            kind, replica_id, batch_id = entry
            if kind == "progress":
                self.probing.discard(replica_id)
            if replica_id in failed:
                continue
            try:
                value = ray.get(ref)
            except Exception as err:  # actor died, node lost, engine dead, or a bug in the call
                failed.add(replica_id)
                events.append(ReplicaFailed(replica_id, _reason(err)))
                continue
            if kind == "progress":
                events.append(ReplicaProgress(replica_id, value))
            elif kind == "ready":
                events.append(ReplicaReady(replica_id, str(value.pop("where", "")), value))
            else:
                events.append(BatchDone(replica_id, batch_id, value))
        return events

    def stop_replica(self, replica_id: int) -> None:
        actor = self.actors.pop(replica_id, None)
        self.probing.discard(replica_id)
        for ref, (_, rid, _) in list(self.refs.items()):
            if rid == replica_id:
                del self.refs[ref]
        if actor is not None:
            ray.kill(actor, no_restart=True)

    def describe_pending(self) -> str:
        need = {"CPU": self.resources.num_cpus}
        if self.resources.num_gpus:
            need["GPU"] = self.resources.num_gpus
        available = {k: v for k, v in ray.available_resources().items() if k in ("CPU", "GPU")}
        return f"each replica needs {need}; the cluster has {available} available"

    def replica_pid(self, replica_id: int) -> int:
        return ray.get(self.actors[replica_id].pid.remote())

    def shutdown(self) -> None:
        """Stop this run's replicas (parked for reuse with keep_alive)."""
        self.refs.clear()
        self.probing.clear()
        if self.keep_alive:
            self.idle.extend(self.actors.values())
            self.actors.clear()
            return
        self.close()

    def close(self) -> None:
        for replica_id in list(self.actors):
            self.stop_replica(replica_id)
        for actor in self.idle:
            ray.kill(actor, no_restart=True)
        self.idle.clear()
        for actor in self.companions:
            ray.kill(actor, no_restart=True)
        self.companions.clear()
