"""The access matrix in docs/access-matrix.md, checked against the running app (SQLite
and PostgreSQL): every route of the app has a row and every row is a route; each role
(and anonymous) calls every route, and gets what its cell says: allowed is neither 401
nor 403, refused is 403 (401 anonymous), and a region- or school-scoped role gets 403 /
404 for a school, room, device or region outside its own and never sees one in a list."""
from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import insert
from starlette.routing import Mount

from fleet_server.app import create_app
from fleet_server.db.alerts_schema import alerts
from fleet_server.db.registry_schema import regions
from fleet_server.settings import Settings
from tests.utils.postgres import Postgres
from tests.utils.registry_samples import ROOMS, SCHOOLS
from tests.utils.services import FleetServer

MATRIX = Path(__file__).resolve().parents[2] / "docs" / "access-matrix.md"
ROLES = ("anonymous", "province", "city", "county", "school_admin", "technician", "operator")
CELLS = {"yes", "no", "region", "school", "own"}
SCOPED = {"region", "school", "own"}

# Inside every scoped role's reach: S1 (西湖区 330106, 杭州市, 浙江省), its room A101, D1 in it.
# Outside all of them: a school in another province (江苏省 南京市 玄武区), its room, D4.
PROVINCE, CITY, COUNTY = 330000, 330100, 330106
OUT_PROVINCE, OUT_CITY, OUT_COUNTY = 320000, 320100, 320102
D1, D4 = "cf-0000ac000001", "cf-0000ac000004"
OUTSIDE_NAME = "Outside-School-外省学校"
PASSWORD = "matrix-password-123"
DAY = "2026-11-03"


# -- the matrix ------------------------------------------------------------------------

def parse_matrix(text: str) -> dict[tuple[str, str], dict[str, str]]:
    """{(method, path): {role: cell}} from the table whose header starts `| method | path |`."""
    rows: dict[tuple[str, str], dict[str, str]] = {}
    header: list[str] | None = None
    for line in text.splitlines():
        cells = [c.strip().strip("`") for c in line.strip().strip("|").split("|")]
        if line.startswith("| method | path |"):
            header = cells
            assert tuple(header[2:]) == ROLES, f"matrix columns {header[2:]} are not {ROLES}"
            continue
        if header is None or not line.startswith("|") or set(line) <= set("|- "):
            if header is not None and not line.startswith("|"):
                header = None if line.strip() else header
            continue
        assert len(cells) == len(header), f"matrix row has {len(cells)} cells, not {len(header)}: {line}"
        key = (cells[0], cells[1])
        assert key not in rows, f"matrix lists {key} twice"
        bad = {c for c in cells[2:] if c not in CELLS}
        assert not bad, f"unknown cell(s) {bad} in {line} (one of {sorted(CELLS)})"
        rows[key] = dict(zip(ROLES, cells[2:]))
    assert rows, f"no table found in {MATRIX}"
    return rows


def app_routes(app) -> set[tuple[str, str]]:
    """(method, path) of every HTTP route the app answers (HEAD goes with GET)."""
    try:   # FastAPI >= 0.16x keeps included routers lazily; this walks them
        from fastapi.routing import iter_route_contexts
        entries = [(rc.original_route, rc.path, rc.methods) for rc in iter_route_contexts(app.routes)]
    except ImportError:  # pragma: no cover - older FastAPI: a flat list
        entries = [(r, getattr(r, "path", None), getattr(r, "methods", None)) for r in app.routes]
    found: set[tuple[str, str]] = set()
    for route, path, methods in entries:
        if isinstance(route, Mount):
            found.add(("GET", route.path + "/{path}"))
            continue
        assert path is not None, f"a route without a path: {route!r}"
        for method in methods or ():
            if method != "HEAD":
                found.add((method, path))
    return found


def test_the_matrix_lists_every_route_of_the_app_and_no_other():
    matrix = parse_matrix(MATRIX.read_text(encoding="utf-8"))
    routes = app_routes(create_app(Settings(db="sqlite:///:memory:")))
    missing = sorted(routes - set(matrix))
    gone = sorted(set(matrix) - routes)
    assert not missing, ("routes of the app with no row in docs/access-matrix.md (add one per route, "
                         f"and a request for it in REQUESTS of this test): {missing}")
    assert not gone, f"docs/access-matrix.md lists routes the app no longer has: {gone}"
    assert ("GET", "/api/v1/devices") in routes and ("GET", "/fleet") in routes   # the walk reaches included routers


