"""Real services for tests (TESTING.md): Mosquitto started from a config in a temp
folder, the fleet server under uvicorn on a free port, and small waiting helpers."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import pytest
import uvicorn
from paho.mqtt.enums import CallbackAPIVersion

from fleet_server.app import create_app
from fleet_server.auth import tokens as auth_tokens
from fleet_server.auth import users as auth_users
from fleet_server.settings import Settings


def free_port(host: str = "127.0.0.1") -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def has_ipv6_loopback() -> bool:
    """Whether this machine can listen on ::1 (a container may have no IPv6 at all)."""
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


# For a test (or a parameter) that needs ::1: skipped, and says why, on a machine without it.
needs_ipv6 = pytest.mark.skipif(not has_ipv6_loopback(),
                                reason="this machine has no IPv6 loopback (::1): `ip -6 addr show lo` shows none")


def url_host(host: str) -> str:
    """An address as it goes into a URL: IPv6 in brackets."""
    return f"[{host}]" if ":" in host else host


def wait_until(predicate: Callable[[], Any], timeout_s: float = 20.0, interval_s: float = 0.1,
               what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what} (last value: {last!r})")


def mosquitto_binary() -> str:
    for candidate in (shutil.which("mosquitto"), "/usr/sbin/mosquitto"):
        if candidate and Path(candidate).exists():
            return candidate
    pytest.fail("Mosquitto is not installed; run `make sysdeps` as root or `sudo apt-get install -y mosquitto`",
                pytrace=False)


class Mosquitto:
    """A real Mosquitto on a free loopback port; stop() / start() for fault tests.
    `host` (default `default_host`, 127.0.0.1) is the address it listens on, e.g. "::1"."""

    default_host = "127.0.0.1"

    def __init__(self, workdir: Path, port: int | None = None, persistent: bool = False,
                 host: str | None = None) -> None:
        self.workdir = workdir
        self.host = host or self.default_host
        self.port = port or free_port(self.host)
        self.proc: subprocess.Popen | None = None
        self.conf = workdir / "mosquitto.conf"
        self.log = workdir / "mosquitto.log"
        # Persistent like a production broker: sessions and queued QoS 1 messages
        # survive a broker restart (fault tests). As root, stay root so the store can
        # be written into the test's own folder.
        persistence = (f"persistence true\npersistence_location {workdir}/\nautosave_interval 1\n"
                       if persistent else "persistence false\n")
        as_root = "user root\n" if os.geteuid() == 0 else ""
        self.conf.write_text(
            f"listener {self.port} {self.host}\n"
            "allow_anonymous true\n"
            + persistence + as_root +
            # Ingest acks after commit: let many QoS 1 messages be in flight to it.
            "max_inflight_messages 1000\n"
            "max_queued_messages 100000\n"
            "log_dest stderr\n"
        )
        self.conf.chmod(0o644)

    @property
    def url(self) -> str:
        return f"mqtt://{url_host(self.host)}:{self.port}"

    def start(self) -> Mosquitto:
        log = open(self.log, "ab")
        self.proc = subprocess.Popen([mosquitto_binary(), "-c", str(self.conf)],
                                     stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        try:
            wait_until(self._accepting, 10, 0.05, f"mosquitto on port {self.port}")
        except AssertionError:
            self.stop()
            raise AssertionError(f"mosquitto did not start; its log:\n{self.log.read_text()}") from None
        return self

    def _accepting(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"mosquitto exited ({self.proc.returncode}):\n{self.log.read_text()}")
        try:
            with socket.create_connection((self.host, self.port), timeout=0.2):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None


class FleetServer:
    """The fleet server app under a real uvicorn in a thread, on a free port."""

    def __init__(self, settings: Settings, host: str = "127.0.0.1") -> None:
        self.settings = settings
        self.app = create_app(settings)
        self.port = free_port(host)
        self.base_url = f"http://{url_host(host)}:{self.port}"
        self._server = uvicorn.Server(uvicorn.Config(self.app, host=host, port=self.port,
                                                     log_level="warning", lifespan="on"))
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self.http = httpx.Client(base_url=self.base_url, timeout=10)
        self.token: str | None = None

    def start(self) -> FleetServer:
        self._thread.start()
        wait_until(lambda: self._server.started or not self._thread.is_alive(), 30, 0.05, "uvicorn start")
        if not self._server.started:
            raise AssertionError("the fleet server failed to start (see the log above)")
        ingest = self.app.state.ingest
        if ingest is not None and not ingest.wait_connected(10):
            raise AssertionError("ingest did not connect to the broker")
        if self.settings.auth_required:
            # Auth is on, as in production: the tests' client acts as an operator through
            # an API token (tests of roles make their own users and tokens).
            self.add_user("test-operator", "operator")
            self.token = self.token_for("test-operator")
            self.http.headers["Authorization"] = f"Bearer {self.token}"
        return self

    def add_user(self, username: str, role: str, *, password: str | None = None, region_code: int | None = None,
                 school_id: int | None = None) -> auth_users.User:
        with self.app.state.engine.begin() as conn:
            return auth_users.create_user(conn, username, role, password=password, region_code=region_code,
                                          school_id=school_id)

    def token_for(self, username: str, scopes: frozenset[str] | None = None, expires_days: float | None = 1) -> str:
        with self.app.state.engine.begin() as conn:
            user = auth_users.get_user_by_name(conn, username)
            token, _ = auth_tokens.create_token(conn, user, name="tests", scopes=scopes, expires_days=expires_days)
        return token

    def client(self, token: str | None = None) -> httpx.Client:
        """A client of its own (no default credentials unless `token`); the caller closes it."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.base_url, timeout=10, headers=headers)

    def stop(self) -> None:
        self.http.close()
        self._server.should_exit = True
        self._thread.join(20)

    # helpers
    def get(self, path: str, **kw) -> Any:
        r = self.http.get(path, **kw)
        r.raise_for_status()
        return r.json()

    def device(self, device_id: str) -> dict | None:
        r = self.http.get(f"/api/v1/devices/{device_id}")
        return r.json() if r.status_code == 200 else None

    def metric(self, result: str, reason: str) -> int:
        text = self.http.get("/metrics").text
        key = f'campusfleet_ingest_messages_total{{result="{result}",reason="{reason}"}} '
        for line in text.splitlines():
            if line.startswith(key):
                return int(float(line[len(key):]))
        return 0


