"""deploy/k8s: every overlay renders, validates against the API schemas, and follows policy."""

from __future__ import annotations

import asyncio
import urllib.request

import pytest
import yaml

from tests.deploy.k8s import (
    K8S,
    KUBECTL,
    OVERLAYS,
    VERSIONS,
    find,
    pod_specs,
    render,
    schema_errors,
)
from tests.helpers import start_node, token

pytestmark = pytest.mark.skipif(KUBECTL is None, reason="kubectl not installed: cannot render "
                                                        "kustomize overlays")


def env_of(container: dict, config: dict) -> dict[str, str]:
    env = dict(config.get("data", {}))
    env.update({e["name"]: e.get("value", "") for e in container.get("env", [])})
    return env


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_renders_and_validates_against_api_schemas(overlay):
    """kubectl kustomize renders the overlay; every object passes the strict API schema."""
    objs = render(overlay)
    assert {"StatefulSet", "Deployment", "HorizontalPodAutoscaler", "Service",
            "PodDisruptionBudget", "NetworkPolicy", "ConfigMap"} <= {o["kind"] for o in objs}
    problems = []
    for version in VERSIONS:
        for o in objs:
            problems += [f"{version} {o['kind']}/{o['metadata']['name']}: {e}"
                         for e in schema_errors(o, version)]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_containers_have_resources_and_run_restricted(overlay):
    """Every container: requests+limits, non-root, no privilege escalation, read-only root."""
    for name, spec in pod_specs(render(overlay)):
        pod_sc = spec.get("securityContext", {})
        for c in spec["containers"] + spec.get("initContainers", []):
            where = f"{name}/{c['name']}"
            res = c.get("resources", {})
            assert {"cpu", "memory"} <= set(res.get("requests", {})), where
            assert {"cpu", "memory"} <= set(res.get("limits", {})), where
            sc = {**pod_sc, **c.get("securityContext", {})}
            assert sc.get("runAsNonRoot") is True and sc.get("runAsUser", 0) != 0, where
            assert sc.get("allowPrivilegeEscalation") is False, where
            assert sc.get("readOnlyRootFilesystem") is True, where
            assert sc.get("capabilities", {}).get("drop") == ["ALL"], where


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_grace_period_covers_prestop_and_drain(overlay):
    """terminationGracePeriodSeconds covers the drain's worst case computed from the
    manifest's settings: preStop sleep + drain window + drain timeout (one deadline for every
    step, the presence hand-over included) + the forced steps, + 5 s for the kubelet."""
    from roomcast.node.server import FORCED_STOP_SECONDS

    objs = render(overlay)
    dep = find(objs, "Deployment", "roomcast-edge")
    spec = dep["spec"]["template"]["spec"]
    edge = spec["containers"][0]
    config = next(o for o in objs if o["kind"] == "ConfigMap"
                  and o["metadata"]["name"].startswith("roomcast-config"))
    env = env_of(edge, config)
    pre_stop = edge["lifecycle"]["preStop"]["sleep"]["seconds"]
    worst = (pre_stop + float(env["ROOMCAST_DRAIN_WINDOW"]) + float(env["ROOMCAST_DRAIN_TIMEOUT"])
             + FORCED_STOP_SECONDS)
    assert spec["terminationGracePeriodSeconds"] >= worst + 5
    nats = find(objs, "StatefulSet", "nats")["spec"]["template"]["spec"]
    assert nats["terminationGracePeriodSeconds"] >= 30 + 10 + 5  # lame duck + its grace


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_hpa_targets_the_edge_deployment_on_cpu_and_connections(overlay):
    """The HPA scales the edge Deployment on CPU and on the adapter's connections metric."""
    objs = render(overlay)
    hpa = find(objs, "HorizontalPodAutoscaler", "roomcast-edge")
    ref = hpa["spec"]["scaleTargetRef"]
    assert (ref["kind"], ref["name"]) == ("Deployment", "roomcast-edge")
    find(objs, "Deployment", ref["name"])
    kinds = {m["type"]: m for m in hpa["spec"]["metrics"]}
    assert kinds["Resource"]["resource"]["name"] == "cpu"
    metric = kinds["Pods"]["pods"]["metric"]["name"]
    adapter = yaml.safe_load((K8S / "prometheus-adapter" / "values.yaml").read_text())
    assert metric in [r["name"]["as"] for r in adapter["rules"]["custom"]]
    down = hpa["spec"]["behavior"]["scaleDown"]
    assert down["stabilizationWindowSeconds"] >= 120 and down["selectPolicy"] == "Min"


