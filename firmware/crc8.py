"""Sensirion CRC-8 (poly 0x31, init 0xFF, no reflection, no final XOR) and the 16-bit
word + CRC framing every Sensirion I2C part uses (SCD4x datasheet v1.3 sections 3.2, 3.11)."""
from micropython import const

_POLY = const(0x31)  # x^8 + x^5 + x^4 + 1 (SCD4x datasheet 3.11, Table 32)
_INIT = const(0xFF)


class CRCError(ValueError):
    """A word read from a part did not match the CRC byte that followed it."""


def crc8(buf, start=0, end=None):
    """CRC of buf[start:end] without slicing (no allocation). CRC(0xBE, 0xEF) == 0x92."""
    # Bit by bit, as the datasheet's reference code (3.11): the parts send 2-byte words,
    # so a 256-byte lookup table would cost more heap than the CPU it saves.
    c = _INIT
    for i in range(start, len(buf) if end is None else end):
        c ^= buf[i]
        for _ in range(8):
            c = (c << 1) ^ _POLY if c & 0x80 else c << 1
        c &= 0xFF
    return c


def checked_word(buf, start):
    """The big-endian word at buf[start], buf[start+1] after checking that
    buf[start+2] is its CRC."""
    if crc8(buf, start, start + 2) != buf[start + 2]:
        raise CRCError("CRC mismatch at byte %d" % start)
    return (buf[start] << 8) | buf[start + 1]


def put_word(buf, start, value):
    """Write value as a big-endian word at buf[start] followed by its CRC (3 bytes)."""
    buf[start] = (value >> 8) & 0xFF
    buf[start + 1] = value & 0xFF
    buf[start + 2] = crc8(buf, start, start + 2)
