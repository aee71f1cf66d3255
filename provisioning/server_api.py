"""The fleet server's REST API as the provisioning CLI uses it (standard library HTTP,
so the CLI installs without the server's dependencies). The technician's token goes
in an `Authorization: Bearer` header (the server requires scope devices:register)."""
from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from provisioning.errors import ProvisionError


class FleetApi:
    def __init__(self, base_url: str, token: str | None = None, timeout_s: float = 15.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout_s = timeout_s

    def _call(self, method: str, path: str, body: dict | None = None) -> tuple[int, Any]:
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        req = urllib.request.Request(self.base_url + path, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as r:
                return r.status, json.loads(r.read() or b"null")
        except urllib.error.HTTPError as e:
            try:
                detail = json.loads(e.read()).get("detail")
            except (ValueError, AttributeError):
                detail = e.reason
            if isinstance(detail, list):   # FastAPI validation errors
                detail = "; ".join(f"{'.'.join(map(str, d.get('loc', [])[1:]))}: {d.get('msg')}" for d in detail)
            return e.code, {"detail": detail}
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise ProvisionError(f"the fleet server at {self.base_url} is unreachable: {reason}") from None

    def register(self, registration: dict) -> dict:
        status, body = self._call("POST", "/api/v1/provisioning/register", registration)
        if status != 200:
            raise ProvisionError(f"the server refused the registration ({status}): {body.get('detail')}")
        return body

    def device(self, device_id: str) -> dict | None:
        status, body = self._call("GET", f"/api/v1/devices/{device_id}")
        if status == 404:
            return None
        if status != 200:
            raise ProvisionError(f"the server answered {status} for {device_id}: {body.get('detail')}")
        return body
