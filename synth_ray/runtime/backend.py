"""The mechanism under the scheduler: start replicas, send batches, report what happened.

The scheduler's policy (scheduler.py) speaks only this protocol, so tests drive it with a
simulated backend (tests/fake_backend.py) and production with Ray actors (ray_backend.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from synth_ray.engine.requests import EngineRequest, EngineResult

if TYPE_CHECKING:
    from synth_ray.runtime.slices import SliceDone, SliceTask, StageSpec


@dataclass(frozen=True)
class ReplicaReady:
    """`info` says where the replica runs; `engine` what it runs (dtype and why, niceness)."""

    replica_id: int
    info: str = ""
    engine: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ReplicaFailed:
    """The replica is gone (failed to start, crashed, lost its node); its batches are lost."""

    replica_id: int
    reason: str


@dataclass(frozen=True)
class BatchDone:
    replica_id: int
    batch_id: int
    results: list[EngineResult] | list[SliceDone]


@dataclass(frozen=True)
class ReplicaProgress:
    """A replica's answer to `probe`: a value that changes whenever its engine or its per-row
    work advances (compared for change only, never for size)."""

    replica_id: int
    mark: Any


Event = ReplicaReady | ReplicaFailed | BatchDone | ReplicaProgress


class Backend(Protocol):
    def start_replica(self) -> int:
        """Begin starting a replica; a ReplicaReady or ReplicaFailed event follows."""

    def add_stage(self, spec: StageSpec) -> None:
        """Make a stage's spec available to replicas before slices of it are submitted."""

    def drop_stage(self, key: str) -> None:
        """The stage `key` sends no more slices: its spec may be let go."""

    def submit(
        self, replica_id: int, batch_id: int, payloads: list[EngineRequest] | list[SliceTask]
    ) -> None:
        """Send a batch (engine requests, or slices of stages that run at once on the pool)
        to a ready replica; a
        BatchDone (one result per payload: EngineResult or SliceDone) or ReplicaFailed
        event follows."""

    def probe(self, replica_id: int) -> None:
        """Ask a ready replica how far it got; a ReplicaProgress event follows if it answers
        (a stuck replica may never answer: the scheduler's stall timeout covers that)."""

    def poll(self, timeout: float) -> list[Event]:
        """Events since the last poll, waiting up to `timeout` seconds for the first."""

    def stop_replica(self, replica_id: int) -> None:
        """Kill a replica; no further events come from it."""

    def describe_pending(self) -> str:
        """Why replicas that are not ready yet might be waiting (for timeout messages)."""

    def shutdown(self) -> None:
        """Stop every replica."""
