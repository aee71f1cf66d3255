"""OTA campaigns API (docs/ota.md "Campaigns"): start a staged rollout of a release,
follow it (per-state counts, per-device states, every transition) and pause, resume or
abort it. Thin: the rules live in fleet_server.campaigns. Campaigns span schools, so
reading them needs an account not confined to a region or school; changing them needs
the firmware scope (operators)."""
from __future__ import annotations

import time
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Path, Query, Request
from pydantic import BaseModel, Field

from fleet_server.api.auth_deps import PrincipalDep, require
from fleet_server.api.deps import ConnDep
from fleet_server.api.routes.metrics import FormatQ, csv_response
from fleet_server.auth import audit
from fleet_server.auth.principal import FIRMWARE_UPLOAD, Principal
from fleet_server.campaigns import model as m, service as svc
from fleet_server.campaigns.targets import BadTarget, Target
from fleet_server.firmware_release.build import VERSION_RE

router = APIRouter(prefix="/api/v1/firmware/campaigns", tags=["firmware"])
CampaignId = Annotated[int, Path(ge=1)]
_CSV: dict[int | str, dict[str, Any]] = {200: {"content": {"text/csv": {"schema": {"type": "string"}}},
                                               "description": "JSON, or with format=csv a CSV"}}


class TargetIn(BaseModel):
    scope: Literal["all", "region", "school", "devices"]
    region: int | None = Field(None, description="GB/T 2260 code of a province, city or county (scope=region)")
    school_id: int | None = Field(None, description="scope=school")
    devices: list[Annotated[str, Field(pattern=r"^cf-[0-9a-f]{12}$")]] | None = Field(
        None, max_length=100_000, description="device ids (scope=devices)")
    percent: float = Field(100.0, gt=0, le=100, description="a share of the target, chosen evenly at random")


class CampaignCreate(BaseModel):
    name: str = Field(min_length=1, max_length=80)
    version: str = Field(pattern=VERSION_RE.pattern, description="an uploaded release")
    target: TargetIn
    waves: list[float] = Field(list(m.DEFAULT_WAVES), min_length=1, max_length=10,
                               description="cumulative percentages of the target, ending at 100")
    success_pct: float = Field(m.DEFAULT_SUCCESS_PCT, ge=0, le=100,
                               description="share of a wave that must confirm before the next wave starts")
    max_failure_pct: float = Field(m.DEFAULT_MAX_FAILURE_PCT, ge=0, le=100,
                                   description="halt once failures exceed this share of the devices sent")
    wave_timeout_s: int = Field(m.DEFAULT_WAVE_TIMEOUT_S, ge=60, le=30 * 86400,
                                description="a device without a result this long after its command has failed")
    command_ttl_s: int = Field(m.DEFAULT_COMMAND_TTL_S, ge=60, le=30 * 86400,
                               description="how long the broker holds the command for a node that is away")


def fleet_wide(principal: Principal) -> None:
    if not principal.unrestricted:
        raise HTTPException(403, "campaigns span schools: this needs an account not confined to a region or school")


@router.post("", status_code=201, responses={409: {"description": "release missing, no devices, or devices busy"}})
def create_campaign(request: Request, conn: ConnDep, body: CampaignCreate,
                    principal: Annotated[Principal, require(FIRMWARE_UPLOAD)]) -> dict:
    """Start a campaign: the target is resolved now, ordered at random and split into
    waves; the engine sends the first wave within seconds."""
    fleet_wide(principal)
    settings = request.app.state.settings
    base_url = settings.public_url or str(request.base_url)
    t = body.target
    target = Target(t.scope, t.region, t.school_id, tuple(t.devices or ()), t.percent)
    try:
        waves = m.check_waves(body.waves)
        campaign = svc.create(conn, name=body.name, version=body.version, target=target, waves=waves,
                              success_pct=body.success_pct, max_failure_pct=body.max_failure_pct,
                              wave_timeout_s=body.wave_timeout_s, command_ttl_s=body.command_ttl_s,
                              base_url=base_url, created_by=principal.username, now_s=time.time())
    except (BadTarget, ValueError) as e:
        raise HTTPException(422, str(e)) from None
    except svc.CampaignError as e:
        raise HTTPException(409, str(e)) from None
    audit.record(conn, principal, "campaign.create", ("campaign", campaign["id"]),
                 {"version": body.version, "target": target.as_json(), "waves": waves, "devices": campaign["devices"]})
    conn.commit()
    return campaign


