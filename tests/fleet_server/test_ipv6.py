"""IPv6 (docs/security.md, "IPv6"): the server and ingest work dual-stack and over ::1:
`campusfleet serve --bind [::]:PORT` answers on IPv6 and IPv4, ingest connects to a
broker at mqtt://[::1]:PORT, the embedded broker listens on ::1, and a virtual node
whose config names the broker "::1" delivers its windows.

Issue 7's security checks with the broker and the server (HTTP) both on ::1: here, a
fuzz burst, the access matrix walked as a school admin, and tokens that expire and are
revoked, each through the helpers of the test that does it on 127.0.0.1. Elsewhere, as
parameters of the same tests: device identity and revoke on Mosquitto with dynamic
security and on the embedded broker (test_broker_identity.py, ids `*ipv6*`), TLS with
a node verifying the broker at ::1 (test_tls.py, `[ipv6]`), login throttling by an IPv6
client's /64 (test_login_throttle.py)."""
from __future__ import annotations

import concurrent.futures
import os
import random
import subprocess
import sys
import time
import uuid
from collections import Counter
from datetime import datetime, timedelta

import httpx
import pytest
from sqlalchemy import text, update

from fleet_server.db.auth_schema import api_tokens
from fleet_server.settings import Settings, parse_host_port, parse_mqtt_url
from fleet_server.virtual_nodes import SHANGHAI
from tests.conftest import new_device_id
from tests.fleet_server import test_access_matrix as matrix
from tests.fleet_server import test_fuzz_server as fuzz
from tests.utils.mosquitto_tls import MosquittoOn
from tests.utils.services import FleetServer, clear_retained, free_port, needs_ipv6, wait_until

pytestmark = needs_ipv6


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


@pytest.fixture(autouse=True)
def _no_retained_messages_left_on_v6(request):
    """As conftest's for the session broker: what a test's nodes left retained on the
    ::1 broker would be ingested by the next test's server."""
    yield
    if "v6_broker" in request.fixturenames:
        clear_retained(request.getfixturevalue("v6_broker"))


def v6_server(broker: MosquittoOn, tmp_path, **settings) -> FleetServer:
    """The fleet server with its HTTP API on [::1] and its ingest on the broker on ::1."""
    srv = FleetServer(Settings(db=f"sqlite:///{tmp_path}/fleet.db", mqtt=broker.url,
                               ingest_client_id=f"ingest-{uuid.uuid4().hex[:8]}", **settings), host="::1").start()
    assert srv.base_url.startswith("http://[::1]:") and broker.url.startswith("mqtt://[::1]:")
    return srv


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


# -- issue 7's checks with the broker and the server on ::1 ------------------------------

N_FUZZ_MQTT = 1_500     # test_fuzz_server.py sends 10,400 over 127.0.0.1; a burst here
N_FUZZ_HTTP = 300


def test_fuzz_burst_over_ipv6_counts_every_message_and_stores_each_good_window_once(v6_broker, tmp_path,
                                                                                      monkeypatch):
    srv = v6_server(v6_broker, tmp_path, login_address_per_min=0)
    try:
        monkeypatch.setattr(fuzz, "N_MQTT", N_FUZZ_MQTT)          # the same generator, a shorter run
        messages, good = fuzz.build_traffic(random.Random(fuzz.SEED + 6))
        expected = sum(1 for t, _ in messages if fuzz.counted(t))
        sure_bad = sum(1 for t, p in messages
                       if fuzz.counted(t) and t.split("/")[2] in fuzz.GOOD and fuzz._good_key(t, p) is None)
        assert len(messages) >= 1_000 and len(good) > 100 and sure_bad > 100
        before = fuzz._total(srv)
        fuzz._publish_all("::1", v6_broker.port, messages)
        wait_until(lambda: sum((fuzz._total(srv) - before).values()) >= expected, 60, 0.25,
                   f"ingest to count {expected} messages")
        time.sleep(0.5)                                          # and no more
        delta = fuzz._total(srv) - before
        assert sum(delta.values()) == expected, (sum(delta.values()), expected, delta)
        assert sum(n for (result, _), n in delta.items() if result == "rejected") >= sure_bad
        with srv.app.state.engine.connect() as conn:
            rows = conn.execute(text("SELECT device_id, seq, ts, occupied_s, co2_ppm FROM windows "
                                     "WHERE device_id LIKE 'cf-900d%'")).all()
        stored = Counter((r.device_id, r.seq) for r in rows)
        assert not [k for k, n in stored.items() if n > 1], "a good window stored twice"
        assert set(stored) == set(good), "good windows lost or junk stored on a good device"
        for r in rows:
            doc = good[(r.device_id, r.seq)]
            assert (r.ts, r.occupied_s, r.co2_ppm) == (doc["ts"], doc["occ"]["occupied_s"], doc["env"]["co2_ppm"])
        # A fuzzed HTTP burst over [::1]: no 5xx, no dropped connection.
        srv.add_user("fuzz-tech", "technician")
        tokens = [srv.token, srv.token_for("fuzz-tech"), None, "garbage"]
        routes = [(m.upper(), p) for p, ops in srv.get("/openapi.json")["paths"].items() for m in ops
                  if m in ("get", "post", "put", "patch", "delete")
                  and (m.upper(), p) not in (("DELETE", "/api/v1/auth/tokens/{token_id}"),
                                             ("PATCH", "/api/v1/users/{user_id}"))]
        rng = random.Random(fuzz.SEED + 7)
        requests_ = [fuzz.fuzz_request(rng, routes, tokens) for _ in range(N_FUZZ_HTTP)]

        def run(chunk: list[dict]) -> list[int]:
            with httpx.Client(base_url=srv.base_url, timeout=30) as c:
                out = []
                for req in chunk:
                    try:
                        out.append(c.request(**req).status_code)
                    except httpx.HTTPError:
                        out.append(0)
                return out
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            statuses = Counter(code for part in pool.map(run, [requests_[0::2], requests_[1::2]]) for code in part)
        assert sum(statuses.values()) == N_FUZZ_HTTP
        assert not [c for c in statuses if c >= 500 or c == 0], statuses
        assert statuses[401] > 10 and statuses[422] > 10, statuses
        health = srv.get("/api/v1/health")
        assert (health["status"], health["mqtt"]) == ("ok", "connected"), health
    finally:
        srv.stop()


