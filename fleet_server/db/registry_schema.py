"""Registry tables: province -> city -> county (GB/T 2260) -> school -> building -> room,
timetables, school calendars and the history of which room each device was in."""
from sqlalchemy import (
    BigInteger, Boolean, CheckConstraint, Column, Date, Float, ForeignKey, Index, Integer,
    PrimaryKeyConstraint, SmallInteger, String, Table, UniqueConstraint,
)

from fleet_server.db.schema import metadata

REGION_LEVELS = ("province", "city", "county")
SCHOOL_STAGES = ("primary", "junior", "senior", "nine_year", "twelve_year", "vocational")
ROOM_TYPES = ("classroom", "lab", "library", "computer_room", "art_music", "gym", "new_style")
CALENDAR_KINDS = ("holiday", "workday")

# DOMAIN.md "Room-usage metrics": school hours default to Mon-Fri 07:30-17:30 Asia/Shanghai.
DEFAULT_DAY_START = "07:30"
DEFAULT_DAY_END = "17:30"
MON_TO_FRI_MASK = 0b0011111      # bit d set = weekday d is a school day (0 = Monday)
SCHOOL_TIMEZONE = "Asia/Shanghai"


def _one_of(column: str, values: tuple[str, ...], name: str) -> CheckConstraint:
    quoted = ", ".join(f"'{v}'" for v in values)
    return CheckConstraint(f"{column} IN ({quoted})", name=name)


regions = Table(
    "regions", metadata,
    Column("code", Integer, primary_key=True, autoincrement=False),   # GB/T 2260 six digits
    Column("level", String(8), nullable=False),
    Column("parent_code", Integer, ForeignKey("regions.code", name="fk_regions_parent")),
    Column("name_zh", String(32), nullable=False),
    Column("name_en", String(64), nullable=False),
    _one_of("level", REGION_LEVELS, "ck_regions_level"),
    Index("ix_regions_parent_code", "parent_code"),
)

schools = Table(
    "schools", metadata,
    Column("id", Integer, primary_key=True),
    Column("code", String(32), nullable=False),
    Column("name", String(128), nullable=False),
    Column("county_code", Integer, ForeignKey("regions.code", name="fk_schools_county"), nullable=False),
    Column("stage", String(16), nullable=False),
    Column("day_start", String(5), nullable=False, default=DEFAULT_DAY_START),   # 'HH:MM' local
    Column("day_end", String(5), nullable=False, default=DEFAULT_DAY_END),
    Column("weekdays_mask", SmallInteger, nullable=False, default=MON_TO_FRI_MASK),
    Column("timezone", String(32), nullable=False, default=SCHOOL_TIMEZONE),
    UniqueConstraint("code", name="uq_schools_code"),
    _one_of("stage", SCHOOL_STAGES, "ck_schools_stage"),
    Index("ix_schools_county_code", "county_code"),
)

buildings = Table(
    "buildings", metadata,
    Column("id", Integer, primary_key=True),
    Column("school_id", Integer, ForeignKey("schools.id", name="fk_buildings_school"), nullable=False),
    Column("code", String(32), nullable=False),
    Column("name", String(64)),
    UniqueConstraint("school_id", "code", name="uq_buildings_school_code"),
)

rooms = Table(
    "rooms", metadata,
    Column("id", Integer, primary_key=True),
    Column("school_id", Integer, ForeignKey("schools.id", name="fk_rooms_school"), nullable=False),
    Column("building_id", Integer, ForeignKey("buildings.id", name="fk_rooms_building")),
    Column("code", String(32), nullable=False),
    Column("name", String(64), nullable=False),
    Column("type", String(16), nullable=False),
    Column("capacity", Integer),                 # seats; NULL = not surveyed
    Column("floor_area_m2", Float),
    Column("new_style", Boolean, nullable=False, default=False),     # 新型教学空间
    # Ceiling sensor lux x lux_factor = desk lux, set at commissioning (DOMAIN.md).
    Column("lux_factor", Float, nullable=False, default=1.0),
    # Counts in the smart-campus coverage denominator (DOMAIN.md "instrumented share").
    Column("teaching_space", Boolean, nullable=False, default=True),
    UniqueConstraint("school_id", "code", name="uq_rooms_school_code"),
    _one_of("type", ROOM_TYPES, "ck_rooms_type"),
)

