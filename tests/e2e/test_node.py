"""The node Ferry's pods run on: the real kubelet and containerd, with Ferry's image. What Ferry's worker pods rely
on holds here as on a cluster's node: the restricted Pod Security level with the image's own user and a
read-only root filesystem, Secret and downward-API environment, the projected service-account token, termination
messages from the log tail, restart policies with their back-off, grace periods, and `kubectl logs`."""

from __future__ import annotations

import base64
import ipaddress
import itertools
import json
import signal
import time
from typing import Any

import pytest

from ferry_dev.node import CRASH_LOOP_BACK_OFF
from ferry_dev.stack import DevStack
from support.kubectl import Kubectl

JSON = dict[str, Any]
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

RESTRICTED = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


def make_pod(stack: DevStack, name: str, script: str, *, restart: str = "Never", **spec: Any) -> JSON:
    """A pod of Ferry's image running `sh -c script` as the image's user (no runAsUser: the image says 65532),
    within the restricted level, with an emptyDir at /tmp as Ferry's workers have."""
    assert stack.image is not None
    container: JSON = {
        "name": "main",
        "image": stack.image.reference,
        "imagePullPolicy": "Never",
        "command": ["sh", "-c", script],
        "securityContext": RESTRICTED,
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    pod_spec: JSON = {
        "restartPolicy": restart,
        "containers": [container],
        "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
        "volumes": [{"name": "tmp", "emptyDir": {}}],
        **spec,
    }
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": pod_spec}


def create(kubectl: Kubectl, pod: JSON) -> None:
    kubectl("create", "-f", "-", stdin=json.dumps(pod))


def finished(kubectl: Kubectl, name: str, timeout: float = 60) -> JSON:
    return kubectl.wait_for(
        "pod", name, lambda o: (o.get("status") or {}).get("phase") in ("Succeeded", "Failed"), timeout
    )


def container(pod: JSON) -> JSON:
    status: JSON = (pod.get("status", {}).get("containerStatuses") or [{}])[0]
    return status


def test_the_node_is_ready_and_pods_get_addresses_on_the_stacks_bridge(stack: DevStack, kubectl: Kubectl) -> None:
    assert stack.network is not None
    node = json.loads(kubectl("get", "node", "ferry-local", "-o", "json"))
    assert {c["type"]: c["status"] for c in node["status"]["conditions"]}["Ready"] == "True"
    assert {"type": "InternalIP", "address": stack.network.gateway} in node["status"]["addresses"]
    assert node["status"]["nodeInfo"]["containerRuntimeVersion"].startswith("containerd://1.6")
    assert not node["spec"].get("taints")  # the not-ready taint was lifted by the node lifecycle controller
    create(
        kubectl, make_pod(stack, "who", "id -u; id -g; touch /opt/x 2>/dev/null || echo read-only; echo ok > /tmp/t")
    )
    done = finished(kubectl, "who")
    assert done["status"]["phase"] == "Succeeded", kubectl("logs", "who")
    assert ipaddress.ip_address(done["status"]["podIP"]) in ipaddress.ip_network(stack.network.subnet)
    assert done["spec"]["nodeName"] == "ferry-local"  # bound by kube-scheduler
    assert kubectl("logs", "who") == "65532\n65532\nread-only\n"


def test_the_restricted_level_refuses_a_pod_that_may_escalate(stack: DevStack, kubectl: Kubectl) -> None:
    pod = make_pod(stack, "loose", "id")
    pod["spec"]["containers"][0]["securityContext"] = {}
    pod["spec"]["securityContext"] = {}
    refused = kubectl.run("create", "-f", "-", stdin=json.dumps(pod), check=False)
    assert refused.returncode != 0 and 'violates PodSecurity "restricted:latest"' in refused.stderr


def test_a_failed_containers_log_tail_is_its_termination_message_and_kubectl_logs_has_it(
    stack: DevStack, kubectl: Kubectl
) -> None:
    # One stream: the kubelet keeps the order of the lines of a stream, not across stdout and stderr.
    pod = make_pod(stack, "explains", "seq 1 200 >&2; echo the-cause >&2; exit 2")
    pod["spec"]["containers"][0]["terminationMessagePolicy"] = "FallbackToLogsOnError"
    create(kubectl, pod)
    failed = finished(kubectl, "explains")
    terminated = container(failed)["state"]["terminated"]
    assert (terminated["exitCode"], terminated["reason"]) == (2, "Error")
    message = terminated["message"]
    assert message.endswith("the-cause\n") and len(message) <= 2048 and message.count("\n") <= 80
    assert kubectl("logs", "explains", "--tail=2") == "200\nthe-cause\n"


def test_env_from_secret_configmap_and_the_downward_api(stack: DevStack, kubectl: Kubectl) -> None:
    kubectl("create", "secret", "generic", "creds", "--from-literal=token=s3cr3t", "--from-literal=user=u")
    kubectl("create", "configmap", "settings", "--from-literal=mode=fast")
    env: list[JSON] = [
        {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}}},
        {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "mode"}}},
        {"name": "ABSENT", "valueFrom": {"secretKeyRef": {"name": "nope", "key": "k", "optional": True}}},
        {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "GREETING", "value": "hello-$(POD)"},
    ]
    pod = make_pod(stack, "envs", 'echo "$TOKEN $MODE ${ABSENT:-none} $POD $IP $GREETING $CREDS_user"')
    pod["spec"]["containers"][0]["env"] = env
    pod["spec"]["containers"][0]["envFrom"] = [{"prefix": "CREDS_", "secretRef": {"name": "creds"}}]
    create(kubectl, pod)
    done = finished(kubectl, "envs")
    assert kubectl("logs", "envs") == f"s3cr3t fast none envs {done['status']['podIP']} hello-envs u\n"


