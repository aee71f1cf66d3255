"""Storing a batch of decoded node messages in one transaction.

Windows and events are written once per (device_id, seq): the insert skips conflicts
and RETURNs the keys it wrote, so a redelivery is recognised without a read before the
write. Device rows are created on first sight (unassigned) and brought up to date in
the same statement (an upsert), once per device per batch.

The hot statements are a fixed handful per batch, whatever its size, run at driver level
(no per-row SQLAlchemy work): on SQLite one multi-row VALUES per statement, on
PostgreSQL one statement over `unnest()` of one array per column (constant SQL text,
so psycopg prepares it once per connection)."""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from typing import cast

from sqlalchemy import Connection, Float, bindparam, case, true, update
from sqlalchemy.dialects import postgresql, sqlite

from fleet_server.db.campaign_schema import command_progress
from fleet_server.db.schema import commands, devices
from fleet_server.protocol import Ack, Event, Message, Status, Window

ACCEPTED = "accepted"
DUPLICATE = "duplicate"

# SQLite allows 32766 bound variables per statement (since 3.32): 1000 rows x 14.
_SQLITE_ROWS_PER_STATEMENT = 1000

_WINDOW_COLS = ("device_id", "seq", "ts", "win", "occupied_s", "present", "pir", "radar_s",
                "co2_ppm", "temp_c", "rh_pct", "lux", "noise_dba", "received_s")
_WINDOW_PG_TYPES = ("varchar", "bigint", "bigint", "smallint", "smallint", "boolean", "integer",
                    "smallint", "smallint", "float8", "float8", "float8", "float8", "float8")
_EVENT_COLS = ("device_id", "seq", "ts", "present", "received_s")
_EVENT_PG_TYPES = ("varchar", "bigint", "bigint", "boolean", "float8")
_DEVICE_COLS = ("device_id", "first_seen_s", "online", "windows_received", "last_seen_s", "win_s",
                "last_window", "last_window_ts", "present", "present_ts")
_DEVICE_PG_TYPES = ("varchar", "float8", "boolean", "bigint", "float8", "integer",
                    "text", "bigint", "boolean", "bigint")

# On a known device each column only moves forward: the newest window (by its ts), the
# newest presence event, the latest live message; the window count adds what this
# batch newly stored. A NULL in `excluded` means "nothing of that kind in this batch".
_DEVICE_UPSERT_SET = """
 last_seen_s = CASE WHEN excluded.last_seen_s IS NOT NULL
                     AND (devices.last_seen_s IS NULL OR devices.last_seen_s < excluded.last_seen_s)
                    THEN excluded.last_seen_s ELSE devices.last_seen_s END,
 windows_received = devices.windows_received + excluded.windows_received,
 last_window = CASE WHEN excluded.last_window_ts IS NOT NULL
                     AND (devices.last_window_ts IS NULL OR devices.last_window_ts < excluded.last_window_ts)
                    THEN excluded.last_window ELSE devices.last_window END,
 win_s = CASE WHEN excluded.last_window_ts IS NOT NULL
               AND (devices.last_window_ts IS NULL OR devices.last_window_ts < excluded.last_window_ts)
              THEN excluded.win_s ELSE devices.win_s END,
 last_window_ts = CASE WHEN excluded.last_window_ts IS NOT NULL
                        AND (devices.last_window_ts IS NULL OR devices.last_window_ts < excluded.last_window_ts)
                       THEN excluded.last_window_ts ELSE devices.last_window_ts END,
 present = CASE WHEN excluded.present_ts IS NOT NULL
                 AND (devices.present_ts IS NULL OR devices.present_ts <= excluded.present_ts)
                THEN excluded.present ELSE devices.present END,
 present_ts = CASE WHEN excluded.present_ts IS NOT NULL
                    AND (devices.present_ts IS NULL OR devices.present_ts < excluded.present_ts)
                   THEN excluded.present_ts ELSE devices.present_ts END
"""


@dataclass(slots=True)
class Received:
    msg: Message
    received_s: float
    retained: bool = False


def _j(v: int | float | None) -> str:
    return "null" if v is None else repr(v)