def test_the_matrix_parser_reads_cells_and_refuses_a_bad_one():
    head = "| method | path | " + " | ".join(ROLES) + " |\n| --- | --- |" + " --- |" * len(ROLES) + "\n"
    rows = parse_matrix(head + "| GET | `/x` | no | region | region | region | school | yes | yes |\n")
    assert rows == {("GET", "/x"): dict(zip(ROLES, ["no", "region", "region", "region", "school", "yes", "yes"]))}
    with pytest.raises(AssertionError, match="unknown cell"):
        parse_matrix(head + "| GET | `/x` | no | maybe | region | region | school | yes | yes |\n")


# -- a world with something inside and something outside each role's reach ------------

@dataclass
class World:
    server: FleetServer
    schools: dict[str, int]
    rooms: dict[str, int]                 # A101 (S1), R1 (S4: outside)
    alert_in: int
    alert_out: int
    users: dict[str, int]                 # role -> user id (and "spare", "web")
    tokens: dict[str, str]                # role -> API token
    spare_tokens: dict[str, int]          # role -> id of a second token of that role's user
    counter: Iterator[int] = field(default_factory=lambda: iter(range(1, 10**6)))
    clients: dict[str, httpx.Client] = field(default_factory=dict)

    @contextmanager
    def client(self, role: str) -> Iterator[httpx.Client]:
        """The role's client (one per role, kept open), without the cookies a login left."""
        c = self.clients.get(role)
        if c is None:
            c = self.clients[role] = self.server.client(None if role == "anonymous" else self.tokens[role])
        c.cookies.clear()
        try:
            yield c
        finally:
            c.cookies.clear()

    def place(self, where: str) -> dict[str, Any]:
        inside = where == "in"
        return {"school": self.schools["S1" if inside else "S4"], "room": self.rooms["A101" if inside else "R1"],
                "device": D1 if inside else D4, "region": COUNTY if inside else OUT_COUNTY,
                "alert": self.alert_in if inside else self.alert_out}


OUT_SCHOOLS = f"code,name,county_code,stage,day_start,day_end,weekdays\nS4,{OUTSIDE_NAME},{OUT_COUNTY},primary,,,\n"
OUT_ROOMS = ("school_code,room_code,name,type,building_code,building_name,capacity,floor_area_m2,new_style,"
             "lux_factor,teaching_space\nS4,R1,外省教室,classroom,,,40,60,,,\n")


