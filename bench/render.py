"""Server time to render the dashboards: p50/p95 of the school page of a 60-room school
(a week of 60 s windows from 60 nodes, rolled up) and of the province page over the demo
province, next to GET /api/v1/health measured in the same run (ratio = page / health).

    .venv/bin/python bench/render.py [--requests 60] [--keep DIR]

In process (Starlette's TestClient: routing, services, SQL on SQLite, Jinja2, the SVG),
so the figures are the server's own time, not the network's. Figures: docs/performance.md."""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from datetime import date, datetime, time as dtime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fastapi.testclient import TestClient  # noqa: E402
from sqlalchemy import insert  # noqa: E402

from fleet_server.app import create_app  # noqa: E402
from fleet_server.auth import tokens as auth_tokens  # noqa: E402
from fleet_server.auth import users as auth_users  # noqa: E402
from fleet_server.db.schema import windows  # noqa: E402
from fleet_server.metrics.rollup import run_rollups  # noqa: E402
from fleet_server.registry.demo_data import PERIODS, load_demo_registry  # noqa: E402
from fleet_server.registry.importer import import_csv  # noqa: E402
from fleet_server.registry.service import assign_device, list_rooms, list_schools  # noqa: E402
from fleet_server.settings import Settings  # noqa: E402
from fleet_server.virtual_nodes import SHANGHAI  # noqa: E402

ROOMS = 60
WINDOW_S = 60


def last_full_week() -> date:
    today = datetime.now(SHANGHAI).date()
    return today - timedelta(days=today.weekday() + 7)      # Monday of last week


def build_school(conn) -> int:
    """A 60-room school through the CSV importer: 52 classrooms, 8 special rooms, the
    standard 9-period timetable on every classroom."""
    ok = import_csv(conn, "schools", "code,name,county_code,stage\nB60,杭州市西湖区基准测试中学,330106,junior\n")
    assert ok.ok, ok.errors
    rows = ["school_code,room_code,name,type,new_style"]
    specials = ["lab", "lab", "lab", "computer_room", "library", "art_music", "new_style", "new_style"]
    for i in range(ROOMS):
        kind = specials[i - (ROOMS - len(specials))] if i >= ROOMS - len(specials) else "classroom"
        rows.append(f"B60,R{i + 1:03d},{kind}-{i + 1},{kind},{1 if kind == 'new_style' else 0}")
    assert import_csv(conn, "rooms", "\n".join(rows) + "\n").ok
    tt = ["school_code,room_code,weekday,start,end,label"]
    for i in range(ROOMS - len(specials)):
        for wd in range(1, 6):
            tt += [f"B60,R{i + 1:03d},{wd},{a},{b},第{n}节" for n, (a, b) in enumerate(PERIODS, 1)]
    assert import_csv(conn, "timetable", "\n".join(tt) + "\n").ok
    _, items = list_schools(conn, county=330106, limit=1000, offset=0)
    return next(s["id"] for s in items if s["code"] == "B60")


