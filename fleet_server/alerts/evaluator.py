"""The alert evaluator: runs the rules (offline, CO2 breach, failed sensor) over recent
data and opens, updates or resolves alerts, idempotently: running it twice at the same
time changes nothing the second time.

`evaluate(conn, now_s)` is one run in the caller's transaction (tests pass a fixed
time); `AlertJob` runs it every 30 s in a thread for the server's lifetime."""
from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass

from sqlalchemy import Connection, Engine, text
from sqlalchemy.dialects import postgresql, sqlite

from fleet_server.alerts.co2 import evaluate_co2
from fleet_server.alerts.offline import evaluate_offline
from fleet_server.alerts.sensors import evaluate_sensors
from fleet_server.alerts.store import Outcome
from fleet_server.db.alerts_schema import alert_state
from fleet_server.periodic import PeriodicJob

log = logging.getLogger(__name__)
DEFAULT_INTERVAL_S = 30.0
_LAST_RUN_KEY = "last_run_s"
_EVALUATION_LOCK_ID = 0x4366416C  # "CfAl": PostgreSQL advisory lock, one evaluator at a time


@dataclass
class EvaluationResult:
    opened: int = 0
    updated: int = 0
    resolved: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def _take_turn(conn: Connection, now_s: float) -> None:
    """One evaluator at a time. PostgreSQL: an advisory lock held to commit (several
    API servers each run the job). SQLite: writing the run time first takes the write
    lock at the start, so a run never reads, then finds another run wrote meanwhile."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _EVALUATION_LOCK_ID})
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    stmt = dialect.insert(alert_state).values(key=_LAST_RUN_KEY, value=repr(now_s))
    conn.execute(stmt.on_conflict_do_update(index_elements=["key"], set_={"value": repr(now_s)}))


def evaluate(conn: Connection, now_s: float) -> EvaluationResult:
    """Run every rule as of `now_s` (Unix seconds) in the caller's transaction."""
    _take_turn(conn, now_s)
    total = Outcome()
    for rule in (evaluate_offline, evaluate_co2, evaluate_sensors):
        total.add(rule(conn, now_s))
    return EvaluationResult(total.opened, total.updated, total.resolved)


class AlertJob(PeriodicJob):
    """evaluate() every `interval_s` in a daemon thread, from start() to stop()."""

    name = "alerts"

    def __init__(self, engine: Engine, interval_s: float = DEFAULT_INTERVAL_S) -> None:
        super().__init__(interval_s)
        self.engine = engine

    def run_once(self) -> EvaluationResult:
        with self.engine.begin() as conn:
            return evaluate(conn, time.time())
