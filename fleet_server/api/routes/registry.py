"""Registry API: regions, schools, rooms, CSV import and device room assignment.
Thin: parse, call fleet_server.registry, shape the reply."""
import time
from contextlib import asynccontextmanager
from email.parser import BytesParser
from email.policy import HTTP
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from fleet_server.api.auth_deps import PrincipalDep, require
from fleet_server.api.deps import ConnDep
from fleet_server.auth import audit, scoped_services as scoped
from fleet_server.auth.principal import DEVICES_ASSIGN, REGISTRY_IMPORT, Principal
from fleet_server.auth.scoping import check_device, check_room
from fleet_server.api.routes.devices import DeviceId
from fleet_server.registry import service as svc
from fleet_server.registry.importer import CsvDecodeError, decode_csv_bytes, import_csv

MAX_IMPORT_BYTES = 32 * 1024 * 1024    # a province school list is a few MB; timetables more
MAX_ERRORS_SHOWN = 1000                # error_count still says how many there were
CSV_TYPES = {"text/csv", "text/plain", "application/csv", "application/vnd.ms-excel", "application/octet-stream"}


@asynccontextmanager
async def _regions_at_start(app: FastAPI):
    # Regions are reference data shipped with the code and every school import checks
    # county codes against them, so they are loaded (idempotently) when the app starts.
    # Runs inside the app's own lifespan, after it has opened and migrated the database.
    with app.state.engine.begin() as conn:
        svc.load_regions(conn)
    yield


router = APIRouter(tags=["registry"], lifespan=_regions_at_start)


# -- CSV upload body ------------------------------------------------------------------

def _multipart_file(content_type: str, body: bytes) -> bytes:
    """The `file` part of a multipart/form-data body (stdlib email parser: the server
    does not depend on python-multipart)."""
    msg = BytesParser(policy=HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body)
    if not msg.is_multipart():
        raise HTTPException(400, "malformed multipart/form-data body")
    parts = list(msg.iter_parts())
    chosen = next((p for p in parts if p.get_param("name", header="content-disposition") == "file"), None)
    if chosen is None and len(parts) == 1:
        chosen = parts[0]
    if chosen is None:
        raise HTTPException(400, "multipart body has no form field named 'file'")
    payload = chosen.get_payload(decode=True)
    return payload if isinstance(payload, bytes) else b""


async def csv_body(request: Request) -> str:
    """The CSV text from a text/csv body or a multipart upload, decoded (UTF-8, or
    GB18030 as Chinese Excel saves it, or the charset the client names)."""
    declared = int(request.headers.get("content-length") or 0)
    if declared > MAX_IMPORT_BYTES:
        raise HTTPException(413, f"CSV larger than {MAX_IMPORT_BYTES // 2**20} MiB; split the file")
    body = await request.body()
    if len(body) > MAX_IMPORT_BYTES:
        raise HTTPException(413, f"CSV larger than {MAX_IMPORT_BYTES // 2**20} MiB; split the file")
    content_type = request.headers.get("content-type", "")
    media_type = content_type.split(";")[0].strip().lower()
    if media_type == "multipart/form-data":
        body = _multipart_file(content_type, body)
    elif media_type and media_type not in CSV_TYPES:
        raise HTTPException(415, f"send the CSV as text/csv or as a multipart 'file' field, not {media_type}")
    charset = next((p.split("=", 1)[1].strip().strip('"') for p in content_type.split(";")[1:]
                    if p.strip().lower().startswith("charset=")), None)
    if charset and media_type != "multipart/form-data":
        try:
            return body.decode(charset).lstrip("\ufeff")
        except (LookupError, UnicodeDecodeError) as e:
            raise HTTPException(400, f"body is not valid {charset}: {e}") from None
    try:
        return decode_csv_bytes(body)
    except CsvDecodeError as e:
        raise HTTPException(400, str(e)) from None


CsvBody = Annotated[str, Depends(csv_body)]
ImportKind = Literal["schools", "rooms", "timetable", "calendar"]
_CSV_REQUEST_BODY = {"requestBody": {"required": True, "content": {
    "text/csv": {"schema": {"type": "string"}},
    "multipart/form-data": {"schema": {"type": "object", "required": ["file"],
                                       "properties": {"file": {"type": "string", "format": "binary"}}}},
}}}


class ImportCounts(BaseModel):
    kind: str
    rows: int
    inserted: int
    updated: int
    unchanged: int
    buildings_inserted: int | None = None
    buildings_updated: int | None = None


class ImportErrors(BaseModel):
    detail: str
    kind: str
    error_count: int
    errors: list[dict[str, Any]] = Field(description="{line, column, message}; header = line 1")


