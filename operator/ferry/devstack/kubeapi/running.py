"""Starting and stopping the emulator in the current loop or in a background thread."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

import aiohttp.web

from ferry.devstack.kubeapi.server import KubeEmulator, LogSource


class KubeAPI:
    """A running emulator; ``emulator`` exposes the store and resources for direct inspection."""

    def __init__(self, emulator: KubeEmulator, runner: aiohttp.web.ServerRunner, url: str) -> None:
        self.emulator = emulator
        self.url = url
        self._runner = runner

    async def stop(self) -> None:
        self.emulator.api.store.close_all()  # lets open watches finish instead of hanging the shutdown
        await asyncio.sleep(0)
        await self._runner.cleanup()
        await self.emulator.__aexit__(None, None, None)


async def start_kubeapi(host: str = "127.0.0.1", port: int = 0, log_source: LogSource | None = None) -> KubeAPI:
    emulator = KubeEmulator(log_source=log_source)
    await emulator.__aenter__()
    server = aiohttp.web.Server(emulator)
    runner = aiohttp.web.ServerRunner(server, shutdown_timeout=1.0)
    await runner.setup()
    site = aiohttp.web.TCPSite(runner, host, port)
    await site.start()
    sockets = [s for s in runner.addresses]
    actual_port = sockets[0][1] if sockets else port
    return KubeAPI(emulator, runner, f"http://{host}:{actual_port}")


def run_kubeapi_in_thread(
    host: str = "127.0.0.1", port: int = 0, log_source: LogSource | None = None
) -> tuple[str, Callable[[], None]]:
    """Serve from a daemon thread with its own loop; returns the URL and an idempotent stop()."""
    loop = asyncio.new_event_loop()
    started: asyncio.Future[KubeAPI] = loop.create_future()
    done = threading.Event()

    def main() -> None:
        asyncio.set_event_loop(loop)

        async def boot() -> None:
            try:
                started.set_result(await start_kubeapi(host, port, log_source))
            except Exception as e:
                started.set_exception(e)

        booting = loop.create_task(boot())
        loop.run_forever()
        del booting
        loop.close()
        done.set()

    thread = threading.Thread(target=main, name="ferry-kubeapi", daemon=True)
    thread.start()
    kubeapi = asyncio.run_coroutine_threadsafe(_wait(started), loop).result(timeout=30)
    stopped = threading.Event()

    def stop() -> None:
        if stopped.is_set():
            return
        stopped.set()
        asyncio.run_coroutine_threadsafe(kubeapi.stop(), loop).result(timeout=30)
        loop.call_soon_threadsafe(loop.stop)
        done.wait(timeout=30)

    return kubeapi.url, stop


async def _wait(fut: asyncio.Future[KubeAPI]) -> KubeAPI:
    return await fut