@router.get("")
def list_campaigns(conn: ConnDep, principal: PrincipalDep,
                   state: Annotated[Literal[m.CAMPAIGN_STATES] | None, Query()] = None,  # type: ignore[valid-type]
                   limit: Annotated[int, Query(ge=1, le=200)] = 50,
                   offset: Annotated[int, Query(ge=0)] = 0) -> dict:
    fleet_wide(principal)
    return svc.list_campaigns(conn, state=state, limit=limit, offset=offset)


@router.get("/{campaign_id}")
def get_campaign(conn: ConnDep, principal: PrincipalDep, campaign_id: CampaignId) -> dict:
    """The campaign with its counts per device state and per wave."""
    fleet_wide(principal)
    try:
        return svc.get(conn, campaign_id)
    except svc.NotFound as e:
        raise HTTPException(404, str(e)) from None


@router.get("/{campaign_id}/devices", response_model=None, responses=_CSV)
def campaign_devices(conn: ConnDep, principal: PrincipalDep, campaign_id: CampaignId,
                     state: Annotated[Literal[m.DEVICE_STATES] | None, Query()] = None,  # type: ignore[valid-type]
                     wave: Annotated[int | None, Query(ge=1)] = None,
                     limit: Annotated[int, Query(ge=1, le=1000)] = 100, offset: Annotated[int, Query(ge=0)] = 0,
                     format: FormatQ = "json") -> Any:
    """Each device's state in the campaign (pending, sent, downloading, verified,
    installed, confirmed, skipped, rolled_back, failed with its reason, cancelled)."""
    fleet_wide(principal)
    try:
        page = svc.devices(conn, campaign_id, state=state, wave=wave, limit=None if format == "csv" else limit,
                           offset=0 if format == "csv" else offset)
    except svc.NotFound as e:
        raise HTTPException(404, str(e)) from None
    if format == "csv":
        return csv_response(page["items"], f"campaign-{campaign_id}-devices.csv")
    return page


@router.get("/{campaign_id}/events", response_model=None, responses=_CSV)
def campaign_events(conn: ConnDep, principal: PrincipalDep, campaign_id: CampaignId,
                    device_id: Annotated[str | None, Query(pattern=r"^cf-[0-9a-f]{12}$")] = None,
                    after_id: Annotated[int, Query(ge=0)] = 0, limit: Annotated[int, Query(ge=1, le=5000)] = 500,
                    format: FormatQ = "json") -> Any:
    """Every state transition, oldest first (device_id null: the campaign's own)."""
    fleet_wide(principal)
    try:
        items = svc.events(conn, campaign_id, device_id=device_id, after_id=after_id,
                           limit=None if format == "csv" else limit)
    except svc.NotFound as e:
        raise HTTPException(404, str(e)) from None
    if format == "csv":
        return csv_response(items, f"campaign-{campaign_id}-events.csv")
    return items


def act(conn, principal: Principal, campaign_id: int, action: str) -> dict:
    fleet_wide(principal)
    try:
        campaign = svc.set_state(conn, campaign_id, action, by=principal.username, now_s=time.time())
    except svc.NotFound as e:
        raise HTTPException(404, str(e)) from None
    except svc.CampaignError as e:
        raise HTTPException(409, str(e)) from None
    audit.record(conn, principal, f"campaign.{action}", ("campaign", campaign_id), None)
    conn.commit()
    return campaign


@router.post("/{campaign_id}/pause")
def pause(conn: ConnDep, campaign_id: CampaignId, principal: Annotated[Principal, require(FIRMWARE_UPLOAD)]) -> dict:
    """No new commands are sent; updates under way finish and are tracked."""
    return act(conn, principal, campaign_id, "pause")


@router.post("/{campaign_id}/resume")
def resume(conn: ConnDep, campaign_id: CampaignId, principal: Annotated[Principal, require(FIRMWARE_UPLOAD)]) -> dict:
    return act(conn, principal, campaign_id, "resume")


@router.post("/{campaign_id}/abort")
def abort(conn: ConnDep, campaign_id: CampaignId, principal: Annotated[Principal, require(FIRMWARE_UPLOAD)]) -> dict:
    """Final: devices not yet sent are cancelled; updates under way finish and are tracked."""
    return act(conn, principal, campaign_id, "abort")
