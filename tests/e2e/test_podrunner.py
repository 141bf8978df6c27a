"""The pod runner against the API emulator: processes, statuses, restarts, deletion, shutdown."""

from __future__ import annotations

import base64
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from podrunner_fixtures import Kube, LocalNode, group_alive, kube_api, local_node, make_pod, pod_runner, wait_for

JSON = dict[str, Any]

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(30)]


@pytest.fixture
def node(tmp_path: Path) -> Iterator[LocalNode]:
    with local_node(tmp_path) as local:
        yield local


def _gone(pid: int) -> bool:
    """True once no live process is left in the group the pod's process led."""
    return not group_alive(pid)


def test_exit_codes_phases_and_status(node: LocalNode) -> None:
    node.kube.create("pods", make_pod("fails", "echo $X; exit 3", env=[{"name": "X", "value": "x1"}]))
    node.kube.create("pods", make_pod("works", "echo fine"))

    failed = node.kube.wait_phase("fails", "Failed", "Succeeded")
    assert failed["status"]["phase"] == "Failed"
    assert failed["spec"]["nodeName"] == "ferry-local"
    state = failed["status"]["containerStatuses"][0]["state"]["terminated"]
    assert (state["exitCode"], state["reason"]) == (3, "Error")
    assert state["startedAt"] and state["finishedAt"]
    assert failed["status"]["podIP"] == "127.0.0.1" and failed["status"]["startTime"]
    conditions = {c["type"]: c["status"] for c in failed["status"]["conditions"]}
    assert conditions["PodScheduled"] == "True" and conditions["Ready"] == "False"
    log = node.runner.log_path("default", "fails")
    assert log is not None and log.read_text() == "x1\n"
    assert log.parent.name == f"default_fails_{failed['metadata']['uid']}"

    succeeded = node.kube.wait_phase("works", "Succeeded", "Failed")
    assert succeeded["status"]["phase"] == "Succeeded"
    assert succeeded["status"]["containerStatuses"][0]["state"]["terminated"]["reason"] == "Completed"


def test_running_status_and_entrypoint_mapping(node: LocalNode) -> None:
    pod = make_pod("sleeper", "")
    del pod["spec"]["containers"][0]["command"]  # the image entrypoint (sh here) takes the args
    pod["spec"]["containers"][0]["args"] = ["-c", "sleep 30"]
    node.kube.create("pods", pod)

    running = node.kube.wait_phase("sleeper", "Running")
    status = running["status"]["containerStatuses"][0]
    assert status["ready"] is True and status["restartCount"] == 0
    assert status["state"]["running"]["startedAt"]
    conditions = {c["type"]: c["status"] for c in running["status"]["conditions"]}
    assert conditions == conditions | {"Initialized": "True", "ContainersReady": "True", "Ready": "True"}
    assert node.runner.process_pid("default", "sleeper") is not None


def test_env_from_secret_configmap_and_fields(node: LocalNode, tmp_path: Path) -> None:
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
    script = (
        f'echo "$TOKEN $MODE ${{ABSENT:-none}} $POD $IP $GREETING $CREDS_user" > {out}; echo "$KUBECONFIG" >> {out}'
    )
    pod = make_pod("envs", script, env=env)
    pod["spec"]["containers"][0]["envFrom"] = [{"prefix": "CREDS_", "secretRef": {"name": "creds"}}]
    node.kube.create("pods", pod)

    assert node.kube.wait_phase("envs", "Succeeded", "Failed")["status"]["phase"] == "Succeeded"
    first, kubeconfig = out.read_text().splitlines()
    assert first == "s3cr3t fast none envs 127.0.0.1 hello-envs u"
    assert kubeconfig == str(node.kubeconfig)


def test_missing_secret_waits_then_runs(node: LocalNode, tmp_path: Path) -> None:
    out = tmp_path / "late.txt"
    env = [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "late", "key": "token"}}}]
    node.kube.create("pods", make_pod("waits", f"echo $TOKEN > {out}", env=env))

    def config_error() -> dict[str, str] | None:
        waiting: dict[str, str] | None = (node.kube.container_status("waits").get("state") or {}).get("waiting")
        return waiting if waiting and waiting.get("reason") == "CreateContainerConfigError" else None

    waiting = wait_for(config_error)
    assert "late" in waiting["message"]
    assert node.kube.phase("waits") == "Pending"

    token = base64.b64encode(b"arrived").decode()
    node.kube.create("secrets", {"metadata": {"name": "late"}, "data": {"token": token}})
    assert node.kube.wait_phase("waits", "Succeeded", "Failed")["status"]["phase"] == "Succeeded"
    assert out.read_text() == "arrived\n"


def test_delete_terminates_process_and_pod_disappears(node: LocalNode) -> None:
    node.kube.create("pods", make_pod("doomed", "sleep 60 & wait", grace=5))
    node.kube.wait_phase("doomed", "Running")
    pid = wait_for(lambda: node.runner.process_pid("default", "doomed"))

    node.kube.delete("pods", "doomed")
    wait_for(lambda: _gone(pid))
    wait_for(lambda: node.kube.get("pods", "doomed") is None)


