"""Ground truth for the usage API: three virtual nodes (real firmware, MicroPython unix
port) play a school day in rooms registered with the firmware's own timetable; after
the rollup, the API's utilisation per room is within 2 percentage points of the sim's
truth.csv, and its no-shows are exactly the booked periods the truth says were missed
(DOMAIN.md rule), none invented."""
import ast
from datetime import datetime, timedelta

from sqlalchemy import func, select

from fleet_server.db.schema import windows
from fleet_server.metrics.rollup import pending, run_rollups
from fleet_server.virtual_nodes import FIRMWARE_DIR, SHANGHAI
from tests.utils.services import wait_until

SCHOOL_S = 10 * 3600               # 07:30-17:30
ROOMS = (("C1", "classroom", "classroom", 3), ("C2", "classroom", "classroom", 8), ("L1", "lab", "lab", 5))


def firmware_periods() -> list[tuple[int, int]]:
    """PERIODS of firmware/hw/scenario.py, (start, end) seconds of the local day; read
    from the source, since its imports are MicroPython modules."""
    tree = ast.parse((FIRMWARE_DIR / "hw" / "scenario.py").read_text())
    node = next(n for n in tree.body if isinstance(n, ast.Assign) and n.targets[0].id == "PERIODS")
    return [tuple(p) for p in eval(compile(ast.Expression(node.value), "scenario.py", "eval"), {"__builtins__": {}})]


def hhmm(seconds: int) -> str:
    return f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}"


def a_recent_weekday() -> datetime:
    d = datetime.now(SHANGHAI).date() - timedelta(days=2)
    while d.weekday() >= 5:
        d -= timedelta(days=1)
    return datetime(d.year, d.month, d.day, 7, 30, tzinfo=SHANGHAI)


def read_truth(path) -> dict[int, int]:
    """minute_ts -> occupied seconds in that minute."""
    out = {}
    for line in path.read_text().split():
        ts, occ_s, _people = (int(x) for x in line.split(","))
        out[ts] = occ_s
    return out


def expected_no_shows(truth: dict[int, int], midnight: int, periods) -> list[str]:
    """DOMAIN.md: a booked period with occupied < 20% of the period, or no presence in
    its first 10 minutes, from the sim's own per-minute truth."""
    missed = []
    for start, end in periods:
        occupied = sum(truth.get(midnight + m, 0) for m in range(start, end, 60))
        present_early = any(truth.get(midnight + m, 0) for m in range(start, start + 600, 60))
        if occupied < 0.2 * (end - start) or not present_early:
            missed.append(hhmm(start))
    return missed


def post_csv(server, kind: str, text: str) -> None:
    r = server.http.post(f"/api/v1/import/{kind}", content=text.encode(), headers={"content-type": "text/csv"})
    assert r.status_code == 200, r.text


def test_usage_api_matches_the_sim_truth(server, make_node):
    start = a_recent_weekday()
    t0 = int(start.timestamp())
    end_ts = t0 + SCHOOL_S
    midnight = t0 - (7 * 3600 + 30 * 60)
    day = start.date().isoformat()
    periods = firmware_periods()
    post_csv(server, "schools", "code,name,county_code,stage,day_start,day_end\nT1,真值测试小学,330106,primary,07:30,17:30\n")
    post_csv(server, "rooms", "school_code,room_code,name,type\n"
             + "".join(f"T1,{code},{code},{kind}\n" for code, kind, _, _ in ROOMS))
    post_csv(server, "timetable", "school_code,room_code,weekday,start,end\n" + "".join(
        f"T1,{code},{start.isoweekday()},{hhmm(a)},{hhmm(b)}\n" for code, *_ in ROOMS for a, b in periods))
    school_id = server.get("/api/v1/schools", params={"county": 330106})["items"][0]["id"]
    room_ids = {r["code"]: r["id"] for r in server.get(f"/api/v1/schools/{school_id}/rooms")}
    nodes = {}
    for i, (code, _kind, scenario, seed) in enumerate(ROOMS):
        device_id = f"cf-00007e{i:06x}"
        r = server.http.put(f"/api/v1/devices/{device_id}/room", json={"room_id": room_ids[code], "from_ts": t0})
        assert r.status_code == 200
        nodes[code] = make_node(start=start, speed=1200, scenario=scenario, seed=seed, device_id=device_id)
    engine = server.app.state.engine

    def day_stored():
        with engine.connect() as conn:
            counts = [conn.execute(select(func.count()).select_from(windows).where(
                windows.c.device_id == n.device_id, windows.c.ts < end_ts)).scalar_one() for n in nodes.values()]
        return counts if min(counts) >= 600 else None
    wait_until(day_stored, 240, 0.5, "a whole school day of windows from every node")
    for n in nodes.values():
        n.stop()
    run_rollups(engine)

    def drained():
        with engine.connect() as conn:
            return pending(conn)["pending_windows"] == 0
    wait_until(drained, 30, 0.1, "the rollup queue drained")

    total_missed = 0
    for code, *_ in ROOMS:
        truth = read_truth(nodes[code].node_dir / "truth.csv")
        true_util = sum(v for ts, v in truth.items() if t0 <= ts < end_ts) / SCHOOL_S
        usage = server.get(f"/api/v1/rooms/{room_ids[code]}/usage", params={"from": day, "to": day})
        missed = expected_no_shows(truth, midnight, periods)
        found = [n["start"] for n in usage["no_shows"]]
        print(f"{code}: utilisation truth {true_util:.4f}, API {usage['utilisation']:.4f}; "
              f"no-shows truth {missed}, API {found}")
        assert true_util > 0.1, "the scenario should have real use that day"
        assert abs(usage["utilisation"] - true_util) <= 0.02
        assert found == missed
        assert usage["periods_without_data"] == 0 and usage["data_completeness"] >= 0.99
        total_missed += len(missed)
    assert total_missed >= 1, "the seeds should give at least one booked period nobody came to"
