"""Runs a container's process in a mount namespace of its own, with the pod's volumes at their mount paths.

So a worker reads its service-account token at /var/run/secrets/kubernetes.io/serviceaccount and writes
to its emptyDir at /tmp, exactly where a kubelet would put them, without touching the host's files:
`unshare` gives the process a private mount table, tmpfs covers /run, and the volumes are bind-mounted.

What a container image would hold (here: the Python installation and Ferry's source) stays visible at its
own path even when a volume covers a directory above it, as with a checkout under /tmp and an emptyDir
mounted at /tmp: it is bound back inside the volume, at the same path.
"""

from __future__ import annotations

import shlex
import shutil
from collections.abc import Sequence

from ferry_dev.nodeagent.volumes import Mount


class SandboxUnavailable(RuntimeError):
    """This machine cannot give processes a mount namespace (no unshare, or not permitted)."""


def _real(target: str) -> str:
    # /var/run is a link to /run: mount where the link leads, inside the tmpfs that covers /run.
    return "/run" + target[len("/var/run") :] if target == "/var/run" or target.startswith("/var/run/") else target


STAGING = "/run/.ferry-volumes"
KEPT = "/run/.ferry-kept"


def _under(path: str, target: str) -> bool:
    return path == target or path.startswith(target.rstrip("/") + "/")


def sandboxed(argv: Sequence[str], mounts: Sequence[Mount], keep: Sequence[str] = ()) -> list[str]:
    """The command line that runs `argv` with `mounts` in place and the `keep` paths still visible.

    Every volume, and every kept path a volume would hide, is first bound into a staging directory on the
    tmpfs over /run, then onto its path: a volume mounted over /tmp must not hide the source of another
    that lives under /tmp on the host.
    """
    unshare = shutil.which("unshare")
    if unshare is None:
        raise SandboxUnavailable("the node agent needs util-linux's unshare to give pods their volumes")
    targets = [_real(m.target) for m in mounts]
    hidden = [path for path in keep if any(_under(path, t) for t in targets)]
    script = ["set -e", "mount -t tmpfs -o mode=0755,size=16m ferry-run /run"]
    for index, mount in enumerate(mounts):
        script.append(f"mkdir -p {STAGING}/{index} && mount --bind {shlex.quote(str(mount.source))} {STAGING}/{index}")
    for index, path in enumerate(hidden):
        script.append(f"mkdir -p {KEPT}/{index} && mount --bind {shlex.quote(path)} {KEPT}/{index}")
    for index, (mount, target) in enumerate(zip(mounts, targets, strict=True)):
        quoted = shlex.quote(target)
        script.append(f"mkdir -p {quoted} && mount --bind {STAGING}/{index} {quoted}")
        if mount.read_only:
            script.append(f"mount -o remount,bind,ro {quoted}")
    for index, path in enumerate(hidden):
        quoted = shlex.quote(path)
        script.append(f"mkdir -p {quoted} && mount --bind {KEPT}/{index} {quoted}")
    script.append('exec "$@"')
    return [unshare, "--mount", "--propagation", "private", "--", "/bin/sh", "-c", "\n".join(script), "pod", *argv]
