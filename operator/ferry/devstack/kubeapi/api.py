"""Object semantics of the API: create, update, patch, delete, list, garbage collection, CRDs."""

from __future__ import annotations

import base64
import copy
import json
import random
import re
import uuid
from typing import Any

import yaml

from ferry.devstack.kubeapi import crds, defaults, errors, patching, selectors, validation
from ferry.devstack.kubeapi.builtin import builtin_resources
from ferry.devstack.kubeapi.resources import ResourceDef
from ferry.devstack.kubeapi.store import GroupKey, Store

_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
_GEN_CHARS = "bcdfghjklmnpqrstvwxz2456789"
_CRD_GK: GroupKey = ("apiextensions.k8s.io", "customresourcedefinitions")
_NS_GK: GroupKey = ("", "namespaces")
_POD_GK: GroupKey = ("", "pods")
MERGE = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"
APPLY = "application/apply-patch+yaml"


class Options:
    """Write options from the query string."""

    def __init__(self, params: dict[str, str]) -> None:
        self.dry_run = params.get("dryRun") == "All"
        self.strict = params.get("fieldValidation", "").lower() == "strict"
        self.warnings: list[str] = []


class ObjectAPI:
    def __init__(self) -> None:
        self.store = Store()
        self.resources: dict[tuple[str, str, str], ResourceDef] = {}
        for res in builtin_resources():
            self.resources[(res.group, res.version, res.plural)] = res
        for ns in ("default", "kube-system", "kube-public", "kube-node-lease"):
            self.create(self.find("", "v1", "namespaces"), None, {"metadata": {"name": ns}}, Options({}))

    # Resources.

    def all_resources(self) -> list[ResourceDef]:
        return list(self.resources.values())

    def find(self, group: str, version: str, plural: str) -> ResourceDef:
        res = self.resources.get((group, version, plural))
        if res is None:
            raise errors.api_error(
                404, "NotFound", "the server could not find the requested resource", {"group": group, "kind": plural}
            )
        return res

    def _any_version(self, gk: GroupKey) -> ResourceDef | None:
        for res in self.resources.values():
            if res.group_key == gk:
                return res
        return None

    def _sync_crd(self, crd: dict[str, Any] | None, name: str) -> None:
        for key in [k for k, r in self.resources.items() if r.crd_name == name]:
            del self.resources[key]
        if crd is not None:
            for res in crds.crd_resources(crd):
                self.resources[(res.group, res.version, res.plural)] = res

    # Reading.

    def _out(self, res: ResourceDef, obj: dict[str, Any]) -> dict[str, Any]:
        out = copy.deepcopy(obj)
        out["apiVersion"] = res.api_version
        out["kind"] = res.kind
        return out

    def get(self, res: ResourceDef, ns: str | None, name: str) -> dict[str, Any]:
        obj = self.store.get(res.group_key, ns or "" if res.namespaced else "", name)
        if obj is None:
            raise errors.not_found(res.qualified, name, res.group, res.plural)
        return self._out(res, obj)

    def list_objects(
        self, res: ResourceDef, ns: str | None, params: dict[str, str]
    ) -> tuple[list[dict[str, Any]], str, str | None]:
        lsel = selectors.label_selector(params.get("labelSelector"))
        fsel = selectors.field_selector(params.get("fieldSelector"))
        items = [o for o in self.store.items(res.group_key, ns if res.namespaced else None) if lsel(o) and fsel(o)]
        rv = str(self.store.rv)
        start: list[str] | None = None
        if params.get("continue"):
            try:
                token = json.loads(base64.b64decode(params["continue"]))
                start, rv = token["start"], token["rv"]
            except (ValueError, KeyError, TypeError) as e:
                raise errors.bad_request("invalid continue token") from e
        if start is not None:
            items = [o for o in items if [o["metadata"].get("namespace", ""), o["metadata"]["name"]] > start]
        cont = None
        limit = int(params.get("limit") or 0)
        if limit and len(items) > limit:
            items = items[:limit]
            last = items[-1]["metadata"]
            raw = json.dumps({"rv": rv, "start": [last.get("namespace", ""), last["name"]]})
            cont = base64.b64encode(raw.encode()).decode()
        return [self._out(res, o) for o in items], rv, cont

    # Writing.

    def _decode(self, res: ResourceDef, body: bytes, yaml_ok: bool = False) -> dict[str, Any]:
        try:
            data = yaml.safe_load(body) if yaml_ok else json.loads(body or b"null")
        except (ValueError, yaml.YAMLError) as e:
            raise errors.bad_request(f"the object provided is unrecognized: {e}") from e
        if not isinstance(data, dict):
            raise errors.bad_request("the body of the request must be an object")
        api_version, kind = data.get("apiVersion"), data.get("kind")
        if (api_version and api_version != res.api_version) or (kind and kind != res.kind):
            raise errors.bad_request(
                f"the API version in the data ({api_version}) does not match the expected API version"
                f" ({res.api_version})"
                if api_version != res.api_version
                else f'{kind} in version "{res.version}" cannot be handled as a {res.kind}: '
                f"the kind of the object ({kind}) does not match the expected kind ({res.kind})"
            )
        if not isinstance(data.setdefault("metadata", {}), dict):
            raise errors.bad_request("metadata must be an object")
        data["apiVersion"], data["kind"] = res.api_version, res.kind
        return data

    def _invalid(self, res: ResourceDef, name: str, causes: list[dict[str, str]]) -> Exception:
        return errors.invalid(res.kind_group, name, res.group, res.kind, causes)

    def _check_schema(
        self,
        res: ResourceDef,
        obj: dict[str, Any],
        old: dict[str, Any] | None,
        opts: Options,
        status_only: bool = False,
    ) -> None:
        name = obj["metadata"].get("name", "")
        if res.schema is not None:
            unknown = validation.prune(obj, res.schema)
            if unknown and opts.strict:
                fields = ", ".join(f'unknown field "{u}"' for u in unknown)
                raise errors.bad_request(
                    f'{res.kind} in version "{res.version}" cannot be handled as a {res.kind}: '
                    f"strict decoding error: {fields}"
                )
            opts.warnings += [f'unknown field "{u}"' for u in unknown]
            validation.apply_defaults(obj, res.schema)
            causes = validation.validate(obj, res.schema, old)
            if status_only:
                causes = [c for c in causes if c["field"].startswith("status")]
            if causes:
                raise self._invalid(res, name, causes)
        if res.group_key == _CRD_GK:
            causes = crds.validate_crd(obj)
            if causes:
                raise self._invalid(res, name, causes)

    def create(self, res: ResourceDef, ns: str | None, data: dict[str, Any] | bytes, opts: Options) -> dict[str, Any]:
        obj = self._decode(res, data) if isinstance(data, bytes) else copy.deepcopy(data)
        obj["apiVersion"], obj["kind"] = res.api_version, res.kind
        meta = obj.setdefault("metadata", {})
        if res.namespaced:
            if meta.get("namespace") and ns and meta["namespace"] != ns:
                raise errors.bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request"
                )
            ns = ns or meta.get("namespace") or "default"
            nsobj = self.store.get(_NS_GK, "", ns)
            if nsobj is None:
                raise errors.not_found("namespaces", ns, "", "namespaces")
            if nsobj["metadata"].get("deletionTimestamp"):
                raise errors.forbidden(
                    f'{res.qualified} "{meta.get("name") or meta.get("generateName", "")}" is forbidden:'
                    f" unable to create new content in namespace {ns} because it is being terminated",
                    {
                        "name": meta.get("name", ""),
                        "group": res.group,
                        "kind": res.plural,
                        "causes": [
                            {
                                "reason": "NamespaceTerminating",
                                "message": f"namespace {ns} is being terminated",
                                "field": "metadata.namespace",
                            }
                        ],
                    },
                )
            meta["namespace"] = ns
        else:
            meta.pop("namespace", None)
        if not meta.get("name") and meta.get("generateName"):
            while True:
                meta["name"] = meta["generateName"] + "".join(random.choices(_GEN_CHARS, k=5))
                if self.store.get(res.group_key, meta.get("namespace", ""), meta["name"]) is None:
                    break
        name = meta.get("name") or ""
        if not name:
            raise self._invalid(
                res,
                "",
                [
                    {
                        "field": "metadata.name",
                        "reason": "FieldValueRequired",
                        "message": "Required value: name or generateName is required",
                    }
                ],
            )
        if not _NAME_RE.match(name) or len(name) > 253:
            raise self._invalid(
                res,
                name,
                [
                    {
                        "field": "metadata.name",
                        "reason": "FieldValueInvalid",
                        "message": f'Invalid value: "{name}": a lowercase RFC 1123 subdomain must consist of lower case'
                        " alphanumeric characters, '-' or '.',"
                        " and must start and end with an alphanumeric character",
                    }
                ],
            )
        if self.store.get(res.group_key, meta.get("namespace", ""), name) is not None:
            raise errors.already_exists(res.qualified, name, res.group, res.plural)
        for key in ("uid", "resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds", "selfLink"):
            meta.pop(key, None)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = crds.now()
        if res.has_generation:
            meta["generation"] = 1
        else:
            meta.pop("generation", None)
        if res.status_subresource and not res.builtin:
            obj.pop("status", None)
        defaults.prepare(res.group, res.plural, obj, creating=True)
        self._check_schema(res, obj, None, opts)
        if res.group_key == _CRD_GK:
            obj["status"] = crds.crd_status(obj)
        if opts.dry_run:
            return self._out(res, obj)
        self.store.put(res.group_key, obj, "ADDED", None)
        if res.group_key == _CRD_GK:
            self._sync_crd(obj, name)
        return self._out(res, obj)

    def update(
        self, res: ResourceDef, ns: str | None, name: str, body: bytes, sub: str | None, opts: Options
    ) -> dict[str, Any]:
        new = self._decode(res, body)
        old = self._current(res, ns, name)
        if new["metadata"].get("name") and new["metadata"]["name"] != name:
            raise errors.bad_request(
                f"the name of the object ({new['metadata']['name']}) does not match the name on the URL ({name})"
            )
        rv = new["metadata"].get("resourceVersion")
        if rv and rv != old["metadata"]["resourceVersion"]:
            raise errors.conflict(res.qualified, name, res.group, res.plural)
        if not rv and not res.builtin:
            raise self._invalid(
                res,
                name,
                [
                    {
                        "field": "metadata.resourceVersion",
                        "reason": "FieldValueInvalid",
                        "message": "Invalid value: 0x0: must be specified for an update",
                    }
                ],
            )
        return self._replace(res, old, new, sub, opts)

    def _current(self, res: ResourceDef, ns: str | None, name: str) -> dict[str, Any]:
        old = self.store.get(res.group_key, (ns or "") if res.namespaced else "", name)
        if old is None:
            raise errors.not_found(res.qualified, name, res.group, res.plural)
        return old

    def patch(
        self,
        res: ResourceDef,
        ns: str | None,
        name: str,
        body: bytes,
        content_type: str,
        sub: str | None,
        opts: Options,
    ) -> tuple[dict[str, Any], bool]:
        """Returns the patched object and whether it was created (by server-side apply)."""
        ctype = content_type.split(";")[0].strip().lower()
        old = self.store.get(res.group_key, (ns or "") if res.namespaced else "", name)
        try:
            patch = yaml.safe_load(body) if ctype == APPLY else json.loads(body or b"null")
        except (ValueError, yaml.YAMLError) as e:
            raise errors.bad_request(f"error decoding patch: {e}") from e
        if old is None:
            if ctype == APPLY and sub is None and isinstance(patch, dict):
                patch.setdefault("metadata", {})["name"] = name
                return self.create(res, ns, patch, opts), True
            raise errors.not_found(res.qualified, name, res.group, res.plural)
        current = self._out(res, old)
        if ctype in (MERGE, APPLY):
            new = patching.merge_patch(current, patch)
        elif ctype == JSON_PATCH:
            new = patching.json_patch(current, patch)
        elif ctype == STRATEGIC and res.builtin:
            new = patching.strategic_merge(current, patch)
        else:
            raise errors.unsupported_media(
                "the body of the request was in an unknown format - accepted media types include: "
                "application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml"
                + (", application/strategic-merge-patch+json" if res.builtin else "")
            )
        if not isinstance(new, dict) or not isinstance(new.get("metadata"), dict):
            raise errors.bad_request("the patched object must be an object with metadata")
        if (new.get("apiVersion"), new.get("kind")) != (res.api_version, res.kind):
            raise errors.bad_request("the patch must not change apiVersion or kind")
        rv = new["metadata"].get("resourceVersion")
        if rv and rv != old["metadata"]["resourceVersion"]:
            raise errors.conflict(res.qualified, name, res.group, res.plural)
        return self._replace(res, old, new, sub, opts), False

    def _replace(
        self, res: ResourceDef, old: dict[str, Any], new: dict[str, Any], sub: str | None, opts: Options
    ) -> dict[str, Any]:
        gk = res.group_key
        name = old["metadata"]["name"]
        if sub == "status":
            candidate = copy.deepcopy(old)
            if "status" in new:
                candidate["status"] = copy.deepcopy(new["status"])
            else:
                candidate.pop("status", None)
        else:
            candidate = copy.deepcopy(new)
            if res.status_subresource:
                if "status" in old:
                    candidate["status"] = copy.deepcopy(old["status"])
                else:
                    candidate.pop("status", None)
        candidate["apiVersion"], candidate["kind"] = res.api_version, res.kind
        meta = candidate.setdefault("metadata", {})
        for key in (
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "namespace",
            "name",
            "generation",
        ):
            if key in old["metadata"]:
                meta[key] = old["metadata"][key]
            else:
                meta.pop(key, None)
        meta["resourceVersion"] = old["metadata"]["resourceVersion"]
        if meta.get("deletionTimestamp"):
            added = set(meta.get("finalizers") or []) - set(old["metadata"].get("finalizers") or [])
            if added:
                raise self._invalid(
                    res,
                    name,
                    [
                        {
                            "field": "metadata.finalizers",
                            "reason": "FieldValueForbidden",
                            "message": "Forbidden: no new finalizers can be added if the object is being deleted,"
                            f" found new finalizers {sorted(added)!r}",
                        }
                    ],
                )
        defaults.prepare(res.group, res.plural, candidate, creating=False)
        self._check_schema(res, candidate, self._out(res, old), opts, status_only=sub == "status")
        if gk == _CRD_GK:
            candidate["status"] = crds.crd_status(candidate)
        if res.has_generation and _content(candidate, res) != _content(old, res):
            meta["generation"] = int(old["metadata"].get("generation") or 1) + 1
        if _without_rv(candidate) == _without_rv(self._out(res, old)):
            return self._out(res, old)  # a no-op write: the real server neither bumps nor notifies
        if opts.dry_run:
            return self._out(res, candidate)
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            self.store.objects[gk][(meta.get("namespace", ""), name)] = candidate
            gone = self.store.remove(gk, candidate)
            self._after_removal(res, gone)
            return self._out(res, gone)
        self.store.put(gk, candidate, "MODIFIED", old)
        if gk == _CRD_GK:
            self._sync_crd(candidate, name)
        return self._out(res, candidate)

    # Deletion.

    def delete(
        self, res: ResourceDef, ns: str | None, name: str, body: bytes, params: dict[str, str], opts: Options
    ) -> dict[str, Any]:
        old = self._current(res, ns, name)
        delopts: dict[str, Any] = {}
        if body.strip():
            try:
                delopts = json.loads(body) or {}
            except ValueError as e:
                raise errors.bad_request(f"invalid DeleteOptions: {e}") from e
        pre = delopts.get("preconditions") or {}
        if (pre.get("uid") and pre["uid"] != old["metadata"]["uid"]) or (
            pre.get("resourceVersion") and pre["resourceVersion"] != old["metadata"]["resourceVersion"]
        ):
            raise errors.conflict(res.qualified, name, res.group, res.plural)
        policy = delopts.get("propagationPolicy") or params.get("propagationPolicy") or ""
        if delopts.get("orphanDependents") is True or params.get("orphanDependents") == "true":
            policy = "Orphan"
        grace = delopts.get("gracePeriodSeconds", params.get("gracePeriodSeconds"))
        if opts.dry_run:
            return self._out(res, old)
        return self._delete(res, old, policy, int(grace) if grace is not None else None)

    def _delete(self, res: ResourceDef, old: dict[str, Any], policy: str, grace: int | None) -> dict[str, Any]:
        gk = res.group_key
        uid = old["metadata"]["uid"]
        if policy == "Orphan":
            self._orphan(uid)
        terminating = old["metadata"].get("deletionTimestamp")
        if gk == _POD_GK and terminating and grace == 0 and not old["metadata"].get("finalizers"):
            gone = self.store.remove(gk, old)
            self._after_removal(res, gone)
            return self._out(res, gone)
        if old["metadata"].get("deletionTimestamp"):
            return self._out(res, old)
        pod_grace = _pod_grace(old, grace) if gk == _POD_GK else 0
        if pod_grace > 0:
            # A running pod terminates gracefully: its kubelet stops the containers, then deletes it for good.
            new = copy.deepcopy(old)
            new["metadata"]["deletionTimestamp"] = crds.now()
            new["metadata"]["deletionGracePeriodSeconds"] = pod_grace
            self.store.put(gk, new, "MODIFIED", old)
            return self._out(res, new)
        grace = grace or 0
        if policy == "Foreground":
            self._collect(uid, "Foreground")
        if gk == _NS_GK or old["metadata"].get("finalizers"):
            new = copy.deepcopy(old)
            new["metadata"]["deletionTimestamp"] = crds.now()
            new["metadata"]["deletionGracePeriodSeconds"] = grace
            if gk == _NS_GK:
                new.setdefault("status", {})["phase"] = "Terminating"
            self.store.put(gk, new, "MODIFIED", old)
            if gk == _NS_GK:
                self._empty_namespace(new["metadata"]["name"])
                self._finish_namespaces()
                current = self.store.get(gk, "", new["metadata"]["name"])
                return self._out(res, current or new)
            return self._out(res, new)
        gone = self.store.remove(gk, old)
        self._after_removal(res, gone)
        return self._out(res, gone)

    def _after_removal(self, res: ResourceDef, gone: dict[str, Any]) -> None:
        if res.group_key == _CRD_GK:
            self._drop_crd(gone)
        self._collect(gone["metadata"]["uid"], "Background")
        self._finish_namespaces()

    def _drop_crd(self, crd: dict[str, Any]) -> None:
        name = crd["metadata"]["name"]
        gk = (crd["spec"]["group"], crd["spec"]["names"]["plural"])
        for obj in list(self.store.objects.get(gk, {}).values()):
            self.store.remove(gk, obj)
        self._sync_crd(None, name)

    def _live_uids(self) -> set[str]:
        return {obj["metadata"]["uid"] for _, obj in self.store.all_objects()}

    def _collect(self, uid: str, policy: str) -> None:
        """Garbage-collect dependents whose owners are all gone (or going, for foreground deletion)."""
        live = self._live_uids() - {uid}
        for gk, obj in self.store.all_objects():
            refs = obj["metadata"].get("ownerReferences") or []
            if not any(r.get("uid") == uid for r in refs):
                continue
            if any(r.get("uid") in live for r in refs if r.get("uid") != uid):
                continue
            res = self._any_version(gk)
            current = self.store.get(gk, obj["metadata"].get("namespace", ""), obj["metadata"]["name"])
            if res is not None and current is not None:
                self._delete(res, current, policy, None)

    def _orphan(self, uid: str) -> None:
        for gk, obj in self.store.all_objects():
            refs = obj["metadata"].get("ownerReferences") or []
            if any(r.get("uid") == uid for r in refs):
                new = copy.deepcopy(obj)
                new["metadata"]["ownerReferences"] = [r for r in refs if r.get("uid") != uid]
                if not new["metadata"]["ownerReferences"]:
                    del new["metadata"]["ownerReferences"]
                self.store.put(gk, new, "MODIFIED", obj)

    def _empty_namespace(self, ns: str) -> None:
        for gk, obj in self.store.all_objects():
            if obj["metadata"].get("namespace") != ns:
                continue
            res = self._any_version(gk)
            current = self.store.get(gk, ns, obj["metadata"]["name"])
            if res is not None and res.namespaced and current is not None:
                self._delete(res, current, "Background", None)

    def _finish_namespaces(self) -> None:
        for ns in list(self.store.objects[_NS_GK].values()):
            if not ns["metadata"].get("deletionTimestamp") or ns["metadata"].get("finalizers"):
                continue
            name = ns["metadata"]["name"]
            if any(o["metadata"].get("namespace") == name for _, o in self.store.all_objects()):
                continue
            self.store.remove(_NS_GK, ns)

    def delete_collection(
        self, res: ResourceDef, ns: str | None, params: dict[str, str], opts: Options
    ) -> list[dict[str, Any]]:
        wanted = {k: v for k, v in params.items() if k in ("labelSelector", "fieldSelector")}
        items, _, _ = self.list_objects(res, ns, wanted)
        deleted = []
        for item in items:
            current = self.store.get(res.group_key, item["metadata"].get("namespace", ""), item["metadata"]["name"])
            if current is not None and not opts.dry_run:
                deleted.append(self._delete(res, current, params.get("propagationPolicy", ""), 0))
        return deleted


def _content(obj: dict[str, Any], res: ResourceDef) -> dict[str, Any]:
    """What counts for metadata.generation: everything but metadata (and status, when a subresource)."""
    skip = {"metadata", "apiVersion", "kind"} | ({"status"} if res.status_subresource else set())
    return {k: v for k, v in obj.items() if k not in skip}


def _without_rv(obj: dict[str, Any]) -> dict[str, Any]:
    out = dict(obj)
    skip = ("resourceVersion", "managedFields")
    out["metadata"] = {k: v for k, v in obj.get("metadata", {}).items() if k not in skip}
    return out


def _pod_grace(pod: dict[str, Any], requested: int | None) -> int:
    """Seconds of graceful termination a pod deletion gets: none once it is unscheduled or finished."""
    if not (pod.get("spec") or {}).get("nodeName"):
        return 0
    if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
        return 0
    if requested is not None:
        return max(0, requested)
    return int((pod.get("spec") or {}).get("terminationGracePeriodSeconds", 30))
