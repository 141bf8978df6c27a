"""Built-in resources registered from the start."""

from __future__ import annotations

from ferry.devstack.kubeapi.resources import ResourceDef


def builtin_resources() -> list[ResourceDef]:
    r = ResourceDef
    return [
        r(
            "",
            "v1",
            "namespaces",
            "Namespace",
            False,
            short_names=("ns",),
            status_subresource=True,
            verbs=("create", "delete", "get", "list", "patch", "update", "watch"),
        ),
        r(
            "",
            "v1",
            "pods",
            "Pod",
            True,
            short_names=("po",),
            categories=("all",),
            status_subresource=True,
            extra_subresources=("log",),
        ),
        r("", "v1", "secrets", "Secret", True),
        r("", "v1", "configmaps", "ConfigMap", True, short_names=("cm",)),
        r("", "v1", "serviceaccounts", "ServiceAccount", True, short_names=("sa",)),
        r("", "v1", "services", "Service", True, short_names=("svc",), categories=("all",), status_subresource=True),
        r("", "v1", "events", "Event", True, short_names=("ev",)),
        r("events.k8s.io", "v1", "events", "Event", True, short_names=("ev",)),
        r(
            "apps",
            "v1",
            "deployments",
            "Deployment",
            True,
            short_names=("deploy",),
            categories=("all",),
            status_subresource=True,
            has_generation=True,
        ),
        r("rbac.authorization.k8s.io", "v1", "roles", "Role", True),
        r("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding", True),
        r("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", False),
        r("rbac.authorization.k8s.io", "v1", "clusterrolebindings", "ClusterRoleBinding", False),
        r("coordination.k8s.io", "v1", "leases", "Lease", True),
        r(
            "apiextensions.k8s.io",
            "v1",
            "customresourcedefinitions",
            "CustomResourceDefinition",
            False,
            short_names=("crd", "crds"),
            categories=("api-extensions",),
            status_subresource=True,
            has_generation=True,
        ),
    ]
