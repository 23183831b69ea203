"""The Kubernetes examples in deploy/kubernetes/: valid against the API schemas (offline, strict),
and agreeing with the proxy's own defaults: port, probe paths, data folder, config file, stop
deadline, store size and memory."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
import yaml

from proxy.cli import SHUTDOWN_SECONDS
from proxy.commands.check import problems
from proxy.commands.probe import PATHS
from proxy.config import Settings, load_settings

ROOT = Path(__file__).resolve().parent.parent
MANIFESTS = sorted((ROOT / "deploy" / "kubernetes").glob("*.yaml"))
# The oldest Kubernetes the examples are for: native sidecars (restartPolicy: Always on an init
# container) are on by default from 1.29.
KUBERNETES = "1.30.0"
BENCH_PEAK_RSS = 150 * 1024**2  # docs/performance.md: bench/memory.py's bound on VmHWM
IMAGE_DATA_DIR = "/var/lib/metrics-proxy"  # the Dockerfile's volume (tests/test_container.py)


def documents(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def quantity(text: str | int) -> float:
    units = {"Ki": 1024, "Mi": 1024**2, "Gi": 1024**3, "m": 0.001}
    text = str(text)
    for unit, factor in units.items():
        if text.endswith(unit):
            return float(text[: -len(unit)]) * factor
    return float(text)


def test_there_is_a_sidecar_and_a_shared_tier_example():
    assert {p.name for p in MANIFESTS} == {"sidecar.yaml", "shared-tier.yaml"}


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_every_manifest_is_valid_against_the_kubernetes_schemas(path):
    kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate")
    for document in documents(path):
        kubernetes_validate.validate(document, KUBERNETES, strict=True)


def proxy_pods(path: Path):
    """(pod spec, proxy container, config map data by name, workload) of each workload."""
    docs = documents(path)
    config_maps = {d["metadata"]["name"]: d["data"] for d in docs if d["kind"] == "ConfigMap"}
    for workload in docs:
        if workload["kind"] not in ("Deployment", "StatefulSet"):
            continue
        pod = workload["spec"]["template"]["spec"]
        for container in pod.get("initContainers", []) + pod["containers"]:
            if container["image"].startswith("metrics-proxy:"):
                yield pod, container, config_maps, workload


def proxy_settings(pod, container, config_maps, tmp_path: Path) -> tuple[Settings, str]:
    """The proxy's settings as the pod starts it: the config map's file where the container finds
    it, the container's plain environment (the Secret's tokens left out), the image's defaults.
    check-config finds nothing wrong with them."""
    env = {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}
    config_path = Path(env.pop("METRICS_PROXY_CONFIG"))
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volume = {v["name"]: v for v in pod["volumes"]}[mounts[str(config_path.parent)]]
    text = config_maps[volume["configMap"]["name"]][config_path.name]
    env.setdefault("METRICS_PROXY_HOST", "0.0.0.0")  # the image's ENV
    env.setdefault("METRICS_PROXY_DATA_DIR", IMAGE_DATA_DIR)
    local = tmp_path / config_path.name
    local.write_text(text)
    assert problems(str(local), env) == []
    return load_settings(str(local), environ=env), text


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_the_manifests_agree_with_the_proxys_defaults(path, tmp_path):
    defaults = Settings()
    found = list(proxy_pods(path))
    assert found
    for pod, container, config_maps, workload in found:
        settings, text = proxy_settings(pod, container, config_maps, tmp_path)
        # the config file sets neither the port nor the data folder: the defaults and the image's hold
        assert "port" not in tomllib.loads(text) and settings.port == defaults.port
        assert settings.host == "0.0.0.0"  # the kubelet probes the pod's address
        [port] = container["ports"]
        assert port["containerPort"] == settings.port
        probes = {kind: container[f"{kind}Probe"]["httpGet"] for kind in ("startup", "liveness", "readiness")}
        assert probes["liveness"]["path"] == probes["startup"]["path"] == PATHS["health"]
        assert probes["readiness"]["path"] == PATHS["ready"]
        assert {p["port"] for p in probes.values()} == {port["name"]}
        # the data folder is a volume of its own, where the proxy keeps its store
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        assert settings.data_dir == IMAGE_DATA_DIR and settings.data_dir in mounts
        data_volume = mounts[settings.data_dir]
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        claims = {c["metadata"]["name"] for c in workload["spec"].get("volumeClaimTemplates", [])}
        if data_volume in claims:
            [template] = [c for c in workload["spec"]["volumeClaimTemplates"] if c["metadata"]["name"] == data_volume]
            size = quantity(template["spec"]["resources"]["requests"]["storage"])
        else:
            size = quantity(volumes[data_volume]["emptyDir"]["sizeLimit"])
        # room for the bounded store plus the workers' journal files and a quarantined copy
        assert size >= 1.5 * settings.max_db_size, (size, settings.max_db_size)
        # the stop: in-flight requests, then the final flush
        assert settings.upstream is not None
        assert pod["terminationGracePeriodSeconds"] > SHUTDOWN_SECONDS + settings.upstream.shutdown_flush_timeout
        # memory: the benchmark's bound on the peak, per process, plus the read cache
        limits = container["resources"]["limits"]
        assert quantity(limits["memory"]) >= BENCH_PEAK_RSS + settings.read_cache_max_bytes
        assert quantity(container["resources"]["requests"]["memory"]) <= quantity(limits["memory"])
        context = container["securityContext"]
        assert context["runAsNonRoot"] and context["runAsUser"] != 0
        assert container["args"] == ["serve"]


def test_the_sidecar_points_the_sdk_at_the_proxy_beside_it():
    [(pod, container, _, _)] = list(proxy_pods(ROOT / "deploy" / "kubernetes" / "sidecar.yaml"))
    assert container.get("restartPolicy") == "Always"  # a native sidecar: stops after the app
    [app] = pod["containers"]
    urls = [e["value"] for e in app["env"] if e.get("value", "").startswith("http")]
    assert urls == [f"http://127.0.0.1:{Settings().port}/api"]


def test_the_shared_tier_has_its_own_volume_per_replica_a_service_and_a_disruption_budget():
    docs = documents(ROOT / "deploy" / "kubernetes" / "shared-tier.yaml")
    kinds = {d["kind"] for d in docs}
    assert {"StatefulSet", "Service", "PodDisruptionBudget", "Secret", "ConfigMap"} <= kinds
    [stateful] = [d for d in docs if d["kind"] == "StatefulSet"]
    assert stateful["spec"]["replicas"] >= 2 and stateful["spec"]["volumeClaimTemplates"]
    [(pod, container, _, _)] = list(proxy_pods(ROOT / "deploy" / "kubernetes" / "shared-tier.yaml"))
    assert [e["secretRef"]["name"] for e in container["envFrom"]] == [
        d["metadata"]["name"] for d in docs if d["kind"] == "Secret"]
    secret = next(d for d in docs if d["kind"] == "Secret")
    assert "METRICS_PROXY_UPSTREAM_TOKENS" in secret["stringData"]