def test_a_school_admin_is_confined_to_its_school_over_ipv6(v6_broker, tmp_path):
    """docs/access-matrix.md, the school admin's and the anonymous columns, walked over
    http://[::1] (test_access_matrix.py walks every role over 127.0.0.1): 403/404 for
    the other school's school, rooms, devices and alerts, and nothing of it in lists."""
    srv = v6_server(v6_broker, tmp_path, login_address_burst=1000)
    world = None
    try:
        world = matrix._build_world(srv)
        rows = matrix.parse_matrix(matrix.MATRIX.read_text(encoding="utf-8"))
        assert sum(1 for cells in rows.values() if cells["school_admin"] == "school") >= 20
        problems = [p for role in ("school_admin", "anonymous") for key, cells in rows.items()
                    for p in matrix.check_cell(world, key, role, cells[role])]
        assert not problems, f"{len(problems)} disagreement(s) with the matrix over ::1:\n" + "\n".join(problems)
        inside, outside = world.place("in"), world.place("out")
        with world.client("school_admin") as c:
            assert c.get(f"/api/v1/schools/{inside['school']}").status_code == 200
            for path in (f"/api/v1/schools/{outside['school']}", f"/api/v1/schools/{outside['school']}/rooms",
                         f"/api/v1/devices/{outside['device']}", f"/rooms/{outside['room']}"):
                assert c.get(path).status_code in (403, 404), path
        # The audit log says where the school admin's writes came from: ::1.
        entries = srv.get("/api/v1/audit", params={"action": "device.assign", "limit": 100})["items"]
        mine = [e for e in entries if e["role"] == "school_admin"]
        assert mine and all(e["ip"] == "::1" for e in mine), entries
        assert not [e for e in mine if e["target_id"] == matrix.D4]
    finally:
        for c in (world.clients.values() if world else ()):
            c.close()
        srv.stop()


def test_tokens_expire_and_are_revocable_and_audited_over_ipv6(v6_broker, tmp_path):
    """test_auth.py's token rules over http://[::1]: a token made through the API works,
    an expired one is refused, a revoked one is refused at once; the audit log records
    each with the address ::1."""
    srv = v6_server(v6_broker, tmp_path)
    password = "a-long-enough-password"
    try:
        srv.add_user("alice", "technician", password=password)
        with srv.client() as browser:
            r = browser.post("/api/v1/auth/login", json={"username": "alice", "password": password})
            assert r.status_code == 200, r.text
            made = [browser.post("/api/v1/auth/tokens", json={"name": f"script-{i}", "expires_days": 1},
                                 headers={"x-csrf-token": r.json()["csrf_token"]}) for i in range(2)]
        assert [m.status_code for m in made] == [201, 201], [m.text for m in made]
        expiring, revoked = (m.json() for m in made)
        for t in (expiring, revoked):
            with srv.client(t["token"]) as c:
                assert c.get("/api/v1/devices").status_code == 200
        with srv.app.state.engine.begin() as conn:
            conn.execute(update(api_tokens).where(api_tokens.c.id == expiring["id"])
                         .values(expires_s=time.time() - 1))
        with srv.client(expiring["token"]) as c:
            assert c.get("/api/v1/devices").status_code == 401                       # expired
        assert srv.http.delete(f"/api/v1/auth/tokens/{revoked['id']}").status_code == 200   # the operator
        with srv.client(revoked["token"]) as c:
            assert c.get("/api/v1/devices").status_code == 401                       # revoked
        entries = srv.get("/api/v1/audit", params={"limit": 100})["items"]
        seen = {(e["action"], e["actor"], e["ip"]) for e in entries}
        assert {("login.success", "alice", "::1"), ("token.create", "alice", "::1"),
                ("token.revoke", "test-operator", "::1")} <= seen, seen
    finally:
        srv.stop()
