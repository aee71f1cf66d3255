"""Registry over HTTP against a real server (uvicorn, Mosquitto, SQLite file): regions
loaded at start, CSV import (text/csv and multipart) with 422 line-numbered errors,
school listing, device room assignment; plus the `campusfleet import` command and the
migration's downgrade."""
from alembic import command
from sqlalchemy import inspect
from typer.testing import CliRunner

from fleet_server.cli import app as cli
from fleet_server.db.engine import alembic_config, make_engine, migrate
from tests.utils.registry_samples import ROOMS, SCHOOLS

BAD_SCHOOLS = "code,name,county_code,stage\nS4,ok,330106,primary\nS5,x,330104,primary\nS6,y,330106,kindergarten\n"


def post_csv(server, kind, text, **headers):
    return server.http.post(f"/api/v1/import/{kind}", content=text.encode(),
                            headers={"content-type": "text/csv", **headers})


def test_regions_are_loaded_at_start_and_filter_by_level_and_parent(server):
    assert len(server.get("/api/v1/regions")) == 102
    cities = server.get("/api/v1/regions", params={"level": "city"})
    assert len(cities) == 11 and {c["parent_code"] for c in cities} == {330000}
    hangzhou = server.get("/api/v1/regions", params={"parent": 330100})
    assert len(hangzhou) == 13 and hangzhou[0] == {"code": 330102, "level": "county", "parent_code": 330100,
                                                   "name_zh": "上城区", "name_en": "Shangcheng District"}
    assert server.get("/api/v1/regions/331127")["name_zh"] == "景宁畲族自治县"
    assert server.http.get("/api/v1/regions/330103").status_code == 404
    assert server.http.get("/api/v1/regions", params={"level": "town"}).status_code == 422


def test_import_api_counts_rows_and_a_second_import_changes_nothing(server):
    r = post_csv(server, "schools", SCHOOLS)
    assert r.status_code == 200
    assert r.json() == {"kind": "schools", "rows": 3, "inserted": 3, "updated": 0, "unchanged": 0}
    assert post_csv(server, "schools", SCHOOLS).json()["unchanged"] == 3
    # Multipart upload, as a browser form or `curl -F file=@rooms.csv` sends it.
    r = server.http.post("/api/v1/import/rooms", files={"file": ("rooms.csv", ROOMS.encode(), "text/csv")})
    assert r.status_code == 200 and r.json()["inserted"] == 5 and r.json()["buildings_inserted"] == 2
    # GBK, as Chinese Excel saves "CSV".
    gbk = server.http.post("/api/v1/import/schools", content=SCHOOLS.encode("gbk"),
                           headers={"content-type": "text/csv"})
    assert gbk.json()["unchanged"] == 3


def test_import_api_refuses_a_bad_file_with_line_numbered_errors_and_writes_nothing(server):
    assert post_csv(server, "schools", SCHOOLS).status_code == 200
    r = post_csv(server, "schools", BAD_SCHOOLS)
    assert r.status_code == 422
    body = r.json()
    assert body["kind"] == "schools" and body["error_count"] == 2 and "nothing was imported" in body["detail"]
    assert [(e["line"], e["column"]) for e in body["errors"]] == [(3, "county_code"), (4, "stage")]
    assert all(set(e) == {"line", "column", "message"} for e in body["errors"])
    assert server.get("/api/v1/schools")["total"] == 3     # S4, a good row, was not written
    header = post_csv(server, "rooms", "school_code,room,name,type\n").json()
    assert [(e["line"], e["column"]) for e in header["errors"]] == [(1, "room"), (1, "room_code")]
    assert server.http.post("/api/v1/import/buildings", content=b"x").status_code == 422
    assert server.http.post("/api/v1/import/schools", json={"code": "S1"}).status_code == 415
    binary = server.http.post("/api/v1/import/schools", content=b"PK\x03\x04\x80\xff", headers={"content-type": "text/csv"})
    assert binary.status_code == 400 and "not a text CSV" in binary.json()["detail"]


def test_schools_api_paginates_filters_and_lists_rooms(server):
    post_csv(server, "schools", SCHOOLS)
    post_csv(server, "rooms", ROOMS)
    page = server.get("/api/v1/schools", params={"limit": 2, "offset": 1})
    assert (page["total"], page["limit"], page["offset"], len(page["items"])) == (3, 2, 1, 2)
    [s1] = server.get("/api/v1/schools", params={"county": 330106})["items"]
    assert (s1["code"], s1["county"], s1["city"], s1["weekdays"]) == ("S1", "西湖区", "杭州市", "12345")
    assert {s["code"] for s in server.get("/api/v1/schools", params={"city": 330100})["items"]} == {"S1", "S2"}
    detail = server.get(f"/api/v1/schools/{s1['id']}")
    assert (detail["rooms"], detail["teaching_spaces"], detail["new_style_spaces"]) == (4, 3, 1)
    listed = server.get(f"/api/v1/schools/{s1['id']}/rooms")
    assert [r["code"] for r in listed] == ["A101", "A102", "B201", "B301"]
    assert listed[0]["building_name"] == "教学楼" and listed[0]["device_ids"] == []
    assert server.http.get("/api/v1/schools/9999").status_code == 404
    assert server.http.get("/api/v1/schools/9999/rooms").status_code == 404
    assert server.http.get("/api/v1/schools", params={"limit": 0}).status_code == 422