def test_graceful_deletion_is_completed_by_the_runner(node: LocalNode, tmp_path: Path) -> None:
    marker = tmp_path / "got-term"
    script = f"trap 'echo term > {marker}; sleep 0.5; exit 0' TERM; while true; do sleep 0.05; done"
    pod = make_pod("graceful", script, grace=5)
    pod["metadata"]["finalizers"] = ["test.ferry.io/hold"]  # keeps the pod visible after the runner's delete
    node.kube.create("pods", pod)
    node.kube.wait_phase("graceful", "Running")
    pid = wait_for(lambda: node.runner.process_pid("default", "graceful"))

    node.kube.delete("pods", "graceful", grace=5)
    finished = node.kube.wait_phase("graceful", "Succeeded", "Failed")
    assert marker.read_text() == "term\n"
    assert _gone(pid)
    assert finished["status"]["phase"] == "Succeeded"  # the process exited 0 on SIGTERM
    assert finished["metadata"]["deletionTimestamp"]

    node.kube.patch("pods", "graceful", {"metadata": {"finalizers": None}})
    wait_for(lambda: node.kube.get("pods", "graceful") is None)


def test_grace_period_then_sigkill(node: LocalNode) -> None:
    node.kube.create("pods", make_pod("stubborn", "trap '' TERM; while true; do sleep 0.05; done", grace=1))
    node.kube.wait_phase("stubborn", "Running")
    pid = wait_for(lambda: node.runner.process_pid("default", "stubborn"))

    started = time.monotonic()
    node.kube.delete("pods", "stubborn")
    time.sleep(0.5)
    assert not _gone(pid), "killed before the grace period ended"
    wait_for(lambda: _gone(pid), timeout=5)
    assert 0.9 < time.monotonic() - started < 4


def test_on_failure_restarts_until_success(node: LocalNode) -> None:
    script = "n=$(cat count 2>/dev/null || echo 0); n=$((n+1)); echo $n > count; [ $n -ge 3 ]"
    node.kube.create("pods", make_pod("flaky", script, restart_policy="OnFailure"))

    done = node.kube.wait_phase("flaky", "Succeeded", "Failed")
    assert done["status"]["phase"] == "Succeeded"
    status = done["status"]["containerStatuses"][0]
    assert status["restartCount"] == 2
    assert status["lastState"]["terminated"]["exitCode"] == 1
    assert status["state"]["terminated"]["exitCode"] == 0


def test_killed_process_reports_137_and_restarts(node: LocalNode) -> None:
    node.kube.create("pods", make_pod("crashy", "sleep 60", restart_policy="OnFailure"))
    node.kube.wait_phase("crashy", "Running")
    first = wait_for(lambda: node.runner.process_pid("default", "crashy"))

    assert node.runner.kill_pod_process("default", "crashy")

    def restarted() -> JSON | None:
        status = node.kube.container_status("crashy")
        return status if status.get("restartCount") == 1 and "running" in status.get("state", {}) else None

    status = wait_for(restarted)
    terminated = status["lastState"]["terminated"]
    assert (terminated["exitCode"], terminated["reason"]) == (137, "Error")
    assert node.kube.phase("crashy") == "Running"
    assert wait_for(lambda: node.runner.process_pid("default", "crashy")) != first


