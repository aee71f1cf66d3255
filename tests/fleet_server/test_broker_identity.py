"""Per-device identity on a real broker (issue 7): a registered node logs in with its
own secret and uses only its own topics; it cannot publish as another node nor read
another node's commands; wrong secrets and unknown devices are refused; revoke and
rotate work at once, on a running broker. Mosquitto with dynamic security (driven by
the server) and the embedded amqtt broker (our plugin) are held to the same rules, with
the broker and the server on 127.0.0.1 and again both on ::1 (issue 7: "everything
above also works with the broker and server on ::1")."""
from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from fleet_server.security import acl
from fleet_server.security.credentials import REVOKED
from fleet_server.security.dynsec import DynsecClient
from fleet_server.settings import Settings, parse_mqtt_url
from tests.utils.mosquitto_tls import MosquittoDynsecOn, url_host
from tests.utils.registry_samples import ROOMS, SCHOOLS
from tests.utils.services import FleetServer, free_port, needs_ipv6, wait_until

DEV_A = "cf-a0a0a0000001"
DEV_B = "cf-b0b0b0000002"
# A revoked or re-keyed device is off the broker within this (issue 7: "within 5 s").
CUT_OFF_S = 5.0
V4, V6 = "127.0.0.1", "::1"


def window(seq: int) -> bytes:
    t = int(time.time()) - 120
    return json.dumps({"v": 1, "seq": seq, "ts": t - t % 60, "win": 60,
                       "occ": {"occupied_s": 30, "present": True, "pir": 4, "radar_s": 28},
                       "env": {"co2_ppm": 700, "temp_c": 21.5, "rh_pct": 45.0, "lux": 350,
                               "noise_dba": 48.0}}).encode()


class Node:
    """An MQTT 3.1.1 client that logs in like a node (client id = username = device id)."""

    def __init__(self, host: str, port: int, username: str | None, password: str | None,
                 client_id: str | None = None, will_topic: str | None = None) -> None:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id or username or "",
                                  protocol=mqtt.MQTTv311, clean_session=True)
        if username is not None:
            self.client.username_pw_set(username, password)
        if will_topic:
            self.client.will_set(will_topic, b'{"v":1,"online":false}', qos=1, retain=False)
        self.messages: list[tuple[str, bytes]] = []
        self.connack: mqtt.ReasonCode | None = None
        self.granted: list[list[int]] = []
        self._answered = threading.Event()
        self._subacked = threading.Event()
        self.lost = threading.Event()
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = lambda *a: self.lost.set()
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = lambda c, u, m: self.messages.append((m.topic, m.payload))
        self.client.connect(host, port, keepalive=30)
        self.client.loop_start()
        assert self._answered.wait(10) or self.lost.wait(1), "no CONNACK"

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        self.connack = reason_code
        self._answered.set()
        if reason_code.is_failure:
            client.disconnect()   # no reconnect attempts with refused credentials

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        self.granted.append([rc.value for rc in reason_codes])
        self._subacked.set()

    @property
    def accepted(self) -> bool:
        return self.connack is not None and not self.connack.is_failure

    def subscribe(self, topic: str) -> int:
        self._subacked.clear()
        self.client.subscribe(topic, qos=1)
        assert self._subacked.wait(5), "no SUBACK"
        return self.granted[-1][0]

    def publish(self, topic: str, payload: bytes) -> None:
        self.client.publish(topic, payload, qos=1).wait_for_publish(5)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def refused(host: str, port: int, username: str | None, password: str | None, **kw) -> bool:
    node = Node(host, port, username, password, **kw)
    try:
        wait_until(lambda: node.connack is not None or node.lost.is_set(), 10, 0.02, "CONNACK or close")
        return not node.accepted
    finally:
        node.close()


def register(fleet: FleetServer, device_id: str, room: str = "A101") -> str:
    r = fleet.http.post("/api/v1/provisioning/register",
                        json={"device_id": device_id, "school_code": "S1", "room_code": room})
    assert r.status_code == 200, r.text
    return r.json()["mqtt"]["password"]


