"""The technician's local cache of MicroPython images: `firmware add FILE` copies an
image in under its SHA-256 (checked against a published checksum when given) and
records its chip and version; `flash` takes images only from here, never downloads."""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import struct
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from provisioning.errors import ProvisionError

# ESP image extended header chip id (esptool's IMAGE_CHIP_ID) -> our chip names.
IMAGE_CHIP_IDS = {0: "esp32", 9: "esp32s3", 5: "esp32c3"}
CHIPS = ("esp32", "esp32s3", "esp32c3")


def cache_dir() -> Path:
    base = os.environ.get("CAMPUS_PROVISION_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "campusfleet")
    return Path(base) / "firmware"


@dataclass(frozen=True)
class CachedImage:
    sha256: str
    chip: str
    version: str
    size: int
    name: str          # the original file name
    added_s: float

    def path(self, root: Path | None = None) -> Path:
        return (root or cache_dir()) / f"{self.sha256}.bin"


def image_chip(data: bytes) -> str | None:
    """Chip of an ESP firmware image from its header (magic 0xE9, then the extended
    header's chip id at byte 12), None if it is not one."""
    if len(data) < 24 or data[0] != 0xE9:
        return None
    (chip_id,) = struct.unpack_from("<H", data, 12)
    return IMAGE_CHIP_IDS.get(chip_id)


def _index(root: Path) -> list[CachedImage]:
    path = root / "index.json"
    if not path.exists():
        return []
    return [CachedImage(**e) for e in json.loads(path.read_text())]


def _save(root: Path, entries: list[CachedImage]) -> None:
    tmp = root / "index.json.tmp"
    tmp.write_text(json.dumps([asdict(e) for e in entries], indent=1))
    tmp.replace(root / "index.json")


def add(file: Path, *, chip: str | None = None, version: str | None = None, sha256: str | None = None,
        root: Path | None = None) -> CachedImage:
    root = root or cache_dir()
    try:
        data = file.read_bytes()
    except OSError as e:
        raise ProvisionError(f"cannot read {file}: {e.strerror}") from None
    digest = hashlib.sha256(data).hexdigest()
    if sha256 and sha256.lower() != digest:
        raise ProvisionError(f"{file.name}: SHA-256 is {digest}, not the published {sha256.lower()}: "
                             "the download is damaged or not the release you meant")
    found = image_chip(data)
    if chip is None:
        chip = found
        if chip is None:
            raise ProvisionError(f"{file.name} is not an ESP32 firmware image (no 0xE9 header): give --chip")
    elif chip not in CHIPS:
        raise ProvisionError(f"unknown chip {chip!r}: one of {', '.join(CHIPS)}")
    elif found is not None and found != chip:
        raise ProvisionError(f"{file.name} is built for {found}, not {chip}")
    if version is None:
        m = re.search(r"v(\d+\.\d+(?:\.\d+)?(?:-[0-9A-Za-z.]+)?)", file.name)
        version = m.group(1) if m else "unknown"
    root.mkdir(parents=True, exist_ok=True)
    entry = CachedImage(sha256=digest, chip=chip, version=version, size=len(data), name=file.name,
                        added_s=time.time())
    if not entry.path(root).exists():
        shutil.copyfile(file, entry.path(root))
    entries = [e for e in _index(root) if e.sha256 != digest] + [entry]
    _save(root, entries)
    return entry


def list_images(root: Path | None = None) -> list[CachedImage]:
    return sorted(_index(root or cache_dir()), key=lambda e: (e.chip, e.added_s))


def _version_key(v: str) -> tuple:
    return tuple(int(x) if x.isdigit() else -1 for x in re.split(r"[.-]", v))


def find(chip: str, *, sha256: str | None = None, root: Path | None = None) -> tuple[CachedImage, bytes]:
    """The newest cached image for chip (or the one with that SHA-256 prefix), checked
    against its SHA-256 again before use."""
    root = root or cache_dir()
    entries = [e for e in _index(root) if e.chip == chip and (sha256 is None or e.sha256.startswith(sha256.lower()))]
    if not entries:
        raise ProvisionError(f"no MicroPython image for {chip} in the firmware cache ({root}): "
                             f"`campus-provision firmware add FILE` first")
    entry = max(entries, key=lambda e: (_version_key(e.version), e.added_s))
    data = entry.path(root).read_bytes()
    if hashlib.sha256(data).hexdigest() != entry.sha256:
        raise ProvisionError(f"cached image {entry.name} is corrupted (SHA-256 mismatch): add it again")
    return entry, data
