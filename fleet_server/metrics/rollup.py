"""The rollup job: takes stored windows off `rollup_queue`, attributes each to the room
its device was in at the window's ts, and adds it to room_hour, room_day and school_day
in the same transaction that removes it from the queue, so it counts exactly once; the
school-days it touched are counted again into school_cover_day in that transaction.

`run_rollups(engine)` drains the queue once (tests, `campusfleet rollup`); `RollupJob`
runs it every few seconds in a thread for the server's lifetime."""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from datetime import time as dtime
from typing import Any

from sqlalchemy import Connection, Engine, case, false, func, select, text, true, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite

from fleet_server.db.metrics_schema import (
    ADDITIVE, COVER_STEPS, MASKS, QUEUE_TRIGGER, QUEUED_COLUMNS, TRIGGER_DDL, new_style_day, room_day,
    room_hour, rollup_queue, rollup_state, school_cover_day, school_day,
)
from fleet_server.db.registry_schema import device_assignments, rooms, schools
from fleet_server.db.schema import windows
from fleet_server.metrics.coverage_counts import cover_select
from fleet_server.metrics.coverage_keep import refresh_all_schools, refresh_new_style_days
from fleet_server.metrics.coverage_kept import forget as forget_coverage
from fleet_server.metrics.coverage_kept import keep_coverage
from fleet_server.metrics.coverage_kept import refresh_days as refresh_kept_days
from fleet_server.metrics.hour_buckets import RoomContext, add_window, empty_measures, merge
from fleet_server.metrics.schooltime import load_hours, zone
from fleet_server.periodic import PeriodicJob

log = logging.getLogger(__name__)
BATCH = 2000             # windows per transaction: short enough not to hold SQLite's write lock long
DEFAULT_INTERVAL_S = 5.0
_IN_CHUNK = 500          # values per IN list
_ASSIGNMENTS_KEY = "assignments_seen"
_PRUNED_KEY = "raw_pruned_before_s"   # retention's cutoff: older raw windows are gone
_PARKING_LOCK_ID = 0x4366526B  # "CfRk": PostgreSQL advisory lock, parking vs. retrying parked windows


@dataclass
class RollupResult:
    windows: int = 0      # windows added to the rollups
    parked: int = 0       # windows set aside: no room assignment covered their ts
    unparked: int = 0     # parked windows retried after the assignment history changed
    batches: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def _insert(conn: Connection, table):
    dialect = {"postgresql": postgresql, "sqlite": sqlite}.get(conn.dialect.name)
    if dialect is None:
        raise RuntimeError(f"unsupported database {conn.dialect.name}")
    return dialect.insert(table)


# -- the queue ------------------------------------------------------------------------

def queue_trigger_present(conn: Connection) -> bool:
    if conn.dialect.name == "postgresql":
        sql = "SELECT 1 FROM pg_trigger WHERE tgname = :n AND tgrelid = 'windows'::regclass"
    else:
        sql = "SELECT 1 FROM sqlite_master WHERE type = 'trigger' AND name = :n"
    return conn.execute(text(sql), {"n": QUEUE_TRIGGER}).first() is not None


def ensure_queue_trigger(conn: Connection) -> bool:
    """Recreate the trigger feeding the queue if something dropped it (SQLite's batch
    ALTER of `windows` copies the table without its triggers). True if it was missing:
    windows stored meanwhile were never queued, and a rebuild recounts them."""
    if queue_trigger_present(conn):
        return False
    for ddl in TRIGGER_DDL[conn.dialect.name]:
        conn.execute(text(ddl))
    log.error("the rollup queue trigger on windows was missing and has been recreated; "
              "run `campusfleet rollup --rebuild` to count windows stored meanwhile")
    return True


def pending(conn: Connection) -> dict[str, int]:
    """Windows waiting to be rolled up, and those parked without a room."""
    q = rollup_queue.c
    waiting, parked = conn.execute(select(func.count().filter(q.parked.is_(False)),
                                          func.count().filter(q.parked.is_(True)))).one()
    return {"pending_windows": waiting or 0, "parked_windows": parked or 0}


