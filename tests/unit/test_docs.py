"""The docs stay true to the code: every failure reason the code can give is documented with what to do, and
every kind's field table is the one generated from its schema."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

from ferry.api.fieldref import update_docs

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
# Calls that carry a failure reason: the first argument, or reason=.
REASON_CALLS = {"BlobFailure", "PermanentError", "TransientError", "RestoreRefused", "Failure", "WorkerOutcome"}
REASON_WORD = re.compile(r"[A-Z][a-z]+(?:[A-Z][A-Za-z0-9]*)+|Deleted|Stopped")


def _strings(node: ast.AST) -> Iterator[str]:
    for inner in ast.walk(node):
        if isinstance(inner, ast.Constant) and isinstance(inner.value, str) and REASON_WORD.fullmatch(inner.value):
            yield inner.value


def reasons_in_code() -> dict[str, set[str]]:
    """Every failure reason a call in operator/ferry passes, literal or through a local variable."""
    found: dict[str, set[str]] = {}
    for path in (ROOT / "operator" / "ferry").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for function in [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]:
            assigned: dict[str, list[ast.AST]] = {}
            for node in ast.walk(function):
                if isinstance(node, ast.Assign):
                    for target in node.targets:
                        if isinstance(target, ast.Name):
                            assigned.setdefault(target.id, []).append(node.value)
            for node in ast.walk(function):
                if not isinstance(node, ast.Call):
                    continue
                name = getattr(node.func, "id", getattr(node.func, "attr", ""))
                if name not in REASON_CALLS:
                    continue
                given = [k.value for k in node.keywords if k.arg == "reason"]
                if name != "Failure" and name != "WorkerOutcome" and node.args:
                    given.append(node.args[0])
                for expression in given:
                    sources = assigned.get(expression.id, []) if isinstance(expression, ast.Name) else [expression]
                    for source in sources:
                        for reason in _strings(source):
                            found.setdefault(reason, set()).add(path.relative_to(ROOT).as_posix())
    return found


def test_every_failure_reason_is_documented_with_what_to_do() -> None:
    documented = {}
    for page in DOCS.glob("*.md"):
        for line in page.read_text().splitlines():
            row = re.match(r"\|\s*`([A-Za-z0-9]+)`\s*\|(.+)\|\s*$", line)
            if row and len(row.group(2).strip()) > 20:
                documented.setdefault(row.group(1), []).append(page.name)
    found = reasons_in_code()
    assert len(found) > 40
    missing = {reason: sorted(files) for reason, files in found.items() if reason not in documented}
    assert not missing, missing


def test_the_field_tables_are_generated_from_the_current_schemas() -> None:
    assert update_docs(DOCS, check=True) == [], "run `make docs`"
