"""The `ferry-dev` command: Ferry's development tools, apart from the product's `ferry` command. The local stack
(`up`, `down`), the demo, and the files generated from the API models (`crds`, `docs`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _cmd_docs(args: argparse.Namespace) -> int:
    from ferry.api.fieldref import update_docs

    stale = update_docs(Path(args.dir), check=args.check)
    if args.check and stale:
        names = ", ".join(p.name for p in stale)
        print(f"stale field tables in {names}; run `ferry-dev docs --dir {args.dir}`", file=sys.stderr)
        return 1
    print(f"field tables in {args.dir} are current" if args.check else f"updated: {len(stale)} page(s)")
    return 0


def _cmd_crds(args: argparse.Namespace) -> int:
    from ferry.api.crdgen import render_crds, write_crds

    out = Path(args.out)
    if args.check:
        stale = [
            name
            for name, text in render_crds().items()
            if not (out / name).is_file() or (out / name).read_text() != text
        ]
        if stale:
            print(f"stale CRDs in {out}: {', '.join(stale)}; run `ferry-dev crds --out {out}`", file=sys.stderr)
            return 1
        print(f"CRDs in {out} are current")
        return 0
    for path in write_crds(out):
        print(path)
    return 0


def _cmd_up(args: argparse.Namespace) -> int:
    from ferry_dev import stack

    return stack.up(Path(args.dir))


def _cmd_down(args: argparse.Namespace) -> int:
    from ferry_dev import stack

    return stack.down(Path(args.dir))


def _cmd_demo(args: argparse.Namespace) -> int:
    from ferry_dev import demo

    return demo.run(Path(args.dir) if args.dir else None, timeout=args.timeout)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ferry-dev",
        description="Ferry's development tools: the local stack, the demo, and the files generated from the API "
        "models.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at debug level")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = commands.add_parser(
        "up",
        help="start the local stack (control plane, a node with containerd and the kubelet, the emulators, Ferry "
        "installed with its chart) and run until stopped",
    )
    up.add_argument("--dir", required=True, help="state directory: kubeconfig, endpoints.json, ready, logs")
    up.set_defaults(func=_cmd_up)
    down = commands.add_parser(
        "down", help="stop a local stack started with `ferry-dev up --dir DIR`, also one whose `up` was killed"
    )
    down.add_argument("--dir", required=True)
    down.set_defaults(func=_cmd_down)

    demo = commands.add_parser(
        "demo",
        help="bring the local stack up, apply examples/ (deleting the container the restores bring back), show "
        "progress, check the data, tear down; exit 0 if all succeeded",
    )
    demo.add_argument("--dir", default=None, help="state directory (default: a temporary one)")
    demo.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for the examples")
    demo.set_defaults(func=_cmd_demo)

    crds = commands.add_parser("crds", help="write the CRD manifests generated from the API models")
    crds.add_argument("--out", default="crds", help="directory to write into (default: crds)")
    crds.add_argument("--check", action="store_true", help="exit 1 if the files in --out are stale")
    crds.set_defaults(func=_cmd_crds)

    docs = commands.add_parser("docs", help="rewrite the field tables of docs/<kind>.md from the API models")
    docs.add_argument("--dir", default="docs", help="the docs directory (default: docs)")
    docs.add_argument("--check", action="store_true", help="exit 1 if a table is stale")
    docs.set_defaults(func=_cmd_docs)
    return parser


def main(argv: list[str] | None = None) -> int:
    from ferry.cli.main import configure_logging

    args = build_parser().parse_args(argv)
    configure_logging(args.verbose)  # the SDKs' request logs (SAS query strings included) stay quiet
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
