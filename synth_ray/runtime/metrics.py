"""A running job's figures as Ray metrics (`ray.util.metrics`), so a cluster's Prometheus and
the Ray dashboard's Grafana see them beside Ray's own. Prometheus names get Ray's `ray_` prefix
(counters also `_total`), e.g. `ray_synth_ray_engine_output_tokens_total`.

    rate(ray_synth_ray_engine_output_tokens_total[1m])   # tokens/s, by replica
    ray_synth_ray_requests_in_flight                       # by replica
    ray_synth_ray_units_pending                            # the queue: units not yet committed

Tags: `job` (the output folder's name), `stage`, and `replica` where a figure is a replica's.
Fed by the run's timeline (runtime/timeline.py) on each sample, from the driver: replicas send
nothing more than the stall probe's answer they already send. Only where the driver is
connected to Ray (a simulated backend in tests has no Ray).
"""

from __future__ import annotations

from typing import Any


class JobMetrics:
    def __init__(self, job: str, stage: str) -> None:
        from ray.util.metrics import Counter, Gauge

        self.tags = {"job": job, "stage": stage}
        keys = ("job", "stage")
        per_replica = ("job", "stage", "replica")
        self.engine_tokens = Counter(
            "synth_ray_engine_output_tokens",
            description="Output tokens a replica's engine generated.",
            tag_keys=per_replica,
        )
        self.in_flight = Gauge(
            "synth_ray_requests_in_flight",
            description="Requests a replica holds.",
            tag_keys=per_replica,
        )
        self.units_pending = Gauge(
            "synth_ray_units_pending",
            description="Units of the stage not yet committed.",
            tag_keys=keys,
        )
        self.rows = Counter(
            "synth_ray_rows",
            description="Committed candidate rows, by outcome: kept, dropped, errored.",
            tag_keys=(*keys, "outcome"),
        )
        self.committed_tokens = Counter(
            "synth_ray_committed_output_tokens",
            description="Output tokens of committed rows.",
            tag_keys=keys,
        )
        self.failures = Counter(
            "synth_ray_replica_failures",
            description="Replicas that died or stalled and were replaced.",
            tag_keys=keys,
        )
        self.resent = Counter(
            "synth_ray_requests_resent",
            description="Requests sent again after their replica failed.",
            tag_keys=keys,
        )
        self._last: dict[str, float] = {}
        self._replicas: set[str] = set()

    def update(self, sample: dict[str, Any], replicas: dict[str, dict[str, float]]) -> None:
        """`sample` is a timeline sample (cumulative for the run); `replicas` maps a replica id
        to its new engine tokens since the last update and the requests it holds now."""
        for rid, figures in replicas.items():
            tags = {**self.tags, "replica": rid}
            if figures["new_tokens"] > 0:
                self.engine_tokens.inc(figures["new_tokens"], tags=tags)
            self.in_flight.set(figures["in_flight"], tags=tags)
        for gone in self._replicas - set(replicas):
            self.in_flight.set(0, tags={**self.tags, "replica": gone})
        self._replicas = set(replicas)
        self.units_pending.set(sample["units_pending"], tags=self.tags)
        kept = sample["rows_out"]
        errored = sample["rows_errored"]
        for counter, tags, key, value in (
            (self.rows, {**self.tags, "outcome": "kept"}, "kept", kept),
            (self.rows, {**self.tags, "outcome": "errored"}, "errored", errored),
            (
                self.rows,
                {**self.tags, "outcome": "dropped"},
                "dropped",
                sample["rows_in"] - kept - errored,
            ),
            (self.committed_tokens, self.tags, "tokens", sample["output_tokens"]),
            (self.failures, self.tags, "failures", sample["replica_failures"]),
            (self.resent, self.tags, "resent", sample["requests_resent"]),
        ):
            grown = value - self._last.get(key, 0)
            if grown > 0:
                counter.inc(grown, tags=tags)
            self._last[key] = value
