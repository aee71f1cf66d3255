"""The sim layer's I2C bus: a machine.I2C stand-in routing by address to simulated SCD41,
SHT4x and BH1750 parts that answer their real command bytes, CRCs and timing."""
from micropython import const

from crc8 import crc8

_ENODEV = const(19)  # the ESP32 port raises OSError(ENODEV) on any NACK
# Float slack when comparing sim timestamps against a command's execution time: a
# driver that sleeps exactly the datasheet time must not be NACKed by rounding.
_SLACK_S = 5e-5


def _nack():
    raise OSError(_ENODEV)


def _u16(x):
    return 0 if x < 0 else (0xFFFF if x > 0xFFFF else x)


class SimI2C:
    """The subset of machine.I2C the drivers use. `parts` is an iterable of sim parts
    (each has .address) or a dict address -> part."""

    def __init__(self, parts):
        if isinstance(parts, dict):
            self.parts = dict(parts)
        else:
            self.parts = {p.address: p for p in parts}

    def _part(self, addr):
        p = self.parts.get(addr)
        if p is None or not p.present:
            _nack()  # nobody ACKs the address byte
        return p

    def scan(self):
        return sorted(a for a, p in self.parts.items() if p.present)

    def writeto(self, addr, buf, stop=True):
        p = self._part(addr)
        if len(buf):
            p.write(buf)
        return len(buf)  # machine.I2C returns the number of ACKed bytes

    def readfrom_into(self, addr, buf, stop=True):
        self._part(addr).read_into(buf)

    def readfrom(self, addr, nbytes, stop=True):
        buf = bytearray(nbytes)
        self._part(addr).read_into(buf)
        return bytes(buf)


class _SimPart:
    """Shared by the parts: presence and CRC fault flags, a reply buffer, and a
    busy window during which the part NACKs (a command's execution time)."""

    def __init__(self, room, clock, address):
        self.room = room
        self.clock = clock
        self.address = address
        self.present = True
        self.crc_errors = False
        self._reply = bytearray(9)
        self._reply_len = 0
        self._busy_until = None

    def _now(self):
        return self.clock() if self.clock is not None else None

    def _check_idle(self, now):
        if self._busy_until is not None and now is not None and now + _SLACK_S < self._busy_until:
            _nack()

    def _busy(self, now, ms):
        self._busy_until = None if now is None else now + ms / 1000

    def _put_word(self, i, value):
        r = self._reply
        r[i] = (value >> 8) & 0xFF
        r[i + 1] = value & 0xFF
        c = crc8(r, i, i + 2)
        r[i + 2] = c ^ 0xFF if self.crc_errors else c

    def _send_reply(self, buf):
        # The master may stop early (fewer bytes); past the reply the bus reads 0xFF.
        r = self._reply
        n = self._reply_len
        for i in range(len(buf)):
            buf[i] = r[i] if i < n else 0xFF


# --- SCD41 (SCD4x datasheet v1.3, Table 9; section numbers in comments) -----------------
_SCD_START = const(0x21B1)            # 3.5.1
_SCD_START_LOW_POWER = const(0x21AC)  # 3.8.1, one measurement every 30 s
_SCD_READ = const(0xEC05)             # 3.5.2
_SCD_STOP = const(0x3F86)             # 3.5.3, 500 ms
_SCD_SET_TOFS = const(0x241D)         # 3.6.1
_SCD_GET_TOFS = const(0x2318)         # 3.6.2
_SCD_SET_ALT = const(0x2427)          # 3.6.3
_SCD_GET_ALT = const(0x2322)          # 3.6.4
_SCD_PRESSURE = const(0xE000)         # 3.6.5 write = set; read = get (later datasheets)
_SCD_SET_ASC = const(0x2416)          # 3.7.2
_SCD_GET_ASC = const(0x2313)          # 3.7.3
_SCD_DATA_READY = const(0xE4B8)       # 3.8.2
_SCD_PERSIST = const(0x3615)          # 3.9.1, 800 ms
_SCD_SERIAL = const(0x3682)           # 3.9.2
_SCD_REINIT = const(0x3646)           # 3.9.5, 20 ms
_SCD_SINGLE_SHOT = const(0x219D)      # 3.10.1, 5000 ms
_SCD_SINGLE_SHOT_RHT = const(0x2196)  # 3.10.2, 50 ms, CO2 reads 0
_SCD_DEFAULT_TOFS = const(1498)       # factory offset 4 degC = round(4 * 2^16 / 175)
# 3.8.2 defines only the low 11 bits (0 = not ready); the upper bits are undefined, so
# the sim sets bit 15 in both answers and a driver that forgets the mask reads wrong.
_SCD_READY = const(0x8006)
_SCD_NOT_READY = const(0x8000)


