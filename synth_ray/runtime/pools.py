"""The pools a job's stages run on: each pool's engine, replicas and prompt renderer, and
running stages of several pools at once.

`PoolRunner` is the half of `StageRunner` (runtime/stage.py) that knows pools: which pool a
thread's stages use (`use_pool`), each pool's replicas (started on first need, given back when
its stages are done, a working pool growing into what another freed), and `run_together`,
which runs each part in a thread of its own with later stages fed unit by unit as the earlier
ones commit (runtime/streaming.py); parts on one pool share its scheduler
(runtime/shared_scheduler.py), so two stages of one model stream too.

    python -m pytest tests/test_pools.py
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Iterator
from typing import Any

from synth_ray.config import DEFAULT_POOL, JobConfig, PoolConfig
from synth_ray.engine.prompts import PromptRenderer
from synth_ray.io.filesystem import Location
from synth_ray.io.output_store import OutputStore
from synth_ray.methods.stages import Together
from synth_ray.runtime.backend import Backend
from synth_ray.runtime.balancer import BalancerThread, PoolBalancer, PoolState
from synth_ray.runtime.scheduler import Scheduler
from synth_ray.runtime.shared_scheduler import SharedScheduler
from synth_ray.runtime.stopping import JobStopped, StopRequest
from synth_ray.runtime.streaming import StageBesideFailed, UnitFeed


class PoolRunner:
    """Pools and their replicas for a job's stages; `StageRunner` runs the stages on them."""

    output: Location  # the job's output location (set by StageRunner; remote_usage labels by it)

    def __init__(
        self, config: JobConfig, renderer: PromptRenderer | None, backend: Backend | None
    ) -> None:
        self.config = config
        # a caller's backend serves every pool; a caller's dict, each pool by name
        self._given: Backend | dict[str, Backend] | None = backend
        self.owns_backend = backend is None
        self._backends: dict[str, Backend] = {}  # by pool, started on first need
        self._renderers: dict[str, PromptRenderer] = {}
        if renderer is not None:
            self._renderers[DEFAULT_POOL] = renderer
        # pools a method runs besides `config.pools` (an engine named inline, e.g.
        # preference.judge_engine): set by the job before the first stage
        self.extra_pools: dict[str, PoolConfig] = {}
        self._local = threading.local()  # the pool this thread's stages run on
        self._feeds: dict[tuple[str, str], UnitFeed] = {}  # stages running beside others
        self._aborted: str | None = None  # why the stages running together must stop
        self._schedulers: dict[str, Scheduler] = {}  # by pool, while a stage runs on it
        # by pool, where several stages of `run_together` run on it at once
        self._shared: dict[str, SharedScheduler] = {}
        # every stage executed: (folder, stage name) -> the pool it ran on (cost, usage)
        self.stage_pools: dict[tuple[OutputStore, str], str] = {}
        self._lock = threading.Lock()
        self.owns_ray = False
        self.stop: StopRequest | None = None  # once requested, no new stage or work starts
        self.replica_moves: list[str] = []  # the balancer's, from an idle pool to a busy one

    @property
    def pool(self) -> str:
        """The pool this thread's stages run on (`use_pool`, or a part of `run_together`)."""
        return getattr(self._local, "pool", DEFAULT_POOL)

    def use_pool(self, name: str) -> str:
        """Run this thread's next stages on pool `name`; returns the model name its rows
        record. A pool not declared is a ConfigError naming the pools there are."""
        self.pool_config(name)
        self._local.pool = name
        return self.model_name(name)

    def pool_config(self, name: str) -> PoolConfig:
        if name in self.extra_pools:
            return self.extra_pools[name]
        return self.config.pool(name)

    def model_name(self, pool: str | None = None) -> str:
        from synth_ray.engine.models import model_display_name

        return model_display_name(self.pool_config(pool or self.pool).engine.model)

    def _config_for(self, pool: str) -> JobConfig:
        """The job as `pool` runs it: its engine and resources in place of the job's."""
        if pool == DEFAULT_POOL:
            return self.config
        chosen = self.pool_config(pool)
        return self.config.model_copy(
            update={"engine": chosen.engine, "resources": chosen.as_resources()}
        )

    @property
    def stage_config(self) -> JobConfig:
        return self._config_for(self.pool)

    def pool_renderer(self, pool: str) -> PromptRenderer:
        """The tokenizer and chat template of `pool`'s model (loaded once)."""
        if pool not in self._renderers:
            from synth_ray.engine.prompts import load_renderer

            self._renderers[pool] = load_renderer(self._config_for(pool))
        return self._renderers[pool]

    @property
    def renderer(self) -> PromptRenderer:
        """The tokenizer and chat template of this thread's pool's model."""
        return self.pool_renderer(self.pool)

    @renderer.setter
    def renderer(self, renderer: PromptRenderer) -> None:
        self._renderers[self.pool] = renderer

    @property
    def backend(self) -> Backend | None:
        """This thread's pool's replicas (None before its first stage)."""
        return self._backends.get(self.pool)

    def _replicas_sharing(self) -> int:
        """Replicas of every pool this job declares: on a CPU they may all run at once, so
        each pool's default CPU share is the cluster's over all of them. Stages one after
        another (scheduler.stream_stages off) give each pool the whole share in its turn."""
        if not self.config.scheduler.stream_stages:
            return self.pool_config(self.pool).replicas
        pools = {DEFAULT_POOL, *self.config.pools, *self.extra_pools}
        return sum(self.pool_config(name).replicas for name in pools)

    def run_together(self, parts: list[Together]) -> list[dict[str, Any]]:
        """Run `parts` at once, each in a thread of its own on its pool; returns their
        results in order. A stage a part `publishes` feeds the later stages that read it
        unit by unit as it commits (runtime/streaming.py), so a judge rates the first
        responses while the generator writes the next. Parts on one pool share its replicas
        through one scheduler (runtime/shared_scheduler.py), the later part's work first.
        Every pool's replicas are sized and checked on this thread first (a pool that cannot
        start fails before any work); pools that do not fit the cluster together run one
        after another instead, with a line saying so. A pool whose parts all finished is
        given back at once, and a pool still working grows into what it freed (up to its
        `max_replicas`). The first failure stops the others (their committed units stay) and
        is the one raised; a stop (a signal) drains each. With `scheduler.stream_stages`
        off, two parts the diversity filter decides (`Together.filtered`), or one caller's
        backend for several pools (tests), the parts run one after another in order."""
        one_backend = self._given is not None and not isinstance(self._given, dict)
        pools = list(dict.fromkeys(part.pool for part in parts))
        in_turn = len(parts) < 2 or not self.config.scheduler.stream_stages
        if self.config.filters.diversity.enabled and sum(part.filtered for part in parts) > 1:
            in_turn = True  # the filter decides one stage at a time (methods/stages.py)
        if in_turn or (one_backend and len(pools) > 1):
            return self._run_in_turn(parts)
        if self.owns_backend:
            self._ensure_ray()  # here: ray.init takes the signal handlers, on the main thread
            if len(pools) > 1 and not self._pools_fit_together(pools):
                return self._run_in_turn(parts)
        for pool in pools:  # a pool that cannot start fails here, before any work
            with self._on_pool(pool):
                self._ensure_backend()
        keys = [(store.location.uri, stage) for part in parts for store, stage in part.publishes]
        for uri, stage in keys:
            self._feeds[(uri, stage)] = UnitFeed(uri, stage)
        left = {pool: sum(part.pool == pool for part in parts) for pool in pools}
        for pool, count in left.items():
            if count > 1:
                self._shared[pool] = SharedScheduler(pool)
        self._aborted = None
        results: list[dict[str, Any]] = [{} for _ in parts]
        errors: list[BaseException | None] = [None] * len(parts)
        first_failure: list[int] = []

        def run_part(i: int) -> None:
            part = parts[i]
            self._local.pool = part.pool
            self._local.together = True
            self._local.rank = i  # a later part's work goes first on a shared pool
            try:
                results[i] = part.run()
            except BaseException as err:  # noqa: BLE001 - handed to the calling thread
                errors[i] = err
                with self._lock:  # the first failure of its own is the job's error
                    echo = isinstance(err, (JobStopped, StageBesideFailed))
                    if not echo and not first_failure:
                        first_failure.append(i)
                        line = str(err).splitlines()[0] if str(err) else type(err).__name__
                        self._aborted = f"a stage running beside this one failed ({line})"
            with self._lock:
                left[part.pool] -= 1
                last = left[part.pool] == 0
            if last:
                self._pool_finished(part.pool)

        threads = [
            threading.Thread(target=run_part, args=(i,), name=f"pool-{part.pool}-{i}")
            for i, part in enumerate(parts)
        ]
        for thread in threads:
            thread.start()
        balancer = None
        after = self.config.scheduler.rebalance_after_s
        if after is not None and len(pools) > 1:
            balancer = BalancerThread(PoolBalancer(self._running_pools, after))
        try:
            self._join(threads)
        except BaseException:  # the main thread interrupted: the pools stop at their next step
            self._aborted = self._aborted or "interrupted"
            self._join(threads)
            raise
        finally:
            if balancer is not None:
                balancer.stop()
                self.replica_moves.extend(balancer.balancer.moves)
            for key in keys:
                self._feeds.pop(key, None)
            for pool in pools:
                shared = self._shared.pop(pool, None)
                if shared is not None:
                    shared.close()
        if first_failure:
            raise errors[first_failure[0]]  # type: ignore[misc]
        for err in errors:  # a stop first, as each part raised it
            if isinstance(err, JobStopped):
                raise err
        for err in errors:
            if err is not None:
                raise err
        return results

    def _running_pools(self) -> dict[str, PoolState]:
        """The pools whose stages are running now, as the balancer sees them."""
        running = {}
        for pool, scheduler in list(self._schedulers.items()):
            config = self.pool_config(pool)
            resources = getattr(self._backends.get(pool), "resources", None)
            running[pool] = PoolState(scheduler, resources, config.max_replicas or config.replicas)
        return running

    def _pool_finished(self, pool: str) -> None:
        """Every part on `pool` returned: end its shared scheduler, give its replicas back."""
        shared = self._shared.get(pool)
        if shared is not None:
            shared.close()
        try:
            self._pool_done(pool)
        except Exception as err:  # noqa: BLE001 - giving back is best effort
            print(f"warning: pool {pool} was not given back ({err})", file=sys.stderr)

    def remote_usage(self) -> dict[str, Any] | None:
        """What the remote engines' stages used (every unit committed, this run or before):
        tokens, retries by reason and the cost their pools' prices give, per stage and in
        all; None when no stage ran on a remote engine."""
        stages: dict[str, Any] = {}
        for (store, stage), pool in sorted(self.stage_pools.items(), key=lambda kv: kv[0][1]):
            remote = self.pool_config(pool).engine.openai
            if remote is None:
                continue
            totals = store.totals(stage)
            cost = (
                totals.input_tokens * remote.input_price_per_million
                + totals.output_tokens * remote.output_price_per_million
            ) / 1e6
            label = stage or "main"
            if store.location.uri.rstrip("/") != self.output.uri.rstrip("/"):
                label = f"{store.location.uri.rstrip('/').rsplit('/', 1)[-1]}/{label}"
            stages[label] = {
                "pool": pool,
                "model": self.model_name(pool),
                "input_tokens": totals.input_tokens,
                "output_tokens": totals.output_tokens,
                "retries_by_reason": dict(sorted(totals.retries.items())),
                "cost_usd": round(cost, 6),
            }
        if not stages:
            return None
        return {
            "cost_usd": round(sum(s["cost_usd"] for s in stages.values()), 6),
            "retries": sum(sum(s["retries_by_reason"].values()) for s in stages.values()),
            "stages": stages,
        }

    @staticmethod
    def _join(threads: list[threading.Thread]) -> None:
        for thread in threads:
            while thread.is_alive():  # in slices: the main thread still takes signals
                thread.join(0.2)

    def _run_in_turn(self, parts: list[Together]) -> list[dict[str, Any]]:
        """The parts one after another; a pool is given back before another pool's part
        starts (its GPUs go to the next pool's replicas), as one engine at a time needs."""
        results = []
        for part in parts:
            for pool in list(self._backends):
                if pool != part.pool:
                    self._pool_done(pool)
            with self._on_pool(part.pool):
                results.append(part.run())
        return results

    def _pools_fit_together(self, pools: list[str]) -> bool:
        """Whether every pool's replicas fit the cluster at once (its CPUs and GPUs in all);
        when not, one line says the stages run one after another instead."""
        import ray

        from synth_ray.runtime.cluster import replica_cpus, replica_gpus

        total = ray.cluster_resources()
        need_cpu = need_gpu = 0.0
        for pool in pools:
            config = self._config_for(pool)
            if config.engine.remote:
                need_cpu += (config.resources.cpus_per_replica or 1.0) * config.resources.replicas
                continue
            gpus = replica_gpus(config)
            cpus = replica_cpus(config, gpus, self._replicas_sharing())
            need_cpu += cpus * config.resources.replicas
            need_gpu += gpus * config.resources.replicas
        if need_cpu <= total.get("CPU", 0) and need_gpu <= total.get("GPU", 0):
            return True
        print(
            f"pools {', '.join(pools)} need {need_cpu:g} CPUs and {need_gpu:g} GPUs at once; "
            f"the cluster has {total.get('CPU', 0):g} and {total.get('GPU', 0):g}: their stages "
            "run one after another",
            file=sys.stderr,
        )
        return False

    @contextlib.contextmanager
    def _on_pool(self, pool: str) -> Iterator[None]:
        before = self.pool
        self.use_pool(pool)
        try:
            yield
        finally:
            self._local.pool = before

    def _running_together(self) -> bool:
        return bool(getattr(self._local, "together", False))

    def _pool_done(self, pool: str) -> None:
        """Give `pool`'s replicas back (a part of `run_together` finished with it) and let the
        pools still working grow into what it freed, as far as its resources cover theirs."""
        backend = self._backends.pop(pool, None)
        if backend is None:
            return
        freed = getattr(backend, "resources", None)
        replicas = len(getattr(backend, "actors", {})) + len(getattr(backend, "idle", []))
        if self.owns_backend:
            backend.close()  # type: ignore[attr-defined]
        else:
            self._backends[pool] = backend  # a caller's: kept as it is
        for other, scheduler in list(self._schedulers.items()):
            config = self.pool_config(other)  # one that lent replicas takes them back
            cap = config.max_replicas or config.replicas
            room = cap - scheduler.wanted_replicas
            if room <= 0 or scheduler.work_exhausted:
                continue
            taking = getattr(self._backends.get(other), "resources", None)
            fits = replicas or self.pool_config(pool).replicas
            if freed is not None and taking is not None:
                per = [
                    need and int(have * replicas // need)
                    for have, need in (
                        (freed.num_cpus, taking.num_cpus),
                        (freed.num_gpus, taking.num_gpus),
                    )
                    if need
                ]
                fits = min(per) if per else fits
            if fits > 0:
                grow = min(room, fits)
                scheduler.grow_to(scheduler.wanted_replicas + grow)
                print(
                    f"pool {pool} finished: pool {other} grows by {grow} replica(s)",
                    file=sys.stderr,
                )
                return

    def start_replicas_early(self) -> None:
        """Start a local Ray and this job's replicas now (a job sure to generate: a first run),
        so their engines load while the driver loads the tokenizer and plans. A caller-owned
        backend, and a job joining a cluster, are left alone: a submitted job's driver loses
        its working directory at some moment after joining (Ray unpacks the job's files
        again), and transformers resolves a relative path at import."""
        address = self.config.ray.address or os.environ.get("RAY_ADDRESS")
        if self.config.pools or self.extra_pools:
            return  # which pools start first, and how big, is run_together's to decide
        if self.owns_backend and not address:
            backend = self._ensure_backend()
            prestart = getattr(backend, "prestart", None)
            if prestart is not None:
                prestart(self.stage_config.resources.replicas)

    def _ensure_ray(self) -> None:
        from synth_ray.runtime.cluster import connect_ray

        self.owns_ray = connect_ray(self.config) or self.owns_ray
        if self.stop is not None:
            self.stop.reinstall()  # ray.init replaced the SIGTERM handler

    def _ensure_backend(self) -> Backend:
        """This thread's pool's replicas: a caller's backend, or started on first need."""
        pool = self.pool
        backend = self._backends.get(pool)
        if backend is None:
            given = self._given
            if isinstance(given, dict):
                backend = given[pool]
            elif given is not None:
                backend = given
            else:
                from synth_ray.runtime.cluster import ray_backend_for

                self._ensure_ray()
                backend = ray_backend_for(
                    self._config_for(pool), keep_alive=True, sharing=self._replicas_sharing()
                )
            self._backends[pool] = backend
        return backend
