"""Firmware releases for OTA (docs/ota.md): upload a signed bundle, list releases, and
the downloads nodes make: manifest, signature and files, with Range requests (RFC 9110
14) and a per-download bandwidth cap. Thin: the checks live in firmware_release.store."""
from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path as PathParam, Request
from fastapi.responses import Response, StreamingResponse

from fleet_server.api.auth_deps import require
from fleet_server.api.deps import ConnDep
from fleet_server.auth import audit
from fleet_server.auth.principal import FIRMWARE_UPLOAD, READ, Principal
from fleet_server.firmware_release import store
from fleet_server.firmware_release.build import VERSION_RE, ReleaseError

router = APIRouter(tags=["firmware"])
Version = Annotated[str, PathParam(pattern=VERSION_RE.pattern)]
_RANGE_RE = re.compile(r"^bytes=(\d*)-(\d*)$")
_PIECE = 4096


@router.post("/api/v1/firmware/releases", status_code=201)
async def upload_release(request: Request, principal: Annotated[Principal, require(FIRMWARE_UPLOAD)]) -> dict:
    """Body: the signed bundle as .tar.gz (`campusfleet firmware upload`). The manifest
    signature must verify under one of the server's trusted public keys."""
    settings = request.app.state.settings
    data = await request.body()
    try:
        keys = store.trusted_keys(settings.firmware_trusted_keys)
    except ValueError as e:
        raise HTTPException(500, str(e)) from None

    def add() -> dict:
        with request.app.state.engine.begin() as conn:
            release = store.add_release(conn, bundle_tgz=data, firmware_dir=Path(settings.firmware_dir), keys=keys)
            audit.record(conn, principal, "firmware.upload", ("firmware", release.get("version")),
                         {"bytes": len(data), "manifest_sha256": release.get("manifest_sha256")})
            return release
    try:
        return await asyncio.to_thread(add)
    except store.ReleaseExists as e:
        raise HTTPException(409, str(e)) from None
    except ReleaseError as e:
        raise HTTPException(422, str(e)) from None


@router.get("/api/v1/firmware/releases", dependencies=[require(READ)])
def list_releases(conn: ConnDep) -> list[dict]:
    return store.list_releases(conn)


@router.get("/api/v1/firmware/releases/{version}", dependencies=[require(READ)])
def get_release(conn: ConnDep, request: Request, version: Version) -> dict:
    """The release and the `ota` command args for it, with URLs on this server."""
    release = store.get_release(conn, version)
    if release is None:
        raise HTTPException(404, "no such release")
    release["ota_args"] = store.ota_args(release, str(request.base_url))
    return release


@router.get("/firmware/{version}/{name:path}")
def download(request: Request, version: Version, name: str):
    """A release file (manifest.json, manifest.sig, *.mpy). Range: bytes=a-b gives 206
    with Content-Range; each response is paced to firmware_download_bps."""
    settings = request.app.state.settings
    path = store.release_file(Path(settings.firmware_dir), version, name)
    if path is None:
        raise HTTPException(404, "no such file")
    size = path.stat().st_size
    start, end = 0, size - 1
    status = 200
    header = request.headers.get("range")
    if header:
        m = _RANGE_RE.match(header.strip())
        if m is None or (not m.group(1) and not m.group(2)):
            raise HTTPException(416, "only one range, bytes=a-b", headers={"Content-Range": f"bytes */{size}"})
        if m.group(1):
            start = int(m.group(1))
            end = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
        else:  # bytes=-n: the last n bytes
            start = max(0, size - int(m.group(2)))
        if start >= size or start > end:
            return Response(status_code=416, headers={"Content-Range": f"bytes */{size}"})
        status = 206
    length = end - start + 1
    headers = {"Accept-Ranges": "bytes", "Content-Length": str(length)}
    if status == 206:
        headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    bps = settings.firmware_download_bps

    async def body():
        t0 = time.monotonic()
        sent = 0
        with open(path, "rb") as f:
            f.seek(start)
            while sent < length:
                piece = f.read(min(_PIECE, length - sent))
                if not piece:
                    break
                yield piece
                sent += len(piece)
                if bps:
                    ahead = sent / bps - (time.monotonic() - t0)
                    if ahead > 0:
                        await asyncio.sleep(ahead)

    return StreamingResponse(body(), status_code=status, headers=headers, media_type="application/octet-stream")
