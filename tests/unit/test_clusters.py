"""The cluster configs: the launcher file passes Ray's own validation, KubeRay's manifest has the right shape."""

import copy
import json

import pytest
import yaml
from support import REPO

from perfray.errors import UnavailableError

CLUSTERS = REPO / "clusters"


def load(name):
    return yaml.safe_load((CLUSTERS / name).read_text())


def validate_launcher(config):
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(copy.deepcopy(config)))


def test_aws_launcher_config_passes_rays_validation_and_asks_for_100_t4():
    config = load("aws-t4-100.yaml")
    validate_launcher(config)
    workers, loadgen = config["available_node_types"]["t4_worker"], config["available_node_types"]["loadgen"]
    assert workers["min_workers"] == workers["max_workers"] == 100
    # the load-generator group perfray's placement expects: CPUs and the custom resource, no GPU
    assert loadgen["min_workers"] == loadgen["max_workers"] == 4 and config["max_workers"] == 104
    assert loadgen["resources"]["GPU"] == 0 and loadgen["resources"]["loadgen"] == loadgen["resources"]["CPU"] > 0
    assert workers["node_config"]["InstanceType"] == "g4dn.xlarge" and workers["resources"]["GPU"] == 1
    assert config["available_node_types"][config["head_node_type"]]["resources"]["GPU"] == 0
    assert any("pip install" in c and "perfray" in c for c in config["setup_commands"])


@pytest.mark.parametrize("breakage", [{"max_worker": 100}, {"max_workers": "lots"}])
def test_rays_validation_rejects_a_broken_launcher_config(breakage):
    import jsonschema

    config = {**load("aws-t4-100.yaml"), **breakage}
    with pytest.raises(jsonschema.ValidationError):
        validate_launcher(config)


# The RayCluster fields perfray's manifest may use, with the CRD's required ones (ray.io/v1, KubeRay 1.x) and
# no others: a misspelt field is an error here rather than a field KubeRay silently drops. Each pod template is
# then checked against Kubernetes' own PodTemplate schema (kubernetes-validate, strict).
_PARAMS = {"type": "object", "additionalProperties": {"type": "string"}}  # rayStartParams: strings only
_REPLICAS = {"type": "integer", "minimum": 0}
RAYCLUSTER = {
    "type": "object", "required": ["apiVersion", "kind", "metadata", "spec"], "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "ray.io/v1"}, "kind": {"const": "RayCluster"},
        "metadata": {"type": "object", "required": ["name"]},
        "spec": {
            "type": "object", "required": ["headGroupSpec"], "additionalProperties": False,
            "properties": {
                "rayVersion": {"type": "string"}, "enableInTreeAutoscaling": {"type": "boolean"},
                "suspend": {"type": "boolean"}, "authOptions": {"type": "object"},
                "autoscalerOptions": {"type": "object"}, "headServiceAnnotations": {"type": "object"},
                "headGroupSpec": {
                    "type": "object", "required": ["template"], "additionalProperties": False,
                    "properties": {"rayStartParams": _PARAMS, "template": {"type": "object"},
                                   "serviceType": {"type": "string"}, "headService": {"type": "object"},
                                   "enableIngress": {"type": "boolean"}}},
                "workerGroupSpecs": {"type": "array", "items": {
                    "type": "object", "additionalProperties": False,
                    "required": ["groupName", "maxReplicas", "minReplicas", "rayStartParams", "template"],
                    "properties": {"groupName": {"type": "string"}, "replicas": _REPLICAS, "minReplicas": _REPLICAS,
                                   "maxReplicas": _REPLICAS, "numOfHosts": {"type": "integer", "minimum": 1},
                                   "rayStartParams": _PARAMS, "template": {"type": "object"},
                                   "idleTimeoutSeconds": {"type": "integer"}, "suspend": {"type": "boolean"},
                                   "scaleStrategy": {"type": "object"}}}},
            }},
    },
}


def validate_kuberay(doc):
    import jsonschema
    import kubernetes_validate

    jsonschema.validate(doc, RAYCLUSTER)
    spec = doc["spec"]
    for template in [spec["headGroupSpec"]["template"], *(g["template"] for g in spec.get("workerGroupSpecs", []))]:
        kubernetes_validate.validate({"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "t"},
                                      "template": template}, kubernetes_validate.latest_version(), strict=True)


def test_kuberay_manifest_passes_the_raycluster_and_pod_template_schemas():
    validate_kuberay(load("kuberay-t4.yaml"))


