"""The server's release store: checks an uploaded bundle (signature against the trusted
public keys, every file against the manifest), keeps its files under the firmware
folder and its row in `firmware_releases`, and builds the `ota` command's args."""
from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import time
from pathlib import Path

from sqlalchemy import Connection, insert, select

from fleet_server.db.firmware_schema import firmware_releases
from fleet_server.firmware_release.build import MANIFEST, SIGNATURE, ReleaseError, read_bundle, unpack
from fleet_server.firmware_release.keys import signed_by


class ReleaseExists(ReleaseError):
    pass


def trusted_keys(setting: str) -> list[str]:
    keys = [k.strip().lower() for k in setting.split(",") if k.strip()]
    for k in keys:
        if len(k) != 64 or k.strip("0123456789abcdef"):
            raise ValueError(f"firmware_trusted_keys: {k[:16]}... is not 64 hex digits")
    return keys


def add_release(conn: Connection, *, bundle_tgz: bytes, firmware_dir: Path, keys: list[str]) -> dict:
    """Verifies and stores one signed bundle; returns its public row. Raises
    ReleaseError (bad bundle or signature) or ReleaseExists."""
    if not keys:
        raise ReleaseError("the server has no trusted release keys (CAMPUSFLEET_FIRMWARE_TRUSTED_KEYS)")
    firmware_dir = Path(firmware_dir)
    firmware_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=firmware_dir) as tmp:
        bundle = unpack(bundle_tgz, Path(tmp) / "bundle")
        raw, manifest, sig = read_bundle(bundle)
        if not sig:
            raise ReleaseError("the bundle is not signed (no manifest.sig): campusfleet firmware sign")
        key = signed_by(raw, sig, keys)
        if key is None:
            raise ReleaseError("bad signature: the manifest is not signed by a trusted release key")
        version = manifest["version"]
        if get_release(conn, version) is not None or (firmware_dir / version).exists():
            raise ReleaseExists(f"release {version} exists; a version is never replaced")
        listed = {f["name"] for f in manifest["files"]} | {MANIFEST, SIGNATURE}
        for p in bundle.rglob("*"):
            if p.is_file() and p.relative_to(bundle).as_posix() not in listed:
                p.unlink()  # only what the signature covers is served
        row = {"version": version, "manifest_sha256": hashlib.sha256(raw).hexdigest(), "manifest_size": len(raw),
               "signature": sig, "public_key": key, "boards": json.dumps(manifest["boards"]),
               "min_micropython": str(manifest.get("min_micropython", "")),
               "files": len(manifest["files"]), "total_bytes": sum(f["size"] for f in manifest["files"]),
               "uploaded_s": time.time()}
        conn.execute(insert(firmware_releases).values(**row))
        shutil.move(str(bundle), str(firmware_dir / version))
    return public(row)


def public(row) -> dict:
    r = dict(row._mapping) if hasattr(row, "_mapping") else dict(row)
    r["boards"] = json.loads(r["boards"])
    return r


def get_release(conn: Connection, version: str) -> dict | None:
    row = conn.execute(select(firmware_releases).where(firmware_releases.c.version == version)).first()
    return public(row) if row is not None else None


def list_releases(conn: Connection) -> list[dict]:
    rows = conn.execute(select(firmware_releases).order_by(firmware_releases.c.uploaded_s.desc()))
    return [public(r) for r in rows]


def ota_args(release: dict, base_url: str) -> dict:
    """The `ota` command's args (PROTOCOL.md) for a release served at base_url."""
    return {"url": f"{base_url.rstrip('/')}/firmware/{release['version']}/{MANIFEST}",
            "version": release["version"], "sha256": release["manifest_sha256"],
            "size": release["manifest_size"], "sig": release["signature"]}


def release_file(firmware_dir: Path, version: str, name: str) -> Path | None:
    """The stored file, or None; never a path outside the release folder."""
    try:
        root = (Path(firmware_dir) / version).resolve()
        p = (root / name).resolve()
        if root not in p.parents or not p.is_file():
            return None
    except (ValueError, OSError):   # a NUL byte in the name, a name too long for the file system
        return None
    return p
