"""Synthetic ESP firmware images for the flash tests: a real image header (magic 0xE9,
extended header with the chip id) over half random, half zero bytes (compressible)."""
from __future__ import annotations

import random
import struct

CHIP_IDS = {"esp32": 0, "esp32s3": 9, "esp32c3": 5}


def esp_image(chip: str = "esp32", size: int = 200_000, seed: int = 1) -> bytes:
    header = struct.pack("<BBBBI", 0xE9, 1, 2, 0x20, 0x40080000)
    # wp pin, drive strengths, chip id, min rev, min/max full rev (0xFFFF: any), reserved, hash flag
    extended = struct.pack("<BBBBHBHH4sB", 0xEE, 0, 0, 0, CHIP_IDS[chip], 0, 0, 0xFFFF, bytes(4), 0)
    body = random.Random(seed).randbytes(size // 2) + bytes(size - size // 2)
    return header + extended + body
