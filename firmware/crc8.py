"""Sensirion CRC-8 (poly 0x31, init 0xFF, no reflection, no final XOR) and the 16-bit
word + CRC framing every Sensirion I2C part uses (SCD4x datasheet v1.3 sections 3.2, 3.11)."""
from micropython import const

_POLY = const(0x31)  # x^8 + x^5 + x^4 + 1 (SCD4x datasheet 3.11, Table 32)
_INIT = const(0xFF)


class CRCError(ValueError):
    """A word read from a part did not match the CRC byte that followed it."""


def _make_table():
    # One table lookup per byte instead of eight shift/xor steps: 256 bytes of RAM,
    # built once at import so the table is visibly the polynomial, not a pasted blob.
    t = bytearray(256)
    for i in range(256):
        c = i
        for _ in range(8):
            c = ((c << 1) ^ _POLY) & 0xFF if c & 0x80 else (c << 1) & 0xFF
        t[i] = c
    return bytes(t)


_TABLE = _make_table()


def crc8(buf, start=0, end=None):
    """CRC of buf[start:end] without slicing (no allocation). CRC(0xBE, 0xEF) == 0x92."""
    if end is None:
        end = len(buf)
    t = _TABLE
    c = _INIT
    for i in range(start, end):
        c = t[c ^ buf[i]]
    return c


def checked_word(buf, i):
    """The big-endian word at buf[i], buf[i+1] after checking buf[i+2] is its CRC."""
    if crc8(buf, i, i + 2) != buf[i + 2]:
        raise CRCError("CRC mismatch at byte %d" % i)
    return (buf[i] << 8) | buf[i + 1]


def put_word(buf, i, value):
    """Write value as a big-endian word at buf[i] followed by its CRC (3 bytes)."""
    buf[i] = (value >> 8) & 0xFF
    buf[i + 1] = value & 0xFF
    buf[i + 2] = crc8(buf, i, i + 2)
