"""The deployment files in deploy/, checked without Kubernetes, a cloud, Slurm or Docker.

    pytest tests/test_deploy.py

- KubeRay manifests: jsonschema against the v1 CRD schemas vendored from KubeRay v1.7.0
  (deploy/schemas/SOURCE.txt) AND a walk asserting every key exists in the schema, since the
  API server silently prunes unknown fields instead of rejecting them.
- Ray cluster launcher config: the ray-schema.json inside the installed ray, then Ray's own
  default filling and validation (as `ray up` does before touching the cloud).
- Every synth-ray job config in deploy/ (the RayJob's ConfigMap included, with the RayJob's
  `--set` overrides) passes synth_ray.config.validate_config.
- Slurm script: `bash -n`, shellcheck when installed, and a dry run with stub srun/scontrol/ray.
- Dockerfile: its ENTRYPOINT + CMD run here print the help; it installs the `gpu` extra; the
  image names and Ray versions in the manifests agree with it.
Negative tests feed each validator a deliberate mistake, so none of them can pass vacuously.
"""

from __future__ import annotations

import copy
import gzip
import json
import re
import shlex
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from synth_ray.config import apply_overrides, validate_config
from synth_ray.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
KUBERAY = DEPLOY / "kuberay"
LAUNCHER = DEPLOY / "cluster-launcher" / "aws-gpu.yaml"
SBATCH = DEPLOY / "slurm" / "synth-ray.sbatch"
DOCKERFILE = DEPLOY / "Dockerfile"
YAML_FILES = sorted(DEPLOY.rglob("*.yaml"))
CRD_SCHEMAS = {
    "RayCluster": DEPLOY / "schemas" / "raycluster.v1.openapi.json.gz",
    "RayJob": DEPLOY / "schemas" / "rayjob.v1.openapi.json.gz",
}
# The root `metadata` of a CRD schema is a bare object: the API server checks it as ObjectMeta.
OBJECT_META = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "generateName": {"type": "string"},
        "namespace": {"type": "string"},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}
# Schema keywords whose values are data, not schemas.
LITERAL_KEYWORDS = {"default", "enum", "example", "required"}


# --- helpers -------------------------------------------------------------------------------


def load_docs(path: Path) -> list[dict[str, Any]]:
    """Every non-empty document of a (multi-document) YAML file."""
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def doc_of_kind(path: Path, kind: str) -> dict[str, Any]:
    found = [doc for doc in load_docs(path) if doc.get("kind") == kind]
    assert len(found) == 1, f"{path.name}: expected one {kind}, found {len(found)}"
    return found[0]


def crd_schema(kind: str) -> dict[str, Any]:
    """The vendored openAPIV3Schema of a KubeRay CRD, root metadata checked as ObjectMeta."""
    schema = json.loads(gzip.decompress(CRD_SCHEMAS[kind].read_bytes()))
    schema["properties"]["metadata"] = OBJECT_META
    return schema


