"""The node agent on the real control plane: it registers its Node, binds pods, runs them as local processes
with their environment and volumes (the projected service-account token among them), reports their status
as a kubelet does, serves `kubectl logs`, and answers to the Node authorizer and to Pod Security admission."""

from __future__ import annotations

import base64
import json
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from nodeagent_fixtures import Kube, group_alive, make_pod, wait_for

from ferry_dev.nodeagent.podrunner import PodRunner
from ferry_dev.stack import DevStack
from support.kubectl import Kubectl

JSON = dict[str, Any]
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]


class Node:
    def __init__(self, stack: DevStack, kubectl: Kubectl) -> None:
        self.stack = stack
        self.kubectl = kubectl
        self.namespace = kubectl.namespace
        self.kube = Kube(stack.kubeconfig, kubectl.namespace)

    @property
    def runner(self) -> PodRunner:
        assert self.stack.runner is not None
        return self.stack.runner

    def pid(self, name: str) -> int | None:
        return self.runner.process_pid(self.namespace, name)

    def log(self, name: str) -> str:
        path = self.runner.log_path(self.namespace, name)
        return path.read_text() if path is not None and path.exists() else ""


@pytest.fixture
def node(stack: DevStack, kubectl: Kubectl) -> Iterator[Node]:
    yield Node(stack, kubectl)


def test_the_node_is_registered_and_ready(node: Node) -> None:
    listed = json.loads(node.kubectl("get", "node", "ferry-local", "-o", "json"))
    ready = {c["type"]: c["status"] for c in listed["status"]["conditions"]}
    assert ready["Ready"] == "True"
    assert listed["status"]["addresses"][0] == {"type": "InternalIP", "address": "127.0.0.1"}
    assert listed["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"] > 0


def test_exit_codes_phases_and_status(node: Node) -> None:
    node.kube.create("pods", make_pod("fails", "echo $X; exit 3", env=[{"name": "X", "value": "x1"}]))
    node.kube.create("pods", make_pod("works", "echo fine"))

    failed = node.kube.wait_phase("fails", "Failed", "Succeeded")
    assert failed["spec"]["nodeName"] == "ferry-local"  # bound by a Binding, as a scheduler binds
    state = failed["status"]["containerStatuses"][0]["state"]["terminated"]
    assert (state["exitCode"], state["reason"]) == (3, "Error")
    assert state["startedAt"] and state["finishedAt"]
    assert failed["status"]["podIP"] == "127.0.0.1" and failed["status"]["startTime"]
    conditions = {c["type"]: c["status"] for c in failed["status"]["conditions"]}
    assert conditions["PodScheduled"] == "True" and conditions["Ready"] == "False"
    assert node.log("fails") == "x1\n"
    succeeded = node.kube.wait_phase("works", "Succeeded", "Failed")
    assert succeeded["status"]["containerStatuses"][0]["state"]["terminated"]["reason"] == "Completed"


def test_logs_reach_kubectl_through_the_api_server(node: Node) -> None:
    node.kube.create("pods", make_pod("talker", "for i in 1 2 3; do echo line-$i; done; sleep 60"))
    wait_for(lambda: "line-3" in node.log("talker"))
    assert node.kubectl("logs", "talker") == "line-1\nline-2\nline-3\n"
    assert node.kubectl("logs", "talker", "--tail=1") == "line-3\n"


def test_a_failed_containers_log_tail_is_its_termination_message(node: Node) -> None:
    pod = make_pod("explains", "seq 1 200; echo the-cause >&2; exit 2")
    pod["spec"]["containers"][0]["terminationMessagePolicy"] = "FallbackToLogsOnError"
    node.kube.create("pods", pod)
    failed = node.kube.wait_phase("explains", "Failed")
    message = failed["status"]["containerStatuses"][0]["state"]["terminated"]["message"]
    assert message.endswith("the-cause") and len(message) <= 2048 and message.count("\n") <= 79