def _build_world(server: FleetServer) -> World:
    http = server.http
    with server.app.state.engine.begin() as conn:      # a second province: outside every region user
        conn.execute(insert(regions), [
            {"code": OUT_PROVINCE, "level": "province", "parent_code": None, "name_zh": "江苏省", "name_en": "Jiangsu"},
            {"code": OUT_CITY, "level": "city", "parent_code": OUT_PROVINCE, "name_zh": "南京市", "name_en": "Nanjing"},
            {"code": OUT_COUNTY, "level": "county", "parent_code": OUT_CITY, "name_zh": "玄武区",
             "name_en": "Xuanwu"}])
    for kind, text in (("schools", SCHOOLS), ("rooms", ROOMS), ("schools", OUT_SCHOOLS), ("rooms", OUT_ROOMS)):
        r = http.post(f"/api/v1/import/{kind}", content=text.encode(), headers={"content-type": "text/csv"})
        assert r.status_code == 200, r.text
    schools = {s["code"]: s["id"] for s in server.get("/api/v1/schools")["items"]}
    rooms = {"A101": next(r["id"] for r in server.get(f"/api/v1/schools/{schools['S1']}/rooms")
                          if r["code"] == "A101"),
             "R1": server.get(f"/api/v1/schools/{schools['S4']}/rooms")[0]["id"]}
    r = http.post("/api/v1/provisioning/register", json={"device_id": D1, "school_code": "S1", "room_code": "A101"})
    assert r.status_code == 200, r.text
    assert http.put(f"/api/v1/devices/{D4}/room", json={"room_id": rooms["R1"]}).status_code == 200
    now = time.time()
    with server.app.state.engine.begin() as conn:
        ids = []
        for device, room, school in ((D1, rooms["A101"], schools["S1"]), (D4, rooms["R1"], schools["S4"])):
            ids.append(conn.execute(insert(alerts).values(
                kind="offline", severity="warning", subject=device, device_id=device, room_id=room,
                school_id=school, opened_at=now - 3600, last_seen_at=now, detail="{}")).inserted_primary_key[0])
    server.add_user("m-province", "province", region_code=PROVINCE)
    server.add_user("m-city", "city", region_code=CITY)
    server.add_user("m-county", "county", region_code=COUNTY)
    server.add_user("m-school_admin", "school_admin", school_id=schools["S1"])
    server.add_user("m-technician", "technician")
    server.add_user("m-spare", "county", region_code=COUNTY)
    server.add_user("m-web", "county", region_code=COUNTY, password=PASSWORD)
    tokens, spare = {}, {}
    with server.app.state.engine.connect() as conn:
        from fleet_server.auth import users as user_svc
        users = {u.username: u.id for u in user_svc.list_users(conn)}
    for role in ROLES[1:]:
        name = "test-operator" if role == "operator" else f"m-{role}"
        tokens[role] = server.token if role == "operator" else server.token_for(name)
        with server.client(tokens[role]) as c:
            r = c.post("/api/v1/auth/tokens", json={"name": "spare", "expires_days": 1})
            assert r.status_code == 201, r.text
            spare[role] = r.json()["id"]
    by_role = {role: users["test-operator" if role == "operator" else f"m-{role}"] for role in ROLES[1:]}
    by_role.update(spare=users["m-spare"], web=users["m-web"])
    return World(server, schools, rooms, ids[0], ids[1], by_role, tokens, spare)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def world(request, mosquitto, tmp_path_factory) -> Iterator[World]:
    pg: Postgres | None = None
    if request.param == "postgresql":
        pg = request.getfixturevalue("postgres")
        db_name = f"matrix_{uuid.uuid4().hex[:12]}"
        db = pg.create_database(db_name)
    else:
        db = f"sqlite:///{tmp_path_factory.mktemp('matrix')}/fleet.db"
    # Every role logs in through both login routes: a budget above this module's logins.
    settings = Settings(db=db, mqtt=mosquitto.url, ingest_client_id=f"ingest-{uuid.uuid4().hex[:8]}",
                        login_address_burst=1000)
    srv = FleetServer(settings).start()
    w = None
    try:
        w = _build_world(srv)
        yield w
    finally:
        for c in (w.clients.values() if w else ()):
            c.close()
        srv.stop()
        if pg is not None:
            pg.drop_database(db_name)


# -- one request per route -------------------------------------------------------------
# REQUESTS[(method, path)](client, world, where) makes the request; where is "in" (a
# target inside a scoped role's reach) or "out" (outside it). A route whose scoped cells
# need an outside check returns None for "out" only where the route has no target: its
# "in" answer is then checked to hold nothing from outside.

Call = Callable[[httpx.Client, World, str], httpx.Response | None]


def _get(path: str, params: Callable[[World, str], dict] | None = None, out: bool = True) -> Call:
    def call(c: httpx.Client, w: World, where: str):
        if where == "out" and not out:
            return None
        p = w.place(where)
        return c.get(path.format(**p), params=params(w, where) if params else None)
    return call


def _login_page(c: httpx.Client, w: World, where: str):
    page = c.get("/login")
    token = page.text.split('name="csrf_token" value="')[1].split('"')[0]
    return c.post("/login", data={"csrf_token": token, "username": "m-web", "password": PASSWORD, "next": "/"},
                  follow_redirects=False)


def _new_token(c: httpx.Client, w: World, where: str):
    body = {"name": f"t{next(w.counter)}", "expires_days": 1}
    if where == "out":
        body["user_id"] = w.users["spare"]
    return c.post("/api/v1/auth/tokens", json=body)


def _revoke_token(c: httpx.Client, w: World, where: str):
    role = next((r for r, t in w.tokens.items() if c.headers.get("authorization") == f"Bearer {t}"), "operator")
    # "out": another user's token (the operator's spare; for the operator, the county's).
    target = w.spare_tokens[role] if where == "in" else w.spare_tokens["county" if role == "operator" else "operator"]
    return c.delete(f"/api/v1/auth/tokens/{target}")


def _form(path: str, data: dict) -> Call:
    def call(c: httpx.Client, w: World, where: str):
        p = w.place(where)
        return c.post(path.format(**p), data={k: str(v).format(**p) for k, v in data.items()},
                      follow_redirects=False)
    return call


def _dates(w: World, where: str) -> dict:
    return {"from": DAY, "to": DAY}


