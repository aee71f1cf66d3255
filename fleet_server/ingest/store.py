"""Storing a batch of decoded node messages in one transaction.

Windows and events are written once per (device_id, seq): the insert skips conflicts
and RETURNs the rows it wrote, so a redelivery is recognised without a read before
the write. Device rows are created on first sight (unassigned) and updated once per
device per batch."""
from __future__ import annotations

import json
from dataclasses import dataclass

from sqlalchemy import Connection, case, update
from sqlalchemy.dialects import postgresql, sqlite

from fleet_server.db.schema import commands, devices, events, windows
from fleet_server.protocol import Ack, Event, Message, Status, Window

ACCEPTED = "accepted"
DUPLICATE = "duplicate"


@dataclass(slots=True)
class Received:
    msg: Message
    received_s: float
    retained: bool = False


def _insert(conn: Connection, table):
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table)
    if conn.dialect.name == "sqlite":
        return sqlite.insert(table)
    raise RuntimeError(f"unsupported database {conn.dialect.name}")


def _insert_new(conn: Connection, table, rows: list[dict]) -> set[tuple[str, int]]:
    """INSERT .. ON CONFLICT DO NOTHING RETURNING key: the keys actually written."""
    if not rows:
        return set()
    rows = list({(r["device_id"], r["seq"]): r for r in reversed(rows)}.values())  # first wins
    rows.sort(key=lambda r: (r["device_id"], r["seq"]))  # same lock order in every writer
    stmt = (_insert(conn, table)
            .on_conflict_do_nothing(index_elements=["device_id", "seq"])
            .returning(table.c.device_id, table.c.seq))
    return {(r.device_id, r.seq) for r in conn.execute(stmt, rows)}


@dataclass(slots=True)
class _DeviceDelta:
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
    deltas: dict[str, _DeviceDelta] = {}
    for item in batch:
        m = item.msg
        d = deltas.setdefault(m.device_id, _DeviceDelta())
        if not item.retained and (d.last_seen_s is None or item.received_s > d.last_seen_s):
            d.last_seen_s = item.received_s
        if isinstance(m, Window):
            window_rows.append({
                "device_id": m.device_id, "seq": m.seq, "ts": m.ts, "win": m.win,
                "occupied_s": m.occupied_s, "present": m.present, "pir": m.pir,
                "radar_s": m.radar_s, "co2_ppm": m.co2_ppm, "temp_c": m.temp_c,
                "rh_pct": m.rh_pct, "lux": m.lux, "noise_dba": m.noise_dba,
                "received_s": item.received_s,
            })
        elif isinstance(m, Event):
            event_rows.append({"device_id": m.device_id, "seq": m.seq, "ts": m.ts,
                               "present": m.present, "received_s": item.received_s})
        elif isinstance(m, Status):
            d.status = m
            d.status_received_s = item.received_s
        elif isinstance(m, Ack):
            ack_rows.append({"device_id": m.device_id, "cmd_id": m.cmd_id, "ok": m.ok,
                             "err": m.err, "acked_s": item.received_s})

    first_seen = min(i.received_s for i in batch)
    conn.execute(_insert(conn, devices).on_conflict_do_nothing(index_elements=["device_id"]),
                 [{"device_id": dev, "first_seen_s": first_seen, "windows_received": 0, "online": False}
                  for dev in sorted(deltas)])
    new_windows = _insert_new(conn, windows, window_rows)
    new_events = _insert_new(conn, events, event_rows)
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

    outcomes = []
    for item in batch:
        m = item.msg
        if isinstance(m, Window):
            # A key written by this batch counts once; a repeat inside the batch is
            # a duplicate like any other redelivery.
            fresh = (m.device_id, m.seq) in new_windows
            new_windows.discard((m.device_id, m.seq))
            if fresh:
                d = deltas[m.device_id]
                d.new_windows += 1
                if d.newest_window is None or m.ts > d.newest_window.ts:
                    d.newest_window = m
        elif isinstance(m, Event):
            fresh = (m.device_id, m.seq) in new_events
            new_events.discard((m.device_id, m.seq))
            if fresh:
                d = deltas[m.device_id]
                if d.newest_event is None or m.ts > d.newest_event.ts:
                    d.newest_event = m
        else:
            fresh = True  # status and ack are state, not records: always applied
        outcomes.append(ACCEPTED if fresh else DUPLICATE)

    # Devices in key order: concurrent ingest workers on PostgreSQL then take the row
    # locks in the same order and cannot deadlock each other.
    for device_id in sorted(deltas):
        _update_device(conn, device_id, deltas[device_id])
    return outcomes


def _newer(col, value):
    """CASE keeping the column monotonic: value if it is newer (or the column is NULL)."""
    return case((col.is_(None), value), (col < value, value), else_=col)


def _update_device(conn: Connection, device_id: str, d: _DeviceDelta) -> None:
    c = devices.c
    values: dict = {}
    if d.last_seen_s is not None:
        values["last_seen_s"] = _newer(c.last_seen_s, d.last_seen_s)
    if d.new_windows:
        values["windows_received"] = c.windows_received + d.new_windows
        w = d.newest_window
        newer = (c.last_window_ts.is_(None)) | (c.last_window_ts < w.ts)
        values["last_window"] = case((newer, json.dumps(w.as_report(), separators=(",", ":"))),
                                     else_=c.last_window)
        values["win_s"] = case((newer, w.win), else_=c.win_s)
        values["last_window_ts"] = _newer(c.last_window_ts, w.ts)
    if d.newest_event is not None:
        e = d.newest_event
        newer = (c.present_ts.is_(None)) | (c.present_ts <= e.ts)
        values["present"] = case((newer, e.present), else_=c.present)
        values["present_ts"] = _newer(c.present_ts, e.ts)
    s = d.status
    if s is not None:
        values["online_since_s"] = case((c.online == s.online, c.online_since_s),
                                        else_=d.status_received_s)
        values["online"] = s.online
        if s.online:
            values.update(
                fw=s.fw, hw=s.hw, boot=s.boot, reset_cause=s.reset, uptime_s=s.uptime_s,
                heap_free=s.heap_free, rssi=s.rssi, ip=s.ip, clock=s.clock, outbox=s.outbox,
                status_ts=s.ts,
                sensors=json.dumps(s.sensors) if s.sensors is not None else None,
            )
    if values:
        conn.execute(update(devices).where(c.device_id == device_id).values(**values))