def seed_registry(server: FleetServer) -> None:
    for kind, text in (("schools", SCHOOLS), ("rooms", ROOMS)):
        r = server.http.post(f"/api/v1/import/{kind}", content=text.encode(),
                             headers={"Content-Type": "text/csv; charset=utf-8"})
        assert r.status_code == 200, r.text


def broker_of(fleet: FleetServer) -> tuple[str, int]:
    _, host, port = parse_mqtt_url(fleet.settings.mqtt)
    return host, port


# --- fixtures ---------------------------------------------------------------------------

# Each test that runs on a given broker runs on 127.0.0.1 and again with the broker and
# the server (HTTP) both on ::1; the ::1 runs are skipped, saying why, where there is no ::1.
HOSTS = [pytest.param(V4, id="ipv4"), pytest.param(V6, id="ipv6", marks=needs_ipv6)]


@pytest.fixture(scope="module")
def dynsec_brokers(tmp_path_factory) -> Iterator:
    """dynsec_brokers(host): this module's dynamic-security Mosquitto on that address,
    started on first use and stopped at the end of the module."""
    started: dict[str, MosquittoDynsecOn] = {}

    def get(host: str) -> MosquittoDynsecOn:
        if host not in started:
            started[host] = MosquittoDynsecOn(tmp_path_factory.mktemp("mosquitto-dynsec"), host=host).start()
        return started[host]
    yield get
    for broker in started.values():
        broker.stop()


@pytest.fixture(params=HOSTS)
def dynsec_broker(request, dynsec_brokers) -> MosquittoDynsecOn:
    return dynsec_brokers(request.param)


@contextmanager
def _mosquitto_server(broker: MosquittoDynsecOn, tmp_path) -> Iterator[FleetServer]:
    """The server managing a dynsec Mosquitto: its own ingest login and the admin login,
    its HTTP API on the broker's address family (127.0.0.1 or [::1])."""
    ingest_pw = tmp_path / "mqtt.pw"
    ingest_pw.write_text(uuid.uuid4().hex + "\n")
    settings = Settings(db=f"sqlite:///{tmp_path}/fleet.db", mqtt=broker.url,
                        ingest_client_id=f"ingest-{uuid.uuid4().hex[:8]}",
                        mqtt_user=f"server-{uuid.uuid4().hex[:8]}", mqtt_password_file=str(ingest_pw),
                        broker_admin_user=broker.admin_user,
                        broker_admin_password_file=str(broker.admin_password_file))
    srv = FleetServer(settings, host=broker.host).start()
    try:
        assert srv.app.state.ingest.wait_subscribed(10)
        seed_registry(srv)
        yield srv
    finally:
        srv.stop()
        admin = DynsecClient(broker.host, broker.port, username=broker.admin_user,
                             password=broker.admin_password).connect()
        for device in (DEV_A, DEV_B):
            admin.delete_device(device)
        admin.close()


@pytest.fixture
def secure_mosquitto_server(dynsec_broker, tmp_path) -> Iterator[FleetServer]:
    with _mosquitto_server(dynsec_broker, tmp_path) as srv:
        yield srv


def _embedded_server(tmp_path, require_registration: bool, host: str = V4) -> FleetServer:
    settings = Settings(db=f"sqlite:///{tmp_path}/fleet.db", mqtt=f"embedded://{url_host(host)}:{free_port(host)}",
                        require_registration=require_registration)
    srv = FleetServer(settings, host=host).start()
    assert srv.app.state.ingest.wait_subscribed(10)
    seed_registry(srv)
    return srv


@pytest.fixture
def embedded_server(tmp_path) -> Iterator[FleetServer]:
    srv = _embedded_server(tmp_path, require_registration=True)
    yield srv
    srv.stop()


@pytest.fixture(params=[pytest.param(("mosquitto-dynsec", V4), id="mosquitto-dynsec"),
                        pytest.param(("embedded", V4), id="embedded"),
                        pytest.param(("mosquitto-dynsec", V6), id="mosquitto-dynsec-ipv6", marks=needs_ipv6),
                        pytest.param(("embedded", V6), id="embedded-ipv6", marks=needs_ipv6)])
