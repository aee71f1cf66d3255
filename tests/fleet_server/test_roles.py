"""Roles and region scoping on a running server (SQLite and PostgreSQL): a county user
reads its county only, a city user its city, a school admin assigns devices only in its
school, a technician sends commands but manages no users; and the same confinement
holds when the service layer is called directly, not only through the routes."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import pytest

from fleet_server.auth import scoped_services, scoping
from fleet_server.auth.errors import Forbidden
from fleet_server.auth.principal import ROLE_SCOPES, Principal
from tests.utils.registry_samples import ROOMS, SCHOOLS
from tests.utils.services import FleetServer

# S1 西湖区 330106 and S2 桐庐县 330122 are in 杭州市 330100; S3 龙港市 330383 in 温州市.
XIHU, TONGLU, HANGZHOU, PROVINCE = 330106, 330122, 330100, 330000
D1, D2, SPARE = "cf-0000a1000001", "cf-0000a1000002", "cf-0000a10000ff"


@dataclass
class World:
    server: FleetServer
    schools: dict[str, int]
    rooms: dict[str, int]          # S1's rooms by code, and "N1" of S2
    tokens: dict[str, str]         # role name -> API token

    def client(self, who: str):
        return self.server.client(self.tokens[who])


@pytest.fixture
def world(server) -> World:
    for kind, text in (("schools", SCHOOLS), ("rooms", ROOMS)):
        r = server.http.post(f"/api/v1/import/{kind}", content=text.encode(), headers={"content-type": "text/csv"})
        assert r.status_code == 200, r.text
    schools = {s["code"]: s["id"] for s in server.get("/api/v1/schools")["items"]}
    rooms = {r["code"]: r["id"] for r in server.get(f"/api/v1/schools/{schools['S1']}/rooms")}
    rooms["N1"] = server.get(f"/api/v1/schools/{schools['S2']}/rooms")[0]["id"]
    for device, room in ((D1, rooms["A101"]), (D2, rooms["N1"])):
        assert server.http.put(f"/api/v1/devices/{device}/room", json={"room_id": room}).status_code == 200
    server.add_user("xihu", "county", region_code=XIHU)
    server.add_user("hangzhou", "city", region_code=HANGZHOU)
    server.add_user("s1-admin", "school_admin", school_id=schools["S1"])
    server.add_user("tech", "technician")
    tokens = {name: server.token_for(name) for name in ("xihu", "hangzhou", "s1-admin", "tech")}
    return World(server, schools, rooms, tokens)


def test_county_user_sees_only_its_county_in_schools_devices_and_coverage(world):
    s = world.schools
    with world.client("xihu") as c:
        assert [x["code"] for x in c.get("/api/v1/schools").json()["items"]] == ["S1"]
        assert c.get("/api/v1/schools", params={"county": TONGLU}).status_code == 403
        assert [d["device_id"] for d in c.get("/api/v1/devices").json()["items"]] == [D1]
        assert c.get("/api/v1/devices", params={"region": TONGLU}).status_code == 403
        assert c.get(f"/api/v1/devices/{D1}").status_code == 200
        assert c.get(f"/api/v1/devices/{D2}").status_code == 403
        assert c.get(f"/api/v1/schools/{s['S1']}").status_code == 200
        for path in (f"/api/v1/schools/{s['S2']}", f"/api/v1/schools/{s['S2']}/rooms",
                     f"/api/v1/schools/{s['S2']}/usage", f"/api/v1/rooms/{world.rooms['N1']}/usage"):
            assert c.get(path).status_code == 403, path
        r = c.get("/api/v1/coverage", params={"region": XIHU, "date": "2026-11-03"})
        assert r.status_code == 200 and r.json()["region"]["code"] == XIHU
        for region in (TONGLU, HANGZHOU, PROVINCE):
            assert c.get("/api/v1/coverage", params={"region": region}).status_code == 403
            assert c.get("/api/v1/coverage/trend", params={"region": region}).status_code == 403
        # The dashboards too (an API token works on the pages as well).
        assert c.get(f"/regions/{TONGLU}").status_code == 403
        assert c.get(f"/schools/{s['S2']}").status_code == 403
        assert c.get(f"/schools/{s['S1']}").status_code == 200
        assert D2 not in c.get("/fleet").text
        # Read-only: no writes at all.
        assert c.put(f"/api/v1/devices/{D1}/room", json={"room_id": world.rooms["A102"]}).status_code == 403
        assert c.post("/api/v1/alerts/1/ack", json={"by": "x"}).status_code == 403


def test_city_user_sees_the_schools_of_its_counties_and_not_another_city(world):
    with world.client("hangzhou") as c:
        assert [x["code"] for x in c.get("/api/v1/schools").json()["items"]] == ["S1", "S2"]
        assert sorted(d["device_id"] for d in c.get("/api/v1/devices").json()["items"]) == [D1, D2]
        assert c.get("/api/v1/coverage", params={"region": TONGLU}).status_code == 200
        assert c.get("/api/v1/coverage", params={"region": PROVINCE}).status_code == 403
        assert c.get(f"/api/v1/schools/{world.schools['S3']}").status_code == 403


def test_school_admin_assigns_devices_only_within_its_school(world):
    r = world.rooms
    with world.client("s1-admin") as c:
        assert [x["code"] for x in c.get("/api/v1/schools").json()["items"]] == ["S1"]
        assert c.get("/api/v1/coverage", params={"region": XIHU}).status_code == 403
        # Within its school: move D1, and take in a new (unassigned) device.
        assert c.put(f"/api/v1/devices/{D1}/room", json={"room_id": r["A102"]}).status_code == 200
        assert c.put(f"/api/v1/devices/{SPARE}/room", json={"room_id": r["B201"]}).status_code == 200
        # Out of it: not into another school's room, and not another school's device.
        assert c.put(f"/api/v1/devices/{D1}/room", json={"room_id": r["N1"]}).status_code == 403
        assert c.put(f"/api/v1/devices/{D2}/room", json={"room_id": r["A101"]}).status_code == 403
        assert c.post(f"/api/v1/devices/{D1}/commands", json={"op": "identify"}).status_code == 403
        assert c.post("/api/v1/import/rooms", content=ROOMS.encode(),
                      headers={"content-type": "text/csv"}).status_code == 403
        assert sorted(d["device_id"] for d in c.get("/api/v1/devices").json()["items"]) == [D1, SPARE]
    assert world.server.device(D1)["room"]["code"] == "A102"
    assert world.server.device(D2)["room"]["code"] == "N1"
    moves = world.server.get("/api/v1/audit", params={"action": "device.assign", "actor": "s1-admin"})["items"]
    assert {(m["target_id"], m["detail"]["room_id"]) for m in moves} == {(D1, r["A102"]), (SPARE, r["B201"])}


def test_technician_sends_commands_but_cannot_manage_users_firmware_or_audit(world):
    with world.client("tech") as c:
        r = c.post(f"/api/v1/devices/{D1}/commands", json={"op": "identify"})
        assert r.status_code == 202, r.text
        assert c.put(f"/api/v1/devices/{D2}/room", json={"room_id": world.rooms["A101"]}).status_code == 200
        assert c.get("/api/v1/users").status_code == 403
        assert c.post("/api/v1/users", json={"username": "eve", "role": "operator",
                                             "password": "0123456789ab"}).status_code == 403
        assert c.patch("/api/v1/users/1", json={"role": "technician"}).status_code == 403
        assert c.get("/api/v1/audit").status_code == 403
        assert c.post("/api/v1/firmware/releases", content=b"not a bundle").status_code == 403
        assert c.post("/api/v1/import/schools", content=SCHOOLS.encode(),
                      headers={"content-type": "text/csv"}).status_code == 403
        # Its own tokens it may manage; another user's it may not.
        assert c.post("/api/v1/auth/tokens", json={"name": "cli", "user_id": 1}).status_code == 403
        assert c.post("/api/v1/auth/tokens", json={"name": "cli", "scopes": ["devices:register"]}).status_code == 201
    command = world.server.get("/api/v1/audit", params={"action": "device.command"})["items"][0]
    assert command["actor"] == "tech" and command["role"] == "technician" and command["detail"]["op"] == "identify"


def test_operator_manages_users_and_a_changed_role_takes_effect_at_once(world):
    http = world.server.http
    r = http.post("/api/v1/users", json={"username": "xihu", "role": "county", "region_code": XIHU})
    assert r.status_code == 409
    r = http.post("/api/v1/users", json={"username": "bad", "role": "county", "region_code": HANGZHOU})
    assert r.status_code == 422 and "not a county" in r.json()["detail"]
    r = http.post("/api/v1/users", json={"username": "bad", "role": "school_admin"})
    assert r.status_code == 422
    xihu = next(u for u in http.get("/api/v1/users").json() if u["username"] == "xihu")
    r = http.patch(f"/api/v1/users/{xihu['id']}", json={"role": "county", "region_code": TONGLU})
    assert r.status_code == 200 and r.json()["region_code"] == TONGLU
    with world.client("xihu") as c:
        assert [x["code"] for x in c.get("/api/v1/schools").json()["items"]] == ["S2"]
    change = world.server.get("/api/v1/audit", params={"action": "user.change"})["items"][0]
    assert change["target_id"] == str(xihu["id"]) and change["detail"] == {"role": "county", "region_code": TONGLU}


def test_the_service_layer_confines_a_principal_without_any_route(world):
    """Scoping lives in the services' entry (fleet_server.auth.scoped_services), so a
    new route or page calling them cannot forget it."""
    s = world.schools
    county = Principal(99, "xihu", "county", region_code=XIHU, scopes=ROLE_SCOPES["county"])
    admin = Principal(98, "s1-admin", "school_admin", school_id=s["S1"], scopes=ROLE_SCOPES["school_admin"])
    day = date(2026, 11, 3)
    with world.server.app.state.engine.connect() as conn:
        assert scoping.allowed_school_ids(conn, county) == {s["S1"]}
        assert scoping.allowed_school_ids(conn, admin) == {s["S1"]}
        assert scoping.allowed_school_ids(conn, Principal.system()) is None
        total, items = scoped_services.list_devices(conn, county, limit=None, offset=0)
        assert (total, [d["device_id"] for d in items]) == (1, [D1])
        assert scoped_services.list_schools(conn, admin)[0] == 1
        assert scoped_services.coverage(conn, county, XIHU, day, day, week=False) is not None
        with pytest.raises(Forbidden):
            scoped_services.coverage(conn, county, TONGLU, day, day, week=False)
        with pytest.raises(Forbidden):
            scoped_services.coverage_rows(conn, admin, XIHU, day, day, week=False)
        with pytest.raises(Forbidden):
            scoped_services.school_usage(conn, county, s["S2"], day, day)
        with pytest.raises(Forbidden):
            scoped_services.room_usage(conn, admin, world.rooms["N1"], day, day)
        with pytest.raises(Forbidden):
            scoped_services.get_device(conn, county, D2)
        with pytest.raises(Forbidden):
            scoped_services.alert_filters(conn, county, school_id=None, region=TONGLU)
        assert scoped_services.alert_filters(conn, admin, school_id=None, region=None)[0] == s["S1"]
