"""The embedded broker: amqtt running on its own event loop in a thread of the
server process, for the one-process tier (demo, one school). Production uses
Mosquitto through `--mqtt mqtt://host:port`.

With a BrokerAccess (the server always gives one) clients are checked by our amqtt
plugins (fleet_server/security/amqtt_auth.py); without one it is open to anonymous
clients, as it was before device credentials existed."""
from __future__ import annotations

import asyncio
import logging
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fleet_server.security.amqtt_auth import BrokerAccess

log = logging.getLogger(__name__)


class EmbeddedBroker:
    def __init__(self, host: str = "127.0.0.1", port: int = 1883, access: BrokerAccess | None = None) -> None:
        self.host = host
        self.port = port
        self.access = access
        self._loop: asyncio.AbstractEventLoop | None = None
        self._broker = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def config(self) -> dict:
        # host:port even for IPv6 ('::1:1883'): amqtt 0.12 splits at the last colon, and
        # keeps the brackets of '[::1]:1883' in the address, which then does not resolve.
        bind = f"{self.host}:{self.port}"
        if self.access is None:
            plugins: dict = {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}}
        else:
            # Device identity and topic ACLs, the same rules Mosquitto gets through its
            # dynamic-security plugin (docs/security.md).
            plugins = {"fleet_server.security.amqtt_auth.DeviceAuthPlugin": {"access": self.access},
                       "fleet_server.security.amqtt_auth.DeviceTopicPlugin": {"access": self.access}}
        return {"listeners": {"default": {"type": "tcp", "bind": bind}}, "plugins": plugins}

    def disconnect_user(self, username: str, timeout_s: float = 5.0) -> int:
        """Drop every live connection of this username (revoked or re-keyed credentials):
        like a lost link, so its will is published; it must log in again. -> how many."""
        if self._loop is None or self._broker is None:
            return 0
        broker = self._broker

        async def kick() -> int:
            from fleet_server.security.amqtt_auth import IDENTITY_ATTR

            n = 0
            for session, handler in list(broker.sessions.values()):   # amqtt: client id -> (session, handler)
                identity = getattr(session, IDENTITY_ATTR, None)
                if identity is not None and identity[1] == username and session.transitions.is_connected():
                    await handler.handle_connection_closed()
                    n += 1
            return n

        return asyncio.run_coroutine_threadsafe(kick(), self._loop).result(timeout_s)

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