def test_killed_process_fails_a_never_pod(node: LocalNode) -> None:
    node.kube.create("pods", make_pod("once", "sleep 60"))
    node.kube.wait_phase("once", "Running")
    wait_for(lambda: node.runner.process_pid("default", "once"))
    assert node.runner.kill_pod_process("default", "once")
    failed = node.kube.wait_phase("once", "Failed", "Succeeded")
    assert failed["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 137


def test_pods_of_other_nodes_are_left_alone(node: LocalNode) -> None:
    node.kube.create("pods", make_pod("elsewhere", "exit 0", nodeName="other-node"))
    node.kube.create("pods", make_pod("here", "exit 0"))
    node.kube.wait_phase("here", "Succeeded")
    assert (node.kube.get("pods", "elsewhere") or {}).get("status", {}).get("phase") in (None, "Pending")
    assert node.runner.process_pid("default", "elsewhere") is None


def test_init_containers_run_first_and_events_are_recorded(node: LocalNode) -> None:
    pod = make_pod("layered", "cat prepared")
    pod["spec"]["initContainers"] = [
        {"name": "one", "image": "ferry:dev", "command": ["sh", "-c", "echo one > prepared"]},
        {"name": "two", "image": "ferry:dev", "command": ["sh", "-c", "echo two >> prepared"]},
    ]
    node.kube.create("pods", pod)

    done = node.kube.wait_phase("layered", "Succeeded", "Failed")
    assert done["status"]["phase"] == "Succeeded"
    assert [s["state"]["terminated"]["exitCode"] for s in done["status"]["initContainerStatuses"]] == [0, 0]
    log = node.runner.log_path("default", "layered")
    assert log is not None and log.read_text() == "one\ntwo\n"
    events = node.kube.request("GET", "/api/v1/namespaces/default/events")["items"]
    reasons = [e["reason"] for e in events if e["involvedObject"]["name"] == "layered"]
    assert reasons.count("Started") == 3 and "Scheduled" in reasons


def test_failing_init_container_fails_a_never_pod(node: LocalNode) -> None:
    pod = make_pod("blocked", "echo never-here")
    pod["spec"]["initContainers"] = [{"name": "check", "image": "ferry:dev", "command": ["sh", "-c", "exit 4"]}]
    node.kube.create("pods", pod)
    failed = node.kube.wait_phase("blocked", "Failed", "Succeeded")
    assert failed["status"]["phase"] == "Failed"
    assert failed["status"]["initContainerStatuses"][0]["state"]["terminated"]["exitCode"] == 4
    assert "running" not in failed["status"]["containerStatuses"][0]["state"]


def test_missing_executable_is_a_start_error(node: LocalNode) -> None:
    pod = make_pod("typo", "")
    pod["spec"]["containers"][0]["command"] = ["no-such-binary-here"]
    node.kube.create("pods", pod)
    failed = node.kube.wait_phase("typo", "Failed", "Succeeded")
    terminated = failed["status"]["containerStatuses"][0]["state"]["terminated"]
    assert (terminated["exitCode"], terminated["reason"]) == (128, "StartError")


def test_commands_resolve_on_the_installation_path(node: LocalNode) -> None:
    pod = make_pod("python", "")
    pod["spec"]["containers"][0]["command"] = ["python", "-c", "import ferry, sys; print(sys.prefix)"]
    node.kube.create("pods", pod)
    assert node.kube.wait_phase("python", "Succeeded", "Failed")["status"]["phase"] == "Succeeded"
    log = node.runner.log_path("default", "python")
    assert log is not None and log.read_text().strip() == sys.prefix


def test_stop_leaves_no_process(tmp_path: Path) -> None:
    with kube_api(tmp_path) as (kubeconfig, kube):
        with pod_runner(kubeconfig, tmp_path / "node", max_grace_seconds=1.0) as runner:
            kube.create("pods", make_pod("a", "sleep 60 & sleep 60 & wait"))
            kube.create("pods", make_pod("b", "trap '' TERM; sleep 60 & while true; do sleep 0.05; done"))
            pids = [wait_for(partial(runner.process_pid, "default", name)) for name in ("a", "b")]
        assert all(_gone(pid) for pid in pids), [pid for pid in pids if not _gone(pid)]


def test_restarted_runner_treats_running_pods_as_lost(tmp_path: Path) -> None:
    with kube_api(tmp_path) as (kubeconfig, kube):
        with pod_runner(kubeconfig, tmp_path / "node") as runner:
            kube.create("pods", make_pod("never", "sleep 60"))
            kube.create("pods", make_pod("always", "sleep 60", restart_policy="Always"))
            for name in ("never", "always"):
                wait_for(partial(runner.process_pid, "default", name))
        with pod_runner(kubeconfig, tmp_path / "node") as runner:
            lost = wait_for(lambda: _status_of(kube, "never", "Failed"))
            terminated = lost["containerStatuses"][0]["state"]["terminated"]
            assert (terminated["exitCode"], terminated["reason"]) == (137, "ContainerStatusUnknown")
            again = wait_for(lambda: _status_of(kube, "always", "Running", restarts=1))
            assert again["containerStatuses"][0]["lastState"]["terminated"]["exitCode"] == 137
            assert runner.process_pid("default", "always") is not None


def _status_of(kube: Kube, name: str, phase: str, restarts: int | None = None) -> JSON | None:
    """The pod's status once it is in the phase (and, if given, running after that many restarts)."""
    status = kube.pod_status(name)
    if status.get("phase") != phase:
        return None
    if restarts is not None:
        container: JSON = (status.get("containerStatuses") or [{}])[0]
        if container.get("restartCount") != restarts or "running" not in container.get("state", {}):
            return None
    return status


def test_command_line_serves_until_sigterm(tmp_path: Path) -> None:
    with kube_api(tmp_path) as (kubeconfig, kube):
        cmd = [sys.executable, "-m", "ferry.devstack.podrunner", "--kubeconfig", str(kubeconfig)]
        cmd += ["--workdir", str(tmp_path / "node"), "--entrypoint", "sh", "--max-grace-seconds", "1"]
        server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            kube.create("pods", make_pod("cli", "echo from-cli; sleep 60"))
            wait_for(lambda: _status_of(kube, "cli", "Running"))
            log = tmp_path / "node"
            wait_for(lambda: any("from-cli" in p.read_text() for p in log.glob("default_cli_*/main.log")))
            server.send_signal(signal.SIGTERM)
            assert server.wait(10) == 0
        finally:
            if server.poll() is None:
                server.kill()
                server.wait()
        assert not any(b"Traceback" in line for line in (server.stderr.read() if server.stderr else b"").splitlines())