def test_env_from_secret_configmap_and_fields(node: Node, tmp_path: Path) -> None:
    secret = base64.b64encode(b"s3cr3t").decode()
    node.kube.create(
        "secrets", {"metadata": {"name": "creds"}, "data": {"token": secret, "user": base64.b64encode(b"u").decode()}}
    )
    node.kube.create("configmaps", {"metadata": {"name": "settings"}, "data": {"mode": "fast"}})
    out = tmp_path / "env.txt"
    env: list[JSON] = [
        {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}}},
        {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "mode"}}},
        {"name": "ABSENT", "valueFrom": {"secretKeyRef": {"name": "nope", "key": "k", "optional": True}}},
        {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "GREETING", "value": "hello-$(POD)"},
    ]
    script = f'echo "$TOKEN $MODE ${{ABSENT:-none}} $POD $IP $GREETING $CREDS_user $KUBECONFIG" > {out}'
    pod = make_pod("envs", script, env=env)
    pod["spec"]["containers"][0]["envFrom"] = [{"prefix": "CREDS_", "secretRef": {"name": "creds"}}]
    node.kube.create("pods", pod)
    assert node.kube.wait_phase("envs", "Succeeded", "Failed")["status"]["phase"] == "Succeeded"
    assert out.read_text() == "s3cr3t fast none envs 127.0.0.1 hello-envs u \n"  # and no admin kubeconfig


def test_the_projected_service_account_token_authenticates_the_pod(node: Node, tmp_path: Path) -> None:
    """In-cluster config finds the token where a kubelet mounts it; the API server knows whose it is."""
    node.kubectl("create", "serviceaccount", "reader")
    out = tmp_path / "whoami.json"
    program = (
        "import json; from kubernetes import client, config; config.load_incluster_config(); "
        "review = client.AuthenticationV1Api().create_self_subject_review({}); "
        "ns = open('/var/run/secrets/kubernetes.io/serviceaccount/namespace').read(); "
        f"json.dump({{'user': review.status.user_info.username, 'ns': ns}}, open({str(out)!r}, 'w'))"
    )
    pod = make_pod("whoami", "", serviceAccountName="reader")
    pod["spec"]["containers"][0]["command"] = [sys.executable, "-c", program]
    node.kube.create("pods", pod)
    done = node.kube.wait_phase("whoami", "Succeeded", "Failed", timeout=30)
    assert done["status"]["phase"] == "Succeeded", node.log("whoami")
    assert json.loads(out.read_text()) == {
        "user": f"system:serviceaccount:{node.namespace}:reader",
        "ns": node.namespace,
    }
    # The token is in the pod's own mount namespace only: nothing was written where the host keeps its files.
    assert not Path("/var/run/secrets/kubernetes.io/serviceaccount/token").exists()


def test_an_empty_dir_is_the_pods_own_tmp(node: Node) -> None:
    pod = make_pod("scratch", "echo private > /tmp/mine && cat /tmp/mine")
    pod["spec"]["volumes"] = [{"name": "tmp", "emptyDir": {}}]
    pod["spec"]["containers"][0]["volumeMounts"] = [{"name": "tmp", "mountPath": "/tmp"}]
    node.kube.create("pods", pod)
    assert node.kube.wait_phase("scratch", "Succeeded", "Failed")["status"]["phase"] == "Succeeded"
    assert node.log("scratch") == "private\n"
    assert not Path("/tmp/mine").exists()


def test_the_restricted_level_refuses_a_pod_that_may_escalate(node: Node) -> None:
    pod = make_pod("loose", "id")
    pod["spec"]["containers"][0]["securityContext"] = {}
    pod["spec"]["securityContext"] = {}
    refused = node.kubectl.run("apply", "-f", "-", stdin=json.dumps(pod), check=False)
    assert refused.returncode != 0 and 'violates PodSecurity "restricted:latest"' in refused.stderr


