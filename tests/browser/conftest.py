"""Browser fixtures (TESTING.md "web pages"): Debian's Chromium, headless, driven by
Playwright; a fleet server fed by virtual nodes (the real firmware on the MicroPython
unix port) through a school day; pages that record every request they make."""
from __future__ import annotations

import ast
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from fleet_server.db.schema import windows
from fleet_server.metrics.rollup import pending, run_rollups
from fleet_server.settings import Settings
from fleet_server.virtual_nodes import FIRMWARE_DIR, SHANGHAI, VirtualNode, node_config, prepare_node_dir
from tests.utils.services import FleetServer, Mosquitto, wait_until

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
SCHOOL_S = 10 * 3600               # 07:30-17:30
SPEED = 1200
# (room code, name, type, new_style, scenario, seed): nodes in the first three, the
# fourth (a new-style space) gets the unassigned node in the fleet test.
# The browser logs in through the real login page as this operator (fed fixture).
WEB_USER, WEB_PASSWORD = "web-operator", "browser-tests-password"
ROOMS = (("C1", "一年级(1)班", "classroom", 0, "classroom", 3), ("C2", "一年级(2)班", "classroom", 0, "classroom", 8),
         ("L1", "科学实验室", "lab", 0, "lab", 5), ("N1", "未来教室", "new_style", 1, None, 0))


def firmware_periods() -> list[tuple[int, int]]:
    """PERIODS of firmware/hw/scenario.py as (start, end) seconds of the day."""
    tree = ast.parse((FIRMWARE_DIR / "hw" / "scenario.py").read_text())
    node = next(n for n in tree.body if isinstance(n, ast.Assign) and n.targets[0].id == "PERIODS")
    # The tuple is written with arithmetic (8 * 3600 + ...): evaluate it without builtins.
    return [tuple(p) for p in eval(compile(ast.Expression(node.value), "scenario.py", "eval"),
                                   {"__builtins__": {}})]


def hhmm(seconds: int) -> str:
    return f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}"


def a_recent_weekday() -> datetime:
    d = datetime.now(SHANGHAI).date() - timedelta(days=2)
    while d.weekday() >= 5:
        d -= timedelta(days=1)
    return datetime(d.year, d.month, d.day, 7, 30, tzinfo=SHANGHAI)


@pytest.fixture(scope="session")
def chromium_path() -> str:
    if not CHROMIUM.exists():
        pytest.fail("Chromium is not installed; run `make sysdeps` as root or `sudo apt-get install -y chromium`",
                    pytrace=False)
    return str(CHROMIUM)


@pytest.fixture(scope="session")
def browser(chromium_path):
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("Playwright for Python is missing: `make test` installs it (pip install -e '.[dev]')",
                    pytrace=False)
    pw = sync_playwright().start()
    b = pw.chromium.launch(executable_path=chromium_path, headless=True, args=CHROMIUM_ARGS)
    yield b
    b.close()
    pw.stop()


@dataclass
class FedServer:
    server: FleetServer
    day: str                                  # the school-local date the nodes played
    week: str
    school_id: int
    other_school_id: int
    room_ids: dict[str, int]
    spare_device: str                         # running, not assigned to any room
    nodes: list[VirtualNode] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return self.server.base_url

    def api(self, path: str, **params):
        return self.server.get(path, params=params or None)


def _post_csv(srv: FleetServer, kind: str, text: str) -> None:
    r = srv.http.post(f"/api/v1/import/{kind}", content=text.encode(), headers={"content-type": "text/csv"})
    assert r.status_code == 200, r.text


@pytest.fixture(scope="module")
def browser_broker(tmp_path_factory) -> Iterator[Mosquitto]:
    """A Mosquitto of these tests' own: the session-wide one holds retained statuses of
    other tests' devices, which would show up on these pages as extra devices."""
    broker = Mosquitto(tmp_path_factory.mktemp("browser-broker")).start()
    yield broker
    broker.stop()