@router.post("/api/v1/import/{kind}", response_model=ImportCounts, response_model_exclude_none=True,
             responses={422: {"model": ImportErrors, "description": "rows with errors; nothing imported"}},
             openapi_extra=_CSV_REQUEST_BODY)
def import_file(conn: ConnDep, kind: ImportKind, text: CsvBody,
                principal: Annotated[Principal, require(REGISTRY_IMPORT)]) -> Any:
    """Import a CSV of schools, rooms, timetable periods or calendar days (columns in
    docs/registry.md). All rows are checked first; any error and nothing is written.
    Importing the same file again changes nothing."""
    result = import_csv(conn, kind, text)
    if not result.ok:
        conn.rollback()
        n = len(result.errors)
        return JSONResponse(status_code=422, content={
            "detail": f"{n} error{'s' if n != 1 else ''} in the {kind} file; nothing was imported",
            "kind": kind, "error_count": n,
            "errors": [e.as_dict() for e in result.errors[:MAX_ERRORS_SHOWN]]})
    audit.record(conn, principal, "registry.import", ("import", kind), result.as_dict())
    conn.commit()
    return result.as_dict()


# -- regions, schools, rooms ----------------------------------------------------------

@router.get("/api/v1/regions")
def list_regions(conn: ConnDep, level: Literal["province", "city", "county"] | None = None,
                 parent: Annotated[int | None, Query(description="GB/T 2260 code of the parent region")] = None
                 ) -> list[dict]:
    """Province, cities and counties with their GB/T 2260 codes."""
    return svc.list_regions(conn, level=level, parent=parent)


@router.get("/api/v1/regions/{code}")
def get_region(conn: ConnDep, code: Annotated[int, Path(ge=100000, le=999999)]) -> dict:
    region = svc.get_region(conn, code)
    if region is None:
        raise HTTPException(404, f"no region {code}")
    return region


class SchoolPage(BaseModel):
    total: int
    limit: int
    offset: int
    items: list[dict[str, Any]]


@router.get("/api/v1/schools", response_model=SchoolPage)
def list_schools(conn: ConnDep, principal: PrincipalDep, county: Annotated[int | None, Query(description="county GB/T 2260 code")] = None,
                 city: Annotated[int | None, Query(description="city GB/T 2260 code")] = None,
                 limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                 offset: Annotated[int, Query(ge=0)] = 0) -> dict:
    total, items = scoped.list_schools(conn, principal, county=county, city=city, limit=limit, offset=offset)
    return {"total": total, "limit": limit, "offset": offset, "items": items}


@router.get("/api/v1/schools/{school_id}")
def get_school(conn: ConnDep, principal: PrincipalDep, school_id: int) -> dict:
    school = scoped.get_school(conn, principal, school_id)
    if school is None:
        raise HTTPException(404, f"no school {school_id}")
    return school


@router.get("/api/v1/schools/{school_id}/rooms")
def list_rooms(conn: ConnDep, principal: PrincipalDep, school_id: int) -> list[dict]:
    if scoped.get_school(conn, principal, school_id) is None:
        raise HTTPException(404, f"no school {school_id}")
    return svc.list_rooms(conn, school_id)


# -- device room assignment -----------------------------------------------------------

class RoomAssignment(BaseModel):
    room_id: int | None = Field(description="room the device is now in; null takes it out of service")
    from_ts: int | None = Field(None, ge=0, description="Unix s it is there from (default: now); "
                                "may be back-dated, not before its previous move")


@router.put("/api/v1/devices/{device_id}/room")
def assign_room(conn: ConnDep, device_id: DeviceId, body: RoomAssignment,
                principal: Annotated[Principal, require(DEVICES_ASSIGN)]) -> dict:
    """Assign or move a device. Its earlier windows keep the room it was in then.
    A school admin moves devices within its school (or takes in an unassigned one)."""
    check_device(conn, principal, device_id)
    if body.room_id is not None:
        check_room(conn, principal, body.room_id)
    at_ts = body.from_ts if body.from_ts is not None else int(time.time())
    try:
        before = svc.current_assignment(conn, device_id)
        assignment = svc.assign_device(conn, device_id, body.room_id, at_ts)
        audit.record(conn, principal, "device.assign", ("device", device_id),
                     {"from_room_id": before["room_id"], "room_id": body.room_id, "from_ts": at_ts})
    except svc.NotFound as e:
        raise HTTPException(404, str(e)) from None
    except svc.Conflict as e:
        raise HTTPException(409, str(e)) from None
    conn.commit()
    return assignment


@router.get("/api/v1/devices/{device_id}/assignments")
def device_assignments(conn: ConnDep, principal: PrincipalDep, device_id: DeviceId) -> dict:
    """Where the device is now and every room it has been in, oldest first."""
    check_device(conn, principal, device_id)
    return {**svc.current_assignment(conn, device_id), "history": svc.assignment_history(conn, device_id)}