def test_device_room_api_assigns_moves_and_keeps_history(server):
    post_csv(server, "schools", SCHOOLS)
    post_csv(server, "rooms", ROOMS)
    s1 = server.get("/api/v1/schools", params={"county": 330106})["items"][0]["id"]
    room = {r["code"]: r["id"] for r in server.get(f"/api/v1/schools/{s1}/rooms")}
    dev = "cf-00000000ae01"
    r = server.http.put(f"/api/v1/devices/{dev}/room", json={"room_id": room["A101"], "from_ts": 1_780_000_000})
    assert r.status_code == 200 and r.json()["room_id"] == room["A101"] and r.json()["school_id"] == s1
    assert server.device(dev)["room_id"] == room["A101"]       # registered before it ever connected
    moved = server.http.put(f"/api/v1/devices/{dev}/room", json={"room_id": room["B201"], "from_ts": 1_780_086_400})
    assert moved.status_code == 200 and moved.json()["room_code"] == "B201"
    history = server.get(f"/api/v1/devices/{dev}/assignments")
    assert history["room_id"] == room["B201"]
    assert [(h["room_code"], h["from_ts"], h["to_ts"]) for h in history["history"]] == [
        ("A101", 1_780_000_000, 1_780_086_400), ("B201", 1_780_086_400, None)]
    assert [d for r in server.get(f"/api/v1/schools/{s1}/rooms") for d in r["device_ids"]] == [dev]
    assert server.http.put(f"/api/v1/devices/{dev}/room", json={"room_id": room["A102"],
                                                                 "from_ts": 1_780_000_001}).status_code == 409
    assert server.http.put(f"/api/v1/devices/{dev}/room", json={"room_id": 99999}).status_code == 404
    assert server.http.put("/api/v1/devices/not-a-device/room", json={"room_id": room["A101"]}).status_code == 422
    assert server.http.put(f"/api/v1/devices/{dev}/room", json={}).status_code == 422
    out = server.http.put(f"/api/v1/devices/{dev}/room", json={"room_id": None})
    assert out.status_code == 200 and out.json()["room_id"] is None and server.device(dev)["assigned"] is False


def test_openapi_lists_the_registry_endpoints(server):
    paths = server.get("/openapi.json")["paths"]
    assert {"/api/v1/regions", "/api/v1/schools", "/api/v1/schools/{school_id}", "/api/v1/schools/{school_id}/rooms",
            "/api/v1/import/{kind}", "/api/v1/devices/{device_id}/room"} <= set(paths)
    assert "text/csv" in paths["/api/v1/import/{kind}"]["post"]["requestBody"]["content"]


def test_cli_import_reports_rows_or_file_line_errors(tmp_path):
    db = f"sqlite:///{tmp_path}/cli.db"
    good, bad = tmp_path / "schools.csv", tmp_path / "bad.csv"
    good.write_text(SCHOOLS, encoding="utf-8")
    bad.write_text(BAD_SCHOOLS, encoding="utf-8")
    runner = CliRunner()
    first = runner.invoke(cli, ["import", "schools", str(good), "--db", db])
    assert first.exit_code == 0 and "3 inserted" in first.output
    assert "3 unchanged" in runner.invoke(cli, ["import", "schools", str(good), "--db", db]).output
    refused = runner.invoke(cli, ["import", "schools", str(bad), "--db", db])
    assert refused.exit_code == 1
    assert f"{bad}:3: county_code:" in refused.output and "nothing was imported" in refused.output
    assert runner.invoke(cli, ["import", "teachers", str(good), "--db", db]).exit_code == 2
    xlsx = tmp_path / "schools.xlsx"
    xlsx.write_bytes(b"PK\x03\x04\x80\xff")
    assert runner.invoke(cli, ["import", "schools", str(xlsx), "--db", db]).exit_code == 2


def test_registry_migration_downgrades_and_upgrades_again(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path}/m.db")
    migrate(engine)
    cfg = alembic_config(engine)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0001")
    assert set(inspect(engine).get_table_names()) == {"alembic_version", "commands", "devices", "events", "windows"}
    migrate(engine)
    assert {"regions", "schools", "rooms", "device_assignments"} <= set(inspect(engine).get_table_names())
    engine.dispose()
