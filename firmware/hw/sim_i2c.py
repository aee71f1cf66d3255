"""The sim layer's I2C bus: a machine.I2C stand-in routing by address to simulated SCD41,
SHT4x and BH1750 parts that answer their real command bytes, CRCs and timing."""
# Lean by design (the sim shares the node's heap): each part emulates what the drivers
# use plus the errors a real part gives a wrong driver (NACKs, CRCs, busy windows); rarely
# used commands only ACK, and anything else is NACKed as not simulated. Settings and
# state start as class attributes (the power-on defaults); a write shadows them.
from micropython import const

from crc8 import crc8, put_word

_ENODEV = const(19)                   # the ESP32 port raises OSError(ENODEV) on any NACK
# Float slack when comparing sim timestamps against a command's execution time: a
# driver that sleeps exactly the datasheet time must not be NACKed by rounding.
_SLACK_S = const(5e-5)


def _u16(value):
    return 0 if value < 0 else (0xFFFF if value > 0xFFFF else round(value))


class SimI2C:
    """The subset of machine.I2C the drivers use, over a list of sim parts (each has
    .address)."""

    def __init__(self, parts):
        self.parts = parts

    def part(self, address):
        """The part that ACKs its address byte; OSError(ENODEV) (a NACK) if none."""
        for p in self.parts:
            if p.address == address and p.present:
                return p
        raise OSError(_ENODEV)

    def writeto(self, address, buf, stop=True):
        p = self.part(address)
        if len(buf):
            p.write(buf)
        return len(buf)  # machine.I2C returns the number of ACKed bytes

    def readfrom_into(self, address, buf, stop=True):
        self.part(address).readinto(buf)


class _SimPart:
    """Shared by the parts: presence and CRC fault flags, and a command's reply (`_tx`),
    which the next read header gets once. With a clock, the part NACKs while a command
    executes (the ms its _write() returns); without one, commands take no time."""

    present = True
    crc_errors = False
    _tx = None  # the reply waiting for a read header
    _held = 0  # NACKs (busy) until this sim time

    def __init__(self, room, clock=None, address=None):
        self.room = room
        self.clock = clock
        if address is not None:
            self.address = address

    def now(self):
        """Sim seconds (0 without a clock). Raises OSError (a NACK) while the last
        command executes: every bus access goes through here."""
        now = self.clock() if self.clock else 0
        if now + _SLACK_S < self._held:
            raise OSError(_ENODEV)
        return now

    def send(self, *words):
        # Sets the reply: each 16-bit word MSB first with its CRC (SCD4x 3.11, SHT4x alike).
        r = bytearray(3 * len(words))
        for i in range(len(words)):
            put_word(r, 3 * i, words[i] & 0xFFFF)
            if self.crc_errors:
                r[3 * i + 2] ^= 0xFF
        self._tx = r

    def readinto(self, buf):
        self.now()
        r = self._tx
        if r is None:
            raise OSError(_ENODEV)  # a read header with no command before it (or read already)
        self._tx = None
        # The master may stop early (fewer bytes); past the reply the bus reads 0xFF.
        for i in range(len(buf)):
            buf[i] = r[i] if i < len(r) else 0xFF

    def write(self, data):
        now = self.now()
        self._tx = None
        ms = self._write(data, now)
        if self.clock:
            self._held = now + ms / 1000

    def _write(self, data, now):
        # Each part: act on one write, set the reply, return the execution time in ms.
        raise OSError(_ENODEV)


# --- SCD41 (SCD4x datasheet v1.3, Table 9; section numbers in comments) -----------------
# Commands the drivers also send carry the drivers' names.
_START_PERIODIC = const(0x21B1)       # 3.5.1
_READ_MEASUREMENT = const(0xEC05)     # 3.5.2
_STOP_PERIODIC = const(0x3F86)        # 3.5.3, 500 ms
_SET_ASC_ENABLED = const(0x2416)      # 3.7.2
_GET_DATA_READY = const(0xE4B8)       # 3.8.2
_GET_SERIAL = const(0x3682)           # 3.9.2
# Not emulated, only ACKed with their execution time:
_SCD_PERSIST = const(0x3615)          # 3.9.1, 800 ms
_SCD_REINIT = const(0x3646)           # 3.9.5, 20 ms
_SCD_DEFAULT_TOFS = const(1498)       # factory offset 4 degC = round(4 * 2^16 / 175)
# Table 9: the commands a measuring part accepts (read, stop, set pressure, data ready).
_SCD_WHILE_MEASURING = const((0xEC05, 0x3F86, 0xE000, 0xE4B8))
# Settings, 1 ms each: (set command, get command, attribute holding the word). Offset
# 3.6.1/3.6.2, altitude 3.6.3/3.6.4, pressure 3.6.5 (one word for both), ASC 3.7.2/3.7.3.
_SCD_SETTINGS = const(((0x241D, 0x2318, "temp_offset_word"), (0x2427, 0x2322, "altitude_m"),
                       (0xE000, 0xE000, "pressure_hpa"), (0x2416, 0x2313, "asc_enabled")))