def report_json(w: Window) -> str:
    """`json.dumps(w.as_report(), separators=(",", ":"))`, byte for byte, without
    building the dicts (every value is a validated int, finite float, bool or None)."""
    return (f'{{"v":1,"seq":{w.seq!r},"ts":{w.ts!r},"win":{w.win!r},"occ":{{"occupied_s":{w.occupied_s!r},'
            f'"present":{"true" if w.present else "false"},"pir":{_j(w.pir)},"radar_s":{_j(w.radar_s)}}},'
            f'"env":{{"co2_ppm":{_j(w.co2_ppm)},"temp_c":{_j(w.temp_c)},"rh_pct":{_j(w.rh_pct)},'
            f'"lux":{_j(w.lux)},"noise_dba":{_j(w.noise_dba)}}}}}')


def _window_row(m: Window, received_s: float) -> tuple:
    return (m.device_id, m.seq, m.ts, m.win, m.occupied_s, m.present, m.pir, m.radar_s,
            m.co2_ppm, m.temp_c, m.rh_pct, m.lux, m.noise_dba, received_s)


@cache
def _sqlite_sql(table: str, cols: tuple[str, ...], rows: int, tail: str) -> str:
    one = "(" + ",".join("?" * len(cols)) + ")"
    return f"INSERT INTO {table} ({','.join(cols)}) VALUES {','.join([one] * rows)} {tail}"


@cache
def _pg_sql(table: str, cols: tuple[str, ...], types: tuple[str, ...], tail: str) -> str:
    arrays = ",".join(f"%b::{t}[]" for t in types)  # binary: no text escaping per value
    return f"INSERT INTO {table} ({','.join(cols)}) SELECT * FROM unnest({arrays}) {tail}"


def _insert_rows(conn: Connection, table: str, cols: tuple[str, ...], pg_types: tuple[str, ...],
                 rows: list[tuple], tail: str) -> list[tuple]:
    """INSERT the rows (tuples in `cols` order) with the ON CONFLICT `tail`; returns
    what the tail's RETURNING gives (an empty list without RETURNING)."""
    if not rows:
        return []
    returning = "RETURNING" in tail
    dialect = conn.dialect.name
    if dialect == "postgresql":
        columns = [list(c) for c in zip(*rows)]
        result = conn.exec_driver_sql(_pg_sql(table, cols, pg_types, tail), tuple(columns))
        return result.fetchall() if returning else []
    if dialect == "sqlite":
        out: list[tuple] = []
        step = _SQLITE_ROWS_PER_STATEMENT
        for i in range(0, len(rows), step):
            chunk = rows[i:i + step]
            flat = tuple(v for row in chunk for v in row)
            result = conn.exec_driver_sql(_sqlite_sql(table, cols, len(chunk), tail), flat)
            if returning:
                out.extend(result.fetchall())
        return out
    raise RuntimeError(f"unsupported database {dialect}")


def _insert_new(conn: Connection, table: str, cols: tuple[str, ...], pg_types: tuple[str, ...],
                rows: list[tuple]) -> set[tuple[str, int]]:
    """INSERT .. ON CONFLICT DO NOTHING: the keys actually written. Rows are tuples
    starting (device_id, seq, ...). No read before the write, ever."""
    if not rows:
        return set()
    rows = list({(r[0], r[1]): r for r in reversed(rows)}.values())  # first copy wins
    rows.sort(key=lambda r: (r[0], r[1]))  # same lock order in every writer
    if conn.dialect.name == "sqlite":
        return _sqlite_insert_new(conn, table, cols, rows)
    written = _insert_rows(conn, table, cols, pg_types, rows,
                           "ON CONFLICT (device_id, seq) DO NOTHING RETURNING device_id, seq")
    return {(d, s) for d, s in written}


