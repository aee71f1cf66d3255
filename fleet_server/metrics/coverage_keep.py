"""Keeping the registry-side coverage counts current (docs/metrics.md "Coverage counts"):
`school_spaces` and `school_node_spans` (per school: its teaching spaces, and how many
rooms had a node over which spans of time) and `new_style_day` (room_day's in-school
seconds of the new-style teaching spaces).

Each is counted again in the caller's transaction wherever what it counts changes:
- a device assigned, moved or taken out (fleet_server/registry/service.py assign_device):
  refresh_schools for the old and the new room's school;
- rooms imported (fleet_server/registry/room_kinds.py write_rooms): refresh_schools for
  the file's schools, refresh_new_style_rooms for the rooms whose new_style or
  teaching_space changed;
- room_day rows added to by the rollup job (fleet_server/metrics/rollup.py):
  refresh_new_style_days for those room-days;
- `campusfleet rollup --rebuild` and migration 0011: everything."""
from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from typing import Any

from sqlalchemy import Connection, func, insert, select, text, tuple_

from fleet_server.db.metrics_schema import new_style_day, room_day
from fleet_server.db.registry_schema import OPEN_TS, device_assignments, rooms, school_node_spans, school_spaces

_IN_CHUNK = 500
# PostgreSQL advisory locks (two-key form): (_LOCK_NS, school_id) serialises counting a
# school again, so two transactions changing one school's rooms or nodes at once both
# end up counted (each counts after the other has committed).
_LOCK_NS = 0x4366     # "Cf"


def _chunks(values: Iterable, size: int = _IN_CHUNK):
    ordered = sorted(values)
    for i in range(0, len(ordered), size):
        yield ordered[i:i + size]


def merge_spans(intervals: Iterable[tuple[int, int | None]]) -> list[tuple[int, int]]:
    """One room's assignments [from_ts, to_ts) (to_ts None: still there) merged where they
    overlap or touch; open ends become OPEN_TS."""
    out: list[list[int]] = []
    for f, t in sorted((f, OPEN_TS if t is None else t) for f, t in intervals):
        if t <= f:
            continue          # empty: never in the room
        if out and f <= out[-1][1]:
            out[-1][1] = max(out[-1][1], t)
        else:
            out.append([f, t])
    return [(f, t) for f, t in out]


def covers(spans: Iterable[tuple[int, int]], t_first: int, t_last: int) -> bool:
    """A node in the room throughout [t_first, t_last] (the rule school_node_spans is read with)."""
    return any(f <= t_first and t >= t_last for f, t in spans)


def _lock_schools(conn: Connection, school_ids: list[int]) -> None:
    if conn.dialect.name != "postgresql" or not school_ids:
        return
    conn.execute(text("SELECT count(pg_advisory_xact_lock(:ns, x)) FROM unnest(CAST(:ids AS integer[])) AS x"),
                 {"ns": _LOCK_NS, "ids": sorted(school_ids)})


def refresh_schools(conn: Connection, school_ids: Iterable[int]) -> None:
    """Count school_spaces and school_node_spans again for these schools from rooms and
    device_assignments, after the caller's changes to them."""
    ids = sorted({int(i) for i in school_ids if i is not None})
    if not ids:
        return
    _lock_schools(conn, ids)
    r, a = rooms.c, device_assignments.c
    for part in _chunks(ids):
        conn.execute(school_spaces.delete().where(school_spaces.c.school_id.in_(part)))
        spaces = [{"school_id": s, "teaching_spaces": n} for s, n in conn.execute(
            select(r.school_id, func.count()).where(r.school_id.in_(part), r.teaching_space.is_(True))
            .group_by(r.school_id))]
        if spaces:
            conn.execute(insert(school_spaces), spaces)
        conn.execute(school_node_spans.delete().where(school_node_spans.c.school_id.in_(part)))
        rows = span_rows(conn.execute(
            select(r.id, r.school_id, r.teaching_space, a.from_ts, a.to_ts)
            .join(device_assignments, a.room_id == r.id).where(r.school_id.in_(part))))
        if rows:
            conn.execute(insert(school_node_spans), rows)