class SimSCD41(_SimPart):
    """An SCD41 at 0x62. Starts idle (3.1). clock() returns sim Unix seconds; the part
    NACKs while a command executes, and while measuring NACKs every command Table 9
    does not allow during measurement. Measurements land every 5 s after start."""

    address = 0x62
    serial = 0xF8969F073BBE  # the datasheet's example serial (3.9.2)
    measuring = False
    asc_enabled = 1
    altitude_m = 0
    pressure_hpa = 1013
    temp_offset_word = _SCD_DEFAULT_TOFS
    data = None   # unread measurement words (co2, t, rh); None: the buffer is empty
    _next = 0.0   # when the next periodic measurement lands

    def _write(self, data, now):
        room = self.room
        if self.measuring and now >= self._next:
            while self._next <= now:
                self._next += 5
            # T reported = die temperature - offset; the die runs warmer than the room
            # by the factory default offset, so the default offset reports the room.
            t_c = room.temp_c + (_SCD_DEFAULT_TOFS - self.temp_offset_word) * 175 / 65536
            # Inverse of 3.5.2 Table 11.
            self.data = (_u16(room.co2_ppm), _u16((t_c + 45) * 65536 / 175),
                         _u16(room.rh_pct * 65536 / 100))
        n = len(data)
        cmd = (data[0] << 8) | data[1] if n > 1 else 0
        if n not in (2, 5) or self.measuring and cmd not in _SCD_WHILE_MEASURING:
            raise OSError(_ENODEV)
        for set_cmd, get_cmd, name in _SCD_SETTINGS:
            if n == 5 and cmd == set_cmd:
                # "write" sequence (3.3): argument word + its CRC, mandatory (3.2).
                arg = (data[2] << 8) | data[3]
                if crc8(data, 2, 4) != data[4] or cmd == _SET_ASC_ENABLED and arg > 1:
                    raise OSError(_ENODEV)
                setattr(self, name, arg)
                return 1
            if n == 2 and cmd == get_cmd:
                self.send(getattr(self, name))
                return 1
        if n == 5:
            raise OSError(_ENODEV)
        if cmd == _READ_MEASUREMENT:
            if self.data is not None:  # an empty buffer NACKs the read header (3.5.2)
                self.send(*self.data)
                self.data = None       # the buffer is emptied on read-out
        elif cmd == _GET_DATA_READY:
            # 3.8.2 defines only the low 11 bits (0 = not ready); the sim sets bit 15 too,
            # so a driver that forgets the mask reads wrong.
            self.send(0x8000 if self.data is None else 0x8006)
        elif cmd == _GET_SERIAL:
            s = self.serial
            self.send(s >> 32, s >> 16, s)
        elif cmd == _START_PERIODIC:
            self.measuring = True
            self._next = now + 5
            return 0
        elif cmd == _STOP_PERIODIC:
            self.measuring = False
            return 500
        elif cmd == _SCD_PERSIST:
            return 800
        elif cmd == _SCD_REINIT:
            return 20
        else:
            raise OSError(_ENODEV)
        return 1


# --- SHT4x (SHT4x datasheet v6: command overview, timing, conversion) ------------------
# Measure T & RH, tMEAS max: high 8.3 ms, medium 4.5 ms, low repeatability 1.6 ms
# (DOMAIN.md has 1.7; not re-confirmed).
_MEASURE_HIGH = const(0xFD)
_SHT_MEDIUM = const(0xF6)
_SHT_LOW = const(0xE0)
_READ_SERIAL = const(0x89)
_SHT_SOFT_RESET = const(0x94)         # 1 ms


class SimSHT4x(_SimPart):
    """An SHT4x at 0x44. With a clock, a read header before the measurement time has
    passed is NACKed, as the real part does; a read with no command before it too.
    Heater commands are not simulated (NACKed)."""

    address = 0x44
    serial = 0x0BADCAFE

    def _write(self, data, now):
        op = data[0]
        if len(data) != 1:
            raise OSError(_ENODEV)
        if op == _MEASURE_HIGH or op == _SHT_MEDIUM or op == _SHT_LOW:
            room = self.room
            # Inverse of "Conversion of Signal Output".
            self.send(_u16((room.temp_c + 45) * 65535 / 175), _u16((room.rh_pct + 6) * 65535 / 125))
            return 8.3 if op == _MEASURE_HIGH else (4.5 if op == _SHT_MEDIUM else 1.6)
        if op == _READ_SERIAL:
            self.send(self.serial >> 16, self.serial)
            return 0
        if op == _SHT_SOFT_RESET:
            return 1
        raise OSError(_ENODEV)


# --- BH1750 (BH1750FVI Technical Note Rev.B: instruction set, timing) -------------------
_BH_POWER_DOWN = const(0x00)
_POWER_ON = const(0x01)
_BH_RESET = const(0x07)               # clears the data register; only when powered on
_CONT_H_RES = const(0x10)             # continuously H-resolution mode: 120 ms typ, 1 lx


class SimBH1750(_SimPart):
    """A BH1750 at 0x23 in continuous H-resolution mode (what the driver uses; the other
    modes and MTreg changes are not simulated and NACKed). One opcode per write (two in
    one write are NACKed). With a clock, a conversion takes the typical 120 ms, and
    until the first one ends the data register reads 0. The protocol has no CRC, so
    crc_errors has no effect here."""

    address = 0x23
    powered = False
    measuring = False
    data = 0       # the data register, in counts
    _start_s = 0   # when the mode command started the first conversion

    def _write(self, data, now):
        op = data[0]
        if len(data) != 1:
            raise OSError(_ENODEV)
        if op == _BH_POWER_DOWN or op == _POWER_ON:
            self.powered = op == _POWER_ON
            self.measuring = False  # either way, a mode command must follow
        elif op == _BH_RESET:
            if self.powered:
                self.data = 0
        elif op == _CONT_H_RES:
            self.powered = self.measuring = True
            self._start_s = now
        else:
            raise OSError(_ENODEV)
        return 0

    def readinto(self, buf):
        # Once the first conversion is done, each read gives the room's latest lux as
        # counts = lux * 1.2 (MTreg 69), up to 65535.
        if self.measuring and (not self.clock or self.now() - self._start_s + _SLACK_S >= 0.12):
            self.data = _u16(self.room.lux * 1.2)
        self._tx = bytearray((self.data >> 8, self.data & 0xFF))
        _SimPart.readinto(self, buf)
