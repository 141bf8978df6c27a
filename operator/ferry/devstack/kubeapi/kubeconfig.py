"""A kubeconfig pointing kubectl and clients at the emulator."""

from __future__ import annotations

import pathlib

import yaml


def write_kubeconfig(path: pathlib.Path, url: str, namespace: str = "default") -> None:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "ferry-dev", "cluster": {"server": url, "insecure-skip-tls-verify": True}}],
        "users": [{"name": "ferry-dev", "user": {"token": "ferry-dev-token"}}],
        "contexts": [
            {"name": "ferry-dev", "context": {"cluster": "ferry-dev", "user": "ferry-dev", "namespace": namespace}}
        ],
        "current-context": "ferry-dev",
        "preferences": {},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
