"""Ferry's container images, built on this machine without a Docker engine or a registry: with buildah.

- The base: a Debian bookworm root filesystem with Python from `debootstrap` (minbase), committed with
  `buildah from scratch`. It is the Dockerfile's PYTHON_IMAGE here (python:3.11-slim cannot be pulled).
- Ferry's image: `buildah bud --layers` of operator/Dockerfile as it is, tagged with a digest of what goes
  into it (the layer cache rebuilds only the wheel layer after a change to Ferry's code).
- The pause image containerd starts every pod's sandbox with: hack/pause, a static Go program.

Each is written once as a docker-archive under ~/.cache/ferry/images, named by the digest of its inputs,
for `ctr images import` into a stack's containerd.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ferry_dev.binaries import cache_root, ensure_tool, module_dir

SUITE = "bookworm"
BASE_PACKAGES = ("python3", "python3-venv", "python3-pip", "python-is-python3")
# The package index is reached through an HTTPS proxy whose CA only the host trusts: the build (only) sees
# the host's bundle, read-only.
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
FERRY_INPUTS = ("operator/Dockerfile", "pyproject.toml", "README.md")
KEEP_ARCHIVES = 3  # Ferry images kept in the cache (each source change makes one)


@dataclass(frozen=True)
class Image:
    reference: str  # as pods name it: localhost/ferry:0.1.0-<digest>
    archive: Path  # docker-archive for `ctr images import`


def images_dir() -> Path:
    return cache_root().parent / "images"


def repository_root() -> Path:
    return module_dir().parents[1]


def _digest(parts: Iterable[bytes]) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(hashlib.sha256(part).digest())
    return digest.hexdigest()[:12]


def _run(argv: list[str]) -> str:
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:3])} ... failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return done.stdout


@contextlib.contextmanager
def _locked(name: str) -> Iterator[None]:
    """Two stacks starting at once build once: the second waits, then finds the image."""
    images_dir().mkdir(parents=True, exist_ok=True)
    with open(images_dir() / f".{name}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _image_exists(reference: str) -> bool:
    return subprocess.run(["buildah", "inspect", "--type", "image", reference], capture_output=True).returncode == 0


def _push_archive(reference: str, archive: Path) -> None:
    partial = archive.with_suffix(".partial")
    partial.unlink(missing_ok=True)
    _run(["buildah", "push", "--quiet", reference, f"docker-archive:{partial}:{reference}"])
    partial.replace(archive)


def _require(tool: str) -> None:
    if shutil.which(tool) is None:
        raise FileNotFoundError(f"{tool} is not installed: `apt-get install buildah debootstrap` (see README)")


def base_image(say: Callable[[str], None] = print) -> str:
    """The Debian + Python base, built once per suite and package list."""
    _require("buildah")
    reference = f"localhost/ferry-base:{SUITE}-{_digest([SUITE.encode(), ' '.join(BASE_PACKAGES).encode()])}"
    if _image_exists(reference):
        return reference
    with _locked("base"):
        if not _image_exists(reference):
            _build_base(reference, say)
    return reference


def _build_base(reference: str, say: Callable[[str], None]) -> None:
    _require("debootstrap")
    started = time.monotonic()
    say(f"building the base image {reference} with debootstrap (about 2 minutes, once)")
    with tempfile.TemporaryDirectory(dir=images_dir(), prefix=".base-") as scratch:
        rootfs = Path(scratch) / "rootfs"
        include = ",".join(BASE_PACKAGES)
        _run(["debootstrap", "--variant=minbase", f"--include={include}", SUITE, str(rootfs)])
        for cache in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for entry in (rootfs / cache).glob("*"):
                if entry.is_file():
                    entry.unlink()

        def fill(container: str) -> None:
            _run(["cp", "-a", f"{rootfs}/.", _run(["buildah", "mount", container]).strip()])
            _run(["buildah", "config", "--env", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                  "--env", "LANG=C.UTF-8", "--cmd", "python3", container])  # fmt: skip

        _commit_from_scratch(reference, fill)
    say(f"  base image: {time.monotonic() - started:.0f}s")


def _ferry_digest(base: str) -> str:
    root = repository_root()
    files = [root / name for name in FERRY_INPUTS]
    files += sorted(p for p in (root / "operator" / "ferry").rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    return _digest([base.encode(), *(str(p.relative_to(root)).encode() + b"\0" + p.read_bytes() for p in files)])


def ferry_image(version: str = "0.1.0", say: Callable[[str], None] = print) -> Image:
    """Ferry's image from operator/Dockerfile, as a docker-archive named by the digest of its inputs."""
    base = base_image(say)
    digest = _ferry_digest(base)
    reference = f"localhost/ferry:{version}-{digest}"
    archive = images_dir() / f"ferry-{digest}.tar"
    if archive.is_file():
        return Image(reference, archive)
    with _locked("ferry"):
        if not archive.is_file():
            _build_ferry(base, reference, version, archive, say)
    return Image(reference, archive)