timetable_periods = Table(
    "timetable_periods", metadata,
    Column("id", Integer, primary_key=True),
    Column("school_id", Integer, ForeignKey("schools.id", name="fk_timetable_school"), nullable=False),
    Column("room_id", Integer, ForeignKey("rooms.id", name="fk_timetable_room"), nullable=False),
    Column("weekday", SmallInteger, nullable=False),       # 0 = Monday .. 6 = Sunday
    Column("start", String(5), nullable=False),            # 'HH:MM' local
    Column("end", String(5), nullable=False),
    Column("label", String(64)),
    UniqueConstraint("room_id", "weekday", "start", name="uq_timetable_room_weekday_start"),
    CheckConstraint("weekday BETWEEN 0 AND 6", name="ck_timetable_weekday"),
    Index("ix_timetable_school", "school_id"),
)

calendar_days = Table(
    "calendar_days", metadata,
    Column("id", Integer, primary_key=True),
    # NULL = applies to every school; a school's own row for the same date wins.
    Column("school_id", Integer, ForeignKey("schools.id", name="fk_calendar_school")),
    Column("date", Date, nullable=False),
    Column("kind", String(8), nullable=False),
    Column("label", String(64)),
    # NULLs are distinct in a unique constraint (SQLite and PostgreSQL), so the
    # all-schools rows are kept unique by the importer, which is their only writer.
    UniqueConstraint("school_id", "date", name="uq_calendar_school_date"),
    _one_of("kind", CALENDAR_KINDS, "ck_calendar_kind"),
    Index("ix_calendar_date", "date"),
)

device_assignments = Table(
    "device_assignments", metadata,
    Column("id", Integer, primary_key=True),
    Column("device_id", String(15), ForeignKey("devices.device_id", name="fk_assignments_device"),
           nullable=False),
    Column("room_id", Integer, ForeignKey("rooms.id", name="fk_assignments_room"), nullable=False),
    Column("from_ts", BigInteger, nullable=False),   # Unix s, inclusive
    Column("to_ts", BigInteger),                     # Unix s, exclusive; NULL = still there
    Index("ix_assignments_device_from", "device_id", "from_ts"),
    Index("ix_assignments_room", "room_id"),
    # Coverage finds the few assignments that start or end inside a period (migration 0011).
    Index("ix_assignments_from_ts", "from_ts"),
    Index("ix_assignments_to_ts", "to_ts"),
)

# Counts kept from the registry for coverage (docs/metrics.md "Coverage counts"), so a
# region's view reads one row per school instead of every room and assignment. Counted
# again for a school, in the transaction that changes them, wherever its rooms or their
# assignments change (fleet_server/metrics/coverage_keep.py; migration 0011).
#
# school_spaces: the school's teaching spaces (no row: none).
school_spaces = Table(
    "school_spaces", metadata,
    Column("school_id", Integer, primary_key=True, autoincrement=False),
    Column("teaching_spaces", Integer, nullable=False),
)

# school_node_spans: per school, how many rooms had a node throughout [from_ts, to_ts):
# each room's assignments merged where they overlap or touch into maximal spans, counted
# by span and by the room's teaching_space flag. A room has a node all through a period
# when one of its spans covers it. to_ts = OPEN_TS: still there.
OPEN_TS = 2 ** 63 - 1
school_node_spans = Table(
    "school_node_spans", metadata,
    Column("school_id", Integer, nullable=False),
    Column("teaching_space", Boolean, nullable=False),
    Column("from_ts", BigInteger, nullable=False),
    Column("to_ts", BigInteger, nullable=False),
    Column("rooms", Integer, nullable=False),
    PrimaryKeyConstraint("school_id", "teaching_space", "from_ts", "to_ts", name="pk_school_node_spans"),
)