def _claim(conn: Connection, limit: int) -> list[Any]:
    """Delete up to `limit` queued windows and return them. Concurrent jobs (several API
    servers on one PostgreSQL) skip each other's locked rows, so none is taken twice;
    on SQLite the DELETE takes the write lock, so jobs simply queue up."""
    q = rollup_queue.c
    pick = select(q.device_id, q.seq).where(q.parked.is_(False)).order_by(q.device_id, q.seq).limit(limit)
    if conn.dialect.name == "postgresql":
        pick = pick.with_for_update(skip_locked=True)
    stmt = (rollup_queue.delete().where(tuple_(q.device_id, q.seq).in_(pick))
            .returning(*(q[c] for c in QUEUED_COLUMNS)))
    return list(conn.execute(stmt))


def _assignments_seen(conn: Connection) -> str:
    a = device_assignments.c
    row = conn.execute(select(func.count(), func.max(a.id), func.sum(a.from_ts),
                              func.sum(a.to_ts), func.sum(a.room_id))).one()
    return ",".join(str(v or 0) for v in row)


def _parking_lock(conn: Connection) -> None:
    """Serialise parking with the check that retries parked windows. Without it, on
    PostgreSQL a job could park windows on a history read just before an assignment
    committed, while another job's check, having already seen that assignment, records
    the history as handled: the windows would wait for a change that already came.
    (SQLite's single writer serialises them already.)"""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _PARKING_LOCK_ID})


def _unpark_if_assignments_changed(conn: Connection) -> int:
    """Parked windows wait for an assignment that covers them (a node installed before
    it was registered is back-dated); any change to the history retries them all."""
    _parking_lock(conn)
    seen = _assignments_seen(conn)
    s = rollup_state.c
    if conn.execute(select(s.value).where(s.key == _ASSIGNMENTS_KEY)).scalar() == seen:
        return 0
    q = rollup_queue.c
    n = conn.execute(update(rollup_queue).where(q.parked.is_(True)).values(parked=False)).rowcount
    stmt = _insert(conn, rollup_state).values(key=_ASSIGNMENTS_KEY, value=seen)
    conn.execute(stmt.on_conflict_do_update(index_elements=["key"], set_={"value": seen}))
    return n or 0


# -- one batch ------------------------------------------------------------------------

def _rooms_at(conn: Connection, rows: list[Any]) -> dict[tuple[str, int], int]:
    """(device_id, seq) -> the room the device was in at the window's ts (the rule of
    fleet_server.registry.service.room_at, for a batch)."""
    a = device_assignments.c
    history: dict[str, list[Any]] = {}
    devices = sorted({r.device_id for r in rows})
    for i in range(0, len(devices), _IN_CHUNK):
        for h in conn.execute(select(a.device_id, a.room_id, a.from_ts, a.to_ts)
                              .where(a.device_id.in_(devices[i:i + _IN_CHUNK])).order_by(a.from_ts.desc())):
            history.setdefault(h.device_id, []).append(h)
    out = {}
    for r in rows:
        for h in history.get(r.device_id, ()):
            if h.from_ts <= r.ts and (h.to_ts is None or h.to_ts > r.ts):
                out[(r.device_id, r.seq)] = h.room_id
                break
    return out


def _contexts(conn: Connection, room_ids: set[int]) -> dict[int, RoomContext]:
    found = conn.execute(select(rooms.c.id, rooms.c.school_id, rooms.c.lux_factor)
                         .where(rooms.c.id.in_(sorted(room_ids)))).all()
    hours = load_hours(conn, {r.school_id for r in found})
    return {r.id: RoomContext(r.id, r.school_id, r.lux_factor, hours[r.school_id]) for r in found}