class Publisher:
    """A plain paho client that publishes like a node would (QoS 1, waits for PUBACK)."""

    def __init__(self, host: str, port: int, client_id: str = "test-publisher") -> None:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
        self.client.connect(host, port)
        self.client.loop_start()

    def publish(self, topic: str, payload: bytes | str, qos: int = 1, retain: bool = False) -> None:
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        info.wait_for_publish(5)
        assert info.is_published(), f"broker did not ack publish to {topic}"

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class Recorder:
    """Subscribes to topics and keeps every message (topic, payload, retain)."""

    def __init__(self, host: str, port: int, topic: str) -> None:
        self.messages: list[tuple[str, bytes, bool]] = []
        self._lock = threading.Lock()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"rec-{free_port()}")
        self.client.on_message = self._on_message
        ready = threading.Event()
        self.client.on_subscribe = lambda *a: ready.set()
        self.client.connect(host, port)
        self.client.subscribe(topic, qos=1)
        self.client.loop_start()
        assert ready.wait(5), "recorder subscription not acknowledged"

    def _on_message(self, client, userdata, msg) -> None:
        with self._lock:
            self.messages.append((msg.topic, msg.payload, bool(msg.retain)))

    def of(self, suffix: str) -> list[bytes]:
        with self._lock:
            return [p for t, p, _ in self.messages if t.endswith("/" + suffix)]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def clear_retained(broker: "Mosquitto", topic: str = "campus/v1/#", quiet_s: float = 0.2) -> int:
    """Delete every retained message under `topic` (an empty retained publish each);
    returns how many there were."""
    retained: set[str] = set()
    subscribed = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"clear-{free_port()}")
    client.on_message = lambda c, u, m: retained.add(m.topic) if m.retain and m.payload else None
    client.on_subscribe = lambda *a: subscribed.set()
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        client.subscribe(topic, qos=1)
        subscribed.wait(5)
        time.sleep(quiet_s)      # retained messages come right after the SUBACK
        for t in sorted(retained):
            client.publish(t, b"", qos=1, retain=True).wait_for_publish(5)
    finally:
        client.disconnect()
        client.loop_stop()
    return len(retained)