class SimSCD41(_SimPart):
    """An SCD41 at 0x62. Starts idle (3.1). clock() returns sim Unix seconds; the part
    NACKs while a command executes, and while measuring NACKs every command Table 9
    does not allow during measurement. Measurements land every 5 s after start."""

    def __init__(self, room, clock, address=0x62, serial=0xF8969F073BBE):
        _SimPart.__init__(self, room, clock, address)
        self.serial = serial  # default: the datasheet's example serial (3.9.2)
        self.measuring = False
        self.asc_enabled = True
        self.altitude_m = 0
        self.pressure_hpa = 1013
        self.temp_offset_word = _SCD_DEFAULT_TOFS
        self._persisted = (True, 0, _SCD_DEFAULT_TOFS)
        self._interval_s = 5
        self._started_s = 0.0
        self._taken = 0
        self._shot_due = None
        self._shot_rht_only = False
        self._has_data = False
        self._co2_w = self._t_w = self._rh_w = 0
        self._pending = 0

    def write(self, data):
        now = self.clock()
        self._check_idle(now)
        self._advance(now)
        n = len(data)
        if n != 2 and n != 5:
            _nack()
        cmd = (data[0] << 8) | data[1]
        self._pending = 0
        if self.measuring and cmd not in (_SCD_READ, _SCD_STOP, _SCD_PRESSURE, _SCD_DATA_READY):
            _nack()
        if n == 5:
            # "write" sequence (3.3): argument word + its CRC, mandatory (3.2).
            if crc8(data, 2, 4) != data[4]:
                _nack()
            arg = (data[2] << 8) | data[3]
            if cmd == _SCD_SET_TOFS:
                self.temp_offset_word = arg
            elif cmd == _SCD_SET_ALT:
                self.altitude_m = arg
            elif cmd == _SCD_PRESSURE:
                self.pressure_hpa = arg
            elif cmd == _SCD_SET_ASC and arg <= 1:
                self.asc_enabled = arg == 1
            else:
                _nack()
            self._busy(now, 1)
        elif cmd in (_SCD_READ, _SCD_DATA_READY, _SCD_SERIAL, _SCD_GET_TOFS, _SCD_GET_ALT,
                     _SCD_GET_ASC, _SCD_PRESSURE):
            self._pending = cmd  # answered by the next read header, after 1 ms
            self._busy(now, 1)
        elif cmd == _SCD_START or cmd == _SCD_START_LOW_POWER:
            self.measuring = True
            self._interval_s = 5 if cmd == _SCD_START else 30
            self._started_s = now
            self._taken = 0
            self._busy_until = None
        elif cmd == _SCD_STOP:
            self.measuring = False
            self._busy(now, 500)
        elif cmd == _SCD_PERSIST:
            self._persisted = (self.asc_enabled, self.altitude_m, self.temp_offset_word)
            self._busy(now, 800)
        elif cmd == _SCD_REINIT:
            self.asc_enabled, self.altitude_m, self.temp_offset_word = self._persisted
            self._busy(now, 20)
        elif cmd == _SCD_SINGLE_SHOT or cmd == _SCD_SINGLE_SHOT_RHT:
            ms = 5000 if cmd == _SCD_SINGLE_SHOT else 50
            self._shot_due = now + ms / 1000
            self._shot_rht_only = cmd == _SCD_SINGLE_SHOT_RHT
            self._busy(now, ms)
        else:
            _nack()

    def read_into(self, buf):
        now = self.clock()
        self._check_idle(now)
        self._advance(now)
        cmd = self._pending
        self._pending = 0
        if cmd == _SCD_READ:
            if not self._has_data:
                _nack()  # 3.5.2: empty buffer -> NACK
            self._has_data = False  # the buffer is emptied on read-out
            self._put_word(0, self._co2_w)
            self._put_word(3, self._t_w)
            self._put_word(6, self._rh_w)
            self._reply_len = 9
        elif cmd == _SCD_SERIAL:
            s = self.serial
            self._put_word(0, (s >> 32) & 0xFFFF)
            self._put_word(3, (s >> 16) & 0xFFFF)
            self._put_word(6, s & 0xFFFF)
            self._reply_len = 9
        elif cmd:
            if cmd == _SCD_DATA_READY:
                w = _SCD_READY if self._has_data else _SCD_NOT_READY
            elif cmd == _SCD_GET_TOFS:
                w = self.temp_offset_word
            elif cmd == _SCD_GET_ALT:
                w = self.altitude_m
            elif cmd == _SCD_GET_ASC:
                w = 1 if self.asc_enabled else 0
            else:
                w = self.pressure_hpa
            self._put_word(0, w)
            self._reply_len = 3
        else:
            _nack()  # a read header with no command before it
        self._send_reply(buf)

    def _advance(self, now):
        if self._shot_due is not None and now >= self._shot_due:
            self._shot_due = None
            self._sample(self._shot_rht_only)
        if self.measuring:
            n = int((now - self._started_s) / self._interval_s)
            if n > self._taken:
                self._taken = n
                self._sample(False)

    def _sample(self, rht_only):
        room = self.room
        # The reported T is the die temperature minus the offset; the die runs warmer
        # than the room by the factory default offset, so the default reports the room.
        t_c = room.temp_c + (_SCD_DEFAULT_TOFS - self.temp_offset_word) * 175 / 65536
        self._co2_w = 0 if rht_only else _u16(round(room.co2_ppm))
        self._t_w = _u16(round((t_c + 45) * 65536 / 175))  # inverse of 3.5.2
        self._rh_w = _u16(round(room.rh_pct * 65536 / 100))
        self._has_data = True


