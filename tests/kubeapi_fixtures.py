"""Fixtures for testing the Kubernetes API emulator (imported explicitly by its test modules)."""

from __future__ import annotations

import os
import pathlib
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass

import pytest

from ferry.devstack.kubeapi import KubeAPI, run_kubeapi_in_thread, start_kubeapi, write_kubeconfig

TEST_CRD = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.test.ferry.dev
spec:
  group: test.ferry.dev
  scope: Namespaced
  names:
    plural: widgets
    singular: widget
    kind: Widget
    listKind: WidgetList
    shortNames: [wdg]
    categories: [ferry]
  versions:
    - name: v1
      served: true
      storage: true
      subresources:
        status: {}
      additionalPrinterColumns:
        - {name: Mode, type: string, jsonPath: .spec.mode}
        - {name: Phase, type: string, jsonPath: .status.phase}
        - {name: Age, type: date, jsonPath: .metadata.creationTimestamp}
      schema:
        openAPIV3Schema:
          type: object
          properties:
            spec:
              type: object
              required: [source, mode]
              properties:
                source:
                  type: string
                  minLength: 1
                  x-kubernetes-validations:
                    - {rule: self == oldSelf, message: source is immutable}
                mode: {type: string, enum: [ServerSide, Stream]}
                replicas: {type: integer, minimum: 1, maximum: 10, default: 1}
                port: {x-kubernetes-int-or-string: true}
                labels:
                  type: object
                  additionalProperties: {type: string}
                extra:
                  type: object
                  x-kubernetes-preserve-unknown-fields: true
            status:
              type: object
              properties:
                phase: {type: string}
                message: {type: string}
                kopf:
                  type: object
                  x-kubernetes-preserve-unknown-fields: true
"""

WIDGET = {"apiVersion": "test.ferry.dev/v1", "kind": "Widget"}


@dataclass
class Kubectl:
    kubeconfig: pathlib.Path
    cache: pathlib.Path

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig), "KUBECACHEDIR": str(self.cache)}

    def run(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 15
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            ["kubectl", *args], input=input, capture_output=True, text=True, env=self.env, timeout=timeout
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({proc.returncode}): {proc.stderr}")
        return proc

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            ["kubectl", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=self.env
        )


@pytest.fixture
async def kubeapi() -> AsyncIterator[KubeAPI]:
    api = await start_kubeapi()
    try:
        yield api
    finally:
        await api.stop()


@pytest.fixture
def kubeapi_url() -> Iterator[str]:
    url, stop = run_kubeapi_in_thread()
    try:
        yield url
    finally:
        stop()


@pytest.fixture
def kubeconfig(tmp_path: pathlib.Path, kubeapi_url: str) -> pathlib.Path:
    path = tmp_path / "kubeconfig"
    write_kubeconfig(path, kubeapi_url)
    return path


@pytest.fixture
def kubectl(tmp_path: pathlib.Path, kubeconfig: pathlib.Path) -> Kubectl:
    return Kubectl(kubeconfig, tmp_path / "kubecache")


@pytest.fixture
def k8s_client(kubeconfig: pathlib.Path) -> Iterator[object]:
    import kubernetes

    client = kubernetes.config.new_client_from_config(config_file=str(kubeconfig))
    try:
        yield client
    finally:
        client.close()


def install_test_crd(kubectl: Kubectl) -> None:
    kubectl.run("apply", "-f", "-", input=TEST_CRD)
    kubectl.run("wait", "--for", "condition=established", "crd/widgets.test.ferry.dev", "--timeout=5s")


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)