def to_jsonschema(node: Any) -> Any:
    """OpenAPI v3 structural schema -> JSON Schema draft 7: x-kubernetes-* keys dropped,
    int-or-string fields (resource quantities, ports) as integer|string, nullable as |null."""
    if isinstance(node, list):
        return [to_jsonschema(item) for item in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key.startswith("x-kubernetes-") or key == "nullable":
            continue
        if key in ("properties", "patternProperties"):
            out[key] = {name: to_jsonschema(sub) for name, sub in value.items()}
        elif key in LITERAL_KEYWORDS:
            out[key] = value
        else:
            out[key] = to_jsonschema(value)
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if node.get("nullable") and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    return out


def schema_errors(doc: dict[str, Any], openapi: dict[str, Any]) -> list[str]:
    """jsonschema's complaints about `doc`, each as 'dotted.path: message'."""
    schema = to_jsonschema(openapi)
    jsonschema.Draft7Validator.check_schema(schema)
    validator = jsonschema.Draft7Validator(schema)
    return [
        f"{dotted(err.absolute_path)}: {err.message}"
        for err in sorted(validator.iter_errors(doc), key=lambda e: list(map(str, e.path)))
    ]


def dotted(parts: Any) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<root>"


def unknown_fields(value: Any, schema: dict[str, Any], path: str = "") -> list[str]:
    """Dotted paths of keys in `value` that `schema` does not declare (the API server would
    prune them without a word). Maps (additionalProperties) accept any key."""
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return []
    found: list[str] = []
    if isinstance(value, dict):
        props = schema.get("properties")
        extra = schema.get("additionalProperties")
        for key, child in value.items():
            where = f"{path}.{key}" if path else str(key)
            if props is not None and key in props:
                found += unknown_fields(child, props[key], where)
            elif isinstance(extra, dict):
                found += unknown_fields(child, extra, where)
            elif extra is not True:
                found.append(where)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            found += unknown_fields(item, schema["items"], f"{path}[{i}]")
    return found


def walk(value: Any) -> Iterator[tuple[str, Any]]:
    """Every (key, value) pair of nested dicts and lists."""
    if isinstance(value, dict):
        for key, child in value.items():
            yield key, child
            yield from walk(child)
    elif isinstance(value, list):
        for item in value:
            yield from walk(item)


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of deploy/Dockerfile, continuation lines joined."""
    logical: list[str] = []
    pending = ""
    for line in DOCKERFILE.read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue  # comments may also sit between the lines of a continued instruction
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        logical.append(pending + stripped)
        pending = ""
    assert not pending, "Dockerfile ends inside a continued line"
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in logical]


def dockerfile_arg(name: str) -> str:
    for instr, args in dockerfile_instructions():
        if instr == "ARG" and args.startswith(f"{name}="):
            return args.split("=", 1)[1].strip().strip('"')
    raise AssertionError(f"Dockerfile: no ARG {name}=default")


def dockerfile_exec_form(instruction: str) -> list[str]:
    found = [args for instr, args in dockerfile_instructions() if instr == instruction]
    assert len(found) == 1, f"Dockerfile: expected one {instruction}, found {len(found)}"
    value = json.loads(found[0])  # exec (JSON) form, not shell form
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), found[0]
    return value


def documented_tag() -> str:
    """The tag of the build command the Dockerfile documents."""
    match = re.search(r"docker build -f deploy/Dockerfile -t (\S+) \.", DOCKERFILE.read_text())
    assert match, "Dockerfile: no `docker build -f deploy/Dockerfile -t TAG .` comment"
    return match.group(1)


def synth_ray_command() -> list[str]:
    """The venv's `synth-ray` console script, else the module behind it."""
    script = Path(sys.executable).parent / "synth-ray"
    return [str(script)] if script.exists() else [sys.executable, "-m", "synth_ray.cli"]


def parse_run_args(args: list[str]) -> dict[str, Any]:
    """Parse `synth-ray run ARGS` with the real CLI's parser (nothing runs)."""
    import typer

    from synth_ray.cli import app

    group = typer.main.get_command(app)
    run = group.commands["run"]  # type: ignore[attr-defined]
    return run.make_context("run", list(args)).params


def rayjob_config(rayjob_file: Path) -> dict[str, Any]:
    """The config the RayJob's entrypoint would run: the ConfigMap's file + its --set's."""
    configmap = doc_of_kind(rayjob_file, "ConfigMap")
    rayjob = doc_of_kind(rayjob_file, "RayJob")
    words = shlex.split(rayjob["spec"]["entrypoint"])
    assert words[:2] == ["synth-ray", "run"], words
    params = parse_run_args(words[2:])
    mount = mount_of_configmap(rayjob, configmap["metadata"]["name"])
    config_path = Path(str(params["config"]))
    assert config_path.parent == Path(mount), f"entrypoint config {config_path} is not in {mount}"
    text = configmap["data"][config_path.name]
    return apply_overrides(yaml.safe_load(text), params["set_"] or [])


def mount_of_configmap(rayjob: dict[str, Any], name: str) -> str:
    """Where the head Pod of the RayJob mounts the ConfigMap `name`."""
    head = rayjob["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    volumes = [v["name"] for v in head["volumes"] if v.get("configMap", {}).get("name") == name]
    assert len(volumes) == 1, f"head Pod has no volume of ConfigMap {name}"
    mounts = [
        m["mountPath"]
        for c in head["containers"]
        for m in c.get("volumeMounts", [])
        if m["name"] == volumes[0]
    ]
    assert mounts, f"no container of the head Pod mounts ConfigMap {name}"
    return mounts[0]


def shared_source(volume: dict[str, Any]) -> tuple[str, str] | None:
    """The data a Pod volume holds when Pods on different nodes see the same data through it:
    a PVC claim or a ConfigMap; None for per-Pod or per-node volumes (emptyDir, hostPath)."""
    if "persistentVolumeClaim" in volume:
        return ("persistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"])
    if "configMap" in volume:
        return ("configMap", volume["configMap"]["name"])
    return None


def mount_holding(pod: dict[str, Any], path: str) -> dict[str, Any] | None:
    """The mount of the Pod's Ray container (KubeRay runs Ray in the first one) that holds
    `path`, deepest mountPath first: {"mountPath", "source", "readOnly"}; None if none does."""
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    best = None
    for mount in pod["containers"][0].get("volumeMounts", []):
        root = mount["mountPath"].rstrip("/") or "/"
        inside = path == root or path.startswith(root.rstrip("/") + "/")
        if inside and (best is None or len(root) > len(best["mountPath"])):
            best = {
                "mountPath": root,
                "source": shared_source(volumes[mount["name"]]),
                "readOnly": bool(mount.get("readOnly")),
            }
    return best


def check_every_pod_sees(spec: dict[str, Any], path: str, writable: bool) -> None:
    """The rule synth-ray checks when a job starts: the driver (head) and the generators
    (worker Pods) all see a local input or output path, so the head and every worker group
    mount the same shared volume at the same mountPath for it (writable for the output)."""
    head = mount_holding(spec["headGroupSpec"]["template"]["spec"], path)
    assert head and head["source"], f"{path}: not on a shared volume (PVC, ConfigMap) of the head"
    for group in spec["workerGroupSpecs"]:
        theirs = mount_holding(group["template"]["spec"], path)
        assert theirs and (theirs["mountPath"], theirs["source"]) == (
            head["mountPath"],
            head["source"],
        ), (
            f"{path}: worker group {group['groupName']} mounts {theirs}, the head {head}; "
            "the generators read their input slices and write their shards on the workers"
        )
        if writable:
            assert not head["readOnly"] and not theirs["readOnly"], f"{path}: mounted read-only"


def documented_output_paths(text: str) -> list[str]:
    """The values of `--set output.path=...` in commands of a file or README section."""
    return re.findall(r"--set output\.path=([^\s\"'\\]+)", text)


def readme_section(title: str) -> str:
    text = (DEPLOY / "README.md").read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end >= 0 else None]


