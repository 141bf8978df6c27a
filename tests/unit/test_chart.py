"""The Helm chart, rendered by Helm's own engine (helm-python-sdk binds Helm's Go library; no cluster needed)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
import yaml
from builders import WORKERS, new_blobcopy

from ferry.api.kinds import BLOB_COPY
from ferry.kinds.blobcopy.controller import manifest
from ferry.kube.manifests import worker_pod
from ferry.settings import OperatorSettings
from ferry_dev.binaries import ensure_tool
from support.monitoring import ENABLED, rendered

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "ferry"
RELEASE = "ferry"
NAMESPACE = "ferry-system"
IMAGE = "ferry:0.1.0"

FERRY_RESOURCES = ("databaseaccounts", "containercopyjobs", "inaccountrestores", "blobcopies")

Rule = tuple[str, str, str]  # (apiGroup, resource, verb)


def _rules(*groups: tuple[str, tuple[str, ...], tuple[str, ...]]) -> set[Rule]:
    return {(g, r, v) for g, resources, verbs in groups for r in resources for v in verbs}


# Exactly what the runtime does: watch (kopf), JSON-patch finalizers, apply status, run pods, post Events.
OPERATOR_NAMESPACED = _rules(
    ("ferry.dev", FERRY_RESOURCES, ("list", "watch", "patch")),
    ("ferry.dev", tuple(f"{r}/status" for r in FERRY_RESOURCES), ("patch",)),
    ("", ("pods",), ("list", "watch", "create", "delete")),
    ("", ("events",), ("create",)),
    # The worker service account and its RoleBinding, made in a namespace on first use.
    ("", ("serviceaccounts",), ("create",)),
    ("rbac.authorization.k8s.io", ("rolebindings",), ("create",)),
)
OPERATOR_CLUSTER = _rules(
    ("", ("namespaces",), ("list", "watch")),
    ("apiextensions.k8s.io", ("customresourcedefinitions",), ("get", "list", "watch")),
)
# Workers read their object and apply their part of its status; copy instances watch their account.
WORKER = _rules(
    ("ferry.dev", ("containercopyjobs", "inaccountrestores", "blobcopies"), ("get",)),
    ("ferry.dev", ("databaseaccounts",), ("get", "list", "watch")),
    ("ferry.dev", tuple(f"{r}/status" for r in FERRY_RESOURCES), ("patch",)),
)


@pytest.fixture(scope="module")
def chart() -> Iterator[helm.Chart]:
    with helm.Chart.load(CHART) as loaded:
        yield loaded


def render(chart: helm.Chart, values: dict[str, Any] | None = None, *, name: str = RELEASE) -> list[dict[str, Any]]:
    """Every object the chart renders (NOTES.txt aside), in template order."""
    manifests = chart.render(values, name=name, namespace=NAMESPACE, is_install=True)
    objects: list[dict[str, Any]] = []
    for path, text in sorted(manifests.items()):
        if path.endswith("NOTES.txt"):
            continue
        objects.extend(doc for doc in yaml.safe_load_all(text) if doc is not None)
    return objects


def one(objects: list[dict[str, Any]], kind: str, name: str | None = None, namespace: str | None = None) -> Any:
    found = [
        o
        for o in objects
        if o["kind"] == kind
        and (name is None or o["metadata"]["name"] == name)
        and (namespace is None or o["metadata"].get("namespace") == namespace)
    ]
    assert len(found) == 1, f"expected one {kind} {namespace}/{name}, found {len(found)}"
    return found[0]


def all_of(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def rule_set(role: dict[str, Any]) -> set[Rule]:
    out: set[Rule] = set()
    for rule in role["rules"]:
        if rule == WORKER_BIND:
            continue  # the one named rule: see test_the_operator_may_bind_only_the_worker_role
        assert set(rule) == {"apiGroups", "resources", "verbs"}, rule  # no resourceNames / nonResourceURLs
        out |= {(g, r, v) for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]}
    return out


# The operator makes the worker service account's RoleBinding in a namespace on first use: it may bind the
# worker ClusterRole, and nothing else.
WORKER_BIND = {
    "apiGroups": ["rbac.authorization.k8s.io"],
    "resources": ["clusterroles"],
    "verbs": ["bind"],
    "resourceNames": ["ferry-worker"],
}


def container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    deployment = one(objects, "Deployment")
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    result: dict[str, Any] = containers[0]
    return result


def env_of(c: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in c["env"]}


def test_lint_is_clean() -> None:
    for values in (None, {"watchNamespaces": ["team-a"], "metrics": {"serviceMonitor": {"enabled": True}}}, ENABLED):
        report = helm.lint(CHART, values, strict=True, namespace=NAMESPACE)
        assert report["errors"] == []
        assert [m for m in report["messages"] if m["severity"] >= 2] == []


def test_chart_metadata(chart: helm.Chart) -> None:
    meta = chart.metadata
    assert (meta["apiVersion"], meta["name"], meta["version"], meta["appVersion"]) == ("v2", "ferry", "0.1.0", "0.1.0")


@pytest.mark.parametrize(
    "values",
    [
        None,
        {"watchNamespaces": ["team-a", "team-b"], "workerNamespaces": ["team-c"]},
        {"metrics": {"enabled": False}},
        {"metrics": {"serviceMonitor": {"enabled": True}}, "logLevel": "debug", "imagePullSecrets": [{"name": "reg"}]},
        ENABLED,
    ],
)
def test_every_object_is_well_formed(chart: helm.Chart, values: dict[str, Any] | None) -> None:
    objects = render(chart, values)
    assert objects
    seen = set()
    for o in objects:
        assert isinstance(o, dict)
        assert o.get("apiVersion") and o.get("kind") and o.get("metadata", {}).get("name"), o
        key = (o["apiVersion"], o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"])
        assert key not in seen, f"rendered twice: {key}"
        seen.add(key)
        assert o["metadata"]["labels"]["app.kubernetes.io/instance"] == RELEASE


def test_deployment_defaults(chart: helm.Chart) -> None:
    objects = render(chart)
    deployment = one(objects, "Deployment", "ferry-operator", NAMESPACE)
    spec = deployment["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}
    pod = spec["template"]["spec"]
    assert spec["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items()
    assert pod["serviceAccountName"] == "ferry-operator"
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 65532,
        "runAsGroup": 65532,
        "fsGroup": 65532,
        "seccompProfile": {"type": "RuntimeDefault"},
    }

    c = container(objects)
    assert c["image"] == IMAGE
    assert "command" not in c  # the image's ENTRYPOINT is `ferry`
    assert c["args"] == [
        "operator",
        "--metrics-port",
        "8080",
        "--metrics-host",
        "0.0.0.0",
        "--liveness",
        "http://0.0.0.0:8081/healthz",
    ]
    assert c["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "runAsUser": 65532,
        "runAsGroup": 65532,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    # A read-only root filesystem needs a writable /tmp.
    assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"]
    assert {"name": "tmp", "emptyDir": {}} in pod["volumes"]

    env = env_of(c)
    assert env["FERRY_WORKER_IMAGE"] == IMAGE
    assert env["FERRY_WORKER_SERVICE_ACCOUNT"] == "ferry-worker"
    assert (env["FERRY_MAX_WORKERS"], env["FERRY_MAX_WORKERS_PER_NAMESPACE"]) == ("50", "20")

    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"metrics": 8080, "healthz": 8081}
    probe = c["livenessProbe"]["httpGet"]
    assert probe["path"] == "/healthz"
    assert ports[probe["port"]] == 8081  # the port kopf's --liveness endpoint listens on

    values = chart.values
    assert c["resources"] == values["resources"]
    assert c["resources"]["requests"] and c["resources"]["limits"]


def test_deployment_values(chart: helm.Chart) -> None:
    objects = render(
        chart,
        {
            "image": {"repository": "registry.example.com/ferry", "tag": "1.2.3", "pullPolicy": "Always"},
            "workerImage": "registry.example.com/ferry-worker:1.2.3",
            "watchNamespaces": ["team-a", "team-b"],
            "workers": {"maxConcurrent": 8, "maxConcurrentPerNamespace": 3},
            "logLevel": "debug",
            # Helm merges maps with the defaults; null removes a default key.
            "resources": {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"cpu": None, "memory": "2Gi"}},
            "nodeSelector": {"pool": "system"},
            "tolerations": [{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}],
            "podAnnotations": {"example.com/team": "data"},
            "imagePullSecrets": [{"name": "reg"}],
            "metrics": {"enabled": False},
        },
    )
    deployment = one(objects, "Deployment")
    pod = deployment["spec"]["template"]
    assert pod["metadata"]["annotations"] == {"example.com/team": "data"}
    assert pod["spec"]["nodeSelector"] == {"pool": "system"}
    assert pod["spec"]["tolerations"][0]["key"] == "dedicated"
    assert pod["spec"]["imagePullSecrets"] == [{"name": "reg"}]
    c = container(objects)
    assert (c["image"], c["imagePullPolicy"]) == ("registry.example.com/ferry:1.2.3", "Always")
    assert c["args"] == [
        "--verbose",
        "operator",
        "--metrics-port",
        "0",
        "--metrics-host",
        "0.0.0.0",
        "--liveness",
        "http://0.0.0.0:8081/healthz",
        "--namespace",
        "team-a",
        "--namespace",
        "team-b",
    ]
    env = env_of(c)
    assert env["FERRY_WORKER_IMAGE"] == "registry.example.com/ferry-worker:1.2.3"
    assert (env["FERRY_MAX_WORKERS"], env["FERRY_MAX_WORKERS_PER_NAMESPACE"]) == ("8", "3")
    assert c["resources"] == {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"memory": "2Gi"}}
    assert [p["name"] for p in c["ports"]] == ["healthz"]
    assert all_of(objects, "Service") == []
    # Worker pods pull with the same secrets, through their service account.
    for sa in all_of(objects, "ServiceAccount"):
        if sa["metadata"]["name"] == "ferry-worker":
            assert sa["imagePullSecrets"] == [{"name": "reg"}]


def test_cli_accepts_the_rendered_args(chart: helm.Chart) -> None:
    from ferry.cli.main import build_parser

    for values in (None, {"watchNamespaces": ["team-a", "team-b"], "logLevel": "debug"}):
        args = build_parser().parse_args(container(render(chart, values))["args"])
        assert args.command == "operator"
        assert args.metrics_port == 8080
        assert args.liveness == "http://0.0.0.0:8081/healthz"
    assert args.namespace == ["team-a", "team-b"]
    assert args.verbose


def test_rbac_cluster_wide_is_least_privilege(chart: helm.Chart) -> None:
    objects = render(chart)
    operator_role = one(objects, "ClusterRole", "ferry-operator")
    assert rule_set(operator_role) == OPERATOR_NAMESPACED | OPERATOR_CLUSTER
    binding = one(objects, "ClusterRoleBinding", "ferry-operator")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": "ferry-operator",
    }
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "ferry-operator", "namespace": NAMESPACE}]
    assert all_of(objects, "Role") == []

    assert rule_set(one(objects, "ClusterRole", "ferry-worker")) == WORKER
    # Workers reach only their own namespace: a RoleBinding, never a ClusterRoleBinding.
    assert [b["roleRef"]["name"] for b in all_of(objects, "ClusterRoleBinding")] == ["ferry-operator"]
    worker_binding = one(objects, "RoleBinding", "ferry-worker", NAMESPACE)
    assert worker_binding["roleRef"]["name"] == "ferry-worker"
    assert worker_binding["subjects"] == [{"kind": "ServiceAccount", "name": "ferry-worker", "namespace": NAMESPACE}]


def test_rbac_per_namespace(chart: helm.Chart) -> None:
    objects = render(chart, {"watchNamespaces": ["team-a", "team-b"]})
    # Cluster-wide, only what kopf needs to follow namespaces and discover its resources.
    assert rule_set(one(objects, "ClusterRole", "ferry-operator-cluster")) == OPERATOR_CLUSTER
    cluster_bindings = all_of(objects, "ClusterRoleBinding")
    assert [b["roleRef"]["name"] for b in cluster_bindings] == ["ferry-operator-cluster"]
    assert {o["metadata"]["name"] for o in all_of(objects, "ClusterRole")} == {"ferry-operator-cluster", "ferry-worker"}

    for ns in ("team-a", "team-b"):
        assert rule_set(one(objects, "Role", "ferry-operator", ns)) == OPERATOR_NAMESPACED
        binding = one(objects, "RoleBinding", "ferry-operator", ns)
        assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "ferry-operator"}
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "ferry-operator", "namespace": NAMESPACE}]
        # Worker namespaces default to the watched ones.
        one(objects, "ServiceAccount", "ferry-worker", ns)
        one(objects, "RoleBinding", "ferry-worker", ns)
    assert {r["metadata"]["namespace"] for r in all_of(objects, "Role")} == {"team-a", "team-b"}


@pytest.mark.parametrize(
    "values",
    [
        None,
        {"watchNamespaces": ["team-a"]},
        {"watchNamespaces": ["team-a"], "workerNamespaces": ["team-b"]},
        {"workerNamespaces": ["team-a", "team-b"]},
    ],
)
def test_no_secret_access_and_no_wildcards(chart: helm.Chart, values: dict[str, Any] | None) -> None:
    objects = render(chart, values)
    roles = all_of(objects, "Role") + all_of(objects, "ClusterRole")
    assert roles
    for role in roles:
        for group, resource, verb in rule_set(role):
            assert resource != "secrets" and not resource.startswith("secrets/"), role["metadata"]["name"]
            assert "*" not in (group, resource, verb), role["metadata"]["name"]
            assert verb not in ("escalate", "bind", "impersonate"), role["metadata"]["name"]
    # Every binding points at a rendered role and a rendered service account.
    role_names = {(r["kind"], r["metadata"].get("namespace"), r["metadata"]["name"]) for r in roles}
    accounts = {(sa["metadata"]["namespace"], sa["metadata"]["name"]) for sa in all_of(objects, "ServiceAccount")}
    for binding in all_of(objects, "RoleBinding") + all_of(objects, "ClusterRoleBinding"):
        ref = binding["roleRef"]
        scope = binding["metadata"].get("namespace") if ref["kind"] == "Role" else None
        assert (ref["kind"], scope, ref["name"]) in role_names
        for subject in binding["subjects"]:
            assert (subject["namespace"], subject["name"]) in accounts


def test_worker_service_accounts(chart: helm.Chart) -> None:
    def worker_namespaces(values: dict[str, Any] | None) -> set[str]:
        objects = render(chart, values)
        sas = [sa for sa in all_of(objects, "ServiceAccount") if sa["metadata"]["name"] == "ferry-worker"]
        bindings = [b for b in all_of(objects, "RoleBinding") if b["metadata"]["name"] == "ferry-worker"]
        namespaces = {sa["metadata"]["namespace"] for sa in sas}
        assert namespaces == {b["metadata"]["namespace"] for b in bindings}
        return namespaces

    assert worker_namespaces(None) == {NAMESPACE}
    assert worker_namespaces({"watchNamespaces": ["team-a"]}) == {"team-a"}
    assert worker_namespaces({"workerNamespaces": ["team-a", "team-b"]}) == {"team-a", "team-b"}
    assert worker_namespaces({"watchNamespaces": ["team-a"], "workerNamespaces": ["team-b"]}) == {"team-b"}
    objects = render(chart, {"workerServiceAccount": {"name": "copier"}})
    assert env_of(container(objects))["FERRY_WORKER_SERVICE_ACCOUNT"] == "copier"
    one(objects, "ServiceAccount", "copier", NAMESPACE)


def test_operator_selectors_do_not_match_worker_pods(chart: helm.Chart) -> None:
    objects = render(chart)
    pod = worker_pod(
        kind=BLOB_COPY,
        owner_name="copy",
        owner_uid="uid-1",
        namespace=NAMESPACE,
        role="copy",
        name="copy-copy-1",
        image=IMAGE,
        service_account="ferry-worker",
        args=["blobcopy", "--namespace", NAMESPACE, "--name", "copy"],
    )
    labels = pod["metadata"]["labels"]
    selector = one(objects, "Deployment")["spec"]["selector"]["matchLabels"]
    assert not selector.items() <= labels.items()
    assert not one(objects, "Service")["spec"]["selector"].items() <= labels.items()
    # Operator and workers run as the same user from the same image.
    assert pod["spec"]["securityContext"]["runAsUser"] == container(objects)["securityContext"]["runAsUser"]


def test_metrics_service_and_monitor(chart: helm.Chart) -> None:
    objects = render(chart)
    service = one(objects, "Service", "ferry-metrics", NAMESPACE)
    assert service["spec"]["ports"] == [{"name": "metrics", "port": 8080, "targetPort": "metrics", "protocol": "TCP"}]
    pod_labels = one(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert service["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
    assert service["metadata"]["annotations"]["prometheus.io/port"] == "8080"
    assert all_of(objects, "ServiceMonitor") == []

    objects = render(chart, {"metrics": {"service": {"scrapeAnnotations": False}, "serviceMonitor": {"enabled": True}}})
    assert "annotations" not in one(objects, "Service")["metadata"]
    monitor = one(objects, "ServiceMonitor", namespace=NAMESPACE)
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= one(objects, "Service")["metadata"]["labels"].items()


def test_release_name_prefixes_cluster_scoped_names(chart: helm.Chart) -> None:
    objects = render(chart, name="prod")
    assert one(objects, "Deployment")["metadata"]["name"] == "prod-ferry-operator"
    cluster_roles = {r["metadata"]["name"] for r in all_of(objects, "ClusterRole")}
    assert cluster_roles == {"prod-ferry-operator", "prod-ferry-worker"}
    assert env_of(container(objects))["FERRY_WORKER_SERVICE_ACCOUNT"] == "prod-ferry-worker"


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        ({"watchNamespaces": "team-a"}, "/watchNamespaces"),
        ({"workerNamespaces": ["Team_A"]}, "/workerNamespaces/0"),
        ({"logLevel": "verbose"}, "/logLevel"),
        ({"metrics": {"port": "http"}}, "/metrics/port"),
    ],
)
def test_values_schema_rejects_mistakes(chart: helm.Chart, values: dict[str, Any], complaint: str) -> None:
    with pytest.raises(helm.HelmValuesError, match=complaint):
        render(chart, values)


def test_notes_render(chart: helm.Chart) -> None:
    notes = chart.render({"workerNamespaces": ["team-a", "team-b"]}, name=RELEASE, namespace=NAMESPACE)[
        "ferry/templates/NOTES.txt"
    ]
    assert "team-a, team-b" in notes
    assert "ferry-worker" in notes


def test_chart_crds_equal_generated_crds(chart: helm.Chart) -> None:
    generated = sorted(p.name for p in (ROOT / "crds").glob("*.yaml"))
    assert generated
    assert sorted(p.name for p in (CHART / "crds").iterdir()) == generated
    for name in generated:
        assert (CHART / "crds" / name).read_bytes() == (ROOT / "crds" / name).read_bytes(), name
    # Helm sees them as the chart's CRDs (installed before the templates).
    loaded = {Path(c["filename"]).name: c for c in chart.crds}
    assert sorted(loaded) == generated
    for name, crd in loaded.items():
        doc = yaml.safe_load(crd["data"])
        assert doc["kind"] == "CustomResourceDefinition"
        assert doc["spec"]["group"] == "ferry.dev"
        assert doc["metadata"]["name"] == f"{doc['spec']['names']['plural']}.ferry.dev"
        assert name == f"ferry.dev_{doc['spec']['names']['plural']}.yaml"


def test_the_operator_may_bind_only_the_worker_role(chart: helm.Chart) -> None:
    for values in (None, {"watchNamespaces": ["team-a"]}):
        objects = render(chart, values)
        roles = all_of(objects, "Role") + all_of(objects, "ClusterRole")
        binders = [r for r in roles if WORKER_BIND in r["rules"]]
        assert binders and all("operator" in r["metadata"]["name"] for r in binders)
        worker = next(r for r in all_of(objects, "ClusterRole") if r["metadata"]["name"] == "ferry-worker")
        assert all(rule["verbs"] in (["get"], ["get", "list", "watch"], ["patch"]) for rule in worker["rules"])
        env = {e["name"]: e.get("value") for e in container(objects)["env"]}
        assert env["FERRY_WORKER_CLUSTER_ROLE"] == "ferry-worker"


def test_the_dashboard_is_for_grafanas_sidecar_and_shows_what_users_ask_for(chart: helm.Chart) -> None:
    assert all_of(render(chart), "ConfigMap") == [] and all_of(render(chart), "PrometheusRule") == []  # opt-in
    board = one(render(chart, ENABLED), "ConfigMap", "ferry-dashboard", NAMESPACE)
    assert board["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard, _ = rendered()
    titles = {p["title"] for p in dashboard["panels"]}
    for wanted in ("Objects by phase", "Bytes copied per second", "Items per second", "Throttled Cosmos requests",
                   "Write region changes", "Backup lag", "Backup gaps", "Restore progress", "Worker restarts",
                   "progress and time left"):  # fmt: skip
        assert any(wanted in t for t in titles), wanted
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}" and panel["targets"], panel["title"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(set(ids)) == len(ids)


def test_the_alert_rules_pass_promtool(tmp_path: Path) -> None:
    stalled = {"enabled": True, "stalledAfterMinutes": 45}
    _, groups = rendered({"metrics": {**ENABLED["metrics"], "prometheusRule": stalled}})
    alerts = {r["alert"]: r for g in groups for r in g["rules"]}
    assert set(alerts) == {
        "FerryOperatorDown", "FerryJobFailed", "FerryJobStalled", "FerryBackupLagging", "FerryBackupGap",
        "FerryBackupFailing", "FerryWorkersRestarting",
    }  # fmt: skip
    assert "[45m]" in alerts["FerryJobStalled"]["expr"] and "> 2700" in alerts["FerryJobStalled"]["expr"]
    assert 'up{job="ferry-metrics"}' in alerts["FerryOperatorDown"]["expr"]
    rules = tmp_path / "ferry.rules.yaml"
    rules.write_text(yaml.safe_dump({"groups": groups}))
    checked = subprocess.run(
        [str(ensure_tool("promtool")), "check", "rules", str(rules)], capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 7 rules found" in checked.stdout
    broken = tmp_path / "broken.rules.yaml"  # the checker is real: a bad expression fails it
    broken.write_text(yaml.safe_dump({"groups": [{"name": "x", "rules": [{"alert": "X", "expr": "rate(x[5m]"}]}]}))
    assert subprocess.run([str(ensure_tool("promtool")), "check", "rules", str(broken)], capture_output=True).returncode


def test_worker_resources_reach_the_pods_the_operator_starts(
    chart: helm.Chart, monkeypatch: pytest.MonkeyPatch
) -> None:
    """workers.resources, merged by Helm with the defaults, is what the operator reads and puts on its pods."""
    values = {"workers": {"resources": {"monitor": {"requests": {"cpu": "10m"}}, "blobCopy": {"limits": {"cpu": 2}}}}}
    env = env_of(container(render(chart, values)))
    monkeypatch.setenv("FERRY_WORKER_RESOURCES", env["FERRY_WORKER_RESOURCES"])
    resources = OperatorSettings().worker_resources
    assert resources.monitor.requests == {"cpu": "10m", "memory": "96Mi"}
    assert resources.backup.limits == {"memory": "2Gi"}

    spec = {
        "source": {"account": {"secretRef": {"name": "s", "key": "k"}}, "container": "src"},
        "destination": {"account": {"secretRef": {"name": "d", "key": "k"}}, "container": "dst"},
    }
    observed = new_blobcopy(spec, replace(WORKERS, resources=resources))
    pod = manifest(observed, "copy", "x-copy-1")
    assert pod["spec"]["containers"][0]["resources"] == {
        "requests": {"cpu": "250m", "memory": "256Mi"},
        "limits": {"cpu": "2", "memory": "512Mi"},  # the memory limit still follows the blocks in flight
    }


def test_worker_resources_that_are_not_quantities_are_refused_naming_the_value(chart: helm.Chart) -> None:
    with pytest.raises(Exception, match="/workers/resources/monitor/requests/cpu"):
        render(chart, {"workers": {"resources": {"monitor": {"requests": {"cpu": "a lot"}}}}})