REQUESTS: dict[tuple[str, str], Call] = {
    ("GET", "/openapi.json"): _get("/openapi.json"),
    ("GET", "/docs"): _get("/docs"),
    ("GET", "/docs/oauth2-redirect"): _get("/docs/oauth2-redirect"),
    ("GET", "/redoc"): _get("/redoc"),
    ("GET", "/static/{path}"): _get("/static/dashboard.css"),
    ("GET", "/api/v1/health"): _get("/api/v1/health"),
    ("GET", "/metrics"): _get("/metrics"),
    ("GET", "/firmware/{version}/{name:path}"): _get("/firmware/1.0.0/manifest.json"),
    ("POST", "/api/v1/auth/login"): lambda c, w, where: c.post(
        "/api/v1/auth/login", json={"username": "m-web", "password": PASSWORD}),
    ("GET", "/login"): _get("/login"),
    ("POST", "/login"): _login_page,
    ("POST", "/logout"): lambda c, w, where: c.post("/logout", follow_redirects=False),
    ("POST", "/api/v1/auth/logout"): lambda c, w, where: c.post("/api/v1/auth/logout"),
    ("GET", "/api/v1/auth/me"): _get("/api/v1/auth/me"),
    ("GET", "/api/v1/auth/tokens"): lambda c, w, where: c.get(
        "/api/v1/auth/tokens", params={"user_id": w.users["spare"]} if where == "out" else None),
    ("POST", "/api/v1/auth/tokens"): _new_token,
    ("DELETE", "/api/v1/auth/tokens/{token_id}"): _revoke_token,
    ("GET", "/api/v1/users"): _get("/api/v1/users"),
    ("POST", "/api/v1/users"): lambda c, w, where: c.post("/api/v1/users", json={
        "username": f"made-{next(w.counter)}", "role": "county", "region_code": COUNTY}),
    ("PATCH", "/api/v1/users/{user_id}"): lambda c, w, where: c.patch(
        f"/api/v1/users/{w.users['spare']}", json={"active": True}),
    ("GET", "/api/v1/audit"): _get("/api/v1/audit"),
    ("GET", "/api/v1/regions"): _get("/api/v1/regions"),
    ("GET", "/api/v1/regions/{code}"): _get("/api/v1/regions/{region}"),
    ("GET", "/api/v1/schools"): _get("/api/v1/schools", lambda w, where: {"county": OUT_COUNTY} if where == "out"
                                     else {}),
    ("GET", "/api/v1/schools/{school_id}"): _get("/api/v1/schools/{school}"),
    ("GET", "/api/v1/schools/{school_id}/rooms"): _get("/api/v1/schools/{school}/rooms"),
    ("GET", "/api/v1/schools/{school_id}/usage"): _get("/api/v1/schools/{school}/usage", _dates),
    ("GET", "/api/v1/rooms/{room_id}/usage"): _get("/api/v1/rooms/{room}/usage", _dates),
    ("GET", "/api/v1/rooms/{room_id}/environment"): _get("/api/v1/rooms/{room}/environment", _dates),
    ("GET", "/api/v1/coverage"): _get("/api/v1/coverage", lambda w, where: {
        "region": w.place(where)["region"], "date": DAY}),
    ("GET", "/api/v1/coverage/trend"): _get("/api/v1/coverage/trend", lambda w, where: {
        "region": w.place(where)["region"]}),
    ("POST", "/api/v1/import/{kind}"): lambda c, w, where: c.post(
        "/api/v1/import/rooms", content=ROOMS.encode(), headers={"content-type": "text/csv"}),
    ("GET", "/api/v1/devices"): _get("/api/v1/devices", lambda w, where: {"school_id": w.place(where)["school"]}
                                     if where == "out" else {}),
    ("GET", "/api/v1/devices/firmware"): _get("/api/v1/devices/firmware", lambda w, where: {
        "school_id": w.place(where)["school"]} if where == "out" else {}),
    ("GET", "/api/v1/devices/{device_id}"): _get("/api/v1/devices/{device}"),
    ("GET", "/api/v1/devices/{device_id}/assignments"): _get("/api/v1/devices/{device}/assignments"),
    ("GET", "/api/v1/devices/{device_id}/commands"): _get("/api/v1/devices/{device}/commands"),
    ("GET", "/api/v1/devices/{device_id}/completeness"): _get("/api/v1/devices/{device}/completeness", _dates),
    ("GET", "/api/v1/devices/{device_id}/health"): _get("/api/v1/devices/{device}/health", _dates),
    ("PUT", "/api/v1/devices/{device_id}/room"): lambda c, w, where: c.put(
        f"/api/v1/devices/{w.place(where)['device']}/room", json={"room_id": w.place(where)["room"]}),
    ("POST", "/api/v1/devices/{device_id}/commands"): lambda c, w, where: c.post(
        f"/api/v1/devices/{w.place(where)['device']}/commands", json={"op": "identify"}),
    ("POST", "/api/v1/devices/{device_id}/credentials/rotate"): lambda c, w, where: c.post(
        f"/api/v1/devices/{w.place(where)['device']}/credentials/rotate"),
    ("POST", "/api/v1/devices/{device_id}/credentials/revoke"): lambda c, w, where: c.post(
        f"/api/v1/devices/{w.place(where)['device']}/credentials/revoke"),
    ("POST", "/api/v1/provisioning/register"): lambda c, w, where: c.post("/api/v1/provisioning/register", json={
        "device_id": w.place(where)["device"], "school_id": w.place(where)["school"],
        "room_code": "A101" if where == "in" else "R1"}),
    ("GET", "/api/v1/alerts"): _get("/api/v1/alerts", lambda w, where: {"school_id": w.place(where)["school"]}
                                    if where == "out" else {}),
    ("POST", "/api/v1/alerts/{alert_id}/ack"): lambda c, w, where: c.post(
        f"/api/v1/alerts/{w.place(where)['alert']}/ack", json={"by": "matrix"}),
    ("GET", "/api/v1/firmware/releases"): _get("/api/v1/firmware/releases"),
    ("GET", "/api/v1/firmware/releases/{version}"): _get("/api/v1/firmware/releases/1.0.0"),
    ("POST", "/api/v1/firmware/releases"): lambda c, w, where: c.post("/api/v1/firmware/releases",
                                                                     content=b"not a bundle"),
    # Campaigns: a campaign that does not exist (404 is an answer, not a refusal) and a
    # release that does not exist (409), so the walk changes nothing.
    ("GET", "/api/v1/firmware/campaigns"): _get("/api/v1/firmware/campaigns"),
    ("POST", "/api/v1/firmware/campaigns"): lambda c, w, where: c.post(
        "/api/v1/firmware/campaigns", json={"name": "walk", "version": "9.9.9", "target": {"scope": "all"}}),
    ("GET", "/api/v1/firmware/campaigns/{campaign_id}"): _get("/api/v1/firmware/campaigns/999999"),
    ("GET", "/api/v1/firmware/campaigns/{campaign_id}/devices"): _get("/api/v1/firmware/campaigns/999999/devices"),
    ("GET", "/api/v1/firmware/campaigns/{campaign_id}/events"): _get("/api/v1/firmware/campaigns/999999/events"),
    ("POST", "/api/v1/firmware/campaigns/{campaign_id}/pause"): lambda c, w, where: c.post(
        "/api/v1/firmware/campaigns/999999/pause"),
    ("POST", "/api/v1/firmware/campaigns/{campaign_id}/resume"): lambda c, w, where: c.post(
        "/api/v1/firmware/campaigns/999999/resume"),
    ("POST", "/api/v1/firmware/campaigns/{campaign_id}/abort"): lambda c, w, where: c.post(
        "/api/v1/firmware/campaigns/999999/abort"),
    ("GET", "/fleet/campaigns/{campaign_id}"): _get("/fleet/campaigns/999999"),
    ("POST", "/fleet/campaigns/{campaign_id}/{action}"): _form("/fleet/campaigns/999999/pause", {}),
    ("GET", "/"): _get("/", out=False),
    ("GET", "/schools/{school_id}"): _get("/schools/{school}"),
    ("GET", "/schools/{school_id}/heatmap.csv"): _get("/schools/{school}/heatmap.csv"),
    ("GET", "/schools/{school_id}/environment.csv"): _get("/schools/{school}/environment.csv"),
    ("GET", "/schools/{school_id}/live.csv"): _get("/schools/{school}/live.csv"),
    ("GET", "/rooms/{room_id}"): _get("/rooms/{room}"),
    ("GET", "/rooms/{room_id}/windows.csv"): _get("/rooms/{room}/windows.csv"),
    ("GET", "/regions/{code}"): _get("/regions/{region}"),
    ("GET", "/fleet"): _get("/fleet", out=False),
    ("GET", "/fleet/devices/{device_id}"): _get("/fleet/devices/{device}"),
    ("POST", "/fleet/devices/{device_id}/room"): _form("/fleet/devices/{device}/room", {"room_id": "{room}"}),
    ("POST", "/fleet/devices/{device_id}/commands"): _form("/fleet/devices/{device}/commands", {"op": "identify"}),
}