@pytest.fixture(scope="module")
def fed(browser_broker, tmp_path_factory) -> Iterator[FedServer]:
    """A fleet server on SQLite with two schools in 西湖区: the first has four rooms,
    three with virtual nodes that played a whole school day at 1200x (then stopped and
    rolled up); a fourth node runs unassigned for the fleet test."""
    mosquitto = browser_broker
    tmp = tmp_path_factory.mktemp("browser")
    settings = Settings(db=f"sqlite:///{tmp}/fleet.db", mqtt=mosquitto.url,
                        ingest_client_id=f"ingest-{uuid.uuid4().hex[:8]}")
    srv = FleetServer(settings).start()
    srv.add_user(WEB_USER, "operator", password=WEB_PASSWORD)
    start = a_recent_weekday()
    t0 = int(start.timestamp())
    end_ts = t0 + SCHOOL_S
    _post_csv(srv, "schools", "code,name,county_code,stage,day_start,day_end\n"
              "W1,杭州市西湖区网页测试小学,330106,primary,07:30,17:30\n"
              "W2,杭州市西湖区网页测试中学,330106,junior,07:30,17:30\n")
    _post_csv(srv, "rooms", "school_code,room_code,name,type,new_style\n"
              + "".join(f"W1,{code},{name},{kind},{ns}\n" for code, name, kind, ns, _, _ in ROOMS)
              + "W2,A101,七年级(1)班,classroom,0\n")
    _post_csv(srv, "timetable", "school_code,room_code,weekday,start,end,label\n" + "".join(
        f"W1,{code},{start.isoweekday()},{hhmm(a)},{hhmm(b)},第{i}节\n"
        for code in ("C1", "C2") for i, (a, b) in enumerate(firmware_periods(), 1)))
    schools = {s["code"]: s["id"] for s in srv.get("/api/v1/schools", params={"county": 330106})["items"]}
    room_ids = {r["code"]: r["id"] for r in srv.get(f"/api/v1/schools/{schools['W1']}/rooms")}
    nodes: list[VirtualNode] = []
    played: list[VirtualNode] = []

    def node(device_id: str, scenario: str, seed: int) -> VirtualNode:
        cfg = node_config(device_id, mqtt_host=mosquitto.host, mqtt_port=mosquitto.port, scenario=scenario,
                          start=start, speed=SPEED, seed=seed, truth="truth.csv")
        n = VirtualNode(device_id, prepare_node_dir(tmp / "nodes" / device_id, cfg)).start()
        nodes.append(n)
        return n

    try:
        for i, (code, _name, _kind, _ns, scenario, seed) in enumerate(ROOMS):
            if scenario is None:
                continue
            device_id = f"cf-0000b7{i:06x}"
            r = srv.http.put(f"/api/v1/devices/{device_id}/room", json={"room_id": room_ids[code], "from_ts": t0})
            assert r.status_code == 200, r.text
            played.append(node(device_id, scenario, seed))
        spare = node("cf-0000b7ffffff", "classroom", 11)
        engine = srv.app.state.engine

        def day_stored():
            with engine.connect() as conn:
                counts = [conn.execute(select(func.count()).select_from(windows).where(
                    windows.c.device_id == n.device_id, windows.c.ts < end_ts)).scalar_one() for n in played]
            return counts if min(counts) >= 600 else None
        wait_until(day_stored, 300, 0.5, "a whole school day of windows from every node")
        # Stopped (they say offline on the way out), so the figures hold still while
        # the pages and the API are compared.
        for n in played:
            n.stop()
        wait_until(lambda: all(not srv.device(n.device_id)["online"] for n in played), 30, 0.2, "nodes offline")
        run_rollups(engine)

        def drained():
            with engine.connect() as conn:
                return pending(conn)["pending_windows"] == 0
        wait_until(drained, 60, 0.2, "the rollup queue drained")
        wait_until(lambda: srv.device(spare.device_id) and srv.device(spare.device_id)["online"], 60, 0.2,
                   "the spare node online")
        y, w, _ = start.date().isocalendar()
        yield FedServer(srv, start.date().isoformat(), f"{y}-W{w:02d}", schools["W1"], schools["W2"],
                        room_ids, spare.device_id, nodes)
    finally:
        for n in nodes:
            n.stop()
        srv.stop()


@dataclass
class RecordedPage:
    page: object
    base_url: str
    requests: list[str] = field(default_factory=list)
    foreign: list[str] = field(default_factory=list)

    def goto(self, path: str):
        return self.page.goto(self.base_url + path)


def open_page(browser, base_url: str, locale: str) -> tuple[object, RecordedPage]:
    """A fresh context in `locale` (it sends that Accept-Language), whose requests are
    all recorded; any request to another origin is recorded as foreign and aborted."""
    context = browser.new_context(locale=locale, viewport={"width": 1200, "height": 900},
                                  service_workers="block")
    page = context.new_page()
    # Log in through the login page, as a user does; the session cookie stays in the context.
    page.goto(base_url + "/fleet")
    assert "/login" in page.url, page.url
    page.fill("#username", WEB_USER)
    page.fill("#password", WEB_PASSWORD)
    page.click("#login-submit")
    page.wait_for_url(f"{base_url}/fleet")
    rec = RecordedPage(page, base_url)

    def route(r):
        url = r.request.url
        rec.requests.append(url)
        if url.startswith(base_url + "/") or url == base_url or url.startswith(("data:", "about:")):
            r.continue_()
        else:
            rec.foreign.append(url)
            r.abort()

    context.route("**/*", route)
    return context, rec


@pytest.fixture
def en_page(browser, fed) -> Iterator[RecordedPage]:
    context, rec = open_page(browser, fed.base_url, "en-US")
    yield rec
    context.close()
    assert rec.foreign == [], f"requests left the server's origin: {rec.foreign}"


@pytest.fixture
def zh_page(browser, fed) -> Iterator[RecordedPage]:
    context, rec = open_page(browser, fed.base_url, "zh-CN")
    yield rec
    context.close()
    assert rec.foreign == [], f"requests left the server's origin: {rec.foreign}"
