"""Runs a container's process in a mount namespace of its own, with the pod's volumes at their mount paths.

So a worker reads its service-account token at /var/run/secrets/kubernetes.io/serviceaccount and writes
to its emptyDir at /tmp, exactly where a kubelet would put them, without touching the host's files:
`unshare` gives the process a private mount table, tmpfs covers /run, and the volumes are bind-mounted.
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


def sandboxed(argv: Sequence[str], mounts: Sequence[Mount]) -> list[str]:
    """The command line that runs `argv` with `mounts` in place.

    Every volume is first bound into a staging directory on the tmpfs over /run, then onto its mount path:
    a volume mounted over /tmp must not hide the source of another that lives under /tmp on the host.
    """
    unshare = shutil.which("unshare")
    if unshare is None:
        raise SandboxUnavailable("the node agent needs util-linux's unshare to give pods their volumes")
    script = ["set -e", "mount -t tmpfs -o mode=0755,size=16m ferry-run /run"]
    for index, mount in enumerate(mounts):
        stage = f"{STAGING}/{index}"
        script.append(f"mkdir -p {stage} && mount --bind {shlex.quote(str(mount.source))} {stage}")
    for index, mount in enumerate(mounts):
        target = shlex.quote(_real(mount.target))
        script.append(f"mkdir -p {target} && mount --bind {STAGING}/{index} {target}")
        if mount.read_only:
            script.append(f"mount -o remount,bind,ro {target}")
    script.append('exec "$@"')
    return [unshare, "--mount", "--propagation", "private", "--", "/bin/sh", "-c", "\n".join(script), "pod", *argv]
