"""deploy/k8s/: the kustomization rendered and every object validated against the Kubernetes
OpenAPI schemas, offline (kubernetes-validate bundles them), plus what the schemas cannot say:
probes on the health endpoints, replicas within the partitions, requests from the sizing
formula, Secrets referenced and never included, the policy copy equal to the repository's.

Rendering: the test's own reading of the kustomization (its `resources`, `namespace`, `labels`
and `configMapGenerator`, without the name hashes) always; `kubectl kustomize` too where
kubectl is installed, and both must give the same objects.
"""
from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
# The oldest Kubernetes still commonly run and the newest kubernetes-validate 1.37.0 bundles.
KUBERNETES_VERSIONS = ("1.31.0", "1.37.0")
DEFAULT_PARTITIONS = 6


def kustomization() -> dict:
    return yaml.safe_load((K8S / "kustomization.yaml").read_text())


def render_here() -> list[dict]:
    """The kustomization's objects as kustomize would make them, less the hash suffixes."""
    k = kustomization()
    objs: list[dict] = []
    for res in k["resources"]:
        objs += [o for o in yaml.safe_load_all((K8S / res).read_text()) if o]
    for gen in k.get("configMapGenerator", []):
        data = {}
        for f in gen.get("files", []):
            key, _, path = f.rpartition("=")
            data[key or Path(path).name] = (K8S / path).read_text()
        for lit in gen.get("literals", []):
            key, _, value = lit.partition("=")
            data[key] = value
        objs.append({"apiVersion": "v1", "kind": "ConfigMap",
                     "metadata": {"name": gen["name"]}, "data": data})
    labels = {}
    for entry in k.get("labels", []):
        labels.update(entry["pairs"])
    for o in objs:
        meta = o.setdefault("metadata", {})
        if o["kind"] != "Namespace":
            meta["namespace"] = k["namespace"]
        meta.setdefault("labels", {}).update(labels)
    for o in objs:
        if o["kind"] == "Deployment":
            for c in o["spec"]["template"]["spec"]["containers"]:
                for img in k.get("images", []):
                    if c["image"].split(":")[0] == img["name"]:
                        c["image"] = f"{img.get('newName', img['name'])}:{img['newTag']}"
    return objs


