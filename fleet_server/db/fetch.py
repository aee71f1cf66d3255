"""Fetching many rows of plain numbers and dates fast. On PostgreSQL a statement's rows
come through psycopg's binary protocol: a school-week of room-hours (~5,000 rows of ten
numbers and a date) decodes in ~60% of the time the text protocol takes (bench/queries.py,
school usage). The values are the same (doubles travel as their 8 bytes, text as the
shortest repr that reads back to them), the rows plain tuples in the select's column
order. Only for statements whose bound values need no type processing (integers, dates,
strings, floats): the compiled statement's parameters are passed as they are."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, Select


def fetch_all(conn: Connection, stmt: Select) -> Sequence[Any]:
    """The rows, read by position (plain tuples on PostgreSQL, rows elsewhere)."""
    if conn.dialect.name != "postgresql":
        return conn.execute(stmt).all()
    compiled = stmt.compile(dialect=conn.dialect)
    dbapi = conn.connection.dbapi_connection
    assert dbapi is not None
    with dbapi.cursor(binary=True) as cur:
        cur.execute(str(compiled), compiled.params)
        return cur.fetchall()