def fleet(request, dynsec_brokers, tmp_path) -> Iterator[FleetServer]:
    """The server and its broker, both on 127.0.0.1 or both on ::1."""
    kind, host = request.param
    if kind == "mosquitto-dynsec":
        with _mosquitto_server(dynsec_brokers(host), tmp_path) as srv:
            yield srv
    else:
        srv = _embedded_server(tmp_path, require_registration=True, host=host)
        try:
            yield srv
        finally:
            srv.stop()


def test_fleet_runs_its_broker_and_http_on_the_address_of_its_parameter(fleet, request):
    """The ::1 runs below are really on ::1: the broker URL, the HTTP API and a node's
    connection (the broker sees it come from ::1)."""
    host, port = broker_of(fleet)
    want = V6 if request.node.callspec.id.endswith("ipv6") else V4
    assert host == want and fleet.base_url.startswith(f"http://{url_host(want)}:")
    assert fleet.http.get("/api/v1/health").json()["mqtt"] == "connected"
    node = Node(host, port, DEV_A, register(fleet, DEV_A))
    try:
        assert node.accepted
        assert node.client.socket().getpeername()[0] == want
        assert node.client.socket().getsockname()[0] == want
    finally:
        node.close()


# --- the rules, on both brokers -----------------------------------------------------------

def test_registered_device_logs_in_and_its_own_data_is_stored(fleet):
    host, port = broker_of(fleet)
    password = register(fleet, DEV_A)
    node = Node(host, port, DEV_A, password, will_topic=f"campus/v1/{DEV_A}/status")
    try:
        assert node.accepted, node.connack
        node.publish(f"campus/v1/{DEV_A}/telemetry", window(1))
        wait_until(lambda: (fleet.device(DEV_A) or {}).get("windows_received") == 1, 10,
                   what="the device's own window stored")
    finally:
        node.close()


def test_device_cannot_publish_as_another_device(fleet):
    host, port = broker_of(fleet)
    register(fleet, DEV_B)
    node = Node(host, port, DEV_A, register(fleet, DEV_A))
    try:
        assert node.accepted
        node.publish(f"campus/v1/{DEV_B}/telemetry", window(7))      # spoofed
        node.publish(f"campus/v1/{DEV_B}/status", b'{"v":1,"online":false}')
        node.publish(f"campus/v1/{DEV_A}/cmd", b'{"v":1,"id":"x","op":"reboot"}')  # own cmd: server only
        node.publish(f"campus/v1/{DEV_A}/telemetry", window(8))      # then its own, as a marker
        wait_until(lambda: (fleet.device(DEV_A) or {}).get("windows_received") == 1, 10,
                   what="the marker window")
        b = fleet.device(DEV_B)
        assert b["windows_received"] == 0 and b["last_window"] is None
        assert b["online"] is False or b["last_seen"] is None
        if fleet.app.state.broker is not None:   # the embedded broker counts what it drops
            assert fleet.metric("rejected", "spoofed") == 3
    finally:
        node.close()


def test_device_subscribes_only_to_its_own_cmd_and_gets_commands(fleet):
    host, port = broker_of(fleet)
    register(fleet, DEV_B)
    node = Node(host, port, DEV_A, register(fleet, DEV_A))
    try:
        assert node.subscribe(f"campus/v1/{DEV_B}/cmd") == 0x80
        assert node.subscribe("campus/v1/+/cmd") == 0x80
        assert node.subscribe("#") == 0x80
        assert node.subscribe(f"campus/v1/{DEV_A}/cmd") == 1
        for device in (DEV_B, DEV_A):
            r = fleet.http.post(f"/api/v1/devices/{device}/commands", json={"op": "identify", "args": {"s": 5}})
            assert r.status_code == 202, r.text
        wait_until(lambda: node.messages, 10, what="the node's own command")
        time.sleep(0.3)
        assert [t for t, _ in node.messages] == [f"campus/v1/{DEV_A}/cmd"]
    finally:
        node.close()


def test_wrong_secret_unknown_device_and_borrowed_client_id_are_refused(fleet):
    host, port = broker_of(fleet)
    password = register(fleet, DEV_A)
    register(fleet, DEV_B)
    assert refused(host, port, DEV_A, password + "x")
    assert refused(host, port, DEV_A, "")
    assert refused(host, port, "cf-c0c0c0000003", "anything")          # never registered
    assert refused(host, port, None, None, client_id="anon-1")          # anonymous
    assert refused(host, port, DEV_A, password, client_id=DEV_B)        # someone else's client id
    assert not refused(host, port, DEV_A, password)