def test_missing_secret_waits_then_runs(node: Node, tmp_path: Path) -> None:
    out = tmp_path / "late.txt"
    env = [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "late", "key": "token"}}}]
    node.kube.create("pods", make_pod("waits", f"echo $TOKEN > {out}", env=env))

    def config_error() -> dict[str, str] | None:
        waiting: dict[str, str] | None = (node.kube.container_status("waits").get("state") or {}).get("waiting")
        return waiting if waiting and waiting.get("reason") == "CreateContainerConfigError" else None

    waiting = wait_for(config_error)
    assert 'secret "late" not found' in waiting["message"]
    assert node.kube.phase("waits") == "Pending"
    token = base64.b64encode(b"arrived").decode()
    node.kube.create("secrets", {"metadata": {"name": "late"}, "data": {"token": token}})
    assert node.kube.wait_phase("waits", "Succeeded", "Failed")["status"]["phase"] == "Succeeded"
    assert out.read_text() == "arrived\n"


def test_delete_terminates_process_and_pod_disappears(node: Node) -> None:
    node.kube.create("pods", make_pod("doomed", "sleep 60 & wait", grace=5))
    node.kube.wait_phase("doomed", "Running")
    pid = wait_for(lambda: node.pid("doomed"))
    node.kube.delete("pods", "doomed")
    wait_for(lambda: not group_alive(pid))
    wait_for(lambda: node.kube.get("pods", "doomed") is None)


def test_graceful_deletion_is_completed_by_the_agent(node: Node, tmp_path: Path) -> None:
    marker, trapping = tmp_path / "got-term", tmp_path / "trapping"
    script = f"trap 'echo term > {marker}; sleep 0.5; exit 0' TERM; touch {trapping}; while true; do sleep 0.05; done"
    pod = make_pod("graceful", script, grace=5)
    pod["metadata"]["finalizers"] = ["test.ferry.dev/hold"]  # keeps the pod visible after the agent's delete
    node.kube.create("pods", pod)
    node.kube.wait_phase("graceful", "Running")
    pid = wait_for(lambda: node.pid("graceful"))
    wait_for(trapping.exists)  # a SIGTERM before the shell sets its trap would end it without the marker
    node.kube.delete("pods", "graceful", grace=5)
    finished = node.kube.wait_phase("graceful", "Succeeded", "Failed")
    assert marker.read_text() == "term\n"
    assert not group_alive(pid)
    assert finished["status"]["phase"] == "Succeeded"  # the process exited 0 on SIGTERM
    node.kube.patch("pods", "graceful", {"metadata": {"finalizers": None}})
    wait_for(lambda: node.kube.get("pods", "graceful") is None)


def test_grace_period_then_sigkill(node: Node, tmp_path: Path) -> None:
    ready = tmp_path / "trapped"  # Running says the process started, not that its shell ignores TERM yet
    script = f"trap '' TERM; touch {ready}; while true; do sleep 0.05; done"
    node.kube.create("pods", make_pod("stubborn", script, grace=3))
    node.kube.wait_phase("stubborn", "Running")
    pid = wait_for(lambda: node.pid("stubborn"))
    wait_for(ready.exists)
    started = time.monotonic()
    node.kube.delete("pods", "stubborn")
    time.sleep(max(0.0, started + 1.5 - time.monotonic()))  # half the grace period, however long the call took
    assert group_alive(pid), "killed before the grace period ended"
    wait_for(lambda: not group_alive(pid), timeout=8)
    assert 2.9 < time.monotonic() - started < 7


def test_on_failure_restarts_until_success(node: Node, tmp_path: Path) -> None:
    count = tmp_path / "count"
    script = f"n=$(cat {count} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {count}; [ $n -ge 3 ]"
    node.kube.create("pods", make_pod("flaky", script, restart_policy="OnFailure"))
    done = node.kube.wait_phase("flaky", "Succeeded", "Failed", timeout=30)
    assert done["status"]["phase"] == "Succeeded"
    status = done["status"]["containerStatuses"][0]
    assert status["restartCount"] == 2
    assert status["lastState"]["terminated"]["exitCode"] == 1