def test_a_missing_secret_holds_the_container_until_it_exists(stack: DevStack, kubectl: Kubectl) -> None:
    pod = make_pod(stack, "waits", "echo $TOKEN")
    pod["spec"]["containers"][0]["env"] = [
        {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "late", "key": "t"}}}
    ]
    create(kubectl, pod)
    waiting = kubectl.wait_for(
        "pod",
        "waits",
        lambda o: (container(o).get("state") or {}).get("waiting", {}).get("reason") == "CreateContainerConfigError",
    )
    assert 'secret "late" not found' in container(waiting)["state"]["waiting"]["message"]
    kubectl("create", "secret", "generic", "late", "--from-literal=t=arrived")
    assert finished(kubectl, "waits")["status"]["phase"] == "Succeeded"
    assert kubectl("logs", "waits") == "arrived\n"


def test_the_projected_service_account_token_reaches_the_api_server_through_the_service(
    stack: DevStack, kubectl: Kubectl
) -> None:
    """In-cluster config (KUBERNETES_SERVICE_HOST, the projected token and CA), as Ferry's pods use it."""
    kubectl("create", "serviceaccount", "reader")
    program = (
        "import json; from kubernetes import client, config; config.load_incluster_config(); "
        "review = client.AuthenticationV1Api().create_self_subject_review({}); "
        "ns = open('/var/run/secrets/kubernetes.io/serviceaccount/namespace').read(); "
        "print(json.dumps({'user': review.status.user_info.username, 'ns': ns}))"
    )
    pod = make_pod(stack, "whoami", "", serviceAccountName="reader")
    pod["spec"]["containers"][0]["command"] = ["python", "-c", program]
    create(kubectl, pod)
    done = finished(kubectl, "whoami")
    assert done["status"]["phase"] == "Succeeded", kubectl("logs", "whoami")
    assert json.loads(kubectl("logs", "whoami")) == {
        "user": f"system:serviceaccount:{kubectl.namespace}:reader",
        "ns": kubectl.namespace,
    }


