"""Kubernetes ``Status`` errors, rendered by kmock's error renderer."""

from __future__ import annotations

from typing import Any

from kmock import KubernetesError


def api_error(
    code: int,
    reason: str,
    message: str,
    details: dict[str, Any] | None = None,
) -> KubernetesError:
    return KubernetesError(status=code, reason=reason, message=message, details=details or {})


def status_body(exc: KubernetesError) -> dict[str, Any]:
    body: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": exc.message or "",
        "reason": exc.reason or "",
        "code": exc.status,
    }
    if exc.details:
        body["details"] = exc.details
    return body


def not_found(qualified: str, name: str, group: str = "", kind: str = "") -> KubernetesError:
    return api_error(
        404,
        "NotFound",
        f'{qualified} "{name}" not found',
        {"name": name, "group": group, "kind": kind or qualified.split(".")[0]},
    )


def already_exists(qualified: str, name: str, group: str, kind: str) -> KubernetesError:
    return api_error(
        409,
        "AlreadyExists",
        f'{qualified} "{name}" already exists',
        {"name": name, "group": group, "kind": kind},
    )


def conflict(qualified: str, name: str, group: str, kind: str) -> KubernetesError:
    return api_error(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {qualified} "{name}": the object has been modified;'
        " please apply your changes to the latest version and try again",
        {"name": name, "group": group, "kind": kind},
    )


def invalid(kind_group: str, name: str, group: str, kind: str, causes: list[dict[str, str]]) -> KubernetesError:
    text = ", ".join(f"{c['field']}: {c['message']}" if c.get("field") else c["message"] for c in causes)
    if len(causes) > 1:
        text = f"[{text}]"
    return api_error(
        422,
        "Invalid",
        f'{kind_group} "{name}" is invalid: {text}',
        {"name": name, "group": group, "kind": kind, "causes": causes},
    )


def bad_request(message: str) -> KubernetesError:
    return api_error(400, "BadRequest", message)


def method_not_allowed(
    message: str = "the server does not allow this method on the requested resource",
) -> KubernetesError:
    return api_error(405, "MethodNotAllowed", message)


def unsupported_media(message: str) -> KubernetesError:
    return api_error(415, "UnsupportedMediaType", message)


def gone(message: str) -> KubernetesError:
    return api_error(410, "Expired", message)


def forbidden(message: str, details: dict[str, Any] | None = None) -> KubernetesError:
    return api_error(403, "Forbidden", message, details)
