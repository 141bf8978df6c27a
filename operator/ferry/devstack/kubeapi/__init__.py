"""A Kubernetes API emulator built on kmock, faithful enough for kubectl and kopf."""

from ferry.devstack.kubeapi.kubeconfig import write_kubeconfig
from ferry.devstack.kubeapi.running import KubeAPI, run_kubeapi_in_thread, start_kubeapi

__all__ = ["KubeAPI", "run_kubeapi_in_thread", "start_kubeapi", "write_kubeconfig"]