def test_revoke_disconnects_the_device_and_rotate_issues_a_new_secret_live(fleet):
    host, port = broker_of(fleet)
    old = register(fleet, DEV_A)
    node = Node(host, port, DEV_A, old)
    assert node.accepted
    try:
        r = fleet.http.post(f"/api/v1/devices/{DEV_A}/credentials/revoke")
        assert r.status_code == 200, r.text
        assert r.json()["revoked"] is True
        assert node.lost.wait(CUT_OFF_S), f"a revoked device stays connected for more than {CUT_OFF_S} s"
    finally:
        node.close()
    assert refused(host, port, DEV_A, old)
    with fleet.app.state.engine.connect() as conn:
        from fleet_server.security.credentials import stored_hash
        assert stored_hash(conn, DEV_A) == REVOKED

    r = fleet.http.post(f"/api/v1/devices/{DEV_A}/credentials/rotate")
    assert r.status_code == 200, r.text
    new = r.json()["password"]
    assert new != old and len(new) >= 32
    assert refused(host, port, DEV_A, old)
    node = Node(host, port, DEV_A, new)
    try:
        assert node.accepted
        # A second rotate throws the connection made with the first secret off.
        newer = fleet.http.post(f"/api/v1/devices/{DEV_A}/credentials/rotate").json()["password"]
        assert node.lost.wait(CUT_OFF_S), f"a connection with a replaced secret stays up over {CUT_OFF_S} s"
    finally:
        node.close()
    assert refused(host, port, DEV_A, new)
    assert not refused(host, port, DEV_A, newer)


def test_credential_endpoints_refuse_unknown_devices_and_bad_ids(fleet):
    assert fleet.http.post("/api/v1/devices/cf-c0c0c0000003/credentials/rotate").status_code == 404
    assert fleet.http.post("/api/v1/devices/cf-c0c0c0000003/credentials/revoke").status_code == 404
    assert fleet.http.post("/api/v1/devices/nope/credentials/rotate").status_code == 422


# --- broker specifics ---------------------------------------------------------------------

def test_mosquitto_revoke_and_rotate_need_no_broker_restart(secure_mosquitto_server, dynsec_broker):
    pid = dynsec_broker.proc.pid
    host, port = dynsec_broker.host, dynsec_broker.port
    first = register(secure_mosquitto_server, DEV_A)
    assert not refused(host, port, DEV_A, first)
    secure_mosquitto_server.http.post(f"/api/v1/devices/{DEV_A}/credentials/revoke").raise_for_status()
    assert refused(host, port, DEV_A, first)
    again = register(secure_mosquitto_server, DEV_A)      # a new registration re-enables it
    assert not refused(host, port, DEV_A, again)
    assert dynsec_broker.proc.pid == pid and dynsec_broker.proc.poll() is None
    admin = DynsecClient(host, port, username=dynsec_broker.admin_user,
                         password=dynsec_broker.admin_password).connect()
    try:
        client = admin.get_client(DEV_A)
        assert client["clientid"] == DEV_A and not client.get("disabled")
        assert [r["rolename"] for r in client["roles"]] == [acl.device_role(DEV_A)]
        assert again not in dynsec_broker.log.read_text()     # the broker log never shows a secret
    finally:
        admin.close()


def test_mosquitto_drops_a_will_on_another_devices_topic(secure_mosquitto_server, dynsec_broker):
    host, port = dynsec_broker.host, dynsec_broker.port
    fleet = secure_mosquitto_server
    register(fleet, DEV_B)
    password = register(fleet, DEV_A)
    for will_topic in (f"campus/v1/{DEV_B}/status", f"campus/v1/{DEV_A}/status"):
        node = Node(host, port, DEV_A, password, will_topic=will_topic)
        assert node.accepted
        node.client.loop_stop()
        node.client.socket().close()           # an unclean end: the broker publishes the will
    # The second will (its own topic) arrives: the first had its chance and was dropped.
    wait_until(lambda: fleet.device(DEV_A)["last_seen"] is not None, 10, what="the node's own will")
    assert fleet.device(DEV_B)["last_seen"] is None


