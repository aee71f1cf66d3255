"""coverage_day, coverage_week, coverage_new_style, coverage_kept: coverage judged per
school and school day and ISO week, kept by the rollup job's coverage keeper
(fleet_server/metrics/coverage_kept.py). Created empty: the keeper fills them in the
background, and until it has, reports judge each school at request time as before.

Revision ID: 0013
Revises: 0012
"""
import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "coverage_day",
        sa.Column("date", sa.Date, nullable=False),
        sa.Column("school_id", sa.Integer, nullable=False),
        sa.Column("spaces", sa.Integer, nullable=False),
        sa.Column("instrumented", sa.Integer, nullable=False),
        sa.Column("live", sa.Integer, nullable=False),
        sa.Column("offline", sa.Integer, nullable=False),
        sa.Column("inst_share", sa.Float, nullable=False),
        sa.Column("live_share", sa.Float, nullable=False),
        sa.Column("reason", sa.SmallInteger, nullable=False),
        sa.Column("live_new_style", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("date", "school_id", name="pk_coverage_day"),
    )
    op.create_index("ix_coverage_day_school", "coverage_day", ["school_id", "date"])
    op.create_table(
        "coverage_week",
        sa.Column("monday", sa.Date, nullable=False),
        sa.Column("school_id", sa.Integer, nullable=False),
        sa.Column("spaces", sa.Integer, nullable=False),
        sa.Column("days", sa.Integer, nullable=False),
        sa.Column("covered_days", sa.Integer, nullable=False),
        sa.Column("inst_share_sum", sa.Float, nullable=False),
        sa.Column("live_share_sum", sa.Float, nullable=False),
        *(sa.Column(f"reason_{i}_days", sa.Integer, nullable=False) for i in (1, 2, 3)),
        *(sa.Column(f"live_ns_{k}", sa.Integer, nullable=False) for k in range(1, 8)),
        sa.PrimaryKeyConstraint("monday", "school_id", name="pk_coverage_week"),
    )
    op.create_index("ix_coverage_week_school", "coverage_week", ["school_id", "monday"])
    op.create_table(
        "coverage_new_style",
        sa.Column("date", sa.Date, nullable=False),
        sa.Column("school_id", sa.Integer, nullable=False),
        sa.Column("room_id", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("school_id", "date", "room_id", name="pk_coverage_new_style"),
    )
    op.create_table(
        "coverage_kept",
        sa.Column("school_id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("kept_from", sa.Date, nullable=False),
        sa.Column("kept_to", sa.Date, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("coverage_kept")
    op.drop_table("coverage_new_style")
    op.drop_index("ix_coverage_week_school", table_name="coverage_week")
    op.drop_table("coverage_week")
    op.drop_index("ix_coverage_day_school", table_name="coverage_day")
    op.drop_table("coverage_day")
