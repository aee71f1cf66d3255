"""Builds a firmware release bundle: every firmware module except main.py (the factory
boot loader, which OTA never replaces) compiled with mpy-cross, plus manifest.json
(version, files with size and SHA-256, minimum MicroPython, .mpy version, boards).

The manifest is signed as its canonical JSON bytes (keys.py); canonical = sorted keys,
no spaces, UTF-8, which is exactly the manifest.json file in a bundle."""
from __future__ import annotations

import hashlib
import io
import json
import re
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

from fleet_server.virtual_nodes import FIRMWARE_DIR, firmware_files, mpy_cross_binary

MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
# Board names (config.json "board"), chips (boards/*.json "chip") or platforms the
# release runs on; the node refuses a release that names none of its own.
DEFAULT_BOARDS = ("esp32", "esp32s3", "esp32c3", "sim")
DEFAULT_MIN_MICROPYTHON = "1.23.0"
VERSION_RE = re.compile(r"^[0-9A-Za-z][0-9A-Za-z.+-]{0,31}$")
_FW_VERSION_RE = re.compile(r'^FW_VERSION = const\("[^"]*"\)$', re.M)
# Never part of a release: the boot loader, and the host-only files in firmware/.
EXCLUDED = ("main.py",)


class ReleaseError(ValueError):
    pass


