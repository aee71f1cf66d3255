"""Sensirion SHT40/41/45 temperature and humidity, one high-repeatability measurement
per call. Cited: SHT4x datasheet v6 (Feb 2023) command table, timing and conversion."""
import time

from micropython import const

from crc8 import checked_word

# 8-bit commands, no CRC on the command (datasheet "Command Overview").
_MEASURE_HIGH = const(0xFD)   # T & RH, high repeatability; reply 6 bytes (2 words + CRCs)
_READ_SERIAL = const(0x89)    # reply 6 bytes (2 words + CRCs)

# tMEAS,h is 8.3 ms max in datasheet v6 (8.2 ms in earlier versions); a read header
# sent sooner is NACKed. 9 ms is the smallest whole-ms sleep that covers both, and
# is short enough to block in place every 5 s (Sensirion's own quick start uses 10).
_MEASURE_HIGH_MS = const(9)
# The datasheet gives no duration for the serial; Sensirion's reference driver
# (embedded-i2c-sht4x) waits 10 ms, and probe() runs once at start.
_READ_SERIAL_MS = const(10)


class SHT4x:
    def __init__(self, i2c, address=0x44, sleep_ms=time.sleep_ms):
        self.i2c = i2c
        self.address = address
        self.serial = None
        self.sleep_ms = sleep_ms
        self._cmd = bytearray(1)
        self._rx = bytearray(6)

    def probe(self):
        """Read the 32-bit serial (CRC-checked); OSError if nothing answers."""
        try:
            rx = self._read(_READ_SERIAL, _READ_SERIAL_MS)
        except OSError as e:
            raise OSError(e.errno, "no SHT4x answering at 0x%02x" % self.address)
        self.serial = (checked_word(rx, 0) << 16) | checked_word(rx, 3)
        return self.serial

    def measure(self):
        """(temp_c, rh_pct) of a high-repeatability measurement, blocking 9 ms.
        Raises CRCError, OSError."""
        rx = self._read(_MEASURE_HIGH, _MEASURE_HIGH_MS)
        t = checked_word(rx, 0)
        rh = checked_word(rx, 3)
        # "Conversion of Signal Output": T = -45 + 175 * S_T / (2^16 - 1),
        # RH = -6 + 125 * S_RH / (2^16 - 1), cropped to 0..100 %RH because the
        # formula reaches -6..119 but RH outside 0..100 is not physical.
        rh_pct = -6 + 125 * rh / 65535
        if rh_pct < 0:
            rh_pct = 0.0
        elif rh_pct > 100:
            rh_pct = 100.0
        return -45 + 175 * t / 65535, rh_pct

    def _read(self, cmd, ms):
        # Command byte, its duration, then the 6-byte reply (2 words + CRCs). A read
        # header before the part is done is NACKed (OSError).
        self._cmd[0] = cmd
        self.i2c.writeto(self.address, self._cmd)
        self.sleep_ms(ms)
        self.i2c.readfrom_into(self.address, self._rx)
        return self._rx
