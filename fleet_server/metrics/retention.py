"""Retention: raw windows, presence events and status history older than `retention_days`
(default 400) are deleted in bounded chunks; rollups are kept forever and never touched.

Why deleting is safe for the rollups: the rollup job reads only `rollup_queue`, which a
trigger fills on INSERT into `windows` (fleet_server/db/metrics_schema.py); a DELETE
fires nothing, so nothing is re-derived, and a window still queued or parked keeps its
own copy there. `prune(engine)` runs once (`campusfleet db prune`); `RetentionJob` runs
it daily in a thread for the server's lifetime."""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

from sqlalchemy import Column, Engine, Table, select, tuple_

from fleet_server.db.schema import devices, events, status_history, windows
from fleet_server.metrics.rollup import record_pruned_before
from fleet_server.periodic import PeriodicJob

log = logging.getLogger(__name__)
DEFAULT_RETENTION_DAYS = 400
DAY_S = 86400
# Rows per DELETE transaction: short enough that SQLite's single write lock is never
# held long against ingest, and PostgreSQL never builds one huge transaction.
CHUNK_ROWS = 5000
DEVICES_PER_QUERY = 200    # the IN list: every query uses the (device_id, ...) index
DEFAULT_INTERVAL_S = DAY_S


@dataclass
class PruneResult:
    cutoff_s: float = 0.0
    windows: int = 0
    events: int = 0
    status_history: int = 0
    transactions: int = 0

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


# table -> (its time column, key columns of a row)
_TARGETS: tuple[tuple[str, Table, Column, tuple[Column, ...]], ...] = (
    ("windows", windows, windows.c.ts, (windows.c.device_id, windows.c.seq)),
    ("events", events, events.c.ts, (events.c.device_id, events.c.seq)),
    ("status_history", status_history, status_history.c.received_s,
     (status_history.c.device_id, status_history.c.received_s)),
)


def _prune_table(engine: Engine, table: Table, time_col: Column, keys: tuple[Column, ...],
                 device_ids: list[str], cutoff_s: float, chunk_rows: int, result: PruneResult,
                 should_stop: Callable[[], bool]) -> int:
    deleted = 0
    device_col = keys[0]
    for i in range(0, len(device_ids), DEVICES_PER_QUERY):
        group = device_ids[i:i + DEVICES_PER_QUERY]
        while not should_stop():
            # Keys first, then delete by key: a bounded DELETE that both databases run
            # (neither SQLite without a compile option nor PostgreSQL has DELETE .. LIMIT).
            pick = (select(*keys).where(device_col.in_(group), time_col < cutoff_s).limit(chunk_rows))
            with engine.begin() as conn:
                n = conn.execute(table.delete().where(tuple_(*keys).in_(pick))).rowcount or 0
            result.transactions += 1
            deleted += n
            if n < chunk_rows:
                break
        if should_stop():
            break
    return deleted


def prune(engine: Engine, *, days: int = DEFAULT_RETENTION_DAYS, now_s: float | None = None,
          chunk_rows: int = CHUNK_ROWS, should_stop: Callable[[], bool] = lambda: False) -> PruneResult:
    """Delete windows, events and status history older than `days`, in transactions of
    at most `chunk_rows` rows; rollups, the rollup queue and device rows stay. Safe
    while ingest writes and the rollup job runs; stops early when told to."""
    if days < 1:
        raise ValueError("retention days must be at least 1")
    now_s = time.time() if now_s is None else now_s
    result = PruneResult(cutoff_s=now_s - days * DAY_S)
    with engine.connect() as conn:
        # `devices` has a row for every device that ever stored anything (ingest upserts
        # it in the batch that stores its first window), so it names every owner of a row.
        device_ids = list(conn.execute(select(devices.c.device_id).order_by(devices.c.device_id)).scalars())
    # Recorded first, so a rebuild of the rollups never re-derives a day that is about to
    # lose (or has lost) raw windows: those days keep the rollups they have.
    with engine.begin() as conn:
        record_pruned_before(conn, result.cutoff_s)
    for name, table, time_col, keys in _TARGETS:
        n = _prune_table(engine, table, time_col, keys, device_ids, result.cutoff_s, chunk_rows, result,
                         should_stop)
        setattr(result, name, n)
    return result


def retained_from_s(days: int, now_s: float | None = None) -> float:
    """The oldest time raw data is kept for (what prune() leaves)."""
    return (time.time() if now_s is None else now_s) - days * DAY_S


class RetentionJob(PeriodicJob):
    """prune() once at start and then every `interval_s` (a day), in a daemon thread."""

    name = "retention"

    def __init__(self, engine: Engine, days: int = DEFAULT_RETENTION_DAYS,
                 interval_s: float = DEFAULT_INTERVAL_S) -> None:
        super().__init__(interval_s)
        self.engine = engine
        self.days = days

    def run_once(self) -> PruneResult:
        result = prune(self.engine, days=self.days, should_stop=self.stopping)
        if result.windows or result.events or result.status_history:
            log.info("retention: deleted %s", result.as_dict())
        return result