def canonical(manifest: dict) -> bytes:
    return json.dumps(manifest, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def mpy_version(mpy_cross: str | None = None) -> int:
    """The .mpy major version mpy-cross emits ('... emitting mpy v6.3' -> 6)."""
    out = subprocess.run([mpy_cross or mpy_cross_binary(), "--version"], capture_output=True, text=True).stdout
    m = re.search(r"mpy v(\d+)", out)
    if not m:
        raise ReleaseError(f"cannot tell the .mpy version from mpy-cross --version: {out.strip()!r}")
    return int(m.group(1))


def build_release(version: str, out_dir: Path, *, source_dir: Path = FIRMWARE_DIR,
                  boards: tuple[str, ...] | list[str] = DEFAULT_BOARDS,
                  min_micropython: str = DEFAULT_MIN_MICROPYTHON, mpy_cross: str | None = None) -> Path:
    """Compiles source_dir into out_dir (a new folder: the bundle) and writes its
    manifest; node.py's FW_VERSION is stamped with version, so status reports it."""
    if not VERSION_RE.match(version):
        raise ReleaseError("version: 1-32 characters of 0-9 A-Z a-z . + -, e.g. 0.3.0")
    if not re.match(r"^\d+\.\d+(\.\d+)?$", min_micropython):
        raise ReleaseError("min MicroPython version looks like 1.23 or 1.23.0")
    if not boards:
        raise ReleaseError("a release names at least one board")
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise ReleaseError(f"{out_dir} exists and is not empty")
    out_dir.mkdir(parents=True, exist_ok=True)
    tool = mpy_cross or mpy_cross_binary()
    files = []
    stamped = False
    with tempfile.TemporaryDirectory() as tmp:
        for src in firmware_files(source_dir):
            rel = src.relative_to(source_dir)
            if rel.as_posix() in EXCLUDED:
                continue
            text = src.read_text()
            if rel.as_posix() == "node.py":
                text, n = _FW_VERSION_RE.subn(f'FW_VERSION = const("{version}")', text)
                if n != 1:
                    raise ReleaseError("node.py has no FW_VERSION = const(\"...\") line to stamp")
                stamped = True
            staged = Path(tmp) / rel
            staged.parent.mkdir(parents=True, exist_ok=True)
            staged.write_text(text)
            name = rel.with_suffix(".mpy").as_posix()
            dst = out_dir / name
            dst.parent.mkdir(parents=True, exist_ok=True)
            r = subprocess.run([tool, "-s", name, "-o", str(dst), str(staged)], capture_output=True, text=True)
            if r.returncode != 0:
                shutil.rmtree(out_dir)
                raise ReleaseError(f"mpy-cross {rel}: {r.stderr.strip()}")
            data = dst.read_bytes()
            files.append({"name": name, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()})
    if not stamped:
        raise ReleaseError(f"no node.py in {source_dir}")
    manifest = {"v": 1, "version": version, "boards": sorted(set(boards)), "min_micropython": min_micropython,
                "mpy": mpy_version(tool), "files": sorted(files, key=lambda f: f["name"])}
    (out_dir / MANIFEST).write_bytes(canonical(manifest))
    return out_dir


def read_bundle(bundle: Path) -> tuple[bytes, dict, str | None]:
    """(manifest bytes, manifest, signature hex or None) of a bundle folder, after
    checking that the manifest is canonical and every file matches it."""
    raw = (bundle / MANIFEST).read_bytes()
    manifest = parse_manifest(raw)
    for f in manifest["files"]:
        p = bundle / f["name"]
        if not p.is_file():
            raise ReleaseError(f"{f['name']} is in the manifest but not in the bundle")
        data = p.read_bytes()
        if len(data) != f["size"] or hashlib.sha256(data).hexdigest() != f["sha256"]:
            raise ReleaseError(f"{f['name']} does not match its size or SHA-256 in the manifest")
    sig_path = bundle / SIGNATURE
    sig = sig_path.read_text().strip() if sig_path.exists() else None
    return raw, manifest, sig


def parse_manifest(raw: bytes) -> dict:
    try:
        manifest = json.loads(raw)
    except ValueError:
        raise ReleaseError("manifest.json is not JSON") from None
    if not isinstance(manifest, dict) or manifest.get("v") != 1:
        raise ReleaseError("manifest.json must be an object with \"v\": 1")
    if canonical(manifest) != raw:
        raise ReleaseError("manifest.json is not in canonical form (sorted keys, no spaces)")
    if not isinstance(manifest.get("version"), str) or not VERSION_RE.match(manifest["version"]):
        raise ReleaseError("manifest version is missing or malformed")
    files = manifest.get("files")
    if not isinstance(files, list) or not files:
        raise ReleaseError("manifest has no files")
    for f in files:
        name = f.get("name") if isinstance(f, dict) else None
        if (not isinstance(name, str) or not re.match(r"^[A-Za-z0-9_][A-Za-z0-9_./-]*$", name)
                or ".." in name or name in ("main.py", "main.mpy", MANIFEST, SIGNATURE)
                or not isinstance(f.get("size"), int) or not re.match(r"^[0-9a-f]{64}$", str(f.get("sha256")))):
            raise ReleaseError(f"bad file entry in the manifest: {f!r}"[:200])
    if not isinstance(manifest.get("boards"), list) or not manifest["boards"]:
        raise ReleaseError("manifest names no boards")
    return manifest


def pack(bundle: Path) -> bytes:
    """The bundle as a .tar.gz (what `campusfleet firmware upload` sends)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for p in sorted(Path(bundle).rglob("*")):
            if p.is_file():
                tar.add(p, arcname=p.relative_to(bundle).as_posix(), recursive=False)
    return buf.getvalue()


def unpack(data: bytes, dest: Path, max_bytes: int = 8 << 20) -> Path:
    """Extracts a bundle .tar.gz into dest, refusing links, absolute or .. paths and
    anything over max_bytes in total."""
    total = 0
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            for m in tar.getmembers():
                if m.isdir():
                    continue
                if not m.isfile() or m.name.startswith("/") or ".." in Path(m.name).parts:
                    raise ReleaseError(f"bundle member not allowed: {m.name}")
                total += m.size
                if total > max_bytes:
                    raise ReleaseError("bundle too large")
                out = dest / m.name
                out.parent.mkdir(parents=True, exist_ok=True)
                src = tar.extractfile(m)
                assert src is not None
                out.write_bytes(src.read())
    except (tarfile.TarError, OSError, EOFError) as e:
        raise ReleaseError(f"not a bundle .tar.gz: {e}") from None
    return dest