def render_kubectl() -> list[dict] | None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        return None
    done = subprocess.run([kubectl, "kustomize", str(K8S)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return [o for o in yaml.safe_load_all(done.stdout) if o]


def _unhash(objs: list[dict]) -> list[dict]:
    names = {}
    for o in objs:
        if o["kind"] == "ConfigMap":
            plain = re.sub(r"-[a-z0-9]{10}$", "", o["metadata"]["name"])
            names[o["metadata"]["name"]] = plain
            o["metadata"]["name"] = plain
    text = yaml.safe_dump(objs, sort_keys=True)
    for hashed, plain in names.items():
        text = text.replace(hashed, plain)
    return yaml.safe_load(text)


@pytest.fixture(scope="module")
def objects() -> list[dict]:
    return render_here()


def by_kind(objs, kind) -> dict:
    (obj,) = [o for o in objs if o["kind"] == kind]
    return obj


def worker(objs) -> dict:
    return by_kind(objs, "Deployment")["spec"]["template"]["spec"]["containers"][0]


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_object_is_valid_against_the_kubernetes_openapi_schemas(objects, version):
    kinds = []
    for obj in objects:
        kubernetes_validate.validate(obj, version, strict=True)  # raises on any error
        kinds.append(obj["kind"])
    assert sorted(kinds) == ["ConfigMap", "ConfigMap", "Deployment", "Namespace",
                             "PodDisruptionBudget", "Service"]


def test_the_validator_rejects_a_broken_deployment(objects):
    """The check above can fail: a misspelt field and a wrong type are both caught."""
    import copy
    bad = copy.deepcopy(by_kind(objects, "Deployment"))
    bad["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, KUBERNETES_VERSIONS[-1], strict=True)
    bad = copy.deepcopy(by_kind(objects, "Deployment"))
    bad["spec"]["replicas"] = "three"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, KUBERNETES_VERSIONS[-1], strict=True)


def test_kubectl_kustomize_renders_the_same_objects_where_kubectl_is_installed(objects):
    rendered = render_kubectl()
    if rendered is None:  # no kubectl: the test's own rendering above is the check
        assert shutil.which("kubectl") is None
        return
    rendered = _unhash(rendered)
    key = lambda o: (o["kind"], o["metadata"]["name"])  # noqa: E731
    assert sorted(map(key, rendered)) == sorted(map(key, objects))
    for got, want in zip(sorted(rendered, key=key), sorted(objects, key=key)):
        assert got["metadata"].get("namespace") == want["metadata"].get("namespace")
        assert got["metadata"]["labels"].items() >= want["metadata"]["labels"].items()
        if got["kind"] == "ConfigMap":
            assert got["data"] == want["data"]
        elif got["kind"] in ("Service", "PodDisruptionBudget"):
            assert got["spec"] == want["spec"]
    deploy = by_kind(rendered, "Deployment")
    assert deploy["spec"]["template"]["spec"]["containers"][0]["image"] == worker(objects)["image"]
    volumes = {v["name"]: v for v in deploy["spec"]["template"]["spec"]["volumes"]}
    assert volumes["policy"]["configMap"]["name"] == "settlewatch-policy"


def test_the_policy_configmap_is_the_repositorys_settlewatch_toml(objects):
    cm = next(o for o in objects if o["metadata"]["name"] == "settlewatch-policy")
    assert cm["data"]["settlewatch.toml"] == (ROOT / "settlewatch.toml").read_text(), \
        "deploy/k8s/settlewatch.toml differs from settlewatch.toml: copy it again"


def test_probes_ask_the_workers_health_endpoints_on_the_metrics_port(objects):
    c = worker(objects)
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    (port,) = c["ports"]
    env = next(o for o in objects if o["metadata"]["name"] == "settlewatch-env")["data"]
    assert port == {"name": "metrics", "containerPort": int(env["SETTLEWATCH_METRICS_PORT"])}
    assert env["SETTLEWATCH_METRICS_ADDR"] == "0.0.0.0"
    # Liveness gives the heartbeat's own limit (60 s) time before a restart.
    live = c["livenessProbe"]
    from streams.live.health import Health
    assert live["periodSeconds"] * live["failureThreshold"] >= Health().stale_after_s / 2


def test_scrape_annotations_point_at_the_metrics_port(objects):
    ann = by_kind(objects, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert ann == {"prometheus.io/scrape": "true", "prometheus.io/port": "9308",
                   "prometheus.io/path": "/metrics"}


def test_replicas_do_not_exceed_the_partitions(objects):
    env = next(o for o in objects if o["metadata"]["name"] == "settlewatch-env")["data"]
    partitions = int(env["SETTLEWATCH_PARTITIONS"])
    assert partitions == DEFAULT_PARTITIONS
    replicas = by_kind(objects, "Deployment")["spec"]["replicas"]
    assert 1 <= replicas <= partitions


def _sizing():
    spec = importlib.util.spec_from_file_location("sizing", K8S / "sizing.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_memory_requests_are_the_sizing_formulas_for_the_manifests_replicas(objects):
    sizing = _sizing()
    inputs = dict(sizing.DEFAULTS)
    assert inputs["replicas"] == by_kind(objects, "Deployment")["spec"]["replicas"]
    assert inputs["partitions"] == DEFAULT_PARTITIONS
    request, limit = sizing.memory_mib(**inputs)
    res = worker(objects)["resources"]
    assert res["requests"]["memory"] == f"{request}Mi"
    assert res["limits"]["memory"] == f"{limit}Mi"
    # The formula's inputs are stated where people look for them.
    readme = (ROOT / "deploy" / "README.md").read_text()
    assert f"{request}Mi request / {limit}Mi limit" in readme
    assert str(inputs["bytes_per_sale"]) in readme


def test_the_sizing_formula_grows_with_sales_and_refuses_idle_replicas():
    sizing = _sizing()
    small, _ = sizing.memory_mib(**{**sizing.DEFAULTS, "sales_per_day": 10_000})
    big, _ = sizing.memory_mib(**{**sizing.DEFAULTS, "sales_per_day": 1_000_000})
    assert small < big
    with pytest.raises(ValueError):
        sizing.memory_mib(**{**sizing.DEFAULTS, "replicas": 7})


def test_secrets_are_referenced_and_never_included(objects):
    assert not [o for o in objects if o["kind"] == "Secret"]
    text = "".join(p.read_text() for p in K8S.rglob("*.yaml"))
    assert "kind: Secret" not in text
    spec = by_kind(objects, "Deployment")["spec"]["template"]["spec"]
    secret_volumes = [v["secret"]["secretName"] for v in spec["volumes"] if "secret" in v]
    refs = [e["valueFrom"]["secretKeyRef"]["name"] for e in spec["containers"][0]["env"]
            if "valueFrom" in e]
    assert secret_volumes == ["settlewatch-kafka"] and refs == ["settlewatch-kafka"]
    am = yaml.safe_load((K8S / "optional" / "alertmanagerconfig.yaml").read_text())
    email = am["spec"]["receivers"][0]["emailConfigs"][0]
    assert email["authPassword"] == {"name": "settlewatch-smtp", "key": "password"}
    assert email["requireTLS"] is True
    # The password reaches the worker as a file (never an environment value).
    env = next(o for o in objects if o["metadata"]["name"] == "settlewatch-env")["data"]
    mount = {m["name"]: m["mountPath"] for m in spec["containers"][0]["volumeMounts"]}
    assert env["SETTLEWATCH_KAFKA_SASL_PASSWORD_FILE"].startswith(mount["kafka-credentials"])


def test_the_worker_runs_unprivileged_on_a_read_only_root(objects):
    spec = by_kind(objects, "Deployment")["spec"]["template"]["spec"]
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] == 10001  # the Dockerfile's user
    sc = spec["containers"][0]["securityContext"]
    assert sc["readOnlyRootFilesystem"] and not sc["allowPrivilegeEscalation"]
    mounts = {m["mountPath"] for m in spec["containers"][0]["volumeMounts"]}
    env = {e["name"]: e.get("value") for e in spec["containers"][0]["env"]}
    assert env["SETTLEWATCH_DATA_DIR"].startswith("/var/lib/settlewatch") and \
        "/var/lib/settlewatch" in mounts and "/tmp" in mounts


def test_the_servicemonitor_selects_the_service_and_sets_the_rules_job(objects):
    sm = yaml.safe_load((K8S / "optional" / "servicemonitor.yaml").read_text())
    assert sm["apiVersion"] == "monitoring.coreos.com/v1" and sm["kind"] == "ServiceMonitor"
    svc = by_kind(objects, "Service")
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    (endpoint,) = sm["spec"]["endpoints"]
    assert endpoint["port"] in [p["name"] for p in svc["spec"]["ports"]]
    assert {"targetLabel": "job", "replacement": "settlewatch"} in endpoint["relabelings"]
    # The Service selects the worker pods.
    pod_labels = by_kind(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= pod_labels.items()