def _refused_form(r: httpx.Response) -> bool:
    """The dashboard forms answer a refusal with a redirect back carrying the reason."""
    return r.status_code == 303 and "error=" in r.headers.get("location", "")


def _leaks(r: httpx.Response) -> list[str]:
    return [m for m in (D4, OUTSIDE_NAME) if m in r.text]


def _allowed(r: httpx.Response) -> bool:
    return r.status_code not in (401, 403) and r.status_code < 500 and not _refused_form(r)


def check_cell(w: World, key: tuple[str, str], role: str, cell: str) -> list[str]:
    """What disagrees with the cell (empty: all agrees). `yes` is also checked on the
    outside target (it must not be confined), a scoped cell must be confined there."""
    call = REQUESTS[key]
    where = f"{key[0]} {key[1]} as {role} ({cell})"
    problems: list[str] = []
    with w.client(role) as c:
        r = call(c, w, "in")
        if cell == "no":
            want = 401 if role == "anonymous" else 403
            if not (r.status_code == want or (want == 403 and _refused_form(r))):
                problems.append(f"{where}: got {r.status_code}, the matrix says refused ({want}): {r.text[:200]}")
            return problems
        if not _allowed(r):
            problems.append(f"{where}: got {r.status_code} {r.headers.get('location', '')}, the matrix says "
                            f"allowed: {r.text[:200]}")
        if cell in ("region", "school") and r.status_code < 400 and _leaks(r):
            problems.append(f"{where}: the answer holds {_leaks(r)}, from outside its {cell}")
        out = call(c, w, "out")
        if out is None:
            if cell == "own":
                problems.append(f"{where}: REQUESTS has no request for another user's thing")
        elif cell == "yes":
            if not _allowed(out):
                problems.append(f"{where}: on a target outside the scoped roles' reach got {out.status_code}, "
                                f"the matrix says allowed everywhere: {out.text[:200]}")
        elif cell == "own":
            if out.status_code not in (403, 404):
                problems.append(f"{where}: another user's token got {out.status_code}, not 403/404")
        elif not (out.status_code in (403, 404) or _refused_form(out) or (out.status_code == 200 and not _leaks(out))):
            problems.append(f"{where}: outside its {cell} got {out.status_code}, not 403/404: {out.text[:200]}")
        elif out.status_code == 200 and key[0] != "GET":
            problems.append(f"{where}: a write outside its {cell} answered 200")
    return problems