def _sqlite_insert_new(conn: Connection, table: str, cols: tuple[str, ...],
                       rows: list[tuple]) -> set[tuple[str, int]]:
    """SQLite without RETURNING: sqlite3 hands back RETURNING rows one step at a time,
    dropping and retaking the GIL for each, which under a busy MQTT thread costs far
    more than the insert. Instead: the statement's row count. All rows written (the
    usual case): the keys are known. Some skipped (redeliveries): the rows this
    statement wrote are the `count` rowids ending at its last rowid (SQLite gives a new
    row the largest rowid + 1, and this transaction holds the write lock), read back
    by rowid range: the new rows only, never the ones that were already there."""
    written: set[tuple[str, int]] = set()
    step = _SQLITE_ROWS_PER_STATEMENT
    for i in range(0, len(rows), step):
        chunk = rows[i:i + step]
        flat = tuple(v for row in chunk for v in row)
        result = conn.exec_driver_sql(
            _sqlite_sql(table, cols, len(chunk), "ON CONFLICT (device_id, seq) DO NOTHING"), flat)
        count, last = result.rowcount, result.lastrowid
        if count == len(chunk):
            written.update((r[0], r[1]) for r in chunk)
        elif count > 0:
            keys = conn.exec_driver_sql(
                f"SELECT device_id, seq FROM {table} WHERE rowid > ? AND rowid <= ?",
                (last - count, last)).fetchall()
            if len(keys) != count:
                raise RuntimeError(f"{table}: {count} rows inserted but {len(keys)} found by rowid")
            written.update((d, s) for d, s in keys)
    return written


@dataclass(slots=True)
class _DeviceDelta:
    first_seen_s: float
    last_seen_s: float | None = None
    new_windows: int = 0
    newest_window: Window | None = None
    newest_event: Event | None = None
    status: Status | None = None
    status_received_s: float = 0.0


def store_batch(conn: Connection, batch: list[Received]) -> list[str]:
    """Write a batch; returns per message ACCEPTED or DUPLICATE (same order).
    Runs inside the caller's transaction; the caller commits, then acks."""
    if not batch:
        return []
    window_rows = []
    event_rows = []
    ack_rows = []
    progress_rows = []
    deltas: dict[str, _DeviceDelta] = {}
    for item in batch:
        m = item.msg
        rx = item.received_s
        d = deltas.get(m.device_id)
        if d is None:
            d = deltas[m.device_id] = _DeviceDelta(first_seen_s=rx)
        elif rx < d.first_seen_s:
            d.first_seen_s = rx
        if not item.retained and (d.last_seen_s is None or rx > d.last_seen_s):
            d.last_seen_s = rx
        if type(m) is Window:
            window_rows.append(_window_row(m, rx))
        elif type(m) is Event:
            event_rows.append((m.device_id, m.seq, m.ts, m.present, rx))
        elif type(m) is Status:
            d.status = m
            d.status_received_s = rx
        elif type(m) is Ack:
            ack_rows.append({"device_id": m.device_id, "cmd_id": m.cmd_id, "ok": m.ok,
                             "err": m.err, "acked_s": rx})
            if m.stage is not None:
                progress_rows.append({"device_id": m.device_id, "cmd_id": m.cmd_id, "stage": m.stage,
                                      "ok": m.ok, "err": m.err, "pct": m.pct, "fw": m.fw, "acked_s": rx})

    new_windows = _insert_new(conn, "windows", _WINDOW_COLS, _WINDOW_PG_TYPES, window_rows)
    new_events = _insert_new(conn, "events", _EVENT_COLS, _EVENT_PG_TYPES, event_rows)

    outcomes = []
    for item in batch:
        m = item.msg
        if type(m) is Window:
            # A key written by this batch counts once; a repeat inside the batch is
            # a duplicate like any other redelivery.
            key = (m.device_id, m.seq)
            fresh = key in new_windows
            if fresh:
                new_windows.discard(key)
                d = deltas[m.device_id]
                d.new_windows += 1
                if d.newest_window is None or m.ts > d.newest_window.ts:
                    d.newest_window = m
        elif type(m) is Event:
            key = (m.device_id, m.seq)
            fresh = key in new_events
            if fresh:
                new_events.discard(key)
                d = deltas[m.device_id]
                if d.newest_event is None or m.ts > d.newest_event.ts:
                    d.newest_event = m
        else:
            fresh = True  # status and ack are state, not records: always applied
        outcomes.append(ACCEPTED if fresh else DUPLICATE)

    # Devices in key order: concurrent ingest workers on PostgreSQL then take the row
    # locks in the same order (and always after the window and event keys), so they
    # cannot deadlock each other.
    device_rows = []
    for device_id in sorted(deltas):
        d = deltas[device_id]
        w, e = d.newest_window, d.newest_event
        device_rows.append((
            device_id, d.first_seen_s, False, d.new_windows, d.last_seen_s,
            w.win if w else None,
            report_json(w) if w else None,
            w.ts if w else None,
            e.present if e else None,
            e.ts if e else None,
        ))
    _insert_rows(conn, "devices", _DEVICE_COLS, _DEVICE_PG_TYPES, device_rows,
                 "ON CONFLICT (device_id) DO UPDATE SET" + _DEVICE_UPSERT_SET)

    statuses = [(device_id, d) for device_id, d in sorted(deltas.items()) if d.status is not None]
    if statuses:
        # History first: it is told apart from a redelivery by the device's status
        # as it was before this batch.
        _record_status_history(conn, [item for item in batch if type(item.msg) is Status])
        _apply_statuses(conn, statuses)
    if ack_rows:
        # One row per command (a redelivered ack may share the batch; the last wins):
        # PostgreSQL refuses to update one row twice in a statement.
        ack_rows = sorted({(r["device_id"], r["cmd_id"]): r for r in ack_rows}.values(),
                          key=lambda r: (r["device_id"], r["cmd_id"]))
        stmt = _insert(conn, commands)
        stmt = stmt.on_conflict_do_update(
            index_elements=["device_id", "cmd_id"],
            set_={"ok": stmt.excluded.ok, "err": stmt.excluded.err, "acked_s": stmt.excluded.acked_s})
        conn.execute(stmt, ack_rows)
    if progress_rows:
        # The OTA campaign engine's record of every stage (fleet_server/campaigns): one row
        # per (command, stage); a later ack of the same stage (download 25 -> 50 %) updates it.
        progress_rows = sorted({(r["device_id"], r["cmd_id"], r["stage"]): r for r in progress_rows}.values(),
                               key=lambda r: (r["device_id"], r["cmd_id"], r["stage"]))
        stmt = _insert(conn, command_progress)
        stmt = stmt.on_conflict_do_update(
            index_elements=["device_id", "cmd_id", "stage"],
            set_={"ok": stmt.excluded.ok, "err": stmt.excluded.err, "pct": stmt.excluded.pct,
                  "fw": stmt.excluded.fw, "acked_s": stmt.excluded.acked_s})
        conn.execute(stmt, progress_rows)
    return outcomes