# --- SHT4x (SHT4x datasheet v6: command overview, timing, conversion) ------------------
_SHT_MEASURE_HIGH = const(0xFD)    # tMEAS,h 8.3 ms max
_SHT_MEASURE_MEDIUM = const(0xF6)  # tMEAS,m 4.5 ms max
_SHT_MEASURE_LOW = const(0xE0)     # tMEAS,l 1.6 ms max (DOMAIN.md: 1.7; not re-confirmed)
_SHT_SERIAL = const(0x89)
_SHT_SOFT_RESET = const(0x94)      # 1 ms


class SimSHT4x(_SimPart):
    """An SHT4x at 0x44. With a clock, a read header before the measurement time has
    passed is NACKed, as the real part does; a read with no command before it too."""

    def __init__(self, room, clock=None, address=0x44, serial=0x0BADCAFE):
        _SimPart.__init__(self, room, clock, address)
        self.serial = serial
        self._pending = 0
        self._t_w = self._rh_w = 0

    def write(self, data):
        now = self._now()
        self._check_idle(now)
        if len(data) != 1:
            _nack()
        op = data[0]
        self._pending = 0
        if op == _SHT_MEASURE_HIGH or op == _SHT_MEASURE_MEDIUM or op == _SHT_MEASURE_LOW:
            room = self.room
            self._t_w = _u16(round((room.temp_c + 45) * 65535 / 175))
            self._rh_w = _u16(round((room.rh_pct + 6) * 65535 / 125))
            self._pending = op
            ms = 8.3 if op == _SHT_MEASURE_HIGH else (4.5 if op == _SHT_MEASURE_MEDIUM else 1.6)
            self._busy(now, ms)
        elif op == _SHT_SERIAL:
            self._pending = op
        elif op == _SHT_SOFT_RESET:
            self._busy(now, 1)
        else:
            _nack()  # heater commands are not simulated

    def read_into(self, buf):
        self._check_idle(self._now())
        op = self._pending
        self._pending = 0
        if op == _SHT_SERIAL:
            self._put_word(0, (self.serial >> 16) & 0xFFFF)
            self._put_word(3, self.serial & 0xFFFF)
        elif op:
            self._put_word(0, self._t_w)
            self._put_word(3, self._rh_w)
        else:
            _nack()
        self._reply_len = 6
        self._send_reply(buf)


