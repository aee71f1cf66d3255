"""JSON responses for the report endpoints. Their replies are plain dicts of str, int,
float, bool and lists (dates as ISO strings, made by the metrics modules), up to a few
thousand values for a province; FastAPI's jsonable_encoder walks such a reply value by
value before encoding it (~10 ms for a province coverage reply, bench/queries.py), while
json.dumps encodes it in ~1 ms. A date or datetime left in a reply is written as
jsonable_encoder would write it (ISO 8601)."""
from __future__ import annotations

import json
from datetime import date, datetime
from typing import Any

from fastapi.responses import JSONResponse


def _default(value: Any) -> Any:
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


class ReportJSON(JSONResponse):
    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":"),
                          default=_default).encode("utf-8")