@pytest.mark.parametrize("breakage", ["workerGroupSpec", "rayStartParams", "minReplicas", "resource", "env"])
def test_the_kuberay_check_rejects_a_broken_manifest(breakage):
    import jsonschema
    import kubernetes_validate

    doc = load("kuberay-t4.yaml")
    group = doc["spec"]["workerGroupSpecs"][0]
    container = group["template"]["spec"]["containers"][0]
    if breakage == "workerGroupSpec":  # misspelt: KubeRay would start a head and no workers
        doc["spec"]["workerGroupSpec"] = doc["spec"].pop("workerGroupSpecs")
    elif breakage == "rayStartParams":
        group["rayStartParams"]["num-gpus"] = 1  # the CRD wants strings
    elif breakage == "minReplicas":
        del group["minReplicas"]
    elif breakage == "resource":
        container["resource"] = container.pop("resources")
    else:
        container["env"].append({"value": "token"})  # an environment variable without a name
    with pytest.raises((jsonschema.ValidationError, kubernetes_validate.ValidationError)):
        validate_kuberay(doc)


def test_kuberay_manifest_structure():
    doc = load("kuberay-t4.yaml")
    assert doc["apiVersion"] == "ray.io/v1" and doc["kind"] == "RayCluster"
    spec = doc["spec"]
    head = spec["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert "nvidia.com/gpu" not in head["resources"]["limits"]
    group, loadgen = spec["workerGroupSpecs"]
    assert group["replicas"] == group["minReplicas"] == group["maxReplicas"] == 100
    assert loadgen["groupName"] == "loadgen" and json.loads(json.loads(loadgen["rayStartParams"]["resources"])) == {
        "loadgen": 16}  # KubeRay passes the quoted JSON to ray start --resources
    assert "nvidia.com/gpu" not in loadgen["template"]["spec"]["containers"][0]["resources"]["limits"]
    worker = group["template"]["spec"]["containers"][0]
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == 1 == worker["resources"]["requests"]["nvidia.com/gpu"]
    for container in (head, worker):
        assert container["image"].startswith(f"rayproject/ray:{spec['rayVersion']}")
        assert {"name": "RAY_AUTH_MODE", "value": "token"} in container["env"]
        assert not any("value" in e and "TOKEN" == e["name"][-5:] for e in container["env"])  # secrets by reference


def test_runtime_env_is_accepted_by_ray():
    from ray.runtime_env import RuntimeEnv

    env = RuntimeEnv(**load("runtime_env.yaml"))
    assert env["working_dir"] == "." and "results/" in env["excludes"]


def test_cluster_files_start_as_written():
    """Nothing refers to a path no one mounts, and the AMI resolves in any region (no placeholder id)."""
    assert " /perfray" not in (CLUSTERS / "kuberay-t4.yaml").read_text()  # nothing mounts such a path there
    config = load("aws-t4-100.yaml")
    assert all(path in config["file_mounts"] for c in config["setup_commands"] for path in ("/home/ubuntu/perfray",)
               if path in c)
    for node_type in config["available_node_types"].values():
        assert node_type["node_config"]["ImageId"].startswith(("resolve:ssm:/aws/service/", "ami-"))
        assert node_type["node_config"]["ImageId"] != "ami-0a0b3c7f2a9e1c3d5"
    doc = load("kuberay-t4.yaml")
    images = [c["image"] for c in doc["spec"]["headGroupSpec"]["template"]["spec"]["containers"]]
    images += [c["image"] for g in doc["spec"]["workerGroupSpecs"] for c in g["template"]["spec"]["containers"]]
    assert all(i.startswith("rayproject/ray:") for i in images)  # stock images: perfray comes with the job


def test_the_runtime_env_installs_what_pyproject_declares():
    """The job's runtime env ships perfray's dependencies and its GPU, FAISS and HDF5 extras (Ray is there)."""
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    wanted = [d for d in project["dependencies"] if not d.startswith("ray")] + extras["gpu"] + extras["faiss"] + extras["hdf5"]
    env = load("runtime_env.yaml")
    assert env["working_dir"] == "." and sorted(env["pip"]["packages"]) == sorted(wanted)
    from ray.runtime_env import RuntimeEnv

    RuntimeEnv(**env)  # Ray's own validation of the fields


class _StartingRay:
    """Stands in for the ``ray`` module's init/shutdown: its node times out during start-up ``failures`` times."""

    def __init__(self, failures: int, error: str = "The current node timed out during startup.") -> None:
        self.failures, self.error, self.inits, self.shutdowns = failures, error, 0, 0

    def init(self, **options):
        self.inits += 1
        if self.inits <= self.failures:
            raise Exception(self.error)
        return ("context", options)

    def shutdown(self):
        self.shutdowns += 1


def test_an_embedded_ray_that_times_out_starting_is_tried_again_then_one_line(monkeypatch):
    from perfray.cluster import runtime

    monkeypatch.setattr(runtime, "START_PAUSE_S", 0.0)
    twice = _StartingRay(2)
    assert runtime._start_embedded(twice, {"address": "local"}) == ("context", {"address": "local"})
    assert (twice.inits, twice.shutdowns) == (3, 2)
    gcs = _StartingRay(1, "Timed out waiting for file /tmp/ray/session_x/gcs_server_port_b051f7")  # seen in CI
    assert runtime._start_embedded(gcs, {}) == ("context", {}) and gcs.inits == 2
    never = _StartingRay(3)
    with pytest.raises(UnavailableError, match=r"^the embedded Ray did not start \(3 tries") as err:
        runtime._start_embedded(never, {})
    assert "\n" not in str(err.value) and never.inits == 3
    other = _StartingRay(1, "port 6379 in use")  # any other failure is not retried
    with pytest.raises(Exception, match="port 6379"):
        runtime._start_embedded(other, {})
    assert other.inits == 1


SLEEPER = """
import subprocess, sys, threading, time
threading.Thread(target=time.sleep, args=(60,), daemon=True).start()  # a second thread
if "--spawn" in sys.argv:  # a child of its own (the dashboard's module processes)
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
print("up", flush=True)
time.sleep(60)
"""


def _nice_of_threads(pid):
    import os

    return {os.getpriority(os.PRIO_PROCESS, int(t)) for t in os.listdir(f"/proc/{pid}/task")}


@pytest.mark.skipif(not __import__("os").path.isdir("/proc/self/task"), reason="needs Linux /proc")
def test_an_embedded_rays_observers_and_their_children_are_lowered_and_nothing_else(tmp_path):
    """Ray's dashboard, dashboard agent and monitors (this process's descendants, named by their program) go to
    OBSERVER_NICE with every thread and child; a raylet whose options name the agent's script, and a dashboard
    that is not ours, keep their priority."""
    import os
    import subprocess
    import sys

    from perfray.cluster import runtime

    (tmp_path / "dashboard").mkdir()
    dashboard = tmp_path / "dashboard" / "dashboard.py"
    dashboard.write_text(SLEEPER)
    raylet = tmp_path / "raylet.py"
    raylet.write_text(SLEEPER)
    ours = subprocess.Popen([sys.executable, "-u", str(dashboard), "--spawn"], stdout=subprocess.PIPE, text=True)
    like_raylet = subprocess.Popen([sys.executable, str(raylet), f"--agent_command={tmp_path}/dashboard/agent.py"],
                                   stdout=subprocess.PIPE, text=True)
    # not ours: started by a shell that exits at once, so it belongs to init, not to this process
    foreign = subprocess.run(f"{sys.executable} {dashboard} >/dev/null 2>&1 & echo $!", shell=True,
                             capture_output=True, text=True, check=True)
    foreign_pid, child, before = int(foreign.stdout), None, os.getpriority(os.PRIO_PROCESS, 0)
    try:
        assert ours.stdout.readline() == "up\n" and like_raylet.stdout.readline() == "up\n"
        child = runtime._children_by_parent()[ours.pid][0]
        lowered = runtime.quiet_observers()
        assert ours.pid in lowered and child in lowered
        assert like_raylet.pid not in lowered and foreign_pid not in lowered
        assert _nice_of_threads(ours.pid) == {runtime.OBSERVER_NICE} and len(os.listdir(f"/proc/{ours.pid}/task")) >= 2
        assert _nice_of_threads(child) == {runtime.OBSERVER_NICE}
        assert _nice_of_threads(like_raylet.pid) == {before} and _nice_of_threads(foreign_pid) == {before}
        assert os.getpriority(os.PRIO_PROCESS, 0) == before  # the driver itself keeps its priority
    finally:
        for proc in (ours, like_raylet):
            proc.kill()
            proc.wait()
        for pid in (foreign_pid, child or foreign_pid):
            try:
                os.kill(pid, 9)
            except OSError:
                pass


@pytest.mark.skipif(not __import__("os").path.isdir("/proc/self/task"), reason="needs Linux /proc")
def test_a_failed_embedded_start_leaves_no_gcs_or_raylet_running(tmp_path):
    """ray.shutdown() knows no node that never finished starting: the GCS (and raylet) it left are killed before
    the next try; anything else this process started is left alone."""
    import subprocess
    import sys

    from perfray.cluster import runtime

    (tmp_path / "gcs").mkdir()
    (tmp_path / "gcs" / "gcs_server").write_text(SLEEPER)
    (tmp_path / "server.py").write_text(SLEEPER)
    gcs = subprocess.Popen([sys.executable, str(tmp_path / "gcs" / "gcs_server"), "--port=0"], stdout=subprocess.PIPE,
                           text=True)
    other = subprocess.Popen([sys.executable, str(tmp_path / "server.py")], stdout=subprocess.PIPE, text=True)
    try:
        assert gcs.stdout.readline() == "up\n" and other.stdout.readline() == "up\n"
        runtime._stop_half_started()
        assert gcs.wait(10) == -9 and other.poll() is None
    finally:
        for proc in (gcs, other):
            proc.kill()
            proc.wait()