def test_every_role_gets_what_the_matrix_says_on_every_route(world):
    matrix = parse_matrix(MATRIX.read_text(encoding="utf-8"))
    unknown = sorted(set(matrix) - set(REQUESTS))
    assert not unknown, f"no request in REQUESTS of this test for {unknown}: add one per new route"
    problems: list[str] = []
    for key, cells in matrix.items():
        for role in ROLES:
            problems += check_cell(world, key, role, cells[role])
    assert not problems, f"{len(problems)} disagreement(s) with docs/access-matrix.md:\n" + "\n".join(problems)
    # Writes done above by the roles allowed to, in the audit log with their role.
    audit = world.server.get("/api/v1/audit", params={"action": "device.", "limit": 1000})["items"]
    assert {("device.assign", "school_admin"), ("device.command", "technician"),
            ("device.credentials.revoke", "technician")} <= {(e["action"], e["role"]) for e in audit}
    scoped_roles = ("province", "city", "county", "school_admin")
    assert not [e for e in audit if e["target_id"] == D4 and e["role"] in scoped_roles]


def test_a_wrong_cell_in_the_matrix_is_caught(world):
    """The checker fails when the matrix is wrong, both ways."""
    assert check_cell(world, ("GET", "/api/v1/users"), "technician", "yes")          # really refused
    assert check_cell(world, ("GET", "/api/v1/devices"), "county", "no")             # really allowed
    assert check_cell(world, ("GET", "/api/v1/devices/{device_id}"), "county", "yes")    # really confined
    assert check_cell(world, ("GET", "/api/v1/devices/{device_id}"), "county", "region") == []
    assert check_cell(world, ("GET", "/api/v1/regions"), "anonymous", "yes")          # really 401
