"""One pass of each background job on the province dataset of bench/queries.py (6,000
schools, 95,732 assigned nodes, one spring term of rollups), next to the rollup job's pass
with nothing queued as the baseline, in the same run.

    .venv/bin/python bench/jobs.py [--repeat 2]

The jobs run in the server's interpreter (fleet_server/app.py), so a long pass competes
with requests; bench/queries.py times an API replica with the jobs off
(CAMPUSFLEET_JOBS=false). The alert pass writes alerts (opened once, then updated):
run it on the bench cluster only."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import province_data  # noqa: E402
from bench.pg_cluster import KeptPostgres  # noqa: E402
from fleet_server.alerts.evaluator import AlertJob  # noqa: E402
from fleet_server.db.engine import make_engine, migrate  # noqa: E402
from fleet_server.metrics.retention import RetentionJob  # noqa: E402
from fleet_server.metrics.rollup import RollupJob  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    pg = KeptPostgres().start()
    if not pg.has_database(province_data.DB_NAME):
        raise SystemExit("no province dataset: run bench/queries.py --build-only first")
    engine = make_engine(pg.url(province_data.DB_NAME))
    migrate(engine)
    jobs = [("rollup + coverage keeper (baseline: nothing queued)", RollupJob(engine)),
            ("alerts (offline, CO2, failed sensors)", AlertJob(engine)),
            ("retention (400 days)", RetentionJob(engine, days=400))]
    base = None
    print(f"{'job':52} {'pass s':>8} {'x baseline':>11}")
    for label, job in jobs:
        for i in range(args.repeat):
            t0 = time.perf_counter()
            job.run_once()
            took = time.perf_counter() - t0
            base = base or took
            print(f"{label:52} {took:8.2f} {took / base:11.0f}", flush=True)
    engine.dispose()


if __name__ == "__main__":
    main()
