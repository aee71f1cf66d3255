"""Alerts API: list alerts (filtered, paginated, or as CSV) and acknowledge one. Thin:
parse, call fleet_server.alerts.service, shape the reply. Times are ISO 8601 with the
school's UTC offset."""
import time
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Path, Query
from pydantic import BaseModel, Field

from fleet_server.alerts import service as alert_svc
from fleet_server.alerts.rules import DEFINITIONS
from fleet_server.api.auth_deps import PrincipalDep, require
from fleet_server.api.deps import ConnDep
from fleet_server.auth import audit, scoped_services as scoped
from fleet_server.auth.principal import ALERTS_ACK, Principal
from fleet_server.auth.scoping import check_school
from fleet_server.api.routes.metrics import FormatQ, csv_response

router = APIRouter(prefix="/api/v1", tags=["alerts"])
Kind = Literal["offline", "co2_breach", "sensor_failed"]


class AlertPublic(BaseModel):
    id: int
    kind: Kind
    severity: Literal["warning", "critical"]
    state: Literal["open", "acked", "resolved"] = Field(description=DEFINITIONS["state"])
    device_id: str | None
    room_id: int | None
    room_code: str | None
    room_name: str | None
    school_id: int | None
    school_name: str | None
    opened_at: str = Field(description="when the condition began to hold (ISO 8601)")
    last_seen_at: str = Field(description="the latest time it was seen to hold")
    resolved_at: str | None
    acked_at: str | None
    acked_by: str | None
    ack_note: str | None
    detail: dict[str, Any] = Field(description="offline: {offline_since, cause, school_minutes_offline}; "
                                               "co2_breach: {peak_co2_ppm, threshold_ppm, windows, start, end, "
                                               "ended}; sensor_failed: {sensor, state}")


class AlertPage(BaseModel):
    total: int
    limit: int
    offset: int
    items: list[AlertPublic]


class AckBody(BaseModel):
    by: str = Field(min_length=1, max_length=64, description="who acknowledges (name or account)")
    note: str | None = Field(default=None, max_length=500)


@router.get("/alerts", response_model=None, responses={
    200: {"model": AlertPage, "content": {"text/csv": {"schema": {"type": "string"}}},
          "description": "JSON page, newest first; with format=csv every matching alert as a streamed "
                         "CSV (UTF-8 with BOM, detail as JSON text)"}})
def list_alerts(conn: ConnDep, principal: PrincipalDep,
                state: Annotated[Literal["open", "acked", "resolved", "all"],
                                 Query(description=DEFINITIONS["state"])] = "all",
                kind: Annotated[Kind | None, Query(description="offline | co2_breach | sensor_failed")] = None,
                school_id: int | None = None,
                region: Annotated[int | None, Query(ge=100000, le=999999,
                                                    description="GB/T 2260 code: province, city or county")] = None,
                device_id: Annotated[str | None, Query(pattern=r"^cf-[0-9a-f]{12}$")] = None,
                format: FormatQ = "json",
                limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                offset: Annotated[int, Query(ge=0)] = 0) -> Any:
    """Alerts: a node offline for more than 30 minutes of school hours, a room's CO2
    over 1500 ppm while occupied (one per episode, with its peak), a failed sensor."""
    try:
        school_id, counties = scoped.alert_filters(conn, principal, school_id=school_id, region=region)
    except LookupError as e:
        raise HTTPException(404, str(e)) from None
    if format == "csv":
        rows = alert_svc.alert_rows(conn, state=state, kind=kind, school_id=school_id, counties=counties,
                                    device_id=device_id)
        return csv_response(rows, f"alerts-{state}.csv")
    return alert_svc.list_alerts(conn, state=state, kind=kind, school_id=school_id, counties=counties,
                                 device_id=device_id, limit=limit, offset=offset)


@router.post("/alerts/{alert_id}/ack", response_model=AlertPublic, responses={404: {"description": "no such alert"}})
def ack_alert(conn: ConnDep, alert_id: Annotated[int, Path(ge=1)], body: AckBody,
              principal: Annotated[Principal, require(ALERTS_ACK)]) -> Any:
    """Acknowledge an alert. Idempotent: acknowledging again keeps the first ack and
    returns the alert unchanged. An acknowledged alert still resolves by itself."""
    found = alert_svc.get_alert(conn, alert_id)
    if found is not None and found["school_id"] is not None:
        check_school(conn, principal, found["school_id"])
    result = alert_svc.ack(conn, alert_id, by=body.by, note=body.note, now_s=time.time())
    if result is None:
        raise HTTPException(404, f"no alert {alert_id}")
    audit.record(conn, principal, "alert.ack", ("alert", alert_id), {"by": body.by, "note": body.note})
    conn.commit()
    return result
