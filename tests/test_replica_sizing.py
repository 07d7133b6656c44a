"""How many CPUs a replica reserves, and so how many threads a CPU engine computes on.

    python -m pytest tests/test_replica_sizing.py

Ray's view of the cluster is replaced by plain numbers: the rule is arithmetic over them.
"""

from __future__ import annotations

import pytest
from conftest import job_config

from synth_ray.engine.vllm_engine import cpu_engine_env
from synth_ray.runtime import cluster


@pytest.fixture
def fake_cluster(monkeypatch):
    def set_nodes(*cpus: float) -> None:
        import ray

        nodes = [{"Alive": True, "Resources": {"CPU": c}} for c in cpus]
        monkeypatch.setattr(ray, "nodes", lambda: nodes)
        monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": float(sum(cpus))})

    return set_nodes


def _config(tmp_path, resources=None, diversity=None):
    sections = {"resources": resources or {}}
    if diversity:
        sections["filters"] = {"diversity": diversity}
    return job_config(tmp_path, tmp_path / "in.jsonl", **sections)


def test_one_cpu_replica_computes_on_the_whole_machine(tmp_path, fake_cluster):
    fake_cluster(2)
    assert cluster.replica_cpus(_config(tmp_path), gpus=0) == 2


def test_cpu_replicas_share_the_cluster_and_never_oversubscribe_a_node(tmp_path, fake_cluster):
    fake_cluster(0, 1, 1)  # the cluster tests' head with no CPUs and two 1-CPU workers
    assert cluster.replica_cpus(_config(tmp_path, {"replicas": 2}), gpus=0) == 1
    assert cluster.replica_cpus(_config(tmp_path, {"replicas": 1}), gpus=0) == 1
    fake_cluster(16, 16)
    assert cluster.replica_cpus(_config(tmp_path, {"replicas": 1}), gpus=0) == 16
    assert cluster.replica_cpus(_config(tmp_path, {"replicas": 4}), gpus=0) == 8
    fake_cluster(2)  # more replicas than CPUs: 1 each, and the fit check names the shortfall
    assert cluster.replica_cpus(_config(tmp_path, {"replicas": 3}), gpus=0) == 1


def test_embedders_keep_their_cpus(tmp_path, fake_cluster):
    fake_cluster(8)
    diversity = {"enabled": True, "embedders": 2, "cpus_per_embedder": 1}
    config = _config(tmp_path, {"replicas": 2}, diversity)
    assert cluster.replica_cpus(config, gpus=0) == 3


def test_a_configured_value_wins_and_a_gpu_replica_takes_one(tmp_path, fake_cluster):
    fake_cluster(64)
    assert cluster.replica_cpus(_config(tmp_path, {"cpus_per_replica": 3}), gpus=0) == 3
    assert cluster.replica_cpus(_config(tmp_path), gpus=1) == 1


def test_cpu_engine_env_runs_the_model_in_the_engine_core_on_those_cpus():
    env = cpu_engine_env(2, 4)
    assert env["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0"
    assert env["OMP_NUM_THREADS"] == "4" and env["VLLM_CPU_KVCACHE_SPACE"] == "2"
    assert cpu_engine_env(1, 0)["OMP_NUM_THREADS"] == "1"
