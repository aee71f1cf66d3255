"""Builds the province dataset on PostgreSQL and keeps it: the registry and nodes of
bench/province_registry.py, one term of room-day rollups generated inside PostgreSQL
(12M rows: fast there, slow through Python), room-hour rollups for the timed schools
(bench/province_hours.py), and school-day sums of the room days, exactly as the rollup
job keeps them. Built into a scratch database and renamed when complete, so a named
database `campusfleet_bench_province_v<N>` is always a finished build."""
from __future__ import annotations

import json
import random
import time
from datetime import date, timedelta

import psycopg
from sqlalchemy import create_engine, insert, text
from sqlalchemy.pool import NullPool

from fleet_server.db.engine import make_engine, migrate
from fleet_server.db.metrics_schema import ADDITIVE, COVER_STEPS, MASKS, school_cover_day
from fleet_server.metrics.coverage_counts import cover_select
from fleet_server.metrics.coverage_keep import refresh_all_new_style, refresh_all_schools
from fleet_server.registry.demo_data import PERIODS
from fleet_server.registry.service import load_regions

from bench.province_hours import check_against_rollup, day_windows, hour_rows
from bench.province_registry import Province, build_province, local_ts

# Bump when the generated data changes; the old database is then left alone (drop it by hand).
DATASET_VERSION = 1
DB_NAME = f"campusfleet_bench_province_v{DATASET_VERSION}"
TERM_FIRST, TERM_LAST = date(2026, 3, 2), date(2026, 7, 10)    # spring term 2026, 91 school days
TIMED_COUNTY = 330106                                          # 杭州市西湖区
MEASURES = ("windows", *ADDITIVE, "co2_max")


def _log(msg: str, t0: float) -> None:
    print(f"  [{time.monotonic() - t0:6.1f} s] {msg}", flush=True)


def _dsn(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def school_days(p: Province) -> dict[date, bool]:
    kinds = {day: kind for _, day, kind, _ in p.calendar}
    out = {}
    day = TERM_FIRST
    while day <= TERM_LAST:
        kind = kinds.get(day)
        out[day] = kind == "workday" or (kind != "holiday" and day.weekday() < 5)
        day += timedelta(days=1)
    return out


def pick_targets(p: Province) -> dict:
    """A mid-size and the largest fully instrumented, dependable school in the timed
    county, and a classroom of the first, for the school and room reports."""
    by_school: dict[int, list] = {}
    for r in p.rooms:
        by_school.setdefault(r.school_id, []).append(r)
    fit = [s for s in p.schools if s["county_code"] == TIMED_COUNTY and p.reliability[s["id"]][0] < 0.01
           and all(len(r.assignments) == 1 and r.assignments[0][2] is None
                   for r in by_school[s["id"]] if r.teaching_space)]
    mid = min(fit, key=lambda s: (abs(len(by_school[s["id"]]) - 20), s["id"]))
    big = max(fit, key=lambda s: (len(by_school[s["id"]]), -s["id"]))
    room = next(r for r in by_school[mid["id"]] if r.type == "classroom")
    return {"school_mid": mid["id"], "school_big": big["id"], "room": room.id,
            "school_mid_rooms": len(by_school[mid["id"]]), "school_big_rooms": len(by_school[big["id"]])}


def _copy(cur, table: str, columns: tuple[str, ...], rows) -> int:
    n = 0
    quoted = ", ".join(f'"{c}"' for c in columns)      # `end` is a reserved word
    with cur.copy(f"COPY {table} ({quoted}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)
            n += 1
    return n


def _load_registry(cur, p: Province, targets: dict) -> None:
    _copy(cur, "schools", ("id", "code", "name", "county_code", "stage"),
          ((s["id"], s["code"], s["name"], s["county_code"], s["stage"]) for s in p.schools))
    _copy(cur, "buildings", ("id", "school_id", "code", "name"), p.buildings)
    _copy(cur, "rooms", ("id", "school_id", "building_id", "code", "name", "type", "capacity", "new_style",
                         "lux_factor", "teaching_space"),
          ((r.id, r.school_id, r.building_id, r.code, r.name, r.type, r.capacity, r.new_style, r.lux_factor,
            r.teaching_space) for r in p.rooms))
    _copy(cur, "calendar_days", ("id", "school_id", "date", "kind", "label"),
          ((i, None, day, kind, label) for i, day, kind, label in p.calendar))
    devices = [(dev, float(start)) for r in p.rooms for dev, start, _ in r.assignments]
    _copy(cur, "devices", ("device_id", "first_seen_s", "online", "windows_received"),
          ((dev, first, True, 0) for dev, first in devices))
    assignments = [(r.id, dev, start, end) for r in p.rooms for dev, start, end in r.assignments]
    _copy(cur, "device_assignments", ("id", "device_id", "room_id", "from_ts", "to_ts"),
          ((i, dev, room, start, end) for i, (room, dev, start, end) in enumerate(assignments, 1)))
    timed = {targets["school_mid"], targets["school_big"]}
    periods = [(r.school_id, r.id, wd, a, b, f"第{n}节") for r in p.rooms if r.school_id in timed
               and r.type == "classroom" for wd in range(5) for n, (a, b) in enumerate(PERIODS, 1)]
    _copy(cur, "timetable_periods", ("id", "school_id", "room_id", "weekday", "start", "end", "label"),
          ((i, *row) for i, row in enumerate(periods, 1)))
    for table in ("schools", "buildings", "rooms", "calendar_days", "device_assignments", "timetable_periods"):
        cur.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))")


# Per room and day: the share of the day the node delivered (0 = offline, no row), and
# on school days the occupied share of school hours. Uniforms come from hashint8 of
# (room, day), so the build is the same every time on one PostgreSQL major version.
_ROOM_DAY_SQL = f"""
INSERT INTO room_day (room_id, date, school_id, {', '.join(MEASURES)})
SELECT room_id, day, school_id, (obs / 60)::int, obs, occ, in_obs, in_occ,
       co2 * obs, obs, in_occ * greatest(0, util - 0.3), in_occ * greatest(0, util - 0.6),
       occ, occ * 0.93, occ, occ * 0.88, lux * occ, occ, occ * 0.12,
       power(10::float8, 3.9) * (obs - occ), obs - occ, (obs - occ) * 0.03, least(2500, co2 + 300 + 600 * u3)::smallint
FROM (
  SELECT x.*, f * 86400 AS obs, f * 36000 AS in_obs, f * 36000 * util AS in_occ,
         f * 36000 * util + f * 50400 * 0.02 AS occ, 500 + 700 * util AS co2, 320 + 80 * u3 AS lux
  FROM (
    SELECT p.room_id, p.school_id, t.day,
           CASE WHEN us < p.p_school_off OR u1 < p.p_off THEN 0
                WHEN u1 < p.p_off + p.p_part THEN 0.3 + 0.59 * u2
                ELSE 0.92 + 0.08 * u2 END AS f,
           CASE WHEN t.school_day THEN 0.2 + 0.6 * u3 ELSE 0.01 END AS util, u3
    FROM bench_plan p JOIN bench_days t ON t.day >= p.from_day
    CROSS JOIN LATERAL (SELECT
        (hashint8(p.room_id::bigint * 7919 + t.n::bigint * 104729 + 1) & 2147483647) / 2147483648.0::float8 AS u1,
        (hashint8(p.room_id::bigint * 7919 + t.n::bigint * 104729 + 2) & 2147483647) / 2147483648.0::float8 AS u2,
        (hashint8(p.room_id::bigint * 7919 + t.n::bigint * 104729 + 3) & 2147483647) / 2147483648.0::float8 AS u3,
        (hashint8(p.school_id::bigint * 15485863 + t.n) & 2147483647) / 2147483648.0::float8 AS us) h
  ) x
) y WHERE f > 0
"""


def _load_room_days(cur, p: Province, targets: dict, days: dict[date, bool]) -> None:
    timed = {targets["school_mid"], targets["school_big"]}
    cur.execute("CREATE TEMP TABLE bench_plan (room_id int, school_id int, from_day date, p_off float8, "
                "p_part float8, p_school_off float8)")
    cur.execute("CREATE TEMP TABLE bench_days (day date, n int, school_day bool)")
    plan = []
    for r in p.rooms:
        if not r.assignments or r.school_id in timed:
            continue
        start = r.assignments[0][1]
        # A node installed during the term reports from the next day on.
        from_day = TERM_FIRST if start < local_ts(TERM_FIRST) else date.fromtimestamp(start) + timedelta(days=1)
        plan.append((r.id, r.school_id, from_day, *p.reliability[r.school_id]))
    _copy(cur, "bench_plan", ("room_id", "school_id", "from_day", "p_off", "p_part", "p_school_off"), plan)
    _copy(cur, "bench_days", ("day", "n", "school_day"),
          ((day, day.toordinal(), sd) for day, sd in sorted(days.items())))
    cur.execute(_ROOM_DAY_SQL)


def _load_timed_hours(cur, p: Province, targets: dict, days: dict[date, bool]) -> int:
    timed = {targets["school_mid"], targets["school_big"]}
    rng = random.Random(11)
    cols = ("room_id", "date", "hour", "school_id", *MEASURES, *MASKS)

    def rows():
        for r in p.rooms:
            if r.school_id in timed and r.assignments:
                for day, is_school_day in sorted(days.items()):
                    for h in hour_rows(day_windows(rng, day, is_school_day, r.type == "classroom"),
                                       r.id, r.school_id, r.lux_factor, day):
                        yield tuple(h[c] for c in cols)

    n = _copy(cur, "room_hour", cols, rows())
    sums = ", ".join(f"max({c})" if c == "co2_max" else f"sum({c})" for c in MEASURES)
    cur.execute(f"INSERT INTO room_day (room_id, date, school_id, {', '.join(MEASURES)}) "
                f"SELECT room_id, date, min(school_id), {sums} FROM room_hour GROUP BY room_id, date")
    return n


def _secondary_indexes(cur, tables: tuple[str, ...]) -> list[tuple[str, str]]:
    cur.execute("SELECT i.indexname, i.indexdef FROM pg_indexes i WHERE i.tablename = ANY(%s) AND NOT EXISTS "
                "(SELECT 1 FROM pg_constraint c WHERE c.conname = i.indexname)", (list(tables),))
    return cur.fetchall()


def _primary_keys(cur, tables: tuple[str, ...]) -> list[tuple[str, str, str]]:
    cur.execute("SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint "
                "WHERE contype = 'p' AND conrelid::regclass::text = ANY(%s)", (list(tables),))
    return cur.fetchall()


def build(admin_url: str, url_of, name: str = DB_NAME) -> dict:
    """Create database `name` (admin_url: any database of the cluster; url_of(db) -> URL)."""
    t0 = time.monotonic()
    check_against_rollup(date(2026, 4, 15))
    scratch = name + "_build"
    admin = create_engine(admin_url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{scratch}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{scratch}"'))
    engine = make_engine(url_of(scratch))
    migrate(engine)
    with engine.begin() as conn:
        load_regions(conn)
    engine.dispose()
    _log("schema at head, regions loaded", t0)
    p = build_province(TERM_FIRST, TERM_LAST)
    targets = pick_targets(p)
    days = school_days(p)
    _log(f"registry generated: {len(p.schools)} schools, {len(p.rooms)} rooms, targets {targets}", t0)
    rollup_tables = ("room_day", "room_hour", "school_day")
    with psycopg.connect(_dsn(url_of(scratch)), autocommit=False) as pg:
        with pg.cursor() as cur:
            _load_registry(cur, p, targets)
            _log("registry, devices and assignments copied", t0)
            # Indexes are built once after the load: far faster than kept up row by row.
            indexes, keys = _secondary_indexes(cur, rollup_tables), _primary_keys(cur, rollup_tables)
            for index_name, _ in indexes:
                cur.execute(f'DROP INDEX "{index_name}"')
            for table, key_name, _ in keys:
                cur.execute(f'ALTER TABLE {table} DROP CONSTRAINT "{key_name}"')
            _load_room_days(cur, p, targets, days)
            _log("room_day generated", t0)
            n_hours = _load_timed_hours(cur, p, targets, days)
            _log(f"room_hour for the timed schools: {n_hours} rows", t0)
            sums = ", ".join(f"max({c})" if c == "co2_max" else f"sum({c})" for c in MEASURES)
            cur.execute(f"INSERT INTO school_day (school_id, date, {', '.join(MEASURES)}) "
                        f"SELECT school_id, date, {sums} FROM room_day GROUP BY school_id, date")
            _log("school_day summed", t0)
            for table, key_name, key_def in keys:
                cur.execute(f'ALTER TABLE {table} ADD CONSTRAINT "{key_name}" {key_def}')
            for _, ddl in indexes:
                cur.execute(ddl)
            cur.execute("CREATE TABLE bench_dataset (key text PRIMARY KEY, value text NOT NULL)")
            cur.execute("INSERT INTO bench_dataset VALUES ('targets', %s), ('version', %s)",
                        (json.dumps(targets), str(DATASET_VERSION)))
            _log("indexes rebuilt", t0)
        pg.commit()
    # school_cover_day, as the rollup job keeps it: counted from room_day by the app's own
    # statement (its float thresholds bound as parameters, exactly as coverage compares).
    engine = make_engine(url_of(scratch))
    with engine.begin() as conn:
        conn.execute(insert(school_cover_day).from_select(
            ["date", "school_id", "day_s", "seen", *(f"live_{k}" for k in COVER_STEPS)], cover_select()))
        # The registry-side coverage counts, as the registry services keep them (the
        # registry was copied in bulk, past them): school_spaces, school_node_spans and
        # new_style_day (fleet_server/metrics/coverage_keep.py).
        refresh_all_schools(conn)
        refresh_all_new_style(conn)
    engine.dispose()
    _log("school_cover_day and the registry's coverage counts counted", t0)
    with psycopg.connect(_dsn(url_of(scratch)), autocommit=True) as pg:
        pg.execute("VACUUM ANALYZE")
    _log("vacuum analyze done", t0)
    with admin.connect() as conn:
        conn.execute(text(f'ALTER DATABASE "{scratch}" RENAME TO "{name}"'))
    admin.dispose()
    return targets


def targets_of(url: str) -> dict:
    engine = create_engine(url, poolclass=NullPool)
    with engine.connect() as conn:
        targets = json.loads(conn.execute(text("SELECT value FROM bench_dataset WHERE key = 'targets'")).scalar_one())
    engine.dispose()
    return targets


def sizes(url: str) -> dict[str, int]:
    engine = create_engine(url, poolclass=NullPool)
    with engine.connect() as conn:
        out = {t: conn.execute(text(f"SELECT count(*) FROM {t}")).scalar_one()
               for t in ("schools", "rooms", "device_assignments", "room_day", "room_hour", "school_day",
                         "school_cover_day")}
        out["database_mb"] = conn.execute(text("SELECT pg_database_size(current_database())")).scalar_one() >> 20
    engine.dispose()
    return out
