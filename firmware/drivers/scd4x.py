"""Sensirion SCD40/SCD41 CO2, temperature and humidity in periodic measurement mode.
Sections cited are the SCD4x datasheet, version 1.3 (September 2022)."""
import time

from micropython import const

from crc8 import checked_word, put_word

# Commands (3.4 Table 9). Each is a 16-bit word sent MSB first with no CRC (3.2, 3.11).
_START_PERIODIC = const(0x21B1)      # 3.5.1, send command, not while measuring
_READ_MEASUREMENT = const(0xEC05)    # 3.5.2, read, 1 ms, allowed while measuring
_STOP_PERIODIC = const(0x3F86)       # 3.5.3, send command, 500 ms
_SET_TEMP_OFFSET = const(0x241D)     # 3.6.1, write, 1 ms, idle only
_SET_ALTITUDE = const(0x2427)        # 3.6.3, write, 1 ms, idle only
_SET_AMBIENT_PRESSURE = const(0xE000)  # 3.6.5, write, 1 ms, allowed while measuring
_SET_ASC_ENABLED = const(0x2416)     # 3.7.2, write, 1 ms, idle only
_GET_DATA_READY = const(0xE4B8)      # 3.8.2, read, 1 ms, allowed while measuring
_GET_SERIAL = const(0x3682)          # 3.9.2, read, 1 ms, idle only

_EXEC_MS = const(1)          # execution time of every read/write command used here (Table 9)
_STOP_MS = const(500)        # the part ignores commands for 500 ms after stop (3.5.3)
_DATA_READY_MASK = const(0x07FF)  # 3.8.2: low 11 bits all 0 -> no data; upper bits undefined

# Input ranges the datasheet gives for the compensation parameters (3.6, 3.7).
_ALTITUDE_MAX_M = const(3000)
_PRESSURE_MIN_HPA = const(700)       # 70 000 Pa
_PRESSURE_MAX_HPA = const(1200)      # 120 000 Pa
_TEMP_OFFSET_MAX_C = const(20.0)     # recommended 0..20 degC (3.6.1)


class SCD4x:
    def __init__(self, i2c, address=0x62, sleep_ms=time.sleep_ms):
        # sleep_ms is injectable so tests (and a sim clock) see the datasheet waits.
        self.i2c = i2c
        self.address = address
        self.serial = None
        self.sleep_ms = sleep_ms
        self.measuring = False
        self._tx = bytearray(5)          # command word + one argument word + CRC
        self._cmd = memoryview(self._tx)[:2]
        self._rx = bytearray(9)          # three words, each followed by its CRC
        self._rx3 = memoryview(self._rx)[:3]

    # --- lifecycle -------------------------------------------------------------------
    def probe(self):
        """Stop, read the serial (proves the part is there and talks CRC), start
        periodic measurement. Returns the 48-bit serial; OSError if nothing answers."""
        try:
            # A part left measuring by an earlier boot ignores everything but a few
            # commands (Table 9), so stop first; stop is accepted in idle too.
            self._write(_STOP_PERIODIC, None, _STOP_MS)
            self._write(_GET_SERIAL)
            self.i2c.readfrom_into(self.address, self._rx)
        except OSError as e:
            raise OSError(e.errno, "no SCD4x answering at 0x%02x" % self.address)
        rx = self._rx
        # 3.9.2: serial = word[0] << 32 | word[1] << 16 | word[2]
        self.serial = (checked_word(rx, 0) << 32) | (checked_word(rx, 3) << 16) | checked_word(rx, 6)
        self._write(_START_PERIODIC, None, 0)
        return self.serial

    def read(self):
        """(co2_ppm, temp_c, rh_pct) of the newest measurement, or None when no new
        one is ready (a new one comes every 5 s, 3.5.1). Raises CRCError, OSError."""
        # Ask first: read_measurement with an empty buffer is NACKed (3.5.2), and a
        # NACK would be indistinguishable from a missing part.
        self._write(_GET_DATA_READY)
        self.i2c.readfrom_into(self.address, self._rx3)
        if checked_word(self._rx, 0) & _DATA_READY_MASK == 0:
            return None
        self._write(_READ_MEASUREMENT)
        rx = self._rx
        self.i2c.readfrom_into(self.address, rx)
        co2 = checked_word(rx, 0)
        t = checked_word(rx, 3)
        rh = checked_word(rx, 6)
        # 3.5.2 Table 11: CO2 = word[0] ppm, T = -45 + 175 * word[1] / 2^16,
        # RH = 100 * word[2] / 2^16.
        return co2, -45 + 175 * t / 65536, 100 * rh / 65536

    # --- settings --------------------------------------------------------------------
    def set_ambient_pressure_hpa(self, value):
        """Ambient pressure 700..1200 hPa; overrides altitude. Allowed while measuring
        (3.6.5), so no stop/start."""
        if not _PRESSURE_MIN_HPA <= value <= _PRESSURE_MAX_HPA:
            raise ValueError("ambient pressure must be 700..1200 hPa")
        # 3.6.5: word = pressure [Pa] / 100, i.e. hPa.
        self._write(_SET_AMBIENT_PRESSURE, round(value))

    def configure(self, asc=None, altitude_m=None, temperature_offset_c=None):
        """Set any of the idle-only settings with a single stop/start cycle (500 ms):
        automatic self-calibration on/off (3.7.2, default on), altitude 0..3000 m for
        pressure compensation (3.6.3), self-heating offset 0..20 degC subtracted from T
        (3.6.1). Volatile: the part forgets them at power-off (no persist_settings)."""
        # Validate everything before touching the bus: a bad value changes nothing.
        words = []
        if temperature_offset_c is not None:
            if not 0 <= temperature_offset_c <= _TEMP_OFFSET_MAX_C:
                raise ValueError("temperature offset must be 0..20 degC")
            # 3.6.1: word = T_offset * 2^16 / 175
            words.append((_SET_TEMP_OFFSET, round(temperature_offset_c * 65536 / 175)))
        if altitude_m is not None:
            if not 0 <= altitude_m <= _ALTITUDE_MAX_M:
                raise ValueError("altitude must be 0..3000 m")
            words.append((_SET_ALTITUDE, round(altitude_m)))  # 3.6.3: metres
        if asc is not None:
            words.append((_SET_ASC_ENABLED, 1 if asc else 0))      # 3.7.2: 1 on, 0 off
        if not words:
            return
        was_measuring = self.measuring
        # Idle-only commands are ignored while measuring (3.6): stop, then 500 ms.
        self._write(_STOP_PERIODIC, None, _STOP_MS)
        for cmd, value in words:
            self._write(cmd, value)
        if was_measuring:
            self._write(_START_PERIODIC, None, 0)

    # --- bus ---------------------------------------------------------------------------
    def _write(self, cmd, value=None, ms=_EXEC_MS):
        # The command word alone (3.2: no CRC), or the 3.3 "write" sequence: command
        # word, argument word, CRC of the argument (3.2: mandatory in write direction).
        # Then the command's execution time (none after start, 500 ms after stop).
        tx = self._tx
        tx[0] = cmd >> 8
        tx[1] = cmd & 0xFF
        if value is None:
            self.i2c.writeto(self.address, self._cmd)
        else:
            put_word(tx, 2, value)
            self.i2c.writeto(self.address, tx)
        if cmd == _START_PERIODIC or cmd == _STOP_PERIODIC:
            self.measuring = cmd == _START_PERIODIC
        if ms:
            self.sleep_ms(ms)
