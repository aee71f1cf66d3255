"""Coverage counts kept from the registry: school_spaces (teaching spaces per school),
school_node_spans (per school, rooms with a node over each span of time), new_style_day
(room_day's in-school seconds of the new-style teaching spaces), and indexes on
device_assignments' from_ts and to_ts; all filled here from the existing rows.

Revision ID: 0011
Revises: 0010
"""
from collections import Counter, defaultdict

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

# Frozen copies of fleet_server/db/registry_schema.py OPEN_TS and of
# fleet_server/metrics/coverage_keep.py merge_spans at this revision.
OPEN_TS = 2 ** 63 - 1

_rooms = sa.table("rooms", sa.column("id", sa.Integer), sa.column("school_id", sa.Integer),
                  sa.column("teaching_space", sa.Boolean), sa.column("new_style", sa.Boolean))
_assignments = sa.table("device_assignments", sa.column("room_id", sa.Integer),
                        sa.column("from_ts", sa.BigInteger), sa.column("to_ts", sa.BigInteger))
_room_day = sa.table("room_day", sa.column("room_id", sa.Integer), sa.column("date", sa.Date),
                     sa.column("school_id", sa.Integer), sa.column("in_school_observed_s", sa.Float))


def _merge_spans(intervals):
    out = []
    for f, t in sorted((f, OPEN_TS if t is None else t) for f, t in intervals):
        if t <= f:
            continue
        if out and f <= out[-1][1]:
            out[-1][1] = max(out[-1][1], t)
        else:
            out.append([f, t])
    return [(f, t) for f, t in out]


def upgrade() -> None:
    op.create_index("ix_assignments_from_ts", "device_assignments", ["from_ts"])
    op.create_index("ix_assignments_to_ts", "device_assignments", ["to_ts"])
    spaces = op.create_table(
        "school_spaces",
        sa.Column("school_id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("teaching_spaces", sa.Integer, nullable=False),
    )
    spans = op.create_table(
        "school_node_spans",
        sa.Column("school_id", sa.Integer, nullable=False),
        sa.Column("teaching_space", sa.Boolean, nullable=False),
        sa.Column("from_ts", sa.BigInteger, nullable=False),
        sa.Column("to_ts", sa.BigInteger, nullable=False),
        sa.Column("rooms", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("school_id", "teaching_space", "from_ts", "to_ts", name="pk_school_node_spans"),
    )
    new_style = op.create_table(
        "new_style_day",
        sa.Column("room_id", sa.Integer, nullable=False),
        sa.Column("date", sa.Date, nullable=False),
        sa.Column("school_id", sa.Integer, nullable=False),
        sa.Column("in_school_observed_s", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("room_id", "date", name="pk_new_style_day"),
    )
    conn = op.get_bind()
    r, a, rd = _rooms.c, _assignments.c, _room_day.c
    conn.execute(sa.insert(spaces).from_select(
        ["school_id", "teaching_spaces"],
        sa.select(r.school_id, sa.func.count()).where(r.teaching_space.is_(True)).group_by(r.school_id)))
    per_room, room_of = defaultdict(list), {}
    for room_id, school_id, teaching, f, t in conn.execute(
            sa.select(r.id, r.school_id, r.teaching_space, a.from_ts, a.to_ts)
            .select_from(_assignments.join(_rooms, r.id == a.room_id))):
        per_room[room_id].append((f, t))
        room_of[room_id] = (school_id, bool(teaching))
    counts = Counter()
    for room_id, intervals in per_room.items():
        school_id, teaching = room_of[room_id]
        for f, t in _merge_spans(intervals):
            counts[(school_id, teaching, f, t)] += 1
    rows = [{"school_id": s, "teaching_space": ts, "from_ts": f, "to_ts": t, "rooms": n}
            for (s, ts, f, t), n in sorted(counts.items())]
    for i in range(0, len(rows), 5000):
        conn.execute(sa.insert(spans), rows[i:i + 5000])
    conn.execute(sa.insert(new_style).from_select(
        ["room_id", "date", "school_id", "in_school_observed_s"],
        sa.select(rd.room_id, rd.date, rd.school_id, rd.in_school_observed_s)
        .select_from(_room_day.join(_rooms, r.id == rd.room_id))
        .where(r.new_style.is_(True), r.teaching_space.is_(True))))
    # Built after the fill: faster than kept up row by row.
    op.create_index("ix_new_style_day_date_school", "new_style_day",
                    ["date", "school_id", "room_id", "in_school_observed_s"])
    if conn.dialect.name == "postgresql":     # plans for the first reports, before autovacuum
        op.execute("ANALYZE school_spaces, school_node_spans, new_style_day, device_assignments")


def downgrade() -> None:
    op.drop_index("ix_new_style_day_date_school", table_name="new_style_day")
    op.drop_table("new_style_day")
    op.drop_table("school_node_spans")
    op.drop_table("school_spaces")
    op.drop_index("ix_assignments_to_ts", table_name="device_assignments")
    op.drop_index("ix_assignments_from_ts", table_name="device_assignments")
