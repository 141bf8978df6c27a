"""Pure functions of the API emulator: patches, selectors, schema handling, tables."""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import time
import urllib.request
from typing import Any

import pytest
from kmock import KubernetesError

from ferry.devstack.kubeapi import patching, selectors, tables, validation
from ferry.devstack.kubeapi.resources import ResourceDef


def test_json_patch_all_ops() -> None:
    doc = {"a": {"b": 1}, "l": [1, 2]}
    ops = [
        {"op": "test", "path": "/a/b", "value": 1},
        {"op": "add", "path": "/l/-", "value": 3},
        {"op": "replace", "path": "/a/b", "value": 2},
        {"op": "copy", "from": "/a", "path": "/c"},
        {"op": "move", "from": "/c", "path": "/d"},
        {"op": "remove", "path": "/l/0"},
    ]
    assert patching.json_patch(doc, ops) == {"a": {"b": 2}, "l": [2, 3], "d": {"b": 2}}
    with pytest.raises(KubernetesError):
        patching.json_patch(doc, [{"op": "test", "path": "/a/b", "value": 9}])


def test_merge_and_strategic_patches() -> None:
    assert patching.merge_patch({"a": 1, "b": {"c": 2}}, {"a": None, "b": {"d": 3}}) == {"b": {"c": 2, "d": 3}}
    pod = {"spec": {"containers": [{"name": "a", "image": "x"}, {"name": "b", "image": "y"}]}}
    patched = patching.strategic_merge(
        pod, {"spec": {"containers": [{"name": "b", "$patch": "delete"}, {"name": "c", "image": "z"}]}}
    )
    assert [c["name"] for c in patched["spec"]["containers"]] == ["a", "c"]


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("a=1", True),
        ("a==1", True),
        ("a!=1", False),
        ("a in (1,2)", True),
        ("a notin (1)", False),
        ("a", True),
        ("!a", False),
        ("b", False),
        ("!b", True),
        ("a=1,b!=2", True),
    ],
)
def test_label_selectors(selector: str, expected: bool) -> None:
    assert selectors.label_selector(selector)({"metadata": {"labels": {"a": "1"}}}) is expected


def test_field_selectors() -> None:
    event = {"metadata": {"name": "e"}, "involvedObject": {"name": "w", "kind": "Widget"}}
    assert selectors.field_selector("involvedObject.name=w,involvedObject.kind=Widget")(event)
    assert not selectors.field_selector("involvedObject.name!=w")(event)


SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "spec": {
            "type": "object",
            "required": ["name"],
            "x-kubernetes-validations": [
                {"rule": "self.max >= self.min", "messageExpression": "'max ' + string(self.max) + ' < min'"},
            ],
            "properties": {
                "name": {"type": "string", "pattern": "^[a-z]+$", "maxLength": 5},
                "min": {"type": "integer", "default": 0},
                "max": {"type": "integer", "default": 10},
                "tags": {"type": "array", "items": {"type": "string"}},
                "opt": {"type": "string", "nullable": True},
            },
        },
    },
}


def test_schema_pruning_defaulting_validation_and_cel() -> None:
    obj: dict[str, Any] = {
        "apiVersion": "x/v1",
        "kind": "X",
        "metadata": {},
        "spec": {"name": "ab", "junk": 1, "opt": None},
    }
    assert validation.prune(obj, SCHEMA) == ["spec.junk"]
    validation.apply_defaults(obj, SCHEMA)
    assert obj["spec"] == {"name": "ab", "opt": None, "min": 0, "max": 10}
    assert validation.validate(obj, SCHEMA) == []
    obj["spec"].update(name="ABCDEFG", min=20, tags=[1])
    causes = {c["field"]: c["message"] for c in validation.validate(obj, SCHEMA)}
    assert causes["spec.name"].startswith('Invalid value: "ABCDEFG"') or "Too long" in causes["spec.name"]
    assert causes["spec.tags[0]"].endswith('must be of type string: "int"')
    assert causes["spec"] == 'Invalid value: "object": max 10 < min'


def test_tables_jsonpath_and_age() -> None:
    res = ResourceDef(
        "g",
        "v1",
        "xs",
        "X",
        True,
        printer_columns=[
            {"name": "First", "type": "string", "jsonPath": ".spec.items[0].name"},
            {"name": "Count", "type": "integer", "jsonPath": ".status.count"},
        ],
    )
    obj = {"metadata": {"name": "x"}, "spec": {"items": [{"name": "i"}]}, "status": {"count": 3}}
    assert tables.cells(res, obj) == ["x", "i", 3]
    assert tables.human_duration("2000-01-01T00:00:00Z").endswith("y")


def test_module_entry_serves_until_sigterm(tmp_path: pathlib.Path) -> None:
    kubeconfig = tmp_path / "kc"
    proc = subprocess.Popen(
        [sys.executable, "-m", "ferry.devstack.kubeapi", "--port", "0", "--kubeconfig", str(kubeconfig)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ},
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        url = line.strip().rsplit(" ", 1)[-1]
        assert url.startswith("http://127.0.0.1:") and kubeconfig.exists()
        with urllib.request.urlopen(f"{url}/version") as resp:
            assert b"gitVersion" in resp.read()
        proc.send_signal(signal.SIGTERM)
        started = time.monotonic()
        assert proc.wait(timeout=5) == 0 and time.monotonic() - started < 5
    finally:
        if proc.poll() is None:
            proc.kill()
