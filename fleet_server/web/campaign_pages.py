"""The OTA campaign page (/fleet/campaigns/{id}) and its pause / resume / abort buttons
(session + CSRF like every form); the fleet page lists recent campaigns."""
from __future__ import annotations

from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, HTTPException, Path, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from fleet_server.api.auth_deps import PrincipalDep
from fleet_server.api.deps import ConnDep
from fleet_server.api.routes import campaigns as campaign_routes
from fleet_server.auth import scoping
from fleet_server.auth.errors import Forbidden
from fleet_server.auth.principal import FIRMWARE_UPLOAD
from fleet_server.campaigns import service as svc
from fleet_server.web import views_campaigns
from fleet_server.web.pages import form_fields
from fleet_server.web.render import page

router = APIRouter(include_in_schema=False)
CampaignId = Annotated[int, Path(ge=1)]


@router.get("/fleet/campaigns/{campaign_id}", response_class=HTMLResponse)
def campaign(request: Request, conn: ConnDep, principal: PrincipalDep, campaign_id: CampaignId,
             error: str | None = None) -> HTMLResponse:
    campaign_routes.fleet_wide(principal)
    try:
        model = views_campaigns.campaign_page(conn, campaign_id)
    except svc.NotFound as e:
        raise HTTPException(404, str(e)) from None
    # Refresh while the campaign moves.
    return page(request, "campaign.html", {**model, "error": error and error[:300],
                                           "can_control": principal.has(FIRMWARE_UPLOAD),
                                           "refresh_s": 5 if model["active"] else None})


@router.post("/fleet/campaigns/{campaign_id}/{action}")
async def campaign_action(request: Request, principal: PrincipalDep, campaign_id: CampaignId,
                          action: str) -> RedirectResponse:
    await form_fields(request)  # the CSRF field was checked with the session
    url = f"/fleet/campaigns/{campaign_id}"
    if action not in ("pause", "resume", "abort"):
        raise HTTPException(404, "no such action")
    with request.app.state.engine.connect() as conn:
        try:
            scoping.require_scope(principal, FIRMWARE_UPLOAD)
            campaign_routes.fleet_wide(principal)
        except Forbidden as e:
            return RedirectResponse(f"{url}?error={quote(str(e)[:300])}", status_code=303)
        except HTTPException as e:
            return RedirectResponse(f"{url}?error={quote(str(e.detail)[:300])}", status_code=303)
        try:
            svc.get(conn, campaign_id)
        except svc.NotFound as e:
            raise HTTPException(404, str(e)) from None   # no page to go back to
        try:
            campaign_routes.act(conn, principal, campaign_id, action)
        except HTTPException as e:
            return RedirectResponse(f"{url}?error={quote(str(e.detail)[:300])}", status_code=303)
    return RedirectResponse(url, status_code=303)