def feed_week(engine, school_id: int, monday: date, *, device_ids: list[str] | None = None,
              seq_base: int = 0) -> int:
    """One node per room (the first len(device_ids) rooms when given), a school week of
    60 s windows 07:30-17:30: occupied in most periods, CO2 rising while occupied.
    Inserted as ingest stores them (the trigger queues them), then rolled up."""
    t_start = int(datetime.combine(monday, dtime(7, 30), SHANGHAI).timestamp())
    with engine.begin() as conn:
        room_list = list_rooms(conn, school_id)
        ids = device_ids or [f"cf-00bench{i:05x}" for i in range(len(room_list))]
        pairs = list(zip(ids, room_list))
        for device_id, room in pairs:
            assign_device(conn, device_id, room["id"], t_start - 3600)
    n = 0
    for day in range(5):
        t0 = int(datetime.combine(monday + timedelta(days=day), dtime(7, 30), SHANGHAI).timestamp())
        batch = []
        for i, (device_id, _room) in enumerate(pairs):
            for k in range(600):
                ts = t0 + k * WINDOW_S
                minute = 7 * 60 + 30 + k
                busy = any(int(a[:2]) * 60 + int(a[3:]) <= minute < int(b[:2]) * 60 + int(b[3:])
                           for a, b in PERIODS) and (i + day + k // 50) % 7 != 0
                batch.append({"device_id": device_id, "seq": seq_base + day * 1000 + k, "ts": ts,
                              "win": WINDOW_S, "occupied_s": 60 if busy else 0, "present": busy,
                              "pir": 3 if busy else 0, "radar_s": 60 if busy else 0,
                              "co2_ppm": 600 + (k % 50) * 20 if busy else 500, "temp_c": 22.5 + (k % 120) / 20,
                              "rh_pct": 50.0, "lux": 420.0 if busy else 120.0,
                              "noise_dba": 55.0 if busy else 38.0 + (k % 30) / 3, "received_s": float(ts + 1)})
        with engine.begin() as conn:
            conn.execute(insert(windows), batch)
        n += len(batch)
    run_rollups(engine)
    return n


def timed(client: TestClient, url: str, n: int) -> list[float]:
    client.get(url)          # warm: first-use compiles templates
    out = []
    for _ in range(n):
        t = time.perf_counter()
        r = client.get(url)
        out.append((time.perf_counter() - t) * 1000)
        assert r.status_code == 200, (url, r.status_code, r.text[:300])
    return out


def p95(xs: list[float]) -> float:
    return statistics.quantiles(xs, n=20, method="inclusive")[18]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=60)
    ap.add_argument("--keep", type=Path, help="keep the database in this folder")
    args = ap.parse_args()
    workdir = args.keep or Path(tempfile.mkdtemp(prefix="cf-render-"))
    workdir.mkdir(parents=True, exist_ok=True)
    settings = Settings(db=f"sqlite:///{workdir}/render.db", mqtt="mqtt://127.0.0.1:1", ingest=False)
    app = create_app(settings)
    try:
        with TestClient(app) as client:
            t = time.perf_counter()
            with app.state.engine.begin() as conn:
                load_demo_registry(conn)
                school_id = build_school(conn)
                # Login is on, as in production: the pages are timed as an operator's,
                # through an API token (its check is part of what is measured).
                user = auth_users.create_user(conn, "bench-operator", "operator")
                token, _ = auth_tokens.create_token(conn, user, name="bench", scopes=None, expires_days=1)
            client.headers["Authorization"] = f"Bearer {token}"
            monday = last_full_week()
            n = feed_week(app.state.engine, school_id, monday)
            week = f"{monday.isocalendar()[0]}-W{monday.isocalendar()[1]:02d}"
            print(f"set-up: demo province + {ROOMS}-room school, {n:,} windows rolled up "
                  f"in {time.perf_counter() - t:.1f} s; week {week}")
            cases = [("GET /api/v1/health (baseline)", "/api/v1/health"),
                     ("school usage JSON API, same school and week (reference)",
                      f"/api/v1/schools/{school_id}/usage?from={monday}&to={monday + timedelta(days=6)}"),
                     (f"school page, {ROOMS} rooms, one week", f"/schools/{school_id}?week={week}"),
                     ("province page (demo province, 300 schools), one week", f"/regions/330000?week={week}"),
                     ("province page, one school day", f"/regions/330000?date={monday + timedelta(days=2)}"),
                     ("room page, one day", f"/rooms/{list_rooms_first(app, school_id)}?date={monday}")]
            base = None
            load_before = os.getloadavg()
            print(f"{'page':58} {'p50 ms':>8} {'p95 ms':>8} {'x health p50':>13}")
            for label, url in cases:
                xs = timed(client, url, args.requests)
                p50 = statistics.median(xs)
                base = base or p50
                print(f"{label:58} {p50:8.1f} {p95(xs):8.1f} {p50 / base:13.1f}")
            print(f"{os.cpu_count()} cores; load average {load_before[0]:.2f} before / "
                  f"{os.getloadavg()[0]:.2f} after (1-minute)")
    finally:
        if args.keep is None:
            shutil.rmtree(workdir, ignore_errors=True)


def list_rooms_first(app, school_id: int) -> int:
    with app.state.engine.connect() as conn:
        return list_rooms(conn, school_id)[0]["id"]


if __name__ == "__main__":
    main()
