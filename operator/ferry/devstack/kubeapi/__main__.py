"""``python -m ferry.devstack.kubeapi --port N --kubeconfig PATH``: serve until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import pathlib
import signal

from ferry.devstack.kubeapi import start_kubeapi, write_kubeconfig


async def _main(host: str, port: int, kubeconfig: pathlib.Path | None) -> None:
    kubeapi = await start_kubeapi(host, port)
    if kubeconfig is not None:
        write_kubeconfig(kubeconfig, kubeapi.url)
    print(f"Kubernetes API emulator serving at {kubeapi.url}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await kubeapi.stop()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m ferry.devstack.kubeapi")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--kubeconfig", type=pathlib.Path, default=None)
    args = parser.parse_args()
    asyncio.run(_main(args.host, args.port, args.kubeconfig))


if __name__ == "__main__":
    main()