def test_killed_process_reports_137_and_restarts(node: Node) -> None:
    node.kube.create("pods", make_pod("crashy", "sleep 60", restart_policy="OnFailure"))
    node.kube.wait_phase("crashy", "Running")
    first = wait_for(lambda: node.pid("crashy"))
    assert node.runner.kill_pod_process(node.namespace, "crashy")

    def restarted() -> JSON | None:
        status = node.kube.container_status("crashy")
        return status if status.get("restartCount") == 1 and "running" in status.get("state", {}) else None

    status = wait_for(restarted)
    terminated = status["lastState"]["terminated"]
    assert (terminated["exitCode"], terminated["reason"]) == (137, "Error")
    assert wait_for(lambda: node.pid("crashy")) != first


def test_init_containers_run_first_and_events_are_recorded(node: Node, tmp_path: Path) -> None:
    prepared = tmp_path / "prepared"
    pod = make_pod("layered", f"cat {prepared}")
    init = make_pod("-", "")["spec"]["containers"][0]
    pod["spec"]["initContainers"] = [
        {**init, "name": "one", "command": ["sh", "-c", f"echo one > {prepared}"]},
        {**init, "name": "two", "command": ["sh", "-c", f"echo two >> {prepared}"]},
    ]
    node.kube.create("pods", pod)
    done = node.kube.wait_phase("layered", "Succeeded", "Failed")
    assert done["status"]["phase"] == "Succeeded"
    assert [s["state"]["terminated"]["exitCode"] for s in done["status"]["initContainerStatuses"]] == [0, 0]
    events = json.loads(node.kubectl("get", "events", "--field-selector", "involvedObject.name=layered", "-o", "json"))
    reasons = [e["reason"] for e in events["items"]]
    assert reasons.count("Started") == 3 and "Scheduled" in reasons


def test_missing_executable_is_a_start_error(node: Node) -> None:
    pod = make_pod("typo", "")
    pod["spec"]["containers"][0]["command"] = ["no-such-binary-here"]
    node.kube.create("pods", pod)
    failed = node.kube.wait_phase("typo", "Failed", "Succeeded")
    terminated = failed["status"]["containerStatuses"][0]["state"]["terminated"]
    assert (terminated["exitCode"], terminated["reason"]) == (128, "StartError")


def test_a_restarted_agent_finds_its_processes_gone_as_after_a_reboot(stack: DevStack, node: Node) -> None:
    node.kube.create("pods", make_pod("never", "sleep 60"))
    node.kube.create("pods", make_pod("always", "sleep 60", restart_policy="Always"))
    pids = [wait_for(lambda name=name: node.pid(name)) for name in ("never", "always")]  # type: ignore[misc]
    stack.restart_node_agent()
    assert not any(group_alive(pid) for pid in pids)

    def lost() -> JSON | None:
        status = node.kube.pod_status("never")
        return status if status.get("phase") == "Failed" else None

    terminated = wait_for(lost)["containerStatuses"][0]["state"]["terminated"]
    assert (terminated["exitCode"], terminated["reason"]) == (137, "ContainerStatusUnknown")

    def running_again() -> JSON | None:
        status = node.kube.container_status("always")
        return status if status.get("restartCount") == 1 and "running" in status.get("state", {}) else None

    again = wait_for(running_again)
    assert again["lastState"]["terminated"]["exitCode"] == 137


def test_pods_bound_to_other_nodes_are_left_alone(node: Node) -> None:
    node.kube.create("pods", make_pod("elsewhere", "exit 0", nodeName=f"other-{uuid.uuid4().hex[:6]}"))
    node.kube.create("pods", make_pod("here", "exit 0"))
    node.kube.wait_phase("here", "Succeeded")
    assert (node.kube.get("pods", "elsewhere") or {}).get("status", {}).get("phase") in (None, "Pending")
    assert node.pid("elsewhere") is None


def test_the_node_cannot_read_secrets_its_pods_do_not_use(node: Node) -> None:
    """The Node authorizer: a node reads only what the pods bound to it reference."""
    node.kube.create("secrets", {"metadata": {"name": "unrelated"}, "data": {"k": base64.b64encode(b"v").decode()}})
    as_node = node.kubectl.run(
        "get", "secret", "unrelated", "--as=system:node:ferry-local", "--as-group=system:nodes", check=False
    )
    assert as_node.returncode != 0 and "forbidden" in as_node.stderr.lower()