def _build_ferry(base: str, reference: str, version: str, archive: Path, say: Callable[[str], None]) -> None:
    started = time.monotonic()
    say(f"building {reference} from operator/Dockerfile with buildah")
    mounts = ["-v", f"{HOST_CA_BUNDLE}:{HOST_CA_BUNDLE}:ro"] if HOST_CA_BUNDLE.is_file() else []
    _run(["buildah", "bud", "--quiet", "--layers", "--network", "host", *mounts,
          "--build-arg", f"PYTHON_IMAGE={base}", "--build-arg", f"VERSION={version}",
          "-f", "operator/Dockerfile", "-t", reference, str(repository_root())])  # fmt: skip
    _push_archive(reference, archive)
    old = sorted(images_dir().glob("ferry-*.tar"), key=lambda p: p.stat().st_mtime)[:-KEEP_ARCHIVES]
    for stale in old:
        stale.unlink(missing_ok=True)
        # Its tag goes too; the layers other images share (and the build's cache) stay.
        tag = f"localhost/ferry:{version}-{stale.stem.removeprefix('ferry-')}"
        subprocess.run(["buildah", "rmi", tag], capture_output=True)
    say(f"  ferry image: {time.monotonic() - started:.0f}s")


def pause_image(say: Callable[[str], None] = print) -> Image:
    """The sandbox image: hack/pause's static binary as /pause, nothing else."""
    _require("buildah")
    binary = ensure_tool("pause", say)
    digest = _digest([binary.read_bytes()])
    reference = f"localhost/ferry-pause:{digest}"
    archive = images_dir() / f"pause-{digest}.tar"
    if archive.is_file():
        return Image(reference, archive)
    with _locked("pause"):
        if not archive.is_file():
            _build_pause(binary, reference, archive)
    return Image(reference, archive)


def _build_pause(binary: Path, reference: str, archive: Path) -> None:
    def fill(container: str) -> None:
        _run(["buildah", "copy", "--chmod", "0755", container, str(binary), "/pause"])
        _run(["buildah", "config", "--entrypoint", '["/pause"]', "--user", "65535:65535", container])

    _commit_from_scratch(reference, fill)
    _push_archive(reference, archive)


def _commit_from_scratch(reference: str, fill: Callable[[str], None]) -> None:
    """An image made from nothing: `fill` puts its files and settings into the working container, which is then
    committed as `reference` (or removed, if anything failed)."""
    container = _run(["buildah", "from", "scratch"]).strip()
    try:
        fill(container)
        _run(["buildah", "commit", "--quiet", "--rm", container, reference])
    except BaseException:
        subprocess.run(["buildah", "rm", container], capture_output=True)
        raise


if __name__ == "__main__":
    print(pause_image().reference)
    print(ferry_image().reference)
