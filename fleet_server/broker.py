"""The embedded broker: amqtt running on its own event loop in a thread of the
server process, for the one-process tier (demo, one school). Production uses
Mosquitto through `--mqtt mqtt://host:port`."""
from __future__ import annotations

import asyncio
import logging
import threading

log = logging.getLogger(__name__)


class EmbeddedBroker:
    def __init__(self, host: str = "127.0.0.1", port: int = 1883) -> None:
        self.host = host
        self.port = port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._broker = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def config(self) -> dict:
        bind = f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"
        return {
            "listeners": {"default": {"type": "tcp", "bind": bind}},
            # Anonymous access on the embedded tier only; per-device credentials and
            # ACLs arrive with the security work (Mosquitto dynamic security).
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
        }

    def start(self, timeout_s: float = 10.0) -> None:
        self._thread = threading.Thread(target=self._run, name="amqtt-broker", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout_s):
            raise RuntimeError("embedded MQTT broker did not start")
        if self._error is not None:
            raise RuntimeError(f"embedded MQTT broker on {self.host}:{self.port} failed: {self._error}") from self._error

    def _run(self) -> None:
        from amqtt.broker import Broker

        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)

        async def boot() -> None:
            self._broker = Broker(self.config(), loop=loop)
            await self._broker.start()

        try:
            loop.run_until_complete(boot())
        except BaseException as e:  # noqa: BLE001 - reported to the starting thread
            self._error = e
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        log.info("embedded broker listening on %s:%s", self.host, self.port)
        loop.run_forever()
        loop.close()

    def stop(self, timeout_s: float = 10.0) -> None:
        if self._loop is None or self._broker is None or self._thread is None:
            return
        fut = asyncio.run_coroutine_threadsafe(self._broker.shutdown(), self._loop)
        try:
            fut.result(timeout_s)
        except Exception:  # noqa: BLE001 - shutting down anyway
            log.exception("embedded broker shutdown")
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout_s)
