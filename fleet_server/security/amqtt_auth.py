"""Device identity on the embedded amqtt broker: an auth plugin that checks each CONNECT
against device_credentials (username = client id = device id, the secret against its
scrypt hash) and a topic plugin that confines every client to the rules of acl.py.

The identity decided at CONNECT is kept on the amqtt session, so topic checks cost no
database read. amqtt calls both plugins on its event loop: the database read and the
scrypt check (~50 ms) run in a worker thread so the broker keeps serving meanwhile."""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from amqtt.contexts import Action
from amqtt.plugins.base import BaseAuthPlugin, BaseTopicPlugin
from amqtt.session import Session
from sqlalchemy import Engine

from fleet_server.security import acl
from fleet_server.security.credentials import Verdict, classify, stored_hash

log = logging.getLogger(__name__)

# The session attribute that carries the identity decided at CONNECT: ("server", name)
# or ("device", device_id). amqtt lets a new CONNECT overwrite a kept session's
# username before authentication, so topic checks never read session.username.
IDENTITY_ATTR = "campusfleet_identity"
SPOOF_LOG_INTERVAL_S = 60.0


def _text(value: str | bytes | None) -> str | None:
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return None
    return value


class BrokerAccess:
    """Who may connect and what each client may do, for the amqtt plugins.

    - the server's own client (ingest, commands): `server_user` with `server_secret`, a
      random secret made at each start and known only to this process;
    - a device: username = client id = its device id, and the secret issued to it.
      With `require_registration` a device without credentials is refused; without it
      (the demo) it is let in but still confined to its own topics. A device whose
      credentials were revoked, or that presents a wrong secret, is always refused.
    `on_spoofed(device_id, topic)` is told of every publish a device makes outside its
    own topics (the broker drops it)."""

    def __init__(self, engine: Engine, *, require_registration: bool, server_user: str,
                 server_secret: str, on_spoofed: Callable[[str, str], None] | None = None) -> None:
        self.engine = engine
        self.require_registration = require_registration
        self.server_user = server_user
        self._server_secret = server_secret.encode()
        self.on_spoofed = on_spoofed
        # device id -> (stored hash, sha256 of the secret that matched it): a reconnect
        # with the same secret skips scrypt while the stored hash is unchanged (a rotate
        # or revoke changes it, so the cache can never outlive a credential).
        self._verified: dict[str, tuple[str, bytes]] = {}
        self._lock = threading.Lock()
        self._spoof_logged: dict[str, float] = {}

    # --- CONNECT (worker thread) ----------------------------------------------------------
    def authenticate(self, *, client_id: str | None, username: str | None, password: str | bytes | None,
                     will_topic: str | None) -> tuple[tuple[str, str] | None, str]:
        """(identity or None, why)."""
        username = _text(username)
        secret = _text(password)
        if not username:
            return None, "no username"
        if username == self.server_user:
            if secret is not None and hmac.compare_digest(secret.encode(), self._server_secret):
                return ("server", username), "server"
            return None, "wrong server secret"
        if not acl.is_device_id(username):
            return None, "username is not a device id"
        if client_id != username:
            return None, "client id differs from the device id"
        if will_topic is not None and not acl.device_may_publish(username, will_topic):
            return None, f"will on a topic not its own ({will_topic[:80]})"
        verdict = self._verify(username, secret)
        if verdict is Verdict.OK:
            return ("device", username), "registered"
        if verdict is Verdict.UNKNOWN and not self.require_registration:
            return ("device", username), "unregistered (require_registration off)"
        return None, verdict.value

    def _verify(self, device_id: str, secret: str | None) -> Verdict:
        with self.engine.connect() as conn:
            stored = stored_hash(conn, device_id)
        digest = hashlib.sha256(secret.encode()).digest() if secret else b""
        with self._lock:
            cached = self._verified.get(device_id)
        if stored is not None and cached is not None and cached[0] == stored and secret \
                and hmac.compare_digest(cached[1], digest):
            return Verdict.OK
        verdict = classify(stored, secret)
        with self._lock:
            if verdict is Verdict.OK and stored is not None:
                self._verified[device_id] = (stored, digest)
            else:
                self._verified.pop(device_id, None)
        return verdict

    # --- topics (event loop; no I/O) ---------------------------------------------------
    def allowed(self, identity: tuple[str, str] | None, topic: str, action: Action) -> bool:
        if identity is None:
            return False
        kind, name = identity
        if kind == "server":
            if action == Action.PUBLISH:
                return acl.server_may_publish(topic)
            if action == Action.SUBSCRIBE:
                return acl.server_may_subscribe(topic)
            return acl.server_may_receive(topic)
        if action == Action.PUBLISH:
            ok = acl.device_may_publish(name, topic)
            if not ok and topic.startswith(acl.TOPIC_ROOT + "/"):
                self._spoofed(name, topic)
            return ok
        if action == Action.SUBSCRIBE:
            return acl.device_may_subscribe(name, topic)
        return acl.device_may_receive(name, topic)

    def _spoofed(self, device_id: str, topic: str) -> None:
        now = time.monotonic()
        if now - self._spoof_logged.get(device_id, -SPOOF_LOG_INTERVAL_S) >= SPOOF_LOG_INTERVAL_S:
            if len(self._spoof_logged) > 10000:
                self._spoof_logged.clear()
            self._spoof_logged[device_id] = now
            log.warning("dropped a publish by %s on %s: not its own topic (spoofed)", device_id, topic[:100])
        if self.on_spoofed is not None:
            self.on_spoofed(device_id, topic)


def _access(plugin: Any) -> BrokerAccess:
    access = plugin.config.access
    if not isinstance(access, BrokerAccess):
        raise TypeError("the campusfleet amqtt plugins need a BrokerAccess in their `access` option")
    return access


class DeviceAuthPlugin(BaseAuthPlugin):
    """amqtt auth plugin: BrokerAccess.authenticate on every CONNECT."""

    @dataclass
    class Config:
        access: Any = None

    async def authenticate(self, *, session: Session) -> bool:
        access = _access(self)
        will_topic = session.will_topic if session.will_flag else None
        identity, why = await asyncio.to_thread(access.authenticate, client_id=session.client_id,
                                                username=session.username, password=session.password,
                                                will_topic=will_topic)
        if identity is None:
            log.info("refused MQTT client %r (user %r): %s", session.client_id, _text(session.username), why)
            return False
        setattr(session, IDENTITY_ATTR, identity)
        log.debug("MQTT client %r connected as %s %s (%s)", session.client_id, identity[0], identity[1], why)
        return True


class DeviceTopicPlugin(BaseTopicPlugin):
    """amqtt topic plugin: publish, subscribe and receive confined by acl.py."""

    @dataclass
    class Config:
        access: Any = None

    async def topic_filtering(self, *, session: Session | None = None, topic: str | None = None,
                              action: Action | None = None) -> bool:
        if session is None or topic is None or action is None:
            return False
        return _access(self).allowed(getattr(session, IDENTITY_ATTR, None), topic, action)