# --- BH1750 (BH1750FVI Technical Note Rev.B: instruction set, timing) -------------------
_BH_POWER_DOWN = const(0x00)
_BH_POWER_ON = const(0x01)
_BH_RESET = const(0x07)           # clears the data register; only when powered on
_BH_CONT_H = const(0x10)
_BH_CONT_H2 = const(0x11)
_BH_CONT_L = const(0x13)
_BH_ONCE_H = const(0x20)
_BH_ONCE_H2 = const(0x21)
_BH_ONCE_L = const(0x23)
_BH_MT_DEFAULT = const(69)


class SimBH1750(_SimPart):
    """A BH1750 at 0x23. One opcode per write (two in one write are NACKed). With a
    clock, a conversion takes the typical 120 ms (16 ms L-mode) scaled by MTreg/69, and
    until the first one ends the data register reads 0. The protocol has no CRC, so
    crc_errors has no effect here."""

    def __init__(self, room, clock=None, address=0x23):
        _SimPart.__init__(self, room, clock, address)
        self.powered = False
        self.mode = 0
        self.mtreg = _BH_MT_DEFAULT
        self._counts = 0
        self._mode_s = None

    def write(self, data):
        if len(data) != 1:
            _nack()
        op = data[0]
        if op == _BH_POWER_DOWN:
            self.powered = False
        elif op == _BH_POWER_ON:
            self.powered = True
        elif op == _BH_RESET:
            if self.powered:
                self._counts = 0
        elif op in (_BH_CONT_H, _BH_CONT_H2, _BH_CONT_L, _BH_ONCE_H, _BH_ONCE_H2, _BH_ONCE_L):
            self.powered = True
            self.mode = op
            self._mode_s = self._now()
        elif op & 0xF8 == 0x40:  # 01000_MT[7:5]
            self.mtreg = (self.mtreg & 0x1F) | ((op & 0x07) << 5)
        elif op & 0xE0 == 0x60:  # 011_MT[4:0]
            self.mtreg = (self.mtreg & 0xE0) | (op & 0x1F)
        else:
            _nack()

    def read_into(self, buf):
        mode = self.mode
        if mode and self.powered and self._conversion_done(mode):
            lux = self.room.lux
            # lux = counts / 1.2 * 69 / MTreg (H and L modes), half that in H-mode2.
            counts = lux * 1.2 * self.mtreg / _BH_MT_DEFAULT
            if mode == _BH_CONT_H2 or mode == _BH_ONCE_H2:
                counts *= 2
            c = _u16(round(counts))
            if mode == _BH_CONT_L or mode == _BH_ONCE_L:
                c &= 0xFFFC  # L-resolution: 4 lx steps
            self._counts = c
            if mode & 0x20:  # one-time modes power down after their measurement
                self.mode = 0
                self.powered = False
        r = self._reply
        r[0] = self._counts >> 8
        r[1] = self._counts & 0xFF
        self._reply_len = 2
        self._send_reply(buf)

    def _conversion_done(self, mode):
        now = self._now()
        if now is None or self._mode_s is None:
            return True
        ms = 16 if mode == _BH_CONT_L or mode == _BH_ONCE_L else 120
        return now - self._mode_s + _SLACK_S >= ms * self.mtreg / _BH_MT_DEFAULT / 1000