async def test_hpa_metric_and_probe_paths_are_served_by_a_real_node(nats3):
    """A running node serves the probe paths on the configured port and exports the HPA metric."""
    if KUBECTL is None:
        pytest.skip("kubectl not installed")
    objs = render(OVERLAYS[0])
    edge = find(objs, "Deployment", "roomcast-edge")["spec"]["template"]["spec"]["containers"][0]
    metric = next(m for m in find(objs, "HorizontalPodAutoscaler", "roomcast-edge")["spec"]
                  ["metrics"] if m["type"] == "Pods")["pods"]["metric"]["name"]
    ports = {p["name"]: p["containerPort"] for p in edge["ports"]}
    config = next(o for o in objs if o["kind"] == "ConfigMap"
                  and o["metadata"]["name"].startswith("roomcast-config"))
    assert int(config["data"]["ROOMCAST_PORT"]) == ports["http"]
    assert int(config["data"]["ROOMCAST_INTERNAL_PORT"]) == ports["internal"]
    pod = find(objs, "Deployment", "roomcast-edge")["spec"]["template"]["metadata"]
    assert int(pod["annotations"]["prometheus.io/port"]) == ports["internal"]
    node = await start_node(nats3.urls)
    try:
        from tests.helpers import WsClient

        c = await WsClient.connect(node.port, token("probe"))  # so connections is non-zero
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            get = edge[probe]["httpGet"]
            assert get["port"] == "internal" and 1 <= edge[probe]["timeoutSeconds"] <= 5
            status = await asyncio.to_thread(
                lambda p=get["path"]: urllib.request.urlopen(
                    f"http://127.0.0.1:{node.internal_port}{p}", timeout=5).status)
            assert status == 200, (probe, get["path"])
        body = await asyncio.to_thread(lambda: urllib.request.urlopen(
            f"http://127.0.0.1:{node.internal_port}/metrics", timeout=5).read().decode())
        assert f"{metric} 1.0" in body.splitlines()
        await c.close()
    finally:
        await node.stop()


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_nats_cluster_wiring(overlay):
    """Routes name every StatefulSet pod through the headless service; edges list all three."""
    objs = render(overlay)
    sts = find(objs, "StatefulSet", "nats")
    headless = find(objs, "Service", sts["spec"]["serviceName"])
    assert headless["spec"]["clusterIP"] == "None"
    conf = next(o for o in objs if o["kind"] == "ConfigMap"
                and o["metadata"]["name"].startswith("nats-config"))["data"]["nats.conf"]
    for i in range(sts["spec"]["replicas"]):
        assert f"nats-{i}.{headless['metadata']['name']}:6222" in conf
    assert "include ./auth.conf" in conf
    edge = find(objs, "Deployment", "roomcast-edge")["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in edge["env"]}
    url = env["ROOMCAST_NATS_URL"]
    assert url.count("nats://") == sts["spec"]["replicas"] and "@" not in url  # no credentials
    assert env["ROOMCAST_NATS_USER"] == "roomcast-node"
    mounts = {m["name"]: m["mountPath"] for m in edge["volumeMounts"]}
    password_file = env["ROOMCAST_NATS_PASSWORD_FILE"]
    assert password_file.startswith(mounts["nats-auth"] + "/")
    spec = find(objs, "Deployment", "roomcast-edge")["spec"]["template"]["spec"]
    vol = next(v for v in spec["volumes"] if v["name"] == "nats-auth")["secret"]
    assert vol["secretName"].startswith("nats-auth")  # the dev overlay adds a hash suffix
    assert [i["path"] for i in vol["items"]] == [password_file.rsplit("/", 1)[1]]
    pvc = sts["spec"]["volumeClaimTemplates"][0]
    assert pvc["spec"]["resources"]["requests"]["storage"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_only_edges_reach_nats(overlay):
    """NetworkPolicy: NATS client port only from edge pods (or labelled NATS clients)."""
    objs = render(overlay)
    pol = find(objs, "NetworkPolicy", "nats")
    client_rules = [r for r in pol["spec"]["ingress"]
                    if any(p["port"] == 4222 for p in r.get("ports", []))]
    assert len(client_rules) == 1
    sources = [f["podSelector"]["matchLabels"] for f in client_rules[0]["from"]]
    assert {"app.kubernetes.io/name": "roomcast-edge"} in sources
    assert all(s for s in sources)  # no empty selector (= every pod)
    for rule in pol["spec"]["ingress"]:
        if not rule.get("from"):
            assert [p["port"] for p in rule["ports"]] == [8222]


def test_production_has_a_websocket_friendly_ingress_and_no_committed_secrets():
    objs = render("production")
    ing = find(objs, "Ingress", "roomcast")
    ann = ing["metadata"]["annotations"]
    assert int(ann["nginx.ingress.kubernetes.io/proxy-read-timeout"]) >= 3600
    assert not [o for o in objs if o["kind"] == "Secret"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_only_the_public_port_is_exposed(overlay):
    """The Service and the Ingress reach the public port only; the internal port (health,
    readiness, metrics, the HTTP server API behind its key) is open only to Prometheus pods
    and to labelled API clients of the namespace."""
    objs = render(overlay)
    svc = find(objs, "Service", "roomcast-edge")
    assert [p["targetPort"] for p in svc["spec"]["ports"]] == ["http"]
    for ing in (o for o in objs if o["kind"] == "Ingress"):
        for rule in ing["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                assert path["backend"]["service"]["port"] == {"name": "http"}
    pol = find(objs, "NetworkPolicy", "roomcast-edge")
    ports = sorted(tuple(p["port"] for p in r["ports"]) for r in pol["spec"]["ingress"])
    assert ports == [(8765,), (9090,), (9090,)]
    sources = [r["from"] for r in pol["spec"]["ingress"] if r["ports"][0]["port"] == 9090]
    assert sorted(str(s) for s in sources) == sorted(str(s) for s in [
        [{"namespaceSelector": {},
          "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}}],
        [{"podSelector": {"matchLabels": {"roomcast.io/api-client": "true"}}}]])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_streams_are_applied_by_an_init_step_and_only_verified_by_nodes(overlay):
    """The edge pod's init container runs `roomcast streams apply` with the edge's own
    settings and NATS credentials; the edge container only verifies (ROOMCAST_STREAMS)."""
    objs = render(overlay)
    spec = find(objs, "Deployment", "roomcast-edge")["spec"]["template"]["spec"]
    [init] = spec["initContainers"]
    edge = spec["containers"][0]
    assert init["command"] == ["roomcast", "streams", "apply"] and "--yes" not in init["command"]
    assert init["image"] == edge["image"] and init["envFrom"] == edge["envFrom"]
    config = next(o for o in objs if o["kind"] == "ConfigMap"
                  and o["metadata"]["name"].startswith("roomcast-config"))
    assert config["data"]["ROOMCAST_STREAMS"] == "verify"
    env = {e["name"]: e.get("value") for e in init["env"]}
    edge_env = {e["name"]: e.get("value") for e in edge["env"]}
    for name in ("ROOMCAST_NATS_URL", "ROOMCAST_NATS_USER", "ROOMCAST_NATS_PASSWORD_FILE"):
        assert env[name] == edge_env[name], name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_namespaces_file_is_one_configmap_seen_by_the_init_step_and_the_nodes(overlay):
    """The shipped namespaces.toml parses, its defaults are config.env's history settings,
    and the streams init step and the edge container mount the same file at the path
    ROOMCAST_NAMESPACES names (so both compute the same streams)."""
    from roomcast.namespaces import Namespace, parse

    objs = render(overlay)
    spec = find(objs, "Deployment", "roomcast-edge")["spec"]["template"]["spec"]
    config = next(o for o in objs if o["kind"] == "ConfigMap"
                  and o["metadata"]["name"].startswith("roomcast-config"))["data"]
    files = next(o for o in objs if o["kind"] == "ConfigMap"
                 and o["metadata"]["name"].startswith("roomcast-namespaces"))
    ns = parse(files["data"]["namespaces.toml"], Namespace(), source="namespaces.toml")
    assert ns.defaults.history == int(config["ROOMCAST_HISTORY_PER_ROOM"])
    assert ns.defaults.history_max_age == float(config["ROOMCAST_HISTORY_MAX_AGE"])
    path = config["ROOMCAST_NAMESPACES"]
    [volume] = [v for v in spec["volumes"]
                if v.get("configMap", {}).get("name") == files["metadata"]["name"]]
    for container in (spec["initContainers"][0], spec["containers"][0]):
        [mount] = [m for m in container["volumeMounts"] if m["name"] == volume["name"]]
        assert path == f"{mount['mountPath']}/namespaces.toml", container["name"]
