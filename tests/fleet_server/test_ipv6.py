"""IPv6 (docs/security.md, "IPv6"): the server and ingest work dual-stack and over ::1:
`campusfleet serve --bind [::]:PORT` answers on IPv6 and IPv4, ingest connects to a
broker at mqtt://[::1]:PORT, the embedded broker listens on ::1, and a virtual node
whose config names the broker "::1" delivers its windows."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid
from datetime import datetime, timedelta

import httpx
import pytest

from fleet_server.settings import Settings, parse_host_port, parse_mqtt_url
from fleet_server.virtual_nodes import SHANGHAI
from tests.conftest import new_device_id
from tests.utils.mosquitto_tls import MosquittoOn
from tests.utils.services import FleetServer, free_port, wait_until


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


pytestmark = pytest.mark.skipif(not _has_ipv6_loopback(),
                                reason="this machine has no IPv6 loopback (::1): `ip -6 addr show lo` shows none")


def test_urls_and_binds_take_bracketed_ipv6_addresses():
    assert parse_mqtt_url("mqtt://[::1]:1884") == ("mqtt", "::1", 1884)
    assert parse_mqtt_url("mqtts://[fd00::10]") == ("mqtts", "fd00::10", 8883)
    assert parse_mqtt_url("embedded://[::]:1883") == ("embedded", "::", 1883)
    assert parse_host_port("[::]:8000", 80) == ("::", 8000)
    assert Settings(bind="[::]:8443", mqtt="mqtt://[2001:db8::1]:1883").bind == "[::]:8443"


@pytest.fixture(scope="module")
def v6_broker(tmp_path_factory):
    broker = MosquittoOn(tmp_path_factory.mktemp("mosquitto-v6"), host="::1").start()
    yield broker
    broker.stop()


def test_ingest_over_ipv6_stores_a_node_configured_with_broker_host_v6(v6_broker, make_node, tmp_path):
    assert v6_broker.url.startswith("mqtt://[::1]:")
    settings = Settings(db=f"sqlite:///{tmp_path}/fleet.db", mqtt=v6_broker.url,
                        ingest_client_id=f"ingest-{uuid.uuid4().hex[:8]}")
    srv = FleetServer(settings).start()       # fails unless ingest connects to [::1]
    try:
        device_id = new_device_id()
        node = make_node(start=datetime.now(SHANGHAI) - timedelta(hours=1), speed=120, device_id=device_id,
                         mqtt={"host": "::1", "port": v6_broker.port, "tls": False, "user": device_id,
                               "password": ""})
        dev = wait_until(lambda: (d := srv.device(device_id)) and d["windows_received"] >= 3 and d, 60,
                         what="windows from the node on ::1")
        assert dev["online"] is True
        assert node.running()
        assert "Opening ipv6 listen socket" in v6_broker.log.read_text()
        assert "New connection from ::1" in v6_broker.log.read_text()
    finally:
        srv.stop()


def test_serve_dual_stack_with_the_embedded_broker_on_ipv6(make_node, tmp_path):
    """`campusfleet serve --bind [::]:PORT --mqtt embedded://[::1]:PORT`: HTTP answers on
    ::1 and on 127.0.0.1, and a node talks to the embedded broker over ::1."""
    port, mqtt_port = free_port("::1"), free_port("::1")
    # The node is not registered, and this test reads the API without logging in.
    env = {**os.environ, "CAMPUSFLEET_REQUIRE_REGISTRATION": "false", "CAMPUSFLEET_AUTH_REQUIRED": "false"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "fleet_server.cli", "serve", "--bind", f"[::]:{port}",
         "--mqtt", f"embedded://[::1]:{mqtt_port}", "--db", f"sqlite:///{tmp_path}/fleet.db"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        def health(host: str):
            try:
                return httpx.get(f"http://{host}:{port}/api/v1/health", timeout=2)
            except httpx.TransportError:
                assert proc.poll() is None, proc.stdout.read().decode()
                return None
        r6 = wait_until(lambda: health("[::1]"), 30, 0.2, "the server on [::1]")
        assert r6.status_code == 200 and r6.json()["mqtt"] == "connected"
        r4 = health("127.0.0.1")                      # [::] is dual-stack (bindv6only=0)
        assert r4 is not None and r4.status_code == 200
        device_id = new_device_id()
        make_node(start=datetime.now(SHANGHAI) - timedelta(hours=1), speed=120, device_id=device_id,
                  mqtt={"host": "::1", "port": mqtt_port, "tls": False, "user": device_id, "password": ""})

        def stored():
            r = httpx.get(f"http://[::1]:{port}/api/v1/devices/{device_id}", timeout=2)
            return r.status_code == 200 and r.json()["windows_received"] >= 2
        wait_until(stored, 60, 0.5, "windows through the embedded broker on ::1")
    finally:
        proc.terminate()
        proc.wait(15)