def _insert(conn: Connection, table):
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table)
    if conn.dialect.name == "sqlite":
        return sqlite.insert(table)
    raise RuntimeError(f"unsupported database {conn.dialect.name}")


_c = devices.c
_STATUS_FIELDS = ("fw", "hw", "boot", "reset_cause", "uptime_s", "heap_free", "rssi", "ip",
                  "clock", "outbox", "status_ts", "sensors")
# `online_since_s` moves only when `online` changes. A birth (online) carries the node's
# state and replaces every field of it; the will (offline) carries nothing else.
_STATUS_ONLINE = (update(devices).where(_c.device_id == bindparam("b_device_id"))
                  .values(online_since_s=case((_c.online == true(), _c.online_since_s),
                                              else_=bindparam("b_received_s", type_=Float)),
                          online=True,
                          **{f: bindparam(f"b_{f}", type_=_c[f].type) for f in _STATUS_FIELDS}))
_STATUS_OFFLINE = (update(devices).where(_c.device_id == bindparam("b_device_id"))
                   .values(online_since_s=case((_c.online == true(), bindparam("b_received_s", type_=Float)),
                                               else_=_c.online_since_s),
                           online=False))


def _apply_statuses(conn: Connection, statuses: list[tuple[str, _DeviceDelta]]) -> None:
    online, offline = [], []
    for device_id, d in statuses:
        s = d.status
        if s.online:
            online.append({
                "b_device_id": device_id, "b_received_s": d.status_received_s,
                "b_fw": s.fw, "b_hw": s.hw, "b_boot": s.boot, "b_reset_cause": s.reset,
                "b_uptime_s": s.uptime_s, "b_heap_free": s.heap_free, "b_rssi": s.rssi,
                "b_ip": s.ip, "b_clock": s.clock, "b_outbox": s.outbox, "b_status_ts": s.ts,
                "b_sensors": json.dumps(s.sensors) if s.sensors is not None else None,
            })
        else:
            offline.append({"b_device_id": device_id, "b_received_s": d.status_received_s})
    if online:
        conn.execute(_STATUS_ONLINE, online)
    if offline:
        conn.execute(_STATUS_OFFLINE, offline)


