"""Ground truth: over a simulated school day, the occupied minutes the pipeline stores
match what the sim says really happened in the room (within 3% of the day's total)."""
from datetime import datetime, timedelta

import pytest
from sqlalchemy import select

from fleet_server.db.schema import windows
from fleet_server.virtual_nodes import SHANGHAI
from tests.utils.services import wait_until


def a_recent_weekday() -> datetime:
    d = datetime.now(SHANGHAI).date() - timedelta(days=2)
    while d.weekday() >= 5:
        d -= timedelta(days=1)
    return datetime(d.year, d.month, d.day, 7, 30, tzinfo=SHANGHAI)


@pytest.mark.parametrize("scenario,seed", [("classroom", 3), ("library", 5)])
def test_school_day_occupied_minutes_match_the_sim_truth(server, make_node, scenario, seed):
    start = a_recent_weekday()
    end_ts = int(start.timestamp()) + 10 * 3600  # 07:30-17:30
    device_id = f"cf-00007f{seed:06x}"
    node = make_node(start=start, speed=1200, scenario=scenario, seed=seed, device_id=device_id)

    def day_stored():
        with server.app.state.engine.connect() as conn:
            rows = conn.execute(select(windows.c.ts, windows.c.occupied_s)
                                .where(windows.c.device_id == device_id, windows.c.ts < end_ts)).all()
        return rows if len(rows) >= 600 else None
    rows = wait_until(day_stored, 120, 0.5, "a whole school day of windows")
    node.stop()
    truth = {}
    for line in (node.node_dir / "truth.csv").read_text().split():
        ts, occ_s, _people = (int(x) for x in line.split(","))
        truth[ts] = occ_s
    t0 = int(start.timestamp())
    true_s = sum(v for ts, v in truth.items() if t0 <= ts < end_ts)
    measured_s = sum(occ for ts, occ in rows if t0 <= ts < end_ts)
    assert true_s > 3600, "the scenario should have real use that day"
    error = abs(measured_s - true_s) / true_s
    print(f"{scenario}: truth {true_s / 60:.1f} min, measured {measured_s / 60:.1f} min, error {error:.2%}")
    assert error <= 0.03
