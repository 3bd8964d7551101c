"""deploy/: the Kubernetes manifests parse and hold what running on several machines needs (one beat,
node workers on GPU nodes named after their node, shared storage), and the systemd units pass
`systemd-analyze verify`."""

import configparser
import shutil
import subprocess

import pytest
import yaml
from django.conf import settings

DEPLOY = settings.BASE_DIR / "deploy"
NAMESPACE = "gpu-scheduler"


def manifests():
    documents = []
    for path in sorted((DEPLOY / "kubernetes").glob("*.yaml")):
        documents += [(path.name, document) for document in yaml.safe_load_all(path.read_text()) if document]
    return documents


def of_kind(kind):
    return {document["metadata"]["name"]: document for _, document in manifests() if document["kind"] == kind}


def pod_spec(workload):
    return workload["spec"]["template"]["spec"]


def test_every_manifest_parses_and_lives_in_the_namespace():
    documents = manifests()
    assert {document["kind"] for _, document in documents} >= {
        "Namespace", "ConfigMap", "Secret", "PersistentVolumeClaim", "Deployment", "Service", "DaemonSet", "Job"
    }
    for name, document in documents:
        assert document["apiVersion"] and document["metadata"]["name"], name
        if document["kind"] != "Namespace":
            assert document["metadata"]["namespace"] == NAMESPACE, name


def test_beat_runs_once_and_is_never_rolled_over_a_running_one():
    beat = of_kind("Deployment")["gpu-scheduler-beat"]
    assert beat["spec"]["replicas"] == 1 and beat["spec"]["strategy"]["type"] == "Recreate"
    assert "beat" in pod_spec(beat)["containers"][0]["command"]


def test_node_workers_run_on_gpu_nodes_with_their_gpus_and_the_node_name():
    [daemonset] = of_kind("DaemonSet").values()
    spec = pod_spec(daemonset)
    assert spec["nodeSelector"]
    [container] = spec["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] >= 1  # the NVIDIA device plugin's resource
    env = {item["name"]: item for item in container["env"]}
    assert env["NODE_AGENT_HOSTNAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    # Its queue is the one the scheduler sends the node's messages to (trainer.queue.node_queue).
    assert "--queues=node.$(NODE_AGENT_HOSTNAME)" in container["command"]


def test_workloads_refer_to_what_the_manifests_define():
    config, secrets, claims = of_kind("ConfigMap"), of_kind("Secret"), of_kind("PersistentVolumeClaim")
    workloads = list(of_kind("Deployment").values()) + list(of_kind("DaemonSet").values()) + list(of_kind("Job").values())
    for workload in workloads:
        name = workload["metadata"]["name"]
        if workload["kind"] != "Job":
            assert workload["spec"]["selector"]["matchLabels"].items() <= workload["spec"]["template"]["metadata"]["labels"].items(), name
        spec = pod_spec(workload)
        for container in spec["containers"]:
            sources = container["envFrom"]
            assert {s["configMapRef"]["name"] for s in sources if "configMapRef" in s} <= config.keys(), name
            assert {s["secretRef"]["name"] for s in sources if "secretRef" in s} <= secrets.keys(), name
            mounted = {mount["name"] for mount in container.get("volumeMounts", [])}
            assert mounted <= {volume["name"] for volume in spec.get("volumes", [])}, name
        for volume in spec.get("volumes", []):
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in claims, name
    web = of_kind("Deployment")["gpu-scheduler-web"]
    service = of_kind("Service")["gpu-scheduler-web"]
    assert service["spec"]["selector"].items() <= web["spec"]["template"]["metadata"]["labels"].items()


def test_the_web_and_the_nodes_share_the_storage_the_runs_are_in():
    """A resumed job may run on another node, and the web serves logs and checkpoints: the runs folder
    must be the same volume at the same path everywhere."""
    [config] = of_kind("ConfigMap").values()
    runs = config["data"]["TRAINING_RUNS_DIR"]
    for workload in (of_kind("Deployment")["gpu-scheduler-web"], *of_kind("DaemonSet").values()):
        spec = pod_spec(workload)
        shared = {v["name"] for v in spec["volumes"] if "persistentVolumeClaim" in v}
        mounts = [m["mountPath"] for m in spec["containers"][0]["volumeMounts"] if m["name"] in shared]
        assert any(runs.startswith(path.rstrip("/") + "/") for path in mounts), workload["metadata"]["name"]


def units():
    return sorted((DEPLOY / "systemd").glob("*.service"))


def read_unit(path):
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str
    parser.read_string(path.read_text())
    return parser


def test_every_unit_reads_the_environment_file_and_the_node_unit_agrees_with_its_queue():
    assert {path.name for path in units()} == {
        "gpu-scheduler-web.service", "gpu-scheduler-worker.service", "gpu-scheduler-beat.service",
        "gpu-scheduler-node.service", "gpu-scheduler-router.service",
    }
    for path in units():
        assert read_unit(path)["Service"]["EnvironmentFile"] == "/etc/gpu-scheduler/env", path.name
    node = read_unit(DEPLOY / "systemd" / "gpu-scheduler-node.service")["Service"]
    assert "Environment=NODE_AGENT_HOSTNAME=%H" in (DEPLOY / "systemd" / "gpu-scheduler-node.service").read_text()
    assert "--queues=node.%H" in node["ExecStart"]


def test_each_unit_with_a_metrics_directory_has_systemd_create_it_whichever_starts_first():
    # The worker imports the metrics at start, which fails if the directory is missing; only the
    # web's gunicorn.conf.py used to create it.
    for path in units():
        text = path.read_text()
        if "PROMETHEUS_MULTIPROC_DIR=/var/lib/gpu-scheduler/prometheus" in text:
            assert "gpu-scheduler/prometheus" in read_unit(path)["Service"]["StateDirectory"].split(), path.name


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_accepts_the_units(tmp_path):
    # verify checks that each ExecStart's program exists: point them at this checkout's environment.
    for path in units():
        text = path.read_text().replace("/opt/gpu-scheduler/.venv", str(settings.BASE_DIR / ".venv"))
        (tmp_path / path.name).write_text(text)
    result = subprocess.run(
        ["systemd-analyze", "verify", *sorted(str(p) for p in tmp_path.glob("*.service"))],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr
