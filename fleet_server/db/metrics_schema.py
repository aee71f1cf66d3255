"""Rollup tables: per room-hour, room-day and school-day sums that the usage,
environment and coverage figures are read from, and the queue that feeds them.

Every window lands in `rollup_queue` in the transaction that stores it (a trigger on
`windows`, so ingest code is unchanged); the rollup job takes rows off the queue and
adds them to the sums in one transaction, so each window is counted exactly once
(docs/metrics.md "How rollups stay exact"). Dates and hours are school-local."""
from sqlalchemy import (
    BigInteger, Boolean, Column, Date, Float, Index, Integer, PrimaryKeyConstraint, SmallInteger,
    String, Table, Text,
)

from fleet_server.db.schema import metadata

# Sums: added to on every window (seconds are float: a window crossing an hour or the
# school-day edge is split in proportion). `co2_max` is a running maximum.
ADDITIVE = (
    "observed_s", "occupied_s", "in_school_observed_s", "in_school_occupied_s",
    "co2_sum", "co2_n_s", "co2_over_1000_s", "co2_over_1500_s",
    "temp_occ_s", "temp_in_band_s", "rh_occ_s", "rh_in_band_s",
    "lux_sum", "lux_occ_s", "lux_low_s",
    "noise_energy_sum", "noise_n_s", "noise_over_45_s",
)
# Minute bitmaps of an hour (bit m = minute m): OR-ed together, so minute-level rules
# (no-shows, unscheduled use) need no raw windows.
MASKS = ("observed_mask", "present_mask", "occupied_mask")


def _measures(*, masks: bool) -> list[Column]:
    cols = [Column("windows", Integer, nullable=False, default=0)]
    cols += [Column(name, Float, nullable=False, default=0.0) for name in ADDITIVE]
    cols.append(Column("co2_max", SmallInteger))
    if masks:
        cols += [Column(name, BigInteger, nullable=False, default=0) for name in MASKS]
    return cols


room_hour = Table(
    "room_hour", metadata,
    Column("room_id", Integer, nullable=False),
    Column("date", Date, nullable=False),            # school-local date
    Column("hour", SmallInteger, nullable=False),    # school-local hour 0-23
    Column("school_id", Integer, nullable=False),
    *_measures(masks=True),
    PrimaryKeyConstraint("room_id", "date", "hour", name="pk_room_hour"),
    Index("ix_room_hour_school_date", "school_id", "date"),
)

room_day = Table(
    "room_day", metadata,
    Column("room_id", Integer, nullable=False),
    Column("date", Date, nullable=False),
    Column("school_id", Integer, nullable=False),
    *_measures(masks=False),
    PrimaryKeyConstraint("room_id", "date", name="pk_room_day"),
    Index("ix_room_day_school_date", "school_id", "date"),
    # Coverage of a province reads every room's day: by date, with the columns it
    # counts, so the read is index-only (migration 0005).
    Index("ix_room_day_date_school", "date", "school_id", "room_id", "in_school_observed_s"),
)

school_day = Table(
    "school_day", metadata,
    Column("school_id", Integer, nullable=False),
    Column("date", Date, nullable=False),
    *_measures(masks=False),
    PrimaryKeyConstraint("school_id", "date", name="pk_school_day"),
)

# Per school and school day, the room counts coverage judges schools on (DOMAIN.md
# "Smart-campus coverage"), so a view reads one row per school-day instead of every
# room's day. Kept by the rollup job in the transaction that changes the room_day rows
# it counts (docs/metrics.md "Coverage counts"). Over every room of the school with a
# room_day row that day (teaching space or not: coverage takes the others out when it
# reads): `seen`, rooms whose in-school observed seconds are > 0, and per step k of
# COVER_STEPS, `live_<k>`, those among them with in-school observed seconds >=
# (k / 100) x day_s, day_s being the school's nominal school-day length when counted.
COVER_STEPS = tuple(range(5, 101, 5))      # delivered_min in percent, a 0.05 grid
school_cover_day = Table(
    "school_cover_day", metadata,
    Column("date", Date, nullable=False),
    Column("school_id", Integer, nullable=False),
    Column("day_s", Integer, nullable=False),
    Column("seen", Integer, nullable=False),
    *(Column(f"live_{k}", Integer, nullable=False) for k in COVER_STEPS),
    PrimaryKeyConstraint("date", "school_id", name="pk_school_cover_day"),
)

# room_day's in-school observed seconds of the new-style teaching spaces only (rooms
# with `new_style` and `teaching_space` set now), so live new-style spaces are read from
# ~5,000 rows per school day of a province, not ~95,000 (migration 0011). Kept by the
# rollup job with room_day, and by the importer when a room's flags change
# (fleet_server/metrics/coverage_keep.py).
new_style_day = Table(
    "new_style_day", metadata,
    Column("room_id", Integer, nullable=False),
    Column("date", Date, nullable=False),
    Column("school_id", Integer, nullable=False),
    Column("in_school_observed_s", Float, nullable=False),
    PrimaryKeyConstraint("room_id", "date", name="pk_new_style_day"),
    Index("ix_new_style_day_date_school", "date", "school_id", "room_id", "in_school_observed_s"),
)

# Windows stored but not yet rolled up, with the columns the rollup needs, so taking
# a batch off the queue is one DELETE .. RETURNING and the job never reads `windows`.
# `parked`: no room assignment covered the window's ts when the job saw it; it is
# retried when the assignment history changes.
QUEUED_COLUMNS = ("device_id", "seq", "ts", "win", "occupied_s", "co2_ppm", "temp_c", "rh_pct", "lux",
                  "noise_dba")