# -- status history -------------------------------------------------------------------

_HISTORY_COLS = ("device_id", "received_s", "online", "status_ts", "fw", "boot", "reset_cause",
                 "uptime_s", "heap_free", "rssi", "outbox", "sensors")
_HISTORY_PG_TYPES = ("varchar", "float8", "boolean", "bigint", "varchar", "integer", "varchar",
                     "bigint", "integer", "smallint", "integer", "text")
_HISTORY_ROWS_PER_STATEMENT = _SQLITE_ROWS_PER_STATEMENT
# A status equal to the device's current one is a redelivery (QoS 1 after a crash before
# the ack) or the broker's retained copy replayed on resubscribe: not a new point. Only
# a device's first status in the batch (`chk`) is compared with the stored row, which
# is still the state before this batch; later ones were already told apart in Python.
_HISTORY_SAME = """x.chk AND ((x.online AND d.online AND d.status_ts {eq} x.status_ts AND d.boot {eq} x.boot
  AND d.uptime_s {eq} x.uptime_s AND d.heap_free {eq} x.heap_free AND d.rssi {eq} x.rssi
  AND d.sensors {eq} x.sensors) OR (NOT x.online AND NOT d.online))"""


@cache
def _history_sql(dialect: str, rows: int) -> str:
    cols = ",".join(_HISTORY_COLS)
    picked = ",".join(f"x.{c}" for c in _HISTORY_COLS)
    if dialect == "postgresql":
        arrays = ",".join(f"%b::{t}[]" for t in (*_HISTORY_PG_TYPES, "boolean"))
        return (f"INSERT INTO status_history ({cols}) SELECT {picked} FROM unnest({arrays}) AS x({cols},chk) "
                f"JOIN devices d ON d.device_id = x.device_id "
                f"WHERE NOT ({_HISTORY_SAME.format(eq='IS NOT DISTINCT FROM')}) "
                f"ON CONFLICT (device_id, received_s) DO NOTHING")
    one = "(" + ",".join("?" * (len(_HISTORY_COLS) + 1)) + ")"
    # INSERT OR IGNORE: two statuses of a device with the same received_s (one clock
    # tick) keep the first rather than failing the batch.
    return (f"WITH x({cols},chk) AS (VALUES {','.join([one] * rows)}) "
            f"INSERT OR IGNORE INTO status_history ({cols}) SELECT {picked} FROM x "
            f"JOIN devices d ON d.device_id = x.device_id WHERE NOT ({_HISTORY_SAME.format(eq='IS')})")


def _record_status_history(conn: Connection, items: list[Received]) -> None:
    """One row per status that is not a repeat of the one before it, in arrival order."""
    rows: list[tuple] = []
    last: dict[str, tuple] = {}
    for item in items:
        s = cast(Status, item.msg)
        point = (s.online, s.ts, s.fw, s.boot, s.reset, s.uptime_s, s.heap_free, s.rssi, s.outbox,
                 json.dumps(s.sensors) if s.sensors is not None else None)
        before = last.get(s.device_id)
        if before is not None and (before == point or (not s.online and not before[0])):
            continue
        last[s.device_id] = point
        rows.append((s.device_id, item.received_s, *point, before is None))
    dialect = conn.dialect.name
    if dialect == "postgresql":
        conn.exec_driver_sql(_history_sql(dialect, 0), tuple(list(c) for c in zip(*rows)))
        return
    step = _HISTORY_ROWS_PER_STATEMENT
    for i in range(0, len(rows), step):
        chunk = rows[i:i + step]
        conn.exec_driver_sql(_history_sql(dialect, len(chunk)), tuple(v for r in chunk for v in r))
