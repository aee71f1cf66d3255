"""Campaign views for the fleet page (recent campaigns with their counts) and the
campaign page (waves, per-device states, every transition). Reads through
fleet_server.campaigns.service, as the API does, so the pages show the API's figures."""
from __future__ import annotations

from typing import Any

from sqlalchemy import Connection

from fleet_server.campaigns import model as m, service as svc

RECENT = 10
DEVICES_SHOWN = 1000
EVENTS_SHOWN = 2000
# Shapes beside colours, so a state never depends on colour alone (issue 5, accessibility).
MARKS = {m.PENDING: "○", m.SENT: "◔", m.DOWNLOADING: "◑", m.VERIFIED: "◕", m.INSTALLED: "◕",
         m.CONFIRMED: "✓", m.SKIPPED: "✓", m.ROLLED_BACK: "↺", m.FAILED: "✗", m.CANCELLED: "–"}


def recent(conn: Connection) -> list[dict[str, Any]]:
    return svc.list_campaigns(conn, limit=RECENT)["items"]


def campaign_page(conn: Connection, campaign_id: int) -> dict[str, Any]:
    """Raises service.NotFound."""
    c = svc.get(conn, campaign_id)
    return {"c": c, "devices": svc.devices(conn, campaign_id, limit=DEVICES_SHOWN)["items"],
            "events": svc.events(conn, campaign_id, limit=EVENTS_SHOWN), "marks": MARKS,
            "states": m.DEVICE_STATES, "active": c["state"] in m.ACTIVE}