def crd_docs() -> list[tuple[Path, dict[str, Any]]]:
    return [
        (path, doc)
        for path in sorted(KUBERAY.glob("*.yaml"))
        for doc in load_docs(path)
        if doc.get("kind") in CRD_SCHEMAS
    ]


CRD_DOC_IDS = [f"{p.name}:{d['kind']}" for p, d in crd_docs()]


# --- every file ----------------------------------------------------------------------------


def test_synth_ray_help_runs():
    proc = subprocess.run(
        [*synth_ray_command(), "--help"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert "Usage" in proc.stdout and "run" in proc.stdout


def test_deploy_has_the_expected_files():
    for path in (
        DOCKERFILE,
        KUBERAY / "raycluster.yaml",
        KUBERAY / "rayjob.yaml",
        KUBERAY / "pvc.yaml",
        LAUNCHER,
        SBATCH,
        DEPLOY / "README.md",
        DEPLOY / "schemas" / "SOURCE.txt",
        *CRD_SCHEMAS.values(),
    ):
        assert path.is_file(), path
    for schema in CRD_SCHEMAS.values():
        assert schema.stat().st_size < 1_000_000, f"{schema} should stay small"


@pytest.mark.parametrize("path", YAML_FILES, ids=[str(p.relative_to(DEPLOY)) for p in YAML_FILES])
def test_yaml_parses(path: Path):
    docs = load_docs(path)
    assert docs and all(isinstance(doc, dict) for doc in docs)


# --- KubeRay -------------------------------------------------------------------------------


def test_vendored_schemas_are_the_v1_crd_schemas():
    source = (DEPLOY / "schemas" / "SOURCE.txt").read_text()
    readme = (DEPLOY / "README.md").read_text()
    commit = "59d663aeec13760646da3db9c1cf8cfe883e30b7"
    assert "v1.7.0" in source and commit in source
    assert "v1.7.0" in readme and commit in readme
    for kind in CRD_SCHEMAS:
        spec = crd_schema(kind)["properties"]["spec"]["properties"]
        assert ("headGroupSpec" in spec) if kind == "RayCluster" else ("rayClusterSpec" in spec)


@pytest.mark.parametrize("path, doc", crd_docs(), ids=CRD_DOC_IDS)
def test_kuberay_manifest_matches_crd_schema(path: Path, doc: dict[str, Any]):
    assert doc["apiVersion"] == "ray.io/v1"
    schema = crd_schema(doc["kind"])
    assert schema_errors(doc, schema) == []
    assert unknown_fields(doc, schema) == []


def test_all_crd_documents_were_found():
    kinds = sorted(doc["kind"] for _, doc in crd_docs())
    assert kinds == ["RayCluster", "RayJob"]


def cluster_specs() -> list[tuple[str, dict[str, Any]]]:
    raycluster = doc_of_kind(KUBERAY / "raycluster.yaml", "RayCluster")["spec"]
    rayjob = doc_of_kind(KUBERAY / "rayjob.yaml", "RayJob")["spec"]["rayClusterSpec"]
    return [("raycluster", raycluster), ("rayjob", rayjob)]


@pytest.mark.parametrize("name, spec", cluster_specs(), ids=[n for n, _ in cluster_specs()])
def test_kuberay_cluster_shape(name: str, spec: dict[str, Any]):
    head = spec["headGroupSpec"]
    head_containers = head["template"]["spec"]["containers"]
    for container in head_containers:
        for part in ("requests", "limits"):
            assert "nvidia.com/gpu" not in container.get("resources", {}).get(part, {})
    assert head["rayStartParams"].get("num-gpus") == "0"
    # The driver (head) writes the job's records and the generators (GPU workers) write their
    # shards: the head and every worker group mount the PVC of pvc.yaml at /data, writable.
    head_volumes = {v["name"]: v for v in head["template"]["spec"]["volumes"]}
    data_mounts = [
        m for c in head_containers for m in c.get("volumeMounts", []) if m["mountPath"] == "/data"
    ]
    assert data_mounts and "persistentVolumeClaim" in head_volumes[data_mounts[0]["name"]]
    claim = head_volumes[data_mounts[0]["name"]]["persistentVolumeClaim"]["claimName"]
    assert claim == doc_of_kind(KUBERAY / "pvc.yaml", "PersistentVolumeClaim")["metadata"]["name"]
    check_every_pod_sees(spec, "/data", writable=True)
    # Every PVC the head mounts, every worker group mounts at the same path.
    head_pod = head["template"]["spec"]
    for mount in head_pod["containers"][0].get("volumeMounts", []):
        source = mount_holding(head_pod, mount["mountPath"])
        if source and source["source"] and source["source"][0] == "persistentVolumeClaim":
            check_every_pod_sees(spec, mount["mountPath"], writable=False)

    gpu_groups = [
        group
        for group in spec["workerGroupSpecs"]
        if any(
            "nvidia.com/gpu" in c.get("resources", {}).get("limits", {})
            for c in group["template"]["spec"]["containers"]
        )
    ]
    assert gpu_groups, f"{name}: no worker group with nvidia.com/gpu limits"
    for group in gpu_groups:
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        assert group["template"]["spec"].get("nodeSelector"), "GPU group without nodeSelector"
    if name == "raycluster":
        assert spec["enableInTreeAutoscaling"] is True


def test_rayjob_shape_and_job_config():
    rayjob = doc_of_kind(KUBERAY / "rayjob.yaml", "RayJob")["spec"]
    assert rayjob["shutdownAfterJobFinishes"] is True
    assert rayjob["ttlSecondsAfterFinished"] > 0
    entry = shlex.split(rayjob["entrypoint"])
    assert entry[:3] == ["synth-ray", "run", "/configs/job.yaml"]
    assert "ray.address=auto" in entry

    configmap = doc_of_kind(KUBERAY / "rayjob.yaml", "ConfigMap")
    assert configmap["apiVersion"] == "v1" and configmap["metadata"]["name"]
    assert set(configmap) <= {"apiVersion", "kind", "metadata", "data"}
    assert all(isinstance(v, str) for v in configmap["data"].values())

    data = rayjob_config(KUBERAY / "rayjob.yaml")
    job = validate_config(data)
    assert job.ray.address == "auto"
    assert job.output.path.startswith("/data/"), "output must be on the PVC"
    assert job.resources.gpus_per_replica, "set gpus_per_replica explicitly on a GPU cluster"
    gpus = sum(
        group["replicas"] * int(c["resources"]["limits"].get("nvidia.com/gpu", 0))
        for group in rayjob["rayClusterSpec"]["workerGroupSpecs"]
        for c in group["template"]["spec"]["containers"]
    )
    assert job.resources.replicas * job.resources.gpus_per_replica <= gpus
    # The sample input shipped in the ConfigMap is what input.path names.
    assert job.input is not None
    if job.input.path.startswith("/configs/"):
        rows = configmap["data"][Path(job.input.path).name].splitlines()
        assert rows and all(job.input.text_column in json.loads(r) for r in rows)
    # The generators on the GPU workers read input.path and write into output.path: both are
    # on volumes the head and every worker group mount at the same path (the ConfigMap at
    # /configs for the sample input, the PVC at /data for the output).
    check_every_pod_sees(rayjob["rayClusterSpec"], job.input.path, writable=False)
    check_every_pod_sees(rayjob["rayClusterSpec"], job.output.path, writable=True)


def test_raycluster_documented_outputs_are_on_the_shared_volume():
    """The output paths in raycluster.yaml's commands and the README's KubeRay section are
    object-store URIs or under a volume every Pod of the RayCluster mounts."""
    spec = doc_of_kind(KUBERAY / "raycluster.yaml", "RayCluster")["spec"]
    paths = documented_output_paths((KUBERAY / "raycluster.yaml").read_text())
    paths += documented_output_paths(readme_section("Kubernetes (KubeRay)"))
    assert paths
    for path in paths:
        if "://" not in path:
            check_every_pod_sees(spec, path, writable=True)


def test_pvc_shape():
    pvc = doc_of_kind(KUBERAY / "pvc.yaml", "PersistentVolumeClaim")
    assert pvc["apiVersion"] == "v1"
    # Mounted by the head and by GPU worker Pods on other nodes at the same time.
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    assert pvc["spec"]["resources"]["requests"]["storage"]


# --- negative checks: the validators do catch mistakes ---------------------------------------


def test_walker_reports_a_misspelled_top_level_field():
    doc = copy.deepcopy(doc_of_kind(KUBERAY / "raycluster.yaml", "RayCluster"))
    doc["spec"]["headGroupSpecc"] = doc["spec"].pop("headGroupSpec")
    schema = crd_schema("RayCluster")
    assert unknown_fields(doc, schema) == ["spec.headGroupSpecc"]


def test_walker_reports_a_misspelled_nested_field():
    doc = copy.deepcopy(doc_of_kind(KUBERAY / "rayjob.yaml", "RayJob"))
    doc["spec"]["shutdownAfterJobFinish"] = doc["spec"].pop("shutdownAfterJobFinishes")
    container = doc["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["template"]["spec"][
        "containers"
    ][0]
    container["imagePullPolicyy"] = container.pop("imagePullPolicy")
    doc["metadata"]["label"] = {"a": "b"}
    assert sorted(unknown_fields(doc, crd_schema("RayJob"))) == [
        "metadata.label",
        "spec.rayClusterSpec.workerGroupSpecs[0].template.spec.containers[0].imagePullPolicyy",
        "spec.shutdownAfterJobFinish",
    ]


def test_walker_accepts_any_key_of_a_map():
    doc = copy.deepcopy(doc_of_kind(KUBERAY / "raycluster.yaml", "RayCluster"))
    doc["spec"]["headGroupSpec"]["rayStartParams"]["any-new-flag"] = "x"
    assert unknown_fields(doc, crd_schema("RayCluster")) == []


def test_jsonschema_rejects_wrong_types_and_bad_quantities():
    doc = copy.deepcopy(doc_of_kind(KUBERAY / "raycluster.yaml", "RayCluster"))
    doc["spec"]["headGroupSpec"]["rayStartParams"]["num-cpus"] = 0  # must be a string
    worker = doc["spec"]["workerGroupSpecs"][0]
    worker["replicas"] = "two"
    worker["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"] = "64GB"
    errors = "\n".join(schema_errors(doc, crd_schema("RayCluster")))
    assert "spec.headGroupSpec.rayStartParams.num-cpus" in errors
    assert "spec.workerGroupSpecs[0].replicas" in errors
    assert "spec.workerGroupSpecs[0].template.spec.containers[0].resources.limits.memory" in errors


def test_int_or_string_quantities_accept_both_forms():
    doc = copy.deepcopy(doc_of_kind(KUBERAY / "raycluster.yaml", "RayCluster"))
    limits = doc["spec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]["resources"]
    limits["limits"]["nvidia.com/gpu"] = 1
    limits["limits"]["memory"] = "64Gi"
    assert schema_errors(doc, crd_schema("RayCluster")) == []


def test_job_config_check_catches_an_unknown_key(tmp_path: Path):
    text = (KUBERAY / "rayjob.yaml").read_text()
    assert "gpus_per_replica:" in text
    broken = tmp_path / "rayjob.yaml"
    broken.write_text(text.replace("gpus_per_replica:", "gpu_per_replica:", 1))
    data = rayjob_config(broken)
    with pytest.raises(ConfigError, match="gpu_per_replica"):
        validate_config(data)


def test_shared_storage_check_catches_workers_that_cannot_see_a_path():
    spec = doc_of_kind(KUBERAY / "rayjob.yaml", "RayJob")["spec"]["rayClusterSpec"]
    worker = spec["workerGroupSpecs"][0]["template"]["spec"]

    no_data = copy.deepcopy(spec)
    mounts = no_data["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]["volumeMounts"]
    mounts[:] = [m for m in mounts if m["mountPath"] != "/data"]
    with pytest.raises(AssertionError, match="worker group gpu"):
        check_every_pod_sees(no_data, "/data/out/x", writable=True)

    elsewhere = copy.deepcopy(spec)
    for m in elsewhere["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]["volumeMounts"]:
        if m["mountPath"] == "/configs":
            m["mountPath"] = "/job-config"
    with pytest.raises(AssertionError, match="worker group gpu"):
        check_every_pod_sees(elsewhere, "/configs/prompts.jsonl", writable=False)

    other_claim = copy.deepcopy(spec)
    for v in other_claim["workerGroupSpecs"][0]["template"]["spec"]["volumes"]:
        if "persistentVolumeClaim" in v:
            v["persistentVolumeClaim"]["claimName"] = "another-claim"
    with pytest.raises(AssertionError, match="worker group gpu"):
        check_every_pod_sees(other_claim, "/data/out/x", writable=True)

    with pytest.raises(AssertionError, match="not on a shared volume"):
        check_every_pod_sees(spec, "/tmp/out/x", writable=True)  # per-Pod disk
    with pytest.raises(AssertionError, match="read-only"):
        check_every_pod_sees(spec, "/configs/out", writable=True)
    assert mount_holding(worker, "/dev/shm/x")["source"] is None  # emptyDir: not shared


def test_entrypoint_parser_rejects_an_unknown_option():
    # click's UsageError, or the copy of click that recent typer versions vendor
    with pytest.raises(Exception, match="No such option: --sett"):
        parse_run_args(["/configs/job.yaml", "--sett", "ray.address=auto"])


# --- Ray cluster launcher ------------------------------------------------------------------


def ray_cluster_schema() -> dict[str, Any]:
    import ray

    path = Path(ray.__file__).parent / "autoscaler" / "ray-schema.json"
    return json.loads(path.read_text())


def test_cluster_launcher_matches_ray_schema():
    config = yaml.safe_load(LAUNCHER.read_text())
    jsonschema.validate(config, ray_cluster_schema())


def test_cluster_launcher_passes_rays_own_checks():
    """What `ray up` does before it talks to AWS: fill defaults, then validate."""
    from ray.autoscaler._private.util import prepare_config
    from ray.autoscaler._private.util import validate_config as validate_cluster_config

    config = prepare_config(yaml.safe_load(LAUNCHER.read_text()))
    validate_cluster_config(config)
    assert config["provider"]["type"] == "aws"
    node_types = config["available_node_types"]
    head = node_types[config["head_node_type"]]
    assert not head["resources"].get("GPU")
    workers = [t for name, t in node_types.items() if name != config["head_node_type"]]
    gpu_workers = [t for t in workers if t["resources"].get("GPU", 0) >= 1]
    assert gpu_workers
    for node_type in gpu_workers:
        assert 1 <= node_type["min_workers"] <= node_type["max_workers"] <= config["max_workers"]
    assert config["head_start_ray_commands"] and config["worker_start_ray_commands"]
    assert config["file_mounts"]


def test_cluster_launcher_negative():
    schema = ray_cluster_schema()
    config = yaml.safe_load(LAUNCHER.read_text())
    typo = copy.deepcopy(config)
    typo["max_worker"] = typo.pop("max_workers")
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(typo, schema)
    bad_resources = copy.deepcopy(config)
    bad_resources["available_node_types"]["gpu_worker"]["resources"]["GPU"] = "1"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad_resources, schema)


def test_cluster_launcher_inputs_and_outputs_reach_every_node():
    """The generators on the GPU workers read the input and write the output. Inputs: the
    commands run in a folder that file_mounts syncs to every node (head and workers), and the
    job config's input is inside it. Outputs: object-store URIs, or paths under a container
    mount of an NFS/EFS file system mounted on every host; with s3:// the GPU workers carry an
    instance profile (the launcher gives one to the head only)."""
    config = yaml.safe_load(LAUNCHER.read_text())
    text = LAUNCHER.read_text()
    synced = {target for target, source in config["file_mounts"].items() if source == "."}
    workdirs = set(re.findall(r"\bcd (\S+) &&", text))
    assert workdirs and workdirs <= synced, f"commands run in {workdirs}, file_mounts {synced}"
    for config_file in re.findall(r"synth-ray run (deploy/\S+\.yaml)", text):
        job = yaml.safe_load((REPO / config_file).read_text())
        assert not Path(job["input"]["path"]).is_absolute(), "input outside the synced repo"
        assert (REPO / job["input"]["path"]).exists()

    # A `-v HOST:PATH` of the container is shared only if HOST is a network file system
    # (NFS/EFS) that initialization_commands mounts on every host; a host folder is per node.
    network_mounts = {
        word.strip("()")
        for cmd in config.get("initialization_commands") or []
        if re.search(r"\bmount -t (nfs4?|efs)\b", cmd)
        for word in cmd.split()
    }
    shared_mounts = [
        opt.split()[1].split(":")[1]
        for opt in config["docker"]["run_options"]
        if opt.startswith("-v ") and opt.split()[1].split(":")[0] in network_mounts
    ]
    outputs = documented_output_paths(text)
    outputs += documented_output_paths(readme_section("AWS with the Ray cluster launcher"))
    assert outputs
    for path in outputs:
        assert "://" in path or any(path.startswith(m.rstrip("/") + "/") for m in shared_mounts), (
            f"output.path={path}: not visible from the GPU workers (use s3:// or a shared mount)"
        )
    if any(path.startswith("s3://") for path in outputs):
        node_types = config["available_node_types"]
        for name, node_type in node_types.items():
            if name != config["head_node_type"] and node_type["resources"].get("GPU"):
                assert node_type["node_config"].get("IamInstanceProfile"), (
                    f"{name}: no instance profile, so its generators cannot write to S3"
                )


def test_cluster_launcher_installs_what_the_dockerfile_installs():
    config = yaml.safe_load(LAUNCHER.read_text())
    assert config["docker"]["image"] == dockerfile_arg("VLLM_IMAGE")
    setup = " ".join(config["setup_commands"])
    assert "[gpu]" in setup
    assert f"ray[default]=={dockerfile_arg('RAY_VERSION')}" in setup
    # The image's ENTRYPOINT would otherwise receive the launcher's `bash`.
    assert "--entrypoint=" in config["docker"]["run_options"]


# --- synth-ray job configs in deploy/ --------------------------------------------------------


@pytest.mark.parametrize("path", sorted((DEPLOY / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_deploy_job_configs_validate(path: Path):
    data = apply_overrides(yaml.safe_load(path.read_text()), ["ray.address=auto"])
    job = validate_config(data)
    assert job.resources.gpus_per_replica, "GPU configs set gpus_per_replica explicitly"
    assert job.input is not None and (REPO / job.input.path).exists()


def test_commands_in_comments_name_existing_files():
    """Paths deploy/... or configs/... named in comments and the README exist (relative to the
    repo root, where the commands run, or to the file naming them)."""
    pattern = r"(?<![\w/.])((?:deploy|configs)/[\w./-]+\.(?:yaml|sbatch))"
    for path in [*YAML_FILES, SBATCH, DOCKERFILE, DEPLOY / "README.md"]:
        for ref in re.findall(pattern, path.read_text()):
            assert (REPO / ref).exists() or (path.parent / ref).exists(), f"{path}: {ref}"


# --- Slurm ---------------------------------------------------------------------------------


def test_sbatch_syntax():
    subprocess.run(["bash", "-n", str(SBATCH)], check=True, timeout=30)
    text = SBATCH.read_text()
    assert text.startswith("#!/bin/bash")
    assert re.search(r"^#SBATCH --gpus-per-task=\d+", text, re.M)
    assert "--set ray.address=auto" in text


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
def test_sbatch_shellcheck():
    proc = subprocess.run(
        ["shellcheck", "--shell=bash", str(SBATCH)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


STUBS = {
    # scontrol show hostnames NODELIST -> one node per line
    "scontrol": 'printf "%s\\n" node-a node-b node-c',
    # srun [options] -w NODE COMMAND... -> log the node and command, run it
    "srun": textwrap.dedent(
        """\
        node=""
        while [[ $# -gt 0 && $1 == -* ]]; do
            if [[ $1 == -w ]]; then node=$2; shift; fi
            shift
        done
        echo "srun $node: $*" >> "$STUB_LOG"
        exec "$@"
        """
    ),
    "hostname": 'echo "fe80::1 10.0.0.7"',
    # `ray start --block` stays up until stopped; its pid is logged to check the cleanup
    "ray": 'echo "ray $*" >> "$STUB_LOG"; echo $$ >> "$STUB_LOG.pids"; exec /bin/sleep 60',
    # the wait loop: not ready on the first poll, ready on the second
    "python": textwrap.dedent(
        """\
        cat > /dev/null
        echo "poll $* RAY_ADDRESS=$RAY_ADDRESS" >> "$STUB_LOG"
        if [[ -e "$STUB_LOG.polled" ]]; then exit 0; fi
        touch "$STUB_LOG.polled"; exit 1
        """
    ),
    "sleep": "exit 0",  # the script's own waits: none
    "synth-ray": 'echo "synth-ray $* RAY_AUTH_MODE=$RAY_AUTH_MODE" >> "$STUB_LOG"; exit 3',
}


def test_sbatch_dry_run_with_stub_commands(tmp_path: Path):
    """The script's control flow with srun/scontrol/ray/python stubbed: head then workers,
    the wait loop, the driver's arguments, its exit status, and the cleanup of every step."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in STUBS.items():
        stub = bin_dir / name
        stub.write_text("#!/bin/bash\n" + body)
        stub.chmod(0o755)
    log = tmp_path / "log"
    config = tmp_path / "job.yaml"
    config.write_text("method: generate\n")
    env = {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "STUB_LOG": str(log),
        "SLURM_JOB_NODELIST": "node-[a-c]",
        "SLURM_GPUS_PER_TASK": "h100:4",
        "SLURM_CPUS_PER_TASK": "32",
    }
    proc = subprocess.run(
        ["bash", str(SBATCH), str(config), "--set", "resources.replicas=12"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 3, proc.stdout + proc.stderr  # the driver's status
    lines = log.read_text().splitlines()
    assert lines[0] == "srun node-a: hostname --ip-address"
    # `sleep` is a no-op stub, so the head and worker steps start concurrently: any order.
    steps = sorted(line for line in lines if line.startswith("srun node-") and " ray " in line)
    assert steps == [
        "srun node-a: ray start --head --node-ip-address=10.0.0.7 --port=6379 --num-cpus=32 "
        "--num-gpus=4 --dashboard-host=127.0.0.1 --block",
        "srun node-b: ray start --address=10.0.0.7:6379 --num-cpus=32 --num-gpus=4 --block",
        "srun node-c: ray start --address=10.0.0.7:6379 --num-cpus=32 --num-gpus=4 --block",
    ]
    assert len([line for line in lines if line.startswith("ray start")]) == 3
    polls = [line for line in lines if line.startswith("poll ")]
    assert polls == ["poll - 3 12 RAY_ADDRESS=10.0.0.7:6379"] * 2
    assert lines[-1] == (
        f"synth-ray run {config} --set ray.address=auto --no-progress "
        "--set resources.replicas=12 RAY_AUTH_MODE=disabled"
    )
    assert "stopping Ray on 3 nodes" in proc.stdout
    pids = [int(pid) for pid in Path(f"{log}.pids").read_text().split()]
    assert len(pids) == 3
    for pid in pids:  # gone, or a zombie waiting for its reparented parent to reap it
        status = Path(f"/proc/{pid}/status")
        assert not status.exists() or "State:\tZ" in status.read_text(), f"pid {pid} still runs"


def test_sbatch_refuses_a_missing_config(tmp_path: Path):
    proc = subprocess.run(
        ["bash", str(SBATCH), str(tmp_path / "nope.yaml")],
        env={"PATH": "/usr/bin:/bin", "SLURM_JOB_NODELIST": "n1"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2 and "not found" in proc.stderr


# --- Dockerfile ----------------------------------------------------------------------------


def test_dockerfile_entrypoint_runs_here():
    entrypoint = dockerfile_exec_form("ENTRYPOINT")
    cmd = dockerfile_exec_form("CMD")
    assert entrypoint == ["synth-ray"]
    proc = subprocess.run(
        [*synth_ray_command(), *entrypoint[1:], *cmd], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert "Usage" in proc.stdout


def test_dockerfile_installs_the_gpu_extra_and_the_package():
    instructions = dockerfile_instructions()
    froms = [args for instr, args in instructions if instr == "FROM"]
    assert froms == ["${VLLM_IMAGE}"] and ":" in dockerfile_arg("VLLM_IMAGE")
    runs = " ".join(args for instr, args in instructions if instr == "RUN")
    assert '".[gpu]"' in runs
    assert '"ray[default]==${RAY_VERSION}"' in runs
    copies = [args for instr, args in instructions if instr == "COPY"]
    assert any(c.startswith("pyproject.toml") for c in copies)
    assert any(c.startswith("synth_ray") for c in copies)
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
    assert "*" in ignore and "!synth_ray" in ignore and "!pyproject.toml" in ignore


def test_images_and_ray_versions_agree_with_the_dockerfile():
    tag = documented_tag()
    ray_version = dockerfile_arg("RAY_VERSION")
    images = []
    for _, doc in crd_docs():
        images += [value for key, value in walk(doc) if key == "image"]
        for key, value in walk(doc):
            if key == "rayVersion":
                assert value == ray_version, f"{doc['kind']}: rayVersion {value} != {ray_version}"
    assert images, "no image in the KubeRay manifests"
    for image in images:
        assert image == tag or image.endswith("/" + tag), f"image {image} is not {tag}"
    assert re.search(r'"ray\[default\]==' + re.escape(ray_version) + '"', LAUNCHER.read_text())


def test_ray_version_pin_is_installable_with_this_project():
    """The pinned Ray satisfies the project's own requirement."""
    from packaging.requirements import Requirement

    text = (REPO / "pyproject.toml").read_text()
    spec = re.search(r'"(ray\[default\][^"]*)"', text)
    assert spec
    assert Requirement(spec.group(1)).specifier.contains(dockerfile_arg("RAY_VERSION"))


def test_env_independent_paths():
    """Nothing in deploy/ points at this machine."""
    for path in DEPLOY.rglob("*"):
        if path.is_file() and path.suffix != ".gz":
            assert str(REPO) not in path.read_text(), path


# --- the dashboard's Jobs API is never open without token authentication -----------------

LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def head_start_commands() -> list[tuple[str, str]]:
    """Every `ray start --head` in deploy/ as (file, command line), line continuations joined."""
    found = []
    for path in [SBATCH, LAUNCHER]:
        text = path.read_text().replace("\\\n", " ")
        if path.suffix == ".yaml":
            text = " ".join(yaml.safe_load(text)["head_start_ray_commands"])
        for match in re.finditer(r"ray start --head[^\n&;]*", text):
            found.append((path.name, match.group(0)))
    return found


def test_every_head_start_command_was_found():
    assert sorted(name for name, _ in head_start_commands()) == [
        "aws-gpu.yaml",
        "synth-ray.sbatch",
    ]


@pytest.mark.parametrize("name, command", head_start_commands(), ids=lambda x: str(x)[:30])
def test_head_dashboard_listens_on_loopback_unless_token_auth(name: str, command: str):
    """A Ray head whose dashboard listens beyond loopback must have token auth on: its Jobs API
    runs any command it is sent. Neither the launcher nor Slurm script sets token auth, so
    both must bind loopback (the sbatch script checks its RAY_DASHBOARD_HOST at run time)."""
    match = re.search(r"--dashboard-host[= ](\S+)", command)
    host = match.group(1).strip("\"'") if match else "127.0.0.1"  # Ray's default
    if name.endswith(".sbatch"):
        assert host == "$dashboard_host", command
        assert 'dashboard_host="${RAY_DASHBOARD_HOST:-127.0.0.1}"' in SBATCH.read_text()
    else:
        assert host in LOOPBACK, f"{name}: {command}"


@pytest.mark.parametrize("name, spec", cluster_specs(), ids=[n for n, _ in cluster_specs()])
def test_kuberay_clusters_turn_token_auth_on(name: str, spec: dict[str, Any]):
    """KubeRay's head Service exposes the dashboard port to every pod of the cluster network:
    the RayCluster must turn Ray's token authentication on, and never publish the head with a
    LoadBalancer or NodePort service."""
    assert spec.get("authOptions", {}).get("mode") == "token", name
    assert spec["headGroupSpec"].get("serviceType", "ClusterIP") == "ClusterIP", name


def _sbatch_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name, body in STUBS.items():
        stub = bin_dir / name
        stub.write_text("#!/bin/bash\n" + body)
        stub.chmod(0o755)
    return {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "STUB_LOG": str(tmp_path / "log"),
        "SLURM_JOB_NODELIST": "node-a",
        "SLURM_GPUS_PER_TASK": "1",
        "SLURM_CPUS_PER_TASK": "4",
        **extra,
    }


@pytest.mark.parametrize(
    "env, exposed",
    [
        ({"RAY_DASHBOARD_HOST": "0.0.0.0"}, None),  # refused: no token auth
        ({"RAY_DASHBOARD_HOST": "0.0.0.0", "RAY_AUTH_MODE": "disabled"}, None),
        ({"RAY_DASHBOARD_HOST": "0.0.0.0", "RAY_AUTH_MODE": "token"}, "0.0.0.0"),
        ({}, "127.0.0.1"),
    ],
)
def test_sbatch_exposes_the_dashboard_only_with_token_auth(tmp_path: Path, env, exposed):
    config = tmp_path / "job.yaml"
    config.write_text("method: generate\n")
    proc = subprocess.run(
        ["bash", str(SBATCH), str(config)],
        cwd=tmp_path,
        env=_sbatch_env(tmp_path, **env),
        capture_output=True,
        text=True,
        timeout=120,
    )
    if exposed is None:
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert "exposes Ray's Jobs API" in proc.stderr and "RAY_AUTH_MODE=token" in proc.stderr
        assert not (tmp_path / "log").exists() or "ray start" not in (tmp_path / "log").read_text()
    else:
        log = (tmp_path / "log").read_text()
        assert f"--dashboard-host={exposed} " in log, log