def test_embedded_broker_refuses_a_will_on_another_devices_topic(embedded_server):
    host, port = broker_of(embedded_server)
    register(embedded_server, DEV_B)
    password = register(embedded_server, DEV_A)
    assert refused(host, port, DEV_A, password, will_topic=f"campus/v1/{DEV_B}/status")


def test_demo_mode_lets_unknown_devices_in_but_confined(tmp_path):
    srv = _embedded_server(tmp_path, require_registration=False)
    try:
        host, port = broker_of(srv)
        stranger = "cf-d0d0d0000004"
        node = Node(host, port, stranger, "")
        try:
            assert node.accepted
            assert node.subscribe(f"campus/v1/{DEV_A}/cmd") == 0x80
            node.publish(f"campus/v1/{DEV_A}/telemetry", window(1))
            node.publish(f"campus/v1/{stranger}/telemetry", window(2))
            wait_until(lambda: (srv.device(stranger) or {}).get("windows_received") == 1, 10,
                       what="the stranger's own window")
            assert srv.device(DEV_A) is None
            assert srv.metric("rejected", "spoofed") == 1
        finally:
            node.close()
        # A registered device still needs its own secret, and a revoked one stays out.
        password = register(srv, DEV_A)
        assert refused(host, port, DEV_A, "")
        assert not refused(host, port, DEV_A, password)
        srv.http.post(f"/api/v1/devices/{DEV_A}/credentials/revoke").raise_for_status()
        assert refused(host, port, DEV_A, password)
        assert refused(host, port, "not-a-device", "x")
    finally:
        srv.stop()


@pytest.mark.parametrize("device, topic, publish, subscribe", [
    (DEV_A, f"campus/v1/{DEV_A}/telemetry", True, False),
    (DEV_A, f"campus/v1/{DEV_A}/cmd", False, True),
    (DEV_A, f"campus/v1/{DEV_B}/telemetry", False, False),
    (DEV_A, f"campus/v1/{DEV_A}x/telemetry", False, False),
    (DEV_A, "campus/v1/+/cmd", False, False),
    (DEV_A, "#", False, False),
])
def test_device_topic_rules(device, topic, publish, subscribe):
    assert acl.device_may_publish(device, topic) is publish
    assert acl.device_may_subscribe(device, topic) is subscribe


def test_server_topic_rules():
    assert acl.server_may_subscribe("campus/v1/+/#") and acl.server_may_subscribe("$share/campusfleet/campus/v1/+/#")
    assert not acl.server_may_subscribe("#") and not acl.server_may_subscribe("$share/x")
    assert acl.server_may_publish(f"campus/v1/{DEV_A}/cmd")
    assert not acl.server_may_publish(f"campus/v1/{DEV_A}/telemetry") and not acl.server_may_publish("campus/v1/+/cmd")


# --- a virtual node (the real firmware) with its credentials in config.json -------------

def test_virtual_node_logs_in_through_dynamic_security_and_is_refused_after_revoke(
        secure_mosquitto_server, dynsec_broker, make_node):
    from datetime import datetime, timedelta, timezone

    fleet = secure_mosquitto_server
    password = register(fleet, DEV_A)
    mqtt_cfg = {"host": dynsec_broker.host, "port": dynsec_broker.port, "tls": False,
                "user": DEV_A, "password": password}
    start = datetime.now(timezone.utc) - timedelta(minutes=30)
    node = make_node(start=start, speed=60, device_id=DEV_A, broker=dynsec_broker, mqtt=mqtt_cfg)
    wait_until(lambda: (fleet.device(DEV_A) or {}).get("online") and fleet.device(DEV_A)["windows_received"] >= 1,
               40, what="the virtual node online with a stored window")
    fleet.http.post(f"/api/v1/devices/{DEV_A}/credentials/revoke").raise_for_status()
    # Kicked by the broker, the node keeps retrying and is refused: no new data arrives.
    time.sleep(1.0)
    received = fleet.device(DEV_A)["windows_received"]
    time.sleep(3.0)
    assert fleet.device(DEV_A)["windows_received"] == received
    assert node.proc.poll() is None           # the node waits out the refusal, it does not crash