def _upsert(conn: Connection, table, keys: tuple[str, ...], rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    ins = _insert(conn, table)
    x, c = ins.excluded, table.c
    set_: dict[str, Any] = {name: c[name] + x[name] for name in ("windows", *ADDITIVE)}
    set_["co2_max"] = case((x.co2_max.is_(None), c.co2_max), (c.co2_max.is_(None), x.co2_max),
                           (x.co2_max > c.co2_max, x.co2_max), else_=c.co2_max)
    for name in MASKS:
        if name in c:
            set_[name] = c[name].op("|")(x[name])
    # Sorted keys: concurrent jobs lock rows in the same order and cannot deadlock.
    rows.sort(key=lambda r: tuple(r[k] for k in keys))
    conn.execute(ins.on_conflict_do_update(index_elements=list(keys), set_=set_), rows)


def _roll_batch(conn: Connection, limit: int, result: RollupResult) -> int:
    rows = _claim(conn, limit)
    if not rows:
        return 0
    room_of = _rooms_at(conn, rows)
    unassigned = [r for r in rows if (r.device_id, r.seq) not in room_of]
    if unassigned:
        # Under the parking lock, look again: an assignment may have committed since.
        _parking_lock(conn)
        room_of.update(_rooms_at(conn, unassigned))
    contexts = _contexts(conn, set(room_of.values())) if room_of else {}
    hours: dict[tuple, dict[str, Any]] = {}
    parked = []
    for r in rows:
        room_id = room_of.get((r.device_id, r.seq))
        ctx = contexts.get(room_id) if room_id is not None else None
        if ctx is None:
            parked.append({**r._mapping, "parked": True})
            continue
        add_window(hours, r, ctx)
        result.windows += 1
    if parked:
        conn.execute(_insert(conn, rollup_queue).on_conflict_do_nothing(), parked)
        result.parked += len(parked)
    days: dict[tuple, dict[str, Any]] = {}
    schools: dict[tuple, dict[str, Any]] = {}
    for (room_id, day, _hour), m in hours.items():
        merge(days.setdefault((room_id, day), empty_measures(masks=False) | {"school_id": m["school_id"]}), m)
        merge(schools.setdefault((m["school_id"], day), empty_measures(masks=False)), m)
    _upsert(conn, room_hour, ("room_id", "date", "hour"),
            [{"room_id": k[0], "date": k[1], "hour": k[2], **m} for k, m in hours.items()])
    _upsert(conn, room_day, ("room_id", "date"),
            [{"room_id": k[0], "date": k[1], **m} for k, m in days.items()])
    _upsert(conn, school_day, ("school_id", "date"),
            [{"school_id": k[0], "date": k[1], **m} for k, m in schools.items()])
    refresh_cover(conn, set(schools))
    refresh_new_style_days(conn, days, lambda table: _insert(conn, table))
    refresh_kept_days(conn, set(schools))       # after the two above: it reads them
    return len(rows)


def refresh_cover(conn: Connection, keys: set[tuple[int, Any]]) -> None:
    """Count school_cover_day again for the (school_id, date) keys from room_day, in the
    caller's transaction (after its room_day changes). On PostgreSQL the rows are locked
    first, in key order, and counted by a later statement: a job counting the same
    school-day waits for the other to commit and then sees its room_day rows too."""
    if not keys:
        return
    ordered = sorted(keys)
    zero = {"day_s": 0, "seen": 0, **{f"live_{k}": 0 for k in COVER_STEPS}}
    c = school_cover_day.c
    for i in range(0, len(ordered), _IN_CHUNK):
        chunk = ordered[i:i + _IN_CHUNK]
        lock = _insert(conn, school_cover_day)
        conn.execute(lock.on_conflict_do_update(index_elements=["date", "school_id"], set_={"seen": c.seen}),
                     [{"school_id": k[0], "date": k[1], **zero} for k in chunk])
        counted = [dict(r._mapping) for r in conn.execute(
            cover_select(tuple_(room_day.c.school_id, room_day.c.date).in_(chunk)))]
        if counted:
            ins = _insert(conn, school_cover_day)
            conn.execute(ins.on_conflict_do_update(
                index_elements=["date", "school_id"],
                set_={name: ins.excluded[name] for name in ("day_s", "seen", *(f"live_{k}" for k in COVER_STEPS))}),
                counted)


# -- entry points ---------------------------------------------------------------------

def run_rollups(engine: Engine, *, batch: int = BATCH,
                should_stop: Callable[[], bool] = lambda: False) -> RollupResult:
    """Roll up every queued window (in transactions of `batch`); returns the counts.
    Safe to run while ingest writes and while other jobs run."""
    result = RollupResult()
    with engine.begin() as conn:
        result.unparked = _unpark_if_assignments_changed(conn)
    while not should_stop():
        with engine.begin() as conn:
            taken = _roll_batch(conn, batch, result)
        result.batches += 1
        if taken < batch:
            break
    return result


def record_pruned_before(conn: Connection, cutoff_s: float) -> None:
    """Retention deletes raw windows older than cutoff_s (fleet_server/metrics/retention.py)."""
    value = str(int(max(cutoff_s, pruned_before_s(conn) or 0)))
    stmt = _insert(conn, rollup_state).values(key=_PRUNED_KEY, value=value)
    conn.execute(stmt.on_conflict_do_update(index_elements=["key"], set_={"value": value}))


def pruned_before_s(conn: Connection) -> int | None:
    s = rollup_state.c
    value = conn.execute(select(s.value).where(s.key == _PRUNED_KEY)).scalar()
    return int(value) if value is not None else None


def rebuild_rollups(engine: Engine, *, batch: int = BATCH) -> RollupResult:
    """Empty the rollups and queue every stored window again: after a school's hours or
    a device's assignment history were rewritten, or the queue trigger was lost.

    Days whose raw windows retention has deleted (wholly or in part) cannot be derived
    again: their rollups are kept as they are, and only the days from the first one
    with all its raw windows are rebuilt."""
    with engine.begin() as conn:
        ensure_queue_trigger(conn)
        pruned = pruned_before_s(conn)
        first_day = tz = None
        if pruned is not None:
            # Rollup dates are school-local. The day holding the cutoff lost part of its
            # windows, so rebuilding starts the next day (in the one zone of the schools).
            zones = set(conn.execute(select(schools.c.timezone).distinct()).scalars()) or {"Asia/Shanghai"}
            if len(zones) > 1:
                raise ValueError("rebuilding pruned rollups for schools in several time zones "
                                 f"({', '.join(sorted(zones))}) is not supported")
            tz = zone(zones.pop())
            first_day = datetime.fromtimestamp(pruned, tz).date() + timedelta(days=1)
        for table in (room_hour, room_day, school_day, school_cover_day, new_style_day):
            conn.execute(table.delete().where(table.c.date >= first_day) if first_day else table.delete())
        refresh_all_schools(conn)      # the registry-side coverage counts, as a net
        forget_coverage(conn)          # counted again by the keeper from the new rollups
        conn.execute(rollup_state.delete().where(rollup_state.c.key != _PRUNED_KEY))
        rows = select(*(windows.c[c] for c in QUEUED_COLUMNS), false())
        if first_day is not None:
            start_s = int(datetime.combine(first_day, dtime(), tz).timestamp())
            # Older queued (parked) windows may have no raw row any more: they stay queued.
            conn.execute(rollup_queue.delete().where(rollup_queue.c.ts >= start_s))
            rows = rows.where(windows.c.ts >= start_s)
        else:
            conn.execute(rollup_queue.delete())
            rows = rows.where(true())   # WHERE: SQLite would read ON CONFLICT as a join's ON
        conn.execute(_insert(conn, rollup_queue).from_select([*QUEUED_COLUMNS, "parked"], rows)
                     .on_conflict_do_nothing())
    return run_rollups(engine, batch=batch)


KEEP_BUDGET_S = 5.0


class RollupJob(PeriodicJob):
    """run_rollups every `interval_s` in a daemon thread, from start() to stop()."""

    name = "rollup"

    def __init__(self, engine: Engine, interval_s: float = DEFAULT_INTERVAL_S) -> None:
        super().__init__(interval_s)
        self.engine = engine

    def start(self) -> RollupJob:
        with self.engine.begin() as conn:
            ensure_queue_trigger(conn)
        super().start()
        return self

    def run_once(self) -> RollupResult:
        result = run_rollups(self.engine, should_stop=self.stopping)
        # Then the coverage keeper, for a bounded time per run: a province's first count
        # takes minutes and goes on over the next runs.
        keep_coverage(self.engine, budget_s=KEEP_BUDGET_S, should_stop=self.stopping)
        return result