def test_on_failure_restarts_with_back_off_until_success(stack: DevStack, kubectl: Kubectl) -> None:
    # /tmp is the pod's emptyDir: it outlives the container's restarts.
    script = (
        "date +%s.%N >> /tmp/starts; n=$(wc -l < /tmp/starts); "
        'if [ "$n" -ge 3 ]; then cat /tmp/starts; exit 0; fi; exit 1'
    )
    create(kubectl, make_pod(stack, "flaky", script, restart="OnFailure"))
    done = finished(kubectl, "flaky", timeout=100)
    assert done["status"]["phase"] == "Succeeded"
    status = container(done)
    assert status["restartCount"] == 2 and status["lastState"]["terminated"]["exitCode"] == 1
    starts = [float(line) for line in kubectl("logs", "flaky").split()]
    first, second = (later - earlier for earlier, later in itertools.pairwise(starts))
    # The first restart comes at once, the next after the back-off (the stack caps it; 10 s by default).
    assert first < CRASH_LOOP_BACK_OFF <= second < CRASH_LOOP_BACK_OFF + 8, (first, second)


def test_a_killed_container_reports_137_and_restarts(stack: DevStack, kubectl: Kubectl) -> None:
    create(kubectl, make_pod(stack, "crashy", "sleep 600", restart="Always"))
    kubectl.wait_phase("pod", "crashy", "Running")
    first = container(kubectl.get("pod", "crashy"))["containerID"]
    assert stack.kill_pod(kubectl.namespace, "crashy", signal.SIGKILL)
    again = kubectl.wait_for(
        "pod", "crashy", lambda o: container(o).get("restartCount") == 1 and "running" in container(o).get("state", {})
    )
    terminated = container(again)["lastState"]["terminated"]
    assert (terminated["exitCode"], terminated["reason"]) == (137, "Error")
    assert container(again)["containerID"] != first


def test_graceful_deletion_sends_sigterm_and_the_grace_period_ends_in_sigkill(
    stack: DevStack, kubectl: Kubectl
) -> None:
    graceful = make_pod(
        stack, "graceful", "trap 'echo term; exit 0' TERM; echo trapping; while true; do sleep 0.1; done"
    )
    graceful["metadata"]["finalizers"] = ["test.ferry.dev/hold"]  # keeps the pod readable after the kubelet is done
    stubborn = make_pod(stack, "stubborn", "trap '' TERM; echo trapping; while true; do sleep 0.1; done")
    stubborn["spec"]["terminationGracePeriodSeconds"] = 3
    stubborn["metadata"]["finalizers"] = ["test.ferry.dev/hold"]
    for pod in (graceful, stubborn):
        create(kubectl, pod)
    for name in ("graceful", "stubborn"):
        kubectl.wait_for("pod", name, lambda o, n=name: "trapping" in kubectl.run("logs", n, check=False).stdout)
    started = time.monotonic()
    kubectl("delete", "pod", "graceful", "stubborn", "--wait=false")
    ended = kubectl.wait_for("pod", "graceful", lambda o: "terminated" in container(o).get("state", {}), timeout=30)
    assert container(ended)["state"]["terminated"]["exitCode"] == 0  # its trap ran: SIGTERM first
    midway = max(0.0, started + 1.5 - time.monotonic())
    time.sleep(midway)
    assert "running" in container(kubectl.get("pod", "stubborn")).get("state", {}), "killed before its grace period"
    killed = kubectl.wait_for("pod", "stubborn", lambda o: "terminated" in container(o).get("state", {}), timeout=30)
    assert container(killed)["state"]["terminated"]["exitCode"] == 137
    assert time.monotonic() - started >= 2.9
    for name in ("graceful", "stubborn"):
        kubectl("patch", "pod", name, "--type=merge", "-p", '{"metadata":{"finalizers":null}}')


def test_the_node_cannot_read_secrets_its_pods_do_not_use(kubectl: Kubectl) -> None:
    """The Node authorizer: a node reads only what the pods bound to it reference."""
    kubectl("create", "secret", "generic", "unrelated", "--from-literal=k=" + base64.b64encode(b"v").decode())
    as_node = kubectl.run(
        "get", "secret", "unrelated", "--as=system:node:ferry-local", "--as-group=system:nodes", check=False
    )
    assert as_node.returncode != 0 and "forbidden" in as_node.stderr.lower()