def span_rows(assignments: Iterable[Any]) -> list[dict[str, Any]]:
    """school_node_spans rows from (room_id, school_id, teaching_space, from_ts, to_ts) rows."""
    per_room: dict[int, list[tuple[int, int | None]]] = defaultdict(list)
    room_of: dict[int, tuple[int, bool]] = {}
    for room_id, school_id, teaching, f, t in assignments:
        per_room[room_id].append((f, t))
        room_of[room_id] = (school_id, bool(teaching))
    counts: Counter = Counter()
    for room_id, intervals in per_room.items():
        school_id, teaching = room_of[room_id]
        for f, t in merge_spans(intervals):
            counts[(school_id, teaching, f, t)] += 1
    return [{"school_id": s, "teaching_space": ts, "from_ts": f, "to_ts": t, "rooms": n}
            for (s, ts, f, t), n in sorted(counts.items())]


def refresh_all_schools(conn: Connection) -> None:
    """Every school's counts again (`campusfleet rollup --rebuild`, a dataset loaded in bulk)."""
    conn.execute(school_spaces.delete())
    conn.execute(school_node_spans.delete())
    r, a = rooms.c, device_assignments.c
    conn.execute(insert(school_spaces).from_select(
        ["school_id", "teaching_spaces"],
        select(r.school_id, func.count()).where(r.teaching_space.is_(True)).group_by(r.school_id)))
    rows = span_rows(conn.execute(select(r.id, r.school_id, r.teaching_space, a.from_ts, a.to_ts)
                                  .join(device_assignments, a.room_id == r.id)))
    for i in range(0, len(rows), 5000):
        conn.execute(insert(school_node_spans), rows[i:i + 5000])


def _new_style_select(*where):
    rd, r = room_day.c, rooms.c
    return (select(rd.room_id, rd.date, rd.school_id, rd.in_school_observed_s)
            .select_from(room_day.join(rooms, r.id == rd.room_id))
            .where(r.new_style.is_(True), r.teaching_space.is_(True), *where))


def refresh_new_style_rooms(conn: Connection, room_ids: Iterable[int]) -> None:
    """new_style_day again for these rooms (their new_style or teaching_space changed)."""
    for part in _chunks(set(room_ids)):
        conn.execute(new_style_day.delete().where(new_style_day.c.room_id.in_(part)))
        conn.execute(insert(new_style_day).from_select(
            ["room_id", "date", "school_id", "in_school_observed_s"],
            _new_style_select(room_day.c.room_id.in_(part))))


def refresh_new_style_days(conn: Connection, keys: Iterable[tuple[int, Any]], upsert) -> None:
    """Copy room_day's in-school seconds for these (room_id, date) keys into new_style_day
    for the rooms that are new-style teaching spaces; after the caller's room_day changes,
    in its transaction. `upsert(table)`: the dialect's INSERT (with on_conflict_do_update).
    On PostgreSQL the rooms rows are first read FOR SHARE: an import changing a room's
    flags waits for this transaction, then counts the room's days again with these in
    (or, having changed them first, makes this one wait and read the new flags)."""
    keys = set(keys)
    if conn.dialect.name == "postgresql":
        for part in _chunks({k[0] for k in keys}):
            conn.execute(select(rooms.c.id).where(rooms.c.id.in_(part)).order_by(rooms.c.id)
                         .with_for_update(read=True)).all()
    for part in _chunks(keys):
        rows = [dict(row._mapping) for row in conn.execute(
            _new_style_select(tuple_(room_day.c.room_id, room_day.c.date).in_(part)))]
        if rows:
            ins = upsert(new_style_day)
            conn.execute(ins.on_conflict_do_update(
                index_elements=["room_id", "date"],
                set_={"in_school_observed_s": ins.excluded.in_school_observed_s}), rows)


def refresh_all_new_style(conn: Connection) -> None:
    conn.execute(new_style_day.delete())
    conn.execute(insert(new_style_day).from_select(
        ["room_id", "date", "school_id", "in_school_observed_s"], _new_style_select()))


__all__ = ["covers", "merge_spans", "refresh_all_new_style", "refresh_all_schools", "refresh_new_style_days",
           "refresh_new_style_rooms", "refresh_schools", "span_rows"]