rollup_queue = Table(
    "rollup_queue", metadata,
    Column("device_id", String(15), nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("ts", BigInteger, nullable=False),
    Column("win", SmallInteger, nullable=False),
    Column("occupied_s", SmallInteger, nullable=False),
    Column("co2_ppm", SmallInteger),
    Column("temp_c", Float),
    Column("rh_pct", Float),
    Column("lux", Float),
    Column("noise_dba", Float),
    Column("parked", Boolean, nullable=False, default=False),
    PrimaryKeyConstraint("device_id", "seq", name="pk_rollup_queue"),
)

rollup_state = Table(
    "rollup_state", metadata,
    Column("key", String(32), primary_key=True),
    Column("value", Text, nullable=False),
)

# The trigger that feeds the queue. PostgreSQL: one statement-level trigger over the
# transition table (a batch insert costs one extra INSERT .. SELECT, not one per row);
# its rows are only those actually inserted, so ON CONFLICT DO NOTHING redeliveries
# never reach the queue. SQLite: a row trigger (same rule for its upsert).
QUEUE_TRIGGER = "trg_windows_rollup_queue"
QUEUE_FUNCTION = "campusfleet_queue_windows"
_COLS = ", ".join(QUEUED_COLUMNS)
TRIGGER_DDL = {
    "sqlite": [
        f"CREATE TRIGGER IF NOT EXISTS {QUEUE_TRIGGER} AFTER INSERT ON windows "
        f"BEGIN INSERT OR IGNORE INTO rollup_queue ({_COLS}, parked) "
        f"VALUES ({', '.join('NEW.' + c for c in QUEUED_COLUMNS)}, 0); END",
    ],
    "postgresql": [
        f"CREATE OR REPLACE FUNCTION {QUEUE_FUNCTION}() RETURNS trigger LANGUAGE plpgsql AS $$ "
        f"BEGIN INSERT INTO rollup_queue ({_COLS}, parked) "
        f"SELECT {_COLS}, false FROM new_windows ON CONFLICT DO NOTHING; RETURN NULL; END $$",
        f"CREATE OR REPLACE TRIGGER {QUEUE_TRIGGER} AFTER INSERT ON windows "
        f"REFERENCING NEW TABLE AS new_windows FOR EACH STATEMENT EXECUTE FUNCTION {QUEUE_FUNCTION}()",
    ],
}
DROP_TRIGGER_DDL = {
    "sqlite": [f"DROP TRIGGER IF EXISTS {QUEUE_TRIGGER}"],
    "postgresql": [f"DROP TRIGGER IF EXISTS {QUEUE_TRIGGER} ON windows",
                   f"DROP FUNCTION IF EXISTS {QUEUE_FUNCTION}()"],
}

# Smart-campus coverage judged per school and school day at the default policy (DOMAIN.md;
# fleet_server/metrics/coverage_kept.py), so a province's coverage for a day, a week or
# twelve weeks is one grouped read (migration 0013). `coverage_day`: a row for every school
# day in a school's kept range, with its counts and its judgment; `coverage_week`: per ISO
# week (its Monday), the days summed in date order; `coverage_new_style`: the live
# new-style teaching spaces per day (the weeks' counts are made from it); `coverage_kept`:
# the range [kept_from, kept_to] a school's rows are complete for. A registry change drops
# a school's rows and range (the keeper counts them again); the rollup job counts again
# the school-days it adds to.
NEW_STYLE_DAYS = range(1, 8)     # coverage_week.live_ns_<k>: spaces live on >= k school days
coverage_day = Table(
    "coverage_day", metadata,
    Column("date", Date, nullable=False),
    Column("school_id", Integer, nullable=False),
    Column("spaces", Integer, nullable=False),       # teaching spaces
    Column("instrumented", Integer, nullable=False),
    Column("live", Integer, nullable=False),
    Column("offline", Integer, nullable=False),
    Column("inst_share", Float, nullable=False),     # instrumented / spaces (0 without spaces)
    Column("live_share", Float, nullable=False),     # live / instrumented (0 without any)
    Column("reason", SmallInteger, nullable=False),  # 0: covered, else 1 + its index in coverage.REASONS
    Column("live_new_style", Integer, nullable=False),
    PrimaryKeyConstraint("date", "school_id", name="pk_coverage_day"),
    Index("ix_coverage_day_school", "school_id", "date"),
)
coverage_week = Table(
    "coverage_week", metadata,
    Column("monday", Date, nullable=False),
    Column("school_id", Integer, nullable=False),
    Column("spaces", Integer, nullable=False),
    Column("days", Integer, nullable=False),         # school days of the week
    Column("covered_days", Integer, nullable=False),
    Column("inst_share_sum", Float, nullable=False),
    Column("live_share_sum", Float, nullable=False),
    *(Column(f"reason_{i}_days", Integer, nullable=False) for i in (1, 2, 3)),
    *(Column(f"live_ns_{k}", Integer, nullable=False) for k in NEW_STYLE_DAYS),
    PrimaryKeyConstraint("monday", "school_id", name="pk_coverage_week"),
    Index("ix_coverage_week_school", "school_id", "monday"),
)
coverage_new_style = Table(
    "coverage_new_style", metadata,
    Column("date", Date, nullable=False),
    Column("school_id", Integer, nullable=False),
    Column("room_id", Integer, nullable=False),
    PrimaryKeyConstraint("school_id", "date", "room_id", name="pk_coverage_new_style"),
)
coverage_kept = Table(
    "coverage_kept", metadata,
    Column("school_id", Integer, primary_key=True, autoincrement=False),
    Column("kept_from", Date, nullable=False),
    Column("kept_to", Date, nullable=False),
)
